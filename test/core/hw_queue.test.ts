/**
 * IOMMU_HW_QUEUE_ALLOC (spec viommu-eventq.md §6, mock-driver-failnth.md §3.4): the check
 * order, the hidden internal ACCESS object, pinning and area locking against IOAS_UNMAP, the
 * IOAS alignment while a queue lives, the mock's index rules and dependency, and teardown.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { HwQueue } from "../../src/core/hw_queue.ts";
import { ObjType } from "../../src/core/object.ts";
import type { FakePage } from "../../src/core/user_mm.ts";
import {
  EADDRINUSE,
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  EIO,
  ENOENT,
  EOPNOTSUPP,
  EOVERFLOW,
} from "../../src/errno.ts";
import { PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import {
  MOCK_APERTURE_START,
  teardown,
  type ViommuHarness,
  viommuSetup,
} from "./viommu_fixture.ts";

const P = BigInt(PAGE);

function pins(h: ViommuHarness, va: bigint, n: number): number[] {
  const pages = h.proc.pages(va, n, false);
  if (typeof pages === "number") throw new Error("unmapped");
  return pages.map((p) => (p as FakePage).pins);
}

function setupMapped() {
  const s = viommuSetup();
  const va = s.h.proc.mmap(2 * PAGE);
  const iova = s.h.mapOk(s.ioasId, va, 2 * PAGE);
  return { ...s, va, iova };
}

describe("IOMMU_HW_QUEUE_ALLOC", () => {
  it("hw_queue: the selftest's sequence", () => {
    const { h, ioasId, viommuId } = viommuSetup();
    const iopt = h.ioas(ioasId).iopt;
    const align = iopt.iovaAlignment;
    assert.equal(
      h.hwQueueAlloc(viommuId, 0, MOCK_APERTURE_START, P, { type: 0 }).errno,
      EOPNOTSUPP,
    );
    assert.equal(h.hwQueueAlloc(viommuId, 0, MOCK_APERTURE_START, 0n).errno, EINVAL);
    assert.equal(h.hwQueueAlloc(viommuId, 0, U64_MAX, P).errno, EOVERFLOW);
    const size = h.ctx.table.size;
    assert.equal(h.hwQueueAlloc(viommuId, 0, MOCK_APERTURE_START, P).errno, ENOENT, "unmapped");
    assert.equal(h.ctx.table.size, size, "queue and access ids were freed");
    assert.equal(iopt.iovaAlignment, align, "the alignment went back");

    const va = h.proc.mmap(2 * PAGE);
    const iova = h.mapOk(ioasId, va, PAGE);
    const iova2 = h.mapOk(ioasId, va + P, PAGE);
    assert.equal(h.hwQueueAlloc(viommuId, 1, iova, P).errno, EIO);
    assert.equal(h.hwQueueAlloc(viommuId, 2, iova, P).errno, EINVAL);
    const q0 = h.hwQueueAlloc(viommuId, 0, iova, P);
    assert.equal(q0.errno, 0);
    const q0Id = q0.out.out_hw_queue_id;
    // The internal access took the next id and cannot be destroyed by the user.
    assert.ok(h.isLive(q0Id + 1, ObjType.ACCESS));
    assert.equal(h.destroy(q0Id + 1), EBUSY);
    assert.equal(iopt.iovaAlignment, PAGE);
    assert.equal(h.hwQueueAlloc(viommuId, 0, iova, P).errno, EEXIST);
    assert.equal(h.unmap(ioasId, iova, P).errno, EBUSY, "the queue's page is locked");
    assert.equal(h.unmap(ioasId, iova2, P).errno, 0, "the second page is not pinned");
    const q1 = h.hwQueueAlloc(viommuId, 1, iova + P / 2n, P / 2n);
    assert.equal(q1.errno, 0);
    const q1Id = q1.out.out_hw_queue_id;
    assert.equal(h.destroy(q0Id), EBUSY, "queue 1 depends on queue 0");
    assert.equal(h.destroy(viommuId), EBUSY);
    assert.equal(h.destroy(q1Id), 0);
    assert.equal(h.destroy(q0Id), 0);
    assert.equal(h.isLive(q0Id + 1), false, "the access went with its queue");
    assert.equal(iopt.iovaAlignment, align);
    assert.equal(h.unmap(ioasId, iova, P).errno, 0);
    assert.deepEqual(pins(h, va, 1), [0]);
    assert.deepEqual(teardown(h), []);
  });

  it("a missing vIOMMU is ENOENT; a type the driver lacks EOPNOTSUPP", () => {
    const { h, viommuId, iova } = setupMapped();
    assert.equal(h.hwQueueAlloc(0, 0, iova, P).errno, ENOENT);
    assert.equal(h.hwQueueAlloc(viommuId, 0, iova, P, { type: 1 }).errno, EOPNOTSUPP);
    assert.equal(h.hwQueueAlloc(viommuId, 0, iova, P, { flags: 1 }).errno, EOPNOTSUPP);
    assert.deepEqual(teardown(h), []);
  });

  it("pins the rounded span and locks each area under it", () => {
    const { h, ioasId, viommuId, va, iova } = setupMapped();
    // A queue crossing the page boundary pins and locks both pages.
    const q = h.hwQueueAlloc(viommuId, 0, iova + P - 8n, 16n);
    assert.equal(q.errno, 0);
    const queue = h.ctx.table.peek(q.out.out_hw_queue_id) as HwQueue;
    assert.equal(queue.baseAddr, iova + P - 8n);
    assert.equal(queue.length, 16n);
    assert.deepEqual(pins(h, va, 2), [1, 1], "one pin per page however many users");
    assert.equal(h.unmap(ioasId, iova, 2n * P).errno, EBUSY);
    assert.equal(h.destroy(q.out.out_hw_queue_id), 0);
    assert.equal(h.unmap(ioasId, iova, 2n * P).errno, 0);
    assert.deepEqual(pins(h, va, 2), [0, 0]);
    assert.deepEqual(teardown(h), []);
  });

  it("needs physically contiguous pages (EFAULT) and PAGE-aligned areas (EADDRINUSE)", () => {
    const { h, ioasId, viommuId } = viommuSetup();
    const a = h.proc.mmap(2 * PAGE);
    const b = h.proc.mmap(PAGE);
    const pa = h.proc.pages(a, 1, false);
    const pb = h.proc.pages(b, 1, false);
    assert.ok(typeof pa !== "number" && typeof pb !== "number");
    const mixed = h.proc.mmap(2 * PAGE, { pages: [pa[0], pb[0]] });
    const iova = h.mapOk(ioasId, mixed, 2 * PAGE);
    const size = h.ctx.table.size;
    assert.equal(h.hwQueueAlloc(viommuId, 0, iova, 2n * P).errno, EFAULT);
    assert.equal(h.ctx.table.size, size);
    assert.equal(h.unmap(ioasId, iova, 2n * P).errno, 0, "nothing stayed locked");
    // An area only 2 KiB aligned (the mock domain's granule) blocks the PAGE alignment.
    const c = h.proc.mmap(PAGE);
    const odd = MOCK_APERTURE_START + 0x10_0000n + 0x800n;
    assert.equal(h.map(ioasId, c, 0x800, { iova: odd }).errno, 0);
    const d = h.proc.mmap(PAGE);
    const good = h.mapOk(ioasId, d, PAGE);
    assert.equal(h.hwQueueAlloc(viommuId, 0, good, P).errno, EADDRINUSE);
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, 0x800);
    assert.equal(h.unmap(ioasId, odd, 0x800n).errno, 0);
    assert.equal(h.hwQueueAlloc(viommuId, 0, good, P).errno, 0);
    // While the queue lives, 2 KiB-aligned maps are refused.
    assert.equal(h.map(ioasId, c, 0x800, { iova: odd }).errno, EINVAL);
    assert.deepEqual(teardown(h), []);
    assert.deepEqual(pins(h, d, 1), [0]);
  });

  it("closing the context releases queues in dependency order and unpins", () => {
    const { h, viommuId, va, iova } = setupMapped();
    assert.equal(h.hwQueueAlloc(viommuId, 0, iova, P).errno, 0);
    assert.equal(h.hwQueueAlloc(viommuId, 1, iova + P, P).errno, 0);
    assert.deepEqual(teardown(h), []);
    assert.equal(h.ctx.table.size, 0);
    assert.deepEqual(pins(h, va, 2), [0, 0]);
  });

  it("the mock's destroy clears slot 0 whatever the index (as the selftest does)", () => {
    const { h, viommuId, iova } = setupMapped();
    const q0 = h.hwQueueAlloc(viommuId, 0, iova, P).out.out_hw_queue_id;
    const q1 = h.hwQueueAlloc(viommuId, 1, iova + P, P).out.out_hw_queue_id;
    assert.equal(h.destroy(q1), 0);
    // mock_hw_queue->index is never set, so slot 1 still names the destroyed queue.
    assert.equal(h.hwQueueAlloc(viommuId, 1, iova + P, P).errno, EEXIST);
    assert.equal(h.destroy(q0), 0);
    assert.deepEqual(teardown(h), []);
  });
});

/**
 * Fault injection over this area's ioctls (spec viommu-eventq.md §10): for every n, arming the
 * n-th injection site makes the ioctl either succeed (n beyond its sites) or fail leaving ids,
 * refcounts, pins, locks, mmap regions, file references and the IOAS alignment exactly as
 * before; the context then closes clean.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ctxFileRefs, mmapRegistry } from "../../src/core/mmap.ts";
import type { FakePage } from "../../src/core/user_mm.ts";
import { IOMMU_HWPT_FAULT_ID_VALID } from "../../src/uapi/index.ts";
import {
  IOMMU_TEST_IOTLB_DEFAULT,
  teardown,
  type ViommuSetup,
  viommuSetup,
} from "./viommu_fixture.ts";

const PAGE = 4096;

interface World extends ViommuSetup {
  va: bigint;
  iova: bigint;
}

function world(): World {
  const s = viommuSetup();
  const va = s.h.proc.mmap(PAGE);
  const iova = s.h.mapOk(s.ioasId, va, PAGE);
  return { ...s, va, iova };
}

/** Everything a failed ioctl must leave as it was. */
function snapshot(w: World): string {
  const h = w.h;
  const pages = h.proc.pages(w.va, 1, false);
  const objs = [...h.ctx.table.live()].map((o) => `${o.id}:${o.type}:${o.users}`);
  return JSON.stringify({
    objs,
    size: h.ctx.table.size,
    regions: mmapRegistry(h.ctx).size,
    files: ctxFileRefs(h.ctx),
    pins: typeof pages === "number" ? -1 : (pages[0] as FakePage).pins,
    align: h.ioas(w.ioasId).iopt.iovaAlignment,
    blocks: h.mock.alloc.live,
    cache: [...w.dev.mdev.cache],
  });
}

/**
 * Runs `op` with the n-th site armed for n = 1, 2, ... until it succeeds without the
 * injection firing. Returns how many sites it passed.
 */
function sweep(op: (w: World) => number, prepare: (w: World) => void = () => {}): number {
  for (let n = 1; n < 200; n++) {
    const w = world();
    prepare(w);
    const before = snapshot(w);
    w.h.faults.arm(n);
    const errno = op(w);
    const fired = w.h.faults.pending === 0;
    w.h.faults.arm(0);
    if (errno !== 0) {
      assert.ok(fired, `n=${n}: failed with ${errno} without an injection`);
      assert.equal(snapshot(w), before, `n=${n}: errno ${errno} left state behind`);
    } else {
      assert.ok(!fired, `n=${n}: the injected failure was swallowed`);
    }
    assert.deepEqual(teardown(w.h), [], `n=${n}: close left objects`);
    if (errno === 0) return n - 1;
  }
  throw new Error("never succeeded");
}

describe("fail-nth over the vIOMMU area", () => {
  it("VIOMMU_ALLOC with driver data", () => {
    const sites = sweep((w) => {
      const uptr = w.h.words([0xbeef, 0, 0, 0, 0, 0]);
      return w.h.viommuAlloc(w.devId, w.parentId, { dataLen: 24, uptr }).errno;
    });
    // device lookup, parent lookup, object, pages, mmap region.
    assert.equal(sites, 5);
  });

  it("VDEVICE_ALLOC", () => {
    const sites = sweep((w) => w.h.vdeviceAlloc(w.viommuId, w.devId, 0n).errno);
    assert.equal(sites, 4);
  });

  it("HW_QUEUE_ALLOC", () => {
    const sites = sweep((w) => w.h.hwQueueAlloc(w.viommuId, 0, w.iova, BigInt(PAGE)).errno);
    assert.ok(sites >= 4, `${sites} sites`);
  });

  it("FAULT_QUEUE_ALLOC and VEVENTQ_ALLOC", () => {
    assert.equal(
      sweep((w) => w.h.faultAlloc().errno),
      2,
    );
    assert.equal(
      sweep((w) => w.h.veventqAlloc(w.viommuId, 2).errno),
      3,
    );
  });

  it("HWPT_ALLOC of a nested HWPT with a FAULT on the vIOMMU", () => {
    let faultId = 0;
    sweep(
      (w) =>
        w.h.hwptAlloc(w.devId, w.viommuId, IOMMU_HWPT_FAULT_ID_VALID, {
          data: [IOMMU_TEST_IOTLB_DEFAULT],
          faultId,
        }).errno,
      (w) => {
        faultId = w.h.faultAllocOk().id;
      },
    );
  });

  it("vIOMMU cache invalidation", () => {
    sweep(
      (w) => {
        const entry = w.h.words([0, 0x99, 0]);
        return w.h.invalidate(w.viommuId, entry, 0xdeadbeef, 12, 1).errno;
      },
      (w) => {
        w.h.vdeviceAllocOk(w.viommuId, w.devId, 0x99n);
      },
    );
  });
});

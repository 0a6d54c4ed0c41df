/**
 * IOMMU_VIOMMU_ALLOC and mmap() of the iommufd fd (spec viommu-eventq.md §2, §7, §11.1):
 * every errno of the check order, the mock's driver data (loopback of in_data, the 2-page
 * mmap region), the refcounts that make IOMMU_DESTROY EBUSY, and that failures leave nothing.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ctxFileRefs,
  MAP_PRIVATE,
  MAP_SHARED,
  type MmapMapping,
  mmapRegion,
  mmapRegistry,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
} from "../../src/core/mmap.ts";
import type { Viommu } from "../../src/core/viommu.ts";
import { E2BIG, EBUSY, EFAULT, EINVAL, ENOENT, ENXIO, EOPNOTSUPP, EPERM } from "../../src/errno.ts";
import { decode, IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT } from "../../src/uapi/index.ts";
import { IOMMU_VIOMMU_SELFTEST_LAYOUT } from "../../src/uapi/test_cmd.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import { teardown, ViommuHarness, viommuSetup } from "./viommu_fixture.ts";

const RW = PROT_READ | PROT_WRITE;

/** VIOMMU_ALLOC with driver data {in_data}; returns the errno and the data as it reads back. */
function allocWithData(
  h: ViommuHarness,
  devId: number,
  parentId: number,
  inData: number,
  dataLen = 24,
  opts: { writable?: boolean } = {},
) {
  const uptr = h.words([inData, 0, 0, 0, 0, 0], opts);
  const r = h.viommuAlloc(devId, parentId, { dataLen, uptr });
  const back = new Uint8Array(24);
  h.proc.read(uptr, back);
  return {
    errno: r.errno,
    id: r.out.out_viommu_id,
    data: decode(IOMMU_VIOMMU_SELFTEST_LAYOUT, back),
  };
}

describe("IOMMU_VIOMMU_ALLOC", () => {
  it("no_viommu: dev 0 / hwpt 0 is ENOENT", () => {
    const h = new ViommuHarness();
    h.ioasAlloc();
    assert.equal(h.viommuAlloc(0, 0).errno, ENOENT);
    assert.deepEqual(teardown(h), []);
  });

  it("flags and type DEFAULT are EOPNOTSUPP; __reserved is not checked", () => {
    const { h, devId, parentId } = viommuSetup();
    assert.equal(h.viommuAlloc(devId, parentId, { flags: 1 }).errno, EOPNOTSUPP);
    assert.equal(h.viommuAlloc(devId, parentId, { type: 0 }).errno, EOPNOTSUPP);
    const r = h.call(IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT, {
      type: 0xdeadbeef,
      dev_id: devId,
      hwpt_id: parentId,
      __reserved: 0x1234,
    });
    assert.equal(r.errno, 0);
    assert.deepEqual(teardown(h), []);
  });

  it("cmd_length: min size 24, zero tail accepted, non-zero tail E2BIG", () => {
    const { h, devId, parentId } = viommuSetup();
    const at = h.proc.mmap(PAGE);
    const withTail = (tail: number, fields: Record<string, number>) => {
      h.proc.write(at + 40n, Uint8Array.of(tail));
      return h.call(IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT, { size: 41, ...fields }, { at })
        .errno;
    };
    // An all-zero struct, exact size and one byte longer with a zero byte: EOPNOTSUPP.
    assert.equal(h.viommuAlloc(0, 0, { type: 0 }).errno, EOPNOTSUPP);
    assert.equal(withTail(0, { type: 0 }), EOPNOTSUPP);
    assert.equal(withTail(1, { type: 0 }), E2BIG);
    assert.equal(h.viommuAlloc(devId, parentId, { size: 23 }).errno, EINVAL);
    const short = h.viommuAlloc(devId, parentId, { size: 24 });
    assert.equal(short.errno, 0);
    assert.ok(short.out.out_viommu_id > 0);
    assert.deepEqual(teardown(h), []);
  });

  it("checks the device, the type, the HWPT and NEST_PARENT in kernel order", () => {
    const { h, ioasId, devId, parentId, nestedId, dev } = viommuSetup();
    assert.equal(h.viommuAlloc(0, parentId).errno, ENOENT);
    // An unsupported type is reported before the HWPT is looked up.
    assert.equal(h.viommuAlloc(devId, 0, { type: 0xdead }).errno, EOPNOTSUPP);
    assert.equal(h.viommuAlloc(devId, 0).errno, ENOENT);
    assert.equal(h.viommuAlloc(devId, ioasId).errno, ENOENT);
    assert.equal(h.viommuAlloc(devId, nestedId).errno, ENOENT);
    const plain = h.hwptAllocOk(devId, ioasId);
    assert.equal(h.viommuAlloc(devId, plain).errno, EINVAL);
    assert.equal(h.destroy(plain), 0);
    assert.equal(h.viommuAlloc(devId, dev.hwptId).errno, EINVAL);
    assert.deepEqual(teardown(h), []);
  });

  it("viommu_negative_tests: parent and vIOMMU are EBUSY while in use", () => {
    const { h, devId, parentId, viommuId, nestedId } = viommuSetup();
    assert.equal(h.destroy(parentId), EBUSY);
    assert.equal(h.destroy(viommuId), EBUSY);
    const parentUsers = h.users(parentId);
    const second = h.viommuAlloc(devId, parentId);
    assert.equal(second.errno, 0);
    assert.equal(h.users(parentId), parentUsers + 1);
    assert.equal(h.destroy(second.out.out_viommu_id), 0);
    assert.equal(h.users(parentId), parentUsers);
    assert.equal(h.destroy(nestedId), 0);
    assert.equal(h.destroy(viommuId), 0);
    assert.equal(h.users(parentId), parentUsers - 1);
    assert.equal(h.destroy(parentId), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("viommu_auto_destroy: closing the context releases vIOMMU, nested and parent", () => {
    const { h, viommuId } = viommuSetup();
    assert.ok(h.isLive(viommuId));
    assert.deepEqual(teardown(h), []);
    assert.equal(h.ctx.table.size, 0);
  });
});

describe("mock vIOMMU driver data", () => {
  it("viommu_alloc_with_data: out_data loops back, the region is 2 pages at PAGE_SIZE", () => {
    const { h, devId, parentId } = viommuSetup();
    const r = allocWithData(h, devId, parentId, 0xbeef);
    assert.equal(r.errno, 0);
    assert.equal(r.data.in_data, 0xbeef);
    assert.equal(r.data.out_data, 0xbeef);
    assert.equal(r.data.out_mmap_offset, BigInt(PAGE));
    assert.equal(r.data.out_mmap_length, BigInt(2 * PAGE));
    // A second vIOMMU's region comes right after the first (first fit above PAGE_SIZE).
    const r2 = allocWithData(h, devId, parentId, 7);
    assert.equal(r2.data.out_mmap_offset, BigInt(3 * PAGE));
    // Destroying the first frees its range: the next one reuses it.
    assert.equal(h.destroy(r.id), 0);
    const r3 = allocWithData(h, devId, parentId, 9);
    assert.equal(r3.data.out_mmap_offset, BigInt(PAGE));
    assert.deepEqual(teardown(h), []);
  });

  it("data_len rules: < 8 and > 24 EINVAL, 8..23 writes back only data_len bytes", () => {
    const { h, devId, parentId } = viommuSetup();
    const regions = mmapRegistry(h.ctx);
    assert.equal(allocWithData(h, devId, parentId, 1, 7).errno, EINVAL);
    assert.equal(allocWithData(h, devId, parentId, 1, 25).errno, EINVAL);
    assert.equal(regions.size, 0);
    const r = allocWithData(h, devId, parentId, 0x55, 8);
    assert.equal(r.errno, 0);
    assert.equal(r.data.out_data, 0x55);
    assert.equal(r.data.out_mmap_offset, 0n, "bytes past data_len untouched");
    // The region exists anyway.
    assert.equal(regions.size, 1);
    assert.deepEqual(teardown(h), []);
  });

  it("an unreadable or unwritable data pointer is EFAULT and leaves nothing", () => {
    const { h, devId, parentId } = viommuSetup();
    const regions = mmapRegistry(h.ctx);
    const tableSize = h.ctx.table.size;
    const parentUsers = h.users(parentId);
    const liveBlocks = h.mock.alloc.live;
    const hole = h.proc.mmap(PAGE);
    h.proc.munmap(hole, PAGE);
    assert.equal(h.viommuAlloc(devId, parentId, { dataLen: 24, uptr: hole }).errno, EFAULT);
    assert.equal(allocWithData(h, devId, parentId, 3, 24, { writable: false }).errno, EFAULT);
    assert.equal(regions.size, 0);
    assert.equal(h.ctx.table.size, tableSize);
    assert.equal(h.users(parentId), parentUsers);
    assert.equal(h.mock.alloc.live, liveBlocks, "the loopback pages were freed");
    assert.deepEqual(teardown(h), []);
  });
});

describe("mmap of the iommufd fd", () => {
  function setupWithRegion() {
    const s = viommuSetup();
    const r = allocWithData(s.h, s.devId, s.parentId, 0xbeef);
    assert.equal(r.errno, 0);
    const offset = BigInt(r.data.out_mmap_offset);
    const length = BigInt(r.data.out_mmap_length);
    return { ...s, dataViommu: r.id, offset, length };
  }

  it("only the whole region maps: ENXIO for other offsets and lengths", () => {
    const { h, offset, length } = setupWithRegion();
    const map = (off: bigint, len: bigint, prot = RW, flags = MAP_SHARED) =>
      mmapRegion(h.ctx, { offset: off, length: len, prot, flags });
    assert.equal(map(offset + BigInt(PAGE), length), ENXIO);
    assert.equal(map(offset + BigInt(2 * PAGE), length), ENXIO);
    assert.equal(map(offset, length / 2n), ENXIO);
    assert.equal(map(offset, length * 2n), ENXIO);
    assert.equal(map(0n, BigInt(PAGE)), ENXIO);
    assert.equal(map(offset, length, RW, MAP_PRIVATE), EINVAL);
    assert.equal(map(offset, length, RW | PROT_EXEC), EPERM);
    // The VFS checks come first.
    assert.equal(map(offset + 1n, length), EINVAL);
    assert.equal(map(offset, 0n), EINVAL);
    // A length rounded up to the region's is fine.
    const m = map(offset, length - 100n);
    assert.equal(typeof m, "object");
    (m as MmapMapping).close();
    assert.deepEqual(teardown(h), []);
  });

  it("a mapping reads in_data and keeps the vIOMMU busy until unmapped", () => {
    const { h, dataViommu, offset, length } = setupWithRegion();
    const m = mmapRegion(h.ctx, { offset, length, prot: RW, flags: MAP_SHARED });
    assert.ok(typeof m === "object");
    const word = new Uint8Array(4);
    m.read(0, word);
    assert.equal(new DataView(word.buffer).getUint32(0, true), 0xbeef);
    const rest = new Uint8Array(2 * PAGE - 4);
    m.read(4, rest);
    assert.ok(rest.every((b) => b === 0));
    assert.equal(h.destroy(dataViommu), EBUSY);
    assert.equal(ctxFileRefs(h.ctx), 1);
    const copy = m.dup();
    m.close();
    assert.equal(h.destroy(dataViommu), EBUSY, "the copy still holds it");
    copy.close();
    assert.equal(ctxFileRefs(h.ctx), 0);
    assert.equal(h.destroy(dataViommu), 0);
    // The region went with its owner.
    assert.equal(mmapRegion(h.ctx, { offset, length, prot: RW, flags: MAP_SHARED }), ENXIO);
    assert.deepEqual(teardown(h), []);
  });

  it("a mapping outliving the context close delays the vIOMMU's release", () => {
    const { h, dataViommu, offset, length } = setupWithRegion();
    const m = mmapRegion(h.ctx, { offset, length, prot: RW, flags: MAP_SHARED });
    assert.ok(typeof m === "object");
    const stuck = teardown(h);
    assert.ok(stuck.length > 0, "objects held by the mapping survive the close");
    assert.ok(h.isLive(dataViommu));
    m.close();
    assert.equal(h.ctx.table.size, 0, "the last reference released the rest");
  });

  it("the daemon hook checks page offsets", () => {
    const { h, offset, length } = setupWithRegion();
    const reg = mmapRegistry(h.ctx);
    assert.equal(reg.check(offset / BigInt(PAGE), length), 0);
    assert.equal(reg.check(offset / BigInt(PAGE) + 1n, length), ENXIO);
    assert.deepEqual(teardown(h), []);
  });
});

describe("viommu (driver view)", () => {
  it("records the IOMMU instance and exposes the driver ops hwpt.ts calls", () => {
    const { h, viommuId, dev } = viommuSetup();
    const v = h.ctx.table.peek(viommuId) as Viommu;
    assert.equal(v.iommuDev, dev.mdev.iommu);
    assert.equal(typeof v.allocDomainNested, "function");
    assert.equal(typeof v.cacheInvalidate, "function");
    assert.equal(v.vdevIdOf(dev.mdev), undefined);
    assert.deepEqual(teardown(h), []);
  });
});

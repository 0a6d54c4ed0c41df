/**
 * The HWPT ioctls through the codec: IOMMU_HWPT_ALLOC (paging, nested on a parent, nested on a
 * vIOMMU, FAULT_ID_VALID), IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_SET_DIRTY_TRACKING and
 * IOMMU_HWPT_GET_DIRTY_BITMAP, each errno path of hwpt-device.md §9, §13-§15 and the selftest
 * sequences of §18 (iommufd_ioas.alloc_hwpt_nested, iommufd_dirty_tracking.*).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  iommufdDeviceAttach,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
} from "../../src/core/device.ts";
import type {
  FaultInjector,
  IommuNestedDomain,
  IommuUserData,
  IommuUserDataArray,
  ViommuLink,
} from "../../src/core/driver.ts";
import { type HwptNested, HwptPaging, type ViommuForHwpt } from "../../src/core/hwpt.ts";
import { IommufdObject, ObjType, refPut } from "../../src/core/object.ts";
import { contiguousPages } from "../../src/core/user_mm.ts";
import {
  EADDRINUSE,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
} from "../../src/errno.ts";
import {
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  type MockIommu,
  type MockNestedDomain,
  type MockPagingDomain,
} from "../../src/hw/mock/index.ts";
import {
  encode,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_OPTION,
  IOMMU_OPTION_LAYOUT,
} from "../../src/uapi/index.ts";
import { DevHarness, errnoOf, MOCK_APERTURE_START, SELFTEST } from "./device_harness.ts";

const NEST_PARENT = 1;
const DIRTY = 2;
const FAULT_ID_VALID = 4;
const PASID = 8;
const INV_SELFTEST = 0xdeadbeef;
const IOTLB_DEFAULT = 0xbadbeef;
const START = MOCK_APERTURE_START;
const MiB = 1n << 20n;

/** A FAULT object stand-in (the FAULT area owns the real one). */
class FakeFault extends IommufdObject {
  readonly type = ObjType.FAULT;
  destroy(): void {}
}

function publishFault(h: DevHarness): FakeFault {
  const f = h.ctx.table.reserve(new FakeFault());
  h.ctx.table.finalize(f);
  return f;
}

function disableHugePages(h: DevHarness, ioas: number): void {
  const r = h.call(IOMMU_OPTION, IOMMU_OPTION_LAYOUT, {
    option_id: 1,
    op: 0,
    object_id: ioas,
    val64: 0n,
  });
  assert.equal(r.errno, 0);
}

describe("IOMMU_HWPT_ALLOC", () => {
  it("checks __reserved, data type/length, dev_id and pt_id in that order", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const call = (f: Record<string, number | bigint>) =>
      h.call(IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_LAYOUT, { dev_id: dev, pt_id: ioas, ...f }).errno;
    assert.equal(call({ __reserved: 1, dev_id: 0 }), EOPNOTSUPP);
    assert.equal(call({ data_type: 0, data_len: 8, dev_id: 0 }), EINVAL);
    assert.equal(call({ data_type: SELFTEST, data_len: 0, dev_id: 0 }), EINVAL);
    assert.equal(call({ dev_id: 0, pt_id: 0 }), ENOENT);
    assert.equal(call({ dev_id: ioas }), ENOENT);
    assert.equal(call({ pt_id: 0 }), EINVAL);
    assert.equal(call({ pt_id: 999 }), EINVAL);
    assert.equal(call({ pt_id: dev }), EINVAL);
    // __reserved2 is not checked.
    assert.equal(call({ __reserved2: 7 }), 0);
  });

  it("allocates manual paging HWPTs populated at once and echoes the command", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const va = h.proc.mmap(4 * 4096);
    h.mapOk(ioas, va, 4 * 4096, START);
    const dev = h.mockDomain(ioas).idev.id;
    const r = h.hwptAlloc(dev, ioas, NEST_PARENT | PASID);
    assert.equal(r.errno, 0);
    assert.equal(r.out.flags, NEST_PARENT | PASID);
    assert.equal(r.out.dev_id, dev);
    const hw = h.paging(r.out.out_hwpt_id);
    assert.equal(hw.autoDomain, false);
    assert.equal(hw.nestParent, true);
    assert.equal(hw.pasidCompat, true);
    assert.equal(hw.users, 1);
    const pages = h.proc.pages(va, 4, false);
    assert.ok(Array.isArray(pages));
    assert.equal(hw.domain.iovaToPhys(START + 4096n), pages[1].pfn * 4096);
    assert.equal(h.ioas(ioas).iopt.domains.length, 2);
    assert.equal(h.destroy(r.out.out_hwpt_id), 0);
    assert.equal(h.ioas(ioas).iopt.domains.length, 1);
  });

  it("passes selftest data to the driver (HUGE page table) and its errors back", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const huge = h.hwptAllocOk(dev, ioas, 0, [0, 1]);
    assert.equal(h.paging(huge).domain.pgsizeBitmap, MiB | 4096n);
    assert.equal(h.hwptAlloc(dev, ioas, 0, { data: [0, 2] }).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(dev, ioas, 0, { data: [0], dataLen: 3 }).errno, EINVAL);
    assert.equal(
      h.hwptAlloc(dev, ioas, 0, { dataType: SELFTEST + 1, data: [0] }).errno,
      EOPNOTSUPP,
    );
    assert.equal(
      h.hwptAlloc(dev, ioas, 0, { dataType: SELFTEST, dataLen: 8, uptr: 0n }).errno,
      EFAULT,
    );
  });

  it("refuses flags the core or the device cannot take", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const nd = h.mockDomain(h.ioasAlloc(), MOCK_FLAGS_DEVICE_NO_DIRTY).idev.id;
    const size = h.ctx.table.size;
    assert.equal(h.hwptAlloc(dev, ioas, 1 << 4).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(dev, ioas, NEST_PARENT | FAULT_ID_VALID).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(nd, ioas, DIRTY).errno, EOPNOTSUPP);
    assert.equal(h.ctx.table.size, size);
  });

  it("fails like iopt_table_add_domain when the IOAS cannot take the domain", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const other = h.ioasAlloc();
    const dev = h.mockDomain(other).idev.id;
    // A 1 KiB-aligned area cannot live in a domain with 2 KiB pages.
    const va = h.proc.mmap(4096);
    assert.equal(h.map(ioas, va + 1024n, 1024, { iova: START + 1024n }).errno, 0);
    const size = h.ctx.table.size;
    assert.equal(h.hwptAlloc(dev, ioas).errno, EADDRINUSE);
    // An area below the mock aperture collides with its reservation.
    const ioas3 = h.ioasAlloc();
    assert.equal(h.map(ioas3, h.proc.mmap(4096), 4096, { iova: 0x10000n }).errno, 0);
    assert.equal(h.hwptAlloc(dev, ioas3).errno, EADDRINUSE);
    assert.equal(h.ctx.table.size, size + 1);
    // The id freed by the failures is the one the next allocation gets.
    const ok = h.hwptAllocOk(dev, other);
    assert.equal(ok, ioas3 + 1);
  });

  it("undoes the HWPT when the command cannot be written back (EFAULT)", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const page = contiguousPages(1)[0];
    const b = new Uint8Array(IOMMU_HWPT_ALLOC_LAYOUT.size);
    encode(IOMMU_HWPT_ALLOC_LAYOUT, { size: b.length, dev_id: dev, pt_id: ioas }, b);
    page.write(0, b);
    const ro = h.proc.mmap(4096, { pages: [page], writable: false });
    const size = h.ctx.table.size;
    assert.equal(h.ctx.ioctl(IOMMU_HWPT_ALLOC, ro, h.proc).errno, EFAULT);
    assert.equal(h.ctx.table.size, size);
    assert.equal(h.ioas(ioas).iopt.domains.length, 1);
  });

  it("follows iommufd_ioas.alloc_hwpt_nested", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    const dev = b.idev.id;
    const parent = h.hwptAllocOk(dev, ioas, NEST_PARENT);
    const notParent = h.hwptAllocOk(dev, ioas, 0);
    const data = [IOTLB_DEFAULT];
    assert.equal(h.hwptAlloc(dev, parent, 0, { dataType: 0, data, dataLen: 4 }).errno, EINVAL);
    assert.equal(h.hwptAlloc(dev, parent, 0, { dataType: SELFTEST + 1, data }).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(dev, parent, 0, { data, dataLen: 3 }).errno, EINVAL);
    assert.equal(h.hwptAlloc(dev, parent, 0, { dataType: SELFTEST, dataLen: 4 }).errno, EFAULT);
    assert.equal(h.hwptAlloc(dev, parent, NEST_PARENT, { data }).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(dev, notParent, 0, { data }).errno, EINVAL);
    assert.equal(h.hwptAlloc(dev, b.hwptId, 0, { data }).errno, EINVAL); // auto HWPT
    const fault = publishFault(h);
    const n0 = h.hwptAllocOk(dev, parent, 0, data);
    const n1 = h.hwptAllocOk(dev, parent, 0, data);
    const beforeIopf = h.ctx.table.size;
    assert.equal(
      h.hwptAlloc(dev, parent, FAULT_ID_VALID, { data, faultId: 0xffffffff }).errno,
      ENOENT,
    );
    assert.equal(h.ctx.table.size, beforeIopf);
    const iopf = h.hwptAlloc(dev, parent, FAULT_ID_VALID, { data, faultId: fault.id });
    assert.equal(iopf.errno, 0);
    const iopfHwpt = h.hwpt(iopf.out.out_hwpt_id);
    assert.equal(iopfHwpt.fault, fault);
    assert.equal(fault.users, 2);
    assert.equal(iopfHwpt.domain.faultData, iopfHwpt);
    for (const id of [n0, n1]) {
      const dom = h.hwpt(id).domain as MockNestedDomain;
      assert.deepEqual(
        [...dom.iotlb],
        [IOTLB_DEFAULT, IOTLB_DEFAULT, IOTLB_DEFAULT, IOTLB_DEFAULT],
      );
    }
    assert.equal(h.hwptAlloc(dev, n0, 0, { data }).errno, EINVAL);
    assert.equal(h.destroy(parent), EBUSY);

    // Attachments keep nested HWPTs busy.
    iommufdDeviceReplace(b.idev, 0, n0);
    assert.equal(h.isLive(b.hwptId), false);
    assert.equal(h.destroy(n0), EBUSY);
    iommufdDeviceReplace(b.idev, 0, n1);
    assert.equal(h.destroy(n1), EBUSY);
    assert.equal(h.destroy(n0), 0);
    iommufdDeviceReplace(b.idev, 0, iopf.out.out_hwpt_id);
    assert.equal(h.destroy(iopf.out.out_hwpt_id), EBUSY);
    assert.equal(b.mdev.iopfRefcount, 1);
    iommufdDeviceReplace(b.idev, 0, parent);
    assert.equal(b.mdev.iopfRefcount, 0);
    assert.equal(h.destroy(n1), 0);
    assert.equal(h.destroy(iopf.out.out_hwpt_id), 0);
    assert.equal(fault.users, 1);
    iommufdDeviceReplace(b.idev, 0, ioas);
    assert.equal(h.destroy(parent), 0);
    assert.equal(h.destroy(notParent), 0);
    assert.equal(h.destroy(fault.id), 0);
  });
});

describe("IOMMU_HWPT_INVALIDATE", () => {
  function setup() {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const parent = h.hwptAllocOk(dev, ioas, NEST_PARENT);
    const n0 = h.hwptAllocOk(dev, parent, 0, [IOTLB_DEFAULT]);
    const n1 = h.hwptAllocOk(dev, parent, 0, [IOTLB_DEFAULT]);
    const iotlb = (id: number) => [...(h.hwpt(id).domain as MockNestedDomain).iotlb];
    const reqs = (entries: [number, number][], len = 8): bigint => {
      const words: number[] = [];
      for (const [f, i] of entries) words.push(f, i);
      if (len === 8) return h.words(words);
      const va = h.proc.mmap(4096);
      const buf = new Uint8Array(4096);
      const v = new DataView(buf.buffer);
      entries.forEach(([f, i], k) => {
        if (k * len + 8 <= buf.length) {
          v.setUint32(k * len, f, true);
          v.setUint32(k * len + 4, i, true);
        }
      });
      h.proc.write(va, buf);
      return va;
    };
    return { h, parent, n0, n1, iotlb, reqs };
  }
  const D = IOTLB_DEFAULT;

  it("follows the alloc_hwpt_nested invalidation matrix, writing entry_num back", () => {
    const { h, parent, n0, n1, iotlb, reqs } = setup();
    const one = reqs([[0, 0]]);
    assert.deepEqual(h.invalidate(parent, one, INV_SELFTEST, 8, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, 0n, INV_SELFTEST, 8, 0), { errno: 0, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, 0xdadbeef, 8, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, 0n, 0xdadbeef, 8, 0), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, INV_SELFTEST, 9, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, INV_SELFTEST, 1, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, INV_SELFTEST, 4097, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, INV_SELFTEST, 8, 2 ** 19 + 1), {
      errno: EINVAL,
      num: 0,
    });
    assert.deepEqual(h.invalidate(n0, reqs([[0xffffffff, 0]]), INV_SELFTEST, 8, 1), {
      errno: EOPNOTSUPP,
      num: 0,
    });
    assert.deepEqual(h.invalidate(n0, 0n, INV_SELFTEST, 8, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, one, INV_SELFTEST, 0, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(n0, reqs([[0, 4]]), INV_SELFTEST, 8, 1), {
      errno: EINVAL,
      num: 0,
    });
    assert.deepEqual(iotlb(n0), [D, D, D, D]);
    const badSecond = reqs([
      [0, 0],
      [0xffffffff, 1],
    ]);
    assert.deepEqual(h.invalidate(n0, badSecond, INV_SELFTEST, 8, 2), {
      errno: EOPNOTSUPP,
      num: 1,
    });
    assert.deepEqual(iotlb(n0), [0, D, D, D]);
    const badId = reqs([
      [0, 0],
      [0, 4],
    ]);
    assert.deepEqual(h.invalidate(n0, badId, INV_SELFTEST, 8, 2), { errno: EINVAL, num: 1 });
    assert.deepEqual(h.invalidate(n0, reqs([[0, 1]]), INV_SELFTEST, 8, 1), { errno: 0, num: 1 });
    assert.deepEqual(iotlb(n0), [0, 0, D, D]);
    const two = reqs([
      [0, 2],
      [0, 3],
    ]);
    assert.deepEqual(h.invalidate(n0, two, INV_SELFTEST, 8, 2), { errno: 0, num: 2 });
    assert.deepEqual(iotlb(n0), [0, 0, 0, 0]);
    assert.deepEqual(h.invalidate(n1, reqs([[1, 0]]), INV_SELFTEST, 8, 1), { errno: 0, num: 1 });
    assert.deepEqual(iotlb(n1), [0, 0, 0, 0]);
  });

  it("checks bounds before the id, __reserved first, and reports a missing id as ENOENT", () => {
    const { h, n0, reqs } = setup();
    const one = reqs([[0, 0]]);
    assert.deepEqual(h.invalidate(999, one, INV_SELFTEST, 0, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(999, one, INV_SELFTEST, 8, 1), { errno: ENOENT, num: 0 });
    const r = h.call(IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_INVALIDATE_LAYOUT, {
      hwpt_id: n0,
      data_uptr: one,
      data_type: INV_SELFTEST,
      entry_len: 8,
      entry_num: 1,
      __reserved: 1,
    });
    assert.equal(r.errno, EOPNOTSUPP);
    assert.equal(r.out.entry_num, 0);
  });
});

describe("IOMMU_HWPT_SET_DIRTY_TRACKING", () => {
  it("checks flags, the HWPT_PAGING lookup and the dirty ops", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const plain = h.hwptAllocOk(dev, ioas, NEST_PARENT);
    const nested = h.hwptAllocOk(dev, plain, 0, [0]);
    const dirty = h.hwptAllocOk(dev, ioas, DIRTY);
    assert.equal(h.setDirtyTracking(dirty, 2), EOPNOTSUPP);
    assert.equal(h.setDirtyTracking(999, 1), ENOENT);
    assert.equal(h.setDirtyTracking(nested, 1), ENOENT);
    assert.equal(h.setDirtyTracking(plain, 1), EOPNOTSUPP);
    assert.equal(h.setDirtyTracking(plain, 0), EOPNOTSUPP);
    assert.equal(h.setDirtyTracking(dirty, 1), 0);
    assert.equal((h.paging(dirty).domain as MockPagingDomain).dirtyTracking, true);
    assert.equal(h.setDirtyTracking(dirty, 1), 0);
    assert.equal(h.setDirtyTracking(dirty, 0), 0);
    assert.equal((h.paging(dirty).domain as MockPagingDomain).dirtyTracking, false);
  });

  it("starts a tracking period clean", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    h.mapOk(ioas, h.proc.mmap(8192), 8192, START);
    const dirty = h.hwptAllocOk(dev, ioas, DIRTY);
    const dom = h.paging(dirty).domain as MockPagingDomain;
    dom.setDirty(START);
    assert.equal(h.setDirtyTracking(dirty, 1), 0);
    const seen: bigint[] = [];
    dom.readAndClearDirty(START, 8192n, false, (i) => seen.push(i));
    assert.deepEqual(seen, []);
  });
});

describe("IOMMU_HWPT_GET_DIRTY_BITMAP", () => {
  /** The iommufd_dirty_tracking fixture: HUGE_PAGES off (non-huge), a device, a dirty HWPT. */
  function fixture(bufferSize: bigint, huge: boolean) {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    if (!huge) disableHugePages(h, ioas);
    const dev = h.mockDomain(ioas).idev.id;
    let va: bigint;
    if (huge) {
      // hugetlb-backed: physically contiguous and 1 MiB aligned.
      const n = Number(bufferSize / 4096n);
      const pool = contiguousPages(n + 256);
      const skip = (256 - (pool[0].pfn % 256)) % 256;
      va = h.proc.mmap(Number(bufferSize), { pages: pool.slice(skip, skip + n) });
    } else {
      va = h.proc.mmap(Number(bufferSize));
    }
    h.mapOk(ioas, va, bufferSize, START);
    const hwpt = h.hwptAllocOk(dev, ioas, DIRTY, [0, huge ? 1 : 0]);
    assert.equal(h.setDirtyTracking(hwpt, 1), 0);
    const dom = h.paging(hwpt).domain as MockPagingDomain;
    return { h, ioas, hwpt, dom };
  }

  /** _test_mock_dirty_bitmaps: mark the first slot of every other PTE, read the bitmap. */
  function checkPattern(
    h: DevHarness,
    hwpt: number,
    dom: MockPagingDomain,
    length: bigint,
    pteSize: bigint,
    bitmapOffset: bigint,
    flags: number,
  ): void {
    const pageSize = 2048n;
    const nbits = Number(length / pageSize);
    const npte = Number(pteSize / pageSize);
    const pteset = 2 * npte;
    let marked = 0;
    for (let i = 0; i < nbits; i += pteset) {
      dom.setDirty(START + BigInt(i) * pageSize);
      marked++;
    }
    assert.equal(marked, Math.max(nbits / pteset, 1));
    const bytes = Math.ceil(nbits / 8);
    const region = h.proc.mmap(bytes + 8192);
    const at = region + bitmapOffset;
    const read = (): number[] => {
      h.proc.write(at, new Uint8Array(bytes));
      assert.equal(h.getDirtyBitmap(hwpt, START, length, pageSize, at, flags), 0);
      const b = new Uint8Array(bytes);
      h.proc.read(at, b);
      const bits: number[] = [];
      for (let i = 0; i < nbits; i++) bits.push((b[i >> 3] >> (i & 7)) & 1);
      return bits;
    };
    const first = read();
    for (let i = 0; i < nbits; i++) assert.equal(first[i], i % pteset < npte ? 1 : 0, `bit ${i}`);
    const second = read();
    const noClear = (flags & 1) !== 0;
    for (let i = 0; i < nbits; i++)
      assert.equal(second[i], noClear && i % pteset < npte ? 1 : 0, `second read bit ${i}`);
  }

  for (const [size, huge] of [
    [8n * 1024n, false],
    [128n * 1024n, false],
    [320n * 1024n, false],
    [4n * MiB, true],
  ] as const) {
    for (const flags of [0, 1]) {
      it(`sets one bit per dirty PTE slot (${size / 1024n} KiB${huge ? " huge" : ""}${flags ? ", NO_CLEAR" : ""})`, () => {
        const { h, hwpt, dom } = fixture(size, huge);
        // HUGE_PAGES = 0 puts every 2 KiB mock page in its own leaf: one bit per dirty 2 KiB.
        const pte = huge ? MiB : 2048n;
        for (const off of [0n, 2048n, 0xff1n]) {
          checkPattern(h, hwpt, dom, size, pte, off, flags);
          // NO_CLEAR leaves the bits: clear them for the next round.
          dom.readAndClearDirty(START, size, false, () => {});
        }
      });
    }
  }

  it("checks flags, id, range and page size before the dirty ops", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas).idev.id;
    const plain = h.hwptAllocOk(dev, ioas, NEST_PARENT);
    const nested = h.hwptAllocOk(dev, plain, 0, [0]);
    const dirty = h.hwptAllocOk(dev, ioas, DIRTY);
    const data = h.proc.mmap(4096);
    const g = (id: number, iova: bigint, len: bigint, ps: bigint, flags = 0, d = data) =>
      h.getDirtyBitmap(id, iova, len, ps, d, flags);
    assert.equal(g(dirty, START, 4096n, 2048n, 2), EOPNOTSUPP);
    const reserved = h.call(IOMMU_HWPT_GET_DIRTY_BITMAP, IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT, {
      hwpt_id: dirty,
      __reserved: 1,
      iova: START,
      length: 4096n,
      page_size: 2048n,
      data,
    });
    assert.equal(reserved.errno, EOPNOTSUPP);
    assert.equal(g(999, START, 4096n, 2048n), ENOENT);
    assert.equal(g(nested, START, 4096n, 2048n), ENOENT);
    assert.equal(g(dirty, START, 0n, 2048n), EOVERFLOW);
    assert.equal(g(dirty, (1n << 64n) - 2048n, 4096n, 2048n), EOVERFLOW);
    assert.equal(g(dirty, START + 1024n, 2048n, 1024n), EINVAL); // IOAS alignment is 2048
    assert.equal(g(dirty, START, 4096n, 0n), EINVAL);
    assert.equal(g(dirty, START + 2048n, 4096n, 4096n), EINVAL);
    assert.equal(g(dirty, START, 6144n, 4096n), EINVAL);
    assert.equal(g(plain, START + 1024n, 2048n, 2048n), EINVAL); // range before dirty ops
    assert.equal(g(plain, START, 4096n, 2048n), EOPNOTSUPP);
    // A page size that is not a power of two passes the mask test; bits are ctz-sized.
    assert.equal(g(dirty, START, 8192n, 6144n), 0);
    assert.equal(g(dirty, START, 12288n, 6144n), EINVAL); // (START + 0x3000) & 0x17ff != 0
    // Length 0 at IOVA 0 wraps to the whole space and is accepted (nothing is mapped at 0).
    assert.equal(g(dirty, 0n, 0n, 2048n), 0);
    // The bitmap cannot be pinned: ENOMEM, even for a NULL pointer.
    assert.equal(g(dirty, START, 4096n, 2048n, 0, 0n), ENOMEM);
    // Not covered by an area: the walk fails and the ioctl still succeeds.
    assert.equal(g(dirty, START, 4096n, 2048n), 0);
  });

  it("stops at a hole between areas, leaving later dirty PTEs set", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    disableHugePages(h, ioas);
    const dev = h.mockDomain(ioas).idev.id;
    h.mapOk(ioas, h.proc.mmap(8192), 8192, START);
    h.mapOk(ioas, h.proc.mmap(8192), 8192, START + 16384n);
    const hwpt = h.hwptAllocOk(dev, ioas, DIRTY);
    const dom = h.paging(hwpt).domain as MockPagingDomain;
    dom.setDirty(START + 4096n);
    dom.setDirty(START + 16384n);
    const data = h.proc.mmap(4096);
    assert.equal(h.getDirtyBitmap(hwpt, START, 24576n, 4096n, data), 0);
    const b = new Uint8Array(1);
    h.proc.read(data, b);
    assert.equal(b[0], 0b10);
    const left: bigint[] = [];
    dom.readAndClearDirty(START + 16384n, 8192n, true, (i) => left.push(i));
    assert.deepEqual(left, [START + 16384n]);
  });

  it("pins the bitmap a window at a time: ENOMEM for the first, a silent stop later", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    disableHugePages(h, ioas);
    const dev = h.mockDomain(ioas).idev.id;
    const len = 16n * MiB + 8192n;
    h.mapOk(ioas, h.proc.mmap(Number(len)), len, START);
    const hwpt = h.hwptAllocOk(dev, ioas, DIRTY);
    const dom = h.paging(hwpt).domain as MockPagingDomain;
    // page_size 1: one bit per byte of IOVA, so a 2 MiB window of bitmap covers 16 MiB.
    const window = 2 * 1024 * 1024;
    const data = h.proc.mmap(window); // the page after it stays unmapped (guard)
    // Large pages are off, so each 2 KiB is its own leaf: dirty a whole 4 KiB as two halves.
    for (const at of [START, START + 16n * MiB + 4096n]) {
      dom.setDirty(at);
      dom.setDirty(at + 2048n);
    }
    assert.equal(h.getDirtyBitmap(hwpt, START, len, 1n, data), 0);
    const first = new Uint8Array(512);
    h.proc.read(data, first);
    assert.ok(first.every((x) => x === 0xff));
    const left: bigint[] = [];
    dom.readAndClearDirty(START + 16n * MiB, 8192n, true, (i) => left.push(i));
    // Beyond the pinned window: still dirty.
    assert.deepEqual(left, [START + 16n * MiB + 4096n, START + 16n * MiB + 6144n]);
    // With the second window mapped, the walk reaches it.
    h.proc.mmap(4096, { at: data + BigInt(window) });
    assert.equal(h.getDirtyBitmap(hwpt, START, len, 1n, data), 0);
    const tail = new Uint8Array(512);
    h.proc.read(data + BigInt(window) + 512n, tail);
    assert.ok(tail.every((x) => x === 0xff));
    // A bitmap whose first window cannot be pinned: ENOMEM.
    assert.equal(h.getDirtyBitmap(hwpt, START, len, 1n, data + BigInt(window) + 4096n), ENOMEM);
  });
});

describe("nested HWPTs on a vIOMMU", () => {
  /** A vIOMMU stand-in with the mock's alloc_domain_nested and a vDEVICE table. */
  class FakeViommu extends IommufdObject implements ViommuForHwpt, ViommuLink {
    readonly type = ObjType.VIOMMU;
    readonly hwpt: HwptPaging;
    readonly iommuDev: object | null;
    readonly vdevs = new Map<object, bigint>();
    invalidated: IommuUserDataArray[] = [];
    private readonly mock: MockIommu;
    constructor(hwpt: HwptPaging, mock: MockIommu) {
      super();
      this.hwpt = hwpt;
      this.mock = mock;
      this.iommuDev = mock;
    }
    vdevIdOf(dev: object): bigint | undefined {
      return this.vdevs.get(dev);
    }
    allocDomainNested(
      flags: number,
      userData: IommuUserData,
      faults: FaultInjector,
    ): IommuNestedDomain {
      return this.mock.viommuAllocDomainNested(this, this.hwpt.domain, flags, userData, faults);
    }
    cacheInvalidate(array: IommuUserDataArray): number {
      this.invalidated.push({ ...array });
      array.entryNum = 0;
      return EINVAL;
    }
    destroy(): void {
      refPut(this.hwpt);
    }
  }

  it("holds the vIOMMU, needs a vDEVICE to attach, and routes invalidation to it", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    const dev = b.idev.id;
    const parent = h.hwptAllocOk(dev, ioas, NEST_PARENT);
    const v = new FakeViommu(h.paging(parent), h.mock);
    h.ctx.table.reserve(v);
    h.paging(parent).users++;
    h.ctx.table.finalize(v);
    const data = [IOTLB_DEFAULT];
    assert.equal(h.hwptAlloc(dev, v.id, FAULT_ID_VALID | (1 << 31), { data }).errno, EOPNOTSUPP);
    assert.equal(h.hwptAlloc(dev, v.id, 0).errno, EOPNOTSUPP); // no data
    const n = h.hwptAllocOk(dev, v.id, PASID, data);
    const hw = h.hwpt(n) as HwptNested;
    assert.equal(hw.viommu, v);
    assert.equal(hw.parent.id, parent);
    assert.equal(v.users, 2);
    assert.equal(h.paging(parent).users, 2); // only the vIOMMU holds the parent
    assert.equal(
      errnoOf(() => iommufdDeviceReplace(b.idev, 0, n)),
      ENOENT,
    );
    v.vdevs.set(b.mdev, 0x99n);
    iommufdDeviceReplace(b.idev, 0, n);
    assert.equal(b.mdev.vdevId, 0x99n);
    assert.deepEqual(h.invalidate(v.id, h.words([0, 0, 0]), 0xdeadbeef, 12, 1), {
      errno: EINVAL,
      num: 0,
    });
    assert.equal(v.invalidated.length, 1);
    iommufdDeviceReplace(b.idev, 0, ioas);
    assert.equal(h.destroy(v.id), EBUSY);
    assert.equal(h.destroy(n), 0);
    assert.equal(v.users, 1);
    assert.equal(h.destroy(v.id), 0);
    assert.equal(h.destroy(parent), 0);
  });

  it("refuses a device behind another IOMMU instance", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    const parent = h.hwptAllocOk(b.idev.id, ioas, NEST_PARENT);
    const v = new FakeViommu(h.paging(parent), h.mock);
    (v as unknown as { iommuDev: object }).iommuDev = {};
    h.ctx.table.reserve(v);
    h.paging(parent).users++;
    h.ctx.table.finalize(v);
    assert.equal(h.hwptAlloc(b.idev.id, v.id, 0, { data: [0] }).errno, EINVAL);
  });

  it("treats a PASID attach of a vIOMMU nested HWPT like any other", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas, 4);
    const parent = h.hwptAllocOk(b.idev.id, ioas, NEST_PARENT | PASID);
    iommufdDeviceReplace(b.idev, 0, parent);
    const v = new FakeViommu(h.paging(parent), h.mock);
    h.ctx.table.reserve(v);
    h.paging(parent).users++;
    h.ctx.table.finalize(v);
    const n = h.hwptAllocOk(b.idev.id, v.id, PASID, [0]);
    // set_dev_pasid has no vDEVICE check.
    iommufdDeviceAttach(b.idev, 5, n);
    assert.ok(h.hwpt(n) instanceof Object);
    assert.ok(h.paging(parent) instanceof HwptPaging);
  });
});

describe("fail_nth: the device sequence unwinds at every site", () => {
  /** The selftest object MOCK_DOMAIN creates: destroying it unplugs the device. */
  class FakeStdev extends IommufdObject {
    readonly type = ObjType.SELFTEST;
    b: ReturnType<DevHarness["mockDomain"]> | null = null;
    readonly h: DevHarness;
    constructor(h: DevHarness) {
      super();
      this.h = h;
    }
    destroy(): void {
      if (this.b !== null) this.h.unplug(this.b);
    }
  }

  /**
   * basic_fail_nth.device without the vIOMMU parts: two IOASes sharing one mapped page, then
   * with injection armed MOCK_DOMAIN_FLAGS(PASID), GET_HW_INFO, HWPT_ALLOC(PASID), two
   * replaces, HWPT_ALLOC(NEST_PARENT|PASID), a nested HWPT with a FAULT, HWPT_ALLOC(PASID),
   * PASID 200 attach / replace / detach. Stops at the first failing step, as the test does.
   */
  function sequence(h: DevHarness, buf: bigint, n: number): boolean {
    const ioas1 = h.ioasAlloc();
    const ioas2 = h.ioasAlloc();
    h.mapOk(ioas1, buf, 4096, START);
    h.mapOk(ioas2, buf, 4096, START);
    const fault = publishFault(h);
    h.ctx.faults.arm(n);
    // MOCK_DOMAIN: the selftest object first, then the device, bind and attach.
    let stdev: FakeStdev;
    try {
      stdev = h.ctx.table.reserve(new FakeStdev(h));
    } catch {
      return false;
    }
    try {
      stdev.b = h.mockDomain(ioas1, 4);
    } catch {
      h.ctx.table.abort(stdev);
      return false;
    }
    h.ctx.table.finalize(stdev);
    const b = stdev.b;
    const dev = b.idev.id;
    if (h.hwInfo(dev, { dataLen: 8, uptr: h.proc.mmap(8) }).errno !== 0) return false;
    const a = h.hwptAlloc(dev, ioas1, PASID);
    if (a.errno !== 0) return false;
    if (errnoOf(() => iommufdDeviceReplace(b.idev, 0, ioas2)) !== 0) return false;
    if (errnoOf(() => iommufdDeviceReplace(b.idev, 0, a.out.out_hwpt_id)) !== 0) return false;
    const p = h.hwptAlloc(dev, ioas1, NEST_PARENT | PASID);
    if (p.errno !== 0) return false;
    const parent = p.out.out_hwpt_id;
    const nf = h.hwptAlloc(dev, parent, FAULT_ID_VALID, {
      data: [IOTLB_DEFAULT],
      faultId: fault.id,
    });
    if (nf.errno !== 0) return false;
    const t = h.hwptAlloc(dev, ioas1, PASID);
    if (t.errno !== 0) return false;
    if (errnoOf(() => iommufdDeviceAttach(b.idev, 200, parent)) !== 0) return false;
    if (errnoOf(() => iommufdDeviceReplace(b.idev, 200, t.out.out_hwpt_id)) !== 0) return false;
    iommufdDeviceDetach(b.idev, 200);
    return true;
  }

  it("succeeds without injection and leaves nothing pinned, bound or allocated on close", () => {
    let fired = 0;
    for (let n = 0; ; n++) {
      assert.ok(n < 1000, "fail_nth limit");
      const h = new DevHarness();
      const buf = h.proc.mmap(4096);
      const ok = sequence(h, buf, n);
      // The fixture's teardown: PASID_DETACH, then close.
      for (const obj of [...h.ctx.table.live()])
        if (obj instanceof FakeStdev && obj.b !== null) iommufdDeviceDetach(obj.b.idev, 200);
      const injected = n !== 0 && h.ctx.faults.pending === 0;
      const site = `site ${n} (${h.ctx.faults.lastFired ?? "none"})`;
      h.ctx.faults.arm(0);
      const stuck = h.ctx.close().map((o) => `${o.id}:${o.type}:${o.users}`);
      assert.deepEqual(stuck, [], `objects left after close, ${site}`);
      assert.equal(h.mock.devices.size, 0, `mock devices left, ${site}`);
      assert.equal(h.mock.alloc.live, 0, `page-table pages leaked, ${site}`);
      const pages = h.proc.pages(buf, 1, false);
      assert.ok(Array.isArray(pages) && pages[0].pins === 0, `pins left, ${site}`);
      if (n === 0 || !injected) assert.ok(ok, `the sequence failed with nothing injected, ${site}`);
      if (injected) {
        fired++;
        assert.ok(!ok, `${site} fired but the sequence succeeded`);
      }
      if (n !== 0 && !injected) break;
    }
    assert.ok(fired > 20, `only ${fired} injection sites were swept`);
  });
});

/**
 * The selftest mock IOMMU on its own (src/hw/mock): devices, capabilities, hw_info, paging and
 * nested domain allocation with their errno rules, dirty tracking at PTE granularity, nested
 * IOTLB invalidation, and the attach / set_dev_pasid ops (dirty check, vDEVICE rule, PASID 1024
 * quirk, IOPF refcount). Expected values come from mock-driver-failnth.md §3 and
 * hwpt-device.md §10 / §15.2, not from the code under test.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  IommuCap,
  type IommuDevice,
  type IommuUserData,
  type IommuUserDataArray,
  iommuAttachDevicePasid,
  iommuAttachGroupHandle,
  iommuDetachDevicePasid,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuGetDomainForGroupPasid,
  iommuReplaceDevicePasid,
  iommuReplaceGroupHandle,
  type ViommuLink,
} from "../../src/core/driver.ts";
import { FailNth } from "../../src/core/fail_nth.ts";
import { FakeProcess } from "../../src/core/user_mm.ts";
import {
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EPERM,
  ErrnoError,
} from "../../src/errno.ts";
import {
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  MockIommu,
  type MockNestedDomain,
  type MockPagingDomain,
} from "../../src/hw/mock/index.ts";

const DIRTY = 1 << 1;
const NEST_PARENT = 1 << 0;
const PASID = 1 << 3;
const READ_WRITE = 3;
const KiB = 1024n;
const MiB = 1024n * KiB;
const START = 1n << 24n;

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
  return 0;
}

/** Driver data placed in a fake process. */
function userData(
  p: FakeProcess,
  words: number[],
  len = words.length * 4,
  type = IOMMU_HWPT_DATA_SELFTEST,
): IommuUserData {
  const va = p.mmap(4096);
  const b = new Uint8Array(4096);
  const v = new DataView(b.buffer);
  for (const [i, w] of words.entries()) v.setUint32(i * 4, w, true);
  p.write(va, b);
  return { type, uptr: va, len, user: p };
}

function paging(
  m: MockIommu,
  dev: IommuDevice,
  flags = 0,
  data: IommuUserData | null = null,
): MockPagingDomain {
  return m.domainAllocPagingFlags(dev, flags, data, new FailNth()) as MockPagingDomain;
}

describe("mock devices", () => {
  it("validates flags and names devices with the lowest free number", () => {
    const m = new MockIommu();
    assert.equal(
      errnoOf(() => m.createDevice(1 << 1)),
      EINVAL,
    ); // HUGE_IOVA is gone
    assert.equal(
      errnoOf(() => m.createDevice(1 << 3)),
      EINVAL,
    );
    const a = m.createDevice(0);
    const b = m.createDevice(MOCK_FLAGS_DEVICE_PASID);
    assert.equal(a.name, "iommufd_mock0");
    assert.equal(b.name, "iommufd_mock1");
    m.destroyDevice(a);
    assert.equal(m.createDevice(MOCK_FLAGS_DEVICE_NO_DIRTY).name, "iommufd_mock0");
  });

  it("gives max_pasids 1 without the PASID flag and 2^20 with it", () => {
    const m = new MockIommu();
    assert.equal(m.createDevice(0).maxPasids, 1);
    assert.equal(m.createDevice(MOCK_FLAGS_DEVICE_PASID).maxPasids, 1 << 20);
  });

  it("starts with four cache slots of 0xbaddad and a group of its own on the blocked domain", () => {
    const m = new MockIommu();
    const a = m.createDevice(0);
    const b = m.createDevice(0);
    assert.deepEqual([...a.cache], [0xbaddad, 0xbaddad, 0xbaddad, 0xbaddad]);
    assert.ok(a.group !== null && b.group !== null);
    assert.notEqual(a.group, b.group);
    assert.deepEqual(a.group.devices, [a]);
    assert.equal(a.group.domain, m.blockedDomain);
  });

  it("fails device creation at its allocation site", () => {
    const m = new MockIommu();
    const f = new FailNth();
    f.arm(1);
    assert.equal(
      errnoOf(() => m.createDevice(0, f)),
      ENOMEM,
    );
    assert.equal(m.devices.size, 0);
  });

  it("reports capabilities: coherency always, dirty unless NO_DIRTY, nothing else", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    const nd = m.createDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(m.capable(d, IommuCap.CACHE_COHERENCY), true);
    assert.equal(m.capable(nd, IommuCap.CACHE_COHERENCY), true);
    assert.equal(m.capable(d, IommuCap.DIRTY_TRACKING), true);
    assert.equal(m.capable(nd, IommuCap.DIRTY_TRACKING), false);
    assert.equal(m.capable(d, IommuCap.ENFORCE_CACHE_COHERENCY), false);
    assert.equal(m.capable(d, IommuCap.PCI_ATS_SUPPORTED), false);
  });
});

describe("mock hw_info", () => {
  it("answers DEFAULT and SELFTEST with {flags 0, test_reg 0xdeadbeef}", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    for (const type of [0, IOMMU_HW_INFO_TYPE_SELFTEST]) {
      const info = m.hwInfo(d, type, new FailNth());
      assert.equal(info.type, 0xfeedbeef);
      assert.deepEqual([...info.data], [0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    }
  });

  it("refuses other types with EOPNOTSUPP and fails allocation with ENOMEM", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    assert.equal(
      errnoOf(() => m.hwInfo(d, 0xfeedbeef + 1, new FailNth())),
      EOPNOTSUPP,
    );
    const f = new FailNth();
    f.arm(1);
    assert.equal(
      errnoOf(() => m.hwInfo(d, 0, f)),
      ENOMEM,
    );
  });
});

describe("mock paging domains", () => {
  it("refuses unknown flags and DIRTY_TRACKING on a NO_DIRTY device", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    const nd = m.createDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(
      errnoOf(() => paging(m, d, ~NEST_PARENT >>> 0)),
      EOPNOTSUPP,
    );
    assert.equal(
      errnoOf(() => paging(m, d, 1 << 2)),
      EOPNOTSUPP,
    ); // FAULT_ID_VALID never reaches a driver
    assert.equal(
      errnoOf(() => paging(m, nd, DIRTY)),
      EOPNOTSUPP,
    );
    assert.equal(paging(m, d, DIRTY | NEST_PARENT | PASID).hasDirtyOps, true);
    assert.equal(paging(m, nd, NEST_PARENT).hasDirtyOps, false);
  });

  it("checks the selftest data: type, length 4..8, pointer, pagetable_type", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const d = m.createDevice(0);
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 0], 8, 0xdead + 1))),
      EOPNOTSUPP,
    );
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 0], 8, 0))),
      EINVAL,
    ); // NONE with data: type mismatch in the copy
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 0], 3))),
      EINVAL,
    );
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 0, 0], 9))),
      EINVAL,
    ); // longer than the kernel struct, even with a zero tail
    assert.equal(
      errnoOf(() => paging(m, d, 0, { type: 0xdead, uptr: 0n, len: 8, user: p })),
      EFAULT,
    );
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 2]))),
      EOPNOTSUPP,
    ); // MOCK_IOMMUPT_AMDV1 was removed
    assert.equal(
      errnoOf(() => paging(m, d, 0, userData(p, [0, 3]))),
      EOPNOTSUPP,
    );
    // Four bytes: pagetable_type reads as 0 (DEFAULT).
    assert.equal(paging(m, d, 0, userData(p, [0x1234], 4)).apertureStart, START);
  });

  it("builds DEFAULT domains with 2 KiB pages inside the mock aperture", () => {
    const m = new MockIommu();
    const dom = paging(m, m.createDevice(0));
    assert.equal(dom.apertureStart, 1n << 24n);
    assert.equal(dom.apertureLast, (1n << 31n) - 1n);
    assert.equal(dom.pgsizeBitmap & -dom.pgsizeBitmap, 2048n);
    assert.equal(dom.minPageSize, 2048);
    dom.map(START, 0x1_0000_0000, 8n * KiB, READ_WRITE);
    assert.equal(dom.iovaToPhys(START + 0x1800n), 0x1_0000_1800);
    assert.equal(dom.iovaToPhys(START + 8n * KiB), undefined);
    assert.equal(dom.unmap(START, 8n * KiB), 8n * KiB);
    assert.equal(dom.iovaToPhys(START), undefined);
  });

  it("builds HUGE domains with 1 MiB | 4 KiB pages and no aperture override", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const dom = paging(m, m.createDevice(0), 0, userData(p, [0, 1]));
    assert.equal(dom.pgsizeBitmap, MiB | 4096n);
    assert.equal(dom.apertureStart, 0n);
    assert.equal(dom.apertureLast, (1n << 38n) - 1n);
    dom.map(0n, 0x2_0000_0000, 2n * MiB, READ_WRITE);
    assert.equal(dom.pt.leaves().length, 2);
    assert.equal(dom.pt.leaves()[0].sizeLg2, 20);
  });

  it("frees its table and reports dirty leaves whole", () => {
    const m = new MockIommu();
    const live = m.alloc.live;
    const dom = paging(m, m.createDevice(0), DIRTY);
    // Two 4 KiB leaves (each two 2 KiB slots, as HUGE_PAGES=0 maps PAGE_SIZE pieces).
    dom.map(START, 0x1_0000_0000, 4096n, READ_WRITE);
    dom.map(START + 4096n, 0x1_0000_2000, 4096n, READ_WRITE);
    dom.setDirtyTracking(true);
    assert.equal(dom.setDirty(START + 2048n), true); // second slot of the first leaf
    assert.equal(dom.setDirty(START + 64n * KiB), false); // unmapped
    const seen: [bigint, bigint][] = [];
    dom.readAndClearDirty(START, 8192n, true, (i, l) => seen.push([i, l]));
    assert.deepEqual(seen, [[START, 4096n]]);
    seen.length = 0;
    dom.readAndClearDirty(START, 8192n, false, (i, l) => seen.push([i, l]));
    assert.deepEqual(seen, [[START, 4096n]]);
    seen.length = 0;
    dom.readAndClearDirty(START, 8192n, false, (i, l) => seen.push([i, l]));
    assert.deepEqual(seen, []);
    dom.unmap(START, 8192n);
    dom.free();
    assert.equal(m.alloc.live, live);
  });

  it("reports a dirty 1 MiB leaf of a HUGE domain as one 1 MiB range", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const dom = paging(m, m.createDevice(0), DIRTY, userData(p, [0, 1]));
    dom.map(MiB, 0x2_0000_0000, MiB, READ_WRITE);
    dom.setDirty(MiB + 12345n * 2n);
    const seen: [bigint, bigint][] = [];
    dom.readAndClearDirty(MiB, MiB, false, (i, l) => seen.push([i, l]));
    assert.deepEqual(seen, [[MiB, MiB]]);
  });

  it("toggles dirty tracking only with dirty ops", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    const plain = paging(m, d);
    assert.equal(
      errnoOf(() => plain.setDirtyTracking(true)),
      EINVAL,
    );
    plain.setDirtyTracking(false);
    const dirty = paging(m, d, DIRTY);
    dirty.setDirtyTracking(true);
    dirty.setDirtyTracking(true);
    assert.equal(dirty.dirtyTracking, true);
    dirty.setDirtyTracking(false);
    assert.equal(dirty.dirtyTracking, false);
  });

  it("fails the domain allocation at its site after the data checks", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    const f = new FailNth();
    f.arm(1);
    assert.equal(
      errnoOf(() => m.domainAllocPagingFlags(d, 0, null, f)),
      ENOMEM,
    );
  });
});

describe("mock nested domains", () => {
  it("checks flags, parent and data in the kernel's order", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const d = m.createDevice(0);
    const parent = paging(m, d, NEST_PARENT);
    const f = new FailNth();
    const ok = userData(p, [0xbadbeef]);
    assert.equal(
      errnoOf(() => m.domainAllocNested(d, parent, NEST_PARENT, ok, f)),
      EOPNOTSUPP,
    );
    assert.equal(
      errnoOf(() => m.domainAllocNested(d, m.blockedDomain, 0, ok, f)),
      EINVAL,
    );
    assert.equal(
      errnoOf(() => m.domainAllocNested(d, parent, 0, userData(p, [0], 4, 0xdead + 1), f)),
      EOPNOTSUPP,
    );
    assert.equal(
      errnoOf(() => m.domainAllocNested(d, parent, 0, userData(p, [0], 3), f)),
      EINVAL,
    );
    assert.equal(
      errnoOf(() => m.domainAllocNested(d, parent, 0, { ...ok, uptr: 0n }, f)),
      EFAULT,
    );
    const n = m.domainAllocNested(d, parent, PASID, ok, f) as MockNestedDomain;
    assert.deepEqual([...n.iotlb], [0xbadbeef, 0xbadbeef, 0xbadbeef, 0xbadbeef]);
  });

  function inval(p: FakeProcess, entries: [number, number][], entryLen = 8): IommuUserDataArray {
    const va = p.mmap(4096);
    const b = new Uint8Array(4096);
    const v = new DataView(b.buffer);
    entries.forEach(([flags, id], i) => {
      v.setUint32(i * entryLen, flags, true);
      v.setUint32(i * entryLen + 4, id, true);
    });
    p.write(va, b);
    return { type: 0xdeadbeef, uptr: va, entryLen, entryNum: entries.length };
  }

  function nested(m: MockIommu, p: FakeProcess): MockNestedDomain {
    const d = m.createDevice(0);
    return m.domainAllocNested(
      d,
      paging(m, d, NEST_PARENT),
      0,
      userData(p, [0xbadbeef]),
      new FailNth(),
    ) as MockNestedDomain;
  }

  it("invalidates its IOTLB slots per entry and counts what it handled", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const n = nested(m, p);
    const bad = { ...inval(p, []), type: 0xdadbeef };
    assert.equal(n.cacheInvalidateUser(bad, p), EINVAL);
    assert.equal(bad.entryNum, 0);
    const none = inval(p, []);
    assert.equal(n.cacheInvalidateUser(none, p), 0);
    assert.equal(none.entryNum, 0);
    for (const len of [1, 9]) {
      const a = inval(p, [[0, 0]], len);
      assert.equal(n.cacheInvalidateUser(a, p), EINVAL, `entry_len ${len}`);
      assert.equal(a.entryNum, 0);
    }
    const flags = inval(p, [[0xffffffff, 0]]);
    assert.equal(n.cacheInvalidateUser(flags, p), EOPNOTSUPP);
    const id = inval(p, [[0, 4]]);
    assert.equal(n.cacheInvalidateUser(id, p), EINVAL);
    assert.deepEqual([...n.iotlb], [0xbadbeef, 0xbadbeef, 0xbadbeef, 0xbadbeef]);
    const second = inval(p, [
      [0, 0],
      [0xffffffff, 1],
    ]);
    assert.equal(n.cacheInvalidateUser(second, p), EOPNOTSUPP);
    assert.equal(second.entryNum, 1);
    assert.deepEqual([...n.iotlb], [0, 0xbadbeef, 0xbadbeef, 0xbadbeef]);
    const two = inval(p, [
      [0, 2],
      [0, 3],
    ]);
    assert.equal(n.cacheInvalidateUser(two, p), 0);
    assert.equal(two.entryNum, 2);
    assert.deepEqual([...n.iotlb], [0, 0xbadbeef, 0, 0]);
    // ALL still has its iotlb_id range-checked first.
    assert.equal(n.cacheInvalidateUser(inval(p, [[1, 77]]), p), EINVAL);
    const all = inval(p, [[1, 1]]);
    assert.equal(n.cacheInvalidateUser(all, p), 0);
    assert.deepEqual([...n.iotlb], [0, 0, 0, 0]);
    const fault = { ...inval(p, [[0, 0]]), uptr: 0n };
    assert.equal(n.cacheInvalidateUser(fault, p), EFAULT);
  });
});

describe("mock attach ops through the IOMMU core", () => {
  it("refuses a dirty-tracking domain for a NO_DIRTY device and keeps the old domain", () => {
    const m = new MockIommu();
    const owner = {};
    const nd = m.createDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    const d = m.createDevice(0);
    const dirty = paging(m, d, DIRTY);
    iommuDeviceClaimDmaOwner(nd, owner);
    assert.ok(nd.group !== null);
    assert.equal(
      errnoOf(() => iommuAttachGroupHandle(dirty, nd.group!, null)),
      EINVAL,
    );
    assert.equal(nd.group.domain, m.blockedDomain);
    const plain = paging(m, d);
    iommuAttachGroupHandle(plain, nd.group, null);
    assert.equal(nd.group.domain, plain);
    assert.equal(
      errnoOf(() => iommuAttachGroupHandle(plain, nd.group!, null)),
      EBUSY,
    );
    iommuDetachGroupHandle(nd.group);
    assert.equal(nd.group.domain, m.blockedDomain);
    iommuDeviceReleaseDmaOwner(nd);
  });

  it("claims DMA ownership per owner", () => {
    const m = new MockIommu();
    const d = m.createDevice(0);
    const a = {};
    iommuDeviceClaimDmaOwner(d, a);
    iommuDeviceClaimDmaOwner(d, a);
    assert.equal(
      errnoOf(() => iommuDeviceClaimDmaOwner(d, {})),
      EPERM,
    );
    iommuDeviceReleaseDmaOwner(d);
    iommuDeviceReleaseDmaOwner(d);
    assert.equal(d.group?.owner, null);
  });

  it("needs a vDEVICE to attach a vIOMMU nested domain, and remembers its id", () => {
    const m = new MockIommu();
    const p = new FakeProcess();
    const d = m.createDevice(0);
    const parent = paging(m, d, NEST_PARENT);
    const ids = new Map<IommuDevice, bigint>();
    const viommu: ViommuLink = { vdevIdOf: (dev) => ids.get(dev) };
    const n = m.viommuAllocDomainNested(viommu, parent, 0, userData(p, [0]));
    assert.equal(
      errnoOf(() => m.viommuAllocDomainNested(viommu, parent, 1 << 31, userData(p, [0]))),
      EOPNOTSUPP,
    );
    iommuDeviceClaimDmaOwner(d, p);
    assert.equal(
      errnoOf(() => iommuAttachGroupHandle(n, d.group!, null)),
      ENOENT,
    );
    ids.set(d, 0x99n);
    iommuAttachGroupHandle(n, d.group!, null);
    assert.equal(d.vdevId, 0x99n);
    assert.equal(d.viommu, viommu);
    iommuReplaceGroupHandle(parent, d.group!, null);
    assert.equal(d.viommu, null);
    assert.equal(d.vdevId, 0n);
  });

  it("fails every second set of PASID 1024 until it is blocked again", () => {
    const m = new MockIommu();
    const d = m.createDevice(MOCK_FLAGS_DEVICE_PASID);
    const a = paging(m, d, PASID);
    const b = paging(m, d, PASID);
    iommuDeviceClaimDmaOwner(d, {});
    const h = {};
    iommuAttachDevicePasid(a, d, 1024, h);
    assert.equal(
      errnoOf(() => iommuReplaceDevicePasid(b, d, 1024, h)),
      ENOMEM,
    );
    assert.equal(iommuGetDomainForGroupPasid(d.group!, 1024), a);
    // The failure consumed the fake error: a second replace goes through.
    iommuReplaceDevicePasid(b, d, 1024, h);
    assert.equal(iommuGetDomainForGroupPasid(d.group!, 1024), b);
    // Detach (blocking) disarms it, so attach + replace fails again afterwards.
    iommuDetachDevicePasid(b, d, 1024);
    iommuAttachDevicePasid(a, d, 1024, h);
    assert.equal(
      errnoOf(() => iommuReplaceDevicePasid(b, d, 1024, h)),
      ENOMEM,
    );
    // Other PASIDs are unaffected.
    iommuAttachDevicePasid(a, d, 1023, h);
    iommuReplaceDevicePasid(b, d, 1023, h);
    assert.equal(iommuGetDomainForGroupPasid(d.group!, 1023), b);
  });

  it("checks PASID range, PASID 0 and double attach in the core", () => {
    const m = new MockIommu();
    const plain = m.createDevice(0);
    const pd = m.createDevice(MOCK_FLAGS_DEVICE_PASID);
    const dom = paging(m, pd, PASID);
    assert.equal(
      errnoOf(() => iommuAttachDevicePasid(dom, plain, 1, null)),
      EINVAL,
    );
    assert.equal(
      errnoOf(() => iommuAttachDevicePasid(dom, pd, 0, null)),
      EINVAL,
    );
    assert.equal(
      errnoOf(() => iommuAttachDevicePasid(dom, pd, 1 << 20, null)),
      EINVAL,
    );
    iommuAttachDevicePasid(dom, pd, (1 << 20) - 1, null);
    assert.equal(
      errnoOf(() => iommuAttachDevicePasid(dom, pd, (1 << 20) - 1, null)),
      EBUSY,
    );
    assert.equal(
      errnoOf(() => iommuReplaceDevicePasid(dom, pd, 5, {})),
      EINVAL,
    );
  });

  it("counts IOPF users of domains with a fault handler", () => {
    const m = new MockIommu();
    const d = m.createDevice(MOCK_FLAGS_DEVICE_PASID);
    const iopf = paging(m, d, PASID);
    iopf.faultData = {};
    const plain = paging(m, d, PASID);
    iommuDeviceClaimDmaOwner(d, {});
    iommuAttachGroupHandle(iopf, d.group!, null);
    assert.equal(d.iopfRefcount, 1);
    iommuAttachDevicePasid(iopf, d, 7, null);
    assert.equal(d.iopfRefcount, 2);
    iommuReplaceDevicePasid(plain, d, 7, {});
    assert.equal(d.iopfRefcount, 1);
    iommuDetachGroupHandle(d.group!);
    assert.equal(d.iopfRefcount, 0);
  });
});

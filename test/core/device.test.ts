/**
 * Devices in iommufd: bind / unbind, RID and PASID attach / replace / detach, automatic domains
 * (reuse and destruction), reserved regions, PASID compatibility, and the unwinding of every
 * failure (fault injection sweeps). Scenarios follow hwpt-device.md §2-§8, §11 and the
 * selftest assertions it lists in §18 (iommufd_mock_domain.replace / alloc_hwpt,
 * iommufd_device_pasid.pasid_attach, iommufd_dirty_tracking.enforce_dirty ...).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IommufdContext } from "../../src/core/context.ts";
import {
  deviceParams,
  iommufdDeviceAttach,
  iommufdDeviceAttachedHwpt,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "../../src/core/device.ts";
import {
  IOMMU_RESV,
  type IommuDevice,
  type IommuOps,
  type IommuResvRegion,
  iommuGetDomainForGroupPasid,
} from "../../src/core/driver.ts";
import { ObjType } from "../../src/core/object.ts";
import {
  EADDRINUSE,
  EBUSY,
  EFAULT,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EPERM,
} from "../../src/errno.ts";
import {
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
  type MockDevice,
  MockIommu,
  type MockPagingDomain,
} from "../../src/hw/mock/index.ts";
import { DevHarness, errnoOf, MOCK_APERTURE_START } from "./device_harness.ts";

const NEST_PARENT = 1;
const DIRTY = 2;
const PASID = 8;
const PAGE = 4096n;

describe("device bind and unbind", () => {
  it("publishes the DEVICE at once, holds it with the driver's reference, and frees it", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    assert.equal(b.idev.id, ioas + 1);
    assert.equal(b.hwptId, ioas + 2);
    // table + driver + one attachment
    assert.equal(b.idev.users, 3);
    assert.equal(h.destroy(b.idev.id), EBUSY);
    assert.equal(h.destroy(ioas), EBUSY);
    assert.equal(h.destroy(b.hwptId), EBUSY);
    assert.equal(b.mdev.group?.owner, h.ctx);
    h.unplug(b);
    assert.equal(h.isLive(b.idev.id), false);
    assert.equal(h.isLive(b.hwptId), false);
    assert.equal(h.destroy(b.hwptId), ENOENT);
    assert.equal(h.destroy(ioas), 0);
    assert.equal(b.mdev.group, null);
  });

  it("refuses devices that are not coherent, have no group, or have unsafe interrupts", () => {
    const ctx = new IommufdContext();
    const m = new MockIommu();
    const good = m.createDevice(0);
    const noOps: IommuDevice = { ...good, name: "x", ops: null };
    assert.equal(
      errnoOf(() => iommufdDeviceBind(ctx, noOps)),
      EINVAL,
    );
    const incoherent: IommuDevice = {
      ...good,
      name: "y",
      ops: { ...m, capable: () => false } as unknown as IommuOps,
    };
    assert.equal(
      errnoOf(() => iommufdDeviceBind(ctx, incoherent)),
      EINVAL,
    );
    const noGroup: IommuDevice = { ...good, name: "z", ops: m, group: null };
    assert.equal(
      errnoOf(() => iommufdDeviceBind(ctx, noGroup)),
      ENODEV,
    );
    const other = m.createDevice(0);
    const unsafe: IommuDevice = { ...other, name: "pci", ops: m, selftestMock: false };
    assert.equal(
      errnoOf(() => iommufdDeviceBind(ctx, unsafe)),
      EPERM,
    );
    assert.equal(other.group?.ownerCnt, 0);
    deviceParams.allowUnsafeInterrupts = true;
    try {
      const idev = iommufdDeviceBind(ctx, unsafe);
      iommufdDeviceUnbind(idev);
    } finally {
      deviceParams.allowUnsafeInterrupts = false;
    }
    assert.equal(other.group?.ownerCnt, 0);
  });

  it("lets only one context own a group", () => {
    const m = new MockIommu();
    const dev = m.createDevice(0);
    const a = new IommufdContext();
    const b = new IommufdContext();
    const idev = iommufdDeviceBind(a, dev);
    assert.equal(
      errnoOf(() => iommufdDeviceBind(b, dev)),
      EPERM,
    );
    iommufdDeviceUnbind(idev);
    iommufdDeviceUnbind(iommufdDeviceBind(b, dev));
  });

  it("undoes the group claim when the object allocation fails", () => {
    const ctx = new IommufdContext();
    const m = new MockIommu();
    const dev = m.createDevice(0);
    ctx.faults.arm(2); // group record, then the object
    assert.equal(
      errnoOf(() => iommufdDeviceBind(ctx, dev)),
      ENOMEM,
    );
    assert.equal(dev.group?.ownerCnt, 0);
    assert.equal(ctx.table.size, 0);
    iommufdDeviceUnbind(iommufdDeviceBind(ctx, dev));
  });

  it("keeps a device unbound with attachments until they go", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    iommufdDeviceUnbind(b.idev);
    assert.equal(h.isLive(b.idev.id), true);
    iommufdDeviceDetach(b.idev, 0);
    assert.equal(b.idev.users, 1);
    assert.equal(h.destroy(b.idev.id), 0);
    assert.equal(b.mdev.group?.ownerCnt, 0);
  });

  it("leaks a device unplugged with a PASID still attached until close, as the kernel WARNs", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
    const s2 = h.hwptAllocOk(b.idev.id, ioas, PASID);
    iommufdDeviceReplace(b.idev, 0, s2);
    iommufdDeviceAttach(b.idev, 100, s2);
    h.unplug(b);
    assert.equal(h.mock.devices.size, 0);
    assert.equal(h.isLive(b.idev.id), true);
    const stuck = h.ctx.close().map((o) => o.id);
    assert.deepEqual(stuck, [ioas, b.idev.id, s2]);
  });

  it("runs the pre-destroy hooks on unbind", async () => {
    const { deviceHooks } = await import("../../src/core/device.ts");
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const b = h.mockDomain(ioas);
    const seen: number[] = [];
    deviceHooks.preDestroy.push((idev) => seen.push(idev.id));
    try {
      h.unplug(b);
    } finally {
      deviceHooks.preDestroy.pop();
    }
    assert.deepEqual(seen, [b.idev.id]);
  });
});

describe("attach to an IOAS: automatic domains", () => {
  it("shares one auto HWPT between devices and destroys it with the last", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const b = h.mockDomain(ioas);
    assert.equal(b.hwptId, a.hwptId);
    assert.equal(h.paging(a.hwptId).autoDomain, true);
    assert.equal(h.ioas(ioas).iopt.domains.length, 1);
    h.unplug(a);
    assert.equal(h.isLive(a.hwptId), true);
    h.unplug(b);
    assert.equal(h.isLive(a.hwptId), false);
    assert.equal(h.ioas(ioas).iopt.domains.length, 0);
    assert.equal(h.ioas(ioas).hwptList.length, 0);
  });

  it("never reuses a manual HWPT, and attaches by a HWPT id directly", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const manual = h.hwptAllocOk(a.idev.id, ioas);
    const b = h.mockDomain(ioas);
    assert.equal(b.hwptId, a.hwptId);
    assert.notEqual(b.hwptId, manual);
    const c = h.mockDomain(a.hwptId); // iommufd_ioas.hwpt_attach
    assert.equal(c.hwptId, a.hwptId);
    h.unplug(a);
    h.unplug(b);
    assert.equal(h.isLive(a.hwptId), true);
    h.unplug(c);
    assert.equal(h.isLive(a.hwptId), false);
    assert.equal(h.destroy(manual), 0);
  });

  it("fills the new domain with the IOAS's areas and narrows the IOAS alignment", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const va = h.proc.mmap(4 * 4096);
    h.mapOk(ioas, va, 4 * 4096, MOCK_APERTURE_START);
    const b = h.mockDomain(ioas);
    const dom = h.paging(b.hwptId).domain as MockPagingDomain;
    const pages = h.proc.pages(va, 4, false);
    assert.ok(Array.isArray(pages));
    for (let i = 0; i < 4; i++) {
      const iova = MOCK_APERTURE_START + BigInt(i) * PAGE + 2048n;
      assert.equal(dom.iovaToPhys(iova), pages[i].pfn * 4096 + 2048);
    }
    assert.equal(h.ioas(ioas).iopt.iovaAlignment, 2048);
  });

  it("refuses a missing id (ENOENT) and an object that is neither IOAS nor HWPT (EINVAL)", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const before = h.ctx.table.size;
    assert.equal(h.mockDomainErr(0), ENOENT);
    assert.equal(h.mockDomainErr(999), ENOENT);
    assert.equal(h.mockDomainErr(a.idev.id), EINVAL);
    assert.equal(h.ctx.table.size, before);
    assert.equal(h.mock.devices.size, 1);
  });

  it("refuses a second attach of the same device and PASID with EBUSY", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const other = h.hwptAllocOk(a.idev.id, ioas);
    assert.equal(
      errnoOf(() => iommufdDeviceAttach(a.idev, 0, a.hwptId)),
      EBUSY,
    );
    assert.equal(
      errnoOf(() => iommufdDeviceAttach(a.idev, 0, other)),
      EBUSY,
    );
    // Through the IOAS the reuse loop stops at EBUSY: no new HWPT either.
    const size = h.ctx.table.size;
    assert.equal(
      errnoOf(() => iommufdDeviceAttach(a.idev, 0, ioas)),
      EBUSY,
    );
    assert.equal(h.ctx.table.size, size);
    assert.equal(a.idev.users, 3);
  });

  it("fails the domain fill of a gone process with EFAULT and leaves nothing", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const child = h.proc.fork();
    const va = child.mmap(2 * 4096);
    const r = h.map(ioas, va, 2 * 4096, { iova: MOCK_APERTURE_START, proc: child });
    assert.equal(r.errno, 0);
    child.exit();
    const size = h.ctx.table.size;
    assert.equal(h.mockDomainErr(ioas), EFAULT);
    assert.equal(h.ctx.table.size, size);
    assert.equal(h.ioas(ioas).hwptList.length, 0);
    assert.equal(h.ioas(ioas).iopt.domains.length, 0);
    assert.equal(h.mock.devices.size, 0);
  });
});

describe("replace", () => {
  it("moves one device between IOASes, destroying the auto HWPT it leaves", () => {
    const h = new DevHarness();
    const ioas1 = h.ioasAlloc();
    const ioas2 = h.ioasAlloc();
    const a = h.mockDomain(ioas1);
    const h2 = iommufdDeviceReplace(a.idev, 0, ioas2);
    assert.notEqual(h2, a.hwptId);
    assert.equal(h.isLive(a.hwptId), false);
    assert.equal(
      errnoOf(() => iommufdDeviceReplace(a.idev, 0, a.hwptId)),
      ENOENT,
    );
    assert.equal(iommufdDeviceReplace(a.idev, 0, ioas2), h2); // no-op
    assert.equal(h.paging(h2).users, 2);
    const h3 = iommufdDeviceReplace(a.idev, 0, ioas1);
    assert.equal(h.isLive(h2), false);
    assert.equal(h.destroy(ioas2), 0);
    assert.equal(iommufdDeviceAttachedHwpt(a.idev, 0)?.id, h3);
    assert.equal(a.idev.users, 3);
  });

  it("lets two devices share, split and rejoin an auto HWPT", () => {
    const h = new DevHarness();
    const ioas1 = h.ioasAlloc();
    const ioas2 = h.ioasAlloc();
    const a = h.mockDomain(ioas1);
    const b = h.mockDomain(ioas1);
    const h2 = iommufdDeviceReplace(a.idev, 0, ioas2);
    assert.equal(h.isLive(a.hwptId), true);
    assert.equal(iommufdDeviceReplace(a.idev, 0, b.hwptId), b.hwptId);
    assert.equal(h.isLive(h2), false);
    assert.equal(h.paging(b.hwptId).users, 3);
    assert.equal(iommufdDeviceReplace(a.idev, 0, b.hwptId), b.hwptId);
    h.unplug(a);
    h.unplug(b);
    assert.equal(h.destroy(ioas1), 0);
    assert.equal(h.destroy(ioas2), 0);
  });

  it("needs an attachment (EINVAL) and keeps manual HWPTs busy while used (alloc_hwpt)", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    assert.equal(
      errnoOf(() => iommufdDeviceReplace(a.idev, 5, ioas)),
      EINVAL,
    );
    assert.equal(h.hwptAlloc(a.idev.id, ioas, ~NEST_PARENT >>> 0).errno, EOPNOTSUPP);
    const h0 = h.hwptAllocOk(a.idev.id, ioas, 0);
    const h1 = h.hwptAllocOk(a.idev.id, ioas, NEST_PARENT);
    iommufdDeviceReplace(a.idev, 0, h0);
    assert.equal(h.isLive(a.hwptId), false);
    assert.equal(h.destroy(h0), EBUSY);
    iommufdDeviceReplace(a.idev, 0, h1);
    assert.equal(h.destroy(h1), EBUSY);
    iommufdDeviceReplace(a.idev, 0, ioas);
    assert.equal(h.destroy(h1), 0);
    const c = h.mockDomain(h0);
    h.unplug(c);
    assert.equal(h.destroy(h0), 0);
  });
});

describe("PASID attach (iommufd_device_pasid.pasid_attach)", () => {
  function fixture(withPlain: boolean) {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const dev = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
    const plain = withPlain ? h.mockDomain(ioas) : undefined;
    const id = dev.idev.id;
    const parent = h.hwptAllocOk(id, ioas, NEST_PARENT);
    const nested0 = h.hwptAllocOk(id, parent, PASID, [0xbadbeef]);
    const nested1 = h.hwptAllocOk(id, parent, PASID, [0xbadbeef]);
    const s2 = h.hwptAllocOk(id, ioas, PASID);
    const check = (pasid: number): number | undefined =>
      iommufdDeviceAttachedHwpt(dev.idev, pasid)?.id;
    return { h, ioas, dev, plain, parent, nested0, nested1, s2, check };
  }

  for (const withPlain of [false, true]) {
    it(`follows the selftest sequence (${withPlain ? "no_pasid" : "has_pasid"} variant)`, () => {
      const { h, ioas, dev, plain, parent, nested0, nested1, s2, check } = fixture(withPlain);
      const idev = dev.idev;
      const attach = (pasid: number, pt: number) =>
        errnoOf(() => iommufdDeviceAttach(idev, pasid, pt));
      const replace = (pasid: number, pt: number) =>
        errnoOf(() => iommufdDeviceReplace(idev, pasid, pt));

      iommufdDeviceDetach(idev, 100); // nothing attached: fine
      iommufdDeviceReplace(idev, 0, parent);
      assert.equal(attach(100, s2), EINVAL); // RID on a non-PASID-compatible HWPT
      iommufdDeviceReplace(idev, 0, s2);
      assert.equal(attach(100, nested0), 0);
      assert.equal(replace(0, parent), EINVAL); // PASIDs attached, parent is not compatible
      iommufdDeviceDetach(idev, 100);
      assert.equal(check(100), undefined);

      if (plain !== undefined) {
        iommufdDeviceReplace(plain.idev, 0, nested0);
        iommufdDeviceReplace(plain.idev, 0, ioas);
        assert.equal(
          errnoOf(() => iommufdDeviceAttach(plain.idev, 100, parent)),
          EINVAL,
        );
        assert.equal(
          errnoOf(() => iommufdDeviceAttach(plain.idev, 100, s2)),
          EINVAL,
        ); // max_pasids 1
      }

      const size = h.ctx.table.size;
      assert.equal(attach(100, parent), EINVAL);
      assert.equal(check(100), undefined);
      assert.equal(attach(100, ioas), EINVAL); // auto HWPTs are never PASID-compatible
      assert.equal(check(100), undefined);
      assert.equal(h.ctx.table.size, size);
      // parent and s2, plus the auto HWPT the plain device keeps
      assert.equal(h.ioas(ioas).iopt.domains.length, withPlain ? 3 : 2);

      assert.equal(attach(100, s2), 0);
      assert.equal(check(100), s2);
      assert.equal(attach(100, nested0), EBUSY);
      iommufdDeviceDetach(idev, 100);
      assert.equal(check(100), undefined);
      assert.equal(attach(100, nested0), 0);
      assert.equal(check(100), nested0);
      assert.equal(attach(100, nested0), EBUSY);
      iommufdDeviceDetach(idev, 100);

      assert.equal(replace(200, s2), EINVAL);
      assert.equal(attach(200, s2), 0);
      assert.equal(replace(200, ioas), EINVAL);
      assert.equal(check(200), s2);
      assert.equal(replace(200, nested0), 0);
      assert.equal(check(200), nested0);
      assert.equal(replace(200, nested1), 0);
      assert.equal(check(200), nested1);
      iommufdDeviceDetach(idev, 200);

      assert.equal(attach(1024, s2), 0);
      assert.equal(replace(1024, nested0), ENOMEM);
      assert.equal(check(1024), s2);
      assert.equal(iommuGetDomainForGroupPasid(dev.mdev.group!, 1024), h.hwpt(s2).domain);
      iommufdDeviceDetach(idev, 1024);
      assert.equal(iommuGetDomainForGroupPasid(dev.mdev.group!, 1024), undefined);

      iommufdDeviceReplace(idev, 0, ioas);
      // Every attachment gone: the manual HWPTs hold only the table's reference (nested on
      // parent hold the parent).
      assert.equal(h.hwpt(s2).users, 1);
      assert.equal(h.hwpt(nested0).users, 1);
      assert.equal(h.hwpt(parent).users, 3);
      assert.equal(idev.users, 3);
    });
  }
});

describe("dirty-tracking HWPTs and NO_DIRTY devices", () => {
  it("refuses a NO_DIRTY device on a dirty HWPT (enforce_dirty)", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const dirty = h.hwptAllocOk(a.idev.id, ioas, DIRTY);
    const b = h.mockDomain(dirty);
    assert.equal(b.hwptId, dirty);
    assert.equal(h.mockDomainErr(dirty, MOCK_FLAGS_DEVICE_NO_DIRTY), EINVAL);
    const ioas2 = h.ioasAlloc();
    const nd = h.mockDomain(ioas2, MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(h.hwptAlloc(nd.idev.id, ioas2, DIRTY).errno, EOPNOTSUPP);
  });

  it("attaches a PASID to a dirty HWPT and refuses it next to a plain auto RID", () => {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const a = h.mockDomain(ioas);
    const dirty = h.hwptAllocOk(a.idev.id, ioas, PASID | DIRTY);
    const p = h.mockDomain(dirty, MOCK_FLAGS_DEVICE_PASID);
    iommufdDeviceAttach(p.idev, 100, dirty);
    assert.equal(h.setDirtyTracking(dirty, 1), 0);
    assert.equal(h.setDirtyTracking(dirty, 0), 0);
    iommufdDeviceDetach(p.idev, 100);
    h.unplug(p);
    const ioas2 = h.ioasAlloc();
    const q = h.mockDomain(ioas2, MOCK_FLAGS_DEVICE_PASID | MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(
      errnoOf(() => iommufdDeviceAttach(q.idev, 100, dirty)),
      EINVAL,
    );
  });
});

describe("reserved regions of a device", () => {
  /** The mock with reserved regions, to see the bookkeeping the mock itself never exercises. */
  class ResvMock extends MockIommu {
    regions: IommuResvRegion[] = [];
    getResvRegions(_dev: IommuDevice): IommuResvRegion[] {
      return this.regions;
    }
  }

  function resvHarness(): { h: DevHarness; m: ResvMock } {
    const h = new DevHarness();
    const m = new ResvMock();
    (h as unknown as { mock: MockIommu }).mock = m;
    return { h, m };
  }

  const resvOf = (h: DevHarness, ioas: number, owner: object) =>
    h.ioas(ioas).iopt.reserved.filter((r) => r.owner === owner);

  it("reserves them on RID attach, moves them on replace, drops them on detach", () => {
    const { h, m } = resvHarness();
    m.regions = [
      { start: 0x2000_0000n, length: 0x1000n, type: IOMMU_RESV.RESERVED },
      { start: 0x3000_0000n, length: 0x1000n, type: IOMMU_RESV.DIRECT_RELAXABLE },
    ];
    const ioas1 = h.ioasAlloc();
    const ioas2 = h.ioasAlloc();
    const a = h.mockDomain(ioas1, MOCK_FLAGS_DEVICE_PASID);
    assert.deepEqual(
      resvOf(h, ioas1, a.mdev).map((r) => [r.start, r.last]),
      [[0x2000_0000n, 0x2000_0fffn]],
    );
    iommufdDeviceReplace(a.idev, 0, ioas2);
    assert.equal(resvOf(h, ioas1, a.mdev).length, 0);
    assert.equal(resvOf(h, ioas2, a.mdev).length, 1);
    // PASID attachments never touch them.
    const s2 = h.hwptAllocOk(a.idev.id, ioas1, PASID);
    iommufdDeviceReplace(a.idev, 0, s2);
    iommufdDeviceAttach(a.idev, 7, s2);
    iommufdDeviceDetach(a.idev, 7);
    assert.equal(resvOf(h, ioas1, a.mdev).length, 1);
    iommufdDeviceDetach(a.idev, 0);
    assert.equal(resvOf(h, ioas1, a.mdev).length, 0);
    assert.equal(resvOf(h, ioas2, a.mdev).length, 0);
  });

  it("refuses a region over a mapping with EADDRINUSE and changes nothing", () => {
    const { h, m } = resvHarness();
    const ioas = h.ioasAlloc();
    const va = h.proc.mmap(4096);
    h.mapOk(ioas, va, 4096, MOCK_APERTURE_START);
    m.regions = [{ start: MOCK_APERTURE_START, length: 0x1000n, type: IOMMU_RESV.RESERVED }];
    const size = h.ctx.table.size;
    assert.equal(h.mockDomainErr(ioas), EADDRINUSE);
    assert.equal(h.ctx.table.size, size);
    assert.equal(h.ioas(ioas).iopt.domains.length, 0);
  });
});

describe("fault injection unwinds completely", () => {
  /** State a failed call must leave as it was. */
  function snapshot(h: DevHarness, devs: MockDevice[] = []) {
    const objs = [...h.ctx.table.live()].map((o) => `${o.id}:${o.type}:${o.users}`);
    const ioases = [...h.ctx.table.live()]
      .filter((o) => o.type === ObjType.IOAS)
      .map((o) => {
        const io = h.ioas(o.id);
        return `${io.iopt.domains.length}/${io.hwptList.length}/${io.iopt.reserved.length}/${io.iopt.iovaAlignment}`;
      });
    const groups = devs.map(
      (d) =>
        `${d.group?.domain === h.mock.blockedDomain}/${d.group?.pasidArray.size}/${d.iopfRefcount}`,
    );
    const records = [...h.ctx.table.live()]
      .filter((o) => o.type === ObjType.DEVICE)
      .map((o) => [...h.device(o.id).igroup.pasidAttach.keys()].join(","));
    return JSON.stringify({
      objs,
      ioases,
      groups,
      records,
      size: h.ctx.table.size,
      devs: h.mock.devices.size,
    });
  }

  function sweep(
    name: string,
    setup: () => { h: DevHarness; devs: MockDevice[]; pins: () => number[] },
    op: (h: DevHarness) => void,
  ): void {
    it(name, () => {
      let fired = 0;
      for (let n = 1; n < 200; n++) {
        const { h, devs, pins } = setup();
        const before = snapshot(h, devs);
        const pinsBefore = pins();
        h.ctx.faults.arm(n);
        let err = 0;
        try {
          op(h);
        } catch (e) {
          err = (e as { errno?: number }).errno ?? -1;
        }
        if (h.ctx.faults.pending !== 0) {
          assert.equal(err, 0, `nothing injected at ${n} but the call failed`);
          assert.ok(fired > 0, "no injection site was reached");
          return;
        }
        fired++;
        assert.notEqual(
          err,
          0,
          `site ${n} (${h.ctx.faults.lastFired}) fired but the call succeeded`,
        );
        assert.equal(snapshot(h, devs), before, `state changed after failing site ${n}`);
        assert.deepEqual(pins(), pinsBefore, `pins changed after failing site ${n}`);
      }
      assert.fail("sweep did not finish");
    });
  }

  function withArea() {
    const h = new DevHarness();
    const ioas = h.ioasAlloc();
    const va = h.proc.mmap(8 * 4096);
    h.mapOk(ioas, va, 8 * 4096, MOCK_APERTURE_START);
    const pins = () => {
      const pages = h.proc.pages(va, 8, false);
      return Array.isArray(pages) ? pages.map((p) => p.pins) : [];
    };
    return { h, ioas, pins };
  }

  sweep(
    "MOCK_DOMAIN-style bind + attach creating an auto domain",
    () => {
      const { h, pins } = withArea();
      return { h, devs: [], pins };
    },
    (h) => {
      h.mockDomain(1);
    },
  );

  sweep(
    "attach of a bound, detached device creating an auto domain",
    () => {
      const { h, ioas, pins } = withArea();
      const b = h.mockDomain(ioas);
      iommufdDeviceDetach(b.idev, 0);
      (h as unknown as { b: typeof b }).b = b;
      return { h, devs: [b.mdev], pins };
    },
    (h) => {
      const { b } = h as unknown as { b: { idev: Parameters<typeof iommufdDeviceAttach>[0] } };
      iommufdDeviceAttach(b.idev, 0, 1);
    },
  );

  sweep(
    "replace to another IOAS (new auto domain)",
    () => {
      const { h, ioas, pins } = withArea();
      const b = h.mockDomain(ioas);
      const ioas2 = h.ioasAlloc();
      h.mapOk(ioas2, h.proc.mmap(4096), 4096, MOCK_APERTURE_START);
      (h as unknown as { target: number }).target = ioas2;
      (h as unknown as { b: typeof b }).b = b;
      return { h, devs: [b.mdev], pins };
    },
    (h) => {
      const x = h as unknown as {
        target: number;
        b: { idev: Parameters<typeof iommufdDeviceReplace>[0] };
      };
      iommufdDeviceReplace(x.b.idev, 0, x.target);
    },
  );

  sweep(
    "PASID attach and replace",
    () => {
      const { h, ioas, pins } = withArea();
      const b = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
      const s2 = h.hwptAllocOk(b.idev.id, ioas, PASID);
      iommufdDeviceReplace(b.idev, 0, s2);
      const t = h.hwptAllocOk(b.idev.id, ioas, PASID);
      (h as unknown as { x: unknown }).x = { b, s2, t };
      return { h, devs: [b.mdev], pins };
    },
    (h) => {
      const { b, s2, t } = (h as unknown as { x: { b: { idev: never }; s2: number; t: number } }).x;
      iommufdDeviceAttach(b.idev, 200, s2);
      try {
        iommufdDeviceReplace(b.idev, 200, t);
      } catch (e) {
        iommufdDeviceDetach(b.idev, 200);
        throw e;
      }
      iommufdDeviceDetach(b.idev, 200);
    },
  );
});

describe("random attach / replace / detach sequences (fast-check)", () => {
  it("keep references, groups and IOAS domains consistent, and failures change nothing", async () => {
    const fc = (await import("fast-check")).default;
    const { HwptNested: Nested, HwptPaging: Paging } = await import("../../src/core/hwpt.ts");
    type Op = { kind: 0 | 1 | 2; dev: number; pasid: number; target: number };
    const opArb = fc.record({
      kind: fc.constantFrom(0 as const, 1 as const, 2 as const),
      dev: fc.integer({ min: 0, max: 2 }),
      pasid: fc.constantFrom(0, 0, 100, 1024),
      target: fc.integer({ min: 0, max: 5 }),
    });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 25 }), (ops: Op[]) => {
        const h = new DevHarness();
        const ioas1 = h.ioasAlloc();
        const ioas2 = h.ioasAlloc();
        h.mapOk(ioas1, h.proc.mmap(8192), 8192, MOCK_APERTURE_START);
        h.mapOk(ioas2, h.proc.mmap(8192), 8192, MOCK_APERTURE_START);
        const devs = [
          h.mockDomain(ioas1, MOCK_FLAGS_DEVICE_PASID),
          h.mockDomain(ioas1),
          h.mockDomain(ioas2, MOCK_FLAGS_DEVICE_PASID),
        ];
        const id0 = devs[0].idev.id;
        const h0 = h.hwptAllocOk(id0, ioas1, 0);
        const h1 = h.hwptAllocOk(id0, ioas1, PASID);
        const parent = h.hwptAllocOk(id0, ioas2, NEST_PARENT | PASID);
        const nested = h.hwptAllocOk(id0, parent, PASID, [0]);
        const targets = [ioas1, ioas2, h0, h1, parent, nested];

        const state = (): string => {
          const objs = [...h.ctx.table.live()].map((o) => `${o.id}:${o.type}:${o.users}`);
          const att = devs.map((d) =>
            [0, 100, 1024].map((p) => iommufdDeviceAttachedHwpt(d.idev, p)?.id ?? 0).join(","),
          );
          const grp = devs.map((d) => [...(d.mdev.group?.pasidArray.keys() ?? [])].join(";"));
          const iopf = devs.map((d) => `${d.mdev.iopfRefcount}/${d.mdev.vdevId}`);
          const doms = [ioas1, ioas2].map((i) => h.ioas(i).iopt.domains.length);
          return JSON.stringify({ objs, att, grp, iopf, doms });
        };

        const check = (): void => {
          const hwpts = [...h.ctx.table.live()].filter(
            (o) => o instanceof Paging || o instanceof Nested,
          );
          const attachCount = new Map<number, number>();
          for (const d of devs) {
            let n = 0;
            for (const [p, rec] of d.idev.igroup.pasidAttach) {
              n++;
              attachCount.set(rec.hwpt.id, (attachCount.get(rec.hwpt.id) ?? 0) + 1);
              const entry = d.mdev.group?.pasidArray.get(p);
              assert.equal(entry?.domain, rec.hwpt.domain, `group domain of pasid ${p}`);
              if (p !== 0) assert.ok(rec.hwpt.pasidCompat, "PASID on a compatible HWPT");
            }
            assert.equal(d.idev.users, 2 + n, "device references");
            const rid = d.idev.igroup.pasidAttach.get(0);
            if (rid !== undefined && d.idev.igroup.pasidAttach.size > 1)
              assert.ok(rid.hwpt.pasidCompat, "RID compatible while PASIDs attached");
            assert.equal(
              d.mdev.group?.domain,
              rid === undefined ? h.mock.blockedDomain : rid.hwpt.domain,
            );
            assert.equal(d.mdev.group?.pasidArray.size, d.idev.igroup.pasidAttach.size);
          }
          for (const hw of hwpts) {
            const children = hwpts.filter((o) => o instanceof Nested && o.parent === hw).length;
            const n = attachCount.get(hw.id) ?? 0;
            assert.equal(hw.users, 1 + n + children, `users of HWPT ${hw.id}`);
            if (hw instanceof Paging && hw.autoDomain) assert.ok(n > 0, "auto HWPT unused");
          }
          for (const i of [ioas1, ioas2]) {
            const onIoas = hwpts.filter((o) => o instanceof Paging && o.ioas.id === i);
            assert.equal(h.ioas(i).iopt.domains.length, onIoas.length);
            assert.equal(h.ioas(i).hwptList.length, onIoas.length);
          }
        };

        check();
        for (const op of ops) {
          const d = devs[op.dev].idev;
          const before = state();
          let failed = false;
          try {
            if (op.kind === 0) iommufdDeviceAttach(d, op.pasid, targets[op.target]);
            else if (op.kind === 1) iommufdDeviceReplace(d, op.pasid, targets[op.target]);
            else iommufdDeviceDetach(d, op.pasid);
          } catch (e) {
            assert.ok(typeof (e as { errno?: unknown }).errno === "number", String(e));
            failed = true;
          }
          if (failed) assert.equal(state(), before, `failed ${JSON.stringify(op)} changed state`);
          check();
        }
        for (const d of devs) for (const p of [100, 1024]) iommufdDeviceDetach(d.idev, p);
        for (const d of devs) h.unplug(d);
        for (const id of [nested, parent, h1, h0]) assert.equal(h.destroy(id), 0);
        assert.equal(h.destroy(ioas1), 0);
        assert.equal(h.destroy(ioas2), 0);
        assert.equal(h.ctx.table.size, 0);
      }),
      { numRuns: 150 },
    );
  });
});

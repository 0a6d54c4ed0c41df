/**
 * IOMMU_VDEVICE_ALLOC (spec viommu-eventq.md §3, §2.3, §9, §11.1): the check order, virt_id
 * uniqueness, the references a vDEVICE holds, the tombstone left by unbinding its device,
 * nested attach needing a vDEVICE, and the vIOMMU cache invalidation of `vdevice_cache`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { iommufdDeviceBind, iommufdDeviceUnbind } from "../../src/core/device.ts";
import { ObjType } from "../../src/core/object.ts";
import { type Viommu, vdeviceOf } from "../../src/core/viommu.ts";
import { E2BIG, EBUSY, EEXIST, EINVAL, ENOENT, EOPNOTSUPP } from "../../src/errno.ts";
import { MockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID,
} from "../../src/uapi/index.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import {
  IOMMU_TEST_DEV_CACHE_DEFAULT,
  teardown,
  ViommuHarness,
  viommuSetup,
} from "./viommu_fixture.ts";

const DEFAULT = IOMMU_TEST_DEV_CACHE_DEFAULT;

describe("IOMMU_VDEVICE_ALLOC", () => {
  it("no_viommu: viommu 0 is ENOENT", () => {
    const h = new ViommuHarness();
    h.ioasAlloc();
    assert.equal(h.vdeviceAlloc(0, 0, 0x99n).errno, ENOENT);
    assert.deepEqual(teardown(h), []);
  });

  it("cmd_length: min size 24, tails", () => {
    const { h } = viommuSetup();
    const at = h.proc.mmap(PAGE);
    const call = (size: number, tail: number) => {
      h.proc.write(at + 24n, Uint8Array.of(tail));
      return h.call(IOMMU_VDEVICE_ALLOC, IOMMU_VDEVICE_ALLOC_LAYOUT, { size }, { at }).errno;
    };
    assert.equal(call(24, 0), ENOENT);
    assert.equal(call(25, 0), ENOENT);
    assert.equal(call(25, 1), E2BIG);
    assert.equal(call(23, 0), EINVAL);
    assert.deepEqual(teardown(h), []);
  });

  it("vdevice_alloc: lookups, EEXIST per device and per virt_id, references", () => {
    const { h, ioasId, devId, viommuId, dev } = viommuSetup();
    assert.equal(h.vdeviceAlloc(viommuId, 0, 0x99n).errno, ENOENT);
    assert.equal(h.vdeviceAlloc(devId, devId, 0x99n).errno, ENOENT, "a DEVICE id is no vIOMMU");
    const viommuUsers = h.users(viommuId);
    const devUsers = h.users(devId);
    const vdevId = h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.equal(h.users(viommuId), viommuUsers + 1);
    assert.equal(h.users(devId), devUsers + 1);
    assert.equal(vdeviceOf(dev.idev)?.id, vdevId);
    // One vDEVICE per device (whatever the virt_id), one device per virt_id.
    assert.equal(h.vdeviceAlloc(viommuId, devId, 0x99n).errno, EEXIST);
    assert.equal(h.vdeviceAlloc(viommuId, devId, 0x77n).errno, EEXIST);
    const other = h.bind(ioasId);
    const tableSize = h.ctx.table.size;
    assert.equal(h.vdeviceAlloc(viommuId, other.idev.id, 0x99n).errno, EEXIST);
    assert.equal(h.ctx.table.size, tableSize, "the failed vDEVICE freed its id");
    assert.equal(vdeviceOf(other.idev), undefined);
    assert.equal(h.users(viommuId), viommuUsers + 1);
    // virt_id 0 is a valid id.
    const zero = h.vdeviceAllocOk(viommuId, other.idev.id, 0n);
    assert.equal(h.destroy(viommuId), EBUSY);
    // A vDEVICE is never busy: destroy, then the same device takes another virt_id.
    assert.equal(h.destroy(vdevId), 0);
    assert.equal(h.users(viommuId), viommuUsers + 1);
    assert.equal(h.users(devId), devUsers);
    assert.equal(vdeviceOf(dev.idev), undefined);
    assert.ok(h.vdeviceAllocOk(viommuId, devId, 0x88n) > 0);
    assert.equal(h.destroy(zero), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("a device behind another IOMMU instance is EINVAL; an unbinding one ENOENT", () => {
    const { h, devId, viommuId, dev } = viommuSetup();
    const otherIommu = new MockIommu();
    const mdev = otherIommu.createDevice(0);
    const foreign = iommufdDeviceBind(h.ctx, mdev);
    assert.equal(h.vdeviceAlloc(viommuId, foreign.id, 1n).errno, EINVAL);
    iommufdDeviceUnbind(foreign);
    otherIommu.destroyDevice(mdev);
    dev.idev.destroying = true;
    assert.equal(h.vdeviceAlloc(viommuId, devId, 1n).errno, ENOENT);
    dev.idev.destroying = false;
    assert.deepEqual(teardown(h), []);
  });

  it("nested attach needs the device's vDEVICE on that vIOMMU", () => {
    const { h, ioasId, devId, viommuId, nestedId, dev } = viommuSetup();
    assert.equal(h.replace(dev, nestedId), ENOENT);
    assert.equal(dev.mdev.viommu, null);
    const vdevId = h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.equal(h.replace(dev, nestedId), 0);
    const viommu = h.ctx.table.peek(viommuId) as Viommu;
    assert.equal(dev.mdev.viommu, viommu);
    assert.equal(dev.mdev.vdevId, 0x99n);
    assert.equal(viommu.vdevIdOf(dev.mdev), 0x99n);
    // Destroying the vDEVICE while attached is allowed; the mock keeps the stale virt_id.
    assert.equal(h.destroy(vdevId), 0);
    assert.equal(dev.mdev.vdevId, 0x99n);
    assert.equal(h.replace(dev, ioasId), 0);
    assert.equal(dev.mdev.viommu, null);
    assert.equal(dev.mdev.vdevId, 0n);
    assert.deepEqual(teardown(h), []);
  });
});

describe("vDEVICE tombstone", () => {
  it("vdevice_tombstone: unbinding the device leaves the id unusable (ENOENT)", () => {
    const { h, devId, viommuId, nestedId, parentId, dev } = viommuSetup();
    const viommuUsers = h.users(viommuId);
    const vdevId = h.vdeviceAllocOk(viommuId, devId, 0x99n);
    h.unplug(dev);
    assert.equal(h.isLive(devId), false, "the device object is gone");
    assert.equal(h.destroy(vdevId), ENOENT);
    assert.equal(h.users(viommuId), viommuUsers, "the vDEVICE's reference was dropped");
    assert.ok(h.ctx.table.size > 0);
    // The tombstoned id is not handed out again; the device's id is.
    const ioas2 = h.ioasAlloc();
    assert.equal(ioas2, devId);
    const ioas3 = h.ioasAlloc();
    assert.notEqual(ioas3, vdevId);
    assert.equal(h.destroy(nestedId), 0);
    assert.equal(h.destroy(viommuId), 0);
    assert.equal(h.destroy(parentId), 0);
    assert.deepEqual(teardown(h), []);
    assert.equal(h.ctx.table.size, 0, "the close freed the tombstone");
  });

  it("a vDEVICE destroyed normally leaves no tombstone", () => {
    const { h, devId, viommuId, dev } = viommuSetup();
    const vdevId = h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.equal(h.destroy(vdevId), 0);
    h.unplug(dev);
    assert.equal(h.ioasAlloc(), Math.min(devId, vdevId));
    assert.equal(h.ctx.table.peek(vdevId)?.type ?? ObjType.IOAS, ObjType.IOAS);
    assert.deepEqual(teardown(h), []);
  });
});

describe("vIOMMU cache invalidation (vdevice_cache)", () => {
  function entries(h: ViommuHarness, list: [number, number, number][]): bigint {
    return h.words(list.flat());
  }

  it("follows the selftest step by step", () => {
    const { h, devId, viommuId, dev } = viommuSetup();
    const cache = dev.mdev.cache;
    h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.deepEqual([...cache], [DEFAULT, DEFAULT, DEFAULT, DEFAULT]);
    const SELF = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;
    const zero = entries(h, [
      [0, 0, 0],
      [0, 0, 0],
    ]);
    // Type probe with an empty array.
    assert.deepEqual(h.invalidate(viommuId, zero, SELF, 12, 0), { errno: 0, num: 0 });
    // Wrong type; entry_len 13 and 1 (an all-zero entry names vdev 0: none); flags; NULL.
    const bad = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID;
    assert.deepEqual(h.invalidate(viommuId, zero, bad, 12, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(viommuId, zero, SELF, 13, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(viommuId, zero, SELF, 1, 1), { errno: EINVAL, num: 0 });
    const badFlags = entries(h, [[0xffffffff, 0x99, 0]]);
    assert.deepEqual(h.invalidate(viommuId, badFlags, SELF, 12, 1), { errno: EOPNOTSUPP, num: 0 });
    assert.deepEqual(h.invalidate(viommuId, 0n, SELF, 12, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual(h.invalidate(viommuId, zero, SELF, 0, 1), { errno: EINVAL, num: 0 });
    const badCache = entries(h, [[0, 0x99, 4]]);
    assert.deepEqual(h.invalidate(viommuId, badCache, SELF, 12, 1), { errno: EINVAL, num: 0 });
    const badVdev = entries(h, [[0, 0x9, 0]]);
    assert.deepEqual(h.invalidate(viommuId, badVdev, SELF, 12, 1), { errno: EINVAL, num: 0 });
    assert.deepEqual([...cache], [DEFAULT, DEFAULT, DEFAULT, DEFAULT]);
    // The first entry is handled, the second fails (flags, then cache_id).
    const twoA = entries(h, [
      [0, 0x99, 0],
      [0xffffffff, 0x99, 1],
    ]);
    assert.deepEqual(h.invalidate(viommuId, twoA, SELF, 12, 2), { errno: EOPNOTSUPP, num: 1 });
    assert.deepEqual([...cache], [0, DEFAULT, DEFAULT, DEFAULT]);
    const twoB = entries(h, [
      [0, 0x99, 0],
      [0, 0x99, 4],
    ]);
    assert.deepEqual(h.invalidate(viommuId, twoB, SELF, 12, 2), { errno: EINVAL, num: 1 });
    assert.deepEqual([...cache], [0, DEFAULT, DEFAULT, DEFAULT]);
    // Entry lengths other than 12 go entry by entry (a zero tail is fine).
    const long = h.words([0, 0x99, 1, 0, 0, 0x99, 2, 0]);
    assert.deepEqual(h.invalidate(viommuId, long, SELF, 16, 2), { errno: 0, num: 2 });
    assert.deepEqual([...cache], [0, 0, 0, DEFAULT]);
    const longDirty = h.words([0, 0x99, 3, 5]);
    assert.equal(h.invalidate(viommuId, longDirty, SELF, 16, 1).errno, E2BIG);
    assert.deepEqual(h.invalidate(viommuId, entries(h, [[0, 0x99, 3]]), SELF, 12, 1), {
      errno: 0,
      num: 1,
    });
    assert.deepEqual([...cache], [0, 0, 0, 0]);
    cache.fill(DEFAULT);
    // cache_id is range-checked even with ALL, which then ignores it.
    assert.deepEqual(h.invalidate(viommuId, entries(h, [[1, 0x99, 7]]), SELF, 12, 1), {
      errno: EINVAL,
      num: 0,
    });
    assert.deepEqual(h.invalidate(viommuId, entries(h, [[1, 0x99, 2]]), SELF, 12, 1), {
      errno: 0,
      num: 1,
    });
    assert.deepEqual([...cache], [0, 0, 0, 0], "ALL clears every slot");
    assert.deepEqual(teardown(h), []);
  });

  it("a HWPT_INVALIDATE on an IOAS or device id is EINVAL; a missing id ENOENT", () => {
    const { h, ioasId, devId } = viommuSetup();
    const SELF = IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST;
    const buf = entries(h, [[0, 0, 0]]);
    assert.equal(h.invalidate(ioasId, buf, SELF, 12, 1).errno, EINVAL);
    assert.equal(h.invalidate(devId, buf, SELF, 12, 1).errno, EINVAL);
    assert.equal(h.invalidate(999, buf, SELF, 12, 1).errno, ENOENT);
    assert.deepEqual(teardown(h), []);
  });
});

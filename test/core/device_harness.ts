/**
 * Helpers for the device / HWPT tests: mock devices bound and attached the way the selftest's
 * MOCK_DOMAIN op does it (create, bind, attach RID), and the HWPT / GET_HW_INFO ioctls encoded
 * into the fake process's memory. Importing this module loads the device and HWPT ioctls.
 */
import {
  getDevice,
  type IommufdDevice,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceUnbind,
} from "../../src/core/device.ts";
import { type Hwpt, HwptNested, HwptPaging } from "../../src/core/hwpt.ts";
import { ObjType } from "../../src/core/object.ts";
import type { FakeProcess } from "../../src/core/user_mm.ts";
import { ErrnoError } from "../../src/errno.ts";
import { type MockDevice, MockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
} from "../../src/uapi/index.ts";
import { type CallResult, Harness } from "./helpers/ioctl_harness.ts";

export const SELFTEST = 0xdead;
export const MOCK_APERTURE_START = 1n << 24n;

/** A bound mock device (what MOCK_DOMAIN leaves behind, minus the selftest object). */
export interface Bound {
  mdev: MockDevice;
  idev: IommufdDevice;
  /** HWPT id the RID was attached to. */
  hwptId: number;
}

export class DevHarness extends Harness {
  readonly mock: MockIommu;

  constructor(proc?: FakeProcess) {
    super(proc);
    this.mock = new MockIommu();
  }

  /** MOCK_DOMAIN(_FLAGS): a new mock device bound to this context and attached to `ptId`. */
  mockDomain(ptId: number, flags = 0): Bound {
    const mdev = this.mock.createDevice(flags, this.ctx.faults);
    let idev: IommufdDevice;
    try {
      idev = iommufdDeviceBind(this.ctx, mdev);
    } catch (e) {
      this.mock.destroyDevice(mdev);
      throw e;
    }
    try {
      const hwptId = iommufdDeviceAttach(idev, 0, ptId);
      return { mdev, idev, hwptId };
    } catch (e) {
      iommufdDeviceUnbind(idev);
      this.mock.destroyDevice(mdev);
      throw e;
    }
  }

  /** MOCK_DOMAIN expecting failure: the errno. */
  mockDomainErr(ptId: number, flags = 0): number {
    try {
      this.mockDomain(ptId, flags);
    } catch (e) {
      if (e instanceof ErrnoError) return e.errno;
      throw e;
    }
    return 0;
  }

  /** What destroying the selftest object does: detach the RID, unbind, delete the device. */
  unplug(b: Bound): void {
    iommufdDeviceDetach(b.idev, 0);
    iommufdDeviceUnbind(b.idev);
    this.mock.destroyDevice(b.mdev);
  }

  /** User memory holding `words` as little-endian u32s (one page). */
  words(words: number[]): bigint {
    const va = this.proc.mmap(4096);
    const b = new Uint8Array(4096);
    const v = new DataView(b.buffer);
    for (const [i, w] of words.entries()) v.setUint32(i * 4, w >>> 0, true);
    this.proc.write(va, b);
    return va;
  }

  hwptAlloc(
    devId: number,
    ptId: number,
    flags = 0,
    opts: {
      dataType?: number;
      data?: number[];
      dataLen?: number;
      uptr?: bigint;
      faultId?: number;
    } = {},
  ): CallResult<typeof IOMMU_HWPT_ALLOC_LAYOUT> {
    const data = opts.data;
    const uptr = opts.uptr ?? (data !== undefined ? this.words(data) : 0n);
    return this.call(IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_LAYOUT, {
      flags,
      dev_id: devId,
      pt_id: ptId,
      data_type: opts.dataType ?? (data !== undefined ? SELFTEST : 0),
      data_len: opts.dataLen ?? (data !== undefined ? data.length * 4 : 0),
      data_uptr: uptr,
      fault_id: opts.faultId ?? 0,
    });
  }

  /** HWPT_ALLOC expecting success: the new id. */
  hwptAllocOk(devId: number, ptId: number, flags = 0, data?: number[]): number {
    const r = this.hwptAlloc(devId, ptId, flags, data !== undefined ? { data } : {});
    if (r.errno !== 0) throw new Error(`HWPT_ALLOC failed: ${r.errno}`);
    return r.out.out_hwpt_id;
  }

  destroy(id: number): number {
    return this.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno;
  }

  hwInfo(
    devId: number,
    fields: { flags?: number; dataLen?: number; uptr?: bigint; inType?: number } = {},
  ): CallResult<typeof IOMMU_HW_INFO_LAYOUT> {
    return this.call(IOMMU_GET_HW_INFO, IOMMU_HW_INFO_LAYOUT, {
      flags: fields.flags ?? 0,
      dev_id: devId,
      data_len: fields.dataLen ?? 0,
      data_uptr: fields.uptr ?? 0n,
      in_data_type: fields.inType ?? 0,
    });
  }

  setDirtyTracking(hwptId: number, flags: number): number {
    return this.call(IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT, {
      flags,
      hwpt_id: hwptId,
    }).errno;
  }

  getDirtyBitmap(
    hwptId: number,
    iova: bigint,
    length: bigint,
    pageSize: bigint,
    data: bigint,
    flags = 0,
  ): number {
    return this.call(IOMMU_HWPT_GET_DIRTY_BITMAP, IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT, {
      hwpt_id: hwptId,
      flags,
      iova,
      length,
      page_size: pageSize,
      data,
    }).errno;
  }

  /** HWPT_INVALIDATE: errno and the entry_num written back. */
  invalidate(
    hwptId: number,
    uptr: bigint,
    dataType: number,
    entryLen: number,
    entryNum: number,
  ): { errno: number; num: number } {
    const r = this.call(IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_INVALIDATE_LAYOUT, {
      hwpt_id: hwptId,
      data_uptr: uptr,
      data_type: dataType,
      entry_len: entryLen,
      entry_num: entryNum,
    });
    return { errno: r.errno, num: r.out.entry_num };
  }

  hwpt(id: number): Hwpt {
    const obj = this.ctx.table.peek(id);
    if (obj instanceof HwptPaging || obj instanceof HwptNested) return obj;
    throw new Error(`${id} is not a HWPT`);
  }

  paging(id: number): HwptPaging {
    const obj = this.ctx.table.peek(id);
    if (obj instanceof HwptPaging) return obj;
    throw new Error(`${id} is not a HWPT_PAGING`);
  }

  /** True when `id` is a live object of `type`. */
  isLive(id: number, type: number = ObjType.ANY): boolean {
    const obj = this.ctx.table.peek(id);
    return obj !== undefined && (type === ObjType.ANY || obj.type === type);
  }

  device(id: number): IommufdDevice {
    return getDevice(this.ctx, id);
  }
}

/** Runs `fn` and returns the errno it threw (0 when it returned). */
export function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
  return 0;
}

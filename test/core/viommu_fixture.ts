/**
 * The selftest's `iommufd_viommu` fixture for the vIOMMU / event-queue / HW-queue tests: an
 * IOAS, a mock device attached to it (bound and attached as MOCK_DOMAIN does), a nest-parent
 * HWPT, a SELFTEST vIOMMU on it and a nested HWPT on the vIOMMU, plus the ioctls of this area
 * encoded into the fake process's memory. Importing it loads every ioctl these tests use and
 * registers the mock vIOMMU.
 */
import "../../src/core/eventq.ts";
import "../../src/core/hw_queue.ts";
import "../../src/core/viommu.ts";
import "../../src/hw/mock/viommu.ts";
import { IommufdContext } from "../../src/core/context.ts";
import {
  type IommufdDevice,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "../../src/core/device.ts";
import {
  EventqFdTable,
  type EventqFile,
  eventqFdInstaller,
  eventqFileByFd,
} from "../../src/core/eventq.ts";
import { FailNth } from "../../src/core/fail_nth.ts";
import { ObjType } from "../../src/core/object.ts";
import { FakeProcess } from "../../src/core/user_mm.ts";
import { ErrnoError } from "../../src/errno.ts";
import { type MockDevice, MockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_ALLOC_LAYOUT,
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_TEST_CMD,
  IOMMU_TEST_CMD_LAYOUT,
  IOMMU_TEST_OP,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
  IOMMU_VIOMMU_TYPE_SELFTEST,
} from "../../src/uapi/index.ts";
import { type CallResult, Harness, PAGE } from "./helpers/ioctl_harness.ts";

export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;
export const MOCK_APERTURE_START = 1n << 24n;
export const UINT32_MAX = 0xffff_ffff;

/** A mock device bound to the context. */
export interface Bound {
  mdev: MockDevice;
  idev: IommufdDevice;
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

export class ViommuHarness extends Harness {
  readonly mock: MockIommu;
  readonly faults: FailNth;
  /** Devices bound and not unplugged yet (the selftest objects a close would destroy). */
  readonly bound = new Set<Bound>();

  constructor(proc: FakeProcess = new FakeProcess()) {
    const faults = new FailNth();
    super(proc, new IommufdContext(faults));
    this.faults = faults;
    this.mock = new MockIommu();
  }

  /** MOCK_DOMAIN(_FLAGS): a new mock device bound to the context and attached to `ptId`. */
  bind(ptId: number, flags = 0): Bound & { hwptId: number } {
    const mdev = this.mock.createDevice(flags, this.ctx.faults);
    const idev = iommufdDeviceBind(this.ctx, mdev);
    const hwptId = iommufdDeviceAttach(idev, 0, ptId);
    const b = { mdev, idev, hwptId };
    this.bound.add(b);
    return b;
  }

  /** IOMMU_DESTROY of the selftest object: detach, unbind, delete the mock device. */
  unplug(b: Bound): void {
    this.bound.delete(b);
    iommufdDeviceDetach(b.idev, 0);
    iommufdDeviceUnbind(b.idev);
    this.mock.destroyDevice(b.mdev);
  }

  /** MOCK_DOMAIN_REPLACE: the errno. */
  replace(b: Bound, ptId: number): number {
    return errnoOf(() => iommufdDeviceReplace(b.idev, 0, ptId));
  }

  /** User memory holding `words` as little-endian u32s (one page). */
  words(words: number[], opts: { writable?: boolean } = {}): bigint {
    const b = new Uint8Array(PAGE);
    const v = new DataView(b.buffer);
    for (const [i, w] of words.entries()) v.setUint32(i * 4, w >>> 0, true);
    const va = this.proc.mmap(PAGE);
    this.proc.write(va, b);
    if (opts.writable === false) {
      const pages = this.proc.pages(va, 1, false);
      if (typeof pages === "number") throw new Error("no page");
      this.proc.munmap(va, PAGE);
      this.proc.mmap(PAGE, { at: va, writable: false, pages });
    }
    return va;
  }

  destroy(id: number): number {
    return this.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno;
  }

  isLive(id: number, type: number = ObjType.ANY): boolean {
    const obj = this.ctx.table.peek(id);
    return obj !== undefined && (type === ObjType.ANY || obj.type === type);
  }

  hwptAlloc(
    devId: number,
    ptId: number,
    flags = 0,
    opts: { data?: number[]; dataType?: number; faultId?: number } = {},
  ): CallResult<typeof IOMMU_HWPT_ALLOC_LAYOUT> {
    const data = opts.data;
    return this.call(IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_LAYOUT, {
      flags,
      dev_id: devId,
      pt_id: ptId,
      data_type: opts.dataType ?? (data !== undefined ? IOMMU_HWPT_DATA_SELFTEST : 0),
      data_len: data !== undefined ? data.length * 4 : 0,
      data_uptr: data !== undefined ? this.words(data) : 0n,
      fault_id: opts.faultId ?? 0,
    });
  }

  hwptAllocOk(devId: number, ptId: number, flags = 0, data?: number[]): number {
    const r = this.hwptAlloc(devId, ptId, flags, data !== undefined ? { data } : {});
    if (r.errno !== 0) throw new Error(`HWPT_ALLOC failed: ${r.errno}`);
    return r.out.out_hwpt_id;
  }

  viommuAlloc(
    devId: number,
    hwptId: number,
    opts: { type?: number; flags?: number; dataLen?: number; uptr?: bigint; size?: number } = {},
  ): CallResult<typeof IOMMU_VIOMMU_ALLOC_LAYOUT> {
    return this.call(IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT, {
      size: opts.size ?? IOMMU_VIOMMU_ALLOC_LAYOUT.size,
      flags: opts.flags ?? 0,
      type: opts.type ?? IOMMU_VIOMMU_TYPE_SELFTEST,
      dev_id: devId,
      hwpt_id: hwptId,
      data_len: opts.dataLen ?? 0,
      data_uptr: opts.uptr ?? 0n,
    });
  }

  vdeviceAlloc(
    viommuId: number,
    devId: number,
    virtId: bigint,
  ): CallResult<typeof IOMMU_VDEVICE_ALLOC_LAYOUT> {
    return this.call(IOMMU_VDEVICE_ALLOC, IOMMU_VDEVICE_ALLOC_LAYOUT, {
      viommu_id: viommuId,
      dev_id: devId,
      virt_id: virtId,
    });
  }

  vdeviceAllocOk(viommuId: number, devId: number, virtId: bigint): number {
    const r = this.vdeviceAlloc(viommuId, devId, virtId);
    if (r.errno !== 0) throw new Error(`VDEVICE_ALLOC failed: ${r.errno}`);
    return r.out.out_vdevice_id;
  }

  faultAlloc(flags = 0): CallResult<typeof IOMMU_FAULT_ALLOC_LAYOUT> {
    return this.call(IOMMU_FAULT_QUEUE_ALLOC, IOMMU_FAULT_ALLOC_LAYOUT, { flags });
  }

  /** FAULT_QUEUE_ALLOC expecting success: the id and the open file. */
  faultAllocOk(): { id: number; fd: number; file: EventqFile } {
    const r = this.faultAlloc();
    if (r.errno !== 0) throw new Error(`FAULT_QUEUE_ALLOC failed: ${r.errno}`);
    return { id: r.out.out_fault_id, fd: r.out.out_fault_fd, file: this.file(r.out.out_fault_fd) };
  }

  veventqAlloc(
    viommuId: number,
    depth: number,
    opts: { type?: number; flags?: number; reserved?: number } = {},
  ): CallResult<typeof IOMMU_VEVENTQ_ALLOC_LAYOUT> {
    return this.call(IOMMU_VEVENTQ_ALLOC, IOMMU_VEVENTQ_ALLOC_LAYOUT, {
      flags: opts.flags ?? 0,
      viommu_id: viommuId,
      type: opts.type ?? IOMMU_VEVENTQ_TYPE_SELFTEST,
      veventq_depth: depth,
      __reserved: opts.reserved ?? 0,
    });
  }

  veventqAllocOk(viommuId: number, depth: number): { id: number; fd: number; file: EventqFile } {
    const r = this.veventqAlloc(viommuId, depth);
    if (r.errno !== 0) throw new Error(`VEVENTQ_ALLOC failed: ${r.errno}`);
    const fd = r.out.out_veventq_fd;
    return { id: r.out.out_veventq_id, fd, file: this.file(fd) };
  }

  hwQueueAlloc(
    viommuId: number,
    index: number,
    iova: bigint,
    length: bigint,
    opts: { type?: number; flags?: number } = {},
  ): CallResult<typeof IOMMU_HW_QUEUE_ALLOC_LAYOUT> {
    return this.call(IOMMU_HW_QUEUE_ALLOC, IOMMU_HW_QUEUE_ALLOC_LAYOUT, {
      flags: opts.flags ?? 0,
      viommu_id: viommuId,
      type: opts.type ?? IOMMU_HW_QUEUE_TYPE_SELFTEST,
      index,
      nesting_parent_iova: iova,
      length,
    });
  }

  invalidate(
    id: number,
    uptr: bigint,
    dataType: number,
    entryLen: number,
    entryNum: number,
  ): { errno: number; num: number } {
    const r = this.call(IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_INVALIDATE_LAYOUT, {
      hwpt_id: id,
      data_uptr: uptr,
      data_type: dataType,
      entry_len: entryLen,
      entry_num: entryNum,
    });
    return { errno: r.errno, num: r.out.entry_num };
  }

  /** IOMMU_TEST_CMD `op` with union member `member` = `arg`: the errno. */
  testCmd(op: number, id: number, member: string, arg: Record<string, number | bigint>): number {
    const fields = { op, id, [member]: arg };
    return this.call(IOMMU_TEST_CMD, IOMMU_TEST_CMD_LAYOUT, fields as never).errno;
  }

  /** IOMMU_TEST_OP_TRIGGER_IOPF as test_cmd_trigger_iopf sends it (grpid 2, perm R|W). */
  triggerIopf(devId: number, pasid: number, opts: { grpid?: number; addr?: bigint } = {}): number {
    return this.testCmd(IOMMU_TEST_OP.TRIGGER_IOPF, 0, "trigger_iopf", {
      dev_id: devId,
      pasid,
      grpid: opts.grpid ?? 2,
      perm: 3,
      addr: opts.addr ?? 0xdeadbeafn,
    });
  }

  /** IOMMU_TEST_OP_TRIGGER_VEVENT. */
  triggerVevent(devId: number): number {
    return this.testCmd(IOMMU_TEST_OP.TRIGGER_VEVENT, 0, "trigger_vevent", { dev_id: devId });
  }

  /** IOMMU_TEST_OP_DEV_CHECK_CACHE of one slot. */
  checkDevCache(devId: number, slot: number, value: number): number {
    return this.testCmd(IOMMU_TEST_OP.DEV_CHECK_CACHE, devId, "check_dev_cache", {
      id: slot,
      cache: value,
    });
  }

  /** The open queue file on `fd`. */
  file(fd: number): EventqFile {
    const f = eventqFileByFd(this.ctx, fd);
    if (f === undefined) throw new Error(`fd ${fd} is not an open queue file`);
    return f;
  }

  /** Users count of object `id` (throws when it is not live). */
  users(id: number): number {
    const obj = this.ctx.table.peek(id);
    if (obj === undefined) throw new Error(`${id} is not live`);
    return obj.users;
  }
}

/** What the iommufd_viommu fixture (mock_viommu variant) sets up. */
export interface ViommuSetup {
  h: ViommuHarness;
  ioasId: number;
  dev: Bound & { hwptId: number };
  devId: number;
  /** The nest-parent HWPT. */
  parentId: number;
  viommuId: number;
  /** The nested HWPT on the vIOMMU (iotlb 0xbadbeef). */
  nestedId: number;
}

/**
 * FIXTURE_SETUP(iommufd_viommu), mock_viommu variant: IOAS, MOCK_DOMAIN, a NEST_PARENT HWPT,
 * a SELFTEST vIOMMU without data, a nested HWPT on it.
 */
export function viommuSetup(proc?: FakeProcess): ViommuSetup {
  const h = new ViommuHarness(proc);
  const ioasId = h.ioasAlloc();
  const dev = h.bind(ioasId);
  const devId = dev.idev.id;
  const parentId = h.hwptAllocOk(devId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT);
  const v = h.viommuAlloc(devId, parentId);
  if (v.errno !== 0) throw new Error(`VIOMMU_ALLOC failed: ${v.errno}`);
  const viommuId = v.out.out_viommu_id;
  const nestedId = h.hwptAllocOk(devId, viommuId, 0, [IOMMU_TEST_IOTLB_DEFAULT]);
  return { h, ioasId, dev, devId, parentId, viommuId, nestedId };
}

/**
 * FIXTURE_TEARDOWN: close(fd). The close destroys the selftest objects first (each unplugs its
 * device), then everything else leaf-first. Queue fds still open are closed afterwards, as the
 * test process's exit would (their objects are released then). Nothing may be left: returns
 * the live objects as "type:id" for the assertion.
 */
export function teardown(h: ViommuHarness): string[] {
  for (const b of [...h.bound]) h.unplug(b);
  h.ctx.close();
  const fds = eventqFdInstaller(h.ctx);
  if (fds instanceof EventqFdTable) for (const f of fds.openFiles()) f.close();
  return [...h.ctx.table.live()].map((o) => `${o.type}:${o.id}`);
}

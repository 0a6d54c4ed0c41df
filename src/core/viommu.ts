/**
 * The vIOMMU and vDEVICE objects (drivers/iommu/iommufd/viommu.c) and their ioctls
 * IOMMU_VIOMMU_ALLOC and IOMMU_VDEVICE_ALLOC, with the vDEVICE tombstone left when a device is
 * unbound under its vDEVICE (device.c iommufd_device_pre_destroy, main.c tombstones).
 *
 * Spec viommu-eventq.md §1 (object model), §2 (VIOMMU_ALLOC and destroy), §3 (VDEVICE_ALLOC,
 * destroy, tombstone), §8 (refcounts), §10 (fault-injection order). Facts: viommu.c
 * (iommufd_viommu_alloc_ioctl, iommufd_viommu_destroy, iommufd_vdevice_alloc_ioctl,
 * iommufd_vdevice_abort / _destroy), driver.c (iommufd_viommu_find_dev,
 * iommufd_viommu_get_vdev_id).
 *
 * What a vIOMMU does elsewhere lives with the code it serves: nested HWPTs on a vIOMMU and
 * HWPT_INVALIDATE on a vIOMMU id are in hwpt.ts (through the ViommuForHwpt interface this
 * class implements), vEVENTQs in eventq.ts, HW queues in hw_queue.ts, mmap regions in
 * mmap.ts. The driver side (struct iommufd_viommu_ops) is a `ViommuDriver` the IOMMU driver's
 * `viommuInit` returns; drivers register their iommu_ops part with `registerViommuOps` (the
 * selftest mock does so in src/hw/mock/viommu.ts).
 */
import { EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, ErrnoError } from "../errno.ts";
import { IOMMU_VIOMMU_TYPE_DEFAULT, IOMMUFD_IOCTLS } from "../uapi/index.ts";
import type { UserMemory } from "../uapi/user_memory.ts";
import type { IommufdContext } from "./context.ts";
import { registerIoctl } from "./context.ts";
import { deviceHooks, type IommufdDevice } from "./device.ts";
import type {
  DriverPagingDomain,
  FaultInjector,
  IommuDevice,
  IommuInstance,
  IommuNestedDomain,
  IommuOps,
  IommuUserData,
  IommuUserDataArray,
  ViommuLink,
} from "./driver.ts";
import type { Veventq } from "./eventq.ts";
import type { HwQueue } from "./hw_queue.ts";
import type { HwptPaging, ViommuForHwpt } from "./hwpt.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";

/** virt_id indexes an xarray: at most ULONG_MAX (64-bit). */
const ULONG_MAX = (1n << 64n) - 1n;

// ---- The driver contract ----------------------------------------------------------------------

/**
 * struct iommufd_viommu_ops: what one vIOMMU instance's driver does. Every op is optional, as
 * in the kernel; the core answers EOPNOTSUPP for a missing one.
 */
export interface ViommuDriver {
  /** ops->destroy: releases the driver's part (its mmap regions, pages). Must not fail. */
  destroy?(): void;
  /**
   * ops->alloc_domain_nested: a nested domain on this vIOMMU (`flags` without FAULT_ID_VALID).
   * Throws ErrnoError.
   */
  allocDomainNested?(
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ): IommuNestedDomain;
  /**
   * ops->cache_invalidate: handles `array` (entries read from `user`), sets array.entryNum to
   * the number handled and returns 0 or the errno of the first failure.
   */
  cacheInvalidate?(array: IommuUserDataArray, user: UserMemory): number;
  /** ops->get_hw_queue_size: 0 when `type` is not supported. */
  getHwQueueSize?(type: number): number;
  /**
   * ops->hw_queue_init_phys: sets up `queue` (index `index`, memory at physical `basePa`);
   * sets queue.driverDestroy when it succeeds. Throws ErrnoError; on failure nothing is left.
   */
  hwQueueInitPhys?(queue: HwQueue, index: number, basePa: number): void;
}

/** The vIOMMU part of struct iommu_ops (get_viommu_size, viommu_init). */
export interface IommuViommuOps {
  /** get_viommu_size: 0 when the driver has no vIOMMU of `type` for `dev`. */
  getViommuSize(dev: IommuDevice, type: number): number;
  /**
   * viommu_init: builds the driver's side of `viommu` over the nest parent's `parent` domain,
   * with the user data when data_len was non-zero. Throws ErrnoError after undoing its own
   * work (the core then destroys the half-built vIOMMU without calling the driver).
   */
  viommuInit(
    viommu: Viommu,
    parent: DriverPagingDomain,
    userData: IommuUserData | null,
    faults: FaultInjector,
  ): ViommuDriver;
}

const VIOMMU_DRIVERS: { match: (ops: IommuOps) => boolean; vops: IommuViommuOps }[] = [];

/**
 * Registers the vIOMMU ops of the drivers `match` accepts (the hardware models call this when
 * they load; the core never imports them).
 */
export function registerViommuOps(match: (ops: IommuOps) => boolean, vops: IommuViommuOps): void {
  VIOMMU_DRIVERS.push({ match, vops });
}

/** dev_iommu_ops(dev)->get_viommu_size / viommu_init, or undefined when the driver has none. */
export function viommuOpsOf(ops: IommuOps | null): IommuViommuOps | undefined {
  if (ops === null) return undefined;
  return VIOMMU_DRIVERS.find((d) => d.match(ops))?.vops;
}

// ---- The VIOMMU object --------------------------------------------------------------------------

/** IOMMUFD_OBJ_VIOMMU (struct iommufd_viommu). */
export class Viommu extends IommufdObject implements ViommuForHwpt, ViommuLink {
  readonly type = ObjType.VIOMMU;
  readonly ctx: IommufdContext;
  /** enum iommu_viommu_type it was allocated with. */
  readonly viommuType: number;
  /** The nest-parent HWPT_PAGING (held: users +1). */
  readonly hwpt: HwptPaging;
  /** The physical IOMMU instance of the device it was allocated for. */
  readonly iommuDev: IommuInstance | null;
  /** vdevs: virt_id -> vDEVICE. */
  readonly vdevs = new Map<bigint, Vdevice>();
  /** The vEVENTQs on this vIOMMU (at most one per type), in creation order. */
  readonly veventqs: Veventq[] = [];
  /** The driver's part; null until viommu_init succeeded. */
  driver: ViommuDriver | null = null;
  /** ops->alloc_domain_nested, when the driver has it (hwpt.ts calls it). */
  allocDomainNested?: (
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ) => IommuNestedDomain;
  /** ops->cache_invalidate, when the driver has it (hwpt.ts calls it). */
  cacheInvalidate?: (array: IommuUserDataArray, user: UserMemory) => number;

  constructor(
    ctx: IommufdContext,
    viommuType: number,
    hwpt: HwptPaging,
    iommuDev: IommuInstance | null,
  ) {
    super();
    this.ctx = ctx;
    this.viommuType = viommuType;
    this.hwpt = hwpt;
    this.iommuDev = iommuDev;
  }

  /** Installs the driver's ops once viommu_init succeeded. */
  setDriver(driver: ViommuDriver): void {
    this.driver = driver;
    const alloc = driver.allocDomainNested;
    if (alloc !== undefined) this.allocDomainNested = (f, u, x) => alloc.call(driver, f, u, x);
    const inv = driver.cacheInvalidate;
    if (inv !== undefined) this.cacheInvalidate = (a, u) => inv.call(driver, a, u);
  }

  /** ViommuLink / iommufd_viommu_get_vdev_id: the virt_id of `dev`'s vDEVICE here, if any. */
  vdevIdOf(dev: IommuDevice): bigint | undefined {
    for (const v of this.vdevs.values()) if (v.idev.dev === dev) return v.virtId;
    return undefined;
  }

  /** iommufd_viommu_find_dev: the device whose vDEVICE here has `virtId`. */
  findDev(virtId: bigint): IommuDevice | undefined {
    return this.vdevs.get(virtId)?.idev.dev;
  }

  /** iommufd_viommu_destroy: driver destroy (if init ran), parent HWPT users -1. */
  destroy(): void {
    const driver = this.driver;
    this.driver = null;
    driver?.destroy?.();
    refPut(this.hwpt);
    this.vdevs.clear();
  }
}

/** iommufd_get_viommu: the live VIOMMU `id` (ENOENT otherwise; an injection site). */
export function getViommu(ctx: IommufdContext, id: number): Viommu {
  return ctx.table.get<Viommu>(id, ObjType.VIOMMU);
}

// ---- The VDEVICE object ------------------------------------------------------------------------

/** idev->vdev: a device has at most one vDEVICE, in any vIOMMU. */
const VDEV_OF = new WeakMap<IommufdDevice, Vdevice>();

/** The vDEVICE of `idev`, if it has one. */
export function vdeviceOf(idev: IommufdDevice): Vdevice | undefined {
  return VDEV_OF.get(idev);
}

/** IOMMUFD_OBJ_VDEVICE (struct iommufd_vdevice). */
export class Vdevice extends IommufdObject {
  readonly type = ObjType.VDEVICE;
  readonly viommu: Viommu;
  readonly idev: IommufdDevice;
  /** The device's ID in the guest (a virtual RID / stream ID). */
  readonly virtId: bigint;
  /** In viommu.vdevs under virtId (set once the xarray insert succeeded). */
  inserted = false;

  constructor(viommu: Viommu, idev: IommufdDevice, virtId: bigint) {
    super();
    this.viommu = viommu;
    this.idev = idev;
    this.virtId = virtId;
  }

  /** Takes its references once its id is reserved (the allocation can fail before). */
  link(): void {
    refGet(this.viommu);
    refGet(this.idev); // kept for the vDEVICE's life (the kernel's wait_cnt reference)
    VDEV_OF.set(this.idev, this);
  }

  /**
   * iommufd_vdevice_destroy (also the abort): out of the vIOMMU's table (only if this one was
   * inserted), vIOMMU users -1, the device's vDEVICE pointer cleared, device reference dropped.
   */
  destroy(): void {
    if (this.inserted && this.viommu.vdevs.get(this.virtId) === this)
      this.viommu.vdevs.delete(this.virtId);
    this.inserted = false;
    refPut(this.viommu);
    if (VDEV_OF.get(this.idev) === this) VDEV_OF.delete(this.idev);
    refPut(this.idev);
  }
}

/**
 * iommufd_device_pre_destroy: a device being unbound destroys its vDEVICE but leaves the
 * vDEVICE's id as a tombstone (IOMMU_DESTROY of it then gives ENOENT; the id is not reused
 * until the context closes).
 */
function tombstoneVdevice(idev: IommufdDevice): void {
  const vdev = VDEV_OF.get(idev);
  if (vdev === undefined) return;
  const table = idev.ctx.table;
  if (table.peek(vdev.id) === vdev) table.tombstone(vdev);
}
deviceHooks.preDestroy.push(tombstoneVdevice);

// ---- IOMMU_VIOMMU_ALLOC -------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.VIOMMU_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  // __reserved is not checked by the kernel.
  if (cmd.flags !== 0 || cmd.type === IOMMU_VIOMMU_TYPE_DEFAULT) return EOPNOTSUPP;
  const idev = ctx.table.get<IommufdDevice>(cmd.dev_id, ObjType.DEVICE);
  const dev = idev.dev;
  const vops = viommuOpsOf(dev.ops);
  if (vops === undefined) return EOPNOTSUPP;
  if (vops.getViommuSize(dev, cmd.type) === 0) return EOPNOTSUPP;
  const hwpt = ctx.table.get<HwptPaging>(cmd.hwpt_id, ObjType.HWPT_PAGING);
  if (!hwpt.nestParent) return EINVAL;

  const viommu = call.alloc(new Viommu(ctx, cmd.type, hwpt, dev.iommu));
  refGet(hwpt);
  const userData: IommuUserData | null =
    cmd.data_len !== 0
      ? { type: cmd.type, uptr: cmd.data_uptr, len: cmd.data_len, user: ucmd.user }
      : null;
  viommu.setDriver(vops.viommuInit(viommu, hwpt.domain, userData, ctx.faults));
  cmd.out_viommu_id = viommu.id;
  return ucmd.respond() === 0 ? 0 : EFAULT;
});

// ---- IOMMU_VDEVICE_ALLOC -----------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.VDEVICE_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  const virtId = cmd.virt_id;
  if (virtId > ULONG_MAX) return EINVAL;
  const viommu = getViommu(ctx, cmd.viommu_id);
  const idev = ctx.table.get<IommufdDevice>(cmd.dev_id, ObjType.DEVICE);
  if (viommu.iommuDev !== idev.dev.iommu) return EINVAL;
  if (idev.destroying) return ENOENT;
  if (VDEV_OF.has(idev)) return EEXIST;

  const vdev = call.alloc(new Vdevice(viommu, idev, virtId));
  vdev.link();
  if (viommu.vdevs.has(virtId)) return EEXIST;
  if (ctx.faults.shouldFail("viommu_vdevs_store"))
    throw new ErrnoError(ENOMEM, "vIOMMU vdevs store");
  viommu.vdevs.set(virtId, vdev);
  vdev.inserted = true;
  // The mock has no vdevice_init op; a driver's would run here.
  cmd.out_vdevice_id = vdev.id;
  return ucmd.respond() === 0 ? 0 : EFAULT;
});

/**
 * Devices in iommufd (drivers/iommu/iommufd/device.c): the DEVICE object a driver binds, the
 * per-context group record (iommufd_group) with its per-PASID attachments, attach / replace /
 * detach of the RID and of PASIDs to a HWPT or to an IOAS (automatic domain: reuse an auto HWPT
 * of the IOAS or create one), the device's reserved regions in the IOAS on RID attach, and the
 * ioctl IOMMU_GET_HW_INFO.
 *
 * Spec hwpt-device.md §1, §2.1-§2.2 (bind / unbind), §4 (attach), §5 (replace), §6 (auto
 * domain), §7 (reserved regions), §8 (PASID compatibility), §11 (detach), §12 (GET_HW_INFO).
 * The IOMMU core steps underneath (group ownership, domain switching) are in driver.ts.
 *
 * Errors are ErrnoErrors thrown; every failing call leaves the state as it found it.
 */
import { EBUSY, EFAULT, EINVAL, ENODEV, EOPNOTSUPP, EPERM, ErrnoError } from "../errno.ts";
import { IOMMUFD_IOCTLS } from "../uapi/structs.ts";
import type { IommufdContext } from "./context.ts";
import { registerIoctl } from "./context.ts";
import {
  allocFailure,
  IOMMU_NO_PASID,
  IommuCap,
  type IommuDevice,
  type IommuGroup,
  iommuAttachDevicePasid,
  iommuAttachGroupHandle,
  iommuDetachDevicePasid,
  iommuDetachGroupHandle,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuReplaceDevicePasid,
  iommuReplaceGroupHandle,
} from "./driver.ts";
import {
  findHwptPaging,
  type Hwpt,
  HwptNested,
  HwptPaging,
  hwptPagingAlloc,
  hwptPut,
} from "./hwpt.ts";
import type { Ioas } from "./ioas.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";

/** PHYS_ADDR_MAX: "no software MSI window recorded". */
export const SW_MSI_NONE = (1n << 64n) - 1n;

// ---- Module parameters and hooks for other slices ----------------------------------------------

/** iommufd's module parameter allow_unsafe_interrupts. */
export const deviceParams = { allowUnsafeInterrupts: false };

/**
 * Hooks other areas install (they own the objects involved):
 *  - preDestroy: runs when a bound device is being unbound, before its object goes (the
 *    vDEVICE area tombstones the device's vDEVICE here).
 *  - faultAutoRespond: a HWPT with a FAULT loses an attachment (detach, or replace away): answer
 *    the faults that arrived through `handle` (the FAULT area).
 */
export const deviceHooks: {
  preDestroy: ((idev: IommufdDevice) => void)[];
  faultAutoRespond: ((fault: IommufdObject, handle: IommufdAttachHandle) => void) | null;
} = { preDestroy: [], faultAutoRespond: null };

// ---- Per-context group records ----------------------------------------------------------------

/** struct iommufd_attach: what one PASID of a group is attached to, and by which devices. */
export interface IommufdAttach {
  hwpt: Hwpt;
  /** device_set: the attached devices by object id. */
  readonly devices: Map<number, IommufdDevice>;
}

/** struct iommufd_group: one per (context, iommu group). */
export class IommufdGroup {
  readonly ctx: IommufdContext;
  readonly group: IommuGroup;
  /** Bound devices of this group (kref). */
  refs = 1;
  /** sw_msi_start: the SW_MSI window the group's devices reported, or SW_MSI_NONE. */
  swMsiStart = SW_MSI_NONE;
  /** pasid_attach: IOMMU_NO_PASID (0) is the RID's. */
  readonly pasidAttach = new Map<number, IommufdAttach>();

  constructor(ctx: IommufdContext, group: IommuGroup) {
    this.ctx = ctx;
    this.group = group;
  }
}

/**
 * struct iommufd_attach_handle: recorded by the IOMMU core next to the domain of an attached
 * (group, PASID); the FAULT area routes page requests through it.
 */
export class IommufdAttachHandle {
  readonly idev: IommufdDevice;
  readonly hwpt: Hwpt;
  readonly pasid: number;
  constructor(idev: IommufdDevice, hwpt: Hwpt, pasid: number) {
    this.idev = idev;
    this.hwpt = hwpt;
    this.pasid = pasid;
  }
}

const GROUPS = Symbol("iommufd groups");

function groupsOf(ctx: IommufdContext): Map<IommuGroup, IommufdGroup> {
  let m = ctx.ext.get(GROUPS) as Map<IommuGroup, IommufdGroup> | undefined;
  if (m === undefined) {
    m = new Map();
    ctx.ext.set(GROUPS, m);
  }
  return m;
}

/** iommufd_get_group: the context's record of `dev`'s group, made on first use. */
function getGroup(ctx: IommufdContext, dev: IommuDevice): IommufdGroup {
  if (dev.group === null) throw new ErrnoError(ENODEV, `${dev.name} has no iommu group`);
  const groups = groupsOf(ctx);
  const existing = groups.get(dev.group);
  if (existing !== undefined) {
    existing.refs++;
    return existing;
  }
  if (ctx.faults.shouldFail("iommufd_group_alloc")) throw allocFailure("iommufd_group");
  const igroup = new IommufdGroup(ctx, dev.group);
  groups.set(dev.group, igroup);
  return igroup;
}

function putGroup(igroup: IommufdGroup): void {
  if (--igroup.refs === 0) groupsOf(igroup.ctx).delete(igroup.group);
}

// ---- The DEVICE object ----------------------------------------------------------------------

/** IOMMUFD_OBJ_DEVICE (struct iommufd_device). */
export class IommufdDevice extends IommufdObject {
  readonly type = ObjType.DEVICE;
  readonly ctx: IommufdContext;
  readonly dev: IommuDevice;
  readonly igroup: IommufdGroup;
  /** Fixed at bind: capable(ENFORCE_CACHE_COHERENCY). */
  readonly enforceCacheCoherency: boolean;
  /** Set while the device is being unbound (new vDEVICEs on it are refused). */
  destroying = false;

  constructor(ctx: IommufdContext, dev: IommuDevice, igroup: IommufdGroup, enforce: boolean) {
    super();
    this.ctx = ctx;
    this.dev = dev;
    this.igroup = igroup;
    this.enforceCacheCoherency = enforce;
  }

  /** iommufd_device_destroy: DMA ownership released, group record put. */
  destroy(): void {
    iommuDeviceReleaseDmaOwner(this.dev);
    putGroup(this.igroup);
  }
}

/**
 * iommufd_device_bind (§2.1): binds `dev` to the context and returns the DEVICE object, already
 * published. In order: no cache coherency EINVAL; no group ENODEV (group record ENOMEM); a
 * non-mock device without isolated MSI EPERM (unless allowUnsafeInterrupts); DMA ownership
 * (EPERM owned by another context, EBUSY in use); the object (ENOMEM). The binding holds one
 * `users` reference (the driver's) until iommufdDeviceUnbind.
 */
export function iommufdDeviceBind(ctx: IommufdContext, dev: IommuDevice): IommufdDevice {
  const ops = dev.ops;
  if (ops === null || !ops.capable(dev, IommuCap.CACHE_COHERENCY))
    throw new ErrnoError(EINVAL, `${dev.name} is not cache coherent`);
  const igroup = getGroup(ctx, dev);
  try {
    if (!dev.selftestMock && !dev.msiIsolated && !deviceParams.allowUnsafeInterrupts)
      throw new ErrnoError(EPERM, `${dev.name}: MSI not isolated`);
    iommuDeviceClaimDmaOwner(dev, ctx);
  } catch (e) {
    putGroup(igroup);
    throw e;
  }
  const enforce = ops.capable(dev, IommuCap.ENFORCE_CACHE_COHERENCY);
  const idev = new IommufdDevice(ctx, dev, igroup, enforce);
  try {
    ctx.table.reserve(idev);
  } catch (e) {
    iommuDeviceReleaseDmaOwner(dev);
    putGroup(igroup);
    throw e;
  }
  refGet(idev); // the driver's reference, dropped by unbind
  ctx.table.finalize(idev);
  return idev;
}

/**
 * iommufd_device_unbind (§2.2): the driver lets go. The vDEVICE area's preDestroy hooks run,
 * the driver's reference is dropped, and the object is destroyed if nothing else holds it. A
 * device still attached somewhere stays (a driver bug the kernel WARNs about) until its
 * attachments go or the context closes.
 */
export function iommufdDeviceUnbind(idev: IommufdDevice): void {
  idev.destroying = true;
  for (const hook of deviceHooks.preDestroy) hook(idev);
  refPut(idev);
  if (idev.users === 1 && idev.ctx.table.peek(idev.id) === idev) idev.ctx.table.remove(idev);
}

// ---- PASID compatibility (§8) ------------------------------------------------------------------

function pasidCompat(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  const igroup = idev.igroup;
  if (pasid === IOMMU_NO_PASID) {
    if (!hwpt.pasidCompat) {
      for (const p of igroup.pasidAttach.keys())
        if (p !== IOMMU_NO_PASID)
          throw new ErrnoError(EINVAL, "RID HWPT is not PASID-compatible while PASIDs attached");
    }
    return;
  }
  if (!hwpt.pasidCompat) throw new ErrnoError(EINVAL, `HWPT ${hwpt.id} is not PASID-compatible`);
  const rid = igroup.pasidAttach.get(IOMMU_NO_PASID);
  if (rid !== undefined && !rid.hwpt.pasidCompat)
    throw new ErrnoError(EINVAL, "RID is attached to a HWPT that is not PASID-compatible");
}

/** The PRI-capable-VF rule for HWPTs with a FAULT. */
function checkFaultCapable(hwpt: Hwpt, idev: IommufdDevice): void {
  if (hwpt.fault !== null && idev.dev.pciPriVf)
    throw new ErrnoError(EINVAL, "fault HWPT on a PRI-capable VF");
}

function faultRespond(hwpt: Hwpt, handle: IommufdAttachHandle | null): void {
  if (hwpt.fault !== null && handle !== null) deviceHooks.faultAutoRespond?.(hwpt.fault, handle);
}

// ---- Reserved regions (§7) -------------------------------------------------------------------

/** iommufd_device_attach_reserved_iova's core: the device's regions into `paging`'s IOAS. */
function enforceResv(idev: IommufdDevice, paging: HwptPaging, recordSwMsi: boolean): void {
  const regions = idev.dev.ops?.getResvRegions?.(idev.dev) ?? [];
  const swMsi = paging.ioas.iopt.enforceDeviceReservedRegions(idev.dev, regions, recordSwMsi);
  if (recordSwMsi && swMsi !== undefined) idev.igroup.swMsiStart = swMsi;
}

/** iommufd_group_remove_reserved_iova: every attached RID device's regions out of the IOAS. */
function groupRemoveResv(igroup: IommufdGroup, paging: HwptPaging): void {
  const rid = igroup.pasidAttach.get(IOMMU_NO_PASID);
  if (rid === undefined) return;
  for (const idev of rid.devices.values()) paging.ioas.iopt.removeReserved(idev.dev);
}

/**
 * iommufd_group_do_replace_reserved_iova: moving the RID to another IOAS reserves every
 * attached device's regions there first; on failure they are all removed from it again.
 */
function groupReplaceResv(igroup: IommufdGroup, paging: HwptPaging): void {
  const rid = igroup.pasidAttach.get(IOMMU_NO_PASID);
  if (rid === undefined) return;
  const oldPaging = findHwptPaging(rid.hwpt);
  if (oldPaging === null || oldPaging.ioas !== paging.ioas) {
    try {
      for (const idev of rid.devices.values()) enforceResv(idev, paging, false);
    } catch (e) {
      groupRemoveResv(igroup, paging);
      throw e;
    }
  }
}

// ---- Attach (§4.2) -----------------------------------------------------------------------------

/**
 * iommufd_hwpt_attach_device: the first attachment of (group, pasid) reaches the IOMMU core:
 * PRI/VF EINVAL, PASID compatibility EINVAL, the handle (ENOMEM), then the group (RID) or PASID
 * attach with the driver's errors.
 */
function hwptAttachDevice(hwpt: Hwpt, idev: IommufdDevice, pasid: number): IommufdAttachHandle {
  checkFaultCapable(hwpt, idev);
  pasidCompat(hwpt, idev, pasid);
  if (idev.ctx.faults.shouldFail("iommufd_attach_handle")) throw allocFailure("attach handle");
  const handle = new IommufdAttachHandle(idev, hwpt, pasid);
  if (pasid === IOMMU_NO_PASID) iommuAttachGroupHandle(hwpt.domain, idev.igroup.group, handle);
  else iommuAttachDevicePasid(hwpt.domain, idev.dev, pasid, handle);
  return handle;
}

/**
 * iommufd_hw_pagetable_attach (§4.2): `idev` joins `hwpt` on `pasid`. EBUSY if the device is
 * already attached on that PASID (whatever HWPT is asked for); EINVAL if another device of the
 * group has the PASID on a different HWPT; the RID's reserved regions go into the IOAS; the
 * first device of the group reaches the hardware. Takes a `users` reference on the HWPT.
 */
export function hwptAttach(hwpt: Hwpt, idev: IommufdDevice, pasid: number): void {
  const igroup = idev.igroup;
  let record = igroup.pasidAttach.get(pasid);
  const created = record === undefined;
  if (record === undefined) {
    if (idev.ctx.faults.shouldFail("iommufd_attach_alloc")) throw allocFailure("iommufd_attach");
    record = { hwpt, devices: new Map() };
  }
  if (record.devices.has(idev.id))
    throw new ErrnoError(EBUSY, `device ${idev.id} already attached on PASID ${pasid}`);
  if (!created && record.hwpt !== hwpt)
    throw new ErrnoError(EINVAL, `group attached to HWPT ${record.hwpt.id} on PASID ${pasid}`);
  const paging = pasid === IOMMU_NO_PASID ? findHwptPaging(hwpt) : null;
  if (paging !== null) enforceResv(idev, paging, true);
  if (created) {
    try {
      hwptAttachDevice(hwpt, idev, pasid);
    } catch (e) {
      if (paging !== null) paging.ioas.iopt.removeReserved(idev.dev);
      throw e;
    }
    igroup.pasidAttach.set(pasid, record);
  }
  refGet(hwpt);
  record.devices.set(idev.id, idev);
}

// ---- Detach (§11) ------------------------------------------------------------------------------

/**
 * iommufd_hw_pagetable_detach (§11) without the final put: `idev` leaves whatever it is
 * attached to on `pasid` and that HWPT is returned (null when nothing was attached). The last
 * device of the group takes the hardware off the domain and answers pending faults.
 */
function hwptDetach(idev: IommufdDevice, pasid: number): Hwpt | null {
  const igroup = idev.igroup;
  const record = igroup.pasidAttach.get(pasid);
  if (record === undefined) return null;
  const hwpt = record.hwpt;
  record.devices.delete(idev.id);
  if (record.devices.size === 0) {
    const group = igroup.group;
    const handle = group.pasidArray.get(pasid)?.handle ?? null;
    if (pasid === IOMMU_NO_PASID) iommuDetachGroupHandle(group);
    else iommuDetachDevicePasid(hwpt.domain, idev.dev, pasid);
    faultRespond(hwpt, handle as IommufdAttachHandle | null);
    igroup.pasidAttach.delete(pasid);
  }
  const paging = pasid === IOMMU_NO_PASID ? findHwptPaging(hwpt) : null;
  if (paging !== null) paging.ioas.iopt.removeReserved(idev.dev);
  return hwpt;
}

/**
 * Undoes an immediate attach inside a HWPT allocation that then failed (the HWPT is still
 * reserved and not auto yet, so the put is a plain reference drop).
 */
export function hwptDetachForAbort(idev: IommufdDevice, pasid: number): void {
  const hwpt = hwptDetach(idev, pasid);
  if (hwpt !== null) refPut(hwpt);
}

// ---- Replace (§5.2) ----------------------------------------------------------------------------

/**
 * iommufd_hwpt_replace_device: PRI/VF and PASID compatibility (EINVAL), a new handle
 * (ENOMEM), then the core's group or PASID replace; only after it succeeded are the old
 * handle's pending faults answered.
 */
function hwptReplaceDevice(hwpt: Hwpt, old: Hwpt, idev: IommufdDevice, pasid: number): void {
  checkFaultCapable(hwpt, idev);
  pasidCompat(hwpt, idev, pasid);
  if (idev.ctx.faults.shouldFail("iommufd_attach_handle")) throw allocFailure("attach handle");
  const group = idev.igroup.group;
  const oldHandle = (group.pasidArray.get(pasid)?.handle ?? null) as IommufdAttachHandle | null;
  const handle = new IommufdAttachHandle(idev, hwpt, pasid);
  if (pasid === IOMMU_NO_PASID) iommuReplaceGroupHandle(hwpt.domain, group, handle);
  else iommuReplaceDevicePasid(hwpt.domain, idev.dev, pasid, handle);
  faultRespond(old, oldHandle);
}

/**
 * iommufd_device_do_replace (§5.2): moves (group, pasid) from its HWPT to `hwpt` without a
 * blocking step. Nothing attached on the PASID, or this device not among the attached: EINVAL;
 * the same HWPT: no-op (returns null). Returns the old HWPT, whose last reference from this
 * group the caller puts. References: the new HWPT gains one per attached device, the old loses
 * all but one.
 */
function doReplace(idev: IommufdDevice, pasid: number, hwpt: Hwpt): Hwpt | null {
  const igroup = idev.igroup;
  const record = igroup.pasidAttach.get(pasid);
  if (record === undefined) throw new ErrnoError(EINVAL, `nothing attached on PASID ${pasid}`);
  if (!record.devices.has(idev.id))
    throw new ErrnoError(EINVAL, `device ${idev.id} is not attached on PASID ${pasid}`);
  const old = record.hwpt;
  if (old === hwpt) return null;
  const paging = pasid === IOMMU_NO_PASID ? findHwptPaging(hwpt) : null;
  if (paging !== null) groupReplaceResv(igroup, paging);
  try {
    hwptReplaceDevice(hwpt, old, idev, pasid);
  } catch (e) {
    // The kernel removes every attached device's regions from the new IOAS here, even when
    // it is also the old one's (a quirk invisible with the mock, which has no regions).
    if (paging !== null) groupRemoveResv(igroup, paging);
    throw e;
  }
  const oldPaging = findHwptPaging(old);
  if (
    oldPaging !== null &&
    pasid === IOMMU_NO_PASID &&
    (paging === null || paging.ioas !== oldPaging.ioas)
  )
    groupRemoveResv(igroup, oldPaging);
  record.hwpt = hwpt;
  const n = record.devices.size;
  hwpt.users += n;
  old.users -= n - 1;
  return old;
}

function doAttach(idev: IommufdDevice, pasid: number, hwpt: Hwpt): Hwpt | null {
  hwptAttach(hwpt, idev, pasid);
  return null;
}

type AttachOp = (idev: IommufdDevice, pasid: number, hwpt: Hwpt) => Hwpt | null;

// ---- Automatic domains (§6) ---------------------------------------------------------------------

/**
 * iommufd_device_auto_get_domain (§6): tries every auto HWPT of the IOAS in creation order
 * (EINVAL means "not this one", any other error stops); otherwise creates one (attach: the
 * device attaches before the domain joins the IOAS) and publishes it. Returns the HWPT used
 * and the HWPT to put afterwards (replace), or null.
 */
function autoGetDomain(
  idev: IommufdDevice,
  pasid: number,
  ioas: Ioas,
  op: AttachOp,
): { used: Hwpt; put: Hwpt | null } {
  const immediate = op === doAttach;
  for (const obj of [...ioas.hwptList]) {
    if (!(obj instanceof HwptPaging) || !obj.autoDomain || obj.users === 0) continue;
    try {
      return { used: obj, put: op(idev, pasid, obj) };
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === EINVAL) continue;
      throw e;
    }
  }
  const ctx = idev.ctx;
  const hwpt = hwptPagingAlloc(ctx, ioas, idev, pasid, 0, immediate, null);
  let put: Hwpt | null = null;
  if (!immediate) {
    try {
      put = op(idev, pasid, hwpt);
    } catch (e) {
      ctx.table.abort(hwpt);
      throw e;
    }
  }
  hwpt.autoDomain = true;
  ctx.table.finalize(hwpt);
  return { used: hwpt, put };
}

/**
 * iommufd_device_change_pt: `ptId` names a HWPT (attach to it) or an IOAS (automatic domain);
 * missing ENOENT, any other object EINVAL. Returns the id of the HWPT now in use.
 */
function changePt(idev: IommufdDevice, pasid: number, ptId: number, op: AttachOp): number {
  const ctx = idev.ctx;
  const obj = ctx.table.get(ptId, ObjType.ANY);
  let used: Hwpt;
  let put: Hwpt | null;
  if (obj instanceof HwptPaging || obj instanceof HwptNested) {
    used = obj;
    put = op(idev, pasid, obj);
  } else if (obj.type === ObjType.IOAS) {
    ({ used, put } = autoGetDomain(idev, pasid, obj as Ioas, op));
  } else {
    throw new ErrnoError(EINVAL, `object ${ptId} is neither a HWPT nor an IOAS`);
  }
  if (put !== null) hwptPut(put);
  return used.id;
}

// ---- The kernel API drivers use -----------------------------------------------------------

/**
 * iommufd_device_attach (§4.1): attaches the RID (pasid 0) or a PASID of `idev` to the HWPT or
 * IOAS `ptId`; returns the HWPT id used (the auto HWPT's for an IOAS). Each attachment holds a
 * `users` reference on the device. Throws ErrnoError.
 */
export function iommufdDeviceAttach(idev: IommufdDevice, pasid: number, ptId: number): number {
  const id = changePt(idev, pasid, ptId, doAttach);
  refGet(idev);
  return id;
}

/**
 * iommufd_device_replace (§5.1): moves an attached RID or PASID of `idev` to `ptId` without
 * detaching first; returns the HWPT id used. The old HWPT is put afterwards (an auto HWPT
 * nothing else uses is destroyed). Throws ErrnoError.
 */
export function iommufdDeviceReplace(idev: IommufdDevice, pasid: number, ptId: number): number {
  return changePt(idev, pasid, ptId, doReplace);
}

/**
 * iommufd_device_detach (§11): detaches the RID or a PASID; nothing attached is not an error.
 * An auto HWPT left without devices is destroyed.
 */
export function iommufdDeviceDetach(idev: IommufdDevice, pasid: number): void {
  const hwpt = hwptDetach(idev, pasid);
  if (hwpt === null) return;
  hwptPut(hwpt);
  refPut(idev);
}

/** The HWPT `idev`'s group has on `pasid` (iommufd's own record), if any. */
export function iommufdDeviceAttachedHwpt(idev: IommufdDevice, pasid: number): Hwpt | undefined {
  return idev.igroup.pasidAttach.get(pasid)?.hwpt;
}

/** Looks up a live DEVICE object (ENOENT otherwise; an injection site). */
export function getDevice(ctx: IommufdContext, id: number): IommufdDevice {
  return ctx.table.get<IommufdDevice>(id, ObjType.DEVICE);
}

// ---- IOMMU_GET_HW_INFO (§12) --------------------------------------------------------------------

const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;
const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
const IOMMU_HW_INFO_TYPE_NONE = 0;
const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0;
const IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1 << 3;
const CLEAR_CHUNK = new Uint8Array(4096);

registerIoctl(IOMMUFD_IOCTLS.GET_HW_INFO, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if ((cmd.flags & ~IOMMU_HW_INFO_FLAG_INPUT_TYPE) !== 0) return EOPNOTSUPP;
  if (cmd.__reserved.some((b) => b !== 0)) return EOPNOTSUPP;
  const type =
    (cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE) !== 0
      ? (cmd.in_data_type ?? 0)
      : IOMMU_HW_INFO_TYPE_DEFAULT;
  const idev = getDevice(ctx, cmd.dev_id);
  const dev = idev.dev;
  const ops = dev.ops;
  let outType = IOMMU_HW_INFO_TYPE_NONE;
  let data: Uint8Array = new Uint8Array(0);
  if (ops?.hwInfo !== undefined) {
    const info = ops.hwInfo(dev, type, ctx.faults);
    if (info.type === IOMMU_HW_INFO_TYPE_NONE) return EOPNOTSUPP;
    outType = info.type;
    data = info.data;
  }
  const copyLen = Math.min(cmd.data_len, data.length);
  if (copyLen > 0 && ucmd.writeUser(cmd.data_uptr, data.subarray(0, copyLen)) !== 0) return EFAULT;
  // Zero the rest of a larger user buffer (clear_user).
  for (let at = copyLen; at < cmd.data_len; at += CLEAR_CHUNK.length) {
    const n = Math.min(CLEAR_CHUNK.length, cmd.data_len - at);
    if (ucmd.writeUser(cmd.data_uptr + BigInt(at), CLEAR_CHUNK.subarray(0, n)) !== 0) return EFAULT;
  }
  cmd.data_len = data.length;
  cmd.in_data_type = outType;
  cmd.out_data_type = outType;
  let caps = 0;
  if (ops?.capable(dev, IommuCap.DIRTY_TRACKING)) caps |= IOMMU_HW_CAP_DIRTY_TRACKING;
  if (!ops?.capable(dev, IommuCap.PCI_ATS_SUPPORTED)) caps |= IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED;
  let log2 = 0;
  if (dev.maxPasids !== 0) {
    log2 = 31 - Math.clz32(dev.maxPasids);
    if (dev.pciPasidFeatures !== undefined) caps |= dev.pciPasidFeatures;
  }
  cmd.out_capabilities = BigInt(caps);
  cmd.out_max_pasid_log2 = log2;
  return ucmd.respond();
});

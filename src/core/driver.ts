/**
 * What the iommufd core needs from an IOMMU driver: the contract between src/core and the
 * hardware models (src/hw/*), like include/linux/iommu.h's iommu_ops / iommu_domain_ops /
 * iommu_dirty_ops, plus the part of the IOMMU core (drivers/iommu/iommu.c) that sits between
 * iommufd and a driver: iommu groups, DMA ownership, and group / PASID domain switching.
 *
 * The core never reaches into a model's internals; a model never calls the core. A model
 * implements `IommuOps` and the domain interfaces; the core drives them through the group
 * functions at the end of this file, which call the domains' attach_dev / set_dev_pasid ops in
 * the order iommu.c does.
 *
 * Facts: include/linux/iommu.h (struct iommu_ops, iommu_domain_ops, iommu_user_data(_array),
 * __iommu_copy_struct_from_user(_array), iommu_copy_struct_from_full_user_array, enum
 * iommu_cap, enum iommu_resv_type); drivers/iommu/iommu.c (iommu_device_claim_dma_owner,
 * __iommu_take_dma_ownership, __iommu_attach_group, __iommu_group_set_domain_internal,
 * iommu_attach_group_handle, iommu_replace_group_handle, iommu_detach_group_handle,
 * iommu_attach_device_pasid, iommu_replace_device_pasid, iommu_detach_device_pasid,
 * __iommu_set_group_pasid); spec hwpt-device.md §4.2, §5.2, §8, §9.1, §10.
 */
import { EBUSY, EFAULT, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, EPERM, ErrnoError } from "../errno.ts";
import { copyStructFromUser } from "../uapi/dispatch.ts";
import type { UserMemory } from "../uapi/user_memory.ts";
import type { FailNth } from "./fail_nth.ts";

/** iommu prot flags passed to map (include/linux/iommu.h). */
export {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../pt/format.ts";

/** Where an allocation may fail (a failslab / fail_nth site); the context's FailNth. */
export type FaultInjector = Pick<FailNth, "shouldFail">;

/** An injector that never fails, for callers outside any iommufd context. */
export const NO_FAULT_INJECTION: FaultInjector = { shouldFail: () => false };

// ---- Paging domains (the part io_pagetable uses) ------------------------------------------------

/** Called for each dirty range found: IOVA of its first byte and its length in bytes. */
export type DirtyRecord = (iova: bigint, length: bigint) => void;

/** A paging domain: a page table the core fills with the IOAS's areas. */
export interface IommuPagingDomain {
  readonly kind: "paging";
  /** Page sizes the domain can map (bit n set = 2^n bytes), as the kernel's pgsize_bitmap. */
  readonly pgsizeBitmap: bigint;
  /** IOVAs outside [apertureStart, apertureLast] cannot be mapped (the core reserves them). */
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  /** The domain was allocated with dirty-tracking ops (IOMMU_HWPT_ALLOC_DIRTY_TRACKING). */
  readonly hasDirtyOps: boolean;
  /** It enforces cache coherency (no-snoop blocked): IOMMU_CAP_ENFORCE_CACHE_COHERENCY. */
  readonly enforceCacheCoherency: boolean;

  /** Maps [iova, iova + length) to physical [pa, pa + length). Throws ErrnoError (ENOMEM...). */
  map(iova: bigint, pa: number, length: bigint, prot: number): void;
  /** Unmaps what is mapped in the range and returns the bytes unmapped. Never fails. */
  unmap(iova: bigint, length: bigint): bigint;
  /** The physical address `iova` maps to, or undefined. */
  iovaToPhys(iova: bigint): number | undefined;
  /** Turns hardware dirty tracking on or off. Throws ErrnoError. */
  setDirtyTracking(enable: boolean): void;
  /** Reports dirty ranges in [iova, iova + length) and clears them unless `noClear`. */
  readAndClearDirty(iova: bigint, length: bigint, noClear: boolean, record: DirtyRecord): void;
  /** Frees the page table. */
  free(): void;
}

// ---- Capabilities, hardware info, reserved regions ---------------------------------------------

/** enum iommu_cap (include/linux/iommu.h); only identity matters, the values are ours. */
export const IommuCap = {
  CACHE_COHERENCY: 0,
  NOEXEC: 1,
  PRE_BOOT_PROTECTION: 2,
  ENFORCE_CACHE_COHERENCY: 3,
  DEFERRED_FLUSH: 4,
  DIRTY_TRACKING: 5,
  PCI_ATS_SUPPORTED: 6,
} as const;
export type IommuCapValue = (typeof IommuCap)[keyof typeof IommuCap];

/** What a driver's hw_info op returns: the info blob and the type it really is. */
export interface IommuHwInfo {
  /** enum iommu_hw_info_type of `data`; never IOMMU_HW_INFO_TYPE_NONE (0) from a driver. */
  readonly type: number;
  readonly data: Uint8Array;
}

/** enum iommu_resv_type (include/linux/iommu.h). */
export const IOMMU_RESV = {
  DIRECT: 0,
  DIRECT_RELAXABLE: 1,
  RESERVED: 2,
  MSI: 3,
  SW_MSI: 4,
} as const;

/** One reserved region of a device (struct iommu_resv_region). */
export interface IommuResvRegion {
  readonly start: bigint;
  readonly length: bigint;
  readonly type: (typeof IOMMU_RESV)[keyof typeof IOMMU_RESV];
}

// ---- Driver data from user space (struct iommu_user_data / iommu_user_data_array) -------------

/** A driver-specific struct in user memory (HWPT_ALLOC data, VIOMMU_ALLOC data). */
export interface IommuUserData {
  readonly type: number;
  readonly uptr: bigint;
  readonly len: number;
  readonly user: UserMemory;
}

/** An array of driver-specific entries in user memory (cache invalidation requests). */
export interface IommuUserDataArray {
  readonly type: number;
  readonly uptr: bigint;
  readonly entryLen: number;
  /** In: entries given. Out: the driver sets it to the number of entries it handled. */
  entryNum: number;
}

/**
 * __iommu_copy_struct_from_user(): copies `data` into `dst` (whose length is the kernel struct
 * size). The type must match (EINVAL); `data.len` must be at least `minLen` (the end of the
 * struct's first version) and at most dst's size (EINVAL: unlike copy_struct_from_user alone,
 * a longer user struct is never accepted here); a short one is zero-extended; a fault is EFAULT.
 * Returns 0 or the errno.
 */
export function iommuCopyStructFromUser(
  dst: Uint8Array,
  data: IommuUserData,
  type: number,
  minLen: number,
): number {
  if (data.type !== type) return EINVAL;
  if (data.len < minLen || data.len > dst.byteLength) return EINVAL;
  return copyStructFromUser(data.user, dst, data.uptr, data.len);
}

/**
 * __iommu_copy_struct_from_user_array(): entry `index` of `array` with the rules of
 * iommuCopyStructFromUser (entry length for len). An empty array is EINVAL.
 */
export function iommuCopyStructFromUserArray(
  dst: Uint8Array,
  array: IommuUserDataArray,
  user: UserMemory,
  type: number,
  index: number,
  minLen: number,
): number {
  if (index >= array.entryNum || array.entryNum === 0) return EINVAL;
  return iommuCopyStructFromUser(
    dst,
    {
      type: array.type,
      uptr: array.uptr + BigInt(array.entryLen) * BigInt(index),
      len: array.entryLen,
      user,
    },
    type,
    minLen,
  );
}

/**
 * iommu_copy_struct_from_full_user_array(): every entry into `dst` (entrySize bytes each).
 * Type mismatch or an empty array: EINVAL. Entries of exactly entrySize are copied in one go
 * (EFAULT); otherwise each goes through copy_struct_from_user (zero-extended when short,
 * E2BIG when a longer entry has non-zero bytes past entrySize, EFAULT).
 */
export function iommuCopyStructFromFullUserArray(
  dst: Uint8Array,
  entrySize: number,
  array: IommuUserDataArray,
  user: UserMemory,
  type: number,
): number {
  if (array.type !== type) return EINVAL;
  if (array.entryNum === 0) return EINVAL;
  if (array.entryLen === entrySize) {
    const all = dst.subarray(0, entrySize * array.entryNum);
    return user.read(array.uptr, all) === 0 ? 0 : EFAULT;
  }
  for (let i = 0; i < array.entryNum; i++) {
    const rc = copyStructFromUser(
      user,
      dst.subarray(i * entrySize, (i + 1) * entrySize),
      array.uptr + BigInt(array.entryLen) * BigInt(i),
      array.entryLen,
    );
    if (rc !== 0) return rc;
  }
  return 0;
}

// ---- Domains as the driver exposes them ---------------------------------------------------------

/** What every domain a driver hands out has (struct iommu_domain + iommu_domain_ops). */
export interface IommuDomainOps {
  /** iommu_domain.owner: the driver that allocated it. */
  readonly owner: IommuOps;
  /**
   * iommu_domain.iopf_handler / fault_data: set by iommufd on a HWPT allocated with a FAULT
   * (IOMMU_HWPT_FAULT_ID_VALID); null otherwise. Drivers only test it for null.
   */
  faultData: object | null;
  /**
   * attach_dev: `dev`'s requests without PASID now translate through this domain; `old` is the
   * group's previous domain. Throws ErrnoError; on failure nothing changed.
   */
  attachDev(dev: IommuDevice, old: IommuDomain | null): void;
  /**
   * set_dev_pasid: `dev`'s requests with `pasid` translate through this domain; `old` is the
   * domain it replaces (null for a first attach). Absent when the domain cannot serve a PASID.
   * Throws ErrnoError; on failure the PASID keeps `old`.
   */
  setDevPasid?(dev: IommuDevice, pasid: number, old: IommuDomain | null): void;
}

/** A paging domain as a driver hands it out: the table io_pagetable fills, plus the attach ops. */
export interface DriverPagingDomain extends IommuPagingDomain, IommuDomainOps {}

/** IOMMU_DOMAIN_NESTED: a stage-1 table owned by user space over a paging parent. */
export interface IommuNestedDomain extends IommuDomainOps {
  readonly kind: "nested";
  /**
   * cache_invalidate_user: handles `array` (whose entries the driver reads from `user`), sets
   * array.entryNum to the number handled, and returns 0 or the errno of the first failure.
   * Absent when the domain takes no invalidations.
   */
  cacheInvalidateUser?(array: IommuUserDataArray, user: UserMemory): number;
  free(): void;
}

/** IOMMU_DOMAIN_BLOCKED: translates nothing. Used to detach a group or a PASID. */
export interface IommuBlockedDomain extends IommuDomainOps {
  readonly kind: "blocked";
}

export type IommuDomain = DriverPagingDomain | IommuNestedDomain | IommuBlockedDomain;

/**
 * The vIOMMU side a nested domain allocated from a vIOMMU needs at attach time
 * (iommufd_viommu_get_vdev_id): implemented by the vIOMMU object.
 */
export interface ViommuLink {
  /** The virtual id of `dev`'s vDEVICE on this vIOMMU, or undefined if it has none here. */
  vdevIdOf(dev: IommuDevice): bigint | undefined;
}

// ---- The driver and its devices ---------------------------------------------------------------

/** struct iommu_ops: one per driver. Ops a driver lacks are absent. */
export interface IommuOps {
  readonly name: string;
  capable(dev: IommuDevice, cap: IommuCapValue): boolean;
  /**
   * hw_info: the info blob for `type` (IOMMU_HW_INFO_TYPE_DEFAULT asks for the driver's own).
   * Throws ErrnoError (EOPNOTSUPP for a type it does not serve, ENOMEM).
   */
  hwInfo?(dev: IommuDevice, type: number, faults: FaultInjector): IommuHwInfo;
  /**
   * domain_alloc_paging_flags: a paging domain for `dev` with IOMMU_HWPT_ALLOC_* `flags`
   * (never FAULT_ID_VALID) and optional driver data. Throws ErrnoError.
   */
  domainAllocPagingFlags?(
    dev: IommuDevice,
    flags: number,
    userData: IommuUserData | null,
    faults: FaultInjector,
  ): DriverPagingDomain;
  /** domain_alloc_nested: a nested domain over `parent`. Throws ErrnoError. */
  domainAllocNested?(
    dev: IommuDevice,
    parent: IommuDomain,
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ): IommuNestedDomain;
  /** get_resv_regions; absent when the driver reports none. */
  getResvRegions?(dev: IommuDevice): IommuResvRegion[];
  /** blocked_domain: always attachable, translates nothing. */
  readonly blockedDomain: IommuBlockedDomain;
  /** default_domain, when the driver forces one (the mock: its blocking domain). */
  readonly defaultDomain: IommuDomain | null;
  /** user_pasid_table: PASIDs live in a user-managed table under the RID's nested domain. */
  readonly userPasidTable: boolean;
}

/** struct iommu_device: one physical IOMMU instance (vIOMMU/vDEVICE compare these). */
export interface IommuInstance {
  readonly ops: IommuOps;
  /** iommu_device.max_pasids. */
  readonly maxPasids: number;
}

/** A device as the IOMMU core and iommufd see it (struct device + dev->iommu). */
export interface IommuDevice {
  readonly name: string;
  /** dev_iommu_ops(): null when no IOMMU driver probed the device. */
  readonly ops: IommuOps | null;
  /** dev->iommu->iommu_dev. */
  readonly iommu: IommuInstance | null;
  /** dev->iommu_group; null when the device has none. */
  readonly group: IommuGroup | null;
  /** dev->iommu->max_pasids: 0 when PASIDs are not supported at all. */
  readonly maxPasids: number;
  /**
   * A PCI device's PASID capability bits IOMMU_HW_CAP_PCI_PASID_EXEC | _PRIV (what GET_HW_INFO
   * reports); undefined for a device that is not PCI.
   */
  readonly pciPasidFeatures?: number;
  /** A PCI virtual function with PRI (iommufd refuses fault-capable HWPTs for it). */
  readonly pciPriVf: boolean;
  /** iommufd_selftest_is_mock_dev(): bind skips the MSI isolation check. */
  readonly selftestMock: boolean;
  /** The device's interrupts are isolated (irq_domain_check_msi_remap / iommu group MSI). */
  readonly msiIsolated: boolean;
}

// ---- The IOMMU core: groups, ownership, domain switching --------------------------------------

/** One entry of group->pasid_array: the domain and the attach handle of its attacher. */
export interface PasidArrayEntry {
  domain: IommuDomain;
  handle: object | null;
}

let nextGroupId = 0;

/** struct iommu_group. */
export class IommuGroup {
  readonly id: number;
  readonly devices: IommuDevice[] = [];
  /** The domain the RID of every device currently uses. */
  domain: IommuDomain;
  readonly defaultDomain: IommuDomain;
  readonly blockingDomain: IommuDomain;
  /** DMA owner (an iommufd context) and its claim count. */
  owner: object | null = null;
  ownerCnt = 0;
  /** Attach handles by PASID; IOMMU_NO_PASID (0) holds the RID's. */
  readonly pasidArray = new Map<number, PasidArrayEntry>();

  constructor(defaultDomain: IommuDomain, blockingDomain: IommuDomain) {
    this.id = nextGroupId++;
    this.defaultDomain = defaultDomain;
    this.blockingDomain = blockingDomain;
    this.domain = defaultDomain;
  }
}

/** IOMMU_NO_PASID. */
export const IOMMU_NO_PASID = 0;

function groupOf(dev: IommuDevice): IommuGroup {
  if (dev.group === null) throw new ErrnoError(ENODEV, `${dev.name} has no iommu group`);
  return dev.group;
}

/**
 * __iommu_group_set_domain_internal: switches every device of the group to `domain` (attach_dev
 * per device). If a device refuses, the devices already switched go back to the old domain
 * (which cannot fail) and the error is thrown; the group keeps its old domain.
 */
function groupSetDomain(group: IommuGroup, domain: IommuDomain): void {
  const old = group.domain;
  if (old === domain) return;
  const done: IommuDevice[] = [];
  for (const dev of group.devices) {
    try {
      domain.attachDev(dev, old);
    } catch (e) {
      for (const d of done) old.attachDev(d, domain);
      throw e;
    }
    done.push(dev);
  }
  group.domain = domain;
}

/**
 * iommu_device_claim_dma_owner: `owner` (an iommufd context) takes the group for user DMA.
 * EPERM if another owner has it; EBUSY if the group is not on its default domain or has PASIDs
 * attached; the same owner only counts up. Taking ownership moves the group to blocking.
 */
export function iommuDeviceClaimDmaOwner(dev: IommuDevice, owner: object): void {
  const group = groupOf(dev);
  if (group.ownerCnt !== 0) {
    if (group.owner !== owner) throw new ErrnoError(EPERM, "group owned by another context");
    group.ownerCnt++;
    return;
  }
  if (group.domain !== group.defaultDomain) throw new ErrnoError(EBUSY, "group domain in use");
  if (group.pasidArray.size !== 0) throw new ErrnoError(EBUSY, "group has PASIDs attached");
  groupSetDomain(group, group.blockingDomain);
  group.owner = owner;
  group.ownerCnt = 1;
}

/** iommu_device_release_dma_owner: the last release puts the group back on its default. */
export function iommuDeviceReleaseDmaOwner(dev: IommuDevice): void {
  const group = groupOf(dev);
  if (group.ownerCnt > 1) {
    group.ownerCnt--;
    return;
  }
  group.ownerCnt = 0;
  group.owner = null;
  groupSetDomain(group, group.defaultDomain);
}

function sameDriver(dev: IommuDevice, domain: IommuDomain): boolean {
  return dev.ops !== null && dev.ops === domain.owner;
}

/**
 * iommu_attach_group_handle: the group's RID moves from its core domain (default or blocking)
 * to `domain`, and `handle` is recorded at IOMMU_NO_PASID. EBUSY if a RID handle exists or the
 * group is on another user domain; EINVAL for a domain of another driver; the driver's errors.
 */
export function iommuAttachGroupHandle(
  domain: IommuDomain,
  group: IommuGroup,
  handle: object | null,
): void {
  if (group.pasidArray.has(IOMMU_NO_PASID))
    throw new ErrnoError(EBUSY, "group RID already has a handle");
  if (group.domain !== group.defaultDomain && group.domain !== group.blockingDomain)
    throw new ErrnoError(EBUSY, "group attached to another domain");
  const first = group.devices[0];
  if (first === undefined || !sameDriver(first, domain))
    throw new ErrnoError(EINVAL, "domain of another driver");
  groupSetDomain(group, domain);
  group.pasidArray.set(IOMMU_NO_PASID, { domain, handle });
}

/**
 * iommu_replace_group_handle: the group's RID moves straight to `domain` (no blocking step).
 * On a driver error the group keeps its old domain and handle.
 */
export function iommuReplaceGroupHandle(
  domain: IommuDomain,
  group: IommuGroup,
  handle: object | null,
): void {
  groupSetDomain(group, domain);
  group.pasidArray.set(IOMMU_NO_PASID, { domain, handle });
}

/** iommu_detach_group_handle: back to the core domain (blocking while owned); never fails. */
export function iommuDetachGroupHandle(group: IommuGroup): void {
  groupSetDomain(group, group.ownerCnt !== 0 ? group.blockingDomain : group.defaultDomain);
  group.pasidArray.delete(IOMMU_NO_PASID);
}

/**
 * __iommu_set_group_pasid: set_dev_pasid on every device; on failure the devices already done
 * go back to `old` (or are blocked when there was none) and the error is thrown.
 */
function groupSetPasid(
  domain: IommuDomain,
  group: IommuGroup,
  pasid: number,
  old: IommuDomain | null,
): void {
  const done: IommuDevice[] = [];
  for (const dev of group.devices) {
    try {
      domain.setDevPasid?.(dev, pasid, old);
    } catch (e) {
      for (const d of done) {
        if (old !== null) old.setDevPasid?.(d, pasid, domain);
        else removeDevPasid(d, pasid, domain);
      }
      throw e;
    }
    done.push(dev);
  }
}

/** iommu_remove_dev_pasid: the driver's blocked domain takes the PASID over. */
function removeDevPasid(dev: IommuDevice, pasid: number, domain: IommuDomain): void {
  dev.ops?.blockedDomain.setDevPasid?.(dev, pasid, domain);
}

/**
 * iommu_attach_device_pasid: checks in iommu.c order: no group ENODEV; a domain without
 * set_dev_pasid (or a driver whose blocked domain lacks it) EOPNOTSUPP; a domain of another
 * driver or pasid 0 EINVAL; a group device with max_pasids > 0 and pasid >= max_pasids EINVAL;
 * the PASID already attached EBUSY; then set_dev_pasid on every device.
 */
export function iommuAttachDevicePasid(
  domain: IommuDomain,
  dev: IommuDevice,
  pasid: number,
  handle: object | null,
): void {
  const group = groupOf(dev);
  if (domain.setDevPasid === undefined || dev.ops?.blockedDomain.setDevPasid === undefined)
    throw new ErrnoError(EOPNOTSUPP, "domain cannot be attached to a PASID");
  if (!sameDriver(dev, domain) || pasid === IOMMU_NO_PASID)
    throw new ErrnoError(EINVAL, "bad domain or PASID 0");
  for (const d of group.devices) {
    if (d.maxPasids > 0 && pasid >= d.maxPasids)
      throw new ErrnoError(EINVAL, `PASID ${pasid} beyond ${d.name}'s ${d.maxPasids}`);
  }
  if (group.pasidArray.has(pasid)) throw new ErrnoError(EBUSY, `PASID ${pasid} attached`);
  groupSetPasid(domain, group, pasid, null);
  group.pasidArray.set(pasid, { domain, handle });
}

/**
 * iommu_replace_device_pasid: EOPNOTSUPP without set_dev_pasid; EINVAL for a domain of another
 * driver, pasid 0, or a PASID with nothing attached; the same domain is a no-op (the handle is
 * still updated); a driver error leaves the old domain in place.
 */
export function iommuReplaceDevicePasid(
  domain: IommuDomain,
  dev: IommuDevice,
  pasid: number,
  handle: object | null,
): void {
  const group = groupOf(dev);
  if (domain.setDevPasid === undefined)
    throw new ErrnoError(EOPNOTSUPP, "domain cannot be attached to a PASID");
  if (!sameDriver(dev, domain) || pasid === IOMMU_NO_PASID || handle === null)
    throw new ErrnoError(EINVAL, "bad domain, PASID 0 or no handle");
  const cur = group.pasidArray.get(pasid);
  if (cur === undefined) throw new ErrnoError(EINVAL, `PASID ${pasid} not attached`);
  if (cur.domain !== domain) groupSetPasid(domain, group, pasid, cur.domain);
  group.pasidArray.set(pasid, { domain, handle });
}

/** iommu_detach_device_pasid: every device of the group blocks the PASID; never fails. */
export function iommuDetachDevicePasid(domain: IommuDomain, dev: IommuDevice, pasid: number): void {
  const group = groupOf(dev);
  for (const d of group.devices) removeDevPasid(d, pasid, domain);
  group.pasidArray.delete(pasid);
}

/** The domain attached to `pasid` of the group (IOMMU_NO_PASID: the RID's user domain), if any. */
export function iommuGetDomainForGroupPasid(
  group: IommuGroup,
  pasid: number,
): IommuDomain | undefined {
  return group.pasidArray.get(pasid)?.domain;
}

/** The attach handle recorded for `pasid` of the group (what iommu_attach_handle_get finds). */
export function iommuAttachHandleGet(group: IommuGroup, pasid: number): object | null | undefined {
  return group.pasidArray.get(pasid)?.handle;
}

/** ENOMEM as an allocation site reports it. */
export function allocFailure(what: string): ErrnoError {
  return new ErrnoError(ENOMEM, `${what}: allocation failed`);
}

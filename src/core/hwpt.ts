/**
 * HW page tables (drivers/iommu/iommufd/hw_pagetable.c): the HWPT_PAGING object (a paging
 * domain filled with an IOAS's mappings), the HWPT_NESTED object (a user-owned stage 1 over a
 * nest-parent HWPT_PAGING or over a vIOMMU), and their ioctls IOMMU_HWPT_ALLOC,
 * IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_GET_DIRTY_BITMAP and IOMMU_HWPT_INVALIDATE.
 *
 * Spec hwpt-device.md §1 (object model), §1.3 (destroy / abort), §3 (paging allocation), §9
 * (HWPT_ALLOC), §13-§15; the dirty bitmap follows drivers/iommu/iommufd/iova_bitmap.c as §14.2
 * describes it. Device attach / detach live in device.ts.
 */
import { EFAULT, EINVAL, ENODEV, ENOMEM, EOPNOTSUPP, EOVERFLOW, ErrnoError } from "../errno.ts";
import { IOMMUFD_IOCTLS } from "../uapi/structs.ts";
import type { IommufdContext } from "./context.ts";
import { registerIoctl } from "./context.ts";
import { hwptAttach, hwptDetachForAbort, type IommufdDevice } from "./device.ts";
import {
  allocFailure,
  type DriverPagingDomain,
  type FaultInjector,
  IommuCap,
  type IommuDomain,
  type IommuNestedDomain,
  type IommuUserData,
  type IommuUserDataArray,
} from "./driver.ts";
import type { Ioas } from "./ioas.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";
import { PAGE_SIZE } from "./user_mm.ts";

/** enum iommufd_hwpt_alloc_flags. */
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
export const IOMMU_HWPT_ALLOC_PASID = 1 << 3;
const HWPT_ALLOC_VALID_FLAGS =
  IOMMU_HWPT_ALLOC_NEST_PARENT |
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING |
  IOMMU_HWPT_FAULT_ID_VALID |
  IOMMU_HWPT_ALLOC_PASID;
const IOMMU_HWPT_DATA_NONE = 0;
const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;
const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;
/** HWPT_INVALIDATE bounds (commit 4d709860): entry_len <= PAGE_SIZE, entry_num <= 2^19. */
const INVALIDATE_MAX_ENTRIES = 2 ** 19;

// ---- Objects ------------------------------------------------------------------------------------

/** struct iommufd_hw_pagetable: what both HWPT kinds share. */
export abstract class Hwpt extends IommufdObject {
  abstract override readonly type: typeof ObjType.HWPT_PAGING | typeof ObjType.HWPT_NESTED;
  readonly ctx: IommufdContext;
  /** The FAULT object IOPFs of this HWPT go to (IOMMU_HWPT_FAULT_ID_VALID), or null. */
  fault: IommufdObject | null = null;
  /** Allocated with IOMMU_HWPT_ALLOC_PASID: may serve PASIDs, and a RID next to them. */
  readonly pasidCompat: boolean;

  constructor(ctx: IommufdContext, pasidCompat: boolean) {
    super();
    this.ctx = ctx;
    this.pasidCompat = pasidCompat;
  }

  /** The driver domain; only absent while an allocation is being built or undone. */
  abstract get domain(): IommuDomain;

  /** Releases the domain and the FAULT reference (__iommufd_hwpt_destroy). */
  protected releaseCommon(domain: { free(): void } | null): void {
    domain?.free();
    if (this.fault !== null) refPut(this.fault);
    this.fault = null;
  }
}

/** IOMMUFD_OBJ_HWPT_PAGING. */
export class HwptPaging extends Hwpt {
  readonly type = ObjType.HWPT_PAGING;
  readonly ioas: Ioas;
  /** Created by an attach to an IOAS: reused by later attaches, destroyed with its last one. */
  autoDomain = false;
  readonly nestParent: boolean;
  enforceCacheCoherency = false;
  /** On ioas.hwptList with its domain added to the io_pagetable. */
  onIoas = false;
  private pagingDomain: DriverPagingDomain | null = null;

  constructor(ctx: IommufdContext, ioas: Ioas, flags: number) {
    super(ctx, (flags & IOMMU_HWPT_ALLOC_PASID) !== 0);
    this.ioas = ioas;
    this.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
  }

  get domain(): DriverPagingDomain {
    if (this.pagingDomain === null) throw new Error(`HWPT ${this.id} has no domain`);
    return this.pagingDomain;
  }

  /** Installs the driver's domain (during allocation only). */
  setDomain(domain: DriverPagingDomain): void {
    this.pagingDomain = domain;
  }

  /**
   * iommufd_hwpt_paging_destroy (also the abort): off the IOAS (domain removed from the
   * io_pagetable), domain freed, FAULT and IOAS references dropped.
   */
  destroy(): void {
    if (this.onIoas) {
      const list = this.ioas.hwptList;
      const i = list.indexOf(this);
      if (i >= 0) list.splice(i, 1);
      this.ioas.iopt.removeDomain(this.domain);
      this.onIoas = false;
    }
    this.releaseCommon(this.pagingDomain);
    this.pagingDomain = null;
    refPut(this.ioas);
  }
}

/** IOMMUFD_OBJ_HWPT_NESTED. */
export class HwptNested extends Hwpt {
  readonly type = ObjType.HWPT_NESTED;
  /** The nest parent: the HWPT_PAGING it sits on (the vIOMMU's when made from one). */
  readonly parent: HwptPaging;
  /** The vIOMMU it was allocated on, or null when allocated on a parent HWPT directly. */
  readonly viommu: IommufdObject | null;
  private nestedDomain: IommuNestedDomain | null = null;

  constructor(
    ctx: IommufdContext,
    parent: HwptPaging,
    viommu: IommufdObject | null,
    pasidCompat: boolean,
  ) {
    super(ctx, pasidCompat);
    this.parent = parent;
    this.viommu = viommu;
  }

  get domain(): IommuNestedDomain {
    if (this.nestedDomain === null) throw new Error(`HWPT ${this.id} has no domain`);
    return this.nestedDomain;
  }

  setDomain(domain: IommuNestedDomain): void {
    this.nestedDomain = domain;
  }

  /** iommufd_hwpt_nested_destroy: domain freed, FAULT and vIOMMU (else parent) refs dropped. */
  destroy(): void {
    this.releaseCommon(this.nestedDomain);
    this.nestedDomain = null;
    refPut(this.viommu ?? this.parent);
  }
}

/** iommufd_get_hwpt_paging-style helper: the paging part of a HWPT (itself or its parent). */
export function findHwptPaging(hwpt: Hwpt): HwptPaging | null {
  if (hwpt instanceof HwptPaging) return hwpt;
  if (hwpt instanceof HwptNested) return hwpt.parent;
  return null;
}

/**
 * iommufd_hw_pagetable_put: drops one attachment reference. An auto HWPT left with only the
 * table's reference is destroyed at once ("put and try destroy").
 */
export function hwptPut(hwpt: Hwpt): void {
  refPut(hwpt);
  if (hwpt instanceof HwptPaging && hwpt.autoDomain && hwpt.users === 1)
    hwpt.ctx.table.remove(hwpt);
}

// ---- Allocation -------------------------------------------------------------------------------

/**
 * iommufd_hwpt_paging_alloc (§3): a HWPT_PAGING on `ioas` for `idev`, reserved but not
 * finalized (the caller finalizes, or aborts with ctx.table.abort). Checks in kernel order:
 * no IOMMU ops ENODEV; flags or data with no domain_alloc_paging_flags EOPNOTSUPP; unknown
 * flags EOPNOTSUPP; DIRTY_TRACKING on a device without the capability EOPNOTSUPP;
 * FAULT_ID_VALID with NEST_PARENT EOPNOTSUPP; the id (ENOMEM); the driver's domain; the
 * immediate attach when asked (before the domain joins the IOAS); iopt_table_add_domain
 * (EINVAL, EADDRINUSE, EFAULT, ...). Every failure leaves nothing behind. Throws ErrnoError.
 */
export function hwptPagingAlloc(
  ctx: IommufdContext,
  ioas: Ioas,
  idev: IommufdDevice,
  pasid: number,
  flags: number,
  immediateAttach: boolean,
  userData: IommuUserData | null,
): HwptPaging {
  const dev = idev.dev;
  const ops = dev.ops;
  if (ops === null) throw new ErrnoError(ENODEV, `${dev.name} has no IOMMU`);
  if ((flags !== 0 || userData !== null) && ops.domainAllocPagingFlags === undefined)
    throw new ErrnoError(EOPNOTSUPP, "driver cannot allocate with flags or data");
  if ((flags & ~HWPT_ALLOC_VALID_FLAGS) !== 0)
    throw new ErrnoError(EOPNOTSUPP, `HWPT flags 0x${flags.toString(16)}`);
  if ((flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0 && !ops.capable(dev, IommuCap.DIRTY_TRACKING))
    throw new ErrnoError(EOPNOTSUPP, `${dev.name} cannot track dirty pages`);
  if ((flags & IOMMU_HWPT_FAULT_ID_VALID) !== 0 && (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0)
    throw new ErrnoError(EOPNOTSUPP, "a nest parent cannot take faults");

  const hwpt = ctx.table.reserve(new HwptPaging(ctx, ioas, flags));
  refGet(ioas);
  let attached = false;
  try {
    if (ops.domainAllocPagingFlags === undefined)
      throw new ErrnoError(EOPNOTSUPP, "driver has no paging domains");
    const domain = ops.domainAllocPagingFlags(
      dev,
      flags & ~IOMMU_HWPT_FAULT_ID_VALID,
      userData,
      ctx.faults,
    );
    hwpt.setDomain(domain);
    if (idev.enforceCacheCoherency) {
      if (!domain.enforceCacheCoherency)
        throw new ErrnoError(EINVAL, "domain cannot enforce cache coherency");
      hwpt.enforceCacheCoherency = true;
    }
    if (immediateAttach) {
      hwptAttach(hwpt, idev, pasid);
      attached = true;
    }
    ioas.iopt.addDomain(domain);
    ioas.hwptList.push(hwpt);
    hwpt.onIoas = true;
  } catch (e) {
    if (attached) hwptDetachForAbort(idev, pasid);
    ctx.table.abort(hwpt);
    throw e;
  }
  return hwpt;
}

/**
 * iommufd_hwpt_nested_alloc (§9.3): a HWPT_NESTED on the nest parent `parent`, reserved but
 * not finalized. Flags other than FAULT_ID_VALID | PASID, no data, or a driver without nested
 * domains: EOPNOTSUPP; a parent that is auto, not a nest parent, or another driver's: EINVAL;
 * then the id and the driver's nested domain. Throws ErrnoError.
 */
export function hwptNestedAlloc(
  ctx: IommufdContext,
  parent: HwptPaging,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData,
): HwptNested {
  const dev = idev.dev;
  const ops = dev.ops;
  if (
    (flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID)) !== 0 ||
    userData.len === 0 ||
    ops === null ||
    ops.domainAllocNested === undefined
  )
    throw new ErrnoError(EOPNOTSUPP, "nested allocation not supported with these arguments");
  if (parent.autoDomain || !parent.nestParent || parent.domain.owner !== ops)
    throw new ErrnoError(EINVAL, `HWPT ${parent.id} is not a nest parent`);

  const hwpt = ctx.table.reserve(
    new HwptNested(ctx, parent, null, (flags & IOMMU_HWPT_ALLOC_PASID) !== 0),
  );
  refGet(parent);
  try {
    const domain = ops.domainAllocNested(
      dev,
      parent.domain,
      flags & ~IOMMU_HWPT_FAULT_ID_VALID,
      userData,
      ctx.faults,
    );
    if (domain.kind !== "nested") {
      domain.free();
      throw new ErrnoError(EOPNOTSUPP, "driver returned a non-nested domain");
    }
    hwpt.setDomain(domain);
  } catch (e) {
    ctx.table.abort(hwpt);
    throw e;
  }
  return hwpt;
}

// ---- vIOMMU-backed nested HWPTs ----------------------------------------------------------------

/**
 * What hwpt.ts needs of a VIOMMU object (the vIOMMU slice's class provides it): the nest
 * parent it holds, the IOMMU instance it sits on, and its driver ops.
 */
export interface ViommuForHwpt extends IommufdObject {
  /** The nest-parent HWPT_PAGING the vIOMMU holds a reference on. */
  readonly hwpt: HwptPaging;
  /** The physical IOMMU instance (iommu_device) behind it. */
  readonly iommuDev: object | null;
  /**
   * viommu->ops->alloc_domain_nested (the mock: MockIommu.viommuAllocDomainNested with this
   * vIOMMU as the ViommuLink); absent when the driver has none. Throws ErrnoError.
   */
  allocDomainNested?(
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ): IommuNestedDomain;
  /**
   * viommu->ops->cache_invalidate: handles `array` (sets array.entryNum to the entries done)
   * and returns 0 or an errno. Absent when the driver has none.
   */
  cacheInvalidate?(array: IommuUserDataArray, user: IommuUserData["user"]): number;
}

/**
 * iommufd_viommu_alloc_hwpt_nested (§9.4): a HWPT_NESTED on a vIOMMU, reserved but not
 * finalized. The device behind another IOMMU instance: EINVAL; flags other than
 * FAULT_ID_VALID | PASID, no data, or no alloc_domain_nested: EOPNOTSUPP; then the id (the
 * HWPT holds the vIOMMU, whose parent becomes its parent) and the driver's domain.
 */
export function viommuAllocHwptNested(
  ctx: IommufdContext,
  viommu: ViommuForHwpt,
  idev: IommufdDevice,
  flags: number,
  userData: IommuUserData,
): HwptNested {
  if (idev.dev.iommu !== viommu.iommuDev)
    throw new ErrnoError(EINVAL, "device is behind another IOMMU instance");
  if ((flags & ~(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID)) !== 0)
    throw new ErrnoError(EOPNOTSUPP, `nested HWPT flags 0x${flags.toString(16)}`);
  if (userData.len === 0) throw new ErrnoError(EOPNOTSUPP, "nested HWPT needs data");
  if (viommu.allocDomainNested === undefined)
    throw new ErrnoError(EOPNOTSUPP, "vIOMMU cannot allocate nested domains");

  const hwpt = ctx.table.reserve(
    new HwptNested(ctx, viommu.hwpt, viommu, (flags & IOMMU_HWPT_ALLOC_PASID) !== 0),
  );
  refGet(viommu);
  try {
    const domain = viommu.allocDomainNested(
      flags & ~IOMMU_HWPT_FAULT_ID_VALID,
      userData,
      ctx.faults,
    );
    if (domain.kind !== "nested") {
      domain.free();
      throw new ErrnoError(EOPNOTSUPP, "driver returned a non-nested domain");
    }
    hwpt.setDomain(domain);
  } catch (e) {
    ctx.table.abort(hwpt);
    throw e;
  }
  return hwpt;
}

// ---- IOMMU_HWPT_ALLOC -------------------------------------------------------------------------

/** Looks `id` up as type ANY and maps every failure to `errno` (HWPT_ALLOC's pt_id rule). */
function lookupAnyAs(ctx: IommufdContext, id: number, errno: number): IommufdObject {
  try {
    return ctx.table.get(id, ObjType.ANY);
  } catch (e) {
    if (e instanceof ErrnoError) throw new ErrnoError(errno, e.message);
    throw e;
  }
}

registerIoctl(IOMMUFD_IOCTLS.HWPT_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if (cmd.__reserved !== 0) return EOPNOTSUPP;
  if (
    (cmd.data_type === IOMMU_HWPT_DATA_NONE && cmd.data_len !== 0) ||
    (cmd.data_type !== IOMMU_HWPT_DATA_NONE && cmd.data_len === 0)
  )
    return EINVAL;
  const idev = ctx.table.get<IommufdDevice>(cmd.dev_id, ObjType.DEVICE);
  const ptObj = lookupAnyAs(ctx, cmd.pt_id, EINVAL);
  const userData: IommuUserData = {
    type: cmd.data_type,
    uptr: cmd.data_uptr,
    len: cmd.data_len,
    user: ucmd.user,
  };

  let hwpt: Hwpt;
  if (ptObj.type === ObjType.IOAS) {
    hwpt = hwptPagingAlloc(
      ctx,
      ptObj as Ioas,
      idev,
      0,
      cmd.flags,
      false,
      cmd.data_len !== 0 ? userData : null,
    );
  } else if (ptObj instanceof HwptPaging) {
    hwpt = hwptNestedAlloc(ctx, ptObj, idev, cmd.flags, userData);
  } else if (ptObj.type === ObjType.VIOMMU) {
    hwpt = viommuAllocHwptNested(ctx, ptObj as ViommuForHwpt, idev, cmd.flags, userData);
  } else {
    return EINVAL;
  }

  try {
    if ((cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) !== 0) {
      const fault = ctx.table.get(cmd.fault_id, ObjType.FAULT);
      hwpt.fault = fault;
      refGet(fault);
      hwpt.domain.faultData = hwpt;
    }
    cmd.out_hwpt_id = hwpt.id;
    if (ucmd.respond() !== 0) throw new ErrnoError(EFAULT, "HWPT_ALLOC write-back");
  } catch (e) {
    ctx.table.abort(hwpt);
    throw e;
  }
  ctx.table.finalize(hwpt);
  return 0;
});

// ---- IOMMU_HWPT_SET_DIRTY_TRACKING ------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.HWPT_SET_DIRTY_TRACKING, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if ((cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0) return EOPNOTSUPP;
  const hwpt = call.ctx.table.get<HwptPaging>(cmd.hwpt_id, ObjType.HWPT_PAGING);
  const enable = (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0;
  hwpt.ioas.iopt.setDirtyTracking(hwpt.domain, enable);
  return 0;
});

// ---- IOMMU_HWPT_GET_DIRTY_BITMAP --------------------------------------------------------------

const U64_MAX = (1n << 64n) - 1n;
/** iova_bitmap pins at most this many pages of the user bitmap per window. */
const BITMAP_WINDOW_PAGES = 512;

function ctz64(v: bigint): number {
  let n = 0;
  while (((v >> BigInt(n)) & 1n) === 0n) n++;
  return n;
}

/**
 * iommufd_check_iova_range: EOVERFLOW when iova + length - 1 wraps (length 0 does unless iova
 * is 0); EINVAL when iova or last + 1 is not a multiple of the IOAS alignment, for page_size 0,
 * or when iova or last + 1 has bits below page_size (a mask test). Returns `last`.
 */
function checkDirtyRange(iova: bigint, length: bigint, pageSize: bigint, align: bigint): bigint {
  const last = iova + ((length - 1n) & U64_MAX);
  if (last > U64_MAX) throw new ErrnoError(EOVERFLOW, "dirty range wraps");
  const end = (last + 1n) & U64_MAX;
  if (iova % align !== 0n || end % align !== 0n)
    throw new ErrnoError(EINVAL, "dirty range not aligned to the IOAS");
  if (pageSize === 0n) throw new ErrnoError(EINVAL, "page_size 0");
  const mask = (pageSize - 1n) & U64_MAX;
  if ((iova & mask) !== 0n || (end & mask) !== 0n)
    throw new ErrnoError(EINVAL, "dirty range not aligned to page_size");
  return last;
}

registerIoctl(IOMMUFD_IOCTLS.HWPT_GET_DIRTY_BITMAP, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if ((cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0 || cmd.__reserved !== 0)
    return EOPNOTSUPP;
  const hwpt = ctx.table.get<HwptPaging>(cmd.hwpt_id, ObjType.HWPT_PAGING);
  const iopt = hwpt.ioas.iopt;
  const last = checkDirtyRange(cmd.iova, cmd.length, cmd.page_size, BigInt(iopt.iovaAlignment));
  const domain = hwpt.domain;
  if (!domain.hasDirtyOps) return EOPNOTSUPP;

  // iova_bitmap: bit k covers [iova + (k << shift), ...), stored LSB-first in bytes from
  // `data`. The user buffer is pinned one window at a time (up to 512 pages, fewer when
  // pin_user_pages_fast stops at an unmapped page) as the walk advances. Pinning nothing for
  // the first window is ENOMEM; for a later one it just ends the walk (the kernel discards that
  // error). The walk also stops at the first hole in the areas, so no window past that is
  // ever pinned.
  const shift = BigInt(ctz64(cmd.page_size));
  const bitmapBytes = ((last - cmd.iova) >> shift) / 8n + 1n;
  if (ctx.faults.shouldFail("iova_bitmap_alloc")) throw allocFailure("iova_bitmap");
  const { pieces } = iopt.contigAreas(cmd.iova, last);
  const reach = pieces.length === 0 ? cmd.iova : pieces[pieces.length - 1].last;
  const reachByte = ((reach - cmd.iova) >> shift) / 8n;
  const page = BigInt(PAGE_SIZE);
  let pinnedBytes = 0n;
  while (pinnedBytes < bitmapBytes && (pinnedBytes === 0n || pinnedBytes <= reachByte)) {
    const addr = cmd.data + pinnedBytes;
    const offset = addr % page;
    const want = (bitmapBytes - pinnedBytes + page - 1n) / page + (offset !== 0n ? 1n : 0n);
    const npages = want < BigInt(BITMAP_WINDOW_PAGES) ? Number(want) : BITMAP_WINDOW_PAGES;
    let pinned = 0;
    while (pinned < npages) {
      const va = addr - offset + BigInt(pinned) * page;
      if (typeof call.caller.pages(va, 1, true) === "number") break;
      pinned++;
    }
    if (pinned === 0) {
      if (pinnedBytes === 0n) return ENOMEM;
      break;
    }
    const bytes = BigInt(pinned) * page - offset;
    const left = bitmapBytes - pinnedBytes;
    pinnedBytes += bytes < left ? bytes : left;
  }
  const pinnedLast = cmd.iova + ((pinnedBytes * 8n) << shift) - 1n;
  const walkLast = pinnedLast < last ? pinnedLast : last;
  const data = cmd.data;
  const base = cmd.iova;
  const byte = new Uint8Array(1);
  const ones = new Uint8Array(4096).fill(0xff);
  // ORs `mask` into bitmap byte `index` (the kernel only ever sets bits, never clears).
  const orByte = (index: bigint, mask: number): void => {
    ucmd.user.read(data + index, byte);
    byte[0] |= mask;
    ucmd.user.write(data + index, byte);
  };
  // Sets bits [first, lastBit]: partial bytes at the ends, whole bytes in between.
  const setBits = (first: bigint, lastBit: bigint): void => {
    const firstByte = first >> 3n;
    const lastByte = lastBit >> 3n;
    const lo = Number(first & 7n);
    const hi = Number(lastBit & 7n);
    if (firstByte === lastByte) {
      orByte(firstByte, ((1 << (hi - lo + 1)) - 1) << lo);
      return;
    }
    orByte(firstByte, (0xff << lo) & 0xff);
    for (let at = firstByte + 1n; at < lastByte; ) {
      const n = lastByte - at < 4096n ? Number(lastByte - at) : 4096;
      ucmd.user.write(data + at, ones.subarray(0, n));
      at += BigInt(n);
    }
    orByte(lastByte, (1 << (hi + 1)) - 1);
  };
  const noClear = (cmd.flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0;
  iopt.readAndClearDirtyData(domain, base, walkLast, noClear, (iova, length) => {
    // A dirty leaf may start before or end after the walked range: only its part inside counts.
    const s = iova < base ? base : iova;
    const e0 = iova + length - 1n;
    const e = e0 > walkLast ? walkLast : e0;
    if (s > e) return;
    setBits((s - base) >> shift, (e - base) >> shift);
  });
  return 0;
});

// ---- IOMMU_HWPT_INVALIDATE ----------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.HWPT_INVALIDATE, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  let done = 0;
  let rc = 0;
  try {
    if (cmd.__reserved !== 0) {
      rc = EOPNOTSUPP;
    } else if (
      cmd.entry_num !== 0 &&
      (cmd.data_uptr === 0n ||
        cmd.entry_len === 0 ||
        cmd.entry_len > PAGE_SIZE ||
        cmd.entry_num > INVALIDATE_MAX_ENTRIES)
    ) {
      rc = EINVAL;
    } else {
      const obj = ctx.table.get(cmd.hwpt_id, ObjType.ANY);
      const array: IommuUserDataArray = {
        type: cmd.data_type,
        uptr: cmd.data_uptr,
        entryLen: cmd.entry_len,
        entryNum: cmd.entry_num,
      };
      if (obj instanceof HwptNested) {
        const domain = obj.domain;
        if (domain.cacheInvalidateUser === undefined) {
          rc = EOPNOTSUPP;
        } else {
          rc = domain.cacheInvalidateUser(array, ucmd.user);
          done = array.entryNum;
        }
      } else if (obj.type === ObjType.VIOMMU) {
        const viommu = obj as ViommuForHwpt;
        if (viommu.cacheInvalidate === undefined) {
          rc = EOPNOTSUPP;
        } else {
          rc = viommu.cacheInvalidate(array, ucmd.user);
          done = array.entryNum;
        }
      } else {
        rc = EINVAL;
      }
    }
  } catch (e) {
    if (!(e instanceof ErrnoError)) throw e;
    rc = e.errno;
  }
  cmd.entry_num = done;
  if (ucmd.respond() !== 0) return EFAULT;
  return rc;
});

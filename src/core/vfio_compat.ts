/**
 * IOMMU_VFIO_IOAS and the VFIO type1 container compatibility layer
 * (drivers/iommu/iommufd/vfio_compat.c; spec core-objects-vfio.md §7, §8, §11).
 *
 * An iommufd fd also answers the VFIO container ioctls (type ';', nr 100 and up, below the
 * iommufd range): the dispatcher hands every number outside the iommufd table to the
 * fallthrough registered here. They all act on one IOAS per context, the *compat IOAS*, which
 * `ctx.vfioIoas` names weakly (no reference): IOMMU_VFIO_IOAS SET points it at an IOAS, and
 * the kernel's VFIO group attach can create one (`vfioCompatIoasCreate`). Destroying that IOAS
 * clears the pointer; here that is noticed at the next look-up (the object is no longer the
 * live one at its id), which a single-threaded caller cannot tell from the kernel's eager
 * clearing in iommufd_object_remove().
 *
 * TYPE1 versus TYPE1v2: VFIO_SET_IOMMU(TYPE1) disables large pages on the compat IOAS, after
 * which an unmap first cuts the areas at the range's edges, so any page-aligned sub-range can be
 * unmapped; with TYPE1v2 an unmap that cuts into a mapping fails with ENOENT.
 *
 * The VFIO structs are not copied by the iommufd codec: each handler reads its fixed prefix
 * (`minsz`) itself and writes back what the kernel writes back, never past the user's argsz.
 */
import { EFAULT, EINVAL, ENODEV, ENOTTY, EOPNOTSUPP, EPERM, ErrnoError } from "../errno.ts";
import type { IoctlResult, UserMemory } from "../uapi/dispatch.ts";
import {
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_NOIOMMU_IOMMU,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
} from "../uapi/ioctl.ts";
import { decode, encode } from "../uapi/layout.ts";
import { IOMMUFD_IOCTLS } from "../uapi/structs.ts";
import {
  VFIO_IOMMU_GET_INFO_MINSZ,
  VFIO_IOMMU_MAP_DMA_MINSZ,
  VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_LAYOUT,
  VFIO_IOMMU_UNMAP_DMA_MINSZ,
  VFIO_IOVA_RANGE_LAYOUT,
} from "../uapi/vfio.ts";
import {
  type IoctlCall,
  type IommufdContext,
  registerFallthrough,
  registerIoctl,
} from "./context.ts";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "./driver.ts";
import type { HwptPaging } from "./hwpt.ts";
import { type IoPagetable, ULONG_MAX } from "./io_pagetable.ts";
import { getIoas, Ioas, ioasMapUser } from "./ioas.ts";
import { PAGE_SIZE } from "./user_mm.ts";

const PAGE = BigInt(PAGE_SIZE);
const MAP_FLAGS = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
/** The avail value of the DMA_AVAIL capability: U32_MAX (iommufd has no mapping-count limit). */
const DMA_AVAIL_UNLIMITED = 0xffff_ffff;

/**
 * Kernel build choices the compat layer depends on (the selftest exercises neither).
 * `vfioNoIommu` is CONFIG_VFIO_NOIOMMU: CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU) answers 1 and
 * SET_IOMMU(VFIO_NOIOMMU_IOMMU) is possible in no-iommu mode. Off by default (spec §8.2).
 */
export const vfioCompatConfig = { vfioNoIommu: false };

// ---- Per-context state --------------------------------------------------------------------------

interface CompatState {
  /** ictx->no_iommu_mode: set by a VFIO no-iommu device attach; blocks the type1 types. */
  noIommuMode: boolean;
}

const STATE = Symbol("vfio_compat");

function stateOf(ctx: IommufdContext): CompatState {
  let s = ctx.ext.get(STATE) as CompatState | undefined;
  if (s === undefined) {
    s = { noIommuMode: false };
    ctx.ext.set(STATE, s);
  }
  return s;
}

// ---- Exported API (for the VFIO device / group model and other slices) ---------------------------

/**
 * The compat IOAS, or null when none is set (Ioas.destroy clears the weak pointer, as
 * iommufd_object_remove() does). Takes no reference and is not a fault-injection site (the
 * kernel locks the object directly, get_compat_ioas()).
 */
export function compatIoas(ctx: IommufdContext): Ioas | null {
  return ctx.vfioIoas as Ioas | null;
}

/** get_compat_ioas(): the compat IOAS, or ENODEV. Throws ErrnoError. */
export function getCompatIoas(ctx: IommufdContext): Ioas {
  const ioas = compatIoas(ctx);
  if (ioas === null) throw new ErrnoError(ENODEV, "no VFIO compat IOAS");
  return ioas;
}

/** iommufd_vfio_compat_ioas_get_id: the compat IOAS's id, or ENODEV. Throws ErrnoError. */
export function vfioCompatIoasGetId(ctx: IommufdContext): number {
  return getCompatIoas(ctx).id;
}

/**
 * iommufd_vfio_compat_ioas_create (spec §8.1), what the kernel's VFIO does when a group is
 * attached to an iommufd container: allocates a new IOAS (lowest free id; ENOMEM from the
 * object allocation site), then aborts it (the id is freed again) with EINVAL in no-iommu mode,
 * or silently (returning normally) when a compat IOAS already exists; otherwise it becomes the
 * compat IOAS and is published as an ordinary user object. Throws ErrnoError.
 */
export function vfioCompatIoasCreate(ctx: IommufdContext): void {
  const ioas = ctx.table.reserve(new Ioas(ctx));
  if (stateOf(ctx).noIommuMode) {
    ctx.table.abort(ioas);
    throw new ErrnoError(EINVAL, "the container is in no-iommu mode");
  }
  if (compatIoas(ctx) !== null) {
    ctx.table.abort(ioas);
    return;
  }
  ctx.vfioIoas = ioas;
  ctx.table.finalize(ioas);
}

/**
 * iommufd_vfio_compat_set_no_iommu (renamed iommufd_vfio_set_no_iommu in newer trees): a
 * VFIO no-iommu device joined the container. EINVAL if a compat IOAS exists. Throws ErrnoError.
 */
export function vfioCompatSetNoIommu(ctx: IommufdContext): void {
  if (compatIoas(ctx) !== null) throw new ErrnoError(EINVAL, "a compat IOAS already exists");
  stateOf(ctx).noIommuMode = true;
}

/** ictx->no_iommu_mode. */
export function vfioNoIommuMode(ctx: IommufdContext): boolean {
  return stateOf(ctx).noIommuMode;
}

// ---- IOMMU_VFIO_IOAS (spec §7) ------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.VFIO_IOAS, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if (cmd.__reserved !== 0) return EOPNOTSUPP;
  if (cmd.op === IOMMU_VFIO_IOAS_GET) {
    const ioas = compatIoas(ctx);
    if (ioas === null) return ENODEV;
    cmd.ioas_id = ioas.id;
    return ucmd.respond();
  }
  if (cmd.op === IOMMU_VFIO_IOAS_SET) {
    // A typed lookup (ENOENT, an injection site); the pointer keeps no reference.
    ctx.vfioIoas = getIoas(ctx, cmd.ioas_id);
    return 0;
  }
  if (cmd.op === IOMMU_VFIO_IOAS_CLEAR) {
    ctx.vfioIoas = null;
    return 0;
  }
  return EOPNOTSUPP;
});

// ---- The VFIO container ioctls (spec §8) --------------------------------------------------------

/** The kernel passes `arg` as an unsigned long: integers and pointers are taken modulo 2^64. */
function ulong(x: bigint): bigint {
  return BigInt.asUintN(64, x);
}

/** Runs `fn`, turning an ErrnoError into its errno (and its message into `result`). */
function errnoOf(fn: () => void, result: IoctlResult): number {
  try {
    fn();
    return 0;
  } catch (e) {
    if (!(e instanceof ErrnoError)) throw e;
    result.message = e.message;
    return e.errno;
  }
}

/** iommufd_vfio_ioctl: dispatch on the whole command value; anything else is ENOTTY. */
function vfioIoctl(
  call: IoctlCall,
  cmd: number,
  arg: bigint,
  user: UserMemory,
  result: IoctlResult,
): number {
  switch (cmd) {
    case VFIO_GET_API_VERSION:
      result.value = VFIO_API_VERSION;
      return 0;
    case VFIO_SET_IOMMU:
      return setIommu(call, ulong(arg));
    case VFIO_CHECK_EXTENSION:
      return checkExtension(call.ctx, ulong(arg), result);
    case VFIO_IOMMU_GET_INFO:
      return getInfo(call.ctx, user, ulong(arg));
    case VFIO_IOMMU_MAP_DMA:
      return mapDma(call, user, ulong(arg));
    case VFIO_IOMMU_UNMAP_DMA:
      return unmapDma(call.ctx, user, ulong(arg), result);
    default:
      // VFIO_IOMMU_DIRTY_PAGES, ENABLE/DISABLE, group, device and SPAPR ioctls: -ENOIOCTLCMD,
      // which the VFS reports as ENOTTY. User memory is not touched.
      return ENOTTY;
  }
}

registerFallthrough(vfioIoctl);

/** VFIO_CHECK_EXTENSION (spec §8.2): the answer is the ioctl's return value. */
function checkExtension(ctx: IommufdContext, ext: bigint, result: IoctlResult): number {
  let answer = 0;
  if (ext === BigInt(VFIO_TYPE1_IOMMU) || ext === BigInt(VFIO_TYPE1v2_IOMMU)) answer = 1;
  else if (ext === BigInt(VFIO_UNMAP_ALL)) answer = 1;
  else if (ext === BigInt(VFIO_NOIOMMU_IOMMU)) answer = vfioCompatConfig.vfioNoIommu ? 1 : 0;
  else if (ext === BigInt(VFIO_DMA_CC_IOMMU)) {
    // iommufd_vfio_cc_iommu: 1 unless some HWPT_PAGING on the compat IOAS lacks coherency.
    const ioas = compatIoas(ctx);
    if (ioas === null) return ENODEV;
    answer = 1;
    for (const hwpt of ioas.hwptList)
      if (!(hwpt as HwptPaging).enforceCacheCoherency) {
        answer = 0;
        break;
      }
  }
  // The reserved TYPE1_NESTING (6), UPDATE_VADDR (10) and everything else: 0.
  result.value = answer;
  return 0;
}

/** VFIO_SET_IOMMU (spec §8.3). Nothing records the type; TYPE1v2 never re-enables large pages. */
function setIommu(call: IoctlCall, type: bigint): number {
  const ctx = call.ctx;
  const noIommu = stateOf(ctx).noIommuMode;
  if (vfioCompatConfig.vfioNoIommu && type === BigInt(VFIO_NOIOMMU_IOMMU) && noIommu) {
    // CAP_SYS_RAWIO: UserAccounting does not model it yet; an optional flag stands in.
    const rawio = (call.caller.accounting as { capSysRawio?: boolean }).capSysRawio === true;
    return rawio ? 0 : EPERM;
  }
  if ((type !== BigInt(VFIO_TYPE1_IOMMU) && type !== BigInt(VFIO_TYPE1v2_IOMMU)) || noIommu)
    return EINVAL;
  const ioas = getCompatIoas(ctx);
  // TYPE1 may unmap inside a mapping: emulated by never building large IOPTEs (EINVAL when a
  // domain already holds mappings, EADDRINUSE when an area is not PAGE aligned).
  if (type === BigInt(VFIO_TYPE1_IOMMU)) ioas.iopt.setLargePagesDisabled();
  return 0;
}

/**
 * iommufd_get_pagesizes: the AND of the attached domains' page sizes (all ones with none),
 * sub-PAGE sizes folded into PAGE, at least the IOAS's IOVA alignment.
 */
function pageSizes(iopt: IoPagetable): bigint {
  let bitmap = ULONG_MAX;
  for (const d of iopt.domains) bitmap &= d.pgsizeBitmap;
  if ((bitmap & (PAGE - 1n)) !== 0n) bitmap = (bitmap & ~(PAGE - 1n) & ULONG_MAX) | PAGE;
  const align = BigInt(iopt.iovaAlignment);
  return bitmap > align ? bitmap : align;
}

/**
 * A capability writer: given `avail` bytes of user buffer at `at`, writes the capability if it
 * fits (entirely, or for IOVA_RANGE a prefix of its ranges without the head) and returns its
 * full size. EFAULT (thrown) when a write faults.
 */
type CapWriter = (iopt: IoPagetable, user: UserMemory, at: bigint, avail: number) => number;

function writeOrFault(user: UserMemory, at: bigint, bytes: Uint8Array): void {
  if (user.write(at, bytes) !== 0) throw new ErrnoError(EFAULT, "capability write faulted");
}

/** iommufd_fill_cap_dma_avail: 12 bytes, all or nothing. */
const fillCapDmaAvail: CapWriter = (_iopt, user, at, avail) => {
  const layout = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL_LAYOUT;
  if (avail >= layout.size) {
    const bytes = new Uint8Array(layout.size);
    encode(
      layout,
      {
        header: { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, next: 0 },
        avail: DMA_AVAIL_UNLIMITED,
      },
      bytes,
    );
    writeOrFault(user, at, bytes);
  }
  return layout.size;
};

/**
 * iommufd_fill_cap_iova: the holes of the reserved ranges over [0, ULONG_MAX] (what
 * IOMMU_IOAS_IOVA_RANGES reports; areas and allowed ranges play no part). Each range is
 * written when the cap up to and including it fits; the head only when all of them fit.
 */
const fillCapIova: CapWriter = (iopt, user, at, avail) => {
  const head = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT;
  const entry = VFIO_IOVA_RANGE_LAYOUT;
  const holes = iopt.iovaRanges();
  const bytes = new Uint8Array(entry.size);
  for (let k = 0; k < holes.length; k++) {
    if (avail >= head.size + entry.size * (k + 1)) {
      encode(entry, { start: holes[k].start, end: holes[k].last }, bytes);
      writeOrFault(user, at + BigInt(head.size + entry.size * k), bytes);
    }
  }
  const size = head.size + entry.size * holes.length;
  if (avail >= size) {
    const headBytes = new Uint8Array(head.size);
    encode(
      head,
      {
        header: { id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version: 1, next: 0 },
        nr_iovas: holes.length,
        reserved: 0,
      },
      headBytes,
    );
    writeOrFault(user, at, headBytes);
  }
  return size;
};

/** The capability chain, in the kernel's order. */
const CAP_WRITERS: readonly CapWriter[] = [fillCapDmaAvail, fillCapIova];

/**
 * VFIO_IOMMU_GET_INFO (spec §8.4). Writes nothing outside [arg, arg + argsz): the header is
 * cut to min(argsz, 24) bytes, each capability is written only where it fits, and a previous
 * capability's `next` is patched only when argsz reaches the start of the following one.
 * The returned argsz is the size the whole chain needs; cap_offset is set only if it all fit.
 */
function getInfo(ctx: IommufdContext, user: UserMemory, arg: bigint): number {
  const layout = VFIO_IOMMU_TYPE1_INFO_LAYOUT;
  const kbuf = new Uint8Array(layout.size);
  if (user.read(arg, kbuf.subarray(0, VFIO_IOMMU_GET_INFO_MINSZ)) !== 0) return EFAULT;
  const info = decode(layout, kbuf);
  const argsz = info.argsz;
  if (argsz < VFIO_IOMMU_GET_INFO_MINSZ) return EINVAL;
  const writeLen = Math.min(argsz, layout.size);
  const ioas = getCompatIoas(ctx);
  const iopt = ioas.iopt;

  info.flags = VFIO_IOMMU_INFO_PGSIZES;
  info.iova_pgsizes = pageSizes(iopt);
  info.cap_offset = 0;

  let total = layout.size;
  let prev = -1;
  const nextWord = new Uint8Array(4);
  for (const writer of CAP_WRITERS) {
    const avail = argsz > total ? argsz - total : 0;
    let size = writer(iopt, user, arg + BigInt(total), avail);
    size = (size + 7) & ~7;
    if (prev >= 0 && argsz >= total) {
      new DataView(nextWord.buffer).setUint32(0, total, true);
      if (user.write(arg + BigInt(prev + 4), nextWord) !== 0) return EFAULT;
    }
    prev = total;
    total += size;
  }

  if (argsz >= total) info.cap_offset = layout.size;
  info.argsz = total;
  info.flags |= VFIO_IOMMU_INFO_CAPS;
  encode(layout, info, kbuf);
  if (user.write(arg, kbuf.subarray(0, writeLen)) !== 0) return EFAULT;
  return 0;
}

/**
 * VFIO_IOMMU_MAP_DMA (spec §8.5): IOMMU_IOAS_MAP at a fixed IOVA, with the same errors except
 * that there is no ULONG_MAX pre-check and flags 0 (no READ, no WRITE) is accepted. Accounting
 * follows the context's mode. Nothing is written back.
 */
function mapDma(call: IoctlCall, user: UserMemory, arg: bigint): number {
  const layout = VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT;
  const kbuf = new Uint8Array(layout.size);
  if (user.read(arg, kbuf.subarray(0, VFIO_IOMMU_MAP_DMA_MINSZ)) !== 0) return EFAULT;
  const map = decode(layout, kbuf);
  if (map.argsz < VFIO_IOMMU_MAP_DMA_MINSZ || (map.flags & ~MAP_FLAGS) !== 0) return EINVAL;
  let prot = IOMMU_CACHE;
  if (map.flags & VFIO_DMA_MAP_FLAG_READ) prot |= IOMMU_READ;
  if (map.flags & VFIO_DMA_MAP_FLAG_WRITE) prot |= IOMMU_WRITE;
  const ioas = getCompatIoas(call.ctx);
  ioasMapUser(call.ctx, ioas, call.caller, map.iova, map.vaddr, map.size, prot);
  return 0;
}

/** Bytes mapped in the IOAS (area lengths; splits keep it, unmaps lower it). */
function mappedBytes(iopt: IoPagetable): bigint {
  let sum = 0n;
  for (const a of iopt.areas) sum += a.length;
  return sum;
}

/**
 * VFIO_IOMMU_UNMAP_DMA (spec §8.6). The whole 24-byte struct goes back with `size` = the bytes
 * unmapped even when the unmap step failed (ENOENT, EBUSY, EINVAL for size 0, ...); only the
 * early argument errors, ENODEV and a failed cut return without writing.
 */
function unmapDma(ctx: IommufdContext, user: UserMemory, arg: bigint, result: IoctlResult): number {
  const layout = VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT;
  const kbuf = new Uint8Array(layout.size);
  if (user.read(arg, kbuf) !== 0) return EFAULT;
  const unmap = decode(layout, kbuf);
  if (unmap.argsz < VFIO_IOMMU_UNMAP_DMA_MINSZ || (unmap.flags & ~VFIO_DMA_UNMAP_FLAG_ALL) !== 0)
    return EINVAL;
  const iopt = getCompatIoas(ctx).iopt;
  const before = mappedBytes(iopt);
  let rc: number;
  if (unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL) {
    if (unmap.iova !== 0n || unmap.size !== 0n) return EINVAL;
    rc = errnoOf(() => iopt.unmapAll(), result);
  } else {
    if (iopt.disableLargePages) {
      // TYPE1: split the areas holding the range's last byte and the byte before its start
      // (none before IOVA 0), in that order; unsigned long arithmetic wraps.
      const cuts = [ulong(unmap.iova + unmap.size - 1n)];
      if (unmap.iova !== 0n) cuts.push(ulong(unmap.iova - 1n));
      const cutRc = errnoOf(() => iopt.cutIova(cuts), result);
      if (cutRc !== 0) return cutRc;
    }
    rc = errnoOf(() => iopt.unmapIova(unmap.iova, unmap.size), result);
  }
  // The io_pagetable keeps what it removed before an error, and reports it: the difference.
  unmap.size = before - mappedBytes(iopt);
  encode(layout, unmap, kbuf);
  if (user.write(arg, kbuf) !== 0) return EFAULT;
  return rc;
}

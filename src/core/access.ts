/**
 * The in-kernel access API (iommufd_access_* in drivers/iommu/iommufd/device.c; spec
 * ioas-pages.md §12): how a driver without a real IOMMU (the selftest's access ops, an
 * emulated device, a HW queue) reads, writes and pins the memory behind an IOAS.
 *
 * An access is an ACCESS object (no uAPI of its own). The creating driver holds one extra
 * reference on it until accessDestroy(). Attached to an IOAS it holds a reference on the IOAS
 * (IOAS destroy is then EBUSY) and takes an id in that IOAS's access list. Pins are counted
 * per call on the areas they cover; an unmap of such an area first asks every (non-internal)
 * access on the IOAS to drop its pins through `ops.unmap`. Internal accesses (HW queues) lock
 * the areas they pin instead: unmap is EBUSY until they unpin.
 */
import { EBUSY, EINVAL, ENOENT, EOVERFLOW, ErrnoError } from "../errno.ts";
import type { IommufdContext } from "./context.ts";
import { type IoptAccess, ULONG_MAX } from "./io_pagetable.ts";
import { getIoas, type Ioas } from "./ioas.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";
import { PAGE_SIZE, type UserPage, type UserProcess } from "./user_mm.ts";

export {
  ACCESS_RW_KTHREAD,
  ACCESS_RW_READ,
  ACCESS_RW_SLOW_PATH,
  ACCESS_RW_WRITE,
} from "./pages.ts";

/** What a driver supplies (struct iommufd_access_ops). */
export interface AccessOps {
  /** The driver calls pin_pages (the IOAS alignment becomes PAGE); otherwise rw only. */
  readonly needsPinPages: boolean;
  /**
   * Must drop every pin intersecting [iova, iova + length) before returning (by calling
   * accessUnpinPages). Called on IOAS unmap of a pinned area (the whole area's range), and
   * with (0, ULONG_MAX) when the access leaves its IOAS. Required to pin pages.
   */
  unmap?(iova: bigint, length: bigint): void;
}

/** struct iommufd_access. */
export class IommufdAccess extends IommufdObject implements IoptAccess {
  readonly type = ObjType.ACCESS;
  readonly ctx: IommufdContext;
  /** Null for internal accesses. */
  readonly ops: AccessOps | null;
  readonly internal: boolean;
  readonly iovaAlignment: number;
  /** The IOAS pins and rw go to; null while detached (or mid-change). */
  ioas: Ioas | null = null;
  /** The IOAS unpins go to (stays set while ops.unmap runs during a change). */
  ioasUnpin: Ioas | null = null;
  /** This access's id in its IOAS's access list (iopt_access_list_id). */
  ioptAccessListId = 0;

  constructor(ctx: IommufdContext, ops: AccessOps | null) {
    super();
    this.ctx = ctx;
    this.ops = ops;
    this.internal = ops === null;
    this.iovaAlignment = ops === null || ops.needsPinPages ? PAGE_SIZE : 1;
  }

  /** IoptAccess: the io_pagetable's unmap notice. */
  notifyUnmap(iova: bigint, length: bigint): void {
    this.ops?.unmap?.(iova, length);
  }

  /** iommufd_access_destroy_object: leaves its IOAS. */
  destroy(): void {
    if (this.ioas !== null) changeIoas(this, null);
  }
}

/**
 * iommufd_access_create: a new, published ACCESS object; the driver holds a reference until
 * accessDestroy(). ENOMEM (injected). Throws ErrnoError.
 */
export function accessCreate(ctx: IommufdContext, ops: AccessOps): IommufdAccess {
  return publish(ctx, new IommufdAccess(ctx, ops));
}

/** iommufd_access_create_internal: an access for HW queues (locks what it pins). */
export function accessCreateInternal(ctx: IommufdContext): IommufdAccess {
  return publish(ctx, new IommufdAccess(ctx, null));
}

function publish(ctx: IommufdContext, access: IommufdAccess): IommufdAccess {
  ctx.table.reserve(access);
  refGet(access); // the driver's reference
  ctx.table.finalize(access);
  return access;
}

/**
 * iommufd_access_destroy: drops the driver's reference and destroys the object (detaching it).
 * The driver must have unpinned everything. Throws (a bug) if someone else still holds it.
 */
export function accessDestroy(access: IommufdAccess): void {
  refPut(access);
  access.ctx.table.remove(access);
}

/**
 * iommufd_access_change_ioas: joins `next` (alignment recomputed: EADDRINUSE, nothing
 * changed), tells the driver to drop everything, leaves the current IOAS.
 */
function changeIoas(access: IommufdAccess, next: Ioas | null): void {
  const cur = access.ioas;
  if (cur !== access.ioasUnpin) throw new ErrnoError(EBUSY, "access is being detached");
  if (cur === next) return;
  const oldId = access.ioptAccessListId;
  let newId = 0;
  access.ioas = null;
  if (next !== null) {
    try {
      newId = next.iopt.addAccess(access);
    } catch (e) {
      access.ioas = cur;
      throw e;
    }
    refGet(next);
  }
  if (cur !== null) {
    if (!access.internal) access.ops?.unmap?.(0n, ULONG_MAX);
    cur.iopt.removeAccess(oldId);
    refPut(cur);
  }
  access.ioas = next;
  access.ioasUnpin = next;
  access.ioptAccessListId = newId;
}

/**
 * iommufd_access_attach: EINVAL if already attached; ENOENT for a bad IOAS id; EADDRINUSE
 * when existing areas do not fit the access's alignment; EBUSY when the IOAS has 65536
 * accesses. Throws ErrnoError.
 */
export function accessAttach(access: IommufdAccess, ioasId: number): void {
  if (access.ioas !== null) throw new ErrnoError(EINVAL, "access already attached");
  changeIoas(access, getIoas(access.ctx, ioasId));
}

/** iommufd_access_attach_internal: attach to an IOAS already in hand. Throws ErrnoError. */
export function accessAttachInternal(access: IommufdAccess, ioas: Ioas): void {
  if (access.ioas !== null) throw new ErrnoError(EINVAL, "access already attached");
  changeIoas(access, ioas);
}

/**
 * iommufd_access_replace: ENOENT when not attached or for a bad IOAS id; the same IOAS is a
 * no-op; otherwise joins the new one (on failure nothing changes), tells the driver to unmap
 * everything and leaves the old one. Throws ErrnoError.
 */
export function accessReplace(access: IommufdAccess, ioasId: number): void {
  if (access.ioas === null) throw new ErrnoError(ENOENT, "access is not attached");
  changeIoas(access, getIoas(access.ctx, ioasId));
}

/** iommufd_access_detach: leaves the IOAS (the driver is told to unmap everything). */
export function accessDetach(access: IommufdAccess): void {
  if (access.ioas === null) return;
  changeIoas(access, null);
}

/**
 * iommufd_access_pin_pages: pins [iova, iova + length) and returns its pages, one per PAGE.
 * EINVAL (an access that does not pin, length 0, not page aligned, unmap pending), EOVERFLOW,
 * ENOENT (not attached, not fully mapped), EPERM (protection or read-only pages with WRITE),
 * EFAULT / ENOMEM from pinning. All or nothing. Throws ErrnoError.
 */
export function accessPinPages(
  access: IommufdAccess,
  iova: bigint,
  length: bigint,
  flags: number,
): UserPage[] {
  if (access.iovaAlignment !== PAGE_SIZE || (!access.internal && access.ops?.unmap === undefined))
    throw new ErrnoError(EINVAL, "access cannot pin pages");
  if (length === 0n) throw new ErrnoError(EINVAL, "pin of zero bytes");
  const last = iova + length - 1n;
  if (last > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "iova + length overflows");
  const ioas = access.ioas;
  if (ioas === null) throw new ErrnoError(ENOENT, "access is not attached");
  return ioas.iopt.pinPages(iova, last, flags, access.internal);
}

/** iommufd_access_unpin_pages: undoes a pin of exactly the same range. Never fails. */
export function accessUnpinPages(access: IommufdAccess, iova: bigint, length: bigint): void {
  if (length === 0n) return;
  const last = iova + length - 1n;
  if (last > ULONG_MAX) return;
  const ioas = access.ioasUnpin;
  if (ioas === null) return;
  ioas.iopt.unpinPages(iova, last, access.internal);
}

/**
 * iommufd_access_rw: copies `data` to (ACCESS_RW_WRITE) or from the IOVA range. `caller` is
 * the process running the call (undefined: a kernel thread); a different process, or the test
 * flag ACCESS_RW_SLOW_PATH, takes the pinning paths. EINVAL (length 0, unmap pending),
 * EOVERFLOW, ENOENT (not attached / not fully mapped), EPERM, EFAULT. Throws ErrnoError.
 */
export function accessRw(
  access: IommufdAccess,
  iova: bigint,
  data: Uint8Array,
  flags: number,
  caller: UserProcess | undefined,
): void {
  if (data.length === 0) throw new ErrnoError(EINVAL, "rw of zero bytes");
  if (iova + BigInt(data.length) - 1n > ULONG_MAX)
    throw new ErrnoError(EOVERFLOW, "iova + length overflows");
  const ioas = access.ioas;
  if (ioas === null) throw new ErrnoError(ENOENT, "access is not attached");
  ioas.iopt.rw(iova, data, flags, caller);
}

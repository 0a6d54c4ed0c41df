/**
 * HW queues (drivers/iommu/iommufd/viommu.c: iommufd_hw_queue_alloc_ioctl,
 * iommufd_hw_queue_alloc_phys, iommufd_hw_queue_destroy; driver.c _iommufd_object_depend):
 * a guest queue in nesting-parent IOVA space that the hardware reads by physical address. The
 * core pins its pages through a hidden internal ACCESS object, which also locks the IOAS areas
 * under it (IOAS_UNMAP is EBUSY there) and raises the IOAS's IOVA alignment to PAGE_SIZE while
 * the queue lives.
 *
 * Spec viommu-eventq.md §6 (checks, destroy order, locking), §8, §10.
 */
import { EFAULT, EINVAL, ENOMEM, EOPNOTSUPP, EOVERFLOW, ERANGE, ErrnoError } from "../errno.ts";
import { IOMMU_HW_QUEUE_TYPE_DEFAULT, IOMMUFD_IOCTLS } from "../uapi/index.ts";
import {
  accessAttachInternal,
  accessCreateInternal,
  accessDestroy,
  accessDetach,
  accessPinPages,
  accessUnpinPages,
  type IommufdAccess,
} from "./access.ts";
import type { IommufdContext } from "./context.ts";
import { registerIoctl } from "./context.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";
import { PAGE_SIZE } from "./user_mm.ts";
import { getViommu, type Viommu } from "./viommu.ts";

const PAGE = BigInt(PAGE_SIZE);
const U64_MAX = (1n << 64n) - 1n;
/** kvmalloc refuses more than INT_MAX bytes: the page-pointer array's bound. */
const KVMALLOC_MAX = 2 ** 31 - 1;

/** IOMMUFD_OBJ_HW_QUEUE (struct iommufd_hw_queue). */
export class HwQueue extends IommufdObject {
  readonly type = ObjType.HW_QUEUE;
  readonly ctx: IommufdContext;
  /** enum iommu_hw_queue_type. */
  readonly queueType: number;
  /** The queue's nesting-parent IOVA and length as user space gave them. */
  readonly baseAddr: bigint;
  readonly length: bigint;
  /** Set (and held: users +1) once the memory is pinned. */
  viommu: Viommu | null = null;
  /** The internal access pinning the memory; null until pinned. */
  access: IommufdAccess | null = null;
  /** hw_queue->destroy: installed by the driver's init when it succeeded. */
  driverDestroy: (() => void) | null = null;

  constructor(ctx: IommufdContext, queueType: number, baseAddr: bigint, length: bigint) {
    super();
    this.ctx = ctx;
    this.queueType = queueType;
    this.baseAddr = baseAddr;
    this.length = length;
  }

  /**
   * iommufd_hw_queue_destroy (also the abort): the driver's hook if init succeeded, then the
   * access unpins exactly what was pinned, leaves the IOAS and goes (its id is freed), then the
   * vIOMMU reference is dropped.
   */
  destroy(): void {
    const hook = this.driverDestroy;
    this.driverDestroy = null;
    hook?.();
    const access = this.access;
    this.access = null;
    if (access !== null) destroyQueueAccess(access, this.baseAddr, this.length);
    if (this.viommu !== null) refPut(this.viommu);
    this.viommu = null;
  }
}

/** The page-aligned span [base, base + span) that covers [iova, iova + length). */
function queueSpan(iova: bigint, length: bigint): { base: bigint; span: bigint } {
  const off = iova % PAGE;
  return { base: iova - off, span: ((length + off + PAGE - 1n) / PAGE) * PAGE };
}

/** iommufd_hw_queue_destroy_access: unpin, detach, destroy the internal access. */
function destroyQueueAccess(access: IommufdAccess, iova: bigint, length: bigint): void {
  const { base, span } = queueSpan(iova, length);
  accessUnpinPages(access, base, span);
  accessDetach(access);
  accessDestroy(access);
}

/**
 * iommufd_hw_queue_alloc_phys: pins the queue memory and returns the access holding it and
 * the physical address of the queue's first byte. In order: the rounded span overflows
 * ERANGE; the page array ENOMEM; the internal access (its id is published at once); attaching
 * it to the vIOMMU's IOAS (alignment: EADDRINUSE); the pin (ENOENT when not fully mapped,
 * EINVAL, pin errors); pages not physically contiguous EFAULT. A failure undoes it all.
 */
function allocPhys(
  ctx: IommufdContext,
  viommu: Viommu,
  iova: bigint,
  length: bigint,
): { access: IommufdAccess; basePa: number } {
  const off = iova % PAGE;
  const base = iova - off;
  if (off + length > U64_MAX || off + length + PAGE - 1n > U64_MAX)
    throw new ErrnoError(ERANGE, "HW queue span overflows");
  const npages = (off + length + PAGE - 1n) / PAGE;
  const span = npages * PAGE;
  if (npages * 8n > BigInt(KVMALLOC_MAX) || ctx.faults.shouldFail("hw_queue_pages_alloc"))
    throw new ErrnoError(ENOMEM, "HW queue page array");

  const access = accessCreateInternal(ctx);
  try {
    accessAttachInternal(access, viommu.hwpt.ioas);
  } catch (e) {
    accessDestroy(access);
    throw e;
  }
  let pinned = false;
  try {
    const pages = accessPinPages(access, base, span, 0);
    pinned = true;
    for (let i = 1; i < pages.length; i++) {
      if (pages[i].pfn !== pages[i - 1].pfn + 1)
        throw new ErrnoError(EFAULT, "HW queue pages are not physically contiguous");
    }
    return { access, basePa: pages[0].pfn * PAGE_SIZE + Number(off) };
  } catch (e) {
    if (pinned) accessUnpinPages(access, base, span);
    accessDetach(access);
    accessDestroy(access);
    throw e;
  }
}

/**
 * iommufd_hw_queue_depend: `dependent` keeps `depended` alive (users +1) until undepend. A
 * self dependency or one between different object types is EINVAL.
 */
export function hwQueueDepend(dependent: HwQueue, depended: HwQueue): void {
  if (dependent === depended || dependent.type !== depended.type)
    throw new ErrnoError(EINVAL, "bad HW queue dependency");
  refGet(depended);
}

/** iommufd_hw_queue_undepend. */
export function hwQueueUndepend(dependent: HwQueue, depended: HwQueue): void {
  if (dependent === depended || dependent.type !== depended.type) return;
  refPut(depended);
}

// ---- IOMMU_HW_QUEUE_ALLOC ----------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.HW_QUEUE_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if (cmd.flags !== 0 || cmd.type === IOMMU_HW_QUEUE_TYPE_DEFAULT) return EOPNOTSUPP;
  if (cmd.length === 0n) return EINVAL;
  if (cmd.nesting_parent_iova + cmd.length - 1n > U64_MAX) return EOVERFLOW;
  const viommu = getViommu(ctx, cmd.viommu_id);
  const driver = viommu.driver;
  if (driver?.getHwQueueSize === undefined || driver.hwQueueInitPhys === undefined)
    return EOPNOTSUPP;
  if (driver.getHwQueueSize(cmd.type) === 0) return EOPNOTSUPP;

  const queue = call.alloc(new HwQueue(ctx, cmd.type, cmd.nesting_parent_iova, cmd.length));
  const { access, basePa } = allocPhys(ctx, viommu, cmd.nesting_parent_iova, cmd.length);
  queue.viommu = viommu;
  refGet(viommu);
  queue.access = access;
  driver.hwQueueInitPhys(queue, cmd.index, basePa);
  cmd.out_hw_queue_id = queue.id;
  return ucmd.respond() === 0 ? 0 : EFAULT;
});

/**
 * What the iommufd core needs from an IOMMU driver: the contract between src/core and the
 * hardware models (src/hw/*), like include/linux/iommu.h's iommu_ops / iommu_domain_ops.
 * The core never reaches into a model's internals; a model never calls the core.
 *
 * This file fixes the paging-domain part io_pagetable uses. Devices, nested domains, vIOMMUs
 * and the rest of the driver interface are declared by src/core/device.ts and friends.
 */

/** iommu prot flags passed to map (include/linux/iommu.h). */
export {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
} from "../pt/format.ts";

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

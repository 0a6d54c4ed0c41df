/**
 * Layouts of the VFIO type1 container structs that iommufd's VFIO compatibility layer
 * (drivers/iommu/iommufd/vfio_compat.c) reads and writes, from include/uapi/linux/vfio.h
 * (the type1 part has been stable for years; see docs/CONFORMANCE.md), for x86-64.
 *
 * VFIO structs start with `argsz`, not `size`, and are not copied by the iommufd dispatcher:
 * each compat handler copies a fixed prefix (`minsz`) itself. Plain `__u64` members are
 * 8-byte aligned on x86-64, so these offsets hold there (not on i386).
 */
import { type Layout, offsetOfEnd } from "./layout.ts";

export const VFIO_INFO_CAP_HEADER_LAYOUT = {
  name: "vfio_info_cap_header",
  size: 8,
  align: 4,
  fields: [
    { name: "id", offset: 0, type: "u16" },
    { name: "version", offset: 2, type: "u16" },
    { name: "next", offset: 4, type: "u32" },
  ],
} as const satisfies Layout;

export const VFIO_IOMMU_TYPE1_INFO_LAYOUT = {
  name: "vfio_iommu_type1_info",
  size: 24,
  align: 8,
  fields: [
    { name: "argsz", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "iova_pgsizes", offset: 8, type: "aligned_u64" },
    { name: "cap_offset", offset: 16, type: "u32" },
    { name: "pad", offset: 20, type: "u32" },
  ],
} as const satisfies Layout;

export const VFIO_IOVA_RANGE_LAYOUT = {
  name: "vfio_iova_range",
  size: 16,
  align: 8,
  fields: [
    { name: "start", offset: 0, type: "u64" },
    { name: "end", offset: 8, type: "u64" },
  ],
} as const satisfies Layout;

/** Capability VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; iova_ranges[] is a flexible array. */
export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT = {
  name: "vfio_iommu_type1_info_cap_iova_range",
  size: 16,
  align: 8,
  fields: [
    { name: "header", offset: 0, type: "struct", layout: VFIO_INFO_CAP_HEADER_LAYOUT },
    { name: "nr_iovas", offset: 8, type: "u32" },
    { name: "reserved", offset: 12, type: "u32" },
    {
      name: "iova_ranges",
      offset: 16,
      type: "struct",
      layout: VFIO_IOVA_RANGE_LAYOUT,
      count: 0,
    },
  ],
} as const satisfies Layout;

/** Capability VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION (iommufd never reports it). */
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION_LAYOUT = {
  name: "vfio_iommu_type1_info_cap_migration",
  size: 32,
  align: 8,
  fields: [
    { name: "header", offset: 0, type: "struct", layout: VFIO_INFO_CAP_HEADER_LAYOUT },
    { name: "flags", offset: 8, type: "u32" },
    { name: "pgsize_bitmap", offset: 16, type: "u64" },
    { name: "max_dirty_bitmap_size", offset: 24, type: "u64" },
  ],
} as const satisfies Layout;

/** Capability VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL. */
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL_LAYOUT = {
  name: "vfio_iommu_type1_info_dma_avail",
  size: 12,
  align: 4,
  fields: [
    { name: "header", offset: 0, type: "struct", layout: VFIO_INFO_CAP_HEADER_LAYOUT },
    { name: "avail", offset: 8, type: "u32" },
  ],
} as const satisfies Layout;

export const VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT = {
  name: "vfio_iommu_type1_dma_map",
  size: 32,
  align: 8,
  fields: [
    { name: "argsz", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "vaddr", offset: 8, type: "u64" },
    { name: "iova", offset: 16, type: "u64" },
    { name: "size", offset: 24, type: "u64" },
  ],
} as const satisfies Layout;

export const VFIO_BITMAP_LAYOUT = {
  name: "vfio_bitmap",
  size: 24,
  align: 8,
  fields: [
    { name: "pgsize", offset: 0, type: "u64" },
    { name: "size", offset: 8, type: "u64" },
    // A user pointer (__u64 __user *): 8 bytes on x86-64.
    { name: "data", offset: 16, type: "u64" },
  ],
} as const satisfies Layout;

/** data[] is a flexible array (a struct vfio_bitmap when GET_DIRTY_BITMAP is set). */
export const VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT = {
  name: "vfio_iommu_type1_dma_unmap",
  size: 24,
  align: 8,
  fields: [
    { name: "argsz", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "iova", offset: 8, type: "u64" },
    { name: "size", offset: 16, type: "u64" },
    { name: "data", offset: 24, type: "u8", count: 0 },
  ],
} as const satisfies Layout;

export const VFIO_IOMMU_TYPE1_DIRTY_BITMAP_LAYOUT = {
  name: "vfio_iommu_type1_dirty_bitmap",
  size: 8,
  align: 4,
  fields: [
    { name: "argsz", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "data", offset: 8, type: "u8", count: 0 },
  ],
} as const satisfies Layout;

export const VFIO_IOMMU_TYPE1_DIRTY_BITMAP_GET_LAYOUT = {
  name: "vfio_iommu_type1_dirty_bitmap_get",
  size: 40,
  align: 8,
  fields: [
    { name: "iova", offset: 0, type: "u64" },
    { name: "size", offset: 8, type: "u64" },
    { name: "bitmap", offset: 16, type: "struct", layout: VFIO_BITMAP_LAYOUT },
  ],
} as const satisfies Layout;

export const VFIO_LAYOUTS: readonly Layout[] = [
  VFIO_INFO_CAP_HEADER_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_LAYOUT,
  VFIO_IOVA_RANGE_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT,
  VFIO_BITMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DIRTY_BITMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DIRTY_BITMAP_GET_LAYOUT,
];

/**
 * The `minsz` prefixes vfio_compat.c copies in before checking `argsz < minsz` (EINVAL):
 * offsetofend(info, iova_pgsizes), offsetofend(dma_map, size), offsetofend(dma_unmap, size).
 */
export const VFIO_IOMMU_GET_INFO_MINSZ = offsetOfEnd(VFIO_IOMMU_TYPE1_INFO_LAYOUT, "iova_pgsizes");
export const VFIO_IOMMU_MAP_DMA_MINSZ = offsetOfEnd(VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT, "size");
export const VFIO_IOMMU_UNMAP_DMA_MINSZ = offsetOfEnd(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT, "size");

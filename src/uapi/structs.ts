/**
 * Layouts of every struct in include/uapi/linux/iommufd.h at the reference commit
 * (torvalds/linux @85e0d1de, docs/CONFORMANCE.md), for the x86-64 ABI.
 *
 * Offsets were placed by hand from the kernel's member lists with the C rules (each member at
 * the next multiple of its alignment, size rounded up to the largest alignment). Every table
 * is checked by test/uapi/layout.test.ts against those rules and against independently known
 * sizes and offsets.
 *
 * Also here: the ioctl table (nr, struct, min_size member) from drivers/iommu/iommufd/main.c
 * IOCTL_OP(...) entries. min_size = offsetofend(struct, member) is the backwards-compatibility
 * floor: a user struct shorter than that is EINVAL.
 */
import { IOMMU_TEST_CMD_NR, IOMMUFD_CMD } from "./ioctl.ts";
import { type Layout, offsetOfEnd } from "./layout.ts";
import { IOMMU_TEST_CMD_LAYOUT } from "./test_cmd.ts";

export const IOMMU_DESTROY_LAYOUT = {
  name: "iommu_destroy",
  size: 8,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "id", offset: 4, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_ALLOC_LAYOUT = {
  name: "iommu_ioas_alloc",
  size: 12,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "out_ioas_id", offset: 8, type: "u32" },
  ],
} as const satisfies Layout;

/** Element of the allowed_iovas arrays of IOAS_IOVA_RANGES and IOAS_ALLOW_IOVAS. */
export const IOMMU_IOVA_RANGE_LAYOUT = {
  name: "iommu_iova_range",
  size: 16,
  align: 8,
  fields: [
    { name: "start", offset: 0, type: "aligned_u64" },
    { name: "last", offset: 8, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_IOVA_RANGES_LAYOUT = {
  name: "iommu_ioas_iova_ranges",
  size: 32,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "ioas_id", offset: 4, type: "u32" },
    { name: "num_iovas", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
    { name: "allowed_iovas", offset: 16, type: "aligned_u64" },
    { name: "out_iova_alignment", offset: 24, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_ALLOW_IOVAS_LAYOUT = {
  name: "iommu_ioas_allow_iovas",
  size: 24,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "ioas_id", offset: 4, type: "u32" },
    { name: "num_iovas", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
    { name: "allowed_iovas", offset: 16, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_MAP_LAYOUT = {
  name: "iommu_ioas_map",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "ioas_id", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
    { name: "user_va", offset: 16, type: "aligned_u64" },
    { name: "length", offset: 24, type: "aligned_u64" },
    { name: "iova", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_NOIOMMU_GET_PA_LAYOUT = {
  name: "iommu_ioas_noiommu_get_pa",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "ioas_id", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
    { name: "iova", offset: 16, type: "aligned_u64" },
    { name: "length", offset: 24, type: "aligned_u64" },
    { name: "out_phys", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_MAP_FILE_LAYOUT = {
  name: "iommu_ioas_map_file",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "ioas_id", offset: 8, type: "u32" },
    { name: "fd", offset: 12, type: "s32" },
    { name: "start", offset: 16, type: "aligned_u64" },
    { name: "length", offset: 24, type: "aligned_u64" },
    { name: "iova", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_COPY_LAYOUT = {
  name: "iommu_ioas_copy",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "dst_ioas_id", offset: 8, type: "u32" },
    { name: "src_ioas_id", offset: 12, type: "u32" },
    { name: "length", offset: 16, type: "aligned_u64" },
    { name: "dst_iova", offset: 24, type: "aligned_u64" },
    { name: "src_iova", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_UNMAP_LAYOUT = {
  name: "iommu_ioas_unmap",
  size: 24,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "ioas_id", offset: 4, type: "u32" },
    { name: "iova", offset: 8, type: "aligned_u64" },
    { name: "length", offset: 16, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_OPTION_LAYOUT = {
  name: "iommu_option",
  size: 24,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "option_id", offset: 4, type: "u32" },
    { name: "op", offset: 8, type: "u16" },
    { name: "__reserved", offset: 10, type: "u16" },
    { name: "object_id", offset: 12, type: "u32" },
    { name: "val64", offset: 16, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_VFIO_IOAS_LAYOUT = {
  name: "iommu_vfio_ioas",
  size: 12,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "ioas_id", offset: 4, type: "u32" },
    { name: "op", offset: 8, type: "u16" },
    { name: "__reserved", offset: 10, type: "u16" },
  ],
} as const satisfies Layout;

// ---- HWPT allocation and its driver data (IOMMU_HWPT_DATA_*) -------------------------------

export const IOMMU_HWPT_VTD_S1_LAYOUT = {
  name: "iommu_hwpt_vtd_s1",
  size: 24,
  align: 8,
  fields: [
    { name: "flags", offset: 0, type: "aligned_u64" },
    { name: "pgtbl_addr", offset: 8, type: "aligned_u64" },
    { name: "addr_width", offset: 16, type: "u32" },
    { name: "__reserved", offset: 20, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_HWPT_ARM_SMMUV3_LAYOUT = {
  name: "iommu_hwpt_arm_smmuv3",
  size: 16,
  align: 8,
  fields: [{ name: "ste", offset: 0, type: "aligned_le64", count: 2 }],
} as const satisfies Layout;

export const IOMMU_HWPT_AMD_GUEST_LAYOUT = {
  name: "iommu_hwpt_amd_guest",
  size: 32,
  align: 8,
  fields: [{ name: "dte", offset: 0, type: "aligned_u64", count: 4 }],
} as const satisfies Layout;

export const IOMMU_HWPT_ALLOC_LAYOUT = {
  name: "iommu_hwpt_alloc",
  size: 48,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "dev_id", offset: 8, type: "u32" },
    { name: "pt_id", offset: 12, type: "u32" },
    { name: "out_hwpt_id", offset: 16, type: "u32" },
    { name: "__reserved", offset: 20, type: "u32" },
    { name: "data_type", offset: 24, type: "u32" },
    { name: "data_len", offset: 28, type: "u32" },
    { name: "data_uptr", offset: 32, type: "aligned_u64" },
    { name: "fault_id", offset: 40, type: "u32" },
    { name: "__reserved2", offset: 44, type: "u32" },
  ],
} as const satisfies Layout;

// ---- GET_HW_INFO and the per-vendor info blobs it returns ----------------------------------

export const IOMMU_HW_INFO_VTD_LAYOUT = {
  name: "iommu_hw_info_vtd",
  size: 24,
  align: 8,
  fields: [
    { name: "flags", offset: 0, type: "u32" },
    { name: "__reserved", offset: 4, type: "u32" },
    { name: "cap_reg", offset: 8, type: "aligned_u64" },
    { name: "ecap_reg", offset: 16, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT = {
  name: "iommu_hw_info_arm_smmuv3",
  size: 40,
  align: 4,
  fields: [
    { name: "flags", offset: 0, type: "u32" },
    { name: "__reserved", offset: 4, type: "u32" },
    { name: "idr", offset: 8, type: "u32", count: 6 },
    { name: "iidr", offset: 32, type: "u32" },
    { name: "aidr", offset: 36, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_HW_INFO_TEGRA241_CMDQV_LAYOUT = {
  name: "iommu_hw_info_tegra241_cmdqv",
  size: 8,
  align: 4,
  fields: [
    { name: "flags", offset: 0, type: "u32" },
    { name: "version", offset: 4, type: "u8" },
    { name: "log2vcmdqs", offset: 5, type: "u8" },
    { name: "log2vsids", offset: 6, type: "u8" },
    { name: "__reserved", offset: 7, type: "u8" },
  ],
} as const satisfies Layout;

export const IOMMU_HW_INFO_AMD_LAYOUT = {
  name: "iommu_hw_info_amd",
  size: 16,
  align: 8,
  fields: [
    { name: "efr", offset: 0, type: "aligned_u64" },
    { name: "efr2", offset: 8, type: "aligned_u64" },
  ],
} as const satisfies Layout;

/** in_data_type and out_data_type share one u32 (an anonymous union). */
export const IOMMU_HW_INFO_LAYOUT = {
  name: "iommu_hw_info",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "dev_id", offset: 8, type: "u32" },
    { name: "data_len", offset: 12, type: "u32" },
    { name: "data_uptr", offset: 16, type: "aligned_u64" },
    {
      name: "",
      offset: 24,
      type: "union",
      size: 4,
      members: [
        { name: "in_data_type", offset: 24, type: "u32" },
        { name: "out_data_type", offset: 24, type: "u32" },
      ],
    },
    { name: "out_max_pasid_log2", offset: 28, type: "u8" },
    { name: "__reserved", offset: 29, type: "u8", count: 3 },
    { name: "out_capabilities", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

// ---- Dirty tracking ------------------------------------------------------------------------

export const IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT = {
  name: "iommu_hwpt_set_dirty_tracking",
  size: 16,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "hwpt_id", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT = {
  name: "iommu_hwpt_get_dirty_bitmap",
  size: 48,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "hwpt_id", offset: 4, type: "u32" },
    { name: "flags", offset: 8, type: "u32" },
    { name: "__reserved", offset: 12, type: "u32" },
    { name: "iova", offset: 16, type: "aligned_u64" },
    { name: "length", offset: 24, type: "aligned_u64" },
    { name: "page_size", offset: 32, type: "aligned_u64" },
    { name: "data", offset: 40, type: "aligned_u64" },
  ],
} as const satisfies Layout;

// ---- Cache invalidation and its per-vendor entries -----------------------------------------

export const IOMMU_HWPT_VTD_S1_INVALIDATE_LAYOUT = {
  name: "iommu_hwpt_vtd_s1_invalidate",
  size: 24,
  align: 8,
  fields: [
    { name: "addr", offset: 0, type: "aligned_u64" },
    { name: "npages", offset: 8, type: "aligned_u64" },
    { name: "flags", offset: 16, type: "u32" },
    { name: "__reserved", offset: 20, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_LAYOUT = {
  name: "iommu_viommu_arm_smmuv3_invalidate",
  size: 16,
  align: 8,
  fields: [{ name: "cmd", offset: 0, type: "aligned_le64", count: 2 }],
} as const satisfies Layout;

export const IOMMU_HWPT_INVALIDATE_LAYOUT = {
  name: "iommu_hwpt_invalidate",
  size: 32,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "hwpt_id", offset: 4, type: "u32" },
    { name: "data_uptr", offset: 8, type: "aligned_u64" },
    { name: "data_type", offset: 16, type: "u32" },
    { name: "entry_len", offset: 20, type: "u32" },
    { name: "entry_num", offset: 24, type: "u32" },
    { name: "__reserved", offset: 28, type: "u32" },
  ],
} as const satisfies Layout;

// ---- Fault queue (IOPF) records ------------------------------------------------------------

/** Record read() from a fault queue fd. */
export const IOMMU_HWPT_PGFAULT_LAYOUT = {
  name: "iommu_hwpt_pgfault",
  size: 40,
  align: 8,
  fields: [
    { name: "flags", offset: 0, type: "u32" },
    { name: "dev_id", offset: 4, type: "u32" },
    { name: "pasid", offset: 8, type: "u32" },
    { name: "grpid", offset: 12, type: "u32" },
    { name: "perm", offset: 16, type: "u32" },
    { name: "__reserved", offset: 20, type: "u32" },
    { name: "addr", offset: 24, type: "aligned_u64" },
    { name: "length", offset: 32, type: "u32" },
    { name: "cookie", offset: 36, type: "u32" },
  ],
} as const satisfies Layout;

/** Record write()n to a fault queue fd. */
export const IOMMU_HWPT_PAGE_RESPONSE_LAYOUT = {
  name: "iommu_hwpt_page_response",
  size: 8,
  align: 4,
  fields: [
    { name: "cookie", offset: 0, type: "u32" },
    { name: "code", offset: 4, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_FAULT_ALLOC_LAYOUT = {
  name: "iommu_fault_alloc",
  size: 16,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "out_fault_id", offset: 8, type: "u32" },
    { name: "out_fault_fd", offset: 12, type: "u32" },
  ],
} as const satisfies Layout;

// ---- vIOMMU, vDEVICE, vEVENTQ, HW queue ----------------------------------------------------

export const IOMMU_VIOMMU_TEGRA241_CMDQV_LAYOUT = {
  name: "iommu_viommu_tegra241_cmdqv",
  size: 16,
  align: 8,
  fields: [
    { name: "out_vintf_mmap_offset", offset: 0, type: "aligned_u64" },
    { name: "out_vintf_mmap_length", offset: 8, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_VIOMMU_ALLOC_LAYOUT = {
  name: "iommu_viommu_alloc",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "type", offset: 8, type: "u32" },
    { name: "dev_id", offset: 12, type: "u32" },
    { name: "hwpt_id", offset: 16, type: "u32" },
    { name: "out_viommu_id", offset: 20, type: "u32" },
    { name: "data_len", offset: 24, type: "u32" },
    { name: "__reserved", offset: 28, type: "u32" },
    { name: "data_uptr", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_VDEVICE_ALLOC_LAYOUT = {
  name: "iommu_vdevice_alloc",
  size: 24,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "viommu_id", offset: 4, type: "u32" },
    { name: "dev_id", offset: 8, type: "u32" },
    { name: "out_vdevice_id", offset: 12, type: "u32" },
    { name: "virt_id", offset: 16, type: "aligned_u64" },
  ],
} as const satisfies Layout;

export const IOMMU_IOAS_CHANGE_PROCESS_LAYOUT = {
  name: "iommu_ioas_change_process",
  size: 8,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "__reserved", offset: 4, type: "u32" },
  ],
} as const satisfies Layout;

/** Header in front of every record read() from a vEVENTQ fd. */
export const IOMMUFD_VEVENT_HEADER_LAYOUT = {
  name: "iommufd_vevent_header",
  size: 8,
  align: 4,
  fields: [
    { name: "flags", offset: 0, type: "u32" },
    { name: "sequence", offset: 4, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_VEVENT_ARM_SMMUV3_LAYOUT = {
  name: "iommu_vevent_arm_smmuv3",
  size: 32,
  align: 8,
  fields: [{ name: "evt", offset: 0, type: "aligned_le64", count: 4 }],
} as const satisfies Layout;

export const IOMMU_VEVENT_TEGRA241_CMDQV_LAYOUT = {
  name: "iommu_vevent_tegra241_cmdqv",
  size: 16,
  align: 8,
  fields: [{ name: "lvcmdq_err_map", offset: 0, type: "aligned_le64", count: 2 }],
} as const satisfies Layout;

export const IOMMU_VEVENTQ_ALLOC_LAYOUT = {
  name: "iommu_veventq_alloc",
  size: 32,
  align: 4,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "viommu_id", offset: 8, type: "u32" },
    { name: "type", offset: 12, type: "u32" },
    { name: "veventq_depth", offset: 16, type: "u32" },
    { name: "out_veventq_id", offset: 20, type: "u32" },
    { name: "out_veventq_fd", offset: 24, type: "u32" },
    { name: "__reserved", offset: 28, type: "u32" },
  ],
} as const satisfies Layout;

export const IOMMU_HW_QUEUE_ALLOC_LAYOUT = {
  name: "iommu_hw_queue_alloc",
  size: 40,
  align: 8,
  fields: [
    { name: "size", offset: 0, type: "u32" },
    { name: "flags", offset: 4, type: "u32" },
    { name: "viommu_id", offset: 8, type: "u32" },
    { name: "type", offset: 12, type: "u32" },
    { name: "index", offset: 16, type: "u32" },
    { name: "out_hw_queue_id", offset: 20, type: "u32" },
    { name: "nesting_parent_iova", offset: 24, type: "aligned_u64" },
    { name: "length", offset: 32, type: "aligned_u64" },
  ],
} as const satisfies Layout;

/** Every iommufd.h struct layout, for table-driven checks. */
export const IOMMUFD_LAYOUTS: readonly Layout[] = [
  IOMMU_DESTROY_LAYOUT,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOVA_RANGE_LAYOUT,
  IOMMU_IOAS_IOVA_RANGES_LAYOUT,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_IOAS_NOIOMMU_GET_PA_LAYOUT,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_COPY_LAYOUT,
  IOMMU_IOAS_UNMAP_LAYOUT,
  IOMMU_OPTION_LAYOUT,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_HWPT_VTD_S1_LAYOUT,
  IOMMU_HWPT_ARM_SMMUV3_LAYOUT,
  IOMMU_HWPT_AMD_GUEST_LAYOUT,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HW_INFO_VTD_LAYOUT,
  IOMMU_HW_INFO_ARM_SMMUV3_LAYOUT,
  IOMMU_HW_INFO_TEGRA241_CMDQV_LAYOUT,
  IOMMU_HW_INFO_AMD_LAYOUT,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_VTD_S1_INVALIDATE_LAYOUT,
  IOMMU_VIOMMU_ARM_SMMUV3_INVALIDATE_LAYOUT,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_HWPT_PGFAULT_LAYOUT,
  IOMMU_HWPT_PAGE_RESPONSE_LAYOUT,
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_VIOMMU_TEGRA241_CMDQV_LAYOUT,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
  IOMMUFD_VEVENT_HEADER_LAYOUT,
  IOMMU_VEVENT_ARM_SMMUV3_LAYOUT,
  IOMMU_VEVENT_TEGRA241_CMDQV_LAYOUT,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_HW_QUEUE_ALLOC_LAYOUT,
];

/** One ioctl of the iommufd file: the command number and what main.c's IOCTL_OP says of it. */
export interface IoctlSpec<L extends Layout = Layout> {
  readonly nr: number;
  readonly name: string;
  readonly layout: L;
  /** The member whose end is min_size (the last member of the ioctl's first version). */
  readonly lastMember: string;
  /** offsetofend(layout, lastMember). */
  readonly minSize: number;
}

function spec<L extends Layout>(nr: number, name: string, layout: L, last: string): IoctlSpec<L> {
  return { nr, name, layout, lastMember: last, minSize: offsetOfEnd(layout, last) };
}

/**
 * The iommufd ioctls with their min_size member, per IOCTL_OP() in main.c.
 * IOAS_NOIOMMU_GET_PA's entry could not be read at the reference commit; `out_phys` (the last
 * member of the struct as introduced) follows the rule every other entry obeys. See
 * docs/CONFORMANCE.md.
 */
export const IOMMUFD_IOCTLS = {
  DESTROY: spec(IOMMUFD_CMD.DESTROY, "IOMMU_DESTROY", IOMMU_DESTROY_LAYOUT, "id"),
  IOAS_ALLOC: spec(
    IOMMUFD_CMD.IOAS_ALLOC,
    "IOMMU_IOAS_ALLOC",
    IOMMU_IOAS_ALLOC_LAYOUT,
    "out_ioas_id",
  ),
  IOAS_ALLOW_IOVAS: spec(
    IOMMUFD_CMD.IOAS_ALLOW_IOVAS,
    "IOMMU_IOAS_ALLOW_IOVAS",
    IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
    "allowed_iovas",
  ),
  IOAS_COPY: spec(IOMMUFD_CMD.IOAS_COPY, "IOMMU_IOAS_COPY", IOMMU_IOAS_COPY_LAYOUT, "src_iova"),
  IOAS_IOVA_RANGES: spec(
    IOMMUFD_CMD.IOAS_IOVA_RANGES,
    "IOMMU_IOAS_IOVA_RANGES",
    IOMMU_IOAS_IOVA_RANGES_LAYOUT,
    "out_iova_alignment",
  ),
  IOAS_MAP: spec(IOMMUFD_CMD.IOAS_MAP, "IOMMU_IOAS_MAP", IOMMU_IOAS_MAP_LAYOUT, "iova"),
  IOAS_UNMAP: spec(IOMMUFD_CMD.IOAS_UNMAP, "IOMMU_IOAS_UNMAP", IOMMU_IOAS_UNMAP_LAYOUT, "length"),
  OPTION: spec(IOMMUFD_CMD.OPTION, "IOMMU_OPTION", IOMMU_OPTION_LAYOUT, "val64"),
  VFIO_IOAS: spec(IOMMUFD_CMD.VFIO_IOAS, "IOMMU_VFIO_IOAS", IOMMU_VFIO_IOAS_LAYOUT, "__reserved"),
  HWPT_ALLOC: spec(
    IOMMUFD_CMD.HWPT_ALLOC,
    "IOMMU_HWPT_ALLOC",
    IOMMU_HWPT_ALLOC_LAYOUT,
    "__reserved",
  ),
  GET_HW_INFO: spec(
    IOMMUFD_CMD.GET_HW_INFO,
    "IOMMU_GET_HW_INFO",
    IOMMU_HW_INFO_LAYOUT,
    "__reserved",
  ),
  HWPT_SET_DIRTY_TRACKING: spec(
    IOMMUFD_CMD.HWPT_SET_DIRTY_TRACKING,
    "IOMMU_HWPT_SET_DIRTY_TRACKING",
    IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
    "__reserved",
  ),
  HWPT_GET_DIRTY_BITMAP: spec(
    IOMMUFD_CMD.HWPT_GET_DIRTY_BITMAP,
    "IOMMU_HWPT_GET_DIRTY_BITMAP",
    IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
    "data",
  ),
  HWPT_INVALIDATE: spec(
    IOMMUFD_CMD.HWPT_INVALIDATE,
    "IOMMU_HWPT_INVALIDATE",
    IOMMU_HWPT_INVALIDATE_LAYOUT,
    "__reserved",
  ),
  FAULT_QUEUE_ALLOC: spec(
    IOMMUFD_CMD.FAULT_QUEUE_ALLOC,
    "IOMMU_FAULT_QUEUE_ALLOC",
    IOMMU_FAULT_ALLOC_LAYOUT,
    "out_fault_fd",
  ),
  IOAS_MAP_FILE: spec(
    IOMMUFD_CMD.IOAS_MAP_FILE,
    "IOMMU_IOAS_MAP_FILE",
    IOMMU_IOAS_MAP_FILE_LAYOUT,
    "iova",
  ),
  VIOMMU_ALLOC: spec(
    IOMMUFD_CMD.VIOMMU_ALLOC,
    "IOMMU_VIOMMU_ALLOC",
    IOMMU_VIOMMU_ALLOC_LAYOUT,
    "out_viommu_id",
  ),
  VDEVICE_ALLOC: spec(
    IOMMUFD_CMD.VDEVICE_ALLOC,
    "IOMMU_VDEVICE_ALLOC",
    IOMMU_VDEVICE_ALLOC_LAYOUT,
    "virt_id",
  ),
  IOAS_CHANGE_PROCESS: spec(
    IOMMUFD_CMD.IOAS_CHANGE_PROCESS,
    "IOMMU_IOAS_CHANGE_PROCESS",
    IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
    "__reserved",
  ),
  VEVENTQ_ALLOC: spec(
    IOMMUFD_CMD.VEVENTQ_ALLOC,
    "IOMMU_VEVENTQ_ALLOC",
    IOMMU_VEVENTQ_ALLOC_LAYOUT,
    "out_veventq_fd",
  ),
  HW_QUEUE_ALLOC: spec(
    IOMMUFD_CMD.HW_QUEUE_ALLOC,
    "IOMMU_HW_QUEUE_ALLOC",
    IOMMU_HW_QUEUE_ALLOC_LAYOUT,
    "length",
  ),
  IOAS_NOIOMMU_GET_PA: spec(
    IOMMUFD_CMD.IOAS_NOIOMMU_GET_PA,
    "IOMMU_IOAS_NOIOMMU_GET_PA",
    IOMMU_IOAS_NOIOMMU_GET_PA_LAYOUT,
    "out_phys",
  ),
  TEST_CMD: spec(IOMMU_TEST_CMD_NR, "IOMMU_TEST_CMD", IOMMU_TEST_CMD_LAYOUT, "last"),
} as const;

/**
 * Layouts of drivers/iommu/iommufd/iommufd_test.h (the selftest mock driver's uAPI) for x86-64:
 * struct iommu_test_cmd with one union member per IOMMU_TEST_OP, and the driver-data structs
 * the mock IOMMU accepts through HWPT_ALLOC, HWPT_INVALIDATE, GET_HW_INFO, VIOMMU_ALLOC and
 * returns in vEVENTs. Reference: torvalds/linux @8c4dc1a5 (see docs/CONFORMANCE.md).
 *
 * The union members are anonymous struct types in C; each gets a layout here whose offsets are
 * relative to the union, which sits at offset 16 of iommu_test_cmd.
 *
 * Op 24, IOMMU_TEST_OP_MD_CHECK_DMABUF with its `check_dmabuf` member, comes from the 2026 patch
 * "iommufd/selftest: Check multi-phys DMA-buf scenarios" (the selftest's dmabuf_multi_page test
 * uses it).
 */
import { IOMMU_TEST_OP } from "./ioctl.ts";
import type { Layout } from "./layout.ts";

/** IOMMU_TEST_OP_MD_CHECK_DMABUF: compare a mock domain's translations with a test dma-buf. */
export const IOMMU_TEST_OP_MD_CHECK_DMABUF = IOMMU_TEST_OP.MD_CHECK_DMABUF;

const u32 = (name: string, offset: number) => ({ name, offset, type: "u32" }) as const;
const u64 = (name: string, offset: number) => ({ name, offset, type: "aligned_u64" }) as const;

export const TEST_ADD_RESERVED = {
  name: "iommu_test_cmd.add_reserved",
  size: 16,
  align: 8,
  fields: [u64("start", 0), u64("length", 8)],
} as const satisfies Layout;

export const TEST_MOCK_DOMAIN = {
  name: "iommu_test_cmd.mock_domain",
  size: 12,
  align: 4,
  fields: [u32("out_stdev_id", 0), u32("out_hwpt_id", 4), u32("out_idev_id", 8)],
} as const satisfies Layout;

export const TEST_MOCK_DOMAIN_FLAGS = {
  name: "iommu_test_cmd.mock_domain_flags",
  size: 16,
  align: 4,
  fields: [
    u32("out_stdev_id", 0),
    u32("out_hwpt_id", 4),
    u32("out_idev_id", 8),
    u32("dev_flags", 12),
  ],
} as const satisfies Layout;

export const TEST_MOCK_DOMAIN_REPLACE = {
  name: "iommu_test_cmd.mock_domain_replace",
  size: 4,
  align: 4,
  fields: [u32("pt_id", 0)],
} as const satisfies Layout;

export const TEST_CHECK_MAP = {
  name: "iommu_test_cmd.check_map",
  size: 24,
  align: 8,
  fields: [u64("iova", 0), u64("length", 8), u64("uptr", 16)],
} as const satisfies Layout;

/** 20 bytes of members padded to 24 by the 8-byte alignment. */
export const TEST_CHECK_REFS = {
  name: "iommu_test_cmd.check_refs",
  size: 24,
  align: 8,
  fields: [u64("length", 0), u64("uptr", 8), u32("refs", 16)],
} as const satisfies Layout;

export const TEST_CREATE_ACCESS = {
  name: "iommu_test_cmd.create_access",
  size: 8,
  align: 4,
  fields: [u32("out_access_fd", 0), u32("flags", 4)],
} as const satisfies Layout;

export const TEST_DESTROY_ACCESS_PAGES = {
  name: "iommu_test_cmd.destroy_access_pages",
  size: 4,
  align: 4,
  fields: [u32("access_pages_id", 0)],
} as const satisfies Layout;

export const TEST_ACCESS_PAGES = {
  name: "iommu_test_cmd.access_pages",
  size: 32,
  align: 8,
  fields: [
    u32("flags", 0),
    u32("out_access_pages_id", 4),
    u64("iova", 8),
    u64("length", 16),
    u64("uptr", 24),
  ],
} as const satisfies Layout;

/** 28 bytes of members padded to 32. */
export const TEST_ACCESS_RW = {
  name: "iommu_test_cmd.access_rw",
  size: 32,
  align: 8,
  fields: [u64("iova", 0), u64("length", 8), u64("uptr", 16), u32("flags", 24)],
} as const satisfies Layout;

export const TEST_MEMORY_LIMIT = {
  name: "iommu_test_cmd.memory_limit",
  size: 4,
  align: 4,
  fields: [u32("limit", 0)],
} as const satisfies Layout;

export const TEST_ACCESS_REPLACE_IOAS = {
  name: "iommu_test_cmd.access_replace_ioas",
  size: 4,
  align: 4,
  fields: [u32("ioas_id", 0)],
} as const satisfies Layout;

/** `flags` is followed by 4 bytes of padding before the 8-byte aligned iova. */
export const TEST_DIRTY = {
  name: "iommu_test_cmd.dirty",
  size: 48,
  align: 8,
  fields: [
    u32("flags", 0),
    u64("iova", 8),
    u64("length", 16),
    u64("page_size", 24),
    u64("uptr", 32),
    u64("out_nr_dirty", 40),
  ],
} as const satisfies Layout;

export const TEST_CHECK_IOTLB = {
  name: "iommu_test_cmd.check_iotlb",
  size: 8,
  align: 4,
  fields: [u32("id", 0), u32("iotlb", 4)],
} as const satisfies Layout;

/** `addr` is a plain __u64 (8-byte aligned on x86-64). */
export const TEST_TRIGGER_IOPF = {
  name: "iommu_test_cmd.trigger_iopf",
  size: 24,
  align: 8,
  fields: [
    u32("dev_id", 0),
    u32("pasid", 4),
    u32("grpid", 8),
    u32("perm", 12),
    { name: "addr", offset: 16, type: "u64" },
  ],
} as const satisfies Layout;

export const TEST_CHECK_DEV_CACHE = {
  name: "iommu_test_cmd.check_dev_cache",
  size: 8,
  align: 4,
  fields: [u32("id", 0), u32("cache", 4)],
} as const satisfies Layout;

export const TEST_TRIGGER_VEVENT = {
  name: "iommu_test_cmd.trigger_vevent",
  size: 4,
  align: 4,
  fields: [u32("dev_id", 0)],
} as const satisfies Layout;

/** `id` of the command is the selftest device (stdev) for the four PASID ops. */
export const TEST_PASID_ATTACH = {
  name: "iommu_test_cmd.pasid_attach",
  size: 8,
  align: 4,
  fields: [u32("pasid", 0), u32("pt_id", 4)],
} as const satisfies Layout;

export const TEST_PASID_REPLACE = {
  name: "iommu_test_cmd.pasid_replace",
  size: 8,
  align: 4,
  fields: [u32("pasid", 0), u32("pt_id", 4)],
} as const satisfies Layout;

export const TEST_PASID_DETACH = {
  name: "iommu_test_cmd.pasid_detach",
  size: 4,
  align: 4,
  fields: [u32("pasid", 0)],
} as const satisfies Layout;

export const TEST_PASID_CHECK = {
  name: "iommu_test_cmd.pasid_check",
  size: 8,
  align: 4,
  fields: [u32("pasid", 0), u32("hwpt_id", 4)],
} as const satisfies Layout;

export const TEST_DMABUF_GET = {
  name: "iommu_test_cmd.dmabuf_get",
  size: 8,
  align: 4,
  fields: [u32("length", 0), u32("open_flags", 4)],
} as const satisfies Layout;

export const TEST_DMABUF_REVOKE = {
  name: "iommu_test_cmd.dmabuf_revoke",
  size: 8,
  align: 4,
  fields: [{ name: "dmabuf_fd", offset: 0, type: "s32" }, u32("revoked", 4)],
} as const satisfies Layout;

/** `dmabuf_fd` is followed by 4 bytes of padding before the 8-byte aligned iova. */
export const TEST_CHECK_DMABUF = {
  name: "iommu_test_cmd.check_dmabuf",
  size: 32,
  align: 8,
  fields: [
    { name: "dmabuf_fd", offset: 0, type: "s32" },
    u64("iova", 8),
    u64("length", 16),
    u64("offset", 24),
  ],
} as const satisfies Layout;

/** Offset of the anonymous union inside iommu_test_cmd. */
export const TEST_CMD_UNION_OFFSET = 16;

const member = <N extends string, L extends Layout>(name: N, layout: L) =>
  ({ name, offset: TEST_CMD_UNION_OFFSET, type: "struct", layout }) as const;

/**
 * struct iommu_test_cmd: {size, op, id, __reserved, union {...}, last}. The union is as large
 * as its largest member (dirty, 48 bytes), so `last` sits at 64 and the struct is 72 bytes.
 * Decoding picks the union member named by `op`.
 */
export const IOMMU_TEST_CMD_LAYOUT = {
  name: "iommu_test_cmd",
  size: 72,
  align: 8,
  fields: [
    u32("size", 0),
    u32("op", 4),
    u32("id", 8),
    u32("__reserved", 12),
    {
      name: "",
      offset: TEST_CMD_UNION_OFFSET,
      type: "union",
      size: 48,
      members: [
        member("add_reserved", TEST_ADD_RESERVED),
        member("mock_domain", TEST_MOCK_DOMAIN),
        member("mock_domain_flags", TEST_MOCK_DOMAIN_FLAGS),
        member("mock_domain_replace", TEST_MOCK_DOMAIN_REPLACE),
        member("check_map", TEST_CHECK_MAP),
        member("check_refs", TEST_CHECK_REFS),
        member("create_access", TEST_CREATE_ACCESS),
        member("destroy_access_pages", TEST_DESTROY_ACCESS_PAGES),
        member("access_pages", TEST_ACCESS_PAGES),
        member("access_rw", TEST_ACCESS_RW),
        member("memory_limit", TEST_MEMORY_LIMIT),
        member("access_replace_ioas", TEST_ACCESS_REPLACE_IOAS),
        member("dirty", TEST_DIRTY),
        member("check_iotlb", TEST_CHECK_IOTLB),
        member("trigger_iopf", TEST_TRIGGER_IOPF),
        member("check_dev_cache", TEST_CHECK_DEV_CACHE),
        member("trigger_vevent", TEST_TRIGGER_VEVENT),
        member("pasid_attach", TEST_PASID_ATTACH),
        member("pasid_replace", TEST_PASID_REPLACE),
        member("pasid_detach", TEST_PASID_DETACH),
        member("pasid_check", TEST_PASID_CHECK),
        member("dmabuf_get", TEST_DMABUF_GET),
        member("dmabuf_revoke", TEST_DMABUF_REVOKE),
        member("check_dmabuf", TEST_CHECK_DMABUF),
      ],
      selector: {
        field: "op",
        // Which union member each op reads, as selftest.c's iommufd_test() dispatches them.
        cases: {
          [IOMMU_TEST_OP.ADD_RESERVED]: "add_reserved",
          [IOMMU_TEST_OP.MOCK_DOMAIN]: "mock_domain",
          [IOMMU_TEST_OP.MD_CHECK_MAP]: "check_map",
          [IOMMU_TEST_OP.MD_CHECK_REFS]: "check_refs",
          [IOMMU_TEST_OP.CREATE_ACCESS]: "create_access",
          [IOMMU_TEST_OP.DESTROY_ACCESS_PAGES]: "destroy_access_pages",
          [IOMMU_TEST_OP.ACCESS_PAGES]: "access_pages",
          [IOMMU_TEST_OP.ACCESS_RW]: "access_rw",
          [IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT]: "memory_limit",
          [IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE]: "mock_domain_replace",
          [IOMMU_TEST_OP.ACCESS_REPLACE_IOAS]: "access_replace_ioas",
          [IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS]: "mock_domain_flags",
          [IOMMU_TEST_OP.DIRTY]: "dirty",
          [IOMMU_TEST_OP.MD_CHECK_IOTLB]: "check_iotlb",
          [IOMMU_TEST_OP.TRIGGER_IOPF]: "trigger_iopf",
          [IOMMU_TEST_OP.DEV_CHECK_CACHE]: "check_dev_cache",
          [IOMMU_TEST_OP.TRIGGER_VEVENT]: "trigger_vevent",
          [IOMMU_TEST_OP.PASID_ATTACH]: "pasid_attach",
          [IOMMU_TEST_OP.PASID_REPLACE]: "pasid_replace",
          [IOMMU_TEST_OP.PASID_DETACH]: "pasid_detach",
          [IOMMU_TEST_OP.PASID_CHECK_HWPT]: "pasid_check",
          [IOMMU_TEST_OP.DMABUF_GET]: "dmabuf_get",
          [IOMMU_TEST_OP.DMABUF_REVOKE]: "dmabuf_revoke",
          [IOMMU_TEST_OP_MD_CHECK_DMABUF]: "check_dmabuf",
        },
      },
    },
    u32("last", 64),
  ],
} as const satisfies Layout;

/** Data of GET_HW_INFO with type IOMMU_HW_INFO_TYPE_SELFTEST. */
export const IOMMU_TEST_HW_INFO_LAYOUT = {
  name: "iommu_test_hw_info",
  size: 8,
  align: 4,
  fields: [u32("flags", 0), u32("test_reg", 4)],
} as const satisfies Layout;

/** HWPT_ALLOC data of type IOMMU_HWPT_DATA_SELFTEST (its minimum length ends at `iotlb`). */
export const IOMMU_HWPT_SELFTEST_LAYOUT = {
  name: "iommu_hwpt_selftest",
  size: 8,
  align: 4,
  fields: [u32("iotlb", 0), u32("pagetable_type", 4)],
} as const satisfies Layout;

/** HWPT_INVALIDATE entry of type IOMMU_HWPT_INVALIDATE_DATA_SELFTEST. */
export const IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT = {
  name: "iommu_hwpt_invalidate_selftest",
  size: 8,
  align: 4,
  fields: [u32("flags", 0), u32("iotlb_id", 4)],
} as const satisfies Layout;

/** VIOMMU_ALLOC data of type IOMMU_VIOMMU_TYPE_SELFTEST. */
export const IOMMU_VIOMMU_SELFTEST_LAYOUT = {
  name: "iommu_viommu_selftest",
  size: 24,
  align: 8,
  fields: [
    u32("in_data", 0),
    u32("out_data", 4),
    u64("out_mmap_offset", 8),
    u64("out_mmap_length", 16),
  ],
} as const satisfies Layout;

/** HWPT_INVALIDATE entry for a vIOMMU, type IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST. */
export const IOMMU_VIOMMU_INVALIDATE_SELFTEST_LAYOUT = {
  name: "iommu_viommu_invalidate_selftest",
  size: 12,
  align: 4,
  fields: [u32("flags", 0), u32("vdev_id", 4), u32("cache_id", 8)],
} as const satisfies Layout;

/** vEVENT payload of type IOMMU_VEVENTQ_TYPE_SELFTEST. */
export const IOMMU_VIOMMU_EVENT_SELFTEST_LAYOUT = {
  name: "iommu_viommu_event_selftest",
  size: 4,
  align: 4,
  fields: [u32("virt_id", 0)],
} as const satisfies Layout;

/** Every iommufd_test.h layout, union members included, for table-driven checks. */
export const TEST_LAYOUTS: readonly Layout[] = [
  IOMMU_TEST_CMD_LAYOUT,
  TEST_ADD_RESERVED,
  TEST_MOCK_DOMAIN,
  TEST_MOCK_DOMAIN_FLAGS,
  TEST_MOCK_DOMAIN_REPLACE,
  TEST_CHECK_MAP,
  TEST_CHECK_REFS,
  TEST_CREATE_ACCESS,
  TEST_DESTROY_ACCESS_PAGES,
  TEST_ACCESS_PAGES,
  TEST_ACCESS_RW,
  TEST_MEMORY_LIMIT,
  TEST_ACCESS_REPLACE_IOAS,
  TEST_DIRTY,
  TEST_CHECK_IOTLB,
  TEST_TRIGGER_IOPF,
  TEST_CHECK_DEV_CACHE,
  TEST_TRIGGER_VEVENT,
  TEST_PASID_ATTACH,
  TEST_PASID_REPLACE,
  TEST_PASID_DETACH,
  TEST_PASID_CHECK,
  TEST_DMABUF_GET,
  TEST_DMABUF_REVOKE,
  TEST_CHECK_DMABUF,
  IOMMU_TEST_HW_INFO_LAYOUT,
  IOMMU_HWPT_SELFTEST_LAYOUT,
  IOMMU_HWPT_INVALIDATE_SELFTEST_LAYOUT,
  IOMMU_VIOMMU_SELFTEST_LAYOUT,
  IOMMU_VIOMMU_INVALIDATE_SELFTEST_LAYOUT,
  IOMMU_VIOMMU_EVENT_SELFTEST_LAYOUT,
];

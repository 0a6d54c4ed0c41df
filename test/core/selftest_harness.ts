/**
 * Drives IOMMU_TEST_CMD the way the kernel selftest does: the 72-byte iommu_test_cmd is encoded
 * into the fake process's memory and its address passed to the context's ioctl entry, so the
 * codec's size and write-back rules apply. Importing this module loads the selftest ioctl (and
 * with it the IOAS, device and HWPT ioctls).
 */
import "../../src/core/selftest.ts";
import { IommufdContext } from "../../src/core/context.ts";
import { FailNth } from "../../src/core/fail_nth.ts";
import { FakeProcess } from "../../src/core/user_mm.ts";
import {
  decode,
  encode,
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_LAYOUT,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_LAYOUT,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT,
  IOMMU_TEST_CMD,
  IOMMU_TEST_CMD_LAYOUT,
  IOMMU_TEST_OP,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
} from "../../src/uapi/index.ts";
import { Harness, PAGE } from "./helpers/ioctl_harness.ts";

export const OP = IOMMU_TEST_OP;
export const TEST_CMD_SIZE = IOMMU_TEST_CMD_LAYOUT.size;

/** Union member of each op, as iommufd_test.h names them. */
const MEMBER: Record<number, string> = {
  [OP.ADD_RESERVED]: "add_reserved",
  [OP.MOCK_DOMAIN]: "mock_domain",
  [OP.MD_CHECK_MAP]: "check_map",
  [OP.MD_CHECK_REFS]: "check_refs",
  [OP.CREATE_ACCESS]: "create_access",
  [OP.DESTROY_ACCESS_PAGES]: "destroy_access_pages",
  [OP.ACCESS_PAGES]: "access_pages",
  [OP.ACCESS_RW]: "access_rw",
  [OP.SET_TEMP_MEMORY_LIMIT]: "memory_limit",
  [OP.MOCK_DOMAIN_REPLACE]: "mock_domain_replace",
  [OP.ACCESS_REPLACE_IOAS]: "access_replace_ioas",
  [OP.MOCK_DOMAIN_FLAGS]: "mock_domain_flags",
  [OP.DIRTY]: "dirty",
  [OP.MD_CHECK_IOTLB]: "check_iotlb",
  [OP.TRIGGER_IOPF]: "trigger_iopf",
  [OP.DEV_CHECK_CACHE]: "check_dev_cache",
  [OP.TRIGGER_VEVENT]: "trigger_vevent",
  [OP.PASID_ATTACH]: "pasid_attach",
  [OP.PASID_REPLACE]: "pasid_replace",
  [OP.PASID_DETACH]: "pasid_detach",
  [OP.PASID_CHECK_HWPT]: "pasid_check",
  [OP.DMABUF_GET]: "dmabuf_get",
  [OP.DMABUF_REVOKE]: "dmabuf_revoke",
  [IOMMU_TEST_OP_MD_CHECK_DMABUF]: "check_dmabuf",
};

/** What one test command returned. */
export interface TestResult {
  errno: number;
  /** The ioctl's return value (DMABUF_GET's fd). */
  value: number;
  /** The union member as it reads back from user memory. */
  out: Record<string, number | bigint>;
  /** The whole struct as it reads back. */
  raw: Uint8Array;
}

export interface MockDomainIds {
  stdev: number;
  hwpt: number;
  idev: number;
}

export class SelftestHarness extends Harness {
  private readonly cmdVa: bigint;

  constructor(proc: FakeProcess = new FakeProcess(), ctx?: IommufdContext) {
    super(proc, ctx ?? new IommufdContext(new FailNth()));
    this.cmdVa = proc.mmap(PAGE);
  }

  /**
   * IOMMU_TEST_CMD `op` on `id` with the union member `arg`. `size` overrides the struct size
   * the caller claims; `at` places the struct elsewhere (a read-only page, an unmapped one).
   */
  test(
    op: number,
    id: number,
    arg: Record<string, number | bigint> = {},
    opts: { size?: number; at?: bigint; reserved?: number; bytes?: number } = {},
  ): TestResult {
    const at = opts.at ?? this.cmdVa;
    const bytes = opts.bytes ?? TEST_CMD_SIZE;
    const buf = new Uint8Array(Math.max(bytes, TEST_CMD_SIZE));
    const member = MEMBER[op];
    const fields: Record<string, unknown> = {
      size: opts.size ?? TEST_CMD_SIZE,
      op,
      id,
      __reserved: opts.reserved ?? 0,
    };
    if (member !== undefined) fields[member] = arg;
    encode(IOMMU_TEST_CMD_LAYOUT, fields as never, buf);
    this.proc.write(at, buf.subarray(0, bytes));
    const r = this.ctx.ioctl(IOMMU_TEST_CMD, at, this.proc);
    const back = new Uint8Array(TEST_CMD_SIZE);
    this.proc.read(at, back);
    const decoded = decode(IOMMU_TEST_CMD_LAYOUT, back) as Record<string, unknown>;
    const out = (member !== undefined ? decoded[member] : undefined) ?? {};
    return {
      errno: r.errno,
      value: r.value,
      out: out as Record<string, number | bigint>,
      raw: back,
    };
  }

  /** MOCK_DOMAIN (or MOCK_DOMAIN_FLAGS with `flags`) on `ptId`, expecting success. */
  mockDomain(ptId: number, flags?: number): MockDomainIds {
    const r =
      flags === undefined
        ? this.test(OP.MOCK_DOMAIN, ptId)
        : this.test(OP.MOCK_DOMAIN_FLAGS, ptId, { dev_flags: flags });
    if (r.errno !== 0) throw new Error(`MOCK_DOMAIN failed: ${r.errno}`);
    return {
      stdev: Number(r.out.out_stdev_id),
      hwpt: Number(r.out.out_hwpt_id),
      idev: Number(r.out.out_idev_id),
    };
  }

  /** CREATE_ACCESS expecting success: the access fd. */
  createAccess(ioasId: number, flags = 0): number {
    const r = this.test(OP.CREATE_ACCESS, ioasId, { flags });
    if (r.errno !== 0) throw new Error(`CREATE_ACCESS failed: ${r.errno}`);
    return Number(r.out.out_access_fd);
  }

  /** ACCESS_PAGES: errno and the item id. */
  accessPages(
    fd: number,
    iova: bigint,
    length: bigint | number,
    uptr: bigint,
    flags = 0,
  ): { errno: number; id: number } {
    const r = this.test(OP.ACCESS_PAGES, fd, { flags, iova, length: BigInt(length), uptr });
    return { errno: r.errno, id: Number(r.out.out_access_pages_id) };
  }

  /** MD_CHECK_REFS of [va, va + length): the errno (0 when every page has `refs` pins). */
  checkRefs(va: bigint, length: bigint | number, refs: number): number {
    return this.test(OP.MD_CHECK_REFS, 0, { length: BigInt(length), uptr: va, refs }).errno;
  }

  /** MD_CHECK_MAP of `hwptId` at `iova` against the user memory at `va`. */
  checkMap(hwptId: number, iova: bigint, length: bigint | number, va: bigint): number {
    return this.test(OP.MD_CHECK_MAP, hwptId, { iova, length: BigInt(length), uptr: va }).errno;
  }

  destroy(id: number): number {
    return this.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno;
  }

  /** User memory holding `words` as little-endian u32s (a fresh page). */
  words(words: number[]): bigint {
    const va = this.proc.mmap(PAGE);
    const b = new Uint8Array(words.length * 4);
    const v = new DataView(b.buffer);
    for (const [i, w] of words.entries()) v.setUint32(i * 4, w >>> 0, true);
    this.proc.write(va, b);
    return va;
  }

  /** HWPT_ALLOC with optional selftest data (u32 words); the errno and the new id. */
  hwptAlloc(
    devId: number,
    ptId: number,
    flags = 0,
    data?: number[],
    faultId = 0,
  ): { errno: number; id: number } {
    const r = this.call(IOMMU_HWPT_ALLOC, IOMMU_HWPT_ALLOC_LAYOUT, {
      flags,
      dev_id: devId,
      pt_id: ptId,
      data_type: data !== undefined ? 0xdead : 0,
      data_len: data !== undefined ? data.length * 4 : 0,
      data_uptr: data !== undefined ? this.words(data) : 0n,
      fault_id: faultId,
    });
    return { errno: r.errno, id: r.out.out_hwpt_id };
  }

  hwptAllocOk(devId: number, ptId: number, flags = 0, data?: number[]): number {
    const r = this.hwptAlloc(devId, ptId, flags, data);
    if (r.errno !== 0) throw new Error(`HWPT_ALLOC failed: ${r.errno}`);
    return r.id;
  }

  setDirtyTracking(hwptId: number, enable: boolean): number {
    return this.call(IOMMU_HWPT_SET_DIRTY_TRACKING, IOMMU_HWPT_SET_DIRTY_TRACKING_LAYOUT, {
      flags: enable ? 1 : 0,
      hwpt_id: hwptId,
    }).errno;
  }

  getDirtyBitmap(hwptId: number, iova: bigint, length: bigint, pageSize: bigint, data: bigint) {
    return this.call(IOMMU_HWPT_GET_DIRTY_BITMAP, IOMMU_HWPT_GET_DIRTY_BITMAP_LAYOUT, {
      hwpt_id: hwptId,
      flags: 0,
      iova,
      length,
      page_size: pageSize,
      data,
    }).errno;
  }

  /** HWPT_INVALIDATE of selftest entries {flags, iotlb_id}: errno and entries handled. */
  invalidate(hwptId: number, entries: [number, number][]): { errno: number; num: number } {
    const words = entries.flat();
    const r = this.call(IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_INVALIDATE_LAYOUT, {
      hwpt_id: hwptId,
      data_uptr: this.words(words.length === 0 ? [0] : words),
      data_type: 0xdeadbeef,
      entry_len: 8,
      entry_num: entries.length,
    });
    return { errno: r.errno, num: r.out.entry_num };
  }

  /** True when `id` names a live object (of `type` when given). */
  isLive(id: number, type?: number): boolean {
    const obj = this.ctx.table.peek(id);
    return obj !== undefined && (type === undefined || obj.type === type);
  }
}

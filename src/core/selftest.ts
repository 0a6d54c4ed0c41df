/**
 * IOMMU_TEST_CMD: the iommufd selftest's mock-driver ioctl (drivers/iommu/iommufd/selftest.c,
 * iommufd_test.h; spec mock-driver-failnth.md §1-§2). One ioctl, 24 ops picked by `op`:
 * creating mock devices bound and attached to this context (the SELFTEST object), checking
 * what a mock domain maps and what user pages have pinned, an in-kernel access driven from
 * user space through an "access fd", dirty-bit injection, checks of the mock's fake caches,
 * IOPF / vEVENT triggers, PASID attach ops, and a test dma-buf exporter.
 *
 * Files. The kernel hands out two kinds of file descriptors here: an access fd (CREATE_ACCESS;
 * the other access ops take it in `id`) and a dma-buf fd (DMABUF_GET). This model keeps them in
 * a per-context table of numbered handles: an unknown number is EBADFD for the access ops and
 * EBADF for DMABUF_REVOKE. Whoever owns the real descriptors (the daemon) chooses the numbers
 * through `setSelftestFdAllocator` and must call `closeSelftestFd` when one closes; closing an
 * access fd unpins everything the access pinned and destroys the ACCESS object. An open access
 * holds the iommufd file (mmap.ts ctxFileGet), as the kernel's access holds its context.
 *
 * TRIGGER_IOPF and TRIGGER_VEVENT are delivered through `selftestHooks`, which eventq.ts installs
 * when it loads (so this module does not import the FAULT / vEVENTQ area).
 *
 * dma-bufs: the test exporter follows the newest one, from the 2026 patch "iommufd/selftest:
 * Check multi-phys DMA-buf scenarios": the buffer is `length / PAGE` separately allocated pages
 * (no longer one contiguous allocation) handed to the importer as one physical range per page,
 * DMABUF_GET wants a whole number of pages, and MD_CHECK_DMABUF (op 24) compares a mock
 * domain's translations with the buffer's pages. IOAS_MAP_FILE imports these dma-bufs: this
 * module installs ioas.ts `dmabufFiles`, which tells MAP_FILE which fds are dma-bufs.
 * DMABUF_REVOKE notifies every importer each time it is called (either direction), as the
 * kernel's exporter does; iommufd takes any notification as a revoke.
 *
 * Facts used beyond the spec (read from selftest.c @4132ba2a): every object lookup goes
 * through iommufd_get_object (an injection site); the check order of each op below; the
 * allocations each op makes (each modelled as one fault-injection site, named after the
 * kernel allocation).
 */
import {
  EBADE,
  EBADF,
  EBADFD,
  EFAULT,
  EINVAL,
  EIO,
  EMFILE,
  ENODEV,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  ErrnoError,
} from "../errno.ts";
import { MockDevice, MockNestedDomain, MockPagingDomain, mockIommu } from "../hw/mock/index.ts";
import type { Ucmd } from "../uapi/dispatch.ts";
import {
  IOMMU_TEST_OP,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_DEV_CACHE_ID_MAX,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
} from "../uapi/ioctl.ts";
import type { Decoded } from "../uapi/layout.ts";
import { IOMMUFD_IOCTLS } from "../uapi/structs.ts";
import { type IOMMU_TEST_CMD_LAYOUT, IOMMU_TEST_OP_MD_CHECK_DMABUF } from "../uapi/test_cmd.ts";
import {
  type AccessOps,
  accessAttach,
  accessCreate,
  accessDestroy,
  accessPinPages,
  accessReplace,
  accessRw,
  accessUnpinPages,
  type IommufdAccess,
} from "./access.ts";
import { type IoctlCall, type IommufdContext, registerIoctl } from "./context.ts";
import {
  getDevice,
  type IommufdDevice,
  iommufdDeviceAttach,
  iommufdDeviceBind,
  iommufdDeviceDetach,
  iommufdDeviceReplace,
  iommufdDeviceUnbind,
} from "./device.ts";
import {
  allocFailure,
  IOMMU_NO_PASID,
  iommuGetDomainForGroupPasid,
  type ViommuLink,
} from "./driver.ts";
import type { FailNth } from "./fail_nth.ts";
import { HwptNested, HwptPaging } from "./hwpt.ts";
import { ULONG_MAX } from "./io_pagetable.ts";
import { dmabufFiles, getIoas } from "./ioas.ts";
import { ctxFileGet, ctxFilePut } from "./mmap.ts";
import { IommufdObject, ObjType } from "./object.ts";
import type { Dmabuf, DmabufPhysRange } from "./pages.ts";
import { contiguousPages, PAGE_SIZE, type UserPage, type UserProcess } from "./user_mm.ts";

const PAGE = BigInt(PAGE_SIZE);
const U64_MASK = ULONG_MAX;
/** ACCESS_PAGES / ACCESS_RW refuse longer requests before anything else (kvzalloc guard). */
const ACCESS_MAX_LENGTH = 16n * 1024n * 1024n;
/** DIRTY: at most SZ_16M * BITS_PER_BYTE bits (the bound added by 4132ba2a). */
const DIRTY_MAX_BITS = 16n * 1024n * 1024n * 8n;
/** sizeof(unsigned long) + sizeof(u32): one element of the pfn batch. */
const MEMORY_LIMIT_MIN = 12;
/** DMABUF_GET: at most 512 pages. */
const DMABUF_MAX_PAGES = 512;

type TestCmd = Decoded<typeof IOMMU_TEST_CMD_LAYOUT>;
type TestUcmd = Ucmd<TestCmd>;

// ---- Module parameters ------------------------------------------------------------------------

/**
 * Module-global state of the selftest (shared by every context, as in the kernel).
 * `memoryLimit` is iommufd_test_memory_limit: SET_TEMP_MEMORY_LIMIT changes it; it only sizes
 * the kernel's temporary pfn batches, which this model does not size, so nothing reads it but
 * tests.
 */
export const selftestParams = { memoryLimit: 65536 };

// ---- The SELFTEST object ----------------------------------------------------------------------

/**
 * IOMMUFD_OBJ_SELFTEST of kind TYPE_IDEV (struct selftest_obj): a mock device MOCK_DOMAIN
 * created, bound to this context and attached at its RID. Its id is the "stdev id" of the
 * uAPI. Destroying it detaches the RID, unbinds (the DEVICE object goes) and deletes the mock
 * device.
 */
export class SelftestDeviceObject extends IommufdObject {
  readonly type = ObjType.SELFTEST;
  readonly ctx: IommufdContext;
  /** The mock device; null until created. */
  mdev: MockDevice | null = null;
  /** The DEVICE object of the binding; null until bound. */
  idev: IommufdDevice | null = null;

  constructor(ctx: IommufdContext) {
    super();
    this.ctx = ctx;
  }

  /** iommufd_selftest_destroy. */
  destroy(): void {
    if (this.idev !== null) {
      iommufdDeviceDetach(this.idev, IOMMU_NO_PASID);
      iommufdDeviceUnbind(this.idev);
      this.idev = null;
    }
    if (this.mdev !== null) mockIommu.destroyDevice(this.mdev);
    this.mdev = null;
  }

  /** The MOCK_DOMAIN handler undoes its own steps before the object is aborted. */
  override abort(): void {}
}

/**
 * iommufd_test_get_selftest_obj: the live SELFTEST object `id` (ENOENT otherwise; an injection
 * site). Throws ErrnoError.
 */
export function getSelftestDevice(ctx: IommufdContext, id: number): SelftestDeviceObject {
  const obj = ctx.table.get<SelftestDeviceObject>(id, ObjType.SELFTEST);
  if (obj.idev === null || obj.mdev === null)
    throw new ErrnoError(EINVAL, `selftest object ${id} is not a device`);
  return obj;
}

// ---- Selftest files (access fds and dma-bufs) -------------------------------------------------

/** Chooses descriptor numbers for the files this module hands out. */
export interface SelftestFdAllocator {
  /** A free descriptor number (reserved until released), or undefined when none is left. */
  alloc(): number | undefined;
  /** The number is free again (its file closed, or the reservation was dropped). */
  release(fd: number): void;
}

/** The first number the default allocator hands out (clear of a test process's own fds). */
export const SELFTEST_FD_BASE = 1024;

/** The default: the lowest free number from SELFTEST_FD_BASE, per context. */
class LowestFreeFds implements SelftestFdAllocator {
  private readonly used = new Set<number>();
  alloc(): number {
    let fd = SELFTEST_FD_BASE;
    while (this.used.has(fd)) fd++;
    this.used.add(fd);
    return fd;
  }
  release(fd: number): void {
    this.used.delete(fd);
  }
}

/** One pinned range of an access (struct selftest_access_item). */
export interface SelftestAccessItem {
  readonly iova: bigint;
  readonly length: bigint;
  /** Per access fd, from 0 upward, never reused. */
  readonly id: number;
}

/** The file behind an access fd (struct selftest_access). */
export class SelftestAccessFile {
  readonly kind = "access";
  readonly ctx: IommufdContext;
  /** Set once CREATE_ACCESS succeeded. */
  access: IommufdAccess | null = null;
  /** Created with MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES (the pinning ops). */
  readonly needsPinPages: boolean;
  readonly items: SelftestAccessItem[] = [];
  nextId = 0;
  /** The ops given to the core: unmap drops every intersecting item. */
  readonly ops: AccessOps;

  constructor(ctx: IommufdContext, needsPinPages: boolean) {
    this.ctx = ctx;
    this.needsPinPages = needsPinPages;
    this.ops = { needsPinPages, unmap: (iova, length) => this.unmap(iova, length) };
  }

  /** iommufd_test_access_unmap: unpins and forgets every item intersecting the range. */
  unmap(iova: bigint, length: bigint): void {
    const last = iova + length - 1n;
    for (let i = 0; i < this.items.length; ) {
      const item = this.items[i];
      if (iova > item.iova + item.length - 1n || last < item.iova) {
        i++;
        continue;
      }
      this.items.splice(i, 1);
      if (this.access !== null) accessUnpinPages(this.access, item.iova, item.length);
    }
  }

  /** iommufd_test_staccess_release: everything unpinned, the ACCESS object destroyed. */
  release(): void {
    const access = this.access;
    if (access === null) return;
    this.unmap(0n, ULONG_MAX);
    this.access = null;
    accessDestroy(access);
    ctxFilePut(this.ctx);
  }
}

/** A dma-buf from the test exporter (struct iommufd_test_dma_buf). */
export class SelftestDmabuf implements Dmabuf {
  readonly kind = "dmabuf";
  /** Bytes, a multiple of PAGE_SIZE, at most 512 pages. */
  readonly length: number;
  /**
   * Its zeroed pages, each allocated on its own (alloc_page per page). Handed out in descending
   * PFN order, so no two neighbours are physically contiguous: an importer that assumed one
   * contiguous range would map the wrong memory, as it could with real page allocations.
   */
  readonly pages: UserPage[];
  /** open_flags it was exported with. */
  readonly openFlags: number;
  /** DMABUF_REVOKE state: the exporter refuses to hand out its ranges while set (ENODEV). */
  revoked = false;
  /** The attached importers' move_notify callbacks (Dmabuf.importers). */
  readonly importers = new Set<() => void>();

  constructor(length: number, openFlags: number) {
    this.length = length;
    this.openFlags = openFlags;
    this.pages = contiguousPages(length / PAGE_SIZE).reverse();
  }

  /** dmabuf->size. */
  get size(): number {
    return this.length;
  }

  /**
   * iommufd_dma_pal_map_phys: ENODEV while revoked; otherwise the list (an allocation: ENOMEM
   * when `faults` fails it) of one PAGE_SIZE range per page, in buffer order.
   */
  mapPhys(faults: Pick<FailNth, "shouldFail">): readonly DmabufPhysRange[] {
    if (this.revoked) throw new ErrnoError(ENODEV, "the test dma-buf is revoked");
    if (faults.shouldFail("selftest_dmabuf_phys_list"))
      throw new ErrnoError(ENOMEM, "physical list allocation failed");
    return this.pages.map((p) => ({ paddr: p.pfn * PAGE_SIZE, len: PAGE_SIZE }));
  }

  /** Physical address of buffer byte `offset` (what MD_CHECK_DMABUF expects to find mapped). */
  physAt(offset: number): number {
    return this.pages[Math.floor(offset / PAGE_SIZE)].pfn * PAGE_SIZE + (offset % PAGE_SIZE);
  }
}

export type SelftestFile = SelftestAccessFile | SelftestDmabuf;

interface FdTable {
  readonly files: Map<number, SelftestFile>;
  allocator: SelftestFdAllocator;
}

const FDS = Symbol("selftest files");

function fdTable(ctx: IommufdContext): FdTable {
  let t = ctx.ext.get(FDS) as FdTable | undefined;
  if (t === undefined) {
    t = { files: new Map(), allocator: new LowestFreeFds() };
    ctx.ext.set(FDS, t);
  }
  return t;
}

/** Installs the descriptor allocator for `ctx`'s selftest files (before any is handed out). */
export function setSelftestFdAllocator(ctx: IommufdContext, allocator: SelftestFdAllocator): void {
  const t = fdTable(ctx);
  if (t.files.size !== 0) throw new Error("selftest files already handed out");
  t.allocator = allocator;
}

/** The selftest file open on `fd` in `ctx`, if any. */
export function selftestFile(ctx: IommufdContext, fd: number): SelftestFile | undefined {
  return fdTable(ctx).files.get(fd);
}

/** The open selftest descriptors of `ctx`, ascending, with their kinds. */
export function selftestOpenFds(ctx: IommufdContext): { fd: number; kind: SelftestFile["kind"] }[] {
  return [...fdTable(ctx).files]
    .sort((a, b) => a[0] - b[0])
    .map(([fd, f]) => ({ fd, kind: f.kind }));
}

/**
 * The last close of selftest descriptor `fd`: an access unpins everything and its ACCESS object
 * is destroyed (if the context was closed meanwhile, its release then completes); a dma-buf is
 * freed. Returns 0, or EBADF when `fd` is not open.
 */
export function closeSelftestFd(ctx: IommufdContext, fd: number): number {
  const t = fdTable(ctx);
  const file = t.files.get(fd);
  if (file === undefined) return EBADF;
  t.files.delete(fd);
  t.allocator.release(fd);
  // A dma-buf lives on while importers hold it (they keep their own reference).
  if (file.kind === "access") file.release();
  return 0;
}

/** Closes every selftest descriptor of `ctx` (the process exited), ascending. */
export function closeAllSelftestFds(ctx: IommufdContext): void {
  for (const { fd } of selftestOpenFds(ctx)) closeSelftestFd(ctx, fd);
}

/**
 * iommufd_access_get: the access behind `fd`. Anything else (not open, or a dma-buf) is
 * EBADFD. Throws ErrnoError.
 */
function accessFile(ctx: IommufdContext, fd: number): SelftestAccessFile {
  const f = fdTable(ctx).files.get(fd);
  if (f === undefined || f.kind !== "access" || f.access === null)
    throw new ErrnoError(EBADFD, `fd ${fd} is not a selftest access`);
  return f;
}

/**
 * The test dma-buf open on `fd` (dma_buf_get plus the exporter check): EBADF when `fd` is not
 * open at all (neither a selftest file nor one of `caller`'s files), EINVAL when it is open but
 * not a dma-buf. For importers (IOAS_MAP_FILE) and DMABUF_REVOKE. Throws ErrnoError.
 */
export function getSelftestDmabuf(
  ctx: IommufdContext,
  fd: number,
  caller: UserProcess,
): SelftestDmabuf {
  const f = fdTable(ctx).files.get(fd);
  if (f?.kind === "dmabuf") return f;
  if (f !== undefined || (fd >= 0 && typeof caller.file(fd) !== "number"))
    throw new ErrnoError(EINVAL, `fd ${fd} is not a dma-buf`);
  throw new ErrnoError(EBADF, `fd ${fd} is not open`);
}

// ---- Helpers ----------------------------------------------------------------------------------

/**
 * The union member the codec decoded for this op, typed. (The member layouts name their fields
 * through a helper, so the decoded types only know "number | bigint"; these say which.)
 */
function must<T>(member: unknown): T {
  if (member === undefined) throw new Error("IOMMU_TEST_CMD decoded without its union member");
  return member as T;
}

interface AddReservedArg {
  start: bigint;
  length: bigint;
}
interface MockDomainArg {
  out_stdev_id: number;
  out_hwpt_id: number;
  out_idev_id: number;
  dev_flags?: number;
}
interface PtIdArg {
  pt_id: number;
}
interface CheckMapArg {
  iova: bigint;
  length: bigint;
  uptr: bigint;
}
interface CheckRefsArg {
  length: bigint;
  uptr: bigint;
  refs: number;
}
interface CreateAccessArg {
  out_access_fd: number;
  flags: number;
}
interface AccessPagesArg {
  flags: number;
  out_access_pages_id: number;
  iova: bigint;
  length: bigint;
  uptr: bigint;
}
interface AccessRwArg {
  iova: bigint;
  length: bigint;
  uptr: bigint;
  flags: number;
}
interface DirtyArg {
  flags: number;
  iova: bigint;
  length: bigint;
  page_size: bigint;
  uptr: bigint;
  out_nr_dirty: bigint;
}
interface SlotArg {
  id: number;
  iotlb?: number;
  cache?: number;
}
interface TriggerIopfArg {
  dev_id: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
}
interface PasidArg {
  pasid: number;
  pt_id: number;
  hwpt_id?: number;
}

function injected(call: IoctlCall, site: string): void {
  if (call.ctx.faults.shouldFail(site)) throw allocFailure(site);
}

/** get_user_pages_fast of the one page holding `va`: the page or an errno. */
function userPageAt(caller: UserProcess, va: bigint): UserPage | number {
  const r = caller.pages(va - (va % PAGE), 1, false);
  return typeof r === "number" ? r : r[0];
}

/**
 * iommufd_test_syz_conv_iova: syzkaller's packed IOVA, low 32 bits the index of an area in IOVA
 * order and high 32 bits an offset into it; 0 when there is no such area or no IOAS.
 */
function syzConvIova(access: IommufdAccess, iova: bigint): bigint {
  const ioas = access.ioas;
  if (ioas === null) return 0n;
  let nth = Number(iova & 0xffff_ffffn);
  const offset = iova >> 32n;
  for (const area of ioas.iopt.areas) {
    if (nth === 0) return (area.iova + offset) & U64_MASK;
    nth--;
  }
  return 0n;
}

/** The lowest set bit of a page-size bitmap as a number of bytes. */
function smallestPage(bitmap: bigint): bigint {
  return bitmap & -bitmap;
}

// ---- The ops ----------------------------------------------------------------------------------

/** IOMMU_TEST_OP_ADD_RESERVED (§2.1): a reservation owned by nobody, until IOAS destroy. */
function addReserved(call: IoctlCall, cmd: TestCmd): number {
  const { start, length } = must<AddReservedArg>(cmd.add_reserved);
  if (length === 0n) return EINVAL;
  const last = start + length - 1n;
  if (last > ULONG_MAX) return EOVERFLOW;
  const ioas = getIoas(call.ctx, cmd.id);
  ioas.iopt.reserveIova(start, last, null);
  return 0;
}

/** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS) (§2.2): create, bind and attach a mock device. */
function mockDomain(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  const sobj = call.alloc(new SelftestDeviceObject(ctx));
  const devFlags =
    cmd.op === IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS
      ? (must<MockDomainArg>(cmd.mock_domain_flags).dev_flags ?? 0)
      : 0;
  const mdev = mockIommu.createDevice(devFlags, ctx.faults);
  let idev: IommufdDevice;
  try {
    idev = iommufdDeviceBind(ctx, mdev);
  } catch (e) {
    mockIommu.destroyDevice(mdev);
    throw e;
  }
  let hwptId: number;
  try {
    hwptId = iommufdDeviceAttach(idev, IOMMU_NO_PASID, cmd.id);
  } catch (e) {
    iommufdDeviceUnbind(idev);
    mockIommu.destroyDevice(mdev);
    throw e;
  }
  // mock_domain and mock_domain_flags share their first three members.
  const out =
    cmd.op === IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS
      ? must<MockDomainArg>(cmd.mock_domain_flags)
      : must<MockDomainArg>(cmd.mock_domain);
  out.out_hwpt_id = hwptId;
  out.out_stdev_id = sobj.id;
  out.out_idev_id = idev.id;
  if (ucmd.respond() !== 0) {
    iommufdDeviceDetach(idev, IOMMU_NO_PASID);
    iommufdDeviceUnbind(idev);
    mockIommu.destroyDevice(mdev);
    return EFAULT;
  }
  sobj.mdev = mdev;
  sobj.idev = idev;
  return 0;
}

/** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE (§2.3): no rollback when the write-back faults. */
function mockDomainReplace(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const sobj = getSelftestDevice(call.ctx, cmd.id);
  const arg = must<PtIdArg>(cmd.mock_domain_replace);
  arg.pt_id = iommufdDeviceReplace(sobj.idev!, IOMMU_NO_PASID, arg.pt_id);
  return ucmd.respond();
}

/** get_md_pagetable: a HWPT_PAGING whose domain is a mock paging domain. */
function mockPaging(call: IoctlCall, id: number): MockPagingDomain {
  const hwpt = call.ctx.table.get<HwptPaging>(id, ObjType.HWPT_PAGING);
  const domain = hwpt.domain;
  if (!(domain instanceof MockPagingDomain))
    throw new ErrnoError(EINVAL, `HWPT ${id} is not a mock paging domain`);
  return domain;
}

/** IOMMU_TEST_OP_MD_CHECK_MAP (§2.4): each smallest page maps the user page under `uptr`. */
function mdCheckMap(call: IoctlCall, cmd: TestCmd): number {
  const { iova, length, uptr } = must<CheckMapArg>(cmd.check_map);
  const domain = mockPaging(call, cmd.id);
  const ps = smallestPage(domain.pgsizeBitmap);
  if (iova % ps !== 0n || length % ps !== 0n || uptr % ps !== 0n || uptr + length > ULONG_MAX)
    return EINVAL;
  let at = iova;
  let va = uptr;
  for (let left = length; left !== 0n; left -= ps) {
    const page = userPageAt(call.caller, va);
    if (typeof page === "number") return page;
    const expect = page.pfn * PAGE_SIZE + Number(va % PAGE);
    // An unmapped IOVA translates to 0, which never equals a user page's address.
    if ((domain.iovaToPhys(at & U64_MASK) ?? 0) !== expect) return EINVAL;
    at += ps;
    va += ps;
  }
  return 0;
}

/** IOMMU_TEST_OP_MD_CHECK_REFS (§2.5): every page has exactly `refs` long-term pins. */
function mdCheckRefs(call: IoctlCall, cmd: TestCmd): number {
  const { length, uptr, refs } = must<CheckRefsArg>(cmd.check_refs);
  if (length % PAGE !== 0n || uptr % PAGE !== 0n || uptr + length > ULONG_MAX) return EINVAL;
  let va = uptr;
  for (let left = length; left !== 0n; left -= PAGE) {
    const page = userPageAt(call.caller, va);
    if (typeof page === "number") return page;
    if (page.pins !== refs) return EIO;
    va += PAGE;
  }
  return 0;
}

/** IOMMU_TEST_OP_CREATE_ACCESS (§2.6): a new access on IOAS `id`, handed out as an fd. */
function createAccess(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  const arg = must<CreateAccessArg>(cmd.create_access);
  if ((arg.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0) return EOPNOTSUPP;
  // iommufd_test_alloc_access: the record, then its anonymous file.
  injected(call, "selftest_access_alloc");
  injected(call, "anon_inode_getfile");
  const file = new SelftestAccessFile(
    ctx,
    (arg.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0,
  );
  const table = fdTable(ctx);
  const fd = table.allocator.alloc();
  if (fd === undefined) return ENOMEM; // get_unused_fd_flags failing is reported as ENOMEM
  let access: IommufdAccess;
  try {
    access = accessCreate(ctx, file.ops);
  } catch (e) {
    table.allocator.release(fd);
    throw e;
  }
  try {
    accessAttach(access, cmd.id);
  } catch (e) {
    accessDestroy(access);
    table.allocator.release(fd);
    throw e;
  }
  arg.out_access_fd = fd;
  if (ucmd.respond() !== 0) {
    accessDestroy(access);
    table.allocator.release(fd);
    return EFAULT;
  }
  // The access holds the iommufd file until its fd is closed.
  ctxFileGet(ctx);
  file.access = access;
  table.files.set(fd, file);
  return 0;
}

/** IOMMU_TEST_OP_ACCESS_REPLACE_IOAS (§2.7). */
function accessReplaceIoas(call: IoctlCall, cmd: TestCmd): number {
  const { ioas_id } = must<{ ioas_id: number }>(cmd.access_replace_ioas);
  const file = accessFile(call.ctx, cmd.id);
  accessReplace(file.access!, ioas_id);
  return 0;
}

/** IOMMU_TEST_OP_ACCESS_PAGES (§2.8): pin a range and remember it as an item. */
function accessPages(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const arg = must<AccessPagesArg>(cmd.access_pages);
  const { length, uptr, flags } = arg;
  if (length > ACCESS_MAX_LENGTH) return ENOMEM;
  if ((flags & ~(MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ)) !== 0) return EOPNOTSUPP;
  const file = accessFile(call.ctx, cmd.id);
  if (!file.needsPinPages) return EOPNOTSUPP;
  const access = file.access!;
  let iova = arg.iova;
  if ((flags & MOCK_FLAGS_ACCESS_SYZ) !== 0) iova = syzConvIova(access, iova);
  // The page-pointer array (kvzalloc).
  injected(call, "selftest_access_pages_array");
  const pages = accessPinPages(access, iova, length, flags & MOCK_FLAGS_ACCESS_WRITE);
  try {
    if (uptr !== 0n) {
      // iommufd_test_check_pages: each pinned page is the page under the matching user VA.
      let va = uptr - (iova % PAGE);
      for (const pinned of pages) {
        const page = userPageAt(call.caller, va & U64_MASK);
        if (typeof page === "number") throw new ErrnoError(page, "check_pages lookup");
        if (page !== pinned) throw new ErrnoError(EBADE, "pinned page differs from user page");
        va += PAGE;
      }
    }
    injected(call, "selftest_access_item_alloc");
  } catch (e) {
    accessUnpinPages(access, iova, length);
    throw e;
  }
  const item: SelftestAccessItem = { iova, length, id: file.nextId++ };
  file.items.push(item);
  arg.out_access_pages_id = item.id;
  if (ucmd.respond() !== 0) {
    file.items.splice(file.items.indexOf(item), 1);
    accessUnpinPages(access, iova, length);
    return EFAULT;
  }
  return 0;
}

/** IOMMU_TEST_OP_DESTROY_ACCESS_PAGES (§2.9). */
function destroyAccessPages(call: IoctlCall, cmd: TestCmd): number {
  const { access_pages_id } = must<{ access_pages_id: number }>(cmd.destroy_access_pages);
  const file = accessFile(call.ctx, cmd.id);
  const i = file.items.findIndex((it) => it.id === access_pages_id);
  if (i < 0) return ENOENT;
  const [item] = file.items.splice(i, 1);
  accessUnpinPages(file.access!, item.iova, item.length);
  return 0;
}

/** IOMMU_TEST_OP_ACCESS_RW (§2.10): read or write through the access via a bounce buffer. */
function accessRwOp(call: IoctlCall, cmd: TestCmd): number {
  const arg = must<AccessRwArg>(cmd.access_rw);
  const { length, uptr, flags } = arg;
  if (length > ACCESS_MAX_LENGTH) return ENOMEM;
  if ((flags & ~(MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ)) !== 0)
    return EOPNOTSUPP;
  const file = accessFile(call.ctx, cmd.id);
  const access = file.access!;
  // kvzalloc(length): a zero-length allocation never reaches the allocator.
  if (length !== 0n) injected(call, "selftest_access_rw_buffer");
  const tmp = new Uint8Array(Number(length));
  if ((flags & MOCK_ACCESS_RW_WRITE) !== 0 && call.caller.read(uptr, tmp) !== 0) return EFAULT;
  let iova = arg.iova;
  if ((flags & MOCK_FLAGS_ACCESS_SYZ) !== 0) iova = syzConvIova(access, iova);
  accessRw(access, iova, tmp, flags, call.caller);
  if ((flags & MOCK_ACCESS_RW_WRITE) === 0 && call.caller.write(uptr, tmp) !== 0) return EFAULT;
  return 0;
}

/** IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT (§2.11). */
function setTempMemoryLimit(cmd: TestCmd): number {
  const { limit } = must<{ limit: number }>(cmd.memory_limit);
  if (limit < MEMORY_LIMIT_MIN) return EINVAL;
  selftestParams.memoryLimit = limit;
  return 0;
}

/** IOMMU_TEST_OP_DIRTY (§2.13): mark the IOPTE of each set bitmap bit dirty. */
function dirty(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const arg = must<DirtyArg>(cmd.dirty);
  const { iova, length, page_size: pageSize, uptr } = arg;
  if (pageSize === 0n || length === 0n || iova % pageSize !== 0n || length % pageSize !== 0n)
    return EINVAL;
  if (uptr === 0n) return EINVAL;
  const max = length / pageSize;
  if (max > DIRTY_MAX_BITS) return EOVERFLOW;
  const domain = mockPaging(call, cmd.id);
  if (!domain.dirtyTracking) return EINVAL;
  injected(call, "selftest_dirty_bitmap");
  const bits = Number(max);
  const bitmap = new Uint8Array((bits + 7) >>> 3);
  if (call.caller.read(uptr, bitmap) !== 0) return EFAULT;
  let count = 0;
  for (let byte = 0; byte < bitmap.length; byte++) {
    const v = bitmap[byte];
    if (v === 0) continue;
    for (let b = 0; b < 8; b++) {
      const i = byte * 8 + b;
      if (i >= bits || (v & (1 << b)) === 0) continue;
      // An IOVA nothing maps is skipped silently; each set bit counts either way.
      domain.setDirty((iova + BigInt(i) * pageSize) & U64_MASK);
      count++;
    }
  }
  arg.out_nr_dirty = BigInt(count);
  return ucmd.respond();
}

/** IOMMU_TEST_OP_MD_CHECK_IOTLB (§2.12). */
function mdCheckIotlb(call: IoctlCall, cmd: TestCmd): number {
  const { id: slot, iotlb = 0 } = must<SlotArg>(cmd.check_iotlb);
  const hwpt = call.ctx.table.get<HwptNested>(cmd.id, ObjType.HWPT_NESTED);
  const domain = hwpt.domain;
  if (!(domain instanceof MockNestedDomain)) return EINVAL;
  if (slot > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX || domain.iotlb[slot] !== iotlb >>> 0) return EINVAL;
  return 0;
}

/** IOMMU_TEST_OP_DEV_CHECK_CACHE (§2.15). */
function devCheckCache(call: IoctlCall, cmd: TestCmd): number {
  const { id: slot, cache = 0 } = must<SlotArg>(cmd.check_dev_cache);
  const idev = getDevice(call.ctx, cmd.id);
  const mdev = idev.dev;
  if (!(mdev instanceof MockDevice)) return EINVAL;
  if (slot > MOCK_DEV_CACHE_ID_MAX || mdev.cache[slot] !== cache >>> 0) return EINVAL;
  return 0;
}

/** IOMMU_TEST_OP_PASID_ATTACH (§2.17): a failed write-back detaches the PASID again. */
function pasidAttach(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const sobj = getSelftestDevice(call.ctx, cmd.id);
  const arg = must<PasidArg>(cmd.pasid_attach);
  arg.pt_id = iommufdDeviceAttach(sobj.idev!, arg.pasid, arg.pt_id);
  if (ucmd.respond() !== 0) {
    iommufdDeviceDetach(sobj.idev!, arg.pasid);
    return EFAULT;
  }
  return 0;
}

/** IOMMU_TEST_OP_PASID_REPLACE (§2.17): no rollback when the write-back faults. */
function pasidReplace(call: IoctlCall, ucmd: TestUcmd): number {
  const cmd = ucmd.cmd;
  const sobj = getSelftestDevice(call.ctx, cmd.id);
  // The kernel reads the replace arguments through the attach member (same layout).
  const arg = must<PasidArg>(cmd.pasid_replace);
  arg.pt_id = iommufdDeviceReplace(sobj.idev!, arg.pasid, arg.pt_id);
  return ucmd.respond();
}

/** IOMMU_TEST_OP_PASID_DETACH (§2.17): detaching what is not attached is fine. */
function pasidDetach(call: IoctlCall, cmd: TestCmd): number {
  const sobj = getSelftestDevice(call.ctx, cmd.id);
  iommufdDeviceDetach(sobj.idev!, must<PasidArg>(cmd.pasid_detach).pasid);
  return 0;
}

/** IOMMU_TEST_OP_PASID_CHECK_HWPT (§2.17): what the IOMMU core has attached at `pasid`. */
function pasidCheckHwpt(call: IoctlCall, cmd: TestCmd): number {
  const { pasid, hwpt_id: hwptId = 0 } = must<PasidArg>(cmd.pasid_check);
  const sobj = getSelftestDevice(call.ctx, cmd.id);
  const group = sobj.mdev!.group;
  const attached = group === null ? undefined : iommuGetDomainForGroupPasid(group, pasid);
  if (hwptId === 0) return attached === undefined ? 0 : EINVAL;
  const obj = call.ctx.table.get(hwptId, ObjType.ANY);
  if (!(obj instanceof HwptPaging) && !(obj instanceof HwptNested)) return EINVAL;
  return attached === obj.domain ? 0 : EINVAL;
}

/**
 * IOMMU_TEST_OP_DMABUF_GET (§2.18, newest exporter): the length must be a whole number of pages,
 * 1 to 512 (EINVAL); the record, then each page, then the export may fail (ENOMEM). The new fd
 * is the ioctl's return value.
 */
function dmabufGet(call: IoctlCall, ucmd: TestUcmd): number {
  const { length: len, open_flags: openFlags } = must<{ length: number; open_flags: number }>(
    ucmd.cmd.dmabuf_get,
  );
  if (len === 0 || len % PAGE_SIZE !== 0 || len > PAGE_SIZE * DMABUF_MAX_PAGES) return EINVAL;
  injected(call, "selftest_dmabuf_priv");
  for (let i = 0; i < len / PAGE_SIZE; i++) injected(call, "selftest_dmabuf_page");
  injected(call, "dma_buf_export");
  const buf = new SelftestDmabuf(len, openFlags);
  const table = fdTable(call.ctx);
  const fd = table.allocator.alloc();
  if (fd === undefined) return EMFILE;
  table.files.set(fd, buf);
  ucmd.retval = fd;
  return 0;
}

/**
 * IOMMU_TEST_OP_DMABUF_REVOKE (§2.19): set the revoked state and notify every importer, in
 * both directions (dma_buf_move_notify): iommufd unmaps its mappings of the buffer whatever
 * the new state is, and never maps old areas again.
 */
function dmabufRevoke(call: IoctlCall, cmd: TestCmd): number {
  const { dmabuf_fd: fd, revoked } = must<{ dmabuf_fd: number; revoked: number }>(
    cmd.dmabuf_revoke,
  );
  const buf = getSelftestDmabuf(call.ctx, fd, call.caller);
  buf.revoked = revoked !== 0;
  for (const notify of [...buf.importers]) notify();
  return 0;
}

interface CheckDmabufArg {
  dmabuf_fd: number;
  iova: bigint;
  length: bigint;
  offset: bigint;
}

/**
 * IOMMU_TEST_OP_MD_CHECK_DMABUF (op 24; iommufd_test_md_check_dmabuf of the 2026 multi-phys
 * patch): the mock paging HWPT `id` (ENOENT, EINVAL), the test dma-buf `dmabuf_fd` (EBADF,
 * EINVAL); iova, length and offset must be multiples of the domain's smallest page and
 * offset + length must not wrap or pass the buffer's end (EINVAL); then each smallest-page step
 * of [iova, iova + length) must translate to buffer byte offset + step (EINVAL otherwise).
 */
function mdCheckDmabuf(call: IoctlCall, cmd: TestCmd): number {
  const { dmabuf_fd: fd, iova, length, offset } = must<CheckDmabufArg>(cmd.check_dmabuf);
  const domain = mockPaging(call, cmd.id);
  const buf = getSelftestDmabuf(call.ctx, fd, call.caller);
  const ps = smallestPage(domain.pgsizeBitmap);
  if (iova % ps !== 0n || length % ps !== 0n || offset % ps !== 0n) return EINVAL;
  const end = offset + length;
  if (end > U64_MASK || end > BigInt(buf.length)) return EINVAL;
  const base = Number(offset);
  const step = Number(ps);
  const n = Number(length / ps);
  let at = iova;
  for (let i = 0; i < n; i++) {
    // An unmapped IOVA translates to 0, which the buffer's pages never are.
    if ((domain.iovaToPhys(at & U64_MASK) ?? 0) !== buf.physAt(base + i * step)) return EINVAL;
    at += ps;
  }
  return 0;
}

// ---- IOPF and vEVENT triggers (delivered by eventq.ts) -------------------------------------------

/** The page request TRIGGER_IOPF reports (struct iommu_fault_page_request's fields). */
export interface SelftestPageRequest {
  /** IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, plus PASID_VALID when `pasid` is not 0. */
  flags: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
}

/**
 * Delivery hooks for the ops whose effect lives in another area; eventq.ts installs them when
 * it loads (this module does not import it). Until then TRIGGER_IOPF and TRIGGER_VEVENT answer
 * EOPNOTSUPP once their device lookup succeeded.
 *  - reportIopf: iommu_report_device_fault of `idev` (routed to the FAULT of the attached
 *    domain, or dropped); TRIGGER_IOPF returns 0 whatever happens to it.
 *  - reportVevent: iommufd_viommu_report_event of a SELFTEST event {virt_id} on `viommu` (the
 *    mock device's remembered vIOMMU): 0 or an errno (EOPNOTSUPP without a SELFTEST vEVENTQ,
 *    ENOMEM when the event cannot be allocated).
 */
export const selftestHooks: {
  reportIopf: ((idev: IommufdDevice, fault: SelftestPageRequest) => void) | null;
  reportVevent: ((viommu: ViommuLink, virtId: bigint) => number) | null;
} = { reportIopf: null, reportVevent: null };

/** iommu_fault_page_request flags. */
export const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0;
export const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1;

/** IOMMU_TEST_OP_TRIGGER_IOPF (§2.14): `id` is unused; the device is `dev_id`. */
function triggerIopf(call: IoctlCall, cmd: TestCmd): number {
  const arg = must<TriggerIopfArg>(cmd.trigger_iopf);
  const idev = getDevice(call.ctx, arg.dev_id);
  const report = selftestHooks.reportIopf;
  if (report === null) return EOPNOTSUPP;
  let flags = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE;
  if (arg.pasid !== IOMMU_NO_PASID) flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID;
  report(idev, { flags, pasid: arg.pasid, grpid: arg.grpid, perm: arg.perm, addr: arg.addr });
  return 0;
}

/**
 * IOMMU_TEST_OP_TRIGGER_VEVENT (§2.16): no remembered vIOMMU, or a virt_id of 0, is ENOENT;
 * otherwise the report's answer.
 */
function triggerVevent(call: IoctlCall, cmd: TestCmd): number {
  const arg = must<{ dev_id: number }>(cmd.trigger_vevent);
  const idev = getDevice(call.ctx, arg.dev_id);
  const mdev = idev.dev;
  if (!(mdev instanceof MockDevice) || mdev.viommu === null || mdev.vdevId === 0n) return ENOENT;
  const report = selftestHooks.reportVevent;
  if (report === null) return EOPNOTSUPP;
  return report(mdev.viommu, mdev.vdevId);
}

// ---- Dispatch ---------------------------------------------------------------------------------

// MAP_FILE's dma_buf_get: the test exporter's buffers are the model's dma-bufs.
dmabufFiles.get = (ctx, fd) => {
  const f = fdTable(ctx).files.get(fd);
  return f?.kind === "dmabuf" ? f : undefined;
};

registerIoctl(IOMMUFD_IOCTLS.TEST_CMD, (call, ucmd) => {
  const cmd = ucmd.cmd;
  switch (cmd.op) {
    case IOMMU_TEST_OP.ADD_RESERVED:
      return addReserved(call, cmd);
    case IOMMU_TEST_OP.MOCK_DOMAIN:
    case IOMMU_TEST_OP.MOCK_DOMAIN_FLAGS:
      return mockDomain(call, ucmd);
    case IOMMU_TEST_OP.MOCK_DOMAIN_REPLACE:
      return mockDomainReplace(call, ucmd);
    case IOMMU_TEST_OP.MD_CHECK_MAP:
      return mdCheckMap(call, cmd);
    case IOMMU_TEST_OP.MD_CHECK_REFS:
      return mdCheckRefs(call, cmd);
    case IOMMU_TEST_OP.MD_CHECK_IOTLB:
      return mdCheckIotlb(call, cmd);
    case IOMMU_TEST_OP.DEV_CHECK_CACHE:
      return devCheckCache(call, cmd);
    case IOMMU_TEST_OP.CREATE_ACCESS:
      return createAccess(call, ucmd);
    case IOMMU_TEST_OP.ACCESS_REPLACE_IOAS:
      return accessReplaceIoas(call, cmd);
    case IOMMU_TEST_OP.ACCESS_PAGES:
      return accessPages(call, ucmd);
    case IOMMU_TEST_OP.ACCESS_RW:
      return accessRwOp(call, cmd);
    case IOMMU_TEST_OP.DESTROY_ACCESS_PAGES:
      return destroyAccessPages(call, cmd);
    case IOMMU_TEST_OP.SET_TEMP_MEMORY_LIMIT:
      return setTempMemoryLimit(cmd);
    case IOMMU_TEST_OP.DIRTY:
      return dirty(call, ucmd);
    case IOMMU_TEST_OP.TRIGGER_IOPF:
      return triggerIopf(call, cmd);
    case IOMMU_TEST_OP.TRIGGER_VEVENT:
      return triggerVevent(call, cmd);
    case IOMMU_TEST_OP.PASID_ATTACH:
      return pasidAttach(call, ucmd);
    case IOMMU_TEST_OP.PASID_REPLACE:
      return pasidReplace(call, ucmd);
    case IOMMU_TEST_OP.PASID_DETACH:
      return pasidDetach(call, cmd);
    case IOMMU_TEST_OP.PASID_CHECK_HWPT:
      return pasidCheckHwpt(call, cmd);
    case IOMMU_TEST_OP.DMABUF_GET:
      return dmabufGet(call, ucmd);
    case IOMMU_TEST_OP.DMABUF_REVOKE:
      return dmabufRevoke(call, cmd);
    case IOMMU_TEST_OP_MD_CHECK_DMABUF:
      return mdCheckDmabuf(call, cmd);
    default:
      return EOPNOTSUPP;
  }
});

/**
 * The IOAS object and its ioctls (drivers/iommu/iommufd/ioas.c; spec ioas-pages.md §8) plus
 * IOMMU_OPTION (main.c iommufd_option; core-objects-vfio.md §6): RLIMIT_MODE is a context
 * option, HUGE_PAGES an IOAS one; both are handled here.
 *
 * Handlers follow the kernel's check order exactly: flags and reserved fields, then overflow,
 * then permissions, then the object lookup, then the io_pagetable work.
 *
 * MAP_FILE (io_pagetable.c iopt_map_file_pages, v6.19+) asks first whether the fd is a dma-buf
 * and imports it (pages.ts IoptPages.allocDmabuf); only otherwise is it an ordinary file of the
 * caller. Which fds are dma-bufs is answered by `dmabufFiles`, installed by the module that
 * exports them (selftest.ts: the selftest's test exporter is the model's only one).
 */
import {
  EBADF,
  EBUSY,
  EFAULT,
  EINVAL,
  EMSGSIZE,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  ErrnoError,
} from "../errno.ts";
import { type Decoded, IOMMU_IOVA_RANGE_LAYOUT, IOMMUFD_IOCTLS } from "../uapi/index.ts";
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
} from "../uapi/ioctl.ts";
import { AccountMode, type IommufdContext, registerIoctl } from "./context.ts";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "./driver.ts";
import { IoPagetable, type IovaRange, ULONG_MAX } from "./io_pagetable.ts";
import { IommufdObject, ObjType } from "./object.ts";
import { chargePinned, type Dmabuf, IoptAddress, IoptPages } from "./pages.ts";
import { PAGE_SIZE, type UserProcess } from "./user_mm.ts";

const PAGE = BigInt(PAGE_SIZE);
const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
const MAP_RW = IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

/** struct iommufd_ioas. */
export class Ioas extends IommufdObject {
  readonly type = ObjType.IOAS;
  /** The IOVA space: areas, reserved and allowed ranges, domains, accesses. */
  readonly iopt: IoPagetable;
  /**
   * The HWPT_PAGING objects built on this IOAS, in creation order (ioas->hwpt_list): hwpt.ts
   * appends at creation and removes at destroy; auto-domain reuse walks it in order.
   */
  readonly hwptList: IommufdObject[] = [];

  private readonly ctx: IommufdContext;

  constructor(ctx: IommufdContext) {
    super();
    this.ctx = ctx;
    this.iopt = new IoPagetable(ctx.faults);
  }

  /**
   * iommufd_ioas_destroy: unmaps everything (nothing can hold it by now: domains and accesses
   * hold the IOAS), then drops the test reservations and the allowed ranges.
   */
  destroy(): void {
    // The VFIO compat pointer is weak: it goes when its IOAS does (iommufd_object_remove).
    if (this.ctx.vfioIoas === this) this.ctx.vfioIoas = null;
    try {
      this.iopt.unmapAll();
    } catch {
      // The kernel WARNs; only a racing area could cause this.
    }
    this.iopt.destroyTable();
  }
}

/**
 * dma_buf_get as MAP_FILE uses it: `get(ctx, fd)` is the dma-buf open on `fd` for a caller of
 * `ctx`, or undefined when `fd` is not a dma-buf (then it is looked up as an ordinary file).
 * Null until an exporter installs it.
 */
export const dmabufFiles: {
  get: ((ctx: IommufdContext, fd: number) => Dmabuf | undefined) | null;
} = { get: null };

/** Looks up a live IOAS by id (ENOENT otherwise; an injection site). Throws ErrnoError. */
export function getIoas(ctx: IommufdContext, id: number): Ioas {
  return ctx.table.get<Ioas>(id, ObjType.IOAS);
}

/** conv_iommu_prot: IOMMU_CACHE always, plus WRITE / READ from the map flags. */
export function convIommuProt(mapFlags: number): number {
  let prot = IOMMU_CACHE;
  if (mapFlags & IOMMU_IOAS_MAP_WRITEABLE) prot |= IOMMU_WRITE;
  if (mapFlags & IOMMU_IOAS_MAP_READABLE) prot |= IOMMU_READ;
  return prot;
}

/**
 * iopt_map_user_pages: maps `length` bytes of `caller`'s memory at `uptr` into `ioas`, at
 * `iova` or (undefined) an allocated IOVA; pins only if a domain is attached. Returns the
 * IOVA. EOVERFLOW, EINVAL, ENOSPC, EEXIST, EPERM, EFAULT, ENOMEM. Throws ErrnoError.
 * (VFIO compat's MAP_DMA uses this too.)
 */
export function ioasMapUser(
  ctx: IommufdContext,
  ioas: Ioas,
  caller: UserProcess,
  iova: bigint | undefined,
  uptr: bigint,
  length: bigint,
  iommuProt: number,
): bigint {
  const pages = IoptPages.allocUser(caller, uptr, length, !!(iommuProt & IOMMU_WRITE), ctx.faults);
  return ioas.iopt.mapCommon(
    pages,
    ctx.accountMode === AccountMode.MM,
    iova,
    uptr % PAGE,
    length,
    iommuProt,
  );
}

// ---- IOMMU_IOAS_ALLOC ---------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.flags !== 0) return EOPNOTSUPP;
  const ioas = call.alloc(new Ioas(call.ctx));
  cmd.out_ioas_id = ioas.id;
  // A failed respond aborts the reserved object (the call settles with an error).
  return ucmd.respond();
});

// ---- IOMMU_IOAS_IOVA_RANGES ---------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_IOVA_RANGES, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.__reserved !== 0) return EOPNOTSUPP;
  const ioas = getIoas(call.ctx, cmd.ioas_id);
  const max = cmd.num_iovas;
  let count = 0;
  cmd.out_iova_alignment = BigInt(ioas.iopt.iovaAlignment);
  for (const hole of ioas.iopt.iovaRanges()) {
    if (count < max) {
      const at = cmd.allowed_iovas + BigInt(count * IOMMU_IOVA_RANGE_LAYOUT.size);
      if (ucmd.writeArray(at, IOMMU_IOVA_RANGE_LAYOUT, [hole]) !== 0) return EFAULT;
    }
    count++;
  }
  cmd.num_iovas = count;
  const rc = ucmd.respond();
  if (rc !== 0) return rc;
  return count > max ? EMSGSIZE : 0;
});

// ---- IOMMU_IOAS_ALLOW_IOVAS ---------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_ALLOW_IOVAS, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.__reserved !== 0) return EOPNOTSUPP;
  const ioas = getIoas(call.ctx, cmd.ioas_id);
  // iommufd_ioas_load_iovas: element by element, in array order.
  const ranges: IovaRange[] = [];
  for (let i = 0; i < cmd.num_iovas; i++) {
    const one: Decoded<typeof IOMMU_IOVA_RANGE_LAYOUT>[] = [];
    const at = cmd.allowed_iovas + BigInt(i * IOMMU_IOVA_RANGE_LAYOUT.size);
    if (ucmd.readArray(at, IOMMU_IOVA_RANGE_LAYOUT, 1, one) !== 0) return EFAULT;
    const { start, last } = one[0];
    if (start >= last) return EINVAL;
    if (ranges.some((r) => r.start <= last && start <= r.last)) return EINVAL;
    if (call.ctx.faults.shouldFail("iopt_allowed_alloc")) return ENOMEM;
    ranges.push({ start, last });
  }
  ioas.iopt.setAllowed(ranges);
  return 0;
});

// ---- IOMMU_IOAS_MAP -----------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_MAP, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~MAP_FLAGS || cmd.__reserved !== 0) return EOPNOTSUPP;
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) return EOVERFLOW;
  if (!(cmd.flags & MAP_RW)) return EINVAL;
  const ioas = getIoas(call.ctx, cmd.ioas_id);
  const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
  cmd.iova = ioasMapUser(
    call.ctx,
    ioas,
    call.caller,
    fixed ? cmd.iova : undefined,
    cmd.user_va,
    cmd.length,
    convIommuProt(cmd.flags),
  );
  // A failed respond leaves the mapping in place, as the kernel does.
  return ucmd.respond();
});

// ---- IOMMU_IOAS_MAP_FILE ------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_MAP_FILE, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~MAP_FLAGS) return EOPNOTSUPP;
  if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) return EOVERFLOW;
  if (!(cmd.flags & MAP_RW)) return EINVAL;
  const ioas = getIoas(call.ctx, cmd.ioas_id);
  if (cmd.length === 0n) return EINVAL;
  if (cmd.start + cmd.length - 1n > ULONG_MAX) return EOVERFLOW;
  const prot = convIommuProt(cmd.flags);
  const writable = !!(prot & IOMMU_WRITE);
  const dmabuf = dmabufFiles.get?.(call.ctx, cmd.fd);
  let pages: IoptPages;
  if (dmabuf !== undefined) {
    pages = IoptPages.allocDmabuf(
      call.caller,
      dmabuf,
      cmd.start,
      cmd.length,
      writable,
      call.ctx.faults,
    );
  } else {
    const file = call.caller.file(cmd.fd);
    if (typeof file === "number") return EBADF;
    pages = IoptPages.allocFile(
      call.caller,
      file,
      cmd.start,
      cmd.length,
      writable,
      call.ctx.faults,
    );
  }
  const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
  cmd.iova = ioas.iopt.mapCommon(
    pages,
    call.ctx.accountMode === AccountMode.MM,
    fixed ? cmd.iova : undefined,
    cmd.start % PAGE,
    cmd.length,
    prot,
  );
  return ucmd.respond();
});

// ---- IOMMU_IOAS_COPY ----------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_COPY, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~MAP_FLAGS) return EOPNOTSUPP;
  if (cmd.length >= ULONG_MAX || cmd.src_iova >= ULONG_MAX || cmd.dst_iova >= ULONG_MAX)
    return EOVERFLOW;
  if (!(cmd.flags & MAP_RW)) return EINVAL;
  const src = getIoas(call.ctx, cmd.src_ioas_id);
  const pieces = src.iopt.getPages(cmd.src_iova, cmd.length);
  try {
    const dst = getIoas(call.ctx, cmd.dst_ioas_id);
    const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
    cmd.dst_iova = dst.iopt.mapPages(
      pieces,
      cmd.length,
      fixed ? cmd.dst_iova : undefined,
      convIommuProt(cmd.flags),
    );
  } catch (e) {
    for (const p of pieces) p.pages.put();
    throw e;
  }
  return ucmd.respond();
});

// ---- IOMMU_IOAS_UNMAP ---------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.IOAS_UNMAP, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ioas = getIoas(call.ctx, cmd.ioas_id);
  let unmapped: bigint;
  if (cmd.iova === 0n && cmd.length === ULONG_MAX) {
    unmapped = ioas.iopt.unmapAll();
  } else {
    if (cmd.iova >= ULONG_MAX || cmd.length >= ULONG_MAX) return EOVERFLOW;
    unmapped = ioas.iopt.unmapIova(cmd.iova, cmd.length);
    if (unmapped === 0n) throw new ErrnoError(ENOENT, "nothing mapped in the range");
  }
  cmd.length = unmapped;
  return ucmd.respond();
});

// ---- IOMMU_IOAS_CHANGE_PROCESS ------------------------------------------------------------------

/** need_charge_update: whether moving `pages` to `caller` moves its charge. */
function needChargeUpdate(pages: IoptPages, caller: UserProcess): boolean {
  if (pages.accountMode === AccountMode.NONE) return false;
  return pages.source !== caller;
}

registerIoctl(IOMMUFD_IOCTLS.IOAS_CHANGE_PROCESS, (call, ucmd) => {
  if (ucmd.cmd.__reserved !== 0) return EOPNOTSUPP;
  const caller = call.caller;
  // iommufd_take_all_iova_rwsem: every live IOAS of the context (the list store can fail).
  const ioasList: Ioas[] = [];
  for (const obj of call.ctx.table.live()) {
    if (obj.type !== ObjType.IOAS) continue;
    if (call.ctx.faults.shouldFail("change_process_ioas_list")) return ENOMEM;
    ioasList.push(obj as Ioas);
  }
  const all: IoptPages[] = [];
  for (const ioas of ioasList) {
    for (const area of ioas.iopt.areas) {
      if (area.pages === null) continue;
      if (area.pages.type !== IoptAddress.FILE) return EINVAL;
      if (!all.includes(area.pages)) all.push(area.pages);
    }
  }
  const moving = all.filter((p) => needChargeUpdate(p, caller));
  const perMode = [0, 0, 0];
  for (const p of moving) perMode[p.accountMode] += p.lastNpinned;
  // charge_current: each mode in order; a failure undoes the modes already charged.
  let mode = 0;
  try {
    for (; mode < perMode.length; mode++)
      if (perMode[mode] !== 0) chargePinned(caller, mode as 0 | 1 | 2, perMode[mode], true);
  } catch (e) {
    while (mode-- > 0)
      if (perMode[mode] !== 0) chargePinned(caller, mode as 0 | 1 | 2, perMode[mode], false);
    throw e;
  }
  for (const p of all) {
    if (moving.includes(p)) chargePinned(p.source, p.accountMode, p.npinned, false);
    p.source = caller;
  }
  return 0;
});

// ---- IOMMU_OPTION -------------------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.OPTION, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if (cmd.__reserved !== 0) return EOPNOTSUPP;
  let rc: number;
  if (cmd.option_id === IOMMU_OPTION_RLIMIT_MODE) {
    rc = optionRlimitMode(ctx, call.caller, cmd);
  } else if (cmd.option_id === IOMMU_OPTION_HUGE_PAGES) {
    rc = optionHugePages(getIoas(ctx, cmd.object_id), cmd);
  } else {
    rc = EOPNOTSUPP;
  }
  if (rc !== 0) return rc;
  // Only val64 goes back to the user.
  return ucmd.respondField("val64");
});

interface OptionCmd {
  op: number;
  object_id: number;
  val64: bigint;
}

/** iommufd_option_rlimit_mode (core-objects-vfio.md §6.1). */
function optionRlimitMode(ctx: IommufdContext, caller: UserProcess, cmd: OptionCmd): number {
  if (cmd.object_id !== 0) return EOPNOTSUPP;
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ctx.accountMode === AccountMode.MM ? 1n : 0n;
    return 0;
  }
  if (cmd.op === IOMMU_OPTION_OP_SET) {
    if (!caller.accounting.capSysResource) return EPERM;
    if (ctx.table.size !== 0) return EBUSY;
    if (cmd.val64 === 0n) ctx.accountMode = AccountMode.USER;
    else if (cmd.val64 === 1n) ctx.accountMode = AccountMode.MM;
    else return EINVAL;
    return 0;
  }
  return EOPNOTSUPP;
}

/** iommufd_ioas_option_huge_pages (core-objects-vfio.md §6.2, §6.3). */
function optionHugePages(ioas: Ioas, cmd: OptionCmd): number {
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ioas.iopt.disableLargePages ? 0n : 1n;
    return 0;
  }
  if (cmd.op === IOMMU_OPTION_OP_SET) {
    if (cmd.val64 === 0n) {
      ioas.iopt.setLargePagesDisabled();
      return 0;
    }
    if (cmd.val64 === 1n) {
      ioas.iopt.setLargePagesEnabled();
      return 0;
    }
    return EINVAL;
  }
  return EOPNOTSUPP;
}

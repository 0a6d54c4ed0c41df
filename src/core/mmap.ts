/**
 * mmap() of the iommufd fd: the per-context registry of regions drivers offer (a vIOMMU's MMIO
 * page, the selftest mock's two loopback pages) and the mappings user space makes of them.
 *
 * Facts: drivers/iommu/iommufd/driver.c (_iommufd_alloc_mmap, _iommufd_destroy_mmap: a maple
 * tree range allocator per context, lowest free range starting at PAGE_SIZE, no alignment
 * beyond the page), main.c (iommufd_fops_mmap and the VMA open/close ops); spec
 * viommu-eventq.md §7 and §8.
 *
 * A mapping holds a `users` reference on the region's owner (IOMMU_DESTROY of the vIOMMU is
 * EBUSY until it is unmapped) and a reference on the iommufd file itself, as a queue fd does:
 * `ctxFileGet` / `ctxFilePut` below count those, so the daemon can defer the context's release
 * until the last one is gone (iommufd_fops_release runs at the last fput).
 */
import { EINVAL, ENOMEM, ENXIO, EPERM, ErrnoError } from "../errno.ts";
import type { PhysMem } from "../mem/phys.ts";
import type { IommufdContext } from "./context.ts";
import { type IommufdObject, refGet, refPut } from "./object.ts";
import { PAGE_SIZE } from "./user_mm.ts";

const PAGE = BigInt(PAGE_SIZE);
/** PHYS_ADDR_MAX: the allocator's upper bound. */
const OFFSET_MAX = (1n << 64n) - 1n;

/** mmap(2) bits the checks look at (asm-generic/mman-common.h). */
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_SHARED_VALIDATE = 0x03;
const MAP_TYPE = 0x0f;

// ---- The iommufd file's references --------------------------------------------------------------

const FILE_REFS = Symbol("iommufd file references");

/**
 * iommufd_ctx_get: a queue fd or a mapping keeps the iommufd file (and so the context) alive.
 * The daemon should not release a context while ctxFileRefs() is non-zero.
 */
export function ctxFileGet(ctx: IommufdContext): void {
  ctx.ext.set(FILE_REFS, ctxFileRefs(ctx) + 1);
}

/**
 * iommufd_ctx_put. When the context was already closed (its fd released while this reference
 * was held), the objects the reference kept alive are released now: the close passes run again.
 */
export function ctxFilePut(ctx: IommufdContext): void {
  const n = ctxFileRefs(ctx);
  if (n <= 0) throw new Error("iommufd file reference underflow");
  ctx.ext.set(FILE_REFS, n - 1);
  if (ctx.closed) ctx.table.closeAll();
}

/** References on the iommufd file held by queue fds and mappings. */
export function ctxFileRefs(ctx: IommufdContext): number {
  return (ctx.ext.get(FILE_REFS) as number | undefined) ?? 0;
}

// ---- Regions -----------------------------------------------------------------------------------

/** struct iommufd_mmap: one region a driver offers. */
export interface MmapRegion {
  /** Byte offset user space passes to mmap(). */
  readonly offset: bigint;
  readonly length: bigint;
  /** The object whose lifetime bounds the region (a VIOMMU). */
  readonly owner: IommufdObject;
  /** Physical memory behind it and its page-aligned base address there. */
  readonly mem: PhysMem;
  readonly physBase: number;
}

/** A live mapping of one region (one VMA). */
export interface MmapMapping {
  readonly region: MmapRegion;
  /** Copies from the mapped memory at byte `offset` of the region. */
  read(offset: number, dst: Uint8Array): void;
  /** Copies into the mapped memory at byte `offset` of the region. */
  write(offset: number, src: Uint8Array): void;
  /** A VMA copy (fork, split): another owner and file reference. */
  dup(): MmapMapping;
  /** munmap: drops the references (idempotent). */
  close(): void;
  readonly closed: boolean;
}

/**
 * The per-context region table. It is hung on the context under `Symbol.for(
 * "iommusim.mmapRegions")` so that the daemon's mmap hook finds it (its `check` method).
 */
export class MmapRegistry {
  /** Sorted by offset; regions never overlap. */
  private readonly regions: MmapRegion[] = [];

  /** Number of regions registered. */
  get size(): number {
    return this.regions.length;
  }

  /** The region containing byte `offset`, if any. */
  find(offset: bigint): MmapRegion | undefined {
    for (const r of this.regions) {
      if (offset < r.offset) return undefined;
      if (offset < r.offset + r.length) return r;
    }
    return undefined;
  }

  /** First fit from PAGE_SIZE upward (mtree_alloc_range). Returns the offset, or undefined. */
  allocRange(length: bigint): bigint | undefined {
    let cand = PAGE;
    let i = 0;
    for (; i < this.regions.length; i++) {
      const r = this.regions[i];
      if (r.offset + r.length <= cand) continue;
      if (cand + length <= r.offset) break;
      cand = r.offset + r.length;
    }
    if (cand + length - 1n > OFFSET_MAX) return undefined;
    return cand;
  }

  insert(region: MmapRegion): void {
    let i = 0;
    while (i < this.regions.length && this.regions[i].offset < region.offset) i++;
    this.regions.splice(i, 0, region);
  }

  /** mtree_erase: removes the region starting exactly at `offset`. */
  erase(offset: bigint): MmapRegion | undefined {
    const i = this.regions.findIndex((r) => r.offset === offset);
    if (i < 0) return undefined;
    return this.regions.splice(i, 1)[0];
  }

  /**
   * The daemon's hook: 0 when [pgoff pages, + length bytes) is exactly one registered region
   * whose owner is alive, else ENXIO (iommufd_fops_mmap steps 4-5). Takes no reference.
   */
  check(pgoff: bigint, length: bigint): number {
    const offset = pgoff * PAGE;
    const r = this.find(offset);
    if (r === undefined || r.owner.users === 0) return ENXIO;
    if (r.offset !== offset || r.length !== length) return ENXIO;
    return 0;
  }

  /** Regions in offset order (for tests and the daemon). */
  list(): readonly MmapRegion[] {
    return this.regions;
  }
}

const REGISTRY = Symbol.for("iommusim.mmapRegions");

/** The context's region registry, made on first use. */
export function mmapRegistry(ctx: IommufdContext): MmapRegistry {
  let r = ctx.ext.get(REGISTRY) as MmapRegistry | undefined;
  if (r === undefined) {
    r = new MmapRegistry();
    ctx.ext.set(REGISTRY, r);
  }
  return r;
}

/**
 * _iommufd_alloc_mmap: registers `length` bytes of physical memory at `physBase` (both page
 * aligned, length non-zero: else EINVAL) as a region owned by `owner`, at the lowest free
 * offset >= PAGE_SIZE. ENOMEM at the allocation site (or when the offset space is full).
 * Returns the offset. Throws ErrnoError.
 */
export function allocMmap(
  ctx: IommufdContext,
  owner: IommufdObject,
  mem: PhysMem,
  physBase: number,
  length: bigint,
): bigint {
  if (physBase % PAGE_SIZE !== 0) throw new ErrnoError(EINVAL, "mmap region base not aligned");
  if (length === 0n || length % PAGE !== 0n)
    throw new ErrnoError(EINVAL, "mmap region length not page aligned");
  if (ctx.faults.shouldFail("iommufd_mmap_alloc")) throw new ErrnoError(ENOMEM, "iommufd_mmap");
  const reg = mmapRegistry(ctx);
  const offset = reg.allocRange(length);
  if (offset === undefined) throw new ErrnoError(ENOMEM, "no free mmap offset range");
  reg.insert({ offset, length, owner, mem, physBase });
  return offset;
}

/** _iommufd_destroy_mmap: removes the region at `offset` (it must belong to `owner`). */
export function destroyMmap(ctx: IommufdContext, owner: IommufdObject, offset: bigint): void {
  const r = mmapRegistry(ctx).erase(offset);
  if (r === undefined || r.owner !== owner)
    throw new Error(`mmap region at ${offset} is not owned by object ${owner.id}`);
}

class Mapping implements MmapMapping {
  readonly region: MmapRegion;
  private readonly ctx: IommufdContext;
  closed = false;

  constructor(ctx: IommufdContext, region: MmapRegion) {
    this.ctx = ctx;
    this.region = region;
    refGet(region.owner);
    ctxFileGet(ctx);
  }

  private check(offset: number, len: number): void {
    if (this.closed) throw new Error("access to an unmapped iommufd mapping");
    if (offset < 0 || offset + len > Number(this.region.length))
      throw new RangeError("access outside the mapping");
  }

  read(offset: number, dst: Uint8Array): void {
    this.check(offset, dst.length);
    this.region.mem.readBytes(this.region.physBase + offset, dst);
  }

  write(offset: number, src: Uint8Array): void {
    this.check(offset, src.length);
    this.region.mem.writeBytes(this.region.physBase + offset, src);
  }

  dup(): MmapMapping {
    if (this.closed) throw new Error("dup of an unmapped iommufd mapping");
    return new Mapping(this.ctx, this.region);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    refPut(this.region.owner);
    ctxFilePut(this.ctx);
  }
}

/** What mmap(2) was asked for. */
export interface MmapRequest {
  /** Byte offset (the syscall's `off`). */
  offset: bigint;
  /** Byte length (the syscall's `len`, before rounding). */
  length: bigint;
  prot: number;
  flags: number;
}

/**
 * mmap(addr, len, prot, flags, iommufd, off): the VFS checks (len 0 or `off` not page aligned:
 * EINVAL; len rounded up to pages), then iommufd_fops_mmap's, in order: not a shared mapping
 * EINVAL; PROT_EXEC EPERM; no region at `off` (or its owner is going away) ENXIO; `off` not
 * the region's start or the rounded length not its length ENXIO. Returns the mapping (it holds
 * the owner and the file until closed) or a positive errno.
 */
export function mmapRegion(ctx: IommufdContext, req: MmapRequest): MmapMapping | number {
  if (req.length === 0n || req.offset % PAGE !== 0n) return EINVAL;
  const length = ((req.length + PAGE - 1n) / PAGE) * PAGE;
  const type = req.flags & MAP_TYPE;
  if (type !== MAP_SHARED && type !== MAP_SHARED_VALIDATE) return EINVAL;
  if ((req.prot & PROT_EXEC) !== 0) return EPERM;
  const reg = ctx.ext.get(REGISTRY) as MmapRegistry | undefined;
  if (reg === undefined) return ENXIO;
  const rc = reg.check(req.offset / PAGE, length);
  if (rc !== 0) return rc;
  const region = reg.find(req.offset);
  if (region === undefined) return ENXIO;
  return new Mapping(ctx, region);
}

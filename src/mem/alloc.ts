/**
 * A page allocator for page-table pages and other IOMMU structures in physical memory.
 *
 * Blocks are powers of two from 256 bytes up, naturally aligned (a table's base address must be
 * aligned to its size in every format we model, and to at least 4 KiB for most), and zeroed when
 * handed out, as the kernel's iommu_alloc_pages_sz() does. Freed blocks go to a per-size free
 * list; a bump pointer serves the rest. `live` lets a test prove a table was freed completely.
 */
import { PHYS_ADDR_LIMIT, type PhysMem } from "./phys.ts";

export interface PageAllocatorOptions {
  /** First byte of the region the allocator owns (default 1 GiB). */
  base?: number;
  /** Size of the region (default 2^40 bytes). */
  size?: number;
}

export class PageAllocator {
  readonly mem: PhysMem;
  readonly base: number;
  readonly limit: number;
  private next: number;
  private readonly free = new Map<number, number[]>();
  private readonly sizes = new Map<number, number>();
  /** Blocks handed out and not yet freed. */
  live = 0;
  /** Bytes handed out and not yet freed. */
  liveBytes = 0;

  constructor(mem: PhysMem, opts: PageAllocatorOptions = {}) {
    this.mem = mem;
    this.base = opts.base ?? 2 ** 30;
    this.limit = this.base + (opts.size ?? 2 ** 40);
    if (this.limit > PHYS_ADDR_LIMIT) throw new RangeError("allocator region exceeds 2^52");
    this.next = this.base;
  }

  /** Allocates a zeroed, naturally aligned block of 2^sizeLg2 bytes; returns its address. */
  alloc(sizeLg2: number): number {
    if (!Number.isInteger(sizeLg2) || sizeLg2 < 8 || sizeLg2 > 40) {
      throw new RangeError(`cannot allocate a block of 2^${sizeLg2} bytes`);
    }
    const size = 2 ** sizeLg2;
    let pa = this.free.get(sizeLg2)?.pop();
    if (pa === undefined) {
      const aligned = Math.ceil(this.next / size) * size;
      if (aligned + size > this.limit) throw new RangeError("page allocator region exhausted");
      // The alignment gap is not lost: hand it out as smaller blocks later.
      this.recycleGap(this.next, aligned);
      this.next = aligned + size;
      pa = aligned;
    } else {
      this.mem.zero(pa, size);
    }
    this.sizes.set(pa, sizeLg2);
    this.live++;
    this.liveBytes += size;
    return pa;
  }

  /** Returns a block to the allocator. Freeing an address that is not live throws. */
  release(pa: number): void {
    const sizeLg2 = this.sizes.get(pa);
    if (sizeLg2 === undefined) throw new Error(`0x${pa.toString(16)} is not an allocated block`);
    this.sizes.delete(pa);
    this.live--;
    this.liveBytes -= 2 ** sizeLg2;
    let list = this.free.get(sizeLg2);
    if (list === undefined) {
      list = [];
      this.free.set(sizeLg2, list);
    }
    list.push(pa);
  }

  /** One past the highest address ever handed out: [base, highWater) holds every block. */
  get highWater(): number {
    return this.next;
  }

  /** The log2 size of a live block, or undefined. */
  sizeOf(pa: number): number | undefined {
    return this.sizes.get(pa);
  }

  private recycleGap(from: number, to: number): void {
    let a = from;
    while (a < to) {
      // Largest naturally aligned power-of-two block starting at `a` that fits before `to`.
      let lg2 = 8;
      while (lg2 < 40 && a % 2 ** (lg2 + 1) === 0 && a + 2 ** (lg2 + 1) <= to) lg2++;
      if (a % 2 ** lg2 !== 0 || a + 2 ** lg2 > to) return; // sub-256-byte tail: not usable
      let list = this.free.get(lg2);
      if (list === undefined) {
        list = [];
        this.free.set(lg2, list);
      }
      list.push(a); // never handed out yet, so still zero
      a += 2 ** lg2;
    }
  }
}

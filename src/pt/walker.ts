/**
 * The generic page-table walker: one implementation of map / unmap / iova_to_phys / dirty /
 * free / trace for every format, driven by the format's hooks (src/pt/format.ts), in the manner
 * of Linux's generic_pt (drivers/iommu/generic_pt/iommu_pt.h).
 *
 * This is control plane: the public methods take bigint IOVAs and lengths and check them once;
 * the recursion below works on (hi, lo) halves so that the per-page loops of map and unmap never
 * allocate or touch bigint. Recursion is per table, never per entry.
 *
 * All addresses inside the walker are offsets from the format's iovaBase (non-zero only for PPC
 * TCE windows); callbacks and results are given back as real IOVAs.
 *
 * Errors are thrown as ErrnoError with the errno generic_pt / iommu core would return:
 *   EINVAL     zero length, misaligned iova/pa/length, no access in prot, pa too wide
 *   EOVERFLOW  iova + length wraps past 2^64
 *   ERANGE     the range is outside the format's input address space
 *   EADDRINUSE something is already mapped in the range (map changes nothing then)
 *   ENOMEM     no memory for a table
 */
import { EADDRINUSE, EINVAL, ENOMEM, EOPNOTSUPP, EOVERFLOW, ERANGE, ErrnoError } from "../errno.ts";
import type { PageAllocator } from "../mem/alloc.ts";
import type { PhysMem } from "../mem/phys.ts";
import {
  add,
  alignDown,
  bits,
  cmp,
  fromBigInt,
  isAligned,
  shl,
  sub,
  toBigInt,
  U64,
} from "../mem/u64.ts";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
  type PtEntryKind,
  type PtFormat,
} from "./format.ts";
import type { WalkConfig } from "./translate.ts";

const U64_MAX = (1n << 64n) - 1n;

/** POW2[n] = 2^n as a Number, exact for 0..64: `2 ** n` compiles to a Math.pow call. */
const POW2 = new Float64Array(65).map((_, n) => 2 ** n);

export interface PageTableOptions {
  /**
   * Page sizes the table may use, as a kernel pgsize bitmap (bit n set = 2^n-byte pages).
   * Default: every size the format can encode.
   */
  pgsizeBitmap?: bigint;
}

/** One table read of a walk trace. */
export interface WalkStep {
  level: number;
  index: number;
  tablePa: number;
  entryPa: number;
  raw: bigint;
  kind: "empty" | "table" | "leaf";
  meaning: string;
}

export interface WalkTrace {
  steps: WalkStep[];
  /** Output address of the traced IOVA, when mapped. */
  pa?: number;
  /** log2 size of the page that maps it, when mapped. */
  pageLg2?: number;
}

/** A leaf as listed by PageTable.leaves(). */
export interface LeafInfo {
  iova: bigint;
  oa: number;
  sizeLg2: number;
  level: number;
  prot: number;
}

/** Called for each dirty leaf: the IOVA of its first byte as halves and its log2 size. */
export type DirtyRecorder = (iovaHi: number, iovaLo: number, sizeLg2: number) => void;

const KIND_NAME = ["empty", "table", "leaf"] as const;

/** A page-table tree of one format in physical memory. */
export class PageTable {
  readonly fmt: PtFormat;
  readonly mem: PhysMem;
  readonly alloc: PageAllocator;
  /** Address of the top table; -1 after free(). */
  root: number;
  /** Allowed page sizes, largest first. */
  readonly pageSizesLg2: readonly number[];
  /** Smallest allowed page size: iova, pa and length must be aligned to it. */
  readonly minPageLg2: number;

  private readonly levelOfSize = new Int8Array(65).fill(-1);
  private readonly sizeHi = new Uint32Array(65);
  private readonly sizeLo = new Uint32Array(65);
  private readonly baseHi: number;
  private readonly baseLo: number;
  private readonly top: number;

  // Walk state shared by the recursive helpers (one operation at a time).
  private readonly cur = new U64();
  private readonly last = new U64();
  private readonly rem = new U64();
  private readonly done = new U64(); // bytes unmapped
  private curPa = 0;
  private prot = 0;
  private finished = false;
  private readonly e = new U64();
  private readonly t = new U64();
  private readonly tmp = new U64();

  constructor(fmt: PtFormat, alloc: PageAllocator, opts: PageTableOptions = {}) {
    this.fmt = fmt;
    this.alloc = alloc;
    this.mem = alloc.mem;
    this.top = fmt.levels - 1;
    const base = new U64();
    fromBigInt(fmt.iovaBase, base);
    this.baseHi = base.hi;
    this.baseLo = base.lo;
    const sizes: number[] = [];
    for (let level = 0; level < fmt.levels; level++) {
      for (const s of fmt.leafSizesLg2(level)) {
        if (opts.pgsizeBitmap !== undefined && ((opts.pgsizeBitmap >> BigInt(s)) & 1n) === 0n)
          continue;
        if (this.levelOfSize[s] !== -1) continue; // the lowest level offering a size wins
        this.levelOfSize[s] = level;
        sizes.push(s);
      }
    }
    if (sizes.length === 0) throw new ErrnoError(EINVAL, `${fmt.name}: no allowed page size`);
    sizes.sort((a, b) => b - a);
    this.pageSizesLg2 = sizes;
    this.minPageLg2 = sizes[sizes.length - 1];
    for (let s = 0; s <= 64; s++) {
      shl(0, 1, s, this.tmp);
      this.sizeHi[s] = this.tmp.hi;
      this.sizeLo[s] = this.tmp.lo;
    }
    this.root = this.allocTable(this.top);
  }

  /** The data-plane view of this tree. */
  walkConfig(): WalkConfig {
    return this.fmt.walkConfig(this.root);
  }

  // ---- public operations ---------------------------------------------------------------------

  /** Maps [iova, iova + len) to [pa, pa + len) using the largest page sizes that fit. */
  map(iova: bigint, pa: number, len: bigint, prot: number): void {
    this.checkRange(iova, len, "map");
    const gran = 2 ** this.minPageLg2;
    if (!Number.isInteger(pa) || pa < 0 || pa % gran !== 0) {
      throw new ErrnoError(
        EINVAL,
        `${this.fmt.name}: pa 0x${pa.toString(16)} is not ${gran}-aligned`,
      );
    }
    const oaLimit = 2 ** Math.min(this.fmt.oaBits, 52);
    if (pa + Number(len) > oaLimit) {
      throw new ErrnoError(
        EINVAL,
        `${this.fmt.name}: pa range exceeds the ${this.fmt.oaBits}-bit output size`,
      );
    }
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) {
      throw new ErrnoError(EINVAL, `${this.fmt.name}: prot grants neither read nor write`);
    }
    this.setRange(iova, len);
    fromBigInt(len, this.rem);
    this.curPa = pa;
    this.prot = prot;
    const startHi = this.cur.hi;
    const startLo = this.cur.lo;
    try {
      this.mapLevel(this.root, this.top);
      if (this.rem.hi !== 0 || this.rem.lo !== 0) {
        throw new ErrnoError(ERANGE, `${this.fmt.name}: map ran past the top table`);
      }
    } catch (err) {
      // All or nothing: take back what this call mapped before failing.
      const mapped = len - this.rem.toBigInt();
      if (mapped > 0n) {
        this.cur.set(startHi, startLo);
        fromBigInt(toBigInt(startHi, startLo) + mapped - 1n, this.last);
        this.finished = false;
        this.done.set(0, 0);
        this.unmapLevel(this.root, this.top);
      }
      throw err;
    }
  }

  /**
   * Unmaps the leaves in [iova, iova + len) and returns the bytes unmapped. Holes are skipped.
   * A large page only partly inside the range is handled as the format's unmapPolicy says:
   * refused (the walk stops there and the bytes unmapped so far are returned), removed whole
   * when the range starts at its first byte (generic_pt), or split. Tables whose whole span the
   * range covered are freed.
   */
  unmap(iova: bigint, len: bigint): bigint {
    this.checkRange(iova, len, "unmap");
    this.setRange(iova, len);
    this.done.set(0, 0);
    this.unmapLevel(this.root, this.top);
    return this.done.toBigInt();
  }

  /** The output address `iova` translates to, or undefined when nothing maps it. */
  iovaToPhys(iova: bigint): number | undefined {
    if (!this.inRange(iova)) return undefined;
    this.setRel(iova);
    let table = this.root;
    for (let level = this.top; level >= 0; level--) {
      const idx = this.index(level);
      const kind = this.load(table, idx, level);
      if (kind === PT_ENTRY_EMPTY) return undefined;
      if (kind === PT_ENTRY_TABLE) {
        table = this.fmt.tablePa(this.e, level);
        continue;
      }
      const s = this.fmt.leafSizeLg2(this.e, level);
      return this.fmt.leafOa(this.e, level) + this.offsetIn(s);
    }
    return undefined;
  }

  /** Every table read translating `iova`, decoded. */
  trace(iova: bigint): WalkTrace {
    const steps: WalkStep[] = [];
    if (!this.inRange(iova)) return { steps };
    this.setRel(iova);
    let table = this.root;
    for (let level = this.top; level >= 0; level--) {
      const idx = this.index(level);
      const kind = this.load(table, idx, level);
      steps.push({
        level,
        index: idx,
        tablePa: table,
        entryPa: table + idx * 8,
        raw: this.e.toBigInt(),
        kind: KIND_NAME[kind],
        meaning: this.fmt.describe(this.e, level),
      });
      if (kind === PT_ENTRY_EMPTY) return { steps };
      if (kind === PT_ENTRY_TABLE) {
        table = this.fmt.tablePa(this.e, level);
        continue;
      }
      const s = this.fmt.leafSizeLg2(this.e, level);
      return { steps, pa: this.fmt.leafOa(this.e, level) + this.offsetIn(s), pageLg2: s };
    }
    return { steps };
  }

  /**
   * Reports every dirty leaf intersecting [iova, iova + len) to `record` (whole leaves, which
   * may extend past the range) and clears their dirty state unless `noClear`.
   */
  readAndClearDirty(iova: bigint, len: bigint, record: DirtyRecorder, noClear = false): void {
    if (!this.fmt.hasDirty)
      throw new ErrnoError(EOPNOTSUPP, `${this.fmt.name} has no dirty tracking`);
    this.checkRange(iova, len, "read dirty");
    this.setRange(iova, len);
    this.dirtyLevel(this.root, this.top, record, noClear);
  }

  /** Marks the leaf slot mapping `iova` dirty, as a device write would; false when unmapped. */
  setDirty(iova: bigint): boolean {
    if (!this.inRange(iova)) return false;
    this.setRel(iova);
    let table = this.root;
    for (let level = this.top; level >= 0; level--) {
      const idx = this.index(level);
      const kind = this.load(table, idx, level);
      if (kind === PT_ENTRY_EMPTY) return false;
      if (kind === PT_ENTRY_TABLE) {
        table = this.fmt.tablePa(this.e, level);
        continue;
      }
      this.fmt.setDirty(this.e, level, this.t);
      this.store(table, idx, this.t);
      return true;
    }
    return false;
  }

  /** Every leaf in the tree, in IOVA order (contiguous groups reported once). For tests and tools. */
  leaves(): LeafInfo[] {
    const out: LeafInfo[] = [];
    this.collect(this.root, this.top, 0n, out);
    return out;
  }

  /** Every table page of the tree, root first. */
  tablePages(): { pa: number; level: number; sizeLg2: number }[] {
    const out: { pa: number; level: number; sizeLg2: number }[] = [];
    if (this.root >= 0) this.listTables(this.root, this.top, out);
    return out;
  }

  private listTables(
    table: number,
    level: number,
    out: { pa: number; level: number; sizeLg2: number }[],
  ): void {
    out.push({ pa: table, level, sizeLg2: this.fmt.tableLg2(level) + 3 });
    if (level === 0) return;
    const n = POW2[this.fmt.tableLg2(level)];
    for (let i = 0; i < n; i++) {
      if (this.load(table, i, level) === PT_ENTRY_TABLE)
        this.listTables(this.fmt.tablePa(this.e, level), level - 1, out);
    }
  }

  /** Number of table pages in the tree, root included. */
  tableCount(): number {
    return this.root < 0 ? 0 : this.countTables(this.root, this.top);
  }

  /** Frees every table, root included. The PageTable is unusable afterwards. */
  free(): void {
    if (this.root < 0) return;
    this.freeSubtree(this.root, this.top);
    this.root = -1;
  }

  // ---- argument checks -----------------------------------------------------------------------

  private checkRange(iova: bigint, len: bigint, what: string): void {
    const name = this.fmt.name;
    if (len <= 0n) throw new ErrnoError(EINVAL, `${name}: ${what} of length ${len}`);
    if (iova < 0n || iova > U64_MAX || len > U64_MAX) {
      throw new ErrnoError(EINVAL, `${name}: ${what} arguments are not u64 values`);
    }
    if (iova + len - 1n > U64_MAX) {
      throw new ErrnoError(
        EOVERFLOW,
        `${name}: ${what} of 0x${iova.toString(16)}+0x${len.toString(16)} wraps past 2^64`,
      );
    }
    const lo = this.fmt.iovaBase;
    const hi = lo + (1n << BigInt(this.fmt.vaBits)) - 1n;
    if (iova < lo || iova + len - 1n > hi) {
      throw new ErrnoError(
        ERANGE,
        `${name}: ${what} range 0x${iova.toString(16)}..0x${(iova + len - 1n).toString(16)} is outside the IOVA space 0x${lo.toString(16)}..0x${hi.toString(16)}`,
      );
    }
    const g = 1n << BigInt(this.minPageLg2);
    if (iova % g !== 0n || len % g !== 0n) {
      throw new ErrnoError(
        EINVAL,
        `${name}: ${what} range is not aligned to the ${g}-byte page size`,
      );
    }
  }

  private inRange(iova: bigint): boolean {
    const lo = this.fmt.iovaBase;
    return iova >= lo && iova - lo < 1n << BigInt(this.fmt.vaBits) && iova <= U64_MAX;
  }

  // ---- walk state ----------------------------------------------------------------------------

  /** cur = iova - base. */
  private setRel(iova: bigint): void {
    fromBigInt(iova, this.tmp);
    sub(this.tmp.hi, this.tmp.lo, this.baseHi, this.baseLo, this.cur);
  }

  /** cur = iova - base, last = cur + len - 1, not finished. */
  private setRange(iova: bigint, len: bigint): void {
    this.setRel(iova);
    fromBigInt(iova - this.fmt.iovaBase + len - 1n, this.last);
    this.finished = false;
  }

  private index(level: number): number {
    return bits(this.cur.hi, this.cur.lo, this.fmt.itemLg2(level), this.fmt.tableLg2(level));
  }

  /** Offset of cur inside a naturally aligned 2^s block. */
  private offsetIn(s: number): number {
    alignDown(this.cur.hi, this.cur.lo, s, this.tmp);
    sub(this.cur.hi, this.cur.lo, this.tmp.hi, this.tmp.lo, this.tmp);
    return this.tmp.hi * 4294967296 + this.tmp.lo;
  }

  /** cur += 2^s; marks the walk finished when cur passes `last` or wraps. */
  private advance(s: number): void {
    const carry = add(this.cur.hi, this.cur.lo, this.sizeHi[s], this.sizeLo[s], this.cur);
    if (carry !== 0 || cmp(this.cur.hi, this.cur.lo, this.last.hi, this.last.lo) > 0)
      this.finished = true;
  }

  /** cur = start of the next 2^s block. */
  private skipTo(s: number): void {
    alignDown(this.cur.hi, this.cur.lo, s, this.cur);
    this.advance(s);
  }

  // ---- entry access --------------------------------------------------------------------------

  private load(table: number, idx: number, level: number): PtEntryKind {
    const pa = table + idx * 8;
    if (this.fmt.bigEndian) this.mem.read64be(pa, this.e);
    else this.mem.read64(pa, this.e);
    return this.fmt.entryKind(this.e, level);
  }

  private store(table: number, idx: number, v: U64): void {
    const pa = table + idx * 8;
    if (this.fmt.bigEndian) this.mem.write64be(pa, v.hi, v.lo);
    else this.mem.write64(pa, v.hi, v.lo);
  }

  private clear(table: number, idx: number): void {
    this.mem.write64(table + idx * 8, 0, 0);
  }

  private allocTable(level: number): number {
    try {
      // Small tables (an ARM 16K-granule level-0 table has 2 entries, an AMD 6-level root 128)
      // still get a 4 KiB-aligned page, as Linux allocates them and as root pointers such as
      // the AMD DTE's (bits 51:12) require.
      return this.alloc.alloc(Math.max(this.fmt.tableLg2(level) + 3, 12));
    } catch (err) {
      if (err instanceof RangeError)
        throw new ErrnoError(ENOMEM, `${this.fmt.name}: no memory for a table`);
      throw err;
    }
  }

  // ---- map -----------------------------------------------------------------------------------

  /** Largest allowed page size for the current position, or -1. */
  private bestSize(): number {
    const sizes = this.pageSizesLg2;
    for (let i = 0; i < sizes.length; i++) {
      const s = sizes[i];
      if (cmp(this.rem.hi, this.rem.lo, this.sizeHi[s], this.sizeLo[s]) < 0) continue;
      if (!isAligned(this.cur.hi, this.cur.lo, s)) continue;
      if (this.curPa % POW2[s] !== 0) continue;
      return s;
    }
    return -1;
  }

  private mapLevel(table: number, level: number): void {
    const fmt = this.fmt;
    const n = POW2[fmt.tableLg2(level)];
    const itemLg2 = fmt.itemLg2(level);
    let idx = this.index(level);
    while (idx < n && (this.rem.hi !== 0 || this.rem.lo !== 0)) {
      const s = this.bestSize();
      const lv = s < 0 ? -1 : this.levelOfSize[s];
      if (lv > level || lv < 0) return;
      if (lv === level) {
        const k = POW2[s - itemLg2];
        for (let j = 0; j < k; j++) this.makeRoom(table, idx + j, level);
        for (let j = 0; j < k; j++) {
          fmt.makeLeaf(this.curPa, s, level, j, this.prot, this.t);
          this.store(table, idx + j, this.t);
        }
        add(this.cur.hi, this.cur.lo, this.sizeHi[s], this.sizeLo[s], this.cur);
        sub(this.rem.hi, this.rem.lo, this.sizeHi[s], this.sizeLo[s], this.rem);
        this.curPa += POW2[s];
        idx += k;
        continue;
      }
      let child: number;
      const kind = this.load(table, idx, level);
      if (kind === PT_ENTRY_LEAF) throw this.inUse();
      if (kind === PT_ENTRY_TABLE) {
        child = fmt.tablePa(this.e, level);
      } else {
        child = this.allocTable(level - 1);
        fmt.makeTable(child, level, this.t);
        this.store(table, idx, this.t);
      }
      this.mapLevel(child, level - 1);
      idx++;
    }
  }

  /** A slot about to receive a leaf must be empty, or an empty table that is freed now. */
  private makeRoom(table: number, idx: number, level: number): void {
    const kind = this.load(table, idx, level);
    if (kind === PT_ENTRY_EMPTY) return;
    if (kind === PT_ENTRY_LEAF) throw this.inUse();
    const child = this.fmt.tablePa(this.e, level);
    if (this.subtreeHasLeaf(child, level - 1)) throw this.inUse();
    this.freeSubtree(child, level - 1);
    this.clear(table, idx);
  }

  private inUse(): ErrnoError {
    const iova = this.cur.toBigInt() + this.fmt.iovaBase;
    return new ErrnoError(
      EADDRINUSE,
      `${this.fmt.name}: IOVA 0x${iova.toString(16)} is already mapped`,
    );
  }

  // ---- unmap ---------------------------------------------------------------------------------

  /** Returns true when the walk stopped at a large page it refused to cut. */
  private unmapLevel(table: number, level: number): boolean {
    const fmt = this.fmt;
    const n = POW2[fmt.tableLg2(level)];
    const itemLg2 = fmt.itemLg2(level);
    let idx = this.index(level);
    while (idx < n && !this.finished) {
      const kind = this.load(table, idx, level);
      if (kind === PT_ENTRY_EMPTY) {
        this.skipTo(itemLg2);
        idx++;
        continue;
      }
      if (kind === PT_ENTRY_TABLE) {
        const child = fmt.tablePa(this.e, level);
        const covered = this.covers(itemLg2);
        if (this.unmapLevel(child, level - 1)) return true;
        if (covered) {
          this.freeSubtree(child, level - 1);
          this.clear(table, idx);
        }
        idx++;
        continue;
      }
      const s = fmt.leafSizeLg2(this.e, level);
      const k = POW2[s - itemLg2];
      const first = idx - (idx % k);
      if (
        this.covers(s) ||
        (fmt.unmapPolicy === "whole" && isAligned(this.cur.hi, this.cur.lo, s))
      ) {
        for (let j = 0; j < k; j++) this.clear(table, first + j);
        add(this.done.hi, this.done.lo, this.sizeHi[s], this.sizeLo[s], this.done);
        this.advance(s);
        idx = first + k;
        continue;
      }
      if (fmt.unmapPolicy !== "split") return true;
      this.split(table, first, level);
      // Re-read the same slot: it now holds smaller pages or a table.
    }
    return false;
  }

  /** True when cur is the start of a 2^s block that lies entirely within [cur, last]. */
  private covers(s: number): boolean {
    if (!isAligned(this.cur.hi, this.cur.lo, s)) return false;
    const carry = add(this.cur.hi, this.cur.lo, this.sizeHi[s], this.sizeLo[s], this.tmp);
    sub(this.tmp.hi, this.tmp.lo, 0, 1, this.tmp);
    if (carry !== 0 && (this.tmp.hi !== 0xffffffff || this.tmp.lo !== 0xffffffff)) return false;
    return cmp(this.tmp.hi, this.tmp.lo, this.last.hi, this.last.lo) <= 0;
  }

  /**
   * Replaces the large page whose first slot is `first` by smaller pages mapping the same bytes:
   * a contiguous group becomes individual item-size leaves; an item-size leaf above level 0
   * becomes a next-level table of leaves.
   */
  private split(table: number, first: number, level: number): void {
    const fmt = this.fmt;
    this.load(table, first, level);
    const s = fmt.leafSizeLg2(this.e, level);
    const oa = fmt.leafOa(this.e, level);
    const prot = fmt.leafProt(this.e, level);
    const itemLg2 = fmt.itemLg2(level);
    const k = POW2[s - itemLg2];
    if (k > 1) {
      for (let j = 0; j < k; j++) {
        fmt.makeLeaf(oa + j * POW2[itemLg2], itemLg2, level, 0, prot, this.t);
        this.store(table, first + j, this.t);
      }
      return;
    }
    const childLg2 = fmt.itemLg2(level - 1);
    if (level === 0 || !fmt.leafSizesLg2(level - 1).includes(childLg2)) {
      throw new ErrnoError(EINVAL, `${fmt.name}: cannot split a level-${level} page`);
    }
    const child = this.allocTable(level - 1);
    const n = POW2[fmt.tableLg2(level - 1)];
    for (let j = 0; j < n; j++) {
      fmt.makeLeaf(oa + j * POW2[childLg2], childLg2, level - 1, 0, prot, this.t);
      this.store(child, j, this.t);
    }
    fmt.makeTable(child, level, this.t);
    this.store(table, first, this.t);
  }

  // ---- dirty ---------------------------------------------------------------------------------

  private dirtyLevel(table: number, level: number, record: DirtyRecorder, noClear: boolean): void {
    const fmt = this.fmt;
    const n = POW2[fmt.tableLg2(level)];
    const itemLg2 = fmt.itemLg2(level);
    let idx = this.index(level);
    while (idx < n && !this.finished) {
      const kind = this.load(table, idx, level);
      if (kind === PT_ENTRY_EMPTY) {
        this.skipTo(itemLg2);
        idx++;
        continue;
      }
      if (kind === PT_ENTRY_TABLE) {
        this.dirtyLevel(fmt.tablePa(this.e, level), level - 1, record, noClear);
        idx++;
        continue;
      }
      const s = fmt.leafSizeLg2(this.e, level);
      const k = POW2[s - itemLg2];
      const first = idx - (idx % k);
      let dirty = false;
      for (let j = 0; j < k; j++) {
        this.load(table, first + j, level);
        if (!fmt.isDirty(this.e, level)) continue;
        dirty = true;
        if (noClear) break;
        fmt.clearDirty(this.e, level, this.t);
        this.store(table, first + j, this.t);
      }
      if (dirty) {
        alignDown(this.cur.hi, this.cur.lo, s, this.tmp);
        add(this.tmp.hi, this.tmp.lo, this.baseHi, this.baseLo, this.tmp);
        record(this.tmp.hi, this.tmp.lo, s);
      }
      this.skipTo(s);
      idx = first + k;
    }
  }

  // ---- whole-tree helpers --------------------------------------------------------------------

  private subtreeHasLeaf(table: number, level: number): boolean {
    const n = POW2[this.fmt.tableLg2(level)];
    for (let i = 0; i < n; i++) {
      const kind = this.load(table, i, level);
      if (kind === PT_ENTRY_LEAF) return true;
      if (
        kind === PT_ENTRY_TABLE &&
        this.subtreeHasLeaf(this.fmt.tablePa(this.e, level), level - 1)
      )
        return true;
    }
    return false;
  }

  private freeSubtree(table: number, level: number): void {
    if (level > 0) {
      const n = POW2[this.fmt.tableLg2(level)];
      for (let i = 0; i < n; i++) {
        if (this.load(table, i, level) === PT_ENTRY_TABLE)
          this.freeSubtree(this.fmt.tablePa(this.e, level), level - 1);
      }
    }
    this.alloc.release(table);
  }

  private countTables(table: number, level: number): number {
    let count = 1;
    if (level > 0) {
      const n = POW2[this.fmt.tableLg2(level)];
      for (let i = 0; i < n; i++) {
        if (this.load(table, i, level) === PT_ENTRY_TABLE)
          count += this.countTables(this.fmt.tablePa(this.e, level), level - 1);
      }
    }
    return count;
  }

  private collect(table: number, level: number, base: bigint, out: LeafInfo[]): void {
    const fmt = this.fmt;
    const n = POW2[fmt.tableLg2(level)];
    const item = 1n << BigInt(fmt.itemLg2(level));
    for (let i = 0; i < n; i++) {
      const kind = this.load(table, i, level);
      if (kind === PT_ENTRY_EMPTY) continue;
      const at = base + BigInt(i) * item;
      if (kind === PT_ENTRY_TABLE) {
        this.collect(fmt.tablePa(this.e, level), level - 1, at, out);
      } else if (kind === PT_ENTRY_LEAF) {
        const s = fmt.leafSizeLg2(this.e, level);
        const k = POW2[s - fmt.itemLg2(level)];
        if (i % k !== 0) continue; // report a contiguous group once, at its first slot
        out.push({
          iova: at + fmt.iovaBase,
          oa: fmt.leafOa(this.e, level),
          sizeLg2: s,
          level,
          prot: fmt.leafProt(this.e, level),
        });
      }
    }
  }
}

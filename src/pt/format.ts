/**
 * The page-table format API: what a format tells the generic walker (src/pt/walker.ts).
 *
 * Modelled on Linux's generic_pt (drivers/iommu/generic_pt/pt_common.h): a format is a small set
 * of hooks over one table entry plus per-level geometry, every size a log2, and contiguous
 * entries (ARM's contiguous hint, AMD v1's NextLevel=7 replication) are first-class. The generic
 * walker implements map / unmap / iova_to_phys / dirty / free / trace once for every format.
 *
 * Levels are numbered like generic_pt: level 0 holds the smallest pages, the top table is level
 * `levels - 1`. Entries are 64-bit values passed as `U64` (hi, lo) halves; hooks that produce an
 * entry write it into a caller-owned `out` so that the per-page loops of map/unmap never
 * allocate and never touch `bigint` (docs/ARCHITECTURE.md, rule 1).
 *
 * The hooks are the control plane. Each format also exports one monomorphic data-plane
 * `translate` function (see src/pt/translate.ts) that must agree with the walker; the shared
 * conformance suite (test/conformance/pt.case.ts) checks that it does.
 */
import type { U64 } from "../mem/u64.ts";
import type { WalkConfig } from "./translate.ts";

/** What one table entry is, at the level it was read from. */
export const PT_ENTRY_EMPTY = 0;
export const PT_ENTRY_TABLE = 1;
export const PT_ENTRY_LEAF = 2;
export type PtEntryKind = typeof PT_ENTRY_EMPTY | typeof PT_ENTRY_TABLE | typeof PT_ENTRY_LEAF;

/** Mapping protection flags, as include/linux/iommu.h defines IOMMU_READ... */
export const IOMMU_READ = 1 << 0;
export const IOMMU_WRITE = 1 << 1;
export const IOMMU_CACHE = 1 << 2;
export const IOMMU_NOEXEC = 1 << 3;
export const IOMMU_MMIO = 1 << 4;
export const IOMMU_PRIV = 1 << 5;

/** What happens when unmap covers only part of a large page. */
export type LargePageUnmapPolicy =
  /** Stop at the large page and report what was unmapped before it (io-pgtable-arm since 6.13). */
  | "refuse"
  /**
   * generic_pt: a range that starts at a large page's first byte removes the whole page (the
   * count returned may exceed the range); a range that starts inside one stops there.
   */
  | "whole"
  /** Replace the large page by a next-level table and unmap only the covered part (old io-pgtable-arm). */
  | "split";

export interface PtFormat {
  /** Unique configuration name, e.g. "x86_64-4lvl" or "armv8-s2-4k-l0". */
  readonly name: string;
  /** Small integer naming the data-plane translate function (FMT_* in translate.ts). */
  readonly tag: number;
  /** Where the bit layout comes from: spec section and/or Linux file. */
  readonly source: string;
  /** Levels in this configuration; the top table is level `levels - 1`. */
  readonly levels: number;
  /**
   * Width of the input address space: valid IOVAs are iovaBase .. iovaBase + 2^vaBits - 1.
   * (No format here sign-extends: IOMMU DMA domains use the lower half only.)
   */
  readonly vaBits: number;
  /** First valid IOVA (non-zero only for PPC TCE windows). */
  readonly iovaBase: bigint;
  /** Width of output addresses the format can encode. */
  readonly oaBits: number;
  /** Entries are stored big-endian (PPC TCE). */
  readonly bigEndian: boolean;
  readonly unmapPolicy: LargePageUnmapPolicy;
  /** The format has dirty state the walker can read and clear. */
  readonly hasDirty: boolean;

  /** log2 of the bytes one entry at `level` maps. */
  itemLg2(level: number): number;
  /** log2 of the number of entries in a table at `level` (the top table may differ). */
  tableLg2(level: number): number;
  /**
   * log2 page sizes a leaf installed at `level` may have, ascending: the item size itself when
   * the level allows leaves, plus contiguous sizes made of 2^(size - itemLg2) identical-slot
   * entries. Empty when `level` holds tables only.
   */
  leafSizesLg2(level: number): readonly number[];

  /** Classifies an entry read at `level`. */
  entryKind(e: U64, level: number): PtEntryKind;
  /** Address of the next-level table an entry of kind TABLE points to. */
  tablePa(e: U64, level: number): number;
  /** Output address of the first byte of the page (the whole contiguous page) a LEAF maps. */
  leafOa(e: U64, level: number): number;
  /** log2 size of the page (the whole contiguous page) a LEAF belongs to. */
  leafSizeLg2(e: U64, level: number): number;
  /** The IOMMU_* protection a LEAF grants (READ/WRITE/NOEXEC/PRIV/CACHE as the format can express). */
  leafProt(e: U64, level: number): number;

  /**
   * The entry for slot `slot` (0 .. 2^(sizeLg2 - itemLg2(level)) - 1) of a page of 2^sizeLg2
   * bytes at `level` whose first byte is at `oa`, granting `prot` (IOMMU_* flags).
   */
  makeLeaf(oa: number, sizeLg2: number, level: number, slot: number, prot: number, out: U64): void;
  /** An entry at `level` pointing to the table at `pa` (one level down). */
  makeTable(pa: number, level: number, out: U64): void;

  /** True when a LEAF entry records a write since its dirty state was last cleared. */
  isDirty(e: U64, level: number): boolean;
  /** `out` = `e` with its dirty state cleared (write-protect again for DBM-style formats). */
  clearDirty(e: U64, level: number, out: U64): void;
  /** `out` = `e` marked dirty, as hardware would on a write (for dirty injection in tests). */
  setDirty(e: U64, level: number, out: U64): void;

  /** Human-readable decode of an entry at `level`, for walk traces and the demo. */
  describe(e: U64, level: number): string;

  /** Data-plane configuration for a table tree rooted at `rootPa`. */
  walkConfig(rootPa: number): WalkConfig;
}

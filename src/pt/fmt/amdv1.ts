/**
 * AMD IOMMU "v1" host page tables (the host / stage-2 tables a DTE points to), 1 to 6 levels
 * (AMD paging mode 1-6), and the 2 KiB-granule variant Linux's iommufd selftest uses as the
 * mock domain's table.
 *
 * Layout: AMD I/O Virtualization Technology (IOMMU) Specification, pub. 48882, §2.2.3 "I/O Page
 * Tables for Host Translations" (Tables 14 "Example Page Size Encodings" and 15 "Page Table
 * Level Parameters"); Linux drivers/iommu/generic_pt/fmt/amdv1.h and
 * drivers/iommu/amd/amd_iommu_types.h. Every entry, table pointer (PDE) or leaf (PTE):
 *
 *   bit 0      PR  present
 *   bit 5      A   accessed (set by the IOMMU when DTE.HAD enables access/dirty updates)
 *   bit 6      D   dirty (PTE only; set by the IOMMU on a write when DTE.HAD = 11b)
 *   bits 11:9  NextLevel: 1-6 = the entry points to a table of that (spec) level;
 *              0 = leaf of the level's natural size; 7 = leaf whose size is encoded in the
 *              address field (below)
 *   bits 51:12 address of the next table or of the page
 *   bits 58:52 reserved in a PTE; bits 60:52 reserved in a PDE (must be zero)
 *   bit 59     U   untranslated access only (PTE)
 *   bit 60     FC  force coherent (PTE)
 *   bit 61     IR  read permission    } checked at every level: the effective permission is
 *   bit 62     IW  write permission   } the AND of IR/IW along the walk
 *
 * NextLevel = 7 ("page size encoding"): the page is 2^(12 + 1 + n) bytes where n is the number
 * of 1 bits in the address field starting at bit 12 (bit 12 = 0: 8 KiB, bits 12 = 1, 13 = 0:
 * 16 KiB, ...). The size must be larger than the level's natural page and smaller than the next
 * level's; software replicates the same entry into every slot the page spans, so Linux's
 * generic_pt (and this model) treats it as 2^k contiguous entries.
 *
 * Level numbering follows generic_pt: level 0 = AMD level 1 (4 KiB PTEs), the top table is
 * level `levels - 1` = DTE.Mode - 1. A PDE at generic level L that points to the next table
 * down has NextLevel = L. A PDE may instead name a lower level ("level skipping", spec §2.2.3):
 * the IOVA bits of the skipped levels must then be zero, else the walk faults. Linux never
 * writes skipped levels; the data-plane walk below models them, while the control-plane hooks
 * (entryKind/tablePa, used by the generic walker) treat any NextLevel 1-6 as "table", as
 * generic_pt's amdv1pt_load_entry_raw() does.
 *
 * What Linux writes (generic_pt amdv1pt_install_table / amdv1pt_install_leaf_entry /
 * amdv1pt_iommu_set_prot):
 *   table:  PR | NextLevel = L | address | IR | IW (permissions are controlled at the leaf)
 *   leaf:   PR | address | NextLevel 0 or 7 (+ size ones) | IR if IOMMU_READ | IW if
 *           IOMMU_WRITE | FC when the table has PT_FEAT_AMDV1_FORCE_COHERENCE, which the AMD
 *           driver (amd_iommu_domain_alloc_paging_v1) always sets. A and D are never preset.
 *   (PT_FEAT_AMDV1_ENCRYPT_TABLES adds the SME C-bit, which is 0 without memory encryption.)
 * Page sizes (amdv1pt_possible_sizes, AMD_IOMMU_PGSIZES = GENMASK(51, 12) ^ SZ_512G): every
 * power of two from the level's item size up to (item size * 512 / 2), at most 2^51, except
 * 512 GiB (a hardware erratum); the top generic level 5 holds no leaves (Table 15). The data
 * plane still decodes a hand-built 512 GiB leaf: the spec allows it.
 *
 * Unmap of part of a large page: generic_pt refuses to cut it (__unmap_range returns -EINVAL
 * when the range starts inside a leaf) - unmapPolicy "refuse".
 *
 * The iommufd selftest mock (generic_pt fmt/iommu_mock.c = amdv1.h with AMDV1_IOMMUFD_SELFTEST,
 * used by drivers/iommu/iommufd/selftest.c mock_domain_alloc_pgtable) changes only:
 *   granule 2 KiB (PT_GRANULE_LG2SZ 11) - the address field holds oa >> 11, so a PA is the
 *     field (entry bits 51:12 shifted down by 12) times 2^11, and NextLevel = 7 sizes are
 *     2^(11 + 1 + n); table memory stays 4 KiB (512 entries), so items are 2^(11 + 9L);
 *   at most 5 levels and 56 IOVA bits (PT_MAX_TOP_LEVEL 4: generic level 4 holds no leaves);
 *   51-bit output addresses; no force-coherence (PT_SUPPORTED_FEATURES 0).
 * See AMDV1_SELFTEST_GEOMETRIES below for the three pagetable types the selftest offers.
 */
import { DENSE_BASE, denseWord, denseWordOf, type PhysMem } from "../../mem/phys.ts";
import { U64 } from "../../mem/u64.ts";
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
  type PtEntryKind,
  type PtFormat,
} from "../format.ts";
import {
  ACC_EXEC,
  ACC_READ,
  ACC_WRITE,
  FMT_AMDV1,
  finishNested,
  PERM_R,
  PERM_W,
  PERM_X,
  registerTranslate,
  TR_FAULT_ADDRESS_SIZE,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  type TranslateResult,
  translateStage2,
  WalkConfig,
  WF_HW_AD,
} from "../translate.ts";

// Low-word bits.
const PR = 1 << 0;
const A = 1 << 5;
const D = 1 << 6;
const NL_SHIFT = 9;
const NL_SIZE = 7; // NextLevel value meaning "page size encoded in the address"
const ADDR_LO_MASK = 0xfffff000; // bits 31:12
// High-word bits (bit n of the entry is bit n - 32 here).
const ADDR_HI_MASK = 0xfffff; // bits 51:32
const U_HI = 1 << 27; // bit 59
const FC_HI = 1 << 28; // bit 60
const IR_HI = 1 << 29; // bit 61
const IW_HI = 1 << 30; // bit 62
const PTE_RSVD_HI = 0x7f << 20; // bits 58:52
const PDE_RSVD_HI = 0x1ff << 20; // bits 60:52

/** Linux excludes 512 GiB pages: "512GB Pages are not supported due to a hardware bug". */
const EXCLUDED_SIZE_LG2 = 39;
/** Largest page Linux uses (AMD_IOMMU_PGSIZES stops at bit 51). */
const MAX_PAGE_LG2 = 51;

/**
 * Number of consecutive 1 bits in the address field starting at entry bit 12 (the NextLevel = 7
 * size code). 40 when the whole field is ones: bit 52, zero-extended, ends the run.
 */
function sizeCodeOnes(hi: number, lo: number): number {
  const invLo = ~lo >>> 12; // inverted field bits 19:0 (entry bits 31:12)
  if (invLo !== 0) return 31 - Math.clz32(invLo & -invLo);
  const invHi = ~hi & ADDR_HI_MASK;
  if (invHi !== 0) return 20 + 31 - Math.clz32(invHi & -invHi);
  return 40;
}

/** log2 bytes -> "4K", "2M", "512G", ... */
function sizeName(lg2: number): string {
  const units = ["", "K", "M", "G", "T", "P", "E"];
  const u = Math.floor(lg2 / 10);
  return `${2 ** (lg2 - 10 * u)}${units[u]}`;
}

export interface Amdv1Options {
  /** Configuration name. */
  name: string;
  /** Table levels: 1-6 for the real format (AMD paging mode), 1-5 for the mock. */
  levels: number;
  /** 12 for the real format, 11 for the iommufd selftest mock. */
  granuleLg2: 12 | 11;
  /** Leaves carry FC (PT_FEAT_AMDV1_FORCE_COHERENCE). */
  forceCoherence: boolean;
  /** When given, only these page sizes are offered (a domain pgsize_bitmap restriction). */
  onlySizesLg2?: readonly number[];
}

export class Amdv1Format implements PtFormat {
  readonly name: string;
  readonly tag = FMT_AMDV1;
  readonly source: string;
  readonly levels: number;
  readonly vaBits: number;
  readonly iovaBase = 0n;
  readonly oaBits: number;
  readonly bigEndian = false;
  readonly unmapPolicy = "whole" as const; // generic_pt: see LargePageUnmapPolicy
  readonly hasDirty = true;
  /** 12 (real) or 11 (selftest mock). */
  readonly granuleLg2: number;
  /** Leaves get FC set, as the Linux AMD driver's FORCE_COHERENCE feature does. */
  readonly forceCoherence: boolean;
  /** First generic level that holds no leaves (PT_MAX_TOP_LEVEL): 5 real, 4 mock. */
  readonly noLeafLevel: number;
  /** Entry address field (bits 51:12 as a number) = PA * rawPerPa. */
  private readonly rawPerPa: number;
  private readonly sizes: (readonly number[])[] = [];

  constructor(opts: Amdv1Options) {
    const mock = opts.granuleLg2 === 11;
    const maxLevels = mock ? 5 : 6;
    if (!Number.isInteger(opts.levels) || opts.levels < 1 || opts.levels > maxLevels) {
      throw new RangeError(`amdv1: ${opts.levels} levels (1-${maxLevels} allowed)`);
    }
    this.name = opts.name;
    this.levels = opts.levels;
    this.granuleLg2 = opts.granuleLg2;
    this.forceCoherence = opts.forceCoherence;
    this.noLeafLevel = mock ? 4 : 5;
    this.oaBits = mock ? 51 : 52;
    this.vaBits = Math.min(mock ? 56 : 64, opts.granuleLg2 + 9 * opts.levels);
    this.rawPerPa = 2 ** (12 - opts.granuleLg2);
    this.source = mock
      ? "linux drivers/iommu/generic_pt/fmt/amdv1.h (AMDV1_IOMMUFD_SELFTEST), fmt/iommu_mock.c, " +
        "drivers/iommu/iommufd/selftest.c"
      : "AMD IOMMU spec 48882 §2.2.3; linux drivers/iommu/generic_pt/fmt/amdv1.h, " +
        "drivers/iommu/amd/amd_iommu_types.h";
    for (let level = 0; level < this.levels; level++) {
      const list: number[] = [];
      if (level < this.noLeafLevel) {
        const item = this.itemLg2(level);
        const hi = Math.min(MAX_PAGE_LG2, item + this.tableLg2(level) - 1, this.oaBits - 1);
        for (let s = item; s <= hi; s++) {
          if (s === EXCLUDED_SIZE_LG2) continue;
          if (opts.onlySizesLg2 !== undefined && !opts.onlySizesLg2.includes(s)) continue;
          list.push(s);
        }
      }
      this.sizes.push(list);
    }
  }

  itemLg2(level: number): number {
    return this.granuleLg2 + 9 * level;
  }
  tableLg2(level: number): number {
    // The top table of a 64-bit 6-level tree indexes IOVA bits 63:57 only (128 entries).
    return level === this.levels - 1 ? this.vaBits - this.itemLg2(level) : 9;
  }
  leafSizesLg2(level: number): readonly number[] {
    return this.sizes[level] ?? [];
  }

  /** PA held in the address field, low `clearLg2` bits cleared. */
  private addr(e: U64, clearLg2: number): number {
    const raw = (e.hi & ADDR_HI_MASK) * 4294967296 + ((e.lo & ADDR_LO_MASK) >>> 0);
    const pa = raw / this.rawPerPa;
    const size = 2 ** clearLg2;
    return pa - (pa % size);
  }

  entryKind(e: U64, level: number): PtEntryKind {
    if ((e.lo & PR) === 0) return PT_ENTRY_EMPTY;
    const nl = (e.lo >>> NL_SHIFT) & 7;
    if (level === 0 || nl === 0 || nl === NL_SIZE) return PT_ENTRY_LEAF;
    return PT_ENTRY_TABLE;
  }
  tablePa(e: U64, _level: number): number {
    return this.addr(e, 0);
  }
  leafSizeLg2(e: U64, level: number): number {
    if (((e.lo >>> NL_SHIFT) & 7) !== NL_SIZE) return this.itemLg2(level);
    return this.granuleLg2 + 1 + sizeCodeOnes(e.hi, e.lo);
  }
  leafOa(e: U64, level: number): number {
    return this.addr(e, this.leafSizeLg2(e, level));
  }
  leafProt(e: U64, _level: number): number {
    let prot = 0;
    if (e.hi & IR_HI) prot |= IOMMU_READ;
    if (e.hi & IW_HI) prot |= IOMMU_WRITE;
    if (e.hi & FC_HI) prot |= IOMMU_CACHE;
    return prot;
  }

  makeLeaf(
    oa: number,
    sizeLg2: number,
    level: number,
    _slot: number,
    prot: number,
    out: U64,
  ): void {
    const item = this.itemLg2(level);
    if (sizeLg2 < item || sizeLg2 >= item + 9) {
      throw new RangeError(`amdv1: no 2^${sizeLg2} page at level ${level}`);
    }
    const raw = oa * this.rawPerPa;
    let lo = (raw >>> 0) | PR;
    let hi = Math.floor(raw / 4294967296) & ADDR_HI_MASK;
    if (sizeLg2 !== item) {
      // NextLevel 7, and a run of (size - granule - 1) ones from address bit 12 up; every slot
      // of the contiguous page holds this same entry.
      lo |= NL_SIZE << NL_SHIFT;
      const ones = sizeLg2 - this.granuleLg2 - 1;
      if (ones <= 20) {
        lo |= ((2 ** ones - 1) * 4096) | 0;
      } else {
        lo |= ADDR_LO_MASK;
        hi |= 2 ** (ones - 20) - 1;
      }
    }
    if (prot & IOMMU_READ) hi |= IR_HI;
    if (prot & IOMMU_WRITE) hi |= IW_HI;
    if (this.forceCoherence) hi |= FC_HI;
    out.lo = lo >>> 0;
    out.hi = hi >>> 0;
  }
  makeTable(pa: number, level: number, out: U64): void {
    const raw = pa * this.rawPerPa;
    out.lo = ((raw >>> 0) | (level << NL_SHIFT) | PR) >>> 0;
    out.hi = ((Math.floor(raw / 4294967296) & ADDR_HI_MASK) | IR_HI | IW_HI) >>> 0;
  }

  isDirty(e: U64, _level: number): boolean {
    return (e.lo & D) !== 0;
  }
  clearDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = (e.lo & ~D) >>> 0;
  }
  setDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = (e.lo | D) >>> 0;
  }

  describe(e: U64, level: number): string {
    if ((e.lo & PR) === 0) return "not present (PR=0)";
    const nl = (e.lo >>> NL_SHIFT) & 7;
    const flags = [
      "PR",
      e.hi & IR_HI ? "IR" : "",
      e.hi & IW_HI ? "IW" : "",
      e.lo & A ? "A" : "",
      e.lo & D ? "D" : "",
      e.hi & FC_HI ? "FC" : "",
      e.hi & U_HI ? "U" : "",
    ].filter((s) => s !== "");
    const f = `[${flags.join(" ")}]`;
    if (this.entryKind(e, level) === PT_ENTRY_TABLE) {
      const skip = nl < level ? `, skips ${level - nl} level(s)` : nl > level ? ", invalid" : "";
      return `table -> 0x${this.tablePa(e, level).toString(16)} (NextLevel ${nl}${skip}) ${f}`;
    }
    const s = this.leafSizeLg2(e, level);
    const how = nl === NL_SIZE ? `, NextLevel 7: ${2 ** (s - this.itemLg2(level))} entries` : "";
    return `${sizeName(s)} page -> 0x${this.leafOa(e, level).toString(16)}${how} ${f}`;
  }

  walkConfig(rootPa: number): WalkConfig {
    const cfg = new WalkConfig(FMT_AMDV1, rootPa, this.levels, this.vaBits, this.granuleLg2);
    cfg.topLg2 = this.tableLg2(this.levels - 1);
    return cfg;
  }
}

/** The real format with the AMD driver's settings (FORCE_COHERENCE), paging modes 1-6. */
export const amdv1Format1 = new Amdv1Format({
  name: "amdv1-1lvl",
  levels: 1,
  granuleLg2: 12,
  forceCoherence: true,
});
export const amdv1Format2 = new Amdv1Format({
  name: "amdv1-2lvl",
  levels: 2,
  granuleLg2: 12,
  forceCoherence: true,
});
export const amdv1Format3 = new Amdv1Format({
  name: "amdv1-3lvl",
  levels: 3,
  granuleLg2: 12,
  forceCoherence: true,
});
export const amdv1Format4 = new Amdv1Format({
  name: "amdv1-4lvl",
  levels: 4,
  granuleLg2: 12,
  forceCoherence: true,
});
export const amdv1Format5 = new Amdv1Format({
  name: "amdv1-5lvl",
  levels: 5,
  granuleLg2: 12,
  forceCoherence: true,
});
export const amdv1Format6 = new Amdv1Format({
  name: "amdv1-6lvl",
  levels: 6,
  granuleLg2: 12,
  forceCoherence: true,
});

/**
 * iommufd selftest MOCK_IOMMUPT_DEFAULT: the 2 KiB mock format, starting_level 2 without
 * DYNAMIC_TOP, so 3 levels covering 38 IOVA bits (2^11 * 512^3); pages 2 KiB .. 128 GiB
 * (levels 0-2: 2^11-2^19, 2^20-2^28, 2^29-2^37); no FC.
 */
export const amdv1MockFormat = new Amdv1Format({
  name: "amdv1-mock",
  levels: 3,
  granuleLg2: 11,
  forceCoherence: false,
});
/**
 * iommufd selftest MOCK_IOMMUPT_HUGE: the same table as amdv1-mock, but the domain's
 * pgsize_bitmap is MOCK_HUGE_PAGE_SIZE | PAGE_SIZE (1 MiB | 4 KiB), so leaves are 1 MiB
 * (level 1) or 4 KiB (two NextLevel-7 entries at level 0) only.
 */
export const amdv1MockHugeFormat = new Amdv1Format({
  name: "amdv1-mock-huge",
  levels: 3,
  granuleLg2: 11,
  forceCoherence: false,
  onlySizesLg2: [12, 20],
});
/**
 * iommufd selftest MOCK_IOMMUPT_AMDV1: the real format (pt_iommu_amdv1_init) with DYNAMIC_TOP,
 * FORCE_COHERENCE and a 64-bit IOVA space, starting at 3 levels and growing on demand. The
 * fixed 6-level configuration covers the same IOVA space with the same page sizes and bits.
 */
export const amdv1MockAmdv1Format = amdv1Format6;

/** drivers/iommu/iommufd/iommufd_test.h: hwpt selftest pagetable_type values. */
export const MOCK_IOMMUPT_DEFAULT = 0;
export const MOCK_IOMMUPT_HUGE = 1;
export const MOCK_IOMMUPT_AMDV1 = 2;
/** iommufd_test.h: MOCK_PAGE_SIZE and MOCK_HUGE_PAGE_SIZE (512 * MOCK_PAGE_SIZE). */
export const MOCK_PAGE_SIZE = 2048;
export const MOCK_HUGE_PAGE_SIZE = 512 * MOCK_PAGE_SIZE;
/** iommufd_test.h: the aperture MOCK_IOMMUPT_DEFAULT domains are narrowed to. */
export const MOCK_APERTURE_START = 1n << 24n;
export const MOCK_APERTURE_LAST = (1n << 31n) - 1n;

/** One iommufd selftest mock-domain page-table type. */
export interface Amdv1SelftestGeometry {
  readonly pagetableType: number;
  readonly format: PtFormat;
  /** Domain aperture (geometry.aperture_start / aperture_end). */
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  /** Domain pgsize_bitmap. */
  readonly pgsizeBitmap: bigint;
}

function pgsizeBitmapOf(fmt: PtFormat): bigint {
  let bitmap = 0n;
  for (let level = 0; level < fmt.levels; level++) {
    for (const s of fmt.leafSizesLg2(level)) bitmap |= 1n << BigInt(s);
  }
  return bitmap;
}

/**
 * The three page-table types selftest.c's mock_domain_alloc_pgtable() builds. Only the default
 * type narrows the aperture; the others keep the table's own (0 .. 2^vaBits - 1).
 */
export const AMDV1_SELFTEST_GEOMETRIES: readonly Amdv1SelftestGeometry[] = [
  {
    pagetableType: MOCK_IOMMUPT_DEFAULT,
    format: amdv1MockFormat,
    apertureStart: MOCK_APERTURE_START,
    apertureLast: MOCK_APERTURE_LAST,
    pgsizeBitmap: pgsizeBitmapOf(amdv1MockFormat),
  },
  {
    pagetableType: MOCK_IOMMUPT_HUGE,
    format: amdv1MockHugeFormat,
    apertureStart: 0n,
    apertureLast: (1n << BigInt(amdv1MockHugeFormat.vaBits)) - 1n,
    pgsizeBitmap: BigInt(MOCK_HUGE_PAGE_SIZE) | 4096n,
  },
  {
    pagetableType: MOCK_IOMMUPT_AMDV1,
    format: amdv1MockAmdv1Format,
    apertureStart: 0n,
    apertureLast: (1n << 64n) - 1n,
    pgsizeBitmap: pgsizeBitmapOf(amdv1MockAmdv1Format),
  },
];

export const amdv1Configs: readonly PtFormat[] = [
  amdv1Format1,
  amdv1Format2,
  amdv1Format3,
  amdv1Format4,
  amdv1Format5,
  amdv1Format6,
  amdv1MockFormat,
  amdv1MockHugeFormat,
];

const ent = new U64();

function fault(res: TranslateResult, status: number, level: number): number {
  res.status = status;
  res.stage = 1;
  res.level = level;
  return status;
}

/**
 * Data-plane walk of an AMD v1 table tree, as the IOMMU does it (spec §2.2.3).
 * cfg: root (the table DTE.HostPageTableRootPtr names), levels (= DTE.Mode), vaBits,
 * granuleLg2 (12, or 11 for the selftest mock), flags WF_HW_AD (DTE.HAD = 11b: set A on every
 * entry used and D on the leaf for writes).
 *
 * Per entry, in the spec's order: PR, NextLevel encoding, reserved bits, then IR/IW (a read or
 * execute request needs IR, a write needs IW, at every level, so a PDE can deny too and the
 * fault names that level). Level skipping is followed; the skipped IOVA bits must be zero.
 * AMD v1 has no execute or privilege control: PERM_X follows read, ACC_PRIV is ignored.
 *
 * Speed: the current table's address is kept as u32 halves (the low half a signed int32) and
 * entries in the dense window are read straight from `mem.dense` by word index, int32 arithmetic
 * only; tables elsewhere, stage-1 tables a nested walk finds outside the window, and a root that
 * is not 8-byte aligned (which read64 reads byte by byte) go through `mem.read64`.
 * See src/mem/phys.ts denseWord.
 */
export function translateAmdv1(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
): number {
  const top = cfg.levels - 1;
  const vaBits = cfg.vaBits;
  if (
    vaBits < 64 &&
    (vaBits >= 32 ? iovaHi >>> (vaBits - 32) !== 0 : iovaHi !== 0 || iovaLo >>> vaBits !== 0)
  ) {
    return fault(res, TR_FAULT_ADDRESS_SIZE, top);
  }
  const g = cfg.granuleLg2;
  const mock = g !== 12;
  const noLeafLevel = mock ? 4 : 5;
  const needR = (access & (ACC_READ | ACC_EXEC)) !== 0;
  const needW = (access & ACC_WRITE) !== 0;
  const hwAd = (cfg.flags & WF_HW_AD) !== 0;
  const d = mem.dense;
  const root = cfg.root;
  // The current table's address as halves; tableLo stays a signed int32 (no float values).
  let tableHi = Math.floor(root / 4294967296);
  let tableLo = root | 0;
  let allow = IR_HI | IW_HI; // AND of IR/IW along the walk
  let level = top;
  for (;;) {
    const shift = g + 9 * level;
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) & 511;
    // Locate the entry: word index into the dense window (w >= 0), else its address (epa).
    // Only the root can be misaligned (entry addresses are 2 KiB aligned); read64 reads such a
    // table byte by byte, so it takes the read64 path here too.
    let w = -1;
    let epa = 0;
    if (s2 !== null) {
      const hpa = translateStage2(mem, s2, tableHi * 4294967296 + (tableLo >>> 0), ACC_READ, res);
      if (hpa < 0) return res.status;
      epa = hpa + idx * 8;
      if ((hpa & 7) === 0) w = denseWordOf(epa);
    } else {
      if ((tableLo & 7) === 0) w = denseWord(tableHi, tableLo);
      if (w >= 0) w += idx * 2;
      else epa = tableHi * 4294967296 + (tableLo >>> 0) + idx * 8;
    }
    let lo: number;
    let hi: number;
    if (w >= 0 && w + 1 < d.length) {
      lo = d[w] | 0;
      hi = d[w + 1] | 0;
      mem.reads++;
    } else {
      if (w >= 0) epa = DENSE_BASE + w * 4;
      w = -1;
      mem.read64(epa, ent);
      lo = ent.lo | 0;
      hi = ent.hi | 0;
    }
    res.reads++;
    if ((lo & PR) === 0) return fault(res, TR_FAULT_TRANSLATION, level);
    const nl = (lo >> NL_SHIFT) & 7;
    const leaf = nl === 0 || nl === NL_SIZE;
    if ((hi & (leaf ? PTE_RSVD_HI : PDE_RSVD_HI)) !== 0) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    if ((needR && (hi & IR_HI) === 0) || (needW && (hi & IW_HI) === 0)) {
      return fault(res, TR_FAULT_PERMISSION, level);
    }
    // The next table must be below this one: NextLevel (its spec level) <= this generic level.
    if (!leaf && nl > level) return fault(res, TR_FAULT_TRANSLATION, level);
    allow &= hi;
    // Address field as a PA split into halves, addrLo a signed int32 (the mock's field is the
    // PA >> 11, so its PA is the field shifted down by one bit).
    let addrHi = hi & ADDR_HI_MASK;
    let addrLo = lo & ADDR_LO_MASK;
    if (mock) {
      addrLo = ((lo >> 1) & (ADDR_LO_MASK >>> 1)) | (addrHi << 31);
      addrHi >>= 1;
    }
    if (!leaf) {
      if (nl < level && skippedBits(iovaHi, iovaLo, g + 9 * nl, shift) !== 0) {
        return fault(res, TR_FAULT_TRANSLATION, level);
      }
      if (hwAd && (lo & A) === 0) mem.writeEntryLo(w, epa, lo | A);
      tableHi = addrHi;
      tableLo = addrLo;
      level = nl - 1;
      continue;
    }
    if (level >= noLeafLevel) return fault(res, TR_FAULT_TRANSLATION, level);
    let sizeLg2 = shift;
    if (nl === NL_SIZE) {
      sizeLg2 = g + 1 + sizeCodeOnes(hi, lo);
      if (sizeLg2 <= shift || sizeLg2 >= shift + 9) return fault(res, TR_FAULT_TRANSLATION, level);
    }
    let out: number;
    if (sizeLg2 < 32) {
      const m = (1 << sizeLg2) - 1;
      out = addrHi * 4294967296 + (((addrLo & ~m) | (iovaLo & m)) >>> 0);
    } else {
      // sizeLg2 <= 12 + 1 + 40 = 53 (sizeCodeOnes is at most 40), so the mask fits an int32.
      const m = (1 << (sizeLg2 - 32)) - 1;
      const outHi = (addrHi & ~m) | (iovaHi & m);
      if (outHi >= 0x100000) return fault(res, TR_FAULT_ADDRESS_SIZE, level);
      out = outHi * 4294967296 + (iovaLo >>> 0);
    }
    if (hwAd) {
      const want = needW ? lo | A | D : lo | A;
      if (want !== lo) mem.writeEntryLo(w, epa, want);
    }
    const perm = (allow & IR_HI ? PERM_R | PERM_X : 0) | (allow & IW_HI ? PERM_W : 0);
    res.pageLg2 = sizeLg2;
    if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
    res.status = TR_OK;
    res.pa = out;
    res.perm = perm;
    return TR_OK;
  }
}

/**
 * IOVA bits [from, to) as a non-zero int32 when any is set (0 when all are clear): the index
 * bits of levels a PDE skips. from >= 11 and to <= 57, so every mask below fits an int32.
 */
function skippedBits(iovaHi: number, iovaLo: number, from: number, to: number): number {
  let bits = 0;
  if (from < 32) {
    const end = to < 32 ? to : 32;
    bits = (iovaLo >>> from) & ((1 << (end - from)) - 1);
  }
  if (to > 32) {
    const start = from > 32 ? from - 32 : 0;
    bits |= (iovaHi >>> start) & ((1 << (to - 32 - start)) - 1);
  }
  return bits;
}

registerTranslate(FMT_AMDV1, translateAmdv1);

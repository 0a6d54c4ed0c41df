/**
 * ARM VMSAv8-64 translation tables as the SMMUv3 walks them: stage 1 (Context Descriptor TTB0,
 * the EL1&0-style regime with AP[2:1], PXN/UXN) and stage 2 (STE S2TTB, S2AP, XN), with the
 * 4 KiB, 16 KiB and 64 KiB granules, blocks, the Contiguous hint, the Access Flag and
 * DBM-based hardware dirty state.
 *
 * Sources: Arm ARM DDI 0487 chapter D8 (VMSAv8-64 address translation: D8.2 translation table
 * walk and Tables D8-8/D8-9 for the stage-2 initial level and concatenation, D8.3 descriptor
 * formats, D8.4 permissions incl. hierarchical APTable/PXNTable/UXNTable, D8.5 hardware
 * management of the Access Flag and dirty state, D8.6 the Contiguous bit); the AArch64
 * CheckPermission pseudocode (priv_xn = PXN || user_w); SMMUv3 IHI 0070 §5.2 (STE S2T0SZ,
 * S2SL0, S2TG, S2PS, S2HA/S2HD, S2AFFD) and §5.4 (CD T0SZ, TG0, IPS, HA/HD, AFFD); Linux
 * drivers/iommu/io-pgtable-arm.c (ARM_64_LPAE_S1 / ARM_64_LPAE_S2: arm_lpae_prot_to_pte,
 * start level and S2 concatenation, pgsize bitmap, IO_PGTABLE_QUIRK_ARM_HD dirty encoding) and
 * include/linux/io-pgtable.h; the generic_pt format drivers/iommu/generic_pt/fmt/armv8.h
 * (contiguous counts, stage-2 DBM encoding).
 *
 * Descriptor bits (one 64-bit little-endian word):
 *   [1:0]   0b00/0b10 invalid; 0b11 table (ARM levels 0-2) or page (ARM level 3);
 *           0b01 block (only where the granule allows blocks; elsewhere invalid)
 *   [5:2]   S1: AttrIndx[2:0] in [4:2], NS in [5];   S2: MemAttr[3:0]
 *   [7:6]   S1: AP[2:1] (AP[1] = EL0 access, AP[2] = read-only);  S2: S2AP (bit 6 read, 7 write)
 *   [9:8]   SH;  [10] AF;  [11] nG (S1 only)
 *   [47:G]  output address / next-level table address (G = log2 granule)
 *   [15:12] 64K granule: OA[51:48] with FEAT_LPA (not modelled: must be 0, else Address size)
 *   [49:48] OA[49:48] with FEAT_LPA2 (not modelled: must be 0, else Address size)
 *   [51]    DBM;  [52] Contiguous;  [53] PXN (S2: XN[0] with FEAT_XNX, not modelled)
 *   [54]    UXN (S2: XN)
 *   Table descriptors, stage 1 only: [59] PXNTable, [60] UXNTable, [61] APTable[0] (no EL0
 *   access below), [62] APTable[1] (no writes below), [63] NSTable. Stage 2 tables have none.
 *
 * Levels: as everywhere in src/pt, level 0 holds the smallest pages; ARM level = 3 - level.
 *   granule | level 0 (ARM L3) | level 1 (ARM L2) | level 2 (ARM L1) | level 3 (ARM L0)
 *   4K      | 4K page (64K)    | 2M block (32M)   | 1G block (16G)   | table only
 *   16K     | 16K page (2M)    | 32M block (1G)   | table only       | table only (2 entries)
 *   64K     | 64K page (2M)    | 512M block (16G) | table only       | -
 * Contiguous sizes in brackets: 16 entries at every 4K level, 128 at the 16K page level and 32
 * at the 16K block level, 32 at both 64K levels (Arm ARM D8.6.1; generic_pt armv8.h).
 *
 * Permission model. Stage 1 request privilege is ACC_PRIV (EL1) or not (EL0). Effective AP is
 * AP[2] | APTable[1] and AP[1] & !APTable[0]; EL1 always reads; EL0 reads only with AP[1];
 * writes need AP[2] = 0 (or DBM under HD, below); EL1 execute is refused by PXN, PXNTable or a
 * region writable at EL0 (AP[2:1] = 0b01, the pseudocode's implied PXN); EL0 execute is refused
 * by UXN or UXNTable (execute-only EL0 memory is allowed). SCTLR.WXN-style controls are off.
 * Stage 2 ignores privilege: S2AP[0] read, S2AP[1] write, bit 54 XN.
 *
 * Faults, in the architecture's priority order: input address beyond 2^vaBits (the SMMU reports
 * a Translation fault; this project's API reports TR_FAULT_ADDRESS_SIZE), invalid or reserved
 * descriptor (Translation), output or table address above the output size (Address size),
 * AF = 0 without hardware AF update (Access flag; it takes priority over Permission, SMMUv3
 * §5.4 AFFD), then Permission.
 *
 * Hardware updates (WalkConfig.flags): WF_HW_A is HA (set AF on use); WF_HW_AD is HA + HD,
 * where a write through a leaf with DBM = 1 that is writable-clean (stage 1 AP[2] = 1, stage 2
 * S2AP[1] = 0) is allowed and the walker clears AP[2] / sets S2AP[1] in memory. Updates are
 * made only when the access succeeds, and only to the descriptor actually used (the Arm ARM
 * allows updating one entry of a contiguous group). In a nested walk the stage-1 descriptor
 * update is written through its stage-2 translation, which this model fetches as a read.
 *
 * Dirty state, matching io-pgtable-arm with IO_PGTABLE_QUIRK_ARM_HD (iopte_writeable_dirty /
 * iopte_set_writeable_clean): stage 1 dirty = DBM && !AP[2]; clearing sets AP[2] (writable-
 * clean); a device write under HD clears it again. Linux marks every writable leaf DBM and
 * leaves AP[2] clear, so a freshly mapped writable page starts dirty; iommufd clears all dirty
 * state when tracking is enabled (iopt_clear_dirty_data). io-pgtable-arm has no stage-2 dirty
 * tracking; stage 2 here follows generic_pt armv8.h (PT_FEAT_ARMV8_DBM): writable leaves get
 * DBM, dirty = DBM && S2AP[1], clearing drops S2AP[1].
 *
 * makeLeaf follows arm_lpae_prot_to_pte (io-pgtable-arm.c) with the HD quirk on: stage 1 sets
 * nG, AP[2] when readable but not writable, otherwise DBM, AP[1] unless IOMMU_PRIV, AttrIndx
 * 2 (device) for IOMMU_MMIO or 1 (cacheable) for IOMMU_CACHE; stage 2 sets S2AP from READ /
 * WRITE and MemAttr 0001 (MMIO), 1111 (CACHE) or 0101 (non-cacheable); both set SH = inner
 * shareable for IOMMU_CACHE else outer shareable, bits 54:53 for IOMMU_NOEXEC, and AF. Tables
 * are address | 0b11 with no hierarchical attributes, as __arm_lpae_map installs them.
 *
 * WalkConfig fields for FMT_ARMV8_S1 / FMT_ARMV8_S2:
 *   granuleLg2  12, 14 or 16 (CD.TG0 / STE.S2TG)
 *   strideLg2   granuleLg2 - 3: index bits per table below the top
 *   topLg2      index bits of the initial table, including stage-2 concatenation (up to 16
 *               tables: strideLg2 + 4 bits)
 *   levels      tables walked: 4 - ARM initial level
 *   vaBits      64 - T0SZ (CD.T0SZ / STE.S2T0SZ)
 *   param       output address size in bits (CD.IPS / STE.S2PS decoded): 32..48; 0 means 48.
 *               Above 48 is clamped (FEAT_LPA / LPA2 encodings are not modelled).
 *   flags       WF_HW_A (HA), WF_HW_AD (HA and HD)
 *
 * Partial unmap of a block: current io-pgtable-arm refuses ("refuse"); before Linux 6.13 it
 * split the block (arm_lpae_split_blk_unmap), offered here as the "-split" configuration.
 */
import { DENSE_BASE, denseWord, denseWordOf, type PhysMem } from "../../mem/phys.ts";
import { U64 } from "../../mem/u64.ts";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  type LargePageUnmapPolicy,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
  type PtEntryKind,
  type PtFormat,
} from "../format.ts";
import {
  ACC_EXEC,
  ACC_PRIV,
  ACC_READ,
  ACC_WRITE,
  FMT_ARMV8_S1,
  FMT_ARMV8_S2,
  finishNested,
  PERM_R,
  PERM_W,
  PERM_X,
  registerTranslate,
  TR_FAULT_ACCESS,
  TR_FAULT_ADDRESS_SIZE,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  type TranslateResult,
  translateStage2,
  WalkConfig,
  WF_HW_A,
  WF_HW_AD,
} from "../translate.ts";

// ---- descriptor bits, low word ---------------------------------------------------------------
const VALID = 1 << 0;
/** Bit 1: table at ARM levels 0-2, page at ARM level 3; clear = block. */
const TABLE_OR_PAGE = 1 << 1;
const ATTRINDX_SHIFT = 2; // stage 1 AttrIndx[2:0]
const ATTRINDX_MASK = 7 << ATTRINDX_SHIFT;
const MEMATTR_SHIFT = 2; // stage 2 MemAttr[3:0]
const MEMATTR_MASK = 15 << MEMATTR_SHIFT;
const AP_EL0 = 1 << 6; // stage 1 AP[1]
const AP_RDONLY = 1 << 7; // stage 1 AP[2]
const S2AP_READ = 1 << 6;
const S2AP_WRITE = 1 << 7;
const SH_SHIFT = 8;
const SH_OUTER = 2 << SH_SHIFT;
const SH_INNER = 3 << SH_SHIFT;
const AF = 1 << 10;
const NG = 1 << 11;

// ---- descriptor bits, high word (bit n of the entry is bit n - 32 here) ---------------------
const DBM_HI = 1 << 19; // bit 51
const CONT_HI = 1 << 20; // bit 52
const PXN_HI = 1 << 21; // bit 53
const UXN_HI = 1 << 22; // bit 54 (stage 2: XN)
const PXN_TABLE_HI = 1 << 27; // bit 59
const UXN_TABLE_HI = 1 << 28; // bit 60
const AP_TABLE_NO_EL0_HI = 1 << 29; // bit 61, APTable[0]
const AP_TABLE_RDONLY_HI = 1 << 30; // bit 62, APTable[1]
const NS_TABLE_HI = 1 << 31; // bit 63 (decoded for traces only)
/** Bits 47:32 of an output or table address. */
const OA_HI_MASK = 0xffff;
/** Bits 49:32: an address with bits 49:48 set exceeds every modelled output size. */
const OA_CHECK_HI_MASK = 0x3ffff;
/** 64K granule only: bits 15:12 hold OA[51:48] under FEAT_LPA. */
const LPA_LO_MASK = 0xf000;

// io-pgtable-arm's MAIR indices and stage-2 MemAttr encodings.
const ATTR_IDX_CACHE = 1;
const ATTR_IDX_DEV = 2;
const MEMATTR_DEV = 0x1;
const MEMATTR_NC = 0x5;
const MEMATTR_OIWB = 0xf;

const TWO32 = 4294967296;

/** log2 of the contiguous group size (in entries) for a granule and level (generic_pt level). */
function contigLg2Of(granuleLg2: number, level: number): number {
  if (granuleLg2 === 12) return 4;
  if (granuleLg2 === 16) return 5;
  return level === 0 ? 7 : 5;
}

/** Highest level (generic_pt numbering) whose descriptors may be blocks, without LPA/LPA2. */
function maxBlockLevelOf(granuleLg2: number): number {
  return granuleLg2 === 12 ? 2 : 1;
}

function sizeName(lg2: number): string {
  const units = ["", "K", "M", "G", "T", "P"];
  return `${2 ** (lg2 % 10)}${units[Math.floor(lg2 / 10)]}`;
}

export interface ArmV8Options {
  /** Translation stage: 1 (CD tables) or 2 (STE tables). */
  stage: 1 | 2;
  /** 12, 14 or 16. */
  granuleLg2: 12 | 14 | 16;
  /** Input address width, 64 - T0SZ. */
  vaBits: number;
  /**
   * Stage 2 only: the STE.S2SL0 field. 4K: 0 = ARM level 2, 1 = level 1, 2 = level 0.
   * 16K and 64K: 0 = level 3, 1 = level 2, 2 = level 1, 3 = level 0 (16K only).
   */
  sl0?: number;
  unmapPolicy?: LargePageUnmapPolicy;
  /** Output address size in bits (IPS / S2PS), default 48. */
  oaBits?: number;
  /** Default: derived from the parameters. */
  name?: string;
}

export class ArmV8Format implements PtFormat {
  readonly name: string;
  readonly tag: number;
  readonly source =
    "Arm ARM DDI 0487 ch. D8; SMMUv3 IHI 0070 §5.2, §5.4; " +
    "linux drivers/iommu/io-pgtable-arm.c, drivers/iommu/generic_pt/fmt/armv8.h";
  readonly levels: number;
  readonly vaBits: number;
  readonly iovaBase = 0n;
  readonly oaBits: number;
  readonly bigEndian = false;
  readonly unmapPolicy: LargePageUnmapPolicy;
  readonly hasDirty = true;

  readonly stage: 1 | 2;
  readonly granuleLg2: number;
  readonly strideLg2: number;
  /** Index bits of the initial table (more than strideLg2 when stage-2 tables are concatenated). */
  readonly topLg2: number;
  /** ARM numbering of the initial lookup level (0..3). */
  readonly startLevel: number;
  /** Number of concatenated initial tables (1 when not concatenated). */
  readonly concatenated: number;
  /** CD.T0SZ / STE.S2T0SZ. */
  readonly t0sz: number;
  /** STE.S2SL0 for stage 2; -1 for stage 1, whose initial level follows from T0SZ. */
  readonly sl0: number;

  private readonly maxBlockLevel: number;
  private readonly addrLoMask: number;

  constructor(o: ArmV8Options) {
    const g = o.granuleLg2;
    const stride = g - 3;
    this.stage = o.stage;
    this.tag = o.stage === 1 ? FMT_ARMV8_S1 : FMT_ARMV8_S2;
    this.granuleLg2 = g;
    this.strideLg2 = stride;
    this.vaBits = o.vaBits;
    this.t0sz = 64 - o.vaBits;
    this.oaBits = o.oaBits ?? 48;
    this.unmapPolicy = o.unmapPolicy ?? "refuse";
    this.maxBlockLevel = maxBlockLevelOf(g);
    this.addrLoMask = (-1 << g) >>> 0;
    if (o.vaBits <= g || o.vaBits > 48) throw new RangeError(`armv8: bad input size ${o.vaBits}`);
    if (this.oaBits < 32 || this.oaBits > 48) throw new RangeError("armv8: output size is 32..48");
    let levels: number;
    if (o.stage === 1) {
      // Stage 1: the walk starts at the level whose single table covers what T0SZ leaves.
      levels = Math.ceil((o.vaBits - g) / stride);
      this.sl0 = -1;
    } else {
      if (o.sl0 === undefined) throw new RangeError("armv8: stage 2 needs SL0");
      const start = (g === 12 ? 2 : 3) - o.sl0;
      if (start < 0 || start > 3 || (g === 16 && start === 0)) {
        throw new RangeError(`armv8: SL0 ${o.sl0} is reserved for a 2^${g} granule`);
      }
      levels = 4 - start;
      this.sl0 = o.sl0;
    }
    this.levels = levels;
    this.startLevel = 4 - levels;
    this.topLg2 = o.vaBits - g - stride * (levels - 1);
    // Stage 1 initial tables are a single table; stage 2 may concatenate up to 16 (D8.2.2).
    const maxTop = o.stage === 1 ? stride : stride + 4;
    if (this.topLg2 < 1 || this.topLg2 > maxTop) {
      throw new RangeError(
        `armv8: ${o.vaBits}-bit input cannot start at ARM level ${this.startLevel}`,
      );
    }
    this.concatenated = this.topLg2 > stride ? 2 ** (this.topLg2 - stride) : 1;
    this.name =
      o.name ??
      `armv8-s${o.stage}-${sizeName(g).toLowerCase()}-${o.vaBits}` +
        (o.stage === 2 ? `-sl0=${o.sl0}` : "") +
        (this.unmapPolicy === "split" ? "-split" : "");
  }

  itemLg2(level: number): number {
    return this.granuleLg2 + this.strideLg2 * level;
  }
  tableLg2(level: number): number {
    return level === this.levels - 1 ? this.topLg2 : this.strideLg2;
  }
  /** log2 of the number of entries the Contiguous bit joins at `level`. */
  contigLg2(level: number): number {
    return contigLg2Of(this.granuleLg2, level);
  }
  leafSizesLg2(level: number): readonly number[] {
    if (level > this.maxBlockLevel || level >= this.levels) return [];
    const item = this.itemLg2(level);
    const c = this.contigLg2(level);
    return this.tableLg2(level) >= c ? [item, item + c] : [item];
  }

  entryKind(e: U64, level: number): PtEntryKind {
    if ((e.lo & VALID) === 0) return PT_ENTRY_EMPTY;
    if ((e.lo & TABLE_OR_PAGE) !== 0) return level === 0 ? PT_ENTRY_LEAF : PT_ENTRY_TABLE;
    // A block where the granule allows none (and 0b01 at ARM level 3) is an invalid descriptor.
    return level !== 0 && level <= this.maxBlockLevel ? PT_ENTRY_LEAF : PT_ENTRY_EMPTY;
  }
  tablePa(e: U64, _level: number): number {
    return (e.hi & OA_HI_MASK) * TWO32 + ((e.lo & this.addrLoMask) >>> 0);
  }
  leafOa(e: U64, level: number): number {
    const s = this.leafSizeLg2(e, level);
    if (s >= 32) return (e.hi & OA_HI_MASK & ~((1 << (s - 32)) - 1)) * TWO32;
    return (e.hi & OA_HI_MASK) * TWO32 + ((e.lo & this.addrLoMask & ~((2 ** s - 1) | 0)) >>> 0);
  }
  leafSizeLg2(e: U64, level: number): number {
    const item = this.itemLg2(level);
    return (e.hi & CONT_HI) !== 0 ? item + this.contigLg2(level) : item;
  }
  leafProt(e: U64, _level: number): number {
    const lo = e.lo;
    const hi = e.hi;
    let prot = 0;
    if (this.stage === 1) {
      // EL1 can always read; writable-clean (DBM with AP[2] set) is still a writable mapping.
      prot = IOMMU_READ;
      if ((lo & AP_RDONLY) === 0 || (hi & DBM_HI) !== 0) prot |= IOMMU_WRITE;
      if ((lo & AP_EL0) === 0) prot |= IOMMU_PRIV;
      const idx = (lo & ATTRINDX_MASK) >>> ATTRINDX_SHIFT;
      if (idx === ATTR_IDX_DEV) prot |= IOMMU_MMIO;
      else if (idx === ATTR_IDX_CACHE) prot |= IOMMU_CACHE;
      if ((hi & (UXN_HI | PXN_HI)) !== 0) prot |= IOMMU_NOEXEC;
    } else {
      if ((lo & S2AP_READ) !== 0) prot |= IOMMU_READ;
      if ((lo & S2AP_WRITE) !== 0 || (hi & DBM_HI) !== 0) prot |= IOMMU_WRITE;
      const attr = (lo & MEMATTR_MASK) >>> MEMATTR_SHIFT;
      if (attr === MEMATTR_DEV) prot |= IOMMU_MMIO;
      else if (attr === MEMATTR_OIWB) prot |= IOMMU_CACHE;
      if ((hi & UXN_HI) !== 0) prot |= IOMMU_NOEXEC;
    }
    return prot;
  }

  makeLeaf(oa: number, sizeLg2: number, level: number, slot: number, prot: number, out: U64): void {
    const item = this.itemLg2(level);
    const contig = sizeLg2 !== item;
    if (level > this.maxBlockLevel || (contig && sizeLg2 !== item + this.contigLg2(level))) {
      throw new RangeError(`${this.name}: no 2^${sizeLg2} leaf at level ${level}`);
    }
    const a = oa + slot * 2 ** item;
    let lo = ((a >>> 0) & this.addrLoMask) | VALID | AF;
    let hi = Math.floor(a / TWO32) & OA_HI_MASK;
    if (level === 0) lo |= TABLE_OR_PAGE;
    if (contig) hi |= CONT_HI;
    if (this.stage === 1) {
      lo |= NG;
      if ((prot & IOMMU_WRITE) === 0 && (prot & IOMMU_READ) !== 0) lo |= AP_RDONLY;
      else hi |= DBM_HI; // IO_PGTABLE_QUIRK_ARM_HD: writable leaves start writable-dirty
      if ((prot & IOMMU_PRIV) === 0) lo |= AP_EL0;
      if (prot & IOMMU_MMIO) lo |= ATTR_IDX_DEV << ATTRINDX_SHIFT;
      else if (prot & IOMMU_CACHE) lo |= ATTR_IDX_CACHE << ATTRINDX_SHIFT;
    } else {
      if (prot & IOMMU_READ) lo |= S2AP_READ;
      if (prot & IOMMU_WRITE) {
        lo |= S2AP_WRITE;
        hi |= DBM_HI; // generic_pt PT_FEAT_ARMV8_DBM: writable leaves start dirty
      }
      if (prot & IOMMU_MMIO) lo |= MEMATTR_DEV << MEMATTR_SHIFT;
      else if (prot & IOMMU_CACHE) lo |= MEMATTR_OIWB << MEMATTR_SHIFT;
      else lo |= MEMATTR_NC << MEMATTR_SHIFT;
    }
    lo |= prot & IOMMU_CACHE ? SH_INNER : SH_OUTER;
    if (prot & IOMMU_NOEXEC) hi |= UXN_HI | PXN_HI;
    out.lo = lo >>> 0;
    out.hi = hi >>> 0;
  }
  makeTable(pa: number, _level: number, out: U64): void {
    out.lo = (((pa >>> 0) & this.addrLoMask) | VALID | TABLE_OR_PAGE) >>> 0;
    out.hi = Math.floor(pa / TWO32) & OA_HI_MASK;
  }

  isDirty(e: U64, _level: number): boolean {
    if ((e.hi & DBM_HI) === 0) return false;
    return this.stage === 1 ? (e.lo & AP_RDONLY) === 0 : (e.lo & S2AP_WRITE) !== 0;
  }
  clearDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = e.lo;
    // Only DBM entries are write-protected: clearing a plain writable entry would lose W.
    if ((e.hi & DBM_HI) === 0) return;
    out.lo = (this.stage === 1 ? e.lo | AP_RDONLY : e.lo & ~S2AP_WRITE) >>> 0;
  }
  setDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = e.lo;
    // Hardware dirties only DBM entries; a read-only entry stays read-only.
    if ((e.hi & DBM_HI) === 0) return;
    out.lo = (this.stage === 1 ? e.lo & ~AP_RDONLY : e.lo | S2AP_WRITE) >>> 0;
  }

  describe(e: U64, level: number): string {
    const lo = e.lo;
    const hi = e.hi;
    const armLevel = 3 - level;
    if ((lo & VALID) === 0) return `invalid (ARM L${armLevel})`;
    const kind = this.entryKind(e, level);
    if (kind === PT_ENTRY_EMPTY) {
      return `reserved: block descriptor at ARM L${armLevel} (treated as invalid)`;
    }
    if (kind === PT_ENTRY_TABLE) {
      const flags: string[] = [];
      if (this.stage === 1) {
        if (hi & AP_TABLE_NO_EL0_HI) flags.push("APTable.noEL0");
        if (hi & AP_TABLE_RDONLY_HI) flags.push("APTable.RO");
        if (hi & PXN_TABLE_HI) flags.push("PXNTable");
        if (hi & UXN_TABLE_HI) flags.push("UXNTable");
        if (hi & NS_TABLE_HI) flags.push("NSTable");
      }
      const f = flags.length > 0 ? ` [${flags.join(" ")}]` : "";
      return `ARM L${armLevel} table -> 0x${this.tablePa(e, level).toString(16)}${f}`;
    }
    const flags: string[] = [];
    flags.push(lo & AF ? "AF" : "noAF");
    if (this.stage === 1) {
      const ap = (lo >>> 6) & 3;
      flags.push(["EL1:RW", "EL1+EL0:RW", "EL1:RO", "EL1+EL0:RO"][ap]);
      if (hi & DBM_HI) flags.push(lo & AP_RDONLY ? "DBM(clean)" : "DBM(dirty)");
      flags.push(`AttrIndx=${(lo & ATTRINDX_MASK) >>> ATTRINDX_SHIFT}`);
      if (lo & NG) flags.push("nG");
      if (hi & PXN_HI) flags.push("PXN");
      if (hi & UXN_HI) flags.push("UXN");
    } else {
      flags.push(`S2AP=${lo & S2AP_READ ? "R" : "-"}${lo & S2AP_WRITE ? "W" : "-"}`);
      if (hi & DBM_HI) flags.push(lo & S2AP_WRITE ? "DBM(dirty)" : "DBM(clean)");
      flags.push(`MemAttr=0x${((lo & MEMATTR_MASK) >>> MEMATTR_SHIFT).toString(16)}`);
      if (hi & UXN_HI) flags.push("XN");
    }
    flags.push(["SH=NS", "SH=?", "SH=OS", "SH=IS"][(lo >>> SH_SHIFT) & 3]);
    const size = this.leafSizeLg2(e, level);
    const what = level === 0 ? "page" : "block";
    const cont = hi & CONT_HI ? ` (contiguous ${sizeName(size)})` : "";
    const oa = (hi & OA_HI_MASK) * TWO32 + ((lo & this.addrLoMask) >>> 0);
    const head = `ARM L${armLevel} ${sizeName(this.itemLg2(level))} ${what}${cont}`;
    return `${head} -> 0x${oa.toString(16)} [${flags.join(" ")}]`;
  }

  walkConfig(rootPa: number): WalkConfig {
    const cfg = new WalkConfig(this.tag, rootPa, this.levels, this.vaBits, this.granuleLg2);
    cfg.strideLg2 = this.strideLg2;
    cfg.topLg2 = this.topLg2;
    cfg.param = this.oaBits;
    return cfg;
  }
}

// ---- configurations ------------------------------------------------------------------------

/** Stage 1, 4K granule, 48-bit IOVA (T0SZ 16): 4 levels starting at ARM level 0. */
export const armv8S1_4k48 = new ArmV8Format({ stage: 1, granuleLg2: 12, vaBits: 48 });
/** As armv8S1_4k48 but splitting blocks on partial unmap (io-pgtable-arm before 6.13). */
export const armv8S1_4k48Split = new ArmV8Format({
  stage: 1,
  granuleLg2: 12,
  vaBits: 48,
  unmapPolicy: "split",
});
/** Stage 1, 4K, 39-bit (T0SZ 25): 3 levels starting at ARM level 1. */
export const armv8S1_4k39 = new ArmV8Format({ stage: 1, granuleLg2: 12, vaBits: 39 });
/** Stage 1, 16K, 48-bit: 4 levels, the ARM level-0 table has 2 entries. */
export const armv8S1_16k48 = new ArmV8Format({ stage: 1, granuleLg2: 14, vaBits: 48 });
/** Stage 1, 16K, 47-bit: 3 levels starting at ARM level 1 with a full 2048-entry table. */
export const armv8S1_16k47 = new ArmV8Format({ stage: 1, granuleLg2: 14, vaBits: 47 });
/** Stage 1, 64K, 48-bit: 3 levels, the ARM level-1 table has 64 entries. */
export const armv8S1_64k48 = new ArmV8Format({ stage: 1, granuleLg2: 16, vaBits: 48 });
/** Stage 1, 64K, 42-bit: 2 levels starting at ARM level 2. */
export const armv8S1_64k42 = new ArmV8Format({ stage: 1, granuleLg2: 16, vaBits: 42 });

/** Stage 2, 4K, 40-bit IPA: SL0 = 1, 2 concatenated tables at ARM level 1 (Linux's choice). */
export const armv8S2_4k40 = new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 40, sl0: 1 });
/** Stage 2, 4K, 42-bit IPA: SL0 = 1, 8 concatenated tables at ARM level 1. */
export const armv8S2_4k42 = new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 42, sl0: 1 });
/** Stage 2, 4K, 48-bit IPA: SL0 = 2, 4 levels from ARM level 0 (512 entries: no concatenation). */
export const armv8S2_4k48 = new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 48, sl0: 2 });
/** Stage 2, 16K, 48-bit IPA: SL0 = 2, 2 concatenated tables at ARM level 1 (R_DXBSH). */
export const armv8S2_16k48 = new ArmV8Format({ stage: 2, granuleLg2: 14, vaBits: 48, sl0: 2 });
/** Stage 2, 16K, 40-bit IPA: SL0 = 1, 16 concatenated tables at ARM level 2. */
export const armv8S2_16k40 = new ArmV8Format({ stage: 2, granuleLg2: 14, vaBits: 40, sl0: 1 });
/** Stage 2, 64K, 48-bit IPA: SL0 = 2, 3 levels from ARM level 1 (64 entries). */
export const armv8S2_64k48 = new ArmV8Format({ stage: 2, granuleLg2: 16, vaBits: 48, sl0: 2 });

export const armv8Configs: readonly PtFormat[] = [
  armv8S1_4k48,
  armv8S1_4k48Split,
  armv8S1_4k39,
  armv8S1_16k48,
  armv8S1_16k47,
  armv8S1_64k48,
  armv8S1_64k42,
  armv8S2_4k40,
  armv8S2_4k42,
  armv8S2_4k48,
  armv8S2_16k48,
  armv8S2_16k40,
  armv8S2_64k48,
];

// ---- data plane ----------------------------------------------------------------------------
//
// Speed: the walks keep the current table's address as u32 halves (the low half a signed int32)
// and read entries that lie in the dense window straight from `mem.dense` by word index, using
// int32 arithmetic only (src/mem/phys.ts denseWord). Anything else -- a table outside the
// window or past its backed length, a misaligned root -- goes through mem.read64 / write32 by
// address exactly as before, so counters and results do not depend on which path was taken.

const ent1 = new U64(); // stage 1's fallback read buffer
const ent2 = new U64(); // stage 2's: a nested stage-1 walk calls stage 2 between its reads

function fault(res: TranslateResult, status: number, level: number): number {
  res.status = status;
  res.stage = 1;
  res.level = level;
  return status;
}

/** True when the input address has bits at or above `vaBits` (vaBits <= 48). */
function outOfRange(vaBits: number, iovaHi: number, iovaLo: number): boolean {
  return vaBits >= 32 ? iovaHi >>> (vaBits - 32) !== 0 : iovaHi !== 0 || iovaLo >>> vaBits !== 0;
}

/** Bits 47:32 of an address must stay below this (2^(oaBits - 32)); param 0 means 48 bits. */
function oaLimitHi(param: number): number {
  return param === 0 || param >= 48 ? 0x10000 : 1 << (param - 32);
}

/**
 * Stage-1 walk. cfg: root, levels, vaBits, granuleLg2, strideLg2, topLg2, param (output size),
 * flags WF_HW_A / WF_HW_AD. With `s2` every table address and the output are IPAs: each table
 * address goes through translateStage2 and the entry is then located by its host address.
 */
export function translateArmV8S1(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
): number {
  const top = cfg.levels - 1;
  if (outOfRange(cfg.vaBits, iovaHi, iovaLo)) return fault(res, TR_FAULT_ADDRESS_SIZE, top);
  const g = cfg.granuleLg2;
  const stride = cfg.strideLg2;
  const addrLo = -1 << g; // bits 31:G of a table or output address, as an int32 mask
  const lpaLo = g === 16 ? LPA_LO_MASK : 0;
  const limitHi = oaLimitHi(cfg.param);
  const maxBlock = g === 12 ? 2 : 1;
  let shift = g + stride * top;
  let idxMask = (1 << cfg.topLg2) - 1;
  const root = cfg.root;
  // The current table's address as halves; tableLo stays a signed int32 (no float values).
  let tableHi = Math.floor(root / TWO32);
  let tableLo = root | 0;
  let attrHi = 0; // OR of the hierarchical attributes of the tables walked through
  let d = mem.dense;
  for (let level = top; level >= 0; level--) {
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) &
      idxMask;
    // Locate the entry: word index into the dense window (w >= 0), else its address (epa).
    let w: number;
    let epa = 0;
    if (s2 !== null) {
      const gpa = tableHi * TWO32 + (tableLo >>> 0);
      const hpa = translateStage2(mem, s2, gpa, ACC_READ, res);
      if (hpa < 0) return res.status;
      epa = hpa + idx * 8;
      w = (epa & 7) === 0 ? denseWordOf(epa) : -1;
      d = mem.dense; // re-read: the stage-2 walk wrote through PhysMem
    } else {
      // Only a misaligned root can fail the alignment test; read64 handles it byte-wise.
      w = (tableLo & 7) === 0 ? denseWord(tableHi, tableLo) : -1;
      if (w >= 0) w += idx << 1;
      else epa = tableHi * TWO32 + (tableLo >>> 0) + idx * 8;
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
      mem.read64(epa, ent1);
      lo = ent1.lo | 0;
      hi = ent1.hi | 0;
    }
    res.reads++;
    if ((lo & VALID) === 0) return fault(res, TR_FAULT_TRANSLATION, level);
    if (level > 0 && (lo & TABLE_OR_PAGE) !== 0) {
      if ((hi & OA_CHECK_HI_MASK) >= limitHi || (lo & lpaLo) !== 0) {
        return fault(res, TR_FAULT_ADDRESS_SIZE, level);
      }
      attrHi |= hi;
      tableHi = hi & OA_HI_MASK;
      tableLo = lo & addrLo;
      shift -= stride;
      idxMask = (1 << stride) - 1;
      continue;
    }
    // A leaf: a page needs 0b11 at ARM level 3, a block 0b01 where blocks exist.
    if (level === 0 ? (lo & TABLE_OR_PAGE) === 0 : level > maxBlock) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    if ((hi & OA_CHECK_HI_MASK) >= limitHi || (lo & lpaLo) !== 0) {
      return fault(res, TR_FAULT_ADDRESS_SIZE, level);
    }
    const flags = cfg.flags;
    if ((lo & AF) === 0 && (flags & (WF_HW_A | WF_HW_AD)) === 0) {
      return fault(res, TR_FAULT_ACCESS, level);
    }
    // Effective permissions after the tables' APTable / XNTable bits.
    const hd = (flags & WF_HW_AD) !== 0;
    const tableRo = (attrHi & AP_TABLE_RDONLY_HI) !== 0;
    const el0 = (lo & AP_EL0) !== 0 && (attrHi & AP_TABLE_NO_EL0_HI) === 0;
    const writable = !tableRo && ((lo & AP_RDONLY) === 0 || (hd && (hi & DBM_HI) !== 0));
    let perm: number;
    if ((access & ACC_PRIV) !== 0) {
      // Implied PXN for memory writable at EL0 (effective AP[2:1] = 0b01).
      const el0Writable = el0 && !tableRo && (lo & AP_RDONLY) === 0;
      const pxn = (hi & PXN_HI) !== 0 || (attrHi & PXN_TABLE_HI) !== 0 || el0Writable;
      perm = PERM_R | (writable ? PERM_W : 0) | (pxn ? 0 : PERM_X);
    } else {
      const uxn = (hi & UXN_HI) !== 0 || (attrHi & UXN_TABLE_HI) !== 0;
      perm = (el0 ? PERM_R | (writable ? PERM_W : 0) : 0) | (uxn ? 0 : PERM_X);
    }
    if (
      ((access & ACC_READ) !== 0 && (perm & PERM_R) === 0) ||
      ((access & ACC_WRITE) !== 0 && (perm & PERM_W) === 0) ||
      ((access & ACC_EXEC) !== 0 && (perm & PERM_X) === 0)
    ) {
      return fault(res, TR_FAULT_PERMISSION, level);
    }
    if ((flags & (WF_HW_A | WF_HW_AD)) !== 0) {
      let want = lo | AF;
      if (hd && (access & ACC_WRITE) !== 0) want &= ~AP_RDONLY; // DBM: writable-clean -> dirty
      if (want !== lo) mem.writeEntryLo(w, epa, want);
    }
    const sizeMask = (1 << shift) - 1; // leaves have shift <= 30
    const out = (hi & OA_HI_MASK) * TWO32 + ((lo & addrLo & ~sizeMask) >>> 0) + (iovaLo & sizeMask);
    res.pageLg2 = (hi & CONT_HI) !== 0 ? shift + contigLg2Of(g, level) : shift;
    if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
    res.status = TR_OK;
    res.pa = out;
    res.perm = perm;
    return TR_OK;
  }
  return fault(res, TR_FAULT_TRANSLATION, 0); // unreachable: level 0 always ends the walk
}

/**
 * Stage-2 walk: same geometry fields as stage 1 (topLg2 covers concatenated initial tables,
 * which are one naturally aligned block, so the index simply runs past the first table), S2AP /
 * XN permissions, no hierarchical attributes, privilege ignored. A stage-2 tree is never itself
 * nested, so `s2` is ignored.
 */
export function translateArmV8S2(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  _s2: WalkConfig | null,
): number {
  const top = cfg.levels - 1;
  if (outOfRange(cfg.vaBits, iovaHi, iovaLo)) return fault(res, TR_FAULT_ADDRESS_SIZE, top);
  const g = cfg.granuleLg2;
  const stride = cfg.strideLg2;
  const addrLo = -1 << g;
  const lpaLo = g === 16 ? LPA_LO_MASK : 0;
  const limitHi = oaLimitHi(cfg.param);
  const maxBlock = g === 12 ? 2 : 1;
  let shift = g + stride * top;
  let idxMask = (1 << cfg.topLg2) - 1;
  const root = cfg.root;
  let tableHi = Math.floor(root / TWO32);
  let tableLo = root | 0;
  const d = mem.dense;
  for (let level = top; level >= 0; level--) {
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) &
      idxMask;
    let w = (tableLo & 7) === 0 ? denseWord(tableHi, tableLo) : -1;
    let epa = 0;
    if (w >= 0) w += idx << 1;
    else epa = tableHi * TWO32 + (tableLo >>> 0) + idx * 8;
    let lo: number;
    let hi: number;
    if (w >= 0 && w + 1 < d.length) {
      lo = d[w] | 0;
      hi = d[w + 1] | 0;
      mem.reads++;
    } else {
      if (w >= 0) epa = DENSE_BASE + w * 4;
      w = -1;
      mem.read64(epa, ent2);
      lo = ent2.lo | 0;
      hi = ent2.hi | 0;
    }
    res.reads++;
    if ((lo & VALID) === 0) return fault(res, TR_FAULT_TRANSLATION, level);
    if (level > 0 && (lo & TABLE_OR_PAGE) !== 0) {
      if ((hi & OA_CHECK_HI_MASK) >= limitHi || (lo & lpaLo) !== 0) {
        return fault(res, TR_FAULT_ADDRESS_SIZE, level);
      }
      tableHi = hi & OA_HI_MASK;
      tableLo = lo & addrLo;
      shift -= stride;
      idxMask = (1 << stride) - 1;
      continue;
    }
    if (level === 0 ? (lo & TABLE_OR_PAGE) === 0 : level > maxBlock) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    if ((hi & OA_CHECK_HI_MASK) >= limitHi || (lo & lpaLo) !== 0) {
      return fault(res, TR_FAULT_ADDRESS_SIZE, level);
    }
    const flags = cfg.flags;
    if ((lo & AF) === 0 && (flags & (WF_HW_A | WF_HW_AD)) === 0) {
      return fault(res, TR_FAULT_ACCESS, level);
    }
    const hd = (flags & WF_HW_AD) !== 0;
    const writable = (lo & S2AP_WRITE) !== 0 || (hd && (hi & DBM_HI) !== 0);
    const perm =
      ((lo & S2AP_READ) !== 0 ? PERM_R : 0) |
      (writable ? PERM_W : 0) |
      ((hi & UXN_HI) !== 0 ? 0 : PERM_X);
    if (
      ((access & ACC_READ) !== 0 && (perm & PERM_R) === 0) ||
      ((access & ACC_WRITE) !== 0 && (perm & PERM_W) === 0) ||
      ((access & ACC_EXEC) !== 0 && (perm & PERM_X) === 0)
    ) {
      return fault(res, TR_FAULT_PERMISSION, level);
    }
    if ((flags & (WF_HW_A | WF_HW_AD)) !== 0) {
      let want = lo | AF;
      if (hd && (access & ACC_WRITE) !== 0) want |= S2AP_WRITE; // DBM: writable-clean -> dirty
      if (want !== lo) mem.writeEntryLo(w, epa, want);
    }
    const sizeMask = (1 << shift) - 1;
    res.status = TR_OK;
    res.pa = (hi & OA_HI_MASK) * TWO32 + ((lo & addrLo & ~sizeMask) >>> 0) + (iovaLo & sizeMask);
    res.pageLg2 = (hi & CONT_HI) !== 0 ? shift + contigLg2Of(g, level) : shift;
    res.perm = perm;
    return TR_OK;
  }
  return fault(res, TR_FAULT_TRANSLATION, 0);
}

registerTranslate(FMT_ARMV8_S1, translateArmV8S1);
registerTranslate(FMT_ARMV8_S2, translateArmV8S2);

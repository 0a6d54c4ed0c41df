/**
 * Intel VT-d second-stage page tables ("SS", formerly "second-level"): the host-owned stage of
 * VT-d DMA remapping and the parent stage of VT-d nested translation. 3, 4 or 5 levels
 * (39, 48 or 57-bit input address, AW = 1, 2, 3), 4 KiB / 2 MiB / 1 GiB pages.
 *
 * Layout: Intel VT-d spec §3.7 (second-stage translation) and §9.8 (second-stage paging
 * entries); Linux drivers/iommu/generic_pt/fmt/vtdss.h (VTDSS_FMT_*) and
 * drivers/iommu/intel/iommu.h (DMA_PTE_*, dma_pte_present); reserved-bit masks cross-checked
 * with QEMU hw/i386/intel_iommu_internal.h (VTD_SPTE_*_RSVD_MASK).
 *
 *   bit 0 R, 1 W, 2 X (execute; only with SSEE, which Linux never enables), 5:3 EMT and
 *   6 IPAT (memory type; leaves only, ignored unless EMTE), 7 PS (SS-PDE/SS-PDPTE: 1 = leaf;
 *   reserved in SS-PML4E/SS-PML5E; ignored in SS-PTE), 8 A, 9 D (leaves), 10 ignored,
 *   11 SNP (leaves; reserved in non-leaf entries per spec rev 3.1 §9.8), 51:12 address,
 *   62 reserved (TM until spec rev 3.2), 61:52 and 63 ignored.
 *
 * There is no present bit: an entry is present when R or W is set (dma_pte_present tests
 * bits 1:0; the spec treats R=W=0 as not present whatever X says), so an X-only entry is empty.
 * Permission is the AND of R and W over every level walked.
 *
 * Levels: 0 = SS-PTE (4K), 1 = SS-PDE (2M leaf when PS), 2 = SS-PDPTE (1G leaf when PS),
 * 3 = SS-PML4E, 4 = SS-PML5E.
 *
 * makeLeaf follows vtdss_pt_iommu_set_prot: R for IOMMU_READ, W for IOMMU_WRITE, PS above
 * level 0, and SNP only when the domain has PT_FEAT_VTDSS_FORCE_COHERENCE (set by
 * intel_iommu_enforce_cache_coherency; older drivers used dmar_domain->set_pte_snp): SNP does
 * not follow IOMMU_CACHE per mapping. A prot with neither READ nor WRITE is -EINVAL in Linux
 * (the entry would read as empty), so makeLeaf throws. A and D are never preset. Tables get
 * R|W (vtdss_pt_install_table). PT_FEAT_VTDSS_FORCE_WRITEABLE (an errata workaround that
 * refuses read-only maps) is not modelled.
 *
 * Dirty tracking (SSADS: A/D updates when the PASID entry has SSADE) is used by Linux, so
 * `hasDirty` is true: D is bit 9 of leaf entries.
 *
 * Execute: with SSEE clear (Linux's setting) X is ignored and an execute request needs only
 * read permission; PERM_X is reported together with PERM_R.
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
  FMT_VTDSS,
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
const R = 1 << 0;
const W = 1 << 1;
const X = 1 << 2;
const EMT_SHIFT = 3;
const EMT_MASK = 7 << EMT_SHIFT;
const IPAT = 1 << 6;
const PS = 1 << 7;
const A = 1 << 8;
const D = 1 << 9;
const SNP = 1 << 11;
// High-word bits.
const RSVD62_HI = 1 << 30; // bit 62
const ADDR_HI_MASK = 0xfffff; // bits 51:32
const ADDR_LO_MASK = 0xfffff000; // bits 31:12

const TWO32 = 4294967296;

function addrOf(e: U64): number {
  return (e.hi & ADDR_HI_MASK) * TWO32 + ((e.lo & ADDR_LO_MASK) >>> 0);
}

export interface VtdssOptions {
  /** PT_FEAT_VTDSS_FORCE_COHERENCE: every leaf gets SNP (the domain enforces cache coherency). */
  readonly forceCoherence?: boolean;
}

export class VtdssFormat implements PtFormat {
  readonly name: string;
  readonly tag = FMT_VTDSS;
  readonly source =
    "Intel VT-d §3.7, §9.8; linux drivers/iommu/generic_pt/fmt/vtdss.h, drivers/iommu/intel/iommu.h";
  readonly levels: number;
  readonly vaBits: number;
  readonly iovaBase = 0n;
  readonly oaBits = 52;
  readonly bigEndian = false;
  readonly unmapPolicy = "whole" as const; // generic_pt: see LargePageUnmapPolicy
  readonly hasDirty = true;
  /** Descriptor bits every leaf carries besides R/W/PS and the address (SNP or nothing). */
  readonly leafExtra: number;

  constructor(levels: 3 | 4 | 5, opts: VtdssOptions = {}) {
    this.levels = levels;
    this.vaBits = 12 + 9 * levels;
    this.leafExtra = opts.forceCoherence === true ? SNP : 0;
    this.name = `vtdss-${levels}lvl${opts.forceCoherence === true ? "-snp" : ""}`;
  }

  itemLg2(level: number): number {
    return 12 + 9 * level;
  }
  tableLg2(_level: number): number {
    return 9;
  }
  leafSizesLg2(level: number): readonly number[] {
    return level <= 2 ? [12 + 9 * level] : [];
  }

  entryKind(e: U64, level: number): PtEntryKind {
    if ((e.lo & (R | W)) === 0) return PT_ENTRY_EMPTY;
    if (level === 0 || (level <= 2 && (e.lo & PS) !== 0)) return PT_ENTRY_LEAF;
    return PT_ENTRY_TABLE;
  }
  tablePa(e: U64, _level: number): number {
    return addrOf(e);
  }
  leafOa(e: U64, level: number): number {
    // Low address bits of a large page are reserved (zero in a valid entry); drop them anyway.
    const base = addrOf(e);
    return base - (base % 2 ** this.itemLg2(level));
  }
  leafSizeLg2(_e: U64, level: number): number {
    return this.itemLg2(level);
  }
  leafProt(e: U64, _level: number): number {
    let prot = 0;
    if (e.lo & R) prot |= IOMMU_READ;
    if (e.lo & W) prot |= IOMMU_WRITE;
    if (e.lo & SNP) prot |= IOMMU_CACHE;
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
    if (sizeLg2 !== this.itemLg2(level) || level > 2) {
      throw new RangeError(`vtdss has no ${2 ** sizeLg2}-byte page at level ${level}`);
    }
    if ((prot & (IOMMU_READ | IOMMU_WRITE)) === 0) {
      // vtdss_pt_iommu_set_prot: -EINVAL, an entry without R or W would read as not present.
      throw new RangeError("vtdss leaf needs IOMMU_READ or IOMMU_WRITE");
    }
    let lo = (oa >>> 0) | this.leafExtra;
    if (prot & IOMMU_READ) lo |= R;
    if (prot & IOMMU_WRITE) lo |= W;
    if (level > 0) lo |= PS;
    out.lo = lo >>> 0;
    out.hi = Math.floor(oa / TWO32) & ADDR_HI_MASK;
  }
  makeTable(pa: number, _level: number, out: U64): void {
    out.lo = ((pa >>> 0) | R | W) >>> 0;
    out.hi = Math.floor(pa / TWO32) & ADDR_HI_MASK;
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
    const kind = this.entryKind(e, level);
    if (kind === PT_ENTRY_EMPTY) return "not present (R=W=0)";
    const lo = e.lo;
    const flags = [
      lo & R ? "R" : "",
      lo & W ? "W" : "",
      lo & X ? "X" : "",
      lo & PS ? "PS" : "",
      lo & A ? "A" : "",
      lo & D ? "D" : "",
      lo & SNP ? "SNP" : "",
      lo & IPAT ? "IPAT" : "",
      lo & EMT_MASK ? `EMT=${(lo & EMT_MASK) >>> EMT_SHIFT}` : "",
    ].filter((s) => s !== "");
    if (kind === PT_ENTRY_TABLE) {
      return `table -> 0x${this.tablePa(e, level).toString(16)} [${flags.join(" ")}]`;
    }
    const size = ["4K", "2M", "1G"][level];
    return `${size} page -> 0x${this.leafOa(e, level).toString(16)} [${flags.join(" ")}]`;
  }

  walkConfig(rootPa: number): WalkConfig {
    return new WalkConfig(FMT_VTDSS, rootPa, this.levels, this.vaBits, 12);
  }
}

export const vtdssFormat3 = new VtdssFormat(3);
export const vtdssFormat4 = new VtdssFormat(4);
export const vtdssFormat5 = new VtdssFormat(5);
export const vtdssConfigs: readonly PtFormat[] = [vtdssFormat3, vtdssFormat4, vtdssFormat5];

const ent = new U64();

function fault(res: TranslateResult, status: number, level: number): number {
  res.status = status;
  res.stage = 1;
  res.level = level;
  return status;
}

/**
 * Data-plane walk of a VT-d second-stage tree. cfg: root, levels (3, 4 or 5), vaBits, flags
 * WF_HW_AD (SSADE: set A in every entry used and D in the leaf on a write). A read or execute
 * needs R at every level, a write needs W at every level; the fault names the first level that
 * denies. Reserved encodings (PS in SS-PML4E/PML5E, SNP in a non-leaf entry, bit 62, address
 * bits below a large page) fault as TRANSLATION.
 *
 * Speed (this is the stage 2 of every nested walk, so it runs once per stage-1 level): the next
 * table's address is kept as u32 halves (low half a signed int32) and entries in the dense
 * window are read straight from `mem.dense` by word index, int32 arithmetic only; tables
 * elsewhere, and stage-1 tables of a nested walk, go through `mem.read64`. See
 * src/mem/phys.ts denseWord.
 */
export function translateVtdss(
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
  if (vaBits >= 32 ? iovaHi >>> (vaBits - 32) !== 0 : iovaHi !== 0 || iovaLo >>> vaBits !== 0) {
    return fault(res, TR_FAULT_ADDRESS_SIZE, top);
  }
  const need =
    ((access & (ACC_READ | ACC_EXEC)) !== 0 ? R : 0) | ((access & ACC_WRITE) !== 0 ? W : 0);
  const hwAd = (cfg.flags & WF_HW_AD) !== 0;
  let d = mem.dense;
  const root = cfg.root;
  // The current table's address as halves; nextLo stays a signed int32 (no float values).
  let nextHi = root < TWO32 ? 0 : Math.floor(root / TWO32);
  let nextLo = root | 0;
  let allow = R | W;
  for (let level = top; level >= 0; level--) {
    const shift = 12 + 9 * level;
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) & 511;
    // Locate the entry: word index into the dense window (w >= 0), else its address (epa).
    // Only an 8-byte-aligned table takes the word path (read64 handles a misaligned root).
    let w: number;
    let epa = 0;
    if (s2 !== null) {
      const hpa = translateStage2(mem, s2, nextHi * TWO32 + (nextLo >>> 0), ACC_READ, res);
      if (hpa < 0) return res.status;
      epa = hpa + idx * 8;
      w = (epa & 7) === 0 ? denseWordOf(epa) : -1;
      d = mem.dense; // in case stage 2's A/D write-back grew the window
    } else {
      w = (nextLo & 7) === 0 ? denseWord(nextHi, nextLo) : -1;
      if (w >= 0) w += idx * 2;
      else epa = nextHi * TWO32 + (nextLo >>> 0) + idx * 8;
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
    if ((lo & (R | W)) === 0 || (hi & RSVD62_HI) !== 0) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    const leaf = level === 0 || (level <= 2 && (lo & PS) !== 0);
    if (leaf) {
      // A large page's address bits below its size are reserved.
      if (level > 0 && (lo & ((1 << shift) - 1) & ADDR_LO_MASK) !== 0) {
        return fault(res, TR_FAULT_TRANSLATION, level);
      }
    } else if ((lo & SNP) !== 0 || (level > 2 && (lo & PS) !== 0)) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    allow &= lo;
    if ((allow & need) !== need) return fault(res, TR_FAULT_PERMISSION, level);
    if (!leaf) {
      if (hwAd && (lo & A) === 0) mem.writeEntryLo(w, epa, lo | A);
      nextHi = hi & ADDR_HI_MASK;
      nextLo = lo & ADDR_LO_MASK;
      continue;
    }
    if (hwAd) {
      const want = (need & W) !== 0 ? lo | A | D : lo | A;
      if (want !== lo) mem.writeEntryLo(w, epa, want);
    }
    // (1 << shift) - 1, not 2 ** shift: Math.pow costs more than the rest of the walk.
    const sizeMask = (1 << shift) - 1; // shift <= 30 for leaves
    // The address bits below the page size are zero (checked above for large pages), so the
    // page offset can be ORed in before the one conversion to an unsigned low half.
    const out = (hi & ADDR_HI_MASK) * TWO32 + (((lo & ADDR_LO_MASK) | (iovaLo & sizeMask)) >>> 0);
    const perm = ((allow & R) !== 0 ? PERM_R | PERM_X : 0) | ((allow & W) !== 0 ? PERM_W : 0);
    res.pageLg2 = shift;
    if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
    res.status = TR_OK;
    res.pa = out;
    res.perm = perm;
    return TR_OK;
  }
  // Unreachable: level 0 is always a leaf.
  return fault(res, TR_FAULT_TRANSLATION, 0);
}

registerTranslate(FMT_VTDSS, translateVtdss);

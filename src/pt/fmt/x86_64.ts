/**
 * x86-64 long-mode paging, as the IOMMU uses it for Intel VT-d first-stage and AMD v2 (guest)
 * tables: 4 levels (48-bit IOVA) or 5 levels (57-bit), 4 KiB / 2 MiB / 1 GiB pages.
 *
 * Layout: Intel SDM vol. 3A §4.5 (4-level and 5-level paging, tables 4-14 to 4-20) and Intel
 * VT-d spec §9.9 (first-stage paging entries); Linux drivers/iommu/generic_pt/fmt/x86_64.h.
 *
 *   bit 0 P, 1 R/W, 2 U/S, 3 PWT, 4 PCD, 5 A, 6 D (leaf), 7 PS (PDPTE/PDE: 1 = leaf;
 *   in a PTE it is PAT), 8 G (leaf), 12 PAT (large leaf), 51:12 address, 63 XD.
 *
 * Levels: 0 = PTE (4K), 1 = PDE (2M leaf when PS), 2 = PDPTE (1G leaf when PS), 3 = PML4E,
 * 4 = PML5E (PS reserved above level 2).
 *
 * As in Linux (x86_64_pt_iommu_set_prot), a leaf gets U|A, plus RW|D when writable; tables
 * get P|RW|U|A. Linux implements no dirty tracking on this format (D is preset on writable
 * pages), so `hasDirty` is false; the D bit is still decoded and set by hardware A/D updates.
 */
import { DENSE_BASE, denseWord, denseWordOf, type PhysMem } from "../../mem/phys.ts";
import { U64 } from "../../mem/u64.ts";
import {
  IOMMU_NOEXEC,
  IOMMU_PRIV,
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
  ACC_PRIV,
  ACC_READ,
  ACC_WRITE,
  FMT_X86_64,
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
const P = 1 << 0;
const RW = 1 << 1;
const US = 1 << 2;
const A = 1 << 5;
const D = 1 << 6;
const PS = 1 << 7;
// High-word bits.
const XD_HI = 1 << 31; // bit 63
const ADDR_HI_MASK = 0xfffff; // bits 51:32
const ADDR_LO_MASK = 0xfffff000; // bits 31:12

function addrOf(e: U64, sizeLg2: number): number {
  const lo = (e.lo & ADDR_LO_MASK & ~((2 ** sizeLg2 - 1) | 0)) >>> 0;
  return (e.hi & ADDR_HI_MASK) * 4294967296 + lo;
}

class X86_64Format implements PtFormat {
  readonly name: string;
  readonly tag = FMT_X86_64;
  readonly source =
    "Intel SDM vol. 3A §4.5; Intel VT-d §9.9; linux drivers/iommu/generic_pt/fmt/x86_64.h";
  readonly levels: number;
  readonly vaBits: number;
  readonly iovaBase = 0n;
  readonly oaBits = 52;
  readonly bigEndian = false;
  readonly unmapPolicy = "whole" as const; // generic_pt: see LargePageUnmapPolicy
  readonly hasDirty = false;

  constructor(levels: 4 | 5) {
    this.levels = levels;
    this.vaBits = 12 + 9 * levels;
    this.name = `x86_64-${levels}lvl`;
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
    if ((e.lo & P) === 0) return PT_ENTRY_EMPTY;
    if (level === 0 || (level <= 2 && (e.lo & PS) !== 0)) return PT_ENTRY_LEAF;
    return PT_ENTRY_TABLE;
  }
  tablePa(e: U64, _level: number): number {
    return addrOf(e, 12);
  }
  leafOa(e: U64, level: number): number {
    return addrOf(e, this.itemLg2(level));
  }
  leafSizeLg2(_e: U64, level: number): number {
    return this.itemLg2(level);
  }
  leafProt(e: U64, _level: number): number {
    let prot = IOMMU_READ;
    if (e.lo & RW) prot |= IOMMU_WRITE;
    if ((e.lo & US) === 0) prot |= IOMMU_PRIV;
    if (e.hi & XD_HI) prot |= IOMMU_NOEXEC;
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
    let lo = (oa >>> 0) | P | US | A;
    if (level > 0) lo |= PS;
    if (prot & IOMMU_WRITE) lo |= RW | D;
    out.lo = lo >>> 0;
    out.hi = Math.floor(oa / 4294967296) & ADDR_HI_MASK;
    if (sizeLg2 !== this.itemLg2(level)) throw new RangeError("x86_64 has no contiguous pages");
  }
  makeTable(pa: number, _level: number, out: U64): void {
    out.lo = ((pa >>> 0) | P | RW | US | A) >>> 0;
    out.hi = Math.floor(pa / 4294967296) & ADDR_HI_MASK;
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
    if (kind === PT_ENTRY_EMPTY) return "not present (P=0)";
    const flags = [
      "P",
      e.lo & RW ? "RW" : "RO",
      e.lo & US ? "U" : "S",
      e.lo & A ? "A" : "",
      e.lo & D ? "D" : "",
      e.lo & PS ? "PS" : "",
      e.hi & XD_HI ? "XD" : "",
    ].filter((s) => s !== "");
    if (kind === PT_ENTRY_TABLE)
      return `table -> 0x${this.tablePa(e, level).toString(16)} [${flags.join(" ")}]`;
    const size = ["4K", "2M", "1G"][level];
    return `${size} page -> 0x${this.leafOa(e, level).toString(16)} [${flags.join(" ")}]`;
  }

  walkConfig(rootPa: number): WalkConfig {
    return new WalkConfig(FMT_X86_64, rootPa, this.levels, this.vaBits, 12);
  }
}

export const x86_64Format4 = new X86_64Format(4);
export const x86_64Format5 = new X86_64Format(5);
export const x86_64Configs: readonly PtFormat[] = [x86_64Format4, x86_64Format5];

const ent = new U64();

/**
 * Data-plane walk of an x86-64 table tree. cfg: root, levels (4 or 5), vaBits, flags WF_HW_AD
 * (set A on every entry used and D on the leaf for writes, as the IOMMU does when A/D updates are
 * enabled). Write needs R/W at every level; an unprivileged request needs U/S at every level; an
 * execute request faults on XD at any level.
 *
 * Speed: the next table's address is kept as u32 halves and entries in the dense window are
 * read straight from `mem.dense` by word index (int32 arithmetic only); tables elsewhere, and
 * stage-1 tables of a nested walk, go through `mem.read64`. See src/mem/phys.ts denseWord.
 */
export function translateX86_64(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
): number {
  const top = cfg.levels - 1;
  // Above vaBits nothing is mapped (no sign extension for IOMMU DMA domains).
  const vaBits = cfg.vaBits;
  if (vaBits >= 32 ? iovaHi >>> (vaBits - 32) !== 0 : iovaHi !== 0 || iovaLo >>> vaBits !== 0) {
    res.status = TR_FAULT_ADDRESS_SIZE;
    res.stage = 1;
    res.level = top;
    return TR_FAULT_ADDRESS_SIZE;
  }
  const d = mem.dense;
  const root = cfg.root;
  // The current table's address as halves; nextLo stays a signed int32 (no float values).
  let nextHi = Math.floor(root / 4294967296);
  let nextLo = root | 0;
  let allow = P | RW | US; // AND of the permission bits along the walk
  let xd = 0;
  const hwAd = (cfg.flags & WF_HW_AD) !== 0;
  for (let level = top; level >= 0; level--) {
    const shift = 12 + 9 * level;
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) & 511;
    // Locate the entry: word index into the dense window (w >= 0), else its address (epa).
    let w: number;
    let epa = 0;
    if (s2 !== null) {
      const hpa = translateStage2(mem, s2, nextHi * 4294967296 + (nextLo >>> 0), ACC_READ, res);
      if (hpa < 0) return res.status;
      epa = hpa + idx * 8;
      w = denseWordOf(epa);
    } else {
      w = denseWord(nextHi, nextLo);
      if (w >= 0) w += idx * 2;
      else epa = nextHi * 4294967296 + (nextLo >>> 0) + idx * 8;
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
    if ((lo & P) === 0) {
      res.status = TR_FAULT_TRANSLATION;
      res.stage = 1;
      res.level = level;
      return TR_FAULT_TRANSLATION;
    }
    allow &= lo;
    xd |= hi & XD_HI;
    if (level > 2 && (lo & PS) !== 0) {
      // PS is reserved in PML4E/PML5E: a reserved-bit violation, reported as not translatable.
      res.status = TR_FAULT_TRANSLATION;
      res.stage = 1;
      res.level = level;
      return TR_FAULT_TRANSLATION;
    }
    if (level !== 0 && (level > 2 || (lo & PS) === 0)) {
      if (hwAd && (lo & A) === 0) mem.writeEntryLo(w, epa, lo | A);
      nextHi = hi & ADDR_HI_MASK;
      nextLo = lo & ADDR_LO_MASK;
      continue;
    }
    if (
      ((access & ACC_WRITE) !== 0 && (allow & RW) === 0) ||
      ((access & ACC_PRIV) === 0 && (allow & US) === 0) ||
      ((access & ACC_EXEC) !== 0 && xd !== 0)
    ) {
      res.status = TR_FAULT_PERMISSION;
      res.stage = 1;
      res.level = level;
      return TR_FAULT_PERMISSION;
    }
    if (hwAd) {
      const want = (access & ACC_WRITE) !== 0 ? lo | A | D : lo | A;
      if (want !== lo) mem.writeEntryLo(w, epa, want);
    }
    const sizeMask = (1 << shift) - 1; // shift <= 30 for leaves
    const out =
      (hi & ADDR_HI_MASK) * 4294967296 +
      ((lo & ADDR_LO_MASK & ~sizeMask) >>> 0) +
      ((iovaLo & sizeMask) >>> 0);
    const perm = PERM_R | (allow & RW ? PERM_W : 0) | (xd === 0 ? PERM_X : 0);
    res.pageLg2 = shift;
    if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
    res.status = TR_OK;
    res.pa = out;
    res.perm = perm;
    return TR_OK;
  }
  // Unreachable: level 0 is always a leaf.
  res.status = TR_FAULT_TRANSLATION;
  return TR_FAULT_TRANSLATION;
}

registerTranslate(FMT_X86_64, translateX86_64);

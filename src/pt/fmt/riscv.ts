/**
 * RISC-V page tables as the RISC-V IOMMU walks them: first-stage Sv39 / Sv48 / Sv57 (the
 * iosatp tables, FMT_RISCV) and the G-stage Sv39x4 / Sv48x4 / Sv57x4 (the iohgatp tables,
 * FMT_RISCV_G).
 *
 * Sources:
 *  - RISC-V Privileged ISA, Supervisor-level chapter, "Sv39" / "Sv48" / "Sv57" (PTE layout and
 *    the "Virtual Address Translation Process", steps 1-8), the "Svnapot" chapter (NAPOT PTEs)
 *    and the "Svpbmt" chapter (PBMT field);
 *  - RISC-V Privileged ISA, Hypervisor extension, "Two-Stage Address Translation" / "Guest
 *    Physical Address Translation" (Sv39x4 / Sv48x4 / Sv57x4);
 *  - RISC-V IOMMU spec v1.0, "Device-context" (DC.tc GADE bit 7, SADE bit 8) and "Process to
 *    translate an IOVA"; its reference model (iommu_ref_model, *_stage_trans.c) for the order of
 *    the checks;
 *  - Linux drivers/iommu/generic_pt/fmt/riscv.h (riscvpt_iommu_set_prot, install_leaf_entry,
 *    install_table, load_entry_raw) and drivers/iommu/riscv/iommu.c (features used).
 *
 * PTE (64-bit, little-endian):
 *   bit 0 V, 1 R, 2 W, 3 X, 4 U, 5 G, 6 A, 7 D, 9:8 RSW (software, ignored),
 *   53:10 PPN (PA bits 55:12), 60:54 reserved (must be 0), 62:61 PBMT (Svpbmt; 3 is reserved),
 *   63 N (Svnapot).
 * A valid PTE with R or X set is a leaf; R=W=X=0 points to the next table; W=1 with R=0 is
 * reserved. In a pointer, D, A, U, PBMT and N are reserved. Leaves may sit at every level
 * (superpages); a superpage whose low PPN bits are not zero is misaligned and faults.
 * Svnapot: at level 0 a leaf with N=1 and ppn[3:0] = 0b1000 maps a naturally aligned 64 KiB
 * region; any other N=1 encoding (or N=1 above level 0) is reserved. Linux uses it
 * (PT_FEAT_RISCV_SVNAPOT_64K, always requested by the RISC-V IOMMU driver because the IOMMU spec
 * makes Svnapot mandatory), writing the same PTE into the 16 slots; we model it as a contiguous
 * page of 16 entries at level 0.
 *
 * Levels (generic_pt numbering, level = the spec's i): 0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB,
 * 3 = 512 GiB, 4 = 256 TiB. Every table has 512 entries, except the G-stage root, which is
 * 16 KiB (2048 entries, indexed by the 2 extra GPA bits) and must be 16 KiB aligned; so the
 * G-stage input is 41 / 50 / 59 bits wide. First-stage IOVAs are 39 / 48 / 57 bits. As everywhere
 * in this model the input is not sign-extended (Linux's PT_FEAT_SIGN_EXTEND lower half only).
 * Mainline riscv.h is first-stage only; the G-stage geometry (PT_FEAT_RISCV_S2: the top table
 * gets num_items_lg2 + 2) comes from the linux-riscv tree's riscv.h, with the same entry bits.
 *
 * Linux leaves (riscvpt_iommu_set_prot): A | U always (the IOMMU treats DMA as U-mode, and the
 * preset A avoids A updates), plus W | R | D for IOMMU_WRITE, R for IOMMU_READ, X unless
 * IOMMU_NOEXEC; no R/W/X at all is -EOPNOTSUPP. IOMMU_PRIV is ignored (U is always set); PBMT
 * stays 0 because the driver does not request PT_FEAT_RISCV_SVPBMT. Tables are V | PPN only.
 * Mainline Linux implements no dirty tracking for this format (D is preset on writable leaves),
 * so `hasDirty` is false; the D bit is still decoded and set by hardware A/D updates.
 *
 * Data plane (translateRiscv, registered for both tags):
 *  - reserved encodings, V=0 and a pointer at level 0 fault TRANSLATION (a RISC-V page fault);
 *  - R / W / X / U checks fault PERMISSION. First stage: an unprivileged request needs U=1; a
 *    privileged (S-mode) request to a U=1 page needs SUM (cfg.param bit RISCV_PARAM_SUM, the
 *    process context's ta.SUM; set by walkConfig) and may never execute from it. G-stage: every
 *    access is a user access, so a leaf with U=0 always faults;
 *  - A=0, or D=0 on a write, with hardware A/D update off (DC.tc SADE for the first stage, GADE
 *    for the G-stage; WF_HW_AD here) is a page fault too; we report A=0 as ACCESS (the same
 *    condition as ARM's access-flag fault) and D=0 on a write as PERMISSION. With WF_HW_AD the
 *    walker sets A, and D on a write, in the leaf it used;
 *  - all of TRANSLATION / PERMISSION / ACCESS become the IOMMU's page-fault causes (12/13/15,
 *    or the guest-page-fault causes 20/21/23 for the G-stage).
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
  FMT_RISCV,
  FMT_RISCV_G,
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
  WF_HW_AD,
} from "../translate.ts";

// ---- PTE bits, low word ----------------------------------------------------------------------
export const RISCV_PTE_V = 1 << 0;
export const RISCV_PTE_R = 1 << 1;
export const RISCV_PTE_W = 1 << 2;
export const RISCV_PTE_X = 1 << 3;
export const RISCV_PTE_U = 1 << 4;
export const RISCV_PTE_G = 1 << 5;
export const RISCV_PTE_A = 1 << 6;
export const RISCV_PTE_D = 1 << 7;
const V = RISCV_PTE_V;
const R = RISCV_PTE_R;
const W = RISCV_PTE_W;
const X = RISCV_PTE_X;
const U = RISCV_PTE_U;
const G = RISCV_PTE_G;
const A = RISCV_PTE_A;
const D = RISCV_PTE_D;
const RWX = R | W | X;
/** ppn[3] of a NAPOT leaf: ppn[3:0] = 0b1000 encodes a 64 KiB region (Svnapot). */
const NAPOT_64K_LO = 1 << 13;
/** Entry bits 31:10 carry PPN bits 21:0. */
const PPN_LO_SHIFT = 10;
// ---- PTE bits, high word (entry bit n is bit n - 32 here) ---------------------------------------
/** Entry bits 53:32: PPN bits 43:22. */
const PPN_HI_MASK = 0x3fffff;
/** Entry bits 60:54: reserved for future standard use. */
const RSV_HI = 0x7f << 22;
/** Entry bits 62:61: PBMT (0 PMA, 1 NC, 2 IO, 3 reserved). */
const PBMT_HI = 3 << 29;
const PBMT_SHIFT_HI = 29;
/** Entry bit 63: N (Svnapot). */
const N_HI = 1 << 31;

const TWO34 = 2 ** 34;
const TWO32 = 2 ** 32;

/** WalkConfig.param bit: the process context's SUM (S-mode requests may access U=1 pages). */
export const RISCV_PARAM_SUM = 1;

/** PA of the PPN field: (hi PPN bits) * 2^34 + (lo PPN bits) * 2^12. */
function ppnAddr(e: U64): number {
  return (e.hi & PPN_HI_MASK) * TWO34 + (e.lo >>> PPN_LO_SHIFT) * 4096;
}

const SIZE_NAMES: Record<number, string> = {
  12: "4K",
  16: "64K",
  21: "2M",
  30: "1G",
  39: "512G",
  48: "256T",
};

class RiscvFormat implements PtFormat {
  readonly name: string;
  readonly tag: number;
  readonly source =
    "RISC-V Privileged ISA: Sv39/Sv48/Sv57, Svnapot, Hypervisor two-stage translation; " +
    "RISC-V IOMMU v1.0; linux drivers/iommu/generic_pt/fmt/riscv.h";
  readonly levels: number;
  readonly vaBits: number;
  readonly iovaBase = 0n;
  /** PPN is 44 bits: 56-bit physical addresses (Linux PT_MAX_OUTPUT_ADDRESS_LG2). */
  readonly oaBits = 56;
  readonly bigEndian = false;
  readonly unmapPolicy = "whole" as const; // generic_pt: see LargePageUnmapPolicy
  readonly hasDirty = false;
  /** G-stage (Sv..x4): 2048-entry root, U required on leaves. */
  readonly gstage: boolean;
  private readonly topLg2: number;

  constructor(levels: 3 | 4 | 5, gstage: boolean) {
    this.levels = levels;
    this.gstage = gstage;
    this.tag = gstage ? FMT_RISCV_G : FMT_RISCV;
    this.topLg2 = gstage ? 11 : 9;
    this.vaBits = 12 + 9 * (levels - 1) + this.topLg2;
    const sv = 12 + 9 * levels;
    this.name = gstage ? `riscv-sv${sv}x4` : `riscv-sv${sv}`;
  }

  itemLg2(level: number): number {
    return 12 + 9 * level;
  }
  tableLg2(level: number): number {
    return level === this.levels - 1 ? this.topLg2 : 9;
  }
  leafSizesLg2(level: number): readonly number[] {
    if (level === 0) return [12, 16];
    return [12 + 9 * level];
  }

  entryKind(e: U64, level: number): PtEntryKind {
    // As Linux's riscvpt_load_entry_raw: any valid entry at level 0 is a leaf (hardware faults on
    // a pointer there), elsewhere R/W/X decide.
    if ((e.lo & V) === 0) return PT_ENTRY_EMPTY;
    if (level === 0 || (e.lo & RWX) !== 0) return PT_ENTRY_LEAF;
    return PT_ENTRY_TABLE;
  }
  tablePa(e: U64, _level: number): number {
    return ppnAddr(e);
  }
  leafOa(e: U64, level: number): number {
    const pa = ppnAddr(e);
    const sizeLg2 = this.leafSizeLg2(e, level);
    return pa - (pa % 2 ** sizeLg2);
  }
  leafSizeLg2(e: U64, level: number): number {
    if (level === 0 && (e.hi & N_HI) !== 0) return 16;
    return 12 + 9 * level;
  }
  leafProt(e: U64, _level: number): number {
    let prot = 0;
    if (e.lo & R) prot |= IOMMU_READ;
    if (e.lo & W) prot |= IOMMU_WRITE;
    if ((e.lo & X) === 0) prot |= IOMMU_NOEXEC;
    if ((e.lo & U) === 0) prot |= IOMMU_PRIV;
    return prot;
  }

  /** Bits as riscvpt_iommu_set_prot + riscvpt_install_leaf_entry (with Svnapot 64K) write them. */
  makeLeaf(
    oa: number,
    sizeLg2: number,
    level: number,
    _slot: number,
    prot: number,
    out: U64,
  ): void {
    let flags = V | A | U;
    if (prot & IOMMU_WRITE) flags |= W | R | D;
    if (prot & IOMMU_READ) flags |= R;
    if ((prot & IOMMU_NOEXEC) === 0) flags |= X;
    if ((flags & RWX) === 0) {
      // Linux: -EOPNOTSUPP; an entry without R/W/X would read back as a table pointer.
      throw new RangeError(`${this.name}: prot 0x${prot.toString(16)} grants no access`);
    }
    let lo = (((oa / 4096) & 0x3fffff) << PPN_LO_SHIFT) | flags;
    let hi = Math.floor(oa / TWO34) & PPN_HI_MASK;
    if (level === 0 && sizeLg2 === 16) {
      lo |= NAPOT_64K_LO;
      hi |= N_HI;
    } else if (sizeLg2 !== 12 + 9 * level) {
      throw new RangeError(`${this.name}: no 2^${sizeLg2} page at level ${level}`);
    }
    out.lo = lo >>> 0;
    out.hi = hi >>> 0;
  }
  makeTable(pa: number, _level: number, out: U64): void {
    out.lo = ((((pa / 4096) & 0x3fffff) << PPN_LO_SHIFT) | V) >>> 0;
    out.hi = Math.floor(pa / TWO34) & PPN_HI_MASK;
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
    const lo = e.lo;
    const hi = e.hi;
    if ((lo & V) === 0) return "invalid (V=0)";
    const flags = [
      "V",
      lo & R ? "R" : "",
      lo & W ? "W" : "",
      lo & X ? "X" : "",
      lo & U ? "U" : "",
      lo & G ? "G" : "",
      lo & A ? "A" : "",
      lo & D ? "D" : "",
      hi & N_HI ? "N" : "",
      ["", "PBMT=NC", "PBMT=IO", "PBMT=3"][(hi & PBMT_HI) >>> PBMT_SHIFT_HI],
    ].filter((s) => s !== "");
    const bits = `[${flags.join(" ")}]`;
    const problem = this.reservedReason(e, level);
    const note = problem === "" ? "" : ` (reserved: ${problem})`;
    if ((lo & RWX) === 0 && level > 0) {
      return `table -> 0x${this.tablePa(e, level).toString(16)} ${bits}${note}`;
    }
    const size = SIZE_NAMES[this.leafSizeLg2(e, level)];
    const napot = level === 0 && (hi & N_HI) !== 0 ? " NAPOT" : "";
    return `${size}${napot} page -> 0x${this.leafOa(e, level).toString(16)} ${bits}${note}`;
  }

  /** Why hardware would reject a valid entry at `level`, or "" (for describe). */
  private reservedReason(e: U64, level: number): string {
    const lo = e.lo;
    const hi = e.hi;
    if ((lo & (R | W)) === W) return "W without R";
    if ((hi & RSV_HI) !== 0) return "bits 60:54 set";
    if ((hi & PBMT_HI) === PBMT_HI) return "PBMT=3";
    if ((hi & N_HI) !== 0 && level !== 0) return "N above level 0";
    if ((lo & RWX) === 0) {
      if (level === 0) return "pointer at level 0";
      if ((lo & (D | A | U)) !== 0) return "D/A/U in a pointer";
      if ((hi & (PBMT_HI | N_HI)) !== 0) return "PBMT/N in a pointer";
      return "";
    }
    if (level > 0 && ppnAddr(e) % 2 ** (12 + 9 * level) !== 0) return "misaligned superpage";
    if ((hi & N_HI) !== 0 && ((lo >>> PPN_LO_SHIFT) & 0xf) !== 8) return "NAPOT size encoding";
    return "";
  }

  walkConfig(rootPa: number): WalkConfig {
    const rootAlign = 2 ** (this.topLg2 + 3);
    if (rootPa % rootAlign !== 0) {
      throw new RangeError(
        `${this.name}: root 0x${rootPa.toString(16)} is not ${rootAlign}-aligned`,
      );
    }
    const cfg = new WalkConfig(this.tag, rootPa, this.levels, this.vaBits, 12);
    cfg.topLg2 = this.topLg2;
    // Privileged requests may use U=1 pages (PC.ta.SUM = 1) unless a caller clears it.
    cfg.param = this.gstage ? 0 : RISCV_PARAM_SUM;
    return cfg;
  }
}

export const riscvSv39 = new RiscvFormat(3, false);
export const riscvSv48 = new RiscvFormat(4, false);
export const riscvSv57 = new RiscvFormat(5, false);
export const riscvSv39x4 = new RiscvFormat(3, true);
export const riscvSv48x4 = new RiscvFormat(4, true);
export const riscvSv57x4 = new RiscvFormat(5, true);
export const riscvConfigs: readonly PtFormat[] = [
  riscvSv39,
  riscvSv48,
  riscvSv57,
  riscvSv39x4,
  riscvSv48x4,
  riscvSv57x4,
];

const ent = new U64();

function fault(res: TranslateResult, status: number, level: number): number {
  res.status = status;
  res.stage = 1;
  res.level = level;
  return status;
}

/**
 * Data-plane walk of a RISC-V first-stage (FMT_RISCV) or G-stage (FMT_RISCV_G) tree, following
 * the privileged spec's translation process. cfg: root, levels, vaBits, topLg2 (9, or 11 for the
 * G-stage root), flags WF_HW_AD (SADE / GADE), param RISCV_PARAM_SUM (first stage only).
 *
 * Speed: the next table's address is kept as u32 halves (the low half a signed int32) and
 * entries in the dense window are read straight from `mem.dense` by word index, so a walk does
 * no float arithmetic until the leaf; tables elsewhere, and stage-1 tables of a nested walk that
 * stage 2 places outside the window, go through `mem.read64`. See src/mem/phys.ts denseWord.
 */
export function translateRiscv(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
): number {
  const top = cfg.levels - 1;
  // Input bits above vaBits must be zero (the G-stage spec's rule; first-stage IOVAs are the
  // lower half only in this model).
  const vaBits = cfg.vaBits;
  if (vaBits >= 32 ? iovaHi >>> (vaBits - 32) !== 0 : iovaHi !== 0 || iovaLo >>> vaBits !== 0) {
    return fault(res, TR_FAULT_ADDRESS_SIZE, top);
  }
  const gstage = cfg.tag === FMT_RISCV_G;
  const d = mem.dense;
  const root = cfg.root;
  // The current table's address as halves: PA bits 55:32 and 31:0 (the latter as an int32).
  let nextHi = Math.floor(root / 4294967296);
  let nextLo = root | 0;
  // The x4 G-stage root has 2048 entries; every other table 512.
  let idxMask = (1 << cfg.topLg2) - 1;
  for (let level = top; level >= 0; level--) {
    const shift = 12 + 9 * level;
    const idx =
      (shift >= 32 ? iovaHi >>> (shift - 32) : (iovaLo >>> shift) | (iovaHi << (32 - shift))) &
      idxMask;
    idxMask = 511;
    // Locate the entry: word index into the dense window (w >= 0), else its address (epa).
    let w: number;
    let epa = 0;
    if (s2 !== null) {
      const gpa = nextHi * 4294967296 + (nextLo >>> 0);
      const hpa = translateStage2(mem, s2, gpa, ACC_READ, res);
      if (hpa < 0) return res.status;
      epa = hpa + idx * 8;
      w = denseWordOf(epa);
    } else {
      w = denseWord(nextHi, nextLo);
      if (w >= 0) w += idx << 1;
      else epa = nextHi * 4294967296 + (nextLo >>> 0) + idx * 8;
    }
    let lo: number;
    let hi: number;
    if (w >= 0 && w + 1 < d.length) {
      lo = d[w] | 0;
      hi = d[w + 1] | 0;
      mem.reads++;
    } else {
      // Past the backed part of the window (reads as zeros) or outside it: PhysMem decides.
      if (w >= 0) epa = DENSE_BASE + w * 4;
      w = -1;
      mem.read64(epa, ent);
      lo = ent.lo | 0;
      hi = ent.hi | 0;
    }
    res.reads++;
    // Step 3: invalid, W without R, or reserved bits / encodings.
    if (
      (lo & V) === 0 ||
      (lo & (R | W)) === W ||
      (hi & RSV_HI) !== 0 ||
      (hi & PBMT_HI) === PBMT_HI ||
      ((hi & N_HI) !== 0 && level !== 0)
    ) {
      return fault(res, TR_FAULT_TRANSLATION, level);
    }
    if ((lo & (R | X)) === 0) {
      // Step 4: a pointer. None below level 0; D/A/U, PBMT and N are reserved in pointers.
      if (level === 0 || (lo & (D | A | U)) !== 0 || (hi & (PBMT_HI | N_HI)) !== 0) {
        return fault(res, TR_FAULT_TRANSLATION, level);
      }
      // PPN (entry bits 53:10) is PA bits 55:12: shift the entry left by 2 across the halves.
      nextHi = ((hi & PPN_HI_MASK) << 2) | (lo >>> 30);
      nextLo = (lo << 2) & ~0xfff;
      continue;
    }
    // Step 5: the leaf's permissions.
    const write = (access & ACC_WRITE) !== 0;
    const exec = (access & ACC_EXEC) !== 0;
    if (
      ((access & ACC_READ) !== 0 && (lo & R) === 0) ||
      (write && (lo & W) === 0) ||
      (exec && (lo & X) === 0)
    ) {
      return fault(res, TR_FAULT_PERMISSION, level);
    }
    if (gstage || (access & ACC_PRIV) === 0) {
      // G-stage accesses are all user-level; so are unprivileged first-stage requests.
      if ((lo & U) === 0) return fault(res, TR_FAULT_PERMISSION, level);
    } else if ((lo & U) !== 0 && (exec || (cfg.param & RISCV_PARAM_SUM) === 0)) {
      return fault(res, TR_FAULT_PERMISSION, level);
    }
    // Step 6: a superpage's low PPN bits must be zero. Svnapot: ppn[3:0] must be 0b1000.
    const ppnLo = lo >>> PPN_LO_SHIFT; // PPN bits 21:0
    let pageLg2 = shift;
    let base: number;
    if (level > 0) {
      const nbits = 9 * level;
      const misaligned =
        nbits >= 22
          ? ppnLo !== 0 || (hi & ((1 << (nbits - 22)) - 1)) !== 0
          : (ppnLo & ((1 << nbits) - 1)) !== 0;
      if (misaligned) return fault(res, TR_FAULT_TRANSLATION, level);
      base = (hi & PPN_HI_MASK) * TWO34 + ppnLo * 4096;
    } else if ((hi & N_HI) !== 0) {
      if ((ppnLo & 0xf) !== 8) return fault(res, TR_FAULT_TRANSLATION, level);
      pageLg2 = 16;
      base = (hi & PPN_HI_MASK) * TWO34 + (ppnLo >>> 4) * 65536;
    } else {
      base = (hi & PPN_HI_MASK) * TWO34 + ppnLo * 4096;
    }
    // Step 7: A, and D for a write, must be set, by hardware when A/D update is enabled.
    if ((lo & A) === 0 || (write && (lo & D) === 0)) {
      if ((cfg.flags & WF_HW_AD) === 0) {
        return fault(res, (lo & A) === 0 ? TR_FAULT_ACCESS : TR_FAULT_PERMISSION, level);
      }
      mem.writeEntryLo(w, epa, lo | A | (write ? D : 0));
    }
    // Step 8: pa = leaf base + the IOVA's offset inside the page.
    const offset =
      pageLg2 <= 30
        ? (iovaLo & ((1 << pageLg2) - 1)) >>> 0
        : (iovaHi & ((1 << (pageLg2 - 32)) - 1)) * TWO32 + iovaLo;
    const out = base + offset;
    const perm = (lo & R ? PERM_R : 0) | (lo & W ? PERM_W : 0) | (lo & X ? PERM_X : 0);
    res.pageLg2 = pageLg2;
    if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
    res.status = TR_OK;
    res.pa = out;
    res.perm = perm;
    return TR_OK;
  }
  // Unreachable: a level-0 entry is either a leaf or faults above.
  return fault(res, TR_FAULT_TRANSLATION, 0);
}

registerTranslate(FMT_RISCV, translateRiscv);
registerTranslate(FMT_RISCV_G, translateRiscv);

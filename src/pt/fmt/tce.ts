/**
 * PowerPC TCE tables (Translation Control Entries): the IOMMU of IBM POWER PHBs (IODA2/IODA3
 * on PowerNV) and of the PAPR/sPAPR paravirtual IOMMU (pSeries LPARs, QEMU's spapr machine).
 *
 * A DMA window is a bus-address range base .. base + windowSize - 1 with one IOMMU page size;
 * its TCE table is a flat array of big-endian 64-bit TCEs, one per IOMMU page:
 * index = (iova - base) >> pageShift. Layout and semantics:
 *
 *   bit 0 read allowed (TCE_PCI_READ 0x1), bit 1 write allowed (TCE_PCI_WRITE 0x2),
 *   the page's real address in the bits above the page offset (rpn << pageShift).
 *
 * Sources: Linux arch/powerpc/include/asm/tce.h (TCE_PCI_READ/WRITE, TCE_ENTRY_SIZE 8);
 * arch/powerpc/platforms/powernv/pci-ioda-tce.c (pnv_tce_build: proto | rpn << it_page_shift,
 * WRITE forces READ; pnv_tce_xchg decodes hpa = tce & ~(READ|WRITE)); arch/powerpc/platforms/
 * pseries/iommu.c (tce_build_pSeries: READ always, WRITE unless DMA_TO_DEVICE; the old 40-bit
 * TCE_RPN_MASK is gone, the RPN is not masked any more); arch/powerpc/kernel/iommu.c
 * (iommu_direction_to_tce_perm); drivers/vfio/vfio_iommu_spapr_tce.c (VFIO_IOMMU_MAP_DMA: no
 * READ and no WRITE flag is -EINVAL); QEMU hw/ppc/spapr_iommu.c (spapr_tce_translate_iommu:
 * pa = tce & page_mask, perm = tce & 3; R=W=0 is a fault; bits between 2 and the page shift are
 * ignored).
 *
 * Windows modelled: the default 32-bit window at bus address 0 with 4 KiB TCEs, 1 GiB as QEMU's
 * spapr PHB default (dma_win_size 0x40000000); dynamic DMA windows (DDW) at bus address 1 << 59,
 * where PowerNV IODA2 selects TVE#1 (pe->tce_bypass_base / table_group.tce64_start) and QEMU
 * places dma64_win_addr, with 64 KiB and 16 MiB TCEs. Output addresses are limited to 52 bits
 * (PhysMem); a TCE whose address has bits 63:52 set faults with ADDRESS_SIZE.
 *
 * Window sizes are constructor parameters; the registered DDW windows are kept at 2^16..2^18
 * TCEs (tables of 512 KiB..2 MiB) so the shared conformance suite stays quick.
 *
 * makeLeaf follows what Linux writes for a VFIO map: IOMMU_READ -> R, IOMMU_WRITE -> R|W
 * (both PowerNV and pSeries set READ on writable TCEs). There is no dirty or accessed state.
 * A TCE has no execute control: an execute request is checked as a read, and PERM_X is
 * reported together with PERM_R.
 *
 * Out of scope: multi-level TCE tables (PowerNV "indirect levels", VFIO sPAPR v2
 * VFIO_IOMMU_SPAPR_TCE_CREATE with levels > 1), TCE kill/invalidation, bypass windows.
 *
 * WalkConfig use: levels 1, vaBits = log2(window size), granuleLg2 = pageShift (also in
 * param), topLg2 = vaBits - pageShift (index bits), baseHi/baseLo = window base.
 */
import { DENSE_BASE, denseWord, denseWordOf, type PhysMem } from "../../mem/phys.ts";
import { U64 } from "../../mem/u64.ts";
import {
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  type PtEntryKind,
  type PtFormat,
} from "../format.ts";
import {
  ACC_EXEC,
  ACC_READ,
  ACC_WRITE,
  FMT_TCE,
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
} from "../translate.ts";

export const TCE_PCI_READ = 0x1;
export const TCE_PCI_WRITE = 0x2;
const ADDR_HI_MASK = 0xfffff; // address bits 51:32
const WIDE_HI_MASK = 0xfff00000; // address bits 63:52: beyond PhysMem
const TWO32 = 4294967296;

/** The bus offset of dynamic DMA windows (PowerNV TVE#1, QEMU spapr dma64_win_addr). */
export const TCE_DDW_BASE = 1n << 59n;

const SIZE_NAMES: Record<number, string> = { 12: "4k", 16: "64k", 24: "16m" };

function sizeName(lg2: number): string {
  if (lg2 >= 40) return `${2 ** (lg2 - 40)}t`;
  if (lg2 >= 30) return `${2 ** (lg2 - 30)}g`;
  return `${2 ** (lg2 - 20)}m`;
}

export class TceFormat implements PtFormat {
  readonly name: string;
  readonly tag = FMT_TCE;
  readonly source =
    "linux arch/powerpc/include/asm/tce.h, platforms/powernv/pci-ioda-tce.c, " +
    "platforms/pseries/iommu.c; qemu hw/ppc/spapr_iommu.c";
  readonly levels = 1;
  readonly vaBits: number;
  readonly iovaBase: bigint;
  readonly oaBits = 52;
  readonly bigEndian = true;
  readonly unmapPolicy = "refuse" as const; // one page size: never partly unmapped
  readonly hasDirty = false;
  /** log2 of the IOMMU page size of this window. */
  readonly pageShift: number;

  /**
   * A window of 2^windowLg2 bytes at bus address `base` with 2^pageShift-byte TCEs.
   * `label` names the base in the configuration name ("0", "ddw").
   */
  constructor(pageShift: number, base: bigint, windowLg2: number, label: string) {
    if (SIZE_NAMES[pageShift] === undefined)
      throw new RangeError(`no TCE page size 2^${pageShift}`);
    if (windowLg2 <= pageShift || windowLg2 - pageShift > 28) {
      throw new RangeError(`TCE window 2^${windowLg2} does not fit 2^${pageShift} pages`);
    }
    if (base % (1n << BigInt(windowLg2)) !== 0n) throw new RangeError("TCE window base unaligned");
    this.pageShift = pageShift;
    this.iovaBase = base;
    this.vaBits = windowLg2;
    this.name = `tce-${SIZE_NAMES[pageShift]}-${label}+${sizeName(windowLg2)}`;
  }

  itemLg2(_level: number): number {
    return this.pageShift;
  }
  tableLg2(_level: number): number {
    return this.vaBits - this.pageShift;
  }
  leafSizesLg2(_level: number): readonly number[] {
    return [this.pageShift];
  }

  entryKind(e: U64, _level: number): PtEntryKind {
    return (e.lo & (TCE_PCI_READ | TCE_PCI_WRITE)) === 0 ? PT_ENTRY_EMPTY : PT_ENTRY_LEAF;
  }
  tablePa(_e: U64, _level: number): number {
    throw new Error("a TCE table has one level: no entry points to a table");
  }
  leafOa(e: U64, _level: number): number {
    // Bits below the page size (including R/W) are not address bits.
    const lo = (e.lo & ~((1 << this.pageShift) - 1)) >>> 0;
    return (e.hi & ADDR_HI_MASK) * TWO32 + lo;
  }
  leafSizeLg2(_e: U64, _level: number): number {
    return this.pageShift;
  }
  leafProt(e: U64, _level: number): number {
    return (e.lo & TCE_PCI_READ ? IOMMU_READ : 0) | (e.lo & TCE_PCI_WRITE ? IOMMU_WRITE : 0);
  }

  makeLeaf(
    oa: number,
    sizeLg2: number,
    _level: number,
    _slot: number,
    prot: number,
    out: U64,
  ): void {
    if (sizeLg2 !== this.pageShift) {
      throw new RangeError(`TCE window ${this.name} has no 2^${sizeLg2}-byte pages`);
    }
    let perm: number;
    if (prot & IOMMU_WRITE) perm = TCE_PCI_READ | TCE_PCI_WRITE;
    else if (prot & IOMMU_READ) perm = TCE_PCI_READ;
    else throw new RangeError("TCE needs IOMMU_READ or IOMMU_WRITE"); // VFIO: -EINVAL
    out.lo = ((oa >>> 0) | perm) >>> 0;
    out.hi = Math.floor(oa / TWO32) & ADDR_HI_MASK;
  }
  makeTable(_pa: number, _level: number, _out: U64): void {
    throw new Error("a TCE table has one level: no table entries");
  }

  isDirty(_e: U64, _level: number): boolean {
    return false;
  }
  clearDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = e.lo;
  }
  setDirty(e: U64, _level: number, out: U64): void {
    out.hi = e.hi;
    out.lo = e.lo;
  }

  describe(e: U64, level: number): string {
    if (this.entryKind(e, level) === PT_ENTRY_EMPTY) return "not present (R=W=0)";
    const flags = [e.lo & TCE_PCI_READ ? "R" : "", e.lo & TCE_PCI_WRITE ? "W" : ""].filter(
      (s) => s !== "",
    );
    const wide = (e.hi & WIDE_HI_MASK) !== 0 ? " (address above 2^52)" : "";
    const size = SIZE_NAMES[this.pageShift]!.toUpperCase();
    return `${size} page -> 0x${this.leafOa(e, level).toString(16)}${wide} [${flags.join(" ")}]`;
  }

  walkConfig(rootPa: number): WalkConfig {
    const cfg = new WalkConfig(FMT_TCE, rootPa, 1, this.vaBits, this.pageShift);
    cfg.topLg2 = this.vaBits - this.pageShift;
    cfg.strideLg2 = cfg.topLg2;
    cfg.param = this.pageShift;
    cfg.baseHi = Number(this.iovaBase >> 32n);
    cfg.baseLo = Number(this.iovaBase & 0xffffffffn);
    return cfg;
  }
}

/** Default 32-bit window: bus 0 .. 1 GiB - 1, 4 KiB TCEs (2^18 entries, 2 MiB table). */
export const tce4kDefault = new TceFormat(12, 0n, 30, "0");
/** DDW with 64 KiB TCEs over 16 GiB (2^18 entries, 2 MiB table). */
export const tce64kDdw = new TceFormat(16, TCE_DDW_BASE, 34, "ddw");
/** DDW with 16 MiB TCEs over 1 TiB (2^16 entries, 512 KiB table). */
export const tce16mDdw = new TceFormat(24, TCE_DDW_BASE, 40, "ddw");
export const tceConfigs: readonly PtFormat[] = [tce4kDefault, tce64kDdw, tce16mDdw];

const ent = new U64();

function fault(res: TranslateResult, status: number): number {
  res.status = status;
  res.stage = 1;
  res.level = 0;
  return status;
}

/** Byte-swaps a 32-bit word; the result is a signed int32 (no float values). */
function bswap32(v: number): number {
  return (v << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
}

/**
 * Data-plane lookup in a TCE window. cfg: root (table address), vaBits (window size), granuleLg2
 * (page shift), baseHi/baseLo (window base). IOVAs outside the window fault with ADDRESS_SIZE;
 * a TCE with neither R nor W faults with TRANSLATION; a read or execute needs R, a write needs W.
 * Nested: the TCE's own address (table + 8 * index) is translated through stage 2, since a TCE
 * table can span many stage-2 pages.
 *
 * Speed: a table in the dense window is read straight from `mem.dense` by word index (int32
 * arithmetic only; the big-endian TCE is byte-swapped here: the word at the lower address holds
 * bits 63:32); a table elsewhere goes through `mem.read64be`. See src/mem/phys.ts denseWord.
 */
export function translateTce(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
): number {
  // offset = iova - base, on halves: offLo is its low 32 bits as an int32, offHi is exact.
  const baseLo = cfg.baseLo;
  const offLo = (iovaLo - baseLo) | 0;
  const offHi = iovaHi - cfg.baseHi - (iovaLo >>> 0 < baseLo >>> 0 ? 1 : 0);
  const vaBits = cfg.vaBits;
  if (
    offHi < 0 ||
    (vaBits >= 32 ? offHi >>> (vaBits - 32) !== 0 : offHi !== 0 || offLo >>> vaBits !== 0)
  ) {
    return fault(res, TR_FAULT_ADDRESS_SIZE);
  }
  const shift = cfg.granuleLg2;
  // The index has vaBits - shift <= 28 bits, so it is a non-negative int32.
  const idx = (offHi << (32 - shift)) | (offLo >>> shift);
  // Locate the TCE: word index into the dense window (w >= 0), else its address (epa).
  // Only an 8-byte-aligned TCE takes the word path (read64be handles a misaligned one).
  let w = -1;
  let epa = 0;
  if (s2 !== null) {
    epa = translateStage2(mem, s2, cfg.root + idx * 8, ACC_READ, res);
    if (epa < 0) return res.status;
    if ((epa & 7) === 0) w = denseWordOf(epa);
  } else {
    const root = cfg.root;
    const rootLo = root | 0;
    if (root < TWO32 && (rootLo & 7) === 0) w = denseWord(0, rootLo);
    // idx * 2 < 2^29: the sum stays an int32; past the window it fails the length check below.
    if (w >= 0) w += idx * 2;
    else epa = root + idx * 8;
  }
  const d = mem.dense;
  let lo: number;
  let hi: number;
  if (w >= 0 && w + 1 < d.length) {
    hi = bswap32(d[w]);
    lo = bswap32(d[w + 1]);
    mem.reads++;
  } else {
    if (w >= 0) epa = DENSE_BASE + w * 4;
    mem.read64be(epa, ent);
    lo = ent.lo | 0;
    hi = ent.hi | 0;
  }
  res.reads++;
  const allow = lo & (TCE_PCI_READ | TCE_PCI_WRITE);
  if (allow === 0) return fault(res, TR_FAULT_TRANSLATION);
  const need =
    ((access & (ACC_READ | ACC_EXEC)) !== 0 ? TCE_PCI_READ : 0) |
    ((access & ACC_WRITE) !== 0 ? TCE_PCI_WRITE : 0);
  if ((allow & need) !== need) return fault(res, TR_FAULT_PERMISSION);
  if ((hi & WIDE_HI_MASK) !== 0) return fault(res, TR_FAULT_ADDRESS_SIZE);
  const offMask = (1 << shift) - 1; // shift <= 24; no 2 ** here, Math.pow is slow
  const out = (hi & ADDR_HI_MASK) * TWO32 + (((lo & ~offMask) | (offLo & offMask)) >>> 0);
  const perm =
    ((allow & TCE_PCI_READ) !== 0 ? PERM_R | PERM_X : 0) |
    ((allow & TCE_PCI_WRITE) !== 0 ? PERM_W : 0);
  res.pageLg2 = shift;
  if (s2 !== null) return finishNested(mem, s2, out, access, perm, res);
  res.status = TR_OK;
  res.pa = out;
  res.perm = perm;
  return TR_OK;
}

registerTranslate(FMT_TCE, translateTce);

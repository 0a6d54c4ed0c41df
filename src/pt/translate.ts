/**
 * Data-plane translation: the shared types every format's `translate` function uses, and the
 * stage-2 hook that makes any format usable as either stage of a nested walk.
 *
 * Rules (docs/ARCHITECTURE.md 1-2): a translate function is one monomorphic function per format,
 * takes the IOVA as (hi, lo) u32 halves, allocates nothing, never uses bigint, and reports
 * through a caller-owned TranslateResult. All formats share the one `WalkConfig` class so that
 * every property load on it sees a single hidden class.
 *
 * Nested translation: when a stage-1 translate is given a stage-2 `WalkConfig`, every stage-1
 * table address (including the root) and the final stage-1 output address are guest-physical
 * and go through `translateStage2` before use; reads of both stages are summed in `res.reads`.
 * With n stage-1 and m stage-2 levels and no caches, a walk reads (n+1)(m+1)-1 entries.
 */
import type { PhysMem } from "../mem/phys.ts";

// ---- format tags: the index of each format's translate function in TRANSLATORS -------------
export const FMT_AMDV1 = 1;
export const FMT_X86_64 = 2;
export const FMT_VTDSS = 3;
export const FMT_ARMV8_S1 = 4;
export const FMT_ARMV8_S2 = 5;
export const FMT_RISCV = 6;
export const FMT_RISCV_G = 7;
export const FMT_TCE = 8;

// ---- access request flags ----------------------------------------------------------------
export const ACC_READ = 1;
export const ACC_WRITE = 2;
export const ACC_EXEC = 4;
/** The request is privileged (supervisor / EL1); without it, user/unprivileged checks apply. */
export const ACC_PRIV = 8;

// ---- effective permission bits of a successful translation -------------------------------
export const PERM_R = 1;
export const PERM_W = 2;
export const PERM_X = 4;

// ---- result status ------------------------------------------------------------------------
export const TR_OK = 0;
/** No valid entry (not present / invalid descriptor / reserved encoding). */
export const TR_FAULT_TRANSLATION = 1;
/** A valid mapping does not allow the access. */
export const TR_FAULT_PERMISSION = 2;
/** The input address is outside the format's range, or an output address is too wide. */
export const TR_FAULT_ADDRESS_SIZE = 3;
/** ARM: Access Flag is 0 and hardware AF update is off. */
export const TR_FAULT_ACCESS = 4;

/** WalkConfig.flags bits. */
/** Hardware updates Accessed/Dirty state on a walk (x86 A/D, VT-d SSADE, ARM HA+HD, RISC-V ADUE). */
export const WF_HW_AD = 1 << 0;
/** ARM: hardware Access-Flag update only (HA without HD). */
export const WF_HW_A = 1 << 1;

/**
 * Everything a translate function needs about one table tree. One class for all formats: each
 * format reads only the fields it documents and leaves the rest at their defaults.
 */
export class WalkConfig {
  // Every field starts as a number (never undefined) so V8 keeps one stable, unboxed shape.
  /** FMT_* tag of the format that reads this tree. */
  tag = 0;
  /** Address of the top table (a guest-physical address when used as a nested stage 1). */
  root = 0;
  /** Levels walked; the top table is level `levels - 1`. */
  levels = 0;
  /** Input address width (IOVAs at or above iovaBase + 2^vaBits fault with ADDRESS_SIZE). */
  vaBits = 0;
  /** log2 of the smallest page (the granule): 12 for 4 KiB, 11 for the mock's 2 KiB, ... */
  granuleLg2 = 0;
  /** Index bits per table below the top. */
  strideLg2 = 9;
  /** Index bits of the top table (differs for concatenated roots, x4 G-stage roots, TCE). */
  topLg2 = 9;
  /** WF_* flags. */
  flags = 0;
  /** First valid IOVA, as halves (PPC TCE window offset; 0 elsewhere). */
  baseHi = 0;
  baseLo = 0;
  /** Format-specific small integer (e.g. ARM granule kind, TCE page shift); documented per format. */
  param = 0;

  constructor(tag: number, root: number, levels: number, vaBits: number, granuleLg2: number) {
    this.tag = tag;
    this.root = root;
    this.levels = levels;
    this.vaBits = vaBits;
    this.granuleLg2 = granuleLg2;
  }
}

/** The outcome of one translation; callers keep one and reuse it for every call. */
export class TranslateResult {
  status = TR_OK;
  /** Output physical address of the translated byte (valid when status is TR_OK). */
  pa = 0;
  /** log2 size of the page that produced `pa` (the final stage's page in a nested walk). */
  pageLg2 = 0;
  /** PERM_* bits the mapping grants (the intersection of both stages when nested). */
  perm = 0;
  /** On a fault: 1 or 2, the stage that failed (1 when not nested). */
  stage = 0;
  /** On a fault: the level whose entry faulted (or the top level for ADDRESS_SIZE). */
  level = 0;
  /** On a stage-2 fault: the guest-physical address stage 2 failed to translate. */
  faultGpa = 0;
  /** Table entries read by this translation (both stages). */
  reads = 0;

  reset(): void {
    this.status = TR_OK;
    this.pa = 0;
    this.pageLg2 = 0;
    this.perm = 0;
    this.stage = 0;
    this.level = 0;
    this.faultGpa = 0;
    this.reads = 0;
  }
}

/**
 * A format's data-plane entry point. `s2` is null for a single-stage walk; otherwise the tree
 * `cfg` describes is a stage-1 tree whose addresses are guest-physical under `s2`.
 * Returns `res.status`. Implementations must set every field of `res` they promise above and
 * must add their entry reads to `res.reads` (callers zero it first via reset()).
 */
export type TranslateFn = (
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null,
) => number;

const TRANSLATORS: (TranslateFn | undefined)[] = [];

/** Each format module registers its translate function under its tag when it loads. */
export function registerTranslate(tag: number, fn: TranslateFn): void {
  TRANSLATORS[tag] = fn;
}

/** Translates with whatever format `cfg.tag` names (one indexed call; the callee is monomorphic). */
export function translate(
  mem: PhysMem,
  cfg: WalkConfig,
  iovaHi: number,
  iovaLo: number,
  access: number,
  res: TranslateResult,
  s2: WalkConfig | null = null,
): number {
  const fn = TRANSLATORS[cfg.tag];
  if (fn === undefined)
    throw new Error(`no translate function registered for format tag ${cfg.tag}`);
  return fn(mem, cfg, iovaHi, iovaLo, access, res, s2);
}

const s2res = new TranslateResult();

/**
 * Translates guest-physical `gpa` through stage 2 for a stage-1 walk in progress.
 * On success returns the host-physical address (>= 0) and adds the reads to `res.reads`.
 * On failure fills `res` with the stage-2 fault (stage = 2, faultGpa = gpa) and returns -1.
 * `access` is ACC_READ for table fetches and the DMA's own access for the final output.
 * The permission and page size of the stage-2 page are kept for finishNested().
 */
export function translateStage2(
  mem: PhysMem,
  s2: WalkConfig,
  gpa: number,
  access: number,
  res: TranslateResult,
): number {
  // Only `reads` needs zeroing: a translate function sets every other field it reports.
  s2res.reads = 0;
  const fn = TRANSLATORS[s2.tag];
  if (fn === undefined)
    throw new Error(`no translate function registered for format tag ${s2.tag}`);
  const gpaHi = gpa < 4294967296 ? 0 : Math.floor(gpa / 4294967296); // skip the division when we can
  const st = fn(mem, s2, gpaHi, gpa >>> 0, access, s2res, null);
  res.reads += s2res.reads;
  if (st !== TR_OK) {
    res.status = st;
    res.stage = 2;
    res.level = s2res.level;
    res.faultGpa = gpa;
    return -1;
  }
  s2LastPerm = s2res.perm;
  s2LastPageLg2 = s2res.pageLg2;
  return s2res.pa;
}

/** PERM_* and log2 page size of the page the last successful translateStage2 call went through. */
let s2LastPerm = 0;
let s2LastPageLg2 = 0;

/**
 * Finishes a nested walk: stage 1 produced guest-physical `gpa` with permissions `perm1`
 * (already checked against `access`) and set `res.pageLg2` to its page size; translate the GPA
 * through stage 2 and fill `res` (the page size becomes the smaller of the two stages').
 */
export function finishNested(
  mem: PhysMem,
  s2: WalkConfig,
  gpa: number,
  access: number,
  perm1: number,
  res: TranslateResult,
): number {
  const hpa = translateStage2(mem, s2, gpa, access, res);
  if (hpa < 0) return res.status;
  res.status = TR_OK;
  res.pa = hpa;
  res.perm = perm1 & s2LastPerm;
  res.pageLg2 = Math.min(res.pageLg2, s2LastPageLg2);
  return TR_OK;
}

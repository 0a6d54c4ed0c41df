/**
 * Building a two-stage (nested) table pair the way a VMM sets one up: a stage-2 table maps guest
 * physical memory to host physical memory, and a stage-1 table lives in guest memory, its table
 * pointers guest-physical.
 *
 * To keep one PhysMem and one allocator, the stage-2 table here maps the guest's table pages and
 * its RAM at GPA == HPA (an identity stage 2 over those ranges); the walk still performs every
 * stage-2 lookup, so read counts and faults are exactly those of a real nested walk.
 */
import type { PageAllocator } from "../mem/alloc.ts";
import { IOMMU_READ, IOMMU_WRITE, type PtFormat } from "./format.ts";
import type { WalkConfig } from "./translate.ts";
import { PageTable, type PageTableOptions } from "./walker.ts";

export interface NestedPair {
  s1: PageTable;
  s2: PageTable;
  s1cfg: WalkConfig;
  s2cfg: WalkConfig;
}

export interface NestedPairOptions {
  /** Page sizes for stage 1 and stage 2 (default: every size the format has). */
  s1?: PageTableOptions;
  s2?: PageTableOptions;
}

/**
 * Stage 1 maps IOVA [iova, iova + len) to guest RAM at `gpa`; stage 2 maps that RAM and every
 * stage-1 table page at GPA == HPA. Call after all stage-1 mappings exist (stage-1 tables
 * allocated later are not yet mapped in stage 2: use `mapTablesInStage2` again).
 */
export function buildNestedPair(
  alloc: PageAllocator,
  s1fmt: PtFormat,
  s2fmt: PtFormat,
  iova: bigint,
  gpa: number,
  len: bigint,
  opts: NestedPairOptions = {},
): NestedPair {
  const s1 = new PageTable(s1fmt, alloc, opts.s1);
  const s2 = new PageTable(s2fmt, alloc, opts.s2);
  s1.map(iova, gpa, len, IOMMU_READ | IOMMU_WRITE);
  s2.map(BigInt(gpa), gpa, len, IOMMU_READ | IOMMU_WRITE);
  mapTablesInStage2(s1, s2);
  return { s1, s2, s1cfg: s1.walkConfig(), s2cfg: s2.walkConfig() };
}

/** Maps every stage-1 table page that stage 2 does not map yet, at GPA == HPA. */
export function mapTablesInStage2(s1: PageTable, s2: PageTable): void {
  for (const t of s1.tablePages()) {
    const page = 2 ** s2.minPageLg2;
    for (let p = Math.floor(t.pa / page) * page; p < t.pa + 2 ** t.sizeLg2; p += page) {
      if (s2.iovaToPhys(BigInt(p)) === undefined) s2.map(BigInt(p), p, BigInt(page), IOMMU_READ);
    }
  }
}

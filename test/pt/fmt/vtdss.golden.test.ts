/**
 * Golden tests for the VT-d second-stage format: tables are written by hand with raw constants
 * taken from the bit positions of Intel VT-d spec §9.8 (never through makeLeaf / makeTable),
 * then decoded and walked.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../../src/mem/alloc.ts";
import { PhysMem } from "../../../src/mem/phys.ts";
import { U64 } from "../../../src/mem/u64.ts";
import "../../../src/pt/fmt/x86_64.ts";
import {
  translateVtdss,
  VtdssFormat,
  vtdssFormat3,
  vtdssFormat4,
  vtdssFormat5,
} from "../../../src/pt/fmt/vtdss.ts";
import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
} from "../../../src/pt/format.ts";
import {
  ACC_EXEC,
  ACC_READ,
  ACC_WRITE,
  FMT_VTDSS,
  FMT_X86_64,
  PERM_R,
  PERM_W,
  PERM_X,
  TR_FAULT_ADDRESS_SIZE,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  TranslateResult,
  translate,
  WalkConfig,
  WF_HW_AD,
} from "../../../src/pt/translate.ts";
import { PageTable } from "../../../src/pt/walker.ts";

// Second-stage entry bits, VT-d spec §9.8.
const R = 0x1; // bit 0
const W = 0x2; // bit 1
const X = 0x4; // bit 2
const PS = 0x80; // bit 7
const A = 0x100; // bit 8
const D = 0x200; // bit 9
const SNP = 0x800; // bit 11
const BIT62_HI = 0x40000000; // bit 62, in the high word

// Hand-placed tables (below the 1 GiB where PageAllocator starts).
const T4 = 0x10_0000; // top table of a 4-level tree (SS-PML4)
const T3 = 0x10_1000; // SS-PDPT
const T2 = 0x10_2000; // SS-PD
const T1 = 0x10_3000; // SS-PT

function put(mem: PhysMem, table: number, idx: number, hi: number, lo: number): void {
  mem.write64(table + idx * 8, hi, lo);
}
function raw(mem: PhysMem, table: number, idx: number): U64 {
  return mem.read64(table + idx * 8, new U64());
}

/** IOVA from per-level indices (top first) and a page offset. */
function iovaOf(indices: number[], off: number): bigint {
  let v = 0n;
  for (const i of indices) v = (v << 9n) | BigInt(i);
  return (v << 12n) | BigInt(off);
}

const res = new TranslateResult();

function walk(
  mem: PhysMem,
  cfg: WalkConfig,
  iova: bigint,
  access: number,
  s2: WalkConfig | null = null,
): TranslateResult {
  res.reset();
  const hi = Number(iova >> 32n);
  const lo = Number(iova & 0xffffffffn);
  if (s2 === null) translateVtdss(mem, cfg, hi, lo, access, res, null);
  else translate(mem, cfg, hi, lo, access, res, s2);
  return res;
}

function cfg4(root = T4, flags = 0): WalkConfig {
  const c = new WalkConfig(FMT_VTDSS, root, 4, 48, 12);
  c.flags = flags;
  return c;
}

// One 4-level path: indices 0x1a3 / 0x0c5 / 0x17f / 0x0a9, offset 0xabc.
const IDX = [0x1a3, 0x0c5, 0x17f, 0x0a9];
const IOVA_4K = iovaOf(IDX, 0xabc);
const PAGE_HI = 0xa; // leaf address 0x0000_000a_bcde_f000
const PAGE_LO = 0xbcdef000;

/** Builds the 4-level path T4 -> T3 -> T2 -> T1 -> 4K page with the given leaf and table bits. */
function build4k(mem: PhysMem, leafBits: number, tableBits = R | W): void {
  put(mem, T4, IDX[0], 0, T3 | tableBits);
  put(mem, T3, IDX[1], 0, T2 | tableBits);
  put(mem, T2, IDX[2], 0, T1 | tableBits);
  put(mem, T1, IDX[3], PAGE_HI, (PAGE_LO | leafBits) >>> 0);
}

describe("vtdss golden: entry decode", () => {
  const f = vtdssFormat4;
  it("classifies entries by R/W (no present bit) and PS", () => {
    assert.equal(f.entryKind(new U64(0, 0), 0), PT_ENTRY_EMPTY);
    assert.equal(f.entryKind(new U64(0, 0x1000 | X), 0), PT_ENTRY_EMPTY, "X alone is not present");
    assert.equal(f.entryKind(new U64(0, 0x1000 | A | D | SNP), 1), PT_ENTRY_EMPTY);
    assert.equal(f.entryKind(new U64(0, 0x1000 | R), 0), PT_ENTRY_LEAF);
    assert.equal(f.entryKind(new U64(0, 0x1000 | W), 0), PT_ENTRY_LEAF, "W alone is present");
    assert.equal(f.entryKind(new U64(0, 0x1000 | R), 1), PT_ENTRY_TABLE);
    assert.equal(f.entryKind(new U64(0, 0x200000 | R | PS), 1), PT_ENTRY_LEAF);
    assert.equal(f.entryKind(new U64(0, 0x40000000 | R | PS), 2), PT_ENTRY_LEAF);
    assert.equal(f.entryKind(new U64(0, 0x1000 | R | W), 3), PT_ENTRY_TABLE);
    // PS is not a leaf marker in a SS-PML4E (Linux's view; the walk faults on it, see below).
    assert.equal(f.entryKind(new U64(0, 0x1000 | R | PS), 3), PT_ENTRY_TABLE);
  });

  it("decodes addresses, sizes and protections", () => {
    // Table pointer with ignored high bits 63 and 61:52 set.
    const tbl = new U64(0x8010_0000 | 0x000f_ffff, 0xfffff000 | R | W);
    assert.equal(f.tablePa(tbl, 3), 0xf_ffff_ffff_f000);
    const leaf4k = new U64(PAGE_HI, PAGE_LO | R | W | A | D | SNP);
    assert.equal(f.leafOa(leaf4k, 0), 0xa_bcde_f000);
    assert.equal(f.leafSizeLg2(leaf4k, 0), 12);
    assert.equal(f.leafProt(leaf4k, 0), IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    const leaf2m = new U64(0x3, 0x40200000 | PS | R);
    assert.equal(f.leafOa(leaf2m, 1), 0x3_4020_0000);
    assert.equal(f.leafSizeLg2(leaf2m, 1), 21);
    assert.equal(f.leafProt(leaf2m, 1), IOMMU_READ);
    const leaf1g = new U64(0x1, 0x80000000 | PS | W);
    assert.equal(f.leafOa(leaf1g, 2), 0x1_8000_0000);
    assert.equal(f.leafSizeLg2(leaf1g, 2), 30);
    assert.equal(f.leafProt(leaf1g, 2), IOMMU_WRITE);
  });

  it("describes entries for traces", () => {
    assert.equal(f.describe(new U64(0, 0), 0), "not present (R=W=0)");
    assert.equal(f.describe(new U64(0, T3 | R | W), 3), "table -> 0x101000 [R W]");
    assert.equal(
      f.describe(new U64(PAGE_HI, PAGE_LO | R | A | D | SNP), 0),
      "4K page -> 0xabcdef000 [R A D SNP]",
    );
    assert.equal(
      f.describe(new U64(0, 0x40200000 | PS | R | W | (6 << 3) | 0x40), 1),
      "2M page -> 0x40200000 [R W PS IPAT EMT=6]",
    );
  });

  it("reads and writes the D bit (bit 9) only", () => {
    const e = new U64(0x5, 0x1000 | R | W | A);
    const out = new U64();
    assert.equal(f.isDirty(e, 0), false);
    f.setDirty(e, 0, out);
    assert.equal(out.hi, 0x5);
    assert.equal(out.lo, 0x1000 | R | W | A | D);
    assert.equal(f.isDirty(out, 0), true);
    const back = new U64();
    f.clearDirty(out, 0, back);
    assert.equal(back.hi, 0x5);
    assert.equal(back.lo, 0x1000 | R | W | A);
    assert.equal(f.hasDirty, true);
  });
});

describe("vtdss golden: translation", () => {
  it("walks a 4-level tree to a 4K page", () => {
    const mem = new PhysMem();
    build4k(mem, R | W);
    mem.resetCounters();
    const r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xa_bcde_fabc);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.perm, PERM_R | PERM_W | PERM_X);
    assert.equal(r.reads, 4);
    assert.equal(mem.reads, 4);
    assert.equal(mem.writes, 0, "no A/D updates unless enabled");
    assert.equal(walk(mem, cfg4(), IOVA_4K, ACC_WRITE).status, TR_OK);
  });

  it("walks to a 2M page (PS in a SS-PDE) and a 1G page (PS in a SS-PDPTE)", () => {
    const mem = new PhysMem();
    put(mem, T4, 1, 0, T3 | R | W);
    put(mem, T3, 2, 0, T2 | R | W);
    put(mem, T2, 3, 0x1, 0x40200000 | PS | R); // 2M at 0x1_4020_0000, read-only
    put(mem, T3, 4, 0x2, 0xc0000000 | PS | R | W); // 1G at 0x2_c000_0000
    const iova2m = iovaOf([1, 2, 3, 0], 0x345) | 0x1_2000n;
    let r = walk(mem, cfg4(), iova2m, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x1_4021_2345);
    assert.equal(r.pageLg2, 21);
    assert.equal(r.perm, PERM_R | PERM_X);
    assert.equal(r.reads, 3);
    r = walk(mem, cfg4(), iova2m, ACC_WRITE);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.stage, 1);
    assert.equal(r.level, 1);
    const iova1g = iovaOf([1, 4, 0, 0], 0) | 0x2bcd_ef12n;
    r = walk(mem, cfg4(), iova1g, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x2_ebcd_ef12);
    assert.equal(r.pageLg2, 30);
    assert.equal(r.reads, 2);
  });

  it("3-level tree (AW 39): the top table is a SS-PDPT and may hold 1G leaves", () => {
    const mem = new PhysMem();
    const cfg = vtdssFormat3.walkConfig(T3);
    assert.equal(cfg.levels, 3);
    assert.equal(cfg.vaBits, 39);
    put(mem, T3, 0x1ff, 0x7, 0x40000000 | PS | R | W);
    put(mem, T3, 5, 0, T2 | R | W);
    put(mem, T2, 6, 0, T1 | R | W);
    put(mem, T1, 7, 0, 0x7777000 | R);
    let r = walk(mem, cfg, (0x1ffn << 30n) | 0x3fff_fff0n, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x7_7fff_fff0);
    assert.equal(r.pageLg2, 30);
    r = walk(mem, cfg, iovaOf([5, 6, 7], 0x10), ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x7777010);
    assert.equal(r.reads, 3);
    r = walk(mem, cfg, 1n << 39n, ACC_READ);
    assert.equal(r.status, TR_FAULT_ADDRESS_SIZE);
    assert.equal(r.level, 2);
    assert.equal(r.reads, 0);
  });

  it("5-level tree (AW 57) indexes the SS-PML5 with IOVA bits 56:48", () => {
    const mem = new PhysMem();
    const T5 = 0x20_0000;
    const cfg = vtdssFormat5.walkConfig(T5);
    const iova = iovaOf([0x155, 1, 2, 3, 4], 0x321);
    assert.equal(iova >> 48n, 0x155n);
    put(mem, T5, 0x155, 0, T4 | R | W);
    put(mem, T4, 1, 0, T3 | R | W);
    put(mem, T3, 2, 0, T2 | R | W);
    put(mem, T2, 3, 0, T1 | R | W);
    put(mem, T1, 4, 0, 0x5555000 | R | W);
    const r = walk(mem, cfg, iova, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x5555321);
    assert.equal(r.reads, 5);
    const out = walk(mem, cfg, 1n << 57n, ACC_READ);
    assert.equal(out.status, TR_FAULT_ADDRESS_SIZE);
    assert.equal(out.level, 4);
  });

  it("faults on not-present entries at the level that holds them", () => {
    const mem = new PhysMem();
    let r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 1);
    assert.equal(r.level, 3);
    assert.equal(r.reads, 1);
    put(mem, T4, IDX[0], 0, T3 | R | W);
    put(mem, T3, IDX[1], 0, T2 | X | A | D); // neither R nor W: not present
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 2);
    build4k(mem, X); // execute-only leaf
    r = walk(mem, cfg4(), IOVA_4K, ACC_EXEC);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 0);
    assert.equal(r.reads, 4);
  });

  it("ANDs R and W over every level and faults where access is first denied", () => {
    const mem = new PhysMem();
    build4k(mem, R | W);
    put(mem, T3, IDX[1], 0, T2 | R); // the SS-PDPTE denies writes
    let r = walk(mem, cfg4(), IOVA_4K, ACC_WRITE);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.level, 2);
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.perm, PERM_R | PERM_X);

    build4k(mem, W); // write-only leaf under R|W tables
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.level, 0);
    assert.equal(walk(mem, cfg4(), IOVA_4K, ACC_EXEC).status, TR_FAULT_PERMISSION);
    r = walk(mem, cfg4(), IOVA_4K, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.perm, PERM_W);
    assert.equal(walk(mem, cfg4(), IOVA_4K, ACC_READ | ACC_WRITE).status, TR_FAULT_PERMISSION);
  });

  it("faults with ADDRESS_SIZE above the address width without reading memory", () => {
    const mem = new PhysMem();
    build4k(mem, R | W);
    const r = walk(mem, cfg4(), (1n << 48n) | IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_ADDRESS_SIZE);
    assert.equal(r.stage, 1);
    assert.equal(r.level, 3);
    assert.equal(r.reads, 0);
  });

  it("treats reserved encodings as TRANSLATION faults", () => {
    const mem = new PhysMem();
    build4k(mem, R | W);
    put(mem, T4, IDX[0], 0, T3 | R | W | PS); // PS is reserved in a SS-PML4E
    let r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 3);

    build4k(mem, R | W);
    put(mem, T2, IDX[2], 0, T1 | R | W | SNP); // SNP is reserved in a non-leaf entry
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 1);

    build4k(mem, R | W);
    put(mem, T1, IDX[3], BIT62_HI, PAGE_LO | R | W); // bit 62 is reserved
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 0);

    build4k(mem, R | W);
    put(mem, T2, IDX[2], 0, 0x40201000 | PS | R | W); // 2M page with address bit 12 set
    r = walk(mem, cfg4(), IOVA_4K, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 1);

    build4k(mem, R | W | SNP); // SNP in a leaf is fine
    assert.equal(walk(mem, cfg4(), IOVA_4K, ACC_READ).status, TR_OK);
  });
});

describe("vtdss golden: accessed/dirty updates (SSADE)", () => {
  it("sets A on every entry used, and D on the leaf for a write", () => {
    const mem = new PhysMem();
    build4k(mem, R | W);
    const cfg = cfg4(T4, WF_HW_AD);
    assert.equal(walk(mem, cfg, IOVA_4K, ACC_READ).status, TR_OK);
    assert.equal(raw(mem, T4, IDX[0]).lo, T3 | R | W | A);
    assert.equal(raw(mem, T3, IDX[1]).lo, T2 | R | W | A);
    assert.equal(raw(mem, T2, IDX[2]).lo, T1 | R | W | A);
    const leaf = raw(mem, T1, IDX[3]);
    assert.equal(leaf.lo, (PAGE_LO | R | W | A) >>> 0);
    assert.equal(leaf.hi, PAGE_HI);
    // A second read changes nothing and writes nothing.
    mem.resetCounters();
    walk(mem, cfg, IOVA_4K, ACC_READ);
    assert.equal(mem.writes, 0);
    assert.equal(walk(mem, cfg, IOVA_4K, ACC_WRITE).status, TR_OK);
    assert.equal(raw(mem, T1, IDX[3]).lo, (PAGE_LO | R | W | A | D) >>> 0);
    assert.equal(raw(mem, T2, IDX[2]).lo & D, 0, "D is set in leaves only");
  });

  it("does not mark a leaf whose permission check failed", () => {
    const mem = new PhysMem();
    build4k(mem, R);
    const cfg = cfg4(T4, WF_HW_AD);
    assert.equal(walk(mem, cfg, IOVA_4K, ACC_WRITE).status, TR_FAULT_PERMISSION);
    assert.equal(raw(mem, T1, IDX[3]).lo, (PAGE_LO | R) >>> 0);
  });

  it("marks a large leaf dirty too", () => {
    const mem = new PhysMem();
    put(mem, T4, 0, 0, T3 | R | W);
    put(mem, T3, 0, 0x1, 0x40000000 | PS | R | W);
    walk(mem, cfg4(T4, WF_HW_AD), 0x1234n, ACC_WRITE);
    assert.equal(raw(mem, T3, 0).lo, 0x40000000 | PS | R | W | A | D);
    assert.equal(raw(mem, T3, 0).hi, 0x1);
  });
});

describe("vtdss golden: makeLeaf / makeTable (vtdss_pt_iommu_set_prot)", () => {
  const f = vtdssFormat4;
  const out = new U64();
  it("sets R / W from IOMMU_READ / IOMMU_WRITE and PS above level 0", () => {
    f.makeLeaf(0x12345000, 12, 0, 0, IOMMU_READ, out);
    assert.deepEqual([out.hi, out.lo], [0, 0x12345000 | R]);
    f.makeLeaf(0x12345000, 12, 0, 0, IOMMU_WRITE, out);
    assert.deepEqual([out.hi, out.lo], [0, 0x12345000 | W]);
    // CACHE, NOEXEC and PRIV have no bits here: SNP comes from the domain feature only.
    f.makeLeaf(0xf_ffe0_0000, 21, 1, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE, out);
    assert.deepEqual([out.hi, out.lo], [0xf, (0xffe00000 | PS | R | W) >>> 0]);
    f.makeLeaf(0x4_0000_0000, 30, 2, 0, IOMMU_READ | IOMMU_NOEXEC | IOMMU_PRIV, out);
    assert.deepEqual([out.hi, out.lo], [0x4, PS | R]);
  });

  it("adds SNP to every leaf of a force-coherent domain", () => {
    const snp = new VtdssFormat(4, { forceCoherence: true });
    assert.equal(snp.name, "vtdss-4lvl-snp");
    snp.makeLeaf(0x7000, 12, 0, 0, IOMMU_READ, out);
    assert.deepEqual([out.hi, out.lo], [0, 0x7000 | SNP | R]);
    snp.makeTable(0x8000, 1, out);
    assert.deepEqual([out.hi, out.lo], [0, 0x8000 | R | W], "tables never get SNP");
  });

  it("refuses a prot without READ or WRITE and sizes the level cannot hold", () => {
    assert.throws(() => f.makeLeaf(0x1000, 12, 0, 0, IOMMU_CACHE, out), RangeError);
    assert.throws(() => f.makeLeaf(0x200000, 21, 0, 0, IOMMU_READ, out), RangeError);
    assert.throws(() => f.makeLeaf(0, 39, 3, 0, IOMMU_READ, out), RangeError);
  });

  it("makes tables R|W with no A/D/SNP", () => {
    f.makeTable(0xf_ffff_f000, 3, out);
    assert.deepEqual([out.hi, out.lo], [0xf, (0xfffff000 | R | W) >>> 0]);
  });

  it("names, geometry and walk configuration", () => {
    assert.deepEqual(
      [vtdssFormat3.name, vtdssFormat4.name, vtdssFormat5.name],
      ["vtdss-3lvl", "vtdss-4lvl", "vtdss-5lvl"],
    );
    assert.deepEqual([vtdssFormat3.vaBits, f.vaBits, vtdssFormat5.vaBits], [39, 48, 57]);
    assert.deepEqual(f.leafSizesLg2(0), [12]);
    assert.deepEqual(f.leafSizesLg2(2), [30]);
    assert.deepEqual(f.leafSizesLg2(3), []);
    const c = f.walkConfig(0x5000);
    assert.deepEqual(
      [c.tag, c.root, c.levels, c.vaBits, c.granuleLg2],
      [FMT_VTDSS, 0x5000, 4, 48, 12],
    );
  });
});

describe("vtdss golden: nested (x86-64 stage 1 over VT-d stage 2)", () => {
  // Stage 2 maps guest pages 1..5 with 4K pages through a full 4-level walk.
  const S4 = 0x20_0000;
  const S3 = 0x20_1000;
  const S2 = 0x20_2000;
  const S1 = 0x20_3000;
  const HPA = [0, 0x30_1000, 0x30_2000, 0x30_3000, 0x30_4000, 0x40_5000];
  // x86-64 bits (Intel SDM §4.5): P 0, R/W 1, U/S 2.
  const X86_PRU = 0x7;

  function build(mem: PhysMem, dataS2Bits: number): void {
    put(mem, S4, 0, 0, S3 | R | W);
    put(mem, S3, 0, 0, S2 | R | W);
    put(mem, S2, 0, 0, S1 | R | W);
    for (let g = 1; g <= 4; g++) put(mem, S1, g, 0, HPA[g] | R | W);
    put(mem, S1, 5, 0, HPA[5] | dataS2Bits);
    // Stage-1 tables at GPA 0x1000..0x4000 (written at their HPAs), data page at GPA 0x5000.
    put(mem, HPA[1], 1, 0, 0x2000 | X86_PRU);
    put(mem, HPA[2], 2, 0, 0x3000 | X86_PRU);
    put(mem, HPA[3], 3, 0, 0x4000 | X86_PRU);
    put(mem, HPA[4], 4, 0, 0x5000 | X86_PRU);
  }
  const iova = iovaOf([1, 2, 3, 4], 0x123);

  it("reads (4+1)(4+1)-1 = 24 entries and intersects permissions", () => {
    const mem = new PhysMem();
    build(mem, R);
    const s1 = new WalkConfig(FMT_X86_64, 0x1000, 4, 48, 12);
    const s2 = vtdssFormat4.walkConfig(S4);
    mem.resetCounters();
    const r = walk(mem, s1, iova, ACC_READ, s2);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x40_5123);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.perm, PERM_R | PERM_X, "stage 2 is read-only");
    assert.equal(r.reads, 24);
    assert.equal(mem.reads, 24);
  });

  it("reports stage-2 faults with the guest-physical address", () => {
    const mem = new PhysMem();
    build(mem, R);
    const s1 = new WalkConfig(FMT_X86_64, 0x1000, 4, 48, 12);
    const s2 = vtdssFormat4.walkConfig(S4);
    let r = walk(mem, s1, iova, ACC_WRITE, s2);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.stage, 2);
    assert.equal(r.level, 0);
    assert.equal(r.faultGpa, 0x5123);
    put(mem, S1, 3, 0, 0); // the guest's SS-PD page (GPA 0x3000) is unmapped in stage 2
    r = walk(mem, s1, iova, ACC_READ, s2);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 2);
    assert.equal(r.faultGpa, 0x3000);
  });
});

describe("vtdss golden: generic walker over a hand-built tree", () => {
  it("traces and looks up what was written by hand", () => {
    const mem = new PhysMem();
    const pt = new PageTable(vtdssFormat4, new PageAllocator(mem));
    const root = pt.root;
    put(mem, root, IDX[0], 0, T3 | R | W);
    put(mem, T3, IDX[1], 0, T2 | R | W);
    put(mem, T2, IDX[2], 0, T1 | R | W);
    put(mem, T1, IDX[3], PAGE_HI, (PAGE_LO | R | A) >>> 0);
    put(mem, T2, 7, 0x2, 0x600000 | PS | R | W | D);
    const tr = pt.trace(IOVA_4K);
    assert.equal(tr.steps.length, 4);
    assert.deepEqual(
      tr.steps.map((s) => [s.level, s.index, s.tablePa, s.entryPa, s.kind]),
      [
        [3, IDX[0], root, root + IDX[0] * 8, "table"],
        [2, IDX[1], T3, T3 + IDX[1] * 8, "table"],
        [1, IDX[2], T2, T2 + IDX[2] * 8, "table"],
        [0, IDX[3], T1, T1 + IDX[3] * 8, "leaf"],
      ],
    );
    assert.equal(tr.steps[3].raw, 0xa_bcde_f101n);
    assert.equal(tr.steps[3].meaning, "4K page -> 0xabcdef000 [R A]");
    assert.equal(tr.pa, 0xa_bcde_fabc);
    assert.equal(tr.pageLg2, 12);
    assert.equal(pt.iovaToPhys(IOVA_4K), 0xa_bcde_fabc);
    const iova2m = iovaOf([IDX[0], IDX[1], 7, 0], 0) | 0x1_0001n;
    assert.equal(pt.iovaToPhys(iova2m), 0x2_0061_0001);
    assert.equal(pt.iovaToPhys(iova2m + 0x10_0000n), 0x2_0071_0001);
    assert.equal(pt.iovaToPhys(iovaOf([IDX[0], IDX[1], 8, 0], 0)), undefined);
    // The walker's dirty reader sees the hand-set D bit of the 2M leaf.
    const dirty: bigint[] = [];
    pt.readAndClearDirty(iova2m & ~0x1f_ffffn, 1n << 21n, (hi, lo) =>
      dirty.push((BigInt(hi) << 32n) | BigInt(lo)),
    );
    assert.deepEqual(dirty, [iova2m & ~0x1f_ffffn]);
    assert.equal(raw(mem, T2, 7).lo, 0x600000 | PS | R | W);
  });
});

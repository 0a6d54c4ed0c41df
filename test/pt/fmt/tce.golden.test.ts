/**
 * Golden tests for PPC TCE windows: TCE tables are written by hand as big-endian 64-bit values
 * with raw constants (TCE_PCI_READ = bit 0, TCE_PCI_WRITE = bit 1, real address above the page
 * offset, Linux arch/powerpc/include/asm/tce.h), never through makeLeaf.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../../src/mem/alloc.ts";
import { PhysMem } from "../../../src/mem/phys.ts";
import { U64 } from "../../../src/mem/u64.ts";
import {
  TceFormat,
  tce4kDefault,
  tce16mDdw,
  tce64kDdw,
  tceConfigs,
  translateTce,
} from "../../../src/pt/fmt/tce.ts";
import "../../../src/pt/fmt/vtdss.ts";
import "../../../src/pt/fmt/x86_64.ts";
import {
  IOMMU_CACHE,
  IOMMU_NOEXEC,
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
} from "../../../src/pt/format.ts";
import {
  ACC_EXEC,
  ACC_READ,
  ACC_WRITE,
  FMT_TCE,
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
} from "../../../src/pt/translate.ts";
import { PageTable } from "../../../src/pt/walker.ts";

const TCE_R = 0x1;
const TCE_W = 0x2;
const DDW = 1n << 59n;
const ROOT = 0x10_0000;

/** Stores a TCE big-endian, byte by byte, as the hardware reads it. */
function putTce(mem: PhysMem, root: number, idx: number, value: bigint): void {
  const bytes = new Uint8Array(8);
  for (let i = 0; i < 8; i++) bytes[i] = Number((value >> BigInt(56 - 8 * i)) & 0xffn);
  mem.writeBytes(root + idx * 8, bytes);
}
function getTce(mem: PhysMem, root: number, idx: number): bigint {
  const bytes = new Uint8Array(8);
  mem.readBytes(root + idx * 8, bytes);
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}
function u64(v: bigint): U64 {
  return new U64(Number(v >> 32n), Number(v & 0xffffffffn));
}

/** A window config built by hand (not through walkConfig): page shift, window log2, base. */
function cfgOf(root: number, shift: number, windowLg2: number, base: bigint): WalkConfig {
  const c = new WalkConfig(FMT_TCE, root, 1, windowLg2, shift);
  c.topLg2 = windowLg2 - shift;
  c.baseHi = Number(base >> 32n);
  c.baseLo = Number(base & 0xffffffffn);
  return c;
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
  if (s2 === null) translateTce(mem, cfg, hi, lo, access, res, null);
  else translate(mem, cfg, hi, lo, access, res, s2);
  return res;
}

describe("tce golden: configurations", () => {
  it("names the page size, base and window size", () => {
    assert.deepEqual(
      tceConfigs.map((f) => f.name),
      ["tce-4k-0+1g", "tce-64k-ddw+16g", "tce-16m-ddw+1t"],
    );
    assert.deepEqual(
      tceConfigs.map((f) => [f.iovaBase, f.vaBits, f.itemLg2(0), f.tableLg2(0), f.levels]),
      [
        [0n, 30, 12, 18, 1],
        [DDW, 34, 16, 18, 1],
        [DDW, 40, 24, 16, 1],
      ],
    );
    for (const f of tceConfigs) {
      assert.ok(f.tableLg2(0) + 3 <= 23, `${f.name}: table at most 8 MiB`);
      assert.equal(f.bigEndian, true);
      assert.equal(f.hasDirty, false);
    }
  });

  it("walkConfig carries the window base, page shift and index bits", () => {
    const c = tce64kDdw.walkConfig(ROOT);
    assert.deepEqual(
      [c.tag, c.root, c.levels, c.vaBits, c.granuleLg2, c.topLg2, c.baseHi, c.baseLo, c.param],
      [FMT_TCE, ROOT, 1, 34, 16, 18, 0x0800_0000, 0, 16],
    );
    const d = tce4kDefault.walkConfig(ROOT);
    assert.deepEqual([d.baseHi, d.baseLo, d.topLg2, d.granuleLg2], [0, 0, 18, 12]);
  });

  it("rejects impossible windows", () => {
    assert.throws(() => new TceFormat(13, 0n, 30, "0"), RangeError);
    assert.throws(() => new TceFormat(12, 0n, 12, "0"), RangeError);
    assert.throws(() => new TceFormat(16, 1n << 20n, 34, "x"), RangeError);
  });
});

describe("tce golden: entry decode", () => {
  it("is present when R or W is set", () => {
    const f = tce4kDefault;
    assert.equal(f.entryKind(u64(0n), 0), PT_ENTRY_EMPTY);
    assert.equal(f.entryKind(u64(0x1234_5000n | 0xffcn), 0), PT_ENTRY_EMPTY, "bits 11:2 only");
    assert.equal(f.entryKind(u64(0x1234_5000n | 1n), 0), PT_ENTRY_LEAF);
    assert.equal(f.entryKind(u64(0x1234_5000n | 2n), 0), PT_ENTRY_LEAF);
    assert.equal(f.entryKind(u64(3n), 0), PT_ENTRY_LEAF);
  });

  it("takes the address above the page offset of the window's page size", () => {
    const e = u64(0x12_3456_7ff3n);
    assert.equal(tce4kDefault.leafOa(e, 0), 0x12_3456_7000);
    assert.equal(tce64kDdw.leafOa(e, 0), 0x12_3456_0000);
    assert.equal(tce16mDdw.leafOa(e, 0), 0x12_3400_0000);
    assert.equal(tce64kDdw.leafSizeLg2(e, 0), 16);
    assert.equal(tce4kDefault.leafProt(u64(0x1000n | 1n), 0), IOMMU_READ);
    assert.equal(tce4kDefault.leafProt(u64(0x1000n | 2n), 0), IOMMU_WRITE);
    assert.equal(tce4kDefault.leafProt(u64(0x1000n | 3n), 0), IOMMU_READ | IOMMU_WRITE);
    const out = new U64();
    assert.equal(tce4kDefault.isDirty(u64(0x1003n), 0), false);
    tce4kDefault.setDirty(u64(0x1003n), 0, out);
    assert.deepEqual([out.hi, out.lo], [0, 0x1003], "no dirty state to set");
  });

  it("describes entries", () => {
    assert.equal(tce4kDefault.describe(u64(0n), 0), "not present (R=W=0)");
    assert.equal(tce4kDefault.describe(u64(0x12_3456_7003n), 0), "4K page -> 0x1234567000 [R W]");
    assert.equal(tce16mDdw.describe(u64(0x500_0000n | 2n), 0), "16M page -> 0x5000000 [W]");
    assert.match(tce64kDdw.describe(u64((1n << 52n) | 0x1_0001n), 0), /above 2\^52.*\[R\]/);
  });

  it("has no tables", () => {
    assert.throws(() => tce4kDefault.tablePa(u64(3n), 0));
    assert.throws(() => tce4kDefault.makeTable(0x1000, 0, new U64()));
    assert.deepEqual(tce4kDefault.leafSizesLg2(0), [12]);
  });
});

describe("tce golden: translation", () => {
  it("reads the TCE big-endian at root + 8 * (iova >> 12) in the 32-bit window", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 12, 30, 0n);
    putTce(mem, ROOT, 0x3ffff, 0x12_3456_7000n | BigInt(TCE_R | TCE_W));
    // The first byte in memory is the most significant one.
    const first = new Uint8Array(1);
    mem.readBytes(ROOT + 0x3ffff * 8, first);
    assert.equal(first[0], 0x00);
    mem.readBytes(ROOT + 0x3ffff * 8 + 7, first);
    assert.equal(first[0], 0x03);
    mem.resetCounters();
    const r = walk(mem, cfg, 0x3fff_fabcn, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x12_3456_7abc);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.perm, PERM_R | PERM_W | PERM_X);
    assert.equal(r.reads, 1);
    assert.equal(mem.reads, 1);
    assert.equal(mem.writes, 0);
  });

  it("subtracts the DDW base at 2^59 and indexes by 64K pages", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 16, 34, DDW);
    const iova = DDW + 0x1_2345_6789n; // index 0x12345, offset 0x6789
    putTce(mem, ROOT, 0x12345, 0xab_cdef_0000n | BigInt(TCE_R));
    let r = walk(mem, cfg, iova, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xab_cdef_6789);
    assert.equal(r.pageLg2, 16);
    assert.equal(r.perm, PERM_R | PERM_X);
    r = walk(mem, cfg, iova, ACC_WRITE);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.stage, 1);
    assert.equal(r.level, 0);
    assert.equal(walk(mem, cfg, iova, ACC_EXEC).status, TR_OK);
  });

  it("16M pages, write-only TCE", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 24, 40, DDW);
    const iova = DDW + 5n * (1n << 24n) + 0x12_3456n;
    putTce(mem, ROOT, 5, 0x2_0100_0000n | BigInt(TCE_W));
    let r = walk(mem, cfg, iova, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x2_0112_3456);
    assert.equal(r.pageLg2, 24);
    assert.equal(r.perm, PERM_W);
    r = walk(mem, cfg, iova, ACC_READ);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(walk(mem, cfg, iova, ACC_EXEC).status, TR_FAULT_PERMISSION);
  });

  it("faults with ADDRESS_SIZE outside the window, without reading a TCE", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 16, 34, DDW);
    putTce(mem, ROOT, 0, 0x1000_0000n | 3n);
    for (const iova of [0n, DDW - 1n, DDW + (1n << 34n), (1n << 64n) - 1n, 1n << 63n]) {
      const r = walk(mem, cfg, iova, ACC_READ);
      assert.equal(r.status, TR_FAULT_ADDRESS_SIZE, `iova 0x${iova.toString(16)}`);
      assert.equal(r.stage, 1);
      assert.equal(r.level, 0);
      assert.equal(r.reads, 0);
    }
    assert.equal(walk(mem, cfg, DDW, ACC_READ).status, TR_OK);
    assert.equal(
      walk(mem, cfgOf(ROOT, 12, 30, 0n), 1n << 30n, ACC_READ).status,
      TR_FAULT_ADDRESS_SIZE,
    );
  });

  it("faults with TRANSLATION on a TCE without R or W", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 12, 30, 0n);
    let r = walk(mem, cfg, 0x5000n, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.level, 0);
    assert.equal(r.reads, 1);
    putTce(mem, ROOT, 5, 0x7777_7000n | 0x800n); // TCE_VALID of the VIO format is not R/W
    r = walk(mem, cfg, 0x5000n, ACC_READ);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
  });

  it("faults with ADDRESS_SIZE when the TCE's address is beyond 52 bits", () => {
    const mem = new PhysMem();
    const cfg = cfgOf(ROOT, 12, 30, 0n);
    putTce(mem, ROOT, 1, (1n << 52n) | 0x1000n | 3n);
    const r = walk(mem, cfg, 0x1000n, ACC_READ);
    assert.equal(r.status, TR_FAULT_ADDRESS_SIZE);
    assert.equal(r.reads, 1);
  });
});

describe("tce golden: makeLeaf (Linux pnv_tce_build / tce_build_pSeries)", () => {
  const out = new U64();
  it("READ gives R, WRITE gives R|W", () => {
    tce4kDefault.makeLeaf(0x12_3456_7000, 12, 0, 0, IOMMU_READ, out);
    assert.deepEqual([out.hi, out.lo], [0x12, 0x3456_7001]);
    tce4kDefault.makeLeaf(0x12_3456_7000, 12, 0, 0, IOMMU_WRITE, out);
    assert.deepEqual([out.hi, out.lo], [0x12, 0x3456_7003]);
    tce64kDdw.makeLeaf(0xf_ffff_0000, 16, 0, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE, out);
    assert.deepEqual([out.hi, out.lo], [0xf, 0xffff_0003]);
    tce16mDdw.makeLeaf(0x1_0000_0000, 24, 0, 0, IOMMU_READ | IOMMU_NOEXEC, out);
    assert.deepEqual([out.hi, out.lo], [0x1, 0x1]);
  });

  it("refuses a prot without READ or WRITE and other page sizes", () => {
    assert.throws(() => tce4kDefault.makeLeaf(0x1000, 12, 0, 0, IOMMU_CACHE, out), RangeError);
    assert.throws(() => tce4kDefault.makeLeaf(0x10000, 16, 0, 0, IOMMU_READ, out), RangeError);
  });
});

describe("tce golden: nested", () => {
  it("x86-64 stage 1 over a TCE stage 2 reads (4+1)(1+1)-1 = 9 entries", () => {
    const mem = new PhysMem();
    const s2 = cfgOf(ROOT, 12, 30, 0n);
    // Guest pages 1..4 hold the x86-64 tables, guest page 5 the data.
    const hpa = [0, 0x30_1000, 0x30_2000, 0x30_3000, 0x30_4000, 0x40_5000];
    for (let g = 1; g <= 4; g++) putTce(mem, ROOT, g, BigInt(hpa[g] | TCE_R | TCE_W));
    putTce(mem, ROOT, 5, BigInt(hpa[5] | TCE_R));
    const P_RW_US = 0x7; // x86-64 P | R/W | U/S
    mem.write64(hpa[1] + 1 * 8, 0, 0x2000 | P_RW_US);
    mem.write64(hpa[2] + 2 * 8, 0, 0x3000 | P_RW_US);
    mem.write64(hpa[3] + 3 * 8, 0, 0x4000 | P_RW_US);
    mem.write64(hpa[4] + 4 * 8, 0, 0x5000 | P_RW_US);
    const s1 = new WalkConfig(FMT_X86_64, 0x1000, 4, 48, 12);
    const iova = (1n << 39n) | (2n << 30n) | (3n << 21n) | (4n << 12n) | 0x123n;
    mem.resetCounters();
    let r = walk(mem, s1, iova, ACC_READ, s2);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x40_5123);
    assert.equal(r.perm, PERM_R | PERM_X);
    assert.equal(r.reads, 9);
    assert.equal(mem.reads, 9);
    r = walk(mem, s1, iova, ACC_WRITE, s2);
    assert.equal(r.status, TR_FAULT_PERMISSION);
    assert.equal(r.stage, 2);
    assert.equal(r.faultGpa, 0x5123);
  });

  it("a TCE stage 1 over a VT-d stage 2 translates the TCE's address and reads 9 entries", () => {
    const mem = new PhysMem();
    // Stage 2 (VT-d SS, 4 levels): GPA 0x20_0000.. (the TCE table) and 0x7000 (data), 4K pages.
    const [S4, S3, S2, S1] = [0x50_0000, 0x50_1000, 0x50_2000, 0x50_3000];
    const RW = 0x3;
    mem.write64(S4, 0, S3 | RW);
    mem.write64(S3, 0, S2 | RW);
    mem.write64(S2 + 1 * 8, 0, S1 | RW); // GPA 0x20_0000 .. 0x3f_ffff
    mem.write64(S2, 0, 0x60_0000 | RW); // second SS-PT for GPA 0 .. 0x1f_ffff
    mem.write64(S1 + 3 * 8, 0, 0x80_3000 | RW); // GPA 0x20_3000 -> HPA 0x80_3000
    mem.write64(0x60_0000 + 7 * 8, 0, 0x90_7000 | RW); // GPA 0x7000 -> HPA 0x90_7000
    const s2 = new WalkConfig(FMT_VTDSS, S4, 4, 48, 12);
    // Stage 1 TCE table at GPA 0x20_0000; TCE index 0x612 lives at GPA 0x20_3090.
    const s1 = cfgOf(0x20_0000, 12, 30, 0n);
    putTce(mem, 0x80_3000, 0x612 - 0x600, 0x7000n | BigInt(TCE_R | TCE_W));
    mem.resetCounters();
    let r = walk(mem, s1, 0x61_2abcn, ACC_WRITE, s2);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x90_7abc);
    assert.equal(r.reads, 9);
    assert.equal(r.perm, PERM_R | PERM_W | PERM_X);
    // A TCE whose stage-2 page is unmapped: stage-2 fault at the TCE's own GPA.
    r = walk(mem, s1, 0x1_0000n, ACC_READ, s2);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 2);
    assert.equal(r.faultGpa, 0x20_0000 + 0x10 * 8);
  });
});

describe("tce golden: generic walker over a hand-built table", () => {
  it("traces one big-endian TCE and reports DDW IOVAs", () => {
    const mem = new PhysMem();
    const pt = new PageTable(tce64kDdw, new PageAllocator(mem));
    const iova = DDW + 0x3_0001_2345n; // index 0x30001
    putTce(mem, pt.root, 0x30001, 0xcafe_0000n | 3n);
    const tr = pt.trace(iova);
    assert.equal(tr.steps.length, 1);
    const st = tr.steps[0];
    assert.deepEqual(
      [st.level, st.index, st.tablePa, st.entryPa, st.kind, st.raw],
      [0, 0x30001, pt.root, pt.root + 0x30001 * 8, "leaf", 0xcafe_0003n],
    );
    assert.equal(st.meaning, "64K page -> 0xcafe0000 [R W]");
    assert.equal(tr.pa, 0xcafe_2345);
    assert.equal(tr.pageLg2, 16);
    assert.equal(pt.iovaToPhys(iova), 0xcafe_2345);
    assert.equal(pt.iovaToPhys(iova + 0x1_0000n), undefined);
    assert.equal(pt.iovaToPhys(DDW - 1n), undefined);
    const leaves = pt.leaves();
    assert.deepEqual(
      leaves.map((l) => [l.iova, l.oa, l.sizeLg2, l.prot]),
      [[DDW + 0x3_0001_0000n, 0xcafe_0000, 16, IOMMU_READ | IOMMU_WRITE]],
    );
    // And what the walker writes is big-endian with R|W in the last byte.
    pt.map(DDW, 0x7_0000, 0x1_0000n, IOMMU_WRITE);
    assert.equal(getTce(mem, pt.root, 0), 0x7_0003n);
    assert.equal(pt.unmap(DDW, 0x1_0000n), 0x1_0000n);
    assert.equal(getTce(mem, pt.root, 0), 0n);
  });
});

/**
 * Golden tests for the AMD v1 format: tables are built by hand in physical memory from raw
 * constants written from the AMD IOMMU spec (48882 §2.2.3) bit positions, never through
 * makeLeaf/makeTable, then decoded by the hooks, walked by the data plane and by the generic
 * walker. The selftest mock layout comes from linux generic_pt/fmt/amdv1.h
 * (AMDV1_IOMMUFD_SELFTEST): the address field holds PA >> 11.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../../src/mem/alloc.ts";
import { PhysMem } from "../../../src/mem/phys.ts";
import { fromBigInt, U64 } from "../../../src/mem/u64.ts";
import {
  AMDV1_SELFTEST_GEOMETRIES,
  amdv1Format1,
  amdv1Format4,
  amdv1Format6,
  amdv1MockAmdv1Format,
  amdv1MockFormat,
  amdv1MockHugeFormat,
  MOCK_IOMMUPT_AMDV1,
  MOCK_IOMMUPT_DEFAULT,
  MOCK_IOMMUPT_HUGE,
} from "../../../src/pt/fmt/amdv1.ts";
import { x86_64Format4 } from "../../../src/pt/fmt/x86_64.ts";
import {
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
  type PtFormat,
} from "../../../src/pt/format.ts";
import {
  ACC_EXEC,
  ACC_READ,
  ACC_WRITE,
  PERM_R,
  PERM_W,
  PERM_X,
  TR_FAULT_ADDRESS_SIZE,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  TranslateResult,
  translate,
  type WalkConfig,
  WF_HW_AD,
} from "../../../src/pt/translate.ts";
import { PageTable } from "../../../src/pt/walker.ts";

// ---- raw entry bits, from the spec's PTE/PDE layout ----------------------------------------
const PR = 1n << 0n;
const A = 1n << 5n;
const D = 1n << 6n;
const NL = (n: number): bigint => BigInt(n) << 9n; // NextLevel, bits 11:9
const U = 1n << 59n;
const FC = 1n << 60n;
const IR = 1n << 61n;
const IW = 1n << 62n;
/** PDE pointing at a table: Linux always grants IR|IW at table levels. */
const pde = (nl: number, pa: bigint): bigint => PR | NL(nl) | pa | IR | IW;
/** Mock address field: entry bits 51:12 hold PA >> 11. */
const mockAddr = (pa: bigint): bigint => (pa >> 11n) << 12n;

const RW = IOMMU_READ | IOMMU_WRITE;

function put(mem: PhysMem, pa: number, raw: bigint): void {
  const v = fromBigInt(raw, new U64());
  mem.write64(pa, v.hi, v.lo);
}
function get(mem: PhysMem, pa: number): bigint {
  return mem.read64(pa, new U64()).toBigInt();
}
const u64 = (raw: bigint): U64 => U64.of(raw);

const res = new TranslateResult();
function tr(
  mem: PhysMem,
  cfg: WalkConfig,
  iova: bigint,
  access = ACC_READ,
  s2: WalkConfig | null = null,
): TranslateResult {
  res.reset();
  translate(mem, cfg, Number(iova >> 32n), Number(iova & 0xffffffffn), access, res, s2);
  return res;
}
function expectFault(r: TranslateResult, status: number, level: number, stage = 1): void {
  assert.equal(r.status, status, `status ${r.status}, wanted ${status}`);
  assert.equal(r.stage, stage);
  assert.equal(r.level, level);
}

/** IOVA from per-level indices (top first) of a 4 KiB-granule tree, plus an offset. */
function iovaOf(indices: number[], offset = 0n): bigint {
  let v = 0n;
  const top = indices.length - 1;
  indices.forEach((idx, i) => {
    v |= BigInt(idx) << BigInt(12 + 9 * (top - i));
  });
  return v | offset;
}

// ---- a hand-built 4-level tree ----------------------------------------------------------------
const ROOT = 0x100000; // level 3
const L2 = 0x101000;
const L1 = 0x102000;
const L0 = 0x103000;
const L0B = 0x104000; // reached through a read-only PDE
const SKIP_L1 = 0x105000; // reached from the root with NextLevel 2 (skips level 2)
const SKIP_L0 = 0x106000;

function build4(): PhysMem {
  const mem = new PhysMem();
  put(mem, ROOT + 2 * 8, pde(3, BigInt(L2)));
  put(mem, L2 + 3 * 8, pde(2, BigInt(L1)));
  put(mem, L1 + 4 * 8, pde(1, BigInt(L0)));
  put(mem, L0 + 5 * 8, PR | 0xabcd000n | IR | IW); // 4K read/write
  put(mem, L0 + 8 * 8, PR | 0xbeef000n | IR); // read-only
  put(mem, L0 + 10 * 8, PR | 0xcafe000n | IW); // write-only
  put(mem, L0 + 11 * 8, PR | 0xd000000n | IR | IW | (1n << 52n)); // reserved bit 52
  put(mem, L0 + 12 * 8, PR | NL(2) | 0xe000000n | IR | IW); // NextLevel 2 in a level-1 table
  put(mem, L0 + 13 * 8, PR | 0xf000000n | IR | IW | FC | U); // FC and U are PTE bits
  // 64K page: NextLevel 7, address bits 14:12 = 111b, replicated in slots 16..31.
  for (let i = 16; i < 32; i++) put(mem, L0 + i * 8, PR | NL(7) | 0x20000000n | 0x7000n | IR | IW);
  // A PDE without IW: writes below it are denied at level 1.
  put(mem, L1 + 9 * 8, PR | NL(1) | BigInt(L0B) | IR);
  put(mem, L0B + 0 * 8, PR | 0x5000000n | IR | IW);
  // 2M page at level 1 (NextLevel 0).
  put(mem, L1 + 12 * 8, PR | 0x40000000n | IR | IW);
  // 4M page at level 1: NextLevel 7, address bits 20:12 all ones, slots 14 and 15.
  for (const i of [14, 15]) put(mem, L1 + i * 8, PR | NL(7) | 0x80000000n | 0x1ff000n | IR | IW);
  // NextLevel 7 encoding an 8K page (bit 12 = 0) at level 1: smaller than a 2M item, invalid.
  put(mem, L1 + 16 * 8, PR | NL(7) | 0x80000000n | IR | IW);
  // NextLevel 7 sizes must lie strictly between the level's item size and the next level's:
  // 2M (8 ones) is neither at level 1 (its natural size) nor at level 0 (too large).
  put(mem, L1 + 19 * 8, PR | NL(7) | 0x80000000n | 0xff000n | IR | IW);
  put(mem, L0 + 14 * 8, PR | NL(7) | 0x80000000n | 0xff000n | IR | IW);
  // PDE at level 1 naming level 3: the next level must be lower.
  put(mem, L1 + 17 * 8, pde(3, BigInt(L0)));
  // PDE with reserved bit 60 (FC's position is reserved in a PDE).
  put(mem, L1 + 18 * 8, pde(1, BigInt(L0)) | FC);
  // Root entry with NextLevel 2: skips level 2 (IOVA bits 38:30 must be zero).
  put(mem, ROOT + 4 * 8, pde(2, BigInt(SKIP_L1)));
  put(mem, SKIP_L1 + 6 * 8, pde(1, BigInt(SKIP_L0)));
  put(mem, SKIP_L0 + 7 * 8, PR | 0x33333000n | IR | IW);
  // 512G page at level 3 (NextLevel 0): the spec allows it, Linux never writes it.
  put(mem, ROOT + 1 * 8, PR | (1n << 40n) | IR | IW);
  return mem;
}

describe("amdv1 golden: entry decode", () => {
  const f = amdv1Format4;

  it("decodes a PDE", () => {
    const e = u64(PR | NL(3) | 0x12345000n | IR | IW | A);
    assert.equal(f.entryKind(e, 3), PT_ENTRY_TABLE);
    assert.equal(f.tablePa(e, 3), 0x12345000);
    assert.match(f.describe(e, 3), /^table -> 0x12345000 \(NextLevel 3\) \[PR IR IW A\]$/);
    // A PDE that skips a level is still a table to the control plane (as in generic_pt).
    const skip = u64(pde(1, 0x7000n));
    assert.equal(f.entryKind(skip, 3), PT_ENTRY_TABLE);
    assert.match(f.describe(skip, 3), /skips 2 level/);
  });

  it("decodes empty entries", () => {
    assert.equal(f.entryKind(u64(0n), 2), PT_ENTRY_EMPTY);
    // Everything but PR set: still not present.
    assert.equal(f.entryKind(u64(IR | IW | 0xfff000n | NL(7)), 0), PT_ENTRY_EMPTY);
    assert.equal(f.describe(u64(0n), 0), "not present (PR=0)");
  });

  it("decodes natural-size leaves and their permissions", () => {
    const pte = u64(PR | 0xabcde000n | IR);
    assert.equal(f.entryKind(pte, 0), PT_ENTRY_LEAF);
    assert.equal(f.leafOa(pte, 0), 0xabcde000);
    assert.equal(f.leafSizeLg2(pte, 0), 12);
    assert.equal(f.leafProt(pte, 0), IOMMU_READ);
    const big = u64(PR | 0x40000000n | IR | IW | FC | D);
    assert.equal(f.entryKind(big, 1), PT_ENTRY_LEAF);
    assert.equal(f.leafSizeLg2(big, 1), 21);
    assert.equal(f.leafOa(big, 1), 0x40000000);
    assert.equal(f.leafProt(big, 1), IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    assert.ok(f.isDirty(big, 1));
    assert.match(f.describe(big, 1), /^2M page -> 0x40000000 \[PR IR IW D FC\]$/);
    // Write-only is expressible.
    assert.equal(f.leafProt(u64(PR | 0x1000n | IW), 0), IOMMU_WRITE);
  });

  it("decodes NextLevel-7 page sizes from the trailing ones of the address", () => {
    // bit 12 = 1, bit 13 = 0: 2^(12+1+1) = 16K.
    const k16 = u64(PR | NL(7) | 0x10000000n | 0x1000n | IR);
    assert.equal(f.entryKind(k16, 0), PT_ENTRY_LEAF);
    assert.equal(f.leafSizeLg2(k16, 0), 14);
    assert.equal(f.leafOa(k16, 0), 0x10000000);
    // bit 12 = 0: 8K.
    assert.equal(f.leafSizeLg2(u64(PR | NL(7) | 0x10000000n), 0), 13);
    // bits 14:12 ones: 64K.
    const k64 = u64(PR | NL(7) | 0x20000000n | 0x7000n | IR | IW);
    assert.equal(f.leafSizeLg2(k64, 0), 16);
    assert.equal(f.leafOa(k64, 0), 0x20000000);
    assert.match(
      f.describe(k64, 0),
      /^64K page -> 0x20000000, NextLevel 7: 16 entries \[PR IR IW\]$/,
    );
    // 4M at level 1: bits 20:12 ones.
    const m4 = u64(PR | NL(7) | 0x80000000n | 0x1ff000n | IR);
    assert.equal(f.leafSizeLg2(m4, 1), 22);
    assert.equal(f.leafOa(m4, 1), 0x80000000);
    // 1T at level 3: bits 38:12 ones, page at 2^41.
    const t1 = u64(PR | NL(7) | (1n << 41n) | ((1n << 39n) - (1n << 12n)) | IR);
    assert.equal(f.leafSizeLg2(t1, 3), 40);
    assert.equal(f.leafOa(t1, 3), 2 ** 41);
  });

  it("decodes the 2 KiB selftest mock layout (address field = PA >> 11)", () => {
    const m = amdv1MockFormat;
    const pte = u64(PR | mockAddr(0x1800n) | IR);
    assert.equal(pte.lo, 0x3001);
    assert.equal(m.leafOa(pte, 0), 0x1800);
    assert.equal(m.leafSizeLg2(pte, 0), 11);
    const tbl = u64(pde(1, mockAddr(0x5000n)));
    assert.equal(m.entryKind(tbl, 1), PT_ENTRY_TABLE);
    assert.equal(m.tablePa(tbl, 1), 0x5000);
    // NextLevel 7 with no ones: 2^(11+1) = 4K, two 2K slots.
    const k4 = u64(PR | NL(7) | mockAddr(0x2000n) | IR | IW);
    assert.equal(m.leafSizeLg2(k4, 0), 12);
    assert.equal(m.leafOa(k4, 0), 0x2000);
    // 1M natural page at level 1.
    const m1 = u64(PR | mockAddr(0x300000n) | IR);
    assert.equal(m.leafSizeLg2(m1, 1), 20);
    assert.equal(m.leafOa(m1, 1), 0x300000);
  });
});

describe("amdv1 golden: makeLeaf / makeTable produce Linux's bits", () => {
  const out = new U64();
  const raw = (): bigint => out.toBigInt();

  it("tables: PR | NextLevel = own level | address | IR | IW", () => {
    amdv1Format4.makeTable(0x1234000, 2, out);
    assert.equal(raw(), PR | NL(2) | 0x1234000n | IR | IW);
    amdv1Format6.makeTable(2 ** 45 + 0x3000, 5, out);
    assert.equal(raw(), PR | NL(5) | (1n << 45n) | 0x3000n | IR | IW);
    amdv1MockFormat.makeTable(0x5000, 1, out);
    assert.equal(raw(), PR | NL(1) | 0xa000n | IR | IW);
  });

  it("leaves: IR/IW from prot, FC from the AMD driver's FORCE_COHERENCE, no A/D", () => {
    amdv1Format4.makeLeaf(0x5000, 12, 0, 0, IOMMU_READ, out);
    assert.equal(raw(), PR | 0x5000n | IR | FC);
    amdv1Format4.makeLeaf(0x7000, 12, 0, 0, IOMMU_WRITE, out);
    assert.equal(raw(), PR | 0x7000n | IW | FC);
    amdv1Format4.makeLeaf(0x40000000, 21, 1, 0, RW | IOMMU_CACHE, out);
    assert.equal(raw(), PR | 0x40000000n | IR | IW | FC);
    amdv1Format4.makeLeaf(2 ** 39, 39, 3, 0, RW, out);
    assert.equal(raw(), PR | (1n << 39n) | IR | IW | FC);
  });

  it("contiguous leaves: NextLevel 7 and (size - 13) ones from bit 12, same in every slot", () => {
    for (const slot of [0, 3, 15]) {
      amdv1Format4.makeLeaf(0x10000, 16, 0, slot, RW, out);
      assert.equal(raw(), PR | NL(7) | 0x10000n | 0x7000n | IR | IW | FC);
    }
    amdv1Format4.makeLeaf(0x2000, 13, 0, 1, IOMMU_READ, out);
    assert.equal(raw(), PR | NL(7) | 0x2000n | IR | FC);
    amdv1Format4.makeLeaf(0x80000000, 22, 1, 0, RW, out);
    assert.equal(raw(), PR | NL(7) | 0x80000000n | 0x1ff000n | IR | IW | FC);
    // 1T at level 3: 27 ones, bits 38:12.
    amdv1Format4.makeLeaf(2 ** 41, 40, 3, 0, RW, out);
    assert.equal(raw(), PR | NL(7) | (1n << 41n) | ((1n << 39n) - (1n << 12n)) | IR | IW | FC);
    // 2^51 at level 4: 38 ones, bits 49:12.
    amdv1Format6.makeLeaf(2 ** 51, 51, 4, 0, IOMMU_READ, out);
    assert.equal(raw(), PR | NL(7) | (1n << 51n) | ((1n << 50n) - (1n << 12n)) | IR | FC);
  });

  it("mock leaves: PA >> 11 in the address field, no FC", () => {
    amdv1MockFormat.makeLeaf(0x1800, 11, 0, 0, IOMMU_READ, out);
    assert.equal(raw(), PR | 0x3000n | IR);
    amdv1MockFormat.makeLeaf(0x2000, 12, 0, 1, RW, out);
    assert.equal(raw(), PR | NL(7) | 0x4000n | IR | IW);
    amdv1MockFormat.makeLeaf(0x100000, 20, 1, 0, RW, out);
    assert.equal(raw(), PR | 0x200000n | IR | IW);
    // 8K in the mock: 2^(11+1+1), one 1 bit at bit 12.
    amdv1MockFormat.makeLeaf(0x4000, 13, 0, 0, IOMMU_WRITE, out);
    assert.equal(raw(), PR | NL(7) | 0x8000n | 0x1000n | IW);
  });

  it("refuses sizes a level cannot hold", () => {
    assert.throws(() => amdv1Format4.makeLeaf(0, 21, 0, 0, RW, out), RangeError);
    assert.throws(() => amdv1Format4.makeLeaf(0, 20, 1, 0, RW, out), RangeError);
  });

  it("dirty hooks touch bit 6 only", () => {
    const e = u64(PR | NL(7) | 0x7000n | IR | IW);
    assert.equal(amdv1Format4.isDirty(e, 0), false);
    amdv1Format4.setDirty(e, 0, out);
    assert.equal(raw(), PR | NL(7) | 0x7000n | IR | IW | D);
    amdv1Format4.clearDirty(out, 0, out);
    assert.equal(raw(), PR | NL(7) | 0x7000n | IR | IW);
  });
});

describe("amdv1 golden: geometry", () => {
  const range = (a: number, b: number): number[] =>
    Array.from({ length: b - a + 1 }, (_, i) => a + i);
  const sizes = (f: PtFormat): number[][] =>
    Array.from({ length: f.levels }, (_, l) => [...f.leafSizesLg2(l)]);

  it("real format: paging modes 1-6", () => {
    assert.equal(amdv1Format1.vaBits, 21);
    assert.deepEqual(sizes(amdv1Format1), [range(12, 20)]);
    assert.equal(amdv1Format4.vaBits, 48);
    assert.equal(amdv1Format6.vaBits, 64);
    assert.equal(amdv1Format6.tableLg2(5), 7, "the top table indexes IOVA bits 63:57");
    assert.equal(amdv1Format6.tableLg2(4), 9);
    assert.equal(amdv1Format6.itemLg2(5), 57);
    // 512G (2^39) excluded; the top level holds no leaves; nothing above 2^51.
    assert.deepEqual(sizes(amdv1Format6), [
      range(12, 20),
      range(21, 29),
      range(30, 38),
      range(40, 47),
      range(48, 51),
      [],
    ]);
    assert.equal(amdv1Format6.oaBits, 52);
    assert.equal(amdv1Format6.unmapPolicy, "whole");
    assert.ok(amdv1Format6.hasDirty);
  });

  it("selftest mock geometries", () => {
    assert.equal(amdv1MockFormat.levels, 3);
    assert.equal(amdv1MockFormat.vaBits, 38);
    assert.equal(amdv1MockFormat.oaBits, 51);
    assert.deepEqual(
      [0, 1, 2].map((l) => amdv1MockFormat.itemLg2(l)),
      [11, 20, 29],
    );
    assert.deepEqual(sizes(amdv1MockFormat), [range(11, 19), range(20, 28), range(29, 37)]);
    assert.deepEqual(sizes(amdv1MockHugeFormat), [[12], [20], []]);
    const byType = new Map(AMDV1_SELFTEST_GEOMETRIES.map((g) => [g.pagetableType, g]));
    const def = byType.get(MOCK_IOMMUPT_DEFAULT)!;
    assert.equal(def.format, amdv1MockFormat);
    assert.equal(def.apertureStart, 1n << 24n);
    assert.equal(def.apertureLast, (1n << 31n) - 1n);
    assert.equal(def.pgsizeBitmap, (1n << 38n) - (1n << 11n));
    const huge = byType.get(MOCK_IOMMUPT_HUGE)!;
    assert.equal(huge.pgsizeBitmap, (1n << 20n) | (1n << 12n));
    assert.equal(huge.apertureLast, (1n << 38n) - 1n);
    const amd = byType.get(MOCK_IOMMUPT_AMDV1)!;
    assert.equal(amd.format, amdv1MockAmdv1Format);
    // AMD_IOMMU_PGSIZES = GENMASK_ULL(51, 12) ^ SZ_512G
    assert.equal(amd.pgsizeBitmap, ((1n << 52n) - (1n << 12n)) ^ (1n << 39n));
  });
});

describe("amdv1 golden: data-plane translate", () => {
  const cfg = (): WalkConfig => amdv1Format4.walkConfig(ROOT);

  it("walks four levels to a 4K page", () => {
    const mem = build4();
    const r = tr(mem, cfg(), iovaOf([2, 3, 4, 5], 0x123n));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xabcd123);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.perm, PERM_R | PERM_W | PERM_X);
    assert.equal(r.reads, 4);
  });

  it("faults on not-present entries at the level that is empty", () => {
    const mem = build4();
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 6])), TR_FAULT_TRANSLATION, 0);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 7, 0])), TR_FAULT_TRANSLATION, 1);
    expectFault(tr(mem, cfg(), iovaOf([0, 0, 0, 0])), TR_FAULT_TRANSLATION, 3);
  });

  it("checks IR/IW at every level", () => {
    const mem = build4();
    // Read-only leaf.
    const ro = tr(mem, cfg(), iovaOf([2, 3, 4, 8], 4n));
    assert.equal(ro.status, TR_OK);
    assert.equal(ro.pa, 0xbeef004);
    assert.equal(ro.perm, PERM_R | PERM_X);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 8]), ACC_WRITE), TR_FAULT_PERMISSION, 0);
    // Write-only leaf: reads and execute requests need IR.
    const wo = tr(mem, cfg(), iovaOf([2, 3, 4, 10]), ACC_WRITE);
    assert.equal(wo.status, TR_OK);
    assert.equal(wo.perm, PERM_W);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 10])), TR_FAULT_PERMISSION, 0);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 10]), ACC_EXEC), TR_FAULT_PERMISSION, 0);
    // The PDE at level 1 lacks IW: a write faults there, a read gets R only.
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 9, 0]), ACC_WRITE), TR_FAULT_PERMISSION, 1);
    const r = tr(mem, cfg(), iovaOf([2, 3, 9, 0]));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x5000000);
    assert.equal(r.perm, PERM_R | PERM_X);
  });

  it("faults on IOVAs beyond the mode's range", () => {
    const mem = build4();
    expectFault(tr(mem, cfg(), 1n << 48n), TR_FAULT_ADDRESS_SIZE, 3);
    expectFault(tr(mem, cfg(), 1n << 63n), TR_FAULT_ADDRESS_SIZE, 3);
    const one = amdv1Format1.walkConfig(L0);
    expectFault(tr(mem, one, 1n << 21n), TR_FAULT_ADDRESS_SIZE, 0);
    // Mode 1: a single table of 4K PTEs.
    const r = tr(mem, one, (5n << 12n) | 0x77n);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xabcd077);
    assert.equal(r.reads, 1);
  });

  it("faults on reserved bits and bad NextLevel encodings", () => {
    const mem = build4();
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 11])), TR_FAULT_TRANSLATION, 0);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 12])), TR_FAULT_TRANSLATION, 0);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 16, 0])), TR_FAULT_TRANSLATION, 1);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 17, 0])), TR_FAULT_TRANSLATION, 1);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 19, 0])), TR_FAULT_TRANSLATION, 1);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 4, 14])), TR_FAULT_TRANSLATION, 0);
    expectFault(tr(mem, cfg(), iovaOf([2, 3, 18, 0])), TR_FAULT_TRANSLATION, 1);
    // FC and U are PTE bits, not reserved there.
    const ok = tr(mem, cfg(), iovaOf([2, 3, 4, 13]));
    assert.equal(ok.status, TR_OK);
    assert.equal(ok.pa, 0xf000000);
  });

  it("translates large and NextLevel-7 pages", () => {
    const mem = build4();
    const m2 = tr(mem, cfg(), iovaOf([2, 3, 12, 0], 0x12345n));
    assert.equal(m2.status, TR_OK);
    assert.equal(m2.pa, 0x40012345);
    assert.equal(m2.pageLg2, 21);
    assert.equal(m2.reads, 3);
    const k64 = tr(mem, cfg(), iovaOf([2, 3, 4, 20], 0x456n));
    assert.equal(k64.status, TR_OK);
    assert.equal(k64.pa, 0x20000000 + 4 * 0x1000 + 0x456);
    assert.equal(k64.pageLg2, 16);
    const m4 = tr(mem, cfg(), iovaOf([2, 3, 15, 0], 0x1234n));
    assert.equal(m4.status, TR_OK);
    assert.equal(m4.pa, 0x80000000 + 0x200000 + 0x1234);
    assert.equal(m4.pageLg2, 22);
    // 512G NextLevel-0 page at level 3.
    const g512 = tr(mem, cfg(), iovaOf([1, 5, 0, 0], 0x1234n));
    assert.equal(g512.status, TR_OK);
    assert.equal(g512.pa, 2 ** 40 + 5 * 2 ** 30 + 0x1234);
    assert.equal(g512.pageLg2, 39);
    assert.equal(g512.reads, 1);
  });

  it("follows skipped levels and faults when the skipped IOVA bits are not zero", () => {
    const mem = build4();
    const r = tr(mem, cfg(), iovaOf([4, 0, 6, 7], 0x10n));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x33333010);
    assert.equal(r.reads, 3);
    expectFault(tr(mem, cfg(), iovaOf([4, 1, 6, 7])), TR_FAULT_TRANSLATION, 3);
    expectFault(tr(mem, cfg(), iovaOf([4, 256, 6, 7])), TR_FAULT_TRANSLATION, 3);
  });

  it("never takes a leaf in the level-6 (generic level 5) table", () => {
    const mem = new PhysMem();
    put(mem, 0x1000, PR | 0x200000n | IR | IW);
    expectFault(tr(mem, amdv1Format6.walkConfig(0x1000), 0x123n), TR_FAULT_TRANSLATION, 5);
  });

  it("updates A and D when hardware A/D updates are on", () => {
    const mem = build4();
    const c = cfg();
    c.flags = WF_HW_AD;
    const iova = iovaOf([2, 3, 4, 5]);
    assert.equal(tr(mem, c, iova).status, TR_OK);
    assert.equal(get(mem, ROOT + 2 * 8), pde(3, BigInt(L2)) | A);
    assert.equal(get(mem, L2 + 3 * 8), pde(2, BigInt(L1)) | A);
    assert.equal(get(mem, L1 + 4 * 8), pde(1, BigInt(L0)) | A);
    assert.equal(get(mem, L0 + 5 * 8), PR | 0xabcd000n | IR | IW | A, "a read sets A only");
    assert.equal(tr(mem, c, iova, ACC_WRITE).status, TR_OK);
    assert.equal(get(mem, L0 + 5 * 8), PR | 0xabcd000n | IR | IW | A | D);
    // A denied write does not dirty the page; only the slot used of a contiguous page is marked.
    expectFault(tr(mem, c, iovaOf([2, 3, 4, 8]), ACC_WRITE), TR_FAULT_PERMISSION, 0);
    assert.equal(get(mem, L0 + 8 * 8), PR | 0xbeef000n | IR);
    assert.equal(tr(mem, c, iovaOf([2, 3, 4, 18]), ACC_WRITE).status, TR_OK);
    assert.equal(get(mem, L0 + 18 * 8), PR | NL(7) | 0x20007000n | IR | IW | A | D);
    assert.equal(get(mem, L0 + 17 * 8), PR | NL(7) | 0x20007000n | IR | IW);
    // Without the flag nothing is written.
    const before = mem.writes;
    tr(mem, cfg(), iovaOf([2, 3, 4, 19]), ACC_WRITE);
    assert.equal(mem.writes, before);
  });

  it("walks the 2 KiB selftest mock", () => {
    const mem = new PhysMem();
    const root = 0x200000;
    const l1 = 0x201000;
    const l0 = 0x202000;
    put(mem, root + 1 * 8, pde(2, mockAddr(BigInt(l1))));
    put(mem, l1 + 2 * 8, pde(1, mockAddr(BigInt(l0))));
    put(mem, l0 + 3 * 8, PR | mockAddr(0x1234800n) | IR | IW);
    for (const i of [4, 5]) put(mem, l0 + i * 8, PR | NL(7) | mockAddr(0x3000n) | IR);
    put(mem, l1 + 5 * 8, PR | mockAddr(0x300000n) | IR | IW);
    // A PA above 4 GiB with an odd field bit 20 (PA bit 31): raw 0x3_0000_1000.
    put(mem, l0 + 7 * 8, PR | mockAddr(0x1_8000_0800n) | IR);
    assert.equal(mockAddr(0x1_8000_0800n), 0x3_0000_1000n);
    const c = amdv1MockFormat.walkConfig(root);
    const at = (i2: number, i1: number, i0: number, off: bigint): bigint =>
      (BigInt(i2) << 29n) | (BigInt(i1) << 20n) | (BigInt(i0) << 11n) | off;
    const r = tr(mem, c, at(1, 2, 3, 0x7ffn));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x1234800 + 0x7ff);
    assert.equal(r.pageLg2, 11);
    assert.equal(r.reads, 3);
    const k4 = tr(mem, c, at(1, 2, 5, 0x10n));
    assert.equal(k4.status, TR_OK);
    assert.equal(k4.pa, 0x3000 + 0x800 + 0x10);
    assert.equal(k4.pageLg2, 12);
    expectFault(tr(mem, c, at(1, 2, 5, 0n), ACC_WRITE), TR_FAULT_PERMISSION, 0);
    const m1 = tr(mem, c, at(1, 5, 0, 0xabcden));
    assert.equal(m1.status, TR_OK);
    assert.equal(m1.pa, 0x300000 + 0xabcde);
    assert.equal(m1.pageLg2, 20);
    const high = tr(mem, c, at(1, 2, 7, 0x123n));
    assert.equal(high.status, TR_OK);
    assert.equal(high.pa, 0x1_8000_0923);
    expectFault(tr(mem, c, 1n << 38n), TR_FAULT_ADDRESS_SIZE, 2);
    expectFault(tr(mem, c, at(1, 2, 6, 0n)), TR_FAULT_TRANSLATION, 0);
  });
});

describe("amdv1 golden: nesting", () => {
  // Stage 2: an AMD v1 4-level tree mapping GPA pages 0x1000..0x5000 to HPA 0x11000..0x15000
  // with 4K PTEs, tables at 0x900000..0x903000.
  function stage2(mem: PhysMem): WalkConfig {
    put(mem, 0x900000, pde(3, 0x901000n));
    put(mem, 0x901000, pde(2, 0x902000n));
    put(mem, 0x902000, pde(1, 0x903000n));
    for (let n = 1; n <= 5; n++)
      put(mem, 0x903000 + n * 8, PR | BigInt(0x10000 + n * 0x1000) | IR | IW);
    return amdv1Format4.walkConfig(0x900000);
  }

  it("an x86_64 stage 1 over an AMD v1 stage 2 reads (4+1)(4+1)-1 entries", () => {
    const mem = new PhysMem();
    const s2 = stage2(mem);
    // x86-64 entries (P|RW|U = 7) at the HPAs of GPA tables 0x1000..0x4000, leaf -> GPA 0x5000.
    for (let n = 1; n <= 4; n++) put(mem, 0x10000 + n * 0x1000, BigInt((n + 1) * 0x1000) | 7n);
    const s1 = x86_64Format4.walkConfig(0x1000);
    const r = tr(mem, s1, 0x123n, ACC_WRITE, s2);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x15123);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.reads, 24);
    assert.ok(r.perm & PERM_W);
  });

  it("an AMD v1 stage 1 over an AMD v1 stage 2, with a stage-2 fault", () => {
    const mem = new PhysMem();
    const s2 = stage2(mem);
    for (let n = 1; n <= 3; n++)
      put(mem, 0x10000 + n * 0x1000, pde(4 - n, BigInt((n + 1) * 0x1000)));
    put(mem, 0x14000, PR | 0x5000n | IR); // read-only at stage 1
    const s1 = amdv1Format4.walkConfig(0x1000);
    const r = tr(mem, s1, 0x456n, ACC_READ, s2);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x15456);
    assert.equal(r.reads, 24);
    assert.equal(r.perm, PERM_R | PERM_X);
    expectFault(tr(mem, s1, 0x456n, ACC_WRITE, s2), TR_FAULT_PERMISSION, 0, 1);
    // Point the stage-1 leaf at GPA 0x6000, which stage 2 does not map.
    put(mem, 0x14000, PR | 0x6000n | IR);
    const f = tr(mem, s1, 0x456n, ACC_READ, s2);
    expectFault(f, TR_FAULT_TRANSLATION, 0, 2);
    assert.equal(f.faultGpa, 0x6456);
  });
});

describe("amdv1 golden: generic walker on hand-built tables", () => {
  function table(): PageTable {
    const mem = build4();
    const pt = new PageTable(amdv1Format4, new PageAllocator(mem));
    pt.alloc.release(pt.root);
    pt.root = ROOT;
    return pt;
  }

  it("traces a 4-level walk", () => {
    const pt = table();
    const t = pt.trace(iovaOf([2, 3, 4, 5], 0x123n));
    assert.deepEqual(
      t.steps.map((s) => [s.level, s.index, s.entryPa, s.kind]),
      [
        [3, 2, ROOT + 16, "table"],
        [2, 3, L2 + 24, "table"],
        [1, 4, L1 + 32, "table"],
        [0, 5, L0 + 40, "leaf"],
      ],
    );
    assert.equal(t.steps[3].raw, PR | 0xabcd000n | IR | IW);
    assert.equal(t.steps[3].meaning, "4K page -> 0xabcd000 [PR IR IW]");
    assert.equal(t.pa, 0xabcd123);
    assert.equal(t.pageLg2, 12);
  });

  it("looks up NextLevel-7 pages and lists them once", () => {
    const pt = table();
    assert.equal(pt.iovaToPhys(iovaOf([2, 3, 4, 31], 0xfffn)), 0x2000ffff);
    assert.equal(pt.iovaToPhys(iovaOf([2, 3, 15, 0], 0x1n)), 0x80200001);
    assert.equal(pt.iovaToPhys(iovaOf([2, 3, 4, 6])), undefined);
    // (The bad-encoding PDEs at L1 slots 17 and 18 alias L0, so look under slot 4 only.)
    const under = (l: { iova: bigint }): boolean =>
      l.iova >= iovaOf([2, 3, 4, 0]) && l.iova < iovaOf([2, 3, 5, 0]);
    const k64 = pt.leaves().filter((l) => l.sizeLg2 === 16 && under(l));
    assert.deepEqual(k64, [
      { iova: iovaOf([2, 3, 4, 16]), oa: 0x20000000, sizeLg2: 16, level: 0, prot: RW },
    ]);
  });

  it("writes Linux's bits when it maps, and tracks dirty per contiguous page", () => {
    const mem = new PhysMem();
    const pt = new PageTable(amdv1Format4, new PageAllocator(mem));
    pt.map(0x10000n, 0x7770000, 0x10000n, RW);
    const t = pt.trace(0x13000n);
    const leafPa = t.steps[3].entryPa;
    const slot0 = leafPa - 3 * 8;
    for (let i = 0; i < 16; i++) {
      assert.equal(get(mem, slot0 + i * 8), PR | NL(7) | 0x7770000n | 0x7000n | IR | IW | FC);
    }
    assert.equal(t.steps[0].raw, pde(3, BigInt(pt.trace(0x13000n).steps[1].tablePa)));
    assert.ok(pt.setDirty(0x13000n));
    const seen: [bigint, number][] = [];
    pt.readAndClearDirty(0n, 1n << 20n, (hi, lo, s) =>
      seen.push([(BigInt(hi) << 32n) | BigInt(lo), s]),
    );
    assert.deepEqual(seen, [[0x10000n, 16]]);
    assert.equal(get(mem, leafPa), PR | NL(7) | 0x7770000n | 0x7000n | IR | IW | FC);
    assert.equal(
      pt.unmap(0x11000n, 0x1000n),
      0n,
      "a range starting inside the 64K page is refused",
    );
    // generic_pt removes a large page whole when the range starts at its first byte.
    assert.equal(pt.unmap(0x10000n, 0x1000n), 0x10000n);
    assert.equal(pt.iovaToPhys(0x1f000n), undefined);
  });
});

/**
 * Golden tests for the RISC-V formats (src/pt/fmt/riscv.ts). Tables are written by hand from the
 * privileged spec's PTE bit positions (V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, PPN 53:10,
 * reserved 60:54, PBMT 62:61, N 63), never through makeLeaf / makeTable.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../../src/mem/alloc.ts";
import { PhysMem } from "../../../src/mem/phys.ts";
import { U64 } from "../../../src/mem/u64.ts";
import {
  RISCV_PARAM_SUM,
  riscvConfigs,
  riscvSv39,
  riscvSv39x4,
  riscvSv48,
  riscvSv48x4,
  riscvSv57,
  riscvSv57x4,
} from "../../../src/pt/fmt/riscv.ts";
import { x86_64Format4 } from "../../../src/pt/fmt/x86_64.ts";
import {
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_NOEXEC,
  IOMMU_PRIV,
  IOMMU_READ,
  IOMMU_WRITE,
  PT_ENTRY_EMPTY,
  PT_ENTRY_LEAF,
  PT_ENTRY_TABLE,
} from "../../../src/pt/format.ts";
import { findFormat } from "../../../src/pt/registry.ts";
import {
  ACC_EXEC,
  ACC_PRIV,
  ACC_READ,
  ACC_WRITE,
  FMT_RISCV,
  FMT_RISCV_G,
  PERM_R,
  PERM_W,
  PERM_X,
  TR_FAULT_ACCESS,
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

// PTE bits, from the privileged spec's Sv39 PTE figure.
const V = 1n << 0n;
const R = 1n << 1n;
const W = 1n << 2n;
const X = 1n << 3n;
const U = 1n << 4n;
const G = 1n << 5n;
const A = 1n << 6n;
const D = 1n << 7n;
const RSV54 = 1n << 54n;
const PBMT_NC = 1n << 61n;
const PBMT_3 = 3n << 61n;
const N = 1n << 63n;

/** A PTE whose PPN field (bits 53:10) holds pa >> 12. */
function pte(pa: bigint, flags: bigint): bigint {
  return ((pa >> 12n) << 10n) | flags;
}

function u64(v: bigint): U64 {
  return U64.of(v);
}

function put(mem: PhysMem, pa: number, v: bigint): void {
  mem.write64(pa, Number(v >> 32n), Number(v & 0xffffffffn));
}

function get(mem: PhysMem, pa: number): bigint {
  return mem.read64(pa, new U64()).toBigInt();
}

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
  assert.equal(r.status, status, `status (want ${status}, got ${r.status})`);
  assert.equal(r.stage, stage, "stage");
  assert.equal(r.level, level, "level");
}

// A Sv39 tree at fixed addresses: root, level-1 and level-0 tables.
const ROOT = 0x1000_0000;
const L1 = 0x1000_1000;
const L0 = 0x1000_2000;
// vpn2 = 1, vpn1 = 0x101, vpn0 = 0x105, offset 0x678.
const IOVA = 0x6030_5678n;
const IDX2 = 1;
const IDX1 = 0x101;
const IDX0 = 0x105;

/** Builds root -> L1 -> L0 down to `leafLevel` and stores `leaf` there for IOVA. */
function sv39With(leafLevel: number, leaf: bigint): PhysMem {
  const mem = new PhysMem();
  if (leafLevel === 2) {
    put(mem, ROOT + IDX2 * 8, leaf);
    return mem;
  }
  put(mem, ROOT + IDX2 * 8, pte(BigInt(L1), V));
  if (leafLevel === 1) {
    put(mem, L1 + IDX1 * 8, leaf);
    return mem;
  }
  put(mem, L1 + IDX1 * 8, pte(BigInt(L0), V));
  put(mem, L0 + IDX0 * 8, leaf);
  return mem;
}

describe("riscv: configurations", () => {
  it("names, geometry and tags", () => {
    assert.deepEqual(
      riscvConfigs.map((f) => f.name),
      ["riscv-sv39", "riscv-sv48", "riscv-sv57", "riscv-sv39x4", "riscv-sv48x4", "riscv-sv57x4"],
    );
    assert.deepEqual(
      riscvConfigs.map((f) => [f.levels, f.vaBits, f.tag]),
      [
        [3, 39, FMT_RISCV],
        [4, 48, FMT_RISCV],
        [5, 57, FMT_RISCV],
        [3, 41, FMT_RISCV_G],
        [4, 50, FMT_RISCV_G],
        [5, 59, FMT_RISCV_G],
      ],
    );
    assert.equal(findFormat("riscv-sv48x4"), riscvSv48x4);
    assert.equal(riscvSv39.tableLg2(2), 9);
    assert.equal(riscvSv39x4.tableLg2(2), 11, "G-stage root: 2048 entries (16 KiB)");
    assert.equal(riscvSv39x4.tableLg2(1), 9);
    assert.equal(riscvSv57x4.tableLg2(4), 11);
    assert.deepEqual(riscvSv39.leafSizesLg2(0), [12, 16], "4K and 64K NAPOT");
    assert.deepEqual(riscvSv39.leafSizesLg2(1), [21]);
    assert.deepEqual(riscvSv57.leafSizesLg2(4), [48]);
    assert.equal(riscvSv48.oaBits, 56);
    assert.equal(riscvSv48.hasDirty, false, "mainline Linux riscv.h has no dirty tracking");
    const cfg = riscvSv39x4.walkConfig(0x2000_4000);
    assert.equal(cfg.topLg2, 11);
    assert.throws(
      () => riscvSv39x4.walkConfig(0x2000_1000),
      RangeError,
      "root must be 16K aligned",
    );
    assert.equal(riscvSv39.walkConfig(ROOT).param & RISCV_PARAM_SUM, RISCV_PARAM_SUM);
  });
});

describe("riscv: decoding hand-written entries", () => {
  const f = riscvSv39;
  it("classifies entries as Linux's riscvpt_load_entry_raw does", () => {
    assert.equal(f.entryKind(u64(0n), 1), PT_ENTRY_EMPTY);
    assert.equal(f.entryKind(u64(pte(0x1234_5000n, R | A | U)), 1), PT_ENTRY_EMPTY, "V=0");
    assert.equal(f.entryKind(u64(pte(0x1234_5000n, V)), 1), PT_ENTRY_TABLE);
    assert.equal(f.entryKind(u64(pte(0x1234_5000n, V)), 0), PT_ENTRY_LEAF, "level 0 never points");
    assert.equal(f.entryKind(u64(pte(0x4000_0000n, V | X)), 2), PT_ENTRY_LEAF, "X-only leaf");
    assert.equal(f.entryKind(u64(pte(0x4000_0000n, V | R)), 2), PT_ENTRY_LEAF);
  });

  it("decodes table and leaf addresses, sizes and protections", () => {
    // 0x0000_0000_0400_0401: V, PPN 0x10001 -> table at 0x1000_1000.
    assert.equal(f.tablePa(u64(0x0000_0000_0400_0401n), 2), 0x1000_1000);
    // Highest PPN: bits 53:10 all ones -> 2^56 - 4096.
    assert.equal(f.tablePa(u64(0x003f_ffff_ffff_fc01n), 2), 2 ** 56 - 4096);
    // 1 GiB leaf at 0x80_4000_0000, R W X U A D.
    const giga = pte(0x80_4000_0000n, V | R | W | X | U | A | D);
    assert.equal(giga, 0x0000_0020_1000_00dfn);
    assert.equal(f.leafOa(u64(giga), 2), 0x80_4000_0000);
    assert.equal(f.leafSizeLg2(u64(giga), 2), 30);
    assert.equal(f.leafProt(u64(giga), 2), IOMMU_READ | IOMMU_WRITE);
    assert.equal(f.leafProt(u64(pte(0n, V | R | A | U)), 0), IOMMU_READ | IOMMU_NOEXEC);
    assert.equal(f.leafProt(u64(pte(0n, V | R | X | A)), 0), IOMMU_READ | IOMMU_PRIV);
    assert.equal(f.leafSizeLg2(u64(pte(0x5000n, V | R | A | U)), 0), 12);
  });

  it("decodes a 64 KiB NAPOT leaf (N=1, ppn[3:0]=0b1000)", () => {
    const napot = N | pte(0x8_0001_0000n | 0x8000n, V | R | W | U | A | D);
    assert.equal(napot, 0x8000_0002_0000_60d7n);
    assert.equal(f.entryKind(u64(napot), 0), PT_ENTRY_LEAF);
    assert.equal(f.leafSizeLg2(u64(napot), 0), 16);
    assert.equal(f.leafOa(u64(napot), 0), 0x8_0001_0000);
    assert.match(f.describe(u64(napot), 0), /^64K NAPOT page -> 0x800010000 \[V R W U A D N\]$/);
  });

  it("describes entries, flagging reserved encodings", () => {
    assert.equal(f.describe(u64(0n), 2), "invalid (V=0)");
    assert.equal(f.describe(u64(0x0000_0000_0400_0401n), 2), "table -> 0x10001000 [V]");
    assert.equal(
      f.describe(u64(pte(0x80_4000_0000n, V | R | X | U | G | A)), 2),
      "1G page -> 0x8040000000 [V R X U G A]",
    );
    assert.match(f.describe(u64(pte(0x1000n, V | W | U | A)), 0), /reserved: W without R/);
    assert.match(f.describe(u64(pte(0x1000n, V | A)), 1), /reserved: D\/A\/U in a pointer/);
    assert.match(f.describe(u64(pte(0x1000n, V)), 0), /reserved: pointer at level 0/);
    assert.match(f.describe(u64(pte(0x20_1000n, V | R | U | A)), 1), /misaligned superpage/);
    assert.match(f.describe(u64(pte(0x1000n, V | R | U | A | PBMT_NC)), 0), /PBMT=NC\]$/);
    assert.match(f.describe(u64(pte(0x1000n, V | R | U | A | RSV54)), 0), /bits 60:54/);
    assert.match(f.describe(u64(N | pte(0x4000n, V | R | U | A)), 0), /NAPOT size encoding/);
  });

  it("reads, clears and sets D", () => {
    const e = u64(pte(0x3000n, V | R | W | U | A | D));
    const out = new U64();
    assert.equal(f.isDirty(e, 0), true);
    f.clearDirty(e, 0, out);
    assert.equal(out.toBigInt(), pte(0x3000n, V | R | W | U | A));
    assert.equal(f.isDirty(out, 0), false);
    f.setDirty(out, 0, out);
    assert.equal(out.toBigInt(), e.toBigInt());
  });
});

describe("riscv: makeLeaf / makeTable produce Linux's bits", () => {
  const f = riscvSv39;
  const out = new U64();
  const leaf = (oa: number, sizeLg2: number, level: number, prot: number, slot = 0): bigint => {
    f.makeLeaf(oa, sizeLg2, level, slot, prot, out);
    return out.toBigInt();
  };
  it("4K leaves for each prot combination", () => {
    const oa = 0x1_2345_6000;
    const ppn = 0x48d1_5800n; // 0x123456 << 10
    assert.equal(leaf(oa, 12, 0, IOMMU_READ), ppn | 0x5bn, "V R X U A");
    assert.equal(leaf(oa, 12, 0, IOMMU_READ | IOMMU_WRITE), ppn | 0xdfn, "V R W X U A D");
    assert.equal(leaf(oa, 12, 0, IOMMU_WRITE), ppn | 0xdfn, "write implies read");
    assert.equal(leaf(oa, 12, 0, IOMMU_READ | IOMMU_NOEXEC), ppn | 0x53n, "V R U A");
    assert.equal(leaf(oa, 12, 0, IOMMU_READ | IOMMU_WRITE | IOMMU_NOEXEC), ppn | 0xd7n);
    assert.equal(leaf(oa, 12, 0, 0), ppn | 0x59n, "no prot: execute-only, V X U A");
    assert.equal(leaf(oa, 12, 0, IOMMU_READ | IOMMU_PRIV), ppn | 0x5bn, "PRIV is ignored");
    assert.equal(leaf(oa, 12, 0, IOMMU_READ | IOMMU_CACHE | IOMMU_MMIO), ppn | 0x5bn, "no PBMT");
    assert.throws(() => leaf(oa, 12, 0, IOMMU_NOEXEC), RangeError, "-EOPNOTSUPP in Linux");
  });
  it("superpages, the widest PPN and tables", () => {
    assert.equal(leaf(0x40_0020_0000, 21, 1, IOMMU_READ | IOMMU_WRITE), 0x0000_0010_0008_00dfn);
    assert.equal(leaf(2 ** 56 - 4096, 12, 0, IOMMU_READ), 0x003f_ffff_ffff_fc5bn);
    f.makeTable(0x1_2345_6000, 1, out);
    assert.equal(out.toBigInt(), 0x48d1_5801n, "tables are V | PPN");
    riscvSv39x4.makeTable(0x2000_4000, 2, out);
    assert.equal(out.toBigInt(), pte(0x2000_4000n, V));
    riscvSv48x4.makeLeaf(0x1_2345_6000, 12, 0, 0, IOMMU_READ, out);
    assert.equal(out.toBigInt(), 0x48d1_585bn, "G-stage leaves are the same, U set");
    assert.throws(() => leaf(0x20_0000, 21, 0, IOMMU_READ), RangeError);
  });
  it("a 64K NAPOT page is 16 identical entries with N and ppn[3:0] = 0b1000", () => {
    for (let slot = 0; slot < 16; slot++) {
      assert.equal(
        leaf(0x8_0001_0000, 16, 0, IOMMU_READ | IOMMU_WRITE, slot),
        0x8000_0002_0000_60dfn,
      );
    }
  });
});

describe("riscv: Sv39 / Sv48 / Sv57 translation", () => {
  const cfg = riscvSv39.walkConfig(ROOT);

  it("walks three levels to a 4K page above 4 GiB", () => {
    const mem = sv39With(0, pte(0xf_edcb_a987_6000n, V | R | W | U | A | D));
    const r = tr(mem, cfg, IOVA, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xf_edcb_a987_6678);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.perm, PERM_R | PERM_W);
    assert.equal(r.reads, 3);
  });

  it("2M and 1G superpages", () => {
    let r = tr(sv39With(1, pte(0x40_0020_0000n, V | R | X | U | A)), cfg, IOVA);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x40_0020_0000 + 0x10_5678);
    assert.equal(r.pageLg2, 21);
    assert.equal(r.perm, PERM_R | PERM_X);
    assert.equal(r.reads, 2);
    r = tr(sv39With(2, pte(0x80_4000_0000n, V | R | U | A)), cfg, IOVA);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x80_4000_0000 + 0x2030_5678);
    assert.equal(r.pageLg2, 30);
    assert.equal(r.reads, 1);
  });

  it("a 64K NAPOT page translates every one of its 16 slots", () => {
    const mem = sv39With(0, 0n);
    const napot = N | pte(0x8_0001_0000n | 0x8000n, V | R | W | U | A | D);
    for (let i = 0x100; i < 0x110; i++) put(mem, L0 + i * 8, napot);
    const r = tr(mem, cfg, IOVA, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x8_0001_5678, "ppn[3:0] comes from vpn[0][3:0]");
    assert.equal(r.pageLg2, 16);
    assert.equal(tr(mem, cfg, 0x6030_0000n).pa, 0x8_0001_0000);
    assert.equal(tr(mem, cfg, 0x6030_ffffn).pa, 0x8_0001_ffff);
    // Any other ppn[3:0] with N=1 is reserved.
    for (const low of [0x0n, 0x4000n, 0x9000n, 0xc000n]) {
      put(mem, L0 + IDX0 * 8, N | pte(0x8_0001_0000n | low, V | R | U | A));
      expectFault(tr(mem, cfg, IOVA), TR_FAULT_TRANSLATION, 0);
    }
  });

  it("Sv48: four levels, PPN bits above bit 31 of the entry", () => {
    const mem = new PhysMem();
    const root = 0x2000_0000;
    const t2 = 0x2000_1000;
    const t1 = 0x2000_2000;
    const t0 = 0x2000_3000;
    // vpn3 = 0x1ab, vpn2 = 0x0cd, vpn1 = 0x1ef, vpn0 = 0x012, offset 0x345.
    const iova = (0x1abn << 39n) | (0x0cdn << 30n) | (0x1efn << 21n) | (0x012n << 12n) | 0x345n;
    put(mem, root + 0x1ab * 8, pte(BigInt(t2), V));
    put(mem, t2 + 0x0cd * 8, pte(BigInt(t1), V));
    put(mem, t1 + 0x1ef * 8, pte(BigInt(t0), V));
    put(mem, t0 + 0x012 * 8, 0x0002_aaaa_aaaa_a85bn); // PPN 0xa_aaaa_aaaa, V R X U A
    const r = tr(mem, riscvSv48.walkConfig(root), iova);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0xa_aaaa_aaaa_a000 + 0x345);
    assert.equal(r.reads, 4);
    // A 512 GiB leaf at level 3.
    put(mem, root + 0x1ab * 8, pte(0x100_0000_0000n, V | R | W | U | A | D));
    const big = tr(mem, riscvSv48.walkConfig(root), iova, ACC_WRITE);
    assert.equal(big.status, TR_OK);
    assert.equal(big.pageLg2, 39);
    assert.equal(big.pa, 0x100_0000_0000 + Number(iova & ((1n << 39n) - 1n)));
  });

  it("Sv57: a 256 TiB leaf at level 4", () => {
    const mem = new PhysMem();
    const root = 0x3000_0000;
    const iova = (2n << 48n) | 0xabc_def0_1234n;
    put(mem, root + 2 * 8, pte(3n << 48n, V | R | U | A));
    const r = tr(mem, riscvSv57.walkConfig(root), iova);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pageLg2, 48);
    assert.equal(r.pa, 3 * 2 ** 48 + 0xabc_def0_1234);
    expectFault(tr(mem, riscvSv57.walkConfig(root), 1n << 57n), TR_FAULT_ADDRESS_SIZE, 4);
  });

  it("faults on invalid and reserved encodings (TRANSLATION, at the entry's level)", () => {
    const ok = V | R | W | U | A | D;
    const cases: [string, number, bigint, number][] = [
      ["V=0 leaf", 0, pte(0x5000n, R | W | U | A | D), 0],
      ["W without R", 0, pte(0x5000n, V | W | U | A | D), 0],
      ["W and X without R", 0, pte(0x5000n, V | W | X | U | A | D), 0],
      ["reserved bit 54", 0, pte(0x5000n, ok) | RSV54, 0],
      ["PBMT = 3", 0, pte(0x5000n, ok) | PBMT_3, 0],
      ["pointer at level 0", 0, pte(0x5000n, V), 0],
      ["N on a 2M leaf", 1, N | pte(0x20_0000n, ok), 1],
      ["A in a pointer", 1, pte(BigInt(L0), V | A), 1],
      ["U in a pointer", 1, pte(BigInt(L0), V | U), 1],
      ["D in a pointer", 2, pte(BigInt(L1), V | D), 2],
      ["PBMT in a pointer", 2, pte(BigInt(L1), V) | PBMT_NC, 2],
      ["misaligned 2M superpage", 1, pte(0x20_1000n, ok), 1],
      ["misaligned 1G superpage", 2, pte(0x4020_0000n, ok), 2],
    ];
    for (const [what, level, entry, faultLevel] of cases) {
      // Entries marked as pointers are placed above a valid subtree.
      const mem = sv39With(0, pte(0x5000n, ok));
      if (level === 0) put(mem, L0 + IDX0 * 8, entry);
      if (level === 1) put(mem, L1 + IDX1 * 8, entry);
      if (level === 2) put(mem, ROOT + IDX2 * 8, entry);
      const r = tr(mem, cfg, IOVA);
      assert.equal(r.status, TR_FAULT_TRANSLATION, what);
      assert.equal(r.level, faultLevel, what);
      assert.equal(r.stage, 1, what);
    }
    expectFault(tr(new PhysMem(), cfg, IOVA), TR_FAULT_TRANSLATION, 2);
    // RSW, G and the Svpbmt NC / IO types are fine on a leaf.
    const mem = sv39With(0, pte(0x5000n, ok | G | (3n << 8n)) | PBMT_NC);
    assert.equal(tr(mem, cfg, IOVA).status, TR_OK);
  });

  it("checks R, W, X and U (PERMISSION, at the leaf's level)", () => {
    const at = (flags: bigint, access: number, param?: number): TranslateResult => {
      const c = riscvSv39.walkConfig(ROOT);
      if (param !== undefined) c.param = param;
      return tr(sv39With(0, pte(0x5000n, flags)), c, IOVA, access);
    };
    expectFault(at(V | R | X | U | A | D, ACC_WRITE), TR_FAULT_PERMISSION, 0);
    expectFault(at(V | X | U | A, ACC_READ), TR_FAULT_PERMISSION, 0);
    assert.equal(at(V | X | U | A, ACC_EXEC).status, TR_OK, "execute-only");
    expectFault(at(V | R | U | A, ACC_READ | ACC_EXEC), TR_FAULT_PERMISSION, 0);
    // U=0: supervisor-only page.
    expectFault(at(V | R | W | A | D, ACC_READ), TR_FAULT_PERMISSION, 0);
    assert.equal(at(V | R | W | A | D, ACC_READ | ACC_PRIV).status, TR_OK);
    // U=1 from a privileged request: needs SUM, and never for execute.
    assert.equal(at(V | R | W | U | A | D, ACC_WRITE | ACC_PRIV).status, TR_OK, "SUM=1");
    expectFault(at(V | R | U | A, ACC_READ | ACC_PRIV, 0), TR_FAULT_PERMISSION, 0);
    expectFault(at(V | R | X | U | A, ACC_READ | ACC_EXEC | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    assert.equal(at(V | R | X | A, ACC_READ | ACC_EXEC | ACC_PRIV).status, TR_OK);
    // Permission is checked before superpage alignment (spec steps 5 then 6).
    const r = tr(sv39With(1, pte(0x20_1000n, V | R | U | A)), cfg, IOVA, ACC_WRITE);
    expectFault(r, TR_FAULT_PERMISSION, 1);
  });

  it("faults on IOVAs beyond the input size (ADDRESS_SIZE, top level)", () => {
    const mem = sv39With(0, pte(0x5000n, V | R | U | A));
    expectFault(tr(mem, cfg, 1n << 39n), TR_FAULT_ADDRESS_SIZE, 2);
    expectFault(tr(mem, cfg, 0xffff_ffff_ffff_f000n), TR_FAULT_ADDRESS_SIZE, 2);
    assert.equal(tr(mem, cfg, IOVA | (1n << 38n)).status, TR_FAULT_TRANSLATION, "in range");
  });

  it("without hardware A/D update: A=0 and D=0 on a write fault", () => {
    expectFault(tr(sv39With(0, pte(0x5000n, V | R | W | U)), cfg, IOVA), TR_FAULT_ACCESS, 0);
    const clean = sv39With(0, pte(0x5000n, V | R | W | U | A));
    assert.equal(tr(clean, cfg, IOVA, ACC_READ).status, TR_OK, "reads need only A");
    expectFault(tr(clean, cfg, IOVA, ACC_WRITE), TR_FAULT_PERMISSION, 0);
    expectFault(
      tr(sv39With(1, pte(0x20_0000n, V | R | W | U)), cfg, IOVA, ACC_WRITE),
      TR_FAULT_ACCESS,
      1,
    );
  });

  it("with hardware A/D update (SADE): A on access, D on write, leaf only", () => {
    const hw = riscvSv39.walkConfig(ROOT);
    hw.flags = WF_HW_AD;
    const mem = sv39With(0, pte(0x5000n, V | R | W | U));
    const root0 = get(mem, ROOT + IDX2 * 8);
    const l1 = get(mem, L1 + IDX1 * 8);
    mem.resetCounters();
    let r = tr(mem, hw, IOVA, ACC_READ);
    assert.equal(r.status, TR_OK);
    assert.equal(r.reads, 3);
    assert.equal(mem.writes, 1);
    assert.equal(get(mem, L0 + IDX0 * 8), pte(0x5000n, V | R | W | U | A));
    r = tr(mem, hw, IOVA, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(get(mem, L0 + IDX0 * 8), pte(0x5000n, V | R | W | U | A | D));
    assert.equal(get(mem, ROOT + IDX2 * 8), root0, "pointers are never updated");
    assert.equal(get(mem, L1 + IDX1 * 8), l1);
    mem.resetCounters();
    assert.equal(tr(mem, hw, IOVA, ACC_WRITE).status, TR_OK);
    assert.equal(mem.writes, 0, "nothing to update");
    // A denied write updates nothing.
    const ro = sv39With(0, pte(0x5000n, V | R | U));
    expectFault(tr(ro, hw, IOVA, ACC_WRITE), TR_FAULT_PERMISSION, 0);
    assert.equal(get(ro, L0 + IDX0 * 8), pte(0x5000n, V | R | U));
    // A NAPOT slot gets its own A/D.
    const nap = sv39With(0, 0n);
    const e = N | pte(0x8_0001_8000n, V | R | W | U);
    for (let i = 0x100; i < 0x110; i++) put(nap, L0 + i * 8, e);
    assert.equal(tr(nap, hw, IOVA, ACC_WRITE).status, TR_OK);
    assert.equal(get(nap, L0 + IDX0 * 8), e | A | D);
    assert.equal(get(nap, L0 + 0x100 * 8), e);
  });
});

describe("riscv: G-stage (Sv39x4 / Sv48x4 / Sv57x4)", () => {
  const root = 0x2000_4000; // 16 KiB aligned
  const t1 = 0x2001_0000;
  const t0 = 0x2001_1000;
  // Sv39x4: vpn2 = 0x405 uses GPA bit 40 (index > 511).
  const gpa = (0x405n << 30n) | (0x101n << 21n) | (0x105n << 12n) | 0x678n;

  function gstage(leafFlags: bigint): PhysMem {
    const mem = new PhysMem();
    put(mem, root + 0x405 * 8, pte(BigInt(t1), V));
    put(mem, t1 + 0x101 * 8, pte(BigInt(t0), V));
    put(mem, t0 + 0x105 * 8, pte(0x7_0000_0000n, leafFlags));
    return mem;
  }

  it("Sv39x4 indexes a 2048-entry root with GPA bits 40:30", () => {
    const mem = gstage(V | R | W | X | U | A | D);
    const cfg = riscvSv39x4.walkConfig(root);
    const r = tr(mem, cfg, gpa, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x7_0000_0678);
    assert.equal(r.perm, PERM_R | PERM_W | PERM_X);
    assert.equal(r.reads, 3);
    expectFault(tr(mem, cfg, 1n << 41n), TR_FAULT_ADDRESS_SIZE, 2);
    // The same GPA is out of range for a first-stage Sv39 walk.
    expectFault(tr(mem, riscvSv39.walkConfig(root), gpa), TR_FAULT_ADDRESS_SIZE, 2);
  });

  it("every G-stage access is a user access: U=0 faults, privileged or not", () => {
    const mem = gstage(V | R | W | A | D);
    const cfg = riscvSv39x4.walkConfig(root);
    expectFault(tr(mem, cfg, gpa, ACC_READ), TR_FAULT_PERMISSION, 0);
    expectFault(tr(mem, cfg, gpa, ACC_READ | ACC_PRIV), TR_FAULT_PERMISSION, 0);
  });

  it("GADE: hardware A/D update in G-stage leaves", () => {
    const mem = gstage(V | R | W | U);
    const cfg = riscvSv39x4.walkConfig(root);
    expectFault(tr(mem, cfg, gpa, ACC_READ), TR_FAULT_ACCESS, 0);
    cfg.flags = WF_HW_AD;
    assert.equal(tr(mem, cfg, gpa, ACC_WRITE).status, TR_OK);
    assert.equal(get(mem, t0 + 0x105 * 8), pte(0x7_0000_0000n, V | R | W | U | A | D));
  });

  it("Sv57x4 uses GPA bits 58:48 for the root and a 512G leaf", () => {
    const mem = new PhysMem();
    const r5 = 0x4000_0000;
    const t3 = 0x4000_8000;
    const g = (0x7ffn << 48n) | (5n << 39n) | 0x1234_5678n;
    put(mem, r5 + 0x7ff * 8, pte(BigInt(t3), V));
    put(mem, t3 + 5 * 8, pte(1n << 47n, V | R | U | A));
    const r = tr(mem, riscvSv57x4.walkConfig(r5), g);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 2 ** 47 + 0x1234_5678);
    assert.equal(r.pageLg2, 39);
    assert.equal(r.reads, 2);
    expectFault(tr(mem, riscvSv57x4.walkConfig(r5), 1n << 59n), TR_FAULT_ADDRESS_SIZE, 4);
  });
});

describe("riscv: nested translation", () => {
  // Stage-1 tables at GPAs 0x10_0000.., data at GPA 0x18_0000; the G-stage maps each GPA page
  // to HPA = GPA + 0x4000_0000 with 4K leaves, so every stage-2 walk reads all its levels.
  const SHIFT = 0x4000_0000;
  const s1Tables = [0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000];
  const dataGpa = 0x18_0000;

  /** G-stage Sv48x4 (4 levels) or Sv39x4 (3 levels) with 4K leaves for the given GPAs. */
  function buildG(mem: PhysMem, levels: 3 | 4, gpas: number[], leafFlags: bigint): number {
    const groot = 0x8000_0000;
    let table = groot;
    // All GPAs are below 2 MiB, so every index above level 0 is 0.
    for (let level = levels - 1; level > 0; level--) {
      const next = 0x8010_0000 + level * 0x1000;
      put(mem, table, pte(BigInt(next), V));
      table = next;
    }
    for (const g of gpas) put(mem, table + (g >>> 12) * 8, pte(BigInt(g + SHIFT), leafFlags));
    return groot;
  }

  /** Sv48 stage 1 mapping IOVA 0x1234_5000 (vpn3 0, vpn2 0, vpn1 0x91, vpn0 0x145). */
  function buildS1Sv48(mem: PhysMem, leaf: bigint): number {
    const [t3, t2, t1, t0] = s1Tables;
    put(mem, t3 + SHIFT, pte(BigInt(t2), V));
    put(mem, t2 + SHIFT, pte(BigInt(t1), V));
    put(mem, t1 + SHIFT + 0x91 * 8, pte(BigInt(t0), V));
    put(mem, t0 + SHIFT + 0x145 * 8, leaf);
    return t3;
  }
  const iova = 0x1234_5abcn;

  it("Sv48 over Sv48x4 reads (4+1)(4+1)-1 = 24 entries", () => {
    const mem = new PhysMem();
    const s1root = buildS1Sv48(mem, pte(BigInt(dataGpa), V | R | W | U | A | D));
    const groot = buildG(mem, 4, [...s1Tables, dataGpa], V | R | W | X | U | A | D);
    const r = tr(mem, riscvSv48.walkConfig(s1root), iova, ACC_WRITE, riscvSv48x4.walkConfig(groot));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, dataGpa + SHIFT + 0xabc);
    assert.equal(r.reads, 24);
    assert.equal(r.perm, PERM_R | PERM_W, "stage 1 has no X");
    assert.equal(r.pageLg2, 12);
  });

  it("the page size is the smaller of the two stages'", () => {
    const mem = new PhysMem();
    const [t3, t2, t1] = s1Tables;
    put(mem, t3 + SHIFT, pte(BigInt(t2), V));
    put(mem, t2 + SHIFT, pte(BigInt(t1), V));
    put(mem, t1 + SHIFT + 0x91 * 8, pte(0n, V | R | U | A)); // 2M stage-1 page at GPA 0
    const groot = buildG(mem, 4, [t3, t2, t1, 0x14_5000], V | R | U | A);
    const r = tr(mem, riscvSv48.walkConfig(t3), iova, ACC_READ, riscvSv48x4.walkConfig(groot));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x14_5abc + SHIFT);
    assert.equal(r.pageLg2, 12);
    assert.equal(r.reads, 3 * 5 + 4);
  });

  it("reports G-stage faults as stage 2 with the failing GPA", () => {
    const mem = new PhysMem();
    const s1root = buildS1Sv48(mem, pte(BigInt(dataGpa), V | R | W | U | A | D));
    // The table at GPA 0x10_2000 is not mapped by the G-stage.
    const groot = buildG(mem, 4, [0x10_0000, 0x10_1000, 0x10_3000, dataGpa], V | R | U | A);
    const g = riscvSv48x4.walkConfig(groot);
    let r = tr(mem, riscvSv48.walkConfig(s1root), iova, ACC_READ, g);
    expectFault(r, TR_FAULT_TRANSLATION, 0, 2);
    assert.equal(r.faultGpa, 0x10_2000);
    // A stage-2 write to a read-only G-stage page faults at stage 2 on the final access.
    put(mem, 0x8010_1000 + (0x10_2000 >>> 12) * 8, pte(BigInt(0x10_2000 + SHIFT), V | R | U | A));
    r = tr(mem, riscvSv48.walkConfig(s1root), iova, ACC_WRITE, g);
    expectFault(r, TR_FAULT_PERMISSION, 0, 2);
    assert.equal(r.faultGpa, dataGpa + 0xabc);
    // Stage-1 faults stay stage 1.
    put(mem, 0x10_3000 + SHIFT + 0x145 * 8, 0n);
    expectFault(tr(mem, riscvSv48.walkConfig(s1root), iova, ACC_READ, g), TR_FAULT_TRANSLATION, 0);
  });

  it("x86_64 4-level over Sv39x4 reads (4+1)(3+1)-1 = 19 entries", () => {
    const mem = new PhysMem();
    // x86-64 entries (Intel SDM 4.5): table = addr | P RW US A (0x27), 4K leaf adds D (0x67).
    const [t4, t3, t2, t1] = s1Tables;
    put(mem, t4 + SHIFT, BigInt(t3) | 0x27n);
    put(mem, t3 + SHIFT, BigInt(t2) | 0x27n);
    put(mem, t2 + SHIFT + 0x91 * 8, BigInt(t1) | 0x27n);
    put(mem, t1 + SHIFT + 0x145 * 8, BigInt(dataGpa) | 0x67n);
    const groot = buildG(mem, 3, [...s1Tables, dataGpa], V | R | W | U | A | D);
    const r = tr(mem, x86_64Format4.walkConfig(t4), iova, ACC_WRITE, riscvSv39x4.walkConfig(groot));
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, dataGpa + SHIFT + 0xabc);
    assert.equal(r.reads, 19);
    assert.equal(r.perm, PERM_R | PERM_W, "G-stage leaf has no X");
  });
});

describe("riscv: generic walker on RISC-V tables", () => {
  it("maps a 64K NAPOT group with Linux's bits and traces it", () => {
    const mem = new PhysMem();
    const pt = new PageTable(riscvSv39, new PageAllocator(mem));
    pt.map(0x6030_0000n, 0x8_0001_0000, 0x1_0000n, IOMMU_READ | IOMMU_WRITE);
    const t = pt.trace(IOVA);
    assert.equal(t.steps.length, 3);
    assert.deepEqual(
      t.steps.map((s) => [s.level, s.index, s.kind]),
      [
        [2, IDX2, "table"],
        [1, IDX1, "table"],
        [0, IDX0, "leaf"],
      ],
    );
    assert.equal(t.steps[2].raw, 0x8000_0002_0000_60dfn);
    assert.equal(t.steps[2].meaning, "64K NAPOT page -> 0x800010000 [V R W X U A D N]");
    assert.equal(t.pa, 0x8_0001_5678);
    assert.equal(t.pageLg2, 16);
    const l0 = t.steps[2].tablePa;
    for (let i = 0x100; i < 0x110; i++) assert.equal(get(mem, l0 + i * 8), 0x8000_0002_0000_60dfn);
    assert.equal(get(mem, l0 + 0x110 * 8), 0n);
    assert.equal(t.steps[0].raw, pte(BigInt(t.steps[1].tablePa), V), "tables are V | PPN");
    assert.equal(pt.unmap(0x6030_0000n, 0x1_0000n), 0x1_0000n);
    assert.equal(pt.iovaToPhys(IOVA), undefined);
  });

  it("traces a hand-built Sv39x4 tree through a root index above 511", () => {
    const mem = new PhysMem();
    const alloc = new PageAllocator(mem);
    const pt = new PageTable(riscvSv39x4, alloc);
    const t1 = alloc.alloc(12);
    const gpa = (0x7ffn << 30n) | (0x1ffn << 21n) | 0x12_3456n;
    put(mem, pt.root + 0x7ff * 8, pte(BigInt(t1), V));
    put(mem, t1 + 0x1ff * 8, pte(0x1_0000_0000n, V | R | W | U | A | D));
    const t = pt.trace(gpa);
    assert.deepEqual(
      t.steps.map((s) => [s.level, s.index, s.entryPa]),
      [
        [2, 0x7ff, pt.root + 0x7ff * 8],
        [1, 0x1ff, t1 + 0x1ff * 8],
      ],
    );
    assert.equal(t.steps[1].meaning, "2M page -> 0x100000000 [V R W U A D]");
    assert.equal(t.pa, 0x1_0012_3456);
    assert.equal(pt.iovaToPhys(gpa), 0x1_0012_3456);
    const r = tr(mem, pt.walkConfig(), gpa, ACC_WRITE);
    assert.equal(r.status, TR_OK);
    assert.equal(r.pa, 0x1_0012_3456);
    assert.equal(r.pageLg2, 21);
  });
});

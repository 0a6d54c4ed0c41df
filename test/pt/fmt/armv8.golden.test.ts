/**
 * Golden tests for the ARM VMSAv8-64 formats (src/pt/fmt/armv8.ts). Tables are written by hand
 * from the Arm ARM D8.3 descriptor bit positions (bits[1:0] type, AttrIndx/MemAttr 5:2, AP/S2AP
 * 7:6, SH 9:8, AF 10, nG 11, address 47:G, DBM 51, Contiguous 52, PXN 53, UXN/XN 54, PXNTable
 * 59, UXNTable 60, APTable 62:61), never through makeLeaf / makeTable.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../../src/mem/alloc.ts";
import { PhysMem } from "../../../src/mem/phys.ts";
import { U64 } from "../../../src/mem/u64.ts";
import {
  ArmV8Format,
  armv8Configs,
  armv8S1_4k39,
  armv8S1_4k48,
  armv8S1_4k48Split,
  armv8S1_16k48,
  armv8S1_64k48,
  armv8S2_4k40,
  armv8S2_4k48,
  armv8S2_16k40,
  armv8S2_16k48,
} from "../../../src/pt/fmt/armv8.ts";
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
  FMT_ARMV8_S1,
  FMT_ARMV8_S2,
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
  WF_HW_A,
  WF_HW_AD,
} from "../../../src/pt/translate.ts";
import { PageTable } from "../../../src/pt/walker.ts";

// Descriptor bits (Arm ARM D8.3, VMSAv8-64 descriptor formats).
const TABLE = 3n; // bits[1:0] = 0b11 at ARM levels 0-2
const PAGE = 3n; // bits[1:0] = 0b11 at ARM level 3
const BLOCK = 1n; // bits[1:0] = 0b01
const ATTR_CACHE = 1n << 2n; // AttrIndx = 1 (io-pgtable-arm's cacheable MAIR slot)
const ATTR_DEV = 2n << 2n; // AttrIndx = 2 (device)
const AP_EL0 = 1n << 6n; // AP[1]
const AP_RO = 1n << 7n; // AP[2]
const S2AP_R = 1n << 6n;
const S2AP_W = 1n << 7n;
const MEMATTR_DEV = 1n << 2n;
const MEMATTR_NC = 5n << 2n;
const MEMATTR_WB = 0xfn << 2n;
const SH_OS = 2n << 8n;
const SH_IS = 3n << 8n;
const AF = 1n << 10n;
const NG = 1n << 11n;
const DBM = 1n << 51n;
const CONT = 1n << 52n;
const PXN = 1n << 53n;
const UXN = 1n << 54n; // stage 2: XN
const PXN_TABLE = 1n << 59n;
const UXN_TABLE = 1n << 60n;
const AP_TABLE_NO_EL0 = 1n << 61n;
const AP_TABLE_RO = 1n << 62n;

const PRIV_R = ACC_READ | ACC_PRIV;

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
  access = PRIV_R,
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

function expectOk(r: TranslateResult, pa: number, pageLg2: number, perm: number): void {
  assert.equal(r.status, TR_OK, `status ${r.status}`);
  assert.equal(r.pa, pa, `pa 0x${r.pa.toString(16)}`);
  assert.equal(r.pageLg2, pageLg2, "pageLg2");
  assert.equal(r.perm, perm, "perm");
}

/** Input address from per-level indexes, top table first, for a 2^g granule. */
function ia(g: number, idx: number[], off: number): bigint {
  const stride = BigInt(g - 3);
  let v = 0n;
  for (let k = 0; k < idx.length; k++) {
    v |= BigInt(idx[k]) << (BigInt(g) + stride * BigInt(idx.length - 1 - k));
  }
  return v + BigInt(off);
}

// A 4K stage-1 48-bit tree: ARM L0 -> L1 -> L2 -> L3 tables at fixed addresses.
const T0 = 0x1000_0000;
const T1 = 0x1000_1000;
const T2 = 0x1000_2000;
const T3 = 0x1000_3000;
const I0 = 1;
const I1 = 2;
const I2 = 3;
const I3 = 4;
/** 0x80_8060_4123: L0 index 1, L1 index 2, L2 index 3, L3 index 4, offset 0x123. */
const IOVA = ia(12, [I0, I1, I2, I3], 0x123);

/**
 * Builds the 4K tree for IOVA down to ARM level `armLeafLevel` and puts `leaf` there.
 * `tableAttrs` is ORed into the L0 table descriptor (hierarchical attributes).
 */
function tree4k(armLeafLevel: number, leaf: bigint, tableAttrs = 0n): PhysMem {
  const mem = new PhysMem();
  put(mem, T0 + I0 * 8, BigInt(T1) | TABLE | tableAttrs);
  if (armLeafLevel === 1) {
    put(mem, T1 + I1 * 8, leaf);
    return mem;
  }
  put(mem, T1 + I1 * 8, BigInt(T2) | TABLE);
  if (armLeafLevel === 2) {
    put(mem, T2 + I2 * 8, leaf);
    return mem;
  }
  put(mem, T2 + I2 * 8, BigInt(T3) | TABLE);
  put(mem, T3 + I3 * 8, leaf);
  return mem;
}

describe("armv8: configurations", () => {
  it("names, tags and geometry follow T0SZ, SL0 and the granule", () => {
    // [name, tag, levels, topLg2, ARM start level, concatenated tables, T0SZ, SL0]
    const want: [string, number, number, number, number, number, number, number][] = [
      ["armv8-s1-4k-48", FMT_ARMV8_S1, 4, 9, 0, 1, 16, -1],
      ["armv8-s1-4k-48-split", FMT_ARMV8_S1, 4, 9, 0, 1, 16, -1],
      ["armv8-s1-4k-39", FMT_ARMV8_S1, 3, 9, 1, 1, 25, -1],
      ["armv8-s1-16k-48", FMT_ARMV8_S1, 4, 1, 0, 1, 16, -1],
      ["armv8-s1-16k-47", FMT_ARMV8_S1, 3, 11, 1, 1, 17, -1],
      ["armv8-s1-64k-48", FMT_ARMV8_S1, 3, 6, 1, 1, 16, -1],
      ["armv8-s1-64k-42", FMT_ARMV8_S1, 2, 13, 2, 1, 22, -1],
      ["armv8-s2-4k-40-sl0=1", FMT_ARMV8_S2, 3, 10, 1, 2, 24, 1],
      ["armv8-s2-4k-42-sl0=1", FMT_ARMV8_S2, 3, 12, 1, 8, 22, 1],
      ["armv8-s2-4k-48-sl0=2", FMT_ARMV8_S2, 4, 9, 0, 1, 16, 2],
      ["armv8-s2-16k-48-sl0=2", FMT_ARMV8_S2, 3, 12, 1, 2, 16, 2],
      ["armv8-s2-16k-40-sl0=1", FMT_ARMV8_S2, 2, 15, 2, 16, 24, 1],
      ["armv8-s2-64k-48-sl0=2", FMT_ARMV8_S2, 3, 6, 1, 1, 16, 2],
    ];
    const got = armv8Configs.map((f) => {
      const a = f as ArmV8Format;
      return [a.name, a.tag, a.levels, a.topLg2, a.startLevel, a.concatenated, a.t0sz, a.sl0];
    });
    assert.deepEqual(got, want);
    for (const f of armv8Configs) {
      assert.equal(findFormat(f.name), f, `${f.name} is registered`);
      assert.equal(f.hasDirty, true);
      assert.equal(f.oaBits, 48);
      assert.equal(f.unmapPolicy, f.name.endsWith("-split") ? "split" : "refuse");
    }
  });

  it("page, block and contiguous sizes per granule and level", () => {
    const sizes = (f: ArmV8Format) =>
      Array.from({ length: f.levels }, (_, l) => [f.itemLg2(l), ...f.leafSizesLg2(l)]);
    // 4K: 4K (x16 = 64K), 2M (x16 = 32M), 1G (x16 = 16G), 512G table only.
    assert.deepEqual(sizes(armv8S1_4k48), [[12, 12, 16], [21, 21, 25], [30, 30, 34], [39]]);
    // 16K: 16K (x128 = 2M), 32M (x32 = 1G), 64G and 128T tables only.
    assert.deepEqual(sizes(armv8S1_16k48), [[14, 14, 21], [25, 25, 30], [36], [47]]);
    // 64K: 64K (x32 = 2M), 512M (x32 = 16G), 4T table only.
    assert.deepEqual(sizes(armv8S1_64k48), [[16, 16, 21], [29, 29, 34], [42]]);
    assert.equal(armv8S1_16k48.tableLg2(3), 1, "the 16K ARM L0 table has 2 entries");
    assert.equal(armv8S1_16k48.tableLg2(2), 11);
    assert.equal(armv8S2_16k40.tableLg2(1), 15, "16 concatenated 2048-entry tables");
    assert.equal(armv8S2_16k40.tableLg2(0), 11);
  });

  it("fills the WalkConfig fields it documents", () => {
    const cfg = armv8S2_4k40.walkConfig(0x4000_0000);
    assert.deepEqual(
      [cfg.tag, cfg.root, cfg.levels, cfg.vaBits, cfg.granuleLg2, cfg.strideLg2, cfg.topLg2],
      [FMT_ARMV8_S2, 0x4000_0000, 3, 40, 12, 9, 10],
    );
    assert.equal(cfg.param, 48, "param: output address size in bits");
    const c16 = armv8S1_16k48.walkConfig(0x4000_0000);
    assert.deepEqual(
      [c16.tag, c16.granuleLg2, c16.strideLg2, c16.topLg2],
      [FMT_ARMV8_S1, 14, 11, 1],
    );
  });

  it("rejects impossible starting levels", () => {
    // 48-bit IPA from ARM level 1 with 4K would need 512 concatenated tables (max 16).
    assert.throws(
      () => new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 48, sl0: 1 }),
      RangeError,
    );
    // SL0 = 3 is reserved with 4K (no ARM level -1 without LPA2) and 64K has no ARM level 0.
    assert.throws(
      () => new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 40, sl0: 3 }),
      RangeError,
    );
    assert.throws(
      () => new ArmV8Format({ stage: 2, granuleLg2: 16, vaBits: 48, sl0: 3 }),
      RangeError,
    );
    // 40-bit from ARM level 0 with 4K would be a 2-entry level-0 table: legal at stage 2.
    const s2l0 = new ArmV8Format({ stage: 2, granuleLg2: 12, vaBits: 40, sl0: 2 });
    assert.deepEqual([s2l0.levels, s2l0.topLg2, s2l0.name], [4, 1, "armv8-s2-4k-40-sl0=2"]);
  });
});

describe("armv8: decoding hand-written entries", () => {
  const f = armv8S1_4k48;
  it("classifies descriptors by bits[1:0] and level", () => {
    assert.equal(f.entryKind(u64(0n), 2), PT_ENTRY_EMPTY);
    assert.equal(f.entryKind(u64(0x4000_1002n), 2), PT_ENTRY_EMPTY, "bit 0 clear: invalid");
    assert.equal(f.entryKind(u64(0x4000_1003n), 3), PT_ENTRY_TABLE);
    assert.equal(f.entryKind(u64(0x4000_1003n), 1), PT_ENTRY_TABLE);
    assert.equal(f.entryKind(u64(0x4000_1003n), 0), PT_ENTRY_LEAF, "0b11 at ARM L3 is a page");
    assert.equal(f.entryKind(u64(0x4000_0401n), 2), PT_ENTRY_LEAF, "1G block at ARM L1");
    assert.equal(f.entryKind(u64(0x4020_0401n), 1), PT_ENTRY_LEAF, "2M block at ARM L2");
    assert.equal(f.entryKind(u64(0x4000_0401n), 3), PT_ENTRY_EMPTY, "no blocks at 4K ARM L0");
    assert.equal(f.entryKind(u64(0x4000_1401n), 0), PT_ENTRY_EMPTY, "0b01 at ARM L3: reserved");
    // 16K and 64K have no ARM level-1 blocks (without LPA/LPA2).
    assert.equal(armv8S1_16k48.entryKind(u64(0x10_0000_0401n), 2), PT_ENTRY_EMPTY);
    assert.equal(armv8S1_64k48.entryKind(u64(0x400_0000_0401n), 2), PT_ENTRY_EMPTY);
    assert.equal(armv8S1_64k48.entryKind(u64(0x2000_0401n), 1), PT_ENTRY_LEAF, "512M block");
  });

  it("decodes addresses, sizes and protections", () => {
    // Table at 0xfedc_ba98_7000 (bits 47:12), with APTable/NSTable bits that are not address.
    const t = 0xc000_fedc_ba98_7003n;
    assert.equal(f.tablePa(u64(t), 3), 0xfedc_ba98_7000);
    // 64K granule: bits 15:12 are not part of the table address.
    assert.equal(armv8S1_64k48.tablePa(u64(0x1234_5678_f003n), 2), 0x1234_5678_0000);
    // 2M block, EL0 RW, cacheable, nG, DBM writable-dirty.
    const blk = 0x0008_0012_3460_0f45n;
    assert.equal(blk, 0x12_3460_0000n | BLOCK | ATTR_CACHE | AP_EL0 | SH_IS | AF | NG | DBM);
    assert.equal(f.leafOa(u64(blk), 1), 0x12_3460_0000);
    assert.equal(f.leafSizeLg2(u64(blk), 1), 21);
    assert.equal(f.leafProt(u64(blk), 1), IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    // The 5th entry of a contiguous 64K group maps 0x5_0000_4000 in a group at 0x5_0000_0000.
    const c = 0x5_0000_4000n | PAGE | AF | AP_RO | AP_EL0 | CONT | UXN | PXN;
    assert.equal(f.leafOa(u64(c), 0), 0x5_0000_0000);
    assert.equal(f.leafSizeLg2(u64(c), 0), 16);
    assert.equal(f.leafProt(u64(c), 0), IOMMU_READ | IOMMU_NOEXEC);
    // A contiguous 1G block group is 16G: the group base clears address bits 33:30.
    const g = 0x7_c000_0000n | BLOCK | AF | CONT;
    assert.equal(f.leafOa(u64(g), 2), 0x4_0000_0000);
    assert.equal(f.leafSizeLg2(u64(g), 2), 34);
    // EL1-only, device memory: PRIV | MMIO; writable-clean (DBM + AP[2]) is still writable.
    const dev = 0x9000n | PAGE | AF | ATTR_DEV | AP_RO | DBM;
    assert.equal(f.leafProt(u64(dev), 0), IOMMU_READ | IOMMU_WRITE | IOMMU_PRIV | IOMMU_MMIO);
    // Stage 2: S2AP, MemAttr and XN.
    const s2 = armv8S2_4k48;
    assert.equal(
      s2.leafProt(u64(0x9000n | PAGE | AF | S2AP_W | MEMATTR_WB), 0),
      IOMMU_WRITE | IOMMU_CACHE,
    );
    assert.equal(
      s2.leafProt(u64(0x9000n | PAGE | AF | S2AP_R | MEMATTR_DEV | UXN), 0),
      IOMMU_READ | IOMMU_MMIO | IOMMU_NOEXEC,
    );
    assert.equal(
      s2.leafProt(u64(0x9000n | PAGE | AF | S2AP_R | DBM | MEMATTR_NC), 0),
      IOMMU_READ | IOMMU_WRITE,
    );
    // 16K contiguous page group: 128 x 16K = 2M.
    const c16 = 0x8_0002_4000n | PAGE | AF | CONT;
    assert.equal(armv8S1_16k48.leafSizeLg2(u64(c16), 0), 21);
    assert.equal(armv8S1_16k48.leafOa(u64(c16), 0), 0x8_0000_0000);
    assert.equal(armv8S1_16k48.leafSizeLg2(u64(0x4_0000_0000n | BLOCK | AF | CONT), 1), 30);
    assert.equal(armv8S1_64k48.leafSizeLg2(u64(0x4_0000_0000n | PAGE | AF | CONT), 0), 21);
  });

  it("describes entries in ARM terms", () => {
    assert.match(f.describe(u64(0n), 0), /invalid \(ARM L3\)/);
    assert.match(f.describe(u64(0x4000_0401n), 3), /reserved: block descriptor at ARM L0/);
    assert.match(
      f.describe(u64(BigInt(T1) | TABLE | AP_TABLE_RO | PXN_TABLE), 3),
      /ARM L0 table -> 0x10001000 \[APTable.RO PXNTable\]/,
    );
    assert.match(
      f.describe(u64(0x12_3460_0000n | BLOCK | ATTR_CACHE | AP_EL0 | SH_IS | AF | NG | DBM), 1),
      /ARM L2 2M block -> 0x1234600000 \[AF EL1\+EL0:RW DBM\(dirty\) AttrIndx=1 nG SH=IS\]/,
    );
    assert.match(
      f.describe(u64(0x5_0000_4000n | PAGE | AF | AP_RO | CONT | UXN), 0),
      /ARM L3 4K page \(contiguous 64K\) -> 0x500004000 \[AF EL1:RO AttrIndx=0 UXN SH=NS\]/,
    );
    assert.match(
      armv8S2_4k40.describe(u64(0x4000_0000n | BLOCK | S2AP_R | DBM | MEMATTR_WB | SH_IS), 2),
      /ARM L1 1G block -> 0x40000000 \[noAF S2AP=R- DBM\(clean\) MemAttr=0xf SH=IS\]/,
    );
  });
});

describe("armv8: stage-1 data-plane walks (4K, 48-bit)", () => {
  const cfg = armv8S1_4k48.walkConfig(T0);

  it("translates a 4K page through four levels", () => {
    const mem = tree4k(3, 0x4_5678_9000n | PAGE | AF | AP_EL0 | SH_IS | ATTR_CACHE | NG);
    mem.resetCounters();
    // EL1: read/write; no execute, since the page is writable at EL0 (implied PXN).
    expectOk(tr(mem, cfg, IOVA), 0x4_5678_9123, 12, PERM_R | PERM_W);
    assert.equal(res.reads, 4);
    assert.equal(mem.reads, 4);
    assert.equal(mem.writes, 0, "no hardware update without HA");
    // EL0: read, write and execute.
    expectOk(tr(mem, cfg, IOVA, ACC_READ | ACC_WRITE), 0x4_5678_9123, 12, PERM_R | PERM_W | PERM_X);
  });

  it("translates 2M and 1G blocks", () => {
    const m2 = tree4k(2, 0x7_0020_0000n | BLOCK | AF | AP_RO);
    expectOk(tr(m2, cfg, IOVA), 0x7_0020_0000 + 0x4123, 21, PERM_R | PERM_X);
    assert.equal(res.reads, 3);
    const m1 = tree4k(1, 0x2_4000_0000n | BLOCK | AF);
    expectOk(tr(m1, cfg, IOVA), 0x2_4000_0000 + 0x60_4123, 30, PERM_R | PERM_W | PERM_X);
    assert.equal(res.reads, 2);
    // Address bits below the block size in a block descriptor are not part of the output.
    const m3 = tree4k(2, 0x7_0020_0000n | 0x1f_f000n | BLOCK | AF);
    expectOk(tr(m3, cfg, IOVA), 0x7_0020_4123, 21, PERM_R | PERM_W | PERM_X);
  });

  it("reports the contiguous size as the page size", () => {
    // IOVA's L3 index 4 lies in the group of entries 0..15; entry 4 maps its own 4K.
    const m = tree4k(3, 0x9_0000_4000n | PAGE | AF | CONT);
    expectOk(tr(m, cfg, IOVA), 0x9_0000_4123, 16, PERM_R | PERM_W | PERM_X);
    const b = tree4k(2, 0x9_0060_0000n | BLOCK | AF | CONT);
    expectOk(tr(b, cfg, IOVA), 0x9_0060_4123, 25, PERM_R | PERM_W | PERM_X);
  });

  it("faults on invalid descriptors at the level that holds them", () => {
    expectFault(tr(new PhysMem(), cfg, IOVA), TR_FAULT_TRANSLATION, 3);
    const m = tree4k(3, 0n);
    expectFault(tr(m, cfg, IOVA), TR_FAULT_TRANSLATION, 0);
    put(m, T2 + I2 * 8, BigInt(T3) | 2n); // bit 0 clear
    expectFault(tr(m, cfg, IOVA), TR_FAULT_TRANSLATION, 1);
    // A block descriptor at 4K ARM L0 is reserved.
    const r0 = new PhysMem();
    put(r0, T0 + I0 * 8, 0x80_0000_0000n | BLOCK | AF);
    expectFault(tr(r0, cfg, IOVA), TR_FAULT_TRANSLATION, 3);
    // 0b01 at ARM L3 is reserved.
    const r3 = tree4k(3, 0x4000_0000n | BLOCK | AF);
    expectFault(tr(r3, cfg, IOVA), TR_FAULT_TRANSLATION, 0);
  });

  it("faults with ADDRESS_SIZE beyond the input or output size", () => {
    const m = tree4k(3, 0x4000_0000n | PAGE | AF);
    expectFault(tr(m, cfg, 1n << 48n), TR_FAULT_ADDRESS_SIZE, 3);
    expectFault(tr(m, cfg, 0xffff_ffff_ffff_f000n), TR_FAULT_ADDRESS_SIZE, 3);
    expectFault(tr(m, armv8S1_4k39.walkConfig(T0), 1n << 39n), TR_FAULT_ADDRESS_SIZE, 2);
    // OA bit 48 in a leaf, and in a table descriptor.
    put(m, T3 + I3 * 8, (1n << 48n) | 0x4000_0000n | PAGE | AF);
    expectFault(tr(m, cfg, IOVA), TR_FAULT_ADDRESS_SIZE, 0);
    put(m, T3 + I3 * 8, 0x4000_0000n | PAGE | AF);
    put(m, T1 + I1 * 8, (1n << 49n) | BigInt(T2) | TABLE);
    expectFault(tr(m, cfg, IOVA), TR_FAULT_ADDRESS_SIZE, 2);
    // A 40-bit output size (IPS = 2) faults an output at 2^40.
    put(m, T1 + I1 * 8, BigInt(T2) | TABLE);
    put(m, T3 + I3 * 8, (1n << 40n) | PAGE | AF);
    const c40 = armv8S1_4k48.walkConfig(T0);
    c40.param = 40;
    expectFault(tr(m, c40, IOVA), TR_FAULT_ADDRESS_SIZE, 0);
    put(m, T3 + I3 * 8, ((1n << 40n) - 0x1000n) | PAGE | AF);
    expectOk(tr(m, c40, IOVA), 2 ** 40 - 0x1000 + 0x123, 12, PERM_R | PERM_W | PERM_X);
  });
});

describe("armv8: stage-1 permissions", () => {
  const cfg = armv8S1_4k48.walkConfig(T0);
  // AP[2:1] -> [EL1 perm, EL0 perm] with UXN = PXN = 0 (Arm ARM D8.4 data access permissions;
  // EL1 execute is never allowed for memory writable at EL0).
  const table: [bigint, number, number][] = [
    [0n, PERM_R | PERM_W | PERM_X, PERM_X],
    [AP_EL0, PERM_R | PERM_W, PERM_R | PERM_W | PERM_X],
    [AP_RO, PERM_R | PERM_X, PERM_X],
    [AP_RO | AP_EL0, PERM_R | PERM_X, PERM_R | PERM_X],
  ];
  for (const [ap, el1, el0] of table) {
    it(`AP[2:1] = ${ap >> 6n}: EL1 ${el1}, EL0 ${el0}`, () => {
      const mem = tree4k(3, 0x4000_0000n | PAGE | AF | ap);
      for (const [priv, want] of [
        [ACC_PRIV, el1],
        [0, el0],
      ] as const) {
        for (const [acc, bit] of [
          [ACC_READ, PERM_R],
          [ACC_WRITE, PERM_W],
          [ACC_EXEC, PERM_X],
        ] as const) {
          const r = tr(mem, cfg, IOVA, acc | priv);
          if (want & bit) expectOk(r, 0x4000_0123, 12, want);
          else expectFault(r, TR_FAULT_PERMISSION, 0);
        }
      }
    });
  }

  it("PXN and UXN refuse execution at their own privilege only", () => {
    const p = tree4k(3, 0x4000_0000n | PAGE | AF | AP_RO | AP_EL0 | PXN);
    expectFault(tr(p, cfg, IOVA, ACC_EXEC | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    expectOk(tr(p, cfg, IOVA, ACC_EXEC), 0x4000_0123, 12, PERM_R | PERM_X);
    const u = tree4k(3, 0x4000_0000n | PAGE | AF | AP_RO | AP_EL0 | UXN);
    expectFault(tr(u, cfg, IOVA, ACC_EXEC), TR_FAULT_PERMISSION, 0);
    expectOk(tr(u, cfg, IOVA, ACC_EXEC | ACC_PRIV), 0x4000_0123, 12, PERM_R | PERM_X);
  });

  it("honours hierarchical APTable, PXNTable and UXNTable in table descriptors", () => {
    const leaf = 0x4000_0000n | PAGE | AF | AP_EL0; // EL0 RW
    const ro = tree4k(3, leaf, AP_TABLE_RO);
    expectFault(tr(ro, cfg, IOVA, ACC_WRITE | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    expectFault(tr(ro, cfg, IOVA, ACC_WRITE), TR_FAULT_PERMISSION, 0);
    // With writes refused below, the page is no longer EL0-writable: EL1 may execute it.
    expectOk(tr(ro, cfg, IOVA, ACC_EXEC | ACC_PRIV), 0x4000_0123, 12, PERM_R | PERM_X);
    const noEl0 = tree4k(3, leaf, AP_TABLE_NO_EL0);
    expectFault(tr(noEl0, cfg, IOVA, ACC_READ), TR_FAULT_PERMISSION, 0);
    expectOk(tr(noEl0, cfg, IOVA, ACC_WRITE | ACC_PRIV), 0x4000_0123, 12, PERM_R | PERM_W | PERM_X);
    const xn = tree4k(3, 0x4000_0000n | PAGE | AF | AP_RO | AP_EL0, PXN_TABLE | UXN_TABLE);
    expectFault(tr(xn, cfg, IOVA, ACC_EXEC | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    expectFault(tr(xn, cfg, IOVA, ACC_EXEC), TR_FAULT_PERMISSION, 0);
    expectOk(tr(xn, cfg, IOVA, ACC_READ), 0x4000_0123, 12, PERM_R);
  });
});

describe("armv8: Access Flag and DBM dirty state", () => {
  const cfg = armv8S1_4k48.walkConfig(T0);
  const leafPa = T3 + I3 * 8;

  it("AF = 0 faults ACCESS without HA, ahead of a permission fault", () => {
    const mem = tree4k(3, 0x4000_0000n | PAGE | AP_RO);
    expectFault(tr(mem, cfg, IOVA), TR_FAULT_ACCESS, 0);
    expectFault(tr(mem, cfg, IOVA, ACC_WRITE | ACC_PRIV), TR_FAULT_ACCESS, 0);
    assert.equal(get(mem, leafPa), 0x4000_0000n | PAGE | AP_RO, "memory unchanged");
  });

  it("HA sets AF in memory on a successful access only", () => {
    const leaf = 0x4000_0000n | PAGE | AP_RO;
    const mem = tree4k(3, leaf);
    const ha = armv8S1_4k48.walkConfig(T0);
    ha.flags = WF_HW_A;
    expectFault(tr(mem, ha, IOVA, ACC_WRITE | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    assert.equal(get(mem, leafPa), leaf, "no update when the access faults");
    expectOk(tr(mem, ha, IOVA), 0x4000_0123, 12, PERM_R | PERM_X);
    assert.equal(get(mem, leafPa), leaf | AF);
    // Table descriptors have no AF: bit 10 of a table entry is ignored.
    assert.equal(get(mem, T2 + I2 * 8), BigInt(T3) | TABLE);
  });

  it("HD turns a writable-clean DBM entry dirty on a write (stage 1 clears AP[2])", () => {
    const clean = 0x4000_0000n | PAGE | AF | AP_RO | AP_EL0 | DBM | NG;
    const mem = tree4k(3, clean);
    // Without HD, AP[2] = 1 is read-only whatever DBM says.
    expectFault(tr(mem, cfg, IOVA, ACC_WRITE | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    const ha = armv8S1_4k48.walkConfig(T0);
    ha.flags = WF_HW_A;
    expectFault(tr(mem, ha, IOVA, ACC_WRITE | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    const hd = armv8S1_4k48.walkConfig(T0);
    hd.flags = WF_HW_AD;
    // A read leaves it clean but reports the write permission HD would grant.
    expectOk(tr(mem, hd, IOVA, ACC_READ), 0x4000_0123, 12, PERM_R | PERM_W | PERM_X);
    assert.equal(get(mem, leafPa), clean);
    expectOk(tr(mem, hd, IOVA, ACC_WRITE), 0x4000_0123, 12, PERM_R | PERM_W | PERM_X);
    assert.equal(get(mem, leafPa), clean & ~AP_RO, "AP[2] cleared: writable-dirty");
    // Now writable without HD as well.
    expectOk(tr(mem, cfg, IOVA, ACC_WRITE), 0x4000_0123, 12, PERM_R | PERM_W | PERM_X);
  });

  it("the dirty hooks follow io-pgtable-arm's iopte_writeable_dirty encoding", () => {
    const f = armv8S1_4k48;
    const out = new U64();
    const dirty = 0x4000_0000n | PAGE | AF | AP_EL0 | DBM;
    const clean = dirty | AP_RO;
    assert.equal(f.isDirty(u64(dirty), 0), true);
    assert.equal(f.isDirty(u64(clean), 0), false);
    assert.equal(
      f.isDirty(u64(0x4000_0000n | PAGE | AF | AP_EL0), 0),
      false,
      "no DBM: never dirty",
    );
    f.clearDirty(u64(dirty), 0, out);
    assert.equal(out.toBigInt(), clean);
    f.setDirty(u64(clean), 0, out);
    assert.equal(out.toBigInt(), dirty);
    // Entries without DBM are left alone: a read-only page must not become writable.
    const ro = 0x4000_0000n | PAGE | AF | AP_RO;
    f.setDirty(u64(ro), 0, out);
    assert.equal(out.toBigInt(), ro);
    const rw = 0x4000_0000n | PAGE | AF;
    f.clearDirty(u64(rw), 0, out);
    assert.equal(out.toBigInt(), rw);
    // Stage 2: dirty = DBM && S2AP[1]; clearing drops S2AP[1].
    const s2 = armv8S2_4k48;
    const d2 = 0x4000_0000n | PAGE | AF | S2AP_R | S2AP_W | DBM;
    assert.equal(s2.isDirty(u64(d2), 0), true);
    s2.clearDirty(u64(d2), 0, out);
    assert.equal(out.toBigInt(), d2 & ~S2AP_W);
    assert.equal(s2.isDirty(out, 0), false);
    s2.setDirty(u64(d2 & ~S2AP_W), 0, out);
    assert.equal(out.toBigInt(), d2);
  });
});

describe("armv8: stage 2", () => {
  // 4K, 40-bit IPA, SL0 = 1: two concatenated 512-entry ARM L1 tables (1024 entries).
  const ROOT = 0x2000_0000; // 8K, 8K-aligned
  const S2L2 = 0x2000_4000;
  const S2L3 = 0x2000_5000;
  const cfg = armv8S2_4k40.walkConfig(ROOT);
  // IPA bit 39 selects the second concatenated table: root index 512 + 5.
  const IPA = (1n << 39n) | ia(12, [5, 6, 7], 0x9ab);
  const rootIdx = 512 + 5;

  function s2Tree(leaf: bigint): PhysMem {
    const mem = new PhysMem();
    put(mem, ROOT + rootIdx * 8, BigInt(S2L2) | TABLE);
    put(mem, S2L2 + 6 * 8, BigInt(S2L3) | TABLE);
    put(mem, S2L3 + 7 * 8, leaf);
    return mem;
  }

  it("walks a concatenated initial table", () => {
    const mem = s2Tree(0x8_1234_5000n | PAGE | AF | S2AP_R | S2AP_W | MEMATTR_WB | SH_IS);
    expectOk(tr(mem, cfg, IPA), 0x8_1234_59ab, 12, PERM_R | PERM_W | PERM_X);
    assert.equal(res.reads, 3);
    expectFault(tr(mem, cfg, IPA & ~(1n << 39n)), TR_FAULT_TRANSLATION, 2);
    expectFault(tr(mem, cfg, 1n << 40n), TR_FAULT_ADDRESS_SIZE, 2);
  });

  it("S2AP and XN control access, privilege is ignored", () => {
    const ro = s2Tree(0x8_1234_5000n | PAGE | AF | S2AP_R | UXN);
    expectOk(tr(ro, cfg, IPA, ACC_READ), 0x8_1234_59ab, 12, PERM_R);
    expectFault(tr(ro, cfg, IPA, ACC_WRITE | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    expectFault(tr(ro, cfg, IPA, ACC_EXEC | ACC_PRIV), TR_FAULT_PERMISSION, 0);
    const wo = s2Tree(0x8_1234_5000n | PAGE | AF | S2AP_W);
    expectFault(tr(wo, cfg, IPA, ACC_READ), TR_FAULT_PERMISSION, 0);
    expectOk(tr(wo, cfg, IPA, ACC_WRITE), 0x8_1234_59ab, 12, PERM_W | PERM_X);
    // Bit 53 (XN[0] under FEAT_XNX, not modelled) does not stop execution.
    const x0 = s2Tree(0x8_1234_5000n | PAGE | AF | S2AP_R | PXN);
    expectOk(tr(x0, cfg, IPA, ACC_EXEC), 0x8_1234_59ab, 12, PERM_R | PERM_X);
  });

  it("AF and HD at stage 2 (HD sets S2AP[1])", () => {
    const clean = 0x8_1234_5000n | PAGE | S2AP_R | DBM;
    const mem = s2Tree(clean);
    expectFault(tr(mem, cfg, IPA), TR_FAULT_ACCESS, 0);
    const ha = armv8S2_4k40.walkConfig(ROOT);
    ha.flags = WF_HW_A;
    expectFault(tr(mem, ha, IPA, ACC_WRITE), TR_FAULT_PERMISSION, 0);
    expectOk(tr(mem, ha, IPA), 0x8_1234_59ab, 12, PERM_R | PERM_X);
    assert.equal(get(mem, S2L3 + 7 * 8), clean | AF);
    const hd = armv8S2_4k40.walkConfig(ROOT);
    hd.flags = WF_HW_AD;
    expectOk(tr(mem, hd, IPA, ACC_WRITE), 0x8_1234_59ab, 12, PERM_R | PERM_W | PERM_X);
    assert.equal(get(mem, S2L3 + 7 * 8), clean | AF | S2AP_W);
  });

  it("1G block at the concatenated level and 2M blocks below", () => {
    const mem = new PhysMem();
    put(mem, ROOT + rootIdx * 8, 0x1_c000_0000n | BLOCK | AF | S2AP_R);
    expectOk(tr(mem, cfg, IPA), 0x1_c000_0000 + Number(IPA & 0x3fff_ffffn), 30, PERM_R | PERM_X);
    assert.equal(res.reads, 1);
  });

  it("16 concatenated 16K tables at ARM level 2 (16K, 40-bit, SL0 = 1)", () => {
    const root = 0x4000_0000; // 256K table, 256K aligned
    const leafTable = 0x4010_0000;
    const c = armv8S2_16k40.walkConfig(root);
    // IPA bits 39:25 index the 32768-entry root; 24:14 the 16K page table.
    const ipa = (0x7abcn << 25n) | (0x123n << 14n) | 0x3210n;
    const mem = new PhysMem();
    put(mem, root + 0x7abc * 8, BigInt(leafTable) | TABLE);
    put(mem, leafTable + 0x123 * 8, 0x3_0000_c000n | PAGE | AF | S2AP_R);
    expectOk(tr(mem, c, ipa), 0x3_0000_f210, 14, PERM_R | PERM_X);
    assert.equal(res.reads, 2);
    // A 32M block with the contiguous bit: 32 x 32M = 1G.
    put(mem, root + 0x7abc * 8, 0x5_0000_0000n | BLOCK | AF | S2AP_R | CONT);
    expectOk(tr(mem, c, ipa), 0x5_0000_0000 + 0x123 * 0x4000 + 0x3210, 30, PERM_R | PERM_X);
  });

  it("16K, 48-bit IPA, SL0 = 2: two concatenated ARM L1 tables", () => {
    const root = 0x4000_0000; // 32K
    const l2 = 0x4000_8000;
    const l3 = 0x4000_c000;
    const c = armv8S2_16k48.walkConfig(root);
    const ipa = (1n << 47n) | ia(14, [0x10, 0x20, 0x30], 0x1234);
    const mem = new PhysMem();
    put(mem, root + (2048 + 0x10) * 8, BigInt(l2) | TABLE);
    put(mem, l2 + 0x20 * 8, BigInt(l3) | TABLE);
    put(mem, l3 + 0x30 * 8, 0x9_8765_4000n | PAGE | AF | S2AP_R | S2AP_W);
    expectOk(tr(mem, c, ipa), 0x9_8765_5234, 14, PERM_R | PERM_W | PERM_X);
    assert.equal(res.reads, 3);
  });
});

describe("armv8: 16K and 64K stage-1 walks", () => {
  it("16K, 48-bit: a 2-entry ARM L0 table, 16K pages and 128-entry contiguous groups", () => {
    const l0 = 0x5000_0000;
    const l1 = 0x5000_4000;
    const l2 = 0x5000_8000;
    const l3 = 0x5000_c000;
    const cfg = armv8S1_16k48.walkConfig(l0);
    // Bit 47 picks L0 entry 1; then 11-bit indexes 0x7ff, 0x400, 0x83.
    const iova = ia(14, [1, 0x7ff, 0x400, 0x83], 0x2345);
    const mem = new PhysMem();
    put(mem, l0 + 8, BigInt(l1) | TABLE);
    put(mem, l1 + 0x7ff * 8, BigInt(l2) | TABLE);
    put(mem, l2 + 0x400 * 8, BigInt(l3) | TABLE);
    put(mem, l3 + 0x83 * 8, 0x2_0000_4000n | PAGE | AF | AP_RO | AP_EL0);
    expectOk(tr(mem, cfg, iova), 0x2_0000_6345, 14, PERM_R | PERM_X);
    assert.equal(res.reads, 4);
    put(mem, l3 + 0x83 * 8, 0x2_0000_4000n | PAGE | AF | CONT);
    expectOk(tr(mem, cfg, iova), 0x2_0000_6345, 21, PERM_R | PERM_W | PERM_X);
    // A 32M block at ARM L2; a block descriptor at ARM L1 is reserved.
    put(mem, l2 + 0x400 * 8, 0x6_0200_0000n | BLOCK | AF);
    expectOk(
      tr(mem, cfg, iova),
      0x6_0200_0000 + 0x83 * 0x4000 + 0x2345,
      25,
      PERM_R | PERM_W | PERM_X,
    );
    put(mem, l1 + 0x7ff * 8, 0x10_0000_0000n | BLOCK | AF);
    expectFault(tr(mem, cfg, iova), TR_FAULT_TRANSLATION, 2);
  });

  it("64K, 48-bit: 64-entry ARM L1 table, 64K pages, 512M blocks, LPA bits", () => {
    const l1 = 0x6000_0000;
    const l2 = 0x6001_0000;
    const l3 = 0x6002_0000;
    const cfg = armv8S1_64k48.walkConfig(l1);
    const iova = ia(16, [0x3f, 0x1fff, 0x1234], 0xfedc);
    const mem = new PhysMem();
    put(mem, l1 + 0x3f * 8, BigInt(l2) | TABLE);
    put(mem, l2 + 0x1fff * 8, BigInt(l3) | TABLE);
    put(mem, l3 + 0x1234 * 8, 0xabc_0001_0000n | PAGE | AF);
    expectOk(tr(mem, cfg, iova), 0xabc_0001_fedc, 16, PERM_R | PERM_W | PERM_X);
    assert.equal(res.reads, 3);
    put(mem, l3 + 0x1234 * 8, 0xabc_0001_0000n | PAGE | AF | CONT);
    expectOk(tr(mem, cfg, iova), 0xabc_0001_fedc, 21, PERM_R | PERM_W | PERM_X);
    // Bits 15:12 of a 64K descriptor are OA[51:48] under FEAT_LPA: beyond a 48-bit output.
    put(mem, l3 + 0x1234 * 8, 0xabc_0001_0000n | 0x1000n | PAGE | AF);
    expectFault(tr(mem, cfg, iova), TR_FAULT_ADDRESS_SIZE, 0);
    put(mem, l2 + 0x1fff * 8, 0x20_0000_0000n | BLOCK | AF);
    expectOk(
      tr(mem, cfg, iova),
      0x20_0000_0000 + 0x1234 * 0x10000 + 0xfedc,
      29,
      PERM_R | PERM_W | PERM_X,
    );
    assert.equal(res.reads, 2);
  });
});

describe("armv8: makeLeaf and makeTable produce io-pgtable-arm's bits", () => {
  const out = new U64();
  const leaf = (
    f: ArmV8Format,
    oa: number,
    s: number,
    level: number,
    slot: number,
    prot: number,
  ) => {
    f.makeLeaf(oa, s, level, slot, prot, out);
    return out.toBigInt();
  };
  const RW = IOMMU_READ | IOMMU_WRITE;

  it("stage 1 (arm_lpae_prot_to_pte with IO_PGTABLE_QUIRK_ARM_HD)", () => {
    const f = armv8S1_4k48;
    // RW: AP[1] (EL0), DBM (writable-dirty), nG, SH outer, AF, page.
    assert.equal(leaf(f, 0x1234_5000, 12, 0, 0, RW), 0x0008_0000_1234_5e43n);
    assert.equal(
      leaf(f, 0x1234_5000, 12, 0, 0, RW),
      0x1234_5000n | PAGE | AP_EL0 | SH_OS | AF | NG | DBM,
    );
    // Read-only: AP[2], no DBM.
    assert.equal(
      leaf(f, 0x1234_5000, 12, 0, 0, IOMMU_READ),
      0x1234_5000n | PAGE | AP_EL0 | AP_RO | SH_OS | AF | NG,
    );
    // Write-only is encoded as read-write (AP[2] clear).
    assert.equal(
      leaf(f, 0x1234_5000, 12, 0, 0, IOMMU_WRITE),
      0x1234_5000n | PAGE | AP_EL0 | SH_OS | AF | NG | DBM,
    );
    // Cacheable, privileged, no-exec 2M block.
    assert.equal(
      leaf(f, 0x8060_0000, 21, 1, 0, RW | IOMMU_CACHE | IOMMU_PRIV | IOMMU_NOEXEC),
      0x8060_0000n | BLOCK | ATTR_CACHE | SH_IS | AF | NG | DBM | PXN | UXN,
    );
    assert.equal(
      leaf(f, 0x8060_0000, 21, 1, 0, RW | IOMMU_CACHE | IOMMU_PRIV | IOMMU_NOEXEC),
      0x0068_0000_8060_0f05n,
    );
    // MMIO wins over CACHE for AttrIndx; SH still follows CACHE.
    assert.equal(
      leaf(f, 0x4000_0000, 30, 2, 0, IOMMU_READ | IOMMU_MMIO | IOMMU_CACHE),
      0x4000_0000n | BLOCK | ATTR_DEV | AP_EL0 | AP_RO | SH_IS | AF | NG,
    );
    // Slot 5 of a contiguous 64K page: its own 4K of output, the Contiguous bit set.
    assert.equal(
      leaf(f, 0x7_0001_0000, 16, 0, 5, IOMMU_READ),
      0x7_0001_5000n | PAGE | CONT | AP_EL0 | AP_RO | SH_OS | AF | NG,
    );
    assert.throws(() => leaf(f, 0, 13, 0, 0, RW), RangeError, "no 8K pages");
    assert.throws(() => leaf(f, 0, 39, 3, 0, RW), RangeError, "no 512G blocks");
    f.makeTable(0xfedc_ba98_7000, 3, out);
    assert.equal(out.toBigInt(), 0xfedc_ba98_7003n);
    // 64K: the table address is 64K aligned; bits 15:12 stay clear.
    armv8S1_64k48.makeTable(0x12_3456_0000, 2, out);
    assert.equal(out.toBigInt(), 0x12_3456_0003n);
  });

  it("stage 2 (S2AP, MemAttr; DBM on writable leaves as generic_pt armv8 does)", () => {
    const f = armv8S2_4k48;
    assert.equal(
      leaf(f, 0x1234_5000, 12, 0, 0, RW | IOMMU_CACHE),
      0x1234_5000n | PAGE | S2AP_R | S2AP_W | MEMATTR_WB | SH_IS | AF | DBM,
    );
    assert.equal(leaf(f, 0x1234_5000, 12, 0, 0, RW | IOMMU_CACHE), 0x0008_0000_1234_57ffn);
    assert.equal(leaf(f, 0x1234_5000, 12, 0, 0, IOMMU_READ), 0x1234_5657n);
    assert.equal(
      leaf(f, 0x4000_0000, 30, 2, 0, IOMMU_WRITE | IOMMU_MMIO | IOMMU_NOEXEC),
      0x4000_0000n | BLOCK | S2AP_W | MEMATTR_DEV | SH_OS | AF | DBM | PXN | UXN,
    );
    assert.equal(
      leaf(armv8S2_16k48, 0x2_0000_0000, 21, 0, 127, IOMMU_READ),
      0x2_001f_c000n | PAGE | CONT | S2AP_R | MEMATTR_NC | SH_OS | AF,
    );
  });

  it("leafProt reads back what makeLeaf wrote", () => {
    const prots = [
      IOMMU_READ,
      RW,
      RW | IOMMU_CACHE,
      IOMMU_READ | IOMMU_PRIV | IOMMU_NOEXEC,
      RW | IOMMU_MMIO,
    ];
    for (const p of prots) {
      armv8S1_4k48.makeLeaf(0x10_0000, 12, 0, 0, p, out);
      assert.equal(armv8S1_4k48.leafProt(out, 0), p | IOMMU_READ, `s1 prot ${p}`);
      armv8S2_4k48.makeLeaf(0x10_0000, 12, 0, 0, p, out);
      assert.equal(armv8S2_4k48.leafProt(out, 0), p & ~IOMMU_PRIV, `s2 prot ${p}`);
    }
  });
});

describe("armv8: nested translation", () => {
  // Stage 2: 4K, 40-bit IPA, 3 levels (2 concatenated root tables), IPA x -> x + OFFSET.
  const S2ROOT = 0x7000_0000;
  const S2_L2 = 0x7000_2000; // one ARM L2 table per 1G of IPA used
  const OFFSET = 0x100_0000_0000;

  /** Stage 2 maps IPA 0 .. nGig GiB to IPA + OFFSET with 2M blocks (2 reads per walk). */
  function stage2Blocks(mem: PhysMem, nGig: number, attrs: bigint): void {
    for (let gig = 0; gig < nGig; gig++) {
      const l2 = S2_L2 + gig * 0x1000;
      put(mem, S2ROOT + gig * 8, BigInt(l2) | TABLE);
      for (let i = 0; i < 512; i++) {
        put(mem, l2 + i * 8, BigInt(gig * 2 ** 30 + OFFSET + i * 2 ** 21) | BLOCK | AF | attrs);
      }
    }
  }

  /** Stage 2 maps each 4K IPA page in `ipas` to IPA + OFFSET with 4K pages (3 reads per walk). */
  function stage2Pages(mem: PhysMem, ipas: number[], attrs: bigint): void {
    let next = 0x7010_0000; // stage-2 table pages
    const tableAt = (pa: number): number => {
      const e = get(mem, pa);
      if (e !== 0n) return Number(e & 0xffff_ffff_f000n);
      const t = next;
      next += 0x1000;
      put(mem, pa, BigInt(t) | TABLE);
      return t;
    };
    for (const ipa of ipas) {
      const l2 = tableAt(S2ROOT + Math.floor(ipa / 2 ** 30) * 8);
      const l3 = tableAt(l2 + ((ipa >>> 21) & 511) * 8);
      put(mem, l3 + ((ipa >>> 12) & 511) * 8, BigInt(ipa + OFFSET) | PAGE | AF | attrs);
    }
  }

  it("armv8 stage 1 over armv8 stage 2 reads (4+1)(3+1)-1 entries", () => {
    const mem = new PhysMem();
    // Stage-1 tables live at IPAs T0..T3, the output page at IPA 0x4567_8000.
    stage2Pages(mem, [T0, T1, T2, T3, 0x4567_8000], S2AP_R | S2AP_W);
    const s2 = armv8S2_4k40.walkConfig(S2ROOT);
    // Stage-1 tables are written at their host addresses (IPA + OFFSET).
    const hostOf = (ipa: number) => ipa + OFFSET;
    put(mem, hostOf(T0) + I0 * 8, BigInt(T1) | TABLE);
    put(mem, hostOf(T1) + I1 * 8, BigInt(T2) | TABLE);
    put(mem, hostOf(T2) + I2 * 8, BigInt(T3) | TABLE);
    put(mem, hostOf(T3) + I3 * 8, 0x4567_8000n | PAGE | AF | AP_EL0);
    const s1 = armv8S1_4k48.walkConfig(T0);
    mem.resetCounters();
    expectOk(tr(mem, s1, IOVA, PRIV_R, s2), OFFSET + 0x4567_8123, 12, PERM_R | PERM_W);
    assert.equal(res.reads, 19);
    assert.equal(mem.reads, 19);
    // Over 2M stage-2 blocks each stage-2 walk reads 2 entries: 5 * 2 + 4.
    stage2Blocks(mem, 2, S2AP_R | S2AP_W);
    expectOk(tr(mem, s1, IOVA, PRIV_R, s2), OFFSET + 0x4567_8123, 12, PERM_R | PERM_W);
    assert.equal(res.reads, 14);
  });

  it("x86_64 stage 1 over armv8 stage 2 reads 19 entries; stage-2 faults say stage 2", () => {
    const mem = new PhysMem();
    stage2Pages(mem, [T0, T1, T2, T3, 0x5000_0000], S2AP_R);
    const s2 = armv8S2_4k40.walkConfig(S2ROOT);
    // x86-64 entries: P | RW | U | A (0x27), PS for 2M (0x80).
    const host = (ipa: number) => ipa + OFFSET;
    const va = ia(12, [1, 2, 3, 4], 0x10);
    put(mem, host(T0) + 1 * 8, BigInt(T1) | 0x27n);
    put(mem, host(T1) + 2 * 8, BigInt(T2) | 0x27n);
    put(mem, host(T2) + 3 * 8, BigInt(T3) | 0x27n);
    put(mem, host(T3) + 4 * 8, 0x5000_0000n | 0x27n);
    const s1 = x86_64Format4.walkConfig(T0);
    expectOk(tr(mem, s1, va, PRIV_R, s2), OFFSET + 0x5000_0010, 12, PERM_R | PERM_X);
    assert.equal(res.reads, 19);
    // Stage 2 is read-only: the write fails at stage 2, on the final output address.
    const w = tr(mem, s1, va, ACC_WRITE | ACC_PRIV, s2);
    expectFault(w, TR_FAULT_PERMISSION, 0, 2);
    assert.equal(w.faultGpa, 0x5000_0010);
    // Output IPA outside stage 2's 40-bit input range.
    put(mem, host(T3) + 4 * 8, 0x100_0000_0000n | 0x27n);
    const big = tr(mem, s1, va, PRIV_R, s2);
    expectFault(big, TR_FAULT_ADDRESS_SIZE, 2, 2);
    assert.equal(big.faultGpa, 0x100_0000_0010);
  });

  it("a stage-2 hole under a stage-1 table faults at stage 2 with that table's IPA", () => {
    const mem = new PhysMem();
    const s2 = armv8S2_4k40.walkConfig(S2ROOT);
    const s1 = armv8S1_4k48.walkConfig(T0);
    const r = tr(mem, s1, IOVA, PRIV_R, s2);
    expectFault(r, TR_FAULT_TRANSLATION, 2, 2);
    assert.equal(r.faultGpa, T0);
    assert.equal(r.reads, 1);
  });
});

describe("armv8: the generic walker on hand-built trees", () => {
  function newPt(f: ArmV8Format): PageTable {
    return new PageTable(f, new PageAllocator(new PhysMem()));
  }

  it("trace and iovaToPhys decode a hand-built 4K tree", () => {
    const pt = newPt(armv8S1_4k48);
    const l1 = pt.alloc.alloc(12);
    const l2 = pt.alloc.alloc(12);
    put(pt.mem, pt.root + I0 * 8, BigInt(l1) | TABLE);
    put(pt.mem, l1 + I1 * 8, BigInt(l2) | TABLE);
    put(pt.mem, l2 + I2 * 8, 0x3_0060_0000n | BLOCK | AF | AP_EL0 | CONT);
    const t = pt.trace(IOVA);
    assert.deepEqual(
      t.steps.map((s) => [s.level, s.index, s.kind, s.entryPa]),
      [
        [3, I0, "table", pt.root + I0 * 8],
        [2, I1, "table", l1 + I1 * 8],
        [1, I2, "leaf", l2 + I2 * 8],
      ],
    );
    assert.match(t.steps[2].meaning, /ARM L2 2M block \(contiguous 32M\)/);
    // Entry 3 of a 16-entry group starting at index 0: the group base is 0x3_0000_0000.
    assert.equal(t.pageLg2, 25);
    assert.equal(t.pa, 0x3_0060_4123);
    assert.equal(pt.iovaToPhys(IOVA), 0x3_0060_4123);
    assert.equal(tr(pt.mem, pt.walkConfig(), IOVA).pa, 0x3_0060_4123, "data plane agrees");
    assert.equal(pt.iovaToPhys(IOVA + (1n << 39n)), undefined);
  });

  it("readAndClearDirty reports DBM writable-dirty leaves and write-protects them", () => {
    const pt = newPt(armv8S1_4k48);
    const l1 = pt.alloc.alloc(12);
    const l2 = pt.alloc.alloc(12);
    const l3 = pt.alloc.alloc(12);
    put(pt.mem, pt.root, BigInt(l1) | TABLE);
    put(pt.mem, l1, BigInt(l2) | TABLE);
    put(pt.mem, l2, BigInt(l3) | TABLE);
    const dirty = 0x9000n | PAGE | AF | AP_EL0 | DBM;
    put(pt.mem, l3 + 1 * 8, dirty);
    put(pt.mem, l3 + 2 * 8, 0xa000n | PAGE | AF | AP_EL0 | AP_RO | DBM); // clean
    put(pt.mem, l3 + 3 * 8, 0xb000n | PAGE | AF | AP_EL0); // writable, no DBM: untracked
    const got: number[] = [];
    pt.readAndClearDirty(0n, 0x10000n, (_hi, lo) => got.push(lo));
    assert.deepEqual(got, [0x1000]);
    assert.equal(get(pt.mem, l3 + 8), dirty | AP_RO);
    assert.equal(get(pt.mem, l3 + 3 * 8), 0xb000n | PAGE | AF | AP_EL0);
  });

  it("the split configuration turns a 2M block into 512 pages with the same attributes", () => {
    const pt = newPt(armv8S1_4k48Split);
    const l1 = pt.alloc.alloc(12);
    const l2 = pt.alloc.alloc(12);
    put(pt.mem, pt.root, BigInt(l1) | TABLE);
    put(pt.mem, l1, BigInt(l2) | TABLE);
    const attrs = AF | AP_EL0 | AP_RO | NG | SH_IS | ATTR_CACHE | PXN | UXN;
    put(pt.mem, l2 + 8, 0x4_0000_0000n | BLOCK | attrs);
    // Unmap the 4K page at 2M + 8K.
    assert.equal(pt.unmap(0x20_2000n, 0x1000n), 0x1000n);
    const table = get(pt.mem, l2 + 8);
    assert.equal(table & 3n, TABLE, "the block became a table");
    const l3 = Number(table & 0xffff_ffff_f000n);
    assert.equal(get(pt.mem, l3), 0x4_0000_0000n | PAGE | attrs);
    assert.equal(get(pt.mem, l3 + 2 * 8), 0n);
    assert.equal(get(pt.mem, l3 + 511 * 8), 0x4_001f_f000n | PAGE | attrs);
    assert.equal(pt.iovaToPhys(0x3f_f123n), 0x4_001f_f123);
    // The refusing configuration leaves the block alone.
    const keep = newPt(armv8S1_4k48);
    keep.map(0x20_0000n, 0x4_0000_0000, 0x20_0000n, IOMMU_READ);
    assert.equal(keep.unmap(0x20_2000n, 0x1000n), 0n);
    assert.equal(keep.iovaToPhys(0x20_2000n), 0x4_0000_2000);
  });

  it("map writes the bits makeLeaf promises into the right slots", () => {
    const pt = newPt(armv8S2_16k48);
    pt.map(1n << 47n, 0x8_0000_0000, 1n << 21n, IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    const steps = pt.trace((1n << 47n) + 0x4000n * 5n).steps;
    assert.equal(steps.length, 3);
    assert.equal(steps[0].index, 2048, "second concatenated ARM L1 table");
    assert.equal(
      steps[2].raw,
      0x8_0001_4000n | PAGE | CONT | S2AP_R | S2AP_W | MEMATTR_WB | SH_IS | AF | DBM,
    );
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PageAllocator } from "../../src/mem/alloc.ts";
import { PhysMem } from "../../src/mem/phys.ts";
import { IOMMU_READ } from "../../src/pt/format.ts";
import { buildNestedPair } from "../../src/pt/nested.ts";
import { findFormat, PT_FORMATS } from "../../src/pt/registry.ts";
import {
  ACC_PRIV,
  ACC_READ,
  ACC_WRITE,
  PERM_W,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  TranslateResult,
  translate,
} from "../../src/pt/translate.ts";

const FOUR_K = { pgsizeBitmap: 1n << 12n };
const GPA = 2 ** 32;
const res = new TranslateResult();

function setup(s2name: string, len = 1n << 22n) {
  const mem = new PhysMem();
  const alloc = new PageAllocator(mem);
  const pair = buildNestedPair(alloc, findFormat("x86_64-4lvl"), findFormat(s2name), 0n, GPA, len, {
    s1: FOUR_K,
    s2: FOUR_K,
  });
  const walk = (iova: number, access = ACC_READ | ACC_PRIV) => {
    res.reset();
    translate(mem, pair.s1cfg, 0, iova, access, res, pair.s2cfg);
    return res;
  };
  return { mem, alloc, pair, walk };
}

// Every registered 4-level stage-2 capable format works under an x86-64 stage 1.
const stage2s = ["x86_64-4lvl", "vtdss-4lvl", "armv8-s2-4k-48-sl0=2", "amdv1-4lvl"].filter((n) =>
  PT_FORMATS.some((f) => f.name === n),
);

describe("nested (two-stage) translation", () => {
  for (const s2 of stage2s) {
    it(`x86_64-4lvl over ${s2}: a miss reads exactly (4+1)(4+1)-1 = 24 entries`, () => {
      const { mem, pair, walk } = setup(s2);
      for (const iova of [0, 0x1234, 0x3f_f008, 0x20_0000]) {
        mem.resetCounters();
        const r = walk(iova);
        assert.equal(r.status, TR_OK);
        assert.equal(r.reads, 24);
        assert.equal(mem.reads, 24, "the memory saw the same 24 reads");
        assert.equal(r.pa, GPA + iova, "stage 2 is the identity over guest RAM here");
        assert.equal(r.pageLg2, 12);
        assert.equal(pair.s1.iovaToPhys(BigInt(iova)), GPA + iova);
      }
    });
  }

  it("reports a stage-2 fault on a stage-1 table fetch with the guest-physical address", () => {
    const { pair, walk } = setup("x86_64-4lvl");
    // Take the stage-1 level-1 table (the one a 0x0 walk reads last but one) out of stage 2.
    const tables = pair.s1.tablePages();
    const l0 = tables.find((t) => t.level === 0);
    assert.ok(l0);
    assert.equal(pair.s2.unmap(BigInt(l0.pa), 4096n), 4096n);
    const r = walk(0);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 2);
    assert.equal(r.faultGpa, l0.pa);
    assert.equal(r.level, 0, "the stage-2 leaf level was missing");
  });

  it("reports a stage-2 fault on the final guest-physical address", () => {
    const { pair, walk } = setup("x86_64-4lvl");
    pair.s2.unmap(BigInt(GPA + 0x5000), 4096n);
    const r = walk(0x5010);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 2);
    assert.equal(r.faultGpa, GPA + 0x5010);
    assert.equal(walk(0x6010).status, TR_OK);
  });

  it("reports a stage-1 fault with its level", () => {
    const { pair, walk } = setup("x86_64-4lvl");
    pair.s1.unmap(0x7000n, 4096n);
    const r = walk(0x7000);
    assert.equal(r.status, TR_FAULT_TRANSLATION);
    assert.equal(r.stage, 1);
    assert.equal(r.level, 0);
  });

  it("intersects permissions: a write needs both stages to allow it", () => {
    const { pair, walk } = setup("x86_64-4lvl");
    // Stage 2 maps the output page read-only.
    pair.s2.unmap(BigInt(GPA + 0x9000), 4096n);
    pair.s2.map(BigInt(GPA + 0x9000), GPA + 0x9000, 4096n, IOMMU_READ);
    const rd = walk(0x9000, ACC_READ | ACC_PRIV);
    assert.equal(rd.status, TR_OK);
    assert.equal(rd.perm & PERM_W, 0);
    const wr = walk(0x9000, ACC_WRITE | ACC_PRIV);
    assert.equal(wr.status, TR_FAULT_PERMISSION);
    assert.equal(wr.stage, 2);
    // Stage 1 read-only: the fault is stage 1's.
    pair.s1.unmap(0xa000n, 4096n);
    pair.s1.map(0xa000n, GPA + 0xa000, 4096n, IOMMU_READ);
    const w1 = walk(0xa000, ACC_WRITE | ACC_PRIV);
    assert.equal(w1.status, TR_FAULT_PERMISSION);
    assert.equal(w1.stage, 1);
    assert.equal(walk(0xb000, ACC_WRITE | ACC_PRIV).status, TR_OK);
  });

  it("uses the smaller page of the two stages as the translation's page size", () => {
    const mem = new PhysMem();
    const alloc = new PageAllocator(mem);
    // Stage 1 uses 2 MiB pages, stage 2 only 4 KiB ones.
    const pair = buildNestedPair(
      alloc,
      findFormat("x86_64-4lvl"),
      findFormat("x86_64-4lvl"),
      0n,
      GPA,
      1n << 21n,
      {
        s2: FOUR_K,
      },
    );
    res.reset();
    translate(mem, pair.s1cfg, 0, 0x1234, ACC_READ | ACC_PRIV, res, pair.s2cfg);
    assert.equal(res.status, TR_OK);
    assert.equal(res.pageLg2, 12);
    assert.equal(res.reads, (3 + 1) * (4 + 1) - 1, "a 3-level stage-1 walk (2 MiB leaf) reads 19");
  });
});

/**
 * The page-table conformance suite: one set of checks run against every format configuration
 * (test/pt/conformance.test.ts calls it for each entry of PT_FORMATS).
 *
 * It drives the generic walker (control plane) and the format's data-plane translate function
 * together, and checks them against each other and against small independent oracles written
 * here with bigint arithmetic.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { EADDRINUSE, EINVAL, EOVERFLOW, ERANGE, ErrnoError } from "../../src/errno.ts";
import { PageAllocator } from "../../src/mem/alloc.ts";
import { PhysMem } from "../../src/mem/phys.ts";
import { IOMMU_READ, IOMMU_WRITE, type PtFormat } from "../../src/pt/format.ts";
import {
  ACC_PRIV,
  ACC_READ,
  ACC_WRITE,
  PERM_R,
  PERM_W,
  TR_FAULT_ADDRESS_SIZE,
  TR_FAULT_PERMISSION,
  TR_FAULT_TRANSLATION,
  TR_OK,
  TranslateResult,
  translate,
  WF_HW_AD,
} from "../../src/pt/translate.ts";
import { PageTable } from "../../src/pt/walker.ts";

const RW = IOMMU_READ | IOMMU_WRITE;
const U64_MAX = (1n << 64n) - 1n;
/** Pages with more sub-pages than this (beyond 1 GiB of 4 KiB) are checked at samples. */
const FULL_SWEEP_SUBPAGES = 1 << 18;
const SAMPLED_SUBPAGES = 1 << 12;

/**
 * Unmaps the whole IOVA space, one top-level entry span at a time (a single call cannot name a
 * 2^64-byte length), so every table below the root is covered and freed.
 */
export function unmapEverything(pt: PageTable): void {
  const fmt = pt.fmt;
  if (fmt.vaBits < 64) {
    pt.unmap(fmt.iovaBase, 1n << BigInt(fmt.vaBits));
    return;
  }
  const top = fmt.levels - 1;
  const item = 1n << BigInt(fmt.itemLg2(top));
  const span = 1n << BigInt(fmt.vaBits);
  for (let off = 0n; off < span; off += item)
    pt.unmap(fmt.iovaBase + off, item < span ? item : span);
}

export function newTable(fmt: PtFormat, pgsizeBitmap?: bigint): PageTable {
  const mem = new PhysMem();
  const alloc = new PageAllocator(mem);
  return pgsizeBitmap === undefined
    ? new PageTable(fmt, alloc)
    : new PageTable(fmt, alloc, { pgsizeBitmap });
}

function throwsErrno(fn: () => unknown, errno: number): void {
  assert.throws(fn, (err: unknown) => err instanceof ErrnoError && err.errno === errno);
}

const res = new TranslateResult();

/** Data-plane translation of a bigint IOVA; returns the result object (reused). */
export function dp(
  pt: PageTable,
  iova: bigint,
  access = ACC_READ | ACC_PRIV,
  flags = 0,
): TranslateResult {
  const cfg = pt.walkConfig();
  cfg.flags |= flags;
  res.reset();
  translate(pt.mem, cfg, Number(iova >> 32n), Number(iova & 0xffffffffn), access, res);
  return res;
}

/** Every (level, size) the format can map, with the largest first. */
function leafSizes(fmt: PtFormat): { level: number; sizeLg2: number }[] {
  const out: { level: number; sizeLg2: number }[] = [];
  const seen = new Set<number>();
  for (let level = 0; level < fmt.levels; level++) {
    for (const s of fmt.leafSizesLg2(level)) {
      if (seen.has(s)) continue;
      seen.add(s);
      out.push({ level, sizeLg2: s });
    }
  }
  return out;
}

/** An output address aligned to 2^s that the format and physical memory can hold. */
function pickPa(fmt: PtFormat, s: number): number {
  const limit = Math.min(fmt.oaBits, 52);
  return s + 2 <= limit ? 3 * 2 ** s : 0;
}

/** Greedy best-page-size decomposition computed independently with bigints. */
function oracleLeaves(
  sizes: number[],
  iova: bigint,
  pa: bigint,
  len: bigint,
): { iova: bigint; pa: bigint; s: number }[] {
  const desc = [...sizes].sort((a, b) => b - a);
  const out: { iova: bigint; pa: bigint; s: number }[] = [];
  let i = iova;
  let p = pa;
  let left = len;
  while (left > 0n) {
    const s = desc.find((x) => {
      const size = 1n << BigInt(x);
      return size <= left && i % size === 0n && p % size === 0n;
    });
    if (s === undefined) throw new Error("oracle: no page size fits");
    out.push({ iova: i, pa: p, s });
    const size = 1n << BigInt(s);
    i += size;
    p += size;
    left -= size;
  }
  return out;
}

export function ptConformanceSuite(fmt: PtFormat): void {
  const gLg2 = leafSizes(fmt)[0].sizeLg2;
  const granule = 1n << BigInt(gLg2);
  const base = fmt.iovaBase;
  const vaEnd = base + (1n << BigInt(fmt.vaBits)); // exclusive
  /** The n-th output address used by the fixed-address tests: aligned to the granule. */
  const paAt = (n: number): number => n * 2 ** Math.max(gLg2, 20);

  describe(`page-table conformance: ${fmt.name}`, () => {
    it("describes a sane geometry", () => {
      assert.ok(fmt.levels >= 1);
      for (let level = 0; level < fmt.levels; level++) {
        assert.ok(fmt.tableLg2(level) >= 1, `table at level ${level} has entries`);
        if (level > 0)
          assert.ok(fmt.itemLg2(level) > fmt.itemLg2(level - 1), "items grow with level");
        for (const s of fmt.leafSizesLg2(level))
          assert.ok(s >= fmt.itemLg2(level), "leaf at least one item");
      }
      assert.ok(fmt.vaBits <= fmt.itemLg2(fmt.levels - 1) + fmt.tableLg2(fmt.levels - 1));
    });

    for (const { level, sizeLg2 } of leafSizes(fmt)) {
      it(`maps, looks up and unmaps a 2^${sizeLg2} page at level ${level}, every sub-page`, () => {
        const pt = newTable(fmt);
        const size = 1n << BigInt(sizeLg2);
        // A page-aligned IOVA away from 0 when the space allows, else 0.
        const iova = base + (3n * size + size <= vaEnd - base ? 3n * size : 0n);
        const pa = pickPa(fmt, sizeLg2);
        pt.map(iova, pa, size, RW);
        const leaves = pt.leaves();
        assert.equal(leaves.length, 1);
        assert.equal(leaves[0].iova, iova);
        assert.equal(leaves[0].oa, pa);
        assert.equal(leaves[0].sizeLg2, sizeLg2);
        assert.equal(leaves[0].level, level);
        const tr = pt.trace(iova);
        assert.equal(
          tr.steps.length,
          fmt.levels - level,
          "trace reads one entry per level down to the leaf",
        );
        assert.equal(tr.pa, pa);
        for (const st of tr.steps) assert.equal(st.entryPa, st.tablePa + st.index * 8);
        assert.equal(tr.steps[tr.steps.length - 1].kind, "leaf");
        // Every granule sub-page (or a sample for the largest pages) through both walkers.
        const subpages = Number(size / granule);
        const step = subpages <= FULL_SWEEP_SUBPAGES ? 1 : Math.ceil(subpages / SAMPLED_SUBPAGES);
        for (let k = 0; k < subpages; k += step) {
          const off = BigInt(k) * granule;
          const r = dp(pt, iova + off + 8n);
          if (r.status !== TR_OK || r.pa !== pa + Number(off) + 8 || r.pageLg2 !== sizeLg2) {
            assert.fail(
              `sub-page ${k}: status ${r.status} pa 0x${r.pa.toString(16)} pageLg2 ${r.pageLg2}`,
            );
          }
        }
        assert.equal(pt.iovaToPhys(iova + size - 1n), pa + Number(size) - 1);
        assert.equal(dp(pt, iova + size - 1n).pa, pa + Number(size) - 1);
        // Outside the page nothing is mapped.
        if (iova + size < vaEnd) {
          assert.equal(pt.iovaToPhys(iova + size), undefined);
          assert.equal(dp(pt, iova + size).status, TR_FAULT_TRANSLATION);
        }
        assert.equal(pt.unmap(iova, size), size);
        assert.equal(pt.iovaToPhys(iova), undefined);
        assert.equal(dp(pt, iova).status, TR_FAULT_TRANSLATION);
        unmapEverything(pt);
        assert.equal(pt.tableCount(), 1, "tables under a fully unmapped range are freed");
        assert.equal(pt.alloc.live, 1);
        pt.free();
        assert.equal(pt.alloc.live, 0, "free releases every table");
      });
    }

    it("picks the largest page sizes, as a brute-force oracle does", () => {
      const sizes = leafSizes(fmt).map((x) => x.sizeLg2);
      // Keep ranges small enough to stay quick: up to a few of the second-smallest size.
      const sorted = [...sizes].sort((a, b) => a - b);
      const spanLg2 = Math.min(sorted[Math.min(2, sorted.length - 1)] + 2, fmt.vaBits, 34);
      const slots = Number(1n << BigInt(spanLg2 - gLg2));
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: slots - 1 }),
          fc.integer({ min: 1, max: Math.min(slots, 4096) }),
          fc.integer({ min: 0, max: 4095 }),
          (startSlot, nSlots, paSlot) => {
            const len = BigInt(Math.min(nSlots, slots - startSlot)) * granule;
            const iova = base + BigInt(startSlot) * granule;
            const pa = BigInt(paSlot) * granule + (1n << BigInt(Math.min(spanLg2, 40)));
            const pt = newTable(fmt);
            pt.map(iova, Number(pa), len, RW);
            const got = pt.leaves().map((l) => ({ iova: l.iova, pa: BigInt(l.oa), s: l.sizeLg2 }));
            assert.deepEqual(
              got,
              oracleLeaves(sizes, iova - base, pa, len).map((o) => ({ ...o, iova: o.iova + base })),
            );
            // Spot-check translations agree with the oracle at both ends.
            assert.equal(pt.iovaToPhys(iova), Number(pa));
            assert.equal(dp(pt, iova + len - 1n).pa, Number(pa + len - 1n));
            assert.equal(pt.unmap(iova, len), len);
            assert.deepEqual(pt.leaves(), []);
            unmapEverything(pt);
            assert.equal(pt.tableCount(), 1);
          },
        ),
        { numRuns: 40, seed: 0x5eed },
      );
    });

    it("respects a restricted page-size bitmap", () => {
      const pt = newTable(fmt, granule);
      const len = granule * 16n;
      pt.map(base, pickPa(fmt, 30), len, RW);
      const leaves = pt.leaves();
      assert.equal(leaves.length, 16);
      for (const l of leaves) assert.equal(l.sizeLg2, gLg2);
    });

    it("maps IOVA 0 of its space and the highest page of its space", () => {
      const pt = newTable(fmt);
      pt.map(base, 0, granule, RW);
      assert.equal(pt.iovaToPhys(base), 0);
      const top = vaEnd - granule;
      pt.map(top, Number(granule) * 7, granule, RW);
      assert.equal(pt.iovaToPhys(vaEnd - 1n), Number(granule) * 8 - 1);
      assert.equal(dp(pt, vaEnd - 1n).pa, Number(granule) * 8 - 1);
      assert.equal(pt.unmap(top, granule), granule);
      assert.equal(pt.unmap(base, granule), granule);
      assert.deepEqual(pt.leaves(), []);
      unmapEverything(pt);
      assert.equal(pt.tableCount(), 1);
    });

    it("refuses out-of-range and wrapping ranges with a clear error, changing nothing", () => {
      const pt = newTable(fmt);
      const before = pt.alloc.live;
      if (vaEnd <= U64_MAX) {
        throwsErrno(() => pt.map(vaEnd, 0, granule, RW), ERANGE);
        throwsErrno(() => pt.map(vaEnd - granule, 0, granule * 2n, RW), ERANGE);
        throwsErrno(() => pt.map(U64_MAX + 1n - granule, 0, granule, RW), ERANGE);
        assert.equal(pt.iovaToPhys(U64_MAX), undefined);
        assert.equal(dp(pt, U64_MAX).status, TR_FAULT_ADDRESS_SIZE);
        assert.match(
          (() => {
            try {
              pt.map(vaEnd, 0, granule, RW);
            } catch (e) {
              return String(e);
            }
            return "";
          })(),
          /ERANGE: .*outside the IOVA space/,
        );
      }
      if (base > 0n) throwsErrno(() => pt.map(base - granule, 0, granule, RW), ERANGE);
      throwsErrno(() => pt.map(U64_MAX + 1n - granule, 0, granule * 2n, RW), EOVERFLOW);
      // The very last byte: outside the space, or (a 64-bit space) not page-aligned.
      throwsErrno(() => pt.map(U64_MAX, 0, 1n, RW), vaEnd > U64_MAX ? EINVAL : ERANGE);
      throwsErrno(() => pt.map(base, 0, 0n, RW), EINVAL);
      throwsErrno(() => pt.map(base + 1n, 0, granule, RW), EINVAL);
      throwsErrno(() => pt.map(base, 1, granule, RW), EINVAL);
      throwsErrno(() => pt.map(base, 0, granule, 0), EINVAL);
      throwsErrno(() => pt.unmap(U64_MAX + 1n - granule, granule * 2n), EOVERFLOW);
      assert.equal(pt.alloc.live, before);
      assert.deepEqual(pt.leaves(), []);
    });

    it("refuses to map over an existing mapping and leaves it intact", () => {
      const pt = newTable(fmt);
      pt.map(base + granule * 4n, paAt(64), granule * 2n, RW);
      const before = pt.leaves();
      throwsErrno(() => pt.map(base, paAt(16), granule * 8n, RW), EADDRINUSE);
      assert.deepEqual(pt.leaves(), before, "the failed map took back what it had mapped");
      throwsErrno(() => pt.map(base + granule * 5n, paAt(16), granule, RW), EADDRINUSE);
      assert.deepEqual(pt.leaves(), before);
    });

    it("unmaps across holes and reports only what was mapped", () => {
      const pt = newTable(fmt);
      pt.map(base + granule, paAt(2), granule, RW);
      pt.map(base + granule * 5n, paAt(4), granule * 2n, RW);
      assert.equal(pt.unmap(base, granule * 16n), granule * 3n);
      assert.deepEqual(pt.leaves(), []);
      assert.equal(pt.unmap(base, granule * 16n), 0n);
    });

    const large = leafSizes(fmt).filter((x) => x.sizeLg2 > gLg2 && x.sizeLg2 <= 30);
    if (large.length > 0) {
      const { sizeLg2 } = large[0];
      const verb = {
        refuse: "refuses to cut",
        whole: "removes whole, or refuses to cut,",
        split: "splits",
      }[fmt.unmapPolicy];
      it(`${verb} a 2^${sizeLg2} page on partial unmap`, () => {
        const pt = newTable(fmt);
        const size = 1n << BigInt(sizeLg2);
        const pa = pickPa(fmt, sizeLg2);
        pt.map(base, pa, size, RW);
        // A range starting inside the page is never served by cutting it, except by splitting.
        if (fmt.unmapPolicy !== "split") {
          assert.equal(pt.unmap(base + granule, granule), 0n);
          assert.equal(pt.iovaToPhys(base + granule), pa + Number(granule));
        }
        const got = pt.unmap(base, granule);
        if (fmt.unmapPolicy === "refuse") {
          assert.equal(got, 0n);
          assert.equal(pt.iovaToPhys(base), pa);
          assert.equal(pt.leaves().length, 1);
        } else if (fmt.unmapPolicy === "whole") {
          assert.equal(got, size, "the whole page went, and its size is reported");
          assert.deepEqual(pt.leaves(), []);
        } else {
          assert.equal(got, granule);
          assert.equal(pt.iovaToPhys(base), undefined);
          for (let off = granule; off < size; off += granule * 61n) {
            assert.equal(pt.iovaToPhys(base + off), pa + Number(off));
            assert.equal(dp(pt, base + off).pa, pa + Number(off));
          }
          assert.equal(pt.iovaToPhys(base + size - 1n), pa + Number(size) - 1);
        }
      });
    }

    it("enforces read-only mappings in the data plane", () => {
      const pt = newTable(fmt);
      pt.map(base, paAt(1), granule, IOMMU_READ);
      const r = dp(pt, base, ACC_READ | ACC_PRIV);
      assert.equal(r.status, TR_OK);
      assert.equal(r.perm & PERM_W, 0);
      assert.ok(r.perm & PERM_R);
      const w = dp(pt, base, ACC_WRITE | ACC_PRIV);
      assert.equal(w.status, TR_FAULT_PERMISSION);
      assert.equal(w.stage, 1);
      assert.equal(w.level, pt.leaves()[0].level);
      pt.map(base + granule, paAt(2), granule, RW);
      assert.equal(dp(pt, base + granule, ACC_WRITE | ACC_PRIV).status, TR_OK);
    });

    it("agrees with the generic walker on random mappings (data plane vs control plane)", () => {
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              slot: fc.integer({ min: 0, max: 1023 }),
              n: fc.integer({ min: 1, max: 64 }),
            }),
            {
              minLength: 1,
              maxLength: 6,
            },
          ),
          fc.array(fc.integer({ min: 0, max: 1100 * 64 }), { minLength: 1, maxLength: 40 }),
          (maps, probes) => {
            const pt = newTable(fmt);
            const span = 1n << BigInt(Math.min(fmt.vaBits, 40));
            const stride = span / 1100n - ((span / 1100n) % granule);
            let pa = paAt(256);
            for (const m of maps) {
              const iova = base + BigInt(m.slot) * stride;
              const len = BigInt(m.n) * granule;
              if (iova - base + len > span) continue;
              try {
                pt.map(iova, pa, len, RW);
              } catch (e) {
                if (!(e instanceof ErrnoError) || e.errno !== EADDRINUSE) throw e;
              }
              pa += Number(len) + Number(granule) * 16;
            }
            for (const p of probes) {
              const iova = base + ((BigInt(p) * (granule / 64n) + BigInt(p % 7) * 8n) % span);
              const want = pt.iovaToPhys(iova);
              const r = dp(pt, iova);
              if (want === undefined) assert.equal(r.status, TR_FAULT_TRANSLATION);
              else {
                assert.equal(r.status, TR_OK);
                assert.equal(r.pa, want);
              }
            }
            pt.free();
            assert.equal(pt.alloc.live, 0);
          },
        ),
        { numRuns: 30, seed: 42 },
      );
    });

    if (fmt.hasDirty) {
      it("sets, reads and clears dirty state", () => {
        // Smallest pages only, so each granule is its own leaf (no contiguous groups).
        const pt = newTable(fmt, granule);
        const len = granule * 8n;
        pt.map(base, paAt(8), len, RW);
        const read = (noClear = false): bigint[] => {
          const got: bigint[] = [];
          pt.readAndClearDirty(
            base,
            len,
            (hi, lo) => got.push((BigInt(hi) << 32n) | BigInt(lo)),
            noClear,
          );
          return got;
        };
        // Some formats map writable pages dirty (ARM with HD marks them writable-dirty, as
        // Linux does); iommufd clears everything when tracking starts, so do the same.
        read();
        assert.deepEqual(read(), [], "a cleared range reads clean");
        assert.ok(pt.setDirty(base + granule * 2n));
        assert.deepEqual(read(true), [base + granule * 2n], "NO_CLEAR reports");
        assert.deepEqual(read(true), [base + granule * 2n], "...and keeps the state");
        assert.deepEqual(read(), [base + granule * 2n]);
        assert.deepEqual(read(), [], "reading cleared it");
        // A device write through the data plane with hardware dirty updates marks the page.
        const w = dp(pt, base + granule * 5n + 16n, ACC_WRITE | ACC_PRIV, WF_HW_AD);
        assert.equal(w.status, TR_OK);
        assert.deepEqual(read(), [base + granule * 5n]);
        // A read does not.
        dp(pt, base + granule * 6n, ACC_READ | ACC_PRIV, WF_HW_AD);
        assert.deepEqual(read(), []);
        assert.equal(pt.setDirty(base + len), false, "nothing mapped there");
      });
    }

    it("counts the entries a data-plane walk reads", () => {
      const pt = newTable(fmt);
      pt.map(base, paAt(3), granule, RW);
      pt.mem.resetCounters();
      const r = dp(pt, base);
      assert.equal(r.status, TR_OK);
      assert.equal(r.reads, fmt.levels);
      assert.equal(pt.mem.reads, fmt.levels);
    });
  });
}

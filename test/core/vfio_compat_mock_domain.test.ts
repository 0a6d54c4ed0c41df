/**
 * The selftest's `vfio_compat_mock_domain` fixture (core-objects-vfio.md §8.7, §9) for both
 * variants, Ver1v2 (TYPE1v2) and Ver1v0 (TYPE1): an IOAS with one selftest-mock paging domain
 * (test_domain.ts, attached through the io_pagetable API where the selftest uses MOCK_DOMAIN),
 * made the compat IOAS, then VFIO_SET_IOMMU. Tests simple_close, option_huge_pages, get_info,
 * map and huge_map, plus a model-based property test of MAP_DMA / UNMAP_DMA per variant.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { contiguousPages, type UserPage } from "../../src/core/user_mm.ts";
import "../../src/core/vfio_compat.ts";
import { EEXIST, EINVAL, ENOENT } from "../../src/errno.ts";
import {
  decode,
  encode,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_LAYOUT,
  IOMMU_OPTION_OP_GET,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_VFIO_IOAS_SET,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
} from "../../src/uapi/index.ts";
import { Harness, PAGE } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const MOCK_APERTURE_START = 1n << 24n;
const MOCK_APERTURE_LAST = (1n << 31n) - 1n;
const BUFFER_SIZE = 16 * PAGE;
const HUGEPAGE_SIZE = 2 * 1024 * 1024;

const VARIANTS = [
  { name: "Ver1v2", type: 3n },
  { name: "Ver1v0", type: 1n },
] as const;

interface Fixture {
  h: Harness;
  ioasId: number;
  domain: TestPagingDomain;
}

/** Setup: IOAS_ALLOC, a mock domain on it, IOMMU_VFIO_IOAS SET, VFIO_SET_IOMMU(variant). */
function setup(type: bigint): Fixture {
  const h = new Harness();
  const ioasId = h.ioasAlloc();
  const domain = new TestPagingDomain();
  h.ioas(ioasId).iopt.addDomain(domain);
  const set = h.call(IOMMU_VFIO_IOAS, IOMMU_VFIO_IOAS_LAYOUT, {
    ioas_id: ioasId,
    op: IOMMU_VFIO_IOAS_SET,
  });
  assert.equal(set.errno, 0);
  assert.equal(h.ctx.ioctl(VFIO_SET_IOMMU, type, h.proc).errno, 0);
  return { h, ioasId, domain };
}

function mapDma(h: Harness, vaddr: bigint, iova: bigint, size: bigint): number {
  const b = new Uint8Array(VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT.size);
  const flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  encode(VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT, { argsz: b.length, flags, vaddr, iova, size }, b);
  const at = h.proc.mmap(PAGE);
  h.proc.write(at, b);
  const errno = h.ctx.ioctl(VFIO_IOMMU_MAP_DMA, at, h.proc).errno;
  h.proc.munmap(at, PAGE);
  return errno;
}

function unmapDma(h: Harness, iova: bigint, size: bigint, flags = 0) {
  const layout = VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT;
  const b = new Uint8Array(layout.size);
  encode(layout, { argsz: b.length, flags, iova, size }, b);
  const at = h.proc.mmap(PAGE);
  h.proc.write(at, b);
  const errno = h.ctx.ioctl(VFIO_IOMMU_UNMAP_DMA, at, h.proc).errno;
  h.proc.read(at, b);
  h.proc.munmap(at, PAGE);
  return { errno, size: decode(layout, b).size };
}

function pinsOf(h: Harness, va: bigint, pages: number): number[] {
  const list = h.proc.pages(va, pages, false) as UserPage[];
  return list.map((p) => p.pins);
}

/** A deterministic shuffle (the selftest uses random order). */
function shuffled<T>(items: T[], seed: number): T[] {
  const out = items.slice();
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** MAP_HUGETLB memory: consecutive PFNs starting on a huge-page boundary. */
function hugeMmap(h: Harness, bytes: number): bigint {
  const perHuge = HUGEPAGE_SIZE / PAGE;
  const pool = contiguousPages(bytes / PAGE + perHuge - 1);
  const skip = (perHuge - (pool[0].pfn % perHuge)) % perHuge;
  return h.proc.mmap(bytes, { pages: pool.slice(skip, skip + bytes / PAGE) });
}

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

for (const variant of VARIANTS) {
  const isType1 = variant.type === 1n;

  describe(`vfio_compat_mock_domain (${variant.name})`, () => {
    it("simple_close: setup, a mapping, close: every pin and every IOPTE is gone", () => {
      const { h, domain } = setup(variant.type);
      const buf = h.proc.mmap(BUFFER_SIZE);
      assert.equal(mapDma(h, buf, MOCK_APERTURE_START, BigInt(BUFFER_SIZE)), 0);
      assert.deepEqual(pinsOf(h, buf, 16), new Array(16).fill(1));
      assert.deepEqual(h.ctx.close(), []);
      assert.deepEqual(pinsOf(h, buf, 16), new Array(16).fill(0));
      assert.deepEqual(domain.mapped(), []);
      assert.equal(h.ctx.table.size, 0);
    });

    it("option_huge_pages: HUGE_PAGES reads 0 after TYPE1, 1 after TYPE1v2", () => {
      const { h, ioasId } = setup(variant.type);
      const r = h.call(IOMMU_OPTION, IOMMU_OPTION_LAYOUT, {
        option_id: IOMMU_OPTION_HUGE_PAGES,
        op: IOMMU_OPTION_OP_GET,
        object_id: ioasId,
      });
      assert.equal(r.errno, 0);
      assert.equal(r.out.val64, isType1 ? 0n : 1n);
    });

    it("get_info: every argsz up to the full size, never writing past argsz", () => {
      const { h, domain } = setup(variant.type);
      const at = h.proc.mmap(BUFFER_SIZE);
      const call = (argsz: number) => {
        const buf = new Uint8Array(BUFFER_SIZE).fill(0xaa);
        dv(buf).setUint32(0, argsz, true);
        h.proc.write(at, buf);
        assert.equal(h.ctx.ioctl(VFIO_IOMMU_GET_INFO, at, h.proc).errno, 0, `argsz ${argsz}`);
        const back = new Uint8Array(BUFFER_SIZE);
        h.proc.read(at, back);
        for (let i = argsz; i < BUFFER_SIZE; i++)
          if (back[i] !== 0xaa) assert.fail(`argsz ${argsz}: byte ${i} written`);
        return back;
      };
      const flags3 = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;

      // The pre-capability ABI: 16 bytes.
      let b = call(16);
      assert.notEqual(dv(b).getBigUint64(8, true), 0n);
      assert.equal(dv(b).getUint32(4, true), flags3);

      b = call(24);
      assert.notEqual(dv(b).getBigUint64(8, true), 0n);
      assert.equal(dv(b).getUint32(4, true), flags3);
      assert.equal(dv(b).getUint32(16, true), 0);
      const full = dv(b).getUint32(0, true);
      assert.ok(full > 24);
      assert.equal(full, 72);

      for (let argsz = 24; argsz < full; argsz++) {
        b = call(argsz);
        assert.equal(dv(b).getUint32(4, true), flags3);
        assert.equal(dv(b).getUint32(16, true), 0, `argsz ${argsz}: cap_offset`);
        // From 40 on the DMA_AVAIL capability fits and its next already names 40.
        if (argsz >= 40) assert.equal(dv(b).getUint32(28, true), 40);
      }

      // The whole chain, walked as the selftest's check_vfio_info_cap_chain does.
      b = call(full);
      const v = dv(b);
      assert.equal(v.getUint32(0, true), full);
      assert.equal(v.getUint32(16, true), 24);
      // pgsizes: the mock's bitmap with sub-PAGE sizes folded into PAGE.
      const folded = (domain.pgsizeBitmap & ~(P - 1n)) | P;
      assert.equal(v.getBigUint64(8, true), folded);
      const seen: number[] = [];
      let cap = v.getUint32(16, true);
      while (cap !== 0) {
        const id = v.getUint16(cap, true);
        const next = v.getUint32(cap + 4, true);
        assert.equal(v.getUint16(cap + 2, true), 1, "version");
        assert.ok(next === 0 || (next > cap && next < full), "next moves forward inside argsz");
        if (id === 1) {
          assert.equal(v.getUint32(cap + 8, true), 1, "nr_iovas");
          assert.equal(v.getBigUint64(cap + 16, true), MOCK_APERTURE_START);
          assert.equal(v.getBigUint64(cap + 24, true), MOCK_APERTURE_LAST);
        } else if (id === 3) {
          assert.equal(v.getUint32(cap + 8, true), 0xffffffff, "DMA avail");
        } else {
          assert.fail(`unknown capability ${id}`);
        }
        seen.push(id);
        cap = next;
      }
      assert.deepEqual(seen, [3, 1]);

      // A larger argsz gets the same 72 bytes and the size actually needed back.
      b = call(4 * PAGE);
      assert.equal(dv(b).getUint32(0, true), full);
      assert.deepEqual(b.subarray(full, 4 * PAGE), new Uint8Array(4 * PAGE - full).fill(0xaa));
    });

    it("map: unmap returns BUFFER_SIZE, empty unmap is 0, UNMAP_ALL, page-by-page in any order", () => {
      const { h, domain } = setup(variant.type);
      const buf = h.proc.mmap(BUFFER_SIZE);
      const size = BigInt(BUFFER_SIZE);
      const at = MOCK_APERTURE_START;

      assert.equal(mapDma(h, buf, at, size), 0);
      let r = unmapDma(h, at, size);
      assert.deepEqual([r.errno, r.size], [0, size]);
      // Unmap of empty is success.
      r = unmapDma(h, at, size);
      assert.deepEqual([r.errno, r.size], [0, 0n]);

      assert.equal(mapDma(h, buf, at, size), 0);
      r = unmapDma(h, at, size, VFIO_DMA_UNMAP_FLAG_ALL);
      assert.equal(r.errno, EINVAL);
      r = unmapDma(h, 0n, 0n, VFIO_DMA_UNMAP_FLAG_ALL);
      assert.deepEqual([r.errno, r.size], [0, size]);
      assert.deepEqual(domain.mapped(), []);

      for (let i = 0n; i < 16n; i++) assert.equal(mapDma(h, buf + i * P, at + i * P, P), 0);
      assert.deepEqual(pinsOf(h, buf, 16), new Array(16).fill(1));
      for (const i of shuffled([...Array(16).keys()], 7)) {
        r = unmapDma(h, at + BigInt(i) * P, P);
        assert.deepEqual([r.errno, r.size], [0, P], `page ${i}`);
      }
      assert.deepEqual(pinsOf(h, buf, 16), new Array(16).fill(0));
      assert.deepEqual(domain.mapped(), []);
    });

    it(`huge_map: 16 slices of a 2-huge-page mapping unmap ${isType1 ? "(split)" : "ENOENT"}`, () => {
      const { h, ioasId, domain } = setup(variant.type);
      const bytes = 2 * HUGEPAGE_SIZE;
      const buf = hugeMmap(h, bytes);
      assert.equal(mapDma(h, buf, MOCK_APERTURE_START, BigInt(bytes)), 0);
      const leafSizes = new Set(domain.mapped().map((l) => l.sizeLg2));
      // TYPE1 (large pages off) fills the domain in its smallest pages; TYPE1v2 may use larger.
      const smallestLg2 = Math.log2(Number(domain.pgsizeBitmap & -domain.pgsizeBitmap));
      if (isType1) assert.deepEqual([...leafSizes], [smallestLg2]);
      else assert.ok([...leafSizes].some((lg2) => lg2 > 12));

      const slice = BigInt(HUGEPAGE_SIZE / 8);
      for (const i of shuffled([...Array(16).keys()], 3)) {
        const r = unmapDma(h, MOCK_APERTURE_START + BigInt(i) * slice, slice);
        if (isType1) assert.deepEqual([r.errno, r.size], [0, slice], `slice ${i}`);
        else assert.deepEqual([r.errno, r.size], [ENOENT, 0n], `slice ${i}`);
      }
      const areas = h.ioas(ioasId).iopt.areas;
      const pins = pinsOf(h, buf, bytes / PAGE);
      if (isType1) {
        assert.equal(areas.length, 0);
        assert.ok(pins.every((n) => n === 0));
        assert.deepEqual(domain.mapped(), []);
      } else {
        assert.equal(areas.length, 1);
        assert.ok(pins.every((n) => n === 1));
      }
    });

    it(`sub-PAGE unmaps: ${isType1 ? "EINVAL from the cut (no write-back)" : "ENOENT"}`, () => {
      const { h } = setup(variant.type);
      const buf = h.proc.mmap(BUFFER_SIZE);
      assert.equal(mapDma(h, buf, MOCK_APERTURE_START, BigInt(BUFFER_SIZE)), 0);
      const r = unmapDma(h, MOCK_APERTURE_START, 2048n);
      if (isType1) assert.deepEqual([r.errno, r.size], [EINVAL, 2048n]);
      else assert.deepEqual([r.errno, r.size], [ENOENT, 0n]);
    });

    it("model: MAP_DMA / UNMAP_DMA agree with a page-set model (areas, pins, IOPTEs)", () => {
      const WINDOW = 32;
      const op = fc.oneof(
        fc.record({
          kind: fc.constant("map" as const),
          first: fc.nat(WINDOW - 1),
          n: fc.integer({ min: 1, max: 8 }),
        }),
        fc.record({
          kind: fc.constant("unmap" as const),
          first: fc.nat(WINDOW - 1),
          n: fc.integer({ min: 1, max: 12 }),
        }),
        fc.constant({ kind: "all" as const, first: 0, n: 0 }),
      );
      fc.assert(
        fc.property(fc.array(op, { maxLength: 24 }), (ops) => {
          const { h, ioasId, domain } = setup(variant.type);
          const buf = h.proc.mmap(WINDOW * PAGE);
          // Areas as [first, last] page indexes, sorted.
          let areas: [number, number][] = [];
          for (const o of ops) {
            const last = Math.min(o.first + o.n, WINDOW) - 1;
            const iova = MOCK_APERTURE_START + BigInt(o.first) * P;
            const len = BigInt(last - o.first + 1) * P;
            if (o.kind === "map") {
              const clash = areas.some(([a, b]) => a <= last && o.first <= b);
              const rc = mapDma(h, buf + BigInt(o.first) * P, iova, len);
              assert.equal(rc, clash ? EEXIST : 0);
              if (!clash) areas = [...areas, [o.first, last] as [number, number]].sort(byFirst);
            } else if (o.kind === "all") {
              const total = areas.reduce((s, [a, b]) => s + (b - a + 1), 0);
              const r = unmapDma(h, 0n, 0n, VFIO_DMA_UNMAP_FLAG_ALL);
              assert.deepEqual([r.errno, r.size], [0, BigInt(total) * P]);
              areas = [];
            } else {
              const want = modelUnmap(areas, o.first, last, isType1);
              const r = unmapDma(h, iova, len);
              assert.deepEqual([r.errno, r.size], [want.errno, BigInt(want.pages) * P]);
              areas = want.areas;
            }
            const mappedPages = new Set<number>();
            for (const [a, b] of areas) for (let i = a; i <= b; i++) mappedPages.add(i);
            const pins = pinsOf(h, buf, WINDOW);
            for (let i = 0; i < WINDOW; i++) assert.equal(pins[i], mappedPages.has(i) ? 1 : 0);
            const leafBytes = domain.mapped().reduce((s, l) => s + 2 ** l.sizeLg2, 0);
            assert.equal(leafBytes, mappedPages.size * PAGE);
            const got = h.ioas(ioasId).iopt.areas;
            if (isType1) {
              // Areas may have been split, but they cover exactly the model's pages.
              let n = 0;
              for (const a of got) n += Number(a.length / P);
              assert.equal(n, mappedPages.size);
            } else {
              assert.deepEqual(
                got.map((a) => [a.iova, a.last]),
                areas.map(([a, b]) => [
                  MOCK_APERTURE_START + BigInt(a) * P,
                  MOCK_APERTURE_START + BigInt(b + 1) * P - 1n,
                ]),
              );
            }
          }
          h.ctx.close();
        }),
        { numRuns: 60 },
      );
    });
  });
}

function byFirst(a: [number, number], b: [number, number]): number {
  return a[0] - b[0];
}

/**
 * The expected effect of unmapping pages [first, last]. TYPE1 (cuts first): every mapped page
 * in the range goes. TYPE1v2: areas inside the range go in ascending order until one sticks
 * out of it (ENOENT; those before it stay removed).
 */
function modelUnmap(
  areas: [number, number][],
  first: number,
  last: number,
  type1: boolean,
): { errno: number; pages: number; areas: [number, number][] } {
  if (type1) {
    const out: [number, number][] = [];
    let pages = 0;
    for (const [a, b] of areas) {
      if (b < first || a > last) {
        out.push([a, b]);
        continue;
      }
      pages += Math.min(b, last) - Math.max(a, first) + 1;
      if (a < first) out.push([a, first - 1]);
      if (b > last) out.push([last + 1, b]);
    }
    return { errno: 0, pages, areas: out.sort(byFirst) };
  }
  const out = areas.slice();
  let pages = 0;
  for (const [a, b] of areas) {
    if (b < first || a > last) continue;
    if (a < first || b > last) return { errno: ENOENT, pages, areas: out };
    pages += b - a + 1;
    out.splice(
      out.findIndex(([x]) => x === a),
      1,
    );
  }
  return { errno: 0, pages, areas: out };
}

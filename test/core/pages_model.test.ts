/**
 * Property test over random sequences of MAP / COPY / UNMAP / domain add and remove / access
 * pin and unpin on two IOASes sharing one buffer. After every step, checked against what
 * the spec says must hold (ioas-pages.md §2.3, §2.4, §9, §10):
 *  - a page's pin count is the number of distinct iopt_pages that hold it, where an index is
 *    held iff a domain-filled area or a live access pin covers it (computed here from the
 *    areas and the driver's own pin list, not from the pages' bookkeeping);
 *  - every domain maps exactly its IOAS's areas, each 2 KiB step to the right user page;
 *  - VmPin and the locked count equal the number of held indexes;
 * and after tearing everything down nothing is pinned or charged.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  accessAttach,
  accessCreate,
  accessPinPages,
  accessUnpinPages,
} from "../../src/core/access.ts";
import type { IoptPages } from "../../src/core/pages.ts";
import { FakeProcess, type UserPage } from "../../src/core/user_mm.ts";
import { Harness, PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const HALF = 2048n;
const NPAGES = 8;

type Op =
  | { k: "map"; ioas: number; start: number; len: number }
  | { k: "copy"; src: number; dst: number; area: number; off: number; len: number }
  | { k: "unmap"; ioas: number; area: number }
  | { k: "addDomain"; ioas: number }
  | { k: "removeDomain"; ioas: number; which: number }
  | { k: "pin"; area: number; off: number; len: number }
  | { k: "unpin"; which: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant("map" as const),
    ioas: fc.nat(1),
    start: fc.nat(2 * NPAGES - 1),
    len: fc.integer({ min: 1, max: 2 * NPAGES }),
  }),
  fc.record({
    k: fc.constant("copy" as const),
    src: fc.nat(1),
    dst: fc.nat(1),
    area: fc.nat(7),
    off: fc.nat(15),
    len: fc.integer({ min: 1, max: 16 }),
  }),
  fc.record({ k: fc.constant("unmap" as const), ioas: fc.nat(1), area: fc.nat(7) }),
  fc.record({ k: fc.constant("addDomain" as const), ioas: fc.nat(1) }),
  fc.record({ k: fc.constant("removeDomain" as const), ioas: fc.nat(1), which: fc.nat(1) }),
  fc.record({
    k: fc.constant("pin" as const),
    area: fc.nat(7),
    off: fc.nat(7),
    len: fc.integer({ min: 1, max: 8 }),
  }),
  fc.record({ k: fc.constant("unpin" as const), which: fc.nat(7) }),
);

describe("pinning model", () => {
  it("pins, domain contents and charges match the spec after every step", () => {
    // Successful operations per kind over all runs: the sequences must really exercise them.
    const tally: Record<Op["k"], number> = {
      map: 0,
      copy: 0,
      unmap: 0,
      addDomain: 0,
      removeDomain: 0,
      pin: 0,
      unpin: 0,
    };
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 10, maxLength: 40 }), (ops) => {
        const proc = new FakeProcess({ capIpcLock: false });
        const h = new Harness(proc);
        const ids = [h.ioasAlloc(), h.ioasAlloc()];
        const buf = proc.mmap(NPAGES * PAGE, { shared: true });
        const userPages = proc.pages(buf, NPAGES, false) as UserPage[];
        const domains: TestPagingDomain[][] = [[], []];
        const pins: { iova: bigint; length: bigint }[] = [];
        const access = accessCreate(h.ctx, {
          needsPinPages: true,
          unmap(iova, length) {
            const last = iova + length - 1n;
            for (let i = pins.length - 1; i >= 0; i--) {
              const it = pins[i];
              if (it.iova > last || it.iova + it.length - 1n < iova) continue;
              accessUnpinPages(access, it.iova, it.length);
              pins.splice(i, 1);
            }
          },
        });
        accessAttach(access, ids[0]);

        const check = () => {
          // Expected holders: (pages, index) pairs covered by a domain-filled area or a pin.
          const held = new Map<IoptPages, Set<number>>();
          const add = (pages: IoptPages, first: number, last: number) => {
            const s = held.get(pages) ?? new Set<number>();
            held.set(pages, s);
            for (let i = first; i <= last; i++) s.add(i);
          };
          for (let k = 0; k < 2; k++) {
            const iopt = h.ioas(ids[k]).iopt;
            if (domains[k].length === 0) continue;
            for (const a of iopt.areas) add(a.pages!, a.index, a.lastIndex);
          }
          for (const it of pins) {
            for (const p of h.ioas(ids[0]).iopt.contigAreas(it.iova, it.iova + it.length - 1n)
              .pieces) {
              add(p.area.pages!, p.area.iovaToIndex(p.cur), p.area.iovaToIndex(p.last));
            }
          }
          const want = new Array(NPAGES).fill(0);
          let total = 0;
          for (const [pages, set] of held) {
            total += set.size;
            for (const i of set) want[Number((pages.base - buf) / P) + i]++;
          }
          assert.deepEqual(
            userPages.map((p) => p.pins),
            want,
          );
          assert.equal(proc.accounting.pinnedPages, total);
          assert.equal(proc.accounting.lockedPages, total);
          // Every domain maps exactly its IOAS's areas, to the right pages.
          for (let k = 0; k < 2; k++) {
            const iopt = h.ioas(ids[k]).iopt;
            let bytes = 0n;
            for (const a of iopt.areas) {
              bytes += a.length;
              const va = a.pages!.base + a.startByte(a.iova);
              for (const d of domains[k]) {
                for (let off = 0n; off < a.length; off += HALF) {
                  const at = va + off;
                  const page = userPages[Number((at - buf) / P)];
                  assert.equal(d.iovaToPhys(a.iova + off), page.pfn * PAGE + Number(at % P));
                }
              }
            }
            for (const d of domains[k]) {
              const leafBytes = d.mapped().reduce((s, l) => s + (1n << BigInt(l.sizeLg2)), 0n);
              assert.equal(leafBytes, bytes);
            }
          }
        };

        for (const op of ops) {
          switch (op.k) {
            case "map": {
              // IOAS 0 has the pinning access, so its alignment is a whole page.
              const unit = op.ioas === 0 ? 2 : 1;
              const start = op.start - (op.start % unit);
              const len = Math.max(unit, Math.min(op.len, 2 * NPAGES - start));
              const r = h.map(
                ids[op.ioas],
                buf + BigInt(start) * HALF,
                BigInt(len - (len % unit)) * HALF,
              );
              if (r.errno === 0) tally.map++;
              break;
            }
            case "copy": {
              const areas = h.ioas(ids[op.src]).iopt.areas;
              if (areas.length === 0) break;
              const a = areas[op.area % areas.length];
              const halves = Number(a.length / HALF);
              const off = op.off % halves;
              const len = Math.min(op.len, halves - off);
              const iova = a.iova + BigInt(off) * HALF;
              if (h.copy(ids[op.dst], ids[op.src], iova, BigInt(len) * HALF).errno === 0)
                tally.copy++;
              break;
            }
            case "unmap": {
              const areas = h.ioas(ids[op.ioas]).iopt.areas;
              if (areas.length === 0) break;
              const a = areas[op.area % areas.length];
              if (h.unmap(ids[op.ioas], a.iova, a.length).errno === 0) tally.unmap++;
              break;
            }
            case "addDomain": {
              if (domains[op.ioas].length >= 2) break;
              const d = new TestPagingDomain();
              try {
                h.ioas(ids[op.ioas]).iopt.addDomain(d);
                domains[op.ioas].push(d);
                tally.addDomain++;
              } catch {
                assert.equal(d.mapped().length, 0);
              }
              break;
            }
            case "removeDomain": {
              const list = domains[op.ioas];
              if (list.length === 0) break;
              const d = list.splice(op.which % list.length, 1)[0];
              h.ioas(ids[op.ioas]).iopt.removeDomain(d);
              assert.equal(d.mapped().length, 0);
              tally.removeDomain++;
              break;
            }
            case "pin": {
              const areas = h.ioas(ids[0]).iopt.areas;
              if (areas.length === 0) break;
              const a = areas[op.area % areas.length];
              const pages = Number(a.length / P);
              const off = op.off % pages;
              const length = BigInt(Math.min(op.len, pages - off)) * P;
              const iova = a.iova + BigInt(off) * P;
              try {
                accessPinPages(access, iova, length, 0);
                pins.push({ iova, length });
                tally.pin++;
              } catch {
                // Rejected pins must leave no trace; check() verifies that.
              }
              break;
            }
            case "unpin": {
              if (pins.length === 0) break;
              const it = pins.splice(op.which % pins.length, 1)[0];
              accessUnpinPages(access, it.iova, it.length);
              tally.unpin++;
              break;
            }
          }
          check();
        }

        for (const it of pins) accessUnpinPages(access, it.iova, it.length);
        pins.length = 0;
        for (let k = 0; k < 2; k++) {
          for (const d of domains[k]) h.ioas(ids[k]).iopt.removeDomain(d);
          domains[k] = [];
          assert.equal(h.unmap(ids[k], 0n, U64_MAX).errno, 0);
        }
        assert.ok(userPages.every((p) => p.pins === 0));
        assert.deepEqual([proc.accounting.pinnedPages, proc.accounting.lockedPages], [0, 0]);
      }),
      { numRuns: 200 },
    );
    for (const [kind, n] of Object.entries(tally))
      assert.ok(n >= 50, `${kind}: ${n} successes of ${JSON.stringify(tally)}`);
  });
});

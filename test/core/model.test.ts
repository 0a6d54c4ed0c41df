/**
 * Model-based test of the ioctl surface: random sequences of IOAS alloc / map / unmap / copy /
 * destroy, MOCK_DOMAIN create and destroy, HWPT_ALLOC and destroy, and selftest accesses
 * (create, pin, unpin, close), run through IommufdContext.ioctl against a small reference model
 * written from the specs (core-objects-vfio.md object rules, ioas-pages.md §2.3 / §9 pinning,
 * hwpt-device.md §6 auto domains, mock-driver-failnth.md §2). After every step:
 *  - the errno is the one the model predicts, and new ids are the model's lowest free ids;
 *  - the live objects, their types and their `users` counts are the model's (EBUSY follows);
 *  - every buffer page's pin count is the number of distinct mappings (iopt_pages) holding it,
 *    where a mapping holds a page if an IOAS with a domain maps it or an access pinned it;
 *  - VmPin equals the held page count;
 *  - a failed call changed nothing at all (objects, areas, pins, fds, devices, tables).
 * At the end closing everything leaves no pin, device, table page or fd.
 */
import "../../src/core/selftest.ts";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { IommufdContext } from "../../src/core/context.ts";
import { ObjType } from "../../src/core/object.ts";
import {
  closeAllSelftestFds,
  closeSelftestFd,
  SELFTEST_FD_BASE,
  selftestFile,
  selftestOpenFds,
} from "../../src/core/selftest.ts";
import { FakeProcess, type UserPage } from "../../src/core/user_mm.ts";
import { EADDRINUSE, EBADF, EBUSY, EINVAL, ENOENT, EOPNOTSUPP } from "../../src/errno.ts";
import { mockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOC_LAYOUT,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
} from "../../src/uapi/index.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const EBADFD = 77;
const P = BigInt(PAGE);
const NPAGES = 8;
const APERTURE_START = 1n << 24n;
const APERTURE_LAST = (1n << 31n) - 1n;

// ---- The reference model -----------------------------------------------------------------------

type Kind = "IOAS" | "HWPT" | "STDEV" | "IDEV" | "ACCESS";

const KIND_TYPE: Record<Kind, number> = {
  IOAS: ObjType.IOAS,
  HWPT: ObjType.HWPT_PAGING,
  STDEV: ObjType.SELFTEST,
  IDEV: ObjType.DEVICE,
  ACCESS: ObjType.ACCESS,
};

interface MArea {
  iova: bigint;
  npages: number;
  /** First buffer page it maps. */
  first: number;
  /** Which iopt_pages backs it (MAP makes one, COPY shares the source's). */
  pagesId: number;
}

interface MItem {
  id: number;
  first: number;
  npages: number;
  pagesId: number;
  iova: bigint;
}

interface MAccess {
  fd: number;
  objId: number;
  ioas: number;
  pin: boolean;
  items: MItem[];
  nextItem: number;
}

interface MHwpt {
  ioas: number;
  auto: boolean;
  /** stdev ids of the devices attached at their RID. */
  devices: Set<number>;
}

class Model {
  readonly kinds = new Map<number, Kind>();
  /** IOAS id -> its areas. */
  readonly ioas = new Map<number, MArea[]>();
  /** HWPT id -> record, in creation order (auto-domain reuse walks it in order). */
  readonly hwpts = new Map<number, MHwpt>();
  /** stdev id -> {idev, hwpt}. */
  readonly devs = new Map<number, { idev: number; hwpt: number }>();
  /** fd -> access. */
  readonly accesses = new Map<number, MAccess>();
  nextPagesId = 1;

  lowestFreeId(taken: Set<number> = new Set()): number {
    let id = 1;
    while (this.kinds.has(id) || taken.has(id)) id++;
    return id;
  }

  lowestFreeFd(): number {
    let fd = SELFTEST_FD_BASE;
    while (this.accesses.has(fd)) fd++;
    return fd;
  }

  hasDomain(ioas: number): boolean {
    for (const h of this.hwpts.values()) if (h.ioas === ioas) return true;
    return false;
  }

  /** A new domain on `ioas` reserves everything outside the mock aperture: EADDRINUSE. */
  domainFits(ioas: number): boolean {
    return (this.ioas.get(ioas) ?? []).every(
      (a) => a.iova >= APERTURE_START && a.iova + BigInt(a.npages) * P - 1n <= APERTURE_LAST,
    );
  }

  users(id: number): number {
    const kind = this.kinds.get(id);
    if (kind === "IOAS") {
      let n = 1;
      for (const h of this.hwpts.values()) if (h.ioas === id) n++;
      for (const a of this.accesses.values()) if (a.ioas === id) n++;
      return n;
    }
    if (kind === "HWPT") return 1 + (this.hwpts.get(id)?.devices.size ?? 0);
    // A bound device: the table, the driver (binding) and its RID attachment.
    if (kind === "IDEV") return 3;
    // An access: the table and its driver (the access fd).
    if (kind === "ACCESS") return 2;
    return 1;
  }

  /** Expected pin count of each buffer page, and the number of held (pages, index) pairs. */
  pins(): { perPage: number[]; held: number } {
    const held = new Map<number, Set<number>>();
    const hold = (pagesId: number, first: number, n: number) => {
      let s = held.get(pagesId);
      if (s === undefined) {
        s = new Set();
        held.set(pagesId, s);
      }
      for (let p = first; p < first + n; p++) s.add(p);
    };
    for (const [id, areas] of this.ioas) {
      if (!this.hasDomain(id)) continue;
      for (const a of areas) hold(a.pagesId, a.first, a.npages);
    }
    for (const acc of this.accesses.values())
      for (const it of acc.items) hold(it.pagesId, it.first, it.npages);
    const perPage = new Array(NPAGES).fill(0);
    let total = 0;
    for (const s of held.values()) {
      for (const p of s) perPage[p]++;
      total += s.size;
    }
    return { perPage, held: total };
  }

  /** The IOAS unmap notice: accesses on `ioas` drop items intersecting the area. */
  dropItems(ioas: number, area: MArea): void {
    const last = area.iova + BigInt(area.npages) * P - 1n;
    for (const acc of this.accesses.values()) {
      if (acc.ioas !== ioas) continue;
      acc.items = acc.items.filter(
        (it) => it.iova + BigInt(it.npages) * P - 1n < area.iova || it.iova > last,
      );
    }
  }

  /** IOMMU_DESTROY of `id` as the model sees it: the errno, and the state change when 0. */
  destroy(id: number): number {
    const kind = this.kinds.get(id);
    if (kind === undefined) return ENOENT;
    if (this.users(id) !== 1) return EBUSY;
    if (kind === "STDEV") {
      const dev = this.devs.get(id)!;
      const hwpt = this.hwpts.get(dev.hwpt)!;
      hwpt.devices.delete(id);
      if (hwpt.auto && hwpt.devices.size === 0) {
        this.hwpts.delete(dev.hwpt);
        this.kinds.delete(dev.hwpt);
      }
      this.kinds.delete(dev.idev);
      this.devs.delete(id);
    } else if (kind === "HWPT") {
      this.hwpts.delete(id);
    } else if (kind === "IOAS") {
      this.ioas.delete(id);
    }
    this.kinds.delete(id);
    return 0;
  }
}

// ---- Operations --------------------------------------------------------------------------------

type Op =
  | { k: "ioasAlloc" }
  | { k: "destroy"; what: number; i: number }
  | { k: "map"; ioas: number; start: number; n: number }
  | { k: "unmap"; ioas: number; area: number }
  | { k: "copy"; src: number; area: number; dst: number }
  | { k: "mockDomain"; target: number; onHwpt: boolean }
  | { k: "hwptAlloc"; dev: number; pt: number; ptIsAny: boolean }
  | { k: "createAccess"; ioas: number; pin: boolean }
  | { k: "pin"; access: number; area: number; off: number; n: number }
  | { k: "unpin"; access: number; item: number }
  | { k: "closeAccess"; access: number };

const pick = fc.nat(63);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant({ k: "ioasAlloc" as const }), weight: 1 },
  {
    arbitrary: fc.record({ k: fc.constant("destroy" as const), what: fc.nat(4), i: fc.nat(63) }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("map" as const),
      ioas: pick,
      start: fc.nat(NPAGES - 1),
      n: fc.integer({ min: 1, max: NPAGES }),
    }),
    weight: 6,
  },
  { arbitrary: fc.record({ k: fc.constant("unmap" as const), ioas: pick, area: pick }), weight: 2 },
  {
    arbitrary: fc.record({ k: fc.constant("copy" as const), src: pick, area: pick, dst: pick }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("mockDomain" as const),
      target: pick,
      onHwpt: fc.boolean(),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("hwptAlloc" as const),
      dev: pick,
      pt: fc.nat(63),
      ptIsAny: fc.nat(3).map((x) => x === 0),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("createAccess" as const),
      ioas: pick,
      pin: fc.nat(3).map((x) => x !== 0),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant("pin" as const),
      access: pick,
      area: pick,
      off: fc.nat(NPAGES - 1),
      n: fc.integer({ min: 1, max: NPAGES }),
    }),
    weight: 5,
  },
  {
    arbitrary: fc.record({ k: fc.constant("unpin" as const), access: pick, item: pick }),
    weight: 3,
  },
  { arbitrary: fc.record({ k: fc.constant("closeAccess" as const), access: pick }), weight: 1 },
);

/** Everything a failed call must leave as it was. */
function snapshot(h: SelftestHarness, pages: UserPage[]): string {
  const objs = [...h.ctx.table.live()].map((o) => `${o.id}:${o.type}:${o.users}`);
  const areas: string[] = [];
  for (const o of h.ctx.table.live()) {
    if (o.type !== ObjType.IOAS) continue;
    const list = h.ioas(o.id).iopt.areas.map((a) => `${a.iova}+${a.length}`);
    areas.push(`${o.id}[${list.join(",")}]`);
  }
  const fds = selftestOpenFds(h.ctx).map(({ fd }) => {
    const f = selftestFile(h.ctx, fd);
    const items = f?.kind === "access" ? f.items.map((i) => `${i.id}@${i.iova}`) : [];
    return `${fd}(${items.join(",")})`;
  });
  return JSON.stringify({
    objs,
    areas,
    fds,
    pins: pages.map((p) => p.pins),
    vmPin: h.proc.accounting.pinnedPages,
    devices: mockIommu.devices.size,
    tables: mockIommu.alloc.live,
    size: h.ctx.table.size,
  });
}

/** Lists grow as objects are created; ops pick from them by index (stale entries included). */
interface Seen {
  ioas: number[];
  hwpts: number[];
  idevs: number[];
  stdevs: number[];
  /** Ids of ACCESS objects. */
  accesses: number[];
  fds: number[];
}

function pickFrom(list: number[], i: number, fallback = 999): number {
  return list.length === 0 ? fallback : list[i % list.length];
}

/** Mostly one of the entries still `live` (stale ones a quarter of the time, for errors). */
function pickLive(list: number[], live: (x: number) => boolean, i: number, fallback = 999): number {
  if (i % 4 === 0) return pickFrom(list, i >> 2, fallback);
  return pickFrom(list.filter(live), i >> 2, pickFrom(list, i, fallback));
}

describe("ioctl model", () => {
  it("objects, ids, errnos, users, pins and failed calls follow the model", () => {
    const tally = new Map<string, number>();
    const errnos = new Map<string, number>();
    const baseDevices = mockIommu.devices.size;
    const baseTables = mockIommu.alloc.live;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 20, maxLength: 80, size: "max" }), (ops) => {
        const proc = new FakeProcess();
        const buffer = proc.mmap(NPAGES * PAGE);
        const got = proc.pages(buffer, NPAGES, false);
        assert.ok(typeof got !== "number");
        const pages = got;
        const h = new SelftestHarness(proc, new IommufdContext());
        const m = new Model();
        const seen: Seen = { ioas: [], hwpts: [], idevs: [], stdevs: [], accesses: [], fds: [] };

        // Two IOASes to start from: most operations need one.
        const prefix: Op[] = [{ k: "ioasAlloc" }, { k: "ioasAlloc" }];
        for (const op of [...prefix, ...ops]) {
          const before = snapshot(h, pages);
          const { expect, actual } = step(h, m, seen, op, buffer);
          assert.equal(actual, expect, `${JSON.stringify(op)}: errno`);
          if (actual !== 0)
            assert.equal(snapshot(h, pages), before, `${op.k} failed but changed state`);
          else tally.set(op.k, (tally.get(op.k) ?? 0) + 1);
          const key = `${op.k}:${actual}`;
          errnos.set(key, (errnos.get(key) ?? 0) + 1);
          checkState(h, m, pages);
        }

        closeAllSelftestFds(h.ctx);
        assert.deepEqual(h.ctx.close(), []);
        assert.ok(pages.every((p) => p.pins === 0));
        assert.equal(proc.accounting.pinnedPages, 0);
        assert.equal(mockIommu.devices.size, baseDevices);
        assert.equal(mockIommu.alloc.live, baseTables);
      }),
      { numRuns: 200 },
    );
    // The generated sequences must really exercise every operation successfully, and the
    // error paths the model predicts.
    for (const k of [
      "ioasAlloc",
      "destroy",
      "map",
      "unmap",
      "copy",
      "mockDomain",
      "hwptAlloc",
      "createAccess",
      "pin",
      "unpin",
      "closeAccess",
    ])
      assert.ok((tally.get(k) ?? 0) > 30, `${k} succeeded only ${tally.get(k) ?? 0} times`);
    const errorPaths = [
      `destroy:${EBUSY}`,
      `destroy:${ENOENT}`,
      `mockDomain:${EADDRINUSE}`,
      `mockDomain:${EINVAL}`,
      `mockDomain:${ENOENT}`,
      `hwptAlloc:${EINVAL}`,
      `hwptAlloc:${ENOENT}`,
      `pin:${EBADFD}`,
      `pin:${EOPNOTSUPP}`,
      `pin:${ENOENT}`,
      `unpin:${ENOENT}`,
      `closeAccess:${EBADF}`,
      `copy:${ENOENT}`,
      `unmap:${ENOENT}`,
    ];
    for (const key of errorPaths) assert.ok(errnos.has(key), `never saw ${key}`);
  });
});

/** Runs one op on both sides: the model's predicted errno and the real one. */
function step(
  h: SelftestHarness,
  m: Model,
  seen: Seen,
  op: Op,
  buffer: bigint,
): { expect: number; actual: number } {
  switch (op.k) {
    case "ioasAlloc": {
      const id = m.lowestFreeId();
      const r = h.call(IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOC_LAYOUT, {});
      if (r.errno === 0) {
        assert.equal(r.out.out_ioas_id, id);
        m.kinds.set(id, "IOAS");
        m.ioas.set(id, []);
        seen.ioas.push(id);
      }
      return { expect: 0, actual: r.errno };
    }
    case "destroy": {
      // A random id, or one of the objects of a kind seen so far (live or not).
      const lists = [seen.stdevs, seen.hwpts, seen.ioas, [...seen.idevs, ...seen.accesses]];
      const id =
        op.what === 0 ? op.i : pickLive(lists[op.what - 1], (x) => m.kinds.has(x), op.i, op.i);
      const expect = m.destroy(id);
      return { expect, actual: h.destroy(id) };
    }
    case "map": {
      const ioas = pickLive(seen.ioas, (x) => m.ioas.has(x), op.ioas);
      const n = Math.min(op.n, NPAGES - op.start);
      const r = h.map(ioas, buffer + BigInt(op.start) * P, n * PAGE);
      const expect = m.ioas.has(ioas) ? 0 : ENOENT;
      if (r.errno === 0 && expect === 0) {
        m.ioas
          .get(ioas)!
          .push({ iova: r.out.iova, npages: n, first: op.start, pagesId: m.nextPagesId++ });
        if (m.hasDomain(ioas)) {
          assert.ok(r.out.iova >= APERTURE_START, "an IOAS with a domain maps inside the aperture");
        }
      }
      return { expect, actual: r.errno };
    }
    case "unmap": {
      const ioas = pickLive(seen.ioas, (x) => m.ioas.has(x), op.ioas);
      const areas = m.ioas.get(ioas);
      const area =
        areas !== undefined && areas.length > 0 ? areas[op.area % areas.length] : undefined;
      const iova = area?.iova ?? 0n;
      const len = BigInt(area?.npages ?? 1) * P;
      const r = h.unmap(ioas, iova, len);
      const expect = areas === undefined || area === undefined ? ENOENT : 0;
      if (expect === 0 && r.errno === 0) {
        assert.equal(r.out.length, len);
        m.dropItems(ioas, area!);
        areas!.splice(areas!.indexOf(area!), 1);
      }
      return { expect, actual: r.errno };
    }
    case "copy": {
      const src = pickLive(seen.ioas, (x) => m.ioas.has(x), op.src);
      const dst = pickLive(seen.ioas, (x) => m.ioas.has(x), op.dst);
      const areas = m.ioas.get(src);
      const area =
        areas !== undefined && areas.length > 0 ? areas[op.area % areas.length] : undefined;
      const r = h.copy(dst, src, area?.iova ?? 0n, BigInt(area?.npages ?? 1) * P);
      let expect = 0;
      if (areas === undefined) expect = ENOENT;
      else if (area === undefined) expect = ENOENT;
      else if (!m.ioas.has(dst)) expect = ENOENT;
      if (expect === 0 && r.errno === 0) m.ioas.get(dst)!.push({ ...area!, iova: r.out.dst_iova });
      return { expect, actual: r.errno };
    }
    case "mockDomain": {
      const target = op.onHwpt
        ? pickLive(seen.hwpts, (x) => m.hwpts.has(x), op.target)
        : pickLive(seen.ioas, (x) => m.ioas.has(x), op.target);
      const stdev = m.lowestFreeId();
      const idev = m.lowestFreeId(new Set([stdev]));
      // The pt lookup runs after the stdev id is reserved (invisible) and the DEVICE object is
      // published: a pt id equal to either names them.
      const kind = target === idev ? "IDEV" : target === stdev ? undefined : m.kinds.get(target);
      let expect = 0;
      let hwpt = target;
      let created = false;
      if (kind === undefined) expect = ENOENT;
      else if (kind === "IOAS") {
        const reuse = [...m.hwpts].find(([, x]) => x.ioas === target && x.auto);
        if (reuse !== undefined) hwpt = reuse[0];
        else if (!m.domainFits(target)) expect = EADDRINUSE;
        else {
          hwpt = m.lowestFreeId(new Set([stdev, idev]));
          created = true;
        }
      } else if (kind !== "HWPT") expect = EINVAL;
      const r = h.test(OP.MOCK_DOMAIN, target);
      if (expect === 0 && r.errno === 0) {
        assert.deepEqual([r.out.out_stdev_id, r.out.out_idev_id, r.out.out_hwpt_id].map(Number), [
          stdev,
          idev,
          hwpt,
        ]);
        m.kinds.set(stdev, "STDEV");
        m.kinds.set(idev, "IDEV");
        if (created) {
          m.kinds.set(hwpt, "HWPT");
          m.hwpts.set(hwpt, { ioas: target, auto: true, devices: new Set() });
          seen.hwpts.push(hwpt);
        }
        m.hwpts.get(hwpt)!.devices.add(stdev);
        m.devs.set(stdev, { idev, hwpt });
        seen.idevs.push(idev);
        seen.stdevs.push(stdev);
      }
      return { expect, actual: r.errno };
    }
    case "hwptAlloc": {
      const dev = pickLive(seen.idevs, (x) => m.kinds.has(x), op.dev);
      const pt = op.ptIsAny ? op.pt : pickLive(seen.ioas, (x) => m.ioas.has(x), op.pt);
      const ptKind = m.kinds.get(pt);
      let expect = 0;
      if (m.kinds.get(dev) !== "IDEV") expect = ENOENT;
      else if (ptKind === "IOAS") expect = m.domainFits(pt) ? 0 : EADDRINUSE;
      else if (ptKind === "HWPT")
        expect = EOPNOTSUPP; // a nested HWPT needs data
      else expect = EINVAL;
      const id = m.lowestFreeId();
      const r = h.hwptAlloc(dev, pt);
      if (expect === 0 && r.errno === 0) {
        assert.equal(r.id, id);
        m.kinds.set(id, "HWPT");
        m.hwpts.set(id, { ioas: pt, auto: false, devices: new Set() });
        seen.hwpts.push(id);
      }
      return { expect, actual: r.errno };
    }
    case "createAccess": {
      const ioas = pickLive(seen.ioas, (x) => m.ioas.has(x), op.ioas);
      const flags = op.pin ? MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES : 0;
      const expect = m.ioas.has(ioas) ? 0 : ENOENT;
      const objId = m.lowestFreeId();
      const fd = m.lowestFreeFd();
      const r = h.test(OP.CREATE_ACCESS, ioas, { flags });
      if (expect === 0 && r.errno === 0) {
        assert.equal(Number(r.out.out_access_fd), fd);
        const f = selftestFile(h.ctx, fd);
        assert.ok(f?.kind === "access" && f.access?.id === objId);
        m.kinds.set(objId, "ACCESS");
        m.accesses.set(fd, { fd, objId, ioas, pin: op.pin, items: [], nextItem: 0 });
        seen.fds.push(fd);
        seen.accesses.push(objId);
      }
      return { expect, actual: r.errno };
    }
    case "pin": {
      const fd = pickLive(seen.fds, (x) => m.accesses.get(x)?.pin === true, op.access, 5);
      const acc = m.accesses.get(fd);
      const areas = acc !== undefined ? (m.ioas.get(acc.ioas) ?? []) : [];
      const area = areas.length > 0 ? areas[op.area % areas.length] : undefined;
      const off = area === undefined ? 0 : op.off % area.npages;
      const n = area === undefined ? 1 : Math.min(op.n, area.npages - off);
      const iova = area === undefined ? 0n : area.iova + BigInt(off) * P;
      const uptr = area === undefined ? 0n : buffer + BigInt(area.first + off) * P;
      let expect = 0;
      if (acc === undefined) expect = EBADFD;
      else if (!acc.pin) expect = EOPNOTSUPP;
      else if (area === undefined) expect = ENOENT;
      const r = h.accessPages(fd, iova, BigInt(n) * P, uptr);
      if (expect === 0 && r.errno === 0) {
        assert.equal(r.id, acc!.nextItem);
        acc!.items.push({
          id: acc!.nextItem++,
          first: area!.first + off,
          npages: n,
          pagesId: area!.pagesId,
          iova,
        });
      }
      return { expect, actual: r.errno };
    }
    case "unpin": {
      const fd = pickLive(
        seen.fds,
        (x) => (m.accesses.get(x)?.items.length ?? 0) > 0,
        op.access,
        5,
      );
      const acc = m.accesses.get(fd);
      const itemId =
        acc !== undefined && acc.items.length > 0
          ? acc.items[op.item % acc.items.length].id
          : op.item;
      let expect = 0;
      if (acc === undefined) expect = EBADFD;
      else if (!acc.items.some((i) => i.id === itemId)) expect = ENOENT;
      const r = h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: itemId });
      if (expect === 0 && r.errno === 0) acc!.items = acc!.items.filter((i) => i.id !== itemId);
      return { expect, actual: r.errno };
    }
    case "closeAccess": {
      const fd = pickLive(seen.fds, (x) => m.accesses.has(x), op.access, 5);
      const acc = m.accesses.get(fd);
      const expect = acc === undefined ? EBADF : 0;
      const actual = closeSelftestFd(h.ctx, fd);
      if (expect === 0 && actual === 0) {
        m.accesses.delete(fd);
        m.kinds.delete(acc!.objId);
      }
      return { expect, actual };
    }
  }
}

/** The implementation's state against the model's. */
function checkState(h: SelftestHarness, m: Model, pages: UserPage[]): void {
  const live = [...h.ctx.table.live()];
  assert.deepEqual(
    live.map((o) => [o.id, o.type]),
    [...m.kinds].sort((a, b) => a[0] - b[0]).map(([id, k]) => [id, KIND_TYPE[k]]),
    "live objects",
  );
  for (const o of live) assert.equal(o.users, m.users(o.id), `users of ${o.id}`);
  for (const [id, areas] of m.ioas) {
    const real = h.ioas(id).iopt.areas.map((a) => [a.iova, a.length]);
    const want = [...areas]
      .sort((a, b) => (a.iova < b.iova ? -1 : 1))
      .map((a) => [a.iova, BigInt(a.npages) * P]);
    assert.deepEqual(real, want, `areas of IOAS ${id}`);
  }
  const { perPage, held } = m.pins();
  assert.deepEqual(
    pages.map((p) => p.pins),
    perPage,
    "pin counts",
  );
  assert.equal(h.proc.accounting.pinnedPages, held, "VmPin");
  assert.deepEqual(
    selftestOpenFds(h.ctx).map((f) => f.fd),
    [...m.accesses.keys()].sort((a, b) => a - b),
    "open access fds",
  );
}

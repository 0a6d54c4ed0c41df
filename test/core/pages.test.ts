/**
 * Pinning, accounting and domain filling (ioas-pages.md §2.4, §9, §10, §11): each page is
 * pinned once however many domains, copies and accesses use it through one iopt_pages; pins
 * and charges come and go with the first and last holder; every failure leaves no trace.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IommufdContext } from "../../src/core/context.ts";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "../../src/core/driver.ts";
import { FailNth } from "../../src/core/fail_nth.ts";
import { contiguousPages, FakeProcess, type UserPage } from "../../src/core/user_mm.ts";
import { EADDRINUSE, EEXIST, EFAULT, EINVAL, ENOMEM } from "../../src/errno.ts";
import { AMDV1_SELFTEST_GEOMETRIES } from "../../src/pt/fmt/amdv1.ts";
import { Harness, PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const START = 1n << 24n;

function pagesOf(proc: FakeProcess, va: bigint, n: number): UserPage[] {
  const r = proc.pages(va, n, false);
  if (typeof r === "number") throw new Error("test buffer unmapped");
  return r;
}

/** MD_CHECK_MAP: every 2048-byte step of [iova, iova+length) maps to the page under va. */
function checkMap(d: TestPagingDomain, proc: FakeProcess, iova: bigint, va: bigint, len: bigint) {
  for (let off = 0n; off < len; off += 2048n) {
    const at = va + off;
    const page = pagesOf(proc, at - (at % P), 1)[0];
    assert.equal(
      d.iovaToPhys(iova + off),
      page.pfn * PAGE + Number(at % P),
      `iova 0x${(iova + off).toString(16)}`,
    );
  }
}

function pins(pages: UserPage[]): number[] {
  return pages.map((p) => p.pins);
}

describe("pin once", () => {
  it("all_aligns: every sub-page start/end, one or two domains, refs exactly 1 while mapped", () => {
    for (const ndomains of [1, 2]) {
      const h = new Harness();
      const id = h.ioasAlloc();
      const domains = Array.from({ length: ndomains }, () => new TestPagingDomain());
      for (const d of domains) h.ioas(id).iopt.addDomain(d);
      const size = 8n * P;
      const buf = h.proc.mmap(8 * PAGE, { shared: true });
      const all = pagesOf(h.proc, buf, 8);
      for (let start = 0n; start < size; start += 2048n) {
        for (let end = start + 2048n; end < size; end += 2048n) {
          const iova = h.mapOk(id, buf + start, end - start);
          for (const d of domains) checkMap(d, h.proc, iova, buf + start, end - start);
          const first = Number(start / P);
          const last = Number((end - 1n) / P);
          assert.deepEqual(
            pins(all),
            all.map((_, i) => (i >= first && i <= last ? 1 : 0)),
          );
          assert.equal(h.unmap(id, iova, end - start).errno, 0);
        }
      }
      assert.deepEqual(pins(all), new Array(8).fill(0));
      for (const d of domains) assert.equal(d.mapped().length, 0);
    }
  });

  it("all_aligns_copy: another domain filled from the storage domain pins nothing new", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(4 * PAGE, { shared: true });
    const all = pagesOf(h.proc, buf, 4);
    for (let start = 0n; start < 4n * P; start += 2048n) {
      for (let end = start + 2048n; end < 4n * P; end += 2048n) {
        const iova = h.mapOk(id, buf + start, end - start);
        const extra = new TestPagingDomain();
        iopt.addDomain(extra);
        checkMap(extra, h.proc, iova, buf + start, end - start);
        assert.ok(all.every((p) => p.pins <= 1));
        iopt.removeDomain(extra);
        assert.equal(extra.mapped().length, 0);
        assert.equal(h.unmap(id, iova, end - start).errno, 0);
      }
    }
    assert.deepEqual(pins(all), [0, 0, 0, 0]);
  });

  it("COPY shares the pages: one pin and one charge across two IOASes with domains", () => {
    const proc = new FakeProcess({ capIpcLock: false });
    const h = new Harness(proc);
    const a = h.ioasAlloc();
    const b = h.ioasAlloc();
    const da = new TestPagingDomain();
    const db = new TestPagingDomain();
    h.ioas(a).iopt.addDomain(da);
    h.ioas(b).iopt.addDomain(db);
    const buf = proc.mmap(4 * PAGE);
    const all = pagesOf(proc, buf, 4);
    h.mapOk(a, buf, 4n * P, START);
    assert.equal(h.copy(b, a, START + P, 2n * P, { dstIova: START }).errno, 0);
    checkMap(db, proc, START, buf + P, 2n * P);
    assert.deepEqual(pins(all), [1, 1, 1, 1]);
    assert.equal(proc.accounting.lockedPages, 4);
    assert.equal(h.unmap(a, START, 4n * P).errno, 0);
    assert.deepEqual(pins(all), [0, 1, 1, 0]); // the copy still holds its slice
    assert.equal(proc.accounting.lockedPages, 2);
    assert.equal(h.unmap(b, START, 2n * P).errno, 0);
    assert.deepEqual(pins(all), [0, 0, 0, 0]);
    assert.equal(proc.accounting.lockedPages, 0);
    assert.equal(proc.accounting.pinnedPages, 0);
  });

  it("two MAPs of the same memory are two iopt_pages and pin twice", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    h.ioas(id).iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(2 * PAGE);
    h.mapOk(id, buf, 2n * P);
    h.mapOk(id, buf, 2n * P);
    assert.deepEqual(pins(pagesOf(h.proc, buf, 2)), [2, 2]);
  });

  it("lazy without a domain: the first domain pins, the last one unpins", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const buf = h.proc.mmap(4 * PAGE);
    const all = pagesOf(h.proc, buf, 4);
    h.mapOk(id, buf + 2048n, 3n * P, START + 2048n);
    assert.deepEqual(pins(all), [0, 0, 0, 0]);
    const d1 = new TestPagingDomain();
    const d2 = new TestPagingDomain();
    iopt.addDomain(d1);
    assert.deepEqual(pins(all), [1, 1, 1, 1]);
    iopt.addDomain(d2);
    checkMap(d2, h.proc, START + 2048n, buf + 2048n, 3n * P);
    assert.equal(iopt.areas[0].storageDomain, d1);
    iopt.removeDomain(d1); // the storage moves to d2, nothing is unpinned
    assert.equal(iopt.areas[0].storageDomain, d2);
    assert.deepEqual(pins(all), [1, 1, 1, 1]);
    assert.equal(d1.mapped().length, 0);
    checkMap(d2, h.proc, START + 2048n, buf + 2048n, 3n * P);
    iopt.removeDomain(d2);
    assert.deepEqual(pins(all), [0, 0, 0, 0]);
    assert.equal(iopt.iovaAlignment, 1);
    assert.equal(iopt.reserved.length, 0);
  });

  it("maps runs of consecutive PFNs with one call each, cut where PFNs jump", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const d = new TestPagingDomain();
    h.ioas(id).iopt.addDomain(d);
    const a = h.proc.mmap(2 * PAGE, { at: 0x7d00_0000_0000n });
    contiguousPages(1); // so the next mapping's PFNs do not follow on
    h.proc.mmap(2 * PAGE, { at: 0x7d00_0000_2000n }); // adjacent VA, unrelated PFNs
    h.mapOk(id, a, 4n * P, START);
    assert.equal(d.mapCalls, 2);
    checkMap(d, h.proc, START, a, 4n * P);
    assert.equal(
      d.mapped().every((l) => (l.prot & (IOMMU_READ | IOMMU_WRITE)) === (IOMMU_READ | IOMMU_WRITE)),
      true,
    );
    assert.equal(h.ioas(id).iopt.areas[0].iommuProt, IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE);
  });
});

describe("accounting", () => {
  const cases = [
    { name: "USER (no CAP_IPC_LOCK)", cap: false, mm: false, locked: 4, mmLocked: 0 },
    { name: "NONE (CAP_IPC_LOCK)", cap: true, mm: false, locked: 0, mmLocked: 0 },
    { name: "MM (context option)", cap: false, mm: true, locked: 0, mmLocked: 4 },
  ];
  for (const c of cases) {
    it(`${c.name}: VmPin always, locked per mode, both back to 0`, () => {
      const proc = new FakeProcess({ capIpcLock: c.cap });
      const h = new Harness(proc);
      if (c.mm) h.ctx.accountMode = 2;
      const id = h.ioasAlloc();
      h.ioas(id).iopt.addDomain(new TestPagingDomain());
      const buf = proc.mmap(4 * PAGE);
      h.mapOk(id, buf, 4n * P);
      assert.equal(proc.accounting.pinnedPages, 4);
      assert.equal(proc.accounting.lockedPages, c.locked);
      assert.equal(proc.accounting.mmLockedPages, c.mmLocked);
      assert.equal(h.ioas(id).iopt.areas[0].pages!.accountMode, c.cap ? 0 : c.mm ? 2 : 1);
      assert.equal(h.unmap(id, 0n, U64_MAX).errno, 0);
      assert.equal(proc.accounting.pinnedPages, 0);
      assert.equal(proc.accounting.lockedPages, 0);
      assert.equal(proc.accounting.mmLockedPages, 0);
    });
  }

  it("over RLIMIT_MEMLOCK: ENOMEM, nothing pinned, nothing mapped, nothing charged", () => {
    for (const mm of [false, true]) {
      const proc = new FakeProcess({ capIpcLock: false, memlockLimit: 3 * PAGE });
      const h = new Harness(proc);
      if (mm) h.ctx.accountMode = 2;
      const id = h.ioasAlloc();
      const d = new TestPagingDomain();
      h.ioas(id).iopt.addDomain(d);
      const buf = proc.mmap(4 * PAGE);
      assert.equal(h.map(id, buf, 4n * P).errno, ENOMEM);
      assert.deepEqual(pins(pagesOf(proc, buf, 4)), [0, 0, 0, 0]);
      assert.equal(d.mapped().length, 0);
      assert.equal(h.ioas(id).iopt.areas.length, 0);
      const acct = proc.accounting;
      assert.deepEqual([acct.pinnedPages, acct.lockedPages, acct.mmLockedPages], [0, 0, 0]);
      assert.equal(h.map(id, buf, 3n * P).errno, 0);
      assert.equal(mm ? acct.mmLockedPages : acct.lockedPages, 3);
    }
  });

  it("adding the first domain is charged too, and undone completely on ENOMEM", () => {
    const proc = new FakeProcess({ capIpcLock: false, memlockLimit: 5 * PAGE });
    const h = new Harness(proc);
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const buf = proc.mmap(6 * PAGE);
    h.mapOk(id, buf, 3n * P, START);
    h.mapOk(id, buf + 3n * P, 3n * P, START + 3n * P);
    const d = new TestPagingDomain();
    assert.throws(() => iopt.addDomain(d), { errno: ENOMEM });
    assert.deepEqual(pins(pagesOf(proc, buf, 6)), [0, 0, 0, 0, 0, 0]);
    assert.equal(d.mapped().length, 0);
    assert.equal(iopt.domains.length, 0);
    assert.equal(iopt.reserved.length, 0);
    assert.equal(iopt.iovaAlignment, 1);
    assert.equal(proc.accounting.lockedPages, 0);
  });
});

describe("domains", () => {
  it("add: EEXIST twice, EINVAL above PAGE, EADDRINUSE for misaligned areas or the aperture", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const d = new TestPagingDomain();
    iopt.addDomain(d);
    assert.throws(() => iopt.addDomain(d), { errno: EEXIST });
    const big = new TestPagingDomain({ pgsizeBitmap: 1n << 13n });
    assert.throws(() => iopt.addDomain(big), { errno: EINVAL });

    const h2 = new Harness();
    const id2 = h2.ioasAlloc();
    const iopt2 = h2.ioas(id2).iopt;
    const buf = h2.proc.mmap(2 * PAGE);
    h2.mapOk(id2, buf + 1024n, 2048n, START + 1024n); // 1024-aligned: not enough for 2048
    assert.throws(() => iopt2.addDomain(new TestPagingDomain()), { errno: EADDRINUSE });
    assert.equal(h2.unmap(id2, 0n, U64_MAX).errno, 0);
    h2.mapOk(id2, buf, P, P); // below the mock aperture
    assert.throws(() => iopt2.addDomain(new TestPagingDomain()), { errno: EADDRINUSE });
    assert.equal(iopt2.reserved.length, 0);
    assert.equal(h2.unmap(id2, 0n, U64_MAX).errno, 0);
    iopt2.setAllowed([{ start: 2n * START * 256n, last: 2n * START * 256n + P }]);
    assert.throws(() => iopt2.addDomain(new TestPagingDomain()), { errno: EADDRINUSE });
    assert.equal(iopt2.domains.length, 0);
  });

  it("a domain map failure part-way through MAP undoes every domain and pin", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const d1 = new TestPagingDomain();
    const d2 = new TestPagingDomain();
    iopt.addDomain(d1);
    iopt.addDomain(d2);
    d2.failMapAt = 2; // the second run into d2
    const a = h.proc.mmap(2 * PAGE, { at: 0x7c00_0000_0000n });
    contiguousPages(1);
    h.proc.mmap(2 * PAGE, { at: 0x7c00_0000_2000n });
    assert.equal(h.map(id, a, 4n * P).errno, ENOMEM);
    assert.equal(d1.mapped().length, 0);
    assert.equal(d2.mapped().length, 0);
    assert.deepEqual(pins(pagesOf(h.proc, a, 4)), [0, 0, 0, 0]);
    assert.equal(iopt.areas.length, 0);
  });

  it("a domain map failure while adding a domain leaves every area as it was", () => {
    for (const first of [true, false]) {
      const h = new Harness();
      const id = h.ioasAlloc();
      const iopt = h.ioas(id).iopt;
      const keep = new TestPagingDomain();
      if (!first) iopt.addDomain(keep);
      const buf = h.proc.mmap(6 * PAGE);
      for (let i = 0n; i < 3n; i++) h.mapOk(id, buf + i * 2n * P, 2n * P, START + i * 4n * P);
      const before = pins(pagesOf(h.proc, buf, 6));
      const d = new TestPagingDomain();
      d.failMapAt = 3;
      assert.throws(() => iopt.addDomain(d), { errno: ENOMEM });
      assert.equal(d.mapped().length, 0);
      assert.deepEqual(pins(pagesOf(h.proc, buf, 6)), before);
      assert.deepEqual(before, new Array(6).fill(first ? 0 : 1));
      assert.equal(iopt.domains.length, first ? 0 : 1);
      assert.ok(iopt.areas.every((a) => a.storageDomain === (first ? null : keep)));
      assert.equal(iopt.reserved.filter((r) => r.owner === d).length, 0);
    }
  });

  it("fork_gone: the owner exited before any pin, so the first domain gets EFAULT", () => {
    const parent = new FakeProcess();
    const h = new Harness(parent);
    const id = h.ioasAlloc();
    const child = parent.fork();
    const va = child.mmap(4 * PAGE);
    assert.equal(h.map(id, va, 4n * P, { iova: START, proc: child }).errno, 0);
    child.exit();
    assert.throws(() => h.ioas(id).iopt.addDomain(new TestPagingDomain()), { errno: EFAULT });
    assert.equal(h.ioas(id).iopt.domains.length, 0);
  });

  it("huge mock geometry: 4 KiB alignment, 1 MiB leaves where the PFNs allow", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const d = new TestPagingDomain({ geometry: AMDV1_SELFTEST_GEOMETRIES[1] });
    h.ioas(id).iopt.addDomain(d);
    assert.equal(h.ioas(id).iopt.iovaAlignment, PAGE);
    const buf = h.proc.mmap(512 * PAGE, { at: 0x7b00_0000_0000n }); // 2 MiB of consecutive PFNs
    const first = pagesOf(h.proc, buf, 1)[0];
    const skip = (256 - (first.pfn % 256)) % 256; // start the mapping on a 1 MiB-aligned PFN
    const iova = h.mapOk(id, buf + BigInt(skip) * P, 256n * P, 1n << 30n);
    checkMap(d, h.proc, iova, buf + BigInt(skip) * P, 256n * P);
    assert.deepEqual(
      d.mapped().map((l) => l.sizeLg2),
      [20],
    );
  });
});

describe("fault injection", () => {
  /** Arms fail-nth 1, 2, ... until `op` succeeds, checking `clean` after every failure. */
  function sweep(setup: (ctx: IommufdContext) => () => void, clean: () => void): number {
    for (let n = 1; n < 200; n++) {
      const faults = new FailNth();
      const ctx = new IommufdContext(faults);
      const op = setup(ctx);
      faults.arm(n);
      try {
        op();
        if (faults.pending !== 0) return n;
      } catch (e) {
        if (!(e as { errno?: number }).errno) throw e;
      }
      clean();
    }
    throw new Error("never succeeded");
  }

  it("MAP into an IOAS with two domains: every injected failure leaves nothing behind", () => {
    let proc = new FakeProcess({ capIpcLock: false });
    let h: Harness | undefined;
    let buf = 0n;
    const domains: TestPagingDomain[] = [];
    const n = sweep(
      (ctx) => {
        proc = new FakeProcess({ capIpcLock: false });
        h = new Harness(proc, ctx);
        const id = h.ioasAlloc();
        domains.length = 0;
        for (let i = 0; i < 2; i++) {
          const d = new TestPagingDomain();
          h.ioas(id).iopt.addDomain(d);
          domains.push(d);
        }
        buf = proc.mmap(4 * PAGE);
        const harness = h;
        return () => {
          const r = harness.map(id, buf, 4n * P);
          if (r.errno !== 0) throw Object.assign(new Error("map"), { errno: r.errno });
        };
      },
      () => {
        assert.deepEqual(pins(pagesOf(proc, buf, 4)), [0, 0, 0, 0]);
        for (const d of domains) assert.equal(d.mapped().length, 0);
        assert.equal(proc.accounting.lockedPages, 0);
        assert.equal(h!.ioas(1).iopt.areas.length, 0);
      },
    );
    assert.ok(n > 3, `only ${n - 1} injection sites on the MAP path`);
  });
});

describe("cutIova (VFIO type1 compat)", () => {
  it("splits without domains; both halves share the pages and unmap separately", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const buf = h.proc.mmap(4 * PAGE);
    h.mapOk(id, buf, 4n * P, START);
    iopt.cutIova([START, START + 4n * P - 1n, START + 9n * P]); // edges and outside: no-ops
    assert.equal(iopt.areas.length, 1);
    iopt.cutIova([START + P - 1n]);
    assert.deepEqual(
      iopt.areas.map((a) => [a.iova, a.last, a.index, a.lastIndex]),
      [
        [START, START + P - 1n, 0, 0],
        [START + P, START + 4n * P - 1n, 1, 3],
      ],
    );
    assert.equal(iopt.areas[0].pages, iopt.areas[1].pages);
    assert.equal(iopt.areas[0].pages!.refs, 2);
    assert.equal(h.unmap(id, START, P).errno, 0);
    assert.equal(h.unmap(id, START + P, 3n * P).errno, 0);
  });

  it("EINVAL with large pages in a domain, unaligned cuts or access pins", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    const d = new TestPagingDomain();
    iopt.addDomain(d);
    const buf = h.proc.mmap(4 * PAGE);
    h.mapOk(id, buf, 4n * P, START);
    assert.throws(() => iopt.cutIova([START + P - 1n]), { errno: EINVAL });
    assert.throws(() => iopt.cutIova([START + 1023n]), { errno: EINVAL }); // not 2048 aligned
    assert.equal(iopt.areas.length, 1);
  });

  it("with large pages disabled a domain-filled area splits and unpins per half", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    iopt.setLargePagesDisabled();
    const d = new TestPagingDomain();
    iopt.addDomain(d);
    const buf = h.proc.mmap(4 * PAGE);
    const all = pagesOf(h.proc, buf, 4);
    h.mapOk(id, buf, 4n * P, START);
    iopt.cutIova([START + 2n * P - 1n]);
    assert.deepEqual(pins(all), [1, 1, 1, 1]);
    assert.equal(h.unmap(id, START + 2n * P, 2n * P).errno, 0);
    assert.deepEqual(pins(all), [1, 1, 0, 0]);
    checkMap(d, h.proc, START, buf, 2n * P);
    assert.equal(d.iovaToPhys(START + 2n * P), undefined);
    assert.equal(h.unmap(id, START, 2n * P).errno, 0);
    assert.deepEqual(pins(all), [0, 0, 0, 0]);
  });
});

/**
 * The in-kernel access API (ioas-pages.md §12): attach / replace / detach with per-IOAS ids,
 * pin_pages / unpin_pages (shared with domains, one pin per page), the unmap notification,
 * locked areas, and rw on every path (fast, single page remote, slow).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ACCESS_RW_KTHREAD,
  ACCESS_RW_SLOW_PATH,
  ACCESS_RW_WRITE,
  type AccessOps,
  accessAttach,
  accessAttachInternal,
  accessCreate,
  accessCreateInternal,
  accessDestroy,
  accessDetach,
  accessPinPages,
  accessReplace,
  accessRw,
  accessUnpinPages,
  type IommufdAccess,
} from "../../src/core/access.ts";
import { ObjType } from "../../src/core/object.ts";
import { contiguousPages, FakeProcess, type UserPage } from "../../src/core/user_mm.ts";
import {
  EADDRINUSE,
  EBUSY,
  EDEADLOCK,
  EFAULT,
  EINVAL,
  ENOENT,
  EOVERFLOW,
  EPERM,
} from "../../src/errno.ts";
import {
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
} from "../../src/uapi/index.ts";
import { FIXED, Harness, PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const START = 1n << 24n;
const BUFFER = 16 * PAGE;

/** The selftest driver: remembers its pins and drops the ones an unmap notice touches. */
class PinningDriver implements AccessOps {
  readonly needsPinPages = true;
  access!: IommufdAccess;
  items: { iova: bigint; length: bigint; pages: UserPage[] }[] = [];
  notices: [bigint, bigint][] = [];
  ignoreUnmap = false;

  unmap(iova: bigint, length: bigint): void {
    this.notices.push([iova, length]);
    if (this.ignoreUnmap) return;
    const last = iova + length - 1n;
    this.items = this.items.filter((it) => {
      if (it.iova + it.length - 1n < iova || it.iova > last) return true;
      accessUnpinPages(this.access, it.iova, it.length);
      return false;
    });
  }

  pin(iova: bigint, length: bigint, flags = 0): UserPage[] {
    const pages = accessPinPages(this.access, iova, length, flags);
    this.items.push({ iova, length, pages });
    return pages;
  }

  unpinAll(): void {
    for (const it of this.items) accessUnpinPages(this.access, it.iova, it.length);
    this.items = [];
  }
}

function setup(opts: { domain?: boolean; pin?: boolean } = {}) {
  const h = new Harness();
  const id = h.ioasAlloc();
  let domain: TestPagingDomain | undefined;
  if (opts.domain) {
    domain = new TestPagingDomain();
    h.ioas(id).iopt.addDomain(domain);
  }
  const driver = new PinningDriver();
  const ops: AccessOps = opts.pin === false ? { needsPinPages: false } : driver;
  const access = accessCreate(h.ctx, ops);
  driver.access = access;
  accessAttach(access, id);
  return { h, id, access, driver, domain };
}

function userPages(proc: FakeProcess, va: bigint, n: number): UserPage[] {
  const r = proc.pages(va, n, false);
  if (typeof r === "number") throw new Error("unmapped");
  return r;
}

describe("access objects", () => {
  it("create publishes an ACCESS object the driver holds; attach takes the IOAS", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const a = accessCreate(h.ctx, { needsPinPages: false });
    assert.equal(h.ctx.table.get(a.id, ObjType.ACCESS), a);
    assert.equal(a.users, 2);
    accessAttach(a, id);
    assert.equal(h.ioas(id).users, 2);
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno, EBUSY);
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id: a.id }).errno, EBUSY);
    assert.throws(() => accessAttach(a, id), { errno: EINVAL });
    accessDestroy(a);
    assert.equal(h.ioas(id).users, 1);
    assert.equal(h.ctx.table.peek(a.id), undefined);
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno, 0);
  });

  it("access-list ids per IOAS: lowest free from 0", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const other = h.ioasAlloc();
    const mk = () => accessCreate(h.ctx, { needsPinPages: false });
    const [a, b, c] = [mk(), mk(), mk()];
    accessAttach(a, id);
    accessAttach(b, id);
    accessAttach(c, other);
    assert.deepEqual([a.ioptAccessListId, b.ioptAccessListId, c.ioptAccessListId], [0, 1, 0]);
    accessDetach(a);
    const d = mk();
    accessAttach(d, id);
    assert.equal(d.ioptAccessListId, 0);
    assert.deepEqual([...h.ioas(id).iopt.accesses.keys()].sort(), [0, 1]);
  });

  it("attach: ENOENT for a bad id; EADDRINUSE when a needs-pin access does not fit", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const a = accessCreate(h.ctx, { needsPinPages: true, unmap() {} });
    assert.throws(() => accessAttach(a, 1234), { errno: ENOENT });
    const buf = h.proc.mmap(2 * PAGE);
    h.mapOk(id, buf + 2048n, 2048n, START + 2048n);
    assert.throws(() => accessAttach(a, id), { errno: EADDRINUSE });
    assert.equal(a.ioas, null);
    assert.equal(h.ioas(id).users, 1);
    assert.equal(h.ioas(id).iopt.iovaAlignment, 1);
    const rw = accessCreate(h.ctx, { needsPinPages: false });
    accessAttach(rw, id);
    assert.equal(h.ioas(id).iopt.iovaAlignment, 1);
  });

  it("replace: ENOENT unattached or bad id, no-op on the same IOAS, else unmap(0, MAX) first", () => {
    const { h, id, access, driver } = setup();
    const b = h.ioasAlloc();
    const lone = accessCreate(h.ctx, { needsPinPages: false });
    assert.throws(() => accessReplace(lone, b), { errno: ENOENT });
    assert.throws(() => accessReplace(access, 999), { errno: ENOENT });
    accessReplace(access, id);
    assert.deepEqual(driver.notices, []);
    const buf = h.proc.mmap(PAGE);
    h.mapOk(id, buf, P, START);
    const page = driver.pin(START, P)[0];
    accessReplace(access, b);
    assert.deepEqual(driver.notices, [[0n, U64_MAX]]);
    assert.equal(page.pins, 0);
    assert.equal(access.ioas, h.ioas(b));
    assert.deepEqual([h.ioas(id).users, h.ioas(b).users], [1, 2]);
    assert.equal(h.ioas(id).iopt.iovaAlignment, 1);
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id }).errno, 0);
  });
});

describe("pin_pages", () => {
  it("rejects accesses that do not pin, length 0, overflow, detached, unmapped ranges", () => {
    const rwOnly = setup({ pin: false });
    assert.throws(() => accessPinPages(rwOnly.access, START, P, 0), { errno: EINVAL });
    const { h, access } = setup();
    assert.throws(() => accessPinPages(access, START, 0n, 0), { errno: EINVAL });
    assert.throws(() => accessPinPages(access, U64_MAX, 2n, 0), { errno: EOVERFLOW });
    assert.throws(() => accessPinPages(access, START, P, 0), { errno: ENOENT });
    const detached = accessCreate(h.ctx, { needsPinPages: true, unmap() {} });
    assert.throws(() => accessPinPages(detached, START, P, 0), { errno: ENOENT });
  });

  it("EINVAL off page boundaries, ENOENT past the mapping, EPERM on protection", () => {
    const { h, id, access } = setup();
    const buf = h.proc.mmap(4 * PAGE);
    h.mapOk(id, buf, 2n * P, START);
    assert.throws(() => accessPinPages(access, START + 2048n, P, 0), { errno: EINVAL });
    assert.throws(() => accessPinPages(access, START, 3n * P, 0), { errno: ENOENT });
    const ro = h.map(id, buf, P, { iova: START + 8n * P, flags: FIXED | IOMMU_IOAS_MAP_READABLE });
    assert.equal(ro.errno, 0);
    assert.throws(() => accessPinPages(access, START + 8n * P, P, ACCESS_RW_WRITE), {
      errno: EPERM,
    });
    const wo = h.map(id, buf, P, { iova: START + 9n * P, flags: FIXED | IOMMU_IOAS_MAP_WRITEABLE });
    assert.equal(wo.errno, 0);
    assert.throws(() => accessPinPages(access, START + 9n * P, P, 0), { errno: EPERM });
    // A two-area pin where the second fails undoes the first.
    assert.throws(() => accessPinPages(access, START + 8n * P, 2n * P, 0), { errno: EPERM });
    assert.equal(userPages(h.proc, buf, 1)[0].pins, 0);
    assert.equal(
      h.ioas(id).iopt.areas.every((a) => a.numAccesses === 0),
      true,
    );
  });

  it("access_pin: any page count, returned pages are the user's, one pin however often", () => {
    const { h, id, driver } = setup();
    const buf = h.proc.mmap(BUFFER);
    const all = userPages(h.proc, buf, 16);
    for (let n = 1; n < 16; n++) {
      h.mapOk(id, buf, BigInt(BUFFER), START);
      const got = driver.pin(START, BigInt(n * PAGE));
      assert.deepEqual(got, all.slice(0, n));
      assert.ok(all.every((p, i) => p.pins === (i < n ? 1 : 0)));
      driver.pin(START, BigInt(n * PAGE));
      assert.ok(all.every((p, i) => p.pins === (i < n ? 1 : 0)));
      driver.unpinAll();
      assert.ok(all.every((p) => p.pins === 0));
      assert.equal(h.unmap(id, START, BigInt(BUFFER)).errno, 0);
    }
  });

  it("a domain added under a pin is filled from it and its removal leaves the pin", () => {
    const { h, id, driver } = setup();
    const buf = h.proc.mmap(4 * PAGE);
    const all = userPages(h.proc, buf, 4);
    h.mapOk(id, buf, 4n * P, START);
    driver.pin(START + P, P);
    const d = new TestPagingDomain();
    h.ioas(id).iopt.addDomain(d);
    assert.equal(d.iovaToPhys(START + P), all[1].pfn * PAGE);
    assert.deepEqual(
      all.map((p) => p.pins),
      [1, 1, 1, 1],
    );
    h.ioas(id).iopt.removeDomain(d); // access_domain_destory
    assert.deepEqual(
      all.map((p) => p.pins),
      [0, 1, 0, 0],
    );
    driver.unpinAll();
    assert.equal(all[1].pins, 0);
  });

  it("access_pin_unmap: unmap tells the driver, which unpins; its items are gone", () => {
    const { h, id, driver } = setup({ domain: true });
    const buf = h.proc.mmap(BUFFER);
    h.mapOk(id, buf, BigInt(BUFFER), START);
    driver.pin(START, BigInt(BUFFER));
    assert.equal(h.unmap(id, START, BigInt(BUFFER)).errno, 0);
    assert.deepEqual(driver.notices, [[START, BigInt(BUFFER)]]);
    assert.equal(driver.items.length, 0);
    assert.ok(userPages(h.proc, buf, 16).every((p) => p.pins === 0));
  });

  it("EDEADLOCK when the driver keeps its pins; the area then refuses new accesses", () => {
    const { h, id, access, driver } = setup();
    const buf = h.proc.mmap(PAGE);
    h.mapOk(id, buf, P, START);
    driver.pin(START, P);
    driver.ignoreUnmap = true;
    assert.equal(h.unmap(id, START, P).errno, EDEADLOCK);
    assert.equal(driver.notices.length, 101);
    assert.throws(() => accessPinPages(access, START, P, 0), { errno: EINVAL });
    assert.throws(() => accessRw(access, START, new Uint8Array(4), 0, h.proc), { errno: EINVAL });
    driver.ignoreUnmap = false;
    assert.equal(h.unmap(id, START, P).errno, 0);
  });

  it("internal accesses lock their areas: unmap is EBUSY, and they are never notified", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const buf = h.proc.mmap(4 * PAGE);
    h.mapOk(id, buf, 4n * P, START);
    const q = accessCreateInternal(h.ctx);
    accessAttachInternal(q, h.ioas(id));
    assert.equal(h.ioas(id).iopt.iovaAlignment, PAGE);
    accessPinPages(q, START, P, 0);
    assert.equal(h.ioas(id).iopt.areas[0].numLocks, 1);
    assert.equal(h.unmap(id, START, 4n * P).errno, EBUSY);
    assert.equal(h.unmap(id, 0n, U64_MAX).errno, EBUSY);
    accessUnpinPages(q, START, P);
    assert.equal(h.unmap(id, START, 4n * P).errno, 0);
    accessDestroy(q);
    assert.equal(h.ioas(id).users, 1);
  });

  it("user_copy: COPY into a domain IOAS reuses the access's pins; the access moves on", () => {
    const h = new Harness();
    const fixture = h.ioasAlloc();
    const d = new TestPagingDomain();
    h.ioas(fixture).iopt.addDomain(d);
    const a = h.ioasAlloc();
    const buf = h.proc.mmap(BUFFER);
    const all = userPages(h.proc, buf, 16);
    h.mapOk(a, buf, BigInt(BUFFER), START);
    const driver = new PinningDriver();
    const access = accessCreate(h.ctx, driver);
    driver.access = access;
    accessAttach(access, a);
    driver.pin(START, BigInt(BUFFER));
    assert.equal(h.copy(fixture, a, START, BigInt(BUFFER), { dstIova: START }).errno, 0);
    assert.ok(all.every((p) => p.pins === 1));
    assert.equal(d.iovaToPhys(START + 5n * P), all[5].pfn * PAGE);
    const b = h.ioasAlloc();
    h.mapOk(b, buf, BigInt(BUFFER), START);
    accessReplace(access, b);
    assert.equal(h.unmap(fixture, START, BigInt(BUFFER)).errno, 0);
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id: a }).errno, 0);
    driver.pin(START, BigInt(BUFFER));
    assert.equal(h.copy(fixture, b, START, BigInt(BUFFER), { dstIova: START }).errno, 0);
    assert.ok(all.every((p) => p.pins === 1));
    driver.unpinAll();
    accessDestroy(access);
    assert.equal(h.unmap(fixture, 0n, U64_MAX).errno, 0);
    assert.ok(all.every((p) => p.pins === 0));
  });
});

describe("rw", () => {
  function fill(proc: FakeProcess, va: bigint, len: number, seed: number): void {
    const b = new Uint8Array(len);
    for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
    proc.write(va, b);
  }

  function sweep(h: Harness, access: IommufdAccess, iova: bigint, va: bigint, flags: number) {
    const total = BigInt(BUFFER);
    for (let at = P - 50n; at < P + 50n; at++) {
      for (let len = 1; len < 64; len++) {
        if (at + BigInt(len) > total) continue;
        const got = new Uint8Array(len);
        accessRw(access, iova + at, got, flags, h.proc);
        const want = new Uint8Array(len);
        h.proc.read(va + at, want);
        assert.deepEqual(got, want);
        const data = Uint8Array.from({ length: len }, (_, i) => (i + len + Number(at)) & 0xff);
        accessRw(access, iova + at, data, flags | ACCESS_RW_WRITE, h.proc);
        h.proc.read(va + at, want);
        assert.deepEqual(want, data);
      }
    }
    const whole = new Uint8Array(BUFFER);
    accessRw(access, iova, whole, flags, h.proc);
    const want = new Uint8Array(BUFFER);
    h.proc.read(va, want);
    assert.deepEqual(whole, want);
  }

  for (const slow of [false, true]) {
    it(`access_rw${slow ? " (slow path)" : ""}: every offset around a page boundary`, () => {
      const { h, id, access } = setup({ pin: false });
      const buf = h.proc.mmap(BUFFER);
      fill(h.proc, buf, BUFFER, 7);
      const iova = h.mapOk(id, buf, BigInt(BUFFER));
      sweep(h, access, iova, buf, slow ? ACCESS_RW_SLOW_PATH : 0);
      assert.ok(userPages(h.proc, buf, 16).every((p) => p.pins === 0));
    });
  }

  it("access_rw_unaligned: mapped at buffer + 2048", () => {
    const { h, id, access } = setup({ pin: false });
    const buf = h.proc.mmap(BUFFER + PAGE);
    fill(h.proc, buf, BUFFER + PAGE, 3);
    const iova = h.mapOk(id, buf + 2048n, BigInt(BUFFER));
    sweep(h, access, iova, buf + 2048n, 0);
    sweep(h, access, iova, buf + 2048n, ACCESS_RW_SLOW_PATH);
  });

  it("checks length, overflow, attachment, coverage and protection", () => {
    const { h, id, access } = setup({ pin: false });
    const buf = h.proc.mmap(2 * PAGE);
    assert.throws(() => accessRw(access, START, new Uint8Array(0), 0, h.proc), { errno: EINVAL });
    assert.throws(() => accessRw(access, U64_MAX, new Uint8Array(2), 0, h.proc), {
      errno: EOVERFLOW,
    });
    assert.throws(() => accessRw(access, START, new Uint8Array(2), 0, h.proc), { errno: ENOENT });
    h.map(id, buf, P, { iova: START, flags: FIXED | IOMMU_IOAS_MAP_READABLE });
    assert.throws(() => accessRw(access, START, new Uint8Array(2), ACCESS_RW_WRITE, h.proc), {
      errno: EPERM,
    });
    assert.throws(() => accessRw(access, START + P - 1n, new Uint8Array(2), 0, h.proc), {
      errno: ENOENT,
    });
    const detached = accessCreate(h.ctx, { needsPinPages: false });
    assert.throws(() => accessRw(detached, START, new Uint8Array(2), 0, h.proc), {
      errno: ENOENT,
    });
    accessDetach(access);
    assert.throws(() => accessRw(access, START, new Uint8Array(2), 0, h.proc), { errno: ENOENT });
  });

  it("fork_present: another process's pages, through the remote and slow paths", () => {
    const parent = new FakeProcess();
    const h = new Harness(parent);
    const id = h.ioasAlloc();
    const access = accessCreate(h.ctx, { needsPinPages: false });
    accessAttach(access, id);
    const buf = parent.mmap(BUFFER);
    fill(parent, buf, BUFFER, 1);
    const child = parent.fork();
    fill(child, buf, BUFFER, 99); // private pages: the child's bytes differ now
    assert.equal(h.map(id, buf, BigInt(BUFFER), { iova: START, proc: child }).errno, 0);
    h.ioas(id).iopt.addDomain(new TestPagingDomain());
    const one = new Uint8Array(16);
    accessRw(access, START + 8n, one, 0, parent); // single page: pinned remotely
    const want = new Uint8Array(16);
    child.read(buf + 8n, want);
    assert.deepEqual(one, want);
    const many = new Uint8Array(3 * PAGE);
    accessRw(access, START + 100n, many, 0, parent); // several pages: the slow path
    const wantMany = new Uint8Array(3 * PAGE);
    child.read(buf + 100n, wantMany);
    assert.deepEqual(many, wantMany);
    accessRw(access, START, Uint8Array.of(42), ACCESS_RW_WRITE | ACCESS_RW_KTHREAD, undefined);
    child.read(buf, want.subarray(0, 1));
    assert.equal(want[0], 42);
  });

  it("fork_gone: held pages still serve rw after the owner exits; unheld ones are EFAULT", () => {
    for (const domain of [true, false]) {
      const parent = new FakeProcess();
      const h = new Harness(parent);
      const id = h.ioasAlloc();
      if (domain) h.ioas(id).iopt.addDomain(new TestPagingDomain());
      const access = accessCreate(h.ctx, { needsPinPages: false });
      accessAttach(access, id);
      const child = parent.fork();
      const va = child.mmap(4 * PAGE);
      fill(child, va, 4 * PAGE, 5);
      const expect = new Uint8Array(4 * PAGE);
      child.read(va, expect);
      assert.equal(h.map(id, va, 4n * P, { iova: START, proc: child }).errno, 0);
      child.exit();
      const got = new Uint8Array(4 * PAGE);
      if (domain) {
        accessRw(access, START, got, 0, parent);
        assert.deepEqual(got, expect);
        accessRw(access, START + 10n, got.subarray(0, 10), 0, parent);
        assert.deepEqual(got.subarray(0, 10), expect.subarray(10, 20));
      } else {
        assert.throws(() => accessRw(access, START, got, 0, parent), { errno: EFAULT });
      }
    }
  });

  it("rw pins nothing persistently and never counts as an access", () => {
    const { h, id, access } = setup({ pin: false });
    const [page] = contiguousPages(1);
    const va = h.proc.mmap(PAGE, { pages: [page] });
    h.mapOk(id, va, P, START);
    accessRw(access, START, new Uint8Array(8), ACCESS_RW_SLOW_PATH, h.proc);
    assert.equal(page.pins, 0);
    assert.equal(h.ioas(id).iopt.areas[0].numAccesses, 0);
  });
});

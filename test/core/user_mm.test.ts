import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeProcess, PAGE_SIZE } from "../../src/core/user_mm.ts";
import { EBADF, EFAULT } from "../../src/errno.ts";

describe("FakeProcess", () => {
  it("copies across pages and faults on holes and read-only writes", () => {
    const p = new FakeProcess();
    const va = p.mmap(2 * PAGE_SIZE);
    const data = new Uint8Array(100).map((_, i) => i + 1);
    assert.equal(p.write(va + BigInt(PAGE_SIZE - 50), data), 0);
    const back = new Uint8Array(100);
    assert.equal(p.read(va + BigInt(PAGE_SIZE - 50), back), 0);
    assert.deepEqual(back, data);
    assert.equal(
      p.read(va + BigInt(2 * PAGE_SIZE - 10), new Uint8Array(20)),
      EFAULT,
      "runs into the guard hole",
    );
    const ro = p.mmap(PAGE_SIZE, { writable: false });
    assert.equal(p.write(ro, new Uint8Array(1)), EFAULT);
    assert.equal(p.pages(ro, 1, true), EFAULT);
    assert.equal((p.pages(ro, 1, false) as unknown[]).length, 1);
  });

  it("gives pages consecutive PFNs within a mapping and stable identity", () => {
    const p = new FakeProcess();
    const va = p.mmap(4 * PAGE_SIZE);
    const a = p.pages(va, 4, true);
    assert.ok(Array.isArray(a));
    for (let i = 1; i < 4; i++) assert.equal(a[i].pfn, a[0].pfn + i);
    const b = p.pages(va + BigInt(PAGE_SIZE), 1, false);
    assert.ok(Array.isArray(b));
    assert.equal(b[0], a[1]);
  });

  it("fork shares MAP_SHARED pages and copies private ones; exit ends access", () => {
    const p = new FakeProcess();
    const shared = p.mmap(PAGE_SIZE, { shared: true });
    const priv = p.mmap(PAGE_SIZE);
    p.write(priv, new Uint8Array([7]));
    const c = p.fork();
    const ps = p.pages(shared, 1, false) as { pfn: number }[];
    const cs = c.pages(shared, 1, false) as { pfn: number }[];
    assert.equal(cs[0], ps[0]);
    const pp = p.pages(priv, 1, false) as { pfn: number }[];
    const cp = c.pages(priv, 1, false) as { pfn: number }[];
    assert.notEqual(cp[0].pfn, pp[0].pfn);
    const one = new Uint8Array(1);
    c.read(priv, one);
    assert.equal(one[0], 7, "the child sees the parent's bytes");
    c.exit();
    assert.equal(c.alive, false);
    assert.equal(c.read(shared, one), EFAULT);
  });

  it("opens memfds by descriptor and unmaps holes", () => {
    const p = new FakeProcess();
    const { fd, file } = p.memfd(3 * PAGE_SIZE);
    assert.equal(p.file(fd), file);
    assert.equal(p.file(99), EBADF);
    assert.equal(file.page(3), undefined);
    const va = p.mmap(3 * PAGE_SIZE);
    p.munmap(va + BigInt(PAGE_SIZE), PAGE_SIZE);
    assert.equal(p.pages(va, 3, false), EFAULT);
    assert.equal((p.pages(va + BigInt(2 * PAGE_SIZE), 1, false) as unknown[]).length, 1);
  });
});

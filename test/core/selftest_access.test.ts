/**
 * The selftest's in-kernel access driven from user space (spec mock-driver-failnth.md §2.6-§2.10):
 * CREATE_ACCESS and its fd, ACCESS_PAGES / DESTROY_ACCESS_PAGES items, ACCESS_RW on every path,
 * ACCESS_REPLACE_IOAS, the unmap callback, and what closing an access fd releases.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ObjType } from "../../src/core/object.ts";
import {
  closeAllSelftestFds,
  closeSelftestFd,
  SELFTEST_FD_BASE,
  type SelftestAccessFile,
  selftestFile,
  selftestOpenFds,
  setSelftestFdAllocator,
} from "../../src/core/selftest.ts";
import {
  EADDRINUSE,
  EBADE,
  EBADF,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
} from "../../src/errno.ts";
import {
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_TEST_CMD,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
} from "../../src/uapi/index.ts";
import { PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const EBADFD = 77;
const P = BigInt(PAGE);
const START = 1n << 24n;
const PIN = MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES;
const MiB = 1n << 20n;

function setup(pages = 16) {
  const h = new SelftestHarness();
  const ioas = h.ioasAlloc();
  const buf = h.proc.mmap(pages * PAGE);
  const iova = h.mapOk(ioas, buf, pages * PAGE, START);
  return { h, ioas, buf, iova };
}

function fileOf(h: SelftestHarness, fd: number): SelftestAccessFile {
  const f = selftestFile(h.ctx, fd);
  assert.ok(f !== undefined && f.kind === "access");
  return f;
}

/** Fills `len` bytes at `va` with a recognisable pattern; returns it. */
function fill(h: SelftestHarness, va: bigint, len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  h.proc.write(va, b);
  return b;
}

function readBack(h: SelftestHarness, va: bigint, len: number): Uint8Array {
  const b = new Uint8Array(len);
  assert.equal(h.proc.read(va, b), 0);
  return b;
}

describe("IOMMU_TEST_OP_CREATE_ACCESS", () => {
  it("refuses unknown flags, then a bad IOAS; failed calls hand out no fd", () => {
    const { h, ioas } = setup();
    assert.equal(h.test(OP.CREATE_ACCESS, ioas, { flags: 2 }).errno, EOPNOTSUPP);
    assert.equal(h.test(OP.CREATE_ACCESS, 99, { flags: 0 }).errno, ENOENT);
    assert.deepEqual(selftestOpenFds(h.ctx), []);
    assert.equal(h.ctx.table.size, 1);
    const fd = h.createAccess(ioas);
    assert.equal(fd, SELFTEST_FD_BASE);
    assert.deepEqual(selftestOpenFds(h.ctx), [{ fd, kind: "access" }]);
  });

  it("publishes an ACCESS object holding the IOAS until the fd closes", () => {
    const { h, ioas } = setup();
    const fd = h.createAccess(ioas, PIN);
    const access = fileOf(h, fd).access;
    assert.ok(access !== null);
    assert.ok(h.isLive(access.id, ObjType.ACCESS));
    assert.equal(h.destroy(access.id), EBUSY);
    assert.equal(h.destroy(ioas), EBUSY);
    assert.equal(closeSelftestFd(h.ctx, fd), 0);
    assert.ok(!h.isLive(access.id));
    assert.equal(closeSelftestFd(h.ctx, fd), EBADF);
    assert.equal(h.destroy(ioas), 0);
  });

  it("a pinning access needs PAGE-aligned areas: EADDRINUSE otherwise", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(h.map(ioas, buf + 256n, 1024).errno, 0);
    assert.equal(h.test(OP.CREATE_ACCESS, ioas, { flags: PIN }).errno, EADDRINUSE);
    assert.equal(h.ctx.table.size, 1);
    assert.equal(h.ioas(ioas).users, 1);
    // A plain rw access has alignment 1 and fits.
    assert.ok(h.createAccess(ioas, 0) >= SELFTEST_FD_BASE);
  });

  it("a faulting write-back destroys the access and frees the fd number", () => {
    const { h, ioas } = setup();
    const at = h.proc.mmap(PAGE);
    h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 100 }, { at });
    // Rewrite the struct as CREATE_ACCESS on `ioas`, then issue it read-only.
    const cmd = new Uint8Array(72);
    const v = new DataView(cmd.buffer);
    v.setUint32(0, 72, true);
    v.setUint32(4, OP.CREATE_ACCESS, true);
    v.setUint32(8, ioas, true);
    h.proc.write(at, cmd);
    const pages = h.proc.pages(at, 1, false);
    assert.ok(typeof pages !== "number");
    const ro = h.proc.mmap(PAGE, { pages, writable: false });
    assert.equal(h.ctx.ioctl(IOMMU_TEST_CMD, ro, h.proc).errno, EFAULT);
    assert.deepEqual(selftestOpenFds(h.ctx), []);
    assert.equal(h.ioas(ioas).users, 1);
    assert.equal(h.createAccess(ioas), SELFTEST_FD_BASE);
  });

  it("uses the installed fd allocator, and ENOMEM when it has none left", () => {
    const { h, ioas } = setup();
    const given: number[] = [];
    const released: number[] = [];
    let left = 1;
    setSelftestFdAllocator(h.ctx, {
      alloc: () => {
        if (left === 0) return undefined;
        left--;
        given.push(7);
        return 7;
      },
      release: (fd) => released.push(fd),
    });
    assert.equal(h.createAccess(ioas), 7);
    assert.equal(h.test(OP.CREATE_ACCESS, ioas, { flags: 0 }).errno, ENOMEM);
    assert.equal(closeSelftestFd(h.ctx, 7), 0);
    assert.deepEqual(given, [7]);
    assert.deepEqual(released, [7]);
  });
});

describe("IOMMU_TEST_OP_ACCESS_PAGES", () => {
  it("checks length, flags, fd and access kind before pinning", () => {
    const { h, ioas, buf, iova } = setup();
    const rw = h.createAccess(ioas, 0);
    const pin = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(99, iova, 16n * MiB + 1n, buf).errno, ENOMEM);
    assert.equal(h.accessPages(99, iova, P, buf, 2).errno, EOPNOTSUPP);
    assert.equal(h.accessPages(99, iova, P, buf).errno, EBADFD);
    assert.equal(h.accessPages(rw, iova, P, buf).errno, EOPNOTSUPP);
    assert.equal(h.accessPages(pin, iova, 0n, buf).errno, EINVAL);
    assert.equal(h.accessPages(pin, U64_MAX, 2n, 0n).errno, EOVERFLOW);
    assert.equal(h.accessPages(pin, iova + 16n * P, P, 0n).errno, ENOENT);
    assert.equal(h.accessPages(pin, iova + 15n * P, 2n * P, 0n).errno, ENOENT);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
  });

  it("pins pages once (shared with a domain), numbers items from 0, and unpins on destroy", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    const a = h.accessPages(fd, iova, 4n * P, buf);
    assert.deepEqual(a, { errno: 0, id: 0 });
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    const b = h.accessPages(fd, iova, 4n * P, buf);
    assert.deepEqual(b, { errno: 0, id: 1 });
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    const md = h.mockDomain(ioas);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 1), 0);
    assert.equal(h.checkMap(md.hwpt, iova, 16 * PAGE, buf), 0);
    assert.equal(h.destroy(md.stdev), 0);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    assert.equal(h.checkRefs(buf + 4n * P, 12 * PAGE, 0), 0);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, 0);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, ENOENT);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 1 }).errno, 0);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 0), 0);
    assert.equal(h.accessPages(fd, iova, P, buf).id, 2);
  });

  it("compares the pinned pages with the pages under uptr (EBADE) unless uptr is 0", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, 2n * P, buf + P).errno, EBADE);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.accessPages(fd, iova, 2n * P, 0x1000n).errno, EFAULT);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.accessPages(fd, iova, 2n * P, 0n).errno, 0);
    // The first pinned byte must start a CPU page.
    assert.equal(h.accessPages(fd, iova + P + 100n, 10n, buf + P + 100n).errno, EINVAL);
  });

  it("WRITE needs a writable area (EPERM on a read-only mapping)", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const buf = h.proc.mmap(2 * PAGE);
    const ro = h.map(ioas, buf, 2 * PAGE, { iova: START, flags: IOMMU_IOAS_MAP_READABLE | 1 });
    assert.equal(ro.errno, 0);
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, START, P, buf, MOCK_FLAGS_ACCESS_WRITE).errno, EPERM);
    assert.equal(h.accessPages(fd, START, P, buf).errno, 0);
  });

  it("an unmap of the area drops the items it touches (ENOENT afterwards)", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, P, buf).errno, 0);
    assert.equal(h.checkRefs(buf, PAGE, 1), 0);
    assert.equal(h.unmap(ioas, iova, 16n * P).errno, 0);
    assert.equal(h.checkRefs(buf, PAGE, 0), 0);
    assert.deepEqual(fileOf(h, fd).items, []);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, ENOENT);
  });

  it("SYZ reads the IOVA as (area index, offset)", () => {
    const { h, ioas, buf } = setup();
    const second = h.proc.mmap(4 * PAGE);
    const iova2 = h.mapOk(ioas, second, 4 * PAGE, START + 0x10_0000n);
    const fd = h.createAccess(ioas, PIN);
    const syz = (1n << 32n) * (2n * P) + 1n; // area 1, offset 2 pages
    const r = h.accessPages(fd, syz, P, second + 2n * P, MOCK_FLAGS_ACCESS_SYZ);
    assert.equal(r.errno, 0);
    assert.deepEqual(fileOf(h, fd).items, [{ iova: iova2 + 2n * P, length: P, id: 0 }]);
    // No such area: the IOVA becomes 0, which nothing maps.
    assert.equal(h.accessPages(fd, 5n, P, 0n, MOCK_FLAGS_ACCESS_SYZ).errno, ENOENT);
    assert.equal(h.checkRefs(buf, PAGE, 0), 0);
  });

  it("a faulting write-back unpins and forgets the new item", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    const at = h.proc.mmap(PAGE);
    h.test(OP.ACCESS_PAGES, fd, { flags: 0, iova, length: P, uptr: buf }, { at });
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, 0);
    h.test(OP.ACCESS_PAGES, fd, { flags: 2, iova, length: P, uptr: buf }, { at });
    const flags = new Uint8Array(4);
    h.proc.write(at + 16n, flags); // flags back to 0 (the last call wrote 2)
    const pages = h.proc.pages(at, 1, false);
    assert.ok(typeof pages !== "number");
    const ro = h.proc.mmap(PAGE, { pages, writable: false });
    assert.equal(h.ctx.ioctl(IOMMU_TEST_CMD, ro, h.proc).errno, EFAULT);
    assert.equal(h.checkRefs(buf, PAGE, 0), 0);
    assert.deepEqual(fileOf(h, fd).items, []);
    // The failed item's id was consumed.
    assert.equal(h.accessPages(fd, iova, P, buf).id, 2);
  });
});

describe("IOMMU_TEST_OP_DESTROY_ACCESS_PAGES", () => {
  it("EBADFD for a non-access fd, ENOENT for an unknown item", () => {
    const { h, ioas } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd + 1, { access_pages_id: 0 }).errno, EBADFD);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, ENOENT);
  });
});

describe("IOMMU_TEST_OP_ACCESS_RW", () => {
  const rw = (h: SelftestHarness, fd: number, iova: bigint, len: number, uptr: bigint, flags = 0) =>
    h.test(OP.ACCESS_RW, fd, { iova, length: BigInt(len), uptr, flags }).errno;

  it("checks length, flags, fd; then the copy-in, the range and the copy-out", () => {
    const { h, ioas, iova } = setup();
    const fd = h.createAccess(ioas, 0);
    const tmp = h.proc.mmap(PAGE);
    assert.equal(rw(h, 99, iova, 16 * 1024 * 1024 + 1, tmp), ENOMEM);
    assert.equal(rw(h, 99, iova, 1, tmp, 2), EOPNOTSUPP);
    assert.equal(rw(h, 99, iova, 1, tmp), EBADFD);
    assert.equal(rw(h, fd, iova, 1, 0x1000n, MOCK_ACCESS_RW_WRITE), EFAULT);
    assert.equal(rw(h, fd, iova, 0, tmp), EINVAL);
    assert.equal(rw(h, fd, U64_MAX, 2, tmp), EOVERFLOW);
    assert.equal(rw(h, fd, iova + 16n * P, 1, tmp), ENOENT);
    assert.equal(rw(h, fd, iova + 16n * P - 1n, 2, tmp), ENOENT);
    assert.equal(rw(h, fd, iova, 1, 0x1000n), EFAULT);
  });

  it("reads and writes the same bytes on the fast and the slow path, across pages", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, 0);
    const tmp = h.proc.mmap(4 * PAGE);
    const content = fill(h, buf, 16 * PAGE, 3);
    for (const slow of [0, MOCK_ACCESS_RW_SLOW_PATH]) {
      for (const [off, len] of [
        [PAGE - 50, 100],
        [0, 1],
        [PAGE - 1, 63],
        [100, 3 * PAGE],
      ]) {
        assert.equal(rw(h, fd, iova + BigInt(off), len, tmp, slow), 0);
        assert.deepEqual(readBack(h, tmp, len), content.subarray(off, off + len));
      }
    }
    const data = fill(h, tmp, 2 * PAGE, 99);
    assert.equal(rw(h, fd, iova + 10n, 2 * PAGE, tmp, MOCK_ACCESS_RW_WRITE), 0);
    assert.deepEqual(readBack(h, buf + 10n, 2 * PAGE), data);
    const data2 = fill(h, tmp, PAGE, 42);
    const slowWrite = MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH;
    assert.equal(rw(h, fd, iova + 5n * P, PAGE, tmp, slowWrite), 0);
    assert.deepEqual(readBack(h, buf + 5n * P, PAGE), data2);
    // The slow path pins only for the copy.
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
  });

  it("a write through a read-only area is EPERM", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const buf = h.proc.mmap(PAGE);
    assert.equal(
      h.map(ioas, buf, PAGE, { iova: START, flags: IOMMU_IOAS_MAP_READABLE | 1 }).errno,
      0,
    );
    const fd = h.createAccess(ioas, 0);
    const tmp = h.proc.mmap(PAGE);
    assert.equal(rw(h, fd, START, 8, tmp, MOCK_ACCESS_RW_WRITE), EPERM);
    assert.equal(rw(h, fd, START, 8, tmp), 0);
  });

  it("SYZ converts the IOVA before the copy", () => {
    const { h, ioas, buf } = setup();
    const fd = h.createAccess(ioas, 0);
    const tmp = h.proc.mmap(PAGE);
    const content = fill(h, buf, 16 * PAGE, 5);
    const syz = (1n << 32n) * 300n; // area 0, offset 300
    assert.equal(rw(h, fd, syz, 16, tmp, MOCK_FLAGS_ACCESS_SYZ), 0);
    assert.deepEqual(readBack(h, tmp, 16), content.subarray(300, 316));
  });
});

describe("IOMMU_TEST_OP_ACCESS_REPLACE_IOAS", () => {
  it("EBADFD, then ENOENT for a bad IOAS; the same IOAS is a no-op", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, P, buf).errno, 0);
    assert.equal(h.test(OP.ACCESS_REPLACE_IOAS, 5, { ioas_id: ioas }).errno, EBADFD);
    assert.equal(h.test(OP.ACCESS_REPLACE_IOAS, fd, { ioas_id: 99 }).errno, ENOENT);
    assert.equal(h.test(OP.ACCESS_REPLACE_IOAS, fd, { ioas_id: ioas }).errno, 0);
    assert.equal(fileOf(h, fd).items.length, 1);
    assert.equal(h.checkRefs(buf, PAGE, 1), 0);
  });

  it("moves to the new IOAS and drops every pinned item of the old one", () => {
    const { h, ioas, buf, iova } = setup();
    const ioas2 = h.ioasAlloc();
    const other = h.proc.mmap(PAGE);
    const iova2 = h.mapOk(ioas2, other, PAGE, START);
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, P, buf).errno, 0);
    assert.equal(h.test(OP.ACCESS_REPLACE_IOAS, fd, { ioas_id: ioas2 }).errno, 0);
    assert.equal(h.checkRefs(buf, PAGE, 0), 0);
    assert.equal(h.test(OP.DESTROY_ACCESS_PAGES, fd, { access_pages_id: 0 }).errno, ENOENT);
    assert.equal(h.ioas(ioas).users, 1);
    assert.equal(h.ioas(ioas2).users, 2);
    assert.deepEqual(h.accessPages(fd, iova2, P, other), { errno: 0, id: 1 });
    assert.equal(h.checkRefs(other, PAGE, 1), 0);
  });
});

describe("access fds and the context's lifetime", () => {
  it("closing the access fd unpins everything and lets the IOAS go", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, 8n * P, buf).errno, 0);
    assert.equal(h.accessPages(fd, iova + 4n * P, 8n * P, buf + 4n * P).errno, 0);
    assert.equal(h.checkRefs(buf, 12 * PAGE, 1), 0);
    assert.equal(closeSelftestFd(h.ctx, fd), 0);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.test(OP.ACCESS_RW, fd, { iova, length: 1n, uptr: buf }).errno, EBADFD);
    assert.equal(h.destroy(ioas), 0);
  });

  it("a context closed while an access fd is open is released when that fd closes", () => {
    const { h, ioas, buf, iova } = setup();
    const fd = h.createAccess(ioas, PIN);
    assert.equal(h.accessPages(fd, iova, 2n * P, buf).errno, 0);
    const stuck = h.ctx.close();
    assert.equal(stuck.length, 2); // the IOAS and the ACCESS, held by the open fd
    const probe = new SelftestHarness(h.proc);
    assert.equal(probe.checkRefs(buf, 2 * PAGE, 1), 0);
    closeAllSelftestFds(h.ctx);
    assert.equal(h.ctx.table.size, 0);
    assert.equal(probe.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.proc.accounting.pinnedPages, 0);
  });
});

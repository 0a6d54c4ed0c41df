/**
 * IOAS ioctls through the codec: every errno path of ioas-pages.md §8 for ALLOC, IOVA_RANGES,
 * ALLOW_IOVAS, MAP, MAP_FILE, COPY and UNMAP, plus the selftest scenarios that pin down their
 * semantics (iommufd_ioas.area, iova_ranges, area_allowed, reserved_overflow, ...).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { contiguousPages, FakeProcess } from "../../src/core/user_mm.ts";
import {
  EADDRINUSE,
  EBADF,
  EEXIST,
  EFAULT,
  EINVAL,
  EMSGSIZE,
  ENOENT,
  ENOSPC,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
} from "../../src/errno.ts";
import {
  decode,
  encode,
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_IOVA_RANGES_LAYOUT,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOVA_RANGE_LAYOUT,
} from "../../src/uapi/index.ts";
import { FIXED, Harness, PAGE, RW, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const START = 1n << 24n; // MOCK_APERTURE_START
const P = BigInt(PAGE);

function withMockDomain(h: Harness, ioasId: number): TestPagingDomain {
  const d = new TestPagingDomain();
  h.ioas(ioasId).iopt.addDomain(d);
  return d;
}

function rangesArray(h: Harness, n: number): bigint {
  return h.proc.mmap(Math.max(n, 1) * 16);
}

function readRanges(h: Harness, at: bigint, n: number): { start: bigint; last: bigint }[] {
  const bytes = new Uint8Array(16 * n);
  h.proc.read(at, bytes);
  return Array.from({ length: n }, (_, i) =>
    decode(IOMMU_IOVA_RANGE_LAYOUT, bytes.subarray(i * 16, i * 16 + 16)),
  );
}

function writeRanges(h: Harness, ranges: [bigint, bigint][]): bigint {
  const at = rangesArray(h, ranges.length);
  const bytes = new Uint8Array(16 * ranges.length);
  ranges.forEach(([start, last], i) => {
    encode(IOMMU_IOVA_RANGE_LAYOUT, { start, last }, bytes.subarray(i * 16, i * 16 + 16));
  });
  h.proc.write(at, bytes);
  return at;
}

describe("IOMMU_IOAS_ALLOC", () => {
  it("rejects flags and allocates the lowest free id", () => {
    const h = new Harness();
    assert.equal(h.call(IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOC_LAYOUT, { flags: 1 }).errno, EOPNOTSUPP);
    assert.equal(h.ioasAlloc(), 1);
    assert.equal(h.ioasAlloc(), 2);
    assert.equal(h.ioas(2).iopt.iovaAlignment, 1);
  });

  it("aborts the object when the reply cannot be written (EFAULT), freeing the id", () => {
    const h = new Harness();
    const [page] = contiguousPages(1);
    const struct = new Uint8Array(12);
    encode(IOMMU_IOAS_ALLOC_LAYOUT, { size: 12 }, struct);
    page.write(0, struct);
    const ro = h.proc.mmap(PAGE, { writable: false, pages: [page] });
    assert.equal(h.ctx.ioctl(IOMMU_IOAS_ALLOC, ro, h.proc).errno, EFAULT);
    assert.equal(h.ctx.table.size, 0);
    assert.equal(h.ioasAlloc(), 1);
  });

  it("destroy: an IOAS with areas but no users goes; areas do not hold it", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    h.mapOk(id, h.proc.mmap(PAGE), PAGE, START);
    const r = h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id });
    assert.equal(r.errno, 0);
    assert.equal(h.ctx.table.size, 0);
  });
});

describe("IOMMU_IOAS_IOVA_RANGES", () => {
  const ranges = (h: Harness, id: number, num: number, at: bigint, reserved = 0) =>
    h.call(IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_IOVA_RANGES_LAYOUT, {
      ioas_id: id,
      num_iovas: num,
      allowed_iovas: at,
      __reserved: reserved,
    });

  it("checks __reserved, then the id", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(ranges(h, id, 1, rangesArray(h, 1), 1).errno, EOPNOTSUPP);
    assert.equal(ranges(h, 99, 1, rangesArray(h, 1)).errno, ENOENT);
  });

  it("no domain: one range [0, U64_MAX], alignment 1; EMSGSIZE leaves the array alone", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const at = rangesArray(h, 2);
    let r = ranges(h, id, 2, at);
    assert.equal(r.errno, 0);
    assert.equal(r.out.num_iovas, 1);
    assert.equal(r.out.out_iova_alignment, 1n);
    assert.deepEqual(readRanges(h, at, 1), [{ start: 0n, last: U64_MAX }]);

    const fresh = rangesArray(h, 1);
    r = ranges(h, id, 0, fresh);
    assert.equal(r.errno, EMSGSIZE);
    assert.equal(r.out.num_iovas, 1);
    assert.deepEqual(readRanges(h, fresh, 1), [{ start: 0n, last: 0n }]);

    // ADD_RESERVED [PAGE, 2*PAGE-1] splits it in two; num_iovas 1 writes only the first.
    h.ioas(id).iopt.reserveIova(P, 2n * P - 1n, null);
    const one = rangesArray(h, 2);
    r = ranges(h, id, 1, one);
    assert.equal(r.errno, EMSGSIZE);
    assert.equal(r.out.num_iovas, 2);
    assert.deepEqual(readRanges(h, one, 2), [
      { start: 0n, last: P - 1n },
      { start: 0n, last: 0n },
    ]);
    r = ranges(h, id, 2, at);
    assert.equal(r.errno, 0);
    assert.deepEqual(readRanges(h, at, 2), [
      { start: 0n, last: P - 1n },
      { start: 2n * P, last: U64_MAX },
    ]);
  });

  it("mock domain: the aperture and 2048 alignment; a reservation inside its hole is invisible", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    withMockDomain(h, id);
    const at = rangesArray(h, 2);
    let r = ranges(h, id, 2, at);
    assert.equal(r.errno, 0);
    assert.equal(r.out.num_iovas, 1);
    assert.equal(r.out.out_iova_alignment, 2048n);
    assert.deepEqual(readRanges(h, at, 1), [{ start: START, last: (1n << 31n) - 1n }]);
    h.ioas(id).iopt.reserveIova(P, 2n * P - 1n, null);
    r = ranges(h, id, 2, at);
    assert.equal(r.errno, 0);
    assert.equal(r.out.num_iovas, 1);
  });

  it("EFAULT when the array cannot be written", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(ranges(h, id, 1, 0x10n).errno, EFAULT);
  });
});

describe("IOMMU_IOAS_ALLOW_IOVAS", () => {
  const allow = (h: Harness, id: number, list: [bigint, bigint][], reserved = 0, at?: bigint) =>
    h.call(IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_ALLOW_IOVAS_LAYOUT, {
      ioas_id: id,
      num_iovas: list.length,
      allowed_iovas: at ?? writeRanges(h, list),
      __reserved: reserved,
    }).errno;

  it("checks __reserved, the id, each element's order and overlap", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(allow(h, id, [[P, 2n * P]], 1), EOPNOTSUPP);
    assert.equal(allow(h, 42, [[P, 2n * P]]), ENOENT);
    assert.equal(allow(h, id, [[P, P]]), EINVAL); // a one-byte range is rejected
    assert.equal(allow(h, id, [[2n * P, P]]), EINVAL);
    assert.equal(
      allow(h, id, [
        [P, 4n * P],
        [4n * P, 8n * P],
      ]),
      EINVAL,
    );
    assert.equal(allow(h, id, [[P, 2n * P]], 0, 0x10n), EFAULT);
    assert.equal(h.ioas(id).iopt.allowed.length, 0);
  });

  it("area_allowed: allowed and reserved exclude each other both ways", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    assert.equal(allow(h, id, [[START, START + 600n * P]]), 0);
    assert.throws(() => iopt.reserveIova(START + P, START + 2n * P - 1n, null), {
      errno: EADDRINUSE,
    });
    assert.equal(allow(h, id, []), 0);
    iopt.reserveIova(START + P, START + 2n * P - 1n, null);
    assert.equal(allow(h, id, [[START, START + 600n * P]]), EADDRINUSE);
    assert.equal(iopt.allowed.length, 0); // the old (empty) set stays
  });

  it("allowed ranges are not checked against areas and do not restrict FIXED maps", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const va = h.proc.mmap(PAGE);
    h.mapOk(id, va, PAGE, START);
    assert.equal(allow(h, id, [[2n * START, 3n * START]]), 0);
    assert.equal(h.map(id, va, PAGE, { iova: START + P }).errno, 0);
  });
});

describe("IOMMU_IOAS_MAP", () => {
  const raw = (h: Harness, f: Partial<Record<string, number | bigint>>) =>
    h.call(IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_LAYOUT, { flags: RW, length: P, user_va: P, ...f }).errno;

  it("checks flags, __reserved, U64_MAX, permission, then the id, in that order", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(raw(h, { ioas_id: 99, flags: 1 << 3 }), EOPNOTSUPP);
    assert.equal(raw(h, { ioas_id: 99, __reserved: 1 }), EOPNOTSUPP);
    assert.equal(raw(h, { ioas_id: 99, iova: U64_MAX }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: 99, length: U64_MAX }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: 99, flags: FIXED }), EINVAL);
    assert.equal(raw(h, { ioas_id: 99 }), ENOENT);
    assert.equal(raw(h, { ioas_id: id, user_va: U64_MAX - P + 1n, length: P }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: id, length: 0n }), EINVAL);
    assert.equal(h.ioas(id).iopt.areas.length, 0);
  });

  it("fixed IOVA: misaligned EINVAL, wrap EOVERFLOW, reserved EINVAL, overlap EEXIST", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    withMockDomain(h, id);
    const va = h.proc.mmap(4 * PAGE);
    assert.equal(h.map(id, va, PAGE, { iova: START + 1024n }).errno, EINVAL);
    assert.equal(h.map(id, va, 2048n * 3n + 1n, { iova: START }).errno, EINVAL); // length
    assert.equal(h.map(id, va, PAGE, { iova: 0n }).errno, EINVAL); // below the aperture
    assert.equal(h.map(id, va, PAGE, { iova: 1n << 31n }).errno, EINVAL); // above it
    assert.equal(h.map(id, va, PAGE, { iova: U64_MAX - 2047n }).errno, EOVERFLOW); // wraps first
    const plain = new Harness();
    const pid = plain.ioasAlloc();
    const pva = plain.proc.mmap(4 * PAGE);
    assert.equal(plain.map(pid, pva, 2n * P, { iova: U64_MAX - P }).errno, EOVERFLOW);
    assert.equal(h.map(id, va, 2n * P, { iova: START + 16n * P }).errno, 0);
    for (const [len, at] of [
      [2n, 16n],
      [1n, 16n],
      [1n, 17n],
      [2n, 15n],
      [3n, 15n],
    ]) {
      assert.equal(h.map(id, va, len * P, { iova: START + at * P }).errno, EEXIST);
    }
  });

  it("pins nothing without a domain (the VA need not exist) and touches memory with one", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(h.map(id, 1n << 31n, 4n * P).errno, 0);
    const withDomain = h.ioasAlloc();
    withMockDomain(h, withDomain);
    assert.equal(h.map(withDomain, 1n << 31n, 4n * P).errno, EFAULT);
    const va = h.proc.mmap(2 * PAGE);
    h.proc.munmap(va + P, PAGE); // second half missing
    assert.equal(h.map(withDomain, va, 2n * P).errno, EFAULT);
    const va2 = h.proc.mmap(2 * PAGE);
    h.proc.munmap(va2, PAGE); // first half missing
    assert.equal(h.map(withDomain, va2, 2n * P).errno, EFAULT);
    assert.equal(h.ioas(withDomain).iopt.areas.length, 0);
  });

  it("auto IOVA: never 0, aligned to the length's lowest bit, avoids reservations", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    for (let i = 0; i < 10; i++) {
      const iova = h.mapOk(id, 1n << 31n, P);
      assert.notEqual(iova, 0n);
      assert.equal(h.unmap(id, iova, P).errno, 0);
    }
    iopt.reserveIova(4n * P, 104n * P - 1n, null);
    const got: bigint[] = [];
    for (let n = 1n; n <= 10n; n++) {
      const iova = h.mapOk(id, 1n << 31n, n * P);
      const low = (n * P) & -(n * P);
      assert.equal(iova % low, 0n, `length ${n} pages at 0x${iova.toString(16)}`);
      assert.ok(iova + n * P <= 4n * P || iova >= 104n * P);
      got.push(iova);
    }
    assert.equal(new Set(got).size, got.length);
  });

  it("auto IOVA lands inside the allowed ranges; ALLOW over a reservation is EADDRINUSE", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const iopt = h.ioas(id).iopt;
    iopt.reserveIova(4n * P, 104n * P - 1n, null);
    assert.throws(() => iopt.setAllowed([{ start: P, last: 600n * P }]), { errno: EADDRINUSE });
    iopt.setAllowed([{ start: 200n * P, last: 600n * P - 1n }]);
    for (let n = 1n; n <= 10n; n++) {
      const iova = h.mapOk(id, 1n << 31n, n * P);
      assert.ok(iova >= 200n * P && iova + n * P - 1n <= 600n * P - 1n);
    }
  });

  it("reserved_overflow: the only hole rounds past U64_MAX, so ENOSPC", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    h.ioas(id).iopt.reserveIova(6n, 6n + 0xffffffffffff8001n - 1n, null);
    const va = h.proc.mmap(8 * PAGE, { at: 0x7e00_0000_0000n }); // hugepage aligned
    assert.equal(h.map(id, va, 0x5000n).errno, ENOSPC);
  });

  it("ioas_iova_alloc: any length without a domain, 2048 multiples with the mock", () => {
    const h = new Harness();
    const plain = h.ioasAlloc();
    const mock = h.ioasAlloc();
    withMockDomain(h, mock);
    const va = h.proc.mmap(2 * PAGE);
    for (let len = 1n; len < 2n * P; len += 97n) {
      assert.equal(h.map(plain, va, len).errno, 0);
      assert.equal(h.map(mock, va, len).errno, len % 2048n === 0n ? 0 : EINVAL);
    }
  });

  it("writes the chosen IOVA back and keeps the mapping when the write-back faults", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const [page] = contiguousPages(1);
    const struct = new Uint8Array(40);
    encode(
      IOMMU_IOAS_MAP_LAYOUT,
      { size: 40, ioas_id: id, flags: RW, user_va: P, length: P },
      struct,
    );
    page.write(0, struct);
    const ro = h.proc.mmap(PAGE, { writable: false, pages: [page] });
    assert.equal(h.ctx.ioctl(IOMMU_IOAS_MAP, ro, h.proc).errno, EFAULT);
    assert.equal(h.ioas(id).iopt.areas.length, 1);
  });
});

describe("IOMMU_IOAS_MAP_FILE", () => {
  const raw = (h: Harness, f: Partial<Record<string, number | bigint>>) =>
    h.call(IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_MAP_FILE_LAYOUT, { flags: RW, length: P, ...f }).errno;

  it("checks flags, U64_MAX, permission, id, length, overflow, then the fd", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const { fd } = h.proc.memfd(4 * PAGE);
    assert.equal(raw(h, { ioas_id: 99, fd: 999, flags: 1 << 5 }), EOPNOTSUPP);
    assert.equal(raw(h, { ioas_id: 99, fd: 999, iova: U64_MAX }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: 99, fd: 999, length: U64_MAX }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: 99, fd: 999, flags: 0 }), EINVAL);
    assert.equal(raw(h, { ioas_id: 99, fd: 999 }), ENOENT);
    assert.equal(raw(h, { ioas_id: id, fd: 999, length: 0n }), EINVAL);
    assert.equal(raw(h, { ioas_id: id, fd: 999, start: U64_MAX - 10n, length: 12n }), EOVERFLOW);
    assert.equal(raw(h, { ioas_id: id, fd: 999 }), EBADF);
    assert.equal(raw(h, { ioas_id: id, fd }), 0);
  });

  it("past-EOF pages are EINVAL only once a domain pins them", () => {
    const h = new Harness();
    const plain = h.ioasAlloc();
    const mock = h.ioasAlloc();
    const d = withMockDomain(h, mock);
    const { fd, file } = h.proc.memfd(2 * PAGE);
    assert.equal(raw(h, { ioas_id: plain, fd, length: 2n * P + 1n }), 0);
    assert.equal(raw(h, { ioas_id: mock, fd, length: 2n * P + 1n }), EINVAL);
    assert.equal(file.page(0)!.pins, 0);
    const r = h.mapFile(mock, fd, 0n, P);
    assert.equal(r.errno, 0);
    assert.equal(d.iovaToPhys(r.out.iova), file.page(0)!.pfn * PAGE);
    assert.equal(file.page(0)!.pins, 1);
  });

  it("uses the file offset for auto-IOVA alignment", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const { fd } = h.proc.memfd(64 * PAGE);
    const r = h.mapFile(id, fd, 3n * P + 0x800n, 4n * P);
    assert.equal(r.errno, 0);
    assert.equal(r.out.iova % P, 0x800n); // the in-page offset is kept
  });
});

describe("IOMMU_IOAS_COPY", () => {
  it("checks flags, U64_MAX, permission, source, range, destination", () => {
    const h = new Harness();
    const a = h.ioasAlloc();
    const b = h.ioasAlloc();
    const va = h.proc.mmap(4 * PAGE);
    const iova = h.mapOk(a, va, 4n * P, START);
    assert.equal(h.copy(b, a, iova, P, { flags: 1 << 4 }).errno, EOPNOTSUPP);
    assert.equal(h.copy(b, a, iova, U64_MAX).errno, EOVERFLOW);
    assert.equal(h.copy(b, a, U64_MAX, P).errno, EOVERFLOW);
    assert.equal(h.copy(b, a, iova, P, { dstIova: U64_MAX }).errno, EOVERFLOW);
    assert.equal(h.copy(b, a, iova, P, { flags: FIXED }).errno, EINVAL);
    assert.equal(h.copy(b, 77, iova, P).errno, ENOENT);
    assert.equal(h.copy(b, a, iova, 0n).errno, EINVAL);
    assert.equal(h.copy(b, a, U64_MAX - 1n, 4n).errno, EOVERFLOW);
    assert.equal(h.copy(b, a, iova + P, 4n * P).errno, ENOENT);
    assert.equal(h.copy(77, a, iova, P).errno, ENOENT);
    assert.equal(h.ioas(a).iopt.areas[0].pages!.refs, 1); // the pieces were released
    assert.equal(h.ioas(b).iopt.areas.length, 0);
  });

  it("EPERM when asking for WRITEABLE from read-only pages", () => {
    const h = new Harness();
    const a = h.ioasAlloc();
    const va = h.proc.mmap(PAGE);
    const r = h.map(a, va, P, { iova: START, flags: FIXED | IOMMU_IOAS_MAP_READABLE });
    assert.equal(r.errno, 0);
    assert.equal(h.copy(a, a, START, P, { dstIova: START + P }).errno, EPERM);
    const ok = h.copy(a, a, START, P, {
      dstIova: START + P,
      flags: FIXED | IOMMU_IOAS_MAP_READABLE,
    });
    assert.equal(ok.errno, 0);
    assert.equal(h.copy(a, a, START, P, { flags: IOMMU_IOAS_MAP_WRITEABLE }).errno, EPERM);
  });

  it("copy_area: within one IOAS and to a domain-less IOAS at IOVA 0", () => {
    const h = new Harness();
    const a = h.ioasAlloc();
    withMockDomain(h, a);
    const va = h.proc.mmap(PAGE);
    h.mapOk(a, va, P, START);
    assert.equal(h.copy(a, a, START, P, { dstIova: START + P }).errno, 0);
    const b = h.ioasAlloc();
    assert.equal(h.copy(b, a, START, P, { dstIova: 0n }).errno, 0);
    assert.equal(h.ioas(a).iopt.areas[0].pages, h.ioas(b).iopt.areas[0].pages);
  });

  it("copy_sweep: sub-ranges at odd offsets copy; any byte outside is ENOENT", () => {
    for (const domain of [false, true]) {
      const h = new Harness();
      const src = h.ioasAlloc();
      const dst = h.ioasAlloc();
      if (domain) withMockDomain(h, src);
      const buf = 16n * P;
      const va = h.proc.mmap(16 * PAGE);
      const base = domain ? START : START;
      h.mapOk(src, va, buf, base);
      const last = domain ? base + buf - 1n : base + buf - 2n;
      for (let start = base - 2048n; start < last; start += 511n) {
        const length = 2048n;
        const inside = start >= base && start + length - 1n <= base + buf - 1n;
        const r = h.copy(dst, src, start, length);
        assert.equal(r.errno, inside ? 0 : ENOENT, `copy at 0x${start.toString(16)}`);
        if (r.errno === 0) assert.equal(h.unmap(dst, r.out.dst_iova, length).errno, 0);
      }
    }
  });
});

describe("IOMMU_IOAS_UNMAP", () => {
  it("looks up the IOAS first, then checks the range", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    assert.equal(h.unmap(55, 0n, U64_MAX).errno, ENOENT);
    assert.equal(h.unmap(55, U64_MAX, 1n).errno, ENOENT);
    assert.equal(h.unmap(id, U64_MAX, 1n).errno, EOVERFLOW);
    assert.equal(h.unmap(id, P, U64_MAX).errno, EOVERFLOW);
    assert.equal(h.unmap(id, P, 0n).errno, EINVAL);
    assert.equal(h.unmap(id, U64_MAX - 1n, 4n).errno, EOVERFLOW);
    assert.equal(h.unmap(id, P, P).errno, ENOENT);
    const r = h.unmap(id, 0n, U64_MAX);
    assert.equal(r.errno, 0);
    assert.equal(r.out.length, 0n);
  });

  it("area: single pages map and unmap; a partial unmap is ENOENT; unmap-all twice", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const va = h.proc.mmap(16 * PAGE);
    for (let i = 0n; i < 10n; i++) assert.equal(h.unmap(id, START + i * P, P).errno, ENOENT);
    for (let i = 0n; i < 10n; i++) h.mapOk(id, va + i * P, P, START + i * P);
    for (let i = 0n; i < 10n; i++) {
      const r = h.unmap(id, START + i * P, P);
      assert.equal(r.errno, 0);
      assert.equal(r.out.length, P);
    }
    h.mapOk(id, va, 2n * P, START + 16n * P);
    assert.equal(h.unmap(id, START + 16n * P, P).errno, ENOENT);
    assert.equal(h.unmap(id, START + 17n * P, P).errno, ENOENT);
    assert.equal(h.unmap(id, 0n, U64_MAX).out.length, 2n * P);
    assert.equal(h.unmap(id, 0n, U64_MAX).errno, 0);
  });

  it("unmap_fully_contained_areas: ENOENT cutting the first or last, total length when covering", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const va = h.proc.mmap(8 * PAGE);
    for (let i = 0n; i < 4n; i++) h.mapOk(id, va, 8n * P, START + i * 16n * P);
    assert.equal(h.unmap(id, START - 4n * P, 8n * P).errno, ENOENT);
    assert.equal(h.unmap(id, START + 52n * P, 8n * P).errno, ENOENT);
    assert.equal(h.ioas(id).iopt.areas.length, 4);
    const r = h.unmap(id, START - 4n * P, 64n * P);
    assert.equal(r.errno, 0);
    assert.equal(r.out.length, 32n * P);
  });

  it("is not atomic: areas fully inside are removed before a partial one fails", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const va = h.proc.mmap(4 * PAGE);
    h.mapOk(id, va, P, START);
    h.mapOk(id, va, 2n * P, START + P);
    assert.equal(h.unmap(id, START, 2n * P).errno, ENOENT);
    assert.deepEqual(
      h.ioas(id).iopt.areas.map((a) => a.iova),
      [START + P],
    );
  });
});

describe("IOAS destroy and close", () => {
  it("close unmaps everything and releases every pin", () => {
    const proc = new FakeProcess();
    const h = new Harness(proc);
    const id = h.ioasAlloc();
    const d = withMockDomain(h, id);
    const va = proc.mmap(16 * PAGE);
    h.mapOk(id, va, 16n * P);
    const pages = proc.pages(va, 16, false) as { pins: number }[];
    assert.ok(pages.every((p) => p.pins === 1));
    h.ioas(id).iopt.removeDomain(d); // what HWPT destroy does before the IOAS can go
    h.ctx.close();
    assert.ok(pages.every((p) => p.pins === 0));
    assert.equal(d.mapped().length, 0);
  });
});

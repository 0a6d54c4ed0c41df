/**
 * dma-buf import by IOMMU_IOAS_MAP_FILE (ioas-pages.md §8.5, §13, §14; io_pagetable.c and
 * pages.c of v6.19+ with the 2026 multi-range series) and the selftest's
 * IOMMU_TEST_OP_MD_CHECK_DMABUF. First the kernel selftest's three dma-buf tests of the
 * iommufd_ioas fixture in its four variants, then every errno and each behaviour on its own:
 * no pins and no accounting, MMIO mappings, revoke, access and VFIO-compat refusals,
 * CHANGE_PROCESS, fail-nth unwinding, and a property over random slices of random buffers.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE } from "../../src/core/driver.ts";
import "../../src/core/index.ts";
import { IoptAddress, type IoptPages } from "../../src/core/pages.ts";
import {
  closeSelftestFd,
  type SelftestDmabuf,
  selftestFile,
  selftestParams,
} from "../../src/core/selftest.ts";
import { FakeProcess } from "../../src/core/user_mm.ts";
import {
  EBADF,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
} from "../../src/errno.ts";
import {
  encode,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_VFIO_IOAS_SET,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
} from "../../src/uapi/index.ts";
import { FIXED, PAGE, RW, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const P = BigInt(PAGE);
const MOCK_PAGE = 2048n;

// ---- helpers ------------------------------------------------------------------------------------

/** DMABUF_GET of `length` bytes, expecting success: the new fd. */
function getDmabuf(h: SelftestHarness, length: bigint | number): number {
  const r = h.test(OP.DMABUF_GET, 0, { length: Number(length), open_flags: 0o2000000 });
  assert.equal(r.errno, 0, `DMABUF_GET ${length}`);
  return r.value;
}

function dmabufOf(h: SelftestHarness, fd: number): SelftestDmabuf {
  const f = selftestFile(h.ctx, fd);
  assert.ok(f !== undefined && f.kind === "dmabuf");
  return f;
}

/** MAP_FILE of [start, start + length) of `fd`: errno and the IOVA. */
function mapFile(
  h: SelftestHarness,
  ioas: number,
  fd: number,
  start: bigint,
  length: bigint,
  opts: { iova?: bigint; flags?: number } = {},
): { errno: number; iova: bigint } {
  const r = h.mapFile(ioas, fd, start, length, opts);
  return { errno: r.errno, iova: r.out.iova };
}

function mapFileOk(
  h: SelftestHarness,
  ioas: number,
  fd: number,
  start: bigint,
  length: bigint,
  opts: { iova?: bigint; flags?: number } = {},
): bigint {
  const r = mapFile(h, ioas, fd, start, length, opts);
  assert.equal(r.errno, 0, `MAP_FILE fd ${fd} [${start}, +${length})`);
  return r.iova;
}

function checkDmabuf(
  h: SelftestHarness,
  hwpt: number,
  fd: number,
  iova: bigint,
  length: bigint,
  offset: bigint,
): number {
  return h.test(IOMMU_TEST_OP_MD_CHECK_DMABUF, hwpt, { dmabuf_fd: fd, iova, length, offset }).errno;
}

function revoke(h: SelftestHarness, fd: number, revoked: boolean): number {
  return h.test(OP.DMABUF_REVOKE, 0, { dmabuf_fd: fd, revoked: revoked ? 1 : 0 }).errno;
}

function pagesAt(h: SelftestHarness, ioas: number, iova: bigint): IoptPages {
  const area = h.ioas(ioas).iopt.areaIterFirst(iova, iova);
  assert.ok(area?.pages, `no area at 0x${iova.toString(16)}`);
  return area.pages;
}

interface Variant {
  name: string;
  mockDomains: number;
  memoryLimit: number;
}

/** FIXTURE_VARIANT(iommufd_ioas). */
const VARIANTS: Variant[] = [
  { name: "no_domain", mockDomains: 0, memoryLimit: 65536 },
  { name: "mock_domain", mockDomains: 1, memoryLimit: 65536 },
  { name: "two_mock_domain", mockDomains: 2, memoryLimit: 65536 },
  { name: "mock_domain_limit", mockDomains: 1, memoryLimit: 16 },
];

/** FIXTURE_SETUP(iommufd_ioas): an IOAS with the variant's mock devices on it. */
function ioasFixture(v: Variant) {
  const h = new SelftestHarness();
  const ioas = h.ioasAlloc();
  assert.equal(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: v.memoryLimit }).errno, 0);
  let hwpt = 0;
  let device = 0;
  for (let i = 0; i < v.mockDomains; i++) {
    const md = h.mockDomain(ioas);
    if (i === 0) hwpt = md.hwpt;
    device = md.idev;
  }
  return { h, ioas, hwpt, device };
}

/** FIXTURE_TEARDOWN: restore the memory limit, close the context; nothing may stay attached. */
function teardown(h: SelftestHarness, bufs: SelftestDmabuf[]): void {
  selftestParams.memoryLimit = 65536;
  h.ctx.close();
  for (const b of bufs) assert.equal(b.importers.size, 0, "an import outlived the context");
}

// ---- the kernel selftest's tests ----------------------------------------------------------------

for (const v of VARIANTS) {
  describe(`iommufd_ioas.${v.name}`, () => {
    it("dmabuf_simple", () => {
      const { h, ioas, hwpt } = ioasFixture(v);
      const size = 4n * P;
      const fd = getDmabuf(h, size);
      const buf = dmabufOf(h, fd);
      assert.equal(mapFile(h, ioas, fd, 0n, 0n).errno, EINVAL);
      assert.equal(mapFile(h, ioas, fd, size, size).errno, EINVAL);
      assert.equal(mapFile(h, ioas, fd, 0n, size + 1n).errno, EINVAL);
      const iova = mapFileOk(h, ioas, fd, 0n, size);
      if (v.mockDomains) assert.equal(checkDmabuf(h, hwpt, fd, iova, size, 0n), 0);
      assert.equal(closeSelftestFd(h.ctx, fd), 0);
      // The area keeps the buffer: closing the fd changes nothing.
      assert.equal(buf.importers.size, 1);
      teardown(h, [buf]);
    });

    it("dmabuf_multi_page", () => {
      const { h, ioas, hwpt } = ioasFixture(v);
      const bufs: SelftestDmabuf[] = [];
      const check = (fd: number, iova: bigint, length: bigint, offset: bigint) => {
        if (v.mockDomains) assert.equal(checkDmabuf(h, hwpt, fd, iova, length, offset), 0);
      };
      // Single page.
      let fd = getDmabuf(h, P);
      bufs.push(dmabufOf(h, fd));
      let iova = mapFileOk(h, ioas, fd, 0n, P);
      check(fd, iova, P, 0n);
      closeSelftestFd(h.ctx, fd);
      // Many pages: one physical range each.
      fd = getDmabuf(h, 64n * P);
      bufs.push(dmabufOf(h, fd));
      iova = mapFileOk(h, ioas, fd, 0n, 64n * P);
      check(fd, iova, 64n * P, 0n);
      closeSelftestFd(h.ctx, fd);
      // A slice from the middle: the reader seeks into the range list.
      fd = getDmabuf(h, 16n * P);
      bufs.push(dmabufOf(h, fd));
      iova = mapFileOk(h, ioas, fd, 4n * P, 8n * P);
      check(fd, iova, 8n * P, 4n * P);
      closeSelftestFd(h.ctx, fd);
      // Two slices of one buffer.
      fd = getDmabuf(h, 16n * P);
      bufs.push(dmabufOf(h, fd));
      iova = mapFileOk(h, ioas, fd, 0n, 4n * P);
      check(fd, iova, 4n * P, 0n);
      iova = mapFileOk(h, ioas, fd, 8n * P, 4n * P);
      check(fd, iova, 4n * P, 8n * P);
      assert.equal(bufs[3].importers.size, 2);
      closeSelftestFd(h.ctx, fd);
      teardown(h, bufs);
    });

    it("dmabuf_revoke", () => {
      const { h, ioas, hwpt, device } = ioasFixture(v);
      const size = 4n * P;
      const fd = getDmabuf(h, size);
      const buf = dmabufOf(h, fd);
      const iova = mapFileOk(h, ioas, fd, 0n, size);
      assert.equal(revoke(h, fd, true), 0);
      let hwpt2 = 0;
      if (v.mockDomains) {
        // The revoke took the mapping out of the domain.
        assert.equal(checkDmabuf(h, hwpt, fd, iova, size, 0n), EINVAL);
        // A new domain on the IOAS accepts the revoked area and maps nothing for it.
        hwpt2 = h.hwptAllocOk(device, ioas);
        assert.equal(checkDmabuf(h, hwpt2, fd, iova, size, 0n), EINVAL);
      }
      assert.equal(mapFile(h, ioas, fd, 0n, size).errno, ENODEV);
      assert.equal(revoke(h, fd, false), 0);
      const iova2 = mapFileOk(h, ioas, fd, 0n, size);
      if (v.mockDomains) {
        assert.equal(checkDmabuf(h, hwpt, fd, iova2, size, 0n), 0);
        assert.equal(checkDmabuf(h, hwpt2, fd, iova2, size, 0n), 0);
        // Un-revoking did not bring the old area back.
        assert.equal(checkDmabuf(h, hwpt, fd, iova, size, 0n), EINVAL);
      }
      // Restore the IOVA back.
      assert.equal(h.unmap(ioas, iova, size).errno, 0);
      mapFileOk(h, ioas, fd, 0n, size, { iova });
      if (v.mockDomains) assert.equal(checkDmabuf(h, hwpt, fd, iova, size, 0n), 0);
      assert.equal(closeSelftestFd(h.ctx, fd), 0);
      teardown(h, [buf]);
    });
  });
}

// ---- MAP_FILE -----------------------------------------------------------------------------------

describe("IOMMU_IOAS_MAP_FILE of a dma-buf", () => {
  it("checks length and overflow before looking at the fd, then the buffer's bounds", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const fd = getDmabuf(h, 4n * P);
    assert.equal(mapFile(h, ioas, 5000, 0n, 0n).errno, EINVAL);
    assert.equal(mapFile(h, ioas, 5000, 3n, U64_MAX - 1n).errno, EOVERFLOW);
    assert.equal(mapFile(h, ioas, 5000, 0n, P).errno, EBADF);
    assert.equal(mapFile(h, 99, fd, 0n, P).errno, ENOENT);
    // Ending exactly at the last byte is fine; one more byte is not.
    assert.equal(mapFile(h, ioas, fd, 3n * P, P).errno, 0);
    assert.equal(mapFile(h, ioas, fd, 3n * P, P + 1n).errno, EINVAL);
    assert.equal(mapFile(h, ioas, fd, 2048n, 4n * P - 2048n).errno, 0);
    assert.equal(mapFile(h, ioas, fd, 2048n, 4n * P - 2047n).errno, EINVAL);
    assert.equal(mapFile(h, ioas, fd, 4n * P, 1n).errno, EINVAL);
    assert.equal(h.ioas(ioas).iopt.areas.length, 2);
  });

  it("a revoked buffer is ENODEV and leaves nothing behind", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    h.mockDomain(ioas);
    const fd = getDmabuf(h, 2n * P);
    const buf = dmabufOf(h, fd);
    assert.equal(revoke(h, fd, true), 0);
    assert.equal(mapFile(h, ioas, fd, 0n, 2n * P).errno, ENODEV);
    assert.equal(h.ioas(ioas).iopt.areas.length, 0);
    assert.equal(buf.importers.size, 0);
  });

  it("the pages are DMABUF, accounting NONE, writable only for a WRITEABLE map", () => {
    const h = new SelftestHarness();
    const a = h.ioasAlloc();
    const b = h.ioasAlloc();
    const fd = getDmabuf(h, 2n * P);
    const ro = mapFileOk(h, a, fd, 0n, P, { flags: IOMMU_IOAS_MAP_READABLE });
    const pages = pagesAt(h, a, ro);
    assert.equal(pages.type, IoptAddress.DMABUF);
    assert.equal(pages.accountMode, 0);
    assert.equal(pages.writable, false);
    assert.equal(pages.dmabuf, dmabufOf(h, fd));
    // COPY shares the pages, so a writable copy of read-only pages is EPERM.
    assert.equal(h.copy(b, a, ro, P).errno, EPERM);
    assert.equal(h.copy(b, a, ro, P, { flags: IOMMU_IOAS_MAP_READABLE }).errno, 0);
    assert.equal(pagesAt(h, b, h.ioas(b).iopt.areas[0].iova), pages);
    assert.equal(pages.refs, 2);
  });

  it("auto IOVAs are aligned like the buffer offset (the source address is `start`)", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    h.mockDomain(ioas);
    const fd = getDmabuf(h, 64n * P);
    // 8 pages at offset 8 pages: alignment min(roundup(length), lowest bit of start) = 32 KiB.
    const iova = mapFileOk(h, ioas, fd, 8n * P, 8n * P);
    assert.equal(iova % (8n * P), 0n);
    // A sub-page start keeps its page offset in the IOVA.
    const sub = mapFileOk(h, ioas, fd, 20n * P + 2048n, 2n * P);
    assert.equal(sub % P, 2048n);
  });
});

// ---- MD_CHECK_DMABUF ----------------------------------------------------------------------------

describe("IOMMU_TEST_OP_MD_CHECK_DMABUF", () => {
  function fixture() {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const md = h.mockDomain(ioas);
    const fd = getDmabuf(h, 4n * P);
    const iova = mapFileOk(h, ioas, fd, 0n, 4n * P);
    return { h, ioas, md, fd, iova };
  }

  it("looks up the HWPT first, then the dma-buf", () => {
    const { h, ioas, md, fd, iova } = fixture();
    assert.equal(checkDmabuf(h, 999, 5000, iova, P, 0n), ENOENT);
    assert.equal(checkDmabuf(h, ioas, fd, iova, P, 0n), ENOENT);
    assert.equal(checkDmabuf(h, md.hwpt, 5000, iova, P, 0n), EBADF);
    assert.equal(checkDmabuf(h, md.hwpt, -1, iova, P, 0n), EBADF);
    const { fd: memfd } = h.proc.memfd(PAGE);
    assert.equal(checkDmabuf(h, md.hwpt, memfd, iova, P, 0n), EINVAL);
    const access = h.createAccess(ioas);
    assert.equal(checkDmabuf(h, md.hwpt, access, iova, P, 0n), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, P, 0n), 0);
  });

  it("iova, length and offset must be multiples of the domain's smallest page", () => {
    const { h, md, fd, iova } = fixture();
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova + 1024n, MOCK_PAGE, 1024n), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 1024n, 0n), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, MOCK_PAGE, 1024n), EINVAL);
    // 2 KiB steps are fine, inside a page too.
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova + MOCK_PAGE, MOCK_PAGE, MOCK_PAGE), 0);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova + MOCK_PAGE, 3n * MOCK_PAGE, MOCK_PAGE), 0);
  });

  it("offset + length must neither wrap nor pass the buffer's end", () => {
    const { h, md, fd, iova } = fixture();
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 4n * P, 0n), 0);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 4n * P + MOCK_PAGE, 0n), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, P, 3n * P + MOCK_PAGE), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, MOCK_PAGE, (1n << 64n) - MOCK_PAGE), EINVAL);
    // Nothing to compare is success.
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 0n, 4n * P), 0);
  });

  it("each step must translate to the buffer byte at the same offset", () => {
    const { h, md, fd, iova } = fixture();
    // One page off: the buffer's pages are not physically adjacent, so this cannot match.
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, P, P), EINVAL);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova + P, P, 0n), EINVAL);
    // Half a page off inside the page does not match either.
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, MOCK_PAGE, MOCK_PAGE), EINVAL);
    // An IOVA nothing maps translates to 0.
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova + 4n * P, P, 0n), EINVAL);
    // Another buffer's pages are not these.
    const other = getDmabuf(h, 4n * P);
    assert.equal(checkDmabuf(h, md.hwpt, other, iova, P, 0n), EINVAL);
  });

  it("a map starting half-way into a page lines up with that half page", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const md = h.mockDomain(ioas);
    const fd = getDmabuf(h, 4n * P);
    const iova = mapFileOk(h, ioas, fd, 2048n, 4n * P - 2048n);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 4n * P - 2048n, 2048n), 0);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, MOCK_PAGE, 0n), EINVAL);
  });

  it("random slices of random buffers check out, and one page off never does (fast-check)", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const md = h.mockDomain(ioas);
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 24 })
          .chain((npages) =>
            fc.tuple(
              fc.constant(npages),
              fc.integer({ min: 0, max: npages - 1 }),
              fc.integer({ min: 1, max: npages }),
              fc.boolean(),
            ),
          ),
        ([npages, first, count, half]) => {
          const n = Math.min(count, npages - first);
          const fd = getDmabuf(h, BigInt(npages) * P);
          const start = BigInt(first) * P + (half ? 2048n : 0n);
          const length = BigInt(n) * P - (half ? 2048n : 0n);
          const iova = mapFileOk(h, ioas, fd, start, length);
          assert.equal(checkDmabuf(h, md.hwpt, fd, iova, length, start), 0);
          if (start + P + length <= BigInt(npages) * P)
            assert.equal(checkDmabuf(h, md.hwpt, fd, iova, length, start + P), EINVAL);
          assert.equal(h.unmap(ioas, iova, length).errno, 0);
          assert.equal(dmabufOf(h, fd).importers.size, 0);
          closeSelftestFd(h.ctx, fd);
        },
      ),
      { numRuns: 60 },
    );
  });
});

// ---- no pins, no accounting, MMIO ---------------------------------------------------------------

describe("dma-buf pages are never pinned nor charged", () => {
  it("mapping into domains leaves pin counts and VmPin / locked_vm at zero", () => {
    // No CAP_IPC_LOCK and no RLIMIT_MEMLOCK room at all: any charge would be ENOMEM.
    const proc = new FakeProcess({ capIpcLock: false, memlockLimit: 0 });
    const h = new SelftestHarness(proc);
    const ioas = h.ioasAlloc();
    h.mockDomain(ioas);
    const fd = getDmabuf(h, 8n * P);
    const buf = dmabufOf(h, fd);
    const iova = mapFileOk(h, ioas, fd, 0n, 8n * P);
    const pages = pagesAt(h, ioas, iova);
    assert.deepEqual([pages.npinned, pages.lastNpinned, pages.heldCount], [0, 0, 0]);
    assert.ok(buf.pages.every((p) => p.pins === 0));
    assert.deepEqual([proc.accounting.pinnedPages, proc.accounting.lockedPages], [0, 0]);
    // A second domain, and a copy, change nothing either.
    const b = h.ioasAlloc();
    h.mockDomain(b);
    assert.equal(h.copy(b, ioas, iova, 8n * P).errno, 0);
    assert.ok(buf.pages.every((p) => p.pins === 0));
    assert.equal(proc.accounting.pinnedPages, 0);
    // The same mapping of user memory is refused by the limit.
    const va = proc.mmap(PAGE);
    assert.equal(h.map(ioas, va, P).errno, ENOMEM);
  });

  it("maps with IOMMU_MMIO in place of IOMMU_CACHE, keeping READ / WRITE", () => {
    class ProtDomain extends TestPagingDomain {
      readonly prots: number[] = [];
      override map(iova: bigint, pa: number, length: bigint, prot: number): void {
        this.prots.push(prot);
        super.map(iova, pa, length, prot);
      }
    }
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const d = new ProtDomain();
    h.ioas(ioas).iopt.addDomain(d);
    const fd = getDmabuf(h, 2n * P);
    const buf = dmabufOf(h, fd);
    mapFileOk(h, ioas, fd, 0n, 2n * P, { flags: IOMMU_IOAS_MAP_READABLE });
    mapFileOk(h, ioas, fd, 0n, 2n * P);
    // One call per page (they are not physically adjacent), two maps.
    assert.deepEqual(d.prots, [
      IOMMU_READ | IOMMU_MMIO,
      IOMMU_READ | IOMMU_MMIO,
      IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO,
      IOMMU_READ | IOMMU_WRITE | IOMMU_MMIO,
    ]);
    // Each page's physical address is the buffer's page at that offset.
    const first = h.ioas(ioas).iopt.areas[0].iova;
    assert.equal(d.iovaToPhys(first), buf.pages[0].pfn * PAGE);
    assert.equal(d.iovaToPhys(first + P + 8n), buf.pages[1].pfn * PAGE + 8);
    // User memory still maps cached.
    d.prots.length = 0;
    h.mapOk(ioas, h.proc.mmap(PAGE), P);
    assert.equal(d.prots[0], IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
  });

  it("with large pages disabled each page still maps to its own physical page", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    h.ioas(ioas).iopt.setLargePagesDisabled();
    const md = h.mockDomain(ioas);
    const fd = getDmabuf(h, 8n * P);
    const iova = mapFileOk(h, ioas, fd, P, 6n * P);
    assert.equal(checkDmabuf(h, md.hwpt, fd, iova, 6n * P, P), 0);
  });
});

// ---- revoke -------------------------------------------------------------------------------------

describe("revoking a mapped dma-buf", () => {
  /** IOAS A with two separate domains, IOAS B with one; the buffer mapped in A and copied to B. */
  function fixture() {
    const h = new SelftestHarness();
    const a = h.ioasAlloc();
    const b = h.ioasAlloc();
    const da = [new TestPagingDomain(), new TestPagingDomain()];
    const db = new TestPagingDomain();
    for (const d of da) h.ioas(a).iopt.addDomain(d);
    h.ioas(b).iopt.addDomain(db);
    const fd = getDmabuf(h, 4n * P);
    const buf = dmabufOf(h, fd);
    const iova = mapFileOk(h, a, fd, 0n, 4n * P);
    const r = h.copy(b, a, iova, 4n * P);
    assert.equal(r.errno, 0);
    const iovaB = r.out.dst_iova;
    const pages = pagesAt(h, a, iova);
    return { h, a, b, da, db, fd, buf, iova, iovaB, pages };
  }

  it("unmaps every tracked (area, domain) mapping and keeps the areas", () => {
    const { h, a, b, da, db, fd, buf, iova, iovaB, pages } = fixture();
    assert.equal(pages.dmabufTracked.length, 3);
    for (const d of da) assert.equal(d.iovaToPhys(iova + P), buf.pages[1].pfn * PAGE);
    assert.equal(db.iovaToPhys(iovaB), buf.pages[0].pfn * PAGE);
    assert.equal(revoke(h, fd, true), 0);
    assert.equal(pages.dmabufRevoked, true);
    for (const d of [...da, db]) assert.deepEqual(d.mapped(), []);
    assert.equal(pages.dmabufTracked.length, 3);
    assert.equal(h.ioas(a).iopt.areas.length, 1);
    // A second notification finds nothing to do.
    const calls = da[0].unmapCalls;
    assert.equal(revoke(h, fd, true), 0);
    assert.equal(da[0].unmapCalls, calls);
    // Unmapping still works (and no longer touches the domains).
    assert.equal(h.unmap(a, iova, 4n * P).out.length, 4n * P);
    assert.equal(da[0].unmapCalls, calls);
    assert.equal(pages.dmabufTracked.length, 1);
    assert.equal(h.unmap(b, iovaB, 4n * P).errno, 0);
    assert.equal(pages.dmabufTracked.length, 0);
    assert.equal(buf.importers.size, 0);
  });

  it("domains added or removed after a revoke map and unmap nothing", () => {
    const { h, a, da, fd, iova, pages } = fixture();
    assert.equal(revoke(h, fd, true), 0);
    const late = new TestPagingDomain();
    h.ioas(a).iopt.addDomain(late);
    assert.equal(late.mapCalls, 0);
    assert.equal(pages.dmabufTracked.length, 4);
    h.ioas(a).iopt.removeDomain(late);
    assert.equal(late.unmapCalls, 0);
    assert.equal(pages.dmabufTracked.length, 3);
    // Removing every domain of A leaves the area without storage, untracked in A.
    for (const d of da) h.ioas(a).iopt.removeDomain(d);
    assert.equal(h.ioas(a).iopt.areaIterFirst(iova, iova)?.storageDomain, null);
    assert.equal(pages.dmabufTracked.length, 1);
    assert.equal(h.unmap(a, iova, 4n * P).errno, 0);
  });

  it("any notification revokes, even an un-revoke of a buffer that was never revoked", () => {
    const { h, da, fd, iova, pages } = fixture();
    assert.equal(revoke(h, fd, false), 0);
    assert.equal(pages.dmabufRevoked, true);
    assert.deepEqual(da[0].mapped(), []);
    // The exporter is not revoked, so new maps work and are mapped.
    assert.equal(dmabufOf(h, fd).revoked, false);
    const again = mapFileOk(h, 1, fd, 0n, 4n * P);
    assert.notEqual(again, iova);
    assert.equal(pagesAt(h, 1, again).dmabufRevoked, false);
    assert.equal(da[0].iovaToPhys(again), dmabufOf(h, fd).pages[0].pfn * PAGE);
  });

  it("domain removal before a revoke unmaps and untracks that domain only", () => {
    const { h, a, da, fd, iova, pages } = fixture();
    h.ioas(a).iopt.removeDomain(da[0]);
    assert.deepEqual(da[0].mapped(), []);
    assert.equal(pages.dmabufTracked.length, 2);
    assert.equal(h.ioas(a).iopt.areaIterFirst(iova, iova)?.storageDomain, da[1]);
    assert.equal(revoke(h, fd, true), 0);
    assert.deepEqual(da[1].mapped(), []);
    h.ioas(a).iopt.removeDomain(da[1]);
    assert.equal(pages.dmabufTracked.length, 1);
  });
});

// ---- what cannot be done with a dma-buf area ----------------------------------------------------

describe("dma-buf areas refuse", () => {
  it("in-kernel access rw (EINVAL, after the protection check) and pins (EINVAL)", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const fd = getDmabuf(h, 2n * P);
    const iova = mapFileOk(h, ioas, fd, 0n, 2n * P);
    const ro = mapFileOk(h, ioas, fd, 0n, P, { flags: IOMMU_IOAS_MAP_READABLE });
    const rwAccess = h.createAccess(ioas);
    const uptr = h.proc.mmap(PAGE);
    const rw = (at: bigint, flags: number) =>
      h.test(OP.ACCESS_RW, rwAccess, { iova: at, length: 16n, uptr, flags }).errno;
    assert.equal(rw(iova, 0), EINVAL);
    assert.equal(rw(iova, 1), EINVAL);
    // Writing through a read-only area is EPERM first.
    assert.equal(rw(ro, 1), EPERM);
    const pinAccess = h.createAccess(ioas, 1);
    assert.equal(h.accessPages(pinAccess, iova, P, 0n).errno, EINVAL);
    assert.equal(h.accessPages(pinAccess, ro, P, 0n, 1).errno, EPERM);
    const area = h.ioas(ioas).iopt.areaIterFirst(iova, iova);
    assert.equal(area?.numAccesses, 0);
    // A user-VA area next to it still pins.
    const va = h.proc.mmap(PAGE);
    const userIova = h.mapOk(ioas, va, P);
    assert.equal(h.accessPages(pinAccess, userIova, P, va).errno, 0);
  });

  it("VFIO type1 splits (EOPNOTSUPP, nothing written back) but unmaps whole", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    assert.equal(
      h.call(IOMMU_VFIO_IOAS, IOMMU_VFIO_IOAS_LAYOUT, { ioas_id: ioas, op: IOMMU_VFIO_IOAS_SET })
        .errno,
      0,
    );
    assert.equal(h.ctx.ioctl(VFIO_SET_IOMMU, 1n, h.proc).errno, 0); // VFIO_TYPE1_IOMMU
    assert.equal(h.ioas(ioas).iopt.disableLargePages, true);
    const fd = getDmabuf(h, 4n * P);
    const iova = 1n << 20n;
    mapFileOk(h, ioas, fd, 0n, 4n * P, { iova, flags: RW | FIXED });
    const unmapDma = (at: bigint, size: bigint) => {
      const where = h.proc.mmap(PAGE);
      const b = new Uint8Array(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT.size);
      encode(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT, { argsz: 24, flags: 0, iova: at, size }, b);
      h.proc.write(where, b);
      const errno = h.ctx.ioctl(VFIO_IOMMU_UNMAP_DMA, where, h.proc).errno;
      const back = new Uint8Array(b.length);
      h.proc.read(where, back);
      return { errno, size: new DataView(back.buffer).getBigUint64(16, true) };
    };
    const part = unmapDma(iova, P);
    assert.equal(part.errno, EOPNOTSUPP);
    assert.equal(part.size, P); // untouched
    assert.throws(
      () => h.ioas(ioas).iopt.cutIova([iova + 2n * P - 1n]),
      (e: { errno: number }) => e.errno === EOPNOTSUPP,
    );
    // A cut at the area's edge needs no split; a user-VA area splits fine.
    h.ioas(ioas).iopt.cutIova([iova + 4n * P - 1n]);
    const va = h.proc.mmap(2 * PAGE);
    h.mapOk(ioas, va, 2n * P, 1n << 24n);
    h.ioas(ioas).iopt.cutIova([(1n << 24n) + P - 1n]);
    assert.equal(h.ioas(ioas).iopt.areas.length, 3);
    const whole = unmapDma(iova, 4n * P);
    assert.deepEqual(whole, { errno: 0, size: 4n * P });
  });

  it("IOMMU_IOAS_CHANGE_PROCESS (EINVAL while a dma-buf area exists)", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const { fd: memfd } = h.proc.memfd(PAGE);
    assert.equal(h.mapFile(ioas, memfd, 0n, P).errno, 0);
    const change = () =>
      h.call(IOMMU_IOAS_CHANGE_PROCESS, IOMMU_IOAS_CHANGE_PROCESS_LAYOUT, {}).errno;
    assert.equal(change(), 0);
    const fd = getDmabuf(h, P);
    const iova = mapFileOk(h, ioas, fd, 0n, P);
    assert.equal(change(), EINVAL);
    assert.equal(h.unmap(ioas, iova, P).errno, 0);
    assert.equal(change(), 0);
  });
});

// ---- fail-nth -----------------------------------------------------------------------------------

describe("fail-nth unwinding", () => {
  it("MAP_FILE of a dma-buf into two domains: every failure leaves nothing", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const domains = [new TestPagingDomain(), new TestPagingDomain()];
    for (const d of domains) h.ioas(ioas).iopt.addDomain(d);
    const fd = getDmabuf(h, 4n * P);
    const buf = dmabufOf(h, fd);
    const faults = h.ctx.faults;
    let fired = 0;
    for (let nth = 1; nth < 100; nth++) {
      faults.arm(nth);
      faults.trace = [];
      const r = mapFile(h, ioas, fd, 2048n, 3n * P);
      const trace = faults.trace;
      faults.trace = undefined;
      if (faults.pending !== 0) {
        faults.arm(0);
        assert.equal(r.errno, 0);
        // Every site of the import was reached on the way.
        for (const site of [
          "iopt_alloc_pages",
          "dma_buf_attach",
          "selftest_dmabuf_phys_list",
          "iopt_area_alloc",
          "iopt_dmabuf_track_alloc",
          "pfn_batch_alloc",
        ])
          assert.ok(trace.includes(site), `${site} not reached`);
        assert.equal(fired, nth - 1);
        assert.equal(pagesAt(h, ioas, r.iova).dmabufTracked.length, 2);
        return;
      }
      fired++;
      assert.notEqual(r.errno, 0, `nth ${nth}`);
      assert.equal(h.ioas(ioas).iopt.areas.length, 0, `nth ${nth}: area left`);
      assert.equal(buf.importers.size, 0, `nth ${nth}: still attached`);
      for (const d of domains) assert.deepEqual(d.mapped(), [], `nth ${nth}: left mapped`);
    }
    assert.fail("MAP_FILE never succeeded");
  });

  it("a new mock domain over a dma-buf area: every failure leaves the area as it was", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const fd = getDmabuf(h, 4n * P);
    // Inside the mock aperture, which the domain reserves around.
    const iova = mapFileOk(h, ioas, fd, 0n, 4n * P, { iova: 1n << 24n });
    const pages = pagesAt(h, ioas, iova);
    const faults = h.ctx.faults;
    for (let nth = 1; nth < 200; nth++) {
      faults.arm(nth);
      faults.trace = [];
      const r = h.test(OP.MOCK_DOMAIN, ioas);
      const trace = faults.trace;
      faults.trace = undefined;
      if (faults.pending !== 0) {
        faults.arm(0);
        assert.equal(r.errno, 0);
        assert.ok(trace.includes("iopt_dmabuf_track_alloc"));
        assert.ok(trace.includes("pfn_batch_alloc"));
        assert.equal(pages.dmabufTracked.length, 1);
        const hwpt = Number(r.out.out_hwpt_id);
        assert.equal(checkDmabuf(h, hwpt, fd, iova, 4n * P, 0n), 0);
        return;
      }
      assert.equal(faults.pending, 0, `nth ${nth}: failed without an injection`);
      assert.notEqual(r.errno, 0, `nth ${nth}`);
      assert.equal(pages.dmabufTracked.length, 0, `nth ${nth}: still tracked`);
      assert.equal(h.ioas(ioas).iopt.domains.length, 0, `nth ${nth}: domain left`);
      assert.equal(h.ioas(ioas).iopt.areaIterFirst(iova, iova)?.storageDomain, null);
    }
    assert.fail("MOCK_DOMAIN never succeeded");
  });
});

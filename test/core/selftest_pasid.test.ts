/**
 * The selftest's PASID ops and its dma-buf exporter (spec mock-driver-failnth.md §2.17-§2.19):
 * PASID_ATTACH / REPLACE / DETACH / CHECK_HWPT with the PASID-1024 quirk, following
 * iommufd_device_pasid.pasid_attach; DMABUF_GET's fd return value and DMABUF_REVOKE (the
 * newest, multi-page exporter; importing into an IOAS is in selftest_dmabuf.test.ts).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type FailNth, NO_FAULTS } from "../../src/core/fail_nth.ts";
import {
  closeSelftestFd,
  SELFTEST_FD_BASE,
  SelftestDmabuf,
  selftestFile,
  selftestOpenFds,
} from "../../src/core/selftest.ts";
import {
  EBADF,
  EBUSY,
  EFAULT,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  type ErrnoError,
} from "../../src/errno.ts";
import {
  IOMMU_TEST_CMD,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
} from "../../src/uapi/index.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const ALLOC_PASID = 1 << 3;
const NEST_PARENT = 1;

/**
 * A PASID-capable mock device whose RID sits on a PASID-compatible HWPT (auto HWPTs are not,
 * and a RID on one blocks every PASID attach), as the fail-nth `device` sequence arranges.
 */
function setup() {
  const h = new SelftestHarness();
  const ioas = h.ioasAlloc();
  const md = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
  const rid = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
  assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: rid }).errno, 0);
  return { h, ioas, md: { ...md, hwpt: rid } };
}

const attach = (h: SelftestHarness, stdev: number, pasid: number, ptId: number) =>
  h.test(OP.PASID_ATTACH, stdev, { pasid, pt_id: ptId });
const replace = (h: SelftestHarness, stdev: number, pasid: number, ptId: number) =>
  h.test(OP.PASID_REPLACE, stdev, { pasid, pt_id: ptId });
const detach = (h: SelftestHarness, stdev: number, pasid: number) =>
  h.test(OP.PASID_DETACH, stdev, { pasid }).errno;
const check = (h: SelftestHarness, stdev: number, pasid: number, hwptId: number) =>
  h.test(OP.PASID_CHECK_HWPT, stdev, { pasid, hwpt_id: hwptId }).errno;

describe("IOMMU_TEST_OP_PASID_ATTACH", () => {
  it("looks up the stdev, then the pt; IOAS and non-PASID HWPTs are EINVAL", () => {
    const { h, ioas, md } = setup();
    const plain = h.hwptAllocOk(md.idev, ioas);
    assert.equal(attach(h, md.idev, 100, plain).errno, ENOENT);
    assert.equal(attach(h, md.stdev, 100, 99).errno, ENOENT);
    const before = h.ctx.table.size;
    assert.equal(attach(h, md.stdev, 100, ioas).errno, EINVAL);
    assert.equal(h.ctx.table.size, before); // the auto HWPT tried for it is gone again
    assert.equal(attach(h, md.stdev, 100, plain).errno, EINVAL);
    assert.equal(check(h, md.stdev, 100, 0), 0);
  });

  it("attaches, reports the HWPT id, and refuses a second attach (EBUSY)", () => {
    const { h, ioas, md } = setup();
    const a = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    const b = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    const r = attach(h, md.stdev, 100, a);
    assert.equal(r.errno, 0);
    assert.equal(r.out.pt_id, a);
    assert.equal(check(h, md.stdev, 100, a), 0);
    assert.equal(check(h, md.stdev, 100, b), EINVAL);
    assert.equal(check(h, md.stdev, 100, 0), EINVAL);
    assert.equal(attach(h, md.stdev, 100, b).errno, EBUSY);
    assert.equal(attach(h, md.stdev, 100, a).errno, EBUSY);
    assert.equal(h.destroy(a), EBUSY);
    assert.equal(detach(h, md.stdev, 100), 0);
    assert.equal(check(h, md.stdev, 100, 0), 0);
    assert.equal(h.destroy(a), 0);
  });

  it("a device without PASID support refuses every PASID (max_pasids 1)", () => {
    const { h, ioas } = setup();
    const plainDev = h.mockDomain(ioas);
    const a = h.hwptAllocOk(plainDev.idev, ioas, ALLOC_PASID);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, plainDev.stdev, { pt_id: a }).errno, 0);
    assert.equal(attach(h, plainDev.stdev, 1, a).errno, EINVAL);
  });

  it("a RID on a HWPT without PASID support blocks PASID attach (EINVAL)", () => {
    const { h, ioas, md } = setup();
    const a = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: ioas }).errno, 0);
    assert.equal(attach(h, md.stdev, 100, a).errno, EINVAL);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: md.hwpt }).errno, 0);
    assert.equal(attach(h, md.stdev, 100, a).errno, 0);
    // Now the RID cannot move to a HWPT without PASID support.
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: ioas }).errno, EINVAL);
    assert.equal(detach(h, md.stdev, 100), 0);
  });

  it("a faulting write-back detaches the PASID again", () => {
    const { h, ioas, md } = setup();
    const a = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    const at = h.proc.mmap(PAGE);
    h.test(OP.PASID_ATTACH, md.stdev, { pasid: 100, pt_id: a }, { at });
    assert.equal(detach(h, md.stdev, 100), 0);
    const pages = h.proc.pages(at, 1, false);
    assert.ok(typeof pages !== "number");
    const ro = h.proc.mmap(PAGE, { pages, writable: false });
    assert.equal(h.ctx.ioctl(IOMMU_TEST_CMD, ro, h.proc).errno, EFAULT);
    assert.equal(check(h, md.stdev, 100, 0), 0);
    assert.equal(h.destroy(a), 0);
  });
});

describe("PASIDs on dirty-tracking HWPTs", () => {
  const DIRTY = 1 << 1;
  it("dirty tracking toggles with a PASID attached; a NO_DIRTY device cannot attach (EINVAL)", () => {
    const { h, ioas, md } = setup();
    const hwpt = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID | DIRTY);
    const dev = h.mockDomain(hwpt, MOCK_FLAGS_DEVICE_PASID);
    assert.equal(attach(h, dev.stdev, 100, hwpt).errno, 0);
    assert.equal(h.setDirtyTracking(hwpt, true), 0);
    assert.equal(h.setDirtyTracking(hwpt, false), 0);
    assert.equal(detach(h, dev.stdev, 100), 0);
    assert.equal(h.destroy(dev.stdev), 0);
    // A device whose IOMMU has no dirty tracking cannot use a dirty-tracking domain.
    const other = h.ioasAlloc();
    const noDirty = h.mockDomain(other, MOCK_FLAGS_DEVICE_PASID | MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(attach(h, noDirty.stdev, 100, hwpt).errno, EINVAL);
    assert.equal(check(h, noDirty.stdev, 100, 0), 0);
    assert.equal(h.destroy(noDirty.stdev), 0);
    assert.equal(h.destroy(hwpt), 0);
  });
});

describe("IOMMU_TEST_OP_PASID_REPLACE / DETACH / CHECK_HWPT", () => {
  it("replace needs an attached PASID; the same HWPT is a no-op", () => {
    const { h, ioas, md } = setup();
    const a = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    const b = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    assert.equal(replace(h, md.stdev, 200, a).errno, EINVAL);
    assert.equal(attach(h, md.stdev, 200, a).errno, 0);
    assert.equal(replace(h, md.stdev, 200, a).errno, 0);
    const r = replace(h, md.stdev, 200, b);
    assert.equal(r.errno, 0);
    assert.equal(r.out.pt_id, b);
    assert.equal(check(h, md.stdev, 200, b), 0);
    assert.equal(h.destroy(a), 0);
    assert.equal(replace(h, md.stdev, 200, h.ioasAlloc()).errno, EINVAL);
  });

  it("PASID 1024: attach arms the fake error, replace fails once (ENOMEM) keeping the old", () => {
    const { h, ioas, md } = setup();
    const a = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    const b = h.hwptAllocOk(md.idev, ioas, ALLOC_PASID);
    assert.equal(attach(h, md.stdev, 1024, a).errno, 0);
    assert.equal(replace(h, md.stdev, 1024, b).errno, ENOMEM);
    assert.equal(check(h, md.stdev, 1024, a), 0);
    // A second replace succeeds (and arms the error again); detach disarms it.
    assert.equal(replace(h, md.stdev, 1024, b).errno, 0);
    assert.equal(check(h, md.stdev, 1024, b), 0);
    assert.equal(detach(h, md.stdev, 1024), 0);
    assert.equal(attach(h, md.stdev, 1024, a).errno, 0);
    assert.equal(detach(h, md.stdev, 1024), 0);
  });

  it("detach of a PASID that is not attached succeeds; a bad stdev is ENOENT", () => {
    const { h, md } = setup();
    assert.equal(detach(h, md.stdev, 300), 0);
    assert.equal(detach(h, md.idev, 300), ENOENT);
  });

  it("CHECK_HWPT: ENOENT for a missing id, EINVAL for a non-HWPT, matches the RID domain", () => {
    const { h, ioas, md } = setup();
    assert.equal(check(h, md.stdev, 0, md.hwpt), 0);
    assert.equal(check(h, md.stdev, 0, 0), EINVAL);
    assert.equal(check(h, md.stdev, 5, 99), ENOENT);
    assert.equal(check(h, md.stdev, 5, ioas), EINVAL);
    assert.equal(check(h, md.stdev, 5, md.hwpt), EINVAL);
    assert.equal(check(h, 99, 5, 0), ENOENT);
  });

  it("a nest parent with PASID serves PASIDs; manual HWPTs outlive the stdev", () => {
    const { h, ioas, md } = setup();
    const parent = h.hwptAllocOk(md.idev, ioas, NEST_PARENT | ALLOC_PASID);
    assert.equal(attach(h, md.stdev, 7, parent).errno, 0);
    assert.equal(h.destroy(parent), EBUSY);
    assert.equal(detach(h, md.stdev, 7), 0);
    assert.equal(h.destroy(md.hwpt), EBUSY); // the RID still uses it
    assert.equal(h.destroy(md.stdev), 0);
    assert.equal(h.destroy(parent), 0);
    assert.equal(h.destroy(md.hwpt), 0);
    assert.equal(h.destroy(ioas), 0);
  });
});

describe("IOMMU_TEST_OP_DMABUF_GET", () => {
  it("wants whole pages, 1 to 512 of them; the fd is the return value", () => {
    const h = new SelftestHarness();
    const get = (length: number) => h.test(OP.DMABUF_GET, 0, { length, open_flags: 0o2000000 });
    assert.equal(get(0).errno, EINVAL);
    // The newest exporter no longer rounds up: a partial page is refused.
    assert.equal(get(1).errno, EINVAL);
    assert.equal(get(PAGE + 1).errno, EINVAL);
    assert.equal(get(513 * PAGE).errno, EINVAL);
    const one = get(PAGE);
    assert.equal(one.errno, 0);
    assert.equal(one.value, SELFTEST_FD_BASE);
    const buf = selftestFile(h.ctx, one.value);
    assert.ok(buf instanceof SelftestDmabuf);
    assert.equal(buf.length, PAGE);
    assert.equal(buf.openFlags, 0o2000000);
    const big = get(512 * PAGE);
    assert.equal(big.value, SELFTEST_FD_BASE + 1);
    const bigBuf = selftestFile(h.ctx, big.value) as SelftestDmabuf;
    assert.equal(bigBuf.pages.length, 512);
    // Separately allocated pages: distinct, and no two neighbours physically adjacent.
    assert.equal(new Set(bigBuf.pages.map((p) => p.pfn)).size, 512);
    for (let i = 1; i < 512; i++)
      assert.notEqual(bigBuf.pages[i].pfn, bigBuf.pages[i - 1].pfn + 1, `page ${i}`);
    // Nothing is written back to the struct.
    assert.equal(big.out.length, 512 * PAGE);
  });

  it("fail-nth: the record, every page and the export are injection sites", () => {
    const h = new SelftestHarness();
    const faults = h.ctx.faults as FailNth;
    for (let nth = 1; ; nth++) {
      faults.arm(nth);
      const r = h.test(OP.DMABUF_GET, 0, { length: 3 * PAGE, open_flags: 0 });
      if (faults.pending === 0) {
        assert.equal(r.errno, ENOMEM, `nth ${nth}`);
        assert.equal(selftestOpenFds(h.ctx).length, 0);
        continue;
      }
      faults.arm(0);
      assert.equal(r.errno, 0);
      // priv, three pages, the export; then success.
      assert.equal(nth, 6);
      break;
    }
  });
});

describe("IOMMU_TEST_OP_DMABUF_REVOKE", () => {
  it("EBADF for what is not open, EINVAL for an open file that is not a dma-buf", () => {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    const revoke = (fd: number) => h.test(OP.DMABUF_REVOKE, 0, { dmabuf_fd: fd, revoked: 1 }).errno;
    assert.equal(revoke(5000), EBADF);
    assert.equal(revoke(-1), EBADF);
    const access = h.createAccess(ioas);
    assert.equal(revoke(access), EINVAL);
    const { fd: memfd } = h.proc.memfd(PAGE);
    assert.equal(revoke(memfd), EINVAL);
  });

  it("sets the revoked state (idempotently) and notifies importers every time", () => {
    const h = new SelftestHarness();
    const fd = h.test(OP.DMABUF_GET, 0, { length: 2 * PAGE, open_flags: 0 }).value;
    const buf = selftestFile(h.ctx, fd) as SelftestDmabuf;
    const seen: boolean[] = [];
    buf.importers.add(() => seen.push(buf.revoked));
    assert.deepEqual(buf.mapPhys(NO_FAULTS), [
      { paddr: buf.pages[0].pfn * PAGE, len: PAGE },
      { paddr: buf.pages[1].pfn * PAGE, len: PAGE },
    ]);
    const revoke = (revoked: number) =>
      h.test(OP.DMABUF_REVOKE, 0, { dmabuf_fd: fd, revoked }).errno;
    assert.equal(revoke(7), 0);
    assert.equal(buf.revoked, true);
    assert.throws(
      () => buf.mapPhys(NO_FAULTS),
      (e: ErrnoError) => e.errno === ENODEV,
    );
    assert.equal(revoke(1), 0);
    assert.equal(revoke(0), 0);
    assert.equal(buf.revoked, false);
    assert.deepEqual(seen, [true, true, false]);
    assert.equal(closeSelftestFd(h.ctx, fd), 0);
    assert.equal(revoke(1), EBADF);
  });
});

/**
 * IOMMU_OPTION (RLIMIT_MODE, HUGE_PAGES; core-objects-vfio.md §6) and
 * IOMMU_IOAS_CHANGE_PROCESS (ioas-pages.md §8.8), through the codec.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AccountMode } from "../../src/core/context.ts";
import { contiguousPages, FakeProcess } from "../../src/core/user_mm.ts";
import {
  EADDRINUSE,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOENT,
  ENOMEM,
  EOPNOTSUPP,
  EPERM,
} from "../../src/errno.ts";
import {
  encode,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_LAYOUT,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
} from "../../src/uapi/index.ts";
import { Harness, PAGE } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const START = 1n << 24n;

function option(
  h: Harness,
  optionId: number,
  op: number,
  objectId: number,
  val64: bigint,
  extra: { __reserved?: number; proc?: FakeProcess } = {},
) {
  const call = extra.proc === undefined ? {} : { proc: extra.proc, at: extra.proc.mmap(PAGE) };
  return h.call(
    IOMMU_OPTION,
    IOMMU_OPTION_LAYOUT,
    { option_id: optionId, op, object_id: objectId, val64, __reserved: extra.__reserved ?? 0 },
    call,
  );
}

describe("IOMMU_OPTION", () => {
  it("global_options: RLIMIT_MODE on an empty context; HUGE_PAGES with id 0 is ENOENT", () => {
    const h = new Harness();
    let r = option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, 0, 1n);
    assert.equal(r.errno, 0);
    assert.equal(r.out.val64, 0n);
    assert.equal(option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, 1n).errno, 0);
    assert.equal(option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, 2n).errno, EINVAL);
    r = option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, 0, 0n);
    assert.equal(r.out.val64, 1n);
    assert.equal(h.ctx.accountMode, AccountMode.MM);
    assert.equal(option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, 0n).errno, 0);
    assert.equal(h.ctx.accountMode, AccountMode.USER);
    assert.equal(option(h, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, 0, 0n).errno, ENOENT);
    assert.equal(option(h, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, 0, 0n).errno, ENOENT);
  });

  it("checks __reserved, the option id, object_id, the op, CAP_SYS_RESOURCE and emptiness", () => {
    const h = new Harness();
    const opt = IOMMU_OPTION_RLIMIT_MODE;
    assert.equal(option(h, opt, IOMMU_OPTION_OP_GET, 0, 0n, { __reserved: 1 }).errno, EOPNOTSUPP);
    assert.equal(option(h, 7, IOMMU_OPTION_OP_GET, 0, 0n).errno, EOPNOTSUPP);
    assert.equal(option(h, opt, IOMMU_OPTION_OP_GET, 1, 0n).errno, EOPNOTSUPP);
    assert.equal(option(h, opt, 9, 0, 0n).errno, EOPNOTSUPP);
    const unprivileged = new FakeProcess({ capSysResource: false });
    assert.equal(option(h, opt, IOMMU_OPTION_OP_SET, 0, 1n, { proc: unprivileged }).errno, EPERM);
    h.ioasAlloc();
    assert.equal(option(h, opt, IOMMU_OPTION_OP_SET, 0, 1n).errno, EBUSY);
    assert.equal(h.ctx.accountMode, AccountMode.NONE);
  });

  it("ioas_option_huge_pages: GET 1, SET 0 (no areas, even with a domain), SET 2 EINVAL", () => {
    for (const domain of [false, true]) {
      const h = new Harness();
      const id = h.ioasAlloc();
      if (domain) h.ioas(id).iopt.addDomain(new TestPagingDomain());
      const hp = IOMMU_OPTION_HUGE_PAGES;
      assert.equal(option(h, hp, IOMMU_OPTION_OP_GET, id, 0n).out.val64, 1n);
      assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 0n).errno, 0);
      assert.equal(option(h, hp, IOMMU_OPTION_OP_GET, id, 1n).out.val64, 0n);
      assert.equal(h.ioas(id).iopt.iovaAlignment, PAGE);
      assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 2n).errno, EINVAL);
      assert.equal(option(h, hp, 7, id, 0n).errno, EOPNOTSUPP);
      assert.equal(option(h, hp, 7, 99, 0n).errno, ENOENT); // lookup before the op
      assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 1n).errno, 0);
      assert.equal(h.ioas(id).iopt.iovaAlignment, domain ? 2048 : 1);
    }
  });

  it("HUGE_PAGES = 0 is EINVAL once a domain holds an area", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    h.ioas(id).iopt.addDomain(new TestPagingDomain());
    h.mapOk(id, h.proc.mmap(PAGE), P);
    assert.equal(option(h, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, id, 0n).errno, EINVAL);
    assert.equal(h.ioas(id).iopt.disableLargePages, false);
  });

  it("ioas_align_change: page_offset against the PAGE alignment, EADDRINUSE keeps it enabled", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const hp = IOMMU_OPTION_HUGE_PAGES;
    const buf = h.proc.mmap(4 * PAGE);
    h.mapOk(id, buf, P, START);
    assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 0n).errno, 0);
    assert.equal(h.map(id, buf + 2048n, P, { iova: START + P }).errno, EINVAL);
    assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 0n).errno, 0);
    assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 1n).errno, 0);
    assert.equal(h.map(id, buf + 2048n, P, { iova: START + P }).errno, 0);
    assert.equal(option(h, hp, IOMMU_OPTION_OP_SET, id, 0n).errno, EADDRINUSE);
    assert.equal(option(h, hp, IOMMU_OPTION_OP_GET, id, 0n).out.val64, 1n);
    assert.equal(h.unmap(id, START, P).errno, 0);
    assert.equal(h.unmap(id, START + P, P).errno, 0);
  });

  it("with large pages disabled a domain is filled one smallest page per map call", () => {
    for (const disabled of [false, true]) {
      const h = new Harness();
      const id = h.ioasAlloc();
      const d = new TestPagingDomain();
      h.ioas(id).iopt.addDomain(d);
      if (disabled) option(h, IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, id, 0n);
      const va = h.proc.mmap(8 * PAGE); // contiguous PFNs
      h.mapOk(id, va, 8n * P);
      const smallest = Number(d.pgsizeBitmap & -d.pgsizeBitmap);
      assert.equal(d.mapCalls, disabled ? (8 * PAGE) / smallest : 1);
    }
  });

  it("writes back only val64; a SET whose write-back faults has still happened (EFAULT)", () => {
    const h = new Harness();
    const id = h.ioasAlloc();
    const [page] = contiguousPages(1);
    const struct = new Uint8Array(24);
    encode(
      IOMMU_OPTION_LAYOUT,
      { size: 24, option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: id },
      struct,
    );
    page.write(0, struct);
    const ro = h.proc.mmap(PAGE, { writable: false, pages: [page] });
    assert.equal(h.ctx.ioctl(IOMMU_OPTION, ro, h.proc).errno, EFAULT);
    assert.equal(h.ioas(id).iopt.disableLargePages, true);
  });
});

describe("IOMMU_IOAS_CHANGE_PROCESS", () => {
  function fixture(mode: "user" | "mm") {
    const parent = new FakeProcess({ capIpcLock: false });
    const h = new Harness(parent);
    assert.equal(
      option(h, IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, mode === "mm" ? 1n : 0n).errno,
      0,
    );
    const id = h.ioasAlloc();
    h.ioas(id).iopt.addDomain(new TestPagingDomain());
    return { h, parent, id };
  }
  const change = (h: Harness, proc: FakeProcess, reserved = 0) =>
    h.call(
      IOMMU_IOAS_CHANGE_PROCESS,
      IOMMU_IOAS_CHANGE_PROCESS_LAYOUT,
      { __reserved: reserved },
      { proc, at: proc.mmap(PAGE) },
    ).errno;

  it("checks __reserved; succeeds with no areas", () => {
    const { h, parent } = fixture("user");
    assert.equal(change(h, parent, 1), EOPNOTSUPP);
    assert.equal(change(h, parent), 0);
  });

  it("refuses user-VA maps (EINVAL, nothing changes)", () => {
    const { h, parent, id } = fixture("mm");
    h.mapOk(id, parent.mmap(PAGE), P);
    const { fd } = parent.memfd(PAGE);
    assert.equal(h.mapFile(id, fd, 0n, P).errno, 0);
    const child = parent.fork();
    assert.equal(change(h, child), EINVAL);
    assert.equal(parent.accounting.pinnedPages, 2);
    assert.equal(child.accounting.pinnedPages, 0);
  });

  for (const mode of ["user", "mm"] as const) {
    it(`basic (${mode}): the charge moves from the parent to the child`, () => {
      const { h, parent, id } = fixture(mode);
      const { fd } = parent.memfd(PAGE);
      assert.equal(h.mapFile(id, fd, 0n, P).errno, 0);
      assert.equal(change(h, parent), 0); // same process: nothing moves
      // USER charges user->locked_vm, MM charges mm->locked_vm (VmLck); never both.
      const locked = (p: FakeProcess) => [
        p.accounting.pinnedPages,
        p.accounting.lockedPages,
        p.accounting.mmLockedPages,
      ];
      const one = mode === "user" ? [1, 1, 0] : [1, 0, 1];
      assert.deepEqual(locked(parent), one);
      const child = parent.fork();
      assert.equal(change(h, child), 0);
      assert.deepEqual(locked(parent), [0, 0, 0]);
      assert.deepEqual(locked(child), one);
      assert.equal(h.ioas(id).iopt.areas[0].pages!.source, child);
      // Unmapping now uncharges the child.
      assert.equal(h.unmap(id, 0n, (1n << 64n) - 1n).errno, 0);
      assert.equal(child.accounting.pinnedPages, 0);
    });
  }

  it("ENOMEM when the new owner is over RLIMIT_MEMLOCK; nothing moves", () => {
    const { h, parent, id } = fixture("user");
    const { fd } = parent.memfd(2 * PAGE);
    assert.equal(h.mapFile(id, fd, 0n, 2n * P).errno, 0);
    const child = parent.fork();
    child.accounting.memlockLimit = PAGE; // one page allowed, two needed
    assert.equal(change(h, child), ENOMEM);
    assert.equal(parent.accounting.lockedPages, 2);
    assert.equal(child.accounting.lockedPages, 0);
    assert.equal(child.accounting.pinnedPages, 0);
    assert.equal(h.ioas(id).iopt.areas[0].pages!.source, parent);
  });
});

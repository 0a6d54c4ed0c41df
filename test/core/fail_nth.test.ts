/**
 * The eight fault-injection sweeps of the kernel's iommufd_fail_nth selftest (spec
 * mock-driver-failnth.md §5.2-§5.3), written afresh against the model: each sequence of ioctls
 * runs once without injection (it must succeed), then again with the n-th injection site after
 * its "enable" point failing, for n = 1, 2, ... until a run reaches no n-th site — that last
 * run must succeed. After every run the fixture is torn down as the kernel test does (the access
 * fd closed, the PASID detached, the iommufd closed) and the test proves nothing survived:
 * no object, no pinned page (UserPage.pins, MD_CHECK_REFS from a fresh context), no pinned-page
 * accounting, no mock device, no page-table page, no selftest or queue fd.
 */
import "../../src/core/eventq.ts";
import "../../src/core/hw_queue.ts";
import "../../src/core/viommu.ts";
import "../../src/hw/mock/viommu.ts";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IommufdContext } from "../../src/core/context.ts";
import { eventqFileByFd } from "../../src/core/eventq.ts";
import { FailNth } from "../../src/core/fail_nth.ts";
import { ctxFileRefs } from "../../src/core/mmap.ts";
import { closeSelftestFd, selftestOpenFds } from "../../src/core/selftest.ts";
import { FakeProcess, type UserPage } from "../../src/core/user_mm.ts";
import { mockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_ALLOC_LAYOUT,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_IOVA_RANGES_LAYOUT,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_DEVICE_PASID,
} from "../../src/uapi/index.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const BUFFER_SIZE = 2 * 1024 * 1024;
const MOCK_APERTURE_START = 1n << 24n;
/** The newest kernel test asserts fewer than this many iterations per sequence. */
const ITERATION_LIMIT = 1000;
const ALLOC_NEST_PARENT = 1;
const FAULT_ID_VALID = 4;
const ALLOC_PASID = 8;
const TYPE_SELFTEST = 0xdeadbeef;
const VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;
const IOTLB_DEFAULT = 0xbadbeef;

/** A step of a sequence failed (the kernel test's `return -1`). */
class StepFailed extends Error {}

/** Throws StepFailed unless the ioctl succeeded. */
function ok(errno: number): void {
  if (errno !== 0) throw new StepFailed(`errno ${errno}`);
}

/**
 * One run of a sequence: its own process (the 2 MiB shared buffer and the 2 MiB memfd of the
 * kernel test's constructor), the fixture's fields, and the fail-nth counter armed at enable().
 */
class Run {
  readonly faults = new FailNth();
  readonly proc = new FakeProcess();
  readonly buffer: bigint;
  readonly mfd: number;
  readonly mfdPages: UserPage[];
  /** uint16_t tmp[32] and uint64_t tmp_big[4096] of the access_rw sequence. */
  readonly tmp: bigint;
  readonly tmpBig: bigint;
  h: SelftestHarness | null = null;
  // The fixture (struct basic_fail_nth).
  accessId = 0;
  stdevId = 0;
  pasid = 0;
  readonly nth: number;

  constructor(nth: number) {
    this.nth = nth;
    this.buffer = this.proc.mmap(BUFFER_SIZE, { shared: true });
    const { fd, file } = this.proc.memfd(BUFFER_SIZE);
    this.mfd = fd;
    this.mfdPages = [];
    for (let i = 0; i < BUFFER_SIZE / PAGE; i++) this.mfdPages.push(file.page(i)!);
    this.tmp = this.proc.mmap(64);
    this.tmpBig = this.proc.mmap(32768);
  }

  /** fail_nth_enable(): arms the counter (iteration 0 runs without injection). */
  enable(): void {
    if (this.nth > 0) this.faults.arm(this.nth);
  }

  /** open("/dev/iommu"). */
  open(): SelftestHarness {
    this.h = new SelftestHarness(this.proc, new IommufdContext(this.faults));
    return this.h;
  }

  ioasAlloc(h: SelftestHarness): number {
    const r = h.call(IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOC_LAYOUT, {});
    ok(r.errno);
    return r.out.out_ioas_id;
  }

  /** IOAS_MAP of `length` bytes of the buffer, automatic IOVA unless `iova` is given. */
  map(h: SelftestHarness, ioas: number, length: number, iova?: bigint): bigint {
    const r = h.map(ioas, this.buffer, length, iova !== undefined ? { iova } : {});
    ok(r.errno);
    return r.out.iova;
  }

  mockDomain(h: SelftestHarness, ptId: number, flags?: number) {
    const r =
      flags === undefined
        ? h.test(OP.MOCK_DOMAIN, ptId)
        : h.test(OP.MOCK_DOMAIN_FLAGS, ptId, { dev_flags: flags });
    ok(r.errno);
    return { stdev: Number(r.out.out_stdev_id), idev: Number(r.out.out_idev_id) };
  }

  createAccess(h: SelftestHarness, ioas: number, flags: number): void {
    const r = h.test(OP.CREATE_ACCESS, ioas, { flags });
    ok(r.errno);
    this.accessId = Number(r.out.out_access_fd);
  }

  /** close() of the access fd (must succeed), as _test_cmd_destroy_access does. */
  closeAccess(h: SelftestHarness): void {
    assert.equal(closeSelftestFd(h.ctx, this.accessId), 0);
    this.accessId = 0;
  }
}

type Sequence = (run: Run) => void;

// ---- The sequences (spec §5.3) -----------------------------------------------------------------

/** 1. basic: ioas.c, with injection armed before the open. */
const basic: Sequence = (run) => {
  run.enable();
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  const ranges = h.proc.mmap(10 * 16);
  ok(
    h.call(IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_IOVA_RANGES_LAYOUT, {
      num_iovas: 10,
      ioas_id: ioas,
      allowed_iovas: ranges,
    }).errno,
  );
  const one = h.words([16 * 1024, 0, BUFFER_SIZE + 16 * 1024 * 600 - 1, 0]);
  ok(
    h.call(IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_ALLOW_IOVAS_LAYOUT, {
      ioas_id: ioas,
      num_iovas: 1,
      allowed_iovas: one,
    }).errno,
  );
  const iova = run.map(h, ioas, BUFFER_SIZE);
  ok(h.copy(ioas, ioas, iova, 160n).errno);
  ok(h.unmap(ioas, iova, BigInt(BUFFER_SIZE)).errno);
  // The second unmap finds nothing (ENOENT): its result does not matter.
  h.unmap(ioas, iova, BigInt(BUFFER_SIZE));
};

/** 2. map_domain: filling a new domain, and a second domain from an existing area. */
const mapDomain: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  run.enable();
  const md = run.mockDomain(h, ioas);
  run.map(h, ioas, 262144);
  ok(h.destroy(md.stdev));
  run.mockDomain(h, ioas);
};

/** 3. map_file_domain: as map_domain with the memfd mapped through MAP_FILE. */
const mapFileDomain: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  run.enable();
  const md = run.mockDomain(h, ioas);
  ok(h.mapFile(ioas, run.mfd, 0n, 262144n).errno);
  ok(h.destroy(md.stdev));
  run.mockDomain(h, ioas);
};

/** 4. map_two_domains: a second device sharing the auto HWPT, then both replaced. */
const mapTwoDomains: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  const first = run.mockDomain(h, ioas);
  run.enable();
  const second = run.mockDomain(h, ioas);
  run.map(h, ioas, 262144);
  ok(h.destroy(first.stdev));
  ok(h.destroy(second.stdev));
  run.mockDomain(h, ioas);
  run.mockDomain(h, ioas);
};

/** 5. access_rw: every path of iommufd_access_rw. */
const accessRw: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  const iova = run.map(h, ioas, 262144);
  run.enable();
  run.createAccess(h, ioas, 0);
  for (const flags of [
    0,
    MOCK_ACCESS_RW_WRITE,
    MOCK_ACCESS_RW_SLOW_PATH,
    MOCK_ACCESS_RW_SLOW_PATH | MOCK_ACCESS_RW_WRITE,
  ]) {
    ok(h.test(OP.ACCESS_RW, run.accessId, { iova, length: 64n, uptr: run.tmp, flags }).errno);
  }
  const big = { iova, length: 32768n, uptr: run.tmpBig, flags: MOCK_ACCESS_RW_SLOW_PATH };
  ok(h.test(OP.ACCESS_RW, run.accessId, big).errno);
  run.closeAccess(h);
};

/** 6. access_pin: pages.c's access pinning without a domain. */
const accessPin: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  const iova = run.map(h, ioas, BUFFER_SIZE);
  run.createAccess(h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
  run.enable();
  const r = h.accessPages(run.accessId, iova, BUFFER_SIZE, run.buffer);
  ok(r.errno);
  ok(h.test(OP.DESTROY_ACCESS_PAGES, run.accessId, { access_pages_id: r.id }).errno);
  run.closeAccess(h);
};

/** 7. access_pin_domain: the same with a domain holding the pages. */
const accessPinDomain: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  ok(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 32 }).errno);
  const md = run.mockDomain(h, ioas);
  const iova = run.map(h, ioas, BUFFER_SIZE);
  run.createAccess(h, ioas, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
  run.enable();
  const r = h.accessPages(run.accessId, iova, BUFFER_SIZE, run.buffer);
  ok(r.errno);
  ok(h.test(OP.DESTROY_ACCESS_PAGES, run.accessId, { access_pages_id: r.id }).errno);
  run.closeAccess(h);
  ok(h.destroy(md.stdev));
};

/** 8. device: device.c, vIOMMU, vDEVICE, HW queue, FAULT, vEVENTQ and PASID attachments. */
const device: Sequence = (run) => {
  const h = run.open();
  const ioas = run.ioasAlloc(h);
  const ioas2 = run.ioasAlloc(h);
  const iova = MOCK_APERTURE_START;
  run.map(h, ioas, PAGE, iova);
  run.map(h, ioas2, PAGE, iova);
  run.enable();
  const md = run.mockDomain(h, ioas, MOCK_FLAGS_DEVICE_PASID);
  run.stdevId = md.stdev;
  const info = h.proc.mmap(8);
  ok(
    h.call(IOMMU_GET_HW_INFO, IOMMU_HW_INFO_LAYOUT, {
      dev_id: md.idev,
      data_len: 8,
      data_uptr: info,
    }).errno,
  );
  const hwptAlloc = (ptId: number, flags: number, data?: number[], faultId = 0): number => {
    const r = h.hwptAlloc(md.idev, ptId, flags, data, faultId);
    ok(r.errno);
    return r.id;
  };
  const pasidHwpt = hwptAlloc(ioas, ALLOC_PASID);
  ok(h.test(OP.MOCK_DOMAIN_REPLACE, run.stdevId, { pt_id: ioas2 }).errno);
  ok(h.test(OP.MOCK_DOMAIN_REPLACE, run.stdevId, { pt_id: pasidHwpt }).errno);
  const parent = hwptAlloc(ioas, ALLOC_NEST_PARENT | ALLOC_PASID);
  const viommu = h.call(IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT, {
    type: TYPE_SELFTEST,
    dev_id: md.idev,
    hwpt_id: parent,
  });
  ok(viommu.errno);
  const viommuId = viommu.out.out_viommu_id;
  ok(
    h.call(IOMMU_VDEVICE_ALLOC, IOMMU_VDEVICE_ALLOC_LAYOUT, {
      viommu_id: viommuId,
      dev_id: md.idev,
      virt_id: 0n,
    }).errno,
  );
  ok(
    h.call(IOMMU_HW_QUEUE_ALLOC, IOMMU_HW_QUEUE_ALLOC_LAYOUT, {
      viommu_id: viommuId,
      type: TYPE_SELFTEST,
      index: 0,
      nesting_parent_iova: iova,
      length: BigInt(PAGE),
    }).errno,
  );
  const fault = h.call(IOMMU_FAULT_QUEUE_ALLOC, IOMMU_FAULT_ALLOC_LAYOUT, {});
  ok(fault.errno);
  eventqFileByFd(h.ctx, fault.out.out_fault_fd)?.close();
  hwptAlloc(parent, FAULT_ID_VALID, [IOTLB_DEFAULT], fault.out.out_fault_id);
  const veventq = h.call(IOMMU_VEVENTQ_ALLOC, IOMMU_VEVENTQ_ALLOC_LAYOUT, {
    viommu_id: viommuId,
    type: VEVENTQ_TYPE_SELFTEST,
    veventq_depth: 2,
  });
  ok(veventq.errno);
  eventqFileByFd(h.ctx, veventq.out.out_veventq_fd)?.close();
  const testHwpt = hwptAlloc(ioas, ALLOC_PASID);
  run.pasid = 200;
  const attach = h.test(OP.PASID_ATTACH, run.stdevId, { pasid: run.pasid, pt_id: parent });
  if (attach.errno !== 0) {
    run.pasid = 0;
    ok(attach.errno);
  }
  ok(h.test(OP.PASID_REPLACE, run.stdevId, { pasid: run.pasid, pt_id: testHwpt }).errno);
  ok(h.test(OP.PASID_DETACH, run.stdevId, { pasid: run.pasid }).errno);
  run.pasid = 0;
};

// ---- The driver loop ---------------------------------------------------------------------------

/** Runs `seq` with injection at site `nth` (0: none); returns 0 or -1 as the C sequences do. */
function runOnce(run: Run, seq: Sequence): number {
  try {
    seq(run);
    return 0;
  } catch (e) {
    if (e instanceof StepFailed) return -1;
    throw e;
  }
}

/** The fixture teardown plus the checks that nothing of the run survived. */
function teardownAndCheck(run: Run, what: string, devices: number, tables: number): void {
  const h = run.h;
  if (h !== null) {
    if (run.accessId !== 0) run.closeAccess(h);
    if (run.pasid !== 0 && run.stdevId !== 0)
      h.test(OP.PASID_DETACH, run.stdevId, { pasid: run.pasid });
    const stuck = h.ctx.close();
    assert.deepEqual(
      stuck.map((o) => `${o.type}:${o.id}`),
      [],
      `${what}: objects left after close`,
    );
    assert.equal(h.ctx.table.size, 0, `${what}: ids left after close`);
    assert.deepEqual(selftestOpenFds(h.ctx), [], `${what}: selftest fds left`);
    assert.equal(ctxFileRefs(h.ctx), 0, `${what}: the iommufd file is still referenced`);
    // teardown_iommufd: reopen and check the buffer has no pins left.
    const probe = new SelftestHarness(run.proc);
    assert.equal(probe.checkRefs(run.buffer, BUFFER_SIZE, 0), 0, `${what}: buffer pins`);
  }
  const pinned = run.mfdPages.filter((p) => p.pins !== 0).length;
  assert.equal(pinned, 0, `${what}: memfd pins`);
  assert.equal(run.proc.accounting.pinnedPages, 0, `${what}: VmPin`);
  assert.equal(run.proc.accounting.lockedPages, 0, `${what}: locked_vm`);
  assert.equal(run.proc.accounting.mmLockedPages, 0, `${what}: mm locked_vm`);
  assert.equal(mockIommu.devices.size, devices, `${what}: mock devices left`);
  assert.equal(mockIommu.alloc.live, tables, `${what}: page-table pages left`);
}

interface SweepResult {
  /** Injected runs (iterations 1..n-1 of the kernel loop). */
  injected: number;
  /** The sites that fired, with how often. */
  sites: Map<string, number>;
  /** Errors the injected runs ended with (the step that failed). */
  failedRuns: number;
}

/**
 * fail_nth_first / fail_nth_next: run 0 without injection (must succeed), then n = 1, 2, ...
 * until the n-th site is never reached; that last run must succeed.
 */
function sweep(name: string, seq: Sequence): SweepResult {
  const devices = mockIommu.devices.size;
  const tables = mockIommu.alloc.live;
  const first = new Run(0);
  assert.equal(runOnce(first, seq), 0, `${name}: the run without injection failed`);
  teardownAndCheck(first, `${name} #0`, devices, tables);
  const sites = new Map<string, number>();
  let failedRuns = 0;
  for (let nth = 1; ; nth++) {
    assert.ok(nth < ITERATION_LIMIT, `${name}: more than ${ITERATION_LIMIT} injection sites`);
    const run = new Run(nth);
    const rc = runOnce(run, seq);
    const injected = run.faults.pending === 0;
    teardownAndCheck(run, `${name} #${nth} (${run.faults.lastFired ?? "none"})`, devices, tables);
    if (!injected) {
      assert.equal(rc, 0, `${name}: the first run past the last site failed`);
      return { injected: nth - 1, sites, failedRuns };
    }
    const site = run.faults.lastFired ?? "?";
    sites.set(site, (sites.get(site) ?? 0) + 1);
    if (rc !== 0) failedRuns++;
  }
}

describe("iommufd_fail_nth sequences", () => {
  it("basic: IOAS alloc, ranges, allow, map, copy, unmap", () => {
    const r = sweep("basic", basic);
    assert.ok(r.injected >= 8, `only ${r.injected} sites`);
    for (const site of ["iommufd_object_alloc", "iommufd_get_object", "iopt_area_alloc"])
      assert.ok(r.sites.has(site), `basic never failed ${site}`);
    // Every injected run failed one of its steps except the one whose injection hit the
    // lookup of the final unmap, whose result the sequence ignores.
    assert.equal(r.failedRuns, r.injected - 1);
  });

  it("map_domain: domain fill on attach and on map", () => {
    const r = sweep("map_domain", mapDomain);
    assert.ok(r.injected >= 10, `only ${r.injected} sites`);
    for (const site of [
      "mock_dev_create",
      "mock_domain_alloc_pgtable",
      "pfn_reader_user_pin",
      "iopt_pages_update_pinned",
      "iopt_table_enforce_dev_resv_regions",
    ])
      assert.ok(r.sites.has(site), `map_domain never failed ${site}`);
  });

  it("map_file_domain: the same through a memfd", () => {
    const r = sweep("map_file_domain", mapFileDomain);
    assert.ok(r.injected >= 10, `only ${r.injected} sites`);
    assert.ok(r.sites.has("pfn_reader_user_pin"));
    assert.ok(r.sites.has("iopt_alloc_pages"));
  });

  it("map_two_domains: a shared auto HWPT, then two fresh ones", () => {
    const r = sweep("map_two_domains", mapTwoDomains);
    assert.ok(r.injected >= 10, `only ${r.injected} sites`);
    assert.ok(r.sites.has("iopt_domains_reserve"));
  });

  it("access_rw: fast, slow single-page and slow multi-page paths", () => {
    const r = sweep("access_rw", accessRw);
    assert.ok(r.injected >= 6, `only ${r.injected} sites`);
    for (const site of [
      "selftest_access_alloc",
      "selftest_access_rw_buffer",
      "iopt_pages_rw_page",
      "pfn_batch_alloc",
    ])
      assert.ok(r.sites.has(site), `access_rw never failed ${site}`);
  });

  it("access_pin: pinning 2 MiB through an access without a domain", () => {
    const r = sweep("access_pin", accessPin);
    assert.ok(r.injected >= 5, `only ${r.injected} sites`);
    for (const site of ["pages_to_xarray", "iopt_pages_access_alloc", "pfn_reader_user_pin"])
      assert.ok(r.sites.has(site), `access_pin never failed ${site}`);
  });

  it("access_pin_domain: the access reads pages a domain already holds", () => {
    const r = sweep("access_pin_domain", accessPinDomain);
    assert.ok(r.injected >= 4, `only ${r.injected} sites`);
    assert.ok(r.sites.has("selftest_access_item_alloc"));
    // The domain already pinned everything: the access never goes to the origin.
    assert.ok(!r.sites.has("pfn_reader_user_pin"));
  });

  it("device: attach, replace, vIOMMU, vDEVICE, HW queue, FAULT, vEVENTQ, PASID", () => {
    const r = sweep("device", device);
    assert.ok(r.injected >= 20, `only ${r.injected} sites`);
    for (const site of ["iommufd_get_object", "iommufd_attach_handle", "mock_domain_hw_info"])
      assert.ok(r.sites.has(site), `device never failed ${site}`);
  });
});

/**
 * IOMMU_TEST_CMD through the codec (spec mock-driver-failnth.md §1-§2): the framing, and the ops
 * that build and inspect mock devices and domains — ADD_RESERVED, MOCK_DOMAIN(_FLAGS),
 * MOCK_DOMAIN_REPLACE, MD_CHECK_MAP, MD_CHECK_REFS, SET_TEMP_MEMORY_LIMIT, DIRTY,
 * MD_CHECK_IOTLB and DEV_CHECK_CACHE — each errno path in the kernel's check order.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ObjType } from "../../src/core/object.ts";
import { SelftestDeviceObject, selftestParams } from "../../src/core/selftest.ts";
import {
  E2BIG,
  EADDRINUSE,
  EBUSY,
  EFAULT,
  EINVAL,
  EIO,
  ENOENT,
  ENOSPC,
  EOPNOTSUPP,
  EOVERFLOW,
} from "../../src/errno.ts";
import { type MockDevice, type MockPagingDomain, mockIommu } from "../../src/hw/mock/index.ts";
import {
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_ALLOW_IOVAS_LAYOUT,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_LAYOUT,
  IOMMU_OPTION_OP_SET,
  IOMMU_TEST_CMD,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
  MOCK_FLAGS_DEVICE_PASID,
} from "../../src/uapi/index.ts";
import { FIXED, PAGE, RW, U64_MAX } from "./helpers/ioctl_harness.ts";
import { OP, SelftestHarness, TEST_CMD_SIZE } from "./selftest_harness.ts";

const P = BigInt(PAGE);
const START = 1n << 24n;
const NEST_PARENT = 1;
const DIRTY_TRACKING = 2;

/** A read-only second mapping of the page at `va` (write-backs there fault). */
function readOnlyAlias(h: SelftestHarness, va: bigint): bigint {
  const pages = h.proc.pages(va, 1, false);
  if (typeof pages === "number") throw new Error("unmapped");
  return h.proc.mmap(PAGE, { pages, writable: false });
}

/** A harness with one IOAS (id 1) and a mapped user buffer of `pages` pages. */
function setup(pages = 16) {
  const h = new SelftestHarness();
  const ioas = h.ioasAlloc();
  const buf = h.proc.mmap(pages * PAGE);
  return { h, ioas, buf };
}

function mdev(h: SelftestHarness, stdev: number): MockDevice {
  const obj = h.ctx.table.peek(stdev);
  assert.ok(obj instanceof SelftestDeviceObject && obj.mdev !== null);
  return obj.mdev;
}

describe("IOMMU_TEST_CMD framing", () => {
  it("a size below offsetofend(last) is EINVAL; the full 72 bytes are accepted", () => {
    const { h, ioas } = setup();
    assert.equal(
      h.test(OP.ADD_RESERVED, ioas, { start: START, length: P }, { size: 67 }).errno,
      EINVAL,
    );
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: START, length: P }, { size: 68 }).errno, 0);
    assert.equal(TEST_CMD_SIZE, 72);
  });

  it("a longer struct needs a zero tail (E2BIG otherwise)", () => {
    const { h, ioas } = setup();
    const at = h.proc.mmap(PAGE);
    const tail = new Uint8Array(8);
    tail[3] = 1;
    h.proc.write(at + 72n, tail);
    const bad = h.test(OP.ADD_RESERVED, ioas, { start: START, length: P }, { size: 80, at });
    assert.equal(bad.errno, E2BIG);
    h.proc.write(at + 72n, new Uint8Array(8));
    const ok = h.test(OP.ADD_RESERVED, ioas, { start: START, length: P }, { size: 80, at });
    assert.equal(ok.errno, 0);
  });

  it("unknown ops are EOPNOTSUPP; __reserved is never checked", () => {
    const { h, ioas } = setup();
    assert.equal(h.test(0, ioas).errno, EOPNOTSUPP);
    // 24 is MD_CHECK_DMABUF now (an ioas id is no HWPT: ENOENT); 25 is the first unknown op.
    assert.equal(h.test(24, ioas).errno, ENOENT);
    assert.equal(h.test(25, ioas).errno, EOPNOTSUPP);
    assert.equal(h.test(0xffff_ffff, ioas).errno, EOPNOTSUPP);
    const r = h.test(OP.ADD_RESERVED, ioas, { start: START, length: P }, { reserved: 0x1234 });
    assert.equal(r.errno, 0);
  });

  it("a responding op writes back min(size, 72) bytes of the whole command", () => {
    const { h, ioas } = setup();
    const at = h.proc.mmap(PAGE);
    h.proc.write(at, new Uint8Array(PAGE).fill(0xee));
    const r = h.test(OP.MOCK_DOMAIN, ioas, {}, { size: 68, at, bytes: 68 });
    assert.equal(r.errno, 0);
    const back = new Uint8Array(80);
    h.proc.read(at, back);
    const v = new DataView(back.buffer);
    assert.equal(v.getUint32(0, true), 68);
    assert.equal(v.getUint32(16, true), 2); // out_stdev_id
    assert.equal(v.getUint32(20, true), 4); // out_hwpt_id
    assert.equal(v.getUint32(24, true), 3); // out_idev_id
    // Bytes 68..71 of the kernel's copy are not written to a 68-byte user struct.
    assert.deepEqual([...back.subarray(68, 80)], new Array(12).fill(0xee));
  });
});

describe("IOMMU_TEST_OP_ADD_RESERVED", () => {
  it("checks length, overflow, then the IOAS id", () => {
    const { h, ioas } = setup();
    assert.equal(h.test(OP.ADD_RESERVED, 99, { start: 0n, length: 0n }).errno, EINVAL);
    assert.equal(h.test(OP.ADD_RESERVED, 99, { start: U64_MAX, length: 2n }).errno, EOVERFLOW);
    assert.equal(h.test(OP.ADD_RESERVED, 99, { start: 0n, length: P }).errno, ENOENT);
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: U64_MAX, length: 1n }).errno, 0);
  });

  it("refuses ranges over areas and allowed ranges, allows overlapping reservations", () => {
    const { h, ioas, buf } = setup();
    const iova = h.mapOk(ioas, buf, 4 * PAGE, START);
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: iova + P, length: P }).errno, EADDRINUSE);
    const ioas2 = h.ioasAlloc();
    const range = h.words([0x10_0000, 0, 0x1f_ffff, 0]);
    const allow = h.call(IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_ALLOW_IOVAS_LAYOUT, {
      ioas_id: ioas2,
      num_iovas: 1,
      allowed_iovas: range,
    });
    assert.equal(allow.errno, 0);
    const inside = { start: 0x18_0000n, length: P };
    assert.equal(h.test(OP.ADD_RESERVED, ioas2, inside).errno, EADDRINUSE);
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: 0n, length: 8n * P }).errno, 0);
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: 4n * P, length: 8n * P }).errno, 0);
    const reserved = h.ioas(ioas).iopt.reserved.filter((r) => r.owner === null);
    assert.deepEqual(
      reserved.map((r) => [r.start, r.last]),
      [
        [0n, 8n * P - 1n],
        [4n * P, 12n * P - 1n],
      ],
    );
  });

  it("reserved_overflow: [6, 2^64 - 0x7ffa) leaves no room for an automatic 0x5000 map", () => {
    const { h, ioas, buf } = setup();
    assert.equal(
      h.test(OP.ADD_RESERVED, ioas, { start: 6n, length: 0xffff_ffff_ffff_8001n }).errno,
      0,
    );
    assert.equal(h.map(ioas, buf, 0x5000).errno, ENOSPC);
  });

  it("splits the IOVA_RANGES holes and survives domain attach and detach", () => {
    const { h, ioas } = setup();
    assert.equal(h.test(OP.ADD_RESERVED, ioas, { start: 0x8000n, length: 0x1000n }).errno, 0);
    const holes = () =>
      h
        .ioas(ioas)
        .iopt.iovaRanges()
        .map((r) => [r.start, r.last]);
    assert.deepEqual(holes(), [
      [0n, 0x7fffn],
      [0x9000n, U64_MAX],
    ]);
    const md = h.mockDomain(ioas);
    assert.equal(h.destroy(md.stdev), 0);
    assert.deepEqual(holes(), [
      [0n, 0x7fffn],
      [0x9000n, U64_MAX],
    ]);
  });
});

describe("IOMMU_TEST_OP_MOCK_DOMAIN", () => {
  it("returns stdev, idev, hwpt ids in that allocation order and shares the auto HWPT", () => {
    const { h, ioas } = setup();
    assert.equal(ioas, 1);
    const a = h.mockDomain(ioas);
    assert.deepEqual(a, { stdev: 2, idev: 3, hwpt: 4 });
    assert.ok(h.isLive(2, ObjType.SELFTEST));
    assert.ok(h.isLive(3, ObjType.DEVICE));
    assert.ok(h.isLive(4, ObjType.HWPT_PAGING));
    const b = h.mockDomain(ioas);
    assert.deepEqual(b, { stdev: 5, idev: 6, hwpt: 4 });
    assert.notEqual(mdev(h, a.stdev).name, mdev(h, b.stdev).name);
  });

  it("creates a cache-coherent mock device with four 0xbaddad cache slots", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const dev = mdev(h, md.stdev);
    assert.deepEqual([...dev.cache], [0xbaddad, 0xbaddad, 0xbaddad, 0xbaddad]);
    assert.equal(dev.maxPasids, 1);
    assert.ok(mockIommu.devices.has(dev.index));
    const pasidDev = mdev(h, h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID).stdev);
    assert.equal(pasidDev.maxPasids, 2 ** 20);
  });

  it("id 0 or a missing id is ENOENT, another object type EINVAL; nothing is left behind", () => {
    const { h, ioas } = setup();
    const devicesBefore = mockIommu.devices.size;
    assert.equal(h.test(OP.MOCK_DOMAIN, 0).errno, ENOENT);
    assert.equal(h.test(OP.MOCK_DOMAIN, 77).errno, ENOENT);
    const md = h.mockDomain(ioas);
    assert.equal(h.test(OP.MOCK_DOMAIN, md.idev).errno, EINVAL);
    assert.equal(h.test(OP.MOCK_DOMAIN, md.stdev).errno, EINVAL);
    assert.equal(mockIommu.devices.size, devicesBefore + 1);
    // The failed calls freed their ids: the next objects continue right after.
    assert.deepEqual(h.mockDomain(ioas), { stdev: 5, idev: 6, hwpt: 4 });
  });

  it("MOCK_DOMAIN_FLAGS refuses unknown device flags (bit 1, HUGE_IOVA, is gone)", () => {
    const { h, ioas } = setup();
    const devicesBefore = mockIommu.devices.size;
    assert.equal(h.test(OP.MOCK_DOMAIN_FLAGS, ioas, { dev_flags: 2 }).errno, EINVAL);
    assert.equal(h.test(OP.MOCK_DOMAIN_FLAGS, ioas, { dev_flags: 1 << 3 }).errno, EINVAL);
    assert.equal(mockIommu.devices.size, devicesBefore);
    assert.equal(h.ctx.table.size, 1);
    const md = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID);
    assert.equal(md.stdev, 2);
    assert.ok(mdev(h, md.stdev).noDirty);
  });

  it("attaches to a HWPT directly; a NO_DIRTY device on a dirty-tracking HWPT is EINVAL", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const dirty = h.hwptAllocOk(md.idev, ioas, DIRTY_TRACKING);
    const onDirty = h.mockDomain(dirty);
    assert.equal(onDirty.hwpt, dirty);
    const before = h.ctx.table.size;
    const r = h.test(OP.MOCK_DOMAIN_FLAGS, dirty, { dev_flags: MOCK_FLAGS_DEVICE_NO_DIRTY });
    assert.equal(r.errno, EINVAL);
    assert.equal(h.ctx.table.size, before);
  });

  it("IOMMU_DESTROY of the stdev id removes device, binding and the unused auto HWPT", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const index = mdev(h, md.stdev).index;
    assert.equal(h.destroy(md.idev), EBUSY);
    assert.equal(h.destroy(md.hwpt), EBUSY);
    assert.equal(h.destroy(ioas), EBUSY);
    assert.equal(h.destroy(md.stdev), 0);
    assert.ok(!h.isLive(md.idev));
    assert.ok(!h.isLive(md.hwpt));
    assert.ok(!mockIommu.devices.has(index));
    assert.equal(h.ioas(ioas).users, 1);
    assert.equal(h.destroy(ioas), 0);
  });

  it("a faulting write-back undoes the attach, the binding and the device", () => {
    const { h, ioas } = setup();
    const devicesBefore = mockIommu.devices.size;
    const at = h.proc.mmap(PAGE);
    h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 65536 }, { at });
    const ro = readOnlyAlias(h, at);
    // Put a MOCK_DOMAIN command on the page, then issue it through the read-only alias.
    h.test(OP.MOCK_DOMAIN, 999, {}, { at });
    const v = new DataView(new ArrayBuffer(4));
    v.setUint32(0, ioas, true);
    h.proc.write(at + 8n, new Uint8Array(v.buffer));
    const r = h.ctx.ioctl(IOMMU_TEST_CMD, ro, h.proc);
    assert.equal(r.errno, EFAULT);
    assert.equal(h.ctx.table.size, 1);
    assert.equal(mockIommu.devices.size, devicesBefore);
    assert.equal(h.ioas(ioas).users, 1);
    assert.deepEqual(h.mockDomain(ioas), { stdev: 2, idev: 3, hwpt: 4 });
  });

  it("a mapped area is pinned once into the new domain and checkable with MD_CHECK_MAP", () => {
    const { h, ioas, buf } = setup();
    const iova = h.mapOk(ioas, buf, 8 * PAGE, START);
    assert.equal(h.checkRefs(buf, 8 * PAGE, 0), 0);
    const md = h.mockDomain(ioas);
    assert.equal(h.checkRefs(buf, 8 * PAGE, 1), 0);
    assert.equal(h.checkMap(md.hwpt, iova, 8 * PAGE, buf), 0);
    h.mockDomain(ioas);
    assert.equal(h.checkRefs(buf, 8 * PAGE, 1), 0);
    assert.equal(h.destroy(md.stdev), 0);
    assert.equal(h.checkRefs(buf, 8 * PAGE, 1), 0);
  });
});

describe("IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE", () => {
  it("needs a stdev id (ENOENT for idev or hwpt ids) and an existing pt (ENOENT)", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.idev, { pt_id: ioas }).errno, ENOENT);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.hwpt, { pt_id: ioas }).errno, ENOENT);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: 99 }).errno, ENOENT);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: md.idev }).errno, EINVAL);
  });

  it("moves to a HWPT and back to an IOAS; a stale auto HWPT is gone (ENOENT)", () => {
    const { h, ioas } = setup();
    const ioas2 = h.ioasAlloc();
    const md = h.mockDomain(ioas);
    const manual = h.hwptAllocOk(md.idev, ioas);
    const r = h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: manual });
    assert.equal(r.errno, 0);
    assert.equal(r.out.pt_id, manual);
    assert.ok(!h.isLive(md.hwpt)); // the auto HWPT lost its only device
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: md.hwpt }).errno, ENOENT);
    const back = h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: ioas2 });
    assert.equal(back.errno, 0);
    const auto2 = Number(back.out.pt_id);
    assert.ok(h.isLive(auto2, ObjType.HWPT_PAGING));
    assert.notEqual(auto2, manual);
    // The same HWPT again: success, nothing changes.
    const same = h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: auto2 });
    assert.equal(same.errno, 0);
    assert.equal(same.out.pt_id, auto2);
    assert.equal(h.destroy(manual), 0);
  });

  it("keeps the replace when the write-back faults", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const manual = h.hwptAllocOk(md.idev, ioas);
    const at = h.proc.mmap(PAGE);
    h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: manual }, { at: at });
    // Reissue a replace back to the IOAS from a read-only copy of the struct.
    h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: manual }, { at });
    const dv = new DataView(new ArrayBuffer(4));
    dv.setUint32(0, ioas, true);
    h.proc.write(at + 16n, new Uint8Array(dv.buffer));
    const r = h.ctx.ioctl(IOMMU_TEST_CMD, readOnlyAlias(h, at), h.proc);
    assert.equal(r.errno, EFAULT);
    const dev = mdev(h, md.stdev);
    const manualDomain = h.ctx.table.peek(manual);
    assert.ok(manualDomain !== undefined);
    // The device left `manual` for a new auto HWPT of the IOAS anyway.
    assert.equal(manualDomain.users, 1);
    assert.notEqual(dev.ridDomain, null);
  });
});

describe("IOMMU_TEST_OP_MD_CHECK_MAP", () => {
  it("looks up a HWPT_PAGING (ENOENT for nested or missing), then checks alignment", () => {
    const { h, ioas, buf } = setup();
    const md = h.mockDomain(ioas);
    const parent = h.hwptAllocOk(md.idev, ioas, NEST_PARENT);
    const nested = h.hwptAllocOk(md.idev, parent, 0, [0xbadbeef]);
    assert.equal(h.checkMap(nested, START, PAGE, buf), ENOENT);
    assert.equal(h.checkMap(99, START, PAGE, buf), ENOENT);
    assert.equal(h.checkMap(md.hwpt, START + 1n, 2048, buf), EINVAL);
    assert.equal(h.checkMap(md.hwpt, START, 2047, buf), EINVAL);
    assert.equal(h.checkMap(md.hwpt, START, 2048, buf + 1n), EINVAL);
    assert.equal(h.checkMap(md.hwpt, START, 2048, U64_MAX - 2047n), EINVAL);
    assert.equal(h.checkMap(md.hwpt, START, 0, buf), 0);
  });

  it("steps by the domain's smallest page (2 KiB) and compares PFN and offset", () => {
    const { h, ioas, buf } = setup();
    const md = h.mockDomain(ioas);
    const iova = h.mapOk(ioas, buf, 4 * PAGE, START);
    assert.equal(h.checkMap(md.hwpt, iova, 4 * PAGE, buf), 0);
    assert.equal(h.checkMap(md.hwpt, iova + 2048n, 2048, buf + 2048n), 0);
    // The wrong half of a page, another page, an unmapped IOVA: all EINVAL.
    assert.equal(h.checkMap(md.hwpt, iova, 2048, buf + 2048n), EINVAL);
    assert.equal(h.checkMap(md.hwpt, iova, PAGE, buf + P), EINVAL);
    assert.equal(h.checkMap(md.hwpt, iova + 4n * P, 2048, buf + 4n * P), EINVAL);
  });

  it("an unmapped user address fails with the page lookup's EFAULT", () => {
    const { h, ioas, buf } = setup();
    const md = h.mockDomain(ioas);
    const iova = h.mapOk(ioas, buf, PAGE, START);
    assert.equal(h.checkMap(md.hwpt, iova, PAGE, 0x1000n), EFAULT);
  });

  it("a HUGE domain steps by PAGE_SIZE", () => {
    const { h, ioas, buf } = setup();
    const md = h.mockDomain(ioas);
    const huge = h.hwptAllocOk(md.idev, ioas, 0, [0, 1]);
    const domain = h.ctx.table.peek(huge) as unknown as { domain: MockPagingDomain };
    assert.equal(domain.domain.pagetableType, 1);
    const iova = h.mapOk(ioas, buf, 2 * PAGE);
    assert.equal(h.checkMap(huge, iova, 2048, buf), EINVAL);
    assert.equal(h.checkMap(huge, iova, 2 * PAGE, buf), 0);
  });
});

describe("IOMMU_TEST_OP_MD_CHECK_REFS", () => {
  it("checks alignment and overflow (EINVAL), then each page's pins (EIO on mismatch)", () => {
    const { h, buf } = setup();
    assert.equal(h.checkRefs(buf + 1n, PAGE, 0), EINVAL);
    assert.equal(h.checkRefs(buf, PAGE + 1, 0), EINVAL);
    assert.equal(h.checkRefs(U64_MAX - P + 1n, 2 * PAGE, 0), EINVAL);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.checkRefs(buf, PAGE, 1), EIO);
    assert.equal(h.checkRefs(buf + 16n * P, PAGE, 0), EFAULT);
    assert.equal(h.checkRefs(buf, 0, 7), 0);
  });

  it("counts one pin per page per iopt_pages: shared by domains, doubled by a second MAP", () => {
    const { h, ioas, buf } = setup();
    h.mockDomain(ioas);
    const a = h.mapOk(ioas, buf, 4 * PAGE);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    const b = h.mapOk(ioas, buf, 2 * PAGE);
    assert.equal(h.checkRefs(buf, 2 * PAGE, 2), 0);
    assert.equal(h.checkRefs(buf + 2n * P, 2 * PAGE, 1), 0);
    const copy = h.copy(ioas, ioas, a, 4n * P);
    assert.equal(copy.errno, 0);
    assert.equal(h.checkRefs(buf + 2n * P, 2 * PAGE, 1), 0);
    assert.equal(h.unmap(ioas, a, 4n * P).errno, 0);
    assert.equal(h.unmap(ioas, b, 2n * P).errno, 0);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 1), 0);
    assert.equal(h.unmap(ioas, copy.out.dst_iova, 4n * P).errno, 0);
    assert.equal(h.checkRefs(buf, 4 * PAGE, 0), 0);
  });
});

describe("IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT", () => {
  it("refuses limits below one batch element (12 bytes) and sets the module parameter", () => {
    const h = new SelftestHarness();
    assert.equal(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 11 }).errno, EINVAL);
    assert.equal(h.test(OP.SET_TEMP_MEMORY_LIMIT, 0, { limit: 12 }).errno, 0);
    assert.equal(selftestParams.memoryLimit, 12);
    assert.equal(h.test(OP.SET_TEMP_MEMORY_LIMIT, 5, { limit: 65536 }).errno, 0);
    assert.equal(selftestParams.memoryLimit, 65536);
  });
});

describe("IOMMU_TEST_OP_DIRTY", () => {
  function dirtySetup() {
    const { h, ioas, buf } = setup(64);
    // One IOPTE per 4 KiB page (large pages would make one mark dirty a whole leaf).
    const off = h.call(IOMMU_OPTION, IOMMU_OPTION_LAYOUT, {
      option_id: IOMMU_OPTION_HUGE_PAGES,
      op: IOMMU_OPTION_OP_SET,
      object_id: ioas,
      val64: 0n,
    });
    assert.equal(off.errno, 0);
    const md = h.mockDomain(ioas);
    const hwpt = h.hwptAllocOk(md.idev, ioas, DIRTY_TRACKING);
    const iova = h.mapOk(ioas, buf, 64 * PAGE, START);
    const bitmap = h.proc.mmap(PAGE);
    return { h, hwpt, iova, bitmap, md, ioas };
  }

  it("checks the arguments, the bound, the HWPT and the tracking state in order", () => {
    const { h, hwpt, iova, bitmap, md } = dirtySetup();
    const d = (id: number, a: Record<string, bigint>) =>
      h.test(OP.DIRTY, id, { iova, length: 8n * P, page_size: P, uptr: bitmap, ...a }).errno;
    assert.equal(d(99, { page_size: 0n }), EINVAL);
    assert.equal(d(99, { length: 0n }), EINVAL);
    assert.equal(d(99, { iova: iova + 1n }), EINVAL);
    assert.equal(d(99, { length: P + 1n }), EINVAL);
    assert.equal(d(99, { uptr: 0n }), EINVAL);
    assert.equal(d(99, { length: (1n << 27n) + 1n, page_size: 1n, iova: 0n }), EOVERFLOW);
    assert.equal(d(99, {}), ENOENT);
    assert.equal(d(md.idev, {}), ENOENT);
    assert.equal(d(hwpt, {}), EINVAL); // tracking is off
    assert.equal(h.setDirtyTracking(hwpt, true), 0);
    assert.equal(d(hwpt, { uptr: 0x1000n }), EFAULT);
    assert.equal(d(hwpt, { length: (1n << 27n) * P, iova: 0n, uptr: 0x1000n }), EFAULT);
  });

  it("marks the IOPTE under each set bit and reports the number of set bits", () => {
    const { h, hwpt, iova, bitmap } = dirtySetup();
    assert.equal(h.setDirtyTracking(hwpt, true), 0);
    // Bits 0, 2 and 9 over 16 pages of 4 KiB.
    h.proc.write(bitmap, new Uint8Array([0b101, 0b10]));
    const r = h.test(OP.DIRTY, hwpt, { iova, length: 16n * P, page_size: P, uptr: bitmap });
    assert.equal(r.errno, 0);
    assert.equal(r.out.out_nr_dirty, 3n);
    const out = h.proc.mmap(PAGE);
    assert.equal(h.getDirtyBitmap(hwpt, iova, 16n * P, P, out), 0);
    const got = new Uint8Array(2);
    h.proc.read(out, got);
    assert.deepEqual([...got], [0b101, 0b10]);
  });

  it("counts bits whose IOVA nothing maps without marking anything", () => {
    const { h, hwpt, bitmap } = dirtySetup();
    assert.equal(h.setDirtyTracking(hwpt, true), 0);
    h.proc.write(bitmap, new Uint8Array([0xff]));
    const far = START + 0x100_0000n;
    const r = h.test(OP.DIRTY, hwpt, { iova: far, length: 8n * P, page_size: P, uptr: bitmap });
    assert.equal(r.errno, 0);
    assert.equal(r.out.out_nr_dirty, 8n);
  });
});

describe("IOMMU_TEST_OP_MD_CHECK_IOTLB", () => {
  it("needs a nested HWPT and compares one of four slots", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const parent = h.hwptAllocOk(md.idev, ioas, NEST_PARENT);
    const nested = h.hwptAllocOk(md.idev, parent, 0, [0xbadbeef]);
    const check = (id: number, slot: number, iotlb: number) =>
      h.test(OP.MD_CHECK_IOTLB, id, { id: slot, iotlb }).errno;
    assert.equal(check(parent, 0, 0xbadbeef), ENOENT);
    assert.equal(check(99, 0, 0xbadbeef), ENOENT);
    for (let slot = 0; slot < 4; slot++) assert.equal(check(nested, slot, 0xbadbeef), 0);
    assert.equal(check(nested, 4, 0xbadbeef), EINVAL);
    assert.equal(check(nested, 0, 0), EINVAL);
    assert.deepEqual(h.invalidate(nested, [[0, 2]]), { errno: 0, num: 1 });
    assert.equal(check(nested, 2, 0), 0);
    assert.equal(check(nested, 1, 0xbadbeef), 0);
  });
});

describe("IOMMU_TEST_OP_DEV_CHECK_CACHE", () => {
  it("looks up the DEVICE (ENOENT) and compares one of four cache slots", () => {
    const { h, ioas } = setup();
    const md = h.mockDomain(ioas);
    const check = (id: number, slot: number, cache: number) =>
      h.test(OP.DEV_CHECK_CACHE, id, { id: slot, cache }).errno;
    assert.equal(check(md.stdev, 0, 0xbaddad), ENOENT);
    assert.equal(check(99, 0, 0xbaddad), ENOENT);
    for (let slot = 0; slot < 4; slot++) assert.equal(check(md.idev, slot, 0xbaddad), 0);
    assert.equal(check(md.idev, 4, 0xbaddad), EINVAL);
    assert.equal(check(md.idev, 1, 0), EINVAL);
    mdev(h, md.stdev).cache[1] = 0;
    assert.equal(check(md.idev, 1, 0), 0);
  });
});

describe("closing a context with mock devices", () => {
  it("destroys every selftest object, device and table page, and releases every pin", () => {
    const { h, ioas, buf } = setup();
    const devicesBefore = mockIommu.devices.size;
    const tablesBefore = mockIommu.alloc.live;
    const a = h.mockDomain(ioas);
    h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
    h.hwptAllocOk(a.idev, ioas);
    h.mapOk(ioas, buf, 16 * PAGE, START);
    assert.equal(h.checkRefs(buf, 16 * PAGE, 1), 0);
    assert.ok(mockIommu.alloc.live > tablesBefore);
    assert.deepEqual(h.ctx.close(), []);
    assert.equal(h.ctx.table.size, 0);
    assert.equal(mockIommu.devices.size, devicesBefore);
    assert.equal(mockIommu.alloc.live, tablesBefore);
    const fresh = new SelftestHarness(h.proc);
    assert.equal(fresh.checkRefs(buf, 16 * PAGE, 0), 0);
    assert.equal(h.proc.accounting.pinnedPages, 0);
  });

  it("FIXED maps into the aperture only (the default domain's [2^24, 2^31))", () => {
    const { h, ioas, buf } = setup();
    h.mockDomain(ioas);
    assert.equal(h.map(ioas, buf, PAGE, { iova: 0x1000n, flags: RW | FIXED }).errno, EINVAL);
    assert.equal(h.map(ioas, buf, PAGE, { iova: START, flags: RW | FIXED }).errno, 0);
  });
});

/**
 * IOMMU_GET_HW_INFO through the codec (hwpt-device.md §12; selftest iommufd_ioas.get_hw_info
 * and iommufd_dirty_tracking.device_dirty_capability).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { contiguousPages } from "../../src/core/user_mm.ts";
import { EFAULT, ENOENT, ENOMEM, EOPNOTSUPP } from "../../src/errno.ts";
import { MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_PASID } from "../../src/hw/mock/index.ts";
import { encode, IOMMU_GET_HW_INFO, IOMMU_HW_INFO_LAYOUT } from "../../src/uapi/index.ts";
import { DevHarness } from "./device_harness.ts";

const SELFTEST_TYPE = 0xfeedbeef;
const INPUT_TYPE = 1;

function setup(flags = 0) {
  const h = new DevHarness();
  const ioas = h.ioasAlloc();
  const b = h.mockDomain(ioas, flags);
  return { h, dev: b.idev.id };
}

function fill(h: DevHarness, len: number, byte: number): bigint {
  const va = h.proc.mmap(Math.max(len, 1));
  h.proc.write(va, new Uint8Array(len).fill(byte));
  return va;
}

describe("IOMMU_GET_HW_INFO", () => {
  it("returns the mock's 8-byte info, its type, capabilities and PASID width", () => {
    const { h, dev } = setup();
    const buf = fill(h, 8, 0xaa);
    const r = h.hwInfo(dev, { dataLen: 8, uptr: buf });
    assert.equal(r.errno, 0);
    assert.equal(r.out.out_data_type, SELFTEST_TYPE);
    assert.equal(r.out.data_len, 8);
    assert.equal(r.out.out_capabilities, 9n); // DIRTY_TRACKING | PCI_ATS_NOT_SUPPORTED
    assert.equal(r.out.out_max_pasid_log2, 0);
    const got = new Uint8Array(8);
    h.proc.read(buf, got);
    assert.deepEqual([...got], [0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
  });

  it("zeroes the tail of a larger buffer and writes part of a smaller one", () => {
    const { h, dev } = setup();
    const big = fill(h, 16, 0xaa);
    const r = h.hwInfo(dev, { dataLen: 16, uptr: big });
    assert.equal(r.errno, 0);
    assert.equal(r.out.data_len, 8);
    const got = new Uint8Array(16);
    h.proc.read(big, got);
    assert.deepEqual([...got.subarray(8)], new Array(8).fill(0));
    const small = fill(h, 8, 0xaa);
    const s = h.hwInfo(dev, { dataLen: 4, uptr: small });
    assert.equal(s.errno, 0);
    assert.equal(s.out.data_len, 8);
    const g2 = new Uint8Array(8);
    h.proc.read(small, g2);
    assert.deepEqual([...g2], [0, 0, 0, 0, 0xaa, 0xaa, 0xaa, 0xaa]);
    const none = h.hwInfo(dev, { dataLen: 0, uptr: 0n });
    assert.equal(none.errno, 0);
    assert.equal(none.out.data_len, 8);
  });

  it("reports 20 PASID bits for a PASID device and no dirty capability with NO_DIRTY", () => {
    const pasid = setup(MOCK_FLAGS_DEVICE_PASID);
    assert.equal(pasid.h.hwInfo(pasid.dev).out.out_max_pasid_log2, 20);
    const nd = setup(MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(nd.h.hwInfo(nd.dev).out.out_capabilities, 8n);
  });

  it("takes an input type only with INPUT_TYPE, passing the driver's EOPNOTSUPP back", () => {
    const { h, dev } = setup();
    assert.equal(h.hwInfo(dev, { inType: SELFTEST_TYPE + 1 }).errno, 0); // ignored
    assert.equal(h.hwInfo(dev, { flags: INPUT_TYPE, inType: SELFTEST_TYPE + 1 }).errno, EOPNOTSUPP);
    const r = h.hwInfo(dev, { flags: INPUT_TYPE, inType: SELFTEST_TYPE });
    assert.equal(r.errno, 0);
    assert.equal(r.out.out_data_type, SELFTEST_TYPE);
  });

  it("checks flags, __reserved and dev_id", () => {
    const { h, dev } = setup();
    assert.equal(h.hwInfo(dev, { flags: 2 }).errno, EOPNOTSUPP);
    const r = h.call(IOMMU_GET_HW_INFO, IOMMU_HW_INFO_LAYOUT, {
      dev_id: dev,
      __reserved: [0, 1, 0],
    });
    assert.equal(r.errno, EOPNOTSUPP);
    assert.equal(h.hwInfo(0).errno, ENOENT);
    assert.equal(h.hwInfo(dev + 100).errno, ENOENT);
  });

  it("fails with EFAULT on an unwritable buffer or command, and ENOMEM at the info allocation", () => {
    const { h, dev } = setup();
    assert.equal(h.hwInfo(dev, { dataLen: 8, uptr: 8n }).errno, EFAULT);
    // The buffer is fine but its zeroed tail runs into unmapped memory.
    const edge = h.proc.mmap(4096);
    assert.equal(h.hwInfo(dev, { dataLen: 16, uptr: edge + 4088n }).errno, EFAULT);
    // A read-only command: everything runs, then the write-back fails.
    const page = contiguousPages(1)[0];
    const b = new Uint8Array(IOMMU_HW_INFO_LAYOUT.size);
    encode(IOMMU_HW_INFO_LAYOUT, { size: b.length, dev_id: dev }, b);
    page.write(0, b);
    const ro = h.proc.mmap(4096, { pages: [page], writable: false });
    assert.equal(h.ctx.ioctl(IOMMU_GET_HW_INFO, ro, h.proc).errno, EFAULT);
    h.ctx.faults.arm(2); // the device lookup, then the info allocation
    assert.equal(h.hwInfo(dev, { dataLen: 8, uptr: fill(h, 8, 0) }).errno, ENOMEM);
  });
});

/**
 * ioctl numbers against values known independently of this code: the constant asserted in
 * cloud-hypervisor/iommufd (iommufd-ioctls: IOMMU_IOAS_ALLOC == 15233), and the arithmetic of
 * _IO(';', nr) done by hand here. (The VFIO numbers are also compared with the system
 * <linux/vfio.h> in layout.test.ts.)
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as io from "../../src/uapi/ioctl.ts";

test("IOMMU_IOAS_ALLOC is 0x3b81 (15233), as cloud-hypervisor's iommufd crate asserts", () => {
  assert.equal(io.IOMMU_IOAS_ALLOC, 0x3b81);
  assert.equal(io.IOMMU_IOAS_ALLOC, 15233);
});

test("every iommufd command number is ';' << 8 | nr with nr 0x80..0x95, and TEST_CMD 0x3ba0", () => {
  const byName: [string, number][] = [
    ["IOMMU_DESTROY", 0x3b80],
    ["IOMMU_IOAS_ALLOC", 0x3b81],
    ["IOMMU_IOAS_ALLOW_IOVAS", 0x3b82],
    ["IOMMU_IOAS_COPY", 0x3b83],
    ["IOMMU_IOAS_IOVA_RANGES", 0x3b84],
    ["IOMMU_IOAS_MAP", 0x3b85],
    ["IOMMU_IOAS_UNMAP", 0x3b86],
    ["IOMMU_OPTION", 0x3b87],
    ["IOMMU_VFIO_IOAS", 0x3b88],
    ["IOMMU_HWPT_ALLOC", 0x3b89],
    ["IOMMU_GET_HW_INFO", 0x3b8a],
    ["IOMMU_HWPT_SET_DIRTY_TRACKING", 0x3b8b],
    ["IOMMU_HWPT_GET_DIRTY_BITMAP", 0x3b8c],
    ["IOMMU_HWPT_INVALIDATE", 0x3b8d],
    ["IOMMU_FAULT_QUEUE_ALLOC", 0x3b8e],
    ["IOMMU_IOAS_MAP_FILE", 0x3b8f],
    ["IOMMU_VIOMMU_ALLOC", 0x3b90],
    ["IOMMU_VDEVICE_ALLOC", 0x3b91],
    ["IOMMU_IOAS_CHANGE_PROCESS", 0x3b92],
    ["IOMMU_VEVENTQ_ALLOC", 0x3b93],
    ["IOMMU_HW_QUEUE_ALLOC", 0x3b94],
    ["IOMMU_IOAS_NOIOMMU_GET_PA", 0x3b95],
    ["IOMMU_TEST_CMD", 0x3ba0],
  ];
  const consts = io as unknown as Record<string, number>;
  for (const [name, value] of byName) assert.equal(consts[name], value, name);
  assert.equal(io.IOMMUFD_TYPE, ";".charCodeAt(0));
  // The IOMMUFD_CMD enum is dense from BASE to NOIOMMU_GET_PA.
  const nrs = Object.entries(io.IOMMUFD_CMD)
    .filter(([k]) => k !== "BASE")
    .map(([, v]) => v)
    .sort((a, b) => a - b);
  assert.deepEqual(
    nrs,
    Array.from({ length: 0x16 }, (_, i) => 0x80 + i),
  );
});

test("VFIO container ioctls are _IO(';', 100 + n)", () => {
  assert.equal(io.VFIO_GET_API_VERSION, 0x3b64);
  assert.equal(io.VFIO_CHECK_EXTENSION, 0x3b65);
  assert.equal(io.VFIO_SET_IOMMU, 0x3b66);
  assert.equal(io.VFIO_IOMMU_GET_INFO, 0x3b70);
  assert.equal(io.VFIO_IOMMU_MAP_DMA, 0x3b71);
  assert.equal(io.VFIO_IOMMU_UNMAP_DMA, 0x3b72);
  assert.equal(io.VFIO_IOMMU_DIRTY_PAGES, 0x3b75);
  // All below IOMMUFD_CMD_BASE: they reach the fallthrough, never the iommufd op table.
  for (const n of [io.VFIO_GET_API_VERSION, io.VFIO_IOMMU_DIRTY_PAGES]) {
    assert.ok(io.iocNr(n) < io.IOMMUFD_CMD_BASE);
  }
});

test("_IOC_NR and _IOC_TYPE split a request number", () => {
  const withDirAndSize = (3 << 30) | (72 << 16) | io.IOMMU_TEST_CMD;
  assert.equal(io.iocNr(withDirAndSize), 0xa0);
  assert.equal(io.iocType(withDirAndSize), 0x3b);
  assert.equal(io.IO(0x41, 0x80), 0x4180);
});

test("a few flag values the selftest relies on", () => {
  assert.equal(io.IOMMU_IOAS_MAP_FIXED_IOVA | io.IOMMU_IOAS_MAP_WRITEABLE, 3);
  assert.equal(io.IOMMU_IOAS_MAP_READABLE, 4);
  assert.equal(io.IOMMU_HWPT_ALLOC_PASID, 8);
  assert.equal(io.MOCK_APERTURE_START, 0x1000000);
  assert.equal(io.MOCK_APERTURE_LAST, 0x7fffffff);
  assert.equal(io.MOCK_HUGE_PAGE_SIZE, 1 << 20);
  assert.equal(io.IOMMU_TEST_OP.DMABUF_REVOKE, 23);
  assert.equal(io.MOCK_FLAGS_ACCESS_SYZ, 0x10000);
});

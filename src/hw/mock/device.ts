/**
 * A selftest mock device (struct mock_dev): a platform device on the iommufd_mock bus behind
 * the mock IOMMU, in an iommu group of its own, with the flags IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS
 * gives it and the state the selftest ops inspect (cache slots, vIOMMU link, PASID 1024 quirk).
 *
 * Facts: drivers/iommu/iommufd/selftest.c @8c4dc1a5 (struct mock_dev, mock_dev_create,
 * mock_dev_destroy), drivers/iommu/iommu.c (dev_iommu_get_max_pasids), iommufd_test.h;
 * spec mock-driver-failnth.md §2.2 and §3.1.
 */
import type {
  IommuDevice,
  IommuDomain,
  IommuGroup,
  IommuInstance,
  IommuOps,
  ViommuLink,
} from "../../core/driver.ts";

/** iommufd_test.h: MOCK_FLAGS_DEVICE_*. Bit 1 (HUGE_IOVA) no longer exists. */
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0;
export const MOCK_FLAGS_DEVICE_PASID = 1 << 2;
export const MOCK_FLAGS_DEVICE_VALID = MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_PASID;
/** iommufd_test.h: the "pasid-num-bits" property of a PASID mock device. */
export const MOCK_PASID_WIDTH = 20;
/** iommufd_test.h: the device's fake cache (vIOMMU invalidation target). */
export const MOCK_DEV_CACHE_NUM = 4;
export const MOCK_DEV_CACHE_ID_MAX = 3;
export const IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;

export class MockDevice implements IommuDevice {
  /** "iommufd_mock<N>", N the lowest free number of the module-wide ida. */
  readonly name: string;
  /** The ida number behind the name. */
  readonly index: number;
  readonly ops: IommuOps;
  readonly iommu: IommuInstance;
  group: IommuGroup | null = null;
  readonly maxPasids: number;
  readonly pciPriVf = false;
  readonly selftestMock = true;
  readonly msiIsolated = false;
  /** MOCK_FLAGS_DEVICE_* it was created with. */
  readonly mockFlags: number;
  /** Four cache slots (IOMMU_TEST_OP_DEV_CHECK_CACHE), cleared by vIOMMU invalidation. */
  readonly cache = new Uint32Array(MOCK_DEV_CACHE_NUM).fill(IOMMU_TEST_DEV_CACHE_DEFAULT);
  /** pasid_1024_fake_error. */
  pasid1024FakeError = false;
  /** iopf_refcount: attachments to domains with a fault handler. */
  iopfRefcount = 0;
  /** The vIOMMU (and its vDEVICE's virtual id) of the nested domain the RID last attached. */
  viommu: ViommuLink | null = null;
  vdevId = 0n;
  /** mdev->domain: the domain the RID last attached (the blocking domain at creation). */
  ridDomain: IommuDomain | null;
  /** Cleared when the device is deleted. */
  live = true;

  constructor(
    index: number,
    flags: number,
    iommu: IommuInstance,
    ops: IommuOps,
    ridDomain: IommuDomain,
  ) {
    this.index = index;
    this.name = `iommufd_mock${index}`;
    this.mockFlags = flags;
    this.iommu = iommu;
    this.ops = ops;
    this.ridDomain = ridDomain;
    // dev_iommu_get_max_pasids: 1 << pasid-num-bits (so 1 with no PASID support), capped by
    // the IOMMU instance's max_pasids.
    const bits = (flags & MOCK_FLAGS_DEVICE_PASID) !== 0 ? MOCK_PASID_WIDTH : 0;
    this.maxPasids = Math.min(2 ** bits, iommu.maxPasids);
  }

  get noDirty(): boolean {
    return (this.mockFlags & MOCK_FLAGS_DEVICE_NO_DIRTY) !== 0;
  }
}

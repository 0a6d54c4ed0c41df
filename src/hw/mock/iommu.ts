/**
 * The iommufd selftest's mock IOMMU (struct mock_iommu_device + mock_ops): the driver behind
 * every device IOMMU_TEST_OP_MOCK_DOMAIN creates. It answers capabilities and hw_info, builds
 * paging domains on the AMD v1 mock page-table formats and nested domains, and owns the table
 * memory of its domains.
 *
 * Facts: drivers/iommu/iommufd/selftest.c @8c4dc1a5 (mock_ops, mock_domain_capable,
 * mock_domain_hw_info, mock_domain_alloc_paging_flags, mock_domain_alloc_pgtable,
 * mock_domain_alloc_nested, mock_viommu_alloc_domain_nested, mock_dev_create, the mock_iommu
 * instance with max_pasids = 1 << MOCK_PASID_WIDTH), iommufd_test.h; spec
 * mock-driver-failnth.md §3.1-§3.3, hwpt-device.md §3 step 7 and §10.
 */

import {
  allocFailure,
  type DriverPagingDomain,
  type FaultInjector,
  IommuCap,
  type IommuCapValue,
  type IommuDevice,
  type IommuDomain,
  IommuGroup,
  type IommuHwInfo,
  type IommuInstance,
  type IommuNestedDomain,
  type IommuOps,
  type IommuUserData,
  iommuCopyStructFromUser,
  NO_FAULT_INJECTION,
  type ViommuLink,
} from "../../core/driver.ts";
import { EINVAL, EOPNOTSUPP, ErrnoError } from "../../errno.ts";
import { PageAllocator } from "../../mem/alloc.ts";
import { PhysMem } from "../../mem/phys.ts";
import { AMDV1_SELFTEST_GEOMETRIES, MOCK_IOMMUPT_AMDV1 } from "../../pt/fmt/amdv1.ts";
import { MOCK_FLAGS_DEVICE_VALID, MOCK_PASID_WIDTH, MockDevice } from "./device.ts";
import { MockBlockedDomain, MockNestedDomain, MockPagingDomain } from "./domain.ts";

/** iommufd.h IOMMU_HWPT_ALLOC_* flags the mock's paging domains accept. */
const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
const IOMMU_HWPT_ALLOC_PASID = 1 << 3;
const MOCK_PAGING_FLAGS =
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_PASID;

/** iommufd.h / iommufd_test.h data and info types. */
const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
const IOMMU_HW_INFO_TYPE_DEFAULT = 0;
export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;

/** struct iommu_hwpt_selftest {iotlb, pagetable_type}: 8 bytes, first version ends at iotlb. */
const HWPT_SELFTEST_SIZE = 8;
const HWPT_SELFTEST_MIN = 4;

export class MockIommu implements IommuOps, IommuInstance {
  readonly name = "iommufd-mock";
  readonly ops: IommuOps = this;
  /** mock_iommu.iommu_dev.max_pasids. */
  readonly maxPasids = 2 ** MOCK_PASID_WIDTH;
  readonly userPasidTable = true;
  readonly blockedDomain: MockBlockedDomain;
  readonly defaultDomain: MockBlockedDomain;
  /** Memory the domains' page tables live in. */
  readonly mem: PhysMem;
  readonly alloc: PageAllocator;
  /** The module's mock_dev_ida: numbers in use. */
  private readonly devIds = new Set<number>();
  /** Devices created and not yet deleted, by ida number. */
  readonly devices = new Map<number, MockDevice>();

  constructor(mem: PhysMem = new PhysMem()) {
    this.mem = mem;
    this.alloc = new PageAllocator(mem);
    this.blockedDomain = new MockBlockedDomain(this);
    this.defaultDomain = this.blockedDomain;
  }

  // ---- devices (mock_dev_create / mock_dev_destroy) ----------------------------------------

  /**
   * mock_dev_create: EINVAL for flags outside NO_DIRTY | PASID, ENOMEM at the allocation site;
   * the new device gets the lowest free name number and a group of its own on the blocking
   * (default) domain.
   */
  createDevice(flags: number, faults: FaultInjector = NO_FAULT_INJECTION): MockDevice {
    if ((flags & ~MOCK_FLAGS_DEVICE_VALID) !== 0)
      throw new ErrnoError(EINVAL, `mock device flags 0x${flags.toString(16)}`);
    if (faults.shouldFail("mock_dev_create")) throw allocFailure("mock device");
    let index = 0;
    while (this.devIds.has(index)) index++;
    const mdev = new MockDevice(index, flags, this, this, this.blockedDomain);
    const group = new IommuGroup(this.defaultDomain, this.blockedDomain);
    group.devices.push(mdev);
    mdev.group = group;
    this.devIds.add(index);
    this.devices.set(index, mdev);
    return mdev;
  }

  /**
   * mock_dev_destroy: unregisters the device and frees its number. A device iommufd still holds
   * (unbound with PASIDs left attached: the kernel WARNs and leaks it until the fd closes) keeps
   * its group pointer so that the final release of its DEVICE object still works.
   */
  destroyDevice(mdev: MockDevice): void {
    if (!mdev.live) return;
    const group = mdev.group;
    if (group !== null) {
      const i = group.devices.indexOf(mdev);
      if (i >= 0) group.devices.splice(i, 1);
      if (group.ownerCnt === 0) mdev.group = null;
    }
    mdev.live = false;
    this.devIds.delete(mdev.index);
    this.devices.delete(mdev.index);
  }

  // ---- iommu_ops ---------------------------------------------------------------------------

  /** mock_domain_capable: cache coherency always, dirty tracking unless NO_DIRTY, nothing else. */
  capable(dev: IommuDevice, cap: IommuCapValue): boolean {
    if (cap === IommuCap.CACHE_COHERENCY) return true;
    if (cap === IommuCap.DIRTY_TRACKING) return !(dev as MockDevice).noDirty;
    return false;
  }

  /**
   * mock_domain_hw_info: only DEFAULT or SELFTEST (EOPNOTSUPP otherwise); 8 bytes
   * {flags 0, test_reg 0xdeadbeef} of type SELFTEST.
   */
  hwInfo(_dev: IommuDevice, type: number, faults: FaultInjector): IommuHwInfo {
    if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_SELFTEST)
      throw new ErrnoError(EOPNOTSUPP, `mock hw_info type 0x${type.toString(16)}`);
    if (faults.shouldFail("mock_domain_hw_info")) throw allocFailure("mock hw_info");
    const data = new Uint8Array(8);
    new DataView(data.buffer).setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true);
    return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
  }

  /**
   * mock_domain_alloc_paging_flags, in order: flags outside DIRTY | NEST_PARENT | PASID, or
   * DIRTY on a NO_DIRTY device: EOPNOTSUPP; data of a type other than SELFTEST / NONE:
   * EOPNOTSUPP; the data copied as iommu_hwpt_selftest (EINVAL, EFAULT); the domain allocation
   * (ENOMEM); pagetable_type other than DEFAULT (0) / HUGE (1): EOPNOTSUPP.
   */
  domainAllocPagingFlags(
    dev: IommuDevice,
    flags: number,
    userData: IommuUserData | null,
    faults: FaultInjector,
  ): DriverPagingDomain {
    const dirty = (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    if ((flags & ~MOCK_PAGING_FLAGS) !== 0 || (dirty && (dev as MockDevice).noDirty))
      throw new ErrnoError(EOPNOTSUPP, `mock paging flags 0x${flags.toString(16)}`);
    if (
      userData !== null &&
      userData.type !== IOMMU_HWPT_DATA_SELFTEST &&
      userData.type !== IOMMU_HWPT_DATA_NONE
    )
      throw new ErrnoError(EOPNOTSUPP, `mock paging data type 0x${userData.type.toString(16)}`);
    const cfg = new Uint8Array(HWPT_SELFTEST_SIZE);
    if (userData !== null) {
      const rc = iommuCopyStructFromUser(
        cfg,
        userData,
        IOMMU_HWPT_DATA_SELFTEST,
        HWPT_SELFTEST_MIN,
      );
      if (rc !== 0) throw new ErrnoError(rc, "mock paging data copy");
    }
    const pagetableType = new DataView(cfg.buffer).getUint32(4, true);
    if (faults.shouldFail("mock_domain_alloc_pgtable")) throw allocFailure("mock domain");
    // MOCK_IOMMUPT_AMDV1 (2) was removed from the selftest: only DEFAULT and HUGE remain.
    const geometry =
      pagetableType === MOCK_IOMMUPT_AMDV1
        ? undefined
        : AMDV1_SELFTEST_GEOMETRIES.find((g) => g.pagetableType === pagetableType);
    if (geometry === undefined)
      throw new ErrnoError(EOPNOTSUPP, `mock pagetable_type ${pagetableType}`);
    return new MockPagingDomain(this, this.alloc, geometry, dirty);
  }

  /**
   * mock_domain_alloc_nested: flags other than PASID EOPNOTSUPP; a parent that is not a paging
   * domain EINVAL; then the nested data rules (see allocNested).
   */
  domainAllocNested(
    _dev: IommuDevice,
    parent: IommuDomain,
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ): IommuNestedDomain {
    if ((flags & ~IOMMU_HWPT_ALLOC_PASID) !== 0)
      throw new ErrnoError(EOPNOTSUPP, `mock nested flags 0x${flags.toString(16)}`);
    if (parent.kind !== "paging") throw new ErrnoError(EINVAL, "nest parent is not paging");
    return this.allocNested(parent, null, userData, faults);
  }

  /**
   * mock_viommu_alloc_domain_nested (the mock vIOMMU's alloc_domain_nested op, for the vIOMMU
   * slice): flags other than PASID EOPNOTSUPP, then the nested data rules; the domain remembers
   * `viommu`, so attaching it needs the device's vDEVICE there.
   */
  viommuAllocDomainNested(
    viommu: ViommuLink,
    parent: DriverPagingDomain | null,
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector = NO_FAULT_INJECTION,
  ): MockNestedDomain {
    if ((flags & ~IOMMU_HWPT_ALLOC_PASID) !== 0)
      throw new ErrnoError(EOPNOTSUPP, `mock nested flags 0x${flags.toString(16)}`);
    return this.allocNested(parent, viommu, userData, faults);
  }

  /**
   * __mock_domain_alloc_nested: data type other than SELFTEST EOPNOTSUPP; the copy of
   * iommu_hwpt_selftest (length < 4 or > 8 EINVAL, EFAULT); allocation ENOMEM; every IOTLB
   * slot starts as the data's `iotlb` (pagetable_type is ignored).
   */
  private allocNested(
    parent: DriverPagingDomain | null,
    viommu: ViommuLink | null,
    userData: IommuUserData,
    faults: FaultInjector,
  ): MockNestedDomain {
    if (userData.type !== IOMMU_HWPT_DATA_SELFTEST)
      throw new ErrnoError(EOPNOTSUPP, `mock nested data type 0x${userData.type.toString(16)}`);
    const cfg = new Uint8Array(HWPT_SELFTEST_SIZE);
    const rc = iommuCopyStructFromUser(cfg, userData, IOMMU_HWPT_DATA_SELFTEST, HWPT_SELFTEST_MIN);
    if (rc !== 0) throw new ErrnoError(rc, "mock nested data copy");
    if (faults.shouldFail("mock_domain_alloc_nested")) throw allocFailure("mock nested domain");
    const iotlb = new DataView(cfg.buffer).getUint32(0, true);
    return new MockNestedDomain(this, parent, viommu, iotlb);
  }
}

/** The one mock IOMMU instance the selftest module registers. */
export const mockIommu = new MockIommu();

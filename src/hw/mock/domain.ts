/**
 * The iommufd selftest mock IOMMU's domains: paging domains on the generic page-table walker
 * with the selftest's AMD v1 "mock" formats, nested domains with a four-slot fake IOTLB, and
 * the blocking domain. All three share the mock's attach_dev / set_dev_pasid ops.
 *
 * Facts: drivers/iommu/iommufd/selftest.c @8c4dc1a5 (mock_domain_nop_attach,
 * mock_domain_set_dev_pasid_nop, mock_dev_enable_iopf / mock_dev_disable_iopf,
 * mock_domain_set_dirty_tracking, mock_domain_alloc_pgtable, __mock_domain_alloc_nested,
 * mock_domain_cache_invalidate_user); spec mock-driver-failnth.md §3.2-§3.3,
 * hwpt-device.md §10.2 and §15.2; the page-table side is src/pt/fmt/amdv1.ts.
 */

import type {
  DirtyRecord,
  DriverPagingDomain,
  IommuBlockedDomain,
  IommuDevice,
  IommuDomain,
  IommuNestedDomain,
  IommuOps,
  IommuUserDataArray,
  ViommuLink,
} from "../../core/driver.ts";
import { iommuCopyStructFromUserArray } from "../../core/driver.ts";
import { EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, ErrnoError } from "../../errno.ts";
import type { PageAllocator } from "../../mem/alloc.ts";
import type { Amdv1SelftestGeometry } from "../../pt/fmt/amdv1.ts";
import { PageTable } from "../../pt/walker.ts";
import type { UserMemory } from "../../uapi/user_memory.ts";
import type { MockDevice } from "./device.ts";

/** iommufd_test.h: the nested domain's fake IOTLB. */
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;
export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
/** iommufd_test.h: the PASID whose set_dev_pasid fails every second time (see below). */
export const IOMMU_TEST_PASID_RESERVED = 1024;
/** iommufd_test.h: HWPT_INVALIDATE data type of nested mock domains and its flag. */
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1;
/** sizeof(struct iommu_hwpt_invalidate_selftest) and its first version's end (iotlb_id). */
const INVALIDATE_ENTRY_SIZE = 8;
const INVALIDATE_ENTRY_MIN = 8;

function asMockDevice(dev: IommuDevice): MockDevice {
  const m = dev as Partial<MockDevice>;
  if (m.mockFlags === undefined) throw new ErrnoError(EINVAL, `${dev.name} is not a mock device`);
  return dev as MockDevice;
}

/** mock_dev_enable_iopf: a domain with iommufd's fault handler puts the device on the queue. */
function enableIopf(mdev: MockDevice, domain: IommuDomain | null): void {
  if (domain === null || domain.faultData === null) return;
  mdev.iopfRefcount++;
}

/** mock_dev_disable_iopf: the reverse, for the domain being left. */
function disableIopf(mdev: MockDevice, domain: IommuDomain | null): void {
  if (domain === null || domain.faultData === null) return;
  if (mdev.iopfRefcount > 0) mdev.iopfRefcount--;
}

/**
 * mock_domain_nop_attach, the attach_dev of every mock domain:
 *  1. a domain with dirty ops on a NO_DIRTY device: EINVAL;
 *  2. a nested domain made from a vIOMMU needs the device's vDEVICE there: ENOENT otherwise;
 *  3. the device remembers that vIOMMU and virtual id (cleared when leaving for another);
 *  4. IOPF is enabled for the new domain, then dropped for the one the RID used before.
 */
function mockAttachDev(domain: IommuDomain, dev: IommuDevice): void {
  const mdev = asMockDevice(dev);
  if (domain.kind === "paging" && domain.hasDirtyOps && mdev.noDirty)
    throw new ErrnoError(EINVAL, "dirty-tracking domain on a NO_DIRTY mock device");
  let viommu: ViommuLink | null = null;
  let vdevId = 0n;
  if (domain.kind === "nested" && domain instanceof MockNestedDomain && domain.viommu !== null) {
    viommu = domain.viommu;
    const id = viommu.vdevIdOf(dev);
    if (id === undefined) throw new ErrnoError(ENOENT, `${dev.name} has no vDEVICE on the vIOMMU`);
    vdevId = id;
  }
  if (viommu !== mdev.viommu) {
    mdev.viommu = viommu;
    mdev.vdevId = vdevId;
  }
  enableIopf(mdev, domain);
  disableIopf(mdev, mdev.ridDomain);
  mdev.ridDomain = domain;
}

/**
 * mock_domain_set_dev_pasid_nop, with the selftest's PASID 1024 quirk: per device, the first
 * set of PASID 1024 to a non-blocking domain arms a fake error, the next one consumes it and
 * fails with ENOMEM (so a replace of 1024 fails once after an attach), and blocking 1024
 * (detach) disarms it. Then IOPF moves from `old` to the new domain.
 */
function mockSetDevPasid(
  domain: IommuDomain,
  dev: IommuDevice,
  pasid: number,
  old: IommuDomain | null,
): void {
  const mdev = asMockDevice(dev);
  if (pasid === IOMMU_TEST_PASID_RESERVED) {
    if (domain.kind === "blocked") {
      mdev.pasid1024FakeError = false;
    } else if (mdev.pasid1024FakeError) {
      mdev.pasid1024FakeError = false;
      throw new ErrnoError(ENOMEM, "mock: fake failure of PASID 1024");
    } else {
      mdev.pasid1024FakeError = true;
    }
  }
  enableIopf(mdev, domain);
  disableIopf(mdev, old);
}

/** The mock's blocking domain (also its default domain). */
export class MockBlockedDomain implements IommuBlockedDomain {
  readonly kind = "blocked";
  readonly owner: IommuOps;
  faultData: object | null = null;

  constructor(owner: IommuOps) {
    this.owner = owner;
  }

  attachDev(dev: IommuDevice, _old: IommuDomain | null): void {
    mockAttachDev(this, dev);
  }

  setDevPasid(dev: IommuDevice, pasid: number, old: IommuDomain | null): void {
    mockSetDevPasid(this, dev, pasid, old);
  }
}

/**
 * A mock paging domain: a generic page table in the selftest's AMD v1 mock format (2 KiB
 * granule; MOCK_IOMMUPT_DEFAULT narrows the aperture to [2^24, 2^31 - 1], MOCK_IOMMUPT_HUGE
 * restricts pages to 1 MiB and 4 KiB), with dirty ops when allocated with DIRTY_TRACKING.
 */
export class MockPagingDomain implements DriverPagingDomain {
  readonly kind = "paging";
  readonly owner: IommuOps;
  faultData: object | null = null;
  readonly pgsizeBitmap: bigint;
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  readonly hasDirtyOps: boolean;
  readonly enforceCacheCoherency = false;
  /** iommu_hwpt_selftest.pagetable_type it was built with. */
  readonly pagetableType: number;
  readonly pt: PageTable;
  /** MOCK_DIRTY_TRACK: hardware dirty tracking is on (IOMMU_HWPT_SET_DIRTY_TRACKING). */
  dirtyTracking = false;
  /** Set once free() ran. */
  freed = false;

  constructor(
    owner: IommuOps,
    alloc: PageAllocator,
    geometry: Amdv1SelftestGeometry,
    dirtyOps: boolean,
  ) {
    this.owner = owner;
    this.pagetableType = geometry.pagetableType;
    this.pgsizeBitmap = geometry.pgsizeBitmap;
    this.apertureStart = geometry.apertureStart;
    this.apertureLast = geometry.apertureLast;
    this.hasDirtyOps = dirtyOps;
    this.pt = new PageTable(geometry.format, alloc, { pgsizeBitmap: geometry.pgsizeBitmap });
  }

  /** The smallest page the domain maps (what MD_CHECK_MAP steps by). */
  get minPageSize(): number {
    return 2 ** this.pt.minPageLg2;
  }

  map(iova: bigint, pa: number, length: bigint, prot: number): void {
    this.pt.map(iova, pa, length, prot);
  }

  unmap(iova: bigint, length: bigint): bigint {
    return this.pt.unmap(iova, length);
  }

  iovaToPhys(iova: bigint): number | undefined {
    return this.pt.iovaToPhys(iova);
  }

  /** mock_domain_set_dirty_tracking: EINVAL without dirty ops; unchanged state is a no-op. */
  setDirtyTracking(enable: boolean): void {
    if (enable && !this.hasDirtyOps)
      throw new ErrnoError(EINVAL, "mock domain has no dirty tracking ops");
    this.dirtyTracking = enable;
  }

  /** generic_pt read_and_clear_dirty: whole dirty leaves (a contiguous group counts as one). */
  readAndClearDirty(iova: bigint, length: bigint, noClear: boolean, record: DirtyRecord): void {
    if (!this.hasDirtyOps) throw new ErrnoError(EOPNOTSUPP, "mock domain has no dirty ops");
    this.pt.readAndClearDirty(
      iova,
      length,
      (hi, lo, sizeLg2) => record((BigInt(hi) << 32n) | BigInt(lo), 1n << BigInt(sizeLg2)),
      noClear,
    );
  }

  /**
   * The iommupt set_dirty test hook (IOMMU_TEST_OP_DIRTY): marks the leaf slot that translates
   * `iova` dirty, as a device write would. False when nothing maps it.
   */
  setDirty(iova: bigint): boolean {
    return this.pt.setDirty(iova);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.pt.free();
  }

  attachDev(dev: IommuDevice, _old: IommuDomain | null): void {
    mockAttachDev(this, dev);
  }

  setDevPasid(dev: IommuDevice, pasid: number, old: IommuDomain | null): void {
    mockSetDevPasid(this, dev, pasid, old);
  }
}

/**
 * A mock nested domain: no table of its own, just four IOTLB slots user space invalidates
 * (IOMMU_HWPT_INVALIDATE) and MD_CHECK_IOTLB reads. One made from a vIOMMU remembers it, and
 * attaching it requires the device's vDEVICE on that vIOMMU.
 */
export class MockNestedDomain implements IommuNestedDomain {
  readonly kind = "nested";
  readonly owner: IommuOps;
  faultData: object | null = null;
  readonly iotlb = new Uint32Array(MOCK_NESTED_DOMAIN_IOTLB_NUM);
  /** The nest parent when made from a paging domain; null when made from a vIOMMU. */
  readonly parent: DriverPagingDomain | null;
  readonly viommu: ViommuLink | null;
  freed = false;

  constructor(
    owner: IommuOps,
    parent: DriverPagingDomain | null,
    viommu: ViommuLink | null,
    iotlb: number,
  ) {
    this.owner = owner;
    this.parent = parent;
    this.viommu = viommu;
    this.iotlb.fill(iotlb);
  }

  /**
   * mock_domain_cache_invalidate_user: array type other than 0xdeadbeef is EINVAL (even with no
   * entries); then per entry, in order: the copy rules of an 8-byte entry (EINVAL, EFAULT),
   * flags other than ALL EOPNOTSUPP, iotlb_id > 3 EINVAL; ALL zeroes every slot, otherwise the
   * one named. array.entryNum becomes the number of entries handled before any failure.
   */
  cacheInvalidateUser(array: IommuUserDataArray, user: UserMemory): number {
    let processed = 0;
    let rc = 0;
    if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST) {
      rc = EINVAL;
    } else {
      const entry = new Uint8Array(INVALIDATE_ENTRY_SIZE);
      const view = new DataView(entry.buffer);
      for (let i = 0; i < array.entryNum; i++) {
        rc = iommuCopyStructFromUserArray(
          entry,
          array,
          user,
          IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
          i,
          INVALIDATE_ENTRY_MIN,
        );
        if (rc !== 0) break;
        const flags = view.getUint32(0, true);
        const iotlbId = view.getUint32(4, true);
        if ((flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL) !== 0) {
          rc = EOPNOTSUPP;
          break;
        }
        if (iotlbId > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) {
          rc = EINVAL;
          break;
        }
        if ((flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) !== 0) this.iotlb.fill(0);
        else this.iotlb[iotlbId] = 0;
        processed++;
      }
    }
    array.entryNum = processed;
    return rc;
  }

  free(): void {
    this.freed = true;
  }

  attachDev(dev: IommuDevice, _old: IommuDomain | null): void {
    mockAttachDev(this, dev);
  }

  setDevPasid(dev: IommuDevice, pasid: number, old: IommuDomain | null): void {
    mockSetDevPasid(this, dev, pasid, old);
  }
}

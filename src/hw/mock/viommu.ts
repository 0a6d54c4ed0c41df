/**
 * The iommufd selftest mock's vIOMMU (type IOMMU_VIOMMU_TYPE_SELFTEST): its init with the
 * loopback user data and mmap region, nested domains on it, device-cache invalidation through
 * vDEVICE ids, and HW queues with their index dependency. (TRIGGER_IOPF / TRIGGER_VEVENT reach
 * the core through src/core/eventq.ts's iommuReportDeviceFault / viommuReportEvent, which
 * install themselves as src/core/selftest.ts's delivery hooks.)
 *
 * Importing this module registers the mock's vIOMMU ops with the core (registerViommuOps):
 * whoever brings up the mock IOMMU must import it.
 *
 * Facts: drivers/iommu/iommufd/selftest.c @8c4dc1a5 (mock_get_viommu_size, mock_viommu_init,
 * mock_viommu_destroy, mock_viommu_alloc_domain_nested, mock_viommu_cache_invalidate,
 * mock_viommu_get_hw_queue_size, mock_hw_queue_init_phys, mock_hw_queue_destroy);
 * include/linux/iommu.h (iommu_copy_struct_from_user / _to_user, the full-array copy);
 * spec mock-driver-failnth.md §2.14-§2.16, §3.4-§3.5, viommu-eventq.md §2.1 step 8, §9.
 */
import {
  type DriverPagingDomain,
  type FaultInjector,
  type IommuDevice,
  type IommuNestedDomain,
  type IommuUserData,
  type IommuUserDataArray,
  iommuCopyStructFromFullUserArray,
  iommuCopyStructFromUser,
} from "../../core/driver.ts";
import { type HwQueue, hwQueueDepend, hwQueueUndepend } from "../../core/hw_queue.ts";
import { allocMmap, destroyMmap } from "../../core/mmap.ts";
import { PAGE_SIZE } from "../../core/user_mm.ts";
import {
  type IommuViommuOps,
  registerViommuOps,
  type Viommu,
  type ViommuDriver,
} from "../../core/viommu.ts";
import { EEXIST, EFAULT, EINVAL, EIO, ENOMEM, EOPNOTSUPP, ErrnoError } from "../../errno.ts";
import {
  IOMMU_HW_QUEUE_TYPE_SELFTEST,
  IOMMU_TEST_HW_QUEUE_MAX,
  IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
  IOMMU_VIOMMU_TYPE_SELFTEST,
} from "../../uapi/ioctl.ts";
import type { UserMemory } from "../../uapi/user_memory.ts";
import { MOCK_DEV_CACHE_ID_MAX, MockDevice } from "./device.ts";
import { MockIommu } from "./iommu.ts";

/** sizeof(struct iommu_viommu_selftest) and its first version's end (out_data). */
const VIOMMU_SELFTEST_SIZE = 24;
const VIOMMU_SELFTEST_MIN = 8;
/** sizeof(struct iommu_viommu_invalidate_selftest). */
const VIOMMU_INVALIDATE_SIZE = 12;
/** IOMMU_TEST_INVALIDATE_FLAG_ALL. */
const INVALIDATE_FLAG_ALL = 1;
/** The loopback region: two zeroed pages (an order-1 allocation). */
const MOCK_VIOMMU_PAGES_LG2 = 13;
const MOCK_VIOMMU_REGION = BigInt(2 * PAGE_SIZE);

/**
 * iommu_copy_struct_to_user: the user buffer must be at least `minLen` and at most the kernel
 * struct (EINVAL); exactly `data.len` bytes are written (EFAULT).
 */
function copyStructToUser(data: IommuUserData, src: Uint8Array, minLen: number): number {
  if (data.len < minLen || src.length < data.len) return EINVAL;
  return data.user.write(data.uptr, src.subarray(0, data.len)) === 0 ? 0 : EFAULT;
}

/** struct mock_hw_queue's part the mock keeps. */
interface MockHwQueueState {
  readonly prev: HwQueue | null;
  /**
   * The queue's slot as mock_hw_queue_destroy reads it. The selftest never assigns this field
   * (it stays 0 from the zeroed allocation), so destroying any queue clears slot 0 and leaves
   * the queue's own slot set: modelled as the kernel does it.
   */
  readonly index: number;
}

/** struct mock_viommu: the driver's part of one vIOMMU. */
export class MockViommu implements ViommuDriver {
  readonly core: Viommu;
  readonly iommu: MockIommu;
  /** s2_parent: the nest parent's paging domain. */
  readonly s2Parent: DriverPagingDomain;
  /** Physical address of the two loopback pages, or -1 without user data. */
  pagesPa = -1;
  /** Offset of the loopback mmap region, 0n without one. */
  mmapOffset = 0n;
  /** hw_queue[IOMMU_TEST_HW_QUEUE_MAX]. */
  readonly hwQueues: (HwQueue | null)[] = new Array(IOMMU_TEST_HW_QUEUE_MAX).fill(null);
  private readonly queueState = new Map<HwQueue, MockHwQueueState>();

  constructor(core: Viommu, iommu: MockIommu, s2Parent: DriverPagingDomain) {
    this.core = core;
    this.iommu = iommu;
    this.s2Parent = s2Parent;
  }

  /** mock_viommu_destroy: the mmap region and the pages go. */
  destroy(): void {
    if (this.mmapOffset !== 0n) destroyMmap(this.core.ctx, this.core, this.mmapOffset);
    this.mmapOffset = 0n;
    if (this.pagesPa >= 0) this.iommu.alloc.release(this.pagesPa);
    this.pagesPa = -1;
  }

  /** mock_viommu_alloc_domain_nested: flags other than PASID EOPNOTSUPP, then the data rules. */
  allocDomainNested(
    flags: number,
    userData: IommuUserData,
    faults: FaultInjector,
  ): IommuNestedDomain {
    return this.iommu.viommuAllocDomainNested(this.core, this.s2Parent, flags, userData, faults);
  }

  /**
   * mock_viommu_cache_invalidate: an empty array of the right type only probes (0 handled).
   * Otherwise the entries are copied in one go (allocation ENOMEM; type mismatch or an empty
   * array of another type EINVAL; copy EFAULT / E2BIG), then handled in order: flags other
   * than ALL EOPNOTSUPP, cache_id > 3 EINVAL, no vDEVICE with that vdev_id here EINVAL; ALL
   * clears the device's 4 cache slots, else the one named. entryNum = entries handled.
   */
  cacheInvalidate(array: IommuUserDataArray, user: UserMemory): number {
    if (array.entryNum === 0 && array.type === IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST) {
      array.entryNum = 0;
      return 0;
    }
    // kcalloc of zero entries allocates nothing, so only a real array is an injection site.
    if (array.entryNum !== 0 && this.core.ctx.faults.shouldFail("mock_viommu_invalidate_alloc")) {
      array.entryNum = 0;
      return ENOMEM;
    }
    const cmds = new Uint8Array(VIOMMU_INVALIDATE_SIZE * array.entryNum);
    let handled = 0;
    let rc = iommuCopyStructFromFullUserArray(
      cmds,
      VIOMMU_INVALIDATE_SIZE,
      array,
      user,
      IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST,
    );
    if (rc === 0) {
      const view = new DataView(cmds.buffer);
      for (; handled < array.entryNum; handled++) {
        const at = handled * VIOMMU_INVALIDATE_SIZE;
        const flags = view.getUint32(at, true);
        const vdevId = view.getUint32(at + 4, true);
        const cacheId = view.getUint32(at + 8, true);
        if ((flags & ~INVALIDATE_FLAG_ALL) !== 0) {
          rc = EOPNOTSUPP;
          break;
        }
        if (cacheId > MOCK_DEV_CACHE_ID_MAX) {
          rc = EINVAL;
          break;
        }
        const dev = this.core.findDev(BigInt(vdevId));
        if (!(dev instanceof MockDevice)) {
          rc = EINVAL;
          break;
        }
        if ((flags & INVALIDATE_FLAG_ALL) !== 0) dev.cache.fill(0);
        else dev.cache[cacheId] = 0;
      }
    }
    array.entryNum = handled;
    return rc;
  }

  /** mock_viommu_get_hw_queue_size: only IOMMU_HW_QUEUE_TYPE_SELFTEST. */
  getHwQueueSize(type: number): number {
    return type === IOMMU_HW_QUEUE_TYPE_SELFTEST ? 1 : 0;
  }

  /**
   * mock_hw_queue_init_phys, in order: index >= 2 EINVAL; the slot taken EEXIST; index > 0
   * with no queue at index - 1 EIO; `basePa` not what the nest parent translates the queue's
   * IOVA to EFAULT; a queue above 0 depends on the one below (which is then EBUSY to destroy).
   */
  hwQueueInitPhys(queue: HwQueue, index: number, basePa: number): void {
    if (index >= IOMMU_TEST_HW_QUEUE_MAX) throw new ErrnoError(EINVAL, `HW queue index ${index}`);
    if (this.hwQueues[index] !== null)
      throw new ErrnoError(EEXIST, `HW queue ${index} already exists`);
    let prev: HwQueue | null = null;
    if (index > 0) {
      prev = this.hwQueues[index - 1];
      if (prev === null) throw new ErrnoError(EIO, `HW queue ${index - 1} missing`);
    }
    if (basePa !== this.s2Parent.iovaToPhys(queue.baseAddr))
      throw new ErrnoError(EFAULT, "HW queue physical address mismatch");
    if (prev !== null) hwQueueDepend(queue, prev);
    const state: MockHwQueueState = { prev, index: 0 };
    this.queueState.set(queue, state);
    this.hwQueues[index] = queue;
    queue.driverDestroy = () => this.hwQueueDestroy(queue, state);
  }

  /** mock_hw_queue_destroy: clears the slot it reads (see MockHwQueueState), undepends. */
  private hwQueueDestroy(queue: HwQueue, state: MockHwQueueState): void {
    this.hwQueues[state.index] = null;
    if (state.prev !== null) hwQueueUndepend(queue, state.prev);
    this.queueState.delete(queue);
  }
}

/**
 * mock_viommu_init: with user data, copies iommu_viommu_selftest (EINVAL below 8 bytes or
 * above 24, EFAULT), allocates two zeroed pages (ENOMEM), registers them as a 2-page mmap
 * region of the vIOMMU, stores in_data in the first u32, and writes back
 * {out_data = in_data, out_mmap_offset, out_mmap_length = 2 pages} (exactly data_len bytes;
 * EFAULT); failures undo the region and the pages. Without data: nothing of that.
 */
function mockViommuInit(
  viommu: Viommu,
  parent: DriverPagingDomain,
  userData: IommuUserData | null,
  faults: FaultInjector,
): ViommuDriver {
  const iommu = viommu.iommuDev;
  if (!(iommu instanceof MockIommu)) throw new ErrnoError(EINVAL, "not the mock IOMMU");
  const mv = new MockViommu(viommu, iommu, parent);
  if (userData === null) return mv;
  const data = new Uint8Array(VIOMMU_SELFTEST_SIZE);
  let rc = iommuCopyStructFromUser(data, userData, IOMMU_VIOMMU_TYPE_SELFTEST, VIOMMU_SELFTEST_MIN);
  if (rc !== 0) throw new ErrnoError(rc, "mock vIOMMU data copy");
  if (faults.shouldFail("mock_viommu_pages")) throw new ErrnoError(ENOMEM, "mock vIOMMU pages");
  mv.pagesPa = iommu.alloc.alloc(MOCK_VIOMMU_PAGES_LG2);
  try {
    mv.mmapOffset = allocMmap(viommu.ctx, viommu, iommu.mem, mv.pagesPa, MOCK_VIOMMU_REGION);
    const view = new DataView(data.buffer);
    const inData = view.getUint32(0, true);
    iommu.mem.write32(mv.pagesPa, inData);
    view.setUint32(4, inData, true);
    view.setBigUint64(8, mv.mmapOffset, true);
    view.setBigUint64(16, MOCK_VIOMMU_REGION, true);
    rc = copyStructToUser(userData, data, VIOMMU_SELFTEST_MIN);
    if (rc !== 0) throw new ErrnoError(rc, "mock vIOMMU data write-back");
  } catch (e) {
    mv.destroy();
    throw e;
  }
  return mv;
}

/** The mock's get_viommu_size / viommu_init. */
export const mockViommuOps: IommuViommuOps = {
  getViommuSize(_dev: IommuDevice, type: number): number {
    return type === IOMMU_VIOMMU_TYPE_SELFTEST ? 1 : 0;
  },
  viommuInit: mockViommuInit,
};

registerViommuOps((ops) => ops instanceof MockIommu, mockViommuOps);

/**
 * The iommufd core's public entry. Importing it loads every area module that registers ioctl
 * handlers (each registers when it is first imported, and src/core/context.ts refuses
 * registrations after the first ioctl), so a context created through this entry serves the
 * whole uAPI. The daemon imports this module (src/daemon/server.ts):
 * a new area module must be added here to be served.
 *
 * Modules (kept in the order biome sorts them):
 * - access: the in-kernel access API; context: IommufdContext, the ioctl entry, IOMMU_DESTROY;
 * - device, hwpt: devices, attach, HW page tables and their ioctls;
 * - driver: the contract with IOMMU models; eventq, hw_queue, mmap, viommu: vIOMMUs, vDEVICEs,
 *   event queues, HW queues and mmap of the iommufd fd;
 * - fail_nth, object, user_mm: fault injection, the object table, the calling process
 *   (FakeProcess);
 * - io_pagetable, ioas, pages: the IOVA space, the IOAS ioctls and IOMMU_OPTION, pinning;
 * - selftest: IOMMU_TEST_CMD; vfio_compat: IOMMU_VFIO_IOAS and the VFIO container ioctls.
 */
export * from "./access.ts";
export * from "./context.ts";
export * from "./device.ts";
export * from "./driver.ts";
export * from "./eventq.ts";
export * from "./fail_nth.ts";
export * from "./hw_queue.ts";
export * from "./hwpt.ts";
export * from "./io_pagetable.ts";
export * from "./ioas.ts";
export * from "./mmap.ts";
export * from "./object.ts";
export * from "./pages.ts";
export * from "./selftest.ts";
export * from "./user_mm.ts";
export * from "./vfio_compat.ts";
export * from "./viommu.ts";

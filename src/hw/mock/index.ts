/** The iommufd selftest mock IOMMU: driver, devices, domains. */
export * from "./device.ts";
export * from "./domain.ts";
export * from "./iommu.ts";

/** The iommufd selftest mock IOMMU: driver, devices, domains, vIOMMU. */
export * from "./device.ts";
export * from "./domain.ts";
export * from "./iommu.ts";
export * from "./viommu.ts";

/**
 * The iommufd uAPI codec: ioctl numbers and constants, struct layouts, the struct codec and
 * the common dispatch rules. Pure: no object semantics live here (those are in src/core/).
 */
export * from "./dispatch.ts";
export * from "./ioctl.ts";
export * from "./layout.ts";
export * from "./structs.ts";
export * from "./test_cmd.ts";
export * from "./user_memory.ts";
export * from "./vfio.ts";

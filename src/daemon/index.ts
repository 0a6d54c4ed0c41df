/**
 * The daemon side of the bridge to real programs: the socket server, the procfs-backed
 * client process, the wire format, shared mmap regions, the ioctl trace and the shim's on-demand
 * build.
 */
export * from "./fail_nth_file.ts";
export * from "./launch.ts";
export * from "./proc_process.ts";
export * from "./protocol.ts";
export * from "./server.ts";
export * from "./shared_region.ts";
export * from "./shim_build.ts";
export * from "./trace.ts";

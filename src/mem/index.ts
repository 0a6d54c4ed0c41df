export { PageAllocator, type PageAllocatorOptions } from "./alloc.ts";
export { PHYS_ADDR_BITS, PHYS_ADDR_LIMIT, PhysMem } from "./phys.ts";
export * as u64 from "./u64.ts";
export { U64 } from "./u64.ts";

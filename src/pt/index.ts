export * from "./format.ts";
export { buildNestedPair, mapTablesInStage2, type NestedPair } from "./nested.ts";
export { findFormat, PT_FORMATS } from "./registry.ts";
export * from "./translate.ts";
export {
  type LeafInfo,
  PageTable,
  type PageTableOptions,
  type WalkStep,
  type WalkTrace,
} from "./walker.ts";

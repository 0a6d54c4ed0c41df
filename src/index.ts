/** iommusim: the library entry point. */
export * from "./errno.ts";
export * from "./mem/index.ts";
export * from "./pt/index.ts";

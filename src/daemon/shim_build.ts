/**
 * Builds the LD_PRELOAD shim (native/iommusim_shim.c) with the system C compiler when it is
 * first needed, into a cache directory keyed by a hash of the source, the compiler and the
 * flags, so an edit to the shim rebuilds it and an unchanged one is never rebuilt. Nothing is
 * built at install time. native/Makefile does the same by hand.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The shim's C source: native/ of the package (this file runs from dist/src/daemon/). */
export function shimSourcePath(): string {
  return resolve(here, "../../../native/iommusim_shim.c");
}

const FLAGS = ["-O2", "-Wall", "-shared", "-fPIC"];
const LIBS = ["-ldl", "-lpthread"];

/** Where built artefacts go: $IOMMUSIM_CACHE_DIR, else $XDG_CACHE_HOME/iommusim, else ~/.cache. */
export function defaultCacheDir(): string {
  const env = process.env.IOMMUSIM_CACHE_DIR;
  if (env !== undefined && env !== "") return env;
  const xdg = process.env.XDG_CACHE_HOME;
  if (xdg !== undefined && xdg !== "") return join(xdg, "iommusim");
  const home = homedir();
  if (home !== "" && home !== "/") return join(home, ".cache", "iommusim");
  return join(tmpdir(), `iommusim-cache-${process.getuid?.() ?? "user"}`);
}

export interface BuildOptions {
  /** Cache directory (default: defaultCacheDir()). */
  cacheDir?: string;
  /** C compiler (default: $CC or cc). */
  cc?: string;
}

/**
 * Compiles `source` into a shared object or executable in `cacheDir`, named by the hash of its
 * text, compiler and flags; returns the path. A build goes to a temporary name first and is
 * renamed into place, so concurrent builders never see half a file.
 */
export function buildCached(
  source: string,
  flags: readonly string[],
  libs: readonly string[],
  suffix: string,
  opts: BuildOptions = {},
): string {
  const cc = opts.cc ?? process.env.CC ?? "cc";
  const dir = opts.cacheDir ?? defaultCacheDir();
  const text = readFileSync(source);
  const hash = createHash("sha256")
    .update(text)
    .update(`\0${cc}\0${flags.join(" ")}\0${libs.join(" ")}\0${process.arch}`)
    .digest("hex")
    .slice(0, 16);
  const base = source.replace(/^.*\//, "").replace(/\.c$/, "");
  const out = join(dir, `${base}-${hash}${suffix}`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    execFileSync(cc, [...flags, "-o", tmp, source, ...libs], { stdio: "pipe" });
    renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { force: true });
    const stderr = (e as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`building ${source} with ${cc} failed: ${stderr || String(e)}`);
  }
  return out;
}

/** The shim's shared object, built if this version of the source has not been built yet. */
export function buildShim(opts: BuildOptions = {}): string {
  return buildCached(shimSourcePath(), FLAGS, LIBS, ".so", opts);
}

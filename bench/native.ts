/**
 * Builds and runs the project's own C reference walker (bench/native/nested_walk.c) with `cc -O2`
 * at bench time, over a memory image the TypeScript model built.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The C source sits in bench/native/ of the repository (this file runs from dist/bench/). */
const SOURCE = resolve(here, "../../bench/native/nested_walk.c");

export interface NativeWalkInput {
  base: number;
  image: Uint8Array;
  s1Root: number;
  s2Root: number;
  s1Levels: number;
  s2Levels: number;
  iovas: Uint32Array; // below 2^32 in this benchmark
  rounds: number;
}

export interface NativeWalkResult {
  /** ns per walk in the best round. */
  walk_ns: number;
  /** ns per walk over all rounds. */
  walk_ns_mean: number;
  reads_per_walk: number;
  checksum: string;
}

/** Compiles and runs the C walker; returns undefined (with a reason) when no C compiler works. */
export function runNativeWalk(input: NativeWalkInput): NativeWalkResult | { error: string } {
  const dir = mkdtempSync(join(tmpdir(), "iommusim-bench-"));
  try {
    const exe = join(dir, "nested_walk");
    try {
      execFileSync(process.env.CC ?? "cc", ["-O2", "-o", exe, SOURCE], { stdio: "pipe" });
    } catch (e) {
      return { error: `cc failed: ${String(e).slice(0, 200)}` };
    }
    const hdr = new BigUint64Array([
      BigInt(input.base),
      BigInt(input.s1Root),
      BigInt(input.s2Root),
      BigInt(input.s1Levels),
      BigInt(input.s2Levels),
      BigInt(input.image.length),
      BigInt(input.iovas.length),
    ]);
    const iovas = new BigUint64Array(input.iovas.length);
    for (let i = 0; i < input.iovas.length; i++) iovas[i] = BigInt(input.iovas[i]);
    const file = join(dir, "image.bin");
    writeFileSync(
      file,
      Buffer.concat([Buffer.from(hdr.buffer), Buffer.from(input.image), Buffer.from(iovas.buffer)]),
    );
    const out = execFileSync(exe, [file, String(input.rounds)], { encoding: "utf8" });
    return JSON.parse(out) as NativeWalkResult;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

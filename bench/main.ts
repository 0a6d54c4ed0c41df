/**
 * `npm run bench [-- --json] [-- --only REGEX]`: runs the benchmarks and prints one JSON object
 * (with --json, nothing else goes to stdout). Targets are checked by reading this output, never
 * by timed tests; compare ratios measured in one run.
 *
 * Each part runs in its own Node process (`--part`): V8's optimisation decisions carry over from
 * one workload to the next (measured: walking AMD v1 or VT-d tables single-stage first made a
 * later nested walk 1.6-1.9x slower), and a simulator runs one steady workload, not all of them.
 *
 * The bridge part (a C client through the shim and the daemon) runs twice: as a user would run
 * it, and with the daemon and the client on one CPU (`taskset -c 0`, when it exists), where no
 * cross-CPU wake-up is involved and the numbers are steadier on a shared VM.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { findFormat, PT_FORMATS } from "../src/pt/registry.ts";
import { benchBridge } from "./bridge.ts";
import { benchCore } from "./core.ts";
import { benchAllFormats, benchNested } from "./pt.ts";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    only: { type: "string" },
    part: { type: "string" },
  },
});
const log = (msg: string): void => {
  if (!values.json) process.stderr.write(`${msg}\n`);
};
const pick = (name: string, fallback: string): string =>
  PT_FORMATS.some((f) => f.name === name) ? name : fallback;

/** Runs one part in a fresh process (under `prefix`, a command such as taskset) for its JSON. */
function part(name: string, prefix: string[] = []): unknown {
  const args = [fileURLToPath(import.meta.url), "--part", name];
  if (values.only !== undefined) args.push("--only", values.only);
  const [cmd, ...pre] = prefix.length > 0 ? [...prefix, process.execPath] : [process.execPath];
  return JSON.parse(execFileSync(cmd, [...pre, ...args], { encoding: "utf8", maxBuffer: 1 << 24 }));
}

/** taskset's path, if this system has it. */
function taskset(): string | undefined {
  return ["/usr/bin/taskset", "/bin/taskset"].find((p) => existsSync(p));
}

if (values.part === "formats") {
  const only = values.only === undefined ? undefined : new RegExp(values.only);
  process.stdout.write(JSON.stringify(benchAllFormats(only)));
} else if (values.part === "core") {
  process.stdout.write(JSON.stringify(benchCore()));
} else if (values.part === "bridge") {
  process.stdout.write(JSON.stringify(await benchBridge()));
} else if (values.part === "nested") {
  const s2 = pick("vtdss-4lvl", "x86_64-4lvl");
  process.stdout.write(JSON.stringify(benchNested(findFormat("x86_64-4lvl"), findFormat(s2))));
} else {
  log("page-table formats ...");
  const formats = part("formats");
  log("nested 4x4 ...");
  const nested = part("nested");
  log("iommufd core ...");
  const core = part("core");
  log("daemon/shim bridge ...");
  const bridge = part("bridge") as Record<string, unknown>;
  const pin = taskset();
  if (pin !== undefined) {
    log("daemon/shim bridge on one CPU ...");
    bridge.one_cpu = part("bridge", [pin, "-c", "0"]);
  }
  const report = { node: process.version, formats, nested_4x4: nested, core, bridge };
  process.stdout.write(`${JSON.stringify(report, null, values.json ? undefined : 2)}\n`);
}

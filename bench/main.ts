/**
 * `npm run bench [-- --json] [-- --only REGEX]`: runs the benchmarks and prints one JSON object
 * (with --json, nothing else goes to stdout). Targets are checked by reading this output, never
 * by timed tests; compare ratios measured in one run.
 */
import { parseArgs } from "node:util";
import { findFormat, PT_FORMATS } from "../src/pt/registry.ts";
import { benchAllFormats, benchNested } from "./pt.ts";

const { values } = parseArgs({
  options: { json: { type: "boolean", default: false }, only: { type: "string" } },
});
const log = (msg: string): void => {
  if (!values.json) process.stderr.write(`${msg}\n`);
};

const pick = (name: string, fallback: string): string =>
  PT_FORMATS.some((f) => f.name === name) ? name : fallback;

log("page-table formats ...");
const formats = benchAllFormats(values.only === undefined ? undefined : new RegExp(values.only));
log("nested 4x4 ...");
const nested = benchNested(
  findFormat("x86_64-4lvl"),
  findFormat(pick("vtdss-4lvl", "x86_64-4lvl")),
);

const report = {
  node: process.version,
  formats,
  nested_4x4: nested,
};
process.stdout.write(`${JSON.stringify(report, null, values.json ? undefined : 2)}\n`);

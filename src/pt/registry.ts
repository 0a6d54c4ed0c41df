/**
 * Every page-table format configuration the project models, for the shared conformance suite,
 * the benchmarks and the demo. Each format family contributes its list of configurations.
 */

import { amdv1Configs } from "./fmt/amdv1.ts";
import { armv8Configs } from "./fmt/armv8.ts";
import { riscvConfigs } from "./fmt/riscv.ts";
import { tceConfigs } from "./fmt/tce.ts";
import { vtdssConfigs } from "./fmt/vtdss.ts";
import { x86_64Configs } from "./fmt/x86_64.ts";
import type { PtFormat } from "./format.ts";

export const PT_FORMATS: readonly PtFormat[] = [
  ...x86_64Configs,
  ...riscvConfigs,
  ...vtdssConfigs,
  ...tceConfigs,
  ...amdv1Configs,
  ...armv8Configs,
];

export function findFormat(name: string): PtFormat {
  const f = PT_FORMATS.find((x) => x.name === name);
  if (f === undefined) throw new Error(`unknown page-table format ${name}`);
  return f;
}

/**
 * iommufd core benchmarks: IOAS_MAP of 1 GiB of 4 KiB user pages into an IOAS with one mock
 * domain (pinning and the domain's page-table writes included), and the cost of a cheap ioctl
 * through the codec, in process. Uses the test harness that drives ioctls the way a process
 * would (structs in the fake process's memory).
 */
import { ENOENT } from "../src/errno.ts";
import {
  IOMMU_DESTROY,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_RLIMIT_MODE,
} from "../src/uapi/ioctl.ts";
import { SelftestHarness } from "../test/core/selftest_harness.ts";

export interface CoreBench {
  /** IOAS_MAP of 1 GiB (4 KiB pages) into an IOAS with one mock domain: best of 3, ms. */
  ioas_map_1g_4k_ms: number;
  /** IOAS_UNMAP of the same, ms. */
  ioas_unmap_1g_4k_ms: number;
  /** A cheap ioctl through the codec in process: IOMMU_OPTION GET of RLIMIT_MODE, ns. */
  ioctl_ns: number;
  /** A failing one (IOMMU_DESTROY of a missing ID: ENOENT), ns. */
  ioctl_enoent_ns: number;
}

const GIB = 1n << 30n;

export function benchCore(): CoreBench {
  let mapBest = Number.POSITIVE_INFINITY;
  let unmapBest = Number.POSITIVE_INFINITY;
  for (let run = 0; run < 3; run++) {
    const h = new SelftestHarness();
    const ioas = h.ioasAlloc();
    h.mockDomain(ioas);
    const va = h.proc.mmap(Number(GIB));
    const iova = 1n << 30n;
    let t = performance.now();
    const r = h.map(ioas, va, GIB, { iova });
    mapBest = Math.min(mapBest, performance.now() - t);
    if (r.errno !== 0) throw new Error(`IOAS_MAP failed: errno ${r.errno}`);
    t = performance.now();
    const u = h.unmap(ioas, iova, GIB);
    unmapBest = Math.min(unmapBest, performance.now() - t);
    if (u.errno !== 0) throw new Error(`IOAS_UNMAP failed: errno ${u.errno}`);
    h.ctx.close();
  }
  // Each struct is written into the process once; a call is then the codec plus the handler.
  const h = new SelftestHarness();
  const destroyArg = h.proc.mmap(4096);
  const destroy = new Uint8Array(8);
  new DataView(destroy.buffer).setUint32(0, 8, true);
  new DataView(destroy.buffer).setUint32(4, 12345, true);
  h.proc.write(destroyArg, destroy);
  const optionArg = h.proc.mmap(4096);
  const option = new Uint8Array(24);
  const ov = new DataView(option.buffer);
  ov.setUint32(0, 24, true);
  ov.setUint32(4, IOMMU_OPTION_RLIMIT_MODE, true);
  ov.setUint16(8, IOMMU_OPTION_OP_GET, true);
  h.proc.write(optionArg, option);
  const timeIoctl = (cmd: number, arg: bigint, want: number): number => {
    const n = 20000;
    let best = Number.POSITIVE_INFINITY;
    for (let round = 0; round < 10; round++) {
      const t = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        if (h.ctx.ioctl(cmd, arg, h.proc).errno !== want) throw new Error("unexpected errno");
      }
      best = Math.min(best, Number(process.hrtime.bigint() - t) / n);
    }
    return Math.round(best);
  };
  const ioctl_ns = timeIoctl(IOMMU_OPTION, optionArg, 0);
  const ioctl_enoent_ns = timeIoctl(IOMMU_DESTROY, destroyArg, ENOENT);
  return {
    ioas_map_1g_4k_ms: Math.round(mapBest * 100) / 100,
    ioas_unmap_1g_4k_ms: Math.round(unmapBest * 100) / 100,
    ioctl_ns,
    ioctl_enoent_ns,
  };
}

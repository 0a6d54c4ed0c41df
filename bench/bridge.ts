/**
 * The daemon/shim bridge end to end: bench/native/bridge_client.c, built with `cc -O2` on demand
 * (into the shim's cache, keyed by the source's hash, as the CLI builds the shim), runs under
 * the LD_PRELOAD shim against a daemon started in this process, and reports what it timed with
 * CLOCK_MONOTONIC. The same client also times a plain C-to-C round trip over a Unix socketpair
 * (`socket_rtt_us_p50`): on a VM the cost of waking a task on the other CPU swings with the
 * host's load, so read the bridge's numbers against that floor from the same run.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { runWithShim, withPrivateDaemon } from "../src/daemon/launch.ts";
import { buildCached } from "../src/daemon/shim_build.ts";

const here = dirname(fileURLToPath(import.meta.url));
/** The C source sits in bench/native/ of the repository (this file runs from dist/bench/). */
const SOURCE = resolve(here, "../../bench/native/bridge_client.c");

export interface BridgeBench {
  /** A cheap ioctl from C through the shim: IOMMU_OPTION GET of RLIMIT_MODE (copy in and out). */
  ioctl_rtt_us_p50: number;
  ioctl_rtt_us_p99: number;
  /** A failing one: IOMMU_DESTROY of a missing ID (ENOENT). */
  ioctl_enoent_rtt_us_p50: number;
  ioctl_enoent_rtt_us_p99: number;
  /** IOAS_MAP of one page then IOAS_UNMAP of it, pairs per second. */
  map_unmap_per_s: number;
  /** The floor: a 16-byte round trip between two C processes over a Unix socketpair. */
  socket_rtt_us_p50: number;
  socket_rtt_us_p99: number;
}

interface Percentiles {
  p50: number;
  p99: number;
  mean: number;
}

/** Calls timed per kind in the round-trip runs, and map/unmap pairs. */
const RTT_CALLS = 20000;
const MAP_PAIRS = 5000;

async function runClient(socketPath: string, shim: string, argv: string[]): Promise<unknown> {
  const r = await runWithShim(socketPath, shim, argv, { stdio: "pipe" });
  if (r.code !== 0) throw new Error(`${argv.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout);
}

/** Runs the three measurements; an error (no compiler, no shim) is reported, not thrown. */
export async function benchBridge(): Promise<BridgeBench | { error: string }> {
  let client: string;
  try {
    client = buildCached(SOURCE, ["-O2", "-Wall"], [], "");
  } catch (e) {
    return { error: `cc failed: ${String(e).slice(0, 200)}` };
  }
  try {
    return await withPrivateDaemon(async (server, shim) => {
      const path = server.socketPath;
      const rtt = (await runClient(path, shim, [client, "rtt", String(RTT_CALLS)])) as {
        destroy_enoent_us: Percentiles;
        option_get_us: Percentiles;
      };
      const map = (await runClient(path, shim, [client, "mapunmap", String(MAP_PAIRS)])) as {
        map_unmap_per_s: number;
      };
      const floor = (await runClient(path, shim, [client, "floor", String(RTT_CALLS)])) as {
        socket_rtt_us: Percentiles;
      };
      return {
        ioctl_rtt_us_p50: rtt.option_get_us.p50,
        ioctl_rtt_us_p99: rtt.option_get_us.p99,
        ioctl_enoent_rtt_us_p50: rtt.destroy_enoent_us.p50,
        ioctl_enoent_rtt_us_p99: rtt.destroy_enoent_us.p99,
        map_unmap_per_s: map.map_unmap_per_s,
        socket_rtt_us_p50: floor.socket_rtt_us.p50,
        socket_rtt_us_p99: floor.socket_rtt_us.p99,
      };
    });
  } catch (e) {
    return { error: (e as Error).message };
  }
}

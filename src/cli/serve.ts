/**
 * `iommusim serve [--socket PATH] [--trace FILE]`: runs the daemon until SIGINT or SIGTERM.
 * Prints the socket and the shim to preload; removes the socket when it stops. A socket left
 * by a daemon that died is replaced; a live one is refused.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { SOCKET_ENV } from "../daemon/launch.ts";
import { IommusimServer } from "../daemon/server.ts";
import { buildShim } from "../daemon/shim_build.ts";
import { NdjsonTraceWriter } from "../daemon/trace.ts";

export const SERVE_USAGE = "usage: iommusim serve [--socket PATH] [--trace FILE]\n";

/** $XDG_RUNTIME_DIR/iommusim/iommu.sock, else /tmp/iommusim-<uid>/iommu.sock. */
export function defaultSocketPath(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== "") return join(runtime, "iommusim", "iommu.sock");
  return join("/tmp", `iommusim-${process.getuid?.() ?? "user"}`, "iommu.sock");
}

export async function runServe(args: string[]): Promise<number> {
  let values: { socket?: string; trace?: string };
  try {
    values = parseArgs({
      args,
      options: { socket: { type: "string" }, trace: { type: "string" } },
      strict: true,
    }).values;
  } catch (e) {
    process.stderr.write(`iommusim serve: ${(e as Error).message}\n${SERVE_USAGE}`);
    return 2;
  }
  const socketPath = values.socket ?? defaultSocketPath();
  let shimPath: string;
  try {
    shimPath = buildShim();
  } catch (e) {
    process.stderr.write(`iommusim serve: ${(e as Error).message}\n`);
    return 1;
  }
  const tracer = values.trace === undefined ? undefined : new NdjsonTraceWriter(values.trace);
  let server: IommusimServer;
  try {
    server = await IommusimServer.start({
      socketPath,
      ...(tracer === undefined ? {} : { trace: (rec) => tracer.write(rec) }),
    });
  } catch (e) {
    tracer?.close();
    process.stderr.write(`iommusim serve: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(
    `iommusim: serving /dev/iommu on ${socketPath}\n` +
      `run a client with:\n  ${SOCKET_ENV}=${socketPath} LD_PRELOAD=${shimPath} ./client\n`,
  );
  await new Promise<void>((resolve) => {
    const done = () => {
      process.off("SIGINT", done);
      process.off("SIGTERM", done);
      resolve();
    };
    process.on("SIGINT", done);
    process.on("SIGTERM", done);
  });
  await server.stop();
  tracer?.close();
  process.stdout.write("iommusim: stopped\n");
  return 0;
}

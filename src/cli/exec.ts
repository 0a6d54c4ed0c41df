/**
 * `iommusim exec [--trace FILE] -- ./client args…`: runs one program against a private daemon.
 * Builds the shim if needed, starts a daemon on a temporary socket, runs the client with the
 * shim preloaded and the socket named in IOMMUSIM_SOCKET, forwards the client's exit status
 * (128 + signal when it was killed), then stops the daemon and removes the socket.
 */
import { parseArgs } from "node:util";
import { runWithShim, withPrivateDaemon } from "../daemon/launch.ts";
import { NdjsonTraceWriter } from "../daemon/trace.ts";

export const EXEC_USAGE = "usage: iommusim exec [--trace FILE] -- PROGRAM [ARGS...]\n";

export async function runExec(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (e) {
    process.stderr.write(`iommusim exec: ${(e as Error).message}\n${EXEC_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (positionals.length === 0) {
    process.stderr.write(EXEC_USAGE);
    return 2;
  }
  const tracer = values.trace === undefined ? undefined : new NdjsonTraceWriter(values.trace);
  const forward: NodeJS.Signals[] = ["SIGTERM", "SIGHUP"];
  let childPid: number | undefined;
  const relay = (sig: NodeJS.Signals) => {
    if (childPid !== undefined) process.kill(childPid, sig);
  };
  // SIGINT from a terminal reaches the client through its process group; we only outlive it.
  const ignoreInt = () => {};
  for (const s of forward) process.on(s, relay);
  process.on("SIGINT", ignoreInt);
  try {
    return await withPrivateDaemon(
      async (server, shimPath) => {
        try {
          const r = await runWithShim(server.socketPath, shimPath, positionals, {
            onSpawn: (pid) => {
              childPid = pid;
            },
          });
          return r.code;
        } catch (e) {
          const err = e as NodeJS.ErrnoException;
          process.stderr.write(`iommusim exec: ${positionals[0]}: ${err.message}\n`);
          return err.code === "ENOENT" ? 127 : 126;
        }
      },
      tracer === undefined ? {} : { trace: (rec) => tracer.write(rec) },
    );
  } catch (e) {
    // No compiler, an unusable temp directory: say so instead of a stack trace.
    process.stderr.write(`iommusim exec: ${(e as Error).message}\n`);
    return 1;
  } finally {
    for (const s of forward) process.off(s, relay);
    process.off("SIGINT", ignoreInt);
    tracer?.close();
  }
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: { trace: { type: "string" } },
    allowPositionals: true,
    strict: true,
  });
}

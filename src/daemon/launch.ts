/**
 * Running a client program against a daemon: the environment the shim needs, a private socket
 * directory, and a one-call "start a private daemon, run this, stop it" used by
 * `iommusim exec` and the tests.
 */
import { type StdioOptions, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { constants as osConstants, tmpdir } from "node:os";
import { join } from "node:path";
import { IommusimServer, type ServerOptions } from "./server.ts";
import { buildShim } from "./shim_build.ts";

/** The one environment variable shared by the CLI, the daemon and the shim. */
export const SOCKET_ENV = "IOMMUSIM_SOCKET";

/** `base` plus the shim preloaded (ahead of any other preload) and the socket named. */
export function shimEnv(
  socketPath: string,
  shimPath: string,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const preload = base.LD_PRELOAD;
  return {
    ...base,
    [SOCKET_ENV]: socketPath,
    LD_PRELOAD: preload !== undefined && preload !== "" ? `${shimPath}:${preload}` : shimPath,
  };
}

/** A fresh 0700 directory under the system temp dir and a socket path inside it. */
export function privateSocket(): { dir: string; socketPath: string } {
  const dir = mkdtempSync(join(tmpdir(), "iommusim-")); // mkdtemp makes it 0700
  return { dir, socketPath: join(dir, "iommu.sock") };
}

export interface RunResult {
  /** Exit status, or 128 + signal number when the client was killed by a signal. */
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Extra environment for the client. */
  env?: NodeJS.ProcessEnv;
  /** "inherit" (default for exec) or "pipe" (output collected into the result). */
  stdio?: "inherit" | "pipe";
  /** Called with the child once it is running (tests use it to kill it). */
  onSpawn?: (pid: number) => void;
  /**
   * With stdio "pipe": each chunk of the child's stdout as it comes, and a way to write to its
   * stdin (which stays open until the child exits).
   */
  onStdout?: (chunk: string, toStdin: (text: string) => void) => void;
}

/** Runs `argv` with the shim against the daemon at `socketPath`; resolves when it exits. */
export function runWithShim(
  socketPath: string,
  shimPath: string,
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = opts.stdio === "pipe" ? ["pipe", "pipe", "pipe"] : "inherit";
    const child = spawn(argv[0], argv.slice(1), {
      stdio,
      env: shimEnv(socketPath, shimPath, { ...process.env, ...opts.env }),
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (b: Buffer) => {
      stdout += b.toString();
      opts.onStdout?.(b.toString(), (text) => child.stdin?.write(text));
    });
    child.stdin?.on("error", () => {}); // the child may exit without reading it
    child.stderr?.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    child.once("error", reject);
    child.once("spawn", () => {
      if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    });
    child.once("close", (code, signal) => {
      const signo = signal === null ? 0 : (osConstants.signals[signal] ?? 0);
      resolve({ code: code ?? 128 + signo, signal, stdout, stderr });
    });
  });
}

/**
 * Starts a private daemon on a temporary socket, runs `fn` with it and the shim, then stops the
 * daemon and removes the directory, whatever `fn` does.
 */
export async function withPrivateDaemon<T>(
  fn: (server: IommusimServer, shimPath: string) => Promise<T>,
  options: Omit<ServerOptions, "socketPath"> = {},
): Promise<T> {
  const shimPath = buildShim();
  const { dir, socketPath } = privateSocket();
  try {
    const server = await IommusimServer.start({ ...options, socketPath });
    try {
      return await fn(server, shimPath);
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Shared by the daemon tests: compiling our C clients (test/native/*.c) into a temporary
 * directory, and a raw protocol client that speaks the shim's wire format from the test.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { encodeFrame, HEADER_SIZE, SECRET_SIZE } from "../../src/daemon/protocol.ts";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
/** test/native in the repository (this file runs from dist/test/daemon/). */
export const NATIVE_DIR = resolve(here, "../../../test/native");

/** A temporary directory for one test file's binaries; `remove` deletes it. */
export function binDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "iommusim-test-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Compiles test/native/<name>.c (unoptimised: quick to build) and returns the binary's path. */
export async function compileClient(dir: string, name: string): Promise<string> {
  const out = join(dir, name);
  await run(process.env.CC ?? "cc", [
    "-O0",
    "-Wall",
    "-pthread",
    "-o",
    out,
    join(NATIVE_DIR, `${name}.c`),
  ]);
  return out;
}

/** Compiles several clients in parallel; resolves to name -> path. */
export async function compileClients(
  dir: string,
  names: string[],
): Promise<Record<string, string>> {
  const paths = await Promise.all(names.map((n) => compileClient(dir, n)));
  return Object.fromEntries(names.map((n, i) => [n, paths[i]]));
}

export interface Reply {
  op: number;
  seq: number;
  ret: number;
  payload: Buffer;
}

/**
 * A protocol client that reads replies as they come. `expectPayload` says how many payload
 * bytes a reply to each request carries (the OPEN reply's secret is read, unlike the shim).
 */
export class RawClient {
  readonly sock: Socket;
  private buf = Buffer.alloc(0);
  private waiting: ((r: Reply | undefined) => void)[] = [];
  private ended = false;
  private seq = 1;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on("data", (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.drain();
    });
    sock.on("close", () => {
      this.ended = true;
      for (const w of this.waiting.splice(0)) w(undefined);
    });
    sock.on("error", () => {});
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolveConn, reject) => {
      const s = connect(path);
      s.once("connect", () => resolveConn(new RawClient(s)));
      s.once("error", reject);
    });
  }

  private drain(): void {
    while (this.waiting.length > 0 && this.buf.length >= HEADER_SIZE) {
      const len = this.buf.readUInt32LE(0);
      if (this.buf.length < len) return;
      const r: Reply = {
        op: this.buf.readUInt32LE(4),
        seq: this.buf.readUInt32LE(8),
        ret: this.buf.readInt32LE(12),
        payload: Buffer.from(this.buf.subarray(HEADER_SIZE, len)),
      };
      this.buf = this.buf.subarray(len);
      this.waiting.shift()?.(r);
    }
  }

  /** The next reply, or undefined when the daemon closed the connection. */
  next(): Promise<Reply | undefined> {
    if (this.ended && this.buf.length < HEADER_SIZE) return Promise.resolve(undefined);
    return new Promise((r) => {
      this.waiting.push(r);
      this.drain();
    });
  }

  /** Sends a request frame and waits for its reply. */
  request(op: number, payload?: Uint8Array): Promise<Reply | undefined> {
    this.sock.write(encodeFrame(op, this.seq++, 0, payload));
    return this.next();
  }

  sendRaw(bytes: Uint8Array): void {
    this.sock.write(bytes);
  }

  close(): void {
    this.sock.destroy();
  }

  /** Resolves once the daemon has closed its end. */
  closed(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((r) => this.sock.once("close", () => r()));
  }
}

export { SECRET_SIZE };

/**
 * Our own C clients (test/native/*.c) run unmodified through the LD_PRELOAD shim against an
 * in-process daemon, and through the `iommusim exec` and `serve` commands.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type MmapRegion, mmapRegistry } from "../../src/core/mmap.ts";
import { IommufdObject, ObjType } from "../../src/core/object.ts";
import { privateSocket, runWithShim, SOCKET_ENV } from "../../src/daemon/launch.ts";
import { buildPayload, OPEN_LAYOUT, Op } from "../../src/daemon/protocol.ts";
import { IommusimServer } from "../../src/daemon/server.ts";
import { buildShim } from "../../src/daemon/shim_build.ts";
import type { IoctlTraceRecord, TraceRecord } from "../../src/daemon/trace.ts";
import { ENOENT } from "../../src/errno.ts";
import { binDir, compileClients, RawClient } from "./helpers.ts";

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), "../../src/cli/main.js");

class Dummy extends IommufdObject {
  readonly type = ObjType.IOAS;
  destroyed = false;
  destroy(): void {
    this.destroyed = true;
  }
}

describe("C clients through the shim", () => {
  const bins = binDir();
  const { dir, socketPath } = privateSocket();
  let bin: Record<string, string>;
  let shim: string;
  let server: IommusimServer;
  const trace: TraceRecord[] = [];

  before(async () => {
    shim = buildShim();
    bin = await compileClients(bins.dir, [
      "destroy_errno",
      "fork_close",
      "failnth",
      "ioas_map",
      "destroy_id",
      "blocked_ioctl",
      "exit_code",
      "object_fds",
      "viommu_mmap",
      "threads",
      "proc_status",
      "inline_copy",
      "dup_barriers",
      "viommu_shared",
    ]);
    server = await IommusimServer.start({ socketPath, trace: (r) => trace.push(r) });
  });

  after(async () => {
    await server.stop();
    bins.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  const runClient = (argv: string[]) => runWithShim(socketPath, shim, argv, { stdio: "pipe" });

  it("gives IOMMU_DESTROY's errnos and the file's other answers", async () => {
    trace.length = 0;
    const r = await runClient([bin.destroy_errno]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
    const destroys = trace.filter(
      (t): t is IoctlTraceRecord => t.event === "ioctl" && t.name === "IOMMU_DESTROY",
    );
    assert.deepEqual(destroys[0].in, { size: 8, id: 1234 });
    assert.equal(destroys[0].errnoName, "ENOENT");
    assert.deepEqual(destroys[1].in, { fault: "EFAULT" });
    assert.equal(server.stats().contexts, 0, "released at close");
  });

  it("keeps a context across fork and dup until the last close, which completes first", async () => {
    trace.length = 0;
    const r = await runClient([bin.fork_close]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "child-closed\ndup-alive\nok\n");
    const events = trace
      .filter((t) => t.event !== "ioctl")
      .map((t) => `${t.event}:${t.ctx - (trace[0]?.ctx ?? 0)}`);
    // One context through fork, dup and both closes, released before the second open.
    assert.deepEqual(events, ["open:0", "release:0", "open:1", "release:1"]);
    const pids = new Set(trace.filter((t) => t.event === "ioctl").map((t) => t.pid));
    assert.equal(pids.size, 2, "the child called on the shared context too");
  });

  it("serves threads at once, with fail-nth per task", async () => {
    const r = await runClient([bin.threads]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
  });

  it("serves the fail-nth file and the fake debugfs", async () => {
    const r = await runClient([bin.failnth]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
    assert.equal(server.failNth.armedCount, 0);
    assert.equal(readFileSync(join(server.debugfsDir, "failslab/ignore-gfp-wait"), "utf8"), "N");
  });

  it("maps and unmaps a buffer in an IOAS", async () => {
    const r = await runClient([bin.ioas_map]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ok iova=0x[0-9a-f]+\n$/);
    assert.equal(server.host.pages.totalPins, 0);
  });

  it("shows the pages iommufd pinned as VmPin in /proc/<pid>/status", async () => {
    const r = await runClient([bin.proc_status]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok 8\n");
    assert.equal(server.host.pages.totalPins, 0);
  });

  it("hands out real descriptors for the files ioctls create", async () => {
    let heldByAccess: number | undefined;
    const r = await runWithShim(socketPath, shim, [bin.object_fds], {
      stdio: "pipe",
      onStdout: (chunk, toStdin) => {
        if (!chunk.includes("iommufd-closed")) return;
        // The client closed its iommufd but still holds an access fd: no release yet.
        heldByAccess = server.stats().contexts;
        toStdin("go\n");
      },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "iommufd-closed\nok\n");
    assert.equal(heldByAccess, 1);
    const st = server.stats();
    assert.equal(st.contexts, 0, "released once the access fd closed");
    assert.equal(st.objects, 0);
  });

  it("maps a vIOMMU's region through the iommufd fd", async () => {
    const r = await runClient([bin.viommu_mmap]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
    assert.equal(server.stats().mappings, 0);
  });

  it("shares a vIOMMU's mapped region with the daemon, both ways, after the mmap", async () => {
    let region: MmapRegion | undefined;
    let fromClient: number | undefined;
    const word = (v: number) =>
      Uint8Array.of(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24);
    const r = await runWithShim(socketPath, shim, [bin.viommu_shared], {
      stdio: "pipe",
      onStdout: (chunk, toStdin) => {
        if (chunk.startsWith("mapped")) {
          // The daemon side changes the region after the client mapped it.
          for (const ctx of server.contexts().values()) region ??= mmapRegistry(ctx).list()[0];
          assert.ok(region !== undefined);
          region.mem.writeBytes(region.physBase + 4, word(0x5eed1234));
          region.mem.writeBytes(region.physBase + 4096, word(0xc0ffee01));
          server.syncMappings();
          toStdin("go\n");
        } else if (chunk.includes("wrote")) {
          server.syncMappings();
          const b = new Uint8Array(4);
          region?.mem.readBytes((region?.physBase ?? 0) + 8, b);
          fromClient = new DataView(b.buffer).getUint32(0, true);
          toStdin("go\n");
        }
      },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "mapped 0xbadbeef\nseen 0x5eed1234 0xc0ffee01\nwrote\nok\n");
    assert.equal(fromClient, 0x600df00d, "the client's write reached the region");
    assert.equal(server.stats().mappings, 0);
  });

  it("never lets one client name another client's objects", async () => {
    const other = await RawClient.connect(socketPath);
    const opened = new Promise<{ ctx: number }>((r) => server.once("open", r));
    const reply = await other.request(
      Op.OPEN,
      buildPayload(OPEN_LAYOUT, { pid: process.pid, tid: process.pid, flags: 2 }),
    );
    assert.equal(reply?.ret, 0);
    const { ctx } = await opened;
    const theirs = server.contexts().get(ctx);
    assert.ok(theirs !== undefined);
    const obj = theirs.table.reserve(new Dummy());
    theirs.table.finalize(obj);
    const r = await runClient([bin.destroy_id, String(obj.id)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(Number(r.stdout), ENOENT);
    assert.equal(obj.destroyed, false);
    assert.equal(theirs.table.peek(obj.id), obj);
    other.close();
  });

  it("copies an ioctl's struct inline and faults where the kernel's user copy would", async () => {
    const before = server.stats().inlineIoctls;
    const r = await runClient([bin.inline_copy]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ok\n");
    assert.ok(server.stats().inlineIoctls - before >= 8, "the shim sent structs inline");
  });

  it("has dup2, dup3, close_range and closefrom release what they close before returning", async () => {
    const seen: string[] = [];
    const controls = server.stats().controlConnections;
    const r = await runWithShim(socketPath, shim, [bin.dup_barriers], {
      stdio: "pipe",
      onStdout: (chunk, toStdin) => {
        for (const stage of ["replaced", "closed-all"]) {
          if (!chunk.includes(stage)) continue;
          seen.push(`${stage}: ${server.stats().contexts} context(s)`);
          toStdin("go\n");
        }
      },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "replaced\nclosed-all\nok\n");
    // dup2 over the second iommufd released it (the first is still open); close_range over
    // everything released the first.
    assert.deepEqual(seen, ["replaced: 1 context(s)", "closed-all: 0 context(s)"]);
    assert.equal(
      server.stats().controlConnections - controls,
      1,
      "the control connection survived dup2 onto its number and close_range over it",
    );
    assert.equal(server.stats().objects, 0);
  });

  it("forwards the client's exit status", async () => {
    assert.equal((await runClient([bin.exit_code, "3"])).code, 3);
  });
});

describe("a client killed in the middle of an ioctl", () => {
  const bins = binDir();
  let bin: Record<string, string>;

  before(async () => {
    bin = await compileClients(bins.dir, ["blocked_ioctl"]);
  });
  after(() => bins.remove());

  for (const pages of [undefined, "8"]) {
    it(`leaves nothing behind${pages === undefined ? "" : " (with a mapped IOAS)"}`, async () => {
      const { dir, socketPath } = privateSocket();
      let inDestroy: () => void = () => {};
      const reached = new Promise<void>((r) => {
        inDestroy = r;
      });
      let resume: () => void = () => {};
      const held = new Promise<void>((r) => {
        resume = r;
      });
      const server = await IommusimServer.start({
        socketPath,
        beforeIoctl: async ({ cmd }) => {
          if ((cmd & 0xff) !== 0x80) return; // hold IOMMU_DESTROY only
          inDestroy();
          await held;
        },
      });
      try {
        const shim = buildShim();
        let pid = 0;
        const argv = pages === undefined ? [bin.blocked_ioctl] : [bin.blocked_ioctl, pages];
        const run = runWithShim(socketPath, shim, argv, {
          stdio: "pipe",
          onSpawn: (p) => {
            pid = p;
          },
        });
        await reached;
        process.kill(pid, "SIGKILL");
        const r = await run;
        assert.equal(r.signal, "SIGKILL");
        assert.equal(r.stdout, "opened\n", "it never returned from the ioctl");
        const released = new Promise((res) => server.once("release", res));
        resume();
        await released;
        const st = server.stats();
        assert.equal(st.contexts, 0);
        assert.equal(st.released, st.opened);
        assert.equal(server.host.pages.totalPins, 0);
        assert.equal(server.host.pages.size, 0);
        // The daemon still serves the next client.
        const again = await runWithShim(socketPath, shim, [bin.blocked_ioctl], { stdio: "pipe" });
        assert.equal(again.code, 0, again.stderr);
      } finally {
        resume();
        await server.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe("iommusim exec and serve", () => {
  const bins = binDir();
  let bin: Record<string, string>;

  before(async () => {
    bin = await compileClients(bins.dir, ["exit_code"]);
  });
  after(() => bins.remove());

  function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    const done = new Promise<{ code: number | null; out: string; err: string }>((r) =>
      child.once("close", (code) => r({ code, out, err })),
    );
    return { child, done, output: () => out };
  }

  it("runs a client, forwards its status and writes the trace", async () => {
    const traceFile = join(bins.dir, "trace.ndjson");
    const r = await cli(["exec", "--trace", traceFile, "--", bin.exit_code, "5"]).done;
    assert.equal(r.code, 5, r.err);
    const recs = readFileSync(traceFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as TraceRecord);
    assert.deepEqual(
      recs.map((x) => x.event),
      ["open", "ioctl", "release"],
    );
    const io = recs[1] as IoctlTraceRecord;
    assert.equal(io.name, "IOMMU_DESTROY");
    assert.equal(io.cmd, "0x3b80");
    assert.deepEqual(io.in, { size: 8, id: 3 });
    assert.deepEqual(io.out, { size: 8, id: 3 });
    assert.equal(io.errno, ENOENT);
    assert.equal(io.ret, -ENOENT);
    assert.equal(typeof io.us, "number");
  });

  it("answers 127 for a missing program and 2 for no program", async () => {
    assert.equal((await cli(["exec", "--", join(bins.dir, "nope")]).done).code, 127);
    assert.equal((await cli(["exec"]).done).code, 2);
  });

  it("serves until SIGTERM and removes its socket", async () => {
    const { dir, socketPath } = privateSocket();
    try {
      const s = cli(["serve", "--socket", socketPath]);
      let exited = false;
      void s.done.then(() => {
        exited = true;
      });
      while (!s.output().includes("serving") && !exited) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(exited, false, "serve ended before it served");
      const shimLine = /LD_PRELOAD=(\S+)/.exec(s.output());
      assert.ok(shimLine !== null);
      const r = await runWithShim(socketPath, shimLine[1], [bin.exit_code, "0"], {
        stdio: "pipe",
        env: { [SOCKET_ENV]: socketPath },
      });
      assert.equal(r.code, 0, r.stderr);
      s.child.kill("SIGTERM");
      assert.equal((await s.done).code, 0);
      assert.equal(existsSync(socketPath), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The daemon over its socket, spoken to with raw frames from the test: socket placement and
 * permissions, stale-socket recovery, malformed frames, context naming, release at the last
 * close and the close barrier.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { IommufdObject, ObjType } from "../../src/core/object.ts";
import { privateSocket } from "../../src/daemon/launch.ts";
import {
  buildPayload,
  CLOSE_LAYOUT,
  HELLO_LAYOUT,
  INLINE_MAX,
  IOCTL_LAYOUT,
  OPEN_LAYOUT,
  Op,
} from "../../src/daemon/protocol.ts";
import { EBADMSG, EPROTO, IommusimServer } from "../../src/daemon/server.ts";
import { EBADF, EFAULT, ENOENT, ENOSYS, EPERM } from "../../src/errno.ts";
import { IOMMU_DESTROY } from "../../src/uapi/ioctl.ts";
import { RawClient } from "./helpers.ts";

class Dummy extends IommufdObject {
  readonly type = ObjType.IOAS;
  destroyed = false;
  destroy(): void {
    this.destroyed = true;
  }
}

const dirs: string[] = [];
const servers: IommusimServer[] = [];

async function startServer(
  opts: Partial<Parameters<typeof IommusimServer.start>[0]> = {},
): Promise<IommusimServer> {
  const { dir, socketPath } = privateSocket();
  dirs.push(dir);
  const s = await IommusimServer.start({ log: () => {}, ...opts, socketPath });
  servers.push(s);
  return s;
}

/** Opens a context like the shim does; returns its connection and secret. */
async function openContext(path: string): Promise<{ conn: RawClient; secret: Buffer }> {
  const conn = await RawClient.connect(path);
  const r = await conn.request(
    Op.OPEN,
    buildPayload(OPEN_LAYOUT, { pid: process.pid, tid: process.pid, flags: 2 }),
  );
  assert.ok(r !== undefined);
  assert.equal(r.ret, 0);
  assert.equal(r.payload.length, 16);
  return { conn, secret: r.payload };
}

async function control(path: string): Promise<RawClient> {
  const c = await RawClient.connect(path);
  const r = await c.request(Op.HELLO, buildPayload(HELLO_LAYOUT, { pid: process.pid, tid: 0 }));
  assert.equal(r?.ret, 0);
  assert.equal(r?.payload.readUInt32LE(0), process.pid, "the daemon's pid, for PR_SET_PTRACER");
  return c;
}

function ioctlPayload(secret: Buffer, cmd: number, arg: bigint): Buffer {
  return buildPayload(IOCTL_LAYOUT, {
    secret,
    cmd,
    tid: process.pid,
    arg,
    pid: process.pid,
    reservedFd: -1,
  });
}

function waitFor(s: IommusimServer, event: string): Promise<unknown> {
  return new Promise((r) => s.once(event, r));
}

afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop();
});
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("daemon socket", () => {
  it("listens on a 0600 socket in a 0700 directory and removes it on stop", async () => {
    const s = await startServer();
    assert.equal(statSync(s.socketPath).mode & 0o777, 0o600);
    assert.ok(statSync(s.socketPath).isSocket());
    assert.equal(statSync(join(s.socketPath, "..")).mode & 0o777, 0o700);
    assert.ok(existsSync(join(s.debugfsDir, "failslab", "ignore-gfp-wait")));
    await s.stop();
    assert.equal(existsSync(s.socketPath), false);
    assert.equal(existsSync(s.debugfsDir), false);
  });

  it("creates a missing directory 0700 and refuses one open to others", async () => {
    const base = mkdtempSync(join(tmpdir(), "iommusim-dir-"));
    dirs.push(base);
    const s = await IommusimServer.start({ socketPath: join(base, "new", "sock"), log: () => {} });
    servers.push(s);
    assert.equal(statSync(join(base, "new")).mode & 0o777, 0o700);
    const open = join(base, "open");
    execFileSync("mkdir", ["-m", "0755", open]);
    await assert.rejects(
      IommusimServer.start({ socketPath: join(open, "sock"), log: () => {} }),
      /open to other users/,
    );
  });

  it("replaces a stale socket, refuses a live one and a non-socket", async () => {
    const { dir, socketPath } = privateSocket();
    dirs.push(dir);
    // A daemon that died without cleaning up leaves its socket file behind.
    execFileSync(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(socketPath)}, () => process.exit(0))`,
    ]);
    assert.ok(statSync(socketPath).isSocket());
    const s = await IommusimServer.start({ socketPath, log: () => {} });
    servers.push(s);
    await assert.rejects(IommusimServer.start({ socketPath, log: () => {} }), /another daemon/);
    const file = join(dir, "plain");
    writeFileSync(file, "x");
    await assert.rejects(IommusimServer.start({ socketPath: file, log: () => {} }), /not a socket/);
  });
});

describe("daemon frames", () => {
  it("answers malformed frames with an error and keeps serving", async () => {
    const s = await startServer();
    const a = await openContext(s.socketPath);
    const c = await control(s.socketPath);

    assert.equal((await c.request(99))?.ret, -ENOSYS, "unknown op");
    const liar = buildPayload(IOCTL_LAYOUT, { secret: a.secret, cmd: IOMMU_DESTROY, pid: 1 });
    assert.equal((await c.request(Op.IOCTL, liar))?.ret, -EPERM, "another process's pid");
    assert.equal((await c.request(Op.IOCTL, Buffer.alloc(8)))?.ret, -EBADMSG, "short payload");
    // Inline struct bytes: at most INLINE_MAX of them, and exactly as many as inlineLen says.
    const withTail = (tail: number, said: number) => {
      const fixed = ioctlPayload(a.secret, IOMMU_DESTROY, 0x1000n);
      fixed.writeUInt32LE(said, IOCTL_LAYOUT.inlineLen);
      return Buffer.concat([fixed, Buffer.alloc(tail)]);
    };
    const tooLong = withTail(INLINE_MAX + 1, INLINE_MAX + 1);
    assert.equal((await c.request(Op.IOCTL, tooLong))?.ret, -EBADMSG, "tail past INLINE_MAX");
    assert.equal((await c.request(Op.IOCTL, withTail(8, 16)))?.ret, -EBADMSG, "inlineLen lies");
    assert.equal((await c.request(Op.IOCTL, withTail(0, 8)))?.ret, -EBADMSG, "no tail at all");
    const inlined = withTail(8, 8);
    inlined.writeUInt32LE(8, IOCTL_LAYOUT.size);
    inlined.writeUInt32LE(4242, IOCTL_LAYOUT.size + 4);
    const served = await c.request(Op.IOCTL, inlined);
    assert.equal(served?.ret, -ENOENT, "the inline struct was read: no object 4242");
    assert.equal(served?.payload.readUInt32LE(4), 0, "DESTROY writes nothing back");
    assert.equal((await c.request(Op.PING))?.ret, 0, "still serving");

    const fresh = await RawClient.connect(s.socketPath);
    const early = await fresh.request(Op.IOCTL, ioctlPayload(a.secret, IOMMU_DESTROY, 0n));
    assert.equal(early?.ret, -EPROTO, "a call before the handshake");
    assert.equal((await fresh.request(Op.PING))?.ret, 0);

    // A length that cannot be a frame: answered once, then that connection alone is dropped.
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(3, 0);
    fresh.sendRaw(bad);
    assert.equal((await fresh.next())?.ret, -EPROTO);
    await fresh.closed();
    const huge = await RawClient.connect(s.socketPath);
    const hdr = Buffer.alloc(16);
    hdr.writeUInt32LE(0x7fff_ffff, 0);
    huge.sendRaw(hdr);
    assert.equal((await huge.next())?.ret, -EPROTO);
    await huge.closed();

    // The context and the other connection did not notice.
    assert.equal(s.stats().contexts, 1);
    const r = await c.request(Op.IOCTL, ioctlPayload(a.secret, IOMMU_DESTROY, 0n));
    assert.equal(r?.ret, -EFAULT, "the context still answers (NULL struct)");
    assert.equal(s.stats().droppedConnections, 2);
    assert.ok(s.stats().rejectedFrames >= 3);

    // Bytes written on a context's own socket are ignored.
    a.conn.sendRaw(Buffer.from("garbage"));
    assert.equal((await c.request(Op.PING))?.ret, 0);
    assert.equal(s.stats().contexts, 1);
    a.conn.close();
    c.close();
  });

  it("names a context only by its secret, and keeps contexts apart", async () => {
    const s = await startServer();
    const a = await openContext(s.socketPath);
    const b = await openContext(s.socketPath);
    const c = await control(s.socketPath);
    assert.notDeepEqual(a.secret, b.secret);
    const forged = await c.request(Op.IOCTL, ioctlPayload(randomBytes(16), IOMMU_DESTROY, 0n));
    assert.equal(forged?.ret, -EBADF);

    const [idA, idB] = [...s.contexts().keys()];
    const ctxA = s.contexts().get(idA);
    const ctxB = s.contexts().get(idB);
    assert.ok(ctxA !== undefined && ctxB !== undefined && ctxA !== ctxB);
    const obj = ctxA.table.reserve(new Dummy());
    ctxA.table.finalize(obj);
    assert.equal(ctxB.table.peek(obj.id), undefined, "B's table has no such object");

    // Closing B releases B only.
    const released = waitFor(s, "release");
    b.conn.close();
    assert.deepEqual(await released, { ctx: idB });
    assert.equal(obj.destroyed, false);
    const stale = await c.request(Op.IOCTL, ioctlPayload(b.secret, IOMMU_DESTROY, 0n));
    assert.equal(stale?.ret, -EBADF);

    const releasedA = waitFor(s, "release");
    a.conn.close();
    await releasedA;
    assert.equal(obj.destroyed, true, "the last close destroys the context's objects");
    c.close();
  });

  it("releases at once on the close barrier after the last close", async () => {
    const s = await startServer();
    const a = await openContext(s.socketPath);
    const c = await control(s.socketPath);
    const barrier = () =>
      c.request(Op.CLOSE, buildPayload(CLOSE_LAYOUT, { secret: a.secret, pid: process.pid }));
    assert.equal((await barrier())?.ret, 0, "still open: nothing released");
    assert.equal(s.stats().contexts, 1);
    a.conn.close();
    const r = await barrier();
    assert.ok(r !== undefined && (r.ret === 1 || r.ret === 0));
    assert.equal(s.stats().contexts, 0, "released by the time the barrier answers");
    assert.equal(s.stats().released, 1);
    c.close();
  });

  it("keeps a context while an ioctl on it is in flight", async () => {
    let resume: () => void = () => {};
    const held = new Promise<void>((r) => {
      resume = r;
    });
    let entered: () => void = () => {};
    const inIoctl = new Promise<void>((r) => {
      entered = r;
    });
    const s = await startServer({
      beforeIoctl: async () => {
        entered();
        await held;
      },
    });
    const a = await openContext(s.socketPath);
    const c = await control(s.socketPath);
    const reply = c.request(Op.IOCTL, ioctlPayload(a.secret, IOMMU_DESTROY, 0n));
    await inIoctl;
    a.conn.close();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.stats().contexts, 1, "the release waits for the ioctl");
    const released = waitFor(s, "release");
    resume();
    assert.equal((await reply)?.ret, -EFAULT, "the ioctl ran on the live context");
    await released;
    assert.equal(s.stats().contexts, 0);
    c.close();
  });
});

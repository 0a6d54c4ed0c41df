/**
 * The iommusim daemon: serves /dev/iommu semantics over a Unix socket to processes running the
 * LD_PRELOAD shim (native/iommusim_shim.c). Usable as a library: `IommusimServer.start()`
 * returns a running server, `stop()` ends it; `iommusim serve` and `iommusim exec` are thin
 * wrappers.
 *
 * - One IommufdContext per opened /dev/iommu. It is released (iommufd_fops_release) once the
 *   client's socket has seen its last close (EOF), no ioctl on it is in flight (the kernel's
 *   ioctl holds a file reference), and no queue fd, access fd or mapping still holds the
 *   iommufd file (the core's ctxFileRefs).
 * - The shim's close() is followed by a CLOSE barrier: the daemon looks at the socket right
 *   then (a non-blocking read: EOF or not) instead of waiting for the event loop to report the
 *   EOF, so the release is complete before the client's next call.
 * - Fds an ioctl creates (fault queues, vEVENTQs, selftest accesses and dma-bufs) are sockets
 *   the shim makes on request (NEED_FD, see protocol.ts); the core hands out their real numbers
 *   through the installers it offers (setEventqFdInstaller, setSelftestFdAllocator), and their
 *   last close is seen the same way as the iommufd's.
 * - mmap of the iommufd fd goes through the core's checks (mmapRegion); the shim maps a memfd the
 *   daemon also opens, kept equal to the region at the edges of every operation that runs
 *   driver code (SharedRegionFile), so later changes on either side are seen by the other.
 * - Every user copy is the daemon's own, on the caller's memory (ProcProcess).
 * - Requests on one connection run in order; the core runs one call at a time. A request that
 *   needs no waiting runs synchronously as its bytes arrive and its reply is written straight to
 *   the socket (writeSync on the connection's descriptor while nothing is queued on it); only
 *   the test hook and a close barrier that must let the event loop run are asynchronous.
 * - An ioctl's top-level struct usually arrives inline and its writes go back with the reply
 *   (ProcProcess's inline window); other copies go through /proc/<pid>/mem.
 * - A frame with an impossible length ends that connection only; a frame with an unknown op or
 *   a wrong payload size is answered with an error and changes nothing.
 * - Same-user trust: the socket is 0600 inside a 0700 directory owned by the daemon's user.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  readSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { connect, createServer, type Server, Socket } from "node:net";
import { dirname } from "node:path";
import {
  closeSelftestFd,
  ctxFileRefs,
  type EventqFile,
  IommufdContext,
  type MmapMapping,
  mmapRegion,
  selftestFile,
  setEventqFdInstaller,
  setSelftestFdAllocator,
} from "../core/index.ts";
import { EBADF, EFAULT, EINVAL, EIO, ENOMEM, ENOSYS, EPERM, ErrnoError, ESRCH } from "../errno.ts";
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  IOMMU_VEVENTQ_ALLOC,
} from "../uapi/ioctl.ts";
import { FailNthTasks, KSTRTOUINT_USER_MAX, kstrtouint } from "./fail_nth_file.ts";
import { ProcHost, type ProcProcess } from "./proc_process.ts";
import {
  CLOSE_LAYOUT,
  FAILNTH_LAYOUT,
  type Frame,
  FrameReader,
  HEADER_SIZE,
  HELLO_LAYOUT,
  HELLO_REPLY_LAYOUT,
  INLINE_MAX,
  IOCTL_LAYOUT,
  IOCTL_REPLY_LAYOUT,
  IoctlReplyFlag,
  MMAP_ADDR_LAYOUT,
  MMAP_LAYOUT,
  MMAP_REPLY_LAYOUT,
  MUNMAP_LAYOUT,
  OBJ_LAYOUT,
  OBJ_RW_LAYOUT,
  OPEN_LAYOUT,
  Op,
  PROC_STATUS_LAYOUT,
  PROC_STATUS_REPLY_LAYOUT,
  PROTOCOL_VERSION,
  REQUEST_LAYOUTS,
  REQUEST_TAIL_MAX,
  SECRET_SIZE,
  SecretTable,
} from "./protocol.ts";
import { SharedRegionFile } from "./shared_region.ts";
import { ioctlRecord, snapshotStruct, type TraceRecord } from "./trace.ts";

/** Linux errnos the protocol uses that the library has no use for. */
export const EPROTO = 71;
export const EBADMSG = 74;
const EMFILE = 24;

/** rw_verify_area caps one read or write at MAX_RW_COUNT = INT_MAX & PAGE_MASK. */
const MAX_RW_COUNT = 0x7fff_f000;
/** The ready mask of a file without a poll op (DEFAULT_POLLMASK). */
const DEFAULT_POLLMASK = 0x001 | 0x004 | 0x040 | 0x100;
const PAGE = 4096n;

export interface ServerOptions {
  /** Path of the listening socket; its directory is made 0700 if missing. */
  socketPath: string;
  /** Receives one record per ioctl, open and release (`iommusim exec --trace`). */
  trace?: (rec: TraceRecord) => void;
  /** Diagnostics (core exceptions). Default: stderr. */
  log?: (msg: string) => void;
  /** Test hook: awaited before each ioctl runs (to kill a client in the middle of one). */
  beforeIoctl?: (info: { ctx: number; pid: number; cmd: number }) => Promise<void> | void;
}

type ConnKind = "new" | "iommufd" | "object" | "control";

interface Conn {
  readonly sock: Socket;
  /** The socket's descriptor, for replies written synchronously (-1: not reachable). */
  readonly fd: number;
  readonly reader: FrameReader;
  kind: ConnKind;
  /** Frames received and not yet handled, in order. */
  readonly pending: Frame[];
  /** A request of this connection is waiting (the ones after it wait for it). */
  busy: boolean;
  /** The stream cannot be resynchronised: answer EPROTO after `pending`, then drop it. */
  broken: boolean;
  /** Receives each whole frame (made once per connection). */
  visit: (f: Frame) => void;
  context?: ContextState;
  object?: ObjectState;
  /** Control connections: the process they speak for (fixed by HELLO). */
  pid?: number;
  proc?: ProcProcess;
}

/** One opened /dev/iommu. */
interface ContextState {
  readonly id: number;
  readonly ctx: IommufdContext;
  readonly secret: Buffer;
  readonly conn: Conn;
  readonly openerPid: number;
  inflight: number;
  /** The client's last fd on it is closed (the socket saw EOF). */
  fdClosed: boolean;
  released: boolean;
}

/** What an object fd stands for once an ioctl bound it. */
type Bound =
  | { kind: "eventq"; st: ContextState; file: EventqFile }
  | { kind: "selftest"; st: ContextState; fd: number };

/** One object fd (a socket the shim made for an ioctl that returns an fd). */
interface ObjectState {
  readonly secret: Buffer;
  readonly conn: Conn;
  readonly pid: number;
  bound: Bound | undefined;
  closed: boolean;
}

/** The object fd the ioctl being run may hand out. */
interface Reservation {
  readonly fd: number;
  readonly obj: ObjectState;
  used: boolean;
}

interface MapState {
  readonly st: ContextState;
  readonly mapping: MmapMapping;
  readonly pid: number;
  addr: number;
  /** The memfd the client maps, kept equal to the region (undefined: a one-time copy). */
  shared: SharedRegionFile | undefined;
}

export interface ServerStats {
  /** Contexts open now (not yet released). */
  contexts: number;
  /** Contexts opened since start. */
  opened: number;
  /** Contexts released since start. */
  released: number;
  /** Object fds open now. */
  objects: number;
  /** Mappings of iommufd fds alive now. */
  mappings: number;
  /** Connections open now. */
  connections: number;
  ioctls: number;
  /** Frames answered with an error because they were malformed or out of place. */
  rejectedFrames: number;
  /** Connections dropped for a framing error. */
  droppedConnections: number;
  /** Bytes a client wrote on a context's or object's own socket (ignored). */
  discardedBytes: number;
  /** Ioctls whose struct arrived inline with the request. */
  inlineIoctls: number;
  /** Control connections made since start (one per client process, unless it lost one). */
  controlConnections: number;
}

export class IommusimServer extends EventEmitter {
  readonly socketPath: string;
  /** Processes, page identities and pins of every client. */
  readonly host = new ProcHost();
  /** Every task's fail-nth value. */
  readonly failNth = new FailNthTasks();
  /** The fake debugfs directory the shim shows at /sys/kernel/debug. */
  readonly debugfsDir: string;
  private readonly opts: ServerOptions;
  private readonly server: Server;
  private readonly conns = new Set<Conn>();
  private readonly contextsBySecret = new SecretTable<ContextState>();
  private readonly contextsById = new Map<number, ContextState>();
  private readonly objectsBySecret = new SecretTable<ObjectState>();
  private readonly pendingMaps = new Map<number, MapState>();
  private readonly maps = new Map<string, MapState>();
  /** Every connection's reads land here (one read is handled at a time). */
  private readonly readBuffer = Buffer.allocUnsafe(65536);
  /** Reply frames are built here, then written synchronously (or copied to the stream). */
  private readonly outFrame = Buffer.allocUnsafe(HEADER_SIZE + 8 + INLINE_MAX * 5);
  /** IOCTL reply payloads are built here. */
  private readonly replyPayload = Buffer.allocUnsafe(IOCTL_REPLY_LAYOUT.size + INLINE_MAX * 5);
  private reservation: Reservation | undefined;
  private nextContextId = 1;
  private nextMapToken = 1;
  /** Mappings in `maps` with a shared file. */
  private sharedMaps = 0;
  private readonly counters = {
    opened: 0,
    released: 0,
    ioctls: 0,
    rejectedFrames: 0,
    droppedConnections: 0,
    discardedBytes: 0,
    inlineIoctls: 0,
    controlConnections: 0,
  };
  private stopped = false;

  private constructor(opts: ServerOptions) {
    super();
    this.opts = opts;
    this.socketPath = opts.socketPath;
    this.debugfsDir = debugfsDirFor(opts.socketPath);
    this.server = createServer({ pauseOnConnect: true }, (sock) => this.accept(sock));
  }

  /** Prepares the socket directory and starts listening. */
  static async start(opts: ServerOptions): Promise<IommusimServer> {
    const s = new IommusimServer(opts);
    await prepareSocketPath(opts.socketPath);
    makeFakeDebugfs(s.debugfsDir);
    await new Promise<void>((resolve, reject) => {
      const old = process.umask(0o177);
      s.server.once("error", reject);
      s.server.listen(opts.socketPath, () => {
        s.server.off("error", reject);
        resolve();
      });
      process.umask(old);
    });
    chmodSync(opts.socketPath, 0o600);
    return s;
  }

  /** Stops listening, drops every connection and releases every context. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns) c.sock.destroy();
    for (const m of [...this.maps.values(), ...this.pendingMaps.values()]) {
      m.shared?.close();
      m.mapping.close();
    }
    this.maps.clear();
    this.pendingMaps.clear();
    for (const o of [...this.objectsBySecret.values()]) this.releaseObject(o);
    for (const st of [...this.contextsById.values()]) this.release(st);
    await closed;
    this.host.close();
    try {
      unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
    rmSync(this.debugfsDir, { recursive: true, force: true });
  }

  stats(): ServerStats {
    return {
      contexts: this.contextsById.size,
      objects: this.objectsBySecret.size,
      mappings: this.maps.size + this.pendingMaps.size,
      connections: this.conns.size,
      ...this.counters,
    };
  }

  /** The live contexts by id (tests look inside them). */
  contexts(): ReadonlyMap<number, IommufdContext> {
    return new Map([...this.contextsById].map(([id, st]) => [id, st.ctx]));
  }

  private log(msg: string): void {
    (this.opts.log ?? ((m: string) => process.stderr.write(`iommusim daemon: ${m}\n`)))(msg);
  }

  private bug(e: unknown): void {
    this.log(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }

  // ---- connections ---------------------------------------------------------------------------

  private accept(accepted: Socket): void {
    // Reads go straight to a callback on one shared buffer (no Buffer per read, no stream
    // machinery): a frame is handled, or copied, before the callback returns.
    const sock =
      adoptWithOnread(accepted, this.readBuffer, (n) => {
        this.onData(conn, this.readBuffer, n);
      }) ?? accepted;
    const conn: Conn = {
      sock,
      fd: socketFd(sock) ?? -1,
      reader: new FrameReader(),
      kind: "new",
      pending: [],
      busy: false,
      broken: false,
      visit: (f) => this.arrived(conn, f),
    };
    this.conns.add(conn);
    if (sock === accepted) {
      sock.on("data", (chunk: Buffer) => this.onData(conn, chunk));
      sock.resume();
    }
    sock.on("error", () => {
      // ECONNRESET from a killed client: 'close' follows and releases what it held.
    });
    sock.on("close", () => {
      this.conns.delete(conn);
      if (conn.context !== undefined) {
        conn.context.fdClosed = true;
        this.maybeRelease(conn.context);
      }
      if (conn.object !== undefined) this.releaseObject(conn.object);
      if (conn.kind === "control" && conn.pid !== undefined) this.processGone(conn.pid);
    });
  }

  private onData(conn: Conn, chunk: Buffer, length = chunk.length): void {
    if (conn.kind === "iommufd" || conn.kind === "object") {
      // A context's or object's socket carries nothing after its open: the shim never writes.
      this.counters.discardedBytes += length;
      return;
    }
    if (conn.broken) return;
    const badLength = conn.reader.pushEach(chunk, conn.visit, length);
    if (badLength !== undefined) {
      this.counters.droppedConnections++;
      conn.broken = true;
    }
    this.pump(conn);
  }

  /** A whole frame arrived: handled now, or queued behind a request that is waiting. */
  private arrived(conn: Conn, f: Frame): void {
    if (conn.busy || conn.pending.length > 0) {
      // It waits for an earlier request: keep its own copy of the bytes.
      conn.pending.push({ op: f.op, seq: f.seq, ret: f.ret, payload: Buffer.from(f.payload) });
    } else {
      this.run(conn, f);
    }
  }

  /** Handles one frame now; a request that has to wait holds the connection's later ones. */
  private run(conn: Conn, f: Frame): void {
    let waiting: Promise<void> | void;
    try {
      waiting = this.handle(conn, f);
    } catch (e) {
      this.bug(e);
      return;
    }
    if (waiting === undefined) return;
    conn.busy = true;
    waiting
      .catch((e) => this.bug(e))
      .finally(() => {
        conn.busy = false;
        this.pump(conn);
      });
  }

  /**
   * Handles the connection's frames in order: synchronously while each finishes at once, and
   * from the completion of one that has to wait.
   */
  private pump(conn: Conn): void {
    while (!conn.busy && conn.pending.length > 0) this.run(conn, conn.pending.shift() as Frame);
    if (!conn.busy && conn.broken && !conn.sock.destroyed) {
      // No way to find the next frame: answer once and drop this connection only.
      this.send(conn, 0, 0, -EPROTO);
      conn.sock.end();
      conn.sock.destroySoon();
    }
  }

  private send(
    conn: Conn,
    op: number,
    seq: number,
    ret: number,
    payload?: Uint8Array,
    payloadLength = payload === undefined ? 0 : payload.length,
  ): void {
    if (conn.sock.destroyed || !conn.sock.writable) return;
    const plen = payloadLength;
    const len = HEADER_SIZE + plen;
    const frame = len <= this.outFrame.length ? this.outFrame : Buffer.allocUnsafe(len);
    frame.writeUInt32LE(len, 0);
    frame.writeUInt32LE(op >>> 0, 4);
    frame.writeUInt32LE(seq >>> 0, 8);
    frame.writeInt32LE(ret | 0, 12);
    if (payload !== undefined) {
      if (plen === payload.length) frame.set(payload, HEADER_SIZE);
      else for (let i = 0; i < plen; i++) frame[HEADER_SIZE + i] = payload[i];
    }
    let done = 0;
    if (conn.fd >= 0 && conn.sock.writableLength === 0) {
      // Nothing is queued on the stream, so writing past it keeps the order.
      try {
        done = writeSync(conn.fd, frame, 0, len);
      } catch {
        done = 0; // EAGAIN (the peer is slow) or a dead peer: the stream deals with it
      }
    }
    if (done < len) conn.sock.write(Buffer.from(frame.subarray(done, len)));
  }

  private reject(conn: Conn, f: Frame, errno: number): void {
    this.counters.rejectedFrames++;
    this.send(conn, f.op, f.seq, -errno);
  }

  private handle(conn: Conn, f: Frame): Promise<void> | void {
    const layout = REQUEST_LAYOUTS[f.op];
    if (layout === undefined) return this.reject(conn, f, ENOSYS);
    const tail = f.payload.length - layout.size;
    if (tail < 0 || tail > (REQUEST_TAIL_MAX[f.op] ?? 0)) return this.reject(conn, f, EBADMSG);
    if (f.op === Op.IOCTL && f.payload.readUInt32LE(IOCTL_LAYOUT.inlineLen) !== tail) {
      return this.reject(conn, f, EBADMSG);
    }
    if (f.op === Op.PING) return this.send(conn, f.op, f.seq, 0);
    if (conn.kind === "new") {
      if (f.op === Op.OPEN) return this.open(conn, f);
      if (f.op === Op.OBJ_OPEN) return this.openObject(conn, f);
      if (f.op === Op.HELLO) return this.hello(conn, f);
      return this.reject(conn, f, EPROTO);
    }
    if (conn.kind !== "control") return;
    // A call speaks for the process that said hello on this connection, no other.
    const pidAt = layout.pid;
    if (pidAt !== undefined && f.payload.readUInt32LE(pidAt) !== conn.pid) {
      return this.reject(conn, f, EPERM);
    }
    const proc = conn.proc as ProcProcess;
    const genAt = layout.mapGen;
    if (genAt === undefined) this.host.beginCall();
    else this.host.beginCallFor(proc, f.payload.readUInt32LE(genAt));
    switch (f.op) {
      case Op.IOCTL:
        return this.ioctl(conn, f, proc);
      case Op.CLOSE:
        return this.close(conn, f);
      case Op.FAILNTH_READ:
        return this.failNthRead(conn, f, proc);
      case Op.FAILNTH_WRITE:
        return this.failNthWrite(conn, f, proc);
      case Op.MMAP:
        return this.mmap(conn, f);
      case Op.MMAP_ADDR:
        return this.mmapAddr(conn, f, proc);
      case Op.MUNMAP:
        return this.munmap(conn, f);
      case Op.OBJ_READ:
      case Op.OBJ_WRITE:
        return this.objectRw(conn, f, proc);
      case Op.OBJ_POLL:
        return this.objectPoll(conn, f);
      case Op.PROC_STATUS:
        return this.procStatus(conn, f);
      default:
        return this.reject(conn, f, EPROTO);
    }
  }

  /**
   * The accounting a /proc/<pid>/status read shows: VmPin is mm->pinned_vm and VmLck counts
   * mm->locked_vm, which only our iommufd model charges (the host kernel pins nothing for us).
   * Any client may ask about any process it can name, as any process may read that file.
   */
  private procStatus(conn: Conn, f: Frame) {
    const target = this.host.known(f.payload.readUInt32LE(PROC_STATUS_LAYOUT.targetPid));
    if (target === undefined) return this.send(conn, f.op, f.seq, -ESRCH);
    const reply = Buffer.alloc(PROC_STATUS_REPLY_LAYOUT.size);
    const acct = target.accounting;
    reply.writeBigUInt64LE(BigInt(acct.pinnedPages), PROC_STATUS_REPLY_LAYOUT.pinnedPages);
    reply.writeBigUInt64LE(BigInt(acct.mmLockedPages), PROC_STATUS_REPLY_LAYOUT.mmLockedPages);
    this.send(conn, f.op, f.seq, 0, reply);
  }

  // ---- handshakes ----------------------------------------------------------------------------

  private hello(conn: Conn, f: Frame) {
    if (conn.sock.destroyed) return;
    conn.kind = "control";
    this.counters.controlConnections++;
    conn.pid = f.payload.readUInt32LE(HELLO_LAYOUT.pid);
    // One process object for as long as the connection lives (the process cannot change under
    // it: its exec closes the connection, its exit too), so calls need no /proc lookup.
    conn.proc = this.host.process(conn.pid, true);
    const reply = Buffer.alloc(HELLO_REPLY_LAYOUT.size);
    reply.writeUInt32LE(process.pid, HELLO_REPLY_LAYOUT.daemonPid);
    reply.writeUInt32LE(PROTOCOL_VERSION, HELLO_REPLY_LAYOUT.version);
    this.send(conn, f.op, f.seq, 0, reply);
  }

  /** open("/dev/iommu"): iommufd_fops_open, whose allocation is a fault-injection site. */
  private open(conn: Conn, f: Frame) {
    // The client may be gone already (its 'close' ran first): make nothing that would leak.
    if (conn.sock.destroyed) return;
    const pid = f.payload.readUInt32LE(OPEN_LAYOUT.pid);
    const tid = f.payload.readUInt32LE(OPEN_LAYOUT.tid);
    if (this.failNth.siteFails(pid, tid)) {
      this.opts.trace?.({ event: "open", ctx: 0, pid, errno: ENOMEM });
      return this.send(conn, f.op, f.seq, -ENOMEM);
    }
    const secretBytes = randomBytes(SECRET_SIZE);
    const st: ContextState = {
      id: this.nextContextId++,
      ctx: new IommufdContext(),
      secret: secretBytes,
      conn,
      openerPid: pid,
      inflight: 0,
      fdClosed: false,
      released: false,
    };
    this.installFdHooks(st);
    conn.kind = "iommufd";
    conn.context = st;
    this.contextsBySecret.set(st.secret, st);
    this.contextsById.set(st.id, st);
    this.counters.opened++;
    this.opts.trace?.({ event: "open", ctx: st.id, pid });
    // The secret is the reply's payload; the shim leaves it unread in its socket.
    this.send(conn, f.op, f.seq, 0, secretBytes);
    this.emit("open", { ctx: st.id, pid });
  }

  /** The socket for an fd an ioctl is about to create. */
  private openObject(conn: Conn, f: Frame) {
    if (conn.sock.destroyed) return;
    const secretBytes = randomBytes(SECRET_SIZE);
    const obj: ObjectState = {
      secret: secretBytes,
      conn,
      pid: f.payload.readUInt32LE(OPEN_LAYOUT.pid),
      bound: undefined,
      closed: false,
    };
    conn.kind = "object";
    conn.object = obj;
    this.objectsBySecret.set(obj.secret, obj);
    this.send(conn, f.op, f.seq, 0, secretBytes);
  }

  /**
   * The core's descriptor hooks for this context: the number it hands out is the object fd
   * the shim reserved for the ioctl being run.
   */
  private installFdHooks(st: ContextState): void {
    setEventqFdInstaller(st.ctx, {
      reserve: () => {
        const r = this.reservation;
        if (r === undefined || r.used) throw new ErrnoError(EMFILE, "no descriptor reserved");
        r.used = true;
        return r.fd;
      },
      install: (fd, file) => {
        const r = this.reservation;
        if (r !== undefined && r.fd === fd) r.obj.bound = { kind: "eventq", st, file };
      },
      release: (fd) => {
        const r = this.reservation;
        if (r !== undefined && r.fd === fd && r.obj.bound === undefined) r.used = false;
      },
      closed: () => {},
    });
    setSelftestFdAllocator(st.ctx, {
      alloc: () => {
        const r = this.reservation;
        if (r === undefined || r.used) return undefined;
        r.used = true;
        return r.fd;
      },
      release: (fd) => {
        const r = this.reservation;
        if (r !== undefined && r.fd === fd && r.obj.bound === undefined) r.used = false;
      },
    });
  }

  /** Releases the context when nothing holds its file any more (iommufd_fops_release). */
  private maybeRelease(st: ContextState): void {
    if (st.released || !st.fdClosed || st.inflight > 0) return;
    if (ctxFileRefs(st.ctx) > 0) return;
    this.release(st);
  }

  private release(st: ContextState): void {
    if (st.released) return;
    st.released = true;
    this.contextsBySecret.delete(st.secret, st);
    this.contextsById.delete(st.id);
    try {
      const stuck = st.ctx.close();
      if (stuck.length > 0) this.log(`context ${st.id}: ${stuck.length} objects left at close`);
    } catch (e) {
      this.bug(e);
    }
    this.host.sweep();
    this.counters.released++;
    this.opts.trace?.({ event: "release", ctx: st.id, pid: st.openerPid });
    if (!st.conn.sock.destroyed) st.conn.sock.destroy();
    this.emit("release", { ctx: st.id });
  }

  /** The last close of an object fd: the file's release. */
  private releaseObject(obj: ObjectState): void {
    if (obj.closed) return;
    obj.closed = true;
    this.objectsBySecret.delete(obj.secret, obj);
    const b = obj.bound;
    try {
      if (b?.kind === "eventq") b.file.close();
      else if (b?.kind === "selftest") closeSelftestFd(b.st.ctx, b.fd);
    } catch (e) {
      this.bug(e);
    }
    if (!obj.conn.sock.destroyed) obj.conn.sock.destroy();
    if (b !== undefined) this.maybeRelease(b.st);
  }

  /** A client's control connection went away: its process exited, so its mappings go. */
  private processGone(pid: number): void {
    for (const [key, m] of this.maps) {
      if (m.pid === pid) this.unmap(key, m);
    }
  }

  private unmap(key: string, m: MapState): void {
    this.maps.delete(key);
    if (m.shared !== undefined) {
      m.shared.close();
      this.sharedMaps--;
    }
    m.mapping.close();
    this.maybeRelease(m.st);
  }

  /**
   * Makes every client mapping of a region and the region equal again: the clients' writes go
   * to the regions, then the regions' changes to the clients. Runs around each operation that
   * runs driver code; code outside those that changes a region (a simulated device) calls it.
   */
  syncMappings(): void {
    this.pullMappings();
    this.pushMappings();
  }

  private pullMappings(): void {
    if (this.sharedMaps === 0) return;
    for (const m of this.maps.values()) m.shared?.pull();
  }

  private pushMappings(): void {
    if (this.sharedMaps === 0) return;
    for (const m of this.maps.values()) m.shared?.push();
  }

  private lookupContext(payload: Buffer, offset: number): ContextState | undefined {
    const st = this.contextsBySecret.get(payload, offset);
    return st === undefined || st.released ? undefined : st;
  }

  private lookupObject(payload: Buffer, offset: number): ObjectState | undefined {
    const o = this.objectsBySecret.get(payload, offset);
    return o === undefined || o.closed ? undefined : o;
  }

  // ---- ioctl ---------------------------------------------------------------------------------

  /** Whether the call will create a file and so needs an object fd reserved first. */
  private needsFd(proc: ProcProcess, cmd: number, arg: bigint): boolean {
    const c = cmd >>> 0;
    if (c === IOMMU_FAULT_QUEUE_ALLOC || c === IOMMU_VEVENTQ_ALLOC) return true;
    if (c !== IOMMU_TEST_CMD) return false;
    const head = new Uint8Array(8);
    if (proc.read(arg, head) !== 0) return false; // the call itself will fault
    const v = new DataView(head.buffer);
    if (v.getUint32(0, true) < 8) return false;
    const op = v.getUint32(4, true);
    return op === IOMMU_TEST_OP.CREATE_ACCESS || op === IOMMU_TEST_OP.DMABUF_GET;
  }

  private ioctl(conn: Conn, f: Frame, proc: ProcProcess): Promise<void> | void {
    const p = f.payload;
    const st = this.lookupContext(p, IOCTL_LAYOUT.secret);
    if (st === undefined) return this.ioctlReply(conn, f, -EBADF, 0, proc);
    const cmd = p.readUInt32LE(IOCTL_LAYOUT.cmd);
    const tid = p.readUInt32LE(IOCTL_LAYOUT.tid);
    const arg = p.readBigUInt64LE(IOCTL_LAYOUT.arg);
    const inlineLen = p.readUInt32LE(IOCTL_LAYOUT.inlineLen);
    if (inlineLen > 0) {
      this.counters.inlineIoctls++;
      proc.openWindow(Number(arg), p, IOCTL_LAYOUT.size, inlineLen);
    }
    const reservedFd = p.readInt32LE(IOCTL_LAYOUT.reservedFd);
    let reservation: Reservation | undefined;
    if (reservedFd >= 0) {
      const obj = this.lookupObject(p, IOCTL_LAYOUT.reservedSecret);
      if (obj === undefined || obj.bound !== undefined) {
        return this.ioctlReply(conn, f, -EBADF, 0, proc);
      }
      reservation = { fd: reservedFd, obj, used: false };
    } else if (this.needsFd(proc, cmd, arg)) {
      return this.ioctlReply(conn, f, 0, IoctlReplyFlag.NEED_FD, proc);
    }
    st.inflight++;
    if (this.opts.beforeIoctl !== undefined) {
      return this.ioctlAfterHook(conn, f, st, proc, tid, cmd, arg, reservation);
    }
    this.ioctlRun(conn, f, st, proc, tid, cmd, arg, reservation);
  }

  /** The test hook's path: the same call once the hook has let it go on. */
  private async ioctlAfterHook(
    conn: Conn,
    f: Frame,
    st: ContextState,
    proc: ProcProcess,
    tid: number,
    cmd: number,
    arg: bigint,
    reservation: Reservation | undefined,
  ): Promise<void> {
    // Others may run meanwhile: the struct's bytes go back to where they came from.
    proc.settleWindow();
    const pid = p32(f.payload, IOCTL_LAYOUT.pid);
    try {
      await this.opts.beforeIoctl?.({ ctx: st.id, pid, cmd });
    } catch (e) {
      st.inflight--;
      this.maybeRelease(st);
      throw e;
    }
    // Time has passed: liveness, limits and maps are read afresh (the window too).
    this.host.beginCall();
    const inlineLen = p32(f.payload, IOCTL_LAYOUT.inlineLen);
    if (inlineLen > 0) proc.openWindow(Number(arg), f.payload, IOCTL_LAYOUT.size, inlineLen);
    this.ioctlRun(conn, f, st, proc, tid, cmd, arg, reservation);
  }

  /** Runs the call (st.inflight already counts it) and answers it. */
  private ioctlRun(
    conn: Conn,
    f: Frame,
    st: ContextState,
    proc: ProcProcess,
    tid: number,
    cmd: number,
    arg: bigint,
    reservation: Reservation | undefined,
  ): void {
    let ret = -EIO;
    let flags = 0;
    try {
      this.reservation = reservation;
      try {
        ret = this.runIoctl(st, proc, tid, cmd, arg);
      } finally {
        this.reservation = undefined;
      }
      if (reservation?.used && reservation.obj.bound === undefined) {
        // A selftest file is bound by number: see whether the call kept the descriptor.
        if (selftestFile(st.ctx, reservation.fd) !== undefined) {
          reservation.obj.bound = { kind: "selftest", st, fd: reservation.fd };
        }
      }
      if (reservation?.obj.bound !== undefined) flags = IoctlReplyFlag.FD_USED;
    } finally {
      st.inflight--;
      this.maybeRelease(st);
      this.ioctlReply(conn, f, ret, flags, proc);
    }
  }

  /** Answers an IOCTL with the writes the call made inside its inline window. */
  private ioctlReply(conn: Conn, f: Frame, ret: number, flags: number, proc: ProcProcess) {
    const r = this.replyPayload;
    r.writeUInt32LE(flags, IOCTL_REPLY_LAYOUT.flags);
    const end = proc.closeWindow(r, IOCTL_REPLY_LAYOUT.size);
    r.writeUInt32LE(end - IOCTL_REPLY_LAYOUT.size, IOCTL_REPLY_LAYOUT.writeBackLen);
    this.send(conn, f.op, f.seq, ret, r, end);
  }

  private runIoctl(
    st: ContextState,
    proc: ProcProcess,
    tid: number,
    cmd: number,
    arg: bigint,
  ): number {
    const pid = proc.pid;
    const trace = this.opts.trace;
    const before = trace === undefined ? undefined : snapshotStruct(proc, cmd, arg);
    const t0 = trace === undefined ? 0n : process.hrtime.bigint();
    let errno: number;
    let value = 0;
    let message: string | undefined;
    this.pullMappings();
    try {
      if (st.ctx.closed) throw new ErrnoError(EBADF, "context already released");
      const out =
        this.failNth.get(pid, tid) === 0
          ? st.ctx.ioctl(cmd, arg, proc)
          : this.failNth.withArmed(pid, tid, st.ctx.faults, () => st.ctx.ioctl(cmd, arg, proc));
      errno = out.errno;
      value = out.value;
      message = out.message;
    } catch (e) {
      if (e instanceof ErrnoError) {
        errno = e.errno;
      } else {
        // A bug in the core; the kernel would oops. Keep serving and say what happened.
        this.bug(e);
        errno = EIO;
      }
      message = e instanceof Error ? e.message : String(e);
    }
    this.pushMappings();
    this.counters.ioctls++;
    const ret = errno !== 0 ? -errno : Math.min(value, 0x7fff_ffff);
    if (trace !== undefined) {
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      const rec = ioctlRecord({ ctx: st.id, pid, tid, cmd, arg, ret, errno, us });
      if (before !== undefined) rec.in = before;
      if (before !== undefined) rec.out = snapshotStruct(proc, cmd, arg);
      if (message !== undefined) rec.message = message;
      trace(rec);
    }
    if (this.listenerCount("ioctl") > 0) this.emit("ioctl", { ctx: st.id, pid, cmd, errno });
    return ret;
  }

  // ---- close ---------------------------------------------------------------------------------

  /** The barrier after close(): ret 1 when that close released the context or object. */
  private close(conn: Conn, f: Frame): Promise<void> | void {
    const st = this.lookupContext(f.payload, CLOSE_LAYOUT.secret);
    const obj = st === undefined ? this.lookupObject(f.payload, CLOSE_LAYOUT.secret) : undefined;
    const sock = st?.conn.sock ?? obj?.conn.sock;
    if (sock === undefined) return this.send(conn, f.op, f.seq, 0);
    const ended = peerClosed(sock);
    if (ended !== undefined) return this.closeDone(conn, f, st, obj, ended);
    return this.closeAfterLoop(conn, f, st, obj, sock);
  }

  /** Cannot look at the socket directly: let the event loop deliver a pending EOF. */
  private async closeAfterLoop(
    conn: Conn,
    f: Frame,
    st: ContextState | undefined,
    obj: ObjectState | undefined,
    sock: Socket,
  ): Promise<void> {
    for (let i = 0; i < 3 && !sock.destroyed; i++) await new Promise((r) => setImmediate(r));
    this.closeDone(conn, f, st, obj, sock.destroyed);
  }

  private closeDone(
    conn: Conn,
    f: Frame,
    st: ContextState | undefined,
    obj: ObjectState | undefined,
    ended: boolean,
  ): void {
    let released = 0;
    if (ended && obj !== undefined) {
      this.releaseObject(obj);
      released = 1;
    } else if (ended && st !== undefined) {
      st.fdClosed = true;
      this.maybeRelease(st);
      released = st.released ? 1 : 0;
    }
    this.send(conn, f.op, f.seq, released);
  }

  // ---- object fds ----------------------------------------------------------------------------

  /** read/write of an object fd: the queue's record semantics, EINVAL for files without them. */
  private objectRw(conn: Conn, f: Frame, proc: ProcProcess) {
    const p = f.payload;
    const obj = this.lookupObject(p, OBJ_RW_LAYOUT.secret);
    if (obj === undefined) return this.send(conn, f.op, f.seq, -EBADF);
    const b = obj.bound;
    if (b?.kind !== "eventq") return this.send(conn, f.op, f.seq, -EINVAL);
    const buf = p.readBigUInt64LE(OBJ_RW_LAYOUT.buf);
    const count64 = p.readBigUInt64LE(OBJ_RW_LAYOUT.count);
    const count = count64 > BigInt(MAX_RW_COUNT) ? MAX_RW_COUNT : Number(count64);
    const pos = Number(p.readBigInt64LE(OBJ_RW_LAYOUT.pos));
    let ret: number;
    this.pullMappings();
    try {
      ret =
        f.op === Op.OBJ_READ
          ? b.file.read(proc, buf, count, pos)
          : b.file.write(proc, buf, count, pos);
    } catch (e) {
      if (!(e instanceof ErrnoError)) this.bug(e);
      ret = -(e instanceof ErrnoError ? e.errno : EIO);
    }
    this.pushMappings();
    this.send(conn, f.op, f.seq, ret);
  }

  private objectPoll(conn: Conn, f: Frame) {
    const obj = this.lookupObject(f.payload, OBJ_LAYOUT.secret);
    if (obj === undefined) return this.send(conn, f.op, f.seq, -EBADF);
    const b = obj.bound;
    this.send(conn, f.op, f.seq, b?.kind === "eventq" ? b.file.pollReady() : DEFAULT_POLLMASK);
  }

  // ---- fail-nth ------------------------------------------------------------------------------

  private failNthTarget(p: Buffer): { pid: number; tid: number } {
    return {
      pid: p.readUInt32LE(FAILNTH_LAYOUT.targetPid),
      tid: p.readUInt32LE(FAILNTH_LAYOUT.targetTid),
    };
  }

  /** proc_fail_nth_read: "%u\n" through simple_read_from_buffer. */
  private failNthRead(conn: Conn, f: Frame, proc: ProcProcess) {
    const p = f.payload;
    const target = this.failNthTarget(p);
    const buf = p.readBigUInt64LE(FAILNTH_LAYOUT.buf);
    const count = p.readBigUInt64LE(FAILNTH_LAYOUT.count);
    const pos = p.readBigInt64LE(FAILNTH_LAYOUT.pos);
    if (!FailNthTasks.taskExists(target.pid, target.tid)) return this.reject(conn, f, ESRCH);
    const text = Buffer.from(`${this.failNth.get(target.pid, target.tid)}\n`);
    if (pos < 0n) return this.send(conn, f.op, f.seq, -EINVAL);
    if (pos >= BigInt(text.length) || count === 0n) return this.send(conn, f.op, f.seq, 0);
    const want = text.subarray(Number(pos), Number(pos) + Number(count > 64n ? 64n : count));
    const copied = copyToUserPartial(proc, buf, want);
    this.send(conn, f.op, f.seq, copied === 0 ? -EFAULT : copied);
  }

  /** proc_fail_nth_write: kstrtouint_from_user, then the task's value. */
  private failNthWrite(conn: Conn, f: Frame, proc: ProcProcess) {
    const p = f.payload;
    const target = this.failNthTarget(p);
    const buf = p.readBigUInt64LE(FAILNTH_LAYOUT.buf);
    const count = p.readBigUInt64LE(FAILNTH_LAYOUT.count);
    const n = Number(count < BigInt(KSTRTOUINT_USER_MAX) ? count : BigInt(KSTRTOUINT_USER_MAX));
    const bytes = new Uint8Array(n);
    if (n > 0 && proc.read(buf, bytes) !== 0) return this.send(conn, f.op, f.seq, -EFAULT);
    const value = kstrtouint(bytes);
    if (value < 0) return this.send(conn, f.op, f.seq, value);
    if (!FailNthTasks.taskExists(target.pid, target.tid)) return this.reject(conn, f, ESRCH);
    this.failNth.set(target.pid, target.tid, value);
    const done = count > BigInt(MAX_RW_COUNT) ? MAX_RW_COUNT : Number(count);
    this.send(conn, f.op, f.seq, done);
  }

  // ---- mmap ----------------------------------------------------------------------------------

  /** mmap of an iommufd fd: the core's checks; on success a token for MMAP_ADDR. */
  private mmap(conn: Conn, f: Frame) {
    const p = f.payload;
    const st = this.lookupContext(p, MMAP_LAYOUT.secret);
    if (st === undefined) return this.send(conn, f.op, f.seq, -EBADF);
    const m = mmapRegion(st.ctx, {
      offset: p.readBigUInt64LE(MMAP_LAYOUT.pgoff) * PAGE,
      length: p.readBigUInt64LE(MMAP_LAYOUT.length),
      prot: p.readUInt32LE(MMAP_LAYOUT.prot),
      flags: p.readUInt32LE(MMAP_LAYOUT.flags),
    });
    if (typeof m === "number") return this.send(conn, f.op, f.seq, -m);
    const token = this.nextMapToken++;
    this.pendingMaps.set(token, {
      st,
      mapping: m,
      pid: p.readUInt32LE(MMAP_LAYOUT.pid),
      addr: 0,
      shared: undefined,
    });
    const reply = Buffer.alloc(MMAP_REPLY_LAYOUT.size);
    reply.writeUInt32LE(token, MMAP_REPLY_LAYOUT.token);
    this.send(conn, f.op, f.seq, 0, reply);
  }

  /**
   * Where the shim mapped it (0: the mapping is abandoned), and the memfd behind it: the daemon
   * opens that file and keeps it equal to the region. Without one, the region's bytes are
   * copied into the mapping once.
   */
  private mmapAddr(conn: Conn, f: Frame, proc: ProcProcess) {
    const p = f.payload;
    const token = p.readUInt32LE(MMAP_ADDR_LAYOUT.token);
    const m = this.pendingMaps.get(token);
    if (m === undefined) return this.send(conn, f.op, f.seq, -EINVAL);
    this.pendingMaps.delete(token);
    const addr = Number(p.readBigUInt64LE(MMAP_ADDR_LAYOUT.addr));
    if (addr === 0) {
      m.mapping.close();
      this.maybeRelease(m.st);
      return this.send(conn, f.op, f.seq, 0);
    }
    m.addr = addr;
    const memfd = p.readInt32LE(MMAP_ADDR_LAYOUT.memfd);
    m.shared = memfd >= 0 ? SharedRegionFile.adopt(m.pid, memfd, m.mapping) : undefined;
    if (m.shared === undefined) {
      const bytes = new Uint8Array(Number(m.mapping.region.length));
      m.mapping.read(0, bytes);
      proc.writeRaw(addr, bytes);
    } else {
      this.sharedMaps++;
    }
    this.maps.set(`${m.pid}:${addr}`, m);
    this.send(conn, f.op, f.seq, 0);
  }

  private munmap(conn: Conn, f: Frame) {
    const p = f.payload;
    const key = `${p.readUInt32LE(MUNMAP_LAYOUT.pid)}:${Number(p.readBigUInt64LE(MUNMAP_LAYOUT.addr))}`;
    const m = this.maps.get(key);
    if (m !== undefined) this.unmap(key, m);
    this.send(conn, f.op, f.seq, 0);
  }
}

/**
 * Looks at a socket without waiting for the event loop: true when the peer has closed (a
 * non-blocking read gives EOF), false when it is open, undefined when the descriptor is not
 * reachable. Bytes found there are discarded (nothing legitimate is ever sent on it).
 */
export function peerClosed(sock: Socket): boolean | undefined {
  if (sock.destroyed) return true;
  const handle = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
  if (handle === null || handle === undefined) return true;
  const fd = handle.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  const scratch = Buffer.alloc(256);
  for (;;) {
    try {
      if (readSync(fd, scratch, 0, scratch.length, null) === 0) return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code !== "EAGAIN";
    }
  }
}

/**
 * A socket over `accepted`'s handle that delivers reads to `callback` in `buffer` (net.Socket's
 * `onread` option, which Node offers only for sockets it makes itself), or undefined when this
 * Node does not allow it. The server's connection count moves to the new socket.
 */
function adoptWithOnread(
  accepted: Socket,
  buffer: Buffer,
  callback: (n: number) => void,
): Socket | undefined {
  const old = accepted as unknown as { _handle?: object | null; _server?: unknown };
  const handle = old._handle;
  if (handle === null || handle === undefined) return undefined;
  let sock: Socket;
  try {
    sock = new Socket({
      handle,
      onread: { buffer, callback: (n: number) => callback(n) },
    } as ConstructorParameters<typeof Socket>[0]);
  } catch {
    return undefined;
  }
  const adopted = sock as unknown as { _server?: unknown };
  adopted._server = old._server;
  old._server = null;
  old._handle = null;
  return sock;
}

/** The descriptor under a connected socket, when Node exposes it. */
function socketFd(sock: Socket): number | undefined {
  const handle = (sock as unknown as { _handle?: { fd?: number } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

function p32(b: Buffer, at: number): number {
  return b.readUInt32LE(at);
}

/** copy_to_user that reports how many leading bytes it managed (0: none). */
function copyToUserPartial(proc: ProcProcess, va: bigint, src: Uint8Array): number {
  if (proc.write(va, src) === 0) return src.length;
  let n = 0;
  while (n < src.length && proc.write(va + BigInt(n), src.subarray(n, n + 1)) === 0) n++;
  return n;
}

/** The fake debugfs tree the shim shows in place of /sys/kernel/debug. */
export function debugfsDirFor(socketPath: string): string {
  return `${socketPath}.debugfs`;
}

/**
 * The fault-injection knobs the selftest writes (failslab/*, fail_page_alloc/*, fail*\/verbose,
 * Documentation/fault-injection/fault-injection.rst). Writes land in these plain files.
 */
function makeFakeDebugfs(dir: string): void {
  const knobs: Record<string, string[]> = {
    failslab: ["ignore-gfp-wait", "verbose", "probability", "times"],
    fail_page_alloc: ["ignore-gfp-wait", "ignore-gfp-highmem", "verbose", "probability", "times"],
    fail_usercopy: ["verbose", "probability", "times"],
  };
  rmSync(dir, { recursive: true, force: true });
  for (const [name, files] of Object.entries(knobs)) {
    mkdirSync(`${dir}/${name}`, { recursive: true, mode: 0o700 });
    for (const file of files) writeFileSync(`${dir}/${name}/${file}`, "", { mode: 0o600 });
  }
}

/**
 * Makes sure `socketPath` can be listened on privately: its directory exists, is ours and is
 * closed to others (created 0700 when missing); a socket left by a dead daemon is removed; a
 * live daemon or a non-socket file there is an error.
 */
export async function prepareSocketPath(socketPath: string): Promise<void> {
  const dir = dirname(socketPath);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = process.getuid?.() ?? st.uid;
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (st.uid !== uid) throw new Error(`${dir} belongs to uid ${st.uid}, not to us (${uid})`);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(
      `${dir} is open to other users (mode ${(st.mode & 0o777).toString(8)}); ` +
        "the socket must live in a 0700 directory",
    );
  }
  let existing: ReturnType<typeof lstatSync> | undefined;
  try {
    existing = lstatSync(socketPath);
  } catch {
    return;
  }
  if (!existing.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = connect(socketPath);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
  if (live) throw new Error(`${socketPath}: another daemon is serving it`);
  unlinkSync(socketPath); // stale: its daemon died without cleaning up
}

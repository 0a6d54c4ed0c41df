/**
 * The wire format between the LD_PRELOAD shim (native/iommusim_shim.c) and the daemon.
 *
 * Every message is a frame: a 16-byte little-endian header followed by a fixed payload per op.
 *
 *   u32 len    total frame length in bytes, header included (16..MAX_FRAME)
 *   u32 op     what the frame asks (OP_*); a reply repeats the request's op
 *   u32 seq    chosen by the sender of a request, echoed in its reply
 *   i32 ret    0 in a request; in a reply the call's return value (>= 0) or -errno
 *
 * Three kinds of connection reach the daemon:
 *  - an iommufd connection: the client's `open("/dev/iommu")` creates a socket, binds it to an
 *    abstract name starting with "iommusim/i" and connects it. That socket *is* the fd the
 *    client holds, so fork/dup/close keep the kernel's reference counting and the daemon sees
 *    EOF exactly at the last close (iommufd_fops_release). Its only frame is OP_OPEN; the reply
 *    carries a 16-byte secret as payload, which the shim leaves unread in the socket and
 *    re-reads with MSG_PEEK whenever it needs to name that context. Only a holder of the fd
 *    can read it, so no client can name another client's context.
 *  - an object connection: the same for an fd an ioctl creates (a fault queue, a vEVENTQ, a
 *    selftest access or dma-buf), bound to "iommusim/o...", opened with OP_OBJ_OPEN. Node
 *    cannot pass descriptors, so when an ioctl needs one the daemon answers NEED_FD before
 *    running anything; the shim makes the object socket and repeats the ioctl naming it
 *    (reservedFd, reservedSecret). The number the core hands out is that real descriptor.
 *  - a control connection, one per client process (re-made after fork), opened with OP_HELLO.
 *    All calls travel here, serialised per process, naming their context or object by its
 *    secret.
 *
 * The daemon performs every copy_from_user / copy_to_user itself on the caller's memory
 * (/proc/<pid>/mem), so frames carry raw pointers. One shortcut: an IOCTL request may carry the
 * bytes at `arg` the shim could read (process_vm_readv on itself faults exactly where the
 * kernel's copy would), up to INLINE_MAX, and its reply the writes the daemon made inside those
 * bytes, which the shim stores before the ioctl returns. Requests that copy user memory name the
 * shim's map generation (a counter bumped after each mmap, munmap, mprotect... the program
 * makes), so the daemon can trust the maps it parsed under the same generation.
 */

/** Frame header size. */
export const HEADER_SIZE = 16;
/** No request is bigger than this; a longer length field is a framing error. */
export const MAX_FRAME = 4096;
/** Bytes of the secret naming an iommufd context. */
export const SECRET_SIZE = 16;
/** Version the control handshake reports. */
export const PROTOCOL_VERSION = 2;
/** Most bytes of an ioctl's struct an IOCTL request carries inline. */
export const INLINE_MAX = 128;

/** Frame ops. Values are part of the wire format shared with the C shim. */
export const Op = {
  /** First frame of an iommufd connection. Payload OPEN_LAYOUT; reply payload: the secret. */
  OPEN: 1,
  /** First frame of a control connection. Payload HELLO_LAYOUT; reply: daemon pid, version. */
  HELLO: 2,
  /** ioctl(fd, cmd, arg). Payload IOCTL_LAYOUT; reply ret: return value or -errno. */
  IOCTL: 3,
  /** After close() of an iommufd fd: a barrier. Reply ret 1 if the context was released. */
  CLOSE: 4,
  /** read/pread of a fail-nth file. Payload FAILNTH_LAYOUT; ret: bytes or -errno. */
  FAILNTH_READ: 5,
  /** write/pwrite of a fail-nth file. Payload FAILNTH_LAYOUT; ret: count or -errno. */
  FAILNTH_WRITE: 6,
  /** mmap of an iommufd fd. Payload MMAP_LAYOUT; ret 0 or -errno. */
  MMAP: 7,
  /** munmap of a range mapped from an iommufd fd. Payload MUNMAP_LAYOUT. */
  MUNMAP: 8,
  /** read/pread of an object fd (fault queue, vEVENTQ). Payload OBJ_RW_LAYOUT. */
  OBJ_READ: 9,
  /** write/pwrite of an object fd (page responses). Payload OBJ_RW_LAYOUT. */
  OBJ_WRITE: 10,
  /** No-op round trip: everything sent before it has been handled. */
  PING: 11,
  /** First frame of an object connection. Payload OPEN_LAYOUT; reply payload: the secret. */
  OBJ_OPEN: 12,
  /** poll of an object fd. Payload OBJ_LAYOUT; ret: the ready mask. */
  OBJ_POLL: 13,
  /** After MMAP succeeded: where the shim mapped it (0: it could not). Payload MMAP_ADDR_LAYOUT. */
  MMAP_ADDR: 14,
  /**
   * open/fopen of /proc/<pid>/status: the daemon's accounting of that process (VmPin, VmLck
   * as iommufd charges them). Payload PROC_STATUS_LAYOUT; reply PROC_STATUS_REPLY_LAYOUT, or
   * -ESRCH when the daemon knows no such process (the shim then shows the real file).
   */
  PROC_STATUS: 15,
} as const;
export type OpValue = (typeof Op)[keyof typeof Op];

/** A payload layout: byte offsets of its fields and its exact size. */
export interface PayloadLayout {
  readonly size: number;
  readonly [field: string]: number;
}

/** OPEN: who opens, with which open(2) flags. */
export const OPEN_LAYOUT = { size: 16, pid: 0, tid: 4, flags: 8, reserved: 12 } as const;
/** HELLO: the process the control connection serves. */
export const HELLO_LAYOUT = { size: 8, pid: 0, tid: 4 } as const;
/** HELLO reply payload. */
export const HELLO_REPLY_LAYOUT = { size: 8, daemonPid: 0, version: 4 } as const;
/**
 * IOCTL: the context's secret, the request number and argument, the calling task; then
 * `inlineLen` bytes (0..INLINE_MAX) read at `arg`, as many as the shim could read.
 */
export const IOCTL_LAYOUT = {
  size: 64,
  secret: 0,
  cmd: 16,
  tid: 20,
  arg: 24,
  pid: 32,
  /** An object fd the shim made after a NEED_FD answer, or -1. */
  reservedFd: 36,
  /** That object connection's secret (zeros when reservedFd is -1). */
  reservedSecret: 40,
  /** The shim's map generation (0: unknown). */
  mapGen: 56,
  /** Bytes of the struct that follow the fixed part. */
  inlineLen: 60,
} as const;
/**
 * IOCTL reply payload; `writeBackLen` bytes of records follow, each a u16 offset from `arg`, a
 * u16 length and that many bytes, for the shim to store at arg + offset.
 */
export const IOCTL_REPLY_LAYOUT = { size: 8, flags: 0, writeBackLen: 4 } as const;
/** IOCTL reply flags. */
export const IoctlReplyFlag = {
  /** Nothing ran: repeat the call with a fresh object fd (reservedFd, reservedSecret). */
  NEED_FD: 1,
  /** The reserved object fd now stands for the file the ioctl created: keep it. */
  FD_USED: 2,
} as const;
/** CLOSE: the secret of the context or object whose fd was closed, and the closing task. */
export const CLOSE_LAYOUT = { size: 24, secret: 0, pid: 16, tid: 20 } as const;
/** FAILNTH_READ / FAILNTH_WRITE: the calling task, the task the file belongs to, the buffer. */
export const FAILNTH_LAYOUT = {
  size: 48,
  pid: 0,
  tid: 4,
  targetTid: 8,
  targetPid: 12,
  buf: 16,
  count: 24,
  pos: 32,
  mapGen: 40,
  reserved: 44,
} as const;
/** MMAP: the context's secret, the caller, the mapping asked for. Reply payload: a token. */
export const MMAP_LAYOUT = {
  size: 48,
  secret: 0,
  pid: 16,
  tid: 20,
  length: 24,
  pgoff: 32,
  prot: 40,
  flags: 44,
} as const;
/** MMAP reply payload: names the mapping in MMAP_ADDR. */
export const MMAP_REPLY_LAYOUT = { size: 8, token: 0, reserved: 4 } as const;
/**
 * MMAP_ADDR: the token MMAP gave, the caller, the address mapped (0: abandoned) and the memfd
 * behind the mapping, which the daemon opens through /proc/<pid>/fd (-1: anonymous memory, to
 * be filled once).
 */
export const MMAP_ADDR_LAYOUT = {
  size: 24,
  token: 0,
  pid: 4,
  addr: 8,
  memfd: 16,
  reserved: 20,
} as const;
/** MUNMAP: the context's secret, the caller, the range. */
export const MUNMAP_LAYOUT = {
  size: 40,
  secret: 0,
  pid: 16,
  tid: 20,
  addr: 24,
  length: 32,
} as const;
/** OBJ_READ / OBJ_WRITE: the object's secret, the caller, the user buffer, the position. */
export const OBJ_RW_LAYOUT = {
  size: 56,
  secret: 0,
  pid: 16,
  tid: 20,
  buf: 24,
  count: 32,
  pos: 40,
  mapGen: 48,
  reserved: 52,
} as const;
/** OBJ_POLL: the object's secret and the caller. */
export const OBJ_LAYOUT = { size: 24, secret: 0, pid: 16, tid: 20 } as const;

/** PROC_STATUS: the caller and the process whose status file it opens. */
export const PROC_STATUS_LAYOUT = { size: 8, pid: 0, targetPid: 4 } as const;
/** PROC_STATUS reply payload: mm->pinned_vm and mm->locked_vm, in pages. */
export const PROC_STATUS_REPLY_LAYOUT = { size: 16, pinnedPages: 0, mmLockedPages: 8 } as const;

/** Request payload layout of each op (PING has none). */
export const REQUEST_LAYOUTS: Readonly<Record<number, PayloadLayout>> = {
  [Op.OPEN]: OPEN_LAYOUT,
  [Op.HELLO]: HELLO_LAYOUT,
  [Op.IOCTL]: IOCTL_LAYOUT,
  [Op.CLOSE]: CLOSE_LAYOUT,
  [Op.FAILNTH_READ]: FAILNTH_LAYOUT,
  [Op.FAILNTH_WRITE]: FAILNTH_LAYOUT,
  [Op.MMAP]: MMAP_LAYOUT,
  [Op.MUNMAP]: MUNMAP_LAYOUT,
  [Op.OBJ_READ]: OBJ_RW_LAYOUT,
  [Op.OBJ_WRITE]: OBJ_RW_LAYOUT,
  [Op.PING]: { size: 0 },
  [Op.OBJ_OPEN]: OPEN_LAYOUT,
  [Op.OBJ_POLL]: OBJ_LAYOUT,
  [Op.MMAP_ADDR]: MMAP_ADDR_LAYOUT,
  [Op.PROC_STATUS]: PROC_STATUS_LAYOUT,
};

/** Ops whose request may carry a tail past the fixed payload, and its largest size. */
export const REQUEST_TAIL_MAX: Readonly<Record<number, number>> = {
  [Op.IOCTL]: INLINE_MAX,
};

/** One decoded frame. `payload` views the receive buffer; copy it to keep it. */
export interface Frame {
  op: number;
  seq: number;
  ret: number;
  payload: Buffer;
}

/** Encodes a frame. */
export function encodeFrame(op: number, seq: number, ret: number, payload?: Uint8Array): Buffer {
  const len = HEADER_SIZE + (payload?.length ?? 0);
  const b = Buffer.allocUnsafe(len);
  b.writeUInt32LE(len, 0);
  b.writeUInt32LE(op >>> 0, 4);
  b.writeUInt32LE(seq >>> 0, 8);
  b.writeInt32LE(ret | 0, 12);
  if (payload !== undefined) b.set(payload, HEADER_SIZE);
  return b;
}

/**
 * Reassembles frames from a byte stream. A length field outside [HEADER_SIZE, maxFrame] cannot
 * be resynchronised from: `push` then reports the error and the connection must be dropped.
 * Bytes of an unfinished frame are copied, so a chunk's memory may be reused once `push` or
 * `pushEach` has returned.
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly maxFrame: number;

  constructor(maxFrame = MAX_FRAME) {
    this.maxFrame = maxFrame;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.buf.length;
  }

  /** Adds bytes; returns the whole frames now available (payloads copied), or the bad length. */
  push(chunk: Buffer): { frames: Frame[]; badLength?: number } {
    const frames: Frame[] = [];
    const badLength = this.pushEach(chunk, (f) => {
      frames.push({ ...f, payload: Buffer.from(f.payload) });
    });
    return badLength === undefined ? { frames } : { frames, badLength };
  }

  /**
   * Adds the first `length` bytes of `chunk` and calls `visit` with each whole frame, in order;
   * the frame's payload views `chunk` (or the reader's own copy) and is only valid during the
   * call. Returns the bad length field that stopped it, if any.
   */
  pushEach(chunk: Buffer, visit: (f: Frame) => void, length = chunk.length): number | undefined {
    const data =
      this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk.subarray(0, length)]);
    const end = this.buf.length === 0 ? length : data.length;
    let at = 0;
    while (end - at >= 4) {
      const len = data.readUInt32LE(at);
      if (len < HEADER_SIZE || len > this.maxFrame) {
        this.buf = Buffer.alloc(0);
        return len;
      }
      if (end - at < len) break;
      visit({
        op: data.readUInt32LE(at + 4),
        seq: data.readUInt32LE(at + 8),
        ret: data.readInt32LE(at + 12),
        payload: data.subarray(at + HEADER_SIZE, at + len),
      });
      at += len;
    }
    this.buf = at === end ? EMPTY : Buffer.from(data.subarray(at, end));
    return undefined;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Values named by a 16-byte secret, found from the bytes of a frame without making a string:
 * by the secret's first word, then the other three compared.
 */
export class SecretTable<T> {
  private readonly byFirstWord = new Map<number, SecretEntry<T>[]>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(b: Buffer, at: number): T | undefined {
    const list = this.byFirstWord.get(b.readUInt32LE(at));
    if (list === undefined) return undefined;
    const w1 = b.readUInt32LE(at + 4);
    const w2 = b.readUInt32LE(at + 8);
    const w3 = b.readUInt32LE(at + 12);
    for (const e of list) if (e.w1 === w1 && e.w2 === w2 && e.w3 === w3) return e.value;
    return undefined;
  }

  set(secret: Uint8Array, value: T): void {
    const b = Buffer.from(secret.buffer, secret.byteOffset, SECRET_SIZE);
    const w0 = b.readUInt32LE(0);
    let list = this.byFirstWord.get(w0);
    if (list === undefined) {
      list = [];
      this.byFirstWord.set(w0, list);
    }
    list.push({ w1: b.readUInt32LE(4), w2: b.readUInt32LE(8), w3: b.readUInt32LE(12), value });
    this.count++;
  }

  /** Removes `value` (whatever secret it was stored under). */
  delete(secret: Uint8Array, value: T): void {
    const b = Buffer.from(secret.buffer, secret.byteOffset, SECRET_SIZE);
    const w0 = b.readUInt32LE(0);
    const list = this.byFirstWord.get(w0);
    if (list === undefined) return;
    const i = list.findIndex((e) => e.value === value);
    if (i < 0) return;
    list.splice(i, 1);
    this.count--;
    if (list.length === 0) this.byFirstWord.delete(w0);
  }

  *values(): IterableIterator<T> {
    for (const list of this.byFirstWord.values()) for (const e of list) yield e.value;
  }
}

interface SecretEntry<T> {
  w1: number;
  w2: number;
  w3: number;
  value: T;
}

/** Builds a payload for `layout` from named values (u32 unless the value is a bigint or bytes). */
export function buildPayload(
  layout: PayloadLayout,
  values: Record<string, number | bigint | Uint8Array>,
): Buffer {
  const b = Buffer.alloc(layout.size);
  for (const [name, v] of Object.entries(values)) {
    const off = layout[name];
    if (off === undefined || name === "size") throw new Error(`payload has no field ${name}`);
    if (typeof v === "bigint") b.writeBigUInt64LE(BigInt.asUintN(64, v), off);
    else if (typeof v === "number") b.writeUInt32LE(v >>> 0, off);
    else b.set(v, off);
  }
  return b;
}

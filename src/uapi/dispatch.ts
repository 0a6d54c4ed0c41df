/**
 * The one place that applies iommufd's common ioctl rules, in the kernel's order
 * (drivers/iommu/iommufd/main.c, iommufd_fops_ioctl; lib/usercopy.c, copy_struct_from_user
 * and check_zeroed_user; iommufd_ucmd_respond):
 *
 *  1. nr = _IOC_NR(cmd) outside [IOMMUFD_CMD_BASE, BASE + table length): hand the call to the
 *     VFIO compatibility layer, which answers ENOTTY for what it does not know.
 *  2. get_user() of the leading u32 `size` faults: EFAULT.
 *  3. No op at that nr, or its full number differs from cmd: ENOTTY (-ENOIOCTLCMD in the
 *     kernel, which the VFS turns into ENOTTY).
 *  4. size < min_size: EINVAL.
 *  5. copy_struct_from_user(): a short user struct is zero-extended; a longer one must be zero
 *     past the kernel's size (E2BIG, EFAULT if that tail is unreadable), then the common part
 *     is copied (EFAULT).
 *  6. The handler runs on the decoded struct. It writes back only if it asks (respond), at most
 *     min(user size, kernel size) bytes, and a faulting write-back is EFAULT.
 *
 * Errors are positive errno numbers. A success value other than 0 (a new fd from
 * IOMMU_TEST_OP_DMABUF_GET, 1 from VFIO_CHECK_EXTENSION) travels in an IoctlResult.
 */
import { E2BIG, EFAULT, EINVAL, ENOTTY, ErrnoError } from "../errno.ts";
import { IO, IOMMUFD_CMD_BASE, IOMMUFD_TYPE, iocNr } from "./ioctl.ts";
import { type Decoded, decode, encode, fieldSize, findField, type Layout } from "./layout.ts";
import type { IoctlSpec } from "./structs.ts";
import type { UserMemory } from "./user_memory.ts";

export type { UserMemory } from "./user_memory.ts";

/** Where the non-error return value of an ioctl goes (0 unless a handler sets another). */
export interface IoctlResult {
  value: number;
  /** The message of an ErrnoError a handler threw, for logs. */
  message?: string;
}

/** What a handler gets: the decoded struct and the means to talk to user memory. */
export interface Ucmd<T> {
  /** The decoded kernel-size struct; handlers edit it and call respond(). */
  readonly cmd: T;
  /** The `size` the user passed (may be smaller or larger than the kernel's struct). */
  readonly userSize: number;
  /** User address of the struct (the ioctl argument). */
  readonly arg: bigint;
  readonly user: UserMemory;
  readonly layout: Layout;
  /** The kernel's copy of the struct: user bytes, zero-extended to layout.size. */
  readonly buf: Uint8Array;
  /** Non-negative return value of a successful ioctl (default 0). */
  retval: number;
  /**
   * iommufd_ucmd_respond(): encodes `cmd` into `buf` and copies min(userSize, length) bytes back
   * to `arg` (length defaults to the struct size). 0 or EFAULT.
   */
  respond(length?: number): number;
  /** Encodes `cmd` and copies back just one member, as a few handlers do. 0 or EFAULT. */
  respondField(name: string): number;
  /** copy_from_user. 0 or EFAULT. */
  readUser(va: bigint, dst: Uint8Array): number;
  /** copy_to_user. 0 or EFAULT. */
  writeUser(va: bigint, src: Uint8Array): number;
  /** Reads `count` consecutive structs of `layout` at `va`, decoded into `out`. 0 or EFAULT. */
  readArray<L extends Layout>(va: bigint, layout: L, count: number, out: Decoded<L>[]): number;
  /** Encodes each item (absent members are 0) and writes them consecutively. 0 or EFAULT. */
  writeArray<L extends Layout>(
    va: bigint,
    layout: L,
    items: readonly Partial<Decoded<L>>[],
  ): number;
  /** copy_struct_from_user() of a driver-data blob into `dst` (its length is the kernel size). */
  copyStructFromUser(dst: Uint8Array, va: bigint, userSize: number): number;
}

/** The codec's view of a struct whose layout is erased (what the op table stores). */
export type AnyCmd = Record<string, unknown>;

export interface IoctlOp<Ctx, T = AnyCmd> {
  readonly nr: number;
  readonly name: string;
  readonly layout: Layout;
  readonly minSize: number;
  /** 0 or a positive errno. May throw ErrnoError, which becomes its errno. */
  handler(ctx: Ctx, ucmd: Ucmd<T>): number;
}

/** The VFIO compat hook: same contract as a handler (0 or errno, value in `result`). */
export type FallthroughHandler<Ctx> = (
  ctx: Ctx,
  cmd: number,
  arg: bigint,
  user: UserMemory,
  result: IoctlResult,
) => number;

/** Builds a typed op from an IOMMUFD_IOCTLS entry: the handler sees the decoded struct. */
export function ioctlOp<Ctx, L extends Layout>(
  spec: IoctlSpec<L>,
  handler: (ctx: Ctx, ucmd: Ucmd<Decoded<L>>) => number,
): IoctlOp<Ctx> {
  return {
    nr: spec.nr,
    name: spec.name,
    layout: spec.layout,
    minSize: spec.minSize,
    handler: handler as unknown as IoctlOp<Ctx>["handler"],
  };
}

/** The op table main.c builds: indexed by nr - IOMMUFD_CMD_BASE, with holes. */
export interface IoctlTable<Ctx> {
  readonly entries: readonly (IoctlOp<Ctx> | undefined)[];
  readonly cmds: readonly number[];
}

export function buildIoctlTable<Ctx>(ops: readonly IoctlOp<Ctx>[]): IoctlTable<Ctx> {
  let top = -1;
  for (const op of ops) {
    if (!Number.isInteger(op.nr) || op.nr < IOMMUFD_CMD_BASE || op.nr > 0xff) {
      throw new RangeError(`${op.name}: nr 0x${op.nr.toString(16)} is not an iommufd nr`);
    }
    if (op.minSize < 4 || op.minSize > op.layout.size) {
      throw new RangeError(`${op.name}: min size ${op.minSize} outside [4, ${op.layout.size}]`);
    }
    top = Math.max(top, op.nr - IOMMUFD_CMD_BASE);
  }
  const entries: (IoctlOp<Ctx> | undefined)[] = new Array(top + 1).fill(undefined);
  const cmds: number[] = new Array(top + 1).fill(-1);
  for (const op of ops) {
    const i = op.nr - IOMMUFD_CMD_BASE;
    if (entries[i] !== undefined) {
      throw new RangeError(`${op.name}: nr 0x${op.nr.toString(16)} twice`);
    }
    entries[i] = op;
    cmds[i] = IO(IOMMUFD_TYPE, op.nr);
  }
  return { entries, cmds };
}

const tables = new WeakMap<readonly IoctlOp<unknown>[], IoctlTable<unknown>>();

function tableOf<Ctx>(ops: readonly IoctlOp<Ctx>[] | IoctlTable<Ctx>): IoctlTable<Ctx> {
  if (!Array.isArray(ops)) return ops as IoctlTable<Ctx>;
  const list = ops as readonly IoctlOp<Ctx>[];
  let t = tables.get(list as readonly IoctlOp<unknown>[]) as IoctlTable<Ctx> | undefined;
  if (t === undefined) {
    t = buildIoctlTable(list);
    tables.set(list as readonly IoctlOp<unknown>[], t as IoctlTable<unknown>);
  }
  return t;
}

// One dispatch runs to completion before the next starts, so the size word can be shared.
const sizeWord = new Uint8Array(4);
const sizeView = new DataView(sizeWord.buffer);
const PAGE = 4096;
const PAGE_MASK = BigInt(PAGE - 1);
const zeroScan = new Uint8Array(PAGE);

/**
 * lib/usercopy.c check_zeroed_user(): 1 if [va, va+len) is all zero, 0 at the first non-zero
 * byte, -1 (EFAULT) at the first unreadable one, scanning from low addresses up. Reads a page
 * at a time; when a page faults it rescans that page in aligned 8-byte words, each read all or
 * nothing like the kernel's word loads, so a non-zero word before a hole still wins.
 */
export function checkZeroedUser(user: UserMemory, va: bigint, len: number): number {
  let at = va;
  let left = len;
  while (left > 0) {
    const n = Math.min(left, PAGE - Number(at & PAGE_MASK));
    const chunk = zeroScan.subarray(0, n);
    if (user.read(at, chunk) === 0) {
      for (let i = 0; i < n; i++) if (chunk[i] !== 0) return 0;
    } else {
      // The page has a hole: go through it in aligned 8-byte words, each read whole.
      let w = at;
      let wleft = n;
      while (wleft > 0) {
        const part = zeroScan.subarray(0, Math.min(wleft, 8 - Number(w & 7n)));
        if (user.read(w, part) !== 0) return -1;
        for (let i = 0; i < part.length; i++) if (part[i] !== 0) return 0;
        w += BigInt(part.length);
        wleft -= part.length;
      }
    }
    at += BigInt(n);
    left -= n;
  }
  return 1;
}

/**
 * include/linux/uaccess.h copy_struct_from_user(): copies a user struct of `userSize` bytes
 * into the kernel struct `dst` (whose length is the kernel size). Shorter: the rest of `dst` is
 * zeroed. Longer: the extra user bytes must be zero (E2BIG; EFAULT if unreadable), checked
 * before the common part is copied (EFAULT). Returns 0 or an errno.
 */
export function copyStructFromUser(
  user: UserMemory,
  dst: Uint8Array,
  va: bigint,
  userSize: number,
): number {
  const ksize = dst.byteLength;
  const size = Math.min(ksize, userSize);
  if (userSize < ksize) {
    dst.fill(0, size);
  } else if (userSize > ksize) {
    const zeroed = checkZeroedUser(user, va + BigInt(ksize), userSize - ksize);
    if (zeroed < 0) return EFAULT;
    if (zeroed === 0) return E2BIG;
  }
  const common = size === ksize ? dst : dst.subarray(0, size);
  if (size > 0 && user.read(va, common) !== 0) return EFAULT;
  return 0;
}

class UcmdImpl<T> implements Ucmd<T> {
  readonly cmd: T;
  readonly userSize: number;
  readonly arg: bigint;
  readonly user: UserMemory;
  readonly layout: Layout;
  readonly buf: Uint8Array;
  retval = 0;

  constructor(layout: Layout, buf: Uint8Array, userSize: number, arg: bigint, user: UserMemory) {
    this.layout = layout;
    this.buf = buf;
    this.userSize = userSize;
    this.arg = arg;
    this.user = user;
    this.cmd = decode(layout, buf) as T;
  }

  respond(length = this.layout.size): number {
    encode(this.layout, this.cmd as Partial<Decoded<Layout>>, this.buf);
    const n = Math.min(this.userSize, length, this.buf.byteLength);
    const out = n === this.buf.byteLength ? this.buf : this.buf.subarray(0, n);
    return this.user.write(this.arg, out) === 0 ? 0 : EFAULT;
  }

  respondField(name: string): number {
    const f = findField(this.layout, name);
    if (f === undefined) throw new Error(`${this.layout.name} has no member ${name}`);
    encode(this.layout, this.cmd as Partial<Decoded<Layout>>, this.buf);
    const bytes = this.buf.subarray(f.offset, f.offset + fieldSize(f));
    return this.user.write(this.arg + BigInt(f.offset), bytes) === 0 ? 0 : EFAULT;
  }

  readUser(va: bigint, dst: Uint8Array): number {
    return this.user.read(va, dst) === 0 ? 0 : EFAULT;
  }

  writeUser(va: bigint, src: Uint8Array): number {
    return this.user.write(va, src) === 0 ? 0 : EFAULT;
  }

  readArray<L extends Layout>(va: bigint, layout: L, count: number, out: Decoded<L>[]): number {
    if (count <= 0) return 0;
    const bytes = new Uint8Array(layout.size * count);
    if (this.user.read(va, bytes) !== 0) return EFAULT;
    for (let i = 0; i < count; i++) {
      out.push(decode(layout, bytes.subarray(i * layout.size, (i + 1) * layout.size)));
    }
    return 0;
  }

  writeArray<L extends Layout>(
    va: bigint,
    layout: L,
    items: readonly Partial<Decoded<L>>[],
  ): number {
    if (items.length === 0) return 0;
    const bytes = new Uint8Array(layout.size * items.length);
    for (let i = 0; i < items.length; i++) {
      encode(layout, items[i]!, bytes.subarray(i * layout.size, (i + 1) * layout.size));
    }
    return this.user.write(va, bytes) === 0 ? 0 : EFAULT;
  }

  copyStructFromUser(dst: Uint8Array, va: bigint, userSize: number): number {
    return copyStructFromUser(this.user, dst, va, userSize);
  }
}

/** ErrnoError is how deep library code reports a uAPI error; anything else is a bug. */
function errnoOf(e: unknown, result: IoctlResult | undefined): number {
  if (!(e instanceof ErrnoError)) throw e;
  if (result !== undefined) result.message = e.message;
  return e.errno;
}

/**
 * Runs one ioctl on an iommufd file: `cmd` is the raw request number, `arg` the user pointer.
 * Returns 0 or a positive errno; a non-zero success value is stored in `result.value`.
 * `ops` is the op list (its table is built on first use and cached, so do not change the
 * list afterwards) or a table from buildIoctlTable.
 */
export function dispatchIoctl<Ctx>(
  ops: readonly IoctlOp<Ctx>[] | IoctlTable<Ctx>,
  ctx: Ctx,
  cmd: number,
  arg: bigint,
  user: UserMemory,
  fallthrough?: FallthroughHandler<Ctx>,
  result?: IoctlResult,
): number {
  if (result !== undefined) result.value = 0;
  const table = tableOf(ops);
  const request = cmd >>> 0;
  const index = iocNr(request) - IOMMUFD_CMD_BASE;
  if (index < 0 || index >= table.entries.length) {
    if (fallthrough === undefined) return ENOTTY;
    try {
      return fallthrough(ctx, request, arg, user, result ?? { value: 0 });
    } catch (e) {
      return errnoOf(e, result);
    }
  }

  if (user.read(arg, sizeWord) !== 0) return EFAULT;
  const userSize = sizeView.getUint32(0, true);

  const op = table.entries[index];
  if (op === undefined || table.cmds[index] !== request) return ENOTTY;
  if (userSize < op.minSize) return EINVAL;

  const buf = new Uint8Array(op.layout.size);
  const rc = copyStructFromUser(user, buf, arg, userSize);
  if (rc !== 0) return rc;

  const ucmd = new UcmdImpl<AnyCmd>(op.layout, buf, userSize, arg, user);
  let ret: number;
  try {
    ret = op.handler(ctx, ucmd);
  } catch (e) {
    return errnoOf(e, result);
  }
  if (ret === 0 && result !== undefined) result.value = ucmd.retval;
  return ret;
}

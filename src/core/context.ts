/**
 * One open /dev/iommu: the per-fd iommufd context (struct iommufd_ctx) and its ioctl entry.
 *
 * Every ioctl runs through the uAPI codec's dispatcher (src/uapi/dispatch.ts) with an
 * `IoctlCall`: the context, the calling process (whose memory the struct pointers name and whose
 * accounting pins are charged to) and the objects the call has reserved. Objects a handler
 * creates are reserved with `call.alloc(obj)`; when the handler returns 0 they are finalized
 * (made visible), otherwise aborted in reverse order, as the kernel's
 * iommufd_object_alloc_ucmd does. Handlers register themselves per area with `registerIoctl`.
 */
import { ErrnoError } from "../errno.ts";
import {
  dispatchIoctl,
  type FallthroughHandler,
  type IoctlOp,
  type IoctlResult,
  type Ucmd,
} from "../uapi/dispatch.ts";
import type { Decoded, Layout } from "../uapi/layout.ts";
import { IOMMUFD_IOCTLS, type IoctlSpec } from "../uapi/structs.ts";
import { FailNth } from "./fail_nth.ts";
import { type IommufdObject, ObjectTable } from "./object.ts";
import type { UserProcess } from "./user_mm.ts";

/** IOPT_PAGES_ACCOUNT_*: how pinned pages are charged. */
export const AccountMode = { NONE: 0, USER: 1, MM: 2 } as const;
export type AccountModeValue = (typeof AccountMode)[keyof typeof AccountMode];

/** One ioctl in flight. */
export class IoctlCall {
  readonly ctx: IommufdContext;
  readonly caller: UserProcess;
  private readonly pending: IommufdObject[] = [];

  constructor(ctx: IommufdContext, caller: UserProcess) {
    this.ctx = ctx;
    this.caller = caller;
  }

  /** Reserves an ID for a new object; it becomes visible only if the ioctl succeeds. */
  alloc<T extends IommufdObject>(obj: T): T {
    this.ctx.table.reserve(obj);
    this.pending.push(obj);
    return obj;
  }

  /** Finalizes (ok) or aborts (in reverse order) what this call reserved. */
  settle(ok: boolean): void {
    if (ok) {
      for (const obj of this.pending) this.ctx.table.finalize(obj);
    } else {
      for (let i = this.pending.length - 1; i >= 0; i--) this.ctx.table.abort(this.pending[i]);
    }
    this.pending.length = 0;
  }
}

type AnyOp = IoctlOp<IoctlCall>;
const OPS: AnyOp[] = [];
let frozen = false;

/** Registers the handler of one ioctl (each area's module does this when it loads). */
export function registerIoctl<L extends Layout>(
  spec: IoctlSpec<L>,
  handler: (call: IoctlCall, ucmd: Ucmd<Decoded<L>>) => number,
): void {
  if (frozen) throw new Error(`${spec.name} registered after the first ioctl`);
  if (OPS.some((o) => o.nr === spec.nr)) throw new Error(`${spec.name} registered twice`);
  OPS.push({
    nr: spec.nr,
    name: spec.name,
    layout: spec.layout,
    minSize: spec.minSize,
    handler: handler as unknown as AnyOp["handler"],
  });
}

let fallthroughHandler: FallthroughHandler<IoctlCall> | undefined;

/** Registers the handler of ioctl numbers outside the iommufd range (VFIO compat). */
export function registerFallthrough(fn: FallthroughHandler<IoctlCall>): void {
  fallthroughHandler = fn;
}

export interface IoctlOutcome {
  /** 0 or a positive errno. */
  errno: number;
  /** The ioctl's non-negative return value when it succeeded. */
  value: number;
  /** The message of the error, when the code said why. */
  message?: string;
}

export class IommufdContext {
  readonly table: ObjectTable;
  /** This context's fault-injection driver (the daemon maps a task's fail-nth onto it). */
  readonly faults: FailNth;
  accountMode: AccountModeValue = AccountMode.NONE;
  /** The VFIO compat IOAS: a weak pointer (no reference), cleared when that IOAS goes. */
  vfioIoas: IommufdObject | null = null;
  closed = false;
  /** Per-area state hung on the context by the modules that own it. */
  readonly ext = new Map<symbol, unknown>();

  constructor(faults: FailNth = new FailNth()) {
    this.faults = faults;
    this.table = new ObjectTable(faults);
  }

  /** Runs ioctl `cmd` with argument `arg` on behalf of `caller`. */
  ioctl(cmd: number, arg: bigint, caller: UserProcess): IoctlOutcome {
    if (this.closed) throw new Error("ioctl on a closed iommufd context");
    frozen = true;
    const call = new IoctlCall(this, caller);
    const result: IoctlResult = { value: 0 };
    let errno: number;
    try {
      errno = dispatchIoctl(OPS, call, cmd, arg, caller, fallthroughHandler, result);
    } catch (e) {
      // An exception that is not an errno is a bug; still undo what the call reserved.
      call.settle(false);
      throw e;
    }
    call.settle(errno === 0);
    const out: IoctlOutcome = { errno, value: errno === 0 ? result.value : 0 };
    if (result.message !== undefined) out.message = result.message;
    return out;
  }

  /** The last close of the fd: destroys every object, leaf-first. */
  close(): IommufdObject[] {
    if (this.closed) return [];
    this.closed = true;
    return this.table.closeAll();
  }

  /** Throws ErrnoError `errno` with `message` (for handlers that prefer throwing). */
  static fail(errno: number, message: string): never {
    throw new ErrnoError(errno, message);
  }
}

// IOMMU_DESTROY: any object type; EBUSY while referenced, ENOENT when not a live object.
registerIoctl(IOMMUFD_IOCTLS.DESTROY, (call, ucmd) => {
  call.ctx.table.destroyById(ucmd.cmd.id);
  return 0;
});

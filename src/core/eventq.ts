/**
 * Event queues (drivers/iommu/iommufd/eventq.c): the FAULT object that carries I/O page faults
 * to user space and takes its page responses, the vEVENTQ object that carries a vIOMMU's
 * events, their ioctls IOMMU_FAULT_QUEUE_ALLOC and IOMMU_VEVENTQ_ALLOC, and the read / write /
 * poll of their fds. Also the two driver-side entry points that feed them: the IOMMU core's
 * page-request routing (drivers/iommu/io-pgfault.c iommu_report_device_fault) and
 * iommufd_viommu_report_event (driver.c).
 *
 * Spec viommu-eventq.md §4 (FAULT), §5 (vEVENTQ), §8, §10; mock-driver-failnth.md §2.14,
 * §2.16, §3.5. Facts: eventq.c (linux-mm 2026 copy: read EINVAL when the first record does not
 * fit, only whole groups counted, write EFAULT), io-pgfault.c (find_fault_handler,
 * report_partial_fault, iopf_group_alloc), iommufd_private.h (iommufd_vevent_handler),
 * driver.c (iommufd_viommu_report_event).
 *
 * The fds are modelled as `EventqFile`s: `read(user, buf, count)` / `write(...)` return what
 * the syscall returns (bytes, or a negative errno), and `readRecords` / `writeResponses` /
 * `pollReady` are the same with kernel-side buffers, for tests and in-process users. A queue
 * fd keeps its object (users +1, so IOMMU_DESTROY is EBUSY until close) and the iommufd file
 * (ctxFileGet) alive. Fd numbers come from an `EventqFdInstaller`: by default a per-context
 * table; the daemon installs one that hands out the caller's real descriptors.
 */
import {
  EBADF,
  EBUSY,
  EEXIST,
  EFAULT,
  EINVAL,
  EMFILE,
  ENOMEM,
  EOPNOTSUPP,
  ErrnoError,
  ESPIPE,
} from "../errno.ts";
import {
  IOMMU_PGFAULT_FLAGS_LAST_PAGE,
  IOMMU_PGFAULT_FLAGS_PASID_VALID,
  IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMU_VEVENTQ_TYPE_SELFTEST,
  IOMMUFD_IOCTLS,
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
} from "../uapi/index.ts";
import { ArrayUserMemory, type UserMemory } from "../uapi/user_memory.ts";
import type { IoctlCall, IommufdContext } from "./context.ts";
import { registerIoctl } from "./context.ts";
import { deviceHooks, type IommufdAttachHandle } from "./device.ts";
import {
  type FaultInjector,
  IOMMU_NO_PASID,
  type IommuDevice,
  type IommuDomain,
  NO_FAULT_INJECTION,
} from "./driver.ts";
import type { Hwpt } from "./hwpt.ts";
import { ctxFileGet, ctxFilePut } from "./mmap.ts";
import { IommufdObject, ObjType, refGet, refPut } from "./object.ts";
import { selftestHooks } from "./selftest.ts";
import type { UserProcess } from "./user_mm.ts";
import { getViommu, Viommu } from "./viommu.ts";

/** poll bits (uapi/asm-generic/poll.h). */
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLRDNORM = 0x040;

/** sizeof(struct iommu_hwpt_pgfault) and sizeof(struct iommu_hwpt_page_response). */
export const PGFAULT_RECORD_SIZE = 40;
export const PAGE_RESPONSE_SIZE = 8;
/** sizeof(struct iommufd_vevent_header). */
export const VEVENT_HEADER_SIZE = 8;
/** enum iommu_page_response_code: IOMMU_PAGE_RESP_FAILURE (driver side only). */
export const IOMMU_PAGE_RESP_FAILURE = 2;
/** VEVENTQ_MAX_DEPTH: an arbitrary bound that fits every existing IOMMU (2026 trees). */
export const VEVENTQ_MAX_DEPTH = 1 << 19;
/** Sequence numbers run 0..INT_MAX, then wrap. */
const SEQUENCE_MASK = 0x7fff_ffff;
/** Fault cookies: xa_limit_32b on an ALLOC1 xarray, lowest free first. */
const COOKIE_MAX = 0xffff_ffff;

// ---- Fd numbers -------------------------------------------------------------------------------

/**
 * How a queue fd gets its number: get_unused_fd_flags(O_CLOEXEC) in the caller's fd table,
 * then fd_install once the ioctl has written the number back (or put_unused_fd if it failed).
 */
export interface EventqFdInstaller {
  /** Reserves the lowest free descriptor of `caller`. Throws ErrnoError (EMFILE). */
  reserve(caller: UserProcess): number;
  /** Binds `file` to the reserved `fd`. */
  install(fd: number, file: EventqFile): void;
  /** Gives back a reserved, never installed `fd`. */
  release(fd: number): void;
  /** The file closed: its number is free again. */
  closed(fd: number, file: EventqFile): void;
}

/**
 * The default installer: one descriptor table per context, numbers from 3 up (0-2 are the
 * standard streams), lowest free first. Only queue fds live in it.
 */
export class EventqFdTable implements EventqFdInstaller {
  private readonly slots = new Map<number, EventqFile | null>();
  /** RLIMIT_NOFILE of the model. */
  limit = 1024;

  reserve(_caller: UserProcess): number {
    let fd = 3;
    while (this.slots.has(fd)) fd++;
    if (fd >= this.limit) throw new ErrnoError(EMFILE, "fd table full");
    this.slots.set(fd, null);
    return fd;
  }

  install(fd: number, file: EventqFile): void {
    this.slots.set(fd, file);
  }

  release(fd: number): void {
    if (this.slots.get(fd) === null) this.slots.delete(fd);
  }

  closed(fd: number, file: EventqFile): void {
    if (this.slots.get(fd) === file) this.slots.delete(fd);
  }

  /** The open queue file on `fd`, if any. */
  get(fd: number): EventqFile | undefined {
    return this.slots.get(fd) ?? undefined;
  }

  /** Every open queue file, by descriptor order (what a process exit would close). */
  openFiles(): EventqFile[] {
    return [...this.slots.entries()]
      .sort((a, b) => a[0] - b[0])
      .flatMap(([, f]) => (f === null ? [] : [f]));
  }
}

const FD_INSTALLER = Symbol("eventq fd installer");

/** The context's fd installer (the default table unless one was set). */
export function eventqFdInstaller(ctx: IommufdContext): EventqFdInstaller {
  let inst = ctx.ext.get(FD_INSTALLER) as EventqFdInstaller | undefined;
  if (inst === undefined) {
    inst = new EventqFdTable();
    ctx.ext.set(FD_INSTALLER, inst);
  }
  return inst;
}

/** Replaces the context's fd installer (the daemon: the client's real descriptors). */
export function setEventqFdInstaller(ctx: IommufdContext, inst: EventqFdInstaller): void {
  ctx.ext.set(FD_INSTALLER, inst);
}

/** The open queue file on `fd` when the context uses the default table. */
export function eventqFileByFd(ctx: IommufdContext, fd: number): EventqFile | undefined {
  const inst = ctx.ext.get(FD_INSTALLER);
  return inst instanceof EventqFdTable ? inst.get(fd) : undefined;
}

// ---- The common part of both queues ---------------------------------------------------------

/** struct iommufd_eventq: a FAULT or vEVENTQ object and its file. */
export abstract class Eventq extends IommufdObject {
  abstract override readonly type: typeof ObjType.FAULT | typeof ObjType.VEVENTQ;
  readonly ctx: IommufdContext;
  /** Its file, once created (null before, and after the file was dropped). */
  file: EventqFile | null = null;

  constructor(ctx: IommufdContext) {
    super();
    this.ctx = ctx;
  }

  /** The file's read: bytes copied to `buf`, or a negative errno. */
  abstract read(user: UserMemory, buf: bigint, count: number): number;
  /** The file's write: bytes consumed, or a negative errno. */
  abstract write(user: UserMemory, buf: bigint, count: number): number;
  /** iommufd_eventq_fops_poll: the ready mask. */
  abstract poll(): number;
}

/** The anonymous-inode file of an event queue ("[iommufd-pgfault]", "[iommufd-viommu-event]"). */
export class EventqFile {
  readonly name: string;
  readonly eventq: Eventq;
  /** Its descriptor number once reserved; -1 before. */
  fd = -1;
  installed = false;
  closed = false;

  constructor(name: string, eventq: Eventq) {
    this.name = name;
    this.eventq = eventq;
    refGet(eventq);
    ctxFileGet(eventq.ctx);
  }

  /** read(2) / pread(2): `pos` other than 0 is ESPIPE (not seekable); EBADF once closed. */
  read(user: UserMemory, buf: bigint, count: number, pos = 0): number {
    if (this.closed) return -EBADF;
    if (pos !== 0) return -ESPIPE;
    return this.eventq.read(user, buf, count);
  }

  /** write(2) / pwrite(2). */
  write(user: UserMemory, buf: bigint, count: number, pos = 0): number {
    if (this.closed) return -EBADF;
    if (pos !== 0) return -ESPIPE;
    return this.eventq.write(user, buf, count);
  }

  /** read() into a kernel-side buffer of `maxBytes`: the errno (0 on success) and the bytes. */
  readRecords(maxBytes: number): { errno: number; bytes: Uint8Array } {
    const mem = new ArrayUserMemory();
    const buf = mem.map(0x1000n, Math.max(maxBytes, 0));
    const n = this.read(mem, 0x1000n, maxBytes);
    if (n < 0) return { errno: -n, bytes: new Uint8Array(0) };
    return { errno: 0, bytes: buf.slice(0, n) };
  }

  /** write() of `bytes`: the errno (0 on success) and the bytes consumed. */
  writeResponses(bytes: Uint8Array): { errno: number; count: number } {
    const mem = new ArrayUserMemory();
    mem.map(0x1000n, bytes.slice());
    const n = this.write(mem, 0x1000n, bytes.length);
    return n < 0 ? { errno: -n, count: 0 } : { errno: 0, count: n };
  }

  /** poll(2): EPOLLIN | EPOLLRDNORM when records wait; EPOLLOUT always for a FAULT fd. */
  pollReady(): number {
    return this.closed ? 0 : this.eventq.poll();
  }

  /**
   * The last close (iommufd_eventq_fops_release): the object and the iommufd file lose this
   * file's references. Nothing queued is flushed.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const ctx = this.eventq.ctx;
    if (this.installed) eventqFdInstaller(ctx).closed(this.fd, this);
    if (this.eventq.file === this) this.eventq.file = null;
    refPut(this.eventq);
    ctxFilePut(ctx);
  }

  /** fput of a file never installed (the ioctl failed after creating it). */
  drop(): void {
    if (this.closed) return;
    if (this.fd >= 0 && !this.installed) eventqFdInstaller(this.eventq.ctx).release(this.fd);
    this.close();
  }
}

/**
 * iommufd_eventq_init + fd reservation: creates the file (an allocation site: ENOMEM) and
 * reserves a descriptor (EMFILE). On failure nothing is left.
 */
function createFile(call: IoctlCall, eventq: Eventq, name: string): EventqFile {
  const ctx = call.ctx;
  if (ctx.faults.shouldFail("anon_inode_getfile"))
    throw new ErrnoError(ENOMEM, `${name}: file allocation`);
  const file = new EventqFile(name, eventq);
  eventq.file = file;
  try {
    file.fd = eventqFdInstaller(ctx).reserve(call.caller);
  } catch (e) {
    file.drop();
    throw e;
  }
  return file;
}

/** Writes the ids back, then installs the fd; a failed write-back undoes the file. */
function respondAndInstall(call: IoctlCall, file: EventqFile, respond: () => number): number {
  if (respond() !== 0) {
    file.drop();
    return EFAULT;
  }
  eventqFdInstaller(call.ctx).install(file.fd, file);
  file.installed = true;
  return 0;
}

// ---- FAULT: page faults -------------------------------------------------------------------------

/** One page request as the IOMMU reports it (struct iommu_fault_page_request). */
export interface IopfFault {
  /** IOMMU_PGFAULT_FLAGS_*: PASID_VALID (1), LAST_PAGE (2). */
  readonly flags: number;
  readonly pasid: number;
  readonly grpid: number;
  /** IOMMU_PGFAULT_PERM_*. */
  readonly perm: number;
  readonly addr: bigint;
}

/** struct iopf_group: the faults of one page request group, answered together. */
export class IopfGroup {
  /** Partial faults first, in arrival order, the last-page fault at the end. */
  readonly faults: readonly IopfFault[];
  /** The attachment it arrived through (its device and HWPT). */
  readonly handle: IommufdAttachHandle;
  /** Its cookie while it waits in the response table; 0 before it was read. */
  cookie = 0;
  /** The answer it got (IOMMUFD_PAGE_RESP_* or IOMMU_PAGE_RESP_FAILURE); null while pending. */
  response: number | null = null;

  constructor(faults: readonly IopfFault[], handle: IommufdAttachHandle) {
    this.faults = faults;
    this.handle = handle;
  }
}

/** iopf_group_response: the group is answered (the mock driver ignores the answer). */
function groupRespond(group: IopfGroup, code: number): void {
  if (group.response === null) group.response = code;
}

/** IOMMUFD_OBJ_FAULT (struct iommufd_fault). */
export class Fault extends Eventq {
  readonly type = ObjType.FAULT;
  /** Groups not read yet, oldest first. */
  readonly deliver: IopfGroup[] = [];
  /** Groups read and not answered yet, by cookie. */
  readonly response = new Map<number, IopfGroup>();
  private cookieHint = 1;

  /** xa_alloc with xa_limit_32b on an ALLOC1 xarray: the lowest free cookie. */
  private allocCookie(group: IopfGroup): number {
    let c = this.cookieHint;
    while (this.response.has(c)) c++;
    if (c > COOKIE_MAX) throw new ErrnoError(EBUSY, "no free fault cookie");
    this.response.set(c, group);
    this.cookieHint = c + 1;
    return c;
  }

  private freeCookie(c: number): void {
    this.response.delete(c);
    if (c < this.cookieHint) this.cookieHint = c;
  }

  /** iommufd_fault_iopf_handler: the group joins the tail of the deliver list. */
  enqueue(group: IopfGroup): void {
    this.deliver.push(group);
  }

  /**
   * iommufd_fault_fops_read: `count` must be a multiple of 40 (else ESPIPE). Whole groups are
   * copied from the head; each read group gets the lowest free cookie and moves to the
   * response table. A group that does not fit stops the read (EINVAL if nothing was copied);
   * a copy fault puts the group back (EFAULT if nothing was copied). Never blocks.
   */
  read(user: UserMemory, buf: bigint, count: number): number {
    if (count % PGFAULT_RECORD_SIZE !== 0) return -ESPIPE;
    let done = 0;
    let rc = 0;
    const rec = new Uint8Array(PGFAULT_RECORD_SIZE);
    const view = new DataView(rec.buffer);
    for (;;) {
      const group = this.deliver.shift();
      if (group === undefined) break;
      if (done >= count || group.faults.length * PGFAULT_RECORD_SIZE > count - done) {
        this.deliver.unshift(group);
        if (done === 0) rc = EINVAL;
        break;
      }
      let cookie: number;
      try {
        cookie = this.allocCookie(group);
      } catch (e) {
        if (!(e instanceof ErrnoError)) throw e;
        this.deliver.unshift(group);
        rc = e.errno;
        break;
      }
      group.cookie = cookie;
      const devId = group.handle.idev.id;
      let groupDone = done;
      for (const f of group.faults) {
        view.setUint32(0, f.flags, true);
        view.setUint32(4, devId, true);
        view.setUint32(8, f.pasid, true);
        view.setUint32(12, f.grpid, true);
        view.setUint32(16, f.perm, true);
        view.setUint32(20, 0, true);
        view.setBigUint64(24, BigInt.asUintN(64, f.addr), true);
        view.setUint32(32, 0, true);
        view.setUint32(36, cookie, true);
        if (user.write(buf + BigInt(groupDone), rec) !== 0) {
          rc = EFAULT;
          break;
        }
        groupDone += PGFAULT_RECORD_SIZE;
      }
      if (rc !== 0) {
        this.freeCookie(cookie);
        group.cookie = 0;
        this.deliver.unshift(group);
        break;
      }
      done = groupDone;
    }
    return done === 0 ? (rc === 0 ? 0 : -rc) : done;
  }

  /**
   * iommufd_fault_fops_write: `count` must be a multiple of 8 (else ESPIPE). Each response
   * {cookie, code}: unreadable EFAULT; code other than SUCCESS / INVALID EINVAL; a cookie not
   * in the response table EINVAL; else that group is answered and its cookie freed. Returns
   * the bytes consumed, or the error when none were.
   */
  write(user: UserMemory, buf: bigint, count: number): number {
    if (count % PAGE_RESPONSE_SIZE !== 0) return -ESPIPE;
    let done = 0;
    let rc = 0;
    const resp = new Uint8Array(PAGE_RESPONSE_SIZE);
    const view = new DataView(resp.buffer);
    while (count > done) {
      if (user.read(buf + BigInt(done), resp) !== 0) {
        rc = EFAULT;
        break;
      }
      const cookie = view.getUint32(0, true);
      const code = view.getUint32(4, true);
      if (code !== IOMMUFD_PAGE_RESP_SUCCESS && code !== IOMMUFD_PAGE_RESP_INVALID) {
        rc = EINVAL;
        break;
      }
      const group = this.response.get(cookie);
      if (group === undefined) {
        rc = EINVAL;
        break;
      }
      this.freeCookie(cookie);
      groupRespond(group, code);
      done += PAGE_RESPONSE_SIZE;
    }
    return done === 0 ? (rc === 0 ? 0 : -rc) : done;
  }

  poll(): number {
    return EPOLLOUT | (this.deliver.length !== 0 ? EPOLLIN | EPOLLRDNORM : 0);
  }

  /**
   * iommufd_auto_response_faults: the attachment `handle` went away; its groups, read or not,
   * are answered INVALID and dropped (their cookies become invalid).
   */
  autoRespond(handle: IommufdAttachHandle): void {
    for (let i = 0; i < this.deliver.length; ) {
      const g = this.deliver[i];
      if (g.handle === handle) {
        this.deliver.splice(i, 1);
        groupRespond(g, IOMMUFD_PAGE_RESP_INVALID);
      } else {
        i++;
      }
    }
    for (const [cookie, g] of [...this.response]) {
      if (g.handle !== handle) continue;
      this.freeCookie(cookie);
      groupRespond(g, IOMMUFD_PAGE_RESP_INVALID);
    }
  }

  /** iommufd_fault_destroy: every remaining group is answered INVALID. */
  destroy(): void {
    for (const g of this.deliver.splice(0)) groupRespond(g, IOMMUFD_PAGE_RESP_INVALID);
    for (const g of this.response.values()) groupRespond(g, IOMMUFD_PAGE_RESP_INVALID);
    this.response.clear();
    this.cookieHint = 1;
  }
}

deviceHooks.faultAutoRespond = (fault, handle) => {
  if (fault instanceof Fault) fault.autoRespond(handle);
};

// ---- IOMMU_FAULT_QUEUE_ALLOC ------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.FAULT_QUEUE_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  if (cmd.flags !== 0) return EOPNOTSUPP;
  const fault = call.alloc(new Fault(call.ctx));
  const file = createFile(call, fault, "[iommufd-pgfault]");
  cmd.out_fault_id = fault.id;
  cmd.out_fault_fd = file.fd;
  return respondAndInstall(call, file, () => ucmd.respond());
});

// ---- Page-request routing (the IOMMU core's io-pgfault) -----------------------------------------

/** iommu_fault_param.partial: non-last requests of each device, oldest first. */
const PARTIAL = new WeakMap<IommuDevice, IopfFault[]>();

/** The partial faults parked for `dev` (for tests). */
export function partialFaults(dev: IommuDevice): readonly IopfFault[] {
  return PARTIAL.get(dev) ?? [];
}

/**
 * find_fault_handler: the attachment a request goes to. With PASID_VALID, that PASID's; if it
 * has none and the driver keeps PASID tables in user space, the RID's, but only when the RID
 * domain is NESTED. Without PASID_VALID, the RID's. It must have iommufd's fault handler.
 */
function findFaultHandler(
  dev: IommuDevice,
  fault: IopfFault,
): { handle: IommufdAttachHandle; domain: IommuDomain } | undefined {
  const group = dev.group;
  if (group === null) return undefined;
  let entry = undefined as { domain: IommuDomain; handle: object | null } | undefined;
  if ((fault.flags & IOMMU_PGFAULT_FLAGS_PASID_VALID) !== 0) {
    entry = group.pasidArray.get(fault.pasid);
    if (entry === undefined || entry.handle === null) {
      if (dev.ops === null || !dev.ops.userPasidTable) return undefined;
      entry = group.pasidArray.get(IOMMU_NO_PASID);
      if (entry === undefined || entry.handle === null || entry.domain.kind !== "nested")
        return undefined;
    }
  } else {
    entry = group.pasidArray.get(IOMMU_NO_PASID);
    if (entry === undefined || entry.handle === null) return undefined;
  }
  if (entry.domain.faultData === null) return undefined;
  return { handle: entry.handle as IommufdAttachHandle, domain: entry.domain };
}

/**
 * iommu_report_device_fault with iommufd's handler behind it: routes one page request of
 * `dev` (TRIGGER_IOPF's, or a hardware model's). No suitable attachment: the request is
 * answered INVALID to the driver and EINVAL returned. A request without LAST_PAGE is parked
 * (ENOMEM at its allocation site). A last-page request gathers the parked ones of its grpid
 * into a group that joins its FAULT's deliver list; if the group cannot be allocated it is
 * answered FAILURE and dropped (still 0). Returns 0 or an errno (TRIGGER_IOPF ignores it).
 */
export function iommuReportDeviceFault(
  dev: IommuDevice,
  fault: IopfFault,
  faults: FaultInjector = NO_FAULT_INJECTION,
): number {
  const found = findFaultHandler(dev, fault);
  if (found === undefined) return EINVAL;
  let partial = PARTIAL.get(dev);
  if ((fault.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE) === 0) {
    if (faults.shouldFail("iopf_partial_alloc")) return ENOMEM;
    if (partial === undefined) {
      partial = [];
      PARTIAL.set(dev, partial);
    }
    partial.push({ ...fault });
    return 0;
  }
  const allocFailed = faults.shouldFail("iopf_group_alloc");
  const members: IopfFault[] = [];
  if (partial !== undefined) {
    for (let i = 0; i < partial.length; ) {
      if (partial[i].grpid === fault.grpid) members.push(...partial.splice(i, 1));
      else i++;
    }
  }
  members.push({ ...fault });
  const group = new IopfGroup(members, found.handle);
  const hwpt = found.domain.faultData as Hwpt;
  const target = hwpt.fault;
  if (allocFailed || !(target instanceof Fault)) {
    groupRespond(group, IOMMU_PAGE_RESP_FAILURE);
    return 0;
  }
  target.enqueue(group);
  return 0;
}

/**
 * What TRIGGER_IOPF builds from its arguments: LAST_PAGE, plus PASID_VALID when `pasid` is
 * not 0; the other fields as given.
 */
export function selftestPageRequest(
  pasid: number,
  grpid: number,
  perm: number,
  addr: bigint,
): IopfFault {
  let flags = IOMMU_PGFAULT_FLAGS_LAST_PAGE;
  if (pasid !== IOMMU_NO_PASID) flags |= IOMMU_PGFAULT_FLAGS_PASID_VALID;
  return { flags, pasid, grpid, perm, addr };
}

// ---- vEVENTQ: vIOMMU events ---------------------------------------------------------------------

/** struct iommufd_vevent: one queued event, or the queue's lost-events header. */
export interface Vevent {
  /** IOMMU_VEVENTQ_FLAG_LOST_EVENTS on the lost-events header, 0 on an event. */
  flags: number;
  sequence: number;
  /** The payload (null for the lost-events header). */
  readonly data: Uint8Array | null;
}

/** A double-ended queue: O(1) at both ends, for queues up to 2^19 deep. */
class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    this.items.push(x);
  }

  unshift(x: T): void {
    if (this.head > 0) this.items[--this.head] = x;
    else this.items.unshift(x);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  last(): T | undefined {
    return this.length === 0 ? undefined : this.items[this.items.length - 1];
  }

  pop(): T | undefined {
    if (this.length === 0) return undefined;
    const x = this.items.pop();
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    }
    return x;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }

  *[Symbol.iterator](): Iterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }
}

/** IOMMUFD_OBJ_VEVENTQ (struct iommufd_veventq). */
export class Veventq extends Eventq {
  readonly type = ObjType.VEVENTQ;
  readonly viommu: Viommu;
  /** enum iommu_veventq_type. */
  readonly veventqType: number;
  readonly depth: number;
  /** Normal events queued (the lost-events header not counted). */
  numEvents = 0;
  /** The next sequence number to stamp. */
  sequence = 0;
  /** The queue's one lost-events header. */
  readonly lostEventsHeader: Vevent = {
    flags: IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
    sequence: 0,
    data: null,
  };
  private readonly deliver = new Deque<Vevent>();
  /** Joined the vIOMMU (users +1, on its list). */
  private linked = false;

  constructor(ctx: IommufdContext, viommu: Viommu, veventqType: number, depth: number) {
    super(ctx);
    this.viommu = viommu;
    this.veventqType = veventqType;
    this.depth = depth;
  }

  /** Takes the vIOMMU reference and joins its list (after the id was reserved). */
  link(): void {
    refGet(this.viommu);
    this.viommu.veventqs.push(this);
    this.linked = true;
  }

  /** The queued records, head first (for tests). */
  queued(): Vevent[] {
    return [...this.deliver];
  }

  /**
   * iommufd_vevent_handler: drops the lost-events header if it is the last element, appends
   * `vevent` (which may be that header: a sequence update), stamps the next sequence number.
   */
  handle(vevent: Vevent): void {
    if (this.deliver.last() === this.lostEventsHeader) this.deliver.pop();
    this.deliver.push(vevent);
    vevent.sequence = this.sequence;
    this.sequence = (this.sequence + 1) & SEQUENCE_MASK;
  }

  /** iommufd_veventq_deliver_fetch: the head, the lost-events header as a copy. */
  private fetch(): Vevent | undefined {
    const next = this.deliver.shift();
    if (next === this.lostEventsHeader) return { ...next };
    return next;
  }

  /**
   * iommufd_veventq_deliver_restore: a normal event goes back to the head; a lost-events copy
   * is dropped, and the header itself comes back only if the list is now empty.
   */
  private restore(v: Vevent): void {
    if ((v.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) !== 0) {
      if (this.deliver.length === 0) this.deliver.unshift(this.lostEventsHeader);
      return;
    }
    this.deliver.unshift(v);
  }

  /**
   * iommufd_veventq_fops_read: `count` below 8 EINVAL. Records (8-byte header + payload) are
   * copied from the head while they fit; a normal event that does not fit stops the read
   * (EINVAL if nothing was copied); copy faults put the record back (EFAULT if nothing was
   * copied). Never blocks; an empty queue reads 0.
   */
  read(user: UserMemory, buf: bigint, count: number): number {
    if (count < VEVENT_HEADER_SIZE) return -EINVAL;
    let done = 0;
    let rc = 0;
    const hdr = new Uint8Array(VEVENT_HEADER_SIZE);
    const view = new DataView(hdr.buffer);
    for (;;) {
      const cur = this.fetch();
      if (cur === undefined) break;
      if (done >= count || VEVENT_HEADER_SIZE > count - done) {
        this.restore(cur);
        break;
      }
      const lost = (cur.flags & IOMMU_VEVENTQ_FLAG_LOST_EVENTS) !== 0;
      const dataLen = cur.data?.length ?? 0;
      if (!lost && VEVENT_HEADER_SIZE + dataLen > count - done) {
        this.restore(cur);
        if (done === 0) rc = EINVAL;
        break;
      }
      view.setUint32(0, cur.flags, true);
      view.setUint32(4, cur.sequence, true);
      if (user.write(buf + BigInt(done), hdr) !== 0) {
        this.restore(cur);
        rc = EFAULT;
        break;
      }
      done += VEVENT_HEADER_SIZE;
      if (dataLen !== 0 && cur.data !== null && user.write(buf + BigInt(done), cur.data) !== 0) {
        this.restore(cur);
        done -= VEVENT_HEADER_SIZE;
        rc = EFAULT;
        break;
      }
      if (!lost) this.numEvents--;
      done += dataLen;
    }
    return done === 0 ? (rc === 0 ? 0 : -rc) : done;
  }

  /** No write method: the VFS answers EINVAL. */
  write(_user: UserMemory, _buf: bigint, _count: number): number {
    return -EINVAL;
  }

  poll(): number {
    return this.deliver.length !== 0 ? EPOLLIN | EPOLLRDNORM : 0;
  }

  /** iommufd_veventq_destroy / _abort: events freed, off the vIOMMU's list, its users -1. */
  destroy(): void {
    this.deliver.clear();
    this.numEvents = 0;
    if (!this.linked) return;
    this.linked = false;
    const list = this.viommu.veventqs;
    const i = list.indexOf(this);
    if (i >= 0) list.splice(i, 1);
    refPut(this.viommu);
  }
}

/** iommufd_viommu_find_veventq: the vIOMMU's queue of `type`, if any. */
export function viommuFindVeventq(viommu: Viommu, type: number): Veventq | undefined {
  return viommu.veventqs.find((q) => q.veventqType === type);
}

/**
 * iommufd_viommu_report_event: queues `data` as a vEVENT of `type` on `viommu`. No queue of
 * that type: EOPNOTSUPP. A full queue (num_events == depth) drops the event and (re)queues the
 * lost-events header at the tail: 0. The event allocation (a fault-injection site) failing
 * does the same but returns ENOMEM. Empty data is a driver bug: EINVAL.
 */
export function viommuReportEvent(
  viommu: Viommu,
  type: number,
  data: Uint8Array,
  faults: FaultInjector = viommu.ctx.faults,
): number {
  if (data.length === 0) return EINVAL;
  const q = viommuFindVeventq(viommu, type);
  if (q === undefined) return EOPNOTSUPP;
  if (q.numEvents === q.depth) {
    q.handle(q.lostEventsHeader);
    return 0;
  }
  if (faults.shouldFail("vevent_alloc")) {
    q.handle(q.lostEventsHeader);
    return ENOMEM;
  }
  q.numEvents++;
  q.handle({ flags: 0, sequence: 0, data: data.slice() });
  return 0;
}

// ---- IOMMU_VEVENTQ_ALLOC -------------------------------------------------------------------

registerIoctl(IOMMUFD_IOCTLS.VEVENTQ_ALLOC, (call, ucmd) => {
  const cmd = ucmd.cmd;
  const ctx = call.ctx;
  if (cmd.flags !== 0 || cmd.__reserved !== 0 || cmd.type === IOMMU_VEVENTQ_TYPE_DEFAULT)
    return EOPNOTSUPP;
  if (cmd.veventq_depth === 0 || cmd.veventq_depth > VEVENTQ_MAX_DEPTH) return EINVAL;
  const viommu = getViommu(ctx, cmd.viommu_id);
  if (viommuFindVeventq(viommu, cmd.type) !== undefined) return EEXIST;
  const q = call.alloc(new Veventq(ctx, viommu, cmd.type, cmd.veventq_depth));
  q.link();
  const file = createFile(call, q, "[iommufd-viommu-event]");
  cmd.out_veventq_id = q.id;
  cmd.out_veventq_fd = file.fd;
  return respondAndInstall(call, file, () => ucmd.respond());
});

// ---- The selftest's delivery hooks ----------------------------------------------------------

/** TRIGGER_IOPF: the mock device's page request goes through the IOMMU core's routing. */
selftestHooks.reportIopf = (idev, fault) => {
  iommuReportDeviceFault(idev.dev, fault, idev.ctx.faults);
};

/**
 * TRIGGER_VEVENT: a SELFTEST event whose payload is struct iommu_viommu_event_selftest
 * {virt_id (u32: the low 32 bits)} on the device's remembered vIOMMU.
 */
selftestHooks.reportVevent = (viommu, virtId) => {
  if (!(viommu instanceof Viommu)) return EOPNOTSUPP;
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, Number(BigInt.asUintN(32, virtId)), true);
  return viommuReportEvent(viommu, IOMMU_VEVENTQ_TYPE_SELFTEST, payload);
};

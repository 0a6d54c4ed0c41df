/**
 * A real client process as the iommufd core sees it (the UserProcess of src/core/user_mm.ts),
 * backed by procfs:
 *
 *  - copy_from_user / copy_to_user: pread / pwrite of /proc/<pid>/mem at the user address. A
 *    ptrace-style access ignores page protections (FOLL_FORCE), so the mapping's permissions
 *    come from /proc/<pid>/maps first: a byte outside a readable (for a read) or writable (for
 *    a write) mapping is EFAULT, as the kernel's user copy would be; bytes before the first bad
 *    one are still written, as copy_to_user leaves them.
 *  - pin_user_pages: page identity from /proc/<pid>/maps. Shared mappings (MAP_SHARED anonymous
 *    memory is a shmem file; memfd; shared file mappings) are keyed by (device, inode, file page
 *    offset), so a forked child pins the very same page objects. Private anonymous pages are
 *    keyed by (process, virtual page): a child's copy is its own page, as after copy-on-write.
 *    A private file mapping is a COW mapping (VM_MAYWRITE without VM_SHARED), and iommufd pins
 *    with FOLL_LONGTERM, so even a read-only pin unshares the file page into a private copy
 *    first (gup_must_unshare): such pages are keyed by (process, virtual page) too, and a later
 *    write by the process keeps the pinned page (selftest ro_unshare).
 *  - Each identity gets a synthetic PFN that stays the same while any page object for it lives.
 *    PFNs come in 2 MiB-aligned blocks of 512 per (file, 2 MiB of offsets) or (process, 2 MiB
 *    of addresses), so a huge-page-aligned run of pages is physically contiguous as a THP or
 *    hugetlb page would be.
 *  - Page bytes are read and written live: through a durable handle on the backing file when
 *    there is one (/proc/<pid>/map_files/<range>, or the fd itself for memfds named by MAP_FILE;
 *    these survive the mapping process), else through /proc/<pid>/mem of the process that
 *    mapped the page. A private page of a process that has exited reads as zeros: userspace
 *    cannot keep such memory alive, unlike the kernel's pin.
 *  - file(fd): /proc/<pid>/fd/<fd>, opened by the daemon.
 *  - accounting: RLIMIT_MEMLOCK from /proc/<pid>/limits, CAP_IPC_LOCK and CAP_SYS_RESOURCE from
 *    CapEff in /proc/<pid>/status, read once per call; pinned and MM-mode locked pages per
 *    process (mm->pinned_vm, mm->locked_vm); USER-mode locked pages per real uid
 *    (user->locked_vm is per user_struct).
 *
 * What a call costs. Reading /proc/<pid>/maps costs tens of microseconds, so the parsed maps are
 * kept between calls and trusted for user copies while the shim's map generation (a counter it
 * bumps after every mmap, munmap, mremap, mprotect, brk, shmat, dlopen... the program makes)
 * is unchanged. Whatever the cache says is unreachable is looked up again in fresh maps before
 * it faults (a stack that grew, memory malloc mapped behind the shim's back); memory unmapped
 * behind its back faults in /proc/<pid>/mem itself. What the cache cannot see is a protection
 * lowered behind the shim's back (a raw mprotect system call, or libc's own mprotect inside
 * dlopen or a thread's stack guard): a copy there succeeds where the kernel's would fault,
 * until the program's next mapping call. Pinning always uses maps read in the same call:
 * page identity must be exact. The procfs files stay open
 * (pread from 0 reads them afresh), and the caller counts as alive for the length of its own
 * call, as a task is while it is inside a syscall.
 *
 * The top-level struct of an ioctl usually arrives inline: the shim reads what it can of the
 * bytes at `arg` (process_vm_readv on itself, which faults exactly where the kernel's copy
 * would) and sends them with the request. While that "inline window" is open, copies inside it
 * are served from those bytes, and writes inside it that the maps allow are kept and sent back
 * with the reply for the shim to store before the ioctl returns. Anything that could observe
 * the real memory in between (a copy straddling the window, a pinned page's access) first
 * stores the pending bytes through /proc/<pid>/mem and closes the window.
 *
 * Node opens every file close-on-exec (libuv adds O_CLOEXEC), so the client's children never
 * inherit these descriptors.
 *
 * Facts: Documentation/filesystems/proc.rst (maps, map_files), mm/internal.h gup_must_unshare
 * and is_cow_mapping (R/O FOLL_LONGTERM pins of COW file mappings unshare), capability.h
 * (CAP_IPC_LOCK = 14, CAP_SYS_RESOURCE = 24), kdev_t.h (new_encode_dev layout of st_dev).
 */
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  writeSync,
} from "node:fs";
import type { UserAccounting, UserFile, UserPage, UserProcess } from "../core/user_mm.ts";
import { EBADF, EFAULT } from "../errno.ts";
import { INLINE_MAX } from "./protocol.ts";

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** Pages per PFN block: one 2 MiB huge page. */
const BLOCK_PAGES = 512;
/** The first synthetic PFN (4 GiB), above anything the table allocator hands out. */
const FIRST_PFN = 0x10_0000;
/** Addresses at or above this cannot be a user address (and are not exact as Numbers). */
const USER_LIMIT = 2 ** 53;
const USER_LIMIT_BIG = BigInt(USER_LIMIT);

const CAP_IPC_LOCK = 14n;
const CAP_SYS_RESOURCE = 24n;

/** One line of /proc/<pid>/maps. */
export interface Vma {
  start: number;
  end: number;
  read: boolean;
  write: boolean;
  exec: boolean;
  shared: boolean;
  /** Byte offset into the backing file (for anonymous memory: the VMA's page offset). */
  offset: number;
  major: number;
  minor: number;
  /** Inode number as text ("0": anonymous). */
  inode: string;
  path: string;
}

/**
 * Parses /proc/<pid>/maps text; lines beyond the exact-Number range ([vsyscall]) are left out.
 * Each line is "start-end perms offset major:minor inode [path]" (fs/proc/task_mmu.c
 * show_map_vma), read with indexOf rather than a regular expression: this runs once per call.
 */
export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  let at = 0;
  while (at < text.length) {
    let eol = text.indexOf("\n", at);
    if (eol < 0) eol = text.length;
    const dash = text.indexOf("-", at);
    const sp1 = text.indexOf(" ", dash);
    const sp2 = sp1 + 5; // four permission characters
    const sp3 = text.indexOf(" ", sp2 + 1);
    const colon = text.indexOf(":", sp3);
    const sp4 = text.indexOf(" ", colon);
    let sp5 = text.indexOf(" ", sp4 + 1);
    if (sp5 < 0 || sp5 > eol) sp5 = eol;
    if (dash < 0 || dash > eol || sp1 < 0 || sp4 < 0 || sp4 > eol || text[sp2] !== " ") {
      at = eol + 1;
      continue;
    }
    const end = Number.parseInt(text.slice(dash + 1, sp1), 16);
    if (end <= USER_LIMIT) {
      let pathAt = sp5;
      while (pathAt < eol && text[pathAt] === " ") pathAt++;
      out.push({
        start: Number.parseInt(text.slice(at, dash), 16),
        end,
        read: text[sp1 + 1] === "r",
        write: text[sp1 + 2] === "w",
        exec: text[sp1 + 3] === "x",
        shared: text[sp1 + 4] === "s",
        offset: Number.parseInt(text.slice(sp2 + 1, sp3), 16),
        major: Number.parseInt(text.slice(sp3 + 1, colon), 16),
        minor: Number.parseInt(text.slice(colon + 1, sp4), 16),
        inode: text.slice(sp4 + 1, sp5),
        path: text.slice(pathAt, eol),
      });
    }
    at = eol + 1;
  }
  return out;
}

/** Index of the VMA containing `va` (maps are sorted), or -1. */
function findVma(vmas: readonly Vma[], va: number): number {
  let lo = 0;
  let hi = vmas.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = vmas[mid];
    if (va < v.start) hi = mid - 1;
    else if (va >= v.end) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/**
 * Length of the prefix of [va, va + len) that lies in mappings allowing the access (`write`:
 * writable; otherwise readable).
 */
export function accessiblePrefix(vmas: readonly Vma[], va: number, len: number, write: boolean) {
  let at = va;
  const end = va + len;
  while (at < end) {
    const i = findVma(vmas, at);
    if (i < 0) break;
    const v = vmas[i];
    if (write ? !v.write : !(v.read || v.write)) break;
    at = Math.min(v.end, end);
  }
  return at - va;
}

/** st_dev (new_encode_dev layout) to major and minor. */
export function devMajorMinor(dev: number): [number, number] {
  const major = Math.floor(dev / 256) % 4096;
  const minor = (dev % 256) + (Math.floor(dev / 4096) & 0xfff00);
  return [major, minor];
}

/** A file descriptor the daemon holds on a backing file, shared by the pages of that file. */
class FileHandle {
  fd: number;
  writable: boolean;
  readonly key: string;
  refs = 0;
  constructor(fd: number, writable: boolean, key: string) {
    this.fd = fd;
    this.writable = writable;
    this.key = key;
  }
}

function preadAll(fd: number, dst: Uint8Array, pos: number): number {
  let done = 0;
  while (done < dst.length) {
    const n = readSync(fd, dst, done, dst.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function pwriteAll(fd: number, src: Uint8Array, pos: number): number {
  let done = 0;
  while (done < src.length) {
    const n = writeSync(fd, src, done, src.length - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** A pinnable page of a real process (or of a file it named). */
export class ProcPage implements UserPage {
  readonly pfn: number;
  readonly key: string;
  readonly blockKey: string;
  pins = 0;
  /** Durable view: the backing file and the byte offset of this page in it. */
  file: FileHandle | undefined;
  fileOffset = 0;
  /** Live view: a process that maps the page, and where. */
  proc: ProcProcess | undefined;
  va = 0;

  constructor(pfn: number, key: string, blockKey: string) {
    this.pfn = pfn;
    this.key = key;
    this.blockKey = blockKey;
  }

  read(offset: number, dst: Uint8Array): void {
    openWindow?.beforePageAccess(this);
    if (this.file !== undefined) {
      let got = 0;
      try {
        got = preadAll(this.file.fd, dst, this.fileOffset + offset);
      } catch {
        got = 0;
      }
      if (got < dst.length) dst.fill(0, got); // a hole past the end of the file reads as zeros
      return;
    }
    if (this.proc === undefined || !this.proc.readRaw(this.va + offset, dst)) dst.fill(0);
  }

  write(offset: number, src: Uint8Array): void {
    openWindow?.beforePageAccess(this);
    if (this.file?.writable) {
      try {
        pwriteAll(this.file.fd, src, this.fileOffset + offset);
        return;
      } catch {
        // fall through to the process view
      }
    }
    this.proc?.writeRaw(this.va + offset, src);
  }
}

/**
 * Every page object the daemon has handed out, by identity, plus the file handles behind them.
 * Shared by all contexts and processes of one daemon, as struct page is system-wide.
 */
export class PageRegistry {
  private readonly pages = new Map<string, ProcPage>();
  private readonly blocks = new Map<string, { base: number; live: number }>();
  private readonly files = new Map<string, FileHandle>();
  private nextBlock = FIRST_PFN;

  /** Number of page objects alive. */
  get size(): number {
    return this.pages.size;
  }

  /** Sum of the pin counts of every page (0 when nothing is pinned). */
  get totalPins(): number {
    let n = 0;
    for (const p of this.pages.values()) n += p.pins;
    return n;
  }

  /** Number of file handles the daemon holds open. */
  get openFiles(): number {
    return this.files.size;
  }

  /** The page object for an identity, made on first use with a PFN from its block. */
  page(key: string, blockKey: string, indexInBlock: number): ProcPage {
    let p = this.pages.get(key);
    if (p !== undefined) return p;
    let block = this.blocks.get(blockKey);
    if (block === undefined) {
      block = { base: this.nextBlock, live: 0 };
      this.nextBlock += BLOCK_PAGES;
      this.blocks.set(blockKey, block);
    }
    block.live++;
    p = new ProcPage(block.base + indexInBlock, key, blockKey);
    this.pages.set(key, p);
    return p;
  }

  /** The shared handle for file `fileKey`, opening it with `open` when there is none yet. */
  fileHandle(
    fileKey: string,
    open: () => { fd: number; writable: boolean } | undefined,
  ): FileHandle | undefined {
    const h = this.files.get(fileKey);
    if (h !== undefined) return h;
    const o = open();
    if (o === undefined) return undefined;
    const nh = new FileHandle(o.fd, o.writable, fileKey);
    this.files.set(fileKey, nh);
    return nh;
  }

  /** Attaches `page` to a file handle (counted, so the handle lives as long as its pages). */
  attachFile(page: ProcPage, handle: FileHandle, offset: number): void {
    if (page.file === handle) return;
    if (page.file !== undefined) this.unref(page.file);
    handle.refs++;
    page.file = handle;
    page.fileOffset = offset;
  }

  /** Takes a reference on a handle for something other than a page (an open UserFile). */
  ref(handle: FileHandle): void {
    handle.refs++;
  }

  unref(handle: FileHandle): void {
    handle.refs--;
    if (handle.refs <= 0 && this.files.get(handle.key) === handle) {
      this.files.delete(handle.key);
      try {
        closeSync(handle.fd);
      } catch {
        // already closed
      }
    }
  }

  /**
   * Forgets page objects nobody pins (the kernel frees such pages too; a later pin makes a new
   * object, possibly with another PFN) and closes file handles no page or file uses.
   */
  sweep(): void {
    for (const [key, p] of this.pages) {
      if (p.pins !== 0) continue;
      this.pages.delete(key);
      const block = this.blocks.get(p.blockKey);
      if (block !== undefined && --block.live === 0) this.blocks.delete(p.blockKey);
      if (p.file !== undefined) {
        const f = p.file;
        p.file = undefined;
        this.unref(f);
      }
      p.proc = undefined;
    }
  }

  /** Closes every handle (daemon shutdown). */
  close(): void {
    for (const h of this.files.values()) {
      try {
        closeSync(h.fd);
      } catch {
        // already closed
      }
    }
    this.files.clear();
    this.pages.clear();
    this.blocks.clear();
  }
}

/** Reads a small procfs file, or undefined when it is gone or unreadable. */
function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Scratch for procfs reads; grown when a file does not fit (one read runs at a time). */
let procScratch = Buffer.allocUnsafe(16384);

/**
 * A procfs file of one process held open and read afresh from offset 0 on each `read` (each
 * pread at 0 regenerates a seq_file). Undefined when it cannot be opened or read: the process
 * is gone (a held /proc/<pid> file answers ESRCH once its task has been reaped, even if the
 * pid is reused).
 */
class ProcfsFile {
  private fd = -1;
  private failed = false;
  private readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  read(): string | undefined {
    if (this.fd < 0) {
      if (this.failed) return undefined;
      try {
        this.fd = openSync(this.path, constants.O_RDONLY);
      } catch {
        this.failed = true;
        return undefined;
      }
    }
    let done = 0;
    try {
      for (;;) {
        if (done === procScratch.length) {
          const bigger = Buffer.allocUnsafe(procScratch.length * 2);
          procScratch.copy(bigger, 0, 0, done);
          procScratch = bigger;
        }
        const n = readSync(this.fd, procScratch, done, procScratch.length - done, done);
        if (n === 0) break;
        done += n;
      }
    } catch {
      return undefined;
    }
    return procScratch.toString("latin1", 0, done);
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    }
    this.fd = -1;
    this.failed = true;
  }
}

interface StatFields {
  state: string;
  startTime: string;
}

/** Field 3 (state) and field 22 (starttime) of /proc/<pid>/stat; the comm may hold spaces. */
function readStat(pid: number): StatFields | undefined {
  const text = readProc(`/proc/${pid}/stat`);
  return text === undefined ? undefined : parseStat(text);
}

function parseStat(text: string): StatFields | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const rest = text.slice(close + 2).split(" ");
  // rest[0] is field 3 (state); field 22 is rest[19].
  return { state: rest[0] ?? "?", startTime: rest[19] ?? "" };
}

/** Per-uid locked-page counters (user->locked_vm). */
export class LockedVmByUser {
  private readonly byUid = new Map<number, number>();
  get(uid: number): number {
    return this.byUid.get(uid) ?? 0;
  }
  set(uid: number, pages: number): void {
    if (pages === 0) this.byUid.delete(uid);
    else this.byUid.set(uid, pages);
  }
}

/** The accounting view of one process; limits and capabilities are read per call. */
class ProcAccounting implements UserAccounting {
  private readonly proc: ProcProcess;
  private readonly locked: LockedVmByUser;
  pinnedPages = 0;
  mmLockedPages = 0;

  constructor(proc: ProcProcess, locked: LockedVmByUser) {
    this.proc = proc;
    this.locked = locked;
  }

  get memlockLimit(): number {
    return this.proc.memlockLimit();
  }
  get capIpcLock(): boolean {
    return this.proc.hasCap(CAP_IPC_LOCK);
  }
  get capSysResource(): boolean {
    return this.proc.hasCap(CAP_SYS_RESOURCE);
  }
  get lockedPages(): number {
    return this.locked.get(this.proc.uid);
  }
  set lockedPages(pages: number) {
    this.locked.set(this.proc.uid, pages);
  }
}

/** A file a process named by descriptor (MAP_FILE), held open by the daemon. */
class ProcFile implements UserFile {
  private readonly registry: PageRegistry;
  private readonly handle: FileHandle;
  private readonly fileKey: string;

  constructor(registry: PageRegistry, handle: FileHandle, fileKey: string) {
    this.registry = registry;
    this.handle = handle;
    this.fileKey = fileKey;
    registry.ref(handle);
    fileRefs.register(this, { registry, handle });
  }

  get size(): number {
    try {
      return fstatSync(this.handle.fd).size;
    } catch {
      return 0;
    }
  }

  page(index: number): UserPage | undefined {
    if (index * PAGE_SIZE >= this.size) return undefined;
    const p = this.registry.page(
      `f:${this.fileKey}:${index}`,
      `f:${this.fileKey}:${Math.floor(index / BLOCK_PAGES)}`,
      index % BLOCK_PAGES,
    );
    if (p.file === undefined) this.registry.attachFile(p, this.handle, index * PAGE_SIZE);
    return p;
  }
}

/** Drops a ProcFile's handle reference once the core no longer holds the file. */
const fileRefs = new FinalizationRegistry<{ registry: PageRegistry; handle: FileHandle }>(
  ({ registry, handle }) => registry.unref(handle),
);

function fileKeyOf(major: number, minor: number, inode: string): string {
  return `${major}:${minor}:${inode}`;
}

/** Special mappings gup refuses (VM_IO | VM_PFNMAP). */
function unpinnable(v: Vma): boolean {
  return v.path === "[vvar]" || v.path === "[vvar_vclock]";
}

/**
 * Counts the daemon's calls. What is read "once per call" (limits, capabilities, liveness, the
 * maps pinning needs) remembers the count it was read at, so starting a call costs nothing
 * however many processes the daemon knows.
 */
export class CallClock {
  epoch = 1;
}

/** The process whose inline window is open, if any (one call runs at a time). */
let openWindow: ProcProcess | undefined;

/** A live client process. One object per process, so the core can compare callers by identity. */
export class ProcProcess implements UserProcess {
  readonly pid: number;
  /** starttime from /proc/<pid>/stat: tells this process from a later one with the same pid. */
  readonly startTime: string;
  readonly uid: number;
  readonly accounting: UserAccounting;
  private readonly registry: PageRegistry;
  private readonly clock: CallClock;
  private memFd = -1;
  private readonly mapsFile: ProcfsFile;
  private readonly statFile: ProcfsFile;
  private readonly statusFile: ProcfsFile;
  private readonly limitsFile: ProcfsFile;
  /** Parsed maps, kept across calls while the shim's map generation stays `mapsGen`. */
  private cachedMaps: Vma[] | undefined;
  private mapsGen = 0;
  /** The call the cached maps were read in. */
  private mapsEpoch = 0;
  /** The map generation the current call named (0: unknown, trust no cache). */
  private callGen = 0;
  /** The call this process is making (it is alive throughout, as a task inside a syscall). */
  private callerEpoch = 0;
  private aliveValue = false;
  private aliveEpoch = 0;
  private statusText = "";
  private statusEpoch = 0;
  private limitsText = "";
  private limitsEpoch = 0;
  // The inline window: bytes [windowVa, windowVa + windowLen) as the shim read them, with the
  // writes of this call applied and marked dirty.
  private windowVa = 0;
  private windowLen = 0;
  private windowDirty = false;
  private readonly windowBytes = new Uint8Array(INLINE_MAX);
  private readonly windowMask = new Uint8Array(INLINE_MAX);
  /** Times /proc/<pid>/maps was read and parsed (tests and stats look). */
  mapsReads = 0;

  constructor(
    pid: number,
    registry: PageRegistry,
    locked: LockedVmByUser,
    clock: CallClock = new CallClock(),
  ) {
    this.pid = pid;
    this.registry = registry;
    this.clock = clock;
    this.mapsFile = new ProcfsFile(`/proc/${pid}/maps`);
    this.statFile = new ProcfsFile(`/proc/${pid}/stat`);
    this.statusFile = new ProcfsFile(`/proc/${pid}/status`);
    this.limitsFile = new ProcfsFile(`/proc/${pid}/limits`);
    const statText = this.statFile.read();
    const st = statText === undefined ? undefined : parseStat(statText);
    this.startTime = st?.startTime ?? "";
    const status = this.statusFile.read();
    const uidLine = status === undefined ? null : /^Uid:\s+(\d+)/m.exec(status);
    this.uid = uidLine === null ? -1 : Number(uidLine[1]);
    this.accounting = new ProcAccounting(this, locked);
    if (st !== undefined) {
      try {
        this.memFd = openSync(`/proc/${pid}/mem`, constants.O_RDWR);
      } catch {
        this.memFd = -1; // not allowed: every access faults
      }
    }
  }

  /** Forgets everything read from procfs: maps, limits, capabilities and liveness. */
  beginCall(): void {
    this.cachedMaps = undefined;
    this.callGen = 0;
    this.aliveEpoch = 0;
    this.statusEpoch = 0;
    this.limitsEpoch = 0;
  }

  /**
   * Starts a call this process makes (the host's clock has moved on already). `mapGen` is the
   * shim's map generation (0: unknown): the cached maps stay only if they were read under it.
   */
  enterCall(mapGen: number): void {
    this.callGen = mapGen;
    if (mapGen === 0 || mapGen !== this.mapsGen) this.cachedMaps = undefined;
    this.callerEpoch = this.clock.epoch;
  }

  /** Whether this very process (not a successor with its pid) still runs and has its memory. */
  get alive(): boolean {
    const epoch = this.clock.epoch;
    if (this.callerEpoch === epoch) return this.memFd >= 0;
    if (this.aliveEpoch !== epoch) {
      const text = this.memFd >= 0 ? this.statFile.read() : undefined;
      const st = text === undefined ? undefined : parseStat(text);
      this.aliveValue =
        st !== undefined && st.startTime === this.startTime && st.state !== "Z" && st.state !== "X";
      this.aliveEpoch = epoch;
    }
    return this.aliveValue;
  }

  /** The mappings: the cached parse while the map generation holds, else read now. */
  maps(): Vma[] {
    return this.cachedMaps ?? this.readMaps();
  }

  /** The mappings as read during this call (what page identity needs). */
  freshMaps(): Vma[] {
    if (this.cachedMaps !== undefined && this.mapsEpoch === this.clock.epoch) {
      return this.cachedMaps;
    }
    return this.readMaps();
  }

  private readMaps(): Vma[] {
    this.mapsReads++;
    const text = this.alive ? this.mapsFile.read() : undefined;
    const vmas = text === undefined ? [] : parseMaps(text);
    this.cachedMaps = vmas;
    this.mapsEpoch = this.clock.epoch;
    this.mapsGen = this.callGen;
    return vmas;
  }

  /**
   * How much of [at, at + len) the mappings let a user copy reach; what the cached maps refuse
   * is looked up again in fresh ones (a grown stack, memory mapped behind the shim's back).
   */
  private reachable(at: number, len: number, write: boolean): number {
    const n = accessiblePrefix(this.maps(), at, len, write);
    if (n === len || this.mapsEpoch === this.clock.epoch) return n;
    return accessiblePrefix(this.freshMaps(), at, len, write);
  }

  /** RLIMIT_MEMLOCK soft limit in bytes (Infinity when unlimited). */
  memlockLimit(): number {
    if (this.limitsEpoch !== this.clock.epoch) {
      this.limitsText = this.limitsFile.read() ?? "";
      this.limitsEpoch = this.clock.epoch;
    }
    const m = /^Max locked memory\s+(\S+)/m.exec(this.limitsText);
    if (m === null || m[1] === "unlimited") return Number.POSITIVE_INFINITY;
    return Number(m[1]);
  }

  /** Whether capability `bit` is in the effective set. */
  hasCap(bit: bigint): boolean {
    if (this.statusEpoch !== this.clock.epoch) {
      this.statusText = this.statusFile.read() ?? "";
      this.statusEpoch = this.clock.epoch;
    }
    const m = /^CapEff:\s+([0-9a-f]+)/m.exec(this.statusText);
    if (m === null) return false;
    return ((BigInt(`0x${m[1]}`) >> bit) & 1n) === 1n;
  }

  // ---- the inline window ---------------------------------------------------------------------

  /**
   * Opens the inline window: `length` bytes of `src` from `start` (at most INLINE_MAX) are what
   * the shim read at `va` just before the call. Only one window is open at a time in the daemon.
   */
  openWindow(va: number, src: Uint8Array, start = 0, length = src.length - start): void {
    if (openWindow !== undefined) openWindow.settleWindow();
    const n = Math.min(length, INLINE_MAX);
    if (n <= 0 || va <= 0 || va + n > USER_LIMIT) return;
    const w = this.windowBytes;
    for (let i = 0; i < n; i++) w[i] = src[start + i];
    this.windowVa = va;
    this.windowLen = n;
    this.windowDirty = false;
    openWindow = this;
  }

  /**
   * Closes the window and appends its pending writes to `out` at `at` as records (u16 offset
   * from the window's start, u16 length, the bytes); returns the new end. The shim stores them
   * before the ioctl returns. `out` must have room for INLINE_MAX * 5 bytes past `at`.
   */
  closeWindow(out: Buffer, at: number): number {
    let end = at;
    if (this.windowDirty) {
      for (let i = this.dirtyFrom(0); i < this.windowLen; ) {
        const j = this.dirtyEnd(i);
        out.writeUInt16LE(i, end);
        out.writeUInt16LE(j - i, end + 2);
        out.set(this.windowBytes.subarray(i, j), end + 4);
        end += 4 + (j - i);
        i = this.dirtyFrom(j);
      }
    }
    this.dropWindow();
    return end;
  }

  /** Stores the window's pending writes through /proc/<pid>/mem and closes it. */
  settleWindow(): void {
    if (this.windowDirty) {
      for (let i = this.dirtyFrom(0); i < this.windowLen; ) {
        const j = this.dirtyEnd(i);
        this.writeRaw(this.windowVa + i, this.windowBytes.subarray(i, j));
        i = this.dirtyFrom(j);
      }
    }
    this.dropWindow();
  }

  /** The first written byte of the window at or after `i` (windowLen when there is none). */
  private dirtyFrom(i: number): number {
    while (i < this.windowLen && this.windowMask[i] === 0) i++;
    return i;
  }

  /** The end of the run of written bytes starting at `i`. */
  private dirtyEnd(i: number): number {
    while (i < this.windowLen && this.windowMask[i] !== 0) i++;
    return i;
  }

  private dropWindow(): void {
    if (this.windowDirty) this.windowMask.fill(0);
    this.windowLen = 0;
    this.windowDirty = false;
    if (openWindow === this) openWindow = undefined;
  }

  /**
   * A pinned page is about to be read or written: if it could hold bytes of the open window,
   * the window is settled first. A private anonymous window can only be reached through this
   * process's own page at that address; anything else might be shared, so it settles.
   */
  beforePageAccess(page: ProcPage): void {
    if (this.windowLen === 0) return;
    const vmas = this.maps();
    const i = findVma(vmas, this.windowVa);
    const v = i < 0 ? undefined : vmas[i];
    const privateAnon = v !== undefined && v.inode === "0" && !v.shared;
    if (privateAnon) {
      if (page.file !== undefined || page.proc !== this) return;
      if (page.va >= this.windowVa + this.windowLen || page.va + PAGE_SIZE <= this.windowVa) {
        return;
      }
    }
    this.settleWindow();
  }

  /**
   * The window's verdict on a copy of [at, at + len): the byte offset into it when the copy
   * lies wholly inside, -1 when it does not touch it, and -2 (after settling the window) when
   * it straddles its edge.
   */
  private windowOffset(at: number, len: number): number {
    const off = at - this.windowVa;
    if (off >= 0 && off + len <= this.windowLen) return off;
    if (at >= this.windowVa + this.windowLen || at + len <= this.windowVa) return -1;
    this.settleWindow();
    return -2;
  }

  // ---- user copies ---------------------------------------------------------------------------

  read(va: bigint, dst: Uint8Array): number {
    const len = dst.length;
    if (len === 0) return 0;
    if (va < 0n || va >= USER_LIMIT_BIG) return EFAULT;
    const at = Number(va);
    if (at + len > USER_LIMIT) return EFAULT;
    if (this.windowLen !== 0) {
      const off = this.windowOffset(at, len);
      if (off >= 0) {
        if (len <= 16) for (let i = 0; i < len; i++) dst[i] = this.windowBytes[off + i];
        else dst.set(this.windowBytes.subarray(off, off + len));
        return 0;
      }
    }
    if (this.reachable(at, len, false) < len) return EFAULT;
    return this.readRaw(at, dst) ? 0 : EFAULT;
  }

  write(va: bigint, src: Uint8Array): number {
    const len = src.length;
    if (len === 0) return 0;
    if (va < 0n || va >= USER_LIMIT_BIG) return EFAULT;
    const at = Number(va);
    if (this.windowLen !== 0) {
      const off = this.windowOffset(at, len);
      if (off >= 0) {
        if (this.reachable(at, len, true) === len) {
          this.windowBytes.set(src, off);
          this.windowMask.fill(1, off, off + len);
          this.windowDirty = true;
          return 0;
        }
        this.settleWindow(); // a fault inside the window: the real memory decides
      }
    }
    const room = Math.min(len, USER_LIMIT - at);
    const ok = this.reachable(at, room, true);
    if (ok > 0 && !this.writeRaw(at, ok === len ? src : src.subarray(0, ok))) return EFAULT;
    return ok === len ? 0 : EFAULT;
  }

  /** Whether /proc/<pid>/mem still reads this process's current address space. */
  memUsable(): boolean {
    const v = this.maps().find((m) => m.read);
    return v !== undefined && this.readRaw(v.start, new Uint8Array(1));
  }

  /** Reads memory regardless of protections (a pinned page's bytes). False if it faults. */
  readRaw(va: number, dst: Uint8Array): boolean {
    if (this.memFd < 0) return false;
    try {
      return preadAll(this.memFd, dst, va) === dst.length;
    } catch {
      return false;
    }
  }

  /** Writes memory regardless of protections (a pinned page's bytes). False if it faults. */
  writeRaw(va: number, src: Uint8Array): boolean {
    if (this.memFd < 0) return false;
    try {
      return pwriteAll(this.memFd, src, va) === src.length;
    } catch {
      return false;
    }
  }

  // ---- pinning -------------------------------------------------------------------------------

  pages(va: bigint, n: number, write: boolean): UserPage[] | number {
    if (va % BigInt(PAGE_SIZE) !== 0n) throw new RangeError("pages(): va not page aligned");
    if (va < 0n || va + BigInt(n * PAGE_SIZE) > BigInt(USER_LIMIT)) return EFAULT;
    const vmas = this.freshMaps();
    const out: UserPage[] = new Array(n);
    const base = Number(va);
    let vi = -1;
    for (let i = 0; i < n; i++) {
      const at = base + i * PAGE_SIZE;
      if (vi < 0 || at >= vmas[vi].end) vi = findVma(vmas, at);
      if (vi < 0) return EFAULT;
      const v = vmas[vi];
      if (unpinnable(v) || (write ? !v.write : !v.read)) return EFAULT;
      out[i] = this.pageAt(v, at);
    }
    return out;
  }
  /** The page object behind `va` in mapping `v`, as a pin with or without FOLL_WRITE sees it. */
  private pageAt(v: Vma, va: number): ProcPage {
    const fileBacked = v.inode !== "0";
    if (fileBacked && v.shared) {
      const fileKey = fileKeyOf(v.major, v.minor, v.inode);
      const offset = v.offset + (va - v.start);
      const index = offset / PAGE_SIZE;
      const p = this.registry.page(
        `f:${fileKey}:${index}`,
        `f:${fileKey}:${Math.floor(index / BLOCK_PAGES)}`,
        index % BLOCK_PAGES,
      );
      if (p.file === undefined) {
        const h = this.registry.fileHandle(fileKey, () => this.openMapFile(v));
        if (h !== undefined) this.registry.attachFile(p, h, offset);
      }
      if (p.proc === undefined || !p.proc.alive) {
        p.proc = this;
        p.va = va;
      }
      return p;
    }
    const vpn = va / PAGE_SIZE;
    const who = `a:${this.pid}:${this.startTime}`;
    const p = this.registry.page(
      `${who}:${vpn}`,
      `${who}:${Math.floor(vpn / BLOCK_PAGES)}`,
      vpn % BLOCK_PAGES,
    );
    p.proc = this;
    p.va = va;
    return p;
  }

  /** A durable fd on the file behind mapping `v` (root or CAP_CHECKPOINT_RESTORE needed). */
  private openMapFile(v: Vma): { fd: number; writable: boolean } | undefined {
    const path = `/proc/${this.pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`;
    // Writes go to the file only for shared mappings; a private mapping's writes are COW.
    const modes = v.shared ? [constants.O_RDWR, constants.O_RDONLY] : [constants.O_RDONLY];
    for (const mode of modes) {
      try {
        return { fd: openSync(path, mode), writable: mode === constants.O_RDWR };
      } catch {
        // try the next mode
      }
    }
    return undefined;
  }

  // ---- files ---------------------------------------------------------------------------------

  file(fd: number): UserFile | number {
    if (!Number.isInteger(fd) || fd < 0) return EBADF;
    const path = `/proc/${this.pid}/fd/${fd}`;
    let opened: { fd: number; writable: boolean } | undefined;
    for (const mode of [constants.O_RDWR, constants.O_RDONLY]) {
      try {
        opened = { fd: openSync(path, mode), writable: mode === constants.O_RDWR };
        break;
      } catch {
        // try read-only
      }
    }
    if (opened === undefined) return EBADF;
    const st = fstatSync(opened.fd);
    const [major, minor] = devMajorMinor(st.dev);
    const fileKey = fileKeyOf(major, minor, String(st.ino));
    const mine = opened;
    const handle = this.registry.fileHandle(fileKey, () => mine);
    if (handle === undefined) {
      closeSync(opened.fd);
      return EBADF;
    }
    if (handle.fd !== opened.fd) {
      // An existing handle serves this file; give it write access if it lacked it.
      if (!handle.writable && opened.writable) {
        closeSync(handle.fd);
        handle.fd = opened.fd;
        handle.writable = true;
      } else {
        closeSync(opened.fd);
      }
    }
    return new ProcFile(this.registry, handle, fileKey);
  }

  /** Closes the daemon's descriptors on this process. */
  dispose(): void {
    if (openWindow === this) this.dropWindow();
    if (this.memFd >= 0) {
      try {
        closeSync(this.memFd);
      } catch {
        // already closed
      }
    }
    for (const f of [this.mapsFile, this.statFile, this.statusFile, this.limitsFile]) f.close();
    this.memFd = -1;
    this.cachedMaps = undefined;
    this.callerEpoch = 0;
    this.aliveValue = false;
    this.aliveEpoch = this.clock.epoch;
  }
}

/** The daemon's view of client processes: one ProcProcess per live process. */
export class ProcHost {
  readonly pages = new PageRegistry();
  readonly locked = new LockedVmByUser();
  private readonly clock = new CallClock();
  private readonly procs = new Map<number, ProcProcess>();

  /**
   * The process object for `pid`: the known one while it is the same process, a new one if
   * the pid now names another process or (`checkExec`) the process has exec'd since (its old
   * /proc/<pid>/mem no longer reads: that address space is gone).
   */
  process(pid: number, checkExec = false): ProcProcess {
    const known = this.procs.get(pid);
    if (known !== undefined) {
      const st = readStat(pid);
      if (st !== undefined && st.startTime === known.startTime) {
        known.beginCall();
        if (!checkExec || known.memUsable()) return known;
      }
      known.dispose();
    }
    const p = new ProcProcess(pid, this.pages, this.locked, this.clock);
    this.procs.set(pid, p);
    return p;
  }

  /** The process object for `pid` if the daemon already has one for that very process. */
  known(pid: number): ProcProcess | undefined {
    const p = this.procs.get(pid);
    if (p === undefined) return undefined;
    const st = readStat(pid);
    return st !== undefined && st.startTime === p.startTime ? p : undefined;
  }

  /** Starts a new call: every process re-reads its limits, liveness and pinning maps. */
  beginCall(): void {
    this.clock.epoch++;
  }

  /** Starts a call `caller` makes, naming the shim's map generation (0: unknown). */
  beginCallFor(caller: ProcProcess, mapGen: number): void {
    this.clock.epoch++;
    caller.enterCall(mapGen);
  }

  /** Number of processes tracked. */
  get processCount(): number {
    return this.procs.size;
  }

  /** Drops exited processes and unpinned pages. */
  sweep(): void {
    this.clock.epoch++;
    for (const [pid, p] of this.procs) {
      if (!p.alive) {
        p.dispose();
        this.procs.delete(pid);
      }
    }
    this.pages.sweep();
  }

  close(): void {
    for (const p of this.procs.values()) p.dispose();
    this.procs.clear();
    this.pages.close();
  }
}

/**
 * The client process as the iommufd core sees it: memory it can copy from and to (the uAPI's
 * copy_from_user / copy_to_user), pages it can pin (pin_user_pages: each page's identity, its
 * FOLL_PIN count and its bytes), files it can name by fd (MAP_FILE), and the accounting state
 * pinning is charged to (RLIMIT_MEMLOCK, VmPin, CAP_IPC_LOCK).
 *
 * Page identity is what the selftest observes: MD_CHECK_MAP compares the PFN a domain maps with
 * the PFN of the user's page, MD_CHECK_REFS reads its pin count. So a page is an object with a
 * synthetic PFN: shared mappings (MAP_SHARED, memfd) share page objects across fork; private
 * mappings get their own pages in a child (the kernel's copy-on-write, already resolved).
 *
 * `FakeProcess` implements all of it in memory for tests and in-process use; the daemon (a later
 * layer) backs the same interface with a real process's /proc/<pid>/mem and maps.
 */
import { EBADF, EFAULT } from "../errno.ts";
import type { UserMemory } from "../uapi/user_memory.ts";

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

/** One page of memory that can be pinned. */
export interface UserPage {
  /** Synthetic page frame number: unique per backing page, stable for its lifetime. */
  readonly pfn: number;
  /** FOLL_PIN count (what IOMMU_TEST_OP_MD_CHECK_REFS compares). */
  pins: number;
  read(offset: number, dst: Uint8Array): void;
  write(offset: number, src: Uint8Array): void;
}

/** A file a process can name by descriptor (memfd), for IOMMU_IOAS_MAP_FILE. */
export interface UserFile {
  /** Size in bytes (pages past it cannot be pinned). */
  readonly size: number;
  /** Page `index` of the file, or undefined past its end. */
  page(index: number): UserPage | undefined;
}

/** Accounting state of a process (what the kernel keeps in its mm and user_struct). */
export interface UserAccounting {
  /** RLIMIT_MEMLOCK in bytes (Infinity: unlimited). */
  memlockLimit: number;
  /** CAP_IPC_LOCK: pinning is not limited by RLIMIT_MEMLOCK. */
  capIpcLock: boolean;
  /** CAP_SYS_RESOURCE: may change IOMMU_OPTION_RLIMIT_MODE. */
  capSysResource: boolean;
  /** mm->pinned_vm, in pages (VmPin). */
  pinnedPages: number;
  /** user->locked_vm, in pages (charged in USER account mode; per user, not per process). */
  lockedPages: number;
  /** mm->locked_vm, in pages (VmLck; charged in MM account mode). */
  mmLockedPages: number;
}

export interface UserProcess extends UserMemory {
  readonly pid: number;
  /** False once the process has exited: its private pages can no longer be pinned. */
  readonly alive: boolean;
  readonly accounting: UserAccounting;
  /**
   * pin_user_pages of `n` pages from page-aligned `va`: the page objects, or EFAULT (as a
   * number) if any page is unmapped, or `write` is asked of a read-only mapping. Does not
   * change pin counts: the caller does.
   */
  pages(va: bigint, n: number, write: boolean): UserPage[] | number;
  /** The file open on descriptor `fd`, or EBADF (as a number). */
  file(fd: number): UserFile | number;
}

let nextPfn = 0x100000; // synthetic PFNs start high enough never to look like table pages

/** A page of host memory in the fake. */
export class FakePage implements UserPage {
  readonly pfn: number;
  pins = 0;
  private bytes: Uint8Array | undefined;
  constructor(pfn = nextPfn++) {
    this.pfn = pfn;
  }
  read(offset: number, dst: Uint8Array): void {
    if (this.bytes === undefined) dst.fill(0);
    else dst.set(this.bytes.subarray(offset, offset + dst.length));
  }
  write(offset: number, src: Uint8Array): void {
    this.bytes ??= new Uint8Array(PAGE_SIZE);
    this.bytes.set(src, offset);
  }
}

/** Allocates `n` pages with consecutive PFNs (as a huge page or a fresh memfd would have). */
export function contiguousPages(n: number): FakePage[] {
  const base = nextPfn;
  nextPfn += n;
  return Array.from({ length: n }, (_, i) => new FakePage(base + i));
}

/** An in-memory memfd. */
export class FakeFile implements UserFile {
  private readonly pages: FakePage[];
  size: number;
  constructor(size: number) {
    this.size = size;
    this.pages = contiguousPages(Math.ceil(size / PAGE_SIZE));
  }
  page(index: number): UserPage | undefined {
    return index * PAGE_SIZE < this.size ? this.pages[index] : undefined;
  }
}

interface Mapping {
  start: bigint; // page aligned
  pages: UserPage[];
  writable: boolean;
  shared: boolean;
}

export interface MmapOptions {
  /** Where to map (page aligned); default: the next free address. */
  at?: bigint;
  writable?: boolean;
  /** MAP_SHARED: the pages stay the same objects in a forked child. */
  shared?: boolean;
  /** Map these pages (a file's) instead of fresh anonymous ones. */
  pages?: UserPage[];
}

/** A process with an address space made of page mappings; fork() and exit() behave. */
export class FakeProcess implements UserProcess {
  private static nextPid = 1000;
  readonly pid: number;
  alive = true;
  readonly accounting: UserAccounting;
  private readonly maps: Mapping[] = [];
  private readonly files = new Map<number, UserFile>();
  private nextVa = 0x7f00_0000_0000n;
  private nextFd = 3;

  constructor(accounting: Partial<UserAccounting> = {}) {
    this.pid = FakeProcess.nextPid++;
    this.accounting = {
      memlockLimit: Number.POSITIVE_INFINITY,
      capIpcLock: false,
      capSysResource: true,
      pinnedPages: 0,
      lockedPages: 0,
      mmLockedPages: 0,
      ...accounting,
    };
  }

  /** Maps `len` bytes (rounded up to pages); returns the address. */
  mmap(len: number, opts: MmapOptions = {}): bigint {
    const n = Math.ceil(len / PAGE_SIZE);
    const start = opts.at ?? this.nextVa;
    if (start % BigInt(PAGE_SIZE) !== 0n) throw new RangeError("mmap address not page aligned");
    const end = start + BigInt(n * PAGE_SIZE);
    if (
      this.maps.some((m) => start < m.start + BigInt(m.pages.length * PAGE_SIZE) && m.start < end)
    ) {
      throw new RangeError("mmap over an existing mapping");
    }
    const pages = opts.pages ?? contiguousPages(n);
    this.maps.push({
      start,
      pages: pages.slice(0, n),
      writable: opts.writable ?? true,
      shared: opts.shared ?? false,
    });
    this.maps.sort((a, b) => (a.start < b.start ? -1 : 1));
    if (opts.at === undefined) this.nextVa = end + BigInt(PAGE_SIZE); // leave a guard hole
    return start;
  }

  /** Unmaps whole pages in [va, va + len). */
  munmap(va: bigint, len: number): void {
    const end = va + BigInt(Math.ceil(len / PAGE_SIZE) * PAGE_SIZE);
    const keep: Mapping[] = [];
    for (const m of this.maps) {
      const mEnd = m.start + BigInt(m.pages.length * PAGE_SIZE);
      if (mEnd <= va || m.start >= end) {
        keep.push(m);
        continue;
      }
      if (m.start < va)
        keep.push({ ...m, pages: m.pages.slice(0, Number((va - m.start) / BigInt(PAGE_SIZE))) });
      if (mEnd > end) {
        keep.push({
          ...m,
          start: end,
          pages: m.pages.slice(Number((end - m.start) / BigInt(PAGE_SIZE))),
        });
      }
    }
    this.maps.length = 0;
    this.maps.push(...keep.sort((a, b) => (a.start < b.start ? -1 : 1)));
  }

  /** Opens a memfd of `size` bytes; returns its descriptor. */
  memfd(size: number): { fd: number; file: FakeFile } {
    const file = new FakeFile(size);
    const fd = this.nextFd++;
    this.files.set(fd, file);
    return { fd, file };
  }

  closeFd(fd: number): void {
    this.files.delete(fd);
  }

  /**
   * A child with the same address space: shared mappings keep their page objects, private ones
   * get copies (their current bytes, new identities), as copy-on-write ends up.
   */
  fork(): FakeProcess {
    const child = new FakeProcess({
      ...this.accounting,
      pinnedPages: 0,
      lockedPages: 0,
      mmLockedPages: 0,
    });
    child.nextVa = this.nextVa;
    for (const m of this.maps) {
      const pages = m.shared
        ? m.pages
        : m.pages.map((p) => {
            const copy = new FakePage();
            const buf = new Uint8Array(PAGE_SIZE);
            p.read(0, buf);
            copy.write(0, buf);
            return copy;
          });
      child.maps.push({ ...m, pages });
    }
    for (const [fd, f] of this.files) child.files.set(fd, f);
    return child;
  }

  /** The process exits: nothing can be read, written or pinned through it any more. */
  exit(): void {
    this.alive = false;
    this.maps.length = 0;
  }

  // ---- UserProcess ---------------------------------------------------------------------------

  read(va: bigint, dst: Uint8Array): number {
    return this.copy(va, dst, false);
  }

  write(va: bigint, src: Uint8Array): number {
    return this.copy(va, src, true);
  }

  pages(va: bigint, n: number, write: boolean): UserPage[] | number {
    if (va % BigInt(PAGE_SIZE) !== 0n) throw new RangeError("pages(): va not page aligned");
    const out: UserPage[] = new Array(n);
    let i = 0;
    // One lookup per mapping crossed, then the mapping's pages in a run.
    while (i < n) {
      const loc = this.locate(va + BigInt(i * PAGE_SIZE));
      if (loc === undefined || (write && !loc.map.writable)) return EFAULT;
      const first = Number((va + BigInt(i * PAGE_SIZE) - loc.map.start) / BigInt(PAGE_SIZE));
      const run = Math.min(n - i, loc.map.pages.length - first);
      for (let k = 0; k < run; k++) out[i + k] = loc.map.pages[first + k];
      i += run;
    }
    return out;
  }

  file(fd: number): UserFile | number {
    return this.files.get(fd) ?? EBADF;
  }

  // ---- helpers -------------------------------------------------------------------------------

  private locate(va: bigint): { map: Mapping; page: UserPage; offset: number } | undefined {
    if (!this.alive || va < 0n) return undefined;
    for (const m of this.maps) {
      if (va < m.start) return undefined;
      const idx = (va - m.start) / BigInt(PAGE_SIZE);
      if (idx < BigInt(m.pages.length)) {
        return {
          map: m,
          page: m.pages[Number(idx)],
          offset: Number((va - m.start) % BigInt(PAGE_SIZE)),
        };
      }
    }
    return undefined;
  }

  private copy(va: bigint, buf: Uint8Array, toUser: boolean): number {
    let done = 0;
    while (done < buf.length) {
      const loc = this.locate(va + BigInt(done));
      if (loc === undefined || (toUser && !loc.map.writable)) return EFAULT;
      const n = Math.min(PAGE_SIZE - loc.offset, buf.length - done);
      const part = buf.subarray(done, done + n);
      if (toUser) loc.page.write(loc.offset, part);
      else loc.page.read(loc.offset, part);
      done += n;
    }
    return 0;
  }
}

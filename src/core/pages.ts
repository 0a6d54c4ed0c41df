/**
 * iopt_pages: the provider of pinned memory behind one or more IOAS areas
 * (drivers/iommu/iommufd/pages.c; spec ioas-pages.md §2.3, §9, §10, §12.6, §13).
 *
 * An IoptPages is a linear array of `npages` page indexes over a user VA range (USER), a
 * file range (FILE) or a slice of a dma-buf (DMABUF). The kernel keeps each index's PFN in one
 * of three tiers (an access xarray, a domain that maps it, or the origin) and pins an index
 * exactly once while any interval tree covers it. This model keeps the same observable rule
 * with a per-index holder count: an index is held by every domain-filled area covering it (the
 * kernel's domains_itree) and by every access pin covering it (access_itree). The first holder
 * pins the page from the origin (UserPage.pins + 1, npinned + 1); later holders reuse the page;
 * the last holder to go unpins it. Whichever tier the kernel would read a PFN from, it is the
 * same page, so reading the held page is equivalent.
 *
 * Accounting (§10) is charged after pins are taken, on npinned - lastNpinned, exactly as
 * iopt_pages_update_pinned does; the caller unwinds with drop() when charging fails.
 *
 * dma-buf pages (§13; iopt_alloc_dmabuf_pages, iopt_map_dmabuf, pfn_reader_fill_dmabuf,
 * iopt_revoke_notify and the iopt_dmabuf_*track* helpers of v6.19+, plus the multi-range
 * physical list of the 2026 PAL series "iommufd: Support DMA-bufs with multiple physical
 * ranges") never pin and never charge: the PFN of index i is looked up in the exporter's list of
 * physical ranges at byte `start + i * PAGE`, computed on demand (dmabufPages). io_pagetable.ts
 * maps them with IOMMU_MMIO instead of IOMMU_CACHE and records every (area, domain) mapping here
 * (trackDomain), because a revoke from the exporter must unmap exactly those. A revoked import
 * has no physical list any more: domain fills of it map nothing, unfills unmap nothing, and the
 * areas stay until user space unmaps them.
 */
import { EFAULT, EINVAL, ENOMEM, EOVERFLOW, EPERM, ErrnoError } from "../errno.ts";
import { AccountMode, type AccountModeValue } from "./context.ts";
import type { IommuPagingDomain } from "./driver.ts";
import type { FailNth } from "./fail_nth.ts";
import { HeldPages } from "./held_pages.ts";
import type { IoptArea } from "./io_pagetable.ts";
import { PAGE_SIZE, type UserFile, type UserPage, type UserProcess } from "./user_mm.ts";

type Faults = Pick<FailNth, "shouldFail">;

/** enum iopt_address_type. */
export const IoptAddress = { USER: 0, FILE: 1, DMABUF: 2 } as const;
export type IoptAddressValue = (typeof IoptAddress)[keyof typeof IoptAddress];

/** IOMMUFD_ACCESS_RW_* (include/linux/iommufd.h), shared by access rw and pin_pages. */
export const ACCESS_RW_READ = 0;
export const ACCESS_RW_WRITE = 1 << 0;
export const ACCESS_RW_KTHREAD = 1 << 1;
/** __IOMMUFD_ACCESS_RW_SLOW_PATH: test builds force the slow rw path with it. */
export const ACCESS_RW_SLOW_PATH = 1 << 2;

const PAGE = BigInt(PAGE_SIZE);
const SIZE_MAX = (1n << 64n) - 1n;
/** MAX_NPFNS: a pfn_batch entry counts pages in a u32, so a dma-buf slice stays below it. */
const MAX_NPFNS = 0xffff_ffffn;

// ---- dma-buf import ---------------------------------------------------------------------------

/** One physically contiguous piece of a dma-buf (struct dma_buf_phys_vec). */
export interface DmabufPhysRange {
  /** Physical address of its first byte. */
  readonly paddr: number;
  /** Its length in bytes. */
  readonly len: number;
}

/**
 * A dma-buf as iommufd imports it: its size, the exporter's "physical address list" mapping
 * (dma_buf_pal_map_phys) and the importers it notifies. The selftest's exporter
 * (selftest.ts SelftestDmabuf) is the only one the model has.
 */
export interface Dmabuf {
  /** dmabuf->size in bytes. */
  readonly size: number;
  /**
   * The buffer's physical ranges in buffer order, together covering `size` bytes. Throws
   * ErrnoError: ENODEV while the exporter has revoked the buffer, ENOMEM when its list cannot
   * be allocated (an injection site of `faults`).
   */
  mapPhys(faults: Pick<FailNth, "shouldFail">): readonly DmabufPhysRange[];
  /**
   * move_notify of every attached importer. The exporter calls each one on every revoke
   * request; iommufd treats any notification as a revoke (iopt_revoke_notify).
   */
  readonly importers: Set<() => void>;
}

/** One (area, domain) pair a dma-buf import has mapped (struct iopt_pages_dmabuf_track). */
interface DmabufTrack {
  readonly area: IoptArea;
  readonly domain: IommuPagingDomain;
}

/** struct iopt_pages_dmabuf: the attachment of one IoptPages to its dma-buf. */
class DmabufImport {
  readonly buf: Dmabuf;
  /** Page-aligned byte offset in the buffer of index 0. */
  readonly start: number;
  /** The exporter's physical list; null once revoked (nothing may be mapped from it then). */
  phys: readonly DmabufPhysRange[] | null;
  /** Every mapping of these pages in a domain, by area and domain. */
  readonly tracker: DmabufTrack[] = [];
  /** Our move_notify, registered in buf.importers until the pages are released. */
  readonly notify: () => void;

  constructor(buf: Dmabuf, start: number, phys: readonly DmabufPhysRange[], notify: () => void) {
    this.buf = buf;
    this.start = start;
    this.phys = phys;
    this.notify = notify;
  }
}

/** A page-frame number; what a domain fill needs of a page (UserPage has it too). */
export interface PagePfn {
  readonly pfn: number;
}

/**
 * Charges (inc) or uncharges `npages` pinned pages to `owner` in `mode`
 * (iopt_pages_update_pinned without the last_npinned bookkeeping). USER: over
 * RLIMIT_MEMLOCK is ENOMEM. MM: the same limit through __account_locked_vm with
 * bypass_rlim = false (so CAP_IPC_LOCK does not lift it); an exited owner is EINVAL.
 * VmPin (pinnedPages) moves in every mode. Throws ErrnoError; uncharging never fails.
 * USER charges user->locked_vm (`lockedPages`), MM charges mm->locked_vm (`mmLockedPages`,
 * what /proc/<pid>/status shows as VmLck).
 */
export function chargePinned(
  owner: UserProcess,
  mode: AccountModeValue,
  npages: number,
  inc: boolean,
): void {
  const acct = owner.accounting;
  if (inc) {
    if (mode === AccountMode.USER || mode === AccountMode.MM) {
      if (mode === AccountMode.MM && !owner.alive)
        throw new ErrnoError(EINVAL, "the owner's mm is gone");
      const limit = Math.floor(acct.memlockLimit / PAGE_SIZE);
      const locked = mode === AccountMode.USER ? acct.lockedPages : acct.mmLockedPages;
      if (locked + npages > limit)
        throw new ErrnoError(ENOMEM, "pinning would exceed RLIMIT_MEMLOCK");
      if (mode === AccountMode.USER) acct.lockedPages += npages;
      else acct.mmLockedPages += npages;
    }
    acct.pinnedPages += npages;
  } else {
    if (mode === AccountMode.USER) acct.lockedPages = Math.max(0, acct.lockedPages - npages);
    else if (mode === AccountMode.MM) acct.mmLockedPages = Math.max(0, acct.mmLockedPages - npages);
    acct.pinnedPages = Math.max(0, acct.pinnedPages - npages);
  }
}

export class IoptPages {
  readonly type: IoptAddressValue;
  /** Number of page indexes: ceil((startByte + length) / PAGE). */
  readonly npages: number;
  /** The creating MAP asked for WRITEABLE; pins then ask for write access. */
  readonly writable: boolean;
  /**
   * USER: page-aligned VA of index 0. FILE: page-aligned file offset of index 0. DMABUF:
   * page-aligned offset in the buffer of index 0.
   */
  readonly base: bigint;
  readonly file: UserFile | null;
  /** The dma-buf attachment of DMABUF pages (null for the other types). */
  private dmabufImport: DmabufImport | null = null;
  /** source_mm / source_task / source_user: the process pins are taken from and charged to. */
  source: UserProcess;
  accountMode: AccountModeValue;
  /** Indexes currently pinned (each at most once). */
  npinned = 0;
  /** Pages currently charged to the accounting. */
  lastNpinned = 0;
  /** kref: one per area using these pages and per COPY piece in flight. */
  refs = 1;
  private readonly held = new HeldPages();
  /** access_itree: users per exact index range "first:last" pinned by accesses. */
  private readonly accessNodes = new Map<string, number>();

  private constructor(
    type: IoptAddressValue,
    source: UserProcess,
    base: bigint,
    startByte: number,
    length: bigint,
    writable: boolean,
    file: UserFile | null,
  ) {
    this.type = type;
    this.source = source;
    this.base = base;
    this.writable = writable;
    this.file = file;
    this.npages = Number((BigInt(startByte) + length + PAGE - 1n) / PAGE);
    this.accountMode = source.accounting.capIpcLock ? AccountMode.NONE : AccountMode.USER;
  }

  /** iopt_alloc_pages' checks: length 0 or above SIZE_MAX - PAGE is EINVAL; ENOMEM site. */
  private static checkLength(length: bigint, faults: Faults): void {
    if (length === 0n || length > SIZE_MAX - PAGE)
      throw new ErrnoError(EINVAL, `bad pages length ${length}`);
    if (faults.shouldFail("iopt_alloc_pages"))
      throw new ErrnoError(ENOMEM, "iopt_pages allocation failed");
  }

  /**
   * iopt_alloc_user_pages: pages over [uptr, uptr + length) of `source`. EOVERFLOW when the
   * range wraps, EINVAL for a bad length, ENOMEM (injected). Nothing is pinned.
   */
  static allocUser(
    source: UserProcess,
    uptr: bigint,
    length: bigint,
    writable: boolean,
    faults: Faults,
  ): IoptPages {
    if (uptr + length > SIZE_MAX) throw new ErrnoError(EOVERFLOW, "user_va + length overflows");
    IoptPages.checkLength(length, faults);
    const startByte = Number(uptr % PAGE);
    return new IoptPages(
      IoptAddress.USER,
      source,
      uptr - BigInt(startByte),
      startByte,
      length,
      writable,
      null,
    );
  }

  /**
   * iopt_alloc_file_pages: pages over file bytes [start, start + length). The caller has
   * checked length 0 and overflow (MAP_FILE does, before the fd lookup). EINVAL, ENOMEM.
   */
  static allocFile(
    source: UserProcess,
    file: UserFile,
    start: bigint,
    length: bigint,
    writable: boolean,
    faults: Faults,
  ): IoptPages {
    IoptPages.checkLength(length, faults);
    const startByte = Number(start % PAGE);
    return new IoptPages(
      IoptAddress.FILE,
      source,
      start - BigInt(startByte),
      startByte,
      length,
      writable,
      file,
    );
  }

  /**
   * iopt_alloc_dmabuf_pages + iopt_map_dmabuf: pages over bytes [start, start + length) of
   * dma-buf `buf`, attached as a revocable importer. The caller has checked length 0 and the
   * overflow of start + length - 1. In order: EINVAL when the range ends at or past the buffer's
   * size or spans 2^32 - 1 pages or more; the generic checks (EINVAL, ENOMEM); ENOMEM
   * (attachment, injected); the exporter's answer (ENODEV revoked, ENOMEM). Accounting mode NONE:
   * nothing is ever pinned. Throws ErrnoError; on error nothing stays attached.
   */
  static allocDmabuf(
    source: UserProcess,
    buf: Dmabuf,
    start: bigint,
    length: bigint,
    writable: boolean,
    faults: Faults,
  ): IoptPages {
    if (BigInt(buf.size) <= start + length - 1n)
      throw new ErrnoError(EINVAL, "range runs past the end of the dma-buf");
    if (length / PAGE >= MAX_NPFNS) throw new ErrnoError(EINVAL, "dma-buf slice too long");
    IoptPages.checkLength(length, faults);
    const startByte = Number(start % PAGE);
    const base = start - BigInt(startByte);
    const pages = new IoptPages(
      IoptAddress.DMABUF,
      source,
      base,
      startByte,
      length,
      writable,
      null,
    );
    pages.accountMode = AccountMode.NONE;
    // dma_buf_dynamic_attach: the attachment record.
    if (faults.shouldFail("dma_buf_attach"))
      throw new ErrnoError(ENOMEM, "dma-buf attachment allocation failed");
    const phys = buf.mapPhys(faults);
    const imp = new DmabufImport(buf, Number(base), phys, () => pages.revokeDmabuf());
    pages.dmabufImport = imp;
    buf.importers.add(imp.notify);
    return pages;
  }

  /** True for IOPT_ADDRESS_DMABUF pages whose exporter revoked them (iopt_dmabuf_revoked). */
  get dmabufRevoked(): boolean {
    return this.dmabufImport !== null && this.dmabufImport.phys === null;
  }

  /** The dma-buf these pages import (null unless DMABUF). */
  get dmabuf(): Dmabuf | null {
    return this.dmabufImport?.buf ?? null;
  }

  /**
   * pfn_reader_fill_dmabuf for indexes [first, last]: the PFN of each, found by walking the
   * exporter's physical ranges from the one holding byte `start + first * PAGE`. Must not be
   * called on revoked pages (the kernel WARNs and fails EINVAL). Pins nothing.
   */
  dmabufPages(first: number, last: number): PagePfn[] {
    const imp = this.dmabufImport;
    if (imp === null || imp.phys === null)
      throw new ErrnoError(EINVAL, "dma-buf pages read while revoked or not a dma-buf");
    const phys = imp.phys;
    const out: PagePfn[] = new Array(last - first + 1);
    let byte = imp.start + first * PAGE_SIZE;
    let cur = 0;
    let curBase = 0;
    while (cur < phys.length && curBase + phys[cur].len <= byte) curBase += phys[cur++].len;
    for (let i = 0; i < out.length; i++) {
      if (cur >= phys.length) throw new Error("dma-buf index past its physical ranges");
      const range = phys[cur];
      out[i] = { pfn: Math.floor((range.paddr + (byte - curBase)) / PAGE_SIZE) };
      byte += PAGE_SIZE;
      if (byte - curBase >= range.len) {
        curBase += range.len;
        cur++;
      }
    }
    return out;
  }

  /**
   * iopt_dmabuf_track_domain: records that `area` is (about to be) mapped in `domain`, so a
   * revoke unmaps it. ENOMEM (injected allocation). Throws ErrnoError.
   */
  trackDomain(area: IoptArea, domain: IommuPagingDomain, faults: Faults): void {
    const imp = this.dmabufImport;
    if (imp === null) throw new Error("trackDomain on pages that are not a dma-buf");
    if (imp.tracker.some((t) => t.area === area && t.domain === domain))
      throw new ErrnoError(EINVAL, "dma-buf mapping tracked twice");
    if (faults.shouldFail("iopt_dmabuf_track_alloc"))
      throw new ErrnoError(ENOMEM, "dma-buf tracker allocation failed");
    imp.tracker.push({ area, domain });
  }

  /** iopt_dmabuf_untrack_domain: forgets the (area, domain) mapping. */
  untrackDomain(area: IoptArea, domain: IommuPagingDomain): void {
    const tracker = this.dmabufImport?.tracker;
    if (tracker === undefined) return;
    const i = tracker.findIndex((t) => t.area === area && t.domain === domain);
    if (i < 0) throw new Error("untracking a dma-buf mapping that was not tracked");
    tracker.splice(i, 1);
  }

  /** iopt_dmabuf_untrack_all_domains: forgets every mapping of `area`. */
  untrackArea(area: IoptArea): void {
    const tracker = this.dmabufImport?.tracker;
    if (tracker === undefined) return;
    for (let i = tracker.length - 1; i >= 0; i--)
      if (tracker[i].area === area) tracker.splice(i, 1);
  }

  /** The (area, domain) mappings tracked for a revoke, in tracking order (tests, invariants). */
  get dmabufTracked(): readonly { area: IoptArea; domain: IommuPagingDomain }[] {
    return this.dmabufImport?.tracker ?? [];
  }

  /**
   * iopt_revoke_notify: the exporter withdrew the buffer. Every tracked mapping is unmapped
   * (the whole area from that domain) and the physical list is dropped; a second notification
   * does nothing. The areas and their tracking stay (user space still has to unmap them).
   */
  private revokeDmabuf(): void {
    const imp = this.dmabufImport;
    if (imp === null || imp.phys === null) return;
    for (const t of imp.tracker) t.domain.unmap(t.area.iova, t.area.length);
    imp.phys = null;
  }

  /** The address the auto IOVA allocator aligns to for the byte at `startByte` (§6). */
  sourceAddress(startByte: bigint): bigint {
    return this.base + startByte;
  }

  get(): void {
    this.refs++;
  }

  /**
   * iopt_put_pages: the last reference must find nothing pinned (and, for a dma-buf, nothing
   * mapped); it detaches from the dma-buf.
   */
  put(): void {
    if (this.refs <= 0) throw new Error("iopt_pages put with no references");
    this.refs--;
    if (this.refs !== 0) return;
    if (this.held.size !== 0 || this.npinned !== 0 || this.accessNodes.size)
      throw new Error("iopt_pages released while pages are still pinned");
    const imp = this.dmabufImport;
    if (imp !== null) {
      if (imp.tracker.length !== 0) throw new Error("dma-buf pages released while still mapped");
      imp.buf.importers.delete(imp.notify);
    }
  }

  /** True if some domain-filled area or access pin holds `index`. */
  isHeld(index: number): boolean {
    return this.held.has(index);
  }

  /** The held page at `index` (undefined when nothing holds it). */
  pageAt(index: number): UserPage | undefined {
    return this.held.page(index);
  }

  /** Number of indexes held (for tests and invariants). */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Adds one holder to every index in [first, last] and returns their pages, pinning from the
   * origin the indexes nobody held (the pfn_reader's hole spans). All or nothing: on error
   * (EFAULT: unmapped / read-only VA or the owner gone; EINVAL: file page past EOF; ENOMEM:
   * injected) nothing changed. Accounting is not charged here: call commitPinned().
   */
  hold(first: number, last: number, faults: Faults): UserPage[] {
    const out: UserPage[] = new Array(last - first + 1);
    let batchReady = false;
    let i = first;
    try {
      while (i <= last) {
        const heldPage = this.held.addHolder(i);
        if (heldPage !== undefined) {
          out[i - first] = heldPage;
          i++;
          continue;
        }
        if (!batchReady) {
          // The pfn_reader's batch: only a read that reaches the origin allocates one.
          if (faults.shouldFail("pfn_batch_alloc"))
            throw new ErrnoError(ENOMEM, "batch allocation failed");
          batchReady = true;
        }
        let end = i;
        while (end < last && !this.held.has(end + 1)) end++;
        const pinned = this.pinOrigin(i, end - i + 1, this.writable, faults);
        for (let k = 0; k < pinned.length; k++) {
          const page = pinned[k];
          page.pins++;
          this.held.insert(i + k, page);
          out[i + k - first] = page;
        }
        this.npinned += pinned.length;
        i = end + 1;
      }
    } catch (e) {
      if (i > first) this.release(first, i - 1);
      throw e;
    }
    return out;
  }

  /**
   * iopt_area_add_access for the index range [first, last]: a pin by an in-kernel access. An
   * identical earlier range only gains a user (no new pins, no failure); a new range pins the
   * indexes nobody holds (ENOMEM and EINVAL injection sites, pin errors) and charges the
   * accounting. All or nothing. Returns the pages. Throws ErrnoError.
   */
  holdAccess(first: number, last: number, faults: Faults): UserPage[] {
    const key = `${first}:${last}`;
    const users = this.accessNodes.get(key);
    if (users !== undefined) {
      this.accessNodes.set(key, users + 1);
      return this.hold(first, last, faults);
    }
    if (faults.shouldFail("iopt_pages_access_alloc"))
      throw new ErrnoError(ENOMEM, "access node allocation failed");
    const out = this.hold(first, last, faults);
    try {
      // pages_to_xarray's own injection point (the xarray does not take part in failslab).
      if (faults.shouldFail("pages_to_xarray")) throw new ErrnoError(EINVAL, "xarray store failed");
      this.commitPinned(faults);
    } catch (e) {
      this.drop(first, last);
      throw e;
    }
    this.accessNodes.set(key, 1);
    return out;
  }

  /**
   * iopt_area_remove_access for [first, last]: must match an earlier holdAccess (false, and
   * nothing done, when no such pin exists). Unpins what nobody else holds.
   */
  dropAccess(first: number, last: number): boolean {
    const key = `${first}:${last}`;
    const users = this.accessNodes.get(key);
    if (users === undefined) return false;
    if (users === 1) this.accessNodes.delete(key);
    else this.accessNodes.set(key, users - 1);
    this.drop(first, last);
    return true;
  }

  /**
   * Removes one holder from every index in [first, last]; indexes left with none are unpinned
   * (npinned drops) and the accounting is uncharged (update_unpinned). Never fails.
   */
  drop(first: number, last: number): void {
    this.release(first, last);
    this.updateUnpinned();
  }

  /**
   * pfn_reader_user_update_pinned: charges npinned - lastNpinned when it grew (an injection
   * site: ENOMEM), or uncharges when it shrank. Throws ErrnoError; the caller then undoes its
   * holds with drop(), which leaves the accounting as it was.
   */
  commitPinned(faults: Faults): void {
    if (this.npinned === this.lastNpinned) return;
    if (this.npinned < this.lastNpinned) {
      this.updateUnpinned();
      return;
    }
    if (faults.shouldFail("iopt_pages_update_pinned"))
      throw new ErrnoError(ENOMEM, "accounting update failed");
    chargePinned(this.source, this.accountMode, this.npinned - this.lastNpinned, true);
    this.lastNpinned = this.npinned;
  }

  private release(first: number, last: number): void {
    for (let i = first; i <= last; i++) {
      const unheld = this.held.removeHolder(i);
      if (unheld !== undefined) {
        unheld.pins--;
        this.npinned--;
      }
    }
  }

  private updateUnpinned(): void {
    if (this.npinned >= this.lastNpinned) return;
    chargePinned(this.source, this.accountMode, this.lastNpinned - this.npinned, false);
    this.lastNpinned = this.npinned;
  }

  /**
   * Pins `n` pages from the origin starting at `index` (pfn_reader_user_pin): an injection
   * site (EFAULT). Returns the pages without touching their pin counts. Throws ErrnoError.
   */
  private pinOrigin(index: number, n: number, write: boolean, faults: Faults): UserPage[] {
    if (faults.shouldFail("pfn_reader_user_pin"))
      throw new ErrnoError(EFAULT, "injected pin failure");
    if (this.file !== null) {
      const fileIndex = Number(this.base / PAGE) + index;
      const pages: UserPage[] = new Array(n);
      for (let k = 0; k < n; k++) {
        const p = this.file.page(fileIndex + k);
        if (p === undefined) throw new ErrnoError(EINVAL, "file page past the end of the file");
        pages[k] = p;
      }
      return pages;
    }
    if (!this.source.alive) throw new ErrnoError(EFAULT, "the owner's mm is gone");
    const r = this.source.pages(this.base + BigInt(index) * PAGE, n, write);
    if (typeof r === "number") throw new ErrnoError(r, "pin_user_pages failed");
    return r;
  }

  /**
   * iopt_pages_rw_access: copies `data` to (WRITE) or from the bytes starting at `startByte`.
   * `caller` is the process running the call (undefined: a kernel thread). EPERM for a write
   * to read-only pages; EINVAL for dma-buf pages (after the EPERM check); EFAULT from the user
   * copy or a failed pin; EINVAL (injected) on the single-page remote path. Pins nothing
   * persistently. Throws ErrnoError.
   */
  rw(
    startByte: bigint,
    data: Uint8Array,
    flags: number,
    caller: UserProcess | undefined,
    faults: Faults,
  ): void {
    const length = data.length;
    const startIndex = Number(startByte / PAGE);
    const lastIndex = Number((startByte + BigInt(length) - 1n) / PAGE);
    const offset = Number(startByte % PAGE);
    let changeMm = caller !== this.source;
    if (flags & ACCESS_RW_SLOW_PATH) changeMm = true;
    if (flags & ACCESS_RW_WRITE && !this.writable)
      throw new ErrnoError(EPERM, "write through read-only pages");
    // No struct page to copy through: MMIO may be behind a dma-buf.
    if (this.type === IoptAddress.DMABUF) throw new ErrnoError(EINVAL, "rw of dma-buf pages");
    if (this.type !== IoptAddress.USER) {
      this.rwSlow(startIndex, lastIndex, offset, data, flags, faults);
      return;
    }
    if (!(flags & ACCESS_RW_KTHREAD) && changeMm) {
      if (startIndex === lastIndex) this.rwPage(startIndex, offset, data, flags, faults);
      else this.rwSlow(startIndex, lastIndex, offset, data, flags, faults);
      return;
    }
    if (changeMm && !this.source.alive) {
      this.rwSlow(startIndex, lastIndex, offset, data, flags, faults);
      return;
    }
    // Fast path: a plain user copy, ignoring pinning (as copy_to/from_user does).
    const va = this.base + startByte;
    const rc = flags & ACCESS_RW_WRITE ? this.source.write(va, data) : this.source.read(va, data);
    if (rc !== 0) throw new ErrnoError(EFAULT, "user copy faulted");
  }

  /** iopt_pages_rw_page: pin the one page remotely, copy, unpin. */
  private rwPage(index: number, offset: number, data: Uint8Array, flags: number, faults: Faults) {
    if (!this.source.alive) {
      this.rwSlow(index, index, offset, data, flags, faults);
      return;
    }
    if (faults.shouldFail("iopt_pages_rw_page"))
      throw new ErrnoError(EINVAL, "injected rw_page failure");
    const r = this.source.pages(this.base + BigInt(index) * PAGE, 1, !!(flags & ACCESS_RW_WRITE));
    if (typeof r === "number") throw new ErrnoError(r, "pin_user_pages_remote failed");
    const page = r[0];
    page.pins++;
    copyPage(page, offset, data, flags);
    page.pins--;
  }

  /**
   * iopt_pages_rw_slow: PFNs come from the held pages, holes are pinned from the origin for
   * the duration of the copy only.
   */
  private rwSlow(
    startIndex: number,
    lastIndex: number,
    offset: number,
    data: Uint8Array,
    flags: number,
    faults: Faults,
  ): void {
    if (faults.shouldFail("pfn_batch_alloc")) throw new ErrnoError(ENOMEM, "batch allocation");
    const temps: UserPage[] = [];
    try {
      let done = 0;
      let pageOffset = offset;
      let i = startIndex;
      while (i <= lastIndex) {
        const heldPage = this.held.page(i);
        let run: UserPage[];
        if (heldPage !== undefined) {
          run = [heldPage];
        } else {
          let end = i;
          while (end < lastIndex && !this.held.has(end + 1)) end++;
          run = this.pinOrigin(i, end - i + 1, this.writable, faults);
          for (const p of run) {
            p.pins++;
            temps.push(p);
          }
        }
        for (const page of run) {
          const n = Math.min(PAGE_SIZE - pageOffset, data.length - done);
          copyPage(page, pageOffset, data.subarray(done, done + n), flags);
          done += n;
          pageOffset = 0;
        }
        i += run.length;
      }
    } finally {
      for (const p of temps) p.pins--;
    }
  }
}

function copyPage(page: UserPage, offset: number, data: Uint8Array, flags: number): void {
  if (flags & ACCESS_RW_WRITE) page.write(offset, data);
  else page.read(offset, data);
}

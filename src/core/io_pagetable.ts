/**
 * io_pagetable: the IOVA space of one IOAS (drivers/iommu/iommufd/io_pagetable.c,
 * io_pagetable.h, double_span.h; spec ioas-pages.md §2-§11, §14; hwpt-device.md §7, §13,
 * §14 for the reserved-region and dirty helpers).
 *
 * State: the areas (mapped IOVA ranges, never overlapping, kept sorted), the reserved ranges
 * (a multiset with owners), the allowed ranges, the attached paging domains (a dense list:
 * removal moves the last into the hole, as the kernel's xarray compaction does), the attached
 * in-kernel accesses (ids 0..65535), the IOVA alignment and the large-page switch.
 *
 * Every operation is all-or-nothing except unmap, which keeps what it removed before an
 * error (as the kernel does). IOVAs and lengths are bigint (control plane); page indexes are
 * Numbers.
 *
 * Areas over dma-buf pages (§13; io_pagetable.c iopt_fill_domain / iopt_unfill_domain /
 * iopt_area_split and pages.c iopt_area_fill_domains / iopt_area_unfill_domains of v6.19+) take
 * no holds: each (area, domain) mapping is tracked on the pages before it is made and untracked
 * when it goes, the PFNs come from the exporter's physical list and are mapped with IOMMU_MMIO
 * in place of IOMMU_CACHE, and once the exporter revoked the buffer fills and unfills skip the
 * domain (the revoke already unmapped everything tracked). Splitting such an area (VFIO type1)
 * is EOPNOTSUPP, and in-kernel access pins of it are EINVAL.
 */
import {
  EADDRINUSE,
  EBUSY,
  EDEADLOCK,
  EEXIST,
  EINVAL,
  ENOENT,
  ENOMEM,
  ENOSPC,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
  ErrnoError,
} from "../errno.ts";
import { AccountMode } from "./context.ts";
import {
  type DirtyRecord,
  IOMMU_CACHE,
  IOMMU_MMIO,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuPagingDomain,
} from "./driver.ts";
import type { FailNth } from "./fail_nth.ts";
import { ACCESS_RW_WRITE, IoptAddress, type IoptPages, type PagePfn } from "./pages.ts";
import { PAGE_SIZE, type UserPage, type UserProcess } from "./user_mm.ts";

type Faults = Pick<FailNth, "shouldFail">;

/** U64_MAX (the kernel's ULONG_MAX on 64-bit). */
export const ULONG_MAX = (1n << 64n) - 1n;
const PAGE = BigInt(PAGE_SIZE);
/** HPAGE_SIZE on x86-64 with THP: the cap of the auto-IOVA alignment. */
const HPAGE = 2n * 1024n * 1024n;
/** xa_limit_16b: the access-list id space of one IOAS. */
const MAX_ACCESS_ID = 65535;
/** Unmap retries on an area whose accesses keep their pins. */
const UNMAP_MAX_TRIES = 100;

/**
 * Who owns a reserved range: a domain (its aperture holes), a device (its reserved regions;
 * pass the device object) or null (IOMMU_TEST_OP_ADD_RESERVED, removed only at IOAS destroy).
 */
export type ReservedOwner = object | null;

/** enum iommu_resv_type (include/linux/iommu.h). */
export const IommuResvType = {
  DIRECT: 0,
  DIRECT_RELAXABLE: 1,
  RESERVED: 2,
  MSI: 3,
  SW_MSI: 4,
} as const;
export type IommuResvTypeValue = (typeof IommuResvType)[keyof typeof IommuResvType];

/** One IOMMU reserved region of a device (struct iommu_resv_region). */
export interface DeviceReservedRegion {
  start: bigint;
  length: bigint;
  type: IommuResvTypeValue;
}

/** An inclusive IOVA range. */
export interface IovaRange {
  start: bigint;
  last: bigint;
}

/** What io_pagetable needs from an attached in-kernel access (implemented in access.ts). */
export interface IoptAccess {
  /** 1, or PAGE when the access pins pages (or is internal). */
  readonly iovaAlignment: number;
  /** Internal accesses (HW queue) are never told to unmap. */
  readonly internal: boolean;
  /** Asked to drop every pin in [iova, iova + length) (the driver's unmap callback). */
  notifyUnmap(iova: bigint, length: bigint): void;
}

/** A slice of an iopt_pages to map: what MAP builds and COPY collects (iopt_pages_list). */
export interface PagesPiece {
  pages: IoptPages;
  /** Byte offset of the slice from the page-aligned start of `pages`. */
  startByte: bigint;
  length: bigint;
}

/** One mapped IOVA range (struct iopt_area). */
export class IoptArea {
  iova: bigint;
  last: bigint;
  /** Null while the area is being created or torn down (it still occupies its IOVAs). */
  pages: IoptPages | null = null;
  /** Byte offset of the first IOVA inside its first page. */
  pageOffset = 0;
  /** Page-index range [index, lastIndex] inside `pages` (the pages_node). */
  index = 0;
  lastIndex = 0;
  /** IOMMU_CACHE plus READ / WRITE per the map flags. */
  iommuProt = 0;
  /** The domain whose mapping holds this area's PFNs; null when no domain is attached. */
  storageDomain: IommuPagingDomain | null = null;
  /** Set while an unmap waits for the accesses to let go. */
  preventAccess = false;
  /** Access pins on this area, one per pin call. */
  numAccesses = 0;
  /** Of those, pins by internal accesses (HW queues): the area cannot be unmapped. */
  numLocks = 0;

  constructor(iova: bigint, last: bigint) {
    this.iova = iova;
    this.last = last;
  }

  get length(): bigint {
    return this.last - this.iova + 1n;
  }

  /** iopt_area_start_byte: byte offset of `iova` from the page-aligned start of the pages. */
  startByte(iova: bigint): bigint {
    return iova - this.iova + BigInt(this.pageOffset) + BigInt(this.index) * PAGE;
  }

  /** iopt_area_iova_to_index. */
  iovaToIndex(iova: bigint): number {
    return Number(this.startByte(iova) / PAGE);
  }
}

/** One step of a contiguous-area walk: `area` covers [cur, last]. */
export interface ContigPiece {
  area: IoptArea;
  cur: bigint;
  last: bigint;
}

interface Reserved {
  start: bigint;
  last: bigint;
  owner: ReservedOwner;
}

function intersects(aStart: bigint, aLast: bigint, bStart: bigint, bLast: bigint): boolean {
  return aStart <= bLast && bStart <= aLast;
}

function lowestBit(x: bigint): bigint {
  return x & -x;
}

function roundupPow2(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}

/**
 * Merges intervals (overlapping or adjacent: the interval-tree span iterator treats
 * next.start == last + 1 as one span) clipped to [first, last], ascending.
 */
function usedSpans(ranges: readonly IovaRange[], first: bigint, last: bigint): IovaRange[] {
  const inWindow = ranges
    .filter((r) => intersects(r.start, r.last, first, last))
    .map((r) => ({ start: r.start < first ? first : r.start, last: r.last > last ? last : r.last }))
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: IovaRange[] = [];
  for (const r of inWindow) {
    const prev = out[out.length - 1];
    if (prev !== undefined && r.start <= prev.last + 1n) {
      if (r.last > prev.last) prev.last = r.last;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/** The maximal holes of the union of `ranges` inside [first, last], ascending. */
function holeSpans(ranges: readonly IovaRange[], first: bigint, last: bigint): IovaRange[] {
  const out: IovaRange[] = [];
  let cur = first;
  for (const u of usedSpans(ranges, first, last)) {
    if (u.start > cur) out.push({ start: cur, last: u.start - 1n });
    if (u.last >= last) return out;
    cur = u.last + 1n;
  }
  out.push({ start: cur, last });
  return out;
}

export class IoPagetable {
  private readonly faults: Faults;
  /** Areas sorted by IOVA (non-overlapping). */
  private readonly areaList: IoptArea[] = [];
  private readonly reservedList: Reserved[] = [];
  private allowedList: IovaRange[] = [];
  private readonly domainList: IommuPagingDomain[] = [];
  private readonly accessList = new Map<number, IoptAccess>();
  private alignment = 1;
  private largePagesDisabled = false;

  constructor(faults: Pick<FailNth, "shouldFail">) {
    this.faults = faults;
  }

  // ---- read-only views ------------------------------------------------------------------------

  /**
   * iova_alignment: the IOAS's current IOVA alignment in bytes (§4): 1 with no domain and no
   * pinning access, the largest minimum page size of the attached domains, PAGE when large
   * pages are disabled or a pinning access is attached. Never more than PAGE (4096).
   */
  get iovaAlignment(): number {
    return this.alignment;
  }

  /** disable_large_pages (IOMMU_OPTION_HUGE_PAGES = 0, VFIO type1 v1). */
  get disableLargePages(): boolean {
    return this.largePagesDisabled;
  }

  /** The attached domains, index 0 first (dense; removal moves the last into the hole). */
  get domains(): readonly IommuPagingDomain[] {
    return this.domainList;
  }

  /** Every area, in IOVA order (including ones whose pages are null). */
  get areas(): readonly IoptArea[] {
    return this.areaList;
  }

  /** The allowed ranges as set by ALLOW_IOVAS (empty: everything allowed). */
  get allowed(): readonly IovaRange[] {
    return this.allowedList;
  }

  /** The reserved ranges with their owners (a multiset; ranges may overlap). */
  get reserved(): readonly { start: bigint; last: bigint; owner: ReservedOwner }[] {
    return this.reservedList;
  }

  /** The attached accesses by access-list id. */
  get accesses(): ReadonlyMap<number, IoptAccess> {
    return this.accessList;
  }

  /** The first area intersecting [start, last] (iopt_area_iter_first), or undefined. */
  areaIterFirst(start: bigint, last: bigint): IoptArea | undefined {
    const a = this.areaList[this.firstAreaIndex(start)];
    return a !== undefined && a.iova <= last ? a : undefined;
  }

  /** Every area intersecting [start, last], in IOVA order. */
  areasIn(start: bigint, last: bigint): IoptArea[] {
    const out: IoptArea[] = [];
    for (let i = this.firstAreaIndex(start); i < this.areaList.length; i++) {
      const a = this.areaList[i];
      if (a.iova > last) break;
      out.push(a);
    }
    return out;
  }

  /**
   * iopt_for_each_contig_area over [iova, last]: the areas that cover it without a gap,
   * starting at the one holding `iova`, stopping at a hole or a null-pages area. `done` is
   * iopt_area_contig_done: the walk reached `last`.
   */
  contigAreas(iova: bigint, last: bigint): { pieces: ContigPiece[]; done: boolean } {
    const pieces: ContigPiece[] = [];
    let cur = iova;
    let area = this.areaIterFirst(cur, cur);
    while (area?.pages) {
      pieces.push({ area, cur, last: area.last < last ? area.last : last });
      if (area.last >= last) return { pieces, done: true };
      cur = area.last + 1n;
      const next = this.areaIterFirst(cur, last);
      if (next === undefined || next.iova !== cur) break;
      area = next;
    }
    return { pieces, done: false };
  }

  /**
   * The holes of the reserved set over [0, ULONG_MAX], ascending: what IOMMU_IOAS_IOVA_RANGES
   * reports (§8.3). Areas and allowed ranges do not affect it.
   */
  iovaRanges(): IovaRange[] {
    return holeSpans(this.reservedList, 0n, ULONG_MAX);
  }

  // ---- reserved and allowed ranges ------------------------------------------------------------

  /**
   * iopt_reserve_iova (§5.2): adds [start, last] owned by `owner`. EADDRINUSE if it intersects
   * an area or an allowed range; overlapping other reserved ranges is fine. Throws ErrnoError.
   */
  reserveIova(start: bigint, last: bigint, owner: ReservedOwner): void {
    if (this.areaIterFirst(start, last) !== undefined)
      throw new ErrnoError(EADDRINUSE, "reserved range intersects a mapped area");
    if (this.allowedList.some((r) => intersects(r.start, r.last, start, last)))
      throw new ErrnoError(EADDRINUSE, "reserved range intersects an allowed range");
    this.reservedList.push({ start, last, owner });
  }

  /** iopt_remove_reserved_iova: removes every reserved range owned by `owner`. */
  removeReserved(owner: ReservedOwner): void {
    for (let i = this.reservedList.length - 1; i >= 0; i--)
      if (this.reservedList[i].owner === owner) this.reservedList.splice(i, 1);
  }

  /**
   * iopt_table_enforce_dev_resv_regions (hwpt-device.md §7): a fault-injection site (EINVAL)
   * first; then reserves each region except DIRECT_RELAXABLE with `owner`. With
   * `wantSwMsi`, counts MSI / SW_MSI regions (both kinds, or two SW_MSI: EINVAL) and returns
   * the SW_MSI start (undefined if none). On error every range `owner` holds is removed.
   * Throws ErrnoError.
   */
  enforceDeviceReservedRegions(
    owner: object,
    regions: readonly DeviceReservedRegion[],
    wantSwMsi: boolean,
  ): bigint | undefined {
    if (this.faults.shouldFail("iopt_table_enforce_dev_resv_regions"))
      throw new ErrnoError(EINVAL, "injected reserved-region failure");
    let numHwMsi = 0;
    let numSwMsi = 0;
    let swMsiStart: bigint | undefined;
    try {
      for (const r of regions) {
        if (r.type === IommuResvType.DIRECT_RELAXABLE) continue;
        if (wantSwMsi && r.type === IommuResvType.MSI) numHwMsi++;
        if (wantSwMsi && r.type === IommuResvType.SW_MSI) {
          swMsiStart = r.start;
          numSwMsi++;
        }
        this.reserveIova(r.start, r.start + r.length - 1n, owner);
      }
      if ((numSwMsi && numHwMsi) || numSwMsi > 1)
        throw new ErrnoError(EINVAL, "device reports inconsistent MSI regions");
    } catch (e) {
      this.removeReserved(owner);
      throw e;
    }
    return swMsiStart;
  }

  /**
   * iopt_set_allow_iova: replaces the allowed set (already validated: each start < last, no
   * overlaps). EADDRINUSE, keeping the old set, if a new range intersects a reserved one.
   */
  setAllowed(ranges: readonly IovaRange[]): void {
    for (const r of ranges)
      if (this.reservedList.some((x) => intersects(x.start, x.last, r.start, r.last)))
        throw new ErrnoError(EADDRINUSE, "allowed range intersects a reserved range");
    this.allowedList = ranges.map((r) => ({ start: r.start, last: r.last }));
  }

  // ---- alignment ------------------------------------------------------------------------------

  /** iopt_check_iova_alignment: every area (and, in test builds, access) fits `align`. */
  private checkAlignment(align: number): void {
    const mask = BigInt(align - 1);
    for (const a of this.areaList) {
      if ((a.iova & mask) !== 0n || (a.length & mask) !== 0n || (a.pageOffset & (align - 1)) !== 0)
        throw new ErrnoError(
          EADDRINUSE,
          `area at 0x${a.iova.toString(16)} is not ${align}-aligned`,
        );
    }
    for (const acc of this.accessList.values())
      if (acc.iovaAlignment > align)
        throw new ErrnoError(EADDRINUSE, "an access needs a larger alignment");
  }

  /** iopt_calculate_iova_alignment (§4). EADDRINUSE when an increase does not fit the areas. */
  private recalcAlignment(): void {
    let align = this.largePagesDisabled ? PAGE_SIZE : 1;
    for (const d of this.domainList) {
      const min = Number(lowestBit(d.pgsizeBitmap));
      if (min > align) align = min;
    }
    for (const acc of this.accessList.values())
      if (acc.iovaAlignment > align) align = acc.iovaAlignment;
    if (align > this.alignment) this.checkAlignment(align);
    this.alignment = align;
  }

  /**
   * iopt_disable_large_pages (HUGE_PAGES = 0): no-op when already disabled; EINVAL when the
   * IOAS has both a domain and an area; EADDRINUSE (flag restored) when an area does not fit
   * the PAGE alignment. Throws ErrnoError.
   */
  setLargePagesDisabled(): void {
    if (this.largePagesDisabled) return;
    if (this.domainList.length !== 0 && this.areaList.length !== 0)
      throw new ErrnoError(EINVAL, "domains already hold mappings");
    this.largePagesDisabled = true;
    try {
      this.recalcAlignment();
    } catch (e) {
      this.largePagesDisabled = false;
      throw e;
    }
  }

  /** iopt_enable_large_pages (HUGE_PAGES = 1): the alignment can only shrink. Never fails. */
  setLargePagesEnabled(): void {
    this.largePagesDisabled = false;
    this.recalcAlignment();
  }

  // ---- IOVA allocation ------------------------------------------------------------------------

  /**
   * iopt_alloc_iova (§6): the lowest suitable IOVA for `length` bytes whose source address
   * is `addr`. EOVERFLOW (length 0 or >= ULONG_MAX / 2), EINVAL (alignment below the IOAS's),
   * ENOSPC. Throws ErrnoError.
   */
  allocIova(addr: bigint, length: bigint): bigint {
    if (length === 0n || length >= ULONG_MAX / 2n)
      throw new ErrnoError(EOVERFLOW, "length too large to allocate");
    let align = roundupPow2(length);
    if (addr !== 0n) {
      const low = lowestBit(addr);
      if (low < align) align = low;
    }
    if (align >= HPAGE) align = HPAGE;
    if (align < BigInt(this.alignment))
      throw new ErrnoError(EINVAL, "allocation alignment below the IOAS alignment");
    const pageOffset = addr % PAGE;
    const fit = (start: bigint, last: bigint): bigint | undefined => {
      const up = start + align - 1n;
      if (up > ULONG_MAX) return undefined;
      const aligned = (up & ~(align - 1n)) | pageOffset;
      if (aligned >= last || last - aligned < length - 1n) return undefined;
      return aligned;
    };
    const spans =
      this.allowedList.length === 0
        ? [{ start: PAGE, last: ULONG_MAX - PAGE }]
        : usedSpans(this.allowedList, PAGE, ULONG_MAX - PAGE);
    for (const span of spans) {
      const start = fit(span.start, span.last);
      if (start === undefined) continue;
      const used: IovaRange[] = [...this.reservedList];
      for (const a of this.areasIn(start, span.last)) used.push({ start: a.iova, last: a.last });
      for (const hole of holeSpans(used, start, span.last)) {
        const iova = fit(hole.start, hole.last);
        if (iova !== undefined) return iova;
      }
    }
    throw new ErrnoError(ENOSPC, "no free IOVA range");
  }

  /**
   * iopt_check_iova (§7.1 step 3): EINVAL misaligned, EOVERFLOW wrap, EINVAL reserved,
   * EEXIST already mapped. Throws ErrnoError.
   */
  checkIova(iova: bigint, length: bigint): void {
    if ((iova & BigInt(this.alignment - 1)) !== 0n)
      throw new ErrnoError(EINVAL, "IOVA is not aligned to the IOAS alignment");
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "iova + length overflows");
    if (this.reservedList.some((r) => intersects(r.start, r.last, iova, last)))
      throw new ErrnoError(EINVAL, "range intersects a reserved range");
    if (this.areaIterFirst(iova, last) !== undefined)
      throw new ErrnoError(EEXIST, "range is already mapped");
  }

  // ---- mapping --------------------------------------------------------------------------------

  /**
   * iopt_map_pages (§7.1): one area per piece at consecutive IOVAs starting at `iova`, or at
   * an allocated IOVA when `iova` is undefined; each attached domain is filled (pinning).
   * Returns the IOVA. On success the pieces' page references move into the areas; on error
   * nothing changed and the caller still owns them. Throws ErrnoError.
   */
  mapPages(
    pieces: readonly PagesPiece[],
    length: bigint,
    iova: bigint | undefined,
    iommuProt: number,
  ): bigint {
    const areas = pieces.map(() => {
      if (this.faults.shouldFail("iopt_area_alloc"))
        throw new ErrnoError(ENOMEM, "area allocation failed");
      return new IoptArea(0n, 0n);
    });
    if (length === 0n || (length & BigInt(this.alignment - 1)) !== 0n)
      throw new ErrnoError(EINVAL, "length is zero or not aligned to the IOAS alignment");
    let dst: bigint;
    if (iova === undefined) {
      const first = pieces[0];
      dst = this.allocIova(first.pages.sourceAddress(first.startByte), length);
      try {
        this.checkIova(dst, length);
      } catch {
        throw new ErrnoError(EINVAL, "allocator returned an unusable IOVA");
      }
    } else {
      this.checkIova(iova, length);
      dst = iova;
    }
    const inserted: IoptArea[] = [];
    const filled: IoptArea[] = [];
    try {
      let cur = dst;
      for (let i = 0; i < pieces.length; i++) {
        this.insertArea(areas[i], pieces[i], cur, iommuProt);
        inserted.push(areas[i]);
        cur += pieces[i].length;
      }
      for (let i = 0; i < pieces.length; i++) {
        this.fillDomainsOfNewArea(areas[i], pieces[i].pages);
        filled.push(areas[i]);
      }
    } catch (e) {
      for (let i = 0; i < filled.length; i++) this.unfillDomains(filled[i], pieces[i].pages);
      for (const a of inserted) this.removeAreaFromList(a);
      throw e;
    }
    for (let i = 0; i < pieces.length; i++) areas[i].pages = pieces[i].pages;
    return dst;
  }

  /**
   * iopt_map_user_pages / iopt_map_file_pages' common tail (iopt_map_common): upgrades USER
   * accounting to MM when the context is in MM mode, then maps. On error the pages reference
   * is dropped. Returns the IOVA. Throws ErrnoError.
   */
  mapCommon(
    pages: IoptPages,
    ctxAccountMm: boolean,
    iova: bigint | undefined,
    startByte: bigint,
    length: bigint,
    iommuProt: number,
  ): bigint {
    if (ctxAccountMm && pages.accountMode === AccountMode.USER) pages.accountMode = AccountMode.MM;
    try {
      return this.mapPages([{ pages, startByte, length }], length, iova, iommuProt);
    } catch (e) {
      pages.put();
      throw e;
    }
  }

  /** iopt_insert_area: the per-piece checks, then the area goes in with null pages. */
  private insertArea(area: IoptArea, piece: PagesPiece, iova: bigint, iommuProt: number): void {
    const { pages, startByte, length } = piece;
    if (iommuProt & IOMMU_WRITE && !pages.writable)
      throw new ErrnoError(EPERM, "writable mapping of read-only pages");
    area.iommuProt = iommuProt;
    area.pageOffset = Number(startByte % PAGE);
    if ((area.pageOffset & (this.alignment - 1)) !== 0)
      throw new ErrnoError(EINVAL, "page offset is not aligned to the IOAS alignment");
    area.iova = iova;
    area.last = iova + length - 1n;
    if (area.last > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "area IOVA overflows");
    area.index = Number(startByte / PAGE);
    const lastByte = startByte + length - 1n;
    if (lastByte > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "area bytes overflow");
    area.lastIndex = Number(lastByte / PAGE);
    if (area.lastIndex >= pages.npages) throw new ErrnoError(EOVERFLOW, "area past its pages");
    this.areaList.splice(this.firstAreaIndex(iova), 0, area);
  }

  private removeAreaFromList(area: IoptArea): void {
    const i = this.areaList.indexOf(area);
    if (i >= 0) this.areaList.splice(i, 1);
  }

  /** Index of the first area whose last IOVA is >= `iova`. */
  private firstAreaIndex(iova: bigint): number {
    let lo = 0;
    let hi = this.areaList.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.areaList[mid].last < iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  // ---- domains --------------------------------------------------------------------------------

  /**
   * Maps `area` into `domain` with the pages of its index range (batch_to_domain): runs of
   * consecutive PFNs become one map call each, the first offset by page_offset and the last
   * clipped at the area's end; with large pages disabled, one PAGE per call. `prot` is the
   * area's unless the batch is MMIO (dma-buf). On error the part mapped here is unmapped again.
   */
  private mapArea(
    area: IoptArea,
    domain: IommuPagingDomain,
    pages: readonly PagePfn[],
    prot: number = area.iommuProt,
  ): void {
    const n = pages.length;
    const areaEnd = area.last + 1n;
    let iova = area.iova;
    try {
      let k = 0;
      while (k < n) {
        let j = k;
        if (!this.largePagesDisabled)
          while (j + 1 < n && pages[j + 1].pfn === pages[j].pfn + 1) j++;
        const off = k === 0 ? area.pageOffset : 0;
        let next = iova + BigInt((j - k + 1) * PAGE_SIZE - off);
        if (next > areaEnd) next = areaEnd;
        const pa = pages[k].pfn * PAGE_SIZE + off;
        if (this.largePagesDisabled) this.mapSmallest(domain, iova, pa, next - iova, prot);
        else domain.map(iova, pa, next - iova, prot);
        iova = next;
        k = j + 1;
      }
    } catch (e) {
      if (iova !== area.iova) domain.unmap(area.iova, iova - area.iova);
      throw e;
    }
  }

  /**
   * With large pages disabled every piece goes into the domain in its smallest page size
   * (batch_iommu_map_small). Where that is below PAGE_SIZE (the selftest mock's 2 KiB), each
   * small page is its own leaf, so dirty tracking sees each one separately: the selftest's
   * non-huge dirty fixture sets HUGE_PAGES = 0 for exactly that and expects 2 KiB dirty bits.
   */
  private mapSmallest(
    domain: IommuPagingDomain,
    iova: bigint,
    pa: number,
    length: bigint,
    prot: number,
  ): void {
    const step = Number(lowestBit(domain.pgsizeBitmap));
    if (step >= PAGE_SIZE || iova % BigInt(step) !== 0n || length % BigInt(step) !== 0n) {
      domain.map(iova, pa, length, prot);
      return;
    }
    const stepBig = BigInt(step);
    let done = 0n;
    try {
      for (; done < length; done += stepBig)
        domain.map(iova + done, pa + Number(done), stepBig, prot);
    } catch (e) {
      if (done !== 0n) domain.unmap(iova, done);
      throw e;
    }
  }

  /** The held pages of an area that is already in some domain (its storage). */
  private heldPagesOf(area: IoptArea, pages: IoptPages): UserPage[] {
    const out: UserPage[] = new Array(area.lastIndex - area.index + 1);
    for (let i = area.index; i <= area.lastIndex; i++) {
      const p = pages.pageAt(i);
      if (p === undefined) throw new Error(`area index ${i} is in a domain but not held`);
      out[i - area.index] = p;
    }
    return out;
  }

  /**
   * iopt_area_fill_domains: a new area goes into every attached domain; the area becomes a
   * holder of its page range (the domains_itree) and domain 0 its storage.
   */
  private fillDomainsOfNewArea(area: IoptArea, pages: IoptPages): void {
    if (this.domainList.length === 0) return;
    if (pages.type === IoptAddress.DMABUF) {
      this.fillDomainsOfNewDmabufArea(area, pages);
      return;
    }
    const list = pages.hold(area.index, area.lastIndex, this.faults);
    const mapped: IommuPagingDomain[] = [];
    try {
      for (const d of this.domainList) {
        this.mapArea(area, d, list);
        mapped.push(d);
      }
      pages.commitPinned(this.faults);
    } catch (e) {
      for (const d of mapped) d.unmap(area.iova, area.length);
      pages.drop(area.index, area.lastIndex);
      throw e;
    }
    area.storageDomain = this.domainList[0];
  }

  /**
   * iopt_area_fill_domains for dma-buf pages: every domain is tracked first (ENOMEM), then,
   * unless the buffer was revoked, the exporter's PFNs are mapped into each domain as MMIO
   * (ENOMEM for the batch, the domain's map errors). All or nothing; nothing is pinned.
   */
  private fillDomainsOfNewDmabufArea(area: IoptArea, pages: IoptPages): void {
    try {
      for (const d of this.domainList) pages.trackDomain(area, d, this.faults);
      if (!pages.dmabufRevoked) {
        const pfns = this.readDmabuf(area, pages);
        const mapped: IommuPagingDomain[] = [];
        try {
          for (const d of this.domainList) {
            this.mapArea(area, d, pfns, mmioProt(area.iommuProt));
            mapped.push(d);
          }
        } catch (e) {
          for (const d of mapped) d.unmap(area.iova, area.length);
          throw e;
        }
      }
    } catch (e) {
      pages.untrackArea(area);
      throw e;
    }
    area.storageDomain = this.domainList[0];
  }

  /**
   * pfn_reader_first over a dma-buf area: the reader's batch (an injection site, ENOMEM) and
   * the PFNs of the area's indexes. Only for pages that are not revoked.
   */
  private readDmabuf(area: IoptArea, pages: IoptPages): PagePfn[] {
    if (this.faults.shouldFail("pfn_batch_alloc"))
      throw new ErrnoError(ENOMEM, "batch allocation failed");
    return pages.dmabufPages(area.index, area.lastIndex);
  }

  /**
   * iopt_area_fill_domain of a dma-buf area into one more domain (iopt_fill_domain's dma-buf
   * branch): tracked first, mapped unless revoked; on error untracked again. Throws ErrnoError.
   */
  private fillDmabufArea(area: IoptArea, pages: IoptPages, domain: IommuPagingDomain): void {
    pages.trackDomain(area, domain, this.faults);
    try {
      if (!pages.dmabufRevoked)
        this.mapArea(area, domain, this.readDmabuf(area, pages), mmioProt(area.iommuProt));
    } catch (e) {
      pages.untrackDomain(area, domain);
      throw e;
    }
  }

  /** Unmaps a dma-buf area from `domain` (unless revoked: nothing is mapped) and untracks it. */
  private unfillDmabufArea(area: IoptArea, pages: IoptPages, domain: IommuPagingDomain): void {
    if (!pages.dmabufRevoked) domain.unmap(area.iova, area.length);
    pages.untrackDomain(area, domain);
  }

  /** iopt_area_unfill_domains: unmaps the area from every domain and releases its holds. */
  private unfillDomains(area: IoptArea, pages: IoptPages): void {
    const storage = area.storageDomain;
    if (storage === null) return;
    if (pages.type === IoptAddress.DMABUF) {
      if (!pages.dmabufRevoked) for (const d of this.domainList) d.unmap(area.iova, area.length);
      pages.untrackArea(area);
      area.storageDomain = null;
      return;
    }
    for (const d of this.domainList) if (d !== storage) d.unmap(area.iova, area.length);
    storage.unmap(area.iova, area.length);
    pages.drop(area.index, area.lastIndex);
    area.storageDomain = null;
  }

  /**
   * iopt_table_add_domain (§11.1): checks the alignment (EINVAL above PAGE, EADDRINUSE when a
   * larger one does not fit existing areas), reserves the aperture's outside (owner: the
   * domain; EADDRINUSE), maps every area into it (pinning when it is the first domain: EFAULT,
   * ENOMEM, EINVAL from file pins), then commits. EEXIST if already added. On any failure the
   * io_pagetable is exactly as before. Throws ErrnoError.
   */
  addDomain(domain: IommuPagingDomain): void {
    if (this.domainList.includes(domain)) throw new ErrnoError(EEXIST, "domain already added");
    const min = Number(lowestBit(domain.pgsizeBitmap));
    const align = Math.max(min, this.alignment);
    if (align > PAGE_SIZE) throw new ErrnoError(EINVAL, "domain's smallest page exceeds PAGE");
    if (align !== this.alignment) this.checkAlignment(align);
    try {
      if (domain.apertureStart !== 0n) this.reserveIova(0n, domain.apertureStart - 1n, domain);
      if (domain.apertureLast !== ULONG_MAX)
        this.reserveIova(domain.apertureLast + 1n, ULONG_MAX, domain);
      if (this.faults.shouldFail("iopt_domains_reserve"))
        throw new ErrnoError(ENOMEM, "domain slot allocation failed");
      this.fillDomain(domain);
    } catch (e) {
      this.removeReserved(domain);
      throw e;
    }
    this.alignment = align;
    this.domainList.push(domain);
  }

  /** iopt_fill_domain: every area with pages into `domain`; undone completely on failure. */
  private fillDomain(domain: IommuPagingDomain): void {
    const first = this.domainList.length === 0;
    const done: IoptArea[] = [];
    try {
      for (const area of this.areaList) {
        const pages = area.pages;
        if (pages === null) continue;
        if (pages.type === IoptAddress.DMABUF) {
          this.fillDmabufArea(area, pages, domain);
          if (first) area.storageDomain = domain;
        } else if (first) {
          const list = pages.hold(area.index, area.lastIndex, this.faults);
          try {
            this.mapArea(area, domain, list);
          } catch (e) {
            pages.drop(area.index, area.lastIndex);
            throw e;
          }
          try {
            pages.commitPinned(this.faults);
          } catch (e) {
            domain.unmap(area.iova, area.length);
            pages.drop(area.index, area.lastIndex);
            throw e;
          }
          area.storageDomain = domain;
        } else {
          this.mapArea(area, domain, this.heldPagesOf(area, pages));
        }
        done.push(area);
      }
    } catch (e) {
      for (const area of done) {
        const pages = area.pages;
        if (pages === null) continue;
        if (first) area.storageDomain = null;
        if (pages.type === IoptAddress.DMABUF) {
          this.unfillDmabufArea(area, pages, domain);
          continue;
        }
        domain.unmap(area.iova, area.length);
        if (first) pages.drop(area.index, area.lastIndex);
      }
      throw e;
    }
  }

  /**
   * iopt_table_remove_domain (§11.3): unmaps every area from it (unpinning when it was the last
   * domain; accesses keep theirs), drops the reservations it owns, recomputes the alignment.
   * Never fails. Does not free the domain.
   */
  removeDomain(domain: IommuPagingDomain): void {
    const idx = this.domainList.indexOf(domain);
    if (idx < 0) return;
    const tail = this.domainList.pop()!;
    if (idx < this.domainList.length) this.domainList[idx] = tail;
    if (this.domainList.length !== 0) {
      const storage = this.domainList[0];
      for (const area of this.areaList) {
        const pages = area.pages;
        if (pages === null) continue;
        if (area.storageDomain === domain) area.storageDomain = storage;
        if (pages.type === IoptAddress.DMABUF) this.unfillDmabufArea(area, pages, domain);
        else domain.unmap(area.iova, area.length);
      }
    } else {
      for (const area of this.areaList) {
        const pages = area.pages;
        if (pages === null) continue;
        area.storageDomain = null;
        if (pages.type === IoptAddress.DMABUF) {
          this.unfillDmabufArea(area, pages, domain);
          continue;
        }
        domain.unmap(area.iova, area.length);
        pages.drop(area.index, area.lastIndex);
      }
    }
    this.removeReserved(domain);
    try {
      this.recalcAlignment();
    } catch {
      // Cannot grow when a domain goes away (the kernel WARNs).
    }
  }

  // ---- unmap ----------------------------------------------------------------------------------

  /**
   * iopt_unmap_iova_range over [start, last] (§8.7 step 4): removes every area inside it,
   * lowest first. EBUSY (area being built or locked by a HW queue), ENOENT (an area sticks out
   * of the range), EDEADLOCK (an access keeps its pins after 100 unmap notices). Areas removed
   * before an error stay removed. Returns the bytes unmapped (0n when nothing was there).
   */
  unmapRange(start: bigint, last: bigint): bigint {
    let unmapped = 0n;
    let tries = 0;
    let from = start;
    for (;;) {
      const area = this.areaIterFirst(from, last);
      if (area === undefined) break;
      if (area.pages === null) throw new ErrnoError(EBUSY, "area is being created");
      if (area.numLocks !== 0) throw new ErrnoError(EBUSY, "area is locked by a HW queue");
      if (area.iova < from || area.last > last)
        throw new ErrnoError(ENOENT, "range splits a mapped area");
      if (area.iova !== from) tries = 0;
      if (area.numAccesses !== 0) {
        from = area.iova;
        area.preventAccess = true;
        this.notifyAccesses(area.iova, area.length);
        if (++tries > UNMAP_MAX_TRIES)
          throw new ErrnoError(EDEADLOCK, "an access does not release its pins");
        continue;
      }
      const pages = area.pages;
      area.pages = null;
      this.unfillDomains(area, pages);
      this.removeAreaFromList(area);
      pages.put();
      unmapped += area.length;
      if (area.last >= last) break;
      from = area.last + 1n;
    }
    return unmapped;
  }

  /** iopt_unmap_iova: EINVAL for length 0, EOVERFLOW on wrap, then unmapRange. */
  unmapIova(iova: bigint, length: bigint): bigint {
    if (length === 0n) throw new ErrnoError(EINVAL, "unmap of zero bytes");
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "iova + length overflows");
    return this.unmapRange(iova, last);
  }

  /** iopt_unmap_all: succeeds with 0n on an empty IOAS. */
  unmapAll(): bigint {
    return this.unmapRange(0n, ULONG_MAX);
  }

  /** iommufd_access_notify_unmap: every non-internal access, in id order. */
  private notifyAccesses(iova: bigint, length: bigint): void {
    const ids = [...this.accessList.keys()].sort((a, b) => a - b);
    for (const id of ids) {
      const acc = this.accessList.get(id);
      if (acc !== undefined && !acc.internal) acc.notifyUnmap(iova, length);
    }
  }

  /**
   * iopt_get_pages (COPY's source side): the pages slices covering [iova, iova + length),
   * each with a new reference. EINVAL (length 0), EOVERFLOW, ENOENT (not fully covered by
   * contiguous areas with pages). Throws ErrnoError.
   */
  getPages(iova: bigint, length: bigint): PagesPiece[] {
    if (length === 0n) throw new ErrnoError(EINVAL, "copy of zero bytes");
    const last = iova + length - 1n;
    if (last > ULONG_MAX) throw new ErrnoError(EOVERFLOW, "src_iova + length overflows");
    const { pieces, done } = this.contigAreas(iova, last);
    if (!done) throw new ErrnoError(ENOENT, "source range is not fully mapped");
    const out: PagesPiece[] = [];
    try {
      for (const p of pieces) {
        if (this.faults.shouldFail("iopt_pages_list_alloc"))
          throw new ErrnoError(ENOMEM, "pages list allocation failed");
        const pages = p.area.pages!;
        pages.get();
        out.push({ pages, startByte: p.area.startByte(p.cur), length: p.last - p.cur + 1n });
      }
    } catch (e) {
      for (const x of out) x.pages.put();
      throw e;
    }
    return out;
  }

  /**
   * iopt_cut_iova (VFIO type1 compat, §14): splits the area holding each IOVA so that the
   * IOVA becomes the last byte of the left part. IOVAs outside areas, or at an area's edge,
   * are skipped. EBUSY, EINVAL (alignment, access pins, large pages in a domain), ENOMEM.
   * Stops at the first error (earlier splits stay). Throws ErrnoError.
   */
  cutIova(iovas: readonly bigint[]): void {
    for (const iova of iovas) {
      const area = this.areaIterFirst(iova, iova);
      if (area !== undefined) this.splitArea(area, iova);
    }
  }

  private splitArea(area: IoptArea, iova: bigint): void {
    if (iova === area.iova || iova === area.last) return;
    const pages = area.pages;
    if (pages === null || area.preventAccess) throw new ErrnoError(EBUSY, "area is busy");
    // The per-area dma-buf tracking would have to be split too; the kernel refuses instead.
    if (pages.type === IoptAddress.DMABUF)
      throw new ErrnoError(EOPNOTSUPP, "cannot split a dma-buf area");
    const newStart = iova + 1n;
    const mask = BigInt(this.alignment - 1);
    if ((newStart & mask) !== 0n || (area.startByte(newStart) & mask) !== 0n)
      throw new ErrnoError(EINVAL, "split point is not aligned");
    for (let i = 0; i < 2; i++)
      if (this.faults.shouldFail("iopt_area_alloc"))
        throw new ErrnoError(ENOMEM, "area allocation failed");
    if (area.numAccesses !== 0) throw new ErrnoError(EINVAL, "area has access pins");
    if (area.storageDomain !== null && !this.largePagesDisabled)
      throw new ErrnoError(EINVAL, "area may be mapped with large pages");
    const lhs = new IoptArea(area.iova, iova);
    const rhs = new IoptArea(newStart, area.last);
    for (const part of [lhs, rhs]) {
      part.iommuProt = area.iommuProt;
      const sb = area.startByte(part.iova);
      part.pageOffset = Number(sb % PAGE);
      part.index = Number(sb / PAGE);
      part.lastIndex = Number((sb + part.length - 1n) / PAGE);
      part.storageDomain = area.storageDomain;
      part.pages = pages;
    }
    // Each half is a holder of its own range in the domains tree; the old area's hold goes.
    if (area.storageDomain !== null) {
      pages.hold(lhs.index, lhs.lastIndex, this.faults);
      pages.hold(rhs.index, rhs.lastIndex, this.faults);
      pages.drop(area.index, area.lastIndex);
    }
    pages.get();
    const i = this.areaList.indexOf(area);
    this.areaList.splice(i, 1, lhs, rhs);
  }

  // ---- accesses -------------------------------------------------------------------------------

  /**
   * iopt_add_access: lowest free id in [0, 65535] (EBUSY when full), then the alignment is
   * recomputed (EADDRINUSE when an area does not fit; the access is not added). Returns the
   * id. Throws ErrnoError.
   */
  addAccess(access: IoptAccess): number {
    let id = 0;
    while (this.accessList.has(id)) id++;
    if (id > MAX_ACCESS_ID) throw new ErrnoError(EBUSY, "no free access id");
    if (this.faults.shouldFail("iopt_access_list_alloc"))
      throw new ErrnoError(ENOMEM, "access list allocation failed");
    this.accessList.set(id, access);
    try {
      this.recalcAlignment();
    } catch (e) {
      this.accessList.delete(id);
      throw e;
    }
    return id;
  }

  /** iopt_remove_access: forgets the access and recomputes the alignment. */
  removeAccess(id: number): void {
    this.accessList.delete(id);
    try {
      this.recalcAlignment();
    } catch {
      // Removing an access cannot raise the alignment.
    }
  }

  /**
   * The io_pagetable half of iommufd_access_pin_pages (§12.3 steps 4-6) over [iova, last]:
   * per area EINVAL (unmap pending, not page aligned), EPERM (protection, read-only pages),
   * EINVAL (dma-buf pages), pin errors; ENOENT when not fully covered. Internal pins lock the
   * areas. On error every pin made here is undone. Returns the pages in order. Throws ErrnoError.
   */
  pinPages(iova: bigint, last: bigint, flags: number, internal: boolean): UserPage[] {
    const { pieces, done } = this.contigAreas(iova, last);
    const out: UserPage[] = [];
    const pinned: ContigPiece[] = [];
    try {
      for (let i = 0; i < pieces.length; i++) {
        const p = pieces[i];
        const area = p.area;
        const isLast = done && i === pieces.length - 1;
        const aligned =
          area.startByte(p.cur) % PAGE === 0n &&
          (isLast || area.startByte(area.last) % PAGE === PAGE - 1n);
        if (area.preventAccess || !aligned)
          throw new ErrnoError(EINVAL, "access range is not page aligned or being unmapped");
        if (!checkAreaProt(area, flags)) throw new ErrnoError(EPERM, "area protection");
        const pages = area.pages!;
        if (flags & ACCESS_RW_WRITE && !pages.writable)
          throw new ErrnoError(EPERM, "write pin of read-only pages");
        // A dma-buf may be MMIO without struct pages: there is nothing to hand an access.
        if (pages.type === IoptAddress.DMABUF)
          throw new ErrnoError(EINVAL, "access pin of dma-buf pages");
        const first = area.iovaToIndex(p.cur);
        const lastIndex = area.iovaToIndex(p.last);
        out.push(...pages.holdAccess(first, lastIndex, this.faults));
        area.numAccesses++;
        if (internal) area.numLocks++;
        pinned.push(p);
      }
      if (!done) throw new ErrnoError(ENOENT, "access range is not fully mapped");
    } catch (e) {
      for (const p of pinned) this.unpinPiece(p, internal);
      throw e;
    }
    return out;
  }

  /** The io_pagetable half of iommufd_access_unpin_pages: must match an earlier pin. */
  unpinPages(iova: bigint, last: bigint, internal: boolean): void {
    const { pieces } = this.contigAreas(iova, last);
    for (const p of pieces) this.unpinPiece(p, internal);
  }

  private unpinPiece(p: ContigPiece, internal: boolean): void {
    const area = p.area;
    const pages = area.pages!;
    if (!pages.dropAccess(area.iovaToIndex(p.cur), area.iovaToIndex(p.last))) return;
    area.numAccesses--;
    if (internal) area.numLocks--;
  }

  /**
   * The io_pagetable half of iommufd_access_rw over [iova, iova + data.length): EINVAL (unmap
   * pending), EPERM (protection), copy errors; ENOENT when not fully covered. Throws.
   */
  rw(iova: bigint, data: Uint8Array, flags: number, caller: UserProcess | undefined): void {
    const last = iova + BigInt(data.length) - 1n;
    const { pieces, done } = this.contigAreas(iova, last);
    let off = 0;
    for (const p of pieces) {
      const area = p.area;
      const bytes = Number(p.last - p.cur + 1n);
      if (area.preventAccess) throw new ErrnoError(EINVAL, "area is being unmapped");
      if (!checkAreaProt(area, flags)) throw new ErrnoError(EPERM, "area protection");
      area.pages!.rw(
        area.startByte(p.cur),
        data.subarray(off, off + bytes),
        flags,
        caller,
        this.faults,
      );
      off += bytes;
    }
    if (!done) throw new ErrnoError(ENOENT, "access range is not fully mapped");
  }

  // ---- dirty tracking -------------------------------------------------------------------------

  /**
   * iopt_set_dirty_tracking: EOPNOTSUPP if the domain has no dirty ops; on enable first reads
   * and clears the dirty bits of every area (whole areas, results discarded), then toggles the
   * domain. Throws ErrnoError.
   */
  setDirtyTracking(domain: IommuPagingDomain, enable: boolean): void {
    if (!domain.hasDirtyOps) throw new ErrnoError(EOPNOTSUPP, "domain has no dirty tracking");
    if (enable) {
      for (const area of this.areaList) {
        if (area.pages === null) continue;
        domain.readAndClearDirty(area.iova, area.length, false, () => {});
      }
    }
    domain.setDirtyTracking(enable);
  }

  /**
   * iopt_read_and_clear_dirty_data's walk (hwpt-device.md §14.1 step 6) for [iova, last]:
   * visits the areas contiguous from `iova` and calls domain.readAndClearDirty on each piece
   * (clipped to the range) with `record`. Returns 0, or EINVAL when `iova` is not inside an
   * area or a hole appears before `last` (the walk stops there; the ioctl discards this).
   * The caller does the range and page-size checks and the dirty-ops check.
   */
  readAndClearDirtyData(
    domain: IommuPagingDomain,
    iova: bigint,
    last: bigint,
    noClear: boolean,
    record: DirtyRecord,
  ): number {
    const { pieces, done } = this.contigAreas(iova, last);
    for (const p of pieces) domain.readAndClearDirty(p.cur, p.last - p.cur + 1n, noClear, record);
    return done ? 0 : EINVAL;
  }

  // ---- teardown -------------------------------------------------------------------------------

  /**
   * iopt_destroy_table (after unmapAll): drops the test reservations and the allowed ranges.
   * Domains and accesses must be gone already (they hold the IOAS).
   */
  destroyTable(): void {
    this.removeReserved(null);
    this.allowedList = [];
  }
}

/** batch_to_domain's BATCH_MMIO protection: IOMMU_MMIO in place of IOMMU_CACHE. */
function mmioProt(prot: number): number {
  return (prot & ~IOMMU_CACHE) | IOMMU_MMIO;
}

/** check_area_prot: WRITE needs IOMMU_WRITE, anything else IOMMU_READ. */
function checkAreaProt(area: IoptArea, flags: number): boolean {
  if (flags & ACCESS_RW_WRITE) return (area.iommuProt & IOMMU_WRITE) !== 0;
  return (area.iommuProt & IOMMU_READ) !== 0;
}

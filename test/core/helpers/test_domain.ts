/**
 * A paging domain for core tests: the iommufd selftest mock's page table (src/pt amdv1-mock,
 * 2 KiB granule, aperture [2^24, 2^31 - 1] by default) behind the IommuPagingDomain contract of
 * src/core/driver.ts. Other slices' tests may reuse it.
 *
 * Extras for tests: `failMapAt` makes the n-th map call (1-based, counted from construction)
 * fail with ENOMEM so unwind paths can be exercised; `mapCalls` / `unmapCalls` count calls;
 * `mapped()` lists the leaves.
 */
import type { DirtyRecord, IommuPagingDomain } from "../../../src/core/driver.ts";
import { ENOMEM, EOPNOTSUPP, ErrnoError } from "../../../src/errno.ts";
import { PageAllocator, PhysMem } from "../../../src/mem/index.ts";
import {
  AMDV1_SELFTEST_GEOMETRIES,
  type Amdv1SelftestGeometry,
} from "../../../src/pt/fmt/amdv1.ts";
import { type LeafInfo, PageTable } from "../../../src/pt/walker.ts";

export interface TestDomainOptions {
  /** Which selftest mock geometry (default: MOCK_IOMMUPT_DEFAULT, 2 KiB pages). */
  geometry?: Amdv1SelftestGeometry;
  /** Allocated with dirty-tracking ops. */
  dirty?: boolean;
  /** Override the aperture (defaults to the geometry's). */
  apertureStart?: bigint;
  apertureLast?: bigint;
  /** Override the pgsize bitmap reported to the core (the table still uses the geometry's). */
  pgsizeBitmap?: bigint;
  /** Share one physical memory between domains (default: a fresh one). */
  alloc?: PageAllocator;
}

export class TestPagingDomain implements IommuPagingDomain {
  readonly kind = "paging";
  readonly pgsizeBitmap: bigint;
  readonly apertureStart: bigint;
  readonly apertureLast: bigint;
  readonly hasDirtyOps: boolean;
  readonly enforceCacheCoherency = false;
  readonly table: PageTable;
  tracking = false;
  mapCalls = 0;
  unmapCalls = 0;
  /** The map call (1-based) that fails with ENOMEM; 0: none. */
  failMapAt = 0;
  freed = false;

  constructor(opts: TestDomainOptions = {}) {
    const g = opts.geometry ?? AMDV1_SELFTEST_GEOMETRIES[0];
    this.pgsizeBitmap = opts.pgsizeBitmap ?? g.pgsizeBitmap;
    this.apertureStart = opts.apertureStart ?? g.apertureStart;
    this.apertureLast = opts.apertureLast ?? g.apertureLast;
    this.hasDirtyOps = opts.dirty ?? false;
    const alloc = opts.alloc ?? new PageAllocator(new PhysMem());
    this.table = new PageTable(g.format, alloc, { pgsizeBitmap: g.pgsizeBitmap });
  }

  map(iova: bigint, pa: number, length: bigint, prot: number): void {
    this.mapCalls++;
    if (this.mapCalls === this.failMapAt) throw new ErrnoError(ENOMEM, "test domain map failure");
    this.table.map(iova, pa, length, prot);
  }

  unmap(iova: bigint, length: bigint): bigint {
    this.unmapCalls++;
    return this.table.unmap(iova, length);
  }

  iovaToPhys(iova: bigint): number | undefined {
    return this.table.iovaToPhys(iova);
  }

  setDirtyTracking(enable: boolean): void {
    if (!this.hasDirtyOps) throw new ErrnoError(EOPNOTSUPP, "no dirty ops");
    this.tracking = enable;
  }

  readAndClearDirty(iova: bigint, length: bigint, noClear: boolean, record: DirtyRecord): void {
    this.table.readAndClearDirty(
      iova,
      length,
      (hi, lo, sizeLg2) => record((BigInt(hi) << 32n) | BigInt(lo), 1n << BigInt(sizeLg2)),
      noClear,
    );
  }

  /** Every leaf mapped, in IOVA order. */
  mapped(): LeafInfo[] {
    return this.table.leaves();
  }

  free(): void {
    this.table.free();
    this.freed = true;
  }
}

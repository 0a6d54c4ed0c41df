/**
 * Drives an IommufdContext through its ioctl entry the way a process would: each struct is
 * encoded into the fake process's memory and its address passed, so the uAPI codec's rules
 * (size, zero extension, write-back) are exercised too. Importing this module loads the IOAS
 * ioctls (src/core/ioas.ts registers them).
 */
import { IommufdContext } from "../../../src/core/context.ts";
import { getIoas, type Ioas } from "../../../src/core/ioas.ts";
import { FakeProcess } from "../../../src/core/user_mm.ts";
import {
  type Decoded,
  decode,
  encode,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOC_LAYOUT,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_COPY_LAYOUT,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_IOAS_UNMAP_LAYOUT,
  type Layout,
} from "../../../src/uapi/index.ts";

export const PAGE = 4096;
export const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
export const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
export const U64_MAX = (1n << 64n) - 1n;

export interface CallResult<L extends Layout> {
  errno: number;
  /** The struct as it reads back from user memory after the call. */
  out: Decoded<L>;
}

export class Harness {
  readonly ctx: IommufdContext;
  readonly proc: FakeProcess;
  private readonly scratch: bigint;

  constructor(proc: FakeProcess = new FakeProcess(), ctx: IommufdContext = new IommufdContext()) {
    this.proc = proc;
    this.ctx = ctx;
    this.scratch = proc.mmap(PAGE);
  }

  /** Runs ioctl `cmd` with `fields` encoded at a scratch address (size defaults to the full struct). */
  call<L extends Layout>(
    cmd: number,
    layout: L,
    fields: Partial<Decoded<L>>,
    opts: { proc?: FakeProcess; at?: bigint } = {},
  ): CallResult<L> {
    const proc = opts.proc ?? this.proc;
    const at = opts.at ?? this.scratch;
    const buf = new Uint8Array(layout.size);
    encode(layout, { size: layout.size, ...fields } as Partial<Decoded<L>>, buf);
    if (proc.write(at, buf) !== 0) {
      // A read-only mapping: the caller placed the struct there itself.
    }
    const r = this.ctx.ioctl(cmd, at, proc);
    const back = new Uint8Array(layout.size);
    proc.read(at, back);
    return { errno: r.errno, out: decode(layout, back) };
  }

  ioasAlloc(): number {
    const r = this.call(IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOC_LAYOUT, {});
    if (r.errno !== 0) throw new Error(`IOAS_ALLOC failed: ${r.errno}`);
    return r.out.out_ioas_id;
  }

  ioas(id: number): Ioas {
    return getIoas(this.ctx, id);
  }

  map(
    ioasId: number,
    va: bigint,
    length: bigint | number,
    opts: { iova?: bigint; flags?: number; proc?: FakeProcess } = {},
  ): CallResult<typeof IOMMU_IOAS_MAP_LAYOUT> {
    const flags = opts.flags ?? RW | (opts.iova !== undefined ? FIXED : 0);
    const call: { proc?: FakeProcess } = {};
    if (opts.proc !== undefined) call.proc = opts.proc;
    return this.call(
      IOMMU_IOAS_MAP,
      IOMMU_IOAS_MAP_LAYOUT,
      { ioas_id: ioasId, flags, user_va: va, length: BigInt(length), iova: opts.iova ?? 0n },
      opts.proc !== undefined ? { proc: opts.proc, at: opts.proc.mmap(PAGE) } : {},
    );
  }

  /** MAP expecting success; returns the IOVA. */
  mapOk(ioasId: number, va: bigint, length: bigint | number, iova?: bigint): bigint {
    const r = this.map(ioasId, va, length, iova !== undefined ? { iova } : {});
    if (r.errno !== 0) throw new Error(`MAP failed: ${r.errno}`);
    return r.out.iova;
  }

  mapFile(
    ioasId: number,
    fd: number,
    start: bigint,
    length: bigint,
    opts: { iova?: bigint; flags?: number } = {},
  ): CallResult<typeof IOMMU_IOAS_MAP_FILE_LAYOUT> {
    const flags = opts.flags ?? RW | (opts.iova !== undefined ? FIXED : 0);
    return this.call(IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_MAP_FILE_LAYOUT, {
      ioas_id: ioasId,
      flags,
      fd,
      start,
      length,
      iova: opts.iova ?? 0n,
    });
  }

  copy(
    dst: number,
    src: number,
    srcIova: bigint,
    length: bigint,
    opts: { dstIova?: bigint; flags?: number } = {},
  ): CallResult<typeof IOMMU_IOAS_COPY_LAYOUT> {
    const flags = opts.flags ?? RW | (opts.dstIova !== undefined ? FIXED : 0);
    return this.call(IOMMU_IOAS_COPY, IOMMU_IOAS_COPY_LAYOUT, {
      dst_ioas_id: dst,
      src_ioas_id: src,
      flags,
      length,
      src_iova: srcIova,
      dst_iova: opts.dstIova ?? 0n,
    });
  }

  unmap(ioasId: number, iova: bigint, length: bigint): CallResult<typeof IOMMU_IOAS_UNMAP_LAYOUT> {
    return this.call(IOMMU_IOAS_UNMAP, IOMMU_IOAS_UNMAP_LAYOUT, { ioas_id: ioasId, iova, length });
  }
}

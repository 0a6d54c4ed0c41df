/**
 * Emulated physical memory: sparse, allocated lazily, addresses below 2^52.
 *
 * Physical addresses are plain Numbers: every format's output address is at most 52 bits wide,
 * so a PA is always an exact integer Number (docs/ARCHITECTURE.md, rule 1).
 *
 * Two backings, chosen by address:
 * - the dense window [DENSE_BASE, DENSE_BASE + 1 GiB): one flat Uint32Array that grows (by
 *   doubling) as far as it has been written. The page allocator puts tables here by default, so
 *   a page walk reads an entry with one subtraction, one compare and one index — no division,
 *   no lookup. (Measured: about 3x faster than a chunk lookup per entry.)
 * - everywhere else: a Map of 64 KiB chunks, fronted by a small direct-mapped cache.
 *
 * Every access method bumps `reads` or `writes` by one whatever its width, so a test can count
 * the table entries one walk read. Bulk copies count bytes in `bytesRead` / `bytesWritten`.
 * Reading memory that was never written yields zeros and allocates nothing.
 */
import type { U64 } from "./u64.ts";

export const PHYS_ADDR_BITS = 52;
export const PHYS_ADDR_LIMIT = 2 ** PHYS_ADDR_BITS;
/** Start and size of the dense window (where PageAllocator places tables by default). */
export const DENSE_BASE = 2 ** 30;
export const DENSE_MAX = 2 ** 30;
const DENSE_INITIAL = 1 << 20;
const CHUNK_SHIFT = 16;
const CHUNK_SIZE = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_SIZE - 1;
const CHUNK_WORDS = CHUNK_SIZE >>> 2;
const CACHE_SLOTS = 256;

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error("iommusim needs a little-endian host: table words are read through Uint32Array");
}

const ZERO_CHUNK = new Uint32Array(CHUNK_WORDS);

/**
 * The index into `PhysMem.dense` of the 32-bit word at physical address (paHi, paLo), or -1 when
 * the address is outside the dense window. Pure int32 arithmetic (the window is exactly
 * [2^30, 2^31)), which is what lets a walker follow table pointers without float math: a
 * data-plane walk keeps its table position as this word index and falls back to read64 only
 * for tables elsewhere. The caller still checks the index against `dense.length`.
 */
export function denseWord(paHi: number, paLo: number): number {
  return paHi === 0 && paLo >>> 30 === 1 ? (paLo & 0x3fffffff) >>> 2 : -1;
}

/** denseWord for a physical address held as a Number. */
export function denseWordOf(pa: number): number {
  const off = pa - DENSE_BASE;
  return off >= 0 && off < DENSE_MAX ? off >>> 2 : -1;
}

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

export class PhysMem {
  /** Number of read accesses (any width) since construction or the last resetCounters(). */
  reads = 0;
  /** Number of write accesses (any width). */
  writes = 0;
  bytesRead = 0;
  bytesWritten = 0;

  /**
   * The dense window's backing, and how many bytes of it exist. Public for data-plane walkers
   * (see denseWord): read-only to everyone but PhysMem.
   */
  dense = new Uint32Array(0);
  denseLen = 0;
  private readonly chunks = new Map<number, Uint32Array>();
  private readonly cacheTag = new Float64Array(CACHE_SLOTS).fill(Number.NaN); // NaN never equals an index
  private readonly cacheData: Uint32Array[] = new Array<Uint32Array>(CACHE_SLOTS).fill(ZERO_CHUNK);

  resetCounters(): void {
    this.reads = 0;
    this.writes = 0;
    this.bytesRead = 0;
    this.bytesWritten = 0;
  }

  /** Bytes of host memory backing this physical memory. */
  get allocatedBytes(): number {
    return this.chunks.size * CHUNK_SIZE + this.denseLen;
  }

  /** Grows the dense window so that byte offset `off` is backed. */
  private growDense(off: number): void {
    let len = Math.max(this.denseLen, DENSE_INITIAL);
    while (len <= off) len *= 2;
    const next = new Uint32Array(len >>> 2);
    next.set(this.dense);
    this.dense = next;
    this.denseLen = len;
  }

  /**
   * The backing array holding `pa` and the word index of `pa` in it (in `locWord`); for reads of
   * never-written memory, the zero chunk. `pa` must not cross a 64 KiB boundary with its access.
   */
  private locate(pa: number, write: boolean): Uint32Array {
    const off = pa - DENSE_BASE;
    if (off >= 0 && off < DENSE_MAX) {
      if (off >= this.denseLen) {
        if (!write) {
          this.locWord = (pa & CHUNK_MASK) >>> 2;
          return ZERO_CHUNK;
        }
        this.growDense(off);
      }
      this.locWord = off >>> 2;
      return this.dense;
    }
    this.locWord = (pa & CHUNK_MASK) >>> 2;
    return write ? this.wchunk(pa) : this.rchunk(pa);
  }
  private locWord = 0;

  // ---- chunk lookup ------------------------------------------------------------------------

  /** The chunk holding `pa` for reading; the shared zero chunk when it was never written. */
  private rchunk(pa: number): Uint32Array {
    const idx = Math.floor(pa / CHUNK_SIZE);
    const slot = idx & (CACHE_SLOTS - 1);
    if (this.cacheTag[slot] === idx) return this.cacheData[slot];
    return this.rchunkSlow(pa, idx, slot);
  }

  private rchunkSlow(pa: number, idx: number, slot: number): Uint32Array {
    checkAddress(pa, 1);
    const c = this.chunks.get(idx);
    if (c === undefined) return ZERO_CHUNK;
    this.cacheTag[slot] = idx;
    this.cacheData[slot] = c;
    return c;
  }

  /** The chunk holding `pa` for writing, allocated on first use. */
  private wchunk(pa: number): Uint32Array {
    const idx = Math.floor(pa / CHUNK_SIZE);
    const slot = idx & (CACHE_SLOTS - 1);
    if (this.cacheTag[slot] === idx) return this.cacheData[slot];
    checkAddress(pa, 1);
    let c = this.chunks.get(idx);
    if (c === undefined) {
      c = new Uint32Array(CHUNK_WORDS);
      this.chunks.set(idx, c);
    }
    this.cacheTag[slot] = idx;
    this.cacheData[slot] = c;
    return c;
  }

  // ---- 32-bit little-endian: the primitive every wider or byte-swapped access builds on -----

  read32(pa: number): number {
    this.reads++;
    const off = pa - DENSE_BASE;
    if (off >= 0 && off < this.denseLen && (off & 3) === 0) return this.dense[off >>> 2];
    if ((pa & 3) === 0) return this.locate(pa, false)[this.locWord];
    return this.readUnaligned(pa, 4);
  }

  write32(pa: number, v: number): void {
    this.writes++;
    if ((pa & 3) === 0) {
      const c = this.locate(pa, true);
      c[this.locWord] = v;
    } else {
      this.writeUnaligned(pa, 4, v >>> 0);
    }
  }

  read32be(pa: number): number {
    return swap32(this.read32(pa));
  }

  write32be(pa: number, v: number): void {
    this.write32(pa, swap32(v >>> 0));
  }

  // ---- 64-bit: two 32-bit halves, one counted access ------------------------------------------

  /** Reads a little-endian u64 into `out`. */
  read64(pa: number, out: U64): U64 {
    this.reads++;
    const off = pa - DENSE_BASE;
    if (off >= 0 && off < this.denseLen && (off & 7) === 0) {
      const d = this.dense;
      const i = off >>> 2;
      out.lo = d[i];
      out.hi = d[i + 1];
    } else if ((pa & 7) === 0) {
      const c = this.locate(pa, false);
      const i = this.locWord;
      out.lo = c[i];
      out.hi = c[i + 1];
    } else {
      out.lo = this.readUnaligned(pa, 4);
      out.hi = this.readUnaligned(pa + 4, 4);
    }
    return out;
  }

  write64(pa: number, hi: number, lo: number): void {
    this.writes++;
    if ((pa & 7) === 0) {
      const c = this.locate(pa, true);
      const i = this.locWord;
      c[i] = lo;
      c[i + 1] = hi;
    } else {
      this.writeUnaligned(pa, 4, lo >>> 0);
      this.writeUnaligned(pa + 4, 4, hi >>> 0);
    }
  }

  /** Reads a big-endian u64 (PPC TCEs) into `out`. */
  read64be(pa: number, out: U64): U64 {
    this.read64(pa, out);
    const lo = out.lo;
    out.lo = swap32(out.hi);
    out.hi = swap32(lo);
    return out;
  }

  write64be(pa: number, hi: number, lo: number): void {
    this.write64(pa, swap32(lo >>> 0), swap32(hi >>> 0));
  }

  /**
   * Data-plane write-back of a table entry's low word (A/D, AF, DBM updates): by dense word
   * index `w` when the walk read the entry there (w >= 0), else at address `pa`.
   */
  writeEntryLo(w: number, pa: number, lo: number): void {
    if (w >= 0) {
      this.dense[w] = lo;
      this.writes++;
    } else {
      this.write32(pa, lo >>> 0);
    }
  }

  // ---- 8 and 16 bits ----------------------------------------------------------------------------

  read8(pa: number): number {
    this.reads++;
    return this.readUnaligned(pa, 1);
  }

  write8(pa: number, v: number): void {
    this.writes++;
    this.writeUnaligned(pa, 1, v & 0xff);
  }

  read16(pa: number): number {
    this.reads++;
    return this.readUnaligned(pa, 2);
  }

  write16(pa: number, v: number): void {
    this.writes++;
    this.writeUnaligned(pa, 2, v & 0xffff);
  }

  read16be(pa: number): number {
    const v = this.read16(pa);
    return ((v & 0xff) << 8) | (v >>> 8);
  }

  write16be(pa: number, v: number): void {
    this.write16(pa, ((v & 0xff) << 8) | ((v >>> 8) & 0xff));
  }

  // ---- bulk -------------------------------------------------------------------------------------

  /** Copies `dst.length` bytes starting at `pa` into `dst`. */
  readBytes(pa: number, dst: Uint8Array): void {
    checkAddress(pa, dst.length);
    this.bytesRead += dst.length;
    let done = 0;
    while (done < dst.length) {
      const a = pa + done;
      const off = a & CHUNK_MASK;
      const n = Math.min(CHUNK_SIZE - off, dst.length - done);
      const c = this.locate(a, false);
      const at = c.byteOffset + this.locWord * 4 + (a & 3);
      dst.set(new Uint8Array(c.buffer, at, n), done);
      done += n;
    }
  }

  /** Copies `src` into memory starting at `pa`. */
  writeBytes(pa: number, src: Uint8Array): void {
    checkAddress(pa, src.length);
    this.bytesWritten += src.length;
    let done = 0;
    while (done < src.length) {
      const a = pa + done;
      const off = a & CHUNK_MASK;
      const n = Math.min(CHUNK_SIZE - off, src.length - done);
      const c = this.locate(a, true);
      const at = c.byteOffset + this.locWord * 4 + (a & 3);
      new Uint8Array(c.buffer, at, n).set(src.subarray(done, done + n));
      done += n;
    }
  }

  /** Sets `len` bytes from `pa` to zero; chunks that were never written stay unallocated. */
  zero(pa: number, len: number): void {
    checkAddress(pa, len);
    this.bytesWritten += len;
    let done = 0;
    while (done < len) {
      const a = pa + done;
      const off = a & CHUNK_MASK;
      const n = Math.min(CHUNK_SIZE - off, len - done);
      const idx = Math.floor(a / CHUNK_SIZE);
      const dOff = a - DENSE_BASE;
      if (dOff >= 0 && dOff < DENSE_MAX) {
        if (dOff < this.denseLen) new Uint8Array(this.dense.buffer, dOff, n).fill(0);
        done += n;
        continue;
      }
      const c = this.chunks.get(idx);
      if (c !== undefined) {
        if (n === CHUNK_SIZE) {
          // A whole chunk goes back to being unallocated.
          this.chunks.delete(idx);
          const slot = idx & (CACHE_SLOTS - 1);
          if (this.cacheTag[slot] === idx) {
            this.cacheTag[slot] = Number.NaN;
            this.cacheData[slot] = ZERO_CHUNK;
          }
        } else {
          new Uint8Array(c.buffer, c.byteOffset + off, n).fill(0);
        }
      }
      done += n;
    }
  }

  // ---- slow paths -------------------------------------------------------------------------------

  private readUnaligned(pa: number, n: number): number {
    let v = 0;
    for (let i = n - 1; i >= 0; i--) {
      const a = pa + i;
      const w = this.locate(a, false)[this.locWord];
      v = v * 256 + ((w >>> ((a & 3) * 8)) & 0xff);
    }
    return v >>> 0;
  }

  private writeUnaligned(pa: number, n: number, v: number): void {
    for (let i = 0; i < n; i++) {
      const a = pa + i;
      const c = this.locate(a, true);
      const wi = this.locWord;
      const sh = (a & 3) * 8;
      c[wi] = (c[wi] & ~(0xff << sh)) | (((v >>> (8 * i)) & 0xff) << sh);
    }
  }
}

function checkAddress(pa: number, len: number): void {
  if (!Number.isInteger(pa) || pa < 0 || pa + len > PHYS_ADDR_LIMIT) {
    throw new RangeError(`physical address 0x${pa.toString(16)} (+${len}) is outside [0, 2^52)`);
  }
}

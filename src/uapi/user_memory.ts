/**
 * The client process's memory as the codec sees it: the kernel's copy_from_user and
 * copy_to_user, answering 0 or EFAULT. The daemon backs this with /proc/<pid>/mem; tests and
 * in-process users back it with ArrayUserMemory.
 */
import { EFAULT } from "../errno.ts";

export interface UserMemory {
  /** Fills `dst` from user address `va`. 0, or EFAULT if any byte is unreadable. */
  read(va: bigint, dst: Uint8Array): number;
  /**
   * Stores `src` at user address `va`. 0, or EFAULT if any byte is unwritable; bytes before
   * the first bad one may already be written, as with the kernel's copy_to_user.
   */
  write(va: bigint, src: Uint8Array): number;
}

/** Copies n bytes; a plain loop for short runs, where making subarray views costs more. */
function copyBytes(from: Uint8Array, fromOff: number, to: Uint8Array, toOff: number, n: number) {
  if (n <= 64) {
    for (let i = 0; i < n; i++) to[toOff + i] = from[fromOff + i]!;
  } else {
    to.set(from.subarray(fromOff, fromOff + n), toOff);
  }
}

interface Region {
  readonly base: bigint;
  readonly end: bigint; // exclusive
  readonly bytes: Uint8Array;
  readonly writable: boolean;
}

export interface MapOptions {
  /** Default true. A read-only region makes writes fault, like a PROT_READ mapping. */
  readonly writable?: boolean;
}

/**
 * A fake address space made of non-overlapping byte arrays mapped at chosen addresses.
 * Everything else, address 0 included, is unmapped and faults. Byte-granular: a fault happens
 * at the first unmapped byte, not at a page boundary.
 */
export class ArrayUserMemory implements UserMemory {
  private readonly regions: Region[] = [];

  /**
   * Maps `sizeOrBytes` (a fresh zeroed array of that size, or the given array, shared) at
   * `base` and returns the backing bytes. Overlapping an existing region is a programming error.
   */
  map(base: bigint, sizeOrBytes: number | Uint8Array, options: MapOptions = {}): Uint8Array {
    const bytes = typeof sizeOrBytes === "number" ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
    if (base < 0n) throw new RangeError("negative user address");
    const end = base + BigInt(bytes.byteLength);
    for (const r of this.regions) {
      if (base < r.end && r.base < end) {
        throw new RangeError(`mapping at 0x${base.toString(16)} overlaps an existing region`);
      }
    }
    this.regions.push({ base, end, bytes, writable: options.writable ?? true });
    this.regions.sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
    return bytes;
  }

  /** Removes the region that starts at `base`; later accesses there fault. */
  unmap(base: bigint): void {
    const i = this.regions.findIndex((r) => r.base === base);
    if (i < 0) throw new RangeError(`nothing mapped at 0x${base.toString(16)}`);
    this.regions.splice(i, 1);
  }

  private regionAt(va: bigint): Region | undefined {
    for (const r of this.regions) {
      if (va < r.base) return undefined;
      if (va < r.end) return r;
    }
    return undefined;
  }

  read(va: bigint, dst: Uint8Array): number {
    // Fast path: the whole range inside one region (the common case for ioctl structs).
    const first = this.regionAt(va);
    if (first !== undefined) {
      const off = Number(va - first.base);
      const n = dst.byteLength;
      if (off + n <= first.bytes.byteLength) {
        copyBytes(first.bytes, off, dst, 0, n);
        return 0;
      }
    }
    let done = 0;
    while (done < dst.byteLength) {
      const at = va + BigInt(done);
      const r = this.regionAt(at);
      if (r === undefined) return EFAULT;
      const off = Number(at - r.base);
      const n = Math.min(dst.byteLength - done, r.bytes.byteLength - off);
      copyBytes(r.bytes, off, dst, done, n);
      done += n;
    }
    return 0;
  }

  write(va: bigint, src: Uint8Array): number {
    const first = this.regionAt(va);
    if (first?.writable) {
      const off = Number(va - first.base);
      const n = src.byteLength;
      if (off + n <= first.bytes.byteLength) {
        copyBytes(src, 0, first.bytes, off, n);
        return 0;
      }
    }
    let done = 0;
    while (done < src.byteLength) {
      const at = va + BigInt(done);
      const r = this.regionAt(at);
      if (r === undefined || !r.writable) return EFAULT;
      const off = Number(at - r.base);
      const n = Math.min(src.byteLength - done, r.bytes.byteLength - off);
      copyBytes(src, done, r.bytes, off, n);
      done += n;
    }
    return 0;
  }
}

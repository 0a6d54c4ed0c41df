/**
 * A client's mmap of an iommufd region (a vIOMMU's MMIO-like pages) as shared memory.
 *
 * In the kernel the mapping *is* the driver's pages: a write on either side is seen by the
 * other at once. Here the region's bytes live in the simulator's physical memory, which a
 * client cannot map, so the shim maps a memfd instead and the daemon opens the same file
 * through /proc/<pid>/fd/<n> (Node cannot receive a descriptor over a socket, nor mmap; a held
 * descriptor outlives the shim's own, closed once the mapping is made). The file and the
 * region are then kept equal at the edges of every daemon operation that runs driver code:
 *
 *  - `pull` before it: bytes the client wrote since the last edge (file != snapshot) go into
 *    the region, so the driver sees them;
 *  - `push` after it, before the reply: bytes the operation changed in the region
 *    (region != snapshot) go into the file, so the client sees them when its call returns.
 *
 * Between operations the region cannot change (nothing in the daemon runs), so the client sees
 * every daemon-side change by the time the call that made it returns, without copying the
 * whole region on each call. A change made by other daemon code (a test, a simulated device)
 * is pushed by IommusimServer.syncMappings(). A byte both sides wrote between two edges ends
 * with the driver's value, as if its write came last.
 */
import { closeSync, constants, openSync, readSync, writeSync } from "node:fs";
import type { MmapMapping } from "../core/index.ts";

export class SharedRegionFile {
  private fd: number;
  private readonly mapping: MmapMapping;
  /** The bytes both sides agreed on at the last edge. */
  private readonly snapshot: Buffer;
  private readonly scratch: Buffer;

  private constructor(fd: number, mapping: MmapMapping) {
    this.fd = fd;
    this.mapping = mapping;
    const length = Number(mapping.region.length);
    this.snapshot = Buffer.alloc(length);
    this.scratch = Buffer.alloc(length);
  }

  /**
   * Opens the client's memfd `fd` of process `pid` and fills it with the region's bytes; undefined
   * when the file cannot be opened or is not the region's size (the caller falls back to a copy).
   */
  static adopt(pid: number, fd: number, mapping: MmapMapping): SharedRegionFile | undefined {
    let own: number;
    try {
      own = openSync(`/proc/${pid}/fd/${fd}`, constants.O_RDWR);
    } catch {
      return undefined;
    }
    const f = new SharedRegionFile(own, mapping);
    mapping.read(0, f.snapshot);
    if (!f.writeAt(0, f.snapshot.length, f.snapshot)) {
      f.close();
      return undefined;
    }
    return f;
  }

  /** The client's writes since the last edge, into the region. */
  pull(): void {
    if (this.fd < 0 || !this.readAll(this.scratch)) return;
    if (this.scratch.equals(this.snapshot)) return;
    forEachRun(this.scratch, this.snapshot, (start, end) => {
      this.mapping.write(start, this.scratch.subarray(start, end));
      this.scratch.copy(this.snapshot, start, start, end);
    });
  }

  /** The region's changes since the last edge, into the file the client maps. */
  push(): void {
    if (this.fd < 0 || this.mapping.closed) return;
    this.mapping.read(0, this.scratch);
    if (this.scratch.equals(this.snapshot)) return;
    forEachRun(this.scratch, this.snapshot, (start, end) => {
      if (this.writeAt(start, end, this.scratch))
        this.scratch.copy(this.snapshot, start, start, end);
    });
  }

  close(): void {
    if (this.fd < 0) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = -1;
  }

  private readAll(dst: Buffer): boolean {
    let done = 0;
    try {
      while (done < dst.length) {
        const n = readSync(this.fd, dst, done, dst.length - done, done);
        if (n === 0) return false;
        done += n;
      }
    } catch {
      return false;
    }
    return true;
  }

  private writeAt(start: number, end: number, src: Buffer): boolean {
    let at = start;
    try {
      while (at < end) at += writeSync(this.fd, src, at, end - at, at);
    } catch {
      return false;
    }
    return true;
  }
}

/** Calls `visit(start, end)` for each maximal run of bytes where `a` and `b` differ. */
function forEachRun(a: Buffer, b: Buffer, visit: (start: number, end: number) => void): void {
  const n = a.length;
  let i = 0;
  while (i < n) {
    if (a[i] === b[i]) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < n && a[j] !== b[j]) j++;
    visit(i, j);
    i = j;
  }
}

/**
 * The set of page indexes of one iopt_pages that some domain-filled area or access pin holds,
 * with each index's page and holder count. The kernel finds these through its interval trees
 * and the pinned-PFN xarray; here a map of fixed-size chunks keeps a 1 GiB area (262144
 * indexes) at 512 map entries instead of 262144 small objects, which is what made filling a
 * domain spend most of its time in the garbage collector.
 */
import type { UserPage } from "./user_mm.ts";

const CHUNK_SHIFT = 9;
const CHUNK_SIZE = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_SIZE - 1;

class HeldChunk {
  readonly pages: (UserPage | undefined)[] = new Array(CHUNK_SIZE).fill(undefined);
  readonly holders = new Int32Array(CHUNK_SIZE);
  /** Indexes of this chunk held by at least one holder. */
  count = 0;
}

export class HeldPages {
  private readonly chunks = new Map<number, HeldChunk>();
  private held = 0;
  // The last chunk used: domain fills and releases walk indexes in order.
  private lastKey = -1;
  private lastChunk: HeldChunk | undefined;

  /** Number of held indexes. */
  get size(): number {
    return this.held;
  }

  private chunk(index: number): HeldChunk | undefined {
    const key = index >>> CHUNK_SHIFT;
    if (key === this.lastKey) return this.lastChunk;
    const c = this.chunks.get(key);
    this.lastKey = key;
    this.lastChunk = c;
    return c;
  }

  has(index: number): boolean {
    const c = this.chunk(index);
    return c !== undefined && c.holders[index & CHUNK_MASK] !== 0;
  }

  /** The page at `index`, or undefined when nobody holds it. */
  page(index: number): UserPage | undefined {
    const c = this.chunk(index);
    return c === undefined ? undefined : c.pages[index & CHUNK_MASK];
  }

  /** Adds a holder to a held index; returns its page, or undefined (nothing done) if not held. */
  addHolder(index: number): UserPage | undefined {
    const c = this.chunk(index);
    if (c === undefined) return undefined;
    const slot = index & CHUNK_MASK;
    if (c.holders[slot] === 0) return undefined;
    c.holders[slot]++;
    return c.pages[slot];
  }

  /** Holds an index nobody held, with its first holder. */
  insert(index: number, page: UserPage): void {
    let c = this.chunk(index);
    if (c === undefined) {
      c = new HeldChunk();
      this.chunks.set(index >>> CHUNK_SHIFT, c);
      this.lastKey = index >>> CHUNK_SHIFT;
      this.lastChunk = c;
    }
    const slot = index & CHUNK_MASK;
    if (c.holders[slot] !== 0) throw new Error(`iopt_pages index ${index} is already held`);
    c.holders[slot] = 1;
    c.pages[slot] = page;
    c.count++;
    this.held++;
  }

  /**
   * Removes one holder from `index`. Returns the page when that was its last holder (the
   * index is no longer held), otherwise undefined. Throws if the index is not held.
   */
  removeHolder(index: number): UserPage | undefined {
    const c = this.chunk(index);
    const slot = index & CHUNK_MASK;
    if (c === undefined || c.holders[slot] === 0)
      throw new Error(`iopt_pages index ${index} released but not held`);
    if (--c.holders[slot] !== 0) return undefined;
    const page = c.pages[slot];
    c.pages[slot] = undefined;
    c.count--;
    this.held--;
    if (c.count === 0) {
      const key = index >>> CHUNK_SHIFT;
      this.chunks.delete(key);
      if (this.lastKey === key) this.lastChunk = undefined;
    }
    return page;
  }
}

/**
 * 64-bit unsigned arithmetic on (hi, lo) pairs of u32 Numbers.
 *
 * The data plane (walks, cache lookups, DMA, per-page loops) never touches `bigint`
 * (see docs/ARCHITECTURE.md, rule 1): a 64-bit value travels as two u32 halves. Functions that
 * produce a 64-bit result write it into a caller-owned `U64` so that no call allocates.
 * Everything here is property-tested against `bigint` in test/mem/u64.test.ts.
 */

/** A mutable 64-bit value split into two unsigned 32-bit halves. */
export class U64 {
  // Initialised with numbers, not left undefined: V8 then keeps the fields in an unboxed double
  // representation and a store of a u32 >= 2^30 does not allocate (measured: 4x faster walks).
  hi = 0;
  lo = 0;
  constructor(hi = 0, lo = 0) {
    this.hi = hi >>> 0;
    this.lo = lo >>> 0;
  }
  set(hi: number, lo: number): this {
    this.hi = hi >>> 0;
    this.lo = lo >>> 0;
    return this;
  }
  copyFrom(v: U64): this {
    this.hi = v.hi;
    this.lo = v.lo;
    return this;
  }
  toBigInt(): bigint {
    return toBigInt(this.hi, this.lo);
  }
  static of(v: bigint): U64 {
    const r = new U64();
    fromBigInt(v, r);
    return r;
  }
}

export const TWO32 = 4294967296;
export const MAX_SAFE_HI = 0x1fffff; // hi half of Number.MAX_SAFE_INTEGER

export function toBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Writes the low 64 bits of `v` (taken modulo 2^64) into `out`. */
export function fromBigInt(v: bigint, out: U64): U64 {
  const x = BigInt.asUintN(64, v);
  out.hi = Number(x >> 32n);
  out.lo = Number(x & 0xffffffffn);
  return out;
}

/** Splits a non-negative integer Number (< 2^53) into halves. */
export function fromNumber(n: number, out: U64): U64 {
  out.lo = n >>> 0;
  out.hi = (n - out.lo) / TWO32;
  return out;
}

/** Joins halves into a Number; exact only while hi <= MAX_SAFE_HI (callers check with fitsNumber). */
export function toNumber(hi: number, lo: number): number {
  return hi * TWO32 + lo;
}

export function fitsNumber(hi: number): boolean {
  return hi <= MAX_SAFE_HI;
}

/** out = a + b (mod 2^64); returns the carry out of bit 63 (0 or 1). */
export function add(ahi: number, alo: number, bhi: number, blo: number, out: U64): number {
  const lo = alo + blo;
  const carryLo = lo >= TWO32 ? 1 : 0;
  const hi = ahi + bhi + carryLo;
  out.lo = lo >>> 0;
  out.hi = hi >>> 0;
  return hi >= TWO32 ? 1 : 0;
}

/** out = a - b (mod 2^64); returns the borrow (1 when b > a). */
export function sub(ahi: number, alo: number, bhi: number, blo: number, out: U64): number {
  let lo = alo - blo;
  let borrowLo = 0;
  if (lo < 0) {
    lo += TWO32;
    borrowLo = 1;
  }
  let hi = ahi - bhi - borrowLo;
  let borrow = 0;
  if (hi < 0) {
    hi += TWO32;
    borrow = 1;
  }
  out.lo = lo;
  out.hi = hi;
  return borrow;
}

/** Unsigned comparison: -1, 0 or 1. */
export function cmp(ahi: number, alo: number, bhi: number, blo: number): number {
  if (ahi !== bhi) return ahi < bhi ? -1 : 1;
  if (alo !== blo) return alo < blo ? -1 : 1;
  return 0;
}

/** out = v >>> n (logical), 0 <= n <= 64. */
export function shr(hi: number, lo: number, n: number, out: U64): U64 {
  if (n === 0) {
    out.hi = hi >>> 0;
    out.lo = lo >>> 0;
  } else if (n < 32) {
    out.lo = ((lo >>> n) | (hi << (32 - n))) >>> 0;
    out.hi = hi >>> n;
  } else if (n < 64) {
    out.lo = hi >>> (n - 32);
    out.hi = 0;
  } else {
    out.hi = 0;
    out.lo = 0;
  }
  return out;
}

/** out = v << n (mod 2^64), 0 <= n <= 64. */
export function shl(hi: number, lo: number, n: number, out: U64): U64 {
  if (n === 0) {
    out.hi = hi >>> 0;
    out.lo = lo >>> 0;
  } else if (n < 32) {
    out.hi = ((hi << n) | (lo >>> (32 - n))) >>> 0;
    out.lo = (lo << n) >>> 0;
  } else if (n < 64) {
    out.hi = (lo << (n - 32)) >>> 0;
    out.lo = 0;
  } else {
    out.hi = 0;
    out.lo = 0;
  }
  return out;
}

/** Bits [shift, shift + width) of the 64-bit value, as a Number; width <= 32. */
export function bits(hi: number, lo: number, shift: number, width: number): number {
  let v: number;
  if (shift >= 32) v = hi >>> (shift - 32);
  else if (shift === 0) v = lo;
  else v = (lo >>> shift) | (hi << (32 - shift));
  return width >= 32 ? v >>> 0 : (v & ((1 << width) - 1)) >>> 0;
}

/** True when the low `n` bits (0 <= n <= 64) of the value are all zero. */
export function isAligned(hi: number, lo: number, n: number): boolean {
  if (n <= 0) return true;
  if (n < 32) return (lo & ((1 << n) - 1)) === 0;
  if (lo !== 0) return false;
  if (n === 32) return true;
  if (n < 64) return (hi & (((1 << (n - 32)) - 1) >>> 0)) === 0;
  return hi === 0;
}

/** Clears the low `n` bits (0 <= n <= 64). */
export function alignDown(hi: number, lo: number, n: number, out: U64): U64 {
  if (n <= 0) return out.set(hi, lo);
  if (n < 32) return out.set(hi, lo & ~((1 << n) - 1));
  if (n === 32) return out.set(hi, 0);
  if (n < 64) return out.set(hi & ~((1 << (n - 32)) - 1), 0);
  return out.set(0, 0);
}

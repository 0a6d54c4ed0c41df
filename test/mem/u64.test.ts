import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import * as u64 from "../../src/mem/u64.ts";

const M = (1n << 64n) - 1n;
const out = new u64.U64();
const h = (v: bigint) => Number(v >> 32n);
const l = (v: bigint) => Number(v & 0xffffffffn);
const arbU64 = fc.oneof(
  fc.bigInt({ min: 0n, max: M }),
  fc.constantFrom(0n, 1n, 0xffffffffn, 0x100000000n, M, M - 1n, 1n << 63n, (1n << 52n) - 1n),
);

describe("u64 helpers against bigint", () => {
  it("round-trips through halves", () => {
    fc.assert(fc.property(arbU64, (a) => assert.equal(u64.fromBigInt(a, out).toBigInt(), a)));
  });
  it("adds with carry", () => {
    fc.assert(
      fc.property(arbU64, arbU64, (a, b) => {
        const c = u64.add(h(a), l(a), h(b), l(b), out);
        assert.equal(out.toBigInt(), (a + b) & M);
        assert.equal(c, a + b > M ? 1 : 0);
      }),
    );
  });
  it("subtracts with borrow", () => {
    fc.assert(
      fc.property(arbU64, arbU64, (a, b) => {
        const br = u64.sub(h(a), l(a), h(b), l(b), out);
        assert.equal(out.toBigInt(), (a - b) & M);
        assert.equal(br, b > a ? 1 : 0);
      }),
    );
  });
  it("compares unsigned", () => {
    fc.assert(
      fc.property(arbU64, arbU64, (a, b) =>
        assert.equal(u64.cmp(h(a), l(a), h(b), l(b)), a < b ? -1 : a > b ? 1 : 0),
      ),
    );
  });
  it("shifts left and right by 0..64", () => {
    fc.assert(
      fc.property(arbU64, fc.integer({ min: 0, max: 64 }), (a, n) => {
        assert.equal(u64.shr(h(a), l(a), n, out).toBigInt(), a >> BigInt(n));
        assert.equal(u64.shl(h(a), l(a), n, out).toBigInt(), (a << BigInt(n)) & M);
      }),
    );
  });
  it("extracts bit fields, tests and applies alignment", () => {
    fc.assert(
      fc.property(
        arbU64,
        fc.integer({ min: 0, max: 63 }),
        fc.integer({ min: 1, max: 32 }),
        (a, s, w) => {
          assert.equal(
            u64.bits(h(a), l(a), s, w),
            Number((a >> BigInt(s)) & ((1n << BigInt(w)) - 1n)),
          );
          const mask = (1n << BigInt(s)) - 1n;
          assert.equal(u64.isAligned(h(a), l(a), s), (a & mask) === 0n);
          assert.equal(u64.alignDown(h(a), l(a), s, out).toBigInt(), a & ~mask & M);
        },
      ),
    );
    assert.equal(u64.isAligned(0, 0, 64), true);
    assert.equal(u64.isAligned(1, 0, 64), false);
  });
  it("converts safe Numbers exactly", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
        u64.fromNumber(n, out);
        assert.equal(out.toBigInt(), BigInt(n));
        assert.equal(u64.toNumber(out.hi, out.lo), n);
        assert.ok(u64.fitsNumber(out.hi));
      }),
    );
    assert.equal(u64.fitsNumber(0x200000), false);
  });
});

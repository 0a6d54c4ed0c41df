import assert from "node:assert/strict";
import { test } from "node:test";
import { EFAULT } from "../../src/errno.ts";
import { ArrayUserMemory, checkZeroedUser } from "../../src/uapi/index.ts";

test("reads and writes span adjacent regions; a gap faults", () => {
  const m = new ArrayUserMemory();
  const a = m.map(0x1000n, 8);
  const b = m.map(0x1008n, 8);
  assert.equal(m.write(0x1004n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)), 0);
  assert.deepEqual([...a], [0, 0, 0, 0, 1, 2, 3, 4]);
  assert.deepEqual([...b], [5, 6, 7, 8, 0, 0, 0, 0]);
  const dst = new Uint8Array(8);
  assert.equal(m.read(0x1004n, dst), 0);
  assert.deepEqual([...dst], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(m.read(0x100cn, new Uint8Array(5)), EFAULT);
  assert.equal(m.read(0xffcn, new Uint8Array(8)), EFAULT);
});

test("NULL faults, zero-length accesses never fault, unmap makes memory fault", () => {
  const m = new ArrayUserMemory();
  assert.equal(m.read(0n, new Uint8Array(4)), EFAULT);
  assert.equal(m.read(0n, new Uint8Array(0)), 0);
  assert.equal(m.write(0n, new Uint8Array(0)), 0);
  m.map(0x2000n, 16);
  assert.equal(m.read(0x2000n, new Uint8Array(16)), 0);
  m.unmap(0x2000n);
  assert.equal(m.read(0x2000n, new Uint8Array(1)), EFAULT);
  assert.throws(() => m.unmap(0x2000n), RangeError);
});

test("a faulting write keeps the bytes before the fault, like copy_to_user", () => {
  const m = new ArrayUserMemory();
  const a = m.map(0x1000n, 4);
  m.map(0x1004n, 4, { writable: false });
  assert.equal(m.write(0x1002n, Uint8Array.of(9, 9, 9, 9)), EFAULT);
  assert.deepEqual([...a], [0, 0, 9, 9]);
  assert.equal(m.read(0x1004n, new Uint8Array(4)), 0);
});

test("overlapping maps are refused", () => {
  const m = new ArrayUserMemory();
  m.map(0x1000n, 16);
  assert.throws(() => m.map(0x100fn, 4), /overlaps/);
  assert.throws(() => m.map(0xff0n, 0x11), /overlaps/);
  m.map(0x1010n, 4);
  m.map(0xff0n, 0x10);
});

test("checkZeroedUser: zero, non-zero, and which comes first, a hole or a non-zero byte", () => {
  const m = new ArrayUserMemory();
  const mem = m.map(0x1000n, 3 * 4096);
  assert.equal(checkZeroedUser(m, 0x1003n, 3 * 4096 - 3), 1);
  mem[2 * 4096 + 17] = 1;
  assert.equal(checkZeroedUser(m, 0x1003n, 3 * 4096 - 3), 0);
  assert.equal(checkZeroedUser(m, 0x1003n, 2 * 4096), 1);
  // Non-zero byte, then the end of the mapping: the non-zero byte decides (E2BIG).
  assert.equal(checkZeroedUser(m, 0x1000n, 4 * 4096), 0);
  mem[2 * 4096 + 17] = 0;
  // All zero up to a hole: the hole decides (EFAULT).
  assert.equal(checkZeroedUser(m, 0x1000n, 4 * 4096), -1);
  assert.equal(checkZeroedUser(m, 0x5000n, 1), -1);
  // Inside one page: a non-zero byte before the page's hole still wins.
  const short = m.map(0x8000n, 100);
  short[50] = 7;
  assert.equal(checkZeroedUser(m, 0x8000n, 4096), 0);
  short[50] = 0;
  assert.equal(checkZeroedUser(m, 0x8000n, 4096), -1);
  assert.equal(checkZeroedUser(m, 0x5000n, 0), 1);
});

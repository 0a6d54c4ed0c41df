import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { PageAllocator } from "../../src/mem/alloc.ts";
import { PHYS_ADDR_LIMIT, PhysMem } from "../../src/mem/phys.ts";
import { U64 } from "../../src/mem/u64.ts";

describe("PhysMem", () => {
  it("reads zeros where nothing was written, without allocating", () => {
    const m = new PhysMem();
    assert.equal(m.read32(0x1234_5678_0000), 0);
    assert.equal(m.read64(2 ** 51, new U64()).toBigInt(), 0n);
    assert.equal(m.allocatedBytes, 0);
  });

  it("stores every width in both byte orders at addresses up to 2^52", () => {
    const m = new PhysMem();
    const top = PHYS_ADDR_LIMIT - 8;
    m.write64(top, 0x01020304, 0x05060708);
    assert.equal(m.read8(top), 0x08);
    assert.equal(m.read8(top + 7), 0x01);
    assert.equal(m.read16(top), 0x0708);
    assert.equal(m.read16be(top), 0x0807);
    assert.equal(m.read32(top + 4), 0x01020304);
    assert.equal(m.read32be(top), 0x08070605);
    const v = m.read64be(top, new U64());
    assert.equal(v.toBigInt(), 0x0807060504030201n);
    m.write64be(0x1000, 0x11223344, 0x55667788);
    assert.equal(m.read8(0x1000), 0x11);
    assert.equal(m.read8(0x1007), 0x88);
    m.write16be(0x2001, 0xabcd);
    assert.equal(m.read8(0x2001), 0xab);
    m.write32be(0x3000, 0xdeadbeef);
    assert.equal(m.read32(0x3000), 0xefbeadde);
  });

  it("handles unaligned accesses across chunk boundaries", () => {
    const m = new PhysMem();
    const a = 0x10000 - 3; // straddles a 64 KiB chunk boundary
    m.write32(a, 0xa1b2c3d4);
    assert.equal(m.read32(a), 0xa1b2c3d4);
    m.write64(a, 0xffffffff, 0x01234567);
    assert.equal(m.read64(a, new U64()).toBigInt(), 0xffffffff01234567n);
  });

  it("refuses addresses at or above 2^52", () => {
    const m = new PhysMem();
    assert.throws(() => m.write32(PHYS_ADDR_LIMIT, 1), RangeError);
    assert.throws(() => m.read32(PHYS_ADDR_LIMIT + 4096), RangeError);
    assert.throws(() => m.writeBytes(PHYS_ADDR_LIMIT - 2, new Uint8Array(4)), RangeError);
    assert.throws(() => m.read32(-4), RangeError);
  });

  it("copies bytes in and out, matching a flat model", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            off: fc.integer({ min: 0, max: 300_000 }),
            data: fc.uint8Array({ minLength: 1, maxLength: 70_000 }),
          }),
          {
            maxLength: 8,
          },
        ),
        (writes) => {
          const m = new PhysMem();
          const flat = new Uint8Array(400_000);
          const base = 2 ** 40 - 65_536;
          for (const w of writes) {
            m.writeBytes(base + w.off, w.data);
            flat.set(w.data, w.off);
          }
          const got = new Uint8Array(flat.length);
          m.readBytes(base, got);
          assert.deepEqual(got, flat);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("counts one access per call whatever its width", () => {
    const m = new PhysMem();
    m.write64(0, 1, 2);
    m.read64(0, new U64());
    m.read8(3);
    m.read32be(0);
    assert.equal(m.writes, 1);
    assert.equal(m.reads, 3);
    m.writeBytes(100, new Uint8Array(10));
    assert.equal(m.bytesWritten, 10);
    m.resetCounters();
    assert.equal(m.reads + m.writes + m.bytesWritten, 0);
  });

  it("zero() returns whole chunks to unallocated", () => {
    const m = new PhysMem();
    m.write32(0x20000, 7);
    m.write32(0x30004, 9);
    assert.equal(m.allocatedBytes, 2 * 65536);
    m.zero(0x20000, 65536 + 4);
    assert.equal(m.read32(0x20000), 0);
    assert.equal(m.read32(0x30004), 9);
    m.zero(0x30000, 8);
    assert.equal(m.read32(0x30004), 0);
    assert.equal(m.allocatedBytes, 65536);
  });
});

describe("PageAllocator", () => {
  it("hands out naturally aligned zeroed blocks and reuses freed ones", () => {
    const m = new PhysMem();
    const a = new PageAllocator(m, { base: 0x1000 });
    const p1 = a.alloc(12);
    const p2 = a.alloc(14);
    const p3 = a.alloc(11);
    assert.equal(p1 % 4096, 0);
    assert.equal(p2 % 16384, 0);
    assert.equal(p3 % 2048, 0);
    assert.equal(a.live, 3);
    m.write32(p1 + 100, 0xffff);
    a.release(p1);
    const p4 = a.alloc(12);
    assert.equal(p4 % 4096, 0);
    assert.equal(m.read32(p4 + 100), 0, "a reused block is zeroed");
    assert.equal(a.live, 3);
    assert.throws(() => a.release(p1 + 8));
    assert.equal(a.liveBytes, 4096 + 16384 + 2048);
  });

  it("never hands out overlapping blocks", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 8, max: 16 }), { minLength: 1, maxLength: 60 }),
        (sizes) => {
          const a = new PageAllocator(new PhysMem(), { base: 0x3000 });
          const blocks = sizes.map((s) => ({ pa: a.alloc(s), size: 2 ** s }));
          blocks.sort((x, y) => x.pa - y.pa);
          for (let i = 1; i < blocks.length; i++)
            assert.ok(blocks[i - 1].pa + blocks[i - 1].size <= blocks[i].pa);
          for (const b of blocks) assert.equal(b.pa % b.size, 0);
        },
      ),
    );
  });

  it("fails with RangeError when its region is exhausted", () => {
    const a = new PageAllocator(new PhysMem(), { base: 0, size: 8192 });
    a.alloc(12);
    a.alloc(12);
    assert.throws(() => a.alloc(12), RangeError);
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { kstrtouint } from "../../src/daemon/fail_nth_file.ts";
import {
  buildPayload,
  encodeFrame,
  FrameReader,
  HEADER_SIZE,
  IOCTL_LAYOUT,
  MAX_FRAME,
  Op,
  REQUEST_LAYOUTS,
  SecretTable,
} from "../../src/daemon/protocol.ts";
import { E2BIG, EINVAL, ERANGE } from "../../src/errno.ts";

describe("frames", () => {
  it("encodes the header little-endian with the total length first", () => {
    const f = encodeFrame(Op.IOCTL, 7, -E2BIG, Buffer.from([1, 2, 3]));
    assert.equal(f.length, HEADER_SIZE + 3);
    assert.deepEqual([...f.subarray(0, 4)], [19, 0, 0, 0]);
    assert.equal(f.readUInt32LE(4), Op.IOCTL);
    assert.equal(f.readUInt32LE(8), 7);
    assert.equal(f.readInt32LE(12), -7);
    assert.deepEqual([...f.subarray(16)], [1, 2, 3]);
  });

  it("reassembles frames split at any byte boundaries", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }),
        (payloads, cuts) => {
          const stream = Buffer.concat(payloads.map((p, i) => encodeFrame(Op.PING, i, i, p)));
          const r = new FrameReader();
          const got: Buffer[] = [];
          let at = 0;
          let c = 0;
          while (at < stream.length) {
            const n = cuts[c++ % cuts.length];
            const { frames, badLength } = r.push(Buffer.from(stream.subarray(at, at + n)));
            assert.equal(badLength, undefined);
            for (const f of frames) got.push(Buffer.from(f.payload));
            at += n;
          }
          assert.equal(r.pending, 0);
          assert.deepEqual(
            got.map((b) => [...b]),
            payloads.map((p) => [...p]),
          );
        },
      ),
    );
  });

  it("reassembles from one reused read buffer, keeping only its own copies", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 30 }),
        (payloads, cuts) => {
          const stream = Buffer.concat(payloads.map((p, i) => encodeFrame(Op.PING, i, i, p)));
          const r = new FrameReader();
          const shared = Buffer.alloc(64);
          const got: number[][] = [];
          let at = 0;
          let c = 0;
          while (at < stream.length) {
            const n = Math.min(cuts[c++ % cuts.length], stream.length - at);
            stream.copy(shared, 0, at, at + n);
            const bad = r.pushEach(shared, (f) => got.push([...f.payload]), n);
            assert.equal(bad, undefined);
            shared.fill(0xee); // the next read overwrites it
            at += n;
          }
          assert.equal(r.pending, 0);
          assert.deepEqual(
            got,
            payloads.map((p) => [...p]),
          );
        },
      ),
    );
  });

  it("finds values by secret without mixing secrets that share a first word", () => {
    const t = new SecretTable<string>();
    const a = Buffer.alloc(16, 1);
    const b = Buffer.from(a);
    b[15] = 2; // same first word, different last
    t.set(a, "a");
    t.set(b, "b");
    const frame = Buffer.concat([Buffer.alloc(5), b]);
    assert.equal(t.get(frame, 5), "b");
    assert.equal(t.get(Buffer.concat([Buffer.alloc(3), a]), 3), "a");
    assert.equal(t.get(Buffer.alloc(16, 1).fill(9, 8), 0), undefined);
    assert.equal(t.size, 2);
    t.delete(a, "a");
    assert.equal(t.get(a, 0), undefined);
    assert.equal(t.get(b, 0), "b");
    assert.deepEqual([...t.values()], ["b"]);
  });

  it("reports a length field it cannot resynchronise from", () => {
    for (const len of [0, HEADER_SIZE - 1, MAX_FRAME + 1, 0xffff_ffff]) {
      const r = new FrameReader();
      const b = Buffer.alloc(HEADER_SIZE);
      b.writeUInt32LE(len, 0);
      assert.equal(r.push(b).badLength, len);
    }
    // The frames before a bad one are still delivered.
    const r = new FrameReader();
    const bad = Buffer.alloc(4);
    bad.writeUInt32LE(3, 0);
    const out = r.push(Buffer.concat([encodeFrame(Op.PING, 1, 0), bad]));
    assert.equal(out.frames.length, 1);
    assert.equal(out.badLength, 3);
  });

  it("builds payloads at the layout's offsets", () => {
    const secret = Buffer.alloc(16, 0xab);
    const p = buildPayload(IOCTL_LAYOUT, {
      secret,
      cmd: 0x3b80,
      tid: 5,
      arg: 0x1122_3344_5566_7788n,
      pid: 9,
      reservedFd: -1,
    });
    assert.equal(p.length, REQUEST_LAYOUTS[Op.IOCTL].size);
    assert.deepEqual([...p.subarray(0, 16)], [...secret]);
    assert.equal(p.readUInt32LE(16), 0x3b80);
    assert.equal(p.readBigUInt64LE(24), 0x1122_3344_5566_7788n);
    assert.equal(p.readInt32LE(36), -1);
    assert.throws(() => buildPayload(IOCTL_LAYOUT, { nope: 1 }));
  });
});

describe("kstrtouint (fail-nth writes)", () => {
  const parse = (s: string) => kstrtouint(Buffer.from(s));

  it("takes decimal, 0x hex and 0 octal, with '+' and one trailing newline", () => {
    assert.equal(parse("1"), 1);
    assert.equal(parse("400\n"), 400);
    assert.equal(parse("+7"), 7);
    assert.equal(parse("0x1F"), 31);
    assert.equal(parse("010"), 8);
    assert.equal(parse("0"), 0);
    assert.equal(parse("4294967295"), 4294967295);
    // Stops at an embedded NUL, as the kernel's string does.
    assert.equal(kstrtouint(Buffer.from([0x33, 0, 0x78])), 3);
  });

  it("rejects what the kernel rejects", () => {
    for (const s of ["", "\n", "-1", "abc", "1 ", "5\n\n", "0x", "08", "1x"]) {
      assert.equal(parse(s), -EINVAL, JSON.stringify(s));
    }
    assert.equal(parse("4294967296"), -ERANGE);
    // A u64 overflow is ERANGE before the trailing-character check; within u64 it is not.
    assert.equal(parse("18446744073709551616x"), -ERANGE);
    assert.equal(parse("4294967296x"), -EINVAL);
  });

  it("agrees with a reference parse on decimal strings", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 1n << 40n }), fc.boolean(), (n, nl) => {
        const got = parse(`${n}${nl ? "\n" : ""}`);
        assert.equal(got, n > 0xffff_ffffn ? -ERANGE : Number(n));
      }),
    );
  });
});

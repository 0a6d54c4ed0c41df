/**
 * The vEVENTQ object (spec viommu-eventq.md §5, mock-driver-failnth.md §2.16):
 * IOMMU_VEVENTQ_ALLOC, event reporting with the lost-events header and sequence numbers, and
 * the read / write / poll of the queue fd — the `vdevice_alloc` selftest step by step, plus a
 * model-based property test of report / read sequences.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  EPOLLIN,
  EPOLLRDNORM,
  type EventqFile,
  VEVENTQ_MAX_DEPTH,
  type Veventq,
  viommuReportEvent,
} from "../../src/core/eventq.ts";
import type { Viommu } from "../../src/core/viommu.ts";
import { EBUSY, EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP } from "../../src/errno.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import { teardown, ViommuHarness, viommuSetup } from "./viommu_fixture.ts";

const LOST = 1;
const SELFTEST = 0xbeefbeef;

interface Rec {
  flags: number;
  seq: number;
  virtId?: number;
}

/** Splits what a read returned into records (12-byte events, 8-byte lost headers). */
function parse(bytes: Uint8Array): Rec[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Rec[] = [];
  for (let at = 0; at < bytes.length; ) {
    const flags = v.getUint32(at, true);
    const seq = v.getUint32(at + 4, true);
    at += 8;
    if (flags & LOST) {
      out.push({ flags, seq });
    } else {
      out.push({ flags, seq, virtId: v.getUint32(at, true) });
      at += 4;
    }
  }
  return out;
}

/**
 * _test_cmd_read_vevents: reads n * 12 bytes; LOST flag or a sequence gap is EOVERFLOW (here:
 * "overflow"); else the first record's virt_id must be the expected one. Returns the new
 * prev_seq and the verdict.
 */
function readVevents(file: EventqFile, n: number, prevSeq: number, virtId: number) {
  const r = file.readRecords(n * 12);
  assert.equal(r.errno, 0);
  assert.ok(r.bytes.length > 0);
  const recs = parse(r.bytes);
  let prev = prevSeq;
  for (const rec of recs) {
    if (rec.flags & LOST || (rec.seq - prev) >>> 0 > 1) return { prev: rec.seq, overflow: true };
    prev = rec.seq;
  }
  assert.equal(recs[0].virtId, virtId);
  return { prev, overflow: false };
}

describe("IOMMU_VEVENTQ_ALLOC", () => {
  it("no_viommu: viommu 0 is ENOENT", () => {
    const h = new ViommuHarness();
    assert.equal(h.veventqAlloc(0, 2).errno, ENOENT);
    assert.deepEqual(teardown(h), []);
  });

  it("checks flags, __reserved and type, then the depth, then the vIOMMU", () => {
    const { h, viommuId } = viommuSetup();
    assert.equal(h.veventqAlloc(viommuId, 2, { flags: 1 }).errno, EOPNOTSUPP);
    assert.equal(h.veventqAlloc(viommuId, 2, { reserved: 1 }).errno, EOPNOTSUPP);
    assert.equal(h.veventqAlloc(viommuId, 2, { type: 0 }).errno, EOPNOTSUPP);
    assert.equal(h.veventqAlloc(0, 0).errno, EINVAL, "depth before the lookup");
    assert.equal(h.veventqAlloc(viommuId, VEVENTQ_MAX_DEPTH + 1).errno, EINVAL);
    assert.equal(h.veventqAlloc(0, 2).errno, ENOENT);
    // Any non-zero type is accepted, one queue per type.
    const other = h.veventqAllocOk(viommuId, 2);
    const r = h.veventqAlloc(viommuId, 2, { type: 0x1234 });
    assert.equal(r.errno, 0);
    assert.equal(h.veventqAlloc(viommuId, 2).errno, EEXIST);
    other.file.close();
    assert.equal(h.destroy(other.id), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("the fd holds the queue, the queue holds the vIOMMU", () => {
    const { h, viommuId } = viommuSetup();
    const users = h.users(viommuId);
    const q = h.veventqAllocOk(viommuId, VEVENTQ_MAX_DEPTH);
    assert.equal(q.file.name, "[iommufd-viommu-event]");
    assert.equal(h.users(viommuId), users + 1);
    assert.equal(h.destroy(q.id), EBUSY);
    q.file.close();
    assert.equal(h.destroy(q.id), 0);
    assert.equal(h.users(viommuId), users);
    // A new queue of the same type can be made now.
    assert.equal(h.veventqAlloc(viommuId, 2).errno, 0);
    assert.deepEqual(teardown(h), []);
  });
});

describe("vEVENTQ fd", () => {
  it("vdevice_alloc: the selftest's event sequence", () => {
    const { h, ioasId, devId, viommuId, nestedId, dev } = viommuSetup();
    assert.equal(h.replace(dev, nestedId), ENOENT);
    assert.equal(h.veventqAlloc(viommuId, 0).errno, EINVAL);
    assert.equal(h.veventqAlloc(viommuId, VEVENTQ_MAX_DEPTH + 1).errno, EINVAL);
    const big = h.veventqAllocOk(viommuId, VEVENTQ_MAX_DEPTH);
    big.file.close();
    assert.equal(h.destroy(big.id), 0);
    const q = h.veventqAllocOk(viommuId, 2);
    assert.equal(h.veventqAlloc(viommuId, 2).errno, EEXIST);
    const file = q.file;
    // Empty queue: count 0 and 7 are EINVAL, 8 reads nothing.
    assert.equal(file.readRecords(0).errno, EINVAL);
    assert.equal(file.readRecords(7).errno, EINVAL);
    assert.deepEqual(file.readRecords(8), { errno: 0, bytes: new Uint8Array(0) });
    assert.equal(file.pollReady(), 0);
    // No vDEVICE yet: the device remembers no vIOMMU.
    assert.equal(h.triggerVevent(devId), ENOENT);
    const vdev = h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.equal(h.replace(dev, nestedId), 0);
    assert.equal(h.triggerVevent(devId), 0);
    assert.equal(file.pollReady(), EPOLLIN | EPOLLRDNORM);
    assert.equal(file.readRecords(0).errno, EINVAL);
    assert.equal(file.readRecords(8).errno, EINVAL, "a 12-byte event does not fit");
    let prev = -1;
    let r = readVevents(file, 1, prev, 0x99);
    assert.equal(r.overflow, false);
    prev = r.prev;
    assert.equal(prev, 0);
    assert.equal(h.vdeviceAlloc(viommuId, devId, 0x99n).errno, EEXIST);
    assert.equal(h.replace(dev, ioasId), 0);
    assert.equal(h.destroy(vdev), 0);
    h.vdeviceAllocOk(viommuId, devId, 0x88n);
    assert.equal(h.replace(dev, nestedId), 0);
    // Three events on a depth-2 queue: the third is lost.
    for (let i = 0; i < 3; i++) assert.equal(h.triggerVevent(devId), 0);
    const viewed = (file.eventq as Veventq).queued().map((e) => [e.flags, e.sequence]);
    assert.deepEqual(viewed, [
      [0, 1],
      [0, 2],
      [LOST, 3],
    ]);
    const three = file.readRecords(36);
    assert.equal(three.bytes.length, 32);
    assert.deepEqual(parse(three.bytes), [
      { flags: 0, seq: 1, virtId: 0x88 },
      { flags: 0, seq: 2, virtId: 0x88 },
      { flags: LOST, seq: 3 },
    ]);
    prev = 3;
    assert.equal(h.triggerVevent(devId), 0);
    r = readVevents(file, 1, prev, 0x88);
    assert.equal(r.overflow, false);
    assert.equal(r.prev, 4);
    file.close();
    assert.equal(h.replace(dev, ioasId), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("the lost header alone is read as 8 bytes; a normal event after it replaces it", () => {
    const { h, viommuId } = viommuSetup();
    const v = h.ctx.table.peek(viommuId) as Viommu;
    const q = h.veventqAllocOk(viommuId, 1);
    const ev = Uint8Array.of(1, 0, 0, 0);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0, "lost, still 0");
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0, "lost again: the header moves on");
    const queue = q.file.eventq as Veventq;
    assert.deepEqual(
      queue.queued().map((e) => [e.flags, e.sequence]),
      [
        [0, 0],
        [LOST, 2],
      ],
    );
    // Read the event only (12 bytes): the header stays.
    assert.deepEqual(parse(q.file.readRecords(12).bytes), [{ flags: 0, seq: 0, virtId: 1 }]);
    assert.equal(q.file.pollReady(), EPOLLIN | EPOLLRDNORM, "the header alone is readable");
    // A read too small for the header leaves it in place; 8 bytes take it.
    const mem = h.proc.mmap(PAGE);
    assert.equal(q.file.read(h.proc, mem, 7), -EINVAL);
    assert.deepEqual(parse(q.file.readRecords(8).bytes), [{ flags: LOST, seq: 2 }]);
    assert.equal(q.file.pollReady(), 0);
    // Full again: the header follows the event; a read of 20 bytes takes both.
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.deepEqual(parse(q.file.readRecords(20).bytes), [
      { flags: 0, seq: 3, virtId: 1 },
      { flags: LOST, seq: 4 },
    ]);
    // A header not read yet is dropped when a normal event arrives after it.
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.deepEqual(parse(q.file.readRecords(12).bytes), [{ flags: 0, seq: 5, virtId: 1 }]);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), 0);
    assert.deepEqual(
      queue.queued().map((e) => [e.flags, e.sequence]),
      [[0, 7]],
      "the lost header (seq 6) gave way: the loss shows only as a sequence gap",
    );
    assert.deepEqual(teardown(h), []);
  });

  it("no queue of the type: EOPNOTSUPP; a failed allocation: ENOMEM with a lost header", () => {
    const { h, viommuId } = viommuSetup();
    const v = h.ctx.table.peek(viommuId) as Viommu;
    const ev = Uint8Array.of(5, 0, 0, 0);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), EOPNOTSUPP);
    const q = h.veventqAllocOk(viommuId, 4);
    assert.equal(viommuReportEvent(v, SELFTEST, new Uint8Array(0)), EINVAL);
    h.faults.arm(1);
    assert.equal(viommuReportEvent(v, SELFTEST, ev), ENOMEM);
    assert.deepEqual(parse(q.file.readRecords(8).bytes), [{ flags: LOST, seq: 0 }]);
    assert.equal((q.file.eventq as Veventq).numEvents, 0);
    assert.deepEqual(teardown(h), []);
  });

  it("copy faults put the event back; write is EINVAL", () => {
    const { h, viommuId } = viommuSetup();
    const v = h.ctx.table.peek(viommuId) as Viommu;
    const q = h.veventqAllocOk(viommuId, 4);
    viommuReportEvent(v, SELFTEST, Uint8Array.of(1, 0, 0, 0));
    viommuReportEvent(v, SELFTEST, Uint8Array.of(2, 0, 0, 0));
    const va = h.proc.mmap(2 * PAGE);
    h.proc.munmap(va + BigInt(PAGE), PAGE);
    // The second header would cross into the hole: one record read.
    assert.equal(q.file.read(h.proc, va + BigInt(PAGE - 16), 24), 12);
    // The payload of the next one lands in the hole: EFAULT, nothing consumed.
    assert.equal(q.file.read(h.proc, va + BigInt(PAGE - 8), 12), -EFAULT);
    assert.deepEqual(parse(q.file.readRecords(12).bytes), [{ flags: 0, seq: 1, virtId: 2 }]);
    assert.equal(q.file.writeResponses(new Uint8Array(8)).errno, EINVAL);
    assert.deepEqual(teardown(h), []);
  });
});

describe("vEVENTQ model", () => {
  /** The reference: what the spec says, written out plainly. */
  class Model {
    list: Rec[] = [];
    num = 0;
    seq = 0;
    lostInList = false;
    readonly depth: number;
    constructor(depth: number) {
      this.depth = depth;
    }
    report(id: number): void {
      const lost = this.num === this.depth;
      if (this.lostInList && this.list[this.list.length - 1].flags === LOST) {
        this.list.pop();
        this.lostInList = false;
      }
      if (lost) {
        this.list.push({ flags: LOST, seq: this.seq });
        this.lostInList = true;
      } else {
        this.list.push({ flags: 0, seq: this.seq, virtId: id });
        this.num++;
      }
      this.seq = (this.seq + 1) & 0x7fffffff;
    }
    read(count: number): Rec[] | "EINVAL" {
      if (count < 8) return "EINVAL";
      const out: Rec[] = [];
      let done = 0;
      while (this.list.length > 0) {
        const head = this.list[0];
        const size = head.flags === LOST ? 8 : 12;
        if (count - done < 8) break;
        if (size > count - done) {
          if (done === 0) return "EINVAL";
          break;
        }
        this.list.shift();
        if (head.flags === LOST) this.lostInList = false;
        else this.num--;
        out.push(head);
        done += size;
      }
      return out;
    }
  }

  it("matches the reference for any report / read sequence", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 40 })), { maxLength: 40 }),
        (depth, ops) => {
          const { h, viommuId } = viommuSetup();
          const v = h.ctx.table.peek(viommuId) as Viommu;
          const q = h.veventqAllocOk(viommuId, depth);
          const model = new Model(depth);
          let id = 1;
          for (const op of ops) {
            if (op < 0) {
              assert.equal(viommuReportEvent(v, SELFTEST, Uint8Array.of(id, 0, 0, 0)), 0);
              model.report(id);
              id++;
            } else {
              const got = q.file.readRecords(op);
              const want = model.read(op);
              if (want === "EINVAL") assert.equal(got.errno, EINVAL);
              else assert.deepEqual(parse(got.bytes), want);
            }
            assert.equal((q.file.eventq as Veventq).numEvents, model.num);
          }
          assert.deepEqual(teardown(h), []);
        },
      ),
      { numRuns: 150 },
    );
  });
});

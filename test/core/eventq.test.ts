/**
 * The FAULT object (spec viommu-eventq.md §4, mock-driver-failnth.md §2.14, §3.5):
 * IOMMU_FAULT_QUEUE_ALLOC, HWPTs with a FAULT, page-request routing, the exact read / write /
 * poll semantics of the fault fd, cookies, and the auto-answer on detach, replace and destroy.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { iommufdDeviceAttach, iommufdDeviceDetach } from "../../src/core/device.ts";
import {
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDNORM,
  type Fault,
  iommuReportDeviceFault,
  partialFaults,
} from "../../src/core/eventq.ts";
import { ctxFileRefs } from "../../src/core/mmap.ts";
import { EBUSY, EFAULT, EINVAL, ENOENT, EOPNOTSUPP, ESPIPE } from "../../src/errno.ts";
import { MOCK_FLAGS_DEVICE_PASID } from "../../src/hw/mock/index.ts";
import {
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_FAULT_ID_VALID,
} from "../../src/uapi/index.ts";
import { PAGE } from "./helpers/ioctl_harness.ts";
import {
  IOMMU_TEST_IOTLB_DEFAULT,
  teardown,
  UINT32_MAX,
  ViommuHarness,
  viommuSetup,
} from "./viommu_fixture.ts";

const LAST_PAGE = 2;
const PASID_VALID = 1;

interface PgFault {
  flags: number;
  devId: number;
  pasid: number;
  grpid: number;
  perm: number;
  reserved: number;
  addr: bigint;
  length: number;
  cookie: number;
}

function records(bytes: Uint8Array): PgFault[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: PgFault[] = [];
  for (let at = 0; at + 40 <= bytes.length; at += 40) {
    out.push({
      flags: v.getUint32(at, true),
      devId: v.getUint32(at + 4, true),
      pasid: v.getUint32(at + 8, true),
      grpid: v.getUint32(at + 12, true),
      perm: v.getUint32(at + 16, true),
      reserved: v.getUint32(at + 20, true),
      addr: v.getBigUint64(at + 24, true),
      length: v.getUint32(at + 32, true),
      cookie: v.getUint32(at + 36, true),
    });
  }
  return out;
}

function response(cookie: number, code: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, cookie, true);
  v.setUint32(4, code, true);
  return b;
}

/** alloc_hwpt_nested's IOPF part: a FAULT and a nested HWPT with it on the nest parent. */
function iopfSetup() {
  const s = viommuSetup();
  const { h, devId, parentId } = s;
  const fault = h.faultAllocOk();
  const r = h.hwptAlloc(devId, parentId, IOMMU_HWPT_FAULT_ID_VALID, {
    data: [IOMMU_TEST_IOTLB_DEFAULT],
    faultId: fault.id,
  });
  assert.equal(r.errno, 0);
  return { ...s, fault, iopfId: r.out.out_hwpt_id };
}

describe("IOMMU_FAULT_QUEUE_ALLOC", () => {
  it("flags must be 0; ids and fd are non-zero; the fd holds the object", () => {
    const h = new ViommuHarness();
    assert.equal(h.faultAlloc(1).errno, EOPNOTSUPP);
    const f = h.faultAllocOk();
    assert.ok(f.id !== 0 && f.fd !== 0);
    assert.equal(f.file.name, "[iommufd-pgfault]");
    assert.equal(ctxFileRefs(h.ctx), 1);
    assert.equal(h.destroy(f.id), EBUSY);
    assert.equal(f.file.pollReady(), EPOLLOUT);
    f.file.close();
    assert.equal(ctxFileRefs(h.ctx), 0);
    assert.equal(h.destroy(f.id), 0);
    // The fd number is free again.
    assert.equal(h.faultAllocOk().fd, f.fd);
    assert.deepEqual(teardown(h), [], "closing the fd at exit released the second FAULT");
  });

  it("a failed write-back releases the fd and the id", () => {
    const h = new ViommuHarness();
    const ro = h.words([16, 0, 0, 0], { writable: false });
    const r = h.call(IOMMU_FAULT_QUEUE_ALLOC, IOMMU_FAULT_ALLOC_LAYOUT, {}, { at: ro });
    assert.equal(r.errno, EFAULT);
    assert.equal(h.ctx.table.size, 0);
    assert.equal(ctxFileRefs(h.ctx), 0);
    const f = h.faultAllocOk();
    assert.equal(f.id, 1, "the id was freed");
    assert.equal(f.fd, 3, "the fd number was released");
    f.file.close();
    assert.deepEqual(teardown(h), []);
  });
});

describe("HWPTs with a FAULT", () => {
  it("alloc_hwpt_nested: flag rules, bad fault id, EBUSY while used", () => {
    const { h, ioasId, devId, parentId } = viommuSetup();
    const fault = h.faultAllocOk();
    const both = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_FAULT_ID_VALID;
    assert.equal(h.hwptAlloc(devId, ioasId, both, { faultId: fault.id }).errno, EOPNOTSUPP);
    const data = [IOMMU_TEST_IOTLB_DEFAULT];
    const size = h.ctx.table.size;
    const bad = h.hwptAlloc(devId, parentId, IOMMU_HWPT_FAULT_ID_VALID, {
      data,
      faultId: UINT32_MAX,
    });
    assert.equal(bad.errno, ENOENT);
    assert.equal(h.ctx.table.size, size, "the HWPT was undone");
    const r = h.hwptAlloc(devId, parentId, IOMMU_HWPT_FAULT_ID_VALID, { data, faultId: fault.id });
    assert.equal(r.errno, 0);
    fault.file.close();
    assert.equal(h.destroy(fault.id), EBUSY, "the HWPT holds it");
    assert.equal(h.destroy(r.out.out_hwpt_id), 0);
    assert.equal(h.destroy(fault.id), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("viommu_alloc_nested_iopf: on a vIOMMU, with flag checks", () => {
    const { h, ioasId, devId, viommuId, dev } = viommuSetup();
    const fault = h.faultAllocOk();
    const data = [IOMMU_TEST_IOTLB_DEFAULT];
    const v = IOMMU_HWPT_FAULT_ID_VALID;
    assert.equal(h.hwptAlloc(devId, viommuId, v, { data, faultId: UINT32_MAX }).errno, ENOENT);
    assert.equal(
      h.hwptAlloc(devId, viommuId, v | (1 << 31), { data, faultId: fault.id }).errno,
      EOPNOTSUPP,
    );
    const r = h.hwptAlloc(devId, viommuId, v, { data, faultId: fault.id });
    assert.equal(r.errno, 0);
    const iopfId = r.out.out_hwpt_id;
    assert.equal(h.replace(dev, iopfId), ENOENT, "no vDEVICE yet");
    h.vdeviceAllocOk(viommuId, devId, 0x99n);
    assert.equal(h.replace(dev, iopfId), 0);
    assert.equal(h.destroy(iopfId), EBUSY);
    assert.equal(h.triggerIopf(devId, 1), 0);
    const rd = fault.file.readRecords(40);
    assert.equal(rd.errno, 0);
    assert.equal(rd.bytes.length, 40);
    const [rec] = records(rd.bytes);
    assert.equal(fault.file.writeResponses(response(rec.cookie, 0)).count, 8);
    assert.equal(h.replace(dev, ioasId), 0);
    assert.equal(h.destroy(iopfId), 0);
    fault.file.close();
    assert.equal(h.destroy(fault.id), 0);
    assert.deepEqual(teardown(h), []);
  });
});

describe("fault fd read / write / poll", () => {
  it("delivers a record with the kernel's fields and takes its response", () => {
    const { h, devId, dev, iopfId, fault } = iopfSetup();
    const file = fault.file;
    assert.equal(h.replace(dev, iopfId), 0);
    assert.equal(file.pollReady(), EPOLLOUT);
    assert.equal(file.readRecords(40).bytes.length, 0, "empty queue reads 0");
    assert.equal(h.triggerIopf(devId, 1), 0);
    assert.equal(file.pollReady(), EPOLLOUT | EPOLLIN | EPOLLRDNORM);
    // Bad counts: not a multiple of 40 is ESPIPE, 0 with a group pending EINVAL.
    assert.equal(file.readRecords(41).errno, ESPIPE);
    assert.equal(file.readRecords(0).errno, EINVAL);
    const rd = file.readRecords(80);
    assert.equal(rd.errno, 0);
    assert.deepEqual(records(rd.bytes), [
      {
        flags: LAST_PAGE | PASID_VALID,
        devId,
        pasid: 1,
        grpid: 2,
        perm: 3,
        reserved: 0,
        addr: 0xdeadbeafn,
        length: 0,
        cookie: 1,
      },
    ]);
    assert.equal(file.pollReady(), EPOLLOUT, "a read group no longer makes the fd readable");
    // Responses: bad size ESPIPE, bad code EINVAL, unknown cookie EINVAL, then success.
    assert.equal(file.writeResponses(new Uint8Array(7)).errno, ESPIPE);
    assert.equal(file.writeResponses(new Uint8Array(0)).count, 0);
    assert.equal(file.writeResponses(response(1, 2)).errno, EINVAL);
    assert.equal(file.writeResponses(response(0, 0)).errno, EINVAL);
    assert.equal(file.writeResponses(response(2, 0)).errno, EINVAL);
    const group = (file.eventq as Fault).response.get(1);
    assert.deepEqual(file.writeResponses(response(1, 0)), { errno: 0, count: 8 });
    assert.equal(group?.response, 0);
    assert.equal(file.writeResponses(response(1, 0)).errno, EINVAL, "already answered");
    // pread is ESPIPE.
    const mem = h.proc.mmap(PAGE);
    assert.equal(file.read(h.proc, mem, 40, 1), -ESPIPE);
    assert.deepEqual(teardown(h), []);
  });

  it("cookies are the lowest free; a response stops at the first bad entry", () => {
    const { h, devId, dev, iopfId, fault } = iopfSetup();
    const file = fault.file;
    assert.equal(h.replace(dev, iopfId), 0);
    for (let i = 0; i < 3; i++) h.triggerIopf(devId, 1, { grpid: 10 + i });
    const all = records(file.readRecords(120).bytes);
    assert.deepEqual(
      all.map((r) => [r.grpid, r.cookie]),
      [
        [10, 1],
        [11, 2],
        [12, 3],
      ],
    );
    // Answer cookie 2, then a bad one: 8 bytes consumed.
    const both = new Uint8Array(16);
    both.set(response(2, 1), 0);
    both.set(response(9, 0), 8);
    assert.deepEqual(file.writeResponses(both), { errno: 0, count: 8 });
    h.triggerIopf(devId, 1, { grpid: 20 });
    assert.equal(records(file.readRecords(40).bytes)[0].cookie, 2, "cookie 2 reused");
    assert.deepEqual(teardown(h), []);
  });

  it("reads whole groups only; partial faults join their group", () => {
    const { h, devId, dev, iopfId, fault } = iopfSetup();
    const file = fault.file;
    assert.equal(h.replace(dev, iopfId), 0);
    const mdev = dev.mdev;
    const req = (flags: number, grpid: number, addr: bigint) => ({
      flags: flags | PASID_VALID,
      pasid: 1,
      grpid,
      perm: 1,
      addr,
    });
    assert.equal(iommuReportDeviceFault(mdev, req(0, 5, 0x1000n)), 0);
    assert.equal(iommuReportDeviceFault(mdev, req(0, 6, 0x2000n)), 0);
    assert.equal(iommuReportDeviceFault(mdev, req(0, 5, 0x3000n)), 0);
    assert.equal(partialFaults(mdev).length, 3);
    assert.equal(file.pollReady() & EPOLLIN, 0, "partials are not delivered");
    assert.equal(iommuReportDeviceFault(mdev, req(LAST_PAGE, 5, 0x4000n)), 0);
    assert.equal(partialFaults(mdev).length, 1, "grpid 6 still parked");
    assert.equal(h.triggerIopf(devId, 1, { grpid: 7 }), 0);
    // The first group has 3 faults: 80 bytes does not fit it.
    assert.equal(file.readRecords(80).errno, EINVAL);
    // 120 bytes: the 3-fault group fits, the next one does not; it stays queued.
    const rd = records(file.readRecords(120).bytes);
    assert.deepEqual(
      rd.map((r) => [r.addr, r.flags, r.cookie]),
      [
        [0x1000n, PASID_VALID, 1],
        [0x3000n, PASID_VALID, 1],
        [0x4000n, PASID_VALID | LAST_PAGE, 1],
      ],
    );
    assert.equal(records(file.readRecords(40).bytes)[0].grpid, 7);
    assert.deepEqual(teardown(h), []);
  });

  it("a copy fault puts the group back: EFAULT, or the bytes of whole groups", () => {
    const { h, devId, dev, iopfId, fault } = iopfSetup();
    const file = fault.file;
    assert.equal(h.replace(dev, iopfId), 0);
    h.triggerIopf(devId, 1, { grpid: 1 });
    h.triggerIopf(devId, 1, { grpid: 2 });
    // A buffer whose second record would land on an unmapped page.
    const va = h.proc.mmap(2 * PAGE);
    h.proc.munmap(va + BigInt(PAGE), PAGE);
    const at = va + BigInt(PAGE - 40);
    assert.equal(file.read(h.proc, at, 80), 40);
    assert.equal(file.read(h.proc, va + BigInt(PAGE), 40), -EFAULT);
    const rest = records(file.readRecords(40).bytes);
    assert.deepEqual(
      rest.map((r) => [r.grpid, r.cookie]),
      [[2, 2]],
      "the failed read freed its cookie and kept the group",
    );
    // A response from unreadable memory is EFAULT.
    assert.equal(file.write(h.proc, va + BigInt(PAGE), 8), -EFAULT);
    assert.deepEqual(teardown(h), []);
  });
});

describe("page-request routing", () => {
  it("RID on a plain paging HWPT without a FAULT: dropped", () => {
    const { h, devId, dev } = viommuSetup();
    assert.equal(h.triggerIopf(devId, 0), 0, "TRIGGER_IOPF is 0 whatever happens");
    assert.equal(
      iommuReportDeviceFault(dev.mdev, { flags: LAST_PAGE, pasid: 0, grpid: 1, perm: 1, addr: 0n }),
      EINVAL,
    );
    assert.equal(h.triggerIopf(0, 0), ENOENT);
    assert.deepEqual(teardown(h), []);
  });

  it("an unattached PASID falls back to the RID only when it is NESTED", () => {
    const { h, devId, dev, fault } = iopfSetup();
    // A paging HWPT with a FAULT on the RID: PASID requests are not routed to it.
    const pagingFault = h.hwptAlloc(devId, h.ioasAlloc(), IOMMU_HWPT_FAULT_ID_VALID, {
      faultId: fault.id,
    });
    assert.equal(pagingFault.errno, 0);
    assert.equal(h.replace(dev, pagingFault.out.out_hwpt_id), 0);
    assert.equal(h.triggerIopf(devId, 1), 0);
    assert.equal(fault.file.pollReady() & EPOLLIN, 0);
    // Without PASID the RID's paging HWPT takes it.
    assert.equal(h.triggerIopf(devId, 0), 0);
    const [rec] = records(fault.file.readRecords(40).bytes);
    assert.equal(rec.flags, LAST_PAGE);
    assert.equal(rec.pasid, 0);
    assert.deepEqual(teardown(h), []);
  });

  it("pasid_attach: a PASID attached to a FAULT HWPT gets its requests", () => {
    const h = new ViommuHarness();
    const ioasId = h.ioasAlloc();
    const dev = h.bind(ioasId, MOCK_FLAGS_DEVICE_PASID);
    const devId = dev.idev.id;
    const fault = h.faultAllocOk();
    const parent = h.hwptAllocOk(devId, ioasId, IOMMU_HWPT_ALLOC_NEST_PARENT);
    const r = h.hwptAlloc(devId, parent, IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID, {
      data: [IOMMU_TEST_IOTLB_DEFAULT],
      faultId: fault.id,
    });
    assert.equal(r.errno, 0);
    // The RID must be on a PASID-compatible HWPT too.
    const ridHwpt = h.hwptAllocOk(devId, ioasId, IOMMU_HWPT_ALLOC_PASID);
    assert.equal(h.replace(dev, ridHwpt), 0);
    iommufdDeviceAttach(dev.idev, 2048, r.out.out_hwpt_id);
    assert.equal(h.triggerIopf(devId, 2048), 0);
    const rd = records(fault.file.readRecords(40).bytes);
    assert.equal(rd.length, 1);
    assert.equal(rd[0].pasid, 2048);
    assert.equal(fault.file.writeResponses(response(rd[0].cookie, 0)).count, 8);
    // A request pending on the PASID is answered INVALID when the PASID is detached.
    h.triggerIopf(devId, 2048);
    const pending = (fault.file.eventq as Fault).deliver[0];
    iommufdDeviceDetach(dev.idev, 2048);
    assert.equal(pending.response, 1);
    assert.equal(fault.file.pollReady() & EPOLLIN, 0);
    assert.deepEqual(teardown(h), []);
  });
});

describe("pending faults when the attachment goes", () => {
  it("replace away answers both unread and read groups INVALID", () => {
    const { h, ioasId, devId, dev, iopfId, fault } = iopfSetup();
    const file = fault.file;
    const q = file.eventq as Fault;
    assert.equal(h.replace(dev, iopfId), 0);
    h.triggerIopf(devId, 1, { grpid: 1 });
    h.triggerIopf(devId, 1, { grpid: 2 });
    const [read] = records(file.readRecords(40).bytes);
    const readGroup = q.response.get(read.cookie);
    const unread = q.deliver[0];
    assert.equal(h.replace(dev, ioasId), 0);
    assert.equal(readGroup?.response, 1);
    assert.equal(unread.response, 1);
    assert.equal(q.deliver.length + q.response.size, 0);
    assert.equal(file.writeResponses(response(read.cookie, 0)).errno, EINVAL);
    assert.equal(h.destroy(iopfId), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("destroying the FAULT answers what is left; closing the fd alone flushes nothing", () => {
    const { h, ioasId, devId, dev, iopfId, fault } = iopfSetup();
    const q = fault.file.eventq as Fault;
    assert.equal(h.replace(dev, iopfId), 0);
    h.triggerIopf(devId, 1);
    fault.file.close();
    assert.equal(q.deliver.length, 1);
    h.triggerIopf(devId, 1);
    assert.equal(q.deliver.length, 2, "faults keep queueing after close");
    const groups = [...q.deliver];
    // Detach: the groups of this attachment go.
    assert.equal(h.replace(dev, ioasId), 0);
    assert.ok(groups.every((g) => g.response === 1));
    assert.equal(h.destroy(iopfId), 0);
    assert.equal(h.destroy(fault.id), 0);
    assert.deepEqual(teardown(h), []);
  });

  it("a fault fd open at close keeps its FAULT until the fd closes", () => {
    const { h, devId, dev, iopfId, fault } = iopfSetup();
    assert.equal(h.replace(dev, iopfId), 0);
    h.triggerIopf(devId, 1);
    for (const b of [...h.bound]) h.unplug(b);
    const stuck = h.ctx.close();
    assert.deepEqual(
      stuck.map((o) => o.id),
      [fault.id],
    );
    assert.equal(ctxFileRefs(h.ctx), 1);
    fault.file.close();
    assert.equal(h.ctx.table.size, 0);
  });
});

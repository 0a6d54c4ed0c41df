/**
 * The selftest ops whose effect is delivered by the FAULT / vIOMMU areas (spec
 * mock-driver-failnth.md §2.14 TRIGGER_IOPF, §2.16 TRIGGER_VEVENT), run end to end: a fault
 * record read from the FAULT fd, a vEVENT read from the vEVENTQ fd, and each errno before the
 * delivery.
 */
import "../../src/core/eventq.ts";
import "../../src/core/hw_queue.ts";
import "../../src/core/viommu.ts";
import "../../src/hw/mock/viommu.ts";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { eventqFileByFd } from "../../src/core/eventq.ts";
import { selftestHooks } from "../../src/core/selftest.ts";
import { ENOENT, EOPNOTSUPP } from "../../src/errno.ts";
import {
  decode,
  IOMMU_FAULT_ALLOC_LAYOUT,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_HWPT_PGFAULT_LAYOUT,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VDEVICE_ALLOC_LAYOUT,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_ALLOC_LAYOUT,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_ALLOC_LAYOUT,
  MOCK_FLAGS_DEVICE_PASID,
} from "../../src/uapi/index.ts";
import { OP, SelftestHarness } from "./selftest_harness.ts";

const NEST_PARENT = 1;
const FAULT_ID_VALID = 4;
const TYPE_SELFTEST = 0xdeadbeef;
const VEVENTQ_SELFTEST = 0xbeefbeef;
const IOTLB = 0xbadbeef;
const PERM_RW = 3;

/** A mock device, a nest parent on its IOAS, and a FAULT queue. */
function setup() {
  const h = new SelftestHarness();
  const ioas = h.ioasAlloc();
  const md = h.mockDomain(ioas, MOCK_FLAGS_DEVICE_PASID);
  const parent = h.hwptAllocOk(md.idev, ioas, NEST_PARENT);
  const fault = h.call(IOMMU_FAULT_QUEUE_ALLOC, IOMMU_FAULT_ALLOC_LAYOUT, {});
  assert.equal(fault.errno, 0);
  const file = eventqFileByFd(h.ctx, fault.out.out_fault_fd);
  assert.ok(file !== undefined);
  return { h, ioas, md, parent, faultId: fault.out.out_fault_id, file };
}

const trigger = (h: SelftestHarness, devId: number, pasid = 0) =>
  h.test(OP.TRIGGER_IOPF, 0, { dev_id: devId, pasid, grpid: 2, perm: PERM_RW, addr: 0xdeadbeafn })
    .errno;

describe("IOMMU_TEST_OP_TRIGGER_IOPF", () => {
  it("looks up dev_id (ENOENT); `id` is not used", () => {
    const { h, md } = setup();
    assert.equal(trigger(h, md.stdev), ENOENT);
    assert.equal(trigger(h, 99), ENOENT);
    assert.equal(h.test(OP.TRIGGER_IOPF, 12345, { dev_id: md.idev }).errno, 0);
  });

  it("queues a last-page request on the FAULT of the RID's nested HWPT", () => {
    const { h, md, parent, faultId, file } = setup();
    const r = h.hwptAlloc(md.idev, parent, FAULT_ID_VALID, [IOTLB], faultId);
    assert.equal(r.errno, 0);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: r.id }).errno, 0);
    assert.equal(trigger(h, md.idev), 0);
    const read = file.readRecords(IOMMU_HWPT_PGFAULT_LAYOUT.size);
    assert.equal(read.errno, 0);
    assert.equal(read.bytes.length, IOMMU_HWPT_PGFAULT_LAYOUT.size);
    const rec = decode(IOMMU_HWPT_PGFAULT_LAYOUT, read.bytes);
    assert.equal(rec.flags, 2); // LAST_PAGE only: no PASID
    assert.equal(rec.dev_id, md.idev);
    assert.equal(rec.grpid, 2);
    assert.equal(rec.perm, PERM_RW);
    assert.equal(rec.addr, 0xdeadbeafn);
    // With a PASID: PASID_VALID too, routed to the RID's nested domain (user PASID table).
    assert.equal(trigger(h, md.idev, 1), 0);
    const rec2 = decode(IOMMU_HWPT_PGFAULT_LAYOUT, file.readRecords(40).bytes);
    assert.equal(rec2.flags, 3);
    assert.equal(rec2.pasid, 1);
  });

  it("returns 0 and queues nothing when the domain has no fault handler", () => {
    const { h, md, file } = setup();
    assert.equal(trigger(h, md.idev), 0);
    assert.equal(file.readRecords(40).bytes.length, 0);
  });

  it("answers EOPNOTSUPP after the lookup while no FAULT area is loaded", () => {
    const { h, md } = setup();
    const saved = selftestHooks.reportIopf;
    selftestHooks.reportIopf = null;
    try {
      assert.equal(trigger(h, 99), ENOENT);
      assert.equal(trigger(h, md.idev), EOPNOTSUPP);
    } finally {
      selftestHooks.reportIopf = saved;
    }
  });
});

describe("IOMMU_TEST_OP_TRIGGER_VEVENT", () => {
  /** A vIOMMU on the nest parent, the device's vDEVICE `virtId`, the RID on a nested HWPT. */
  function vsetup(virtId: bigint) {
    const s = setup();
    const { h, md, parent } = s;
    const v = h.call(IOMMU_VIOMMU_ALLOC, IOMMU_VIOMMU_ALLOC_LAYOUT, {
      type: TYPE_SELFTEST,
      dev_id: md.idev,
      hwpt_id: parent,
    });
    assert.equal(v.errno, 0);
    const viommu = v.out.out_viommu_id;
    const vd = h.call(IOMMU_VDEVICE_ALLOC, IOMMU_VDEVICE_ALLOC_LAYOUT, {
      viommu_id: viommu,
      dev_id: md.idev,
      virt_id: virtId,
    });
    assert.equal(vd.errno, 0);
    const nested = h.hwptAllocOk(md.idev, viommu, 0, [IOTLB]);
    assert.equal(h.test(OP.MOCK_DOMAIN_REPLACE, md.stdev, { pt_id: nested }).errno, 0);
    return { ...s, viommu };
  }

  const vevent = (h: SelftestHarness, devId: number) =>
    h.test(OP.TRIGGER_VEVENT, 0, { dev_id: devId }).errno;

  it("ENOENT for a missing device, or one that never attached a vIOMMU's nested domain", () => {
    const { h, md } = setup();
    assert.equal(vevent(h, 99), ENOENT);
    assert.equal(vevent(h, md.stdev), ENOENT);
    assert.equal(vevent(h, md.idev), ENOENT);
  });

  it("ENOENT for virt_id 0, EOPNOTSUPP without a SELFTEST vEVENTQ", () => {
    assert.equal(((s) => vevent(s.h, s.md.idev))(vsetup(0n)), ENOENT);
    const { h, md } = vsetup(0x1234n);
    assert.equal(vevent(h, md.idev), EOPNOTSUPP);
  });

  it("queues {virt_id} on the vEVENTQ", () => {
    const { h, md, viommu } = vsetup(0x1_0000_0042n);
    const q = h.call(IOMMU_VEVENTQ_ALLOC, IOMMU_VEVENTQ_ALLOC_LAYOUT, {
      viommu_id: viommu,
      type: VEVENTQ_SELFTEST,
      veventq_depth: 2,
    });
    assert.equal(q.errno, 0);
    const file = eventqFileByFd(h.ctx, q.out.out_veventq_fd);
    assert.ok(file !== undefined);
    assert.equal(vevent(h, md.idev), 0);
    const read = file.readRecords(64);
    assert.equal(read.errno, 0);
    assert.equal(read.bytes.length, 12); // header + iommu_viommu_event_selftest
    const view = new DataView(read.bytes.buffer, read.bytes.byteOffset);
    assert.equal(view.getUint32(0, true), 0); // flags
    assert.equal(view.getUint32(8, true), 0x42); // the low 32 bits of virt_id
  });
});

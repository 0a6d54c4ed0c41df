/**
 * IOMMU_VFIO_IOAS and the VFIO container ioctls on an iommufd fd (core-objects-vfio.md §7, §8):
 * the selftest's `iommufd` fixture tests (simple_ioctls, unmap_cmd, map_cmd, info_cmd,
 * set_iommu_cmd, vfio_ioas) and every errno path the spec lists, through IommufdContext.ioctl
 * with the structs in a FakeProcess's memory. The mock-domain fixture is in
 * vfio_compat_mock_domain.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { accessAttach, accessCreate, accessPinPages } from "../../src/core/access.ts";
import { AccountMode, IommufdContext } from "../../src/core/context.ts";
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from "../../src/core/driver.ts";
import { HwptPaging } from "../../src/core/hwpt.ts";
import * as core from "../../src/core/index.ts";
import { contiguousPages, FakeProcess } from "../../src/core/user_mm.ts";
import {
  compatIoas,
  vfioCompatConfig,
  vfioCompatIoasCreate,
  vfioCompatIoasGetId,
  vfioCompatSetNoIommu,
  vfioNoIommuMode,
} from "../../src/core/vfio_compat.ts";
import {
  E2BIG,
  EADDRINUSE,
  EEXIST,
  EFAULT,
  EINVAL,
  ENODEV,
  ENOENT,
  ENOMEM,
  ENOTTY,
  EOPNOTSUPP,
  EOVERFLOW,
  EPERM,
} from "../../src/errno.ts";
import {
  decode,
  encode,
  IO,
  IOMMU_DESTROY,
  IOMMU_DESTROY_LAYOUT,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_LAYOUT,
  IOMMU_OPTION_OP_GET,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_LAYOUT,
  IOMMU_VFIO_IOAS_SET,
  IOMMUFD_TYPE,
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_VADDR,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_DMA_UNMAP_FLAG_VADDR,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DISABLE,
  VFIO_IOMMU_ENABLE,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE,
} from "../../src/uapi/index.ts";
import { Harness, PAGE, U64_MAX } from "./helpers/ioctl_harness.ts";
import { TestPagingDomain } from "./helpers/test_domain.ts";

const P = BigInt(PAGE);
const START = 1n << 24n; // MOCK_APERTURE_START
const TYPE1 = 1n;
const TYPE1V2 = 3n;
const RW = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
/** _IOC(dir, type, nr, size) with the asm-generic encoding. */
const IOC = (dir: number, nr: number, size: number) =>
  ((dir << 30) | (size << 16) | (VFIO_TYPE << 8) | nr) >>> 0;

// ---- helpers ------------------------------------------------------------------------------------

function vfioIoas(h: Harness, op: number, ioasId = 0, reserved = 0) {
  return h.call(IOMMU_VFIO_IOAS, IOMMU_VFIO_IOAS_LAYOUT, {
    ioas_id: ioasId,
    op,
    __reserved: reserved,
  });
}

/** A harness whose context has a compat IOAS (IOAS_ALLOC + IOMMU_VFIO_IOAS SET). */
function withCompat(proc?: FakeProcess): { h: Harness; ioasId: number } {
  const h = new Harness(proc);
  const ioasId = h.ioasAlloc();
  assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, ioasId).errno, 0);
  return { h, ioasId };
}

function raw(h: Harness, cmd: number, arg: bigint) {
  return h.ctx.ioctl(cmd, arg, h.proc);
}

/** A page whose bytes are `bytes` (then 0), mapped read-only. */
function readOnlyStruct(proc: FakeProcess, bytes: Uint8Array): bigint {
  const page = contiguousPages(1)[0];
  page.write(0, bytes);
  return proc.mmap(PAGE, { writable: false, pages: [page] });
}

type MapFields = { argsz?: number; flags?: number; vaddr: bigint; iova: bigint; size: bigint };
type UnmapFields = { argsz?: number; flags?: number; iova?: bigint; size?: bigint };

function mapBytes(f: MapFields): Uint8Array {
  const b = new Uint8Array(VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT.size);
  encode(VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT, { argsz: 32, flags: RW, ...f }, b);
  return b;
}

function mapDma(h: Harness, f: MapFields, at?: bigint): number {
  const where = at ?? h.proc.mmap(PAGE);
  if (at === undefined) h.proc.write(where, mapBytes(f));
  return raw(h, VFIO_IOMMU_MAP_DMA, where).errno;
}

function unmapBytes(f: UnmapFields): Uint8Array {
  const b = new Uint8Array(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT.size);
  encode(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT, { argsz: 24, flags: 0, iova: 0n, size: 0n, ...f }, b);
  return b;
}

function unmapDma(h: Harness, f: UnmapFields) {
  const at = h.proc.mmap(PAGE);
  h.proc.write(at, unmapBytes(f));
  const errno = raw(h, VFIO_IOMMU_UNMAP_DMA, at).errno;
  const back = new Uint8Array(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT.size);
  h.proc.read(at, back);
  return { errno, out: decode(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT, back) };
}

function checkExtension(h: Harness, ext: bigint) {
  return raw(h, VFIO_CHECK_EXTENSION, ext);
}

function setIommu(h: Harness, type: bigint): number {
  return raw(h, VFIO_SET_IOMMU, type).errno;
}

function hugePagesGet(h: Harness, ioasId: number): bigint {
  const r = h.call(IOMMU_OPTION, IOMMU_OPTION_LAYOUT, {
    option_id: IOMMU_OPTION_HUGE_PAGES,
    op: IOMMU_OPTION_OP_GET,
    object_id: ioasId,
    val64: 7n,
  });
  assert.equal(r.errno, 0);
  return r.out.val64;
}

const INFO_BUF = 16 * PAGE;

/**
 * The selftest's ioctl_check_buf around VFIO_IOMMU_GET_INFO: the buffer is 0xAA except the
 * argsz word; after the call nothing at or past argsz may have changed.
 */
function getInfo(h: Harness, argsz: number, at?: bigint): { errno: number; bytes: Uint8Array } {
  const where = at ?? h.proc.mmap(INFO_BUF);
  const buf = new Uint8Array(INFO_BUF).fill(0xaa);
  new DataView(buf.buffer).setUint32(0, argsz, true);
  h.proc.write(where, buf);
  const errno = raw(h, VFIO_IOMMU_GET_INFO, where).errno;
  const back = new Uint8Array(INFO_BUF);
  h.proc.read(where, back);
  for (let i = Math.max(argsz, 4); i < INFO_BUF; i++)
    if (back[i] !== 0xaa) assert.fail(`argsz ${argsz}: byte ${i} past argsz was written`);
  return { errno, bytes: back };
}

function u32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset).getUint32(off, true);
}
function u16(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset).getUint16(off, true);
}
function u64(b: Uint8Array, off: number): bigint {
  return new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);
}

// ---- IOMMU_VFIO_IOAS ----------------------------------------------------------------------------

describe("IOMMU_VFIO_IOAS", () => {
  it("vfio_ioas: GET ENODEV, SET 0 ENOENT, SET/GET round trip, CLEAR, GET ENODEV", () => {
    const h = new Harness();
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).errno, ENODEV);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, 0).errno, ENOENT);
    const id = h.ioasAlloc();
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, id).errno, 0);
    const got = vfioIoas(h, IOMMU_VFIO_IOAS_GET);
    assert.equal(got.errno, 0);
    assert.equal(got.out.ioas_id, id);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_CLEAR).errno, 0);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).errno, ENODEV);
    // CLEAR with nothing set is still 0; the IOAS itself was never touched.
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_CLEAR).errno, 0);
    assert.equal(h.ioas(id).id, id);
  });

  it("__reserved is checked before the op (EOPNOTSUPP); unknown ops are EOPNOTSUPP", () => {
    const { h, ioasId } = withCompat();
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET, 0, 1).errno, EOPNOTSUPP);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_CLEAR, 0, 0x8000).errno, EOPNOTSUPP);
    assert.equal(vfioIoas(h, 3, 0, 1).errno, EOPNOTSUPP);
    assert.equal(vfioIoas(h, 3).errno, EOPNOTSUPP);
    assert.equal(vfioIoas(h, 0xffff, ioasId).errno, EOPNOTSUPP);
    // Nothing above changed the compat IOAS.
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).out.ioas_id, ioasId);
    const fresh = new Harness();
    assert.equal(vfioIoas(fresh, IOMMU_VFIO_IOAS_GET, 0, 2).errno, EOPNOTSUPP);
  });

  it("SET of a non-IOAS object or an unknown id is ENOENT and keeps the old pointer", () => {
    const { h, ioasId } = withCompat();
    const access = accessCreate(h.ctx, { needsPinPages: false });
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, access.id).errno, ENOENT);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, 999).errno, ENOENT);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).out.ioas_id, ioasId);
  });

  it("SET looks the IOAS up through the injection site (fail-nth gives ENOENT)", () => {
    const { h, ioasId } = withCompat();
    const other = h.ioasAlloc();
    h.ctx.faults.arm(1);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, other).errno, ENOENT);
    assert.equal(h.ctx.faults.lastFired, "iommufd_get_object");
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).out.ioas_id, ioasId);
  });

  it("GET is not an injection site (the compat IOAS is locked directly)", () => {
    const { h, ioasId } = withCompat();
    h.ctx.faults.trace = [];
    const r = vfioIoas(h, IOMMU_VFIO_IOAS_GET);
    assert.equal(r.errno, 0);
    assert.equal(r.out.ioas_id, ioasId);
    assert.deepEqual(h.ctx.faults.trace, []);
  });

  it("the pointer is weak: DESTROY succeeds, clears it, and a reused id is not revived", () => {
    const { h, ioasId } = withCompat();
    assert.equal(h.ioas(ioasId).users, 1);
    const d = h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id: ioasId });
    assert.equal(d.errno, 0);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).errno, ENODEV);
    assert.equal(compatIoas(h.ctx), null);
    const again = h.ioasAlloc();
    assert.equal(again, ioasId);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).errno, ENODEV);
    assert.equal(raw(h, VFIO_SET_IOMMU, TYPE1V2).errno, ENODEV);
  });

  it("SET replaces the compat IOAS without destroying the previous one", () => {
    const { h, ioasId } = withCompat();
    const second = h.ioasAlloc();
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, second).errno, 0);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).out.ioas_id, second);
    assert.equal(h.ioas(ioasId).id, ioasId);
    assert.equal(h.ioas(second).users, 1);
  });

  it("goes through the codec: size 11 EINVAL, a non-zero tail E2BIG, a GET that faults EFAULT", () => {
    const { h, ioasId } = withCompat();
    const b = new Uint8Array(16);
    encode(IOMMU_VFIO_IOAS_LAYOUT, { size: 11, op: IOMMU_VFIO_IOAS_GET }, b);
    const at = h.proc.mmap(PAGE);
    h.proc.write(at, b);
    assert.equal(raw(h, IOMMU_VFIO_IOAS, at).errno, EINVAL);
    encode(IOMMU_VFIO_IOAS_LAYOUT, { size: 16 }, b);
    b[13] = 1;
    h.proc.write(at, b);
    assert.equal(raw(h, IOMMU_VFIO_IOAS, at).errno, E2BIG);
    b[13] = 0;
    h.proc.write(at, b);
    assert.equal(raw(h, IOMMU_VFIO_IOAS, at).errno, 0);
    const back = new Uint8Array(16);
    h.proc.read(at, back);
    assert.equal(u32(back, 4), ioasId);
    assert.equal(u32(back, 12), 0);
    // GET writes back: on read-only memory that is EFAULT; SET and CLEAR write nothing.
    encode(IOMMU_VFIO_IOAS_LAYOUT, { size: 12, op: IOMMU_VFIO_IOAS_GET }, b);
    assert.equal(raw(h, IOMMU_VFIO_IOAS, readOnlyStruct(h.proc, b.subarray(0, 12))).errno, EFAULT);
    encode(IOMMU_VFIO_IOAS_LAYOUT, { size: 12, op: IOMMU_VFIO_IOAS_SET, ioas_id: ioasId }, b);
    assert.equal(raw(h, IOMMU_VFIO_IOAS, readOnlyStruct(h.proc, b.subarray(0, 12))).errno, 0);
  });
});

// ---- compat IOAS creation (kernel API) ----------------------------------------------------------

describe("compat IOAS creation (iommufd_vfio_compat_ioas_create)", () => {
  it("creates a published IOAS once; a second call aborts its new IOAS and frees the id", () => {
    const h = new Harness();
    assert.throws(() => vfioCompatIoasGetId(h.ctx), { errno: ENODEV });
    vfioCompatIoasCreate(h.ctx);
    const id = vfioCompatIoasGetId(h.ctx);
    assert.equal(id, 1);
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_GET).out.ioas_id, 1);
    assert.equal(h.ioas(1).id, 1);
    vfioCompatIoasCreate(h.ctx);
    assert.equal(vfioCompatIoasGetId(h.ctx), 1);
    assert.equal(h.ctx.table.size, 1);
    assert.equal(h.ioasAlloc(), 2);
    // The automatic IOAS is an ordinary user object: destroyable, and then gone as compat.
    assert.equal(h.call(IOMMU_DESTROY, IOMMU_DESTROY_LAYOUT, { id: 1 }).errno, 0);
    assert.throws(() => vfioCompatIoasGetId(h.ctx), { errno: ENODEV });
  });

  it("in no-iommu mode creation fails with EINVAL and leaves no id behind", () => {
    const h = new Harness();
    vfioCompatSetNoIommu(h.ctx);
    assert.ok(vfioNoIommuMode(h.ctx));
    assert.throws(() => vfioCompatIoasCreate(h.ctx), { errno: EINVAL });
    assert.equal(h.ctx.table.size, 0);
    assert.equal(h.ioasAlloc(), 1);
  });

  it("no-iommu mode cannot be entered once a compat IOAS exists (EINVAL)", () => {
    const { h } = withCompat();
    assert.throws(() => vfioCompatSetNoIommu(h.ctx), { errno: EINVAL });
    assert.equal(vfioNoIommuMode(h.ctx), false);
    // After the compat IOAS is cleared it can.
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_CLEAR).errno, 0);
    vfioCompatSetNoIommu(h.ctx);
    assert.ok(vfioNoIommuMode(h.ctx));
  });

  it("an injected allocation failure is ENOMEM and reserves nothing", () => {
    const h = new Harness();
    h.ctx.faults.arm(1);
    assert.throws(() => vfioCompatIoasCreate(h.ctx), { errno: ENOMEM });
    assert.equal(h.ctx.table.size, 0);
    assert.equal(h.ctx.vfioIoas, null);
  });

  it("the automatic IOAS goes at close with its mappings unpinned", () => {
    const h = new Harness();
    vfioCompatIoasCreate(h.ctx);
    const ioas = h.ioas(vfioCompatIoasGetId(h.ctx));
    ioas.iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 4n * P }), 0);
    const pages = h.proc.pages(buf, 4, false) as { pins: number }[];
    assert.deepEqual(
      pages.map((p) => p.pins),
      [1, 1, 1, 1],
    );
    assert.deepEqual(h.ctx.close(), []);
    assert.deepEqual(
      pages.map((p) => p.pins),
      [0, 0, 0, 0],
    );
  });
});

// ---- the fallthrough: version, extensions, unknown numbers --------------------------------------

describe("VFIO_GET_API_VERSION / VFIO_CHECK_EXTENSION / unknown VFIO ioctls", () => {
  it("simple_ioctls: API version 0, TYPE1v2 supported, on a fresh fd", () => {
    const h = new Harness();
    const v = raw(h, VFIO_GET_API_VERSION, 0xdeadn);
    assert.equal(v.errno, 0);
    assert.equal(v.value, VFIO_API_VERSION);
    const e = checkExtension(h, TYPE1V2);
    assert.equal(e.errno, 0);
    assert.equal(e.value, 1);
  });

  it("answers every extension per the table; the arg is a full unsigned long", () => {
    const h = new Harness();
    const expect: [bigint, number][] = [
      [0n, 0],
      [1n, 1], // TYPE1
      [2n, 0], // SPAPR_TCE
      [3n, 1], // TYPE1v2
      [5n, 0], // EEH
      [6n, 0], // reserved TYPE1_NESTING
      [7n, 0], // SPAPR_TCE_v2
      [8n, 0], // NOIOMMU (CONFIG_VFIO_NOIOMMU off)
      [9n, 1], // UNMAP_ALL
      [10n, 0], // UPDATE_VADDR
      [11n, 0],
      [(1n << 32n) + 1n, 0], // not truncated to 1
      [(1n << 32n) + 3n, 0], // not truncated to 3
      [(1n << 32n) + 9n, 0],
      [U64_MAX, 0],
    ];
    for (const [ext, want] of expect) {
      const r = checkExtension(h, ext);
      assert.equal(r.errno, 0, `extension ${ext}`);
      assert.equal(r.value, want, `extension ${ext}`);
    }
  });

  it("DMA_CC_IOMMU: ENODEV without a compat IOAS, else whether every HWPT enforces coherency", () => {
    const fresh = new Harness();
    assert.equal(checkExtension(fresh, 4n).errno, ENODEV);
    const { h, ioasId } = withCompat();
    let r = checkExtension(h, 4n);
    assert.deepEqual([r.errno, r.value], [0, 1]); // empty HWPT list
    const ioas = h.ioas(ioasId);
    const coherent = new HwptPaging(h.ctx, ioas, 0);
    coherent.enforceCacheCoherency = true;
    ioas.hwptList.push(coherent);
    r = checkExtension(h, 4n);
    assert.deepEqual([r.errno, r.value], [0, 1]);
    const incoherent = new HwptPaging(h.ctx, ioas, 0);
    ioas.hwptList.push(incoherent);
    r = checkExtension(h, 4n);
    assert.deepEqual([r.errno, r.value], [0, 0]);
    incoherent.enforceCacheCoherency = true;
    r = checkExtension(h, 4n);
    assert.deepEqual([r.errno, r.value], [0, 1]);
    ioas.hwptList.length = 0;
  });

  it("CONFIG_VFIO_NOIOMMU makes CHECK_EXTENSION(NOIOMMU) 1", () => {
    const h = new Harness();
    vfioCompatConfig.vfioNoIommu = true;
    try {
      assert.equal(checkExtension(h, 8n).value, 1);
    } finally {
      vfioCompatConfig.vfioNoIommu = false;
    }
    assert.equal(checkExtension(h, 8n).value, 0);
  });

  it("everything else is ENOTTY without touching user memory", () => {
    const { h } = withCompat();
    const at = h.proc.mmap(PAGE);
    const fill = new Uint8Array(PAGE).fill(0x5a);
    new DataView(fill.buffer).setUint32(0, 64, true);
    h.proc.write(at, fill);
    const cmds = [
      VFIO_IOMMU_DIRTY_PAGES,
      VFIO_IOMMU_ENABLE,
      VFIO_IOMMU_DISABLE,
      IO(VFIO_TYPE, 100 + 3), // VFIO_GROUP_GET_STATUS
      IO(VFIO_TYPE, 100 + 7), // VFIO_DEVICE_GET_INFO
      IO(VFIO_TYPE, 100 + 18), // VFIO_IOMMU_SPAPR_TCE_GET_INFO... and other numbers
      IO(IOMMUFD_TYPE, 0x7f), // cmd_fail
      IO(IOMMUFD_TYPE, 0x10),
      IO(0x3a, 100), // VFIO_GET_API_VERSION's nr with another type
      IOC(2, 100, 4), // _IOR(';', 100, u32): the full value must match
      IOC(1, 114, 24), // _IOW variant of UNMAP_DMA
    ];
    for (const cmd of cmds) {
      assert.equal(raw(h, cmd, at).errno, ENOTTY, `cmd 0x${cmd.toString(16)}`);
      assert.equal(raw(h, cmd, 0n).errno, ENOTTY, `cmd 0x${cmd.toString(16)} with NULL`);
    }
    const back = new Uint8Array(PAGE);
    h.proc.read(at, back);
    assert.deepEqual(back, fill);
  });
});

// ---- VFIO_SET_IOMMU -----------------------------------------------------------------------------

describe("VFIO_SET_IOMMU", () => {
  it("set_iommu_cmd: TYPE1v2 and TYPE1 are ENODEV on a fresh fd", () => {
    const h = new Harness();
    assert.equal(setIommu(h, TYPE1V2), ENODEV);
    assert.equal(setIommu(h, TYPE1), ENODEV);
  });

  it("any other type is EINVAL, checked before the compat IOAS", () => {
    const fresh = new Harness();
    const { h } = withCompat();
    for (const t of [0n, 2n, 4n, 6n, 7n, 8n, 9n, (1n << 32n) + 1n, U64_MAX]) {
      assert.equal(setIommu(fresh, t), EINVAL, `type ${t} without compat IOAS`);
      assert.equal(setIommu(h, t), EINVAL, `type ${t}`);
    }
  });

  it("TYPE1 disables large pages on the compat IOAS; TYPE1v2 neither sets nor clears it", () => {
    const { h, ioasId } = withCompat();
    assert.equal(setIommu(h, TYPE1V2), 0);
    assert.equal(hugePagesGet(h, ioasId), 1n);
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, 1);
    assert.equal(setIommu(h, TYPE1), 0);
    assert.equal(hugePagesGet(h, ioasId), 0n);
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, PAGE);
    assert.equal(setIommu(h, TYPE1V2), 0);
    assert.equal(hugePagesGet(h, ioasId), 0n);
    assert.equal(setIommu(h, TYPE1), 0);
  });

  it("TYPE1 is EINVAL when a domain already holds mappings, and 0 when already disabled", () => {
    const { h, ioasId } = withCompat();
    h.ioas(ioasId).iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: P }), 0);
    assert.equal(setIommu(h, TYPE1), EINVAL);
    assert.equal(hugePagesGet(h, ioasId), 1n);
    assert.equal(setIommu(h, TYPE1V2), 0);

    const b = withCompat();
    b.h.ioas(b.ioasId).iopt.addDomain(new TestPagingDomain());
    assert.equal(setIommu(b.h, TYPE1), 0);
    assert.equal(mapDma(b.h, { vaddr: b.h.proc.mmap(PAGE), iova: START, size: P }), 0);
    assert.equal(setIommu(b.h, TYPE1), 0);
  });

  it("TYPE1 is EADDRINUSE when an area is not PAGE aligned; large pages stay on", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(2 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf + 2048n, iova: START + 2048n, size: P }), 0);
    assert.equal(setIommu(h, TYPE1), EADDRINUSE);
    assert.equal(hugePagesGet(h, ioasId), 1n);
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, 1);
  });

  it("with a mock domain, TYPE1 raises the IOAS alignment from 2048 to PAGE", () => {
    const { h, ioasId } = withCompat();
    h.ioas(ioasId).iopt.addDomain(new TestPagingDomain());
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, 2048);
    assert.equal(setIommu(h, TYPE1), 0);
    assert.equal(h.ioas(ioasId).iopt.iovaAlignment, PAGE);
  });

  it("no-iommu mode: type1 types are EINVAL; NOIOMMU needs the config and CAP_SYS_RAWIO", () => {
    const h = new Harness();
    vfioCompatSetNoIommu(h.ctx);
    const id = h.ioasAlloc();
    assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, id).errno, 0);
    assert.equal(setIommu(h, TYPE1), EINVAL);
    assert.equal(setIommu(h, TYPE1V2), EINVAL);
    assert.equal(setIommu(h, 8n), EINVAL); // CONFIG_VFIO_NOIOMMU off
    vfioCompatConfig.vfioNoIommu = true;
    try {
      assert.equal(setIommu(h, 8n), EPERM);
      const rawio = new FakeProcess();
      (rawio.accounting as { capSysRawio?: boolean }).capSysRawio = true;
      assert.equal(h.ctx.ioctl(VFIO_SET_IOMMU, 8n, rawio).errno, 0);
      // Outside no-iommu mode NOIOMMU is just another unknown type.
      assert.equal(setIommu(new Harness(), 8n), EINVAL);
    } finally {
      vfioCompatConfig.vfioNoIommu = false;
    }
  });
});

// ---- VFIO_IOMMU_GET_INFO ------------------------------------------------------------------------

describe("VFIO_IOMMU_GET_INFO", () => {
  it("info_cmd: argsz 1 is EINVAL (checked first), argsz 24 on a fresh fd is ENODEV", () => {
    const h = new Harness();
    assert.equal(getInfo(h, 1).errno, EINVAL);
    assert.equal(getInfo(h, 15).errno, EINVAL);
    assert.equal(getInfo(h, 24).errno, ENODEV);
    assert.equal(getInfo(h, 16).errno, ENODEV);
  });

  it("EFAULT when the 16-byte prefix cannot be read", () => {
    const { h } = withCompat();
    assert.equal(raw(h, VFIO_IOMMU_GET_INFO, 0n).errno, EFAULT);
    const page = h.proc.mmap(PAGE); // followed by an unmapped guard page
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, 24, true);
    h.proc.write(page + P - 8n, b);
    assert.equal(raw(h, VFIO_IOMMU_GET_INFO, page + P - 8n).errno, EFAULT);
  });

  it("EFAULT when a capability cannot be written; the header is then not written", () => {
    const { h } = withCompat();
    const page = h.proc.mmap(PAGE);
    const at = page + P - 24n; // the header fits, the DMA_AVAIL capability does not
    const b = new Uint8Array(24).fill(0xaa);
    new DataView(b.buffer).setUint32(0, 72, true);
    h.proc.write(at, b);
    assert.equal(raw(h, VFIO_IOMMU_GET_INFO, at).errno, EFAULT);
    const back = new Uint8Array(24);
    h.proc.read(at, back);
    assert.deepEqual(back, b);
  });

  it("EFAULT when the header cannot be written back", () => {
    const { h } = withCompat();
    for (const argsz of [16, 24]) {
      const b = new Uint8Array(24);
      new DataView(b.buffer).setUint32(0, argsz, true);
      assert.equal(raw(h, VFIO_IOMMU_GET_INFO, readOnlyStruct(h.proc, b)).errno, EFAULT);
    }
  });

  it("without a domain: pgsizes ~(PAGE-1), one IOVA range [0, 2^64-1], 72 bytes in all", () => {
    const { h } = withCompat();
    const { errno, bytes } = getInfo(h, 72);
    assert.equal(errno, 0);
    assert.equal(u32(bytes, 0), 72);
    assert.equal(u32(bytes, 4), 3);
    assert.equal(u64(bytes, 8), U64_MAX - (P - 1n));
    assert.equal(u32(bytes, 16), 24);
    assert.equal(u32(bytes, 20), 0);
    assert.deepEqual(
      [u16(bytes, 24), u16(bytes, 26), u32(bytes, 28), u32(bytes, 32)],
      [3, 1, 40, 0xffffffff],
    );
    assert.deepEqual(bytes.subarray(36, 40), new Uint8Array(4).fill(0xaa));
    assert.deepEqual(
      [u16(bytes, 40), u16(bytes, 42), u32(bytes, 44), u32(bytes, 48)],
      [1, 1, 0, 1],
    );
    assert.equal(u32(bytes, 52), 0);
    assert.deepEqual([u64(bytes, 56), u64(bytes, 64)], [0n, U64_MAX]);
  });

  it("a short argsz gets a prefix of the ranges, no IOVA head, and the DMA_AVAIL next quirk", () => {
    const { h, ioasId } = withCompat();
    h.ioas(ioasId).iopt.reserveIova(0x1000n, 0x1fffn, null);
    // Two holes: total = 24 + 16 + 16 + 2 * 16 = 88.
    const full = getInfo(h, 88);
    assert.equal(full.errno, 0);
    assert.equal(u32(full.bytes, 0), 88);
    assert.equal(u32(full.bytes, 16), 24);
    assert.equal(u32(full.bytes, 48), 2);
    assert.deepEqual(
      [u64(full.bytes, 56), u64(full.bytes, 64), u64(full.bytes, 72), u64(full.bytes, 80)],
      [0n, 0xfffn, 0x2000n, U64_MAX],
    );

    const part = getInfo(h, 80);
    assert.equal(part.errno, 0);
    assert.equal(u32(part.bytes, 0), 88);
    assert.equal(u32(part.bytes, 4), 3);
    assert.equal(u32(part.bytes, 16), 0); // the chain did not fit
    assert.equal(u32(part.bytes, 28), 40); // but DMA_AVAIL's next was patched
    assert.deepEqual(part.bytes.subarray(40, 56), new Uint8Array(16).fill(0xaa)); // no head
    assert.deepEqual([u64(part.bytes, 56), u64(part.bytes, 64)], [0n, 0xfffn]);
    assert.deepEqual(part.bytes.subarray(72, 80), new Uint8Array(8).fill(0xaa));
  });

  it("writes only min(argsz, 24) bytes of the header", () => {
    const { h } = withCompat();
    for (let argsz = 16; argsz <= 24; argsz++) {
      const { errno, bytes } = getInfo(h, argsz);
      assert.equal(errno, 0);
      assert.equal(u32(bytes, 0), 72);
      assert.equal(u32(bytes, 4), 3);
      assert.notEqual(u64(bytes, 8), 0n);
    }
  });
});

// ---- VFIO_IOMMU_MAP_DMA -------------------------------------------------------------------------

describe("VFIO_IOMMU_MAP_DMA", () => {
  it("map_cmd: argsz 1 EINVAL, flags bit 31 EINVAL, READ|WRITE on a fresh fd ENODEV", () => {
    const h = new Harness();
    const buf = h.proc.mmap(PAGE);
    assert.equal(mapDma(h, { argsz: 1, vaddr: buf, iova: START, size: P }), EINVAL);
    assert.equal(mapDma(h, { flags: 1 << 31, vaddr: buf, iova: START, size: P }), EINVAL);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: P }), ENODEV);
  });

  it("argsz below 32, VADDR or unknown flags are EINVAL even with a compat IOAS", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(PAGE);
    assert.equal(mapDma(h, { argsz: 31, vaddr: buf, iova: START, size: P }), EINVAL);
    const vaddrFlag = RW | VFIO_DMA_MAP_FLAG_VADDR;
    assert.equal(mapDma(h, { flags: vaddrFlag, vaddr: buf, iova: START, size: P }), EINVAL);
    assert.equal(mapDma(h, { flags: 8, vaddr: buf, iova: START, size: P }), EINVAL);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 0);
  });

  it("EFAULT when the 32 bytes cannot be read", () => {
    const { h } = withCompat();
    assert.equal(raw(h, VFIO_IOMMU_MAP_DMA, 0n).errno, EFAULT);
    const page = h.proc.mmap(PAGE);
    const at = page + P - 24n;
    h.proc.write(at, mapBytes({ vaddr: page, iova: START, size: P }).subarray(0, 24));
    assert.equal(raw(h, VFIO_IOMMU_MAP_DMA, at).errno, EFAULT);
  });

  it("maps at the fixed IOVA with IOMMU_CACHE plus READ / WRITE; flags 0 is accepted", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(8 * PAGE);
    const cases: [number, number][] = [
      [RW, IOMMU_CACHE | IOMMU_READ | IOMMU_WRITE],
      [VFIO_DMA_MAP_FLAG_READ, IOMMU_CACHE | IOMMU_READ],
      [VFIO_DMA_MAP_FLAG_WRITE, IOMMU_CACHE | IOMMU_WRITE],
      [0, IOMMU_CACHE],
    ];
    cases.forEach(([flags, prot], i) => {
      const iova = START + BigInt(i) * 2n * P;
      assert.equal(mapDma(h, { flags, vaddr: buf + BigInt(i) * P, iova, size: P }), 0);
      const area = h.ioas(ioasId).iopt.areaIterFirst(iova, iova);
      assert.ok(area);
      assert.equal(area.iova, iova);
      assert.equal(area.length, P);
      assert.equal(area.iommuProt, prot);
    });
  });

  it("writes nothing back (the struct may be read-only)", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(PAGE);
    const at = readOnlyStruct(h.proc, mapBytes({ vaddr: buf, iova: START, size: P }));
    assert.equal(mapDma(h, { vaddr: 0n, iova: 0n, size: 0n }, at), 0);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 1);
  });

  it("the IOAS map errors: EEXIST, EINVAL (size 0, alignment, reserved), EOVERFLOW, EFAULT", () => {
    const { h, ioasId } = withCompat();
    h.ioas(ioasId).iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 2n * P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + P, size: 2n * P }), EEXIST);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 4n * P, size: 0n }), EINVAL);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 4n * P + 1n, size: P }), EINVAL);
    assert.equal(mapDma(h, { vaddr: buf, iova: 0x1000n, size: P }), EINVAL); // below aperture
    assert.equal(mapDma(h, { vaddr: U64_MAX - P + 1n, iova: START, size: 2n * P }), EOVERFLOW);
    const hole = buf + 8n * P; // never mapped in the process
    assert.equal(mapDma(h, { vaddr: hole, iova: START + 4n * P, size: P }), EFAULT);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 1);
  });

  it("there is no ULONG_MAX pre-check: a 1-byte map at IOVA 2^64-1 succeeds", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: U64_MAX, size: 1n }), 0);
    assert.equal(h.ioas(ioasId).iopt.areas[0].iova, U64_MAX);
    assert.equal(mapDma(h, { vaddr: buf, iova: U64_MAX - P + 1n, size: 2n * P }), EOVERFLOW);
  });

  it("after TYPE1 the alignment is PAGE: a 2 KiB-offset IOVA is EINVAL", () => {
    const { h } = withCompat();
    h.ioas(vfioCompatIoasGetId(h.ctx)).iopt.addDomain(new TestPagingDomain());
    const buf = h.proc.mmap(2 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 2048n, size: P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 2n * P, size: 2048n }), 0);
    const t1 = withCompat();
    t1.h.ioas(t1.ioasId).iopt.addDomain(new TestPagingDomain());
    assert.equal(setIommu(t1.h, TYPE1), 0);
    const b2 = t1.h.proc.mmap(2 * PAGE);
    assert.equal(mapDma(t1.h, { vaddr: b2, iova: START + 2048n, size: P }), EINVAL);
    assert.equal(mapDma(t1.h, { vaddr: b2, iova: START, size: 2048n }), EINVAL);
  });

  it("the compat IOAS lookup is not an injection site; pages allocation is (ENOMEM)", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(PAGE);
    h.ctx.faults.arm(1);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: P }), ENOMEM);
    assert.equal(h.ctx.faults.lastFired, "iopt_alloc_pages");
    assert.equal(h.ioas(ioasId).iopt.areas.length, 0);
  });

  it("accounting follows the context's mode (MM pages only after RLIMIT_MODE = 1)", () => {
    for (const [mode, want] of [
      [undefined, AccountMode.USER],
      [0n, AccountMode.USER],
      [1n, AccountMode.MM],
    ] as const) {
      const h = new Harness();
      if (mode !== undefined) {
        const r = h.call(IOMMU_OPTION, IOMMU_OPTION_LAYOUT, { option_id: 0, op: 0, val64: mode });
        assert.equal(r.errno, 0);
      }
      const id = h.ioasAlloc();
      assert.equal(vfioIoas(h, IOMMU_VFIO_IOAS_SET, id).errno, 0);
      const buf = h.proc.mmap(3 * PAGE);
      assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 3n * P }), 0);
      assert.equal(h.ioas(id).iopt.areas[0].pages?.accountMode, want, `mode ${mode}`);
    }
  });
});

// ---- VFIO_IOMMU_UNMAP_DMA -----------------------------------------------------------------------

describe("VFIO_IOMMU_UNMAP_DMA", () => {
  it("unmap_cmd: argsz 1 EINVAL, flags bit 31 EINVAL, flags 0 on a fresh fd ENODEV", () => {
    const h = new Harness();
    assert.equal(unmapDma(h, { argsz: 1, iova: START, size: P }).errno, EINVAL);
    assert.equal(unmapDma(h, { flags: 1 << 31, iova: START, size: P }).errno, EINVAL);
    assert.equal(unmapDma(h, { iova: START, size: P }).errno, ENODEV);
    assert.equal(unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_ALL }).errno, ENODEV);
  });

  it("only ALL is supported: dirty-bitmap and VADDR are EINVAL; argsz 23 is EINVAL", () => {
    const { h } = withCompat();
    const dirty = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
    assert.equal(unmapDma(h, { flags: dirty, iova: START, size: P }).errno, EINVAL);
    assert.equal(unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_VADDR }).errno, EINVAL);
    assert.equal(unmapDma(h, { argsz: 23, iova: START, size: P }).errno, EINVAL);
  });

  it("EFAULT when the 24 bytes cannot be read", () => {
    const { h } = withCompat();
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, 0n).errno, EFAULT);
    const page = h.proc.mmap(PAGE);
    const at = page + P - 16n;
    h.proc.write(at, unmapBytes({ iova: START, size: P }).subarray(0, 16));
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, at).errno, EFAULT);
  });

  it("ALL with a non-zero iova or size is EINVAL without write-back", () => {
    const { h } = withCompat();
    const buf = h.proc.mmap(PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: P }), 0);
    let r = unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_ALL, iova: 0n, size: 5n });
    assert.equal(r.errno, EINVAL);
    assert.equal(r.out.size, 5n);
    r = unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_ALL, iova: START, size: 0n });
    assert.equal(r.errno, EINVAL);
    const ro = readOnlyStruct(
      h.proc,
      unmapBytes({ flags: VFIO_DMA_UNMAP_FLAG_ALL, iova: START, size: 0n }),
    );
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, ro).errno, EINVAL);
  });

  it("ALL unmaps everything (0 bytes when empty) and reports the total", () => {
    const { h, ioasId } = withCompat();
    let r = unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_ALL });
    assert.deepEqual([r.errno, r.out.size], [0, 0n]);
    const buf = h.proc.mmap(8 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 3n * P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 8n * P, size: 5n * P }), 0);
    r = unmapDma(h, { flags: VFIO_DMA_UNMAP_FLAG_ALL, argsz: 40 });
    assert.deepEqual([r.errno, r.out.size, r.out.argsz, r.out.flags], [0, 8n * P, 40, 2]);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 0);
  });

  it("writes back exactly 24 bytes: argsz, flags and iova echoed, size = bytes unmapped", () => {
    const { h } = withCompat();
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 4n * P }), 0);
    const at = h.proc.mmap(PAGE);
    const b = new Uint8Array(64).fill(0xaa);
    b.set(unmapBytes({ argsz: 64, iova: START, size: 4n * P }));
    h.proc.write(at, b);
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, at).errno, 0);
    const back = new Uint8Array(64);
    h.proc.read(at, back);
    const out = decode(VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT, back);
    assert.deepEqual([out.argsz, out.flags, out.iova, out.size], [64, 0, START, 4n * P]);
    assert.deepEqual(back.subarray(24), new Uint8Array(40).fill(0xaa));
  });

  it("an empty range succeeds with size 0 (no 'nothing unmapped' ENOENT)", () => {
    const { h } = withCompat();
    const r = unmapDma(h, { iova: START, size: 16n * P });
    assert.deepEqual([r.errno, r.out.size], [0, 0n]);
  });

  it("size 0 is EINVAL and EOVERFLOW on wrap, both after a write-back of size 0", () => {
    const { h } = withCompat();
    let r = unmapDma(h, { iova: START, size: 0n });
    assert.deepEqual([r.errno, r.out.size], [EINVAL, 0n]);
    r = unmapDma(h, { iova: U64_MAX - P + 1n, size: 2n * P });
    assert.deepEqual([r.errno, r.out.size], [EOVERFLOW, 0n]);
    // The write-back happens: on read-only memory it turns the error into EFAULT.
    const ro = readOnlyStruct(h.proc, unmapBytes({ iova: START, size: 0n }));
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, ro).errno, EFAULT);
    const ok = readOnlyStruct(h.proc, unmapBytes({ iova: START, size: P }));
    assert.equal(raw(h, VFIO_IOMMU_UNMAP_DMA, ok).errno, EFAULT);
  });

  it("TYPE1v2: a range cutting into a mapping is ENOENT; areas before it stay unmapped", () => {
    const { h, ioasId } = withCompat();
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 2n * P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 2n * P, size: 2n * P }), 0);
    const r = unmapDma(h, { iova: START, size: 3n * P });
    assert.deepEqual([r.errno, r.out.size], [ENOENT, 2n * P]);
    const areas = h.ioas(ioasId).iopt.areas;
    assert.deepEqual(
      areas.map((a) => [a.iova, a.length]),
      [[START + 2n * P, 2n * P]],
    );
  });

  it("TYPE1: the same range is cut at its edges and unmapped", () => {
    const { h, ioasId } = withCompat();
    assert.equal(setIommu(h, TYPE1), 0);
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 2n * P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 2n * P, size: 2n * P }), 0);
    const r = unmapDma(h, { iova: START + P, size: 2n * P });
    assert.deepEqual([r.errno, r.out.size], [0, 2n * P]);
    assert.deepEqual(
      h.ioas(ioasId).iopt.areas.map((a) => [a.iova, a.length]),
      [
        [START, P],
        [START + 3n * P, P],
      ],
    );
  });

  it("TYPE1: a cut at an area's first byte is not made, so a 1-byte-in start is ENOENT", () => {
    const { h, ioasId } = withCompat();
    assert.equal(setIommu(h, TYPE1), 0);
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 4n * P }), 0);
    const r = unmapDma(h, { iova: START + 1n, size: 4n * P - 1n });
    assert.deepEqual([r.errno, r.out.size], [ENOENT, 0n]);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 1);
  });

  it("TYPE1: an unaligned cut is EINVAL with no write-back", () => {
    const { h, ioasId } = withCompat();
    assert.equal(setIommu(h, TYPE1), 0);
    const buf = h.proc.mmap(4 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 4n * P }), 0);
    const r = unmapDma(h, { iova: START, size: P + 100n });
    assert.deepEqual([r.errno, r.out.size], [EINVAL, P + 100n]);
    assert.equal(h.ioas(ioasId).iopt.areas.length, 1);
    // The end cut (START + P - 1) is aligned and made before the start cut fails.
    const r2 = unmapDma(h, { iova: START + 100n, size: P - 100n });
    assert.deepEqual([r2.errno, r2.out.size], [EINVAL, P - 100n]);
    assert.deepEqual(
      h.ioas(ioasId).iopt.areas.map((a) => [a.iova, a.length]),
      [
        [START, P],
        [START + P, 3n * P],
      ],
    );
  });

  it("TYPE1: an area pinned by an access cannot be cut (EINVAL); the first cut stays made", () => {
    const { h, ioasId } = withCompat();
    assert.equal(setIommu(h, TYPE1), 0);
    const buf = h.proc.mmap(8 * PAGE);
    assert.equal(mapDma(h, { vaddr: buf, iova: START, size: 4n * P }), 0);
    assert.equal(mapDma(h, { vaddr: buf, iova: START + 4n * P, size: 4n * P }), 0);
    const access = accessCreate(h.ctx, { needsPinPages: true, unmap: () => {} });
    accessAttach(access, ioasId);
    accessPinPages(access, START, P, 0);
    // Cuts: the range's last byte (inside the free second area) first, then START + P - 1.
    const r = unmapDma(h, { iova: START + 2n * P, size: 4n * P });
    assert.deepEqual([r.errno, r.out.size], [EINVAL, 4n * P]);
    assert.deepEqual(
      h.ioas(ioasId).iopt.areas.map((a) => [a.iova, a.length]),
      [
        [START, 4n * P],
        [START + 4n * P, 2n * P],
        [START + 6n * P, 2n * P],
      ],
    );
  });
});

// ---- the core's public entry --------------------------------------------------------------------

describe("src/core/index.ts", () => {
  it("re-exports the core API and serves the VFIO ioctls through a context made from it", () => {
    assert.equal(core.IommufdContext, IommufdContext);
    assert.equal(core.vfioCompatIoasCreate, vfioCompatIoasCreate);
    assert.equal(typeof core.FakeProcess, "function");
    assert.equal(typeof core.getIoas, "function");
    const ctx = new core.IommufdContext();
    const proc = new core.FakeProcess();
    const v = ctx.ioctl(VFIO_GET_API_VERSION, 0n, proc);
    assert.deepEqual([v.errno, v.value], [0, VFIO_API_VERSION]);
    core.vfioCompatIoasCreate(ctx);
    assert.equal(core.vfioCompatIoasGetId(ctx), 1);
    assert.equal(ctx.ioctl(VFIO_SET_IOMMU, TYPE1, proc).errno, 0);
  });
});

/**
 * The common ioctl rules of iommufd_fops_ioctl, one test per rule and errno, plus the
 * selftest's cmd_fail / cmd_length / cmd_ex_fail sequences replayed against every ioctl of
 * the table (the kernel behaviour they document, rewritten here).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { E2BIG, EFAULT, EINVAL, ENOENT, ENOTTY, ErrnoError } from "../../src/errno.ts";
import {
  ArrayUserMemory,
  buildIoctlTable,
  type Decoded,
  dispatchIoctl,
  encode,
  IO,
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOVA_RANGE_LAYOUT,
  IOMMU_OPTION,
  IOMMU_TEST_CMD,
  IOMMU_TEST_OP,
  IOMMUFD_CMD_BASE,
  IOMMUFD_IOCTLS,
  IOMMUFD_TYPE,
  type IoctlOp,
  type IoctlResult,
  type IoctlSpec,
  ioctlOp,
  type Layout,
  type Ucmd,
  VFIO_CHECK_EXTENSION,
} from "../../src/uapi/index.ts";

interface Ctx {
  calls: { name: string; cmd: Record<string, unknown>; userSize: number }[];
}

const ARG = 0x7000_0000n;

/** An op that records what it was given and otherwise does nothing. */
function recorder(spec: IoctlSpec<Layout>): IoctlOp<Ctx> {
  return {
    nr: spec.nr,
    name: spec.name,
    layout: spec.layout,
    minSize: spec.minSize,
    handler(ctx, ucmd) {
      ctx.calls.push({ name: spec.name, cmd: { ...ucmd.cmd }, userSize: ucmd.userSize });
      return 0;
    },
  };
}

const ALL_SPECS: IoctlSpec<Layout>[] = Object.values(IOMMUFD_IOCTLS);
const RECORDERS = ALL_SPECS.map(recorder);

function fresh(): { ctx: Ctx; mem: ArrayUserMemory } {
  return { ctx: { calls: [] }, mem: new ArrayUserMemory() };
}

/** Maps `bytes` user bytes at ARG with the leading u32 size set. */
function userStruct(mem: ArrayUserMemory, bytes: number, size: number): Uint8Array {
  const b = mem.map(ARG, bytes);
  new DataView(b.buffer).setUint32(0, size, true);
  return b;
}

test("unknown nr below the table (IOMMUFD_CMD_BASE - 1) is ENOTTY, even with a bad pointer", () => {
  const { ctx, mem } = fresh();
  userStruct(mem, 8, 8);
  const cmd = IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1);
  assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), ENOTTY);
  assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, 0n, mem), ENOTTY);
  assert.equal(ctx.calls.length, 0);
});

test("nr outside the table goes to the fallthrough hook with the raw cmd and arg", () => {
  const { ctx, mem } = fresh();
  const seen: [number, bigint][] = [];
  const vfio = (_c: Ctx, cmd: number, arg: bigint, _u: unknown, result: IoctlResult) => {
    seen.push([cmd, arg]);
    if (cmd !== VFIO_CHECK_EXTENSION) return ENOTTY;
    result.value = 1;
    return 0;
  };
  const result: IoctlResult = { value: -1 };
  assert.equal(dispatchIoctl(RECORDERS, ctx, VFIO_CHECK_EXTENSION, 3n, mem, vfio, result), 0);
  assert.equal(result.value, 1);
  // Past the end of the table (TEST_CMD at 0xa0 is its last entry).
  const past = IO(IOMMUFD_TYPE, 0xa1);
  assert.equal(dispatchIoctl(RECORDERS, ctx, past, 0n, mem, vfio, result), ENOTTY);
  assert.equal(result.value, 0);
  assert.deepEqual(seen, [
    [VFIO_CHECK_EXTENSION, 3n],
    [past, 0n],
  ]);
  // Without the TEST op the table ends at 0x95, so 0x96 falls through too.
  const noTest = buildIoctlTable(RECORDERS.filter((o) => o.nr !== 0xa0));
  assert.equal(dispatchIoctl(noTest, ctx, IO(IOMMUFD_TYPE, 0x96), ARG, mem, vfio), ENOTTY);
  assert.equal(seen.length, 3);
});

test("a NULL or unreadable argument is EFAULT (cmd_fail: ioctl(fd, IOMMU_DESTROY, NULL))", () => {
  const { ctx, mem } = fresh();
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, 0n, mem), EFAULT);
  // Only 2 of the 4 size bytes are readable.
  mem.map(ARG - 2n, 2);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG - 2n, mem), EFAULT);
  assert.equal(ctx.calls.length, 0);
});

test("a hole in the table is ENOTTY, but only after the size word was read (EFAULT first)", () => {
  const { ctx, mem } = fresh();
  const sparse = [recorder(IOMMUFD_IOCTLS.DESTROY), recorder(IOMMUFD_IOCTLS.TEST_CMD)];
  userStruct(mem, 16, 16);
  const hole = IO(IOMMUFD_TYPE, 0x97);
  assert.equal(dispatchIoctl(sparse, ctx, hole, ARG, mem), ENOTTY);
  assert.equal(dispatchIoctl(sparse, ctx, hole, 0n, mem), EFAULT);
  const hole2 = IO(IOMMUFD_TYPE, 0x85);
  assert.equal(dispatchIoctl(sparse, ctx, hole2, ARG, mem), ENOTTY);
  assert.equal(ctx.calls.length, 0);
});

test("an in-range nr with another type or with direction/size bits is ENOTTY", () => {
  const { ctx, mem } = fresh();
  userStruct(mem, 8, 8);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IO(0x41, 0x80), ARG, mem), ENOTTY);
  const iowr = ((3 << 30) | (8 << 16) | IOMMU_DESTROY) >>> 0;
  assert.equal(dispatchIoctl(RECORDERS, ctx, iowr, ARG, mem), ENOTTY);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), 0);
  assert.equal(ctx.calls.length, 1);
});

test("size < min_size is EINVAL for every ioctl; size == min_size reaches the handler", () => {
  for (const spec of ALL_SPECS) {
    const { ctx, mem } = fresh();
    const b = userStruct(mem, spec.layout.size + 8, spec.minSize - 1);
    const cmd = IO(IOMMUFD_TYPE, spec.nr);
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), EINVAL, spec.name);
    new DataView(b.buffer).setUint32(0, spec.minSize, true);
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), 0, spec.name);
    assert.equal(ctx.calls.length, 1, spec.name);
    assert.equal(ctx.calls[0]!.userSize, spec.minSize);
  }
});

test("a short struct is zero-extended: bytes past the user size never reach the handler", () => {
  const { ctx, mem } = fresh();
  // iommu_hwpt_alloc: min 24, kernel size 48; the user's memory beyond 24 is garbage.
  const spec = IOMMUFD_IOCTLS.HWPT_ALLOC;
  const b = userStruct(mem, 48, 24);
  b.fill(0xee, 4);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IO(IOMMUFD_TYPE, spec.nr), ARG, mem), 0);
  const cmd = ctx.calls[0]!.cmd;
  assert.equal(cmd.pt_id, 0xeeeeeeee);
  assert.equal(cmd.__reserved, 0xeeeeeeee);
  assert.equal(cmd.data_type, 0);
  assert.equal(cmd.data_len, 0);
  assert.equal(cmd.data_uptr, 0n);
  assert.equal(cmd.fault_id, 0);
});

test("a longer struct with a non-zero byte past the kernel size is E2BIG", () => {
  const { ctx, mem } = fresh();
  const b = userStruct(mem, 8 + 200, 8 + 200);
  b[8 + 150] = 1;
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), E2BIG);
  b[8 + 150] = 0;
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), 0);
  assert.equal(ctx.calls.length, 1);
});

test("a zero tail is accepted and ignored (cmd_ex_fail: future field)", () => {
  const { ctx, mem } = fresh();
  const b = userStruct(mem, 16, 16);
  new DataView(b.buffer).setUint32(4, 77, true);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), 0);
  assert.deepEqual(ctx.calls[0]!.cmd, { size: 16, id: 77 });
  b[12] = 1; // the u64 "future" member becomes non-zero
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), E2BIG);
  new DataView(b.buffer).setUint32(0, 8, true); // the original command still works
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), 0);
  new DataView(b.buffer).setUint32(0, 7, true); // and a short one fails
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), EINVAL);
});

test("an unreadable tail is EFAULT, but a non-zero byte before the hole is E2BIG", () => {
  const { ctx, mem } = fresh();
  // Mapped up to an 8-byte boundary: check_zeroed_user reads aligned words, all or nothing.
  const b = userStruct(mem, 16, 4096);
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), EFAULT);
  b[10] = 5;
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_DESTROY, ARG, mem), E2BIG);
  assert.equal(ctx.calls.length, 0);
});

test("the tail is checked before the common part is copied (kernel order)", () => {
  const { ctx, mem } = fresh();
  // iommu_option (24 bytes) with a hole at [8, 16) and a non-zero byte at 30.
  const head = mem.map(ARG, 8);
  new DataView(head.buffer).setUint32(0, 32, true);
  const tail = mem.map(ARG + 16n, 16);
  tail[14] = 1;
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_OPTION, ARG, mem), E2BIG);
  tail[14] = 0;
  assert.equal(dispatchIoctl(RECORDERS, ctx, IOMMU_OPTION, ARG, mem), EFAULT);
});

test("cmd_length, replayed for every ioctl of the table", () => {
  for (const spec of ALL_SPECS) {
    const { ctx, mem } = fresh();
    const cmd = IO(IOMMUFD_TYPE, spec.nr);
    const size = spec.layout.size;
    // struct { the struct; uint8_t extra = 0xff } as the selftest lays it out.
    const b = userStruct(mem, size + 8, spec.minSize - 1);
    b[size] = 0xff;
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), EINVAL, spec.name);
    new DataView(b.buffer).setUint32(0, size + 1, true);
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), E2BIG, spec.name);
    new DataView(b.buffer).setUint32(0, size, true);
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), 0, spec.name);
    new DataView(b.buffer).setUint32(0, size + 1, true);
    b[size] = 0;
    assert.equal(dispatchIoctl(RECORDERS, ctx, cmd, ARG, mem), 0, spec.name);
    assert.equal(ctx.calls.length, 2, spec.name);
    assert.deepEqual({ ...ctx.calls[0]!.cmd, size: 0 }, { ...ctx.calls[1]!.cmd, size: 0 });
  }
});

/** IOAS_ALLOC whose handler fills out_ioas_id and responds. */
const allocOp = ioctlOp(IOMMUFD_IOCTLS.IOAS_ALLOC, (_ctx: Ctx, ucmd) => {
  ucmd.cmd.out_ioas_id = 5;
  return ucmd.respond();
});

test("respond writes back min(user size, kernel size) bytes and nothing past them", () => {
  const { ctx, mem } = fresh();
  // Longer user struct: 12 kernel bytes go back, the zero tail stays as it was.
  const b = userStruct(mem, 20, 20);
  assert.equal(dispatchIoctl([allocOp], ctx, IOMMU_IOAS_ALLOC, ARG, mem), 0);
  const v = new DataView(b.buffer);
  assert.equal(v.getUint32(8, true), 5);
  assert.equal(v.getUint32(0, true), 20, "size is written back unchanged");
  assert.deepEqual([...b.subarray(12)], new Array(8).fill(0));
});

test("respond is truncated to a short user struct", () => {
  const { ctx, mem } = fresh();
  // HWPT_ALLOC with the v6.6-era 24-byte struct; the handler sets a member beyond it.
  const op = ioctlOp(IOMMUFD_IOCTLS.HWPT_ALLOC, (_ctx: Ctx, ucmd) => {
    ucmd.cmd.out_hwpt_id = 9;
    ucmd.cmd.fault_id = 0xdead;
    return ucmd.respond();
  });
  const b = userStruct(mem, 48, 24);
  b.fill(0xcc, 24);
  assert.equal(dispatchIoctl([op], ctx, IO(IOMMUFD_TYPE, op.nr), ARG, mem), 0);
  assert.equal(new DataView(b.buffer).getUint32(16, true), 9);
  assert.deepEqual([...b.subarray(24)], new Array(24).fill(0xcc));
});

test("a faulting write-back makes the ioctl EFAULT", () => {
  const { ctx, mem } = fresh();
  const b = new Uint8Array(12);
  new DataView(b.buffer).setUint32(0, 12, true);
  mem.map(ARG, b, { writable: false });
  assert.equal(dispatchIoctl([allocOp], ctx, IOMMU_IOAS_ALLOC, ARG, mem), EFAULT);
});

test("respondField copies back a single member (as iommufd_option does for val64)", () => {
  const { ctx, mem } = fresh();
  const op = ioctlOp(IOMMUFD_IOCTLS.OPTION, (_ctx: Ctx, ucmd) => {
    ucmd.cmd.val64 = 0x1122334455667788n;
    ucmd.cmd.object_id = 99; // changed in the kernel copy, not copied back
    return ucmd.respondField("val64");
  });
  const b = userStruct(mem, 24, 24);
  assert.equal(dispatchIoctl([op], ctx, IOMMU_OPTION, ARG, mem), 0);
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(16, true), 0x1122334455667788n);
  assert.equal(v.getUint32(12, true), 0);
});

test("no write-back unless the handler asks", () => {
  const { ctx, mem } = fresh();
  const op = ioctlOp(IOMMUFD_IOCTLS.IOAS_ALLOC, (_ctx: Ctx, ucmd) => {
    ucmd.cmd.out_ioas_id = 5;
    return ENOENT;
  });
  const b = userStruct(mem, 12, 12);
  assert.equal(dispatchIoctl([op], ctx, IOMMU_IOAS_ALLOC, ARG, mem), ENOENT);
  assert.equal(new DataView(b.buffer).getUint32(8, true), 0);
});

test("retval carries a success value; ErrnoError becomes its errno; other throws escape", () => {
  const { ctx, mem } = fresh();
  const cmdBytes = userStruct(mem, 72, 72);
  const v = new DataView(cmdBytes.buffer);
  v.setUint32(4, IOMMU_TEST_OP.DMABUF_GET, true);
  v.setUint32(16, 4096, true);
  let mode = "fd";
  const op = ioctlOp(IOMMUFD_IOCTLS.TEST_CMD, (_ctx: Ctx, ucmd) => {
    if (mode === "fd") {
      assert.equal(ucmd.cmd.dmabuf_get?.length, 4096);
      ucmd.retval = 7;
      return 0;
    }
    if (mode === "errno") throw new ErrnoError(ENOENT, "no such object");
    throw new TypeError("bug");
  });
  const result: IoctlResult = { value: -1 };
  assert.equal(dispatchIoctl([op], ctx, IOMMU_TEST_CMD, ARG, mem, undefined, result), 0);
  assert.equal(result.value, 7);
  mode = "errno";
  assert.equal(dispatchIoctl([op], ctx, IOMMU_TEST_CMD, ARG, mem, undefined, result), ENOENT);
  assert.equal(result.value, 0);
  assert.match(result.message ?? "", /no such object/);
  mode = "bug";
  assert.throws(() => dispatchIoctl([op], ctx, IOMMU_TEST_CMD, ARG, mem), TypeError);
});

test("ucmd array helpers read and write user arrays and report EFAULT", () => {
  const { ctx, mem } = fresh();
  const ranges = mem.map(0x9000_0000n, 64);
  const out: Decoded<typeof IOMMU_IOVA_RANGE_LAYOUT>[] = [];
  let seen: Ucmd<unknown> | undefined;
  const op = ioctlOp(IOMMUFD_IOCTLS.IOAS_IOVA_RANGES, (_ctx: Ctx, ucmd) => {
    seen = ucmd;
    const items = [
      { start: 0n, last: 0xfffn },
      { start: 0x1000000n, last: 0x7fffffffn },
    ];
    const rc = ucmd.writeArray(ucmd.cmd.allowed_iovas, IOMMU_IOVA_RANGE_LAYOUT, items);
    if (rc !== 0) return rc;
    return ucmd.readArray(ucmd.cmd.allowed_iovas, IOMMU_IOVA_RANGE_LAYOUT, 2, out);
  });
  const b = userStruct(mem, 32, 32);
  encode(IOMMUFD_IOCTLS.IOAS_IOVA_RANGES.layout, { allowed_iovas: 0x9000_0000n }, b);
  assert.equal(dispatchIoctl([op], ctx, IOMMU_IOAS_IOVA_RANGES, ARG, mem), 0);
  assert.deepEqual(out, [
    { start: 0n, last: 0xfffn },
    { start: 0x1000000n, last: 0x7fffffffn },
  ]);
  assert.equal(new DataView(ranges.buffer).getBigUint64(24, true), 0x7fffffffn);
  encode(IOMMUFD_IOCTLS.IOAS_IOVA_RANGES.layout, { allowed_iovas: 0x9000_0030n }, b);
  assert.equal(dispatchIoctl([op], ctx, IOMMU_IOAS_IOVA_RANGES, ARG, mem), EFAULT);
  assert.ok(seen !== undefined);
  assert.equal(seen.readUser(0n, new Uint8Array(1)), EFAULT);
  // copy_struct_from_user for driver data: short blob zero-extended into the kernel size.
  const blob = new Uint8Array(8).fill(0xff);
  assert.equal(seen.copyStructFromUser(blob, 0x9000_0000n, 4), 0);
  assert.deepEqual([...blob], [0, 0, 0, 0, 0, 0, 0, 0]);
});

test("buildIoctlTable rejects duplicate and non-iommufd numbers and bad min sizes", () => {
  const a = recorder(IOMMUFD_IOCTLS.DESTROY);
  assert.throws(() => buildIoctlTable([a, a]), /twice/);
  assert.throws(() => buildIoctlTable([{ ...a, nr: 0x7f }]), /not an iommufd nr/);
  assert.throws(() => buildIoctlTable([{ ...a, minSize: 9 }]), /min size/);
});

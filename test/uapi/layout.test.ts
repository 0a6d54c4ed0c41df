/**
 * Struct layouts: every hand-written offset table is checked three ways.
 *  1. Against the C layout rules for x86-64, recomputed here from the member list alone
 *     (natural alignment, members in order and non-overlapping, size rounded to alignment).
 *  2. Against sizes and offsets known from outside this repo: bindgen's layout assertions in
 *     cloud-hypervisor/iommufd (iommufd-bindings/src/iommufd.rs, generated from a real
 *     iommufd.h), main.c's IOCTL_OP min sizes, and the selftest's TEST_LENGTH list.
 *  3. For the VFIO type1 structs, against the C compiler and this machine's <linux/vfio.h>.
 * Plus the codec itself: round trips (property-based), unions, arrays, partial encodes.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import fc from "fast-check";
import {
  decode,
  encode,
  type Field,
  IOMMU_HW_INFO_LAYOUT,
  IOMMU_HWPT_ARM_SMMUV3_LAYOUT,
  IOMMU_IOAS_MAP_FILE_LAYOUT,
  IOMMU_IOAS_MAP_LAYOUT,
  IOMMU_OPTION_LAYOUT,
  IOMMU_TEST_CMD_LAYOUT,
  IOMMU_TEST_OP,
  IOMMU_TEST_OP_MD_CHECK_DMABUF,
  IOMMUFD_IOCTLS,
  IOMMUFD_LAYOUTS,
  type Layout,
  offsetOf,
  offsetOfEnd,
  type ScalarType,
  TEST_LAYOUTS,
  VFIO_IOMMU_GET_INFO_MINSZ,
  VFIO_IOMMU_MAP_DMA_MINSZ,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT,
  VFIO_IOMMU_UNMAP_DMA_MINSZ,
  VFIO_LAYOUTS,
} from "../../src/uapi/index.ts";
import * as ioctlConstants from "../../src/uapi/ioctl.ts";

const ALL_LAYOUTS: readonly Layout[] = [...IOMMUFD_LAYOUTS, ...TEST_LAYOUTS, ...VFIO_LAYOUTS];

// ---- 1. The C rules, recomputed independently of the tables' own numbers -------------------

const SCALAR: Record<ScalarType, { size: number; align: number }> = {
  u8: { size: 1, align: 1 },
  u16: { size: 2, align: 2 },
  u32: { size: 4, align: 4 },
  s32: { size: 4, align: 4 },
  // x86-64: __u64 is 8-byte aligned, like __aligned_u64 and __aligned_le64.
  u64: { size: 8, align: 8 },
  aligned_u64: { size: 8, align: 8 },
  aligned_le64: { size: 8, align: 8 },
};

const roundUp = (n: number, a: number) => Math.ceil(n / a) * a;

interface CShape {
  size: number;
  align: number;
}

/** Size and alignment of one member by the C rules (flexible arrays have size 0). */
function memberShape(f: Field): CShape {
  if (f.type === "union") {
    let size = 0;
    let align = 1;
    for (const m of f.members) {
      const s = memberShape(m);
      size = Math.max(size, s.size);
      align = Math.max(align, s.align);
    }
    return { size: roundUp(size, align), align };
  }
  const one = f.type === "struct" ? cLayout(f.layout) : SCALAR[f.type];
  return { size: one.size * (f.count ?? 1), align: one.align };
}

/** Lays the members out like a C compiler and compares with the table at every step. */
function cLayout(layout: Layout): CShape {
  let cursor = 0;
  let align = 1;
  for (const f of layout.fields) {
    const s = memberShape(f);
    const at = roundUp(cursor, s.align);
    const what = `${layout.name}.${f.type === "union" ? "(union)" : f.name}`;
    assert.equal(f.offset, at, `${what}: offset ${f.offset}, C places it at ${at}`);
    assert.equal(f.offset % s.align, 0, `${what} is misaligned`);
    if (f.type === "union") {
      assert.equal(f.size, s.size, `${what}: union size`);
      for (const m of f.members) assert.equal(m.offset, f.offset, `${what}.${m.name} offset`);
    }
    cursor = at + s.size;
    align = Math.max(align, s.align);
  }
  return { size: roundUp(cursor, align), align };
}

test("every layout follows the C layout rules for x86-64", () => {
  assert.ok(ALL_LAYOUTS.length >= 75, `only ${ALL_LAYOUTS.length} layouts`);
  for (const l of ALL_LAYOUTS) {
    const c = cLayout(l);
    assert.equal(l.size, c.size, `${l.name}: size ${l.size}, C says ${c.size}`);
    assert.equal(l.align, c.align, `${l.name}: align ${l.align}, C says ${c.align}`);
  }
});

test("the C-rules checker rejects a misplaced member (it can fail)", () => {
  const bad: Layout = {
    name: "bad",
    size: 16,
    align: 8,
    fields: [
      { name: "a", offset: 0, type: "u32" },
      { name: "b", offset: 4, type: "aligned_u64" },
    ],
  };
  assert.throws(() => cLayout(bad), /bad\.b: offset 4, C places it at 8/);
});

test("layout names are unique and every struct starts with its size word where it should", () => {
  const names = new Set<string>();
  for (const l of ALL_LAYOUTS) {
    assert.ok(!names.has(l.name), `duplicate layout ${l.name}`);
    names.add(l.name);
  }
  for (const spec of Object.values(IOMMUFD_IOCTLS)) {
    const first = spec.layout.fields[0];
    assert.ok(first !== undefined && first.type === "u32" && first.name === "size");
    assert.equal(first.offset, 0, spec.name);
  }
});

// ---- 2. Known sizes and offsets --------------------------------------------------------------

/** [struct, sizeof, {member: offsetof}] from bindgen's assertions on a real iommufd.h. */
const BINDGEN_FACTS: [string, number, Record<string, number>][] = [
  ["iommu_destroy", 8, { size: 0, id: 4 }],
  ["iommu_ioas_alloc", 12, { flags: 4, out_ioas_id: 8 }],
  ["iommu_iova_range", 16, { start: 0, last: 8 }],
  [
    "iommu_ioas_iova_ranges",
    32,
    { num_iovas: 8, __reserved: 12, allowed_iovas: 16, out_iova_alignment: 24 },
  ],
  ["iommu_ioas_allow_iovas", 24, { num_iovas: 8, allowed_iovas: 16 }],
  ["iommu_ioas_map", 40, { ioas_id: 8, __reserved: 12, user_va: 16, length: 24, iova: 32 }],
  ["iommu_ioas_copy", 40, { src_ioas_id: 12, length: 16, dst_iova: 24, src_iova: 32 }],
  ["iommu_ioas_unmap", 24, { ioas_id: 4, iova: 8, length: 16 }],
  ["iommu_option", 24, { option_id: 4, op: 8, __reserved: 10, object_id: 12, val64: 16 }],
  ["iommu_vfio_ioas", 12, { ioas_id: 4, op: 8, __reserved: 10 }],
  ["iommu_hw_info_vtd", 24, { __reserved: 4, cap_reg: 8, ecap_reg: 16 }],
];

/** Members whose offsets bindgen recorded for structs that later grew (sizes differ now). */
const BINDGEN_PREFIX_FACTS: [string, Record<string, number>][] = [
  ["iommu_hwpt_alloc", { dev_id: 8, pt_id: 12, out_hwpt_id: 16, __reserved: 20 }],
  ["iommu_hw_info", { data_len: 12, data_uptr: 16, out_data_type: 24 }],
];

/** sizeof() values of newer structs, worked out from iommufd.h / iommufd_test.h member lists. */
const HEADER_SIZE_FACTS: Record<string, number> = {
  iommu_hwpt_alloc: 48,
  iommu_hw_info: 40,
  iommu_hwpt_invalidate: 32,
  iommu_hwpt_get_dirty_bitmap: 48,
  iommu_hwpt_pgfault: 40,
  iommu_viommu_alloc: 40,
  iommu_vdevice_alloc: 24,
  iommu_veventq_alloc: 32,
  iommu_hw_queue_alloc: 40,
  iommu_hw_info_arm_smmuv3: 40,
  iommu_ioas_map_file: 40,
  iommu_test_cmd: 72,
  "iommu_test_cmd.check_dmabuf": 32,
  iommu_viommu_selftest: 24,
  iommu_viommu_invalidate_selftest: 12,
};

function layoutNamed(name: string): Layout {
  const l = ALL_LAYOUTS.find((x) => x.name === name);
  assert.ok(l, `no layout ${name}`);
  return l;
}

test("sizes and offsets match bindgen's assertions on a real iommufd.h", () => {
  for (const [name, size, members] of BINDGEN_FACTS) {
    const l = layoutNamed(name);
    assert.equal(l.size, size, `sizeof(${name})`);
    for (const [m, off] of Object.entries(members)) {
      assert.equal(offsetOf(l, m), off, `offsetof(${name}, ${m})`);
    }
  }
  for (const [name, members] of BINDGEN_PREFIX_FACTS) {
    const l = layoutNamed(name);
    for (const [m, off] of Object.entries(members)) {
      assert.equal(offsetOf(l, m), off, `offsetof(${name}, ${m})`);
    }
  }
});

test("sizes of the newer structs", () => {
  for (const [name, size] of Object.entries(HEADER_SIZE_FACTS)) {
    assert.equal(layoutNamed(name).size, size, `sizeof(${name})`);
  }
});

test("min sizes are offsetofend of main.c's IOCTL_OP member (selftest TEST_LENGTH values)", () => {
  // nr -> min size: offsetofend(struct, last) with the member IOCTL_OP names.
  const expected: Record<string, number> = {
    IOMMU_DESTROY: 8,
    IOMMU_IOAS_ALLOC: 12,
    IOMMU_IOAS_ALLOW_IOVAS: 24,
    IOMMU_IOAS_COPY: 40,
    IOMMU_IOAS_IOVA_RANGES: 32,
    IOMMU_IOAS_MAP: 40,
    IOMMU_IOAS_UNMAP: 24,
    IOMMU_OPTION: 24,
    IOMMU_VFIO_IOAS: 12,
    IOMMU_HWPT_ALLOC: 24,
    IOMMU_GET_HW_INFO: 32,
    IOMMU_HWPT_SET_DIRTY_TRACKING: 16,
    IOMMU_HWPT_GET_DIRTY_BITMAP: 48,
    IOMMU_HWPT_INVALIDATE: 32,
    IOMMU_FAULT_QUEUE_ALLOC: 16,
    IOMMU_IOAS_MAP_FILE: 40,
    IOMMU_VIOMMU_ALLOC: 24,
    IOMMU_VDEVICE_ALLOC: 24,
    IOMMU_IOAS_CHANGE_PROCESS: 8,
    IOMMU_VEVENTQ_ALLOC: 28,
    IOMMU_HW_QUEUE_ALLOC: 40,
    IOMMU_IOAS_NOIOMMU_GET_PA: 40,
    IOMMU_TEST_CMD: 68,
  };
  const specs = Object.values(IOMMUFD_IOCTLS);
  assert.equal(specs.length, Object.keys(expected).length);
  for (const s of specs) {
    assert.equal(s.minSize, expected[s.name], `min size of ${s.name}`);
    assert.ok(s.minSize <= s.layout.size);
  }
});

test("offsetOf/offsetOfEnd find union members and reject unknown members", () => {
  assert.equal(offsetOf(IOMMU_HW_INFO_LAYOUT, "in_data_type"), 24);
  assert.equal(offsetOfEnd(IOMMU_HW_INFO_LAYOUT, "out_data_type"), 28);
  assert.equal(offsetOfEnd(IOMMU_HW_INFO_LAYOUT, "__reserved"), 32);
  assert.equal(offsetOfEnd(IOMMU_TEST_CMD_LAYOUT, "dirty"), 64);
  assert.throws(() => offsetOf(IOMMU_IOAS_MAP_LAYOUT, "nope"), /no member nope/);
});

// ---- 3. The VFIO structs against this machine's C compiler and <linux/vfio.h> -------------

function hasCompiler(): boolean {
  try {
    execFileSync("cc", ["--version"], { stdio: "ignore" });
    return existsSync("/usr/include/linux/vfio.h");
  } catch {
    return false;
  }
}

test("VFIO type1 layouts and numbers match the system <linux/vfio.h>", (t) => {
  if (!hasCompiler()) {
    t.skip("no cc or no /usr/include/linux/vfio.h");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "iommusim-vfio-"));
  const compiles = (body: string) => {
    writeFileSync(join(dir, "member.c"), `#include <stddef.h>\n#include <linux/vfio.h>\n${body}\n`);
    try {
      execFileSync("cc", ["-c", "-o", join(dir, "member.o"), join(dir, "member.c")], {
        stdio: "ignore",
      });
      return true;
    } catch {
      return false;
    }
  };
  // Members that newer headers name explicitly where older ones left implicit padding
  // (linux-libc-dev 6.1 has no vfio_iommu_type1_info.pad): probed before use.
  const skipped = new Set<string>();
  for (const [struct, member] of [["vfio_iommu_type1_info", "pad"]]) {
    if (!compiles(`int probe = offsetof(struct ${struct}, ${member});`)) {
      skipped.add(`${struct} ${member}`);
    }
  }
  // Only layouts, never declarations: the program prints what the compiler decided.
  const lines: string[] = [];
  for (const l of VFIO_LAYOUTS) {
    const struct = `struct ${l.name}`;
    lines.push(`printf("sizeof %s %zu\\n", "${l.name}", sizeof(${struct}));`);
    for (const f of l.fields) {
      if (f.type === "union" || skipped.has(`${l.name} ${f.name}`)) continue;
      lines.push(
        `printf("%s %s %zu\\n", "${l.name}", "${f.name}", offsetof(${struct}, ${f.name}));`,
      );
    }
  }
  const numbers = [
    "VFIO_GET_API_VERSION",
    "VFIO_CHECK_EXTENSION",
    "VFIO_SET_IOMMU",
    "VFIO_IOMMU_GET_INFO",
    "VFIO_IOMMU_MAP_DMA",
    "VFIO_IOMMU_UNMAP_DMA",
    "VFIO_IOMMU_DIRTY_PAGES",
    "VFIO_TYPE1v2_IOMMU",
    "VFIO_UNMAP_ALL",
    "VFIO_DMA_UNMAP_FLAG_ALL",
    "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL",
  ];
  for (const n of numbers) lines.push(`printf("#%s %lu\\n", "${n}", (unsigned long)(${n}));`);
  const src = [
    "#include <stddef.h>",
    "#include <stdio.h>",
    "#include <linux/vfio.h>",
    "int main(void) {",
    ...lines,
    "return 0; }",
  ].join("\n");
  try {
    writeFileSync(join(dir, "probe.c"), src);
    execFileSync("cc", ["-o", join(dir, "probe"), join(dir, "probe.c")]);
    const out = execFileSync(join(dir, "probe"), { encoding: "utf8" }).trim().split("\n");
    const seen = new Map<string, number>();
    for (const line of out) {
      const parts = line.split(" ");
      seen.set(parts.slice(0, -1).join(" "), Number(parts[parts.length - 1]));
    }
    for (const l of VFIO_LAYOUTS) {
      assert.equal(l.size, seen.get(`sizeof ${l.name}`), `sizeof(${l.name})`);
      for (const f of l.fields) {
        if (f.type === "union" || skipped.has(`${l.name} ${f.name}`)) continue;
        assert.equal(f.offset, seen.get(`${l.name} ${f.name}`), `offsetof(${l.name}, ${f.name})`);
      }
    }
    const consts = ioctlConstants as unknown as Record<string, number>;
    for (const n of numbers) assert.equal(consts[n], seen.get(`#${n}`), n);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("VFIO minsz values are the prefixes vfio_compat.c copies", () => {
  assert.equal(VFIO_IOMMU_GET_INFO_MINSZ, 16);
  assert.equal(VFIO_IOMMU_MAP_DMA_MINSZ, 32);
  assert.equal(VFIO_IOMMU_UNMAP_DMA_MINSZ, 24);
});

// ---- The codec ------------------------------------------------------------------------------

test("decode reads little-endian members at their offsets; u64 as bigint", () => {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, 40, true);
  v.setUint32(4, 7, true);
  v.setUint32(8, 3, true);
  v.setInt32(12, -5, true);
  v.setBigUint64(16, 0x1122334455667788n, true);
  v.setBigUint64(24, 0xffffffffffffffffn, true);
  v.setBigUint64(32, 4096n, true);
  const c = decode(IOMMU_IOAS_MAP_FILE_LAYOUT, b);
  assert.deepEqual(c, {
    size: 40,
    flags: 7,
    ioas_id: 3,
    fd: -5,
    start: 0x1122334455667788n,
    length: 0xffffffffffffffffn,
    iova: 4096n,
  });
  // The decoded type says bigint for 64-bit members and number otherwise.
  const iova: bigint = c.iova;
  const fd: number = c.fd;
  assert.equal(typeof iova, "bigint");
  assert.equal(fd, -5);
});

test("u16 members, arrays of u8 and of le64, and the hw_info anonymous union", () => {
  const opt = new Uint8Array(24);
  encode(IOMMU_OPTION_LAYOUT, { op: 0x1_0001, __reserved: 0xbeef }, opt);
  // u16 keeps the low 16 bits, like a C assignment.
  assert.deepEqual([...opt.subarray(8, 12)], [1, 0, 0xef, 0xbe]);

  const info = new Uint8Array(40);
  encode(IOMMU_HW_INFO_LAYOUT, { out_data_type: 0xfeedbeef, __reserved: [1, 2, 3] }, info);
  const d = decode(IOMMU_HW_INFO_LAYOUT, info);
  assert.equal(d.in_data_type, 0xfeedbeef);
  assert.equal(d.out_data_type, 0xfeedbeef);
  assert.deepEqual(d.__reserved, [1, 2, 3]);

  const ste = new Uint8Array(16);
  encode(IOMMU_HWPT_ARM_SMMUV3_LAYOUT, { ste: [1n, 0x8000000000000000n] }, ste);
  assert.deepEqual(decode(IOMMU_HWPT_ARM_SMMUV3_LAYOUT, ste).ste, [1n, 0x8000000000000000n]);
  assert.equal(ste[15], 0x80);
});

test("iommu_test_cmd decodes only the union member its op selects", () => {
  const b = new Uint8Array(72);
  const v = new DataView(b.buffer);
  v.setUint32(0, 72, true);
  v.setUint32(4, IOMMU_TEST_OP.ADD_RESERVED, true);
  v.setUint32(8, 9, true);
  v.setBigUint64(16, 1n << 24n, true);
  v.setBigUint64(24, 4096n, true);
  v.setUint32(64, 0xabcd, true);
  const c = decode(IOMMU_TEST_CMD_LAYOUT, b);
  assert.deepEqual(c.add_reserved, { start: 1n << 24n, length: 4096n });
  assert.equal(c.check_map, undefined);
  assert.equal(c.last, 0xabcd);

  v.setUint32(4, IOMMU_TEST_OP.DMABUF_REVOKE, true);
  v.setInt32(16, -1, true);
  v.setUint32(20, 1, true);
  const r = decode(IOMMU_TEST_CMD_LAYOUT, b);
  assert.deepEqual(r.dmabuf_revoke, { dmabuf_fd: -1, revoked: 1 });
  assert.equal(r.add_reserved, undefined);

  // Op 24's check_dmabuf: an s32 fd, 4 bytes of padding, then three aligned u64s.
  b.fill(0, 16, 64);
  v.setUint32(4, IOMMU_TEST_OP_MD_CHECK_DMABUF, true);
  v.setInt32(16, -2, true);
  v.setUint32(20, 0xffff_ffff, true);
  v.setBigUint64(24, 1n << 24n, true);
  v.setBigUint64(32, 0x4000n, true);
  v.setBigUint64(40, 0x1000n, true);
  const d = decode(IOMMU_TEST_CMD_LAYOUT, b);
  assert.deepEqual(d.check_dmabuf, {
    dmabuf_fd: -2,
    iova: 1n << 24n,
    length: 0x4000n,
    offset: 0x1000n,
  });
  assert.equal(offsetOfEnd(IOMMU_TEST_CMD_LAYOUT, "check_dmabuf"), 48);

  v.setUint32(4, 999, true);
  const unknown = decode(IOMMU_TEST_CMD_LAYOUT, b);
  assert.deepEqual(Object.keys(unknown).sort(), ["__reserved", "id", "last", "op", "size"]);
});

test("every test op selects a union member, and each member is used by exactly one op", () => {
  const union = IOMMU_TEST_CMD_LAYOUT.fields[4];
  const cases = union.selector.cases as Record<number, string>;
  const used = new Set<string>();
  for (const op of Object.values(IOMMU_TEST_OP)) {
    const m = cases[op];
    assert.ok(m !== undefined, `op ${op} has no member`);
    assert.ok(union.members.some((x) => x.name === m));
    assert.ok(!used.has(m), `${m} used twice`);
    used.add(m);
  }
  assert.equal(used.size, union.members.length);
  assert.equal(Object.keys(IOMMU_TEST_OP).length, 24);
});

test("encode leaves absent members' bytes alone and refuses wrong value types", () => {
  const b = new Uint8Array(40).fill(0xaa);
  encode(IOMMU_IOAS_MAP_LAYOUT, { iova: 0x1000n }, b);
  assert.deepEqual([...b.subarray(0, 32)], new Array(32).fill(0xaa));
  assert.equal(new DataView(b.buffer).getBigUint64(32, true), 0x1000n);
  assert.throws(
    () => encode(IOMMU_IOAS_MAP_LAYOUT, { iova: 1 as unknown as bigint }, b),
    /iommu_ioas_map\.iova: expected a bigint/,
  );
  assert.throws(() => decode(IOMMU_IOAS_MAP_LAYOUT, new Uint8Array(39)), RangeError);
  // Negative bigints wrap modulo 2^64, as a C cast does.
  encode(IOMMU_IOAS_MAP_LAYOUT, { length: -1n }, b);
  assert.equal(decode(IOMMU_IOAS_MAP_LAYOUT, b).length, 0xffffffffffffffffn);
});

test("flexible array members are neither decoded nor written", () => {
  const b = new Uint8Array(16);
  const c = decode(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT, b);
  assert.deepEqual(c.iova_ranges, []);
  encode(
    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT,
    { header: { id: 1, version: 1, next: 0 }, nr_iovas: 2, iova_ranges: [{ start: 1n, end: 2n }] },
    b,
  );
  assert.deepEqual(decode(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE_LAYOUT, b).header, {
    id: 1,
    version: 1,
    next: 0,
  });
});

/** Arbitrary for one member's value (unions and flexible arrays are left out). */
function arbOf(f: Field): fc.Arbitrary<unknown> | undefined {
  if (f.type === "union" || f.count === 0) return undefined;
  let one: fc.Arbitrary<unknown>;
  if (f.type === "struct") one = arbObject(f.layout);
  else if (f.type === "u8") one = fc.integer({ min: 0, max: 0xff });
  else if (f.type === "u16") one = fc.integer({ min: 0, max: 0xffff });
  else if (f.type === "u32") one = fc.integer({ min: 0, max: 0xffffffff });
  else if (f.type === "s32") one = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
  else one = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  return f.count === undefined ? one : fc.array(one, { minLength: f.count, maxLength: f.count });
}

function arbObject(l: Layout): fc.Arbitrary<Record<string, unknown>> {
  const shape: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of l.fields) {
    const a = arbOf(f);
    if (a !== undefined && f.type !== "union") shape[f.name] = a;
  }
  return fc.record(shape);
}

/** A copy made of ordinary objects and arrays (fast-check builds null-prototype records). */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

test("encode then decode gives the object back, for every layout (property)", () => {
  for (const l of ALL_LAYOUTS) {
    if (l.fields.some((f) => f.type === "union")) continue;
    fc.assert(
      fc.property(arbObject(l), (obj) => {
        const b = new Uint8Array(l.size);
        encode(l, obj as Parameters<typeof encode>[1], b);
        const back = decode(l, b) as Record<string, unknown>;
        for (const [k, v] of Object.entries(obj)) {
          assert.deepEqual(back[k], plain(v), `${l.name}.${k}`);
        }
      }),
      { numRuns: 25 },
    );
  }
});

/**
 * Struct layouts as data, and the codec that turns user bytes into plain objects and back.
 *
 * A layout lists every member of a C uAPI struct with its byte offset, as the compiler places
 * it for the x86-64 (LP64) ABI the emulator serves: `__u64` and `__aligned_u64` are both 8-byte
 * aligned there, so the two only differ in name. Offsets are written out by hand in the layout
 * tables (structs.ts, test_cmd.ts, vfio.ts) and checked against the C layout rules and known
 * sizes in test/uapi/layout.test.ts.
 *
 * This is control plane code (one decode per ioctl): 64-bit members decode to `bigint`.
 * Integers are little-endian, as on the x86-64 host whose memory the daemon reads.
 */

/** Scalar member types, named after the kernel's uAPI types (`__u32` is "u32", ...). */
export type ScalarType = "u8" | "u16" | "u32" | "s32" | "u64" | "aligned_u64" | "aligned_le64";

/** A scalar member, or an array of `count` scalars (`count: 0` is a flexible array member). */
export interface ScalarField {
  readonly name: string;
  readonly offset: number;
  readonly type: ScalarType;
  readonly count?: number;
}

/** A nested struct member (offsets inside `layout` are relative to this member's offset). */
export interface StructField {
  readonly name: string;
  readonly offset: number;
  readonly type: "struct";
  readonly layout: Layout;
  readonly count?: number;
}

/**
 * An anonymous C union. Its members live at the union's offset and surface as top-level
 * properties of the decoded object, as they do in C (`cmd.add_reserved.start`).
 * With a `selector`, decode only produces the member that the selector field names
 * (iommu_test_cmd picks its member by `op`); without one every member is decoded.
 */
export interface UnionField {
  readonly name: "";
  readonly offset: number;
  readonly type: "union";
  readonly size: number;
  readonly members: readonly (ScalarField | StructField)[];
  readonly selector?: {
    readonly field: string;
    readonly cases: Readonly<Record<number, string>>;
  };
}

export type Field = ScalarField | StructField | UnionField;

export interface Layout {
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly Field[];
}

type U64Type = "u64" | "aligned_u64" | "aligned_le64";
type ScalarValue<T> = T extends U64Type ? bigint : number;
type FieldValue<F> = F extends { readonly type: "struct"; readonly layout: infer L extends Layout }
  ? F extends { readonly count: number }
    ? Decoded<L>[]
    : Decoded<L>
  : F extends { readonly type: infer T; readonly count: number }
    ? ScalarValue<T>[]
    : F extends { readonly type: infer T }
      ? ScalarValue<T>
      : never;
type PlainFields<L extends Layout> = Exclude<L["fields"][number], UnionField>;
type UnionMembers<L extends Layout> = Extract<L["fields"][number], UnionField>["members"][number];

/**
 * The plain object a layout decodes to: u8..u32/s32 members are numbers, 64-bit members are
 * bigints, arrays are JS arrays, nested structs are nested objects. Union members are optional.
 */
export type Decoded<L extends Layout> = {
  -readonly [F in PlainFields<L> as F["name"]]: FieldValue<F>;
} & {
  -readonly [M in UnionMembers<L> as M["name"]]?: FieldValue<M>;
};

const SCALAR_SIZE: Readonly<Record<ScalarType, number>> = {
  u8: 1,
  u16: 2,
  u32: 4,
  s32: 4,
  u64: 8,
  aligned_u64: 8,
  aligned_le64: 8,
};

/** Size in bytes of one element of a scalar type. */
export function scalarSize(type: ScalarType): number {
  return SCALAR_SIZE[type];
}

/** Size in bytes of a whole member (all array elements; 0 for a flexible array member). */
export function fieldSize(field: Field): number {
  if (field.type === "union") return field.size;
  const one = field.type === "struct" ? field.layout.size : SCALAR_SIZE[field.type];
  return one * (field.count ?? 1);
}

/** Finds a member by name, looking inside anonymous unions too. */
export function findField(layout: Layout, name: string): ScalarField | StructField | undefined {
  for (const f of layout.fields) {
    if (f.type === "union") {
      for (const m of f.members) if (m.name === name) return m;
    } else if (f.name === name) {
      return f;
    }
  }
  return undefined;
}

/** C's offsetof(struct, member). Throws for an unknown member: that is a programming error. */
export function offsetOf(layout: Layout, name: string): number {
  const f = findField(layout, name);
  if (f === undefined) throw new Error(`${layout.name} has no member ${name}`);
  return f.offset;
}

/** The kernel's offsetofend(struct, member): the ioctl min_size is defined this way. */
export function offsetOfEnd(layout: Layout, name: string): number {
  const f = findField(layout, name);
  if (f === undefined) throw new Error(`${layout.name} has no member ${name}`);
  return f.offset + fieldSize(f);
}

// 64-bit members go through one 8-byte scratch word: a BigUint64Array element read is a
// single bigint allocation, cheaper than a DataView per struct (measured: the DataView was
// most of the dispatch time). The typed array uses host byte order, so the host must be
// little-endian like the x86-64 ABI modelled here.
const scratch64 = new BigUint64Array(1);
const scratchBytes = new Uint8Array(scratch64.buffer);
if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) {
  throw new Error("iommusim's uAPI codec needs a little-endian host");
}

function readScalar(b: Uint8Array, type: ScalarType, at: number): number | bigint {
  switch (type) {
    case "u8":
      return b[at]!;
    case "u16":
      return b[at]! | (b[at + 1]! << 8);
    case "u32":
      return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
    case "s32":
      return b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24);
    default:
      for (let i = 0; i < 8; i++) scratchBytes[i] = b[at + i]!;
      return scratch64[0]!;
  }
}

/** `what` and `name` only build the message of a TypeError, so no string work on success. */
function writeScalar(
  b: Uint8Array,
  type: ScalarType,
  at: number,
  value: unknown,
  what: string,
  name: string,
) {
  if (type === "u64" || type === "aligned_u64" || type === "aligned_le64") {
    // Storing into a BigUint64Array already wraps modulo 2^64, like a C assignment.
    scratch64[0] = toBig(value, what, name);
    for (let i = 0; i < 8; i++) b[at + i] = scratchBytes[i]!;
    return;
  }
  const v = toInt(value, what, name);
  b[at] = v & 0xff;
  if (type === "u8") return;
  b[at + 1] = (v >>> 8) & 0xff;
  if (type === "u16") return;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}

function memberPath(what: string, name: string): string {
  return name === "" ? what : `${what}.${name}`;
}

function toInt(value: unknown, what: string, name: string): number {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  throw new TypeError(`${memberPath(what, name)}: expected an integer number, got ${typeof value}`);
}

function toBig(value: unknown, what: string, name: string): bigint {
  if (typeof value === "bigint") return value;
  throw new TypeError(`${memberPath(what, name)}: expected a bigint, got ${typeof value}`);
}

function decodeMember(b: Uint8Array, field: ScalarField | StructField, base: number): unknown {
  const at = base + field.offset;
  const count = field.count;
  if (field.type === "struct") {
    if (count === undefined) return decodeAt(b, field.layout, at);
    const out: unknown[] = [];
    for (let i = 0; i < count; i++) out.push(decodeAt(b, field.layout, at + i * field.layout.size));
    return out;
  }
  if (count === undefined) return readScalar(b, field.type, at);
  const step = SCALAR_SIZE[field.type];
  const out: (number | bigint)[] = [];
  for (let i = 0; i < count; i++) out.push(readScalar(b, field.type, at + i * step));
  return out;
}

function decodeAt(b: Uint8Array, layout: Layout, base: number): Record<string, unknown> {
  const obj: Record<string, unknown> = {};
  for (const f of layout.fields) {
    if (f.type !== "union") {
      obj[f.name] = decodeMember(b, f, base);
      continue;
    }
    if (f.selector === undefined) {
      for (const m of f.members) obj[m.name] = decodeMember(b, m, base);
      continue;
    }
    // The selector member precedes the union in every layout that has one.
    const key = obj[f.selector.field];
    const chosen = typeof key === "number" ? f.selector.cases[key] : undefined;
    if (chosen === undefined) continue;
    for (const m of f.members) if (m.name === chosen) obj[m.name] = decodeMember(b, m, base);
  }
  return obj;
}

/**
 * Decodes `layout` from the start of `bytes` (which must hold at least layout.size bytes).
 * Flexible array members decode to empty arrays; read them from user memory separately.
 */
export function decode<L extends Layout>(layout: L, bytes: Uint8Array): Decoded<L> {
  if (bytes.byteLength < layout.size) {
    throw new RangeError(`${layout.name}: need ${layout.size} bytes, got ${bytes.byteLength}`);
  }
  return decodeAt(bytes, layout, 0) as Decoded<L>;
}

function encodeMember(
  b: Uint8Array,
  field: ScalarField | StructField,
  base: number,
  value: unknown,
  what: string,
) {
  const at = base + field.offset;
  const count = field.count;
  if (count === undefined) {
    if (field.type === "struct") encodeAt(b, field.layout, at, value, `${what}.${field.name}`);
    else writeScalar(b, field.type, at, value, what, field.name);
    return;
  }
  if (!Array.isArray(value)) throw new TypeError(`${what}.${field.name}: expected an array`);
  // A flexible array member (count 0) is never written: its length lives outside the struct.
  const n = Math.min(value.length, count);
  const step = field.type === "struct" ? field.layout.size : SCALAR_SIZE[field.type];
  for (let i = 0; i < n; i++) {
    const item = value[i] as unknown;
    if (item === undefined) continue;
    const path = `${what}.${field.name}[${i}]`;
    if (field.type === "struct") encodeAt(b, field.layout, at + i * step, item, path);
    else writeScalar(b, field.type, at + i * step, item, path, "");
  }
}

function encodeAt(b: Uint8Array, layout: Layout, base: number, obj: unknown, what: string) {
  if (typeof obj !== "object" || obj === null) throw new TypeError(`${what}: expected an object`);
  const src = obj as Record<string, unknown>;
  for (const f of layout.fields) {
    if (f.type !== "union") {
      const v = src[f.name];
      if (v !== undefined) encodeMember(b, f, base, v, what);
      continue;
    }
    for (const m of f.members) {
      const v = src[m.name];
      if (v !== undefined) encodeMember(b, m, base, v, what);
    }
  }
}

/**
 * Writes the members present in `obj` into `bytes` at their offsets; members that are absent
 * (undefined) keep whatever `bytes` already holds. That matches how the kernel edits its copy
 * of the user's struct before copying it back, and keeps unknown union bytes intact.
 */
export function encode<L extends Layout>(
  layout: L,
  obj: Partial<Decoded<L>>,
  bytes: Uint8Array,
): void {
  if (bytes.byteLength < layout.size) {
    throw new RangeError(`${layout.name}: need ${layout.size} bytes, got ${bytes.byteLength}`);
  }
  encodeAt(bytes, layout, 0, obj, layout.name);
}

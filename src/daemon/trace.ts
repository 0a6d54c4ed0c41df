/**
 * The ioctl trace (`iommusim exec --trace FILE`): one JSON object per line (NDJSON) per ioctl,
 * with the command's name, its struct decoded from the client's memory before and after the
 * call where the codec knows the layout, the errno and the time the daemon spent. Opens and
 * releases of contexts are lines too, so a trace reads as the client's session.
 *
 * Reading the struct for the trace goes through the same user-memory view as the call but only
 * reads, so tracing does not change what the client sees.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { errnoName } from "../errno.ts";
import {
  IOMMU_TEST_CMD_NR,
  IOMMU_TEST_OP,
  IOMMUFD_TYPE,
  iocNr,
  iocType,
  VFIO_BASE,
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DISABLE,
  VFIO_IOMMU_ENABLE,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
} from "../uapi/ioctl.ts";
import { decode, type Layout } from "../uapi/layout.ts";
import { IOMMUFD_IOCTLS } from "../uapi/structs.ts";
import type { UserMemory } from "../uapi/user_memory.ts";
import {
  VFIO_IOMMU_TYPE1_DIRTY_BITMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT,
  VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT,
  VFIO_IOMMU_TYPE1_INFO_LAYOUT,
} from "../uapi/vfio.ts";

interface Known {
  name: string;
  /** The struct the argument points to; absent for integer arguments. */
  layout?: Layout;
}

const KNOWN = new Map<number, Known>();
for (const spec of Object.values(IOMMUFD_IOCTLS)) {
  KNOWN.set((IOMMUFD_TYPE << 8) | spec.nr, { name: spec.name, layout: spec.layout });
}
for (const [cmd, name, layout] of [
  [VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION", undefined],
  [VFIO_CHECK_EXTENSION, "VFIO_CHECK_EXTENSION", undefined],
  [VFIO_SET_IOMMU, "VFIO_SET_IOMMU", undefined],
  [VFIO_IOMMU_GET_INFO, "VFIO_IOMMU_GET_INFO", VFIO_IOMMU_TYPE1_INFO_LAYOUT],
  [VFIO_IOMMU_MAP_DMA, "VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_TYPE1_DMA_MAP_LAYOUT],
  [VFIO_IOMMU_UNMAP_DMA, "VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_TYPE1_DMA_UNMAP_LAYOUT],
  [VFIO_IOMMU_ENABLE, "VFIO_IOMMU_ENABLE", undefined],
  [VFIO_IOMMU_DISABLE, "VFIO_IOMMU_DISABLE", undefined],
  [VFIO_IOMMU_DIRTY_PAGES, "VFIO_IOMMU_DIRTY_PAGES", VFIO_IOMMU_TYPE1_DIRTY_BITMAP_LAYOUT],
] as const) {
  KNOWN.set(cmd, layout === undefined ? { name } : { name, layout });
}

const TEST_OP_NAMES = new Map<number, string>(
  Object.entries(IOMMU_TEST_OP).map(([k, v]) => [v, k]),
);

/** The ioctl's name: the kernel's macro name, or a description of the number. */
export function ioctlName(cmd: number): string {
  const known = KNOWN.get(cmd >>> 0);
  if (known !== undefined) return known.name;
  const type = iocType(cmd);
  if (type === IOMMUFD_TYPE && iocNr(cmd) >= VFIO_BASE && iocNr(cmd) < 0x80) {
    return `VFIO_nr_${iocNr(cmd)}`;
  }
  return `ioctl_0x${(cmd >>> 0).toString(16)}`;
}

/** The struct layout `cmd` takes, when the codec knows one. */
export function ioctlLayout(cmd: number): Layout | undefined {
  return KNOWN.get(cmd >>> 0)?.layout;
}

/** JSON-safe copy: bigints become "0x..." strings. */
export function jsonSafe(value: unknown): unknown {
  if (typeof value === "bigint") return `0x${value.toString(16)}`;
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonSafe(v);
    return out;
  }
  return value;
}

/**
 * Reads the struct `cmd` points at: its leading size word (or VFIO argsz) says how many bytes
 * the user passed; the rest of the kernel-size buffer stays zero, as copy_struct_from_user
 * leaves it. Undefined when the layout is unknown; {fault} when the memory is unreadable.
 */
export function snapshotStruct(user: UserMemory, cmd: number, arg: bigint): unknown {
  const layout = ioctlLayout(cmd);
  if (layout === undefined) return undefined;
  const word = new Uint8Array(4);
  if (user.read(arg, word) !== 0) return { fault: "EFAULT" };
  const userSize = new DataView(word.buffer).getUint32(0, true);
  const buf = new Uint8Array(layout.size);
  const n = Math.min(userSize, layout.size);
  if (n > 0 && user.read(arg, buf.subarray(0, n)) !== 0) return { fault: "EFAULT" };
  try {
    const decoded = decode(layout, buf) as Record<string, unknown>;
    if (iocNr(cmd) === IOMMU_TEST_CMD_NR && iocType(cmd) === IOMMUFD_TYPE) {
      const op = TEST_OP_NAMES.get(Number(decoded.op));
      if (op !== undefined) decoded.op_name = op;
    }
    return jsonSafe(decoded);
  } catch (e) {
    return { decodeError: String(e) };
  }
}

/** One traced ioctl. */
export interface IoctlTraceRecord {
  event: "ioctl";
  ctx: number;
  pid: number;
  tid: number;
  cmd: string;
  name: string;
  arg: string;
  in?: unknown;
  out?: unknown;
  ret: number;
  errno: number;
  errnoName?: string;
  message?: string;
  us: number;
}

/** A context opened or released. */
export interface ContextTraceRecord {
  event: "open" | "release";
  ctx: number;
  pid: number;
  errno?: number;
}

export type TraceRecord = IoctlTraceRecord | ContextTraceRecord;

/** Fills in the derived fields of an ioctl record. */
export function ioctlRecord(base: {
  ctx: number;
  pid: number;
  tid: number;
  cmd: number;
  arg: bigint;
  ret: number;
  errno: number;
  us: number;
}): IoctlTraceRecord {
  const rec: IoctlTraceRecord = {
    event: "ioctl",
    ctx: base.ctx,
    pid: base.pid,
    tid: base.tid,
    name: ioctlName(base.cmd),
    cmd: `0x${(base.cmd >>> 0).toString(16)}`,
    arg: `0x${BigInt.asUintN(64, base.arg).toString(16)}`,
    ret: base.ret,
    errno: base.errno,
    us: base.us,
  };
  if (base.errno !== 0) rec.errnoName = errnoName(base.errno);
  return rec;
}

/** Writes trace records to a file, one JSON line each, in order. */
export class NdjsonTraceWriter {
  private fd: number;

  constructor(path: string) {
    this.fd = openSync(path, "w");
  }

  write(rec: TraceRecord): void {
    if (this.fd < 0) return;
    writeSync(this.fd, `${JSON.stringify(rec)}\n`);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

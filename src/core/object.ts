/**
 * The iommufd object model (drivers/iommu/iommufd/main.c, iommufd_private.h), per context:
 *
 * - One table of objects keyed by ID. IDs are allocated from 1 upward, the lowest free one
 *   first, and never above 2^31 - 1 (xa_limit_31b with XA_FLAGS_ALLOC1).
 * - A new object first only *reserves* its ID: looking it up gives ENOENT and the ID is not
 *   handed out again. It becomes visible when finalized (after the ioctl's reply was written),
 *   or is aborted, which undoes it and frees the ID.
 * - `users` counts structural references. The table holds one; an object that depends on
 *   another (a HWPT on its IOAS, a nested HWPT on its parent) holds one on it. IOMMU_DESTROY
 *   succeeds only when the table's is the last: otherwise EBUSY.
 * - Lookups name the type they want; a missing, reserved or differently typed ID is ENOENT.
 * - A tombstone keeps an ID unusable (ENOENT, never reused) until the context is closed: what
 *   the kernel leaves behind for a vDEVICE whose device was unbound under it.
 * - Closing the context destroys everything leaf-first: repeated passes over the objects whose
 *   table reference is the last one.
 */
import { EBUSY, ENOENT, ENOMEM, ENOSPC, ErrnoError } from "../errno.ts";
import type { FailNth } from "./fail_nth.ts";

/** Object types, as enum iommufd_object_type orders them. */
export const ObjType = {
  ANY: 0,
  DEVICE: 1,
  HWPT_NESTED: 2,
  HWPT_PAGING: 3,
  IOAS: 4,
  ACCESS: 5,
  FAULT: 6,
  VIOMMU: 7,
  VDEVICE: 8,
  VEVENTQ: 9,
  HW_QUEUE: 10,
  SELFTEST: 11,
} as const;
export type ObjTypeValue = (typeof ObjType)[keyof typeof ObjType];

const TYPE_NAMES = Object.fromEntries(Object.entries(ObjType).map(([k, v]) => [v, k])) as Record<
  number,
  string
>;

export function objTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type ${t}`;
}

/** The largest ID the table hands out (xa_limit_31b). */
export const MAX_OBJECT_ID = 2 ** 31 - 1;

export abstract class IommufdObject {
  abstract readonly type: ObjTypeValue;
  /** 0 until the table assigns one. */
  id = 0;
  /** Structural references; 1 while only the table holds the object. */
  users = 1;
  /** References held for the duration of one call (the kernel's shortterm_users). */
  shortterm = 0;

  /**
   * Releases what this object holds (its references on other objects, its resources). Called
   * once, by destroy or by abort. Must not fail.
   */
  abstract destroy(): void;

  /** Undo of a half-built object; defaults to destroy(). */
  abort(): void {
    this.destroy();
  }
}

type Slot =
  | { state: "reserved"; obj: IommufdObject }
  | { state: "live"; obj: IommufdObject }
  | { state: "tombstone" };

export class ObjectTable {
  private readonly slots = new Map<number, Slot>();
  /** Lowest ID that may be free: every ID below it is taken. */
  private lowFree = 1;
  private readonly faults: Pick<FailNth, "shouldFail">;

  constructor(faults: Pick<FailNth, "shouldFail">) {
    this.faults = faults;
  }

  /** Number of IDs in use (live, reserved or tombstoned). */
  get size(): number {
    return this.slots.size;
  }

  /** Reserves the lowest free ID for `obj` (not yet visible). An allocation site: ENOMEM. */
  reserve<T extends IommufdObject>(obj: T): T {
    if (this.faults.shouldFail("iommufd_object_alloc"))
      throw new ErrnoError(ENOMEM, "object allocation failed");
    let id = this.lowFree;
    while (this.slots.has(id)) id++;
    if (id > MAX_OBJECT_ID) throw new ErrnoError(ENOSPC, "no free object ID"); // xa_alloc's answer
    this.slots.set(id, { state: "reserved", obj });
    this.lowFree = id + 1;
    obj.id = id;
    return obj;
  }

  /** Makes a reserved object visible. */
  finalize(obj: IommufdObject): void {
    const s = this.slots.get(obj.id);
    if (s === undefined || s.state !== "reserved" || s.obj !== obj)
      throw new Error(`finalize of ${obj.id}: not reserved`);
    this.slots.set(obj.id, { state: "live", obj });
  }

  /** Undoes a reserved object: its abort() runs and the ID is freed. */
  abort(obj: IommufdObject): void {
    const s = this.slots.get(obj.id);
    if (s === undefined || s.state !== "reserved" || s.obj !== obj)
      throw new Error(`abort of ${obj.id}: not reserved`);
    obj.abort();
    this.freeId(obj.id);
  }

  /**
   * The live object `id` of type `type` (ANY matches every type), or ENOENT. An injection
   * site, as iommufd_get_object() is in the kernel.
   */
  get<T extends IommufdObject>(id: number, type: ObjTypeValue): T {
    if (this.faults.shouldFail("iommufd_get_object"))
      throw new ErrnoError(ENOENT, `object ${id}: injected lookup failure`);
    const s = this.slots.get(id);
    if (s === undefined || s.state !== "live" || (type !== ObjType.ANY && s.obj.type !== type)) {
      throw new ErrnoError(ENOENT, `no ${objTypeName(type)} object ${id}`);
    }
    return s.obj as T;
  }

  /** Like get() but without the injection site and returning undefined (internal walks). */
  peek(id: number): IommufdObject | undefined {
    const s = this.slots.get(id);
    return s?.state === "live" ? s.obj : undefined;
  }

  /**
   * IOMMU_DESTROY: removes a live object nobody else references and runs its destroy().
   * ENOENT when there is no such live object (reserved, tombstoned or of another type),
   * EBUSY while another object still holds a reference.
   */
  destroyById(id: number, type: ObjTypeValue = ObjType.ANY): void {
    const obj = this.get(id, type);
    if (obj.users !== 1 || obj.shortterm !== 0)
      throw new ErrnoError(EBUSY, `${objTypeName(obj.type)} ${id} is in use`);
    this.remove(obj);
  }

  /** Removes a live object the kernel destroys by itself (an auto HWPT with no devices left). */
  remove(obj: IommufdObject): void {
    const s = this.slots.get(obj.id);
    if (s === undefined || s.state !== "live" || s.obj !== obj)
      throw new Error(`remove of ${obj.id}: not live`);
    obj.users = 0;
    this.freeId(obj.id);
    obj.destroy();
  }

  /** Destroys a live object but keeps its ID unusable until the table is closed. */
  tombstone(obj: IommufdObject): void {
    const s = this.slots.get(obj.id);
    if (s === undefined || s.state !== "live" || s.obj !== obj)
      throw new Error(`tombstone of ${obj.id}: not live`);
    this.slots.set(obj.id, { state: "tombstone" });
    obj.users = 0;
    obj.destroy();
  }

  /** Live objects, in ID order. */
  *live(): Iterable<IommufdObject> {
    const ids = [...this.slots.keys()].sort((a, b) => a - b);
    for (const id of ids) {
      const s = this.slots.get(id);
      if (s?.state === "live") yield s.obj;
    }
  }

  /**
   * Context close: destroys every live object, leaf-first (each pass destroys the objects only
   * the table still references, which releases their references on others), then forgets
   * tombstones. Returns the objects left because a pass made no progress (a reference cycle:
   * a bug, which the kernel WARNs about).
   */
  closeAll(): IommufdObject[] {
    for (;;) {
      let progress = false;
      for (const obj of [...this.live()]) {
        if (obj.users === 1) {
          this.remove(obj);
          progress = true;
        }
      }
      if (!progress) break;
    }
    const stuck = [...this.live()];
    for (const [id, s] of [...this.slots]) if (s.state === "tombstone") this.freeId(id);
    return stuck;
  }

  private freeId(id: number): void {
    this.slots.delete(id);
    if (id < this.lowFree) this.lowFree = id;
  }
}

/** Takes a structural reference on `target` for `holder`'s lifetime. */
export function refGet(target: IommufdObject): void {
  target.users++;
}

/** Drops a structural reference taken with refGet(). */
export function refPut(target: IommufdObject): void {
  if (target.users <= 0)
    throw new Error(`refPut on ${objTypeName(target.type)} ${target.id} with no users`);
  target.users--;
}

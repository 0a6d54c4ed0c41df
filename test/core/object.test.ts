import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { FailNth, NO_FAULTS } from "../../src/core/fail_nth.ts";
import { IommufdObject, ObjectTable, ObjType, refGet, refPut } from "../../src/core/object.ts";
import { EBUSY, ENOENT, ENOMEM, ErrnoError } from "../../src/errno.ts";

/** A test object that can hold a reference on another and logs its destruction. */
class Thing extends IommufdObject {
  readonly type: typeof ObjType.IOAS | typeof ObjType.HWPT_PAGING;
  readonly log: string[];
  readonly holds: IommufdObject | undefined;
  aborted = false;
  constructor(
    type: typeof ObjType.IOAS | typeof ObjType.HWPT_PAGING,
    log: string[],
    holds?: IommufdObject,
  ) {
    super();
    this.type = type;
    this.log = log;
    this.holds = holds;
    if (holds !== undefined) refGet(holds);
  }
  destroy(): void {
    this.log.push(`destroy ${this.id}`);
    if (this.holds !== undefined) refPut(this.holds);
  }
  override abort(): void {
    this.aborted = true;
    this.destroy();
  }
}

const errno = (fn: () => unknown): number => {
  try {
    fn();
  } catch (e) {
    if (e instanceof ErrnoError) return e.errno;
    throw e;
  }
  return 0;
};

function make(
  table: ObjectTable,
  log: string[],
  holds?: IommufdObject,
  type: typeof ObjType.IOAS | typeof ObjType.HWPT_PAGING = ObjType.IOAS,
) {
  const o = table.reserve(new Thing(type, log, holds));
  table.finalize(o);
  return o;
}

describe("object table", () => {
  it("allocates IDs from 1, the lowest free first", () => {
    const t = new ObjectTable(NO_FAULTS);
    const log: string[] = [];
    const a = make(t, log);
    const b = make(t, log);
    const c = make(t, log);
    assert.deepEqual([a.id, b.id, c.id], [1, 2, 3]);
    t.destroyById(2);
    assert.equal(make(t, log).id, 2);
    assert.equal(make(t, log).id, 4);
  });

  it("keeps a reserved ID invisible and unused until finalized; abort frees it", () => {
    const t = new ObjectTable(NO_FAULTS);
    const log: string[] = [];
    const r = t.reserve(new Thing(ObjType.IOAS, log));
    assert.equal(
      errno(() => t.get(r.id, ObjType.IOAS)),
      ENOENT,
    );
    assert.equal(
      errno(() => t.destroyById(r.id)),
      ENOENT,
    );
    assert.equal(make(t, log).id, 2, "the reserved ID is not handed out");
    t.abort(r);
    assert.ok(r.aborted);
    assert.equal(make(t, log).id, 1, "an aborted ID is free again");
  });

  it("gives ENOENT for a type mismatch and accepts ANY", () => {
    const t = new ObjectTable(NO_FAULTS);
    const a = make(t, []);
    assert.equal(
      errno(() => t.get(a.id, ObjType.HWPT_PAGING)),
      ENOENT,
    );
    assert.equal(t.get(a.id, ObjType.ANY), a);
    assert.equal(t.get(a.id, ObjType.IOAS), a);
    assert.equal(
      errno(() => t.get(99, ObjType.ANY)),
      ENOENT,
    );
  });

  it("refuses to destroy a referenced object (EBUSY) and destroys it once free", () => {
    const t = new ObjectTable(NO_FAULTS);
    const log: string[] = [];
    const ioas = make(t, log);
    const hwpt = make(t, log, ioas, ObjType.HWPT_PAGING);
    assert.equal(ioas.users, 2);
    assert.equal(
      errno(() => t.destroyById(ioas.id)),
      EBUSY,
    );
    assert.equal(t.get(ioas.id, ObjType.IOAS), ioas, "a refused destroy changes nothing");
    t.destroyById(hwpt.id);
    assert.equal(ioas.users, 1);
    t.destroyById(ioas.id);
    assert.deepEqual(log, [`destroy ${hwpt.id}`, `destroy ${ioas.id}`]);
    assert.equal(
      errno(() => t.destroyById(ioas.id)),
      ENOENT,
    );
  });

  it("keeps a tombstoned ID unusable until close", () => {
    const t = new ObjectTable(NO_FAULTS);
    const a = make(t, []);
    t.tombstone(a);
    assert.equal(
      errno(() => t.destroyById(a.id)),
      ENOENT,
    );
    assert.equal(make(t, []).id, 2);
    t.closeAll();
    assert.equal(t.size, 0);
    assert.equal(make(t, []).id, 1);
  });

  it("closes leaf-first", () => {
    const t = new ObjectTable(NO_FAULTS);
    const log: string[] = [];
    const ioas = make(t, log); // 1
    const h1 = make(t, log, ioas, ObjType.HWPT_PAGING); // 2
    const nested = make(t, log, h1, ObjType.HWPT_PAGING); // 3
    const other = make(t, log); // 4
    assert.deepEqual(t.closeAll(), []);
    assert.equal(log.indexOf(`destroy ${nested.id}`) < log.indexOf(`destroy ${h1.id}`), true);
    assert.equal(log.indexOf(`destroy ${h1.id}`) < log.indexOf(`destroy ${ioas.id}`), true);
    assert.ok(log.includes(`destroy ${other.id}`));
    assert.equal(t.size, 0);
  });

  it("fails reservations and lookups where fail-nth says, changing nothing", () => {
    const f = new FailNth();
    const t = new ObjectTable(f);
    const a = make(t, []);
    f.arm(1);
    assert.equal(
      errno(() => t.get(a.id, ObjType.IOAS)),
      ENOENT,
    );
    assert.equal(f.pending, 0, "it fired");
    assert.equal(t.get(a.id, ObjType.IOAS), a, "only once");
    f.arm(2);
    assert.equal(t.get(a.id, ObjType.IOAS), a);
    assert.equal(
      errno(() => t.reserve(new Thing(ObjType.IOAS, []))),
      ENOMEM,
    );
    assert.equal(t.size, 1);
    assert.equal(make(t, []).id, 2);
  });

  it("matches a simple model over random create/destroy sequences", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant(-1), fc.integer({ min: 1, max: 12 })), { maxLength: 60 }),
        (ops) => {
          const t = new ObjectTable(NO_FAULTS);
          const model = new Set<number>();
          for (const op of ops) {
            if (op === -1) {
              let id = 1;
              while (model.has(id)) id++;
              assert.equal(make(t, []).id, id);
              model.add(id);
            } else {
              const want = model.has(op) ? 0 : ENOENT;
              assert.equal(
                errno(() => t.destroyById(op)),
                want,
              );
              model.delete(op);
            }
          }
          assert.equal(t.size, model.size);
        },
      ),
    );
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { HeldPages } from "../../src/core/held_pages.ts";
import { FakePage } from "../../src/core/user_mm.ts";

describe("HeldPages", () => {
  it("counts holders per index and gives the page back at the last release", () => {
    const held = new HeldPages();
    const page = new FakePage();
    assert.equal(held.addHolder(700), undefined, "an index nobody holds gains no holder");
    held.insert(700, page);
    assert.equal(held.addHolder(700), page);
    assert.equal(held.size, 1);
    assert.equal(held.removeHolder(700), undefined, "one holder is left");
    assert.equal(held.has(700), true);
    assert.equal(held.removeHolder(700), page);
    assert.equal(held.has(700), false);
    assert.equal(held.page(700), undefined);
    assert.equal(held.size, 0);
  });

  it("refuses a second insert and the release of an index nobody holds", () => {
    const held = new HeldPages();
    held.insert(3, new FakePage());
    assert.throws(() => held.insert(3, new FakePage()), /already held/);
    assert.throws(() => held.removeHolder(4), /not held/);
    assert.throws(() => held.removeHolder(1 << 20), /not held/);
  });

  it("agrees with a map of holder counts over random operations across chunks", () => {
    const op = fc.record({
      kind: fc.constantFrom("hold", "release"),
      index: fc.oneof(fc.integer({ min: 0, max: 1100 }), fc.integer({ min: 0, max: 1 << 24 })),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const held = new HeldPages();
        const model = new Map<number, { page: FakePage; holders: number }>();
        for (const { kind, index } of ops) {
          const m = model.get(index);
          if (kind === "hold") {
            if (m === undefined) {
              const page = new FakePage();
              held.insert(index, page);
              model.set(index, { page, holders: 1 });
            } else {
              assert.equal(held.addHolder(index), m.page);
              m.holders++;
            }
          } else if (m === undefined) {
            assert.throws(() => held.removeHolder(index));
          } else {
            const last = --m.holders === 0;
            if (last) model.delete(index);
            assert.equal(held.removeHolder(index), last ? m.page : undefined);
          }
          assert.equal(held.size, model.size);
        }
        for (const [index, m] of model) assert.equal(held.page(index), m.page);
      }),
    );
  });
});

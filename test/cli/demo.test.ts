import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runDemo } from "../../src/cli/demo.ts";
import { PT_FORMATS } from "../../src/pt/registry.ts";

describe("iommusim demo", () => {
  it("walks every configuration and the data plane agrees with the trace", () => {
    let out = "";
    runDemo({ all: true, color: false }, (s) => {
      out += s;
    });
    for (const f of PT_FORMATS) assert.ok(out.includes(`\n${f.name}  `), `${f.name} is shown`);
    const agrees = out.match(/data-plane walk agrees/g) ?? [];
    assert.equal(agrees.length, PT_FORMATS.length);
    assert.ok(!out.includes("DISAGREES"));
    assert.match(out, /24 entries read/);
  });

  it("shows one configuration per family by default", () => {
    let out = "";
    runDemo({ all: false, color: false }, (s) => {
      out += s;
    });
    const families = new Set(PT_FORMATS.map((f) => f.name.replace(/-.*$/, "")));
    const shown = out.match(/data-plane walk agrees/g) ?? [];
    assert.equal(shown.length, families.size);
  });
});

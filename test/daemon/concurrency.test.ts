/**
 * Many clients at once (issue 4, item 6): 64 C processes (test/native/stress.c) each run 10^4
 * operations on their own iommufd at the same time: IOAS_MAP / IOAS_UNMAP of single pages,
 * selftest-access reads, writes and pins of those pages, and ID checks. Each client verifies
 * every answer, every byte and every ID it gets, so any crosstalk between clients fails one of
 * them. Afterwards the daemon must hold nothing: no context, object fd, mapping, pinned page,
 * page object, file handle or process.
 *
 * At full size this takes ~40 s on a 2-core VM (the daemon is the bottleneck, at ~16k ioctls/s
 * with this mix). IOMMUSIM_STRESS_CLIENTS and IOMMUSIM_STRESS_OPS shrink it for quick local
 * runs; the test prints the size it ran.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { privateSocket, runWithShim } from "../../src/daemon/launch.ts";
import { IommusimServer } from "../../src/daemon/server.ts";
import { buildShim } from "../../src/daemon/shim_build.ts";
import { binDir, compileClient } from "./helpers.ts";

const CLIENTS = Number(process.env.IOMMUSIM_STRESS_CLIENTS ?? 64);
const OPS = Number(process.env.IOMMUSIM_STRESS_OPS ?? 10_000);

describe(`${CLIENTS} concurrent clients, ${OPS} operations each`, () => {
  const bins = binDir();
  const { dir, socketPath } = privateSocket();
  let stress: string;
  let shim: string;
  let server: IommusimServer;

  before(async () => {
    shim = buildShim();
    stress = await compileClient(bins.dir, "stress");
    server = await IommusimServer.start({ socketPath });
  });

  after(async () => {
    await server.stop();
    bins.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  it("see no interference, and leave nothing behind", async (t) => {
    const started = performance.now();
    const runs = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        runWithShim(socketPath, shim, [stress, String(OPS), String(i + 1)], { stdio: "pipe" }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`${CLIENTS} x ${OPS} operations in ${seconds.toFixed(1)} s`);
    for (const [i, r] of runs.entries()) {
      assert.equal(r.code, 0, `client ${i + 1}: ${r.stderr}`);
      const m = /^ok (\d+)\n$/.exec(r.stdout);
      assert.ok(m !== null, `client ${i + 1} said ${JSON.stringify(r.stdout)}`);
      assert.ok(Number(m[1]) >= OPS, `client ${i + 1} ran ${m[1]} operations`);
    }
    const st = server.stats();
    assert.equal(st.opened, CLIENTS);
    assert.equal(st.released, CLIENTS);
    assert.ok(st.ioctls >= CLIENTS * OPS, `${st.ioctls} ioctls`);
    assert.equal(st.contexts, 0);
    assert.equal(st.objects, 0, "no access fd left open");
    assert.equal(st.mappings, 0);
    // The exited clients' control connections close asynchronously; give them a moment.
    for (let i = 0; i < 100 && server.stats().connections > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(server.stats().connections, 0);
    assert.equal(server.host.pages.totalPins, 0);
    server.host.sweep();
    assert.equal(server.host.pages.size, 0, "no page object survives");
    assert.equal(server.host.pages.openFiles, 0);
    assert.equal(server.host.processCount, 0);
  });
});

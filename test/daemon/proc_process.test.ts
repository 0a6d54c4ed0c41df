/**
 * ProcProcess against a real process (test/native/memtarget.c): user copies through
 * /proc/<pid>/mem with the kernel's faults, page identity and PFNs from /proc/<pid>/maps,
 * memfd files, accounting, and what happens once the process is gone.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import type { UserPage } from "../../src/core/user_mm.ts";
import {
  accessiblePrefix,
  devMajorMinor,
  PAGE_SIZE,
  ProcHost,
  type ProcPage,
  parseMaps,
} from "../../src/daemon/proc_process.ts";
import { EBADF, EFAULT } from "../../src/errno.ts";
import { binDir, compileClient } from "./helpers.ts";

interface Layout {
  pid: number;
  child: number;
  priv: number;
  shared: number;
  ro: number;
  none: number;
  holed: number;
  memfd: number;
  mem: number;
  file: number;
}

const big = (n: number) => BigInt(n);

function pagesOf(r: UserPage[] | number): ProcPage[] {
  assert.ok(Array.isArray(r), `pages() failed with ${String(r)}`);
  return r as ProcPage[];
}

describe("ProcProcess over a live process", () => {
  const bins = binDir();
  let target: ChildProcessWithoutNullStreams;
  let lay: Layout;
  let lines: string[] = [];
  let waiters: ((l: string) => void)[] = [];
  const host = new ProcHost();

  const nextLine = () =>
    new Promise<string>((r) => {
      const l = lines.shift();
      if (l !== undefined) r(l);
      else waiters.push(r);
    });

  before(async () => {
    const exe = await compileClient(bins.dir, "memtarget");
    target = spawn(exe, [], { stdio: ["pipe", "pipe", "pipe"] });
    let partial = "";
    target.stdout.on("data", (b: Buffer) => {
      partial += b.toString();
      const parts = partial.split("\n");
      partial = parts.pop() ?? "";
      for (const l of parts) {
        const w = waiters.shift();
        if (w !== undefined) w(l);
        else lines.push(l);
      }
    });
    lay = JSON.parse(await nextLine()) as Layout;
  });

  after(() => {
    target.kill("SIGKILL");
    host.close();
    bins.remove();
    lines = [];
    waiters = [];
  });

  it("reads and writes memory, faulting where the kernel's user copy would", () => {
    const p = host.process(lay.pid);
    const got = new Uint8Array(64);
    assert.equal(p.read(big(lay.priv + 100), got), 0);
    assert.deepEqual(
      [...got],
      [...got.keys()].map((i) => ((100 + i) * 7) & 0xff),
    );

    const data = Uint8Array.from({ length: 32 }, (_, i) => 200 + i);
    assert.equal(p.write(big(lay.priv + 8), data), 0);
    const back = new Uint8Array(32);
    assert.equal(p.read(big(lay.priv + 8), back), 0);
    assert.deepEqual(back, data);

    // Read-only: a write faults and changes nothing (/proc/<pid>/mem alone would write it).
    assert.equal(p.write(big(lay.ro), new Uint8Array([1])), EFAULT);
    const ro = new Uint8Array(1);
    assert.equal(p.read(big(lay.ro), ro), 0);
    assert.equal(ro[0], 0);
    // PROT_NONE: even a read faults.
    assert.equal(p.read(big(lay.none), new Uint8Array(4)), EFAULT);
    // Into the hole after `holed`: the read faults; a write stores the bytes before the hole.
    assert.equal(p.read(big(lay.holed + PAGE_SIZE - 2), new Uint8Array(4)), EFAULT);
    assert.equal(p.write(big(lay.holed + PAGE_SIZE - 2), Uint8Array.of(9, 8, 7, 6)), EFAULT);
    const edge = new Uint8Array(2);
    assert.equal(p.read(big(lay.holed + PAGE_SIZE - 2), edge), 0);
    assert.deepEqual([...edge], [9, 8]);
    // NULL, a kernel address and one past the 64-bit range.
    assert.equal(p.read(0n, new Uint8Array(8)), EFAULT);
    assert.equal(p.read(0xffff_8000_0000_0000n, new Uint8Array(8)), EFAULT);
    assert.equal(p.write(0xffff_ffff_ffff_fff0n, new Uint8Array(8)), EFAULT);
    // Nothing to copy is never a fault.
    assert.equal(p.read(0n, new Uint8Array(0)), 0);
  });

  it("gives private pages per-process identities and shared pages one identity", () => {
    const parent = host.process(lay.pid);
    const child = host.process(lay.child);
    const a = pagesOf(parent.pages(big(lay.priv), 4, true));
    const again = pagesOf(parent.pages(big(lay.priv), 4, false));
    assert.deepEqual(
      again.map((x) => x.pfn),
      a.map((x) => x.pfn),
      "stable across calls",
    );
    assert.equal(new Set(a.map((x) => x.pfn)).size, 4);
    const c = pagesOf(child.pages(big(lay.priv), 4, true));
    for (let i = 0; i < 4; i++) assert.notEqual(c[i].pfn, a[i].pfn, "a child's private copy");

    const sp = pagesOf(parent.pages(big(lay.shared), 4, true));
    const sc = pagesOf(child.pages(big(lay.shared), 4, true));
    for (let i = 0; i < 4; i++) assert.equal(sc[i], sp[i], "MAP_SHARED anonymous: same page");
    assert.ok(sp[0].key.startsWith("f:"), sp[0].key);
    // Pages of one 2 MiB-aligned run get consecutive PFNs when their offsets are consecutive.
    assert.equal(sp[1].pfn, sp[0].pfn + 1);

    // Bytes go live through the page: a device write shows up in both processes' views.
    sp[2].write(5, Uint8Array.of(0xee));
    const seen = new Uint8Array(1);
    assert.equal(child.read(big(lay.shared + 2 * PAGE_SIZE + 5), seen), 0);
    assert.equal(seen[0], 0xee);
    const fromPage = new Uint8Array(3);
    a[1].read(0, fromPage);
    const direct = new Uint8Array(3);
    assert.equal(parent.read(big(lay.priv + PAGE_SIZE), direct), 0);
    assert.deepEqual(fromPage, direct);
  });

  it("refuses pins the kernel refuses", () => {
    const p = host.process(lay.pid);
    assert.equal(p.pages(big(lay.ro), 1, true), EFAULT);
    assert.equal(pagesOf(p.pages(big(lay.ro), 1, false)).length, 1);
    assert.equal(p.pages(big(lay.none), 1, false), EFAULT);
    assert.equal(p.pages(big(lay.holed), 2, false), EFAULT, "second page is a hole");
    assert.throws(() => p.pages(big(lay.priv + 1), 1, false), RangeError);
  });

  it("pins private file pages as the process's own copies, written or not (FOLL_LONGTERM unshare)", () => {
    const p = host.process(lay.pid);
    const [cow, clean] = pagesOf(p.pages(big(lay.file), 2, false));
    assert.ok(cow.key.startsWith(`a:${lay.pid}:`), cow.key);
    assert.ok(clean.key.startsWith(`a:${lay.pid}:`), clean.key);
    // A write pin sees the same page object as the read pin.
    const [w] = pagesOf(p.pages(big(lay.file + PAGE_SIZE), 1, true));
    assert.equal(w, clean);
    // The untouched page's bytes are still the executable's (the copy starts as the file page).
    const exe = readFileSync(`/proc/${lay.pid}/exe`);
    const head = new Uint8Array(16);
    clean.read(0, head);
    assert.deepEqual([...head], [...exe.subarray(PAGE_SIZE, PAGE_SIZE + 16)]);
  });

  it("serves a memfd by descriptor with the same pages as its mapping", () => {
    const p = host.process(lay.pid);
    const f = p.file(lay.memfd);
    assert.ok(typeof f !== "number");
    assert.equal(f.size, 4 * PAGE_SIZE);
    assert.equal(f.page(4), undefined, "past the end");
    const mapped = pagesOf(p.pages(big(lay.mem), 4, true));
    for (let i = 0; i < 4; i++) assert.equal(f.page(i), mapped[i]);
    const b = new Uint8Array(4);
    f.page(1)?.read(0, b);
    assert.deepEqual(
      [...b],
      [0, 1, 2, 3].map((i) => ((PAGE_SIZE + i) * 5) & 0xff),
    );
    assert.equal(p.file(9999), EBADF);
    assert.equal(p.file(-1), EBADF);
  });

  it("reads accounting from /proc and follows a capability drop", async () => {
    const p = host.process(lay.pid);
    assert.equal(p.accounting.memlockLimit, 1 << 20);
    const capEff = /^CapEff:\s+([0-9a-f]+)/m.exec(readFileSync(`/proc/${lay.pid}/status`, "utf8"));
    assert.ok(capEff !== null);
    const hasIpcLock = ((BigInt(`0x${capEff[1]}`) >> 14n) & 1n) === 1n;
    assert.equal(p.accounting.capIpcLock, hasIpcLock);
    target.stdin.write("c");
    assert.equal(await nextLine(), "dropped");
    const q = host.process(lay.pid); // a new call re-reads the status
    assert.equal(q, p, "one object per process");
    assert.equal(q.accounting.capIpcLock, false);
    // Locked pages are per user: another process of the same uid sees the same counter.
    q.accounting.lockedPages += 3;
    assert.equal(host.process(lay.child).accounting.lockedPages, 3);
    q.accounting.lockedPages -= 3;
    q.accounting.pinnedPages += 2;
    assert.equal(host.process(lay.child).accounting.pinnedPages, 0, "pinned_vm is per mm");
    q.accounting.pinnedPages -= 2;
  });

  it("keeps parsed maps while the map generation holds, and looks again before faulting", async () => {
    const p = host.process(lay.pid);
    const one = new Uint8Array(1);
    host.beginCallFor(p, 7);
    assert.equal(p.read(big(lay.priv), one), 0);
    const reads = p.mapsReads;
    host.beginCallFor(p, 7);
    assert.equal(p.read(big(lay.priv + 1), one), 0);
    assert.equal(p.mapsReads, reads, "same generation: the cached maps serve");
    host.beginCallFor(p, 8);
    assert.equal(p.read(big(lay.priv + 2), one), 0);
    assert.equal(p.mapsReads, reads + 1, "a new generation reads them again");
    // A page mapped behind the generation's back: the cache misses it, fresh maps find it.
    target.stdin.write("m");
    const fresh = Number(await nextLine());
    host.beginCallFor(p, 8);
    assert.equal(p.read(big(fresh), one), 0);
    assert.equal(one[0], 0x42);
    assert.equal(p.mapsReads, reads + 2);
    // Made read-only, announced by a new generation: a write faults and changes nothing.
    target.stdin.write("r");
    assert.equal(await nextLine(), "ro");
    host.beginCallFor(p, 9);
    assert.equal(p.write(big(fresh), Uint8Array.of(1)), EFAULT);
    assert.equal(p.read(big(fresh), one), 0);
    assert.equal(one[0], 0x42);
    // Pinning reads the maps of its own call, whatever the generation says.
    host.beginCallFor(p, 9);
    const before = p.mapsReads;
    pagesOf(p.pages(big(lay.priv), 1, false));
    assert.equal(p.mapsReads, before + 1);
    pagesOf(p.pages(big(lay.priv), 1, false));
    assert.equal(p.mapsReads, before + 1, "once per call");
    host.sweep();
  });

  it("serves an ioctl's struct from the inline window and sends its writes back", () => {
    const p = host.process(lay.pid);
    const at = lay.priv + 100;
    const memAt = (va: number, n: number) => {
      const b = new Uint8Array(n);
      assert.ok(p.readRaw(va, b));
      return [...b];
    };
    const shimSaw = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
    const original = memAt(at, 32);
    host.beginCallFor(p, 11);
    p.openWindow(at, shimSaw);
    const got = new Uint8Array(8);
    assert.equal(p.read(big(at + 4), got), 0);
    assert.deepEqual([...got], [...shimSaw.subarray(4, 12)], "served from the window");
    // Writes inside it wait for the reply; memory is unchanged meanwhile.
    assert.equal(p.write(big(at + 8), Uint8Array.of(1, 2, 3, 4)), 0);
    assert.equal(p.write(big(at + 20), Uint8Array.of(9)), 0);
    assert.deepEqual(memAt(at, 32), original);
    assert.equal(p.read(big(at + 6), got), 0);
    assert.deepEqual([...got], [0x86, 0x87, 1, 2, 3, 4, 0x8c, 0x8d], "reads see the writes");
    const out = Buffer.alloc(64, 0xee);
    const end = p.closeWindow(out, 3);
    assert.deepEqual(
      [...out.subarray(3, end)],
      [8, 0, 4, 0, 1, 2, 3, 4, 20, 0, 1, 0, 9],
      "records: u16 offset, u16 length, bytes",
    );
    assert.deepEqual(memAt(at, 32), original, "the shim stores them, not the daemon");

    // A copy straddling the window's edge stores what is pending first, then reads memory.
    p.openWindow(at, shimSaw);
    assert.equal(p.write(big(at), Uint8Array.of(0x55)), 0);
    const across = new Uint8Array(4);
    assert.equal(p.read(big(at + 30), across), 0);
    assert.deepEqual([...across], [original[30], original[31], ...memAt(at + 32, 2)]);
    assert.equal(memAt(at, 1)[0], 0x55, "settled into memory");
    assert.equal(p.closeWindow(out, 0), 0, "nothing left to send");

    // Inside a read-only page: the write faults as copy_to_user would, nothing is kept.
    p.openWindow(lay.ro, new Uint8Array(16));
    assert.equal(p.write(big(lay.ro + 4), Uint8Array.of(7)), EFAULT);
    assert.equal(memAt(lay.ro + 4, 1)[0], 0);
    assert.equal(p.closeWindow(out, 0), 0);

    // A pinned page's access sees the pending bytes: the window is settled before it.
    p.openWindow(at, shimSaw);
    assert.equal(p.write(big(at + 1), Uint8Array.of(0x66)), 0);
    const [page] = pagesOf(p.pages(big(lay.priv), 1, false));
    const viaPage = new Uint8Array(2);
    page.read(100, viaPage);
    assert.deepEqual([...viaPage], [0x55, 0x66]);
    assert.equal(p.closeWindow(out, 0), 0);
    // Leave the bytes as the other tests expect them.
    assert.ok(p.writeRaw(at, Uint8Array.from(original)));
    host.sweep();
  });

  it("faults and reads zeros once the process is gone, and sweeps what is unpinned", async () => {
    const p = host.process(lay.pid);
    const [kept] = pagesOf(p.pages(big(lay.priv), 1, true));
    kept.pins++;
    const shared = pagesOf(p.pages(big(lay.shared), 1, true))[0];
    shared.pins++;
    const exited = new Promise((r) => target.once("exit", r));
    target.stdin.write("q");
    await exited;
    host.beginCall();
    assert.equal(p.alive, false);
    assert.equal(p.read(big(lay.priv), new Uint8Array(1)), EFAULT);
    assert.equal(p.pages(big(lay.priv), 1, false), EFAULT);
    const b = new Uint8Array(2);
    kept.read(0, b);
    assert.deepEqual([...b], [0, 0], "a private page of a dead process reads as zeros");
    // The shared page stays readable through the durable map_files handle (root), with the
    // byte a device wrote earlier.
    const s = new Uint8Array(1);
    shared.read(0, s);
    if (process.getuid?.() === 0) assert.equal(s[0], 0);
    host.sweep();
    assert.equal(host.processCount, 0);
    assert.ok(host.pages.size >= 2, "pinned pages survive the sweep");
    kept.pins--;
    shared.pins--;
    host.sweep();
    assert.equal(host.pages.size, 0);
    assert.equal(host.pages.totalPins, 0);
    // Only the memfd's handle may remain: the UserFile of the memfd test holds it until the
    // garbage collector reclaims that object.
    assert.ok(host.pages.openFiles <= 1, `${host.pages.openFiles} files open`);
  });
});

describe("maps parsing", () => {
  it("reads every field and finds accessible prefixes", () => {
    const vmas = parseMaps(
      [
        "00400000-00401000 r-xp 00000000 fe:00 123   /bin/x",
        "7f0000000000-7f0000002000 rw-s 00003000 00:01 4567  /memfd:a (deleted)",
        "7f0000002000-7f0000003000 r--p 00000000 00:00 0 ",
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]",
      ].join("\n"),
    );
    assert.equal(vmas.length, 3, "vsyscall is beyond exact Numbers and left out");
    assert.deepEqual(
      { ...vmas[1] },
      {
        start: 0x7f00_0000_0000,
        end: 0x7f00_0000_2000,
        read: true,
        write: true,
        exec: false,
        shared: true,
        offset: 0x3000,
        major: 0,
        minor: 1,
        inode: "4567",
        path: "/memfd:a (deleted)",
      },
    );
    assert.equal(accessiblePrefix(vmas, 0x7f00_0000_1000, 0x2000, false), 0x2000);
    assert.equal(accessiblePrefix(vmas, 0x7f00_0000_1000, 0x2000, true), 0x1000);
    assert.equal(accessiblePrefix(vmas, 0x3000, 16, false), 0);
  });

  it("splits st_dev like new_encode_dev", () => {
    // major 0x103, minor 0x1234: minor's low byte, major << 8, minor's high bits << 12.
    const dev = 0x34 + 0x103 * 256 + 0x1200 * 4096;
    assert.deepEqual(devMajorMinor(dev), [0x103, 0x1234]);
  });
});

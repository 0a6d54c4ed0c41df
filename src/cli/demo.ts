/**
 * `iommusim demo`: the guided tour. For now it shows, for each page-table format, a mapping
 * being made and one IOVA walked level by level — every entry read, its bits decoded, the final
 * address — and then one nested (two-stage) walk with its read count.
 */
import { styleText } from "node:util";
import { PageAllocator } from "../mem/alloc.ts";
import { PhysMem } from "../mem/phys.ts";
import { IOMMU_READ, IOMMU_WRITE, type PtFormat } from "../pt/format.ts";
import { buildNestedPair } from "../pt/nested.ts";
import { findFormat, PT_FORMATS } from "../pt/registry.ts";
import { ACC_PRIV, ACC_READ, TR_OK, TranslateResult, translate } from "../pt/translate.ts";
import { PageTable } from "../pt/walker.ts";

export interface DemoOptions {
  /** Walk every configuration rather than one per format family. */
  all: boolean;
  /** Only formats whose name matches. */
  only?: RegExp;
  color: boolean;
}

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

function family(name: string): string {
  return name.replace(/-.*$/, "");
}

function pickFormats(opts: DemoOptions): PtFormat[] {
  const seen = new Set<string>();
  const out: PtFormat[] = [];
  for (const f of PT_FORMATS) {
    if (opts.only !== undefined && !opts.only.test(f.name)) continue;
    if (!opts.all && opts.only === undefined) {
      // One configuration per family: the first with at least three levels where there is one.
      const fam = family(f.name);
      if (seen.has(fam)) continue;
      const deep = PT_FORMATS.some((g) => family(g.name) === fam && g.levels >= 3);
      if (deep && f.levels < 3) continue;
      seen.add(fam);
    }
    out.push(f);
  }
  return out;
}

/** The largest leaf size no bigger than 2 MiB, so the demo shows a large page where there is one. */
function demoPageLg2(fmt: PtFormat): number {
  let best = -1;
  for (let l = 0; l < fmt.levels; l++) {
    for (const s of fmt.leafSizesLg2(l)) if (s <= 21 && s > best && s + 3 <= fmt.vaBits) best = s;
  }
  if (best < 0) for (const s of fmt.leafSizesLg2(0)) best = best < 0 ? s : Math.min(best, s);
  return best;
}

export function runDemo(opts: DemoOptions, write: (s: string) => void): void {
  const c = (style: Parameters<typeof styleText>[0], s: string): string =>
    opts.color ? styleText(style, s) : s;
  write(c("bold", "iommusim demo — page-table formats, walked entry by entry\n"));
  for (const fmt of pickFormats(opts)) {
    const pt = new PageTable(fmt, new PageAllocator(new PhysMem()));
    const s = demoPageLg2(fmt);
    const size = 1n << BigInt(s);
    const iova = fmt.iovaBase + 5n * size;
    const pa = 2 ** 32 + 3 * 2 ** s;
    pt.map(iova, pa, size, IOMMU_READ | IOMMU_WRITE);
    const probe = iova + size / 2n + 0x123n - (0x123n % 8n);
    write(`\n${c("cyan", fmt.name)}  ${c("dim", fmt.source)}\n`);
    write(`  map IOVA ${hex(iova)} -> PA ${hex(pa)}, ${size} bytes, read+write\n`);
    write(`  walk IOVA ${hex(probe)}:\n`);
    const tr = pt.trace(probe);
    for (const st of tr.steps) {
      write(
        `    L${st.level} [${String(st.index).padStart(4)}] @ ${hex(st.entryPa)} = ${hex(st.raw).padStart(18)}  ${st.meaning}\n`,
      );
    }
    const res = new TranslateResult();
    const cfg = pt.walkConfig();
    translate(
      pt.mem,
      cfg,
      Number(probe >> 32n),
      Number(probe & 0xffffffffn),
      ACC_READ | ACC_PRIV,
      res,
    );
    const ok = res.status === TR_OK && res.pa === tr.pa;
    write(
      `  => PA ${tr.pa === undefined ? "unmapped" : hex(tr.pa)} (${tr.steps.length} entries read; data-plane walk ${ok ? c("green", "agrees") : c("red", "DISAGREES")})\n`,
    );
  }
  // One nested walk: the guest's first-stage table over the host's second stage.
  const mem = new PhysMem();
  const alloc = new PageAllocator(mem);
  const s1 = findFormat("x86_64-4lvl");
  const s2 = PT_FORMATS.find((f) => f.name === "vtdss-4lvl") ?? s1;
  const four = { pgsizeBitmap: 1n << 12n };
  const pair = buildNestedPair(alloc, s1, s2, 0x10_0000n, 2 ** 32, 1n << 21n, {
    s1: four,
    s2: four,
  });
  const res = new TranslateResult();
  translate(mem, pair.s1cfg, 0, 0x10_0000 + 0x4567, ACC_READ | ACC_PRIV, res, pair.s2cfg);
  write(`\n${c("bold", "nested:")} ${s1.name} (stage 1, guest) over ${s2.name} (stage 2, host)\n`);
  write(
    `  IOVA 0x104567 -> GPA ${hex(pair.s1.iovaToPhys(0x104567n) ?? 0)} -> HPA ${hex(res.pa)}: ${res.reads} entries read (4 stage-1 tables and the final GPA, each through a 4-level stage 2: (4+1)x(4+1)-1 = 24)\n`,
  );
}

#!/usr/bin/env node
/**
 * The `iommusim` command. Subcommands are a small table; each parses its own options with
 * node:util parseArgs.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { runDemo } from "./demo.ts";
import { runExec } from "./exec.ts";
import { runServe } from "./serve.ts";

interface Subcommand {
  summary: string;
  run(args: string[]): number | Promise<number>;
}

const SUBCOMMANDS: Record<string, Subcommand> = {
  demo: {
    summary: "walk a mapping in every page-table format, entry by entry (--all, --only REGEX)",
    run(args) {
      const { values } = parseArgs({
        args,
        options: {
          all: { type: "boolean", default: false },
          only: { type: "string" },
          "no-color": { type: "boolean", default: false },
        },
      });
      runDemo(
        {
          all: values.all,
          ...(values.only === undefined ? {} : { only: new RegExp(values.only) }),
          color: !values["no-color"] && process.stdout.isTTY === true,
        },
        (s) => process.stdout.write(s),
      );
      return 0;
    },
  },
  serve: {
    summary: "serve /dev/iommu to shimmed programs on a Unix socket (--socket PATH, --trace FILE)",
    run: runServe,
  },
  exec: {
    summary: "run a program against a private daemon: exec [--trace FILE] -- PROGRAM [ARGS...]",
    run: runExec,
  },
  version: {
    summary: "print the version",
    run() {
      const pkg = JSON.parse(
        readFileSync(new URL("../../../package.json", import.meta.url), "utf8"),
      ) as { version: string };
      process.stdout.write(`iommusim ${pkg.version}\n`);
      return 0;
    },
  },
};

function usage(): string {
  const lines = Object.entries(SUBCOMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: iommusim <command> [options]\n\ncommands:\n${lines.join("\n")}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const cmd = SUBCOMMANDS[name];
  if (cmd === undefined) {
    process.stderr.write(`iommusim: unknown command '${name}'\n${usage()}`);
    return 2;
  }
  return cmd.run(rest);
}

process.exitCode = await main(process.argv.slice(2));

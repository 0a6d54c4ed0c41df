/**
 * The per-task fail-nth file (/proc/<pid>/task/<tid>/fail-nth, /proc/thread-self/fail-nth) as
 * the daemon serves it to shimmed clients, and its mapping onto a context's FailNth.
 *
 * Facts from Linux fs/proc/base.c (proc_fail_nth_write / proc_fail_nth_read) and
 * lib/kstrtox.c (kstrtouint_from_user, _parse_integer_fixup_radix), lib/fault-inject.c
 * (should_fail_ex) and kernel/fork.c:
 *  - write: kstrtouint_from_user(buf, count, base 0) — at most 34 bytes are copied (EFAULT),
 *    then parsed (EINVAL, ERANGE); a task that is gone is ESRCH; the count becomes the task's
 *    fail_nth and the write returns `count` (all of it, even past the 34 parsed bytes).
 *  - read: "%u\n" of fail_nth, served from the file position like simple_read_from_buffer.
 *  - every injection site the task reaches decrements a non-zero fail_nth and fails when it
 *    reaches zero; so it reads "0\n" after an injection happened.
 *  - a new task starts at 0 (fork does not inherit it).
 *
 * The kernel counts every fault-injection site of every syscall; the model counts iommufd's
 * (the core's `shouldFail` sites plus the open of /dev/iommu), which is what the selftest's
 * sweep needs.
 */
import { existsSync } from "node:fs";
import type { FailNth } from "../core/fail_nth.ts";
import { EINVAL, ERANGE } from "../errno.ts";

/** kstrtox_from_user's buffer for an unsigned int holds this many bytes of user input. */
export const KSTRTOUINT_USER_MAX = 34;

const U32_MAX = 0xffff_ffffn;
const U64_MAX = (1n << 64n) - 1n;

function digitValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return 99;
}

/**
 * kstrtouint(s, 0): an optional '+', a number in base 16 ("0x" prefix), 8 (leading "0") or 10,
 * one optional trailing newline, nothing else. Returns the value or -errno (EINVAL, ERANGE).
 */
export function kstrtouint(bytes: Uint8Array): number {
  let i = 0;
  const n = bytes.indexOf(0) >= 0 ? bytes.indexOf(0) : bytes.length;
  if (i < n && bytes[i] === 0x2b) i++; // '+'
  let base = 10;
  if (i < n && bytes[i] === 0x30) {
    const x = i + 1 < n ? bytes[i + 1] | 0x20 : 0;
    if (x === 0x78 && i + 2 < n && digitValue(bytes[i + 2]) < 16) {
      base = 16;
      i += 2;
    } else {
      base = 8;
    }
  }
  // Accumulate as bigint: the kernel parses into a u64 (ERANGE when that overflows, before the
  // trailing-character check) and only then checks that the value fits an unsigned int.
  let value = 0n;
  let digits = 0;
  let overflow64 = false;
  const big = BigInt(base);
  while (i < n) {
    const d = digitValue(bytes[i]);
    if (d >= base) break;
    value = value * big + BigInt(d);
    if (value > U64_MAX) overflow64 = true;
    digits++;
    i++;
  }
  if (overflow64) return -ERANGE;
  if (digits === 0) return -EINVAL;
  if (i < n && bytes[i] === 0x0a) i++;
  if (i < n) return -EINVAL;
  if (value > U32_MAX) return -ERANGE;
  return Number(value);
}

interface TaskState {
  pid: number;
  failNth: number;
}

/** The fail-nth value of every task that armed one, keyed by thread id. */
export class FailNthTasks {
  private readonly tasks = new Map<number, TaskState>();

  /** Number of tasks with a non-zero value (tests look at it). */
  get armedCount(): number {
    return this.tasks.size;
  }

  /** Whether task `tid` of process `pid` exists (the kernel's get_proc_task). */
  static taskExists(pid: number, tid: number): boolean {
    return existsSync(`/proc/${pid}/task/${tid}`);
  }

  /** The task's current value (0 when never armed or already consumed). */
  get(pid: number, tid: number): number {
    const t = this.tasks.get(tid);
    if (t === undefined) return 0;
    if (t.pid !== pid) {
      // The thread id was reused by another process: a new task starts at 0.
      this.tasks.delete(tid);
      return 0;
    }
    return t.failNth;
  }

  set(pid: number, tid: number, value: number): void {
    if (value === 0) this.tasks.delete(tid);
    else this.tasks.set(tid, { pid, failNth: value });
  }

  /**
   * One injection site outside the core (the open of /dev/iommu): true when it must fail.
   * Mirrors FailNth.shouldFail on the task's own counter.
   */
  siteFails(pid: number, tid: number): boolean {
    const v = this.get(pid, tid);
    if (v === 0) return false;
    this.set(pid, tid, v - 1);
    return v === 1;
  }

  /**
   * Runs `body` with the task's value armed on `faults` (a context's FailNth), then stores what
   * is left of it back on the task and disarms `faults`.
   */
  withArmed<T>(pid: number, tid: number, faults: FailNth, body: () => T): T {
    const armed = this.get(pid, tid);
    if (armed === 0) return body();
    faults.arm(armed);
    try {
      return body();
    } finally {
      this.set(pid, tid, faults.pending);
      faults.arm(0);
    }
  }
}

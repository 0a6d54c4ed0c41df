/**
 * Fault injection in the manner of the kernel's fail-nth (Documentation/fault-injection):
 * a task arms a count N; the N-th injection site reached afterwards fails, exactly once, and
 * the arming is consumed. Reading the task's fail-nth file then says whether it fired: the
 * remaining count is 0 once the injection happened.
 *
 * iommufd's sites are iommufd_should_fail() (object lookups and some allocations) plus every
 * allocation failslab / fail_page_alloc can fail; the core calls `shouldFail(site)` at each of
 * them. The daemon maps a client's /proc/self/task/<tid>/fail-nth onto one FailNth per task.
 */

/** Names of injection sites, for traces and tests; the order of calls is what counts. */
export type FaultSite = string;

export class FailNth {
  /** Sites still to pass before the armed one fails; 0 when disarmed. */
  private remaining = 0;
  /** The site that failed last, for diagnostics. */
  lastFired: FaultSite | undefined;
  /** Every site reached while recording (tests use it to see the sequence). */
  trace: FaultSite[] | undefined;

  /** Arms the n-th site from now to fail (n >= 1); 0 disarms. */
  arm(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`fail-nth count ${n}`);
    this.remaining = n;
    this.lastFired = undefined;
  }

  /** What the fail-nth file reads back: the count still outstanding (0 after it fired). */
  get pending(): number {
    return this.remaining;
  }

  /** Called at every injection site; true when this one must fail. */
  shouldFail(site: FaultSite): boolean {
    this.trace?.push(site);
    if (this.remaining === 0) return false;
    this.remaining--;
    if (this.remaining !== 0) return false;
    this.lastFired = site;
    return true;
  }
}

/** A FailNth that never fires, for contexts nobody injects into. */
export const NO_FAULTS: Pick<FailNth, "shouldFail"> = { shouldFail: () => false };

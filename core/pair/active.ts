/**
 * The registers of a pair that may have work (issue 16: a pair's step visited every register it
 * declares, so a write cost 14-17x more with 1,000 registers than with one). A register outside
 * the set is quiet (`Replica.quiet`: no Status owed, no candidate of its own, nothing to send or
 * collapse, no timer armed, settled): every step of the pair would find nothing to do in it, so
 * the pair's steps visit only the set. Every input that may give a register work puts it back
 * (`wake`: a message for it, a proposal, a timer, a cross-register txn naming it, the keepalive
 * that owes every register's Status); `sweep` takes the quiet ones out between steps. The
 * keepalive is then the one step that visits every register, once per keepaliveMs, as the
 * protocol asks (§9.4).
 */
export interface ActiveMember {
  /** Its place in the pair's register order (construction order). */
  readonly index: number;
  readonly quiet: boolean;
}

export class ActiveRegisters<R extends ActiveMember> {
  /** Whether each register (by index) is in `list`. */
  private readonly member: Uint8Array;
  /** The active registers; in register order unless `unordered` (a wake appends). */
  private readonly list: R[];
  private unordered = false;

  /**
   * `all`: the pair's registers, each at its `index`; every one starts active. `visitEvery`: none
   * is ever swept (every step visits every register, as before the set: the reference the
   * differential simulation compares with).
   */
  constructor(
    private readonly all: readonly R[],
    private readonly visitEvery = false,
  ) {
    this.member = new Uint8Array(all.length).fill(1);
    this.list = [...all];
  }

  /** `r` may have work: the pair's next steps visit it. */
  wake(r: R): void {
    if (this.member[r.index] === 1) return;
    this.member[r.index] = 1;
    const n = this.list.length;
    if (n > 0 && this.list[n - 1].index > r.index) this.unordered = true;
    this.list.push(r);
  }

  /**
   * The active registers in register order (the order every step visits them in, as it visited
   * all of them). A live array: a register woken while a caller iterates it is appended, out of
   * order (a `for...of` visits it, a loop over a fixed count does not; it was quiet, so either
   * way its step does nothing). Sorted here only: never call this inside such a loop.
   */
  ordered(): readonly R[] {
    if (this.unordered) {
      this.list.sort((a, b) => a.index - b.index);
      this.unordered = false;
    }
    return this.list;
  }

  /** The active registers in no particular order (for sums). */
  get any(): readonly R[] {
    return this.list;
  }

  /** Take the quiet registers out (between steps: never while a caller iterates the set). */
  sweep(): void {
    if (this.visitEvery) return;
    const list = this.list;
    let kept = 0;
    for (let i = 0; i < list.length; i++) {
      const r = list[i];
      if (r.quiet) this.member[r.index] = 0;
      else list[kept++] = r;
    }
    list.length = kept;
  }

  get size(): number {
    return this.list.length;
  }

  /**
   * What a reviewer would check by hand, as errors (empty: sound): each register outside the set
   * is quiet (one that is not was changed without a wake: a step would miss its work), and the
   * set lists each member once.
   */
  audit(describe: (r: R) => string): string[] {
    const out: string[] = [];
    const seen = new Uint8Array(this.all.length);
    for (const r of this.list) {
      if (seen[r.index] === 1) out.push(`${describe(r)} is listed twice`);
      seen[r.index] = 1;
      if (this.member[r.index] !== 1) out.push(`${describe(r)} is listed but not marked active`);
    }
    for (const r of this.all) {
      if (this.member[r.index] === 1 && seen[r.index] !== 1) out.push(`${describe(r)} is marked active but not listed`);
      if (this.member[r.index] === 0 && !r.quiet) out.push(`${describe(r)} has work but is outside the active set (woken by nothing)`);
    }
    return out;
  }
}

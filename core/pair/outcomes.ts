/**
 * The outcomes of a register's own candidates, by sequence number, as told (and as replayed from
 * the log at a start): what `outcome` answers an application that heard `pending` and lost the
 * call (a restart, a timeout), as a domain's outcome table does. The last OUTCOMES_KEPT, in a ring
 * of typed arrays grown as needed (24 octets an outcome: a hub's thousand pairs that write little
 * hold little).
 */
import type { OwnOutcome } from './events.js';

/** Own outcomes a register keeps. */
export const OUTCOMES_KEPT = 4_096;

export type KeptOutcome = OwnOutcome & { version: number };

/** `code` of a committed outcome; a rejection's is its reason's index in `reasons`. */
const COMMITTED = -1;
/** `op` when a rejection names no failed op. */
const NO_OP = -1;

export class OwnOutcomes {
  private seq = new Float64Array(0);
  private version = new Float64Array(0);
  private code = new Int32Array(0);
  private op = new Int32Array(0);
  /** The rejection reasons seen (a closed set of names: REJECT_REASON_NAMES, `sequence-reused`). */
  private readonly reasons: string[] = [];
  /** Slots used, and the next one written (the oldest once full). */
  private used = 0;
  private next = 0;

  constructor(private readonly kept = OUTCOMES_KEPT) {}

  note(seq: number, outcome: OwnOutcome, version: number): void {
    if (this.used === this.seq.length && this.used < this.kept) this.grow();
    const i = this.next;
    this.seq[i] = seq;
    this.version[i] = version;
    if (outcome.verdict === 'committed') {
      this.code[i] = COMMITTED;
      this.op[i] = NO_OP;
    } else {
      let r = this.reasons.indexOf(outcome.reason);
      if (r < 0) r = this.reasons.push(outcome.reason) - 1;
      this.code[i] = r;
      this.op[i] = outcome.op ?? NO_OP;
    }
    this.next = (i + 1) % this.seq.length;
    this.used = Math.min(this.used + 1, this.seq.length);
  }

  /** The newest word on `seq` (a replayed outcome, then the same one told, agree). */
  get(seq: number): KeptOutcome | undefined {
    const n = this.seq.length;
    for (let k = 1; k <= this.used; k++) {
      const i = (this.next - k + n) % n;
      if (this.seq[i] !== seq) continue;
      const version = this.version[i];
      const c = this.code[i];
      if (c === COMMITTED) return { verdict: 'committed', version };
      const op = this.op[i];
      return { verdict: 'rejected', reason: this.reasons[c], ...(op !== NO_OP ? { op } : {}), version };
    }
    return undefined;
  }

  get size(): number {
    return this.used;
  }

  private grow(): void {
    const n = Math.min(this.kept, Math.max(64, this.seq.length * 2));
    // Full and in order from slot 0 (the ring wraps only once it holds `kept`).
    const widen = <A extends Float64Array | Int32Array>(a: A, b: A): A => {
      b.set(a);
      return b;
    };
    this.seq = widen(this.seq, new Float64Array(n));
    this.version = widen(this.version, new Float64Array(n));
    this.code = widen(this.code, new Int32Array(n));
    this.op = widen(this.op, new Int32Array(n));
    this.next = this.used;
  }
}

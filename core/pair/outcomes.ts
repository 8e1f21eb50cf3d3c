/**
 * The outcomes of a register's own candidates, by sequence number, as told (and as replayed from
 * the log at a start): what `outcome` answers an application that heard `pending` and lost the
 * call (a restart, a timeout), as a domain's outcome table does. Bounded: the last OUTCOMES_KEPT.
 */
import type { OwnOutcome } from './events.js';

/** Own outcomes a register keeps (~100 octets each). */
export const OUTCOMES_KEPT = 16_384;

export type KeptOutcome = OwnOutcome & { version: number };

export class OwnOutcomes {
  private readonly bySeq = new Map<number, KeptOutcome>();

  constructor(private readonly kept = OUTCOMES_KEPT) {}

  note(seq: number, outcome: OwnOutcome, version: number): void {
    this.bySeq.delete(seq); // a later word (a replay, then the told outcome) moves it to the newest
    this.bySeq.set(seq, { ...outcome, version });
    if (this.bySeq.size > this.kept) this.bySeq.delete(this.bySeq.keys().next().value!);
  }

  get(seq: number): KeptOutcome | undefined {
    return this.bySeq.get(seq);
  }

  get size(): number {
    return this.bySeq.size;
  }
}

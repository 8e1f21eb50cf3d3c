/** What a HalfPair reports to its driver (daemon, simulator, library). */
import type { PairState } from './lifecycle.js';

export type Verdict = 'committed' | 'rejected';

export interface EntryOutcome {
  origin: number;
  seq: number;
  /** 0 committed, otherwise the RejectReason. */
  verdict: number;
}

export type SpookEvent =
  | { type: 'lifecycle'; at: number; from: PairState; to: PairState; cause: string }
  | { type: 'collapse'; at: number; register: string; version: number; hash: string; entries: EntryOutcome[] }
  /** The outcome of one of this endpoint's own candidates. `version` is the collapse that decided it. */
  | { type: 'outcome'; at: number; register: string; origin: number; seq: number; verdict: Verdict; reason?: string; version: number }
  | { type: 'reentangled'; at: number; register: string; method: 'log' | 'reconcile' | 'full'; version: number }
  | { type: 'drop'; at: number; reason: string; detail: string };

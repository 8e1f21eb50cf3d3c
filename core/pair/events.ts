/** What a HalfPair reports to its driver (daemon, simulator, library). */
import type { CollapseEntry } from '../../wire/messages.js';
import type { PairState } from './lifecycle.js';
import type { PairDrop } from './drops.js';

/** The fate of one of this endpoint's own candidates; a rejection's reason is named (REJECT_REASON_NAMES, or sequence-reused). */
export type OwnOutcome =
  | { verdict: 'committed' }
  /** `op`: for a txn rejected by a guard, the index of the first op whose guard failed (when this end could tell). */
  | { verdict: 'rejected'; reason: string; op?: number };

export type SpookEvent =
  | { type: 'lifecycle'; at: number; from: PairState; to: PairState; cause: string }
  | { type: 'collapse'; at: number; register: string; version: number; hash: string; entries: readonly CollapseEntry[] }
  /** The outcome of one of this endpoint's own candidates. `version` is the collapse that decided it. */
  | ({ type: 'outcome'; at: number; register: string; origin: number; seq: number; version: number } & OwnOutcome)
  | { type: 'reentangled'; at: number; register: string; method: ReentangleMethod; version: number }
  | { type: 'drop'; at: number; reason: PairDrop; detail: string };

/** How a register got back to its peer's state: replaying the log, reconciling, or a full transfer (the last resort). */
export type ReentangleMethod = 'log' | 'reconcile' | 'full';

/**
 * Every reason a pair counts a dropped message or datagram for (HalfPair `stats.drops`, its
 * `drop` events), as a closed union: the counters are keyed by them and the peer table's
 * violation check (core/etcp/peers.ts) reads them, so a misspelt reason does not compile
 * instead of counting elsewhere or never reaching the violation limit.
 * Operators see the same names (metrics label `reason`, `spook pair show` drops).
 */
import type { WireDropName } from '../../wire/constants.js';

/**
 * Pair drops that only an authenticated peer can cause: protocol violations, counted toward
 * the violation limit. Unknown message types are skipped, not violations: later revisions may
 * add some (§3.1).
 */
export const PAIR_VIOLATIONS = [
  'malformed-payload',
  'unknown-register',
  'wrong-origin',
  'propose-to-follower',
  /**
   * A Collapse record an honest sequencer never forms (rev 1.32): a committed op of the other
   * register kind (§7.4), a committed `cross` entry not first in its record, or a `part` entry
   * with others (§4.6). Not applied, held or logged.
   */
  'invalid-record',
] as const;
export type PairViolation = (typeof PAIR_VIOLATIONS)[number];

/** The pair's other drops: what a peer may send in good faith (late, early, too much), or the pair's own bounds. */
export const PAIR_DROPS = [
  ...PAIR_VIOLATIONS,
  /** A datagram that is not a Data frame (simulator, tests: ETCP handles the others). */
  'not-data',
  /** Messages of a type this revision does not know, skipped. */
  'unknown-message',
  /** A response dropped: the outbox is full (the peer asks again). */
  'outbox-full',
  /** A response too large for any payload. */
  'oversized-response',
  /** A collapse or candidates outside the receive window. */
  'beyond-window',
  /** What the peer sent would exceed the register's quota. */
  'quota-violation',
  /** Reconciliation: a new pin asked for too soon or too often. */
  'recon-rate-limited',
  /** A log diff that does not give the pin's hash, names a key twice or changes its part count: range reconciliation follows (§8.2.1). */
  'diff-mismatch',
  /**
   * A register message while the manifests are not known to match (§6.3): for a register this
   * end does not declare before the peer's manifest matched, or for any register while they differ.
   */
  'register-mismatch',
  // ---- large values (rev 1.9) ----
  /** A fragment of a message past the reassembly quota, or a stale partial message evicted (§3.4). */
  'fragment-quota',
  /** A fragment contradicting what arrived of its message: the partial message is discarded (§3.4). */
  'fragment-conflict',
  /** A fragment already held (a retransmission): acknowledged again, nothing kept. */
  'fragment-duplicate',
  /** A Collapse leaving out a delta that is not one of this follower's pending candidates: not applied; it comes whole on retransmission (§3.6.4). */
  'elided-unknown',
] as const;

/** Everything a pair counts in `stats.drops` (with the wire checks' names for payloads that fail to decode). */
export type PairDrop = WireDropName | (typeof PAIR_DROPS)[number];

/** A pair's drop counters; absent keys read as zero. */
export type PairDropCounts = Partial<Record<PairDrop, number>>;

/**
 * Every reason the daemon counts a dropped datagram for, as closed unions: the counters are
 * keyed by them and the violation check reads them, so a misspelt reason does not compile
 * (a free string would silently count elsewhere, or disable the violation limit).
 * Operators see the same names (metrics label `reason`, admin `status.drops`).
 */
import type { WireDropName } from '../../wire/constants.js';
import { PAIR_VIOLATIONS, type PairDropCounts } from '../pair/drops.js';

// The pair's own reasons, violations among them, live with the pair core (core/pair/drops.ts).
export { PAIR_VIOLATIONS, type PairViolation } from '../pair/drops.js';

/** Why the ETCP endpoint (endpoint.ts) dropped a handshake or Data frame. */
export const ETCP_DROPS = [
  'unauthorized-key',
  'handshake-auth-failed',
  'handshake-replayed',
  'handshake-malformed',
  'bad-mac1',
  'source-rate-limited',
  'peer-rate-limited',
  'cookie-auth-failed',
  'no-free-index',
  'peer-session-limit',
  'dh-rate-limited',
  'refused-replay',
  'version-mismatch',
  'unknown-index',
  'data-auth-failed',
  'replayed',
] as const;
export type EtcpDrop = (typeof ETCP_DROPS)[number];

/** Why the peer table (peers.ts) or the daemon dropped a datagram or a payload. */
export const PEER_DROPS = [
  /** From UDP source port 0, which Linux delivers but nobody can send to: no address to roam to or answer (§12.6). */
  'bad-source',
  /** A source address in debt for Data frames that failed to open (§12.9). */
  'source-over-budget',
  /** A peer over its work budget: its frames are dropped before the AEAD (§12.9). */
  'peer-over-budget',
  /** Under load: a HandshakeInit answered with a CookieReply, not a DH (§12.8). */
  'cookie-required',
  /** A handshake completed by a peer whose pair is fenced: no session forms until a restart. */
  'peer-fenced',
  /** A QN payload for no domain this peer is a member of. */
  'unknown-domain',
  /** A QN payload for a fenced domain. */
  'domain-fenced',
  /** A QN message too large for one sealed frame. */
  'qn-oversized',
  /** Handling threw: a bug, contained (the peer's pair fenced, or the datagram dropped). */
  'internal-error',
] as const;
export type PeerDrop = (typeof PEER_DROPS)[number];

/** Everything spookd counts in `drops` (wire checks, ETCP, the peer table, the daemon). */
export type DaemonDrop = WireDropName | EtcpDrop | PeerDrop;

/** Counters keyed by a closed union; absent keys read as zero. */
export type DropCounts<R extends string = DaemonDrop> = Partial<Record<R, number>>;

/** How many protocol violations a pair's drop counters hold. */
export function violationsIn(pairDrops: Readonly<PairDropCounts>): number {
  let n = 0;
  for (const k of PAIR_VIOLATIONS) n += pairDrops[k] ?? 0;
  return n;
}

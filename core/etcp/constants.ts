/**
 * Every timing and bound of the ETCP session policy (peers.ts), in one place as wireguard-go's
 * device/constants.go. Times are milliseconds of the caller's monotonic clock.
 */

/** Re-handshake this often (fresh keys, as WireGuard's REKEY_AFTER_TIME); the initiator of the current session does. */
export const REKEY_AFTER_MS = 120_000;
/**
 * Or after this many frames sealed on a session (WireGuard's REKEY_AFTER_MESSAGES): far below
 * the 64-bit packet number space and the AEAD's nonce limit, so a session never wraps.
 */
export const REKEY_AFTER_MESSAGES = 2 ** 48;
/** Retry an unanswered HandshakeInit after this long; no peer is sent inits more often. */
export const HANDSHAKE_RETRY_MS = 2_000;
/**
 * How far ahead of an init's timestamp the initiator persists its lease (§12.2.1): at most one
 * fsync per this much, and a restart's first init is at most this far ahead of the last one sent.
 */
export const INIT_LEASE_MS = 60_000;
/** A superseded session still opens frames until it has been idle this long (§12.6). */
export const OLD_SESSION_GRACE_MS = 30_000;
/** Sessions we answered and the peer has not used yet, kept per peer (the oldest goes first). */
export const MAX_UNCONFIRMED = 4;
/** Superseded sessions kept per peer (the oldest goes first): a peer handshaking in a loop holds no more. */
export const MAX_OLD_SESSIONS = 2;
/** CPU per second that Data frames failing to open may cost per source address (§12.9), and addresses tracked. */
export const SOURCE_FAILURE_BUDGET_MS = 20;
export const MAX_FAILING_SOURCES = 1024;
/** Member 2 (the follower) lets member 1 handshake first at start-up, so two inits rarely cross. */
export const MEMBER2_FIRST_CONTACT_DELAY_MS = 1_500;
/** While the pair is decoherent, try a fresh handshake this often (the peer may have lost our session). */
export const DECOHERENT_REHANDSHAKE_MS = 5_000;

/**
 * Age (from its establishment) past which a superseded session opens nothing, however often
 * the peer sends on it: the rekey period plus two grace periods (180 s by default, WireGuard's
 * REJECT_AFTER_TIME). Its initiator has rekeyed it by then.
 */
export function oldSessionMaxAgeMs(rekeyAfterMs: number, graceMs: number): number {
  return rekeyAfterMs + 2 * graceMs;
}

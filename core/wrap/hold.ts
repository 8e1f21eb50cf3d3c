/**
 * A wrapper's default hold: TCP's own patience, so that a wrapped connection never gives up on
 * an outage before the same connection direct would (docs/OPERATIONS.md, "How long a wrapper holds").
 *
 * Linux ends an established connection whose data goes unacknowledged once the time a
 * retransmission series of `tcp_retries2` backoffs would take has passed since the first
 * retransmission (net/ipv4/tcp_timer.c, tcp_model_timeout() via retransmits_timed_out(), with
 * rto_base = TCP_RTO_MIN): the RTO doubles from TCP_RTO_MIN (200 ms) up to TCP_RTO_MAX (120 s),
 * then stays there. With the default tcp_retries2 = 15: ilog2(120 / 0.2) = 9 doublings,
 * (2^10 − 1) × 0.2 s = 204.6 s, plus (15 − 9) × 120 s = 720 s: 924.6 s.
 */

export const TCP_RTO_MIN_MS = 200;
export const TCP_RTO_MAX_MS = 120_000;
/** Linux's default net.ipv4.tcp_retries2. */
export const DEFAULT_TCP_RETRIES2 = 15;
/** A hold is at least this, at most MAX_HOLD_MS (the config's bounds). */
export const MIN_HOLD_MS = 100;
export const MAX_HOLD_MS = 24 * 3_600_000;

/** The kernel's tcp_model_timeout(boundary = retries2, rto_base = TCP_RTO_MIN), in ms. */
export function tcpPatienceMs(retries2: number): number {
  const boundary = Math.max(0, Math.floor(retries2));
  const thresh = Math.floor(Math.log2(TCP_RTO_MAX_MS / TCP_RTO_MIN_MS)); // ilog2(600) = 9
  if (boundary <= thresh) return (2 ** (boundary + 1) - 1) * TCP_RTO_MIN_MS;
  return (2 ** (thresh + 1) - 1) * TCP_RTO_MIN_MS + (boundary - thresh) * TCP_RTO_MAX_MS;
}

/**
 * The default hold for a host whose tcp_retries2 is `retries2` (undefined: unreadable, Linux's
 * default assumed): its TCP patience rounded up to the second, within the hold's bounds.
 * 925 s with the default.
 */
export function defaultHoldMs(retries2: number | undefined): number {
  const r = retries2 !== undefined && Number.isFinite(retries2) && retries2 >= 0 ? retries2 : DEFAULT_TCP_RETRIES2;
  const ms = Math.ceil(tcpPatienceMs(r) / 1000) * 1000;
  return Math.min(MAX_HOLD_MS, Math.max(MIN_HOLD_MS, ms));
}

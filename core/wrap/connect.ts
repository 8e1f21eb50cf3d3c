/**
 * Honest connects (docs/OPERATIONS.md, "What a client sees when it connects"): a wrapped
 * connect() completes on the local intercept listener at once, whatever the far side does, so
 * the wrapper itself must give the client what the same connect direct would have given it.
 *
 * - The far side's dial is bounded by the wrapper's connect timeout, by default this host's
 *   SYN patience (the kernel's own connect() timeout): an unconfirmed connection is reset then.
 * - While the wrapper's peer has no carrier (past DOWN_GRACE_MS), its `whenDown` applies in
 *   the connect hook: `hold` (accept, wait for the carrier within the connect timeout),
 *   `direct` (no rewrite: the original destination) or `refuse` (connect() fails, EHOSTUNREACH).
 * - A dial the far side saw refused or unreachable is remembered for REFUSAL_MEMO_MS per
 *   destination: the next connects to it fail in the hook with the same errno.
 * Sans-I/O: `now` is an argument.
 */

/** What the connect hook does for a wrapper whose peer has no carrier. */
export const WHEN_DOWN = ['hold', 'direct', 'refuse'] as const;
export type WhenDown = (typeof WHEN_DOWN)[number];
export const DEFAULT_WHEN_DOWN: WhenDown = 'hold';

/** The kernel's initial SYN RTO (TCP_TIMEOUT_INIT) and the cap on its backoff (TCP_RTO_MAX). */
export const TCP_TIMEOUT_INIT_MS = 1_000;
const RTO_MAX_MS = 120_000;
/** Linux's default net.ipv4.tcp_syn_retries. */
export const DEFAULT_TCP_SYN_RETRIES = 6;
/** A connect timeout is at least this, at most MAX_CONNECT_TIMEOUT_MS (the config's bounds). */
export const MIN_CONNECT_TIMEOUT_MS = 100;
export const MAX_CONNECT_TIMEOUT_MS = 3_600_000;

/**
 * How long the kernel's connect() waits for a SYN-ACK: tcp_model_timeout(boundary =
 * tcp_syn_retries, rto_base = TCP_TIMEOUT_INIT) (net/ipv4/tcp_timer.c). The RTO doubles from
 * 1 s up to 120 s: with the default 6 retries, 1 + 2 + ... + 64 = 127 s.
 */
export function tcpSynPatienceMs(synRetries: number): number {
  const boundary = Math.max(0, Math.floor(synRetries));
  const thresh = Math.floor(Math.log2(RTO_MAX_MS / TCP_TIMEOUT_INIT_MS)); // ilog2(120) = 6
  if (boundary <= thresh) return (2 ** (boundary + 1) - 1) * TCP_TIMEOUT_INIT_MS;
  return (2 ** (thresh + 1) - 1) * TCP_TIMEOUT_INIT_MS + (boundary - thresh) * RTO_MAX_MS;
}

/** The default connect timeout for a host whose tcp_syn_retries is `synRetries` (undefined: Linux's default): 127 s. */
export function defaultConnectTimeoutMs(synRetries: number | undefined): number {
  const r = synRetries !== undefined && Number.isFinite(synRetries) && synRetries >= 0 ? synRetries : DEFAULT_TCP_SYN_RETRIES;
  return Math.min(MAX_CONNECT_TIMEOUT_MS, Math.max(MIN_CONNECT_TIMEOUT_MS, tcpSynPatienceMs(r)));
}

/**
 * A carrier counts as down for `whenDown` only once it has been down this long (or never came
 * up this long after the start): a redial finds a healed link within REDIAL_MAX_MS (500 ms) and a
 * round trip, so a brief loss never flips connects to `direct` or `refuse`; they are held meanwhile.
 */
export const DOWN_GRACE_MS = 2_000;

/** Whether the peer's carrier counts as down at `now`, given when it went down (undefined: it is up). */
export function countsDown(downSince: number | undefined, now: number, graceMs = DOWN_GRACE_MS): boolean {
  return downSince !== undefined && now - downSince >= graceMs;
}

/** When a carrier down since `downSince` starts to count as down (undefined: up, nothing due). */
export function countsDownAt(downSince: number | undefined, graceMs = DOWN_GRACE_MS): number | undefined {
  return downSince === undefined ? undefined : downSince + graceMs;
}

/**
 * Why the far side's dial failed, from the CLOSE record's text (§16.5: a DIAL_FAILED text starts
 * with the errno's name where the dialling side knows it). Anything else, from a peer that does
 * not say, is `other` and is never remembered.
 */
export const DIAL_FAILURES = ['refused', 'host-unreachable', 'net-unreachable', 'timeout', 'other'] as const;
export type DialFailure = (typeof DIAL_FAILURES)[number];

const ERRNO_FAILURE: Record<string, DialFailure> = {
  ECONNREFUSED: 'refused',
  EHOSTUNREACH: 'host-unreachable',
  ENETUNREACH: 'net-unreachable',
  ETIMEDOUT: 'timeout',
};

/** The failure a CLOSE text names by its first word (an errno name), or `other`. Never throws. */
export function dialFailureOf(text: string): DialFailure {
  const word = /^[A-Z]{4,16}\b/.exec(text)?.[0];
  return (word !== undefined && ERRNO_FAILURE[word]) || 'other';
}

/** Linux errno values the connect hook sets (bpf_set_retval): what a direct connect() would return. */
export const ERRNO = { ECONNREFUSED: 111, EHOSTUNREACH: 113, ENETUNREACH: 101 } as const;

/** The errno the next connects to a destination get after this failure; undefined: not remembered (a timeout is not repeated). */
export function memoErrno(f: DialFailure): number | undefined {
  switch (f) {
    case 'refused':
      return ERRNO.ECONNREFUSED;
    case 'host-unreachable':
      return ERRNO.EHOSTUNREACH;
    case 'net-unreachable':
      return ERRNO.ENETUNREACH;
    case 'timeout':
    case 'other':
      return undefined;
    default: {
      const _never: never = f;
      return _never;
    }
  }
}

/**
 * How long a refusal is remembered: long enough for a client's immediate retries (and the other
 * addresses of a happy-eyeballs client) to fail as they would direct, short enough that a server
 * that starts listening is reached about as soon as direct (a retry within the memo fails).
 */
export const REFUSAL_MEMO_MS = 1_000;
/** Destinations remembered at once (an LRU map: the oldest go first). */
export const REFUSAL_MEMO_ENTRIES = 4_096;

/**
 * The connections of one peer not yet confirmed by the far side (OPENED), each with the instant
 * its connect timeout expires. Bounded by the session's own connection limit: an entry is added
 * per connection it admitted, and removed when it is confirmed, ends (every way a connection
 * ends settles it) or expires. earliest() is linear: it holds only connects in flight.
 */
export class ConnectDeadlines<T> {
  private readonly byConn = new Map<number, { at: number; info: T }>();

  get size(): number {
    return this.byConn.size;
  }

  add(conn: number, at: number, info: T): void {
    this.byConn.set(conn, { at, info });
  }

  /** The connection was confirmed, or ended: its deadline is gone. Returns its info. */
  settle(conn: number): T | undefined {
    const e = this.byConn.get(conn);
    this.byConn.delete(conn);
    return e?.info;
  }

  /** The earliest deadline (undefined: none). Linear: called once per timer re-arm, entries are few. */
  earliest(): number | undefined {
    let at: number | undefined;
    for (const e of this.byConn.values()) if (at === undefined || e.at < at) at = e.at;
    return at;
  }

  /** Remove and return the connections whose deadline is at or before `now`. */
  expired(now: number): { conn: number; info: T }[] {
    const out: { conn: number; info: T }[] = [];
    for (const [conn, e] of this.byConn) {
      if (e.at <= now) {
        out.push({ conn, info: e.info });
        this.byConn.delete(conn);
      }
    }
    return out;
  }
}

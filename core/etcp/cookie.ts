/**
 * DoS cookies for ETCP handshakes (docs/PROTOCOL.md §12.8), after WireGuard's mac1/mac2 and
 * cookie reply (WireGuard whitepaper §5.4.4, §5.4.7):
 *
 * - mac1, keyed by the receiver's static public key, is checked before any Diffie-Hellman:
 *   a sender that does not know whom it talks to costs the receiver one MAC.
 * - Under load the responder also requires mac2, keyed by a cookie: a MAC of the sender's
 *   source address under a secret that rotates every two minutes. A message without a valid
 *   mac2 is answered by a CookieReply (the cookie, sealed with XChaCha20-Poly1305 under a key
 *   derived from the responder's static public key, bound to the message's mac1) and costs no
 *   DH. Only a sender that receives at its source address can answer it.
 *
 * MAC is HMAC-BLAKE2s truncated to 16 octets, where WireGuard uses keyed BLAKE2s-128: node:crypto
 * has BLAKE2s and HMAC but not BLAKE2s' keyed mode, and HMAC with truncation (RFC 2104 §5) is a
 * PRF over the same hash. Sans-I/O: clock and randomness are injected; a source address is an
 * opaque string (only its encoder ever checks a cookie, so the encoding is local).
 */
import { HASHLEN, XNONCELEN, TAGLEN, hash, hmac, xaeadDecrypt, xaeadEncrypt } from '../../crypto/primitives.js';

export const MAC_LEN = 16;
export const COOKIE_LEN = 16;
/** CookieReply payload: receiver_index, nonce, sealed cookie. */
export const COOKIE_REPLY_LEN = 4 + XNONCELEN + COOKIE_LEN + TAGLEN;
/** The responder draws a new cookie secret this often (WireGuard's COOKIE_SECRET_MAX_AGE). */
export const COOKIE_SECRET_LIFETIME_MS = 120_000;
/** An initiator stops using a cookie this long before the secret that made it may have rotated. */
export const COOKIE_LATENCY_MS = 5_000;
/** Default load threshold: HandshakeInits with a valid mac1 per second above which mac2 is required. */
export const DEFAULT_COOKIE_THRESHOLD = 50;
/** Under load, HandshakeInits with a valid mac2 processed per source address per second. */
export const DEFAULT_PER_SOURCE_LIMIT = 5;
/** Sources tracked per second under load; further sources are limited outright (bounded memory). */
const MAX_TRACKED_SOURCES = 4096;
/** Under load, DHs per second for all sources together, as a multiple of the threshold (bucket depth: one second's worth). */
export const DH_RATE_PER_THRESHOLD = 2;
/** mac1 values of HandshakeInits refused after their DH, remembered so a replay costs no DH. */
export const REFUSED_INITS_KEPT = 1024;

const enc = new TextEncoder();
const LABEL_MAC1 = enc.encode('mac1----');
const LABEL_COOKIE = enc.encode('cookie--');

export function mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  return hmac('BLAKE2s', key, ...parts).subarray(0, MAC_LEN);
}

/** HASH("mac1----" || receiver's static public key). */
export function mac1Key(receiverStatic: Uint8Array): Uint8Array {
  return hash('BLAKE2s', LABEL_MAC1, receiverStatic);
}

/** HASH("cookie--" || responder's static public key): seals CookieReplies. */
export function cookieKey(responderStatic: Uint8Array): Uint8Array {
  return hash('BLAKE2s', LABEL_COOKIE, responderStatic);
}

/** Constant-time comparison of two MACs (the lengths are public). */
export function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * Fill the two trailing MAC fields of a handshake frame in place: mac1 over everything before
 * it, then mac2 (keyed by the cookie, zero without one) over everything before mac2.
 */
export function stampMacs(frame: Uint8Array, mac1K: Uint8Array, cookie: Uint8Array | undefined): Uint8Array {
  const m1 = frame.length - 2 * MAC_LEN;
  frame.set(mac(mac1K, frame.subarray(0, m1)), m1);
  const m2 = frame.length - MAC_LEN;
  frame.set(cookie ? mac(cookie, frame.subarray(0, m2)) : new Uint8Array(MAC_LEN), m2);
  return frame;
}

export function mac1Of(frame: Uint8Array): Uint8Array {
  return frame.subarray(frame.length - 2 * MAC_LEN, frame.length - MAC_LEN);
}

export function mac1Valid(frame: Uint8Array, mac1K: Uint8Array): boolean {
  const m1 = frame.length - 2 * MAC_LEN;
  return m1 >= 0 && macEqual(mac(mac1K, frame.subarray(0, m1)), frame.subarray(m1, m1 + MAC_LEN));
}

/** Seal a cookie for the initiator: XChaCha20-Poly1305(cookieKey, nonce, cookie, ad = mac1). */
export function sealCookie(responderStatic: Uint8Array, nonce: Uint8Array, cookie: Uint8Array, mac1: Uint8Array): Uint8Array {
  return xaeadEncrypt(cookieKey(responderStatic), nonce, mac1, cookie);
}

export function openCookie(responderStatic: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, mac1: Uint8Array): Uint8Array | undefined {
  const c = xaeadDecrypt(cookieKey(responderStatic), nonce, mac1, sealed);
  return c && c.length === COOKIE_LEN ? c : undefined;
}

export interface CookieOptions {
  random: (n: number) => Uint8Array;
  /** mac1-valid HandshakeInits per second above which mac2 is required. */
  threshold?: number;
  /**
   * Under load, mac2-valid HandshakeInits per source host per second that go on to the DH (and,
   * always, HandshakeResps that fail after theirs: admitResponse).
   */
  perSourceLimit?: number;
  /**
   * The part of a source that a peer's exemption from the global DH bucket covers, and that the
   * per-source limit counts by (spookd: its IP address, so a peer whose NAT gives it a new port
   * keeps its exemption, and a host sending from many ports still gets one share). Default: the
   * whole source.
   */
  hostOf?: (source: string) => string;
}

/**
 * The responder's side: the rotating secret, the load measure, and the per-source limit
 * under load. Load is the count of mac1-valid HandshakeInits in the current one-second
 * window or the previous one, so a flood keeps the responder under load across windows.
 */
export class CookieChecker {
  private secret: Uint8Array | undefined;
  private secretAt = -Infinity;
  private windowStart = -Infinity;
  private count = 0;
  private prevCount = 0;
  /** Under load (inits) or always (failed responses): DHs this second, by sourceKey. */
  private readonly perSource = new Map<string, number>();
  /** The global DH bucket (admitSource under load, failed responses always). */
  private dhTokens: number;
  private dhAt = -Infinity;
  /**
   * The latest source of an authorised handshake per peer (and its host), how many peers name
   * each host (the exemption from the global bucket covers the host) and each exact source.
   */
  private readonly knownOf = new Map<string, { host: string; source: string }>();
  private readonly knownCount = new Map<string, number>();
  private readonly knownSourceCount = new Map<string, number>();
  readonly threshold: number;
  readonly perSourceLimit: number;

  private readonly hostOf: (source: string) => string;

  constructor(private readonly o: CookieOptions) {
    this.hostOf = o.hostOf ?? ((s) => s);
    this.threshold = o.threshold ?? DEFAULT_COOKIE_THRESHOLD;
    this.perSourceLimit = o.perSourceLimit ?? DEFAULT_PER_SOURCE_LIMIT;
    this.dhTokens = DH_RATE_PER_THRESHOLD * this.threshold;
  }

  private roll(now: number): void {
    if (now - this.windowStart < 1000) return;
    this.prevCount = now - this.windowStart < 2000 ? this.count : 0;
    this.count = 0;
    this.windowStart = now;
    this.perSource.clear();
  }

  /** Count one mac1-valid HandshakeInit; true if the responder is now under load. */
  noteInit(now: number): boolean {
    this.roll(now);
    this.count++;
    return this.underLoad(now);
  }

  underLoad(now: number): boolean {
    this.roll(now);
    return this.count > this.threshold || this.prevCount > this.threshold;
  }

  /**
   * What the per-source limit counts a source under: its host (spookd: its IP address, the
   * part the exemption covers), so that one host gets `perSourceLimit` however many ports it
   * sends from; but the exact source of a peer's latest handshake counts on its own, so that
   * another sender at the peer's address (a shared NAT) cannot spend the peer's share.
   */
  private sourceKey(source: string): string {
    return this.knownSourceCount.has(source) ? source : this.hostOf(source);
  }

  private refillDh(now: number): void {
    const rate = DH_RATE_PER_THRESHOLD * this.threshold;
    if (now > this.dhAt) this.dhTokens = Math.min(rate, this.dhTokens + ((now - this.dhAt) * rate) / 1000);
    this.dhAt = Math.max(this.dhAt, now);
  }

  /**
   * Under load: whether this source may have one more DH now. Two limits: `perSourceLimit`
   * per source host per second (sourceKey), and a token bucket of `DH_RATE_PER_THRESHOLD ×
   * threshold` per second for all sources together (without it, N sources that receive their
   * cookies get N × perSourceLimit DHs per second). A token is taken only when both admit.
   * Hosts of an authorised peer's latest handshake (noteAuthorised) are held to the per-source
   * limit only.
   */
  admitSource(now: number, source: string): 'ok' | 'source' | 'global' {
    this.roll(now);
    const key = this.sourceKey(source);
    const n = this.perSource.get(key) ?? 0;
    // A host that completed an authorised handshake lately: an attacker can hold no cookie for it
    // without receiving there, so a flood from other sources does not starve it (nor fill the table).
    const exempt = this.knownCount.has(this.hostOf(source));
    if (!exempt && !this.perSource.has(key) && this.perSource.size >= MAX_TRACKED_SOURCES) return 'source';
    if (n >= this.perSourceLimit) return 'source';
    if (!exempt) {
      this.refillDh(now);
      if (this.dhTokens < 1) return 'global';
      this.dhTokens--;
    }
    this.perSource.set(key, n + 1);
    return 'ok';
  }

  /**
   * A HandshakeResp to our pending handshake with `peer`, from `source`, before its two DHs:
   * whether they may be done. Nothing proves a response genuine before them (its mac1 is keyed
   * by our public key, and whoever saw our init knows its index), so the DHs of the responses
   * that then fail count against the limits of inits under load, whether or not under load:
   * `perSourceLimit` per source host per second, and the global DH bucket unless the source is
   * the host of `peer`'s latest handshake (where the genuine response comes from). A response
   * that authenticates costs the limits nothing (it is the peer's work), so a flood of
   * forgeries from elsewhere never keeps the genuine one from completing.
   */
  admitResponse(now: number, source: string, peer: string): 'ok' | 'source' | 'global' {
    this.roll(now);
    const key = this.sourceKey(source);
    const exempt = this.knownOf.get(peer)?.host === this.hostOf(source);
    if (!exempt && !this.perSource.has(key) && this.perSource.size >= MAX_TRACKED_SOURCES) return 'source';
    if ((this.perSource.get(key) ?? 0) >= this.perSourceLimit) return 'source';
    if (exempt) return 'ok';
    this.refillDh(now);
    return this.dhTokens < 1 ? 'global' : 'ok';
  }

  /** A HandshakeResp admitted by admitResponse (just before) failed after its DHs: they are counted. */
  responseFailed(now: number, source: string, peer: string): void {
    this.roll(now);
    const key = this.sourceKey(source);
    const exempt = this.knownOf.get(peer)?.host === this.hostOf(source);
    if (!exempt) {
      this.refillDh(now);
      this.dhTokens = Math.max(0, this.dhTokens - 1);
    }
    if (exempt || this.perSource.has(key) || this.perSource.size < MAX_TRACKED_SOURCES)
      this.perSource.set(key, (this.perSource.get(key) ?? 0) + 1);
  }

  /**
   * A handshake with the authorised peer `peer` (any stable name) completed from `source`.
   * One source per peer, the latest: an authorised peer cannot farm exempt addresses.
   */
  noteAuthorised(peer: string, at: string): void {
    const old = this.knownOf.get(peer);
    if (old?.source === at) return;
    if (old !== undefined) {
      decrement(this.knownCount, old.host);
      decrement(this.knownSourceCount, old.source);
    }
    const host = this.hostOf(at);
    this.knownOf.set(peer, { host, source: at });
    this.knownCount.set(host, (this.knownCount.get(host) ?? 0) + 1);
    this.knownSourceCount.set(at, (this.knownSourceCount.get(at) ?? 0) + 1);
  }

  /** A peer no longer authorised (removed by a reload): the host of its latest handshake is exempt no more. */
  forgetAuthorised(peer: string): void {
    const old = this.knownOf.get(peer);
    if (old === undefined) return;
    this.knownOf.delete(peer);
    decrement(this.knownCount, old.host);
    decrement(this.knownSourceCount, old.source);
  }

  /** The cookie for `source`: MAC(secret, source), the secret redrawn every two minutes. */
  cookie(now: number, source: string): Uint8Array {
    if (!this.secret || now - this.secretAt >= COOKIE_SECRET_LIFETIME_MS || now < this.secretAt) {
      this.secret = this.o.random(HASHLEN);
      this.secretAt = now;
    }
    return mac(this.secret, enc.encode(source));
  }

  mac2Valid(now: number, frame: Uint8Array, source: string): boolean {
    const m2 = frame.length - MAC_LEN;
    return m2 >= 0 && macEqual(mac(this.cookie(now, source), frame.subarray(0, m2)), frame.subarray(m2));
  }
}

function decrement(m: Map<string, number>, k: string): void {
  const n = m.get(k)! - 1;
  if (n === 0) m.delete(k);
  else m.set(k, n);
}

/**
 * The mac1 values of HandshakeInits refused after the responder's DH (an unauthorised static
 * key, a Noise failure, a replayed timestamp): an LRU of `REFUSED_INITS_KEPT`. mac1 covers the whole init (ephemeral key and sealed static key
 * included), so a replay of a refused init has the same mac1 and is dropped with no DH,
 * while any other init, even from the same key, has another.
 */
export class RefusedInits {
  private readonly kept = new Set<string>();

  constructor(private readonly max = REFUSED_INITS_KEPT) {}

  add(mac1: Uint8Array): void {
    const k = Buffer.from(mac1).toString('hex');
    this.kept.delete(k);
    this.kept.add(k);
    if (this.kept.size > this.max) this.kept.delete(this.kept.values().next().value as string);
  }

  /** Whether this mac1 was refused; a hit becomes the most recent. */
  has(mac1: Uint8Array): boolean {
    const k = Buffer.from(mac1).toString('hex');
    if (!this.kept.has(k)) return false;
    this.kept.delete(k);
    this.kept.add(k);
    return true;
  }

  get size(): number {
    return this.kept.size;
  }
}

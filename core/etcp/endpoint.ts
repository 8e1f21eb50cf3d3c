/**
 * ETCP: pair formation and frame protection (docs/PROTOCOL.md, ETCP section).
 *
 * Pair formation is Noise IK (noise.ts) carried in HandshakeInit / HandshakeResp frames,
 * WireGuard-style: each side picks a random 32-bit index, and every later Data frame
 * carries the *receiver's* index as its pair id, which is what the XDP program's pair
 * table holds. Data payloads are ChaCha20-Poly1305 with the packet number as the nonce
 * and the 20-byte frame header as associated data; an RFC 6479 window rejects replays.
 *
 * Sans-I/O: the caller passes `now` and a random-bytes function; addresses never enter.
 */
import { FrameType, HEADER_LEN, MAX_FRAME_LEN } from '../../wire/constants.js';
import { encodeFrame, writeFrameHeader } from '../../wire/header.js';
import { hash, TAGLEN, type KeyPair } from '../../crypto/primitives.js';
import { nodeAead, type AeadOpener, type AeadProvider, type AeadSealer } from '../../crypto/aead.js';
import { IKInitiator, IKResponder, NoiseError, type HandshakeResult } from './noise.js';
import { ReplayWindow } from './replay.js';
import { INIT_LEASE_MS } from './constants.js';
import {
  COOKIE_LATENCY_MS,
  COOKIE_REPLY_LEN,
  COOKIE_SECRET_LIFETIME_MS,
  CookieChecker,
  RefusedInits,
  mac1Key,
  mac1Of,
  mac1Valid,
  openCookie,
  sealCookie,
  stampMacs,
} from './cookie.js';
import { ESTP_HEADER, viewOf } from '../../wire/layouts.js';
import { COOKIE_REPLY, HANDSHAKE_INIT, HANDSHAKE_RESP, INIT_PAYLOAD, RESP_PAYLOAD, noiseMessage } from '../../wire/etcp.js';
import type { EtcpDrop } from './drops.js';

export const ETCP_PROLOGUE = new TextEncoder().encode('spook etcp v1');
/** 2: handshake messages carry mac1/mac2 and may be answered by a CookieReply (§12.8). */
export const ETCP_VERSION = 2;
/** Capability bits offered at pair formation; v1 defines none. */
export const CAPABILITIES = 0;

/**
 * Sessions one peer may hold at once (§12.3): the index space (65,535 low-16-bit slots) is
 * shared by all peers, so one authorised peer handshaking in a loop must not fill it. spookd
 * keeps at most 1 current + 2 superseded + 4 unconfirmed per peer; this is the backstop.
 */
export const MAX_SESSIONS_PER_PEER = 8;

/** HandshakeInit drops decided after the responder's DH: the init's mac1 is remembered (RefusedInits). */
const DROPPED_AFTER_DH: ReadonlySet<EtcpDrop> = new Set<EtcpDrop>([
  'handshake-auth-failed',
  'unauthorized-key',
  'version-mismatch',
  'handshake-replayed',
  'peer-rate-limited',
  'peer-session-limit',
  'no-free-index',
]);

/** The handshake messages' sizes: their layouts are in wire/etcp.ts. */
export const INIT_LEN = HANDSHAKE_INIT.size;
export const RESP_LEN = HANDSHAKE_RESP.size;
export { COOKIE_REPLY_LEN };

export type { EtcpDrop };

export interface PeerConfig {
  publicKey: Uint8Array;
  name: string;
}

export interface EndpointOptions {
  staticKey: KeyPair;
  peers: PeerConfig[];
  random: (n: number) => Uint8Array;
  /**
   * The highest HandshakeInit timestamp accepted per peer before a restart (by peer name),
   * and a hook to persist each new one: without them an init captured before a restart
   * could be replayed once after it.
   */
  acceptedInits?: Map<string, number>;
  onInitAccepted?: (peer: PeerConfig, timestamp: number) => void;
  /**
   * Initiator side (§12.2.1): the lease persisted before a restart (no init sent before it had a
   * higher timestamp), and a hook that persists a new one durably, returning whether it did; called
   * before an init above the current lease leaves. Without them a restarted initiator whose clock
   * was ahead before sends timestamps its peers refuse (`handshake-replayed`) until the clock passes them.
   */
  initLease?: number;
  onInitLease?: (upTo: number) => boolean;
  /** mac1-valid HandshakeInits per second above which mac2 (a cookie) is required (§12.8). */
  cookieThreshold?: number;
  /** Under load, HandshakeInits with a valid mac2 let through to the DH per source host (sourceHost) per second. */
  perSourceLimit?: number;
  /**
   * HandshakeInits accepted per peer per second, whatever their source (§12.8): one at most every
   * 1000/perPeerLimit ms, as WireGuard's INITIATIONS_PER_SECOND. Absent: no limit (spookd sets
   * `handshakes.perPeerLimit`, default 10).
   */
  perPeerLimit?: number;
  /** See CookieOptions.hostOf: what a peer's exemption from the global DH bucket covers, and what the per-source limit counts by. */
  sourceHost?: (source: string) => string;
  /**
   * Where each peer is expected before it has handshaken here (spookd: its configured
   * endpoint): exempt from the global DH bucket from the start, so a flood right after a
   * restart does not lock honest peers out. A completed handshake replaces it.
   */
  knownSources?: { peer: string; source: string }[];
  /**
   * The Data frames' AEAD (ChaChaPoly, one context per session direction). Default node:crypto's;
   * spookd injects libcrypto's EVP (drivers/crypto/frame-aead.ts): same octets, less per frame.
   */
  aead?: AeadProvider;
}

/** An established pair's keys and identities; seals and opens Data frames. */
export class Session {
  private sendCounter = 0;
  private readonly replay = new ReplayWindow();
  private readonly sealer: AeadSealer;
  private readonly opener: AeadOpener;
  /** The Data frame header of the next seal, reused (its fields but the packet number never change). */
  private readonly header = { type: FrameType.Data, flags: 0, pairId: 0, packetNumber: 0 };

  constructor(
    readonly localIndex: number,
    readonly remoteIndex: number,
    readonly peer: PeerConfig,
    readonly initiator: boolean,
    keys: HandshakeResult,
    /** Member ids for the pair: the lexicographically lower static key is 1 (and so the sequencer). */
    readonly localId: number,
    readonly peerId: number,
    /** State-hash seed both ends derive from their static keys (pairIdentity). */
    readonly seed: number,
    readonly establishedAt: number,
    aead: AeadProvider = nodeAead,
  ) {
    this.sealer = aead.sealer(keys.send.key);
    this.opener = aead.opener(keys.recv.key);
    this.header.pairId = remoteIndex;
  }

  /** Encrypt an ESTP payload into a Data frame addressed to the peer's index. */
  seal(payload: Uint8Array): Uint8Array {
    const pn = this.sendCounter++;
    this.header.packetNumber = pn;
    // The header is authenticated: written for the final length, then the payload sealed behind it with it as AD.
    const frame = writeFrameHeader(new Uint8Array(HEADER_LEN + payload.length + TAGLEN), this.header);
    this.sealer.seal(pn, frame.subarray(0, HEADER_LEN), payload, frame, HEADER_LEN);
    return frame;
  }

  /**
   * As seal, in place: `frame` holds the payload at [HEADER_LEN, frame.length - TAGLEN), room for
   * the header in front and the tag behind. Returns the frame's packet number.
   */
  sealInPlace(frame: Uint8Array): number {
    if (frame.length < HEADER_LEN + TAGLEN) throw new RangeError(`a frame of ${frame.length} octets has no room for header and tag`);
    const pn = this.sendCounter++;
    this.header.packetNumber = pn;
    writeFrameHeader(frame, this.header);
    this.sealer.seal(pn, frame.subarray(0, HEADER_LEN), frame.subarray(HEADER_LEN, frame.length - TAGLEN), frame, HEADER_LEN);
    return pn;
  }

  /** Decrypt a Data frame already validated by decodeFrame; undefined (and why) if it is forged or replayed. */
  open(frame: Uint8Array, packetNumber: number): { payload: Uint8Array } | { drop: EtcpDrop } {
    if (!this.replay.check(packetNumber)) return { drop: 'replayed' };
    if (frame.length < HEADER_LEN + TAGLEN) return { drop: 'data-auth-failed' };
    const p = this.opener.open(packetNumber, frame.subarray(0, HEADER_LEN), frame.subarray(HEADER_LEN));
    if (!p) return { drop: 'data-auth-failed' };
    if (!this.replay.commit(packetNumber)) return { drop: 'replayed' };
    return { payload: p };
  }

  get packetsSent(): number {
    return this.sendCounter;
  }

  /** Frees the AEAD contexts (idempotent): the session is forgotten and never used again. */
  close(): void {
    this.sealer.close();
    this.opener.close();
  }
}

interface Pending {
  init: IKInitiator;
  peer: PeerConfig;
  localIndex: number;
  /** The init's mac1: the associated data of a CookieReply to it. */
  mac1: Uint8Array;
  /** A CookieReply is accepted once per HandshakeInit. */
  cookieTaken: boolean;
  /** Where the init went (a source as handleHandshake names them), when the caller said. */
  to: string | undefined;
}

const keyHex = (k: Uint8Array): string => Buffer.from(k).toString('hex');

function compareKeys(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * What both ends of a pair agree on from their static keys alone, stable across sessions
 * and restarts (persisted state hashes depend on the seed): member ids (the lower key is 1,
 * the sequencer) and the state-hash seed.
 */
export function pairIdentity(local: Uint8Array, peer: Uint8Array): { localId: number; peerId: number; seed: number } {
  const lower = compareKeys(local, peer) < 0;
  const [first, second] = lower ? [local, peer] : [peer, local];
  const b = hash('BLAKE2s', first, second, new TextEncoder().encode('spook hash seed'));
  const seed = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  return { localId: lower ? 1 : 2, peerId: lower ? 2 : 1, seed };
}

/**
 * The pair's name as the admin API shows it (`pair` of a write's Outcome): 16 hex digits of a hash of
 * both static keys, the same at both ends and across restarts. A peer rekeyed (or this host) is another
 * pair whose seqs start again at 1: `outcome` tells the two apart by it, never by a seq alone.
 */
export function pairTag(local: Uint8Array, peer: Uint8Array): string {
  const [first, second] = compareKeys(local, peer) < 0 ? [local, peer] : [peer, local];
  return Buffer.from(hash('BLAKE2s', first, second, new TextEncoder().encode('spook pair tag')).subarray(0, 8)).toString('hex');
}

export type HandshakeOutcome =
  | { kind: 'respond'; datagram: Uint8Array; session: Session }
  | { kind: 'established'; session: Session }
  /** Under load, an init without a valid mac2: answer with this CookieReply (no DH was done). */
  | { kind: 'cookie'; datagram: Uint8Array }
  /** A CookieReply to our pending init: the next init to this peer carries mac2. */
  | { kind: 'cookie-stored'; peer: PeerConfig }
  /** `peer`: the authenticated sender, when the drop came after its init was decrypted (its work can be charged to it). */
  | { kind: 'drop'; reason: EtcpDrop; detail: string; peer?: PeerConfig };

/**
 * A map by local index that also counts the indices' low 16 bits (their XDP pair-table slot),
 * so a free slot is found without collecting every index in use.
 */
class SlotMap<V> extends Map<number, V> {
  private readonly bySlot = new Map<number, number>();

  override set(index: number, v: V): this {
    if (!super.has(index)) this.bySlot.set(index & 0xffff, (this.bySlot.get(index & 0xffff) ?? 0) + 1);
    return super.set(index, v);
  }

  override delete(index: number): boolean {
    if (!super.delete(index)) return false;
    const n = this.bySlot.get(index & 0xffff)! - 1;
    if (n === 0) this.bySlot.delete(index & 0xffff);
    else this.bySlot.set(index & 0xffff, n);
    return true;
  }

  override clear(): void {
    super.clear();
    this.bySlot.clear();
  }

  holdsSlot(slot: number): boolean {
    return this.bySlot.has(slot);
  }

  /** Distinct slots in use. */
  get slots(): number {
    return this.bySlot.size;
  }
}

export class EtcpEndpoint {
  private readonly peers = new Map<string, PeerConfig>();
  private readonly pending = new SlotMap<Pending>();
  readonly sessions = new SlotMap<Session>();
  /** Highest init timestamp accepted per peer: a replayed HandshakeInit is refused (as WireGuard's TAI64N). */
  private readonly lastInitTimestamp = new Map<string, number>();
  /** When each peer's last HandshakeInit was accepted: the next waits 1000/perPeerLimit ms. */
  private readonly lastInitAcceptedAt = new Map<string, number>();
  private readonly initIntervalMs: number;
  private lastSentTimestamp: number;
  /** Every init timestamp up to this one is persisted as sent (onInitLease): a restart sends above it. */
  private initLease: number;
  private readonly cookies: CookieChecker;
  /** Cookies received per peer (by key), with when: mac2 of the next inits to it. */
  private readonly cookieFrom = new Map<string, { cookie: Uint8Array; at: number }>();
  private readonly ownMac1Key: Uint8Array;
  private readonly refused = new RefusedInits();

  constructor(private readonly o: EndpointOptions) {
    this.cookies = new CookieChecker({
      random: o.random,
      threshold: o.cookieThreshold,
      perSourceLimit: o.perSourceLimit,
      hostOf: o.sourceHost,
    });
    for (const k of o.knownSources ?? []) this.cookies.noteAuthorised(k.peer, k.source);
    this.ownMac1Key = mac1Key(o.staticKey.publicKey);
    this.initIntervalMs = o.perPeerLimit === undefined ? 0 : 1000 / o.perPeerLimit;
    this.lastSentTimestamp = this.initLease = o.initLease ?? 0;
    for (const p of o.peers) {
      this.peers.set(keyHex(p.publicKey), p);
      const ts = o.acceptedInits?.get(p.name);
      if (ts !== undefined) this.lastInitTimestamp.set(keyHex(p.publicKey), ts);
    }
  }

  /**
   * A fresh random index whose low 16 bits no live or pending session uses: the XDP pair
   * table is an array slotted by those bits (bpf/spook_xdp.c).
   */
  private newIndex(): number | undefined {
    // The maps count their slots: no set of every index per handshake (a hub with 1,000 peers, bench scale).
    if (this.sessions.slots + this.pending.slots >= 0xffff) return undefined;
    for (;;) {
      const b = this.o.random(4);
      const idx = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
      const slot = idx & 0xffff;
      if (slot !== 0 && !this.sessions.holdsSlot(slot) && !this.pending.holdsSlot(slot)) return idx;
    }
  }

  /**
   * Start pair formation with a configured peer: the HandshakeInit datagram to send.
   * `timestamp` (default `now`) is the wall clock in ms for the replay check of §12.2.1.
   */
  initiate(now: number, peerPublicKey: Uint8Array, timestamp = now): Uint8Array {
    const r = this.tryInitiate(now, peerPublicKey, timestamp);
    if ('drop' in r) throw new Error(`cannot initiate: ${r.drop}`);
    return r.datagram;
  }

  /**
   * As `initiate`, but a full index space (which other peers' handshakes can cause) is a
   * counted drop, not an exception: the caller retries later (§12.3). `to`: where the init is
   * sent (a source as handleHandshake names them); a CookieReply to it is then taken only from
   * that host (§12.8).
   */
  tryInitiate(now: number, peerPublicKey: Uint8Array, timestamp = now, to?: string): { datagram: Uint8Array } | { drop: 'no-free-index' } {
    const peer = this.peers.get(keyHex(peerPublicKey));
    if (!peer) throw new RangeError(`peer ${keyHex(peerPublicKey)} is not configured`);
    // One handshake in flight per peer: a retry supersedes the unanswered one (bounded state).
    for (const [idx, p] of this.pending) if (p.peer === peer) this.pending.delete(idx);
    const localIndex = this.newIndex();
    if (localIndex === undefined) return { drop: 'no-free-index' };
    const init = new IKInitiator({ hash: 'BLAKE2s', prologue: ETCP_PROLOGUE, staticKey: this.o.staticKey }, peer.publicKey);
    // Strictly increasing even if the clock stalls, so the responder's replay check never refuses a fresh init.
    const ts = Math.max(Math.floor(timestamp), this.lastSentTimestamp + 1);
    this.lastSentTimestamp = ts;
    // Leased ahead, so not every init costs an fsync. A failed write is the hook's to report: the init still
    // leaves (only a later restart could send below it), and the next init tries again.
    if (ts > this.initLease && this.o.onInitLease?.(ts + INIT_LEASE_MS)) this.initLease = ts + INIT_LEASE_MS;
    const msg = init.writeMessage1(
      INIT_PAYLOAD.encode({ version_min: ETCP_VERSION, version_max: ETCP_VERSION, capabilities: CAPABILITIES, timestamp: ts }),
    );
    const payload = new Uint8Array(HANDSHAKE_INIT.size); // mac1 and mac2 are stamped on the frame
    HANDSHAKE_INIT.fields.sender_index.set(viewOf(payload), localIndex);
    payload.set(msg, HANDSHAKE_INIT.fields.ephemeral.offset);
    const c = this.cookieFrom.get(keyHex(peer.publicKey));
    const fresh = c && now - c.at >= 0 && now - c.at < COOKIE_SECRET_LIFETIME_MS - COOKIE_LATENCY_MS;
    const frame = stampMacs(
      encodeFrame({ type: FrameType.HandshakeInit, flags: 0, pairId: 0, packetNumber: 0 }, payload),
      mac1Key(peer.publicKey),
      fresh ? c.cookie : undefined,
    );
    this.pending.set(localIndex, { init, peer, localIndex, mac1: mac1Of(frame).slice(), cookieTaken: false, to });
    return { datagram: frame };
  }

  /**
   * A handshake frame (the whole datagram, already validated by decodeFrame) from `source`, an
   * opaque text naming the sender's address (only this endpoint's cookies are bound to it):
   * answer it, complete it, or drop it with a reason.
   */
  handleHandshake(now: number, datagram: Uint8Array, source: string): HandshakeOutcome {
    if (datagram.length < HEADER_LEN) return { kind: 'drop', reason: 'handshake-malformed', detail: `${datagram.length} bytes` };
    const h = viewOf(datagram);
    const type = ESTP_HEADER.fields.type.get(h);
    const pairId = ESTP_HEADER.fields.pair_id.get(h);
    const payload = datagram.subarray(HEADER_LEN);
    if (type === FrameType.HandshakeInit) return this.onInit(now, datagram, payload, source);
    if (type === FrameType.HandshakeResp) return this.onResp(now, datagram, pairId, payload, source);
    if (type === FrameType.CookieReply) return this.onCookie(now, pairId, payload, source);
    return { kind: 'drop', reason: 'handshake-malformed', detail: `frame type ${type} is not a handshake` };
  }

  private onInit(now: number, frame: Uint8Array, payload: Uint8Array, source: string): HandshakeOutcome {
    const r = this.onInitInner(now, frame, payload, source);
    // Refused after its DH (unauthorised key, Noise failure, replayed timestamp, ...): a replay of it costs no DH again.
    if (r.kind === 'drop' && DROPPED_AFTER_DH.has(r.reason)) this.refused.add(mac1Of(frame));
    return r;
  }

  private onInitInner(now: number, frame: Uint8Array, payload: Uint8Array, source: string): HandshakeOutcome {
    if (payload.length !== INIT_LEN)
      return { kind: 'drop', reason: 'handshake-malformed', detail: `HandshakeInit payload is ${payload.length} bytes, not ${INIT_LEN}` };
    // Before any DH: mac1 proves the sender knows our static key; under load, mac2 proves it receives at its address.
    if (!mac1Valid(frame, this.ownMac1Key)) return { kind: 'drop', reason: 'bad-mac1', detail: 'HandshakeInit mac1 does not verify' };
    const senderIndex = HANDSHAKE_INIT.fields.sender_index.get(viewOf(payload));
    const underLoad = this.cookies.noteInit(now);
    // A replay of an init already refused after its DH: no DH, and under load no CookieReply either.
    if (this.refused.has(mac1Of(frame)))
      return { kind: 'drop', reason: 'refused-replay', detail: 'replay of a HandshakeInit already refused' };
    if (underLoad) {
      if (!this.cookies.mac2Valid(now, frame, source))
        return { kind: 'cookie', datagram: this.cookieReply(now, senderIndex, frame, source) };
      const admit = this.cookies.admitSource(now, source);
      if (admit === 'source')
        return {
          kind: 'drop',
          reason: 'source-rate-limited',
          detail: `more than ${this.cookies.perSourceLimit} handshakes/s from ${source} under load`,
        };
      if (admit === 'global') return { kind: 'drop', reason: 'dh-rate-limited', detail: 'the handshake DH budget under load is spent' };
    }
    const resp = new IKResponder({ hash: 'BLAKE2s', prologue: ETCP_PROLOGUE, staticKey: this.o.staticKey });
    let m1;
    try {
      m1 = resp.readMessage1(noiseMessage(HANDSHAKE_INIT, payload));
    } catch (e) {
      if (e instanceof NoiseError || e instanceof Error) return { kind: 'drop', reason: 'handshake-auth-failed', detail: e.message };
      throw e;
    }
    const peer = this.peers.get(keyHex(m1.remoteStatic));
    if (!peer)
      return {
        kind: 'drop',
        reason: 'unauthorized-key',
        // Base64, as keys are written in the configuration (an operator greps for it there).
        detail: `static key ${Buffer.from(m1.remoteStatic).toString('base64')} is not an authorised peer`,
      };
    const d = viewOf(m1.payload);
    const vmin = INIT_PAYLOAD.fields.version_min.get(d);
    const vmax = INIT_PAYLOAD.fields.version_max.get(d);
    const ts = INIT_PAYLOAD.fields.timestamp.getNumber(d);
    if (ETCP_VERSION < vmin || ETCP_VERSION > vmax) {
      return {
        kind: 'drop',
        reason: 'version-mismatch',
        detail: `peer ${peer.name} speaks versions ${vmin}..${vmax}, we speak ${ETCP_VERSION}`,
        peer,
      };
    }
    // Milliseconds: no honest clock reaches 2^53 (285,000 years). Above it a number is inexact, so a
    // replay could pass or every later init be refused, and spookd could not restore the value it saved.
    if (!Number.isSafeInteger(ts)) {
      this.refused.add(mac1Of(frame)); // refused after the DH: a replay of it costs none
      return { kind: 'drop', reason: 'handshake-malformed', detail: `peer ${peer.name}: init timestamp above 2^53 - 1`, peer };
    }
    const key = keyHex(peer.publicKey);
    const last = this.lastInitTimestamp.get(key) ?? -1;
    if (ts <= last)
      return { kind: 'drop', reason: 'handshake-replayed', detail: `peer ${peer.name}: init timestamp ${ts} not after ${last}`, peer };
    // An authorised key flooding fresh inits (from any number of sources) gets one through per interval:
    // the rest cost the two DHs above, not the three of the response, a session and a timestamp write.
    const acceptedAt = this.lastInitAcceptedAt.get(key);
    if (acceptedAt !== undefined && now >= acceptedAt && now - acceptedAt < this.initIntervalMs) {
      return {
        kind: 'drop',
        reason: 'peer-rate-limited',
        detail: `peer ${peer.name}: more than one HandshakeInit per ${this.initIntervalMs} ms`,
        peer,
      };
    }
    this.lastInitAcceptedAt.set(key, now);
    this.lastInitTimestamp.set(key, ts);
    if (this.sessionsOf(peer) >= MAX_SESSIONS_PER_PEER)
      return { kind: 'drop', reason: 'peer-session-limit', detail: `peer ${peer.name} holds ${MAX_SESSIONS_PER_PEER} sessions`, peer };
    const localIndex = this.newIndex();
    if (localIndex === undefined) return { kind: 'drop', reason: 'no-free-index', detail: '65535 sessions and handshakes live' };
    this.o.onInitAccepted?.(peer, ts);
    const { message, result } = resp.writeMessage2(
      RESP_PAYLOAD.encode({ version: ETCP_VERSION, capabilities: CAPABILITIES & INIT_PAYLOAD.fields.capabilities.get(d) }),
    );
    const out = new Uint8Array(HANDSHAKE_RESP.size);
    const od = viewOf(out);
    HANDSHAKE_RESP.fields.sender_index.set(od, localIndex);
    HANDSHAKE_RESP.fields.receiver_index.set(od, senderIndex);
    out.set(message, HANDSHAKE_RESP.fields.ephemeral.offset);
    const session = this.establish(now, localIndex, senderIndex, peer, false, result);
    this.cookies.noteAuthorised(peer.name, source);
    // mac2 of a HandshakeResp is always zero in v2 (no cookie is ever demanded of a responder).
    const datagram = stampMacs(
      encodeFrame({ type: FrameType.HandshakeResp, flags: 0, pairId: senderIndex, packetNumber: 0 }, out),
      mac1Key(peer.publicKey),
      undefined,
    );
    return { kind: 'respond', datagram, session };
  }

  /** The CookieReply to a HandshakeInit: its sender's index, a random nonce, the sealed cookie. */
  private cookieReply(now: number, receiverIndex: number, init: Uint8Array, source: string): Uint8Array {
    const nonce = this.o.random(COOKIE_REPLY.fields.nonce.size);
    const sealed = sealCookie(this.o.staticKey.publicKey, nonce, this.cookies.cookie(now, source), mac1Of(init));
    const out = COOKIE_REPLY.encode({ receiver_index: receiverIndex, nonce, cookie_sealed: sealed });
    return encodeFrame({ type: FrameType.CookieReply, flags: 0, pairId: receiverIndex, packetNumber: 0 }, out);
  }

  private onCookie(now: number, pairId: number, payload: Uint8Array, source: string): HandshakeOutcome {
    if (payload.length !== COOKIE_REPLY_LEN)
      return {
        kind: 'drop',
        reason: 'handshake-malformed',
        detail: `CookieReply payload is ${payload.length} bytes, not ${COOKIE_REPLY_LEN}`,
      };
    const c = viewOf(payload);
    const receiverIndex = COOKIE_REPLY.fields.receiver_index.get(c);
    const p = this.pending.get(receiverIndex);
    if (!p || receiverIndex !== pairId || p.cookieTaken)
      return { kind: 'drop', reason: 'unknown-index', detail: `no handshake awaiting a cookie with index ${receiverIndex}` };
    // Whoever sees the init can seal a cookie that opens (its key is the responder's public key, its
    // AD the init's mac1), and one is taken per init: from elsewhere than the responder's host, an
    // observer's reply beat the genuine one to every init and kept the pair from forming under load.
    const hostOf = this.o.sourceHost ?? ((x: string): string => x);
    if (p.to !== undefined && hostOf(source) !== hostOf(p.to))
      return {
        kind: 'drop',
        reason: 'cookie-auth-failed',
        detail: `CookieReply for index ${receiverIndex} from ${source}, not the init's host`,
      };
    const cookie = openCookie(p.peer.publicKey, COOKIE_REPLY.fields.nonce.get(c), COOKIE_REPLY.fields.cookie_sealed.get(c), p.mac1);
    if (!cookie)
      return { kind: 'drop', reason: 'cookie-auth-failed', detail: `CookieReply for index ${receiverIndex} does not authenticate` };
    p.cookieTaken = true;
    this.cookieFrom.set(keyHex(p.peer.publicKey), { cookie, at: now });
    return { kind: 'cookie-stored', peer: p.peer };
  }

  /** Whether the responder side is under load now (mac2 required), for metrics. */
  underLoad(now: number): boolean {
    return this.cookies.underLoad(now);
  }

  private onResp(now: number, frame: Uint8Array, pairId: number, payload: Uint8Array, source: string): HandshakeOutcome {
    if (payload.length !== RESP_LEN)
      return { kind: 'drop', reason: 'handshake-malformed', detail: `HandshakeResp payload is ${payload.length} bytes, not ${RESP_LEN}` };
    if (!mac1Valid(frame, this.ownMac1Key)) return { kind: 'drop', reason: 'bad-mac1', detail: 'HandshakeResp mac1 does not verify' };
    const d = viewOf(payload);
    const senderIndex = HANDSHAKE_RESP.fields.sender_index.get(d);
    const receiverIndex = HANDSHAKE_RESP.fields.receiver_index.get(d);
    const p = this.pending.get(receiverIndex);
    if (!p || receiverIndex !== pairId)
      return { kind: 'drop', reason: 'unknown-index', detail: `no handshake in progress with index ${receiverIndex}` };
    // Nothing proves the response genuine before its two DHs: those of responses that fail are bounded (§12.2.2).
    const admit = this.cookies.admitResponse(now, source, p.peer.name);
    if (admit === 'source')
      return {
        kind: 'drop',
        reason: 'source-rate-limited',
        detail: `more than ${this.cookies.perSourceLimit} failed handshakes/s from ${source}`,
      };
    if (admit === 'global') return { kind: 'drop', reason: 'dh-rate-limited', detail: 'the handshake DH budget is spent' };
    let m2;
    try {
      // Read on a copy of the handshake state: a forged response leaves it as it was, for the genuine one.
      m2 = p.init.readMessage2(noiseMessage(HANDSHAKE_RESP, payload));
    } catch (e) {
      this.cookies.responseFailed(now, source, p.peer.name);
      return { kind: 'drop', reason: 'handshake-auth-failed', detail: (e as Error).message };
    }
    const chosen = RESP_PAYLOAD.fields.version.get(viewOf(m2.payload));
    if (chosen !== ETCP_VERSION) {
      // The responder authenticated and chose a version we do not speak: the handshake is over.
      this.pending.delete(receiverIndex);
      return { kind: 'drop', reason: 'version-mismatch', detail: `responder chose version ${chosen}` };
    }
    this.pending.delete(receiverIndex);
    this.cookies.noteAuthorised(p.peer.name, source);
    return { kind: 'established', session: this.establish(now, receiverIndex, senderIndex, p.peer, true, m2.result) };
  }

  private sessionsOf(peer: PeerConfig): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.peer === peer) n++;
    return n;
  }

  private establish(
    now: number,
    localIndex: number,
    remoteIndex: number,
    peer: PeerConfig,
    initiator: boolean,
    keys: HandshakeResult,
  ): Session {
    const ids = pairIdentity(this.o.staticKey.publicKey, peer.publicKey);
    const s = new Session(localIndex, remoteIndex, peer, initiator, keys, ids.localId, ids.peerId, ids.seed, now, this.o.aead);
    this.sessions.set(localIndex, s);
    return s;
  }

  /** Open a Data frame whose pair id is one of our indices. */
  openData(
    frame: Uint8Array,
    pairId: number,
    packetNumber: number,
  ): { session: Session; payload: Uint8Array } | { drop: EtcpDrop; detail: string } {
    const s = this.sessions.get(pairId);
    if (!s) return { drop: 'unknown-index', detail: `no session with index ${pairId}` };
    const r = s.open(frame, packetNumber);
    if ('drop' in r) return { drop: r.drop, detail: `session ${pairId} (${s.peer.name})` };
    return { session: s, payload: r.payload };
  }

  /**
   * Authorise one more peer (a reload): its handshakes are answered, and ours to it can start, from now on.
   * `acceptedInit`: the last init timestamp accepted from it before, as `acceptedInits` at construction;
   * `knownSource`: where it is expected (its configured endpoint), as `knownSources` at construction.
   */
  addPeer(p: PeerConfig, acceptedInit?: number, knownSource?: string): void {
    const k = keyHex(p.publicKey);
    if (this.peers.has(k)) throw new RangeError(`peer ${p.name}: its key is already authorised`);
    this.peers.set(k, p);
    if (acceptedInit !== undefined) this.lastInitTimestamp.set(k, Math.max(acceptedInit, this.lastInitTimestamp.get(k) ?? -1));
    // Exempt from the global DH bucket at once, as a peer configured at construction: else a flood
    // under way when a reload adds (or rekeys) it keeps its first handshake out (§12.8).
    if (knownSource !== undefined) this.cookies.noteAuthorised(p.name, knownSource);
  }

  /**
   * The peer `name` is configured at `source` now (a reload moved it): that source is exempt from the
   * global DH bucket in place of its last one, as a configured endpoint is at construction
   * (`knownSources`); its next completed handshake replaces it as usual.
   */
  expectPeerAt(name: string, source: string): void {
    if ([...this.peers.values()].some((p) => p.name === name)) this.cookies.noteAuthorised(name, source);
  }

  /**
   * Withdraw a peer's authorisation (a reload): its pending handshakes and its sessions go (their
   * indices are returned, for the XDP pair table), and from now on an init from its key is refused
   * as any unauthorised key's.
   */
  removePeer(publicKey: Uint8Array): number[] {
    const k = keyHex(publicKey);
    const p = this.peers.get(k);
    if (!p) return [];
    this.peers.delete(k); // its last init timestamp stays: an old init of a key authorised again is still a replay
    this.lastInitAcceptedAt.delete(k);
    this.cookieFrom.delete(k);
    this.cookies.forgetAuthorised(p.name); // its last address is exempt from the global DH bucket no more
    for (const [idx, h] of this.pending) if (h.peer === p) this.pending.delete(idx);
    const closed: number[] = [];
    for (const [idx, s] of this.sessions)
      if (s.peer === p) {
        this.close(idx);
        closed.push(idx);
      }
    return closed;
  }

  /** Forget a session (teardown, or replaced by a newer one with the same peer). */
  close(localIndex: number): void {
    this.sessions.get(localIndex)?.close();
    this.sessions.delete(localIndex);
  }
}

/** Largest ESTP payload a sealed Data frame can carry. */
export const MAX_SEALED_PAYLOAD = MAX_FRAME_LEN - HEADER_LEN - TAGLEN;

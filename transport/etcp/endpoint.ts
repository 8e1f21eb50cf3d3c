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
import { FrameType, HEADER_LEN, MAX_FRAME_LEN } from '../wire/constants.js';
import { encodeFrame, type FrameHeader } from '../wire/header.js';
import { aeadDecrypt, aeadEncrypt, hash, TAGLEN, type KeyPair } from './crypto.js';
import { IKInitiator, IKResponder, NoiseError, type HandshakeResult } from './noise.js';
import { ReplayWindow } from './replay.js';

export const ETCP_PROLOGUE = new TextEncoder().encode('spook etcp v1');
export const ETCP_VERSION = 1;
/** Capability bits offered at pair formation; v1 defines none. */
export const CAPABILITIES = 0;

const INIT_PAYLOAD_LEN = 1 + 1 + 4 + 8; // version min, version max, capabilities, timestamp
const RESP_PAYLOAD_LEN = 1 + 4; // chosen version, capabilities
export const INIT_LEN = 4 + 32 + 32 + 16 + INIT_PAYLOAD_LEN + 16;
export const RESP_LEN = 4 + 4 + 32 + RESP_PAYLOAD_LEN + 16;

export type EtcpDrop =
  | 'unauthorized-key'
  | 'handshake-auth-failed'
  | 'handshake-replayed'
  | 'handshake-malformed'
  | 'version-mismatch'
  | 'unknown-index'
  | 'data-auth-failed'
  | 'replayed';

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
}

/** An established pair's keys and identities; seals and opens Data frames. */
export class Session {
  private sendCounter = 0;
  private readonly replay = new ReplayWindow();
  private readonly sendKey: Uint8Array;
  private readonly recvKey: Uint8Array;

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
  ) {
    this.sendKey = keys.send.key;
    this.recvKey = keys.recv.key;
  }

  /** Encrypt an ESTP payload into a Data frame addressed to the peer's index. */
  seal(payload: Uint8Array): Uint8Array {
    const pn = this.sendCounter++;
    const header: Omit<FrameHeader, 'payloadLen'> = { type: FrameType.Data, flags: 0, pairId: this.remoteIndex, packetNumber: pn };
    // The header is authenticated: build it for the final length, then encrypt with it as AD.
    const probe = encodeFrame(header, new Uint8Array(payload.length + TAGLEN));
    const ad = probe.subarray(0, HEADER_LEN);
    probe.set(aeadEncrypt(this.sendKey, pn, ad, payload), HEADER_LEN);
    return probe;
  }

  /** Decrypt a Data frame already validated by decodeFrame; undefined (and why) if it is forged or replayed. */
  open(frame: Uint8Array, packetNumber: number): { payload: Uint8Array } | { drop: EtcpDrop } {
    if (!this.replay.check(packetNumber)) return { drop: 'replayed' };
    const p = aeadDecrypt(this.recvKey, packetNumber, frame.subarray(0, HEADER_LEN), frame.subarray(HEADER_LEN));
    if (!p) return { drop: 'data-auth-failed' };
    if (!this.replay.commit(packetNumber)) return { drop: 'replayed' };
    return { payload: p };
  }

  get packetsSent(): number {
    return this.sendCounter;
  }
}

interface Pending {
  init: IKInitiator;
  peer: PeerConfig;
  localIndex: number;
  sentAt: number;
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

export type HandshakeOutcome =
  | { kind: 'respond'; datagram: Uint8Array; session: Session }
  | { kind: 'established'; session: Session }
  | { kind: 'drop'; reason: EtcpDrop; detail: string };

export class EtcpEndpoint {
  private readonly peers = new Map<string, PeerConfig>();
  private readonly pending = new Map<number, Pending>();
  readonly sessions = new Map<number, Session>();
  /** Highest init timestamp accepted per peer: a replayed HandshakeInit is refused (as WireGuard's TAI64N). */
  private readonly lastInitTimestamp = new Map<string, number>();
  private lastSentTimestamp = 0;

  constructor(private readonly o: EndpointOptions) {
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
  private newIndex(): number {
    const used = new Set<number>();
    for (const i of this.sessions.keys()) used.add(i & 0xffff);
    for (const i of this.pending.keys()) used.add(i & 0xffff);
    if (used.size >= 0xffff) throw new Error('no free session index (65535 sessions live)');
    for (;;) {
      const b = this.o.random(4);
      const idx = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
      if ((idx & 0xffff) !== 0 && !used.has(idx & 0xffff)) return idx;
    }
  }

  /** Start pair formation with a configured peer: the HandshakeInit datagram to send. */
  initiate(now: number, peerPublicKey: Uint8Array): Uint8Array {
    const peer = this.peers.get(keyHex(peerPublicKey));
    if (!peer) throw new RangeError(`peer ${keyHex(peerPublicKey)} is not configured`);
    // One handshake in flight per peer: a retry supersedes the unanswered one (bounded state).
    for (const [idx, p] of this.pending) if (p.peer === peer) this.pending.delete(idx);
    const localIndex = this.newIndex();
    const init = new IKInitiator({ hash: 'BLAKE2s', prologue: ETCP_PROLOGUE, staticKey: this.o.staticKey }, peer.publicKey);
    // Strictly increasing even if the clock stalls, so the responder's replay check never refuses a fresh init.
    const ts = Math.max(Math.floor(now), this.lastSentTimestamp + 1);
    this.lastSentTimestamp = ts;
    const p = new DataView(new ArrayBuffer(INIT_PAYLOAD_LEN));
    p.setUint8(0, ETCP_VERSION);
    p.setUint8(1, ETCP_VERSION);
    p.setUint32(2, CAPABILITIES);
    p.setUint32(6, Math.floor(ts / 2 ** 32));
    p.setUint32(10, ts >>> 0);
    const msg = init.writeMessage1(new Uint8Array(p.buffer));
    const payload = new Uint8Array(4 + msg.length);
    new DataView(payload.buffer).setUint32(0, localIndex);
    payload.set(msg, 4);
    this.pending.set(localIndex, { init, peer, localIndex, sentAt: now });
    return encodeFrame({ type: FrameType.HandshakeInit, flags: 0, pairId: 0, packetNumber: 0 }, payload);
  }

  /** A handshake frame (already validated by decodeFrame): answer it, complete it, or drop it with a reason. */
  handleHandshake(now: number, type: FrameType, pairId: number, payload: Uint8Array): HandshakeOutcome {
    if (type === FrameType.HandshakeInit) return this.onInit(now, payload);
    if (type === FrameType.HandshakeResp) return this.onResp(now, pairId, payload);
    return { kind: 'drop', reason: 'handshake-malformed', detail: `frame type ${type} is not handled in v1` };
  }

  private onInit(now: number, payload: Uint8Array): HandshakeOutcome {
    if (payload.length !== INIT_LEN) return { kind: 'drop', reason: 'handshake-malformed', detail: `HandshakeInit payload is ${payload.length} bytes, not ${INIT_LEN}` };
    const senderIndex = new DataView(payload.buffer, payload.byteOffset).getUint32(0);
    const resp = new IKResponder({ hash: 'BLAKE2s', prologue: ETCP_PROLOGUE, staticKey: this.o.staticKey });
    let m1;
    try {
      m1 = resp.readMessage1(payload.subarray(4));
    } catch (e) {
      if (e instanceof NoiseError || e instanceof Error) return { kind: 'drop', reason: 'handshake-auth-failed', detail: e.message };
      throw e;
    }
    const peer = this.peers.get(keyHex(m1.remoteStatic));
    if (!peer) return { kind: 'drop', reason: 'unauthorized-key', detail: `static key ${keyHex(m1.remoteStatic)} is not an authorised peer` };
    const d = new DataView(m1.payload.buffer, m1.payload.byteOffset, m1.payload.byteLength);
    const vmin = d.getUint8(0);
    const vmax = d.getUint8(1);
    const ts = d.getUint32(6) * 2 ** 32 + d.getUint32(10);
    if (ETCP_VERSION < vmin || ETCP_VERSION > vmax) {
      return { kind: 'drop', reason: 'version-mismatch', detail: `peer ${peer.name} speaks versions ${vmin}..${vmax}, we speak ${ETCP_VERSION}` };
    }
    const last = this.lastInitTimestamp.get(keyHex(peer.publicKey)) ?? -1;
    if (ts <= last) return { kind: 'drop', reason: 'handshake-replayed', detail: `peer ${peer.name}: init timestamp ${ts} not after ${last}` };
    this.lastInitTimestamp.set(keyHex(peer.publicKey), ts);
    this.o.onInitAccepted?.(peer, ts);
    const localIndex = this.newIndex();
    const rp = new DataView(new ArrayBuffer(RESP_PAYLOAD_LEN));
    rp.setUint8(0, ETCP_VERSION);
    rp.setUint32(1, CAPABILITIES & d.getUint32(2));
    const { message, result } = resp.writeMessage2(new Uint8Array(rp.buffer));
    const out = new Uint8Array(8 + message.length);
    const od = new DataView(out.buffer);
    od.setUint32(0, localIndex);
    od.setUint32(4, senderIndex);
    out.set(message, 8);
    const session = this.establish(now, localIndex, senderIndex, peer, false, result);
    return { kind: 'respond', datagram: encodeFrame({ type: FrameType.HandshakeResp, flags: 0, pairId: senderIndex, packetNumber: 0 }, out), session };
  }

  private onResp(now: number, pairId: number, payload: Uint8Array): HandshakeOutcome {
    if (payload.length !== RESP_LEN) return { kind: 'drop', reason: 'handshake-malformed', detail: `HandshakeResp payload is ${payload.length} bytes, not ${RESP_LEN}` };
    const d = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    const senderIndex = d.getUint32(0);
    const receiverIndex = d.getUint32(4);
    const p = this.pending.get(receiverIndex);
    if (!p || receiverIndex !== pairId) return { kind: 'drop', reason: 'unknown-index', detail: `no handshake in progress with index ${receiverIndex}` };
    let m2;
    try {
      m2 = p.init.readMessage2(payload.subarray(8));
    } catch (e) {
      return { kind: 'drop', reason: 'handshake-auth-failed', detail: (e as Error).message };
    }
    if (m2.payload[0] !== ETCP_VERSION) return { kind: 'drop', reason: 'version-mismatch', detail: `responder chose version ${m2.payload[0]}` };
    this.pending.delete(receiverIndex);
    return { kind: 'established', session: this.establish(now, receiverIndex, senderIndex, p.peer, true, m2.result) };
  }

  private establish(now: number, localIndex: number, remoteIndex: number, peer: PeerConfig, initiator: boolean, keys: HandshakeResult): Session {
    const ids = pairIdentity(this.o.staticKey.publicKey, peer.publicKey);
    const s = new Session(localIndex, remoteIndex, peer, initiator, keys, ids.localId, ids.peerId, ids.seed, now);
    this.sessions.set(localIndex, s);
    return s;
  }

  /** Open a Data frame whose pair id is one of our indices. */
  openData(frame: Uint8Array, pairId: number, packetNumber: number): { session: Session; payload: Uint8Array } | { drop: EtcpDrop; detail: string } {
    const s = this.sessions.get(pairId);
    if (!s) return { drop: 'unknown-index', detail: `no session with index ${pairId}` };
    const r = s.open(frame, packetNumber);
    if ('drop' in r) return { drop: r.drop, detail: `session ${pairId} (${s.peer.name})` };
    return { session: s, payload: r.payload };
  }

  /** Forget a session (teardown, or replaced by a newer one with the same peer). */
  close(localIndex: number): void {
    this.sessions.delete(localIndex);
  }
}

/** Largest ESTP payload a sealed Data frame can carry. */
export const MAX_SEALED_PAYLOAD = MAX_FRAME_LEN - HEADER_LEN - TAGLEN;

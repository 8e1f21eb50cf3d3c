/**
 * The carrier: one TCP connection between two spookd that carries the WRAP records of every
 * wrapped connection between them (PROTOCOL §16.1). TCP, not the pair's UDP session, because
 * bulk streams need the kernel's congestion control and large segments; what TCP cannot give
 * (surviving its own loss) the WRAP layer adds: a lost carrier is redialled and every stream
 * resumes at the offsets the peer reports.
 *
 * Authentication and encryption: a Noise IK handshake with the daemons' static keys (the same
 * pattern and keys as ETCP, its own prologue), then each record is sealed with the transport
 * CipherState (ChaCha20-Poly1305, implicit counter nonces: TCP delivers in order). Framing:
 * u32 length, then the sealed record. The length is not secret; a tampered one fails the AEAD.
 */
import { connect, type Socket } from 'node:net';
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import type { KeyPair } from '../transport/etcp/crypto.js';
import { nonce12, TAGLEN } from '../transport/etcp/crypto.js';
import { IKInitiator, IKResponder, type CipherState } from '../transport/etcp/noise.js';
import { MAX_DATA } from './codec.js';

export const CARRIER_PROLOGUE = new TextEncoder().encode('spook wrap carrier v1');
const HASH = 'BLAKE2s' as const;
/** Largest sealed record on the wire (a full DATA record plus tag). */
export const MAX_SEALED_RECORD = 13 + MAX_DATA + TAGLEN;
const HANDSHAKE_TIMEOUT_MS = 5_000;
const MAX_HANDSHAKE = 256;
/**
 * Keep writing records until this much is queued on the carrier socket. Node's default
 * high-water mark (16 KiB) is smaller than one DATA record and would stall the pipeline at
 * one record per event-loop turn.
 */
const CARRIER_HIGH_WATER = 2 * 1024 * 1024;
const EMPTY = new Uint8Array(0);

export class CarrierError extends Error {
  override name = 'CarrierError';
}

/** Length-prefixed frames out of a TCP byte stream, bounded by `max`; a frame is copied at most once. */
class Deframer {
  private chunks: Buffer[] = [];
  private have = 0;
  private need = -1; // length of the frame being assembled, -1 while its prefix is incomplete
  constructor(private readonly max: number) {}

  push(chunk: Buffer, out: (frame: Buffer) => void): void {
    this.chunks.push(chunk);
    this.have += chunk.length;
    for (;;) {
      if (this.need < 0) {
        if (this.have < 4) return;
        const head = this.take(4);
        this.need = head.readUInt32BE(0);
        if (this.need > this.max) throw new CarrierError(`carrier frame of ${this.need} bytes, at most ${this.max}`);
        if (this.need === 0) throw new CarrierError('empty carrier frame');
      }
      if (this.have < this.need) return;
      const f = this.take(this.need);
      this.need = -1;
      out(f);
    }
  }

  /** The next n bytes: a view when they sit in one chunk, else one copy. */
  private take(n: number): Buffer {
    this.have -= n;
    const first = this.chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

function frame(payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + payload.length);
  b.writeUInt32BE(payload.length, 0);
  b.set(payload, 4);
  return b;
}

/** An established, authenticated carrier. */
export class Carrier {
  private readonly deframer = new Deframer(MAX_SEALED_RECORD);
  onRecord: (rec: Uint8Array) => void = () => {};
  onClose: (why: string) => void = () => {};
  onDrain: () => void = () => {};
  private closed = false;
  /** Bytes queued but not yet taken by the kernel. */
  get queued(): number {
    return this.socket.writableLength;
  }
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly socket: Socket,
    readonly peerKey: Uint8Array,
    tx: CipherState,
    rx: CipherState,
    private readonly pending: Buffer[],
  ) {
    socket.setNoDelay(true);
    // KeyObjects once: a raw key makes every createCipheriv import it again (measurably slower).
    this.txKey = createSecretKey(tx.key);
    this.rxKey = createSecretKey(rx.key);
  }

  private readonly txKey: KeyObject;
  private readonly rxKey: KeyObject;
  private txN = 0;
  private rxN = 0;

  /** Authenticate and decrypt one sealed record; throws when it does not authenticate. */
  private open(sealed: Buffer): Buffer {
    if (sealed.length < TAGLEN) throw new CarrierError(`carrier record of ${sealed.length} bytes, shorter than its tag`);
    const d = createDecipheriv('chacha20-poly1305', this.rxKey, nonce12(this.rxN), { authTagLength: TAGLEN });
    d.setAAD(EMPTY, { plaintextLength: sealed.length - TAGLEN });
    d.setAuthTag(sealed.subarray(sealed.length - TAGLEN));
    const body = d.update(sealed.subarray(0, sealed.length - TAGLEN));
    try {
      d.final();
    } catch {
      throw new CarrierError('carrier record failed authentication');
    }
    this.rxN++;
    return body;
  }

  /** Attach the handlers and start reading (the socket stays paused until then: nothing is lost). */
  start(h: { onRecord: (rec: Uint8Array) => void; onClose: (why: string) => void; onDrain: () => void }): void {
    this.onRecord = h.onRecord;
    this.onClose = h.onClose;
    this.onDrain = h.onDrain;
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.input(chunk));
    s.on('drain', () => this.onDrain());
    s.on('error', (e) => this.close(e.message));
    s.on('close', () => this.close('carrier connection closed'));
    for (const c of this.pending.splice(0)) this.input(c);
    s.resume();
  }

  /**
   * Seal and write one record given as parts (a DATA header and its payload): each part is
   * encrypted straight into the socket's queue, with no concatenation. Same AEAD and nonces
   * as the Noise CipherState (ChaCha20-Poly1305, counter nonce, empty associated data).
   */
  send(parts: Uint8Array[]): void {
    if (this.closed) return;
    let len = TAGLEN;
    for (const p of parts) len += p.length;
    const c = createCipheriv('chacha20-poly1305', this.txKey, nonce12(this.txN++), { authTagLength: TAGLEN });
    c.setAAD(EMPTY, { plaintextLength: len - TAGLEN });
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(len, 0);
    const s = this.socket;
    s.cork();
    s.write(head);
    for (const p of parts) s.write(c.update(p));
    c.final();
    s.write(c.getAuthTag());
    s.uncork();
    this.bytesOut += 4 + len;
  }

  get writable(): boolean {
    return !this.closed && this.socket.writableLength < CARRIER_HIGH_WATER;
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClose(why);
  }

  private input(chunk: Buffer): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    try {
      this.deframer.push(chunk, (sealed) => {
        if (this.closed) return;
        this.onRecord(this.open(sealed));
      });
    } catch (e) {
      this.close(`carrier input refused: ${(e as Error).message}`);
    }
  }
}

/** Read exactly one length-prefixed handshake message (and keep what follows it). */
function readHandshake(socket: Socket): Promise<{ msg: Uint8Array; rest: Buffer[] }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new CarrierError('carrier handshake timed out')), HANDSHAKE_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (len > MAX_HANDSHAKE) return done(new CarrierError(`carrier handshake message of ${len} bytes, at most ${MAX_HANDSHAKE}`));
      if (buf.length < 4 + len) return;
      done(undefined, { msg: new Uint8Array(buf.subarray(4, 4 + len)), rest: buf.length > 4 + len ? [buf.subarray(4 + len)] : [] });
    };
    const onEnd = (): void => done(new CarrierError('carrier closed during the handshake'));
    const onError = (e: Error): void => done(e);
    const done = (e?: Error, v?: { msg: Uint8Array; rest: Buffer[] }): void => {
      clearTimeout(timer);
      socket.pause(); // until Carrier.start(): no record may arrive with no handler
      socket.off('data', onData);
      socket.off('close', onEnd);
      socket.off('error', onError);
      if (e) reject(e);
      else resolve(v!);
    };
    socket.on('data', onData);
    socket.on('close', onEnd);
    socket.on('error', onError);
  });
}

/** Dial `host:port` and run the initiator's side of the handshake. */
export async function dialCarrier(host: string, port: number, staticKey: KeyPair, peerKey: Uint8Array): Promise<Carrier> {
  const socket = connect({ host, port, noDelay: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new CarrierError(`carrier dial to ${host}:${port} timed out`)), HANDSHAKE_TIMEOUT_MS);
      socket.once('connect', () => (clearTimeout(t), resolve()));
      socket.once('error', (e) => (clearTimeout(t), reject(e)));
    });
    const ik = new IKInitiator({ hash: HASH, prologue: CARRIER_PROLOGUE, staticKey }, peerKey);
    socket.write(frame(ik.writeMessage1(EMPTY)));
    const { msg, rest } = await readHandshake(socket);
    const { result } = ik.readMessage2(msg);
    return new Carrier(socket, peerKey, result.send, result.recv, rest);
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

/**
 * Run the responder's side on an accepted socket. `authorise` maps the initiator's static key
 * to a configured peer (undefined refuses it before anything is answered).
 */
export async function acceptCarrier<P>(socket: Socket, staticKey: KeyPair, authorise: (key: Uint8Array) => P | undefined): Promise<{ carrier: Carrier; peer: P }> {
  try {
    const { msg } = await readHandshake(socket);
    const ik = new IKResponder({ hash: HASH, prologue: CARRIER_PROLOGUE, staticKey });
    const { remoteStatic } = ik.readMessage1(msg);
    const peer = authorise(remoteStatic);
    if (peer === undefined) throw new CarrierError('carrier handshake from a key that is not a configured peer');
    const { message, result } = ik.writeMessage2(EMPTY);
    socket.write(frame(message));
    return { carrier: new Carrier(socket, remoteStatic, result.send, result.recv, []), peer };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

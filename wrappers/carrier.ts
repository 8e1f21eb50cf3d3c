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
import type { KeyPair } from '../transport/etcp/crypto.js';
import { TAGLEN } from '../transport/etcp/crypto.js';
import { IKInitiator, IKResponder, type CipherState } from '../transport/etcp/noise.js';
import { MAX_DATA } from './codec.js';

export const CARRIER_PROLOGUE = new TextEncoder().encode('spook wrap carrier v1');
const HASH = 'BLAKE2s' as const;
/** Largest sealed record on the wire (a full DATA record plus tag). */
export const MAX_SEALED_RECORD = 13 + MAX_DATA + TAGLEN;
const HANDSHAKE_TIMEOUT_MS = 5_000;
const MAX_HANDSHAKE = 256;
const EMPTY = new Uint8Array(0);

export class CarrierError extends Error {
  override name = 'CarrierError';
}

/** Length-prefixed frames out of a TCP byte stream, bounded by `max`. */
class Deframer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly max: number) {}

  push(chunk: Buffer, out: (frame: Uint8Array) => void): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    while (this.buf.length - off >= 4) {
      const len = this.buf.readUInt32BE(off);
      if (len > this.max) throw new CarrierError(`carrier frame of ${len} bytes, at most ${this.max}`);
      if (this.buf.length - off - 4 < len) break;
      out(this.buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
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
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly socket: Socket,
    readonly peerKey: Uint8Array,
    private readonly tx: CipherState,
    private readonly rx: CipherState,
    private readonly pending: Buffer[],
  ) {
    socket.setNoDelay(true);
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

  /** Seal and write one record. Returns false when the socket's buffer is full (wait for onDrain). */
  send(record: Uint8Array): boolean {
    if (this.closed) return false;
    const sealed = this.tx.encryptWithAd(EMPTY, record);
    this.bytesOut += 4 + sealed.length;
    return this.socket.write(frame(sealed));
  }

  get writable(): boolean {
    return !this.closed && !this.socket.writableNeedDrain;
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
        this.onRecord(this.rx.decryptWithAd(EMPTY, sealed));
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

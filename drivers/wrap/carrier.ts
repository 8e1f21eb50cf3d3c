/**
 * The carrier: one TCP connection between two spookd that carries the WRAP records of every
 * wrapped connection between them (PROTOCOL §16.1). TCP, not the pair's UDP session, because
 * bulk streams need the kernel's congestion control and large segments; what TCP cannot give
 * (surviving its own loss) the WRAP layer adds: a lost carrier is redialled and every stream
 * resumes at the offsets the peer reports.
 *
 * Authentication and encryption: a Noise IK handshake with the daemons' static keys (the same
 * pattern and keys as ETCP, its own prologue), then each record is sealed with the transport
 * CipherStates (implicit counter nonces: TCP delivers in order). Framing: u32 length, then the
 * sealed record. The length is not secret; a tampered one fails the AEAD.
 *
 * The transport AEAD is negotiated in the handshake payloads (§16.2): the initiator offers
 * ChaCha20-Poly1305 and, when its CPU has AES instructions, AES-256-GCM; the responder picks
 * AES-256-GCM when both have them (OpenSSL: 4.7 GB/s vs 3.5 for ChaCha20-Poly1305, 16 KiB, bench CPU), else
 * ChaCha20-Poly1305. The payloads are encrypted and authenticated by the handshake, so a
 * choice changed on the way fails it: no downgrade.
 */
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { recordOpener, recordSealer, SMALL_SEALED, type RecordOpener as RecordAead, type RecordSealer } from './aead-evp.js';
import type { KeyPair } from '../../crypto/primitives.js';
import { nonce12, TAGLEN } from '../../crypto/primitives.js';
import { IKInitiator, IKResponder, type CipherState } from '../../core/etcp/noise.js';
import { hash } from '../../crypto/primitives.js';
import { MAC_LEN, mac, macEqual } from '../../core/etcp/cookie.js';
import { MAX_DATA } from '../../wire/wrap.js';
import { pinsLittle } from '../../core/util/pinned.js';

/**
 * v3: the handshake payloads negotiate the transport AEAD (v2: always ChaCha20-Poly1305, empty
 * payloads); v2: message 1 carries mac1 (v1 had none). The prologue binds the version into the handshake.
 */
export const CARRIER_PROLOGUE = new TextEncoder().encode('spook wrap carrier v3');
/** Noise IK message 1 with its 1-octet offer: e (32), encrypted s (32 + 16), offer (1) and its tag (16). */
export const MESSAGE1_LEN = 97;

/** The carrier's transport AEADs (Noise cipher functions ChaChaPoly and AESGCM, §16.2). */
export type CarrierCipher = 'chacha20-poly1305' | 'aes-256-gcm';
/** Their bits in the offer (message 1 payload) and the choice (message 2 payload). */
const CIPHER_BITS: Record<CarrierCipher, number> = { 'chacha20-poly1305': 0x01, 'aes-256-gcm': 0x02 };

let aesInstructions: boolean | undefined;
/** Whether this CPU has AES instructions (x86 `aes` flag, arm64 `aes` feature); false when unknown. */
export function hostHasAes(): boolean {
  if (aesInstructions === undefined) {
    try {
      aesInstructions = /^(flags|Features)\s*:.*\baes\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      aesInstructions = false;
    }
  }
  return aesInstructions;
}

/** What this host offers or accepts: ChaCha20-Poly1305 always; AES-256-GCM with AES instructions. */
export function localCiphers(): CarrierCipher[] {
  return hostHasAes() ? ['aes-256-gcm', 'chacha20-poly1305'] : ['chacha20-poly1305'];
}

export interface CarrierCipherOptions {
  /** The AEADs this end offers (initiator) or accepts (responder); default localCiphers(). */
  ciphers?: CarrierCipher[];
}

const bitsOf = (cs: CarrierCipher[]): number => cs.reduce((b, c) => b | CIPHER_BITS[c], 0);

/** The responder's choice for an offer: AES-256-GCM if both have it, else ChaCha20-Poly1305 (which every initiator must offer). */
export function chooseCipher(offer: Uint8Array, local: CarrierCipher[]): CarrierCipher {
  if (offer.length !== 1) throw new CarrierError(`carrier cipher offer of ${offer.length} octets, not 1`);
  if (!(offer[0] & CIPHER_BITS['chacha20-poly1305'])) throw new CarrierError('carrier cipher offer without ChaCha20-Poly1305');
  return offer[0] & CIPHER_BITS['aes-256-gcm'] && local.includes('aes-256-gcm') ? 'aes-256-gcm' : 'chacha20-poly1305';
}

/** The initiator's reading of the responder's choice: exactly one cipher, one it offered. */
export function chosenCipher(choice: Uint8Array, offered: CarrierCipher[]): CarrierCipher {
  const c = choice.length === 1 ? offered.find((x) => CIPHER_BITS[x] === choice[0]) : undefined;
  if (!c) throw new CarrierError(`carrier cipher choice ${Buffer.from(choice).toString('hex') || '(none)'} is not one offered`);
  return c;
}

/**
 * The 96-bit nonce of record n: Noise's ChaChaPoly puts the 64-bit counter little-endian after
 * 4 zero octets, AESGCM big-endian (Noise spec §12.3, §12.4).
 */
export function carrierNonce(cipher: CarrierCipher, n: number): Buffer {
  if (cipher === 'chacha20-poly1305') return nonce12(n);
  const b = Buffer.alloc(12);
  b.writeUInt32BE(Math.floor(n / 2 ** 32), 4);
  b.writeUInt32BE(n >>> 0, 8);
  return b;
}
const LABEL_MAC1 = new TextEncoder().encode('wrapmac1');

/**
 * WireGuard's mac1 (whitepaper §5.4.4) on the carrier's message 1: MAC keyed by
 * HASH("wrapmac1" || responder's static public key) over the Noise message. The responder
 * checks it before any Diffie-Hellman, so a sender that does not know whom it dials costs
 * one MAC. Same MAC as ETCP's (HMAC-BLAKE2s, 16 octets, §12.8), its own label.
 */
export function carrierMac1(responderStatic: Uint8Array, message1: Uint8Array): Uint8Array {
  return mac(hash('BLAKE2s', LABEL_MAC1, responderStatic), message1);
}
const HASH = 'BLAKE2s' as const;
/** Largest sealed record on the wire (a full DATA record plus tag). */
export const MAX_SEALED_RECORD = 13 + MAX_DATA + TAGLEN;
export const HANDSHAKE_TIMEOUT_MS = 5_000;
const MAX_HANDSHAKE = 256;
/**
 * Keep writing records until this much is queued on the carrier socket. Node's default
 * high-water mark (16 KiB) is smaller than one DATA record and would stall the pipeline at
 * one record per event-loop turn; much more (2 MiB) keeps records small under load (one per
 * socket read), where a fuller queue lets them grow to MAX_DATA: fewer AEAD set-ups.
 */
const CARRIER_HIGH_WATER = 512 * 1024;
/**
 * Sealed records from this length on are written from a reused buffer of the largest record's
 * size (at most 4x its length; with CARRIER_HIGH_WATER, at most ~9 such buffers queued).
 */
const POOLED_RECORD = Math.floor(MAX_SEALED_RECORD / 4);
/** Record buffers a carrier keeps for reuse (each 4 + MAX_SEALED_RECORD octets, ~1 MiB in all). */
const POOL_KEEP = 4;

export class CarrierError extends Error {
  override name = 'CarrierError';
  constructor(
    message: string,
    /** Why a handshake was refused, when it is one the responder counts apart. */
    readonly reason?: 'timeout' | 'bad-mac1',
  ) {
    super(message);
  }
}

/**
 * A plaintext piece smaller than this (and not its record's whole plaintext) is gathered into a
 * buffer of the record's own instead of kept as a view of its read. A record is then delivered
 * in at most 16 views (each at least KEEP_PIECE), 17 partly filled gathering buffers (one before
 * each view and one at the tag) and 9 full ones (GATHER_FIRST doubling to GATHER): 42 parts
 * however finely the peer slices it across reads (one octet per read made 262,157 views,
 * ~30 MiB of heap, for one 256 KiB record). Bulk reads (up to 64 KiB on Node) are far above it;
 * under it, a piece costs the session and the local socket more (an event, a write) than
 * copying it does.
 */
const KEEP_PIECE = 16 * 1024;
/**
 * Gathering buffers: the first of a record GATHER_FIRST octets (or twice the piece that starts
 * it), each next one twice the last, up to GATHER; never more than the rest of the record.
 * Small while little has arrived (a trickled record holds at most about twice what arrived),
 * few when much has (a 256 KiB record trickled an octet per read: 8 buffers).
 */
const GATHER_FIRST = 4 * 1024;
const GATHER = 64 * 1024;

/** A record's framing around its plaintext: the length prefix and the tag. */
const PIN_SLACK = 4 + TAGLEN;
/**
 * Whether a view of a read may be handed on as it is: with a record's framing (its length and
 * tag, PIN_SLACK), it is at least half of the ArrayBuffer it keeps alive (core/util/pinned.ts). Every part a record
 * is delivered in is either such a view or a buffer of its own (exactly its size, or a
 * gathering buffer at least half full), so whatever a consumer holds (a delta chunker until
 * its cut, a local socket's write queue) keeps alive at most twice the octets the session's
 * quotas count for it plus 40, less than an allocation of its own costs. Without it a 1-octet
 * record in a 64 KiB read kept the 64 KiB (Node gives each socket read an ArrayBuffer of its
 * own, the size of the read). A record whole in a read of its size (request/response traffic),
 * however small, and a large one whole or nearly whole in its read (bulk), go on without a copy.
 */
const keepable = (v: Buffer): boolean => pinsLittle(v, PIN_SLACK);

/**
 * A copy of `v` in an ArrayBuffer of its own. Not Buffer.from / allocUnsafe: below 4 KiB those
 * slice Node's shared 8 KiB pool, and one small copy a consumer keeps (a stalled connection's
 * octet) would keep its whole slab alive while the copies around it (other connections' records,
 * anything else the process pooled) are freed: up to 8 KiB per counted octet again.
 */
function ownCopy(v: Buffer): Buffer {
  const b = Buffer.allocUnsafeSlow(v.length);
  v.copy(b);
  return b;
}

/**
 * Sealed records out of the carrier's byte stream, decrypted as their octets arrive (no
 * reassembly copy of a record that spans reads). A record is released, as the plaintext
 * pieces of those reads, only once its tag has verified. Decrypted in place (one FFI call on
 * the read itself, no output buffer); what is handed on is bounded against the memory it
 * keeps alive (keepable, KEEP_PIECE): a piece too small for its read is copied out.
 */
class RecordOpener {
  private readonly head = Buffer.alloc(4);
  private headLen = 0;
  private need = -1; // sealed length of the record in progress; -1 while its prefix is incomplete
  private got = 0;
  private plain: Buffer[] = [];
  private tag: Buffer[] = [];
  private n = 0;
  /** Small plaintext pieces of the record in progress, copied together (gather, flushGathered). */
  private gathered: Buffer | undefined;
  private gatheredLen = 0;
  private nextGather = GATHER_FIRST;

  constructor(
    /** One context for every record (aead-evp): per record only its nonce is set. */
    private readonly aead: RecordAead,
    private readonly max: number,
  ) {}

  /** Returns how much of `chunk` was taken: all of it, unless `out` returned false (stop after that record). */
  push(chunk: Buffer, out: (parts: Buffer[]) => boolean): number {
    let off = 0;
    while (off < chunk.length) {
      if (this.need < 0) {
        const k = Math.min(4 - this.headLen, chunk.length - off);
        chunk.copy(this.head, this.headLen, off, off + k);
        this.headLen += k;
        off += k;
        if (this.headLen < 4) return off;
        this.headLen = 0;
        const len = this.head.readUInt32BE(0);
        if (len > this.max) throw new CarrierError(`carrier frame of ${len} bytes, at most ${this.max}`);
        if (len < TAGLEN) throw new CarrierError(`carrier record of ${len} bytes, shorter than its tag`);
        // A small record whole in this read: one call opens it in place (libsodium).
        if (this.aead.openWhole && len <= SMALL_SEALED && chunk.length - off >= len) {
          const p = this.aead.openWhole(this.n, chunk.subarray(off, off + len));
          if (!p) throw new CarrierError('carrier record failed authentication');
          off += len;
          this.n++;
          if (!out(p.length ? [keepable(p) ? p : ownCopy(p)] : [])) return off;
          continue;
        }
        this.need = len;
        this.got = 0;
        this.nextGather = GATHER_FIRST;
        this.aead.begin(this.n, len - TAGLEN);
        continue;
      }
      const k = Math.min(this.need - this.got, chunk.length - off);
      const piece = chunk.subarray(off, off + k);
      const ctEnd = this.need - TAGLEN;
      if (this.got < ctEnd) {
        // Through libcrypto the read is decrypted in place: its plaintext leaves only once the tag verifies.
        const p = this.aead.update(piece.subarray(0, Math.min(k, ctEnd - this.got)));
        if (p.length >= Math.min(KEEP_PIECE, ctEnd) && keepable(p)) {
          this.flushGathered();
          this.plain.push(p);
        } else if (p.length) {
          this.gather(p, ctEnd - this.got - p.length);
        }
      }
      if (this.got + k > ctEnd) this.tag.push(piece.subarray(Math.max(0, ctEnd - this.got)));
      this.got += k;
      off += k;
      if (this.got < this.need) continue;
      if (!this.aead.final(this.tag.length === 1 ? this.tag[0] : Buffer.concat(this.tag))) {
        throw new CarrierError('carrier record failed authentication');
      }
      this.n++;
      this.flushGathered();
      this.gathered = undefined; // not kept between records: an idle carrier holds no gathering buffer
      const parts = this.plain;
      this.plain = [];
      this.tag = [];
      this.need = -1;
      if (!out(parts)) return off;
    }
    return off;
  }

  /**
   * Copies a small piece `p` onto the gathering buffer, `left` plaintext octets of the record
   * still to come after it. A gathering buffer is sized when made (GATHER_FIRST) and never
   * grown; a full one is handed on as a part at once. So every octet is copied here once (and
   * at most once more, by flushGathered), and a record in progress holds at most about twice
   * what arrived of it, plus GATHER_FIRST.
   */
  private gather(p: Buffer, left: number): void {
    while (p.length) {
      let g = this.gathered;
      if (!g) {
        // At least twice the piece: one that a view follows (the head of a record at the end of a read) is not copied again.
        const size = Math.max(Math.min(2 * p.length, GATHER), this.nextGather);
        g = this.gathered = Buffer.allocUnsafeSlow(Math.min(p.length + left, size));
        this.gatheredLen = 0;
        this.nextGather = Math.min(2 * size, GATHER);
      }
      const k = Math.min(p.length, g.length - this.gatheredLen);
      p.copy(g, this.gatheredLen, 0, k);
      this.gatheredLen += k;
      p = p.subarray(k);
      if (this.gatheredLen === g.length) this.flushGathered();
    }
  }

  /**
   * The gathered octets join the record's parts, in order (before a piece kept as a view, and
   * at the tag): the buffer itself when at least half of it is used (it is then given away),
   * else a copy of the used part (and the buffer gathers on).
   */
  private flushGathered(): void {
    const g = this.gathered;
    if (!g || this.gatheredLen === 0) return;
    const used = g.subarray(0, this.gatheredLen);
    this.gatheredLen = 0;
    if (keepable(used)) {
      this.gathered = undefined;
      this.plain.push(used);
    } else {
      this.plain.push(ownCopy(used));
    }
  }
}

function frame(payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + payload.length);
  b.writeUInt32BE(payload.length, 0);
  b.set(payload, 4);
  return b;
}

/**
 * The peer's work budget as a carrier sees it (spookd: its per-peer CPU budget, PROTOCOL
 * §12.9): charged the time spent on each read (opening records and handling them); the
 * answer is how long to stop reading, 0 to carry on.
 */
export interface CarrierBudget {
  charge(ms: number): number;
  /** Told when a carrier stops reading for `ms` (counters). */
  paused?(ms: number): void;
}

/**
 * Milliseconds of work one carrier's input may take in one turn of the event loop before it stops
 * reading until the next: libuv reads a busy socket up to 32 times a poll (2 MiB from one carrier,
 * ~10-15 ms of opening and delivering), and every other peer's datagrams and admin requests wait
 * behind that turn (bench attack: a wrapper flood tripled an honest peer's p99 in some runs).
 */
export const CARRIER_TURN_MS = 2;

/** An established, authenticated carrier. */
export class Carrier {
  /** When set, reading pauses while the peer is over its budget (TCP flow control holds the peer back). */
  budget: CarrierBudget | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private readonly opener: RecordOpener;
  /** A record, as the plaintext pieces of the reads it arrived in (usually one). */
  onRecord: (parts: Buffer[]) => void = () => {};
  onClose: (why: string) => void = () => {};
  onDrain: () => void = () => {};
  /**
   * Asked after each record: false stops reading the carrier (backpressure, §16.5.6) until
   * resumeInput(); the rest of the read is kept (at most one socket read).
   */
  acceptMore: () => boolean = () => true;
  private closed = false;
  private held: Buffer[] = [];
  private stopped = false;
  /** Input work in this turn of the loop (ms), and the immediate that ends the turn's count (and resumes a yield). */
  private turnMs = 0;
  private turnEnd: NodeJS.Immediate | undefined;
  /** Reading stopped for the rest of this turn (CARRIER_TURN_MS spent). */
  private yielded = false;
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly socket: Socket,
    tx: CipherState,
    rx: CipherState,
    private readonly pending: Buffer[],
    /** The transport AEAD the handshake negotiated (both directions). */
    readonly cipher: CarrierCipher = 'chacha20-poly1305',
  ) {
    socket.setNoDelay(true);
    // One cipher context per direction for the carrier's life (a per-record createCipheriv
    // cost more than the cipher: docs/BENCHMARKS.md, issue 17: speed); freed by close().
    this.sealer = recordSealer(cipher, tx.key);
    this.rxAead = recordOpener(cipher, rx.key);
    this.opener = new RecordOpener(this.rxAead, MAX_SEALED_RECORD);
  }

  private readonly sealer: RecordSealer;
  private readonly rxAead: RecordAead;
  private txN = 0;
  /**
   * Buffers of large records, reused once the socket has written them (their write callback):
   * a fresh buffer per record costs its page faults on first touch, about as much as sealing
   * it. At most POOL_KEEP are kept; every record still gets its own buffer while queued.
   */
  private readonly pool: Buffer[] = [];

  /** Attach the handlers and start reading (the socket stays paused until then: nothing is lost). */
  start(h: { onRecord: (parts: Buffer[]) => void; onClose: (why: string) => void; onDrain: () => void; acceptMore?: () => boolean }): void {
    if (h.acceptMore) this.acceptMore = h.acceptMore;
    this.onRecord = h.onRecord;
    this.onClose = h.onClose;
    this.onDrain = h.onDrain;
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.input(chunk));
    s.on('drain', () => this.onDrain());
    s.on('error', (e) => this.close(e.message));
    s.on('close', () => this.close('carrier connection closed'));
    for (const c of this.pending.splice(0)) this.input(c);
    if (this.reading()) s.resume();
  }

  /** Whether nothing holds reading back: backpressure, the budget's pause, this turn's yield, or kept bytes not handled yet. */
  private reading(): boolean {
    return !this.stopped && !this.closed && this.resumeTimer === undefined && !this.yielded && this.held.length === 0;
  }

  /** Handle the kept bytes, in order, while nothing stops it (backpressure, close, this turn's share spent). */
  private drainHeld(): void {
    while (this.held.length && !this.stopped && !this.closed && !this.yielded) this.consume(this.held.shift()!);
  }

  /** Reading is stopped (acceptMore() said so). */
  get inputPaused(): boolean {
    return this.stopped;
  }

  /** Take the kept bytes, and read the socket again unless a record stops it once more. */
  resumeInput(): void {
    if (!this.stopped || this.closed) return;
    this.stopped = false;
    this.drainHeld();
    // Over the work budget, the budget's timer resumes reading instead (or the turn's end, after a yield).
    if (this.reading()) this.socket.resume();
  }

  /**
   * Seal and write one record given as parts (a DATA header and its payload): each part is
   * encrypted straight into the socket's queue, with no concatenation. Noise's transport
   * encryption with the negotiated cipher (counter nonce, empty associated data).
   */
  send(parts: Uint8Array[]): void {
    if (this.closed || this.failed) return;
    let len = TAGLEN;
    for (const p of parts) len += p.length;
    // Our own records never exceed this (a DATA record's payload is at most MAX_DATA); the bound
    // keeps a sealing call inside the buffer it writes, whatever a caller passes.
    if (len > MAX_SEALED_RECORD) return this.fail(`carrier record of ${len} bytes, at most ${MAX_SEALED_RECORD}`);
    const s = this.socket;
    this.bytesOut += 4 + len;
    // Sealed straight into the buffer written (ciphertext after the length, then the tag): one
    // stream write per record.
    const pooled = len >= POOLED_RECORD;
    const buf = pooled ? (this.pool.pop() ?? Buffer.allocUnsafe(4 + MAX_SEALED_RECORD)) : Buffer.allocUnsafe(4 + len);
    buf.writeUInt32BE(len, 0);
    try {
      this.sealer.sealInto(this.txN++, parts, buf, 4);
    } catch (e) {
      // libcrypto refusing a call is a fault of this host, not of the peer: this carrier ends (and is redialled).
      return this.fail(`carrier sealing failed: ${(e as Error).message}`);
    }
    if (!pooled) {
      s.write(buf);
      return;
    }
    let reclaimed = false;
    s.write(buf.subarray(0, 4 + len), (err) => {
      // Written to the kernel: the buffer is free again (after an error it is simply dropped).
      if (!reclaimed && !err && !this.closed && this.pool.length < POOL_KEEP) this.pool.push(buf);
    });
    // A large record goes to the kernel now, with whatever the turn corked before it (one
    // writev), rather than at the end of the turn: when the kernel takes it all at once the
    // buffer is free as soon as write() returns and the next record is sealed into the same,
    // still cached, memory (sealing into a buffer the cache has lost costs as much as the cipher).
    const corked = s.writableCorked;
    for (let i = 0; i < corked; i++) s.uncork();
    for (let i = 0; i < corked; i++) s.cork();
    if (s.writableLength === 0 && !this.closed && this.pool.length < POOL_KEEP) {
      reclaimed = true;
      this.pool.push(buf);
    }
  }

  get writable(): boolean {
    return !this.closed && !this.failed && this.socket.writableLength < CARRIER_HIGH_WATER;
  }

  private failed = false;
  /**
   * A record that could not be sealed: nothing more is sent (the peer would fail the next
   * record's nonce anyway) and the carrier closes after the caller's flush, not inside it (the
   * caller's onClose must not run in the middle of its own send).
   */
  private fail(why: string): void {
    this.failed = true;
    queueMicrotask(() => this.close(why));
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.resumeTimer);
    if (this.turnEnd) clearImmediate(this.turnEnd);
    this.socket.destroy();
    // Nothing seals or opens after this (send and input check closed; a record handler that
    // closed the carrier stops the opener's loop): the contexts are freed now.
    this.sealer.close();
    this.rxAead.close();
    this.pool.length = 0;
    this.onClose(why);
  }

  private input(chunk: Buffer): void {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    // Behind kept bytes, never ahead of them (a yield may leave some for the next turn).
    if (this.stopped || this.held.length > 0) this.held.push(chunk);
    else this.consume(chunk);
  }

  /** Open and hand on the records of one read, charged to the peer's work budget (§12.9). */
  private consume(chunk: Buffer): void {
    const t0 = performance.now();
    try {
      const used = this.opener.push(chunk, (parts) => {
        if (this.closed) return false;
        this.onRecord(parts);
        if (this.closed) return false; // the handler closed it: open nothing more (its contexts are freed)
        if (this.acceptMore()) return true;
        this.stopped = true;
        return false;
      });
      if (this.stopped) {
        // Kept in front of any later reads, in order; the socket reads nothing more meanwhile.
        if (used < chunk.length) this.held.unshift(chunk.subarray(used));
        this.socket.pause();
      }
    } catch (e) {
      this.close(`carrier input refused: ${(e as Error).message}`);
    }
    const ms = performance.now() - t0;
    const waitMs = this.budget?.charge(ms) ?? 0;
    if (waitMs > 0 && !this.closed && this.resumeTimer === undefined) this.pauseFor(waitMs);
    this.turnMs += ms;
    this.turnEnd ??= setImmediate(() => {
      this.turnEnd = undefined;
      this.turnMs = 0;
      if (!this.yielded) return;
      this.yielded = false;
      this.drainHeld(); // what a resumeInput() left when the turn's share ran out
      if (this.reading()) this.socket.resume();
    });
    if (this.turnMs >= CARRIER_TURN_MS && !this.closed && !this.yielded) {
      // The turn's share is spent: what was read is handled, the socket reads on next turn.
      this.yielded = true;
      this.socket.pause();
    }
  }

  /** Read no more for `ms` (what was read is handled; the peer's sends back up into its TCP window). */
  private pauseFor(ms: number): void {
    this.socket.pause();
    this.budget?.paused?.(ms);
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      // Still stopped for the reply backlog: resumeInput() reads on once it drains.
      if (this.reading()) this.socket.resume();
    }, ms);
  }
}

/** Read exactly one length-prefixed handshake message (and keep what follows it). */
function readHandshake(socket: Socket, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<{ msg: Uint8Array; rest: Buffer[] }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new CarrierError('carrier handshake timed out', 'timeout')), timeoutMs);
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
export async function dialCarrier(
  host: string,
  port: number,
  staticKey: KeyPair,
  peerKey: Uint8Array,
  opts: CarrierCipherOptions = {},
): Promise<Carrier> {
  const offered = opts.ciphers ?? localCiphers();
  const socket = connect({ host, port, noDelay: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new CarrierError(`carrier dial to ${host}:${port} timed out`)), HANDSHAKE_TIMEOUT_MS);
      socket.once('connect', () => (clearTimeout(t), resolve()));
      socket.once('error', (e) => (clearTimeout(t), reject(e)));
    });
    const ik = new IKInitiator({ hash: HASH, prologue: CARRIER_PROLOGUE, staticKey }, peerKey);
    const m1 = ik.writeMessage1(Uint8Array.of(bitsOf(offered)));
    socket.write(frame(Buffer.concat([m1, carrierMac1(peerKey, m1)])));
    const { msg, rest } = await readHandshake(socket);
    const { payload, result } = ik.readMessage2(msg);
    return new Carrier(socket, result.send, result.recv, rest, chosenCipher(payload, offered));
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

/**
 * Run the responder's side on an accepted socket. `authorise` maps the initiator's static key
 * to a configured peer (undefined refuses it before anything is answered).
 */
export async function acceptCarrier<P>(
  socket: Socket,
  staticKey: KeyPair,
  authorise: (key: Uint8Array) => P | undefined,
  timeoutMs = HANDSHAKE_TIMEOUT_MS,
  opts: CarrierCipherOptions = {},
): Promise<{ carrier: Carrier; peer: P }> {
  try {
    const { msg } = await readHandshake(socket, timeoutMs);
    if (msg.length !== MESSAGE1_LEN + MAC_LEN)
      throw new CarrierError(
        `carrier message 1 of ${msg.length} octets, not ${MESSAGE1_LEN + MAC_LEN} (an initiator of another carrier version?)`,
      );
    const m1 = msg.subarray(0, MESSAGE1_LEN);
    // Before any DH: a sender that does not know our public key gets no further.
    if (!macEqual(carrierMac1(staticKey.publicKey, m1), msg.subarray(MESSAGE1_LEN)))
      throw new CarrierError('carrier message 1 with a wrong mac1', 'bad-mac1');
    const ik = new IKResponder({ hash: HASH, prologue: CARRIER_PROLOGUE, staticKey });
    const { payload, remoteStatic } = ik.readMessage1(m1);
    const peer = authorise(remoteStatic);
    if (peer === undefined) throw new CarrierError('carrier handshake from a key that is not a configured peer');
    const cipher = chooseCipher(payload, opts.ciphers ?? localCiphers());
    const { message, result } = ik.writeMessage2(Uint8Array.of(CIPHER_BITS[cipher]));
    socket.write(frame(message));
    return { carrier: new Carrier(socket, result.send, result.recv, [], cipher), peer };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

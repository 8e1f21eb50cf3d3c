/**
 * The carrier's record AEAD with one cipher context per direction, reused for every record.
 * Node's createCipheriv builds a cipher object (and an OpenSSL context) per record, which at
 * carrier record sizes costs more than the cipher itself (docs/BENCHMARKS.md, issue 17: speed).
 * Here libcrypto's EVP API is called through koffi (drivers/crypto/evp.ts, shared with ETCP's
 * frames), as the BPF hooks call libbpf: the key is set once, each record only sets its IV. Same algorithms, same nonces (Noise ChaChaPoly: counter
 * little-endian after 4 zero octets; AESGCM: big-endian), empty associated data, 16-octet tag:
 * the wire is byte for byte what node:crypto produces. Small records (a connection's set-up, a
 * request and its reply) go through libsodium where the system has it: one FFI call per record
 * instead of five. Where libcrypto cannot be loaded, the same interface runs on node:crypto (one
 * warning).
 *
 * FFI safety: every length is bounded (MAX_RECORD) before a call; every buffer libcrypto reads
 * or writes is a live JS Buffer passed to a synchronous call (libcrypto keeps no pointer to it:
 * it copies key and IV into the context); a context is freed once, by close(), with a
 * FinalizationRegistry only as the backstop for one never closed.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type DecipherGCM, type KeyObject } from 'node:crypto';
import { EVP_CTRL_AEAD_GET_TAG, EVP_CTRL_AEAD_SET_TAG, EvpCtx as Ctx, loadEvp, type Evp, type EvpCipherName } from '../crypto/evp.js';
import { loadSodium, Workspace, type Sodium } from '../crypto/sodium.js';

export type RecordCipher = EvpCipherName;
export const TAG_LEN = 16;
const KEY_LEN = 32;
/** Largest plaintext one call takes (EVP lengths are C ints; carrier records are far smaller). */
export const MAX_RECORD = 16 * 1024 * 1024;

/** Writes the 96-bit Noise nonce of record n (a safe integer ≥ 0) into iv (12 octets). */
export function writeNonce(cipher: RecordCipher, n: number, iv: Uint8Array): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`record counter ${n} is not a safe integer ≥ 0`);
  const hi = Math.floor(n / 2 ** 32);
  const lo = n >>> 0;
  iv[0] = iv[1] = iv[2] = iv[3] = 0;
  for (let i = 0; i < 4; i++) {
    const l = (lo >>> (8 * i)) & 0xff;
    const h = (hi >>> (8 * i)) & 0xff;
    if (cipher === 'chacha20-poly1305') {
      iv[4 + i] = l; // counter little-endian in octets 4..11
      iv[8 + i] = h;
    } else {
      iv[11 - i] = l; // big-endian in octets 4..11
      iv[7 - i] = h;
    }
  }
}

/** One direction's sealing: ciphertext then tag, written into a caller's buffer. */
export interface RecordSealer {
  readonly impl: AeadImpl;
  /** Seals the concatenation of `parts` under record counter n into out[at..]; returns the end (at + length + TAG_LEN). */
  sealInto(n: number, parts: readonly Uint8Array[], out: Uint8Array, at: number): number;
  /** Frees the context (idempotent); sealing afterwards throws. */
  close(): void;
}

/**
 * One direction's opening, streamed: begin(n), then update() on the ciphertext as it arrives
 * (the plaintext may be written over the ciphertext it came from), then final(tag). No plaintext
 * may be released before final() has returned true.
 */
export interface RecordOpener {
  readonly impl: AeadImpl;
  /**
   * Where one call opens a small record (libsodium): the whole record `sealed` (ciphertext then
   * tag, at most SMALL_SEALED octets) opened under counter n, its plaintext written over the
   * ciphertext's first octets and returned as a view of them; undefined, with `sealed` untouched,
   * when the tag does not verify. Counts as begin, update and final.
   */
  openWhole?(n: number, sealed: Buffer): Buffer | undefined;
  begin(n: number, ciphertextLen: number): void;
  /** The plaintext of `piece` (EVP: decrypted in place, `piece` itself; node: a new buffer). */
  update(piece: Buffer): Buffer;
  /** Whether the record authenticated; never throws on a bad tag. */
  final(tag: Uint8Array): boolean;
  close(): void;
}

/** A whole sealed record (ciphertext || tag) opened at once; undefined when it fails authentication. */
export function openRecord(o: RecordOpener, n: number, sealed: Uint8Array): Buffer | undefined {
  if (sealed.length < TAG_LEN) return undefined;
  if (o.openWhole && sealed.length <= SMALL_SEALED) return o.openWhole(n, Buffer.from(sealed)); // a copy, as below
  const ct = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length - TAG_LEN);
  o.begin(n, ct.length);
  const p = o.update(Buffer.from(ct)); // a copy: the caller's sealed record is not overwritten
  return o.final(sealed.subarray(sealed.length - TAG_LEN)) ? p : undefined;
}

/** A whole record sealed into a new buffer (ciphertext || tag). */
export function sealRecord(s: RecordSealer, n: number, plaintext: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(plaintext.length + TAG_LEN);
  s.sealInto(n, [plaintext], out, 0);
  return out;
}

// ---------------------------------------------------------------- libcrypto (drivers/crypto/evp.ts)

export { evpAvailable, forceNodeCrypto, reloadForTest } from '../crypto/evp.js';

function checkKey(key: Uint8Array): void {
  if (key.length !== KEY_LEN) throw new RangeError(`carrier key of ${key.length} octets, not ${KEY_LEN}`);
}

class EvpSealer implements RecordSealer {
  readonly impl = 'evp';
  private readonly c: Ctx;
  private readonly iv = Buffer.alloc(12);
  private readonly outl = new Int32Array(1);
  private readonly scratch = Buffer.alloc(16);

  constructor(
    private readonly cipher: RecordCipher,
    key: Uint8Array,
    e: Evp,
  ) {
    checkKey(key);
    this.c = new Ctx(e, this);
    if (e.encInit(this.c.ptr, e.cipher[cipher], null, key, null) !== 1) throw new Error(`EVP_EncryptInit_ex (${cipher}) failed`);
  }

  sealInto(n: number, parts: readonly Uint8Array[], out: Uint8Array, at: number): number {
    const e = this.c.e;
    const ctx = this.c.ptr;
    let len = 0;
    for (const p of parts) len += p.length;
    if (len > MAX_RECORD) throw new RangeError(`record of ${len} octets, at most ${MAX_RECORD}`);
    if (!Number.isInteger(at) || at < 0 || at + len + TAG_LEN > out.length) {
      throw new RangeError(`seal output of ${out.length} octets cannot take ${len + TAG_LEN} at ${at}`);
    }
    writeNonce(this.cipher, n, this.iv);
    if (e.encInit(ctx, null, null, null, this.iv) !== 1) throw new Error('EVP_EncryptInit_ex (IV) failed');
    let w = at;
    for (const p of parts) {
      if (p.length === 0) continue;
      // Stream ciphers (GCM's CTR, ChaCha20) write exactly inl octets per update.
      if (e.encUpdate(ctx, out.subarray(w, w + p.length), this.outl, p, p.length) !== 1 || this.outl[0] !== p.length) {
        throw new Error('EVP_EncryptUpdate failed');
      }
      w += p.length;
    }
    if (e.encFinal(ctx, this.scratch, this.outl) !== 1 || this.outl[0] !== 0) throw new Error('EVP_EncryptFinal_ex failed');
    const tag = out.subarray(w, w + TAG_LEN);
    if (e.ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) !== 1) throw new Error('EVP_CTRL_AEAD_GET_TAG failed');
    return w + TAG_LEN;
  }

  close(): void {
    this.c.free();
  }
}

class EvpOpener implements RecordOpener {
  readonly impl = 'evp';
  private readonly c: Ctx;
  private readonly iv = Buffer.alloc(12);
  private readonly outl = new Int32Array(1);
  private readonly scratch = Buffer.alloc(16);
  private readonly tag = Buffer.alloc(TAG_LEN);
  private left = -1; // ciphertext octets still expected; -1 outside a record

  constructor(
    private readonly cipher: RecordCipher,
    key: Uint8Array,
    e: Evp,
  ) {
    checkKey(key);
    this.c = new Ctx(e, this);
    if (e.decInit(this.c.ptr, e.cipher[cipher], null, key, null) !== 1) throw new Error(`EVP_DecryptInit_ex (${cipher}) failed`);
  }

  begin(n: number, ciphertextLen: number): void {
    if (!Number.isInteger(ciphertextLen) || ciphertextLen < 0 || ciphertextLen > MAX_RECORD) {
      throw new RangeError(`record of ${ciphertextLen} octets, at most ${MAX_RECORD}`);
    }
    writeNonce(this.cipher, n, this.iv);
    if (this.c.e.decInit(this.c.ptr, null, null, null, this.iv) !== 1) throw new Error('EVP_DecryptInit_ex (IV) failed');
    this.left = ciphertextLen;
  }

  update(piece: Buffer): Buffer {
    if (piece.length === 0) return piece;
    if (piece.length > this.left) throw new RangeError(`ciphertext piece of ${piece.length} octets, ${this.left} expected`);
    // In place (EVP allows out == in exactly): the caller holds the plaintext back until final().
    if (this.c.e.decUpdate(this.c.ptr, piece, this.outl, piece, piece.length) !== 1 || this.outl[0] !== piece.length) {
      throw new Error('EVP_DecryptUpdate failed');
    }
    this.left -= piece.length;
    return piece;
  }

  final(tag: Uint8Array): boolean {
    if (this.left !== 0 || tag.length !== TAG_LEN) return false;
    this.left = -1;
    this.tag.set(tag); // SET_TAG copies it; a buffer of our own keeps the length bound obvious
    const e = this.c.e;
    const ctx = this.c.ptr;
    if (e.ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, this.tag) !== 1) return false;
    return e.decFinal(ctx, this.scratch, this.outl) === 1;
  }

  close(): void {
    this.c.free();
  }
}

// ---------------------------------------------------------------- node:crypto (the fallback)

class NodeSealer implements RecordSealer {
  readonly impl = 'node';
  private readonly key: KeyObject;
  private readonly iv = Buffer.alloc(12);
  private closed = false;
  constructor(
    private readonly cipher: RecordCipher,
    key: Uint8Array,
  ) {
    checkKey(key);
    this.key = createSecretKey(key);
  }
  sealInto(n: number, parts: readonly Uint8Array[], out: Uint8Array, at: number): number {
    if (this.closed) throw new Error('carrier AEAD used after close');
    let len = 0;
    for (const p of parts) len += p.length;
    if (at < 0 || at + len + TAG_LEN > out.length)
      throw new RangeError(`seal output of ${out.length} octets cannot take ${len + TAG_LEN} at ${at}`);
    writeNonce(this.cipher, n, this.iv);
    const c = createCipheriv(this.cipher as 'aes-256-gcm', this.key, this.iv, { authTagLength: TAG_LEN });
    c.setAAD(new Uint8Array(0), { plaintextLength: len });
    let w = at;
    for (const p of parts) {
      const b = c.update(p);
      out.set(b, w);
      w += b.length;
    }
    const f = c.final();
    out.set(f, w);
    w += f.length;
    out.set(c.getAuthTag(), w);
    return w + TAG_LEN;
  }
  close(): void {
    this.closed = true;
  }
}

class NodeOpener implements RecordOpener {
  readonly impl = 'node';
  private readonly key: KeyObject;
  private readonly iv = Buffer.alloc(12);
  private d: DecipherGCM | undefined;
  private closed = false;
  constructor(
    private readonly cipher: RecordCipher,
    key: Uint8Array,
  ) {
    checkKey(key);
    this.key = createSecretKey(key);
  }
  begin(n: number, ciphertextLen: number): void {
    if (this.closed) throw new Error('carrier AEAD used after close');
    writeNonce(this.cipher, n, this.iv);
    this.d = createDecipheriv(this.cipher as 'aes-256-gcm', this.key, this.iv, { authTagLength: TAG_LEN });
    this.d.setAAD(new Uint8Array(0), { plaintextLength: ciphertextLen });
  }
  update(piece: Buffer): Buffer {
    return this.d!.update(piece);
  }
  final(tag: Uint8Array): boolean {
    const d = this.d;
    this.d = undefined;
    if (!d || tag.length !== TAG_LEN) return false;
    try {
      d.setAuthTag(tag);
      d.final();
      return true;
    } catch {
      return false;
    }
  }
  close(): void {
    this.closed = true;
    this.d = undefined;
  }
}

// ---------------------------------------------------------------- libsodium for small records (drivers/crypto/sodium.ts)

/**
 * Largest sealed record (ciphertext and tag) libsodium takes in one call here: what a Workspace
 * holds. A connection's set-up and a request's reply are records of tens of octets, where EVP's
 * five FFI calls (~0.5-0.9 µs each through koffi) cost ten times the cipher; a bulk record
 * (64 KiB and more) is sealed by EVP in place, where the calls do not count.
 */
export const SMALL_SEALED = Workspace.CAP;
// libsodium writes a failed open's clen - 16 octets too (zeroes): every small record's input and output must fit.
if (Workspace.IN + SMALL_SEALED > Workspace.OUT || Workspace.OUT + SMALL_SEALED > Workspace.SIZE) {
  throw new Error('the libsodium workspace cannot hold a small carrier record');
}

/** libsodium's by-address seal and open of one cipher. */
interface SodiumCalls {
  sealAt: Sodium['sealAt'];
  openAt: Sodium['openAt'];
}

/** The by-address seal and open of `cipher` in libsodium, or undefined where it has none (AES-GCM without AES-NI). */
function sodiumCalls(s: Sodium, cipher: RecordCipher): SodiumCalls | undefined {
  if (cipher === 'chacha20-poly1305') return { sealAt: s.sealAt, openAt: s.openAt };
  return s.aesSealAt && s.aesOpenAt ? { sealAt: s.aesSealAt, openAt: s.aesOpenAt } : undefined;
}

/**
 * One direction's key in native memory (a Workspace), sealing or opening a small record by
 * address; `large` (EVP, else node:crypto) takes the records it does not.
 */
abstract class SodiumRecordKeyed<L extends { close(): void }> {
  readonly impl = 'sodium';
  protected readonly w: Workspace;
  protected readonly nonce: Uint8Array;

  constructor(
    protected readonly cipher: RecordCipher,
    key: Uint8Array,
    protected readonly calls: SodiumCalls,
    protected readonly large: L,
  ) {
    checkKey(key);
    this.w = new Workspace(this);
    this.w.bytes.set(key, Workspace.KEY);
    this.nonce = this.w.bytes.subarray(Workspace.NONCE, Workspace.NONCE + 12);
  }

  close(): void {
    this.w.free();
    this.large.close();
  }
}

/** Small records through libsodium (one call), larger ones through `large` (EVP, in place). */
class SodiumSealer extends SodiumRecordKeyed<RecordSealer> implements RecordSealer {
  sealInto(n: number, parts: readonly Uint8Array[], out: Uint8Array, at: number): number {
    const w = this.w;
    if (w.freed) throw new Error('carrier AEAD used after close');
    let len = 0;
    for (const p of parts) len += p.length;
    if (len + TAG_LEN > SMALL_SEALED) return this.large.sealInto(n, parts, out, at);
    if (!Number.isInteger(at) || at < 0 || at + len + TAG_LEN > out.length) {
      throw new RangeError(`seal output of ${out.length} octets cannot take ${len + TAG_LEN} at ${at}`);
    }
    writeNonce(this.cipher, n, this.nonce);
    const b = w.bytes;
    let o = Workspace.IN;
    for (const p of parts) {
      b.set(p, o);
      o += p.length;
    }
    if (w.sealIn(this.calls.sealAt, len, 0) !== 0) throw new Error(`libsodium ${this.cipher} sealing failed`);
    out.set(b.subarray(Workspace.OUT, Workspace.OUT + len + TAG_LEN), at);
    return at + len + TAG_LEN;
  }
}

/** openWhole through libsodium; records that span reads or exceed SMALL_SEALED stream through `large`. */
class SodiumOpener extends SodiumRecordKeyed<RecordOpener> implements RecordOpener {
  openWhole(n: number, sealed: Buffer): Buffer | undefined {
    const w = this.w;
    if (w.freed) throw new Error('carrier AEAD used after close');
    const ctLen = sealed.length - TAG_LEN;
    // The bound keeps libsodium inside the workspace: it writes ctLen octets even when the tag fails.
    if (ctLen < 0 || sealed.length > SMALL_SEALED) return undefined;
    writeNonce(this.cipher, n, this.nonce); // a bad counter is the caller's bug: it throws, as the other openers do
    const b = w.bytes;
    b.set(sealed, Workspace.IN);
    // libsodium writes the plaintext only into the workspace, and wipes it there when the tag fails.
    if (w.openIn(this.calls.openAt, sealed.length, 0) !== 0) return undefined;
    sealed.set(b.subarray(Workspace.OUT, Workspace.OUT + ctLen), 0);
    return sealed.subarray(0, ctLen);
  }

  begin(n: number, ciphertextLen: number): void {
    this.large.begin(n, ciphertextLen);
  }
  update(piece: Buffer): Buffer {
    return this.large.update(piece);
  }
  final(tag: Uint8Array): boolean {
    return this.large.final(tag);
  }
}

export type AeadImpl = 'sodium' | 'evp' | 'node';

/**
 * The fastest available sealer: libsodium for small records with libcrypto's EVP for the rest,
 * else EVP alone, else node:crypto. `impl` forces one (tests, benches): 'sodium' needs both
 * libraries and the cipher in libsodium.
 */
export function recordSealer(cipher: RecordCipher, key: Uint8Array, impl?: AeadImpl): RecordSealer {
  const e = impl === 'node' ? null : loadEvp();
  if (impl !== 'node' && impl !== undefined && !e) throw new Error('libcrypto EVP is not available');
  const calls = e && impl !== 'evp' ? smallCalls(cipher, impl) : undefined; // before any context: it may throw
  const large = e ? new EvpSealer(cipher, key, e) : new NodeSealer(cipher, key);
  return calls ? new SodiumSealer(cipher, key, calls, large) : large;
}

export function recordOpener(cipher: RecordCipher, key: Uint8Array, impl?: AeadImpl): RecordOpener {
  const e = impl === 'node' ? null : loadEvp();
  if (impl !== 'node' && impl !== undefined && !e) throw new Error('libcrypto EVP is not available');
  const calls = e && impl !== 'evp' ? smallCalls(cipher, impl) : undefined;
  const large = e ? new EvpOpener(cipher, key, e) : new NodeOpener(cipher, key);
  return calls ? new SodiumOpener(cipher, key, calls, large) : large;
}

/** libsodium's calls for `cipher`, where it loads and has the cipher (silently absent otherwise: EVP takes every record). */
function smallCalls(cipher: RecordCipher, impl: AeadImpl | undefined): SodiumCalls | undefined {
  const s = loadSodium();
  const calls = s ? sodiumCalls(s, cipher) : undefined;
  if (impl === 'sodium' && !calls) throw new Error(`libsodium ${cipher} is not available`);
  return calls;
}

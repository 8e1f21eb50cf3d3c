/**
 * The carrier's record AEAD with one cipher context per direction, reused for every record.
 * Node's createCipheriv builds a cipher object (and an OpenSSL context) per record, which at
 * carrier record sizes costs more than the cipher itself (docs/BENCHMARKS.md, issue 17: speed).
 * Here libcrypto's EVP API is called through koffi (drivers/crypto/evp.ts, shared with ETCP's
 * frames), as the BPF hooks call libbpf: the key is set once, each record only sets its IV. Same algorithms, same nonces (Noise ChaChaPoly: counter
 * little-endian after 4 zero octets; AESGCM: big-endian), empty associated data, 16-octet tag:
 * the wire is byte for byte what node:crypto produces. Where libcrypto cannot be loaded, the same
 * interface runs on node:crypto (one warning).
 *
 * FFI safety: every length is bounded (MAX_RECORD) before a call; every buffer libcrypto reads
 * or writes is a live JS Buffer passed to a synchronous call (libcrypto keeps no pointer to it:
 * it copies key and IV into the context); a context is freed once, by close(), with a
 * FinalizationRegistry only as the backstop for one never closed.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type DecipherGCM, type KeyObject } from 'node:crypto';
import { EVP_CTRL_AEAD_GET_TAG, EVP_CTRL_AEAD_SET_TAG, EvpCtx as Ctx, loadEvp, type Evp, type EvpCipherName } from '../crypto/evp.js';

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
  readonly impl: 'evp' | 'node';
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
  readonly impl: 'evp' | 'node';
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

export type AeadImpl = 'evp' | 'node';

/** The fastest available sealer (libcrypto's EVP, else node:crypto); `impl` forces one (tests, benches). */
export function recordSealer(cipher: RecordCipher, key: Uint8Array, impl?: AeadImpl): RecordSealer {
  const e = impl === 'node' ? null : loadEvp();
  if (impl === 'evp' && !e) throw new Error('libcrypto EVP is not available');
  return e ? new EvpSealer(cipher, key, e) : new NodeSealer(cipher, key);
}

export function recordOpener(cipher: RecordCipher, key: Uint8Array, impl?: AeadImpl): RecordOpener {
  const e = impl === 'node' ? null : loadEvp();
  if (impl === 'evp' && !e) throw new Error('libcrypto EVP is not available');
  return e ? new EvpOpener(cipher, key, e) : new NodeOpener(cipher, key);
}

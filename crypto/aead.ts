/**
 * The transport AEAD of an ETCP session as an interface, keyed once per direction: Noise's
 * ChaChaPoly (RFC 8439 ChaCha20-Poly1305, nonce = 32 zero bits then the 64-bit counter
 * little-endian, 16-octet tag after the ciphertext). A session seals and opens every Data frame
 * through it, so the cost per datagram is what an implementation does per call: node:crypto
 * builds a cipher object per frame (here, the fallback); drivers inject one that keeps a native
 * context per direction and only sets the nonce per frame (drivers/crypto/frame-aead.ts). Every
 * implementation produces the same octets (test/frame-aead.test.ts).
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';

export const AEAD_TAG_LEN = 16;
const KEY_LEN = 32;

/** Where the cipher runs: libsodium or libcrypto's EVP through FFI (drivers/crypto), or node:crypto. */
export type AeadImpl = 'sodium' | 'evp' | 'node';

/** One direction's sealing under one key. */
export interface AeadSealer {
  readonly impl: AeadImpl;
  /**
   * Seals `plaintext` under counter n (a safe integer ≥ 0) with associated data `ad` into
   * out[at..]: ciphertext, then the tag. Returns the end (at + plaintext.length + AEAD_TAG_LEN).
   * `plaintext` may be out[at, at + length) itself (sealed in place); no other overlap.
   * Throws on the caller's mistakes (lengths, counter), never for any peer's input.
   */
  seal(n: number, ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): number;
  /** Frees native state (idempotent); sealing afterwards throws. */
  close(): void;
}

/** One direction's opening under one key. */
export interface AeadOpener {
  readonly impl: AeadImpl;
  /** The plaintext of `sealed` (ciphertext || tag) in a new array; undefined when it does not authenticate (never throws on it). */
  open(n: number, ad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined;
  close(): void;
}

/** Makes the two directions' contexts of a session from their keys (32 octets each). */
export interface AeadProvider {
  readonly impl: AeadImpl;
  sealer(key: Uint8Array): AeadSealer;
  opener(key: Uint8Array): AeadOpener;
}

/** Writes Noise's ChaChaPoly nonce of counter n (a safe integer ≥ 0) into iv[0..12). */
export function writeChaChaNonce(n: number, iv: Uint8Array): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`AEAD counter ${n} is not a safe integer ≥ 0`);
  const lo = n >>> 0;
  const hi = Math.floor(n / 2 ** 32);
  iv[0] = iv[1] = iv[2] = iv[3] = 0;
  iv[4] = lo & 0xff;
  iv[5] = (lo >>> 8) & 0xff;
  iv[6] = (lo >>> 16) & 0xff;
  iv[7] = lo >>> 24;
  iv[8] = hi & 0xff;
  iv[9] = (hi >>> 8) & 0xff;
  iv[10] = (hi >>> 16) & 0xff;
  iv[11] = hi >>> 24;
}

export function checkAeadKey(key: Uint8Array): void {
  if (key.length !== KEY_LEN) throw new RangeError(`AEAD key of ${key.length} octets, not ${KEY_LEN}`);
}

/** Checks a seal's output bounds (the caller's buffer); throws naming the sizes. */
export function checkSealOut(len: number, out: Uint8Array, at: number): void {
  if (!Number.isInteger(at) || at < 0 || at + len + AEAD_TAG_LEN > out.length) {
    throw new RangeError(`seal output of ${out.length} octets cannot take ${len + AEAD_TAG_LEN} at ${at}`);
  }
}

class NodeSealer implements AeadSealer {
  readonly impl = 'node';
  private readonly key: KeyObject;
  private readonly iv = Buffer.alloc(12);
  private closed = false;
  constructor(key: Uint8Array) {
    checkAeadKey(key);
    this.key = createSecretKey(key); // imported once, not per frame
  }
  seal(n: number, ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): number {
    if (this.closed) throw new Error('AEAD used after close');
    checkSealOut(plaintext.length, out, at);
    writeChaChaNonce(n, this.iv);
    const c = createCipheriv('chacha20-poly1305', this.key, this.iv, { authTagLength: AEAD_TAG_LEN });
    c.setAAD(ad, { plaintextLength: plaintext.length });
    const body = c.update(plaintext);
    out.set(body, at);
    c.final(); // a stream cipher: nothing more
    out.set(c.getAuthTag(), at + body.length);
    return at + body.length + AEAD_TAG_LEN;
  }
  close(): void {
    this.closed = true;
  }
}

class NodeOpener implements AeadOpener {
  readonly impl = 'node';
  private readonly key: KeyObject;
  private readonly iv = Buffer.alloc(12);
  private closed = false;
  constructor(key: Uint8Array) {
    checkAeadKey(key);
    this.key = createSecretKey(key);
  }
  open(n: number, ad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
    if (this.closed) throw new Error('AEAD used after close');
    if (sealed.length < AEAD_TAG_LEN || !Number.isSafeInteger(n) || n < 0) return undefined;
    writeChaChaNonce(n, this.iv);
    const ctLen = sealed.length - AEAD_TAG_LEN;
    const d = createDecipheriv('chacha20-poly1305', this.key, this.iv, { authTagLength: AEAD_TAG_LEN });
    d.setAAD(ad, { plaintextLength: ctLen });
    d.setAuthTag(sealed.subarray(ctLen));
    const body = d.update(sealed.subarray(0, ctLen));
    try {
      d.final();
    } catch {
      return undefined;
    }
    return new Uint8Array(body.buffer, body.byteOffset, body.length);
  }
  close(): void {
    this.closed = true;
  }
}

/** ChaChaPoly through node:crypto: a cipher object per frame (the fallback where no native context is injected). */
export const nodeAead: AeadProvider = {
  impl: 'node',
  sealer: (key) => new NodeSealer(key),
  opener: (key) => new NodeOpener(key),
};

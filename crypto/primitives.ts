/**
 * The primitives ETCP needs, from node:crypto only (no cryptography of our own):
 * X25519 (RFC 7748), ChaCha20-Poly1305 (RFC 8439), BLAKE2s-256 / SHA-256 and their HMAC.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';

export const DHLEN = 32;
export const KEYLEN = 32;
export const TAGLEN = 16;

// DER prefixes that wrap a raw 32-byte X25519 key as PKCS#8 / SPKI (RFC 8410).
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

export interface KeyPair {
  privateKey: Uint8Array;
  publicKey: Uint8Array;
}

/**
 * Importing a raw key into OpenSSL costs more than the X25519 itself (a PKCS#8 decode ~1 ms, SPKI
 * ~0.3 ms, the DH ~0.1 ms here), and a Noise IK handshake uses each of its keys twice, the
 * static one in every handshake: a hub answering 1,000 peers spent most of its handshake time
 * decoding its own key (bench scale). So each key array keeps its KeyObject for as long as the
 * array lives (a WeakMap: nothing outlives the caller's copy), with the bytes it was made from:
 * an array rewritten in place is imported afresh, never answered with the old key.
 */
const imported = new WeakMap<Uint8Array, { bytes: Buffer; key: KeyObject }>();

function cached(raw: Uint8Array, make: () => KeyObject): KeyObject {
  const hit = imported.get(raw);
  if (hit && hit.bytes.equals(raw)) return hit.key;
  const key = make();
  imported.set(raw, { bytes: Buffer.from(raw), key });
  return key;
}

function privateKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== DHLEN) throw new RangeError(`X25519 private key must be ${DHLEN} bytes, got ${raw.length}`);
  return cached(raw, () => createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' }));
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  if (raw.length !== DHLEN) throw new RangeError(`X25519 public key must be ${DHLEN} bytes, got ${raw.length}`);
  return cached(raw, () => createPublicKey({ key: Buffer.concat([SPKI_X25519, raw]), format: 'der', type: 'spki' }));
}

const rawPublic = (k: KeyObject): Uint8Array => {
  const spki = k.export({ format: 'der', type: 'spki' });
  return new Uint8Array(spki.subarray(spki.length - DHLEN));
};

export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  return rawPublic(createPublicKey(privateKeyObject(privateKey)));
}

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const raw = new Uint8Array(pkcs8.subarray(pkcs8.length - DHLEN));
  imported.set(raw, { bytes: Buffer.from(raw), key: privateKey }); // its DHs need no import
  return { privateKey: raw, publicKey: rawPublic(publicKey) };
}

/** X25519(privateKey, publicKey). Throws on an all-zero result (a low-order public key). */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: publicKeyObject(publicKey) }));
  if (out.every((b) => b === 0)) throw new Error('X25519 produced the all-zero value (low-order public key)');
  return out;
}

/** Noise's ChaChaPoly nonce: 32 zero bits, then the 64-bit counter little-endian. */
/** The ChaChaPoly nonce of Noise: 32 zero bits, then the 64-bit counter little-endian. */
export function nonce12(n: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(n >>> 0, 4);
  b.writeUInt32LE(Math.floor(n / 2 ** 32), 8);
  return b;
}

export function aeadEncrypt(key: Uint8Array, n: number, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const c = createCipheriv('chacha20-poly1305', key, nonce12(n), { authTagLength: TAGLEN });
  c.setAAD(ad, { plaintextLength: plaintext.length });
  const body = c.update(plaintext);
  c.final();
  return new Uint8Array(Buffer.concat([body, c.getAuthTag()]));
}

/** Returns undefined when authentication fails (never throws on bad input). */
export function aeadDecrypt(key: Uint8Array, n: number, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array | undefined {
  if (ciphertext.length < TAGLEN) return undefined;
  return chachaOpen(key, nonce12(n), ad, ciphertext);
}

/** ChaCha20-Poly1305 open with a 12-octet nonce; undefined when authentication fails. */
function chachaOpen(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array | undefined {
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAGLEN });
  d.setAAD(ad, { plaintextLength: ciphertext.length - TAGLEN });
  d.setAuthTag(ciphertext.subarray(ciphertext.length - TAGLEN));
  const body = d.update(ciphertext.subarray(0, ciphertext.length - TAGLEN));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return new Uint8Array(body);
}

export type HashName = 'BLAKE2s' | 'SHA256';
const NODE_HASH: Record<HashName, string> = { BLAKE2s: 'blake2s256', SHA256: 'sha256' };
export const HASHLEN = 32;

export function hash(name: HashName, ...parts: Uint8Array[]): Uint8Array {
  const h = createHash(NODE_HASH[name]);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** A hash fed in parts over time (a content-defined chunk as its bytes arrive). */
export interface IncrementalHash {
  update(part: Uint8Array): void;
  digest(): Uint8Array;
}

export function incrementalHash(name: HashName): IncrementalHash {
  const h = createHash(NODE_HASH[name]);
  return { update: (part) => void h.update(part), digest: () => new Uint8Array(h.digest()) };
}

/** Equality in time independent of where the inputs differ (tags, MACs); false on unequal lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function hmac(name: HashName, key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = createHmac(NODE_HASH[name], key);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** Noise's HKDF (section 4.3): 2 or 3 outputs of HASHLEN bytes. */
export function hkdf(name: HashName, chainingKey: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const temp = hmac(name, chainingKey, ikm);
  const o1 = hmac(name, temp, Uint8Array.of(1));
  const o2 = hmac(name, temp, o1, Uint8Array.of(2));
  if (outputs === 2) return [o1, o2];
  return [o1, o2, hmac(name, temp, o2, Uint8Array.of(3))];
}

/**
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2) from node:crypto's ChaCha20, which has no
 * HChaCha20 of its own. One ChaCha20 block over zeros is the 20-round state plus the input
 * state; with the 16-octet IV (counter || nonce) equal to the HChaCha20 nonce, the input words
 * 0-3 (the constant) and 12-15 (the nonce) are known, so subtracting them yields exactly the
 * HChaCha20 output words. Checked against the draft's vector (test/noise.test.ts).
 */
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574];
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Uint8Array {
  if (key.length !== KEYLEN || nonce16.length !== 16) throw new RangeError('hchacha20: 32-octet key and 16-octet nonce');
  const c = createCipheriv('chacha20', key, nonce16);
  const block = Buffer.concat([c.update(Buffer.alloc(64)), c.final()]);
  const n = Buffer.from(nonce16);
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE((block.readUInt32LE(4 * i) - SIGMA[i]) >>> 0, 4 * i);
    out.writeUInt32LE((block.readUInt32LE(48 + 4 * i) - n.readUInt32LE(4 * i)) >>> 0, 16 + 4 * i);
  }
  return new Uint8Array(out);
}

export const XNONCELEN = 24;

/** AEAD_XChaCha20_Poly1305 (draft-irtf-cfrg-xchacha-03 §2.3): a random 24-octet nonce is safe under one long-lived key. */
function xsubkey(key: Uint8Array, nonce: Uint8Array): { k: Uint8Array; n: Buffer } {
  if (nonce.length !== XNONCELEN) throw new RangeError(`XChaCha20 nonce must be ${XNONCELEN} octets`);
  const n = Buffer.alloc(12);
  n.set(nonce.subarray(16, 24), 4);
  return { k: hchacha20(key, nonce.subarray(0, 16)), n };
}

export function xaeadEncrypt(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const { k, n } = xsubkey(key, nonce);
  const c = createCipheriv('chacha20-poly1305', k, n, { authTagLength: TAGLEN });
  c.setAAD(ad, { plaintextLength: plaintext.length });
  const body = c.update(plaintext);
  c.final();
  return new Uint8Array(Buffer.concat([body, c.getAuthTag()]));
}

/** Undefined when authentication fails (never throws on bad input of the right nonce length). */
export function xaeadDecrypt(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array, ciphertext: Uint8Array): Uint8Array | undefined {
  if (ciphertext.length < TAGLEN || nonce.length !== XNONCELEN) return undefined;
  const { k, n } = xsubkey(key, nonce);
  return chachaOpen(k, n, ad, ciphertext);
}

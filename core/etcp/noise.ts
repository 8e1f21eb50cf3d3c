/**
 * The Noise IK handshake (Noise Protocol Framework, revision 34, sections 5 and 7),
 * as WireGuard uses it, for Noise_IK_25519_ChaChaPoly_{BLAKE2s,SHA256}:
 *
 *     IK:
 *       <- s
 *       ...
 *       -> e, es, s, ss
 *       <- e, ee, se
 *
 * A transcription of the specification's CipherState / SymmetricState / HandshakeState,
 * checked against the cacophony and snow test vectors (test/noise.test.ts). Sans-I/O:
 * ephemeral keys come from the caller (or generateKeyPair) so vectors can fix them.
 */
import {
  DHLEN,
  HASHLEN,
  KEYLEN,
  TAGLEN,
  aeadDecrypt,
  aeadEncrypt,
  dh,
  generateKeyPair,
  hash,
  hkdf,
  publicKeyOf,
  type HashName,
  type KeyPair,
} from '../../crypto/primitives.js';

/** Noise nonces are 64-bit; we stop far below the 2^64-1 reserved value, at 2^53 (exact in JS). */
const MAX_NONCE = Number.MAX_SAFE_INTEGER;

export class NoiseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoiseError';
  }
}

export class CipherState {
  private k: Uint8Array | undefined;
  n = 0;

  constructor(key?: Uint8Array) {
    if (key) this.initializeKey(key);
  }

  initializeKey(key: Uint8Array | undefined): void {
    this.k = key;
    this.n = 0;
  }

  hasKey(): boolean {
    return this.k !== undefined;
  }

  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (!this.k) return plaintext;
    if (this.n >= MAX_NONCE) throw new NoiseError('nonce exhausted: rekey');
    return aeadEncrypt(this.k, this.n++, ad, plaintext);
  }

  /** Throws NoiseError on authentication failure; the nonce only advances on success. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (!this.k) return ciphertext;
    if (this.n >= MAX_NONCE) throw new NoiseError('nonce exhausted: rekey');
    const p = aeadDecrypt(this.k, this.n, ad, ciphertext);
    if (!p) throw new NoiseError('decryption failed');
    this.n++;
    return p;
  }

  /** An independent copy (the key is never mutated in place, so it is shared). */
  clone(): CipherState {
    const c = new CipherState(this.k);
    c.n = this.n;
    return c;
  }

  /** The raw key, for transport sessions that use explicit nonces (packet numbers). */
  get key(): Uint8Array {
    if (!this.k) throw new NoiseError('no key');
    return this.k;
  }
}

class SymmetricState {
  ck: Uint8Array;
  h: Uint8Array;
  cs = new CipherState();

  constructor(
    readonly hashName: HashName,
    protocolName: string,
  ) {
    const name = new TextEncoder().encode(protocolName);
    if (name.length <= HASHLEN) {
      this.h = new Uint8Array(HASHLEN);
      this.h.set(name);
    } else this.h = hash(hashName, name);
    this.ck = this.h;
  }

  /**
   * An independent copy, to read a message on and keep only if it authenticates. ck and h are
   * replaced by mixKey and mixHash, never mutated in place, so the copy shares them.
   */
  clone(): SymmetricState {
    const c = new SymmetricState(this.hashName, ''); // '' costs no hash; every field is overwritten
    c.ck = this.ck;
    c.h = this.h;
    c.cs = this.cs.clone();
    return c;
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, temp] = hkdf(this.hashName, this.ck, ikm, 2);
    this.ck = ck;
    this.cs.initializeKey(temp.subarray(0, KEYLEN));
  }

  mixHash(data: Uint8Array): void {
    this.h = hash(this.hashName, this.h, data);
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const c = this.cs.encryptWithAd(this.h, plaintext);
    this.mixHash(c);
    return c;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const p = this.cs.decryptWithAd(this.h, ciphertext);
    this.mixHash(ciphertext);
    return p;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.hashName, this.ck, new Uint8Array(0), 2);
    return [new CipherState(k1.subarray(0, KEYLEN)), new CipherState(k2.subarray(0, KEYLEN))];
  }
}

export interface HandshakeResult {
  /** Initiator → responder and responder → initiator transport ciphers. */
  send: CipherState;
  recv: CipherState;
  /** The handshake hash (channel binding). */
  handshakeHash: Uint8Array;
  remoteStatic: Uint8Array;
}

export interface IKOptions {
  hash: HashName;
  prologue: Uint8Array;
  staticKey: KeyPair;
  /** Fixed ephemeral key (test vectors); generated otherwise. */
  ephemeral?: KeyPair;
}

export function protocolName(h: HashName): string {
  return `Noise_IK_25519_ChaChaPoly_${h}`;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Initiator side: knows the responder's static key in advance. */
export class IKInitiator {
  private ss: SymmetricState;
  private readonly e: KeyPair;
  private sent = false;
  private received = false;

  constructor(
    private readonly o: IKOptions,
    private readonly rs: Uint8Array,
  ) {
    this.ss = new SymmetricState(o.hash, protocolName(o.hash));
    this.ss.mixHash(o.prologue);
    this.ss.mixHash(rs); // pre-message: <- s
    this.e = o.ephemeral ?? generateKeyPair();
  }

  /** -> e, es, s, ss, payload */
  writeMessage1(payload: Uint8Array): Uint8Array {
    if (this.sent) throw new NoiseError('message 1 already written');
    this.sent = true;
    const ss = this.ss;
    ss.mixHash(this.e.publicKey);
    ss.mixKey(dh(this.e.privateKey, this.rs));
    const s = ss.encryptAndHash(this.o.staticKey.publicKey);
    ss.mixKey(dh(this.o.staticKey.privateKey, this.rs));
    const p = ss.encryptAndHash(payload);
    return concat(this.e.publicKey, s, p);
  }

  /**
   * <- e, ee, se, payload. Throws NoiseError if the message does not authenticate, and then
   * changes nothing: the message is read on a copy of the handshake state, kept only once its
   * payload authenticates (as wireguard-go's ConsumeMessageResponse), so a forged message 2
   * cannot spoil the genuine one. Once one has been read, any other is refused before any DH.
   */
  readMessage2(msg: Uint8Array): { payload: Uint8Array; result: HandshakeResult } {
    if (!this.sent) throw new NoiseError('message 1 not written yet');
    if (this.received) throw new NoiseError('message 2 already read');
    if (msg.length < DHLEN + TAGLEN) throw new NoiseError(`message 2 is ${msg.length} bytes, at least ${DHLEN + TAGLEN} needed`);
    const ss = this.ss.clone();
    const re = msg.subarray(0, DHLEN);
    ss.mixHash(re);
    ss.mixKey(dh(this.e.privateKey, re));
    ss.mixKey(dh(this.o.staticKey.privateKey, re));
    const payload = ss.decryptAndHash(msg.subarray(DHLEN));
    this.ss = ss;
    this.received = true;
    const [c1, c2] = ss.split();
    return { payload, result: { send: c1, recv: c2, handshakeHash: ss.h, remoteStatic: this.rs } };
  }
}

/** Responder side: learns the initiator's static key from message 1. */
export class IKResponder {
  private readonly ss: SymmetricState;
  private re: Uint8Array | undefined;
  private rs: Uint8Array | undefined;

  constructor(private readonly o: IKOptions) {
    this.ss = new SymmetricState(o.hash, protocolName(o.hash));
    this.ss.mixHash(o.prologue);
    this.ss.mixHash(o.staticKey.publicKey); // pre-message: <- s
  }

  /** <- e, es, s, ss, payload. Returns the initiator's static key (check it is authorised before answering). */
  readMessage1(msg: Uint8Array): { payload: Uint8Array; remoteStatic: Uint8Array } {
    const min = DHLEN + DHLEN + TAGLEN + TAGLEN;
    if (msg.length < min) throw new NoiseError(`message 1 is ${msg.length} bytes, at least ${min} needed`);
    const ss = this.ss;
    this.re = msg.slice(0, DHLEN);
    ss.mixHash(this.re);
    ss.mixKey(dh(this.o.staticKey.privateKey, this.re));
    this.rs = ss.decryptAndHash(msg.subarray(DHLEN, DHLEN + DHLEN + TAGLEN));
    ss.mixKey(dh(this.o.staticKey.privateKey, this.rs));
    const payload = ss.decryptAndHash(msg.subarray(DHLEN + DHLEN + TAGLEN));
    return { payload, remoteStatic: this.rs };
  }

  /** -> e, ee, se, payload */
  writeMessage2(payload: Uint8Array): { message: Uint8Array; result: HandshakeResult } {
    if (!this.re || !this.rs) throw new NoiseError('message 1 not read yet');
    const ss = this.ss;
    const e = this.o.ephemeral ?? generateKeyPair();
    ss.mixHash(e.publicKey);
    ss.mixKey(dh(e.privateKey, this.re));
    ss.mixKey(dh(e.privateKey, this.rs));
    const p = ss.encryptAndHash(payload);
    const [c1, c2] = ss.split();
    return { message: concat(e.publicKey, p), result: { send: c2, recv: c1, handshakeHash: ss.h, remoteStatic: this.rs } };
  }
}

export function keyPairFromPrivate(privateKey: Uint8Array): KeyPair {
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

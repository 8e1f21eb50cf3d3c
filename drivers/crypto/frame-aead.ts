/**
 * ETCP's Data-frame AEAD (crypto/aead.ts's AeadProvider) through native libraries: Noise's
 * ChaChaPoly, which Node can only do with a cipher object per frame (~5 µs per 100-octet seal
 * here, the largest single cost of a pair update: docs/BENCHMARKS.md, "Issue 16: update rate").
 * libcrypto's EVP keeps one context per session direction keyed once, so a frame costs five FFI
 * calls (IV, associated data, payload, final, tag); libsodium, where the system has it, one.
 * Same algorithm, nonce layout (32 zero bits, the counter little-endian), associated data (the
 * frame header) and tag as node:crypto: the wire does not change (test/frame-aead.test.ts seals
 * with each and opens with the others). Where neither library loads, node:crypto's.
 */
import {
  AEAD_TAG_LEN,
  checkAeadKey,
  checkSealOut,
  nodeAead,
  writeChaChaNonce,
  type AeadImpl,
  type AeadOpener,
  type AeadProvider,
  type AeadSealer,
} from '../../crypto/aead.js';
import { EVP_CTRL_AEAD_GET_TAG, EVP_CTRL_AEAD_SET_TAG, EvpCtx, loadEvp, type Evp } from './evp.js';
import { loadSodium, Workspace, type Sodium } from './sodium.js';

/** Largest plaintext or associated data one call takes (EVP lengths are C ints; frames are far smaller). */
const MAX_LEN = 1 << 24;

class EvpFrameSealer implements AeadSealer {
  readonly impl = 'evp';
  private readonly c: EvpCtx;
  private readonly iv = new Uint8Array(12);
  private readonly outl = new Int32Array(1);
  private readonly scratch = new Uint8Array(16);

  constructor(key: Uint8Array, e: Evp) {
    checkAeadKey(key);
    this.c = new EvpCtx(e, this);
    if (e.encInit(this.c.ptr, e.cipher['chacha20-poly1305'], null, key, null) !== 1)
      throw new Error('EVP_EncryptInit_ex (chacha20-poly1305) failed');
  }

  seal(n: number, ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): number {
    const ctx = this.c.ptr;
    const e = this.c.e;
    const len = plaintext.length;
    if (len > MAX_LEN || ad.length > MAX_LEN) throw new RangeError(`AEAD input of ${Math.max(len, ad.length)} octets, at most ${MAX_LEN}`);
    checkSealOut(len, out, at);
    writeChaChaNonce(n, this.iv);
    if (e.encInit(ctx, null, null, null, this.iv) !== 1) throw new Error('EVP_EncryptInit_ex (IV) failed');
    if (ad.length > 0 && e.encUpdate(ctx, null, this.outl, ad, ad.length) !== 1) throw new Error('EVP_EncryptUpdate (AD) failed');
    // A stream cipher writes exactly inl octets per update.
    if (len > 0 && (e.encUpdate(ctx, at === 0 ? out : out.subarray(at), this.outl, plaintext, len) !== 1 || this.outl[0] !== len)) {
      throw new Error('EVP_EncryptUpdate failed');
    }
    if (e.encFinal(ctx, this.scratch, this.outl) !== 1 || this.outl[0] !== 0) throw new Error('EVP_EncryptFinal_ex failed');
    if (e.ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, out.subarray(at + len, at + len + AEAD_TAG_LEN)) !== 1) {
      throw new Error('EVP_CTRL_AEAD_GET_TAG failed');
    }
    return at + len + AEAD_TAG_LEN;
  }

  close(): void {
    this.c.free();
  }
}

class EvpFrameOpener implements AeadOpener {
  readonly impl = 'evp';
  private readonly c: EvpCtx;
  private readonly iv = new Uint8Array(12);
  private readonly outl = new Int32Array(1);
  private readonly scratch = new Uint8Array(16);
  private readonly tag = new Uint8Array(AEAD_TAG_LEN);

  constructor(key: Uint8Array, e: Evp) {
    checkAeadKey(key);
    this.c = new EvpCtx(e, this);
    if (e.decInit(this.c.ptr, e.cipher['chacha20-poly1305'], null, key, null) !== 1)
      throw new Error('EVP_DecryptInit_ex (chacha20-poly1305) failed');
  }

  /** Never throws on the frame: a failure of any step is a frame that does not open. */
  open(n: number, ad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
    const ctx = this.c.ptr; // after close: throws (the caller's mistake, not the peer's input)
    const e = this.c.e;
    const ctLen = sealed.length - AEAD_TAG_LEN;
    if (ctLen < 0 || ctLen > MAX_LEN || ad.length > MAX_LEN || !Number.isSafeInteger(n) || n < 0) return undefined;
    writeChaChaNonce(n, this.iv);
    if (e.decInit(ctx, null, null, null, this.iv) !== 1) return undefined;
    if (ad.length > 0 && e.decUpdate(ctx, null, this.outl, ad, ad.length) !== 1) return undefined;
    const out = new Uint8Array(ctLen);
    // `sealed` starts with the ciphertext: libcrypto reads its first ctLen octets.
    if (ctLen > 0 && (e.decUpdate(ctx, out, this.outl, sealed, ctLen) !== 1 || this.outl[0] !== ctLen)) return undefined;
    for (let i = 0; i < AEAD_TAG_LEN; i++) this.tag[i] = sealed[ctLen + i];
    if (e.ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, this.tag) !== 1) return undefined;
    // Final verifies the tag; the plaintext is handed out only when it did.
    return e.decFinal(ctx, this.scratch, this.outl) === 1 ? out : undefined;
  }

  close(): void {
    this.c.free();
  }
}

/** One direction's key in a Workspace (native memory), with its views for the by-address and typed-array calls. */
abstract class SodiumKeyed {
  protected readonly w: Workspace;
  protected readonly key: Uint8Array;
  protected readonly nonce: Uint8Array;
  protected readonly iv = new Uint8Array(12);

  constructor(
    key: Uint8Array,
    protected readonly s: Sodium,
  ) {
    checkAeadKey(key);
    this.w = new Workspace(this);
    this.w.bytes.set(key, Workspace.KEY);
    this.key = this.w.bytes.subarray(Workspace.KEY, Workspace.KEY + 32);
    this.nonce = this.w.bytes.subarray(Workspace.NONCE, Workspace.NONCE + 12);
  }
}

/**
 * libsodium's one-call AEAD. Each direction keeps its key in native memory (a Workspace) with
 * room for a frame: a frame is copied in, sealed or opened there by address, and copied out.
 * Inputs larger than the workspace (never an ETCP frame) are passed as typed arrays instead.
 */
class SodiumFrameSealer extends SodiumKeyed implements AeadSealer {
  readonly impl = 'sodium';

  seal(n: number, ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): number {
    const w = this.w;
    if (w.freed) throw new Error('AEAD used after close');
    const len = plaintext.length;
    if (len > MAX_LEN || ad.length > MAX_LEN) throw new RangeError(`AEAD input of ${Math.max(len, ad.length)} octets, at most ${MAX_LEN}`);
    checkSealOut(len, out, at);
    const b = w.bytes;
    const end = at + len + AEAD_TAG_LEN;
    if (len > Workspace.CAP || ad.length > Workspace.AD_CAP) {
      writeChaChaNonce(n, this.iv);
      // In place (plaintext inside out): a copy first, not a bet on how libsodium handles overlap.
      const m = plaintext.buffer === out.buffer ? plaintext.slice() : plaintext;
      if (this.s.seal(at === 0 ? out : out.subarray(at), null, m, len, ad, ad.length, null, this.iv, this.key) !== 0) {
        throw new Error('crypto_aead_chacha20poly1305_ietf_encrypt failed');
      }
      return end;
    }
    writeChaChaNonce(n, this.nonce);
    b.set(ad, Workspace.AD);
    b.set(plaintext, Workspace.IN);
    if (w.sealIn(this.s.sealAt, len, ad.length) !== 0) {
      throw new Error('crypto_aead_chacha20poly1305_ietf_encrypt failed');
    }
    for (let i = 0, o = Workspace.OUT; i < len + AEAD_TAG_LEN; i++) out[at + i] = b[o + i];
    return end;
  }

  close(): void {
    this.w.free();
  }
}

class SodiumFrameOpener extends SodiumKeyed implements AeadOpener {
  readonly impl = 'sodium';

  open(n: number, ad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
    const w = this.w;
    if (w.freed) throw new Error('AEAD used after close');
    const ctLen = sealed.length - AEAD_TAG_LEN;
    if (ctLen < 0 || ctLen > MAX_LEN || ad.length > MAX_LEN || !Number.isSafeInteger(n) || n < 0) return undefined;
    if (sealed.length > Workspace.CAP || ad.length > Workspace.AD_CAP) {
      writeChaChaNonce(n, this.iv);
      const out = new Uint8Array(ctLen);
      // libsodium checks the tag before it writes any plaintext.
      return this.s.open(out, null, null, sealed, sealed.length, ad, ad.length, this.iv, this.key) === 0 ? out : undefined;
    }
    const b = w.bytes;
    writeChaChaNonce(n, this.nonce);
    b.set(ad, Workspace.AD);
    b.set(sealed, Workspace.IN);
    if (w.openIn(this.s.openAt, sealed.length, ad.length) !== 0) {
      return undefined;
    }
    return b.slice(Workspace.OUT, Workspace.OUT + ctLen);
  }

  close(): void {
    this.w.free();
  }
}

/** ChaCha20-Poly1305 through libsodium, one call per frame. */
export function sodiumFrameAead(s: Sodium): AeadProvider {
  return { impl: 'sodium', sealer: (key) => new SodiumFrameSealer(key, s), opener: (key) => new SodiumFrameOpener(key, s) };
}

/** ChaChaPoly through libcrypto's EVP, one context per direction. */
export function evpFrameAead(e: Evp): AeadProvider {
  return { impl: 'evp', sealer: (key) => new EvpFrameSealer(key, e), opener: (key) => new EvpFrameOpener(key, e) };
}

/**
 * The fastest available: libsodium (one FFI call per frame), else libcrypto's EVP (five), else
 * node:crypto (loading libcrypto warns once when it fails). `impl` forces one (tests, benches).
 */
export function frameAead(impl?: AeadImpl): AeadProvider {
  if (impl === 'node') return nodeAead;
  if (impl === undefined || impl === 'sodium') {
    const s = loadSodium();
    if (s) return sodiumFrameAead(s);
    if (impl === 'sodium') throw new Error('libsodium is not available');
  }
  const e = loadEvp();
  if (impl === 'evp' && !e) throw new Error('libcrypto EVP is not available');
  return e ? evpFrameAead(e) : nodeAead;
}

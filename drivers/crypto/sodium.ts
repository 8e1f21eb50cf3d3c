/**
 * libsodium's IETF ChaCha20-Poly1305 (RFC 8439, Noise's ChaChaPoly) and, where the CPU has it,
 * AES-256-GCM through koffi: one call seals a frame or a small carrier record (ciphertext and tag
 * together, the nonce and key passed in), one call opens it, where EVP needs five
 * (drivers/crypto/evp.ts). At datagram sizes the FFI calls, not the cipher, are the cost
 * (docs/BENCHMARKS.md, "Issue 16: update rate"). Loaded when the system has libsodium.so.23; else
 * null, and the caller uses EVP or node:crypto.
 *
 * FFI safety: every buffer passed is a live JS typed array and every length is checked against it
 * by the caller before the call; the calls are synchronous and libsodium keeps no pointer.
 */
import koffi from 'koffi';

export interface Sodium {
  /** As seal and open, with every pointer an address in a Workspace (nothing marshalled but integers: half the call's cost). */
  sealAt: (c: number, clenP: 0, m: number, mlen: number, ad: number, adlen: number, nsec: 0, npub: number, k: number) => number;
  openAt: (m: number, mlenP: 0, nsec: 0, c: number, clen: number, ad: number, adlen: number, npub: number, k: number) => number;
  /** 0 on success; writes mlen + 16 octets at c. */
  seal: (
    c: Uint8Array,
    clenP: null,
    m: Uint8Array,
    mlen: number,
    ad: Uint8Array,
    adlen: number,
    nsec: null,
    npub: Uint8Array,
    k: Uint8Array,
  ) => number;
  /**
   * AES-256-GCM by address, as sealAt and openAt (the carrier's records, drivers/wrap/aead-evp.ts);
   * undefined where libsodium has no AES-GCM on this CPU (it needs AES-NI and PCLMULQDQ).
   */
  aesSealAt?: Sodium['sealAt'];
  aesOpenAt?: Sodium['openAt'];
  /** 0 when the tag verifies (then mlen = clen - 16 octets written at m), -1 otherwise. */
  open: (
    m: Uint8Array,
    mlenP: null,
    nsec: null,
    c: Uint8Array,
    clen: number,
    ad: Uint8Array,
    adlen: number,
    npub: Uint8Array,
    k: Uint8Array,
  ) => number;
}

let sodium: Sodium | null | undefined;
let libName = 'libsodium.so.23';
let forceOff = false;

/** For benches (a same-run baseline) and tests: act as if libsodium were absent. */
export function disableSodium(on: boolean): void {
  forceOff = on;
}

/** For tests only: forget the loaded library and try `name` next. */
export function reloadSodiumForTest(name: string): void {
  libName = name;
  sodium = undefined;
}

/** The bound functions, or null where libsodium cannot be loaded or initialised (silently: EVP or node:crypto take over). */
export function loadSodium(): Sodium | null {
  if (forceOff) return null;
  if (sodium !== undefined) return sodium;
  try {
    const l = koffi.load(libName);
    if ((l.func('int sodium_init()')() as number) < 0) throw new Error('sodium_init failed');
    const U = 'uintptr_t';
    const L = 'unsigned long long';
    const aes = (l.func('int crypto_aead_aes256gcm_is_available()')() as number) === 1;
    sodium = {
      sealAt: l.func(
        `int crypto_aead_chacha20poly1305_ietf_encrypt(${U} c, ${U} clen_p, ${U} m, ${L} mlen, ${U} ad, ${L} adlen, ${U} nsec, ${U} npub, ${U} k)`,
      ),
      openAt: l.func(
        `int crypto_aead_chacha20poly1305_ietf_decrypt(${U} m, ${U} mlen_p, ${U} nsec, ${U} c, ${L} clen, ${U} ad, ${L} adlen, ${U} npub, ${U} k)`,
      ),
      aesSealAt: aes
        ? l.func(
            `int crypto_aead_aes256gcm_encrypt(${U} c, ${U} clen_p, ${U} m, ${L} mlen, ${U} ad, ${L} adlen, ${U} nsec, ${U} npub, ${U} k)`,
          )
        : undefined,
      aesOpenAt: aes
        ? l.func(
            `int crypto_aead_aes256gcm_decrypt(${U} m, ${U} mlen_p, ${U} nsec, ${U} c, ${L} clen, ${U} ad, ${L} adlen, ${U} npub, ${U} k)`,
          )
        : undefined,
      seal: l.func(
        'int crypto_aead_chacha20poly1305_ietf_encrypt(uint8_t *c, void *clen_p, const uint8_t *m, unsigned long long mlen, const uint8_t *ad, unsigned long long adlen, void *nsec, const uint8_t *npub, const uint8_t *k)',
      ),
      open: l.func(
        'int crypto_aead_chacha20poly1305_ietf_decrypt(uint8_t *m, void *mlen_p, void *nsec, const uint8_t *c, unsigned long long clen, const uint8_t *ad, unsigned long long adlen, const uint8_t *npub, const uint8_t *k)',
      ),
    };
  } catch {
    sodium = null;
  }
  return sodium;
}

const spaces = new FinalizationRegistry<{ mem: unknown; bytes: Uint8Array; freed: boolean }>((h) => {
  if (!h.freed) {
    h.freed = true;
    h.bytes.fill(0); // the key, as free() does
    koffi.free(h.mem);
  }
});

/**
 * Native memory of one session direction, at fixed offsets: the key, the nonce, associated data,
 * the input and the output. A frame is copied in, sealed or opened by address, and copied out:
 * koffi then marshals nine integers instead of five typed arrays. Freed once by free(), with a
 * FinalizationRegistry as the backstop for one never freed.
 */
export class Workspace {
  static readonly KEY = 0;
  static readonly NONCE = 32;
  static readonly AD = 48;
  /** Largest associated data and input (an ETCP frame is at most 1,452 octets; larger go through typed arrays). */
  static readonly AD_CAP = 80;
  static readonly IN = 128;
  static readonly CAP = 2048;
  static readonly OUT = Workspace.IN + Workspace.CAP + 16;
  static readonly SIZE = Workspace.OUT + Workspace.CAP + 16;

  /** The memory as octets (a view: valid until free()). */
  readonly bytes: Uint8Array;
  /** Its address. */
  readonly base: number;
  private readonly h: { mem: unknown; bytes: Uint8Array; freed: boolean };

  constructor(owner: object) {
    const mem = koffi.alloc('uint8_t', Workspace.SIZE);
    this.bytes = new Uint8Array(koffi.view(mem, Workspace.SIZE));
    this.h = { mem, bytes: this.bytes, freed: false };
    spaces.register(owner, this.h, this);
    this.base = Number(koffi.address(mem));
    if (!Number.isSafeInteger(this.base) || this.base === 0) throw new Error('workspace address is not a safe integer');
  }

  get freed(): boolean {
    return this.h.freed;
  }

  /** `seal` (a by-address seal: sealAt, aesSealAt) of IN[0, len) with AD[0, adLen) into OUT (ciphertext, tag); libsodium's result, 0 when sealed. */
  sealIn(seal: Sodium['sealAt'], len: number, adLen: number): number {
    const b = this.base;
    return seal(b + Workspace.OUT, 0, b + Workspace.IN, len, b + Workspace.AD, adLen, 0, b + Workspace.NONCE, b + Workspace.KEY);
  }

  /** `open` (openAt, aesOpenAt) of the sealed IN[0, sealedLen) with AD[0, adLen) into OUT; 0 when the tag verified. */
  openIn(open: Sodium['openAt'], sealedLen: number, adLen: number): number {
    const b = this.base;
    return open(b + Workspace.OUT, 0, 0, b + Workspace.IN, sealedLen, b + Workspace.AD, adLen, b + Workspace.NONCE, b + Workspace.KEY);
  }

  free(): void {
    if (this.h.freed) return;
    this.bytes.fill(0); // the key
    this.h.freed = true;
    spaces.unregister(this);
    koffi.free(this.h.mem);
  }
}

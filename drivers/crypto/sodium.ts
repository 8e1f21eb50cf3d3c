/**
 * libsodium's IETF ChaCha20-Poly1305 (RFC 8439, Noise's ChaChaPoly) through koffi: one call seals a
 * frame (ciphertext and tag together, the nonce and key passed in), one call opens it, where EVP
 * needs five (drivers/crypto/evp.ts). At datagram sizes the FFI calls, not the cipher, are the cost
 * (docs/BENCHMARKS.md, "Issue 16: update rate"). Loaded when the system has libsodium.so.23; else
 * null, and the caller uses EVP or node:crypto.
 *
 * FFI safety: every buffer passed is a live JS typed array and every length is checked against it
 * by the caller before the call; the calls are synchronous and libsodium keeps no pointer.
 */
import koffi from 'koffi';

export interface Sodium {
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
    sodium = {
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

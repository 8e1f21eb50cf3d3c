/**
 * End-to-end seals for relayed QN messages (docs/PROTOCOL.md §15.5).
 *
 * A relay member forwards a message between two members that cannot hear each other; ETCP
 * protects each hop, but the relay itself sees and could rewrite the message. The origin
 * therefore seals it for the destination, in the manner of NaCl's crypto_box (static-static
 * Diffie-Hellman, then an AEAD), from the primitives ETCP already uses (§12):
 *
 *   k(A→B)  = HKDF(ck = BLAKE2s("Spook QN relay v1" || pkA || pkB), X25519(sA, pkB))[0]
 *   salt    = 16 random octets per message
 *   key     = HMAC-BLAKE2s(k(A→B), salt)         (a fresh key per message, as age's payload key)
 *   box     = salt || ChaCha20-Poly1305(key, nonce 0, ad = header, body)
 *
 * `header` is the envelope without its ttl (type, domain, from, to), so a relay can neither
 * change who the message claims to come from or go to, nor its body. Including both public
 * keys, in direction order, makes A→B and B→A keys differ (no reflection). Randomness is
 * injected (the simulator is seeded); a fresh key per message means no nonce is ever reused
 * under one key while the salts do not repeat (2^-64 after 2^32 messages).
 */
import { DHLEN, TAGLEN, aeadDecrypt, aeadEncrypt, dh, hash, hkdf, hmac, type KeyPair } from './crypto.js';

const LABEL = new TextEncoder().encode('Spook QN relay v1');
export const SEAL_SALT_LEN = 16;
/** Octets a seal adds to the body it carries. */
export const SEAL_OVERHEAD = SEAL_SALT_LEN + TAGLEN;

export interface RelaySealer {
  /** The box for `to`, or undefined if `to` has no known key. */
  seal(to: number, header: Uint8Array, body: Uint8Array): Uint8Array | undefined;
  /** The body sealed by `from`, or undefined if `from` is unknown or the box does not open. */
  open(from: number, header: Uint8Array, box: Uint8Array): Uint8Array | undefined;
}

/** Seals between this host's static key and its peers' (by node id). */
export class StaticRelaySealer implements RelaySealer {
  private readonly keys = new Map<number, { out: Uint8Array; in: Uint8Array }>();

  constructor(
    private readonly self: KeyPair,
    /** A peer's static public key by node id (a map, or a lookup that may compute it lazily). */
    private readonly peers: ReadonlyMap<number, Uint8Array> | ((id: number) => Uint8Array | undefined),
    private readonly random: (n: number) => Uint8Array,
  ) {}

  /** k(origin→dest), from one X25519 per peer (both directions share it). */
  private key(peer: number, outbound: boolean): Uint8Array | undefined {
    let pair = this.keys.get(peer);
    if (!pair) {
      const pk = typeof this.peers === 'function' ? this.peers(peer) : this.peers.get(peer);
      if (!pk || pk.length !== DHLEN) return undefined;
      let shared: Uint8Array;
      try {
        shared = dh(this.self.privateKey, pk);
      } catch {
        return undefined; // a low-order peer key: nothing can be sealed for it or opened from it
      }
      const k = (a: Uint8Array, b: Uint8Array): Uint8Array => hkdf('BLAKE2s', hash('BLAKE2s', LABEL, a, b), shared, 2)[0];
      pair = { out: k(this.self.publicKey, pk), in: k(pk, this.self.publicKey) };
      this.keys.set(peer, pair);
    }
    return outbound ? pair.out : pair.in;
  }

  seal(to: number, header: Uint8Array, body: Uint8Array): Uint8Array | undefined {
    const k = this.key(to, true);
    if (!k) return undefined;
    const salt = this.random(SEAL_SALT_LEN);
    const ct = aeadEncrypt(hmac('BLAKE2s', k, salt), 0, header, body);
    const out = new Uint8Array(SEAL_SALT_LEN + ct.length);
    out.set(salt);
    out.set(ct, SEAL_SALT_LEN);
    return out;
  }

  open(from: number, header: Uint8Array, box: Uint8Array): Uint8Array | undefined {
    if (box.length < SEAL_OVERHEAD) return undefined;
    const k = this.key(from, false);
    if (!k) return undefined;
    return aeadDecrypt(hmac('BLAKE2s', k, box.subarray(0, SEAL_SALT_LEN)), 0, header, box.subarray(SEAL_SALT_LEN));
  }
}

/**
 * End-to-end seals for relayed QN messages (docs/PROTOCOL.md §15.5).
 *
 * A relay member forwards a message between two members that cannot hear each other; ETCP
 * protects each hop, but the relay itself sees the message and could forge or alter one. The
 * origin therefore authenticates it for the destination as NaCl does between two static keys
 * (crypto_box's key agreement, then a MAC as crypto_auth), from the primitives ETCP uses (§12):
 *
 *   k(A→B) = HKDF(ck = BLAKE2s("Spook QN relay v1" || pkA || pkB), X25519(sA, pkB))[0]
 *   tag    = HMAC-BLAKE2s(k(A→B), header || body), first 16 octets
 *   box    = body || tag
 *
 * `header` is the envelope without its ttl (type, domain, from, to), so a relay can change
 * neither who the message claims to come from or go to, nor its body. Both public keys, in
 * direction order, make A→B and B→A keys differ (no reflection). Only authenticity is needed:
 * the relay is a member and holds the domain's state anyway, and ETCP hides every hop from
 * everyone else; a MAC needs no nonce, so nothing can be reused.
 */
import { DHLEN, constantTimeEqual, dh, hash, hkdf, hmac, type KeyPair } from '../../crypto/primitives.js';

const LABEL = new TextEncoder().encode('Spook QN relay v1');
/** Octets a seal adds to the body it carries: the tag (HMAC-BLAKE2s truncated to 128 bits). */
export const SEAL_OVERHEAD = 16;
const TAG = SEAL_OVERHEAD;

export interface RelaySealer {
  /** The box for `to`, or undefined if `to` has no known key. */
  seal(to: number, header: Uint8Array, body: Uint8Array): Uint8Array | undefined;
  /** The body sealed by `from`, or undefined if `from` is unknown or the box does not open. */
  open(from: number, header: Uint8Array, box: Uint8Array): Uint8Array | undefined;
}

/**
 * The per-direction keys k(A→B) between this host's static key and its peers' (by node id),
 * computed on first use: one X25519 per peer serves both directions.
 */
export class RelayKeyring {
  private readonly keys = new Map<number, { out: Uint8Array; in: Uint8Array }>();

  constructor(
    private readonly self: KeyPair,
    /** A peer's static public key by node id (a map, or a lookup that may compute it lazily). */
    private readonly peers: ReadonlyMap<number, Uint8Array> | ((id: number) => Uint8Array | undefined),
  ) {}

  key(peer: number, outbound: boolean): Uint8Array | undefined {
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
}

/** Seals between this host's static key and its peers' (by node id). */
export class StaticRelaySealer implements RelaySealer {
  private readonly keyring: RelayKeyring;

  /** Either a key pair and the peers' public keys, or a keyring shared with other sealers of the same host. */
  constructor(self: KeyPair | RelayKeyring, peers?: ReadonlyMap<number, Uint8Array> | ((id: number) => Uint8Array | undefined)) {
    this.keyring = self instanceof RelayKeyring ? self : new RelayKeyring(self, peers ?? new Map());
  }

  seal(to: number, header: Uint8Array, body: Uint8Array): Uint8Array | undefined {
    const k = this.keyring.key(to, true);
    if (!k) return undefined;
    const tag = hmac('BLAKE2s', k, header, body);
    const out = new Uint8Array(body.length + TAG);
    out.set(body);
    out.set(tag.subarray(0, TAG), body.length);
    return out;
  }

  open(from: number, header: Uint8Array, box: Uint8Array): Uint8Array | undefined {
    if (box.length < TAG + 1) return undefined;
    const k = this.keyring.key(from, false);
    if (!k) return undefined;
    const body = box.subarray(0, box.length - TAG);
    const tag = hmac('BLAKE2s', k, header, body);
    return constantTimeEqual(tag.subarray(0, TAG), box.subarray(box.length - TAG)) ? body.slice() : undefined;
  }
}

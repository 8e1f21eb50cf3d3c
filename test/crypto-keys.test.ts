import { describe, expect, it } from 'vitest';
import { dh, generateKeyPair, publicKeyOf } from '../crypto/primitives.js';

// The imported-key cache of crypto/primitives.ts must never answer with a stale key.
describe('X25519 key import cache', () => {
  it('agrees with a fresh import, and follows an array rewritten in place', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const c = generateKeyPair();
    const ab = dh(a.privateKey, b.publicKey);
    expect(dh(b.privateKey, a.publicKey)).toEqual(ab);
    expect(dh(new Uint8Array(a.privateKey), new Uint8Array(b.publicKey))).toEqual(ab); // copies: imported afresh
    expect(publicKeyOf(new Uint8Array(a.privateKey))).toEqual(a.publicKey);
    // The same arrays now holding other keys.
    const priv = new Uint8Array(a.privateKey);
    const pub = new Uint8Array(b.publicKey);
    expect(dh(priv, pub)).toEqual(ab);
    priv.set(c.privateKey);
    expect(dh(priv, pub)).toEqual(dh(c.privateKey, b.publicKey));
    pub.set(a.publicKey);
    expect(dh(priv, pub)).toEqual(dh(a.privateKey, c.publicKey));
    expect(publicKeyOf(priv)).toEqual(c.publicKey);
  });
});

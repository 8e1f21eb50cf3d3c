/**
 * A peer removed by a reload (EtcpEndpoint.removePeer) leaves no privilege behind in the handshake
 * limits: the host of its latest handshake is no longer exempt from the global DH bucket (§12.8).
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair } from '../crypto/primitives.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

describe('a removed peer and the handshake DH limits', () => {
  it('its last source is held to the global DH bucket again, as any stranger', () => {
    const kb = generateKeyPair();
    const ka = generateKeyPair(); // the peer the operator removes
    const kc = generateKeyPair(); // strangers that know b's public key
    const threshold = 2;
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, cookieThreshold: threshold });
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const stranger = (): EtcpEndpoint => new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    let now = 1000;
    expect(b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:1').kind).toBe('respond');

    b.removePeer(ka.publicKey);

    // Under load, and the global bucket emptied by strangers holding cookies.
    const warm = stranger();
    for (let i = 0; i <= threshold; i++) b.handleHandshake(now, warm.initiate(now, kb.publicKey), `198.51.100.200:${i}`);
    const cookied = (ep: EtcpEndpoint, src: string): void => {
      const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
      expect(r.kind).toBe('cookie');
      if (r.kind === 'cookie') ep.handleHandshake(now, r.datagram, 'b');
    };
    const strangers = Array.from({ length: 10 }, (_, i) => ({ src: `198.51.100.${i}:4000`, ep: stranger() }));
    for (const s of strangers) cookied(s.ep, s.src);
    cookied(a, '192.0.2.1:1');
    now += 1000;
    for (const s of strangers) b.handleHandshake(now, s.ep.initiate(now, kb.publicKey), s.src);
    now += 1;
    const late = stranger();
    cookied(late, '203.0.113.9:1');
    const rl = b.handleHandshake(now, late.initiate(now, kb.publicKey), '203.0.113.9:1');
    expect(rl.kind === 'drop' && rl.reason).toBe('dh-rate-limited');
    // The removed peer from its old address: no DH either (before: one, then `unauthorized-key`).
    const ra = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:1');
    expect(ra.kind === 'drop' && ra.reason).toBe('dh-rate-limited');
  });
});

/**
 * The per-source DH limit under load counts by source host, the key the exemption from the global
 * DH bucket uses (PROTOCOL.md §12.8; spookd's sourceHost: the IP address): a host gets
 * perSourceLimit DHs a second however many ports it sends from. The exact address of a peer's
 * latest handshake counts on its own, so another sender at the peer's IP cannot spend its share.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint, type HandshakeOutcome } from '../core/etcp/endpoint.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const host = (src: string): string => src.slice(0, src.lastIndexOf(':')); // spookd's sourceHost
const reason = (r: HandshakeOutcome): string => (r.kind === 'drop' ? r.reason : r.kind);

const THRESHOLD = 5; // global bucket: 2 x 5 = 10 DHs a second
const PER_SOURCE = 5;

/** b, under load, with peer a configured at `aAt`; `ports` cookie-holding senders of unauthorised key c at `ip`. */
function loaded(aAt: string, ip: string, ports: number) {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const kc = generateKeyPair(); // not authorised; knows b's public key
  const b = new EtcpEndpoint({
    staticKey: kb,
    peers: [{ publicKey: ka.publicKey, name: 'a' }],
    random,
    cookieThreshold: THRESHOLD,
    perSourceLimit: PER_SOURCE,
    sourceHost: host,
    knownSources: [{ peer: 'a', source: aAt }],
  });
  const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
  let now = 1000;
  const warm = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
  for (let i = 0; i <= THRESHOLD; i++) b.handleHandshake(now, warm.initiate(now, kb.publicKey), `198.51.100.1:${i}`);
  expect(b.underLoad(now)).toBe(true);
  const srcs = Array.from({ length: ports }, (_, i) => ({
    src: `${ip}:${20000 + i}`,
    ep: new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random }),
  }));
  // Each port receives its own cookie.
  for (const { src, ep } of srcs) {
    const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
    expect(r.kind).toBe('cookie');
    if (r.kind === 'cookie') expect(ep.handleHandshake(now, r.datagram, 'b').kind).toBe('cookie-stored');
  }
  now += 1000;
  return { a, b, kb, srcs, now };
}

function flood(b: EtcpEndpoint, kb: KeyPair, srcs: { src: string; ep: EtcpEndpoint }[], now: number, reps: number) {
  const out: Record<string, number> = {};
  for (let rep = 0; rep < reps; rep++)
    for (const { src, ep } of srcs) {
      const k = reason(b.handleHandshake(now + rep, ep.initiate(now + rep, kb.publicKey), src));
      out[k] = (out[k] ?? 0) + 1;
    }
  return out;
}

/** a's init with mac2 from `src`: its cookie first (the responder is under load). */
function handshakeFrom(a: EtcpEndpoint, b: EtcpEndpoint, kb: KeyPair, now: number, src: string): string {
  const r1 = b.handleHandshake(now, a.initiate(now, kb.publicKey), src);
  if (r1.kind !== 'cookie') return reason(r1);
  a.handleHandshake(now, r1.datagram, 'b');
  return reason(b.handleHandshake(now, a.initiate(now, kb.publicKey), src));
}

describe('the per-source DH limit counts per host, as the exemption does (§12.8)', () => {
  it('attack: an unauthorised key at a peer’s exempt IP, from 400 ports, gets perSourceLimit DHs a second in all, not per port', () => {
    const { a, b, kb, srcs, now } = loaded('203.0.113.7:51820', '203.0.113.7', 400);
    const out = flood(b, kb, srcs, now, 5);
    console.log(`400 ports of the exempt IP, 5 inits each within ~5 ms: ${JSON.stringify(out)}`);
    expect(out['unauthorized-key']).toBe(PER_SOURCE);
    expect(out['source-rate-limited']).toBe(5 * 400 - PER_SOURCE);
    // The next second, the host's share again: no more.
    expect(flood(b, kb, srcs, now + 1000, 1)['unauthorized-key']).toBe(PER_SOURCE);
    // The peer, from the exact address it is known at, still handshakes in that second (its own share, no bucket).
    expect(handshakeFrom(a, b, kb, now + 1001, '203.0.113.7:51820')).toBe('respond');
  });

  it('the peer’s exact address keeps its own share; from another port of its IP it shares the host’s', () => {
    const { a, b, kb, srcs, now } = loaded('203.0.113.7:51820', '203.0.113.7', 10);
    // Before the flood: a's new port is exempt from the bucket (same IP), and it handshakes.
    expect(handshakeFrom(a, b, kb, now, '203.0.113.7:40000')).toBe('respond');
    // That handshake made 203.0.113.7:40000 a's exact address. The next second, still under load,
    // the flood spends the host's share from other ports; a's exact address keeps its own.
    const kw = generateKeyPair();
    const warm = new EtcpEndpoint({ staticKey: kw, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    for (let i = 0; i <= THRESHOLD; i++) b.handleHandshake(now + 1000, warm.initiate(now + 1000, kb.publicKey), `198.51.100.2:${i}`);
    expect(b.underLoad(now + 1000)).toBe(true);
    expect(flood(b, kb, srcs, now + 1000, 3)['unauthorized-key']).toBe(PER_SOURCE);
    expect(handshakeFrom(a, b, kb, now + 1001, '203.0.113.7:40000')).toBe('respond');
    // A third port of a's IP, after the host's share is spent this second: limited like any sender there.
    expect(handshakeFrom(a, b, kb, now + 1002, '203.0.113.7:40001')).toBe('source-rate-limited');
  });

  it('a host that is not exempt: perSourceLimit per host however many ports, and the global bucket on top', () => {
    const { b, kb, srcs, now } = loaded('203.0.113.7:51820', '2001:db8::66', 100);
    const out = flood(b, kb, srcs, now, 3);
    console.log(`100 ports of an IPv6 host, 3 inits each: ${JSON.stringify(out)}`);
    expect(out['unauthorized-key']).toBe(PER_SOURCE);
    expect(out['source-rate-limited']).toBe(300 - PER_SOURCE);
  });

  it('hosts are told apart: 20 hosts of 20 ports each get the global bucket in all (2 x threshold), the rest refused', () => {
    const { b, kb, srcs, now } = loaded('203.0.113.7:51820', '198.51.100.50', 1);
    const many = Array.from({ length: 20 }, (_, h) =>
      Array.from({ length: 20 }, (_, p) => ({
        src: `198.51.100.${100 + h}:${30000 + p}`,
        ep: new EtcpEndpoint({ staticKey: generateKeyPair(), peers: [{ publicKey: kb.publicKey, name: 'b' }], random }),
      })),
    ).flat();
    for (const { src, ep } of many) {
      const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
      if (r.kind === 'cookie') ep.handleHandshake(now, r.datagram, 'b');
    }
    void srcs;
    const out = flood(b, kb, many, now + 1000, 1);
    expect(out['unauthorized-key']).toBe(2 * THRESHOLD);
    expect((out['dh-rate-limited'] ?? 0) + (out['source-rate-limited'] ?? 0)).toBe(400 - 2 * THRESHOLD);
  });
});

describe('default (no sourceHost): the whole source is the host', () => {
  it('each source is its own share, as before', () => {
    const kb = generateKeyPair();
    const kc = generateKeyPair();
    const b = new EtcpEndpoint({ staticKey: kb, peers: [], random, cookieThreshold: 1, perSourceLimit: 3 });
    const c = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const out: Record<string, number> = {};
    for (let i = 0; i < 200; i++) {
      const r = b.handleHandshake(i * 5, c.initiate(i * 5, kb.publicKey), 'c:1');
      out[reason(r)] = (out[reason(r)] ?? 0) + 1;
      if (r.kind === 'cookie') c.handleHandshake(i * 5, r.datagram, 'b:1');
    }
    expect(out['unauthorized-key']).toBeLessThanOrEqual(1 + 3);
  });
});

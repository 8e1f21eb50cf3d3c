import { describe, expect, it } from 'vitest';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { EtcpEndpoint, INIT_LEN, MAX_SEALED_PAYLOAD, MAX_SESSIONS_PER_PEER, RESP_LEN, type Session } from '../core/etcp/endpoint.js';
import { COOKIE_REPLY_LEN, mac, mac1Key, openCookie, sealCookie, stampMacs } from '../core/etcp/cookie.js';
import { Rng } from '../testing/sim/rng.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { decodeFrame, encodeFrame } from '../wire/header.js';
import { FrameType, MAX_HANDSHAKE_PAYLOAD_LEN } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function pairUp() {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
  const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
  return { ka, kb, a, b };
}

/** Runs a full handshake, through decodeFrame as a receiver would. */
function handshake(
  a: EtcpEndpoint,
  b: EtcpEndpoint,
  kb: { publicKey: Uint8Array },
  now = 1000,
): { sa: Session; sb: Session; init: Uint8Array } {
  const init = a.initiate(now, kb.publicKey);
  decodeFrame(init);
  const r1 = b.handleHandshake(now, init, 'a:1');
  if (r1.kind !== 'respond') throw new Error(`expected respond, got ${JSON.stringify(r1)}`);
  decodeFrame(r1.datagram);
  const r2 = a.handleHandshake(now, r1.datagram, 'b:1');
  if (r2.kind !== 'established') throw new Error(`expected established, got ${JSON.stringify(r2)}`);
  return { sa: r2.session, sb: r1.session, init };
}

function openAt(ep: EtcpEndpoint, datagram: Uint8Array) {
  const f = decodeFrame(datagram, (id) => ep.sessions.has(id));
  return ep.openData(datagram, f.header.pairId, f.header.packetNumber);
}

// Pair formation: Noise IK, authorised keys only, fresh inits only, complementary identities.
describe('ETCP pair formation', () => {
  it('forms a pair: indices cross, member ids complement, hash seeds agree', () => {
    const { a, b, kb } = pairUp();
    const { sa, sb, init } = handshake(a, b, kb);
    expect(decodeFrame(init).header.type).toBe(FrameType.HandshakeInit);
    expect(decodeFrame(init).payload.length).toBe(INIT_LEN);
    expect(INIT_LEN).toBeLessThanOrEqual(MAX_HANDSHAKE_PAYLOAD_LEN);
    expect(sa.remoteIndex).toBe(sb.localIndex);
    expect(sb.remoteIndex).toBe(sa.localIndex);
    expect([sa.localId, sb.localId].sort()).toEqual([1, 2]);
    expect(sa.peerId).toBe(sb.localId);
    expect(sa.seed).toBe(sb.seed);
  });

  it('refuses an initiator whose static key is not authorised', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: generateKeyPair().publicKey, name: 'someone-else' }], random });
    const r = b.handleHandshake(0, a.initiate(0, kb.publicKey), 'a:1');
    expect(r.kind).toBe('drop');
    expect(r.kind === 'drop' && r.reason).toBe('unauthorized-key');
    expect(b.sessions.size).toBe(0);
  });

  it('refuses a replayed HandshakeInit, accepts a fresh one', () => {
    const { a, b, kb } = pairUp();
    const { init } = handshake(a, b, kb, 5000);
    const again = b.handleHandshake(6000, init, 'a:1');
    expect(again.kind === 'drop' && again.reason).toBe('handshake-replayed');
    const fresh = a.initiate(5000, kb.publicKey); // same clock: the timestamp still advances
    expect(b.handleHandshake(6000, fresh, 'a:1').kind).toBe('respond');
  });

  it('drops a handshake meant for another responder (mac1), a forged one (Noise), and a response for no pending index', () => {
    const { a, b, kb } = pairUp();
    const kc = generateKeyPair();
    const c = new EtcpEndpoint({ staticKey: kc, peers: [], random });
    const init = a.initiate(0, kb.publicKey);
    const r = c.handleHandshake(0, init, 'a:1');
    expect(r.kind === 'drop' && r.reason).toBe('bad-mac1');
    // A valid mac1 for c over a message sealed for b: mac1 passes, Noise fails.
    const forged = stampMacs(init.slice(), mac1Key(kc.publicKey), undefined);
    const r2 = c.handleHandshake(0, forged, 'a:1');
    expect(r2.kind === 'drop' && r2.reason).toBe('handshake-auth-failed');
    const { sb } = handshake(a, b, kb, 10);
    void sb;
    const strayResp = stampMacs(
      encodeFrame({ type: FrameType.HandshakeResp, flags: 0, pairId: 1234, packetNumber: 0 }, new Uint8Array(RESP_LEN)),
      mac1Key(kb.publicKey),
      undefined,
    );
    const stray = b.handleHandshake(0, strayResp, 'x:1');
    expect(stray.kind === 'drop' && stray.reason).toBe('unknown-index');
    const unmacked = b.handleHandshake(
      0,
      encodeFrame({ type: FrameType.HandshakeResp, flags: 0, pairId: 1234, packetNumber: 0 }, new Uint8Array(RESP_LEN)),
      'x:1',
    );
    expect(unmacked.kind === 'drop' && unmacked.reason).toBe('bad-mac1');
  });
});

// Data frames: AEAD with the header as associated data, RFC 6479 replay window.
describe('ETCP data protection', () => {
  it('round-trips payloads both ways, up to the largest sealed payload', () => {
    const { a, b, kb } = pairUp();
    const { sa, sb } = handshake(a, b, kb);
    for (const len of [1, 100, MAX_SEALED_PAYLOAD]) {
      const p = random(len);
      const r1 = openAt(b, sa.seal(p));
      expect('payload' in r1 && Buffer.from(r1.payload).equals(Buffer.from(p))).toBe(true);
      const r2 = openAt(a, sb.seal(p));
      expect('payload' in r2 && Buffer.from(r2.payload).equals(Buffer.from(p))).toBe(true);
    }
  });

  it('forged, replayed, re-addressed and truncated frames are never accepted', () => {
    const { a, b, kb } = pairUp();
    const { sa } = handshake(a, b, kb);
    const good = sa.seal(new TextEncoder().encode('hello'));
    const bodyFlip = good.slice();
    bodyFlip[bodyFlip.length - 1] ^= 1;
    expect(openAt(b, bodyFlip)).toMatchObject({ drop: 'data-auth-failed' });
    const pnFlip = good.slice();
    pnFlip[19] ^= 1; // the packet number is authenticated (associated data and nonce)
    expect(openAt(b, pnFlip)).toMatchObject({ drop: 'data-auth-failed' });
    expect('payload' in openAt(b, good)).toBe(true);
    expect(openAt(b, good)).toMatchObject({ drop: 'replayed' });
    expect(() => openAt(b, good.subarray(0, good.length - 3))).toThrow(WireError); // length mismatch at decodeFrame
    // Another pair's session with the same index: wrong key.
    const other = pairUp();
    const { sa: sx } = handshake(other.a, other.b, other.kb);
    for (let i = 0; i < 5; i++) sx.seal(new TextEncoder().encode('x')); // a packet number b's window has not seen
    const foreign = sx.seal(new TextEncoder().encode('x'));
    const f = decodeFrame(foreign);
    const idx = [...b.sessions.keys()][0];
    const retarget = foreign.slice();
    new DataView(retarget.buffer).setUint32(8, idx);
    expect(b.openData(retarget, idx, f.header.packetNumber)).toMatchObject({ drop: 'data-auth-failed' });
  });

  it('20,000 random mutations of a valid frame: none is accepted', () => {
    const { a, b, kb } = pairUp();
    const { sa } = handshake(a, b, kb);
    const frames = Array.from({ length: 200 }, () => sa.seal(random(40)));
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const m = frames[i % frames.length].slice();
      const pos = i % m.length;
      m[pos] ^= 1 + (i % 255);
      try {
        const r = openAt(b, m);
        if ('payload' in r) accepted++;
      } catch (e) {
        expect(e).toBeInstanceOf(WireError);
      }
    }
    expect(accepted).toBe(0);
  });
});

describe('ETCP bounded state', () => {
  it('retried handshakes to an unresponsive peer keep one pending handshake, not one per retry', () => {
    const { a, kb } = pairUp();
    for (let i = 0; i < 1000; i++) a.initiate(i, kb.publicKey);
    expect((a as unknown as { pending: Map<number, unknown> }).pending.size).toBe(1);
  });
});

describe('ETCP init replay across a restart', () => {
  it('a responder restarted with its persisted init timestamps still refuses a captured init', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const saved = new Map<string, number>();
    const b1 = new EtcpEndpoint({
      staticKey: kb,
      peers: [{ publicKey: ka.publicKey, name: 'a' }],
      random,
      onInitAccepted: (p, ts) => saved.set(p.name, ts),
    });
    const init = a.initiate(5000, kb.publicKey);
    expect(b1.handleHandshake(0, init, 'a:1').kind).toBe('respond');
    expect(saved.get('a')).toBe(5000);
    // Restart without the saved state: the captured init is accepted again (what persisting prevents).
    const fresh = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
    expect(fresh.handleHandshake(0, init, 'a:1').kind).toBe('respond');
    // Restart with it: refused.
    const b2 = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, acceptedInits: saved });
    const r = b2.handleHandshake(0, init, 'a:1');
    expect(r.kind === 'drop' && r.reason).toBe('handshake-replayed');
  });
});

const hx = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const th = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// §12.8: mac1/mac2 and the CookieReply. The vectors come from test/vectors/etcp-cookie-vectors.py,
// an independent Python rendering of the spec text (hashlib, hmac, a hand-written HChaCha20).
describe('ETCP DoS cookies (§12.8)', () => {
  const spub = hx('31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62');
  const frame = (): Uint8Array => {
    const f = new Uint8Array(20 + 130 + 32);
    f.set(hx('5350010100140092000000000000000000000000'));
    for (let i = 0; i < 130; i++) f[20 + i] = i & 0xff;
    return f;
  };

  it('mac1, the cookie, mac2 and the sealed cookie match the vectors computed from the spec', () => {
    expect(th(mac1Key(spub))).toBe('49f9a27543e44e87740826853a4d1090a5e4b149ddc1096b9ff31db725d4f4ce');
    const cookie = mac(new Uint8Array(32).fill(1), new TextEncoder().encode('192.0.2.1:51820'));
    expect(th(cookie)).toBe('5794ea122e92d96ebdbf6f1f231875d1');
    const f = stampMacs(frame(), mac1Key(spub), cookie);
    expect(th(f.subarray(150, 166))).toBe('749bf17f66d6b35bb80028cc73c403bd');
    expect(th(f.subarray(166))).toBe('4679b4b21ad51fbac9ad11fa971ccd88');
    const nonce = new Uint8Array(24).map((_, i) => 0x40 + i);
    const sealed = sealCookie(spub, nonce, cookie, f.subarray(150, 166));
    expect(th(sealed)).toBe('3409203dd703e43b178a9080a9bd6603cdae720f3c6ec458c20ff87c6f460e88');
    expect(openCookie(spub, nonce, sealed, f.subarray(150, 166))).toEqual(cookie);
    expect(openCookie(spub, nonce, sealed, new Uint8Array(16))).toBeUndefined(); // bound to that mac1
  });

  it("an endpoint's HandshakeInit carries mac1 as the spec defines it (HMAC-BLAKE2s over the frame before mac1)", () => {
    const { a, kb } = pairUp();
    const init = a.initiate(0, kb.publicKey);
    const k = createHash('blake2s256').update('mac1----').update(kb.publicKey).digest();
    const expected = createHmac('blake2s256', k)
      .update(init.subarray(0, init.length - 32))
      .digest()
      .subarray(0, 16);
    expect(th(init.subarray(init.length - 32, init.length - 16))).toBe(expected.toString('hex'));
    expect(th(init.subarray(init.length - 16))).toBe('00'.repeat(16)); // no cookie yet: mac2 is zero
  });

  it('round trip: under load an init gets a CookieReply, and the retry with mac2 forms the pair; the cookie is bound to the source and the secret rotates', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, cookieThreshold: 1 });
    expect(b.handleHandshake(0, a.initiate(0, kb.publicKey), 'a:1').kind).toBe('respond'); // 1 in this second: not loaded
    const r = b.handleHandshake(1, a.initiate(1, kb.publicKey), 'a:1');
    expect(r.kind).toBe('cookie');
    if (r.kind !== 'cookie') return;
    expect(decodeFrame(r.datagram).header.type).toBe(FrameType.CookieReply);
    expect(decodeFrame(r.datagram).payload.length).toBe(COOKIE_REPLY_LEN);
    expect(a.handleHandshake(2, r.datagram, 'b:1').kind).toBe('cookie-stored');
    expect(a.handleHandshake(2, r.datagram, 'b:1')).toMatchObject({ kind: 'drop', reason: 'unknown-index' }); // once per init
    const retry = a.initiate(3, kb.publicKey);
    expect(th(retry.subarray(retry.length - 16))).not.toBe('00'.repeat(16));
    const ok = b.handleHandshake(4, retry, 'a:1');
    expect(ok.kind).toBe('respond');
    if (ok.kind === 'respond') expect(a.handleHandshake(5, ok.datagram, 'b:1').kind).toBe('established');
    // The same cookie from another address proves nothing.
    expect(b.handleHandshake(6, a.initiate(6, kb.publicKey), 'evil:9').kind).toBe('cookie');
    // A CookieReply that does not authenticate is dropped.
    const pendingInit = a.initiate(7, kb.publicKey);
    const cr = b.handleHandshake(8, pendingInit, 'a:1');
    expect(cr.kind).toBe('respond'); // a's fresh cookie is still valid at 'a:1'
    const idx = new DataView(pendingInit.buffer).getUint32(20);
    const body = random(COOKIE_REPLY_LEN);
    new DataView(body.buffer).setUint32(0, idx);
    const bogus = encodeFrame({ type: FrameType.CookieReply, flags: 0, pairId: idx, packetNumber: 0 }, body);
    expect(a.handleHandshake(9, bogus, 'b:1')).toMatchObject({ kind: 'drop', reason: 'cookie-auth-failed' });
    // Two minutes later the secret has rotated (keep b loaded meanwhile): the old cookie no longer verifies.
    const later = 121_000;
    for (let i = 0; i < 3; i++) b.handleHandshake(later, a.initiate(later, kb.publicKey), 'x:1');
    const stale = b.handleHandshake(later + 1, a.initiate(100, kb.publicKey), 'a:1'); // a still holds the old cookie (its clock says 100)
    expect(stale.kind).toBe('cookie');
  });

  it('attack: 4,000 replays/s of one precomputed init from an unauthorised key do not stop an honest pair from forming', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const kc = generateKeyPair(); // knows b's public key, is not authorised
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
    const c = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const replayed = c.initiate(0, kb.publicKey);
    const outcomes: Record<string, number> = {};
    let established = false;
    let nextHonest = 500; // the flood is under way
    const t0 = performance.now();
    // Three simulated seconds at 4,000 inits/s; the honest initiator retries every 2 s (spookd's HANDSHAKE_RETRY_MS).
    for (let i = 0; i < 12_000 && !established; i++) {
      const now = i / 4; // ms
      const r = b.handleHandshake(now, replayed, '198.51.100.7:4444');
      const k = r.kind === 'drop' ? r.reason : r.kind;
      outcomes[k] = (outcomes[k] ?? 0) + 1;
      if (now >= nextHonest) {
        nextHonest = now + 2000;
        const hr = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:51820');
        if (hr.kind === 'cookie') expect(a.handleHandshake(now, hr.datagram, '203.0.113.1:51820').kind).toBe('cookie-stored');
        else if (hr.kind === 'respond') established = a.handleHandshake(now, hr.datagram, '203.0.113.1:51820').kind === 'established';
      }
    }
    const ms = performance.now() - t0;
    expect(established).toBe(true);
    // One DH, for the first copy: its mac1 is then remembered, and every replay costs a MAC and a lookup (no cookie either).
    expect(outcomes['unauthorized-key']).toBe(1);
    expect(outcomes['refused-replay']).toBeGreaterThan(9000);
    expect(b.underLoad(3000)).toBe(true);
    console.log(
      `flood: ${JSON.stringify(outcomes)} in ${ms.toFixed(0)} ms (${((ms * 1000) / Object.values(outcomes).reduce((x, y) => x + y, 0)).toFixed(1)} us per init)`,
    );
  });

  it('attack: an unauthorised sender that does receive its cookies still gets at most the per-source limit of DHs per second', () => {
    const kb = generateKeyPair();
    const kc = generateKeyPair();
    const b = new EtcpEndpoint({ staticKey: kb, peers: [], random, cookieThreshold: 1, perSourceLimit: 3 });
    const c = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const out: Record<string, number> = {};
    for (let i = 0; i < 200; i++) {
      const r = b.handleHandshake(i * 5, c.initiate(i * 5, kb.publicKey), 'c:1'); // one second
      const k = r.kind === 'drop' ? r.reason : r.kind;
      out[k] = (out[k] ?? 0) + 1;
      if (r.kind === 'cookie') c.handleHandshake(i * 5, r.datagram, 'b:1');
    }
    expect(out['unauthorized-key']).toBeLessThanOrEqual(1 + 3);
    // Refused by the per-source limit, or first by the global DH bucket (2 x threshold = 2/s here).
    expect((out['source-rate-limited'] ?? 0) + (out['dh-rate-limited'] ?? 0)).toBeGreaterThan(150);
  });
});

describe('ETCP aggregate DH bound under load (§12.8)', () => {
  it('attack: 100 sources that each receive their cookies get at most 2 x cookieThreshold DHs per second together, not 5 each', () => {
    const kb = generateKeyPair();
    const ka = generateKeyPair();
    const kc = generateKeyPair(); // knows b's public key, is not authorised
    const threshold = 5;
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, cookieThreshold: threshold });
    let now = 1000;
    // An authorised peer paired from its address before the flood: that source is known.
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    expect(b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:1').kind).toBe('respond');
    const warm = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    for (let i = 0; i <= threshold; i++) b.handleHandshake(now, warm.initiate(now, kb.publicKey), 'warm:1');
    expect(b.underLoad(now)).toBe(true);
    // Each source gets its cookie (one round trip), then sends fresh inits (new ephemerals: no replay shortcut).
    const srcs = Array.from({ length: 100 }, (_, i) => ({
      src: `2001:db8::${i.toString(16)}:4000`,
      ep: new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random }),
    }));
    for (const { src, ep } of srcs) {
      const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
      expect(r.kind).toBe('cookie');
      if (r.kind === 'cookie') expect(ep.handleHandshake(now, r.datagram, 'b').kind).toBe('cookie-stored');
    }
    const out: Record<string, number> = {};
    const t0 = performance.now();
    // Within one second, each source at its per-source limit (5/s): 500 inits with a valid mac2.
    now += 1000;
    for (let rep = 0; rep < 5; rep++)
      for (const { src, ep } of srcs) {
        const r = b.handleHandshake(now + rep, ep.initiate(now + rep, kb.publicKey), src);
        const k = r.kind === 'drop' ? r.reason : r.kind;
        out[k] = (out[k] ?? 0) + 1;
      }
    const ms = performance.now() - t0;
    // The bucket's depth (2 x threshold), plus the refill over the 5 ms the loop spans.
    expect(out['unauthorized-key']).toBeLessThanOrEqual(2 * threshold + 1);
    expect(out['unauthorized-key']).toBeGreaterThanOrEqual(2 * threshold);
    expect(out['dh-rate-limited']).toBeGreaterThan(480);
    console.log(`aggregate: ${JSON.stringify(out)} in ${ms.toFixed(0)} ms`);
    // The bucket is empty now, yet the authorised peer, from its known source and with its cookie, pairs again.
    now += 6;
    const r1 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:1');
    expect(r1.kind).toBe('cookie');
    if (r1.kind === 'cookie') a.handleHandshake(now, r1.datagram, 'b');
    const r2 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:1');
    expect(r2.kind).toBe('respond');
    // The same peer from a new address competes for the bucket like everyone else.
    const r3 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.99:1');
    expect(r3.kind).toBe('cookie');
    if (r3.kind === 'cookie') a.handleHandshake(now, r3.datagram, 'b');
    const r4 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.99:1');
    expect(r4.kind === 'drop' && r4.reason).toBe('dh-rate-limited');
  });

  it('attack: a flood right after a restart does not lock out a peer at its configured address, from any port (the exemption is seeded and covers the IP)', () => {
    const kb = generateKeyPair();
    const ka = generateKeyPair();
    const kc = generateKeyPair();
    const threshold = 2;
    const host = (src: string): string => src.slice(0, src.lastIndexOf(':'));
    // Fresh after a restart: a has never handshaken here, but its endpoint is configured.
    const b = new EtcpEndpoint({
      staticKey: kb,
      peers: [{ publicKey: ka.publicKey, name: 'a' }],
      random,
      cookieThreshold: threshold,
      sourceHost: host,
      knownSources: [{ peer: 'a', source: '192.0.2.1:51820' }],
    });
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    let now = 1000;
    const warm = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    for (let i = 0; i <= threshold; i++) b.handleHandshake(now, warm.initiate(now, kb.publicKey), `198.51.100.200:${i}`);
    // Twenty cookie-holding strangers empty the global bucket.
    const srcs = Array.from({ length: 20 }, (_, i) => ({
      src: `198.51.100.${i}:4000`,
      ep: new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random }),
    }));
    for (const { src, ep } of srcs) {
      const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
      if (r.kind === 'cookie') ep.handleHandshake(now, r.datagram, 'b');
    }
    now += 1000;
    let limited = 0;
    for (const { src, ep } of srcs) {
      const r = b.handleHandshake(now, ep.initiate(now, kb.publicKey), src);
      if (r.kind === 'drop' && r.reason === 'dh-rate-limited') limited++;
    }
    expect(limited).toBeGreaterThan(10);
    // a, from its configured address but a port its NAT just chose, still pairs (after its cookie).
    const r1 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:40000');
    expect(r1.kind).toBe('cookie');
    if (r1.kind === 'cookie') a.handleHandshake(now, r1.datagram, 'b');
    expect(b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.1:40000').kind).toBe('respond');
    // Another address competes with the flood.
    const r3 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.99:1');
    if (r3.kind === 'cookie') a.handleHandshake(now, r3.datagram, 'b');
    const r4 = b.handleHandshake(now, a.initiate(now, kb.publicKey), '192.0.2.99:1');
    expect(r4.kind === 'drop' && r4.reason).toBe('dh-rate-limited');
  });

  it('attack: a captured init from an unauthorised key replayed from 1,000 sources costs one DH in all', () => {
    const kb = generateKeyPair();
    const b = new EtcpEndpoint({ staticKey: kb, peers: [], random });
    const c = new EtcpEndpoint({ staticKey: generateKeyPair(), peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const init = c.initiate(0, kb.publicKey);
    const out: Record<string, number> = {};
    for (let i = 0; i < 1000; i++) {
      const r = b.handleHandshake(i * 10, init, `198.51.100.${i % 250}:${1000 + i}`); // 100/s: under load after the first 50
      const k = r.kind === 'drop' ? r.reason : r.kind;
      out[k] = (out[k] ?? 0) + 1;
    }
    expect(out).toEqual({ 'unauthorized-key': 1, 'refused-replay': 999 });
    // A fresh init from the same key is another mac1: it gets its own DH (and its own refusal).
    const r = b.handleHandshake(20_000, c.initiate(20_000, kb.publicKey), 'x:1');
    expect(r.kind === 'drop' && r.reason).toBe('unauthorized-key');
  });
});

describe('ETCP session bounds (§12.3)', () => {
  it('attack: an authorised peer handshaking in a loop holds at most MAX_SESSIONS_PER_PEER sessions; another peer still pairs', () => {
    const kb = generateKeyPair();
    const kx = generateKeyPair();
    const ka = generateKeyPair();
    const b = new EtcpEndpoint({
      staticKey: kb,
      peers: [
        { publicKey: kx.publicKey, name: 'x' },
        { publicKey: ka.publicKey, name: 'a' },
      ],
      random,
    });
    const x = new EtcpEndpoint({ staticKey: kx, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const out: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const r = b.handleHandshake(i * 100, x.initiate(i * 100, kb.publicKey), 'x:1');
      const k = r.kind === 'drop' ? r.reason : r.kind;
      out[k] = (out[k] ?? 0) + 1;
    }
    expect(out).toEqual({ respond: MAX_SESSIONS_PER_PEER, 'peer-session-limit': 40 - MAX_SESSIONS_PER_PEER });
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
    const { sa, sb } = handshake(a, b, kb, 5000);
    const got = openAt(b, sa.seal(new Uint8Array([1, 2, 3])));
    expect('payload' in got && got.session).toBe(sb);
  });

  it('with all 65,535 index slots in use, tryInitiate is a drop (no-free-index), not an exception; a responder drops the init likewise', () => {
    const { a, b, kb } = pairUp();
    const { sa } = handshake(a, b, kb);
    for (let lo = 1; lo <= 0xffff; lo++) a.sessions.set(((0x7e << 24) | lo) >>> 0, sa);
    expect(a.tryInitiate(2000, kb.publicKey)).toEqual({ drop: 'no-free-index' });
    expect(() => a.initiate(2000, kb.publicKey)).toThrow(/no-free-index/);
  });

  it('attack: an authorised peer floods fresh HandshakeInits from 16 source addresses, each holding its cookie: at most perPeerLimit per second are answered, and a later init from it is', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const b = new EtcpEndpoint({
      staticKey: kb,
      peers: [{ publicKey: ka.publicKey, name: 'a' }],
      random,
      cookieThreshold: 1,
      perSourceLimit: 5,
      perPeerLimit: 4,
    });
    // One endpoint per source address: each takes the cookie for its own address (the worst authorised peer).
    const sources = Array.from({ length: 16 }, (_, i) => ({
      addr: `198.51.100.${i}:4444`,
      ep: new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random }),
    }));
    const out: Record<string, number> = {};
    let ts = 1;
    // Two simulated seconds, 16 sources x 50 inits/s each: 1,600 fresh inits (strictly rising timestamps).
    for (let i = 0; i < 1600; i++) {
      const now = i * (2000 / 1600);
      const s = sources[i % 16];
      const r = b.handleHandshake(now, s.ep.initiate(now, kb.publicKey, ts++), s.addr);
      const k = r.kind === 'drop' ? r.reason : r.kind;
      out[k] = (out[k] ?? 0) + 1;
      if (r.kind === 'cookie') s.ep.handleHandshake(now, r.datagram, 'b:1');
      if (r.kind === 'drop' && r.reason === 'peer-rate-limited') expect(r.peer?.name).toBe('a');
    }
    // Without the per-peer limit: 5 per source per second, 160 responses (each 3 DHs more, a session, a timestamp write).
    expect(out.respond).toBeLessThanOrEqual(2 * 4 + 1);
    // The rest are refused by the per-peer limit, or earlier by the global DH bucket (the flood's sources
    // are not the peer's latest handshake address), or later by the peer's session limit.
    expect(out['peer-rate-limited']).toBeGreaterThan(0);
    expect(
      (out['peer-rate-limited'] ?? 0) + (out['dh-rate-limited'] ?? 0) + (out['peer-session-limit'] ?? 0),
      JSON.stringify(out),
    ).toBeGreaterThan(100);
    // A later init from the same key (after the interval) is answered.
    const late = sources[0];
    const r = b.handleHandshake(2500, late.ep.initiate(2500, kb.publicKey, ts++), late.addr);
    expect(r.kind).toBe('respond');
  });
});

// A library-level adversary (issue 13): every byte hostile, from authorised and unauthorised keys.
describe('ETCP endpoint fuzz', () => {
  it('attack: 100,000 fuzzed handshake, cookie and data frames into the decoder and both endpoints: nothing escapes, and an honest session forms and carries data afterwards', () => {
    const rng = new Rng(0x13e7c9);
    // Four octets per draw: the generator, not the endpoint, would otherwise dominate the run time.
    const rand = (n: number): Uint8Array => {
      const out = new Uint8Array(n + 3);
      const dv = new DataView(out.buffer);
      for (let i = 0; i < n; i += 4) dv.setUint32(i, rng.int(0, 0xffffffff));
      return out.subarray(0, n);
    };
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const kc = generateKeyPair(); // unauthorised, knows b's public key
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random: rand });
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random: rand, cookieThreshold: 5 });
    const c = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: kb.publicKey, name: 'b' }], random: rand });
    let now = 0;
    // A corpus of valid frames of every kind, from both keys.
    const { sa, sb } = handshake(a, b, kb, now);
    const corpus: Uint8Array[] = [
      a.initiate(now, kb.publicKey),
      c.initiate(now, kb.publicKey),
      sa.seal(rand(30)),
      sb.seal(rand(200)),
      sa.seal(new Uint8Array(0)),
    ];
    const hr = b.handleHandshake(now, a.initiate(now, kb.publicKey), 'a:1');
    if (hr.kind === 'respond') corpus.push(hr.datagram);
    const loaded = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random: rand, cookieThreshold: 1 });
    for (let i = 0; i < 3; i++) {
      const r = loaded.handleHandshake(now, a.initiate(now, kb.publicKey), 'a:1');
      if (r.kind === 'cookie') corpus.push(r.datagram);
    }
    expect(corpus.map((f) => f[3]).sort()).toEqual(expect.arrayContaining([1, 2, 3, 4]));
    const EXTREME32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, sa.localIndex, sb.localIndex, sa.remoteIndex];
    const mac1For = [mac1Key(kb.publicKey), mac1Key(ka.publicKey), mac1Key(kc.publicKey)];
    const escaped: string[] = [];
    const counts: Record<string, number> = {};
    const tally = (k: string): void => void (counts[k] = (counts[k] ?? 0) + 1);
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) {
      now += rng.int(0, 3); // ~1.5 ms apart: the responder is under load most of the time
      let f: Uint8Array;
      const kind = rng.int(0, 9);
      if (kind === 0) f = rand(rng.int(0, rng.chance(0.5) ? 40 : 1500));
      else if (kind === 9)
        f = rng.pick(corpus); // a plain replay
      else if (kind === 1) {
        // A well-formed header of a handshake type with a payload of exactly the right length, random inside.
        const type = rng.int(1, 3);
        const len = type === 1 ? INIT_LEN : type === 2 ? RESP_LEN : COOKIE_REPLY_LEN;
        f = encodeFrame({ type, flags: 0, pairId: rng.pick(EXTREME32), packetNumber: 0 }, rand(len));
      } else {
        f = rng.pick(corpus).slice();
        const dv = new DataView(f.buffer);
        for (let m = rng.int(1, 3); m > 0; m--) {
          const what = rng.int(0, 5);
          if (what === 0 && f.length >= 12)
            dv.setUint32(8, rng.pick(EXTREME32)); // pair_id
          else if (what === 1 && f.length >= 20) {
            dv.setUint32(12, rng.pick([0, 0x1fffff, 0x200000, 0xffffffff])); // packet numbers up to 2^64 − 1
            dv.setUint32(16, rng.pick([0, 1, 0xffffffff]));
          } else if (what === 2 && f.length >= 24)
            dv.setUint32(20, rng.pick(EXTREME32)); // sender / receiver index
          else if (what === 3 && f.length >= 8)
            dv.setUint16(6, rng.pick([0, 1, f.length - 20, 0xffff])); // payload_len lies
          else if (what === 4) f = rng.chance(0.5) ? f.subarray(0, rng.int(0, f.length)) : new Uint8Array([...f, ...rand(rng.int(1, 40))]);
          else if (f.length > 0) f[rng.int(0, f.length - 1)] ^= 1 << rng.int(0, 7);
        }
        // Sometimes a valid mac1 over the mutation, so the frame reaches Noise (bounded: each costs DHs).
        if (f.length > 52 && f[3] !== 4 && rng.chance(0.02)) stampMacs(f, rng.pick(mac1For), rng.chance(0.3) ? rand(16) : undefined);
      }
      const target = rng.chance(0.6) ? b : a;
      const src = rng.pick(['a:1', 'c:7', '198.51.100.9:4444', '']);
      try {
        // Through the decoder, as spookd does; the decoder may throw WireError and nothing else.
        let decoded;
        try {
          decoded = decodeFrame(f, (id) => target.sessions.has(id));
        } catch (e) {
          if (!(e instanceof WireError)) throw e;
          tally('wire');
        }
        if (decoded) {
          if (decoded.header.type === FrameType.Data) {
            const r = target.openData(f, decoded.header.pairId, decoded.header.packetNumber);
            tally('drop' in r ? r.drop : 'opened');
          } else {
            const r = target.handleHandshake(now, f, src);
            tally(r.kind === 'drop' ? r.reason : r.kind);
          }
        }
        // And straight into the endpoint, skipping the decoder, with any pair id and packet number.
        if (rng.chance(0.3)) {
          const r = target.handleHandshake(now, f, src);
          tally(r.kind === 'drop' ? `raw:${r.reason}` : `raw:${r.kind}`);
          target.openData(f, rng.pick(EXTREME32), rng.pick([0, -1, 2 ** 53, 2 ** 64, Number.NaN, Infinity, rng.int(0, 5000)]));
        }
      } catch (e) {
        if (escaped.length < 10) escaped.push(`#${i} ${Buffer.from(f.subarray(0, 32)).toString('hex')}: ${(e as Error).stack}`);
      }
    }
    const ms = performance.now() - t0;
    expect(escaped).toEqual([]);
    // The fuzz went deep: through mac1, into Noise, cookies answered, data frames opened and refused.
    for (const k of [
      'wire',
      'bad-mac1',
      'handshake-auth-failed',
      'cookie',
      'data-auth-failed',
      'replayed',
      'unknown-index',
      'handshake-malformed',
    ])
      expect(counts[k] ?? 0, k).toBeGreaterThan(0);
    // Sessions the fuzz could create are bounded by the inits it could make fresh (none forged).
    expect(b.sessions.size).toBeLessThan(10);
    // Afterwards the honest pair still forms (through a cookie if b is still under load) and carries data both ways.
    now += 10;
    let r = b.handleHandshake(now, a.initiate(now, kb.publicKey, 1e13), 'a:1');
    if (r.kind === 'cookie') {
      expect(a.handleHandshake(now, r.datagram, 'b:1').kind).toBe('cookie-stored');
      r = b.handleHandshake(now, a.initiate(now, kb.publicKey, 1e13 + 1), 'a:1');
    }
    expect(r.kind).toBe('respond');
    if (r.kind !== 'respond') return;
    const done = a.handleHandshake(now, r.datagram, 'b:1');
    expect(done.kind).toBe('established');
    if (done.kind !== 'established') return;
    const up = openAt(b, done.session.seal(new TextEncoder().encode('still here')));
    expect('payload' in up && new TextDecoder().decode(up.payload)).toBe('still here');
    const down = openAt(a, r.session.seal(new TextEncoder().encode('and back')));
    expect('payload' in down && new TextDecoder().decode(down.payload)).toBe('and back');
    console.log(`etcp fuzz: 100,000 frames in ${ms.toFixed(0)} ms; outcomes ${JSON.stringify(counts)}`);
  }, 30_000);
});

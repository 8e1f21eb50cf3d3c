/**
 * Containment of forged HandshakeResps (PROTOCOL.md §12.2.2, §12.8): whoever sees a HandshakeInit
 * knows its sender_index (in clear) and can stamp a valid mac1 (keyed by the initiator's public
 * key), so nothing proves a response genuine before its two DHs. A forged one must change nothing
 * (the genuine one still completes), and the DHs of failing responses are bounded by the same
 * per-source limit and global DH bucket as inits under load.
 */
import { describe, expect, it, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint, type HandshakeOutcome } from '../core/etcp/endpoint.js';
import { IKInitiator, IKResponder, NoiseError } from '../core/etcp/noise.js';
import type { Addr } from '../core/etcp/peers.js';
import { DEFAULT_COOKIE_THRESHOLD, DH_RATE_PER_THRESHOLD, mac1Key, stampMacs } from '../core/etcp/cookie.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { decodeFrame, encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { HANDSHAKE_INIT, HANDSHAKE_RESP } from '../wire/etcp.js';
import { viewOf } from '../wire/layouts.js';
import { peerTableOfOne } from './helpers.js';

// Every X25519 the handshake code does, counted (noise.ts imports dh from this module).
const dhCalls = vi.hoisted(() => ({ n: 0 }));
vi.mock('../crypto/primitives.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../crypto/primitives.js')>();
  return {
    ...m,
    dh: (priv: Uint8Array, pub: Uint8Array): Uint8Array => {
      dhCalls.n++;
      return m.dh(priv, pub);
    },
  };
});

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const host = (src: string): string => src.slice(0, src.lastIndexOf(':')); // spookd's sourceHost
/** The global DH bucket at the default threshold: its rate per second, and its depth. */
const BUCKET = DH_RATE_PER_THRESHOLD * DEFAULT_COOKIE_THRESHOLD;

/** What an observer of `init` can send: its index and a valid mac1, a random ephemeral and sealed payload. */
function forgedResp(initiatorPub: Uint8Array, init: Uint8Array): Uint8Array {
  const senderIndex = HANDSHAKE_INIT.fields.sender_index.get(viewOf(init.subarray(20)));
  const out = new Uint8Array(HANDSHAKE_RESP.size);
  const od = viewOf(out);
  HANDSHAKE_RESP.fields.sender_index.set(od, 0x12345678);
  HANDSHAKE_RESP.fields.receiver_index.set(od, senderIndex);
  out.set(generateKeyPair().publicKey, HANDSHAKE_RESP.fields.ephemeral.offset);
  out.set(random(HANDSHAKE_RESP.fields.payload_sealed.size), HANDSHAKE_RESP.fields.payload_sealed.offset);
  return stampMacs(
    encodeFrame({ type: FrameType.HandshakeResp, flags: 0, pairId: senderIndex, packetNumber: 0 }, out),
    mac1Key(initiatorPub),
    undefined,
  );
}

const B_SRC = '192.0.2.2:51820';

/** a initiates to b; b answers from B_SRC. `aKnowsB`: a's configured endpoint for b (spookd seeds the exemption with it). */
function setup(aKnowsB: boolean) {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = new EtcpEndpoint({
    staticKey: ka,
    peers: [{ publicKey: kb.publicKey, name: 'b' }],
    random,
    sourceHost: host,
    knownSources: aKnowsB ? [{ peer: 'b', source: B_SRC }] : [],
  });
  const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, sourceHost: host });
  const init = a.initiate(1000, kb.publicKey);
  const r = b.handleHandshake(1000, init, '192.0.2.1:51820');
  if (r.kind !== 'respond') throw new Error(`expected respond, got ${r.kind}`);
  return { ka, kb, a, b, init, genuine: r.datagram, bSession: r.session };
}

const reason = (r: HandshakeOutcome): string => (r.kind === 'drop' ? r.reason : r.kind);

function tally(out: Record<string, number>, r: HandshakeOutcome): void {
  out[reason(r)] = (out[reason(r)] ?? 0) + 1;
}

describe('a forged HandshakeResp changes nothing (§12.2.2)', () => {
  it('Noise: a message 2 that fails leaves the initiator as it was; the genuine one then completes, and a second is refused with no DH', () => {
    const opts = (k: KeyPair) => ({ hash: 'BLAKE2s' as const, prologue: new Uint8Array([1, 2]), staticKey: k });
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const init = new IKInitiator(opts(ka), kb.publicKey);
    const resp = new IKResponder(opts(kb));
    resp.readMessage1(init.writeMessage1(new Uint8Array(3)));
    const w2 = resp.writeMessage2(new TextEncoder().encode('ok'));
    const forged = new Uint8Array(w2.message.length);
    forged.set(generateKeyPair().publicKey);
    for (let i = 0; i < 3; i++) expect(() => init.readMessage2(forged)).toThrow(NoiseError);
    // A tampered copy of the genuine message fails too, and spoils nothing either.
    const tampered = w2.message.slice();
    tampered[tampered.length - 1] ^= 1;
    expect(() => init.readMessage2(tampered)).toThrow(NoiseError);
    const r2 = init.readMessage2(w2.message);
    expect(new TextDecoder().decode(r2.payload)).toBe('ok');
    expect(Buffer.from(r2.result.handshakeHash)).toEqual(Buffer.from(w2.result.handshakeHash));
    expect(Buffer.from(r2.result.send.key)).toEqual(Buffer.from(w2.result.recv.key));
    const before = dhCalls.n;
    expect(() => init.readMessage2(w2.message)).toThrow(/already read/);
    expect(dhCalls.n).toBe(before);
  });

  it('endpoint: the genuine response completes after a forged one, and the session carries data both ways', () => {
    const { ka, a, init, genuine, bSession } = setup(false);
    const f = a.handleHandshake(1000, forgedResp(ka.publicKey, init), '198.51.100.9:9');
    expect(reason(f)).toBe('handshake-auth-failed');
    const g = a.handleHandshake(1001, genuine, B_SRC);
    expect(g.kind).toBe('established');
    if (g.kind !== 'established') return;
    const up = decodeFrame(g.session.seal(new TextEncoder().encode('up')));
    expect(up.header.pairId).toBe(bSession.localIndex);
    const opened = bSession.open(g.session.seal(new TextEncoder().encode('x')), 1);
    expect('payload' in opened).toBe(true);
    const down = bSession.seal(new TextEncoder().encode('down'));
    const r = a.openData(down, g.session.localIndex, 0);
    expect('payload' in r && new TextDecoder().decode(r.payload)).toBe('down');
  });

  it('endpoint: after 5,000 forged responses from other addresses the genuine one, from the peer, completes; the DHs spent are bounded by the bucket', () => {
    const { ka, a, init, genuine } = setup(true);
    const out: Record<string, number> = {};
    const before = dhCalls.n;
    // One instant: 5,000 forgeries (new ephemeral each), from 5,000 spoofed addresses.
    for (let i = 0; i < 5000; i++) tally(out, a.handleHandshake(1000, forgedResp(ka.publicKey, init), `198.51.100.${i % 250}:${1000 + i}`));
    const dhs = dhCalls.n - before;
    console.log(`5,000 forged responses: ${JSON.stringify(out)}, ${dhs} DHs (bucket ${BUCKET})`);
    expect(out['handshake-auth-failed']).toBe(BUCKET);
    expect(out['dh-rate-limited']).toBe(5000 - BUCKET);
    expect(dhs).toBe(2 * BUCKET);
    // The genuine response comes from where b handshook from / is configured: exempt from the spent bucket.
    expect(a.handleHandshake(1000, genuine, B_SRC).kind).toBe('established');
  });

  it('endpoint: a forged flood for 3 s costs at most two DHs per bucket token (depth + rate × time), however fast it comes', () => {
    const { ka, a, init, genuine } = setup(true);
    const out: Record<string, number> = {};
    const before = dhCalls.n;
    const forged = forgedResp(ka.publicKey, init);
    // 10,000 per second for 3 s, one copy replayed from spoofed addresses.
    for (let i = 0; i < 30_000; i++) tally(out, a.handleHandshake(1000 + i / 10, forged, `203.0.113.${i % 200}:${i}`));
    const dhs = dhCalls.n - before;
    console.log(`30,000 forged responses over 3 s: ${JSON.stringify(out)}, ${dhs} DHs`);
    expect(out['handshake-auth-failed']).toBeLessThanOrEqual(BUCKET + 3 * BUCKET + 1);
    expect(dhs).toBeLessThanOrEqual(2 * (BUCKET + 3 * BUCKET + 1));
    expect(a.handleHandshake(4000, genuine, B_SRC).kind).toBe('established');
  });

  it('the same bucket as inits: forged responses that spend it hold back cookie-holding strangers’ inits under load too', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const kc = generateKeyPair(); // unauthorised, knows a's key
    const threshold = 5;
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random, cookieThreshold: threshold });
    const c = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
    let now = 1000;
    const init = a.initiate(now, kb.publicKey);
    for (let i = 0; i <= threshold; i++) a.handleHandshake(now, c.initiate(now, ka.publicKey), `198.51.100.200:${i}`);
    expect(a.underLoad(now)).toBe(true);
    const r0 = a.handleHandshake(now, c.initiate(now, ka.publicKey), 'c:1');
    expect(r0.kind).toBe('cookie');
    if (r0.kind === 'cookie') c.handleHandshake(now, r0.datagram, 'a');
    const out: Record<string, number> = {};
    for (let i = 0; i < 100; i++) tally(out, a.handleHandshake(now, forgedResp(ka.publicKey, init), `198.51.100.${i}:1`));
    expect(out).toEqual({ 'handshake-auth-failed': 2 * threshold, 'dh-rate-limited': 100 - 2 * threshold });
    now += 1;
    expect(reason(a.handleHandshake(now, c.initiate(now, ka.publicKey), 'c:1'))).toBe('dh-rate-limited');
  });

  it('the bound when the genuine response comes from an address that is not exempt: it waits for a token, the pending handshake intact', () => {
    const { ka, a, init, genuine } = setup(false); // a has no address for b: nothing is exempt
    for (let i = 0; i < 1000; i++) a.handleHandshake(1000, forgedResp(ka.publicKey, init), `198.51.100.${i % 250}:${i}`);
    expect(reason(a.handleHandshake(1000, genuine, B_SRC))).toBe('dh-rate-limited');
    // One token is back 1000 / BUCKET ms later; the handshake was still pending, untouched.
    expect(a.handleHandshake(1000 + 1000 / BUCKET, genuine, B_SRC).kind).toBe('established');
  });

  it('the bound when the forger spoofs the peer’s own address: perSourceLimit failures a second, then the genuine one waits for the next second', () => {
    const { ka, a, init, genuine } = setup(true);
    const out: Record<string, number> = {};
    // From the peer's IP but other ports: the host's share (5 a second) is spent...
    for (let i = 0; i < 1000; i++) tally(out, a.handleHandshake(1000, forgedResp(ka.publicKey, init), `192.0.2.2:${i}`));
    expect(out).toEqual({ 'handshake-auth-failed': 5, 'source-rate-limited': 995 });
    // ...but the exact address of the peer's latest handshake (here: configured) counts on its own.
    const other = setup(true);
    for (let i = 0; i < 1000; i++) other.a.handleHandshake(1000, forgedResp(other.ka.publicKey, other.init), `192.0.2.2:${i}`);
    expect(other.a.handleHandshake(1000, other.genuine, B_SRC).kind).toBe('established');
    // Spoofing that exact address too spends its share: the genuine response then waits for the next second.
    for (let i = 0; i < 10; i++) a.handleHandshake(1000, forgedResp(ka.publicKey, init), B_SRC);
    expect(reason(a.handleHandshake(1000, genuine, B_SRC))).toBe('source-rate-limited');
    expect(a.handleHandshake(2000, genuine, B_SRC).kind).toBe('established');
  });

  it('a response that authenticates costs the limits nothing: an honest initiator is never held back by its own handshakes', () => {
    const ka = generateKeyPair();
    const kb = generateKeyPair();
    const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random, cookieThreshold: 1 });
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
    for (let i = 0; i < 50; i++) {
      const r = b.handleHandshake(1000, a.initiate(1000, kb.publicKey, 1000 + i), '192.0.2.1:1');
      if (r.kind !== 'respond') throw new Error(reason(r));
      b.close(r.session.localIndex); // b's per-peer session bound is not what this is about
      // A new source each time: none exempt, and the bucket is 2 deep.
      expect(a.handleHandshake(1000, r.datagram, `192.0.2.${i + 10}:1`).kind).toBe('established');
    }
  });
});

describe('a forged HandshakeResp per init, in the peer table', () => {
  function mkTable(self: KeyPair, peer: { name: string; key: KeyPair; at: Addr }, clock: { now: number }) {
    return peerTableOfOne(self, peer, clock, { perPeerLimit: 10 });
  }

  for (const [label, perInit] of [
    ['one forgery', 1],
    ['500 forgeries', 500],
  ] as const)
    it(`an observer that beats every HandshakeResp with ${label} does not keep the pair from forming`, () => {
      const ka = generateKeyPair();
      const kb = generateKeyPair();
      const clock = { now: 0 };
      const A: Addr = { address: '192.0.2.1', port: 51820 };
      const B: Addr = { address: '192.0.2.2', port: 51820 };
      const a = mkTable(ka, { name: 'b', key: kb, at: B }, clock);
      const b = mkTable(kb, { name: 'a', key: ka, at: A }, clock);
      let forged = 0;
      for (clock.now = 0; clock.now < 10_000 && !(a.table.canSend('b') && b.table.canSend('a')); clock.now += 100) {
        a.table.handleTimeout(clock.now);
        b.table.handleTimeout(clock.now);
        for (let round = 0; round < 3; round++)
          for (const [from, to, fromAddr, self] of [
            [a, b, A, ka],
            [b, a, B, kb],
          ] as const)
            for (let t = from.table.pollTransmit(); t; t = from.table.pollTransmit()) {
              if (decodeFrame(t.datagram).header.type === FrameType.HandshakeInit)
                // The observer sees the init and answers first, from addresses of its choosing.
                for (let i = 0; i < perInit; i++, forged++)
                  from.table.handleDatagram(
                    clock.now,
                    { address: `198.51.100.${i % 250}`, port: 9 + i },
                    forgedResp(self.publicKey, t.datagram),
                  );
              to.table.handleDatagram(clock.now, fromAddr, t.datagram);
            }
        while (a.table.pollEvent());
        while (b.table.pollEvent());
      }
      const drops = { ...a.table.drops, ...b.table.drops };
      console.log(`${label}: formed at ${clock.now} ms after ${forged} forgeries; drops ${JSON.stringify(drops)}`);
      expect(a.table.canSend('b')).toBe(true);
      expect(b.table.canSend('a')).toBe(true);
      expect(clock.now).toBeLessThan(2000); // the first exchange: no retry needed
      expect(drops['handshake-auth-failed']).toBeGreaterThan(0);
    });
});

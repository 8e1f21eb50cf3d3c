import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint, INIT_LEN, MAX_SEALED_PAYLOAD, type Session } from '../transport/etcp/endpoint.js';
import { generateKeyPair } from '../transport/etcp/crypto.js';
import { decodeFrame } from '../transport/wire/header.js';
import { FrameType, MAX_HANDSHAKE_PAYLOAD_LEN } from '../transport/wire/constants.js';
import { WireError } from '../transport/wire/errors.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function pairUp() {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
  const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
  return { ka, kb, a, b };
}

/** Runs a full handshake, through decodeFrame as a receiver would. */
function handshake(a: EtcpEndpoint, b: EtcpEndpoint, kb: { publicKey: Uint8Array }, now = 1000): { sa: Session; sb: Session; init: Uint8Array } {
  const init = a.initiate(now, kb.publicKey);
  const f1 = decodeFrame(init);
  const r1 = b.handleHandshake(now, f1.header.type, f1.header.pairId, f1.payload);
  if (r1.kind !== 'respond') throw new Error(`expected respond, got ${JSON.stringify(r1)}`);
  const f2 = decodeFrame(r1.datagram);
  const r2 = a.handleHandshake(now, f2.header.type, f2.header.pairId, f2.payload);
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
    const f = decodeFrame(a.initiate(0, kb.publicKey));
    const r = b.handleHandshake(0, f.header.type, f.header.pairId, f.payload);
    expect(r.kind).toBe('drop');
    expect(r.kind === 'drop' && r.reason).toBe('unauthorized-key');
    expect(b.sessions.size).toBe(0);
  });

  it('refuses a replayed HandshakeInit, accepts a fresh one', () => {
    const { a, b, kb } = pairUp();
    const { init } = handshake(a, b, kb, 5000);
    const f = decodeFrame(init);
    const again = b.handleHandshake(6000, f.header.type, f.header.pairId, f.payload);
    expect(again.kind === 'drop' && again.reason).toBe('handshake-replayed');
    const fresh = decodeFrame(a.initiate(5000, kb.publicKey)); // same clock: the timestamp still advances
    expect(b.handleHandshake(6000, fresh.header.type, fresh.header.pairId, fresh.payload).kind).toBe('respond');
  });

  it('drops a handshake sealed for another responder, and a response for no pending index', () => {
    const { a, b, kb } = pairUp();
    const c = new EtcpEndpoint({ staticKey: generateKeyPair(), peers: [], random });
    const f = decodeFrame(a.initiate(0, kb.publicKey));
    const r = c.handleHandshake(0, f.header.type, f.header.pairId, f.payload);
    expect(r.kind === 'drop' && r.reason).toBe('handshake-auth-failed');
    const { sb } = handshake(a, b, kb, 10);
    void sb;
    const stray = b.handleHandshake(0, FrameType.HandshakeResp, 1234, new Uint8Array(61));
    expect(stray.kind === 'drop' && stray.reason).toBe('unknown-index');
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
    const b1 = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, onInitAccepted: (p, ts) => saved.set(p.name, ts) });
    const init = decodeFrame(a.initiate(5000, kb.publicKey));
    expect(b1.handleHandshake(0, init.header.type, 0, init.payload).kind).toBe('respond');
    expect(saved.get('a')).toBe(5000);
    // Restart without the saved state: the captured init is accepted again (what persisting prevents).
    const fresh = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random });
    expect(fresh.handleHandshake(0, init.header.type, 0, init.payload).kind).toBe('respond');
    // Restart with it: refused.
    const b2 = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: ka.publicKey, name: 'a' }], random, acceptedInits: saved });
    const r = b2.handleHandshake(0, init.header.type, 0, init.payload);
    expect(r.kind === 'drop' && r.reason).toBe('handshake-replayed');
  });
});

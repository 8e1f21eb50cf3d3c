/**
 * Hostile review of newIndex's slot counting (issue 16, hubheap): a local index whose low 16
 * bits (its XDP pair-table slot) another live session or pending handshake holds would let a
 * frame open under the wrong session. Random handshakes both ways and closes at a hub whose
 * random source draws from few slots (collisions in almost every draw): live slots stay distinct
 * and the per-map slot counts match the maps.
 */
import { describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';

describe('session indices under slot collisions', () => {
  it('2,000 random handshakes and closes at a hub drawing from 48 slots: no slot held twice, counts match', () => {
    const rng = new Rng(77);
    const kp = (): KeyPair => {
      const privateKey = rng.bytes(32);
      return { privateKey, publicKey: publicKeyOf(privateKey) };
    };
    const hubKey = kp();
    const peerKeys = Array.from({ length: 12 }, kp);
    // Indices: random high bits, the low 16 from 48 values (0 among them: never a slot).
    const hubRandom = (n: number): Uint8Array => {
      const b = rng.bytes(n);
      if (n === 4) {
        const slot = rng.int(0, 47);
        b[2] = slot >> 8;
        b[3] = slot & 0xff;
      }
      return b;
    };
    const hub = new EtcpEndpoint({
      staticKey: hubKey,
      peers: peerKeys.map((k, i) => ({ name: `p${i}`, publicKey: k.publicKey })),
      random: hubRandom,
    });
    const peers = peerKeys.map(
      (k) => new EtcpEndpoint({ staticKey: k, peers: [{ name: 'hub', publicKey: hubKey.publicKey }], random: (n) => rng.bytes(n) }),
    );
    const inner = hub as unknown as {
      pending: Map<number, unknown> & { slots: number };
      sessions: Map<number, unknown> & { slots: number };
    };
    let now = 1;
    let established = 0;
    const check = (): void => {
      const s = [...inner.sessions.keys()].map((i) => i & 0xffff);
      const p = [...inner.pending.keys()].map((i) => i & 0xffff);
      expect(s.includes(0) || p.includes(0)).toBe(false);
      expect(new Set([...s, ...p]).size).toBe(s.length + p.length);
      expect(inner.sessions.slots).toBe(new Set(s).size);
      expect(inner.pending.slots).toBe(new Set(p).size);
    };
    for (let step = 0; step < 2000; step++) {
      now += 1000;
      const i = rng.int(0, peers.length - 1);
      const r = rng.int(0, 9);
      const live = inner.sessions.size + inner.pending.size;
      if (r < 4 && live < 40) {
        // The peer initiates: the hub responds with a new session.
        const init = peers[i].tryInitiate(now, hubKey.publicKey, now);
        if ('drop' in init) continue;
        const resp = hub.handleHandshake(now, init.datagram, `p${i}`);
        if (resp.kind === 'respond' && peers[i].handleHandshake(now, resp.datagram, 'hub').kind === 'established') established++;
      } else if (r < 7 && live < 40) {
        // The hub initiates (pending), answered at once or left pending.
        const init = hub.tryInitiate(now, peerKeys[i].publicKey, now);
        if ('drop' in init) continue;
        if (rng.int(0, 3) > 0) {
          const resp = peers[i].handleHandshake(now, init.datagram, 'hub');
          if (resp.kind === 'respond' && hub.handleHandshake(now, resp.datagram, `p${i}`).kind === 'established') established++;
        }
      } else if (inner.sessions.size > 0) {
        const keys = [...inner.sessions.keys()];
        hub.close(keys[rng.int(0, keys.length - 1)]);
      }
      check();
    }
    expect(established).toBeGreaterThan(300);
  });
});

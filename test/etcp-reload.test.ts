import { describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr, type PeerEvent, type PeerSpec } from '../core/etcp/peers.js';
import { PairState } from '../core/pair/lifecycle.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';

/**
 * Peers added and removed while the table runs (issue 18's reload, like `wg syncconf`): a peer
 * added forms a session without touching the others; a peer removed loses its sessions at once,
 * and its key is refused from then on.
 */
function world() {
  const rng = new Rng(7);
  const random = (n: number): Uint8Array => rng.bytes(n);
  const keyRng = new Rng(3);
  const keyPair = (): KeyPair => {
    const privateKey = keyRng.bytes(32);
    return { privateKey, publicKey: publicKeyOf(privateKey) };
  };
  const k = { a: keyPair(), b: keyPair(), c: keyPair() };
  const at: Record<'a' | 'b' | 'c', Addr> = { a: { address: 'a', port: 1 }, b: { address: 'b', port: 1 }, c: { address: 'c', port: 1 } };
  const clock = { now: 0 };
  const spec = (p: 'a' | 'b' | 'c'): PeerSpec => ({
    name: p,
    publicKey: k[p].publicKey,
    endpoint: at[p],
    pairState: () => PairState.ENTANGLED,
    budgetMs: 100,
  });
  const node = (self: 'a' | 'b' | 'c', peers: ('a' | 'b' | 'c')[]) => {
    const etcp = new EtcpEndpoint({
      staticKey: k[self],
      peers: peers.map((p) => ({ name: p, publicKey: k[p].publicKey })),
      random,
      perPeerLimit: 1000,
    });
    const table = new PeerTable({
      etcp,
      localPublicKey: k[self].publicKey,
      peers: peers.map(spec),
      now: 0,
      clock: () => clock.now,
      violationLimit: 100,
      rekeyAfterMs: 120_000,
      sessionGraceMs: 30_000,
    });
    const events: PeerEvent[] = [];
    return { etcp, table, events };
  };
  const n = { a: node('a', ['b']), b: node('b', ['a']), c: node('c', ['a']) };
  const route = (): void => {
    for (let moved = true; moved;) {
      moved = false;
      for (const from of ['a', 'b', 'c'] as const) {
        const t = n[from].table;
        for (let d = t.pollTransmit(); d; d = t.pollTransmit()) {
          moved = true;
          n[d.to.address as 'a' | 'b' | 'c'].table.handleDatagram(clock.now, at[from], d.datagram);
        }
        for (let e = t.pollEvent(); e; e = t.pollEvent()) n[from].events.push(e);
      }
    }
  };
  const run = (ms: number): void => {
    for (const end = clock.now + ms; clock.now < end; clock.now += 50) {
      for (const x of Object.values(n)) x.table.handleTimeout(clock.now);
      route();
    }
  };
  return { k, n, spec, run, at, clock };
}

describe('ETCP peers added and removed at run time', () => {
  it('adds a peer without disturbing the others, and removes one: sessions gone, its key refused', () => {
    const w = world();
    w.run(3_000);
    expect(w.n.a.table.peer('b')!.session).toBeDefined();
    const abIndex = w.n.a.table.peer('b')!.session!.localIndex;
    // c knows a; a learns c: both ends now authorise each other.
    w.n.a.etcp.addPeer({ name: 'c', publicKey: w.k.c.publicKey });
    w.n.a.table.addPeer(w.spec('c'));
    w.run(3_000);
    expect(w.n.a.table.peer('c')!.session).toBeDefined();
    expect(w.n.c.table.peer('a')!.session).toBeDefined();
    // The a-b session was not touched.
    expect(w.n.a.table.peer('b')!.session!.localIndex).toBe(abIndex);
    expect(() => w.n.a.table.addPeer(w.spec('c'))).toThrow(/already/);

    // Remove c: its session leaves the pair table at once, its key is no longer authorised.
    const acIndex = w.n.a.table.peer('c')!.session!.localIndex;
    w.n.a.events.length = 0;
    w.n.a.table.removePeer('c');
    w.n.a.etcp.removePeer(w.k.c.publicKey);
    w.run(100);
    expect(w.n.a.table.peer('c')).toBeUndefined();
    expect(w.n.a.events).toContainEqual({ type: 'session-removed', peer: 'c', localIndex: acIndex });
    expect(w.n.a.etcp.sessions.has(acIndex)).toBe(false);
    // c handshakes again (as it would once its pair decohered); a refuses it as an unauthorised key, and b's pair is still up.
    w.n.c.table.dropSessions('a');
    w.n.a.events.length = 0;
    w.run(6_000);
    expect(w.n.a.events.some((e) => e.type === 'handshake-refused')).toBe(true);
    expect(w.n.a.events.some((e) => 'peer' in e && e.peer === 'c' && e.type === 'established')).toBe(false);
    expect(w.n.a.table.peer('b')!.session).toBeDefined();
    expect(w.n.a.table.drops['unauthorized-key']).toBeGreaterThan(0);
  });
});

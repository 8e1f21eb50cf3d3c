/**
 * A peer's demand (the frames that make it "busy" for the other peers' work-conserving budgets,
 * PROTOCOL.md §12.9) counts only its Data frames that open: a pair_id is visible on the wire, so
 * forged frames naming an honest peer's session must not make it look busy and hold the others
 * to their budgets.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import { BudgetPool } from '../core/etcp/budget.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { PairState } from '../core/pair/lifecycle.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function mkTable(self: KeyPair, peers: { name: string; key: KeyPair; at: Addr }[], clock: { now: number }) {
  const etcp = new EtcpEndpoint({
    staticKey: self,
    peers: peers.map((p) => ({ name: p.name, publicKey: p.key.publicKey })),
    random,
    perPeerLimit: 10,
  });
  const table = new PeerTable({
    etcp,
    localPublicKey: self.publicKey,
    peers: peers.map((p) => ({
      name: p.name,
      publicKey: p.key.publicKey,
      endpoint: p.at,
      pairState: () => PairState.ENTANGLED,
      budgetMs: 100,
    })),
    now: 0,
    clock: () => clock.now,
    violationLimit: 100,
  });
  return { etcp, table };
}

/** h with peers g (paired) and x (idle); g's table, to seal genuine frames. */
function hub() {
  const kh = generateKeyPair();
  const kg = generateKeyPair();
  const kx = generateKeyPair();
  const clock = { now: 0 };
  const H: Addr = { address: '192.0.2.1', port: 1 };
  const G: Addr = { address: '192.0.2.2', port: 1 };
  const X: Addr = { address: '192.0.2.3', port: 1 };
  const h = mkTable(
    kh,
    [
      { name: 'g', key: kg, at: G },
      { name: 'x', key: kx, at: X },
    ],
    clock,
  );
  const g = mkTable(kg, [{ name: 'h', key: kh, at: H }], clock);
  for (clock.now = 0; clock.now < 4000 && !(h.table.canSend('g') && g.table.canSend('h')); clock.now += 100) {
    h.table.handleTimeout(clock.now);
    g.table.handleTimeout(clock.now);
    for (let n = 0; n < 4; n++) {
      for (let t = h.table.pollTransmit(); t; t = h.table.pollTransmit())
        if (t.to.address === G.address) g.table.handleDatagram(clock.now, H, t.datagram);
      for (let t = g.table.pollTransmit(); t; t = g.table.pollTransmit()) h.table.handleDatagram(clock.now, G, t.datagram);
    }
  }
  while (h.table.pollEvent());
  expect(h.table.canSend('g')).toBe(true);
  expect(g.table.canSend('h')).toBe(true);
  clock.now += 5000; // the handshake's work has decayed
  return { h, g, clock, G };
}

describe('demand counts only frames that open (§12.9)', () => {
  it('attack: 1,000 forged Data frames naming an honest peer’s session do not make it busy; the other peer keeps work-conservation', () => {
    const { h, clock } = hub();
    const xBudget = h.table.peer('x')!.budget;
    const gBudget = h.table.peer('g')!.budget;
    expect(h.table.budgets.contended(xBudget, clock.now)).toBe(false);
    const pairId = h.table.peer('g')!.session!.localIndex;
    for (let i = 0; i < 1000; i++) {
      const forged = encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: 7 + i }, random(64));
      h.table.handleDatagram(clock.now, { address: `198.51.100.${i % 250}`, port: 5 }, forged);
    }
    expect(h.table.drops['data-auth-failed']).toBe(1000);
    expect(gBudget.recentDemand(clock.now)).toBe(0);
    expect(h.table.budgets.contended(xBudget, clock.now)).toBe(false);
  });

  it('genuine frames still count: 25 of g’s frames make g busy for x', () => {
    const { h, g, clock, G } = hub();
    const xBudget = h.table.peer('x')!.budget;
    for (let i = 0; i < 25; i++) {
      const { frame } = g.table.seal('h', new Uint8Array([0x01, 0, 0, 0]));
      h.table.handleDatagram(clock.now, G, frame);
    }
    expect(h.table.peer('g')!.budget.recentDemand(clock.now)).toBeGreaterThanOrEqual(25);
    expect(h.table.budgets.contended(xBudget, clock.now)).toBe(true);
  });

  it('WorkBudget: allows() counts no demand; countDemand() does; admit() is both', () => {
    let now = 0;
    const pool = new BudgetPool(() => now);
    const a = pool.add(100);
    const other = pool.add(100);
    for (let i = 0; i < 30; i++) expect(a.allows(now)).toBe(true);
    expect(pool.contended(other, now)).toBe(false);
    for (let i = 0; i < 30; i++) a.countDemand(now);
    expect(pool.contended(other, now)).toBe(true);
    now += 10_000;
    expect(pool.contended(other, now)).toBe(false);
    for (let i = 0; i < 30; i++) a.admit(now);
    expect(pool.contended(other, now)).toBe(true);
  });
});

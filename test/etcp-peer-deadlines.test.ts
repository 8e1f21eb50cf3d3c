/**
 * Hostile review of the PeerTable's deadline heap (issue 16, hubheap): a peer's key in the heap
 * may be early (a wake-up for nothing) but never later than its earliest armed timer, or a
 * handshake, rekey, re-handshake or session expiry is missed. Random operations on two tables
 * (traffic, time, address changes, dropped sessions, pair state changes with refresh, fencing):
 * after each, every peer's key is checked against its timers.
 */
import { describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import { PairState } from '../core/pair/lifecycle.js';
import { MsgType } from '../wire/messages.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';

type Name = 'h' | 'g' | 'f';

function heapKey(t: PeerTable, name: string): number | undefined {
  const i = t as unknown as { peers: Map<string, object>; deadlines: { at(p: object): number | undefined } };
  return i.deadlines.at(i.peers.get(name)!);
}

function earliest(t: PeerTable, name: string): number | undefined {
  const v = Object.values(t.timers(name));
  return v.length === 0 ? undefined : Math.min(...v);
}

describe('PeerTable deadline keys never later than the timers', () => {
  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: 3,000 random steps over a hub and two peers`, () => {
      const rng = new Rng(seed);
      const keyRng = new Rng(seed + 100);
      const keyPair = (): KeyPair => {
        const privateKey = keyRng.bytes(32);
        return { privateKey, publicKey: publicKeyOf(privateKey) };
      };
      const k: Record<Name, KeyPair> = { h: keyPair(), g: keyPair(), f: keyPair() };
      const at: Record<Name, Addr> = { h: { address: 'h', port: 1 }, g: { address: 'g', port: 1 }, f: { address: 'f', port: 1 } };
      const clock = { now: 0 };
      const states: Record<string, PairState> = {};
      const table = (self: Name, peers: Name[]): PeerTable =>
        new PeerTable({
          etcp: new EtcpEndpoint({
            staticKey: k[self],
            peers: peers.map((p) => ({ name: p, publicKey: k[p].publicKey })),
            random: (n) => rng.bytes(n),
            perPeerLimit: 1000,
          }),
          localPublicKey: k[self].publicKey,
          peers: peers.map((p) => {
            states[`${self}:${p}`] = PairState.ENTANGLED;
            return { name: p, publicKey: k[p].publicKey, endpoint: at[p], pairState: () => states[`${self}:${p}`], budgetMs: 100 };
          }),
          now: 0,
          clock: () => clock.now,
          violationLimit: 100,
          rekeyAfterMs: 3000,
          sessionGraceMs: 400,
          rekeyAfterMessages: 20,
        });
      const t: Record<Name, PeerTable> = { h: table('h', ['g', 'f']), g: table('g', ['h']), f: table('f', ['h']) };
      const peersOf: Record<Name, Name[]> = { h: ['g', 'f'], g: ['h'], f: ['h'] };
      const route = (): void => {
        for (let moved = true, n = 0; moved && n < 50; n++) {
          moved = false;
          for (const from of ['h', 'g', 'f'] as Name[])
            for (let d = t[from].pollTransmit(); d; d = t[from].pollTransmit()) {
              moved = true;
              if (rng.int(0, 19) === 0) continue; // loss
              t[d.to.address as Name].handleDatagram(clock.now, at[from], d.datagram);
            }
          for (const n2 of ['h', 'g', 'f'] as Name[]) while (t[n2].pollEvent());
        }
      };
      const check = (step: number, what: string): void => {
        for (const self of ['h', 'g', 'f'] as Name[])
          for (const p of peersOf[self]) {
            const want = earliest(t[self], p);
            const key = heapKey(t[self], p);
            if (want === undefined) continue;
            expect(key, `step ${step} (${what}): ${self}'s key for ${p} vs its timers ${JSON.stringify(t[self].timers(p))}`).toBeDefined();
            expect(key!, `step ${step} (${what}): ${self}'s key for ${p}`).toBeLessThanOrEqual(want);
          }
      };
      for (const n of ['h', 'g', 'f'] as Name[]) t[n].pollTimeout(); // every peer keyed once
      let fenced = false;
      let sent = 0;
      for (let step = 0; step < 3000; step++) {
        const r = rng.int(0, 99);
        const self = (['h', 'g', 'f'] as Name[])[rng.int(0, 2)];
        const peer = peersOf[self][rng.int(0, peersOf[self].length - 1)];
        let what: string;
        if (r < 35) {
          what = 'time';
          const next = Math.min(...(['h', 'g', 'f'] as Name[]).map((n) => t[n].pollTimeout() ?? Infinity));
          clock.now = Math.max(clock.now, Math.min(next, clock.now + rng.int(1, 800)));
          for (const n of ['h', 'g', 'f'] as Name[]) t[n].handleTimeout(clock.now);
        } else if (r < 75) {
          what = 'payload';
          if (t[self].canSend(peer) && t[self].sendPayload(peer, new Uint8Array([MsgType.Status]))) sent++;
        } else if (r < 82) {
          what = 'state';
          states[`${self}:${peer}`] = [PairState.ENTANGLED, PairState.DECOHERENT, PairState.REENTANGLING][rng.int(0, 2)];
          t[self].refresh(peer);
        } else if (r < 88) {
          what = 'address';
          t[self].setAddress(peer, rng.int(0, 2) === 0 ? undefined : at[peer]);
        } else if (r < 94) {
          what = 'drop sessions';
          t[self].dropSessions(peer);
        } else if (r < 95 && !fenced) {
          what = 'fence';
          fenced = true;
          t[self].fence(peer);
        } else what = 'nothing';
        check(step, what);
        route();
        check(step, `${what}, routed`);
      }
      expect(sent).toBeGreaterThan(300); // sessions formed and carried traffic (and rekeyed past 20 frames)
    });
  }
});

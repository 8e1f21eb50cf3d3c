/**
 * A member wiped and added again (the way back for a fenced member, OPERATIONS.md "A fenced
 * domain") numbers its candidates above its origin's seqs in the domain's outcome table, and
 * proposes only once its state holds them (PROTOCOL.md §15.2, rev 1.34; qn-rejoin-seq-reuse).
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { Trio } from './domain-trio.js';
import { OUTCOME_WINDOW } from '../core/qn/state.js';

/** Numbered after a wipe: above `decided` by a whole number of OUTCOME_WINDOWs (drawn at random, node.ts raiseAboveOwnTail). */
const jumped = (seq: number, decided: number): boolean => seq > decided + OUTCOME_WINDOW && (seq - decided - 1) % OUTCOME_WINDOW === 0;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string): { register: string; delta: { op: DeltaOp.Set; key: Uint8Array; value: Uint8Array } }[] => [
  { register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc('v') } },
];

/** Five candidates of the victim committed, then it is removed, wiped and started with join; returns it (not yet added). */
function wipedVictim(maxLogEntries: number): { t: Trio; victim: number } {
  const wiped = new Set<number>();
  const t = new Trio(5, (id) => (wiped.has(id) ? { members: [1, 2, 3].filter((x) => x !== id), maxLogEntries } : { maxLogEntries }));
  t.run(600);
  const victim = t.follower()!.id;
  for (let i = 0; i < 5; i++) expect(t.put(`old${i}`, 'v', victim)).toBe('committed');
  for (let i = 0; i < 30; i++) expect(t.put(`k${i}`, 'v')).toBe('committed');
  expect(t.leader()!.changeMembers(t.now, { remove: victim }).ok).toBe(true);
  t.run(200);
  t.stop(victim);
  t.disks.set(victim, new MemDomainStore());
  wiped.add(victim);
  t.start(victim);
  t.run(100);
  return { t, victim };
}

describe('a wiped and re-added member numbers above its old seqs', () => {
  for (const [how, maxLogEntries] of [
    ['from a snapshot', 16],
    ['replaying the log', 100_000],
  ] as const)
    it(`refuses proposals until caught up, then numbers above them (${how})`, () => {
      const { t, victim } = wipedVictim(maxLogEntries);
      const back = t.nodes.get(victim)!;
      // Not added yet: its state holds nothing of its old candidates.
      expect(back.propose(t.now, set('early'))).toHaveProperty('refused');
      expect(t.leader()!.changeMembers(t.now, { add: victim }).ok).toBe(true);
      // A slow catch-up: the leader is heard (empty appends) but nothing it sends to catch up lands
      // for 300 ms. Its removal notice is void (the leader replicates to it), its state still empty.
      const deliver = back.handleDatagram.bind(back);
      let slow = true;
      back.handleDatagram = (now, from, bytes) => {
        const env = decodeEnvelope(bytes);
        const b = env.body;
        if (slow && b.t === 'frag') return;
        // An append's entries, a snapshot chunk's octets stripped: the leader is heard (with its commit index in appends).
        if (slow && b.t === 'append' && b.entries.length > 0) bytes = encodeEnvelope({ ...env, body: { ...b, entries: [] } });
        if (slow && b.t === 'snap') bytes = encodeEnvelope({ ...env, body: { ...b, data: new Uint8Array(0) } });
        deliver(now, from, bytes);
      };
      t.run(300);
      const waiting = back.propose(t.now, set('new'));
      expect('refused' in waiting && waiting.refused).toMatch(/not caught up/); // (seq 1 before the fix)
      slow = false;
      // Proposed every 5 ms from then on: refused until its state holds seqs 1-5, then above them and
      // as many as its earlier life may have had undecided (qn-wiped-member-outcome).
      let r = back.propose(t.now, set('new'));
      for (let i = 0; 'refused' in r && i < 400; i++, r = back.propose(t.now, set('new'))) t.run(5);
      expect(back.state.maxSeqOf(victim)).toBe(5);
      expect('seq' in r && jumped(r.seq, 5)).toBe(true);
      const next = (r as { seq: number }).seq;
      expect(t.await(victim, next, 2000)).toBe('committed');
      // Restarted from its own disk: still above them, and the outcome is still its own.
      t.stop(victim);
      const again = t.start(victim);
      t.run(500);
      expect(again.outcomeOf(next)).toEqual({ verdict: 'committed' });
      expect(again.propose(t.now, set('newer'))).toEqual({ seq: next + 1 });
      expect(t.await(victim, next + 1, 2000)).toBe('committed');
    });
});

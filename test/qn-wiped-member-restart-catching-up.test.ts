/**
 * A member restarted on a wiped directory numbers nothing until it has caught up (rev 1.36). What
 * it hears meanwhile is journaled (the leader's term, entries): restarted again before it caught
 * up, it was no longer empty, so numbered at once, from what it had applied, under seqs the
 * domain's table already held for its earlier life.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import type { DomainNode } from '../core/qn/node.js';
import type { MapState } from '../core/register/map.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string) => [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }];

/** Entries and snapshot octets stripped from what `n` hears while `slow()`: the leader is heard, nothing lands. */
function slowCatchUp(n: DomainNode, slow: () => boolean): void {
  const deliver = n.handleDatagram.bind(n);
  n.handleDatagram = (now, from, bytes) => {
    const env = decodeEnvelope(bytes);
    const b = env.body;
    if (slow() && b.t === 'frag') return;
    if (slow() && b.t === 'append' && b.entries.length > 0)
      bytes = encodeEnvelope({ ...env, body: { ...b, entries: b.entries.slice(0, 1) } });
    if (slow() && b.t === 'snap') bytes = encodeEnvelope({ ...env, body: { ...b, data: new Uint8Array(0) } });
    deliver(now, from, bytes);
  };
}

describe('a wiped member restarted again before it caught up (core/qn/node.ts)', () => {
  it('still numbers nothing until caught up, then above its earlier seqs: its write applied, its outcome its own', () => {
    const t = new Trio(4);
    t.run(1000);
    const A = t.leader()!;
    const C = [1, 2, 3].find((x) => x !== A.id)!;
    for (let i = 0; i < 3; i++) expect(t.put(`k${i}`, 'v', C)).toBe('committed');
    t.stop(C);
    t.disks.set(C, new MemDomainStore());
    t.events.set(C, []);
    const C2 = t.start(C);
    slowCatchUp(C2, () => true);
    t.run(100);
    expect(C2.catchingUp).toBe(true);
    const stored = t.disks.get(C)!.load();
    expect(stored.term).toBeGreaterThan(0); // heard, journaled: the store is not empty any more
    t.stop(C);
    const C3 = t.start(C);
    const has = (k: string): boolean => (A.state.registers.get('kv')!.state as MapState).get(enc(k)) !== undefined;
    let r = C3.propose(t.now, set('z', 'new'));
    for (let i = 0; 'refused' in r && i < 400; i++) {
      expect(r).toMatchObject({ code: 'catching-up' });
      t.run(5);
      r = C3.propose(t.now, set('z', 'new'));
    }
    expect(r).toHaveProperty('seq');
    const seq = (r as { seq: number }).seq;
    expect(seq).toBeGreaterThan(3);
    const v = t.await(C, seq, 2000);
    expect(v).toBe('committed');
    expect(has('z')).toBe(true);
    expect(C3.outcomeOf(seq)?.verdict).toBe('committed');
  });
});

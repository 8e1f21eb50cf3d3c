/**
 * A member wiped while a candidate of its own was appended at the leader and not committed
 * (its acknowledgement lost, the third member cut off) catches up as far as the leader's commit
 * index, below that entry, and numbers its next write from what it applied: the seq of the
 * uncommitted one. The leader took the new write for a retry of the old (in its log this term),
 * the old then committed, and the member reported the new write committed, never applied. It
 * now numbers above every candidate of its origin in its log, applied or not, when it catches
 * up; and should the old one reach it only after it numbered, it reports the write not applied.
 * With a candidate of its origin decided before, it numbers above as many as its earlier life may
 * have had undecided (qn-wiped-member-outcome): no seq of that life is numbered again.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { OUTCOME_WINDOW } from '../core/qn/state.js';
import type { DomainEvent, DomainNode } from '../core/qn/node.js';
import type { MapState } from '../core/register/map.js';

/** Numbered after a wipe: above `decided` by a whole number of OUTCOME_WINDOWs (drawn at random, node.ts raiseAboveOwnTail). */
const jumped = (seq: number, decided: number): boolean => seq > decided + OUTCOME_WINDOW && (seq - decided - 1) % OUTCOME_WINDOW === 0;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string) => [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }];

/** `prior` writes of C committed, then its next appended at the leader A only (uncommitted), then C wiped. */
function setup(prior = 3): { t: Trio; A: DomainNode; C: number; has: (k: string) => boolean } {
  const t = new Trio(4);
  t.run(1000);
  const A = t.leader()!;
  const C = [1, 2, 3].find((x) => x !== A.id)!;
  const B = [1, 2, 3].find((x) => x !== A.id && x !== C)!;
  for (let i = 0; i < prior; i++) expect(t.put(`k${i}`, 'v', C)).toBe('committed');
  t.isolate(B);
  // C's acknowledgement of its own candidate never reaches A: appended at A, uncommitted.
  t.tap = (from, to, bytes) => {
    const b = decodeEnvelope(bytes).body;
    if (from === A.id && to === C && b.t === 'append' && b.entries.length > 0) t.cut.add(`${C}>${A.id}`);
  };
  expect(t.nodes.get(C)!.propose(t.now, set('old', '4'))).toEqual({ seq: prior + 1 });
  t.deliver();
  t.tap = undefined;
  expect(A.raft.lastIndex).toBe(A.raft.commit + 1);
  t.stop(C);
  t.disks.set(C, new MemDomainStore());
  t.events.set(C, []);
  t.cut.delete(`${C}>${A.id}`);
  const has = (k: string): boolean => (A.state.registers.get('kv')!.state as MapState).get(enc(k)) !== undefined;
  return { t, A, C, has };
}

/** Propose as spookd's dpropose does: held while catching up, proposed once caught up. */
function proposeWhenCaughtUp(t: Trio, n: DomainNode, k: string): { seq: number } {
  let r = n.propose(t.now, set(k, 'x'));
  for (let i = 0; 'refused' in r && i < 400; i++) {
    expect(r).toMatchObject({ code: 'catching-up' });
    t.run(5);
    r = n.propose(t.now, set(k, 'x'));
  }
  expect(r).toHaveProperty('seq');
  return r as { seq: number };
}

const outcome = (t: Trio, id: number, seq: number): DomainEvent | undefined =>
  t.events.get(id)!.find((e) => e.type === 'outcome' && e.seq === seq);

describe('a wiped member whose old candidate is uncommitted at the leader (core/qn/node.ts)', () => {
  it('numbers its new write above the old one in its log: both applied, each reported for itself', () => {
    const { t, C, has } = setup();
    const C2 = t.start(C);
    const { seq } = proposeWhenCaughtUp(t, C2, 'new');
    expect(jumped(seq, 3)).toBe(true); // was 4: the old candidate's seq (then 5: above it; now above all its earlier life may have had undecided)
    expect(t.await(C, seq, 2000)).toBe('committed');
    expect(has('new')).toBe(true);
    expect(has('old')).toBe(true);
  });

  it('the old one reaching it only after it numbered, with no trace of its earlier life: the write is reported not applied, never committed', () => {
    // No candidate of C decided before (with one, it numbers above OUTCOME_WINDOW more: qn-wiped-member-outcome).
    const { t, A, C, has } = setup(0);
    const C2 = t.start(C);
    const commit = A.raft.commit;
    // The append that catches C up ends at A's commit index (a batch boundary); the entry past it waits.
    const deliver = C2.handleDatagram.bind(C2);
    let hold = true;
    C2.handleDatagram = (now, from, bytes) => {
      const env = decodeEnvelope(bytes);
      const b = env.body;
      if (hold && from === A.id && b.t === 'append' && b.entries.length > 0 && b.prevIndex + b.entries.length > commit) {
        bytes = encodeEnvelope({ ...env, body: { ...b, entries: b.entries.slice(0, Math.max(0, commit - b.prevIndex)) } });
      }
      deliver(now, from, bytes);
    };
    const { seq } = proposeWhenCaughtUp(t, C2, 'new');
    expect(seq).toBe(1); // neither its log nor the table held anything of its origin
    hold = false;
    const v = t.await(C, seq, 2000);
    expect(has('old')).toBe(true);
    expect(has('new')).toBe(false);
    expect(v).toBe('rejected');
    expect(outcome(t, C, seq)).toMatchObject({ committed: false, reason: expect.stringMatching(/not applied/) });
    // The next write goes above it, and is applied.
    expect(t.put('next', 'y', C)).toBe('committed');
    expect(has('next')).toBe(true);
  });

  it("a brand-new domain's members number from 1", () => {
    const t = new Trio(6);
    const seqs = [1, 2, 3].map((id) => proposeWhenCaughtUp(t, t.nodes.get(id)!, `a${id}`).seq);
    expect(seqs).toEqual([1, 1, 1]);
    for (const id of [1, 2, 3]) expect(t.await(id, 1, 2000)).toBe('committed');
    expect([1, 2, 3].map((id) => t.nodes.get(id)!.propose(t.now, set(`b${id}`, '1')))).toEqual([{ seq: 2 }, { seq: 2 }, { seq: 2 }]);
  });
});

/**
 * A member restarted on a wiped directory numbers its writes once it has caught up, above every
 * seq of its origin it applied. A candidate of its earlier life that the leader had appended
 * and not committed, and had not sent it yet, could still share a seq with its next write: the
 * write was reported not applied (or, were the old one learnt from a snapshot, committed), and
 * `doutcome` of that seq (DomainNode.outcomeOf) answered the old candidate's outcome, committed,
 * even across a restart. Its earlier life had at most OUTCOME_WINDOW candidates undecided, each
 * above every seq of its origin decided before it (or in the log's tail): after a wipe it now
 * numbers above that many, so no seq of its earlier life is numbered again and each seq's
 * outcome is its own write's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { OUTCOME_WINDOW } from '../core/qn/state.js';
import type { DomainEvent, DomainNode } from '../core/qn/node.js';
import type { DomainWrite, StoredDomain } from '../core/qn/persist.js';
import type { MapState } from '../core/register/map.js';

/** Numbered after a wipe: above `decided` by a whole number of OUTCOME_WINDOWs (drawn at random, node.ts raiseAboveOwnTail). */
const jumped = (seq: number, decided: number): boolean => seq > decided + OUTCOME_WINDOW && (seq - decided - 1) % OUTCOME_WINDOW === 0;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string) => [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }];

/**
 * Three writes of C committed, its fourth appended at the leader A only (uncommitted: its
 * acknowledgement lost, B cut off), C wiped and restarted; the append that catches it up ends
 * at A's commit index, the entry past it (C's old fourth) held back while `hold`.
 */
function setup(extra = {}): {
  t: Trio;
  A: DomainNode;
  B: number;
  C: number;
  C2: DomainNode;
  has: (k: string) => boolean;
  release: () => void;
} {
  const t = new Trio(4, extra);
  t.run(1000);
  const A = t.leader()!;
  const C = [1, 2, 3].find((x) => x !== A.id)!;
  const B = [1, 2, 3].find((x) => x !== A.id && x !== C)!;
  for (let i = 0; i < 3; i++) expect(t.put(`k${i}`, 'v', C)).toBe('committed');
  t.isolate(B);
  t.tap = (from, to, bytes) => {
    const b = decodeEnvelope(bytes).body;
    if (from === A.id && to === C && b.t === 'append' && b.entries.length > 0) t.cut.add(`${C}>${A.id}`);
  };
  expect(t.nodes.get(C)!.propose(t.now, set('old', '4'))).toEqual({ seq: 4 });
  t.deliver();
  t.tap = undefined;
  expect(A.raft.lastIndex).toBe(A.raft.commit + 1);
  t.stop(C);
  t.disks.set(C, new MemDomainStore());
  t.events.set(C, []);
  t.cut.delete(`${C}>${A.id}`);
  const C2 = t.start(C);
  const commit = A.raft.commit;
  const deliver = C2.handleDatagram.bind(C2);
  let hold = true;
  C2.handleDatagram = (now, from, bytes) => {
    const env = decodeEnvelope(bytes);
    const b = env.body;
    if (hold && from === A.id && b.t === 'append' && b.entries.length > 0 && b.prevIndex + b.entries.length > commit)
      bytes = encodeEnvelope({ ...env, body: { ...b, entries: b.entries.slice(0, Math.max(0, commit - b.prevIndex)) } });
    deliver(now, from, bytes);
  };
  const has = (k: string): boolean => (A.state.registers.get('kv')!.state as MapState).get(enc(k)) !== undefined;
  return { t, A, B, C, C2, has, release: () => (hold = false) };
}

/** Propose as spookd's dpropose does: held while catching up, proposed once caught up. */
function proposeWhenCaughtUp(t: Trio, n: DomainNode, k: string): number {
  let r = n.propose(t.now, set(k, 'x'));
  for (let i = 0; 'refused' in r && i < 400; i++) {
    expect(r).toMatchObject({ code: 'catching-up' });
    t.run(5);
    r = n.propose(t.now, set(k, 'x'));
  }
  expect(r).toHaveProperty('seq');
  return (r as { seq: number }).seq;
}

const outcome = (t: Trio, id: number, seq: number): DomainEvent | undefined =>
  t.events.get(id)!.find((e) => e.type === 'outcome' && e.seq === seq);

describe("a wiped member's write and its earlier life's uncommitted candidate (core/qn/node.ts)", () => {
  it("doutcome of the write's seq answers the write's own outcome, never the old candidate's, across a restart", () => {
    const { t, C, C2, has, release } = setup();
    const seq = proposeWhenCaughtUp(t, C2, 'new');
    release();
    const v = t.await(C, seq, 2000);
    expect(has('old')).toBe(true);
    // What the writer heard (the event) and what doutcome answers agree, and both say what happened to 'new'.
    const applied = has('new');
    expect(v).toBe(applied ? 'committed' : 'rejected');
    expect(C2.outcomeOf(seq)?.verdict).toBe(v);
    t.run(200);
    t.stop(C);
    const C3 = t.start(C);
    t.run(500);
    expect(C3.outcomeOf(seq)?.verdict).toBe(v);
    // Every write of the new life is applied: none was numbered under a seq of the old one.
    expect(applied).toBe(true);
    expect(seq).toBeGreaterThan(4 + OUTCOME_WINDOW - 1);
    // The old candidate's seq answers its own (committed) outcome: its writer, gone with the wipe, may ask.
    expect(C3.outcomeOf(4)?.verdict).toBe('committed');
  });

  it('a write whose seq the old candidate took is never reported committed from a snapshot that decided the old one', () => {
    const { t, A, B, C, C2, has, release } = setup({ maxLogEntries: 8 });
    const seq = proposeWhenCaughtUp(t, C2, 'new');
    // C cut off before it hears the old one; it commits with B, and A's log is compacted past it.
    t.isolate(B, false);
    t.isolate(C);
    release();
    t.run(300);
    expect(has('old')).toBe(true);
    for (let i = 0; i < 200 && A.raft.base <= C2.raft.lastIndex; i++) expect(t.put(`a${i}`, 'v')).toBe('committed');
    expect(A.raft.base).toBeGreaterThan(C2.raft.lastIndex);
    t.isolate(C, false);
    const v = t.await(C, seq, 3000);
    expect(outcome(t, C, seq)).toBeDefined();
    // Reported committed only if it was applied.
    expect(v === 'committed').toBe(has('new'));
    expect(C2.outcomeOf(seq)?.verdict).toBe(v);
  });

  it('the numbering above them is journaled: a restart after catching up, before any write, keeps it', () => {
    const { t, C, C2, has, release } = setup();
    release();
    for (let i = 0; i < 400 && C2.catchingUp; i++) t.run(5);
    expect(C2.catchingUp).toBe(false);
    const next = (C2 as unknown as { nextSeq: number }).nextSeq;
    expect(jumped(next, 3)).toBe(true);
    t.run(50);
    t.stop(C);
    const C3 = t.start(C); // its own disk: not empty, so not catching up, and numbering at once
    const r = C3.propose(t.now, set('new', 'x'));
    expect(r).toEqual({ seq: next });
    expect(t.await(C, next, 2000)).toBe('committed');
    expect(has('new')).toBe(true);
  });

  it("the file journal keeps 'behind' and 'next-seq' across a reopen and a rewrite (NextSeq records)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-qn-nextseq-'));
    const reopen = (writes: DomainWrite[]): StoredDomain => {
      const a = new FileDomainStore(dir, 'always');
      a.persist(writes);
      a.close();
      const b = new FileDomainStore(dir, 'always');
      const s = b.load();
      b.close();
      return s;
    };
    try {
      expect(reopen([{ kind: 'behind' }, { kind: 'hard', term: 3, vote: 0 }])).toMatchObject({ behind: true, nextSeq: 1, term: 3 });
      expect(reopen([{ kind: 'compact', base: 0, baseTerm: 0, reset: true }])).toMatchObject({ behind: true, nextSeq: 1 });
      expect(reopen([{ kind: 'next-seq', nextSeq: 4100 }])).toMatchObject({ behind: false, nextSeq: 4100 });
      expect(reopen([{ kind: 'compact', base: 0, baseTerm: 0, reset: true }])).toMatchObject({ behind: false, nextSeq: 4100 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

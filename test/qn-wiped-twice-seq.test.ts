/**
 * A member wiped, caught up (numbering above its largest decided seq + OUTCOME_WINDOW), then
 * wiped again while its first write of that life was appended at the leader and not committed.
 * Its largest decided seq is still the one of its first life, so the third life, caught up as far
 * as the leader's commit index (below that entry), numbered its next write under the same seq:
 * the leader took it for a retry of the second life's write, and the new write was reported not
 * applied (core/qn/node.ts raiseAboveOwnTail: the window assumed seqs numbered contiguously above
 * the largest decided one, which a jump after a wipe breaks). Each life now jumps a random number
 * of windows: its window is its own.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { OUTCOME_WINDOW } from '../core/qn/state.js';
import type { DomainEvent, DomainNode } from '../core/qn/node.js';
import type { MapState } from '../core/register/map.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string) => [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }];

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

function wipe(t: Trio, C: number): void {
  t.stop(C);
  t.disks.set(C, new MemDomainStore());
  t.events.set(C, []);
}

describe('a member wiped twice, its second life write uncommitted at the leader (core/qn/node.ts)', () => {
  it('numbers its third life write under no seq of its second life: applied and reported committed', () => {
    const t = new Trio(4);
    t.run(1000);
    const A = t.leader()!;
    const C = [1, 2, 3].find((x) => x !== A.id)!;
    const B = [1, 2, 3].find((x) => x !== A.id && x !== C)!;
    const has = (k: string): boolean => (A.state.registers.get('kv')!.state as MapState).get(enc(k)) !== undefined;
    for (let i = 0; i < 3; i++) expect(t.put(`k${i}`, 'v', C)).toBe('committed');

    // Second life: caught up, numbers above its first life's window.
    wipe(t, C);
    const C2 = t.start(C);
    // Caught up (what propose checks first), nothing numbered yet.
    const behind = C2 as unknown as { isBehind(): boolean; isCaughtUp(): boolean };
    for (let i = 0; (behind.isBehind() || !behind.isCaughtUp()) && i < 400; i++) t.run(5);
    expect(behind.isBehind()).toBe(false);
    // Its first write of this life is appended at A only (B cut off, C's ack lost).
    t.isolate(B);
    t.tap = (from, to, bytes) => {
      const b = decodeEnvelope(bytes).body;
      if (from === A.id && to === C && b.t === 'append' && b.entries.length > 0) t.cut.add(`${C}>${A.id}`);
    };
    const mid = C2.propose(t.now, set('mid', '2'));
    const midSeq = (mid as { seq: number }).seq;
    // Above its first life's window, by a whole number of windows.
    expect(midSeq).toBeGreaterThan(3 + OUTCOME_WINDOW);
    expect((midSeq - 4) % OUTCOME_WINDOW).toBe(0);
    t.deliver();
    t.tap = undefined;
    expect(A.raft.lastIndex).toBe(A.raft.commit + 1);
    wipe(t, C);
    t.cut.delete(`${C}>${A.id}`);

    // Third life: the catching-up append ends at A's commit index; the entry past it waits.
    const C3 = t.start(C);
    const commit = A.raft.commit;
    const deliver = C3.handleDatagram.bind(C3);
    let hold = true;
    C3.handleDatagram = (now, from, bytes) => {
      const env = decodeEnvelope(bytes);
      const b = env.body;
      if (hold && from === A.id && b.t === 'append' && b.entries.length > 0 && b.prevIndex + b.entries.length > commit) {
        bytes = encodeEnvelope({ ...env, body: { ...b, entries: b.entries.slice(0, Math.max(0, commit - b.prevIndex)) } });
      }
      deliver(now, from, bytes);
    };
    const { seq } = proposeWhenCaughtUp(t, C3, 'new');
    console.log(`second life's uncommitted write: seq ${midSeq}; third life's write: seq ${seq}`);
    hold = false;
    t.isolate(B, false);
    const v = t.await(C, seq, 4000);
    console.log(`third life's write: ${v}`, outcome(t, C, seq));
    expect(has('mid')).toBe(true);
    expect(seq).not.toBe(midSeq);
    expect(v).toBe('committed');
    expect(has('new')).toBe(true);
  });
});

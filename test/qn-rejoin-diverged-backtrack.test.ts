/**
 * An honest member whose log is behind a new leader's and ends in entries of an older term it
 * never committed (a leader cut off before they replicated) needs two refusals to be found: one
 * hinting its last index, one skipping back over its conflicting term (docs/PROTOCOL.md §15.4,
 * "Flow"). Refusals move a leader's next index back at most once per heartbeat; the second
 * refusal, held back, left the leader with no acknowledgement at its heartbeat, which then
 * presumed the probe lost and went back to the match index: 0 at a new leader, so it sent the
 * whole state as a snapshot (or every entry it holds) instead of the few it lacked, and the
 * domain, whose majority needed that member, committed nothing meanwhile.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { Role } from '../core/qn/raft.js';
import { decodeEnvelope } from '../wire/qn.js';
import { Trio } from './domain-trio.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
/** A value that does not compress: the state a snapshot carries is ~100 KB. */
const noise = (seed: number, n: number): string =>
  Array.from({ length: n }, (_, j) => (((seed * 7919 + j * 104_729) ^ (j * j * 31)) % 251).toString(16).padStart(2, '0')).join('');

describe('a new leader finding a diverged member (core/qn/raft.ts onAppendResp)', () => {
  it('sends it the entries it lacks, not a snapshot, within a heartbeat or two', () => {
    const t = new Trio(11, { maxLogEntries: 64 });
    t.run(1000);
    for (let i = 0; i < 100; i++) expect(t.put(`k${i}`, noise(i, 400))).toBe('committed');
    const A = t.leader()!;
    // A, cut off, appends three entries of its term that no one else gets.
    t.isolate(A.id);
    for (let i = 0; i < 3; i++) A.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(`lost${i}`), value: enc('x') } }]);
    t.run(600);
    const N = t.leader()!;
    expect(N.id).not.toBe(A.id);
    for (let i = 0; i < 5; i++) expect(t.put(`n${i}`, 'v')).toBe('committed');
    expect(N.raft.base).toBeGreaterThan(0);
    expect(N.raft.base).toBeLessThan(A.raft.lastIndex - 3);
    // A comes back and N is cut off: the third member C is elected with A's vote, A reachable.
    t.isolate(A.id, false);
    t.isolate(N.id);
    let toA = 0;
    t.tap = (from, to, bytes) => {
      if (to === A.id && decodeEnvelope(bytes).body.t !== 'hello') toA += bytes.length;
    };
    let C = t.leader();
    for (let i = 0; i < 400 && (!C || C.id === N.id); i++) {
      t.run(5);
      C = [...t.nodes.values()].find((n) => n.id !== N.id && n.raft.role === Role.Leader);
    }
    expect(C && C.id !== N.id && C.id !== A.id).toBe(true);
    // From its election: its first entry committed (A's acknowledgement needed).
    const elected = t.now;
    const noop = C!.raft.lastIndex;
    while (C!.raft.commit < noop && t.now - elected < 2000) t.run(5);
    const stall = t.now - elected;
    const t0 = t.now;
    const r = t.put('after', 'v', C!.id);
    console.log(
      `the new leader's first entry committed ${stall} ms after its election; snapshots sent to A: ${C!.raft.stats.snapshotsSent}, ${toA} octets sent to A; then a put ${r} in ${t.now - t0} ms`,
    );
    expect(r).toBe('committed');
    expect(C!.raft.stats.snapshotsSent).toBe(0);
    expect(toA).toBeLessThan(5000);
    // The second refusal waits for a heartbeat (refusals move the next index once per beat).
    expect(stall).toBeLessThanOrEqual(2 * C!.raft.heartbeatMs);
    t.run(100);
    expect(A.state.digest()).toEqual(C!.state.digest());
  });

  it('a leader change among members in step sends no snapshot', () => {
    const t = new Trio(12, { maxLogEntries: 64 });
    t.run(1000);
    for (let i = 0; i < 100; i++) expect(t.put(`k${i}`, noise(i, 400))).toBe('committed');
    const old = t.leader()!;
    t.isolate(old.id);
    t.run(600);
    const N = t.leader()!;
    expect(N.id).not.toBe(old.id);
    expect(t.put('after', 'v')).toBe('committed');
    console.log(`the new leader sent ${N.raft.stats.snapshotsSent} snapshots to a follower in step`);
    expect(N.raft.base).toBeGreaterThan(0);
    expect(N.raft.stats.snapshotsSent).toBe(0);
  });
});

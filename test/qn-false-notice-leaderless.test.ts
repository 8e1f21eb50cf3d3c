/**
 * Review 39k-2: a false removal notice still abandons a member's pending writes when it arrives
 * while the member does not hear its leader (a partition, an election).
 *
 * a9a2d2f ignores a notice past the commit only while the receiver "hears its leader"; otherwise
 * the notice is kept, and after() abandons every pending candidate at once (isRemovedHere:
 * reported `unknown`, never retried). The notice is forgotten as soon as a leader is heard
 * again (leaderContact > removedAt), so the member itself recovers, but the writes a client
 * was promised would be retried are gone: one notice of index MAX_INDEX from any member (or a
 * former member still configured as a link) during a brief cut loses them.
 */
import { describe, expect, it } from 'vitest';
import { MAX_INDEX } from '../core/qn/raft.js';
import { DeltaOp } from '../wire/delta.js';
import { Trio } from './domain-trio.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('a false notice while leaderless', () => {
  it('a member cut off for an election timeout keeps retrying its pending write after a false notice, and it commits once healed', () => {
    const t = new Trio(21);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [f, other] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    t.isolate(f.id);
    const r = f.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('p'), value: enc('1') } }]);
    expect('seq' in r).toBe(true);
    t.run(250); // f no longer hears its leader (electionMs 100)
    t.inject(other.id, f.id, { t: 'removed', index: MAX_INDEX });
    t.isolate(f.id, false);
    const outcome = t.await(f.id, (r as { seq: number }).seq, 3000);
    t.run(500);
    expect(f.raft.members).toContain(f.id);
    const atLeader = (t.leader()!.state.registers.get('kv')!.state as { get(k: Uint8Array): unknown }).get(enc('p')) !== undefined;
    expect({ outcome, atLeader, fCoherent: f.coherenceState }).toEqual({ outcome: 'committed', atLeader: true, fCoherent: 'coherent' });
  });
});

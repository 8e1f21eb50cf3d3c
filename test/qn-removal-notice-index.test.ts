/**
 * Review 39 (numbers a peer chooses, at their edges): a `removed` notice's index.
 *
 * PROTOCOL.md §15.6: "a receiver whose commit index reaches the notice's index and that holds
 * the entry there ignores the notice unless that entry is a configuration without it". The
 * check runs once, at receipt (node.ts checkBody), and `removed` is cleared only by leading or
 * by a committed configuration *above* the notice's index. A member (or a former member: any
 * knownMember) that names an index the commit never reaches (MAX_INDEX) takes another member
 * out of the domain for as long as the process runs: it refuses every candidate and reports
 * its pending ones `unknown`, while the domain commits with it as a voter.
 */
import { describe, expect, it } from 'vitest';
import { MAX_INDEX } from '../core/qn/raft.js';
import { Trio } from './domain-trio.js';

describe('removal notice index at the edge', () => {
  it('a removal notice at MAX_INDEX from a non-leading member does not take a follower out of the domain for good', () => {
    const t = new Trio(3);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [f, other] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    expect(f.coherenceState).toBe('coherent');
    const commitBefore = f.raft.commit;
    t.inject(other.id, f.id, { t: 'removed', index: MAX_INDEX });
    // The domain goes on committing with f as a voter, for 3 s (30 election timeouts).
    for (let i = 0; i < 3; i++) {
      expect(t.put(`k${i}`, 'v')).toBe('committed');
      t.run(1000);
    }
    expect(f.raft.members).toContain(f.id);
    expect(f.raft.commit).toBeGreaterThan(commitBefore + 2);
    expect(f.raft.configIndex).toBeLessThanOrEqual(f.raft.commit);
    // f is still a member in its own committed configuration: it should serve and propose.
    expect(f.coherenceState).toBe('coherent');
    expect(t.put('mine', 'v', f.id)).toBe('committed');
  });

  it('a notice just past the commit (commit + 1) is ignored once the commit reaches a non-configuration entry there (§15.6)', () => {
    const t = new Trio(4);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [f, other] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    t.inject(other.id, f.id, { t: 'removed', index: f.raft.commit + 1 });
    for (let i = 0; i < 3; i++) {
      expect(t.put(`k${i}`, 'v')).toBe('committed');
      t.run(500);
    }
    const at = f.raft.configIndex;
    expect(f.raft.commit).toBeGreaterThan(at + 1);
    expect(f.raft.members).toContain(f.id);
    expect(f.coherenceState).toBe('coherent');
    expect(t.put('mine', 'v', f.id)).toBe('committed');
  });

  it('a false notice makes the follower abandon its pending candidate (reported unknown, never committed): it should commit', () => {
    const t = new Trio(5);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [f, other] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    t.cut.add(`${f.id}>${leader.id}`); // hold f's forward for a moment
    const r = f.propose(t.now, [
      { register: 'kv', delta: { op: 1, key: new TextEncoder().encode('p'), value: new TextEncoder().encode('1') } },
    ] as never);
    expect('seq' in r).toBe(true);
    t.inject(other.id, f.id, { t: 'removed', index: MAX_INDEX });
    t.cut.delete(`${f.id}>${leader.id}`);
    const outcome = t.await(f.id, (r as { seq: number }).seq, 2000);
    t.run(500);
    // What the domain decided: the candidate committed at the leader (or, if it never got there, f should still retry it).
    const committed =
      (leader.state.registers.get('kv')!.state as { get(k: Uint8Array): unknown }).get(new TextEncoder().encode('p')) !== undefined;
    expect({ outcome, committedAtLeader: committed }).toEqual({ outcome: 'committed', committedAtLeader: true });
  });

  it('a former member (removed by a committed change, still a configured peer) takes a member out the same way', () => {
    const t = new Trio(6);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    const leader = t.leader()!;
    const [f, gone] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    expect(leader.changeMembers(t.now, { remove: gone.id }).ok).toBe(true);
    t.run(500);
    expect(f.raft.members).not.toContain(gone.id);
    expect(f.raft.configIndex).toBeLessThanOrEqual(f.raft.commit);
    t.stop(gone.id);
    t.run(300);
    expect(f.coherenceState).toBe('coherent');
    t.inject(gone.id, f.id, { t: 'removed', index: MAX_INDEX });
    t.run(2000);
    expect(t.put('k2', 'v')).toBe('committed'); // f still votes: the leader commits with it
    expect(f.coherenceState).toBe('coherent');
    expect(t.put('mine', 'v', f.id)).toBe('committed');
  });
});

describe('a real removal is still learnt', () => {
  it('a member removed while cut off learns it from a notice once the link heals, though a false notice from a member is ignored while it hears its leader', () => {
    const t = new Trio(7);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [stay, gone] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    t.isolate(gone.id);
    expect(leader.changeMembers(t.now, { remove: gone.id }).ok).toBe(true);
    t.run(1000);
    expect(stay.raft.members).not.toContain(gone.id);
    expect(gone.raft.members).toContain(gone.id); // it missed the change
    t.isolate(gone.id, false);
    // Nobody replicates to it any more: it stops hearing a leader, and the notices its messages draw hold.
    t.run(5000);
    expect(gone.coherenceState).toBe('decoherent');
    expect(
      'refused' in
        gone.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([1]), value: new Uint8Array([1]) } }] as never),
    ).toBe(true);
    expect(stay.coherenceState).toBe('coherent');
  });
});

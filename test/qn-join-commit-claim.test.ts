/**
 * A member that joined proposes once it has applied as far as a leader's commit index (§15.2,
 * rev 1.34). That index may not be one any member can claim: before, the first `commit` of any
 * append counted, so one append from a member claiming leadership (a higher term, commit 2^40)
 * had the joined member refuse every write until it restarted, while the domain went on.
 */
import { describe, expect, it } from 'vitest';
import { Role } from '../core/qn/raft.js';
import { Trio } from './domain-trio.js';

describe('QN: a joined member and a claimed commit index (core/qn/raft.ts leaderCommitSeen)', () => {
  it('one append claiming leadership and a far commit index does not stall its writes', () => {
    let joined = false;
    const t = new Trio(5, (id) => (id === 3 && joined ? { members: [1, 2] } : {}));
    t.run(1000);
    let L = t.leader()!;
    if (L.id === 3) {
      // Node 3 is the one that rejoins: have another lead.
      t.isolate(3);
      t.run(1000);
      t.isolate(3, false);
      t.run(300);
      L = t.leader()!;
    }
    expect(L.id).not.toBe(3);
    expect(t.put('a', '1')).toBe('committed');
    // 3 removed and added back: the configurations that hold it are in the log.
    expect(L.changeMembers(t.now, { remove: 3 }).ok).toBe(true);
    t.run(300);
    expect(L.changeMembers(t.now, { add: 3 }).ok).toBe(true);
    t.run(300);
    expect(t.put('b', '2')).toBe('committed');
    // 3 restarts as a joined member (outside the bootstrap configuration); before any leader
    // reaches it, the other member claims leadership with a far commit index.
    t.stop(3);
    joined = true;
    const J = t.start(3);
    const M = [1, 2].find((x) => x !== L.id)!;
    t.isolate(3);
    t.cut.delete(`${M}>3`);
    t.inject(M, 3, { t: 'append', term: L.raft.term + 1, prevIndex: 0, prevTerm: 0, commit: 2 ** 40, entries: [] });
    t.isolate(3, false);
    t.run(3000);
    expect(t.leader()).toBeDefined();
    expect(J.raft.role).toBe(Role.Follower);
    expect(J.raft.applied).toBe(t.leader()!.raft.applied);
    const r = t.put('c', '3', 3);
    console.log(`joined member's write after the claim: ${r} (leaderCommitSeen ${J.raft.leaderCommitSeen})`);
    expect(r).toBe('committed');
  });
});

import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { Role } from '../core/qn/raft.js';
import { Trio } from './domain-trio.js';

// Raft's and the member's named timers (quinn-proto's connection/timer.rs): each armed one is visible with its deadline.
// The trio runs electionMs 100, heartbeatMs 20 (so proposals are resent after max(2 * 20, 100 / 2) = 50 ms).
const keys = (o: object) => Object.keys(o).sort();

describe('qn timers', () => {
  it('a leader has heartbeat and quorum-check, a follower only election; the member adds hello and resend', () => {
    const t = new Trio(3);
    t.run(1000);
    const leader = t.leader()!;
    const follower = t.follower()!;
    expect(leader).toBeDefined();
    expect(follower).toBeDefined();

    expect(keys(leader.raft.deadlines())).toEqual(['heartbeat', 'quorum-check']);
    const lr = leader.raft.deadlines();
    expect(lr.heartbeat).toBeGreaterThan(t.now - 5);
    expect(lr.heartbeat).toBeLessThanOrEqual(t.now + 20);
    expect(lr['quorum-check']).toBeLessThanOrEqual(t.now + 100);
    expect(leader.raft.pollTimeout()).toBe(Math.min(lr.heartbeat!, lr['quorum-check']!));

    expect(keys(follower.raft.deadlines())).toEqual(['election']);
    // Heard the leader within the last heartbeat: the election is at least an election timeout away from then.
    expect(follower.raft.deadlines().election).toBeGreaterThan(t.now - 25 + 100);
    expect(follower.raft.deadlines().election).toBeLessThanOrEqual(t.now + 200);

    expect(keys(leader.deadlines())).toEqual(['heartbeat', 'hello', 'quorum-check']);
    expect(keys(follower.deadlines())).toEqual(['election', 'hello']);
    expect(follower.deadlines().hello).toBeLessThanOrEqual(t.now + 20);

    // A proposal at the follower goes to the leader at once and is due again retryMs later.
    const r = follower.propose(t.now, [
      { register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([1]), value: new Uint8Array([2]) } },
    ]);
    expect('seq' in r).toBe(true);
    const d = follower.deadlines();
    expect(keys(d)).toEqual(['election', 'hello', 'resend']);
    expect(d.resend).toBe(t.now + 50);
    expect(follower.pollTimeout()).toBe(Math.min(...Object.values(d)));
    // Answered: nothing left to resend.
    t.run(50);
    expect(follower.deadlines().resend).toBeUndefined();

    // The leader cut off from both: its quorum check steps it down, and then only its election timer runs.
    t.isolate(leader.id);
    t.run(300);
    expect(leader.raft.role).not.toBe(Role.Leader);
    expect(keys(leader.raft.deadlines())).toEqual(['election']);
  });
});

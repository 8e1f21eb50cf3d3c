/**
 * What one member can make every member of a QN domain hold (issue 13): the outcome table,
 * the registers and an incoming snapshot are bounded, deterministically on every member.
 * Each regression test is named after the attack it reproduces.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../transport/wire/delta.js';
import { Role } from '../control/qn/raft.js';
import { MAX_ORIGINS, encodeCandidate } from '../control/qn/state.js';
import { Trio } from './domain-trio.js';

const set = (key: number, value: Uint8Array) => ({ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([key >> 8, key & 255, 1]), value } as const });

describe('QN limits: what a member can make every member hold', () => {
  it('poison origins: a leader that commits candidates under MAX_ORIGINS+600 made-up origins leaves snapshots every member restores', () => {
    const t = new Trio(42, { maxLogEntries: 512 });
    t.run(1500);
    const leader = t.leader()!;
    // One follower lags through the flood: it can only catch up from a snapshot.
    const lagging = [...t.nodes.values()].find((n) => n.raft.role !== Role.Leader)!;
    expect(t.put('honest', 'before')).toBe('committed');
    t.isolate(lagging.id);
    const N = MAX_ORIGINS + 600; // enough that a compaction happens with the table full
    for (let i = 0; i < N; i++) {
      leader.raft.propose(t.now, encodeCandidate({ origin: 1000 + i, seq: 1, ops: [set(i, new Uint8Array([i & 255]))] }));
      if (i % 200 === 0) t.run(20);
    }
    t.run(500);
    const others = [...t.nodes.values()].filter((n) => n !== lagging);
    for (const n of others) {
      expect(n.raft.commit).toBeGreaterThan(N);
      expect(n.raft.snapshotIndex).toBeGreaterThan(MAX_ORIGINS + 2);
      expect(n.state.originCount).toBe(MAX_ORIGINS);
    }
    // Least recently decided first: the honest origin and the first made-up ones went.
    expect(leader.state.outcomeOf(leader.id, 1)).toBeUndefined();
    expect(leader.state.outcomeOf(1000 + N - MAX_ORIGINS - 1, 1)).toBeUndefined();
    expect(leader.state.outcomeOf(1000 + N - MAX_ORIGINS, 1)).toBe(0);
    t.isolate(lagging.id, false);
    t.run(3000);
    expect(lagging.raft.stats.snapshotsInstalled).toBeGreaterThan(0);
    expect(lagging.stats.drops['bad-snapshot']).toBeUndefined();
    // Every member holds the same table, in the same order (the next eviction is the same everywhere).
    const snaps = [...t.nodes.values()].map((n) => Buffer.from(n.state.snapshot()).toString('hex'));
    expect(new Set(snaps).size).toBe(1);
    // Each member restarts from its own snapshot, unfenced, and the domain still commits.
    for (const id of [1, 2, 3]) {
      const d = t.nodes.get(id)!.state.digest();
      t.stop(id);
      const again = t.start(id);
      expect(again.fencedCause).toBeUndefined();
      expect(again.state.originCount).toBe(MAX_ORIGINS);
      if (again.raft.applied === d.index) expect(again.state.digest()).toEqual(d);
      t.run(600);
    }
    expect(t.put('honest', 'after')).toBe('committed');
  });
});

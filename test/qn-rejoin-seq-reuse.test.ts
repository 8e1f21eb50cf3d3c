/**
 * Review 39n-2 (outcome table vs proposer state): the documented way back for a fenced member
 * (docs/OPERATIONS.md "A fenced domain", PROTOCOL.md §15.8: remove it, wipe its directory, add
 * it again) restarts its candidate numbering at seq 1 (EMPTY_STORED.nextSeq), while the domain's
 * outcome table still holds that origin's outcomes for seqs 1..N (an origin leaves the table only
 * by LRU eviction past 4,096 origins; the node id is the host's static key, unchanged by a wipe).
 * The rejoined member's new candidate seq 1 is never appended (the leader's onForward: "decided:
 * the origin learns it from the log") and the snapshot it installs resolves it from the table
 * (resolveFromTable): it is reported with the OLD candidate's outcome, and its write never happens.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';

const dec = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);

describe('a wiped and re-added member reuses sequence numbers the outcome table has decided', () => {
  it("a candidate proposed after the way back is applied, or at least not reported with an older candidate's outcome", () => {
    const wiped = new Set<number>();
    const t = new Trio(11, (id) =>
      wiped.has(id) ? { members: [1, 2, 3].filter((x) => x !== id), maxLogEntries: 16 } : { maxLogEntries: 16 },
    );
    t.run(600);
    const victim = t.follower()!.id;
    // Before its fence: the member proposed a few writes of its own (seqs 1..5), all committed.
    for (let i = 0; i < 5; i++) expect(t.put(`old${i}`, `v${i}`, victim)).toBe('committed');
    for (let i = 0; i < 30; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed'); // the log moves on (compacted: maxLogEntries 16)
    // The way back: remove it, wipe its directory, start it with join, add it again.
    expect(t.leader()!.changeMembers(t.now, { remove: victim }).ok).toBe(true);
    t.run(200);
    t.stop(victim);
    t.disks.set(victim, new MemDomainStore());
    wiped.add(victim);
    const back = t.start(victim);
    t.run(100);
    expect(t.leader()!.changeMembers(t.now, { add: victim }).ok).toBe(true);
    t.run(1000);
    expect(back.coherenceState).toBe('coherent');
    t.events.get(victim)!.splice(0); // only what the rejoined member reports from now on

    const r = back.propose(t.now, [
      { register: 'kv', delta: { op: 1, key: new TextEncoder().encode('new'), value: new TextEncoder().encode('x') } },
    ]);
    // Fixed: numbering goes on above the origin's seqs in the table it installed (1..5 were 'old0'..'old4').
    const seq = 'seq' in r ? r.seq : 0;
    expect(seq).toBeGreaterThan(5);
    const first = t.await(victim, seq, 2000);
    const fwds = back.stats.proposed;
    // Then the member restarts (its own disk): the snapshot it installed is restored, and its
    // pending seq 1 resolved from that snapshot's outcome table.
    t.stop(victim);
    t.start(victim);
    const after = t.await(victim, seq, 500);
    const stored = dec(t.leader()!.state.registers.get('kv')!.state.get(new TextEncoder().encode('new'))?.value);
    console.log(
      `rejoined member's seq ${seq} (proposed ${fwds}): ${first} after 2 s; after a restart reported ${after}; key 'new' at the leader: ${stored ?? 'absent'}`,
    );
    // Reported committed, the write must be in the state; and it must be decided at all.
    if (after === 'committed') expect(stored).toBe('x');
    expect(first).not.toBe('pending');
  });
});

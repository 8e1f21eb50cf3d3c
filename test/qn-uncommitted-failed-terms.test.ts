/**
 * An honest domain never reaches its followers' uncommitted bound (docs/PROTOCOL.md §15.4,
 * "Uncommitted bound"). A leader holds its proposals to maxUncommittedEntries past its commit
 * index, but each new leader appends a Noop whatever its log holds: terms whose Noop reached the
 * others but never committed (its acknowledgements lost, its leader deposed) leave one more
 * uncommitted entry each. Past twice the bound every follower refused the next leader's Noop
 * (`log-full`), so nothing could commit again, under any leader, even once the network healed.
 */
import { describe, expect, it } from 'vitest';
import { EntryKind, Raft, Role, type LogEntry, type NodeId } from '../core/qn/raft.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Rng } from '../testing/sim/rng.js';

const MAX = 8;

/** Three Raft members, a manual clock, and a filter on what is delivered. */
class Cluster {
  now = 0;
  readonly nodes = new Map<NodeId, Raft>();
  readonly drops = new Map<string, number>();
  dropAcks = false;
  private readonly rng = new Rng(7);

  constructor() {
    for (const id of [1, 2, 3]) {
      const applied: LogEntry[] = [];
      this.nodes.set(
        id,
        new Raft(
          {
            id,
            initialMembers: [1, 2, 3],
            stored: new MemDomainStore().load(),
            sm: { apply: (e) => applied.push(e), snapshot: () => new Uint8Array(), restore: () => true },
            random: (a, b) => this.rng.int(a, b),
            electionMs: 100,
            heartbeatMs: 20,
            maxUncommittedEntries: MAX,
          },
          0,
        ),
      );
    }
  }

  deliver(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const [id, r] of this.nodes)
        for (const m of r.ready()?.messages ?? []) {
          moved = true;
          if (this.dropAcks && m.msg.t === 'appendResp') continue;
          const why = this.nodes.get(m.to)!.handleMessage(this.now, id, m.msg);
          if (why) this.drops.set(why, (this.drops.get(why) ?? 0) + 1);
        }
    }
  }

  run(ms: number): void {
    for (const end = this.now + ms; this.now < end;) {
      this.now += 5;
      for (const r of this.nodes.values()) if (r.pollTimeout() <= this.now) r.handleTimeout(this.now);
      this.deliver();
    }
  }

  leader(): Raft | undefined {
    return [...this.nodes.values()].find((r) => r.role === Role.Leader);
  }
}

describe('terms whose Noop never committed (core/qn/raft.ts onAppend, overUncommitted)', () => {
  it('a full window and then more than the bound of failed terms: the domain still commits once acknowledgements arrive', () => {
    const c = new Cluster();
    c.run(500);
    const first = c.leader()!;
    const commit0 = first.commit;
    expect(commit0).toBe(first.lastIndex);
    // Acknowledgements are lost from here: the leader fills its window, the others hold it.
    c.dropAcks = true;
    for (let i = 0; i < MAX; i++) expect(first.propose(c.now, new Uint8Array([EntryKind.App, i]))).toBeDefined();
    c.deliver();
    // Each leader steps down (no acknowledgement within an election timeout), another is elected
    // and its Noop reaches the others, uncommitted: one more entry past the commit index a term.
    const terms0 = first.term;
    let leaders = 0;
    for (let t = 0; t < 4000 && leaders < MAX + 4; t++) {
      const before = c.leader()?.term;
      c.run(5);
      const l = c.leader();
      if (l && l.term !== before) leaders++;
    }
    expect(leaders).toBeGreaterThan(MAX + 1);
    for (const r of c.nodes.values()) expect(r.commit).toBe(commit0);
    const held = Math.max(...[...c.nodes.values()].map((r) => r.lastIndex)) - commit0;
    console.log(
      `after ${c.leader()?.term ?? '?'} terms (from ${terms0}): ${held} entries past the commit index (followers hold ${2 * MAX})`,
    );
    expect(held).toBeGreaterThan(2 * MAX);
    // The network heals: a leader must commit (its Noop, and so all before it).
    c.dropAcks = false;
    c.run(3000);
    const l = c.leader();
    console.log(
      `healed: leader ${l ? 'term ' + l.term : 'none'}, commit ${l?.commit} of ${l?.lastIndex}; drops ${JSON.stringify([...c.drops])}`,
    );
    expect(l).toBeDefined();
    expect(l!.commit).toBe(l!.lastIndex);
    expect(l!.commit).toBeGreaterThan(commit0 + MAX);
    // And it takes proposals again.
    const idx = l!.propose(c.now, new Uint8Array([EntryKind.App, 99]));
    expect(idx).toBeDefined();
    c.run(200);
    for (const r of c.nodes.values()) expect(r.commit).toBe(idx);
  });
});

/**
 * An honest domain never reaches its followers' uncommitted bound (docs/PROTOCOL.md §15.4,
 * "Uncommitted bound"). A leader holds its proposals to maxUncommittedEntries past its commit
 * index, but each new leader appends a Noop whatever its log holds: terms whose Noop reached the
 * others but never committed (its acknowledgements lost, its leader deposed) leave one more
 * uncommitted entry each. Past twice the bound every follower refused the next leader's Noop
 * (`log-full`), so nothing could commit again, under any leader, even once the network healed.
 *
 * A follower holds past its uncommitted bound the Noop starting its voted leader's term
 * (docs/PROTOCOL.md §15.4, "Uncommitted bound"). But a voter may lack the Noop of a failed term
 * that reached only the new leader: the leader's append then carries that one and its own, two
 * new entries, and a voter past the bound refused both (`log-full`). With the third member gone,
 * nothing committed again, though two of three members were up and talking.
 */
import { describe, expect, it } from 'vitest';
import { EntryKind, Raft, Role, type NodeId, type RaftMsg, type RaftOptions } from '../core/qn/raft.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Rng } from '../testing/sim/rng.js';

const MAX = 8;

/** One Raft member on a fresh store, of a domain of three, with the bound at MAX. */
const member = (o: Partial<RaftOptions> & Pick<RaftOptions, 'id' | 'random'>): Raft =>
  new Raft(
    {
      initialMembers: [1, 2, 3],
      stored: new MemDomainStore().load(),
      sm: { apply: () => undefined, snapshot: () => new Uint8Array(), restore: () => true },
      maxUncommittedEntries: MAX,
      ...o,
    },
    0,
  );

/** Three Raft members, a manual clock, and a filter on what is delivered. */
class Cluster {
  now = 0;
  readonly nodes = new Map<NodeId, Raft>();
  readonly drops = new Map<string, number>();
  block: (from: NodeId, to: NodeId, m: RaftMsg) => boolean = () => false;
  private readonly rng: Rng;

  constructor(seed: number) {
    this.rng = new Rng(seed);
    for (const id of [1, 2, 3]) this.nodes.set(id, member({ id, random: (a, b) => this.rng.int(a, b), electionMs: 100, heartbeatMs: 20 }));
  }

  deliver(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const [id, r] of this.nodes)
        for (const m of r.ready()?.messages ?? []) {
          moved = true;
          if (this.block(id, m.to, m.msg)) continue;
          const why = this.nodes.get(m.to)!.handleMessage(this.now, id, m.msg);
          if (why) this.drops.set(why, (this.drops.get(why) ?? 0) + 1);
        }
    }
  }

  step(): void {
    this.now += 5;
    for (const r of this.nodes.values()) if (r.pollTimeout() <= this.now) r.handleTimeout(this.now);
    this.deliver();
  }

  run(ms: number): void {
    for (const end = this.now + ms; this.now < end;) this.step();
  }

  leader(): Raft | undefined {
    return [...this.nodes.values()].find((r) => r.role === Role.Leader);
  }
}

describe('terms whose Noop never committed (core/qn/raft.ts onAppend, overUncommitted)', () => {
  it('a full window and then more than the bound of failed terms: the domain still commits once acknowledgements arrive', () => {
    const c = new Cluster(7);
    c.run(500);
    const first = c.leader()!;
    const commit0 = first.commit;
    expect(commit0).toBe(first.lastIndex);
    // Acknowledgements are lost from here: the leader fills its window, the others hold it.
    c.block = (_f, _t, m) => m.t === 'appendResp';
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
    c.block = () => false;
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

describe('a member that lacks a failed term’s Noop (core/qn/raft.ts onAppend, votedNoop)', () => {
  it('past the bound, a leader and a member that fell behind still commit with the third member gone', () => {
    const c = new Cluster(11);
    c.run(500);
    const commit0 = c.leader()!.commit;
    // Acknowledgements are lost: failed terms pile Noops up past twice the bound. A member that
    // did not vote for one of those leaders refuses its Noop (log-full) and lacks it from then on.
    c.block = (_f, _t, m) => m.t === 'appendResp';
    const held = (): number[] => [...c.nodes.values()].map((r) => r.lastIndex - commit0);
    for (let t = 0; t < 4000 && !(Math.min(...held()) < Math.max(...held()) && Math.max(...held()) > 2 * MAX + 2); t++) c.step();
    console.log(`held past the commit index: ${held().join(', ')} (bound ${2 * MAX}); drops ${JSON.stringify([...c.drops])}`);
    const byHeld = [...c.nodes.values()].sort((a, b) => a.lastIndex - b.lastIndex);
    const behind = byHeld[0].id;
    expect(byHeld[0].lastIndex).toBeLessThan(byHeld[2].lastIndex);
    // A member up to date fails for good; the network heals otherwise. Two of three are up.
    const gone = byHeld[2].id;
    c.block = (f, to) => f === gone || to === gone;
    c.drops.clear();
    c.run(3000);
    const l = c.leader();
    console.log(
      `healed: leader ${l ? `${l.id} term ${l.term}, commit ${l.commit} of ${l.lastIndex}` : 'none'} (commit before ${commit0}); drops ${JSON.stringify([...c.drops])}`,
    );
    expect(l).toBeDefined();
    expect(l!.commit).toBe(l!.lastIndex);
    const idx = l!.propose(c.now, new Uint8Array([EntryKind.App, 1]));
    expect(idx).toBeDefined();
    c.run(300);
    expect(c.nodes.get(behind)!.commit).toBe(idx);
  });

  it('a member claiming leadership still makes a follower hold no more than its log bound of Noops, nor twice the bound of others', () => {
    const r = member({ id: 1, random: (a) => a, electionMs: 1_000_000, maxLogEntries: 64 });
    const noop = new Uint8Array([EntryKind.Noop]);
    let refused = 0;
    // Noops each starting a term of their own, as failed terms leave them, never committed.
    for (let i = 0; i < 20; i++) {
      const last = r.lastIndex;
      const entries = Array.from({ length: 10 }, (_, k) => ({ term: last + k + 1, cmd: noop }));
      if (r.handleMessage(1, 2, { t: 'append', term: 1000, prevIndex: last, prevTerm: r.lastTerm, commit: 0, entries }) === 'log-full')
        refused++;
      r.ready();
    }
    expect(r.lastIndex).toBe(60);
    expect(refused).toBe(14);
    // Noops of one term (no leader appends two) and commands count as before: twice the bound.
    const r2 = member({ id: 1, random: (a) => a, electionMs: 1_000_000 });
    for (let i = 0; i < 10; i++) {
      const last = r2.lastIndex;
      const entries = Array.from({ length: 4 }, () => ({ term: 5, cmd: i % 2 ? noop : new Uint8Array([EntryKind.App, i]) }));
      r2.handleMessage(1, 2, { t: 'append', term: 5, prevIndex: last, prevTerm: r2.lastTerm, commit: 0, entries });
      r2.ready();
    }
    expect(r2.lastIndex).toBe(2 * MAX);
  });
});

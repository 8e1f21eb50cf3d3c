/**
 * Whether votedNoop (core/qn/raft.ts) is still needed now that Noops starting a term count
 * apart (termNoop): it is. Those Noops still count toward the cap on all entries past the
 * commit index, max(maxLogEntries, 2 × maxUncommittedEntries); with the least log bound that
 * cap is 16, and a domain whose terms kept failing past it (acknowledgements lost) recovers
 * only because each voter takes its leader's Noop past the cap. With votedNoop returning false
 * the healed domain refuses every leader's Noop (log-full) and never commits again.
 */
import { describe, expect, it } from 'vitest';
import { Raft, Role, type NodeId, type RaftMsg, type RaftOptions } from '../core/qn/raft.js';
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
/** Three Raft members with the log bound at its least (maxLogEntries 8): the entry cap past the commit index is max(8, 2 × 8). */
class Cluster {
  now = 0;
  readonly nodes = new Map<NodeId, Raft>();
  readonly drops = new Map<string, number>();
  block: (from: NodeId, to: NodeId, m: RaftMsg) => boolean = () => false;
  private readonly rng: Rng;

  constructor(seed: number) {
    this.rng = new Rng(seed);
    for (const id of [1, 2, 3])
      this.nodes.set(id, member({ id, random: (a, b) => this.rng.int(a, b), electionMs: 100, heartbeatMs: 20, maxLogEntries: MAX }));
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

describe('terms whose Noop never committed, past the cap on all entries (core/qn/raft.ts votedNoop)', () => {
  it('more failed terms than max(maxLogEntries, 2 × maxUncommittedEntries): a healed domain still commits', () => {
    const c = new Cluster(7);
    c.run(500);
    const commit0 = c.leader()!.commit;
    c.block = (_f, _t, m) => m.t === 'appendResp';
    let leaders = 0;
    for (let t = 0; t < 8000 && leaders < 4 * MAX; t++) {
      const before = c.leader()?.term;
      c.run(5);
      const l = c.leader();
      if (l && l.term !== before) leaders++;
    }
    const held = Math.max(...[...c.nodes.values()].map((r) => r.lastIndex)) - commit0;
    console.log(`${leaders} failed terms: ${held} entries past the commit index (cap ${2 * MAX})`);
    expect(held).toBeGreaterThan(2 * MAX);
    c.block = () => false;
    c.drops.clear();
    c.run(3000);
    const l = c.leader();
    console.log(
      `healed: leader ${l ? 'term ' + l.term : 'none'}, commit ${l?.commit} of ${l?.lastIndex}; drops ${JSON.stringify([...c.drops])}`,
    );
    expect(l).toBeDefined();
    expect(l!.commit).toBe(l!.lastIndex);
    expect(l!.commit).toBeGreaterThan(commit0 + 2 * MAX);
  });
});

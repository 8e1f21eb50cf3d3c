/**
 * The uncommitted bound (docs/PROTOCOL.md §15.4): a leader takes no proposal past
 * maxUncommittedEntries / maxUncommittedBytes of entries beyond its commit index (etcd's
 * MaxUncommittedEntriesSize), and a follower refuses (`log-full`, answered as a failed
 * consistency check) an append that would leave more than twice that past its commit index.
 * Before it, a member claiming leadership that sent ~440 one-octet Noops per datagram with
 * `commit: 0` made a follower keep (and journal) 880,000 entries from 2.6 MB (review).
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import { type DomainNode } from '../core/qn/node.js';
import { DEFAULT_MAX_UNCOMMITTED_ENTRIES, EntryKind, Raft, Role, type LogEntry, type NodeId, type RaftMsg } from '../core/qn/raft.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Rng } from '../testing/sim/rng.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { Trio } from './domain-trio.js';

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const noops = (n: number): { term: number; cmd: Uint8Array }[] =>
  Array.from({ length: n }, () => ({ term: 1, cmd: new Uint8Array([EntryKind.Noop]) }));
const app = (octets: number): { term: number; cmd: Uint8Array } => {
  const cmd = new Uint8Array(octets);
  cmd[0] = EntryKind.App;
  return { term: 1, cmd };
};

/** A follower alone (Raft only), fed by a test playing its leader. */
function lone(o: { maxUncommittedEntries?: number; maxUncommittedBytes?: number } = {}): Raft {
  return new Raft(
    {
      id: SELF,
      initialMembers: [SELF, ADV, 30],
      stored: new MemDomainStore().load(),
      sm: { apply: () => undefined, snapshot: () => new Uint8Array(), restore: () => true },
      random: (a) => a,
      electionMs: 1_000_000,
      ...o,
    },
    0,
  );
}

describe('a follower holds a bounded uncommitted log (core/qn/raft.ts onAppend)', () => {
  it('a member claiming leadership that never commits: at most twice the bound kept and journaled, the rest refused (log-full)', () => {
    const n = handMember({ maxLogEntries: 1000 });
    const PER = 440;
    let last = 0;
    let written = 0;
    const answers: RaftMsg[] = [];
    for (let i = 0; i < 200; i++) {
      const body: RaftMsg = { t: 'append', term: 1, prevIndex: last, prevTerm: last === 0 ? 0 : 1, commit: 0, entries: noops(PER) };
      n.handleDatagram(10 + i, ADV, encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body }));
      for (let r = n.ready(); r; r = n.ready()) {
        for (const w of r.writes) if (w.kind === 'append') written += w.entries.length;
        for (const m of r.messages) answers.push(decodeEnvelope(m.bytes).body as RaftMsg);
        n.advance();
      }
      // Each append follows on what the follower holds, as a leader retrying would.
      last = n.raft.lastIndex;
    }
    const bound = 2 * DEFAULT_MAX_UNCOMMITTED_ENTRIES;
    expect(n.raft.commit).toBe(0);
    expect(n.raft.lastIndex).toBeLessThanOrEqual(bound);
    expect(n.raft.lastIndex).toBeGreaterThan(bound - PER);
    expect(written).toBe(n.raft.lastIndex);
    expect(n.stats.drops['log-full']).toBe(200 - Math.floor(bound / PER));
    // Refused as a failed consistency check: the hint is the last entry held.
    expect(answers.at(-1)).toEqual({ t: 'appendResp', term: 1, ok: false, index: n.raft.lastIndex });
  });

  it('octets too: twice maxUncommittedBytes of commands past the commit index, one entry alone whatever its size', () => {
    const r = lone({ maxUncommittedBytes: 10_000 });
    let last = 0;
    const step = (e: { term: number; cmd: Uint8Array }, commit = 0): string | undefined => {
      const why = r.handleMessage(1, ADV, { t: 'append', term: 1, prevIndex: last, prevTerm: last === 0 ? 0 : 1, commit, entries: [e] });
      last = r.lastIndex;
      r.ready();
      return why;
    };
    for (let i = 0; i < 20; i++) expect(step(app(1000))).toBeUndefined();
    expect(step(app(1000))).toBe('log-full');
    expect(step(app(1))).toBe('log-full');
    expect(r.lastIndex).toBe(20);
    // Committed (the leader's commit index says so), they no longer count.
    expect(step(app(1000), 20)).toBeUndefined();
    expect(r.commit).toBe(20);
    // A single entry past the commit index is always held (a leader always takes one).
    const big = lone({ maxUncommittedBytes: 10_000 });
    expect(
      big.handleMessage(1, ADV, { t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [app(50_000)] }),
    ).toBeUndefined();
    expect(big.handleMessage(1, ADV, { t: 'append', term: 1, prevIndex: 1, prevTerm: 1, commit: 0, entries: [app(1)] })).toBe('log-full');
    expect(big.lastIndex).toBe(1);
  });

  it('octets are counted right across a truncation (a new leader overwriting) and a compaction', () => {
    const r = lone({ maxUncommittedBytes: 10_000 });
    let last = 0;
    const send = (term: number, e: { term: number; cmd: Uint8Array }): string | undefined => {
      const why = r.handleMessage(1, ADV, { t: 'append', term, prevIndex: last, prevTerm: r.termAt(last)!, commit: 0, entries: [e] });
      last = r.lastIndex;
      r.ready();
      return why;
    };
    for (let i = 0; i < 15; i++) expect(send(1, app(1000))).toBeUndefined();
    // Term 2 keeps 5 of them and overwrites the rest with entries of 500 octets: 5,000 + 500 each.
    expect(
      r.handleMessage(1, ADV, { t: 'append', term: 2, prevIndex: 5, prevTerm: 1, commit: 0, entries: [{ ...app(500), term: 2 }] }),
    ).toBeUndefined();
    last = r.lastIndex;
    expect(last).toBe(6);
    let held = 1;
    while (held < 100 && send(2, { ...app(500), term: 2 }) === undefined) held++;
    expect(held).toBe(30);
    expect(r.lastIndex).toBe(35);

    // 100 committed entries of one octet, compacted (maxLogEntries 16), then 1,000-octet ones past the commit index.
    const c = lone({ maxUncommittedBytes: 10_000, maxLogEntries: 16 });
    last = 0;
    const feed = (octets: number, commit: number): string | undefined => {
      const why = c.handleMessage(1, ADV, {
        t: 'append',
        term: 1,
        prevIndex: last,
        prevTerm: last === 0 ? 0 : 1,
        commit,
        entries: [app(octets)],
      });
      last = c.lastIndex;
      c.ready();
      return why;
    };
    for (let i = 0; i < 100; i++) expect(feed(1, last + 1)).toBeUndefined();
    expect(c.firstIndex).toBeGreaterThan(50);
    let more = 0;
    while (more < 100 && feed(1000, 100) === undefined) more++;
    expect(more).toBe(20);
  });

  it('entries at or below the leader commit index do not count: a follower far behind takes them all', () => {
    const r = lone({ maxUncommittedEntries: 8 });
    let last = 0;
    for (let i = 0; i < 500; i++) {
      // 100 entries a message, all but the last 16 committed at the leader.
      const why = r.handleMessage(1, ADV, {
        t: 'append',
        term: 1,
        prevIndex: last,
        prevTerm: last === 0 ? 0 : 1,
        commit: last + 84,
        entries: noops(100),
      });
      expect(why).toBeUndefined();
      last = r.lastIndex;
      r.ready();
    }
    expect(r.lastIndex).toBe(50_000);
    expect(r.commit).toBe(50_000 - 16);
    // One more past the commit index than a follower holds (2 × 8): refused, nothing kept.
    expect(r.handleMessage(1, ADV, { t: 'append', term: 1, prevIndex: last, prevTerm: 1, commit: last - 16, entries: noops(1) })).toBe(
      'log-full',
    );
    expect(r.lastIndex).toBe(50_000);
  });
});

/** Three Raft members over a perfect network with cuttable directed links and a manual clock. */
class Cluster {
  now = 0;
  readonly nodes = new Map<NodeId, Raft>();
  readonly cut = new Set<string>();
  readonly drops: string[] = [];
  private readonly rng = new Rng(5);

  constructor(maxUncommittedEntries: number) {
    for (const id of [1, 2, 3]) {
      const disk = new MemDomainStore();
      const log: LogEntry[] = [];
      this.nodes.set(
        id,
        new Raft(
          {
            id,
            initialMembers: [1, 2, 3],
            stored: disk.load(),
            sm: { apply: (e) => log.push(e), snapshot: () => new Uint8Array(), restore: () => true },
            random: (a, b) => this.rng.int(a, b),
            electionMs: 100,
            heartbeatMs: 20,
            maxUncommittedEntries,
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
          if (this.cut.has(`${id}>${m.to}`)) continue;
          const why = this.nodes.get(m.to)!.handleMessage(this.now, id, m.msg);
          if (why) this.drops.push(why);
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

  leader(): [NodeId, Raft] | undefined {
    return [...this.nodes].find(([, r]) => r.role === Role.Leader);
  }
}

describe('an honest leader stays within what its followers hold', () => {
  it('a new leader whose log holds a deposed leader’s full uncommitted window still commits (followers hold twice the bound)', () => {
    const c = new Cluster(8);
    c.run(500);
    const [a, ra] = c.leader()!;
    const others = [1, 2, 3].filter((x) => x !== a);
    expect(ra.commit).toBe(ra.lastIndex); // its Noop
    // The followers get its entries, the leader never hears them: nothing more commits.
    for (const f of others) c.cut.add(`${f}>${a}`);
    let taken = 0;
    for (let i = 0; i < 12; i++) if (ra.propose(c.now, new Uint8Array([EntryKind.App, i])) !== undefined) taken++;
    expect(taken).toBe(8);
    expect(ra.stats.proposalsDeferred).toBe(4);
    c.deliver();
    for (const f of others) expect(c.nodes.get(f)!.lastIndex - c.nodes.get(f)!.commit).toBe(8);
    // The leader is cut off; one of the others leads with the 8 entries and its Noop uncommitted.
    for (const f of others) c.cut.add(`${a}>${f}`);
    c.run(1000);
    const [b, rb] = c.leader()!;
    expect(b).not.toBe(a);
    expect(rb.commit).toBe(rb.lastIndex);
    expect(rb.commit).toBe(ra.commit + 9);
    expect(c.drops).not.toContain('log-full');
  });

  it('proposals a leader defers at its bound are appended when their proposer sends them again; all commit, no follower refuses', () => {
    const t = new Trio(31, { maxUncommittedEntries: 8 });
    t.run(500);
    const L = t.leader()!;
    const F = t.follower()!;
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    const seqs: [DomainNode, number][] = [];
    // One turn: nothing is delivered, so nothing commits meanwhile.
    for (let i = 0; i < 30; i++) {
      const n = i % 3 === 0 ? F : L;
      const r = n.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(`k${i}`), value: enc(`v${i}`) } }]);
      if ('refused' in r) throw new Error(r.refused);
      seqs.push([n, r.seq]);
    }
    t.deliver();
    expect(L.raft.stats.proposalsDeferred).toBeGreaterThan(0);
    t.run(3000);
    for (const [n, seq] of seqs) expect(n.outcomeOf(seq)?.verdict, `${n.id}:${seq}`).toBe('committed');
    for (const n of t.nodes.values()) expect(n.stats.drops['log-full'] ?? 0).toBe(0);
    for (const n of t.nodes.values()) expect(n.raft.applied).toBe(L.raft.applied);
  });

  it('a follower cut off while 300 entries commit catches up (committed entries do not count against its bound)', () => {
    const t = new Trio(32, { maxUncommittedEntries: 8 });
    t.run(500);
    const L = t.leader()!;
    const f = [...t.nodes.values()].find((n) => n !== L)!;
    t.isolate(f.id);
    for (let i = 0; i < 300; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
    t.isolate(f.id, false);
    t.run(3000);
    expect(f.raft.applied).toBe(L.raft.applied);
    for (const n of t.nodes.values()) expect(n.stats.drops['log-full'] ?? 0).toBe(0);
  });
});

import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { WireError } from '../wire/errors.js';
import { decodeEnvelope, encodeEnvelope, type QnEnvelope } from '../wire/qn.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { EntryKind, Raft, Role, decodeConfig, encodeConfig, type LogEntry, type RaftMsg } from '../core/qn/raft.js';
import { CollapseReject, DomainState, encodeCandidate, type Candidate } from '../core/qn/state.js';
import { type MapState } from '../core/register/map.js';
import { runDomainSeeds, runDomainSim, DOMAIN_SIM_DEFAULTS } from '../testing/sim/domain.js';
import { Rng } from '../testing/sim/rng.js';

/** The 1,000-seed runs take about a minute alone and run beside another file in `make test` (vitest.config.ts). */
const SEED_RUN_TIMEOUT_MS = 300_000;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Raft nodes over a perfect in-memory network with cuttable links and a manual clock. */
class Cluster {
  now = 0;
  readonly nodes = new Map<number, Raft>();
  readonly applied = new Map<number, LogEntry[]>();
  readonly disks = new Map<number, MemDomainStore>();
  readonly cut = new Set<string>();
  private readonly rng = new Rng(99);

  constructor(
    readonly ids: number[],
    readonly opts: { maxLogEntries?: number } = {},
  ) {
    for (const id of ids) this.start(id);
  }

  start(id: number, members = this.ids): Raft {
    if (!this.disks.has(id)) this.disks.set(id, new MemDomainStore());
    const log: LogEntry[] = [];
    this.applied.set(id, log);
    const r = new Raft(
      {
        id,
        initialMembers: members,
        stored: this.disks.get(id)!.load(),
        sm: {
          apply: (e) => log.push(e),
          snapshot: () => enc(`upto:${log.length}`),
          restore: (_d, index) => {
            log.length = 0;
            for (let i = 0; i < index; i++) log.push({ term: 0, index: i + 1, cmd: new Uint8Array([EntryKind.Noop]) });
            return true;
          },
        },
        random: (a, b) => this.rng.int(a, b),
        electionMs: 100,
        heartbeatMs: 20,
        maxLogEntries: this.opts.maxLogEntries,
      },
      this.now,
    );
    this.nodes.set(id, r);
    return r;
  }

  isolate(id: number, on = true): void {
    for (const o of this.ids) {
      if (o === id) continue;
      for (const k of [`${id}>${o}`, `${o}>${id}`]) on ? this.cut.add(k) : this.cut.delete(k);
    }
  }

  private deliver(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const [id, r] of this.nodes) {
        // The Ready boundary: writes durable first, then the messages.
        const rd = r.ready();
        if (rd) this.disks.get(id)!.persist(rd.writes);
        for (const m of rd?.messages ?? []) {
          moved = true;
          const dst = this.nodes.get(m.to);
          if (dst && !this.cut.has(`${id}>${m.to}`)) dst.handleMessage(this.now, id, m.msg);
        }
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

  leaders(): Raft[] {
    return [...this.nodes.values()].filter((r) => r.role === Role.Leader);
  }

  propose(cmd: string): number | undefined {
    const l = this.leaders()[0];
    const i = l?.propose(this.now, new Uint8Array([EntryKind.App, ...enc(cmd)]));
    this.deliver();
    return i;
  }
}

describe('Raft (core/qn/raft.ts)', () => {
  it('elects one leader and replicates to every member in the same order', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    expect(c.leaders()).toHaveLength(1);
    for (let i = 0; i < 10; i++) c.propose(`op${i}`);
    c.run(100);
    const logs = [...c.applied.values()].map((l) => l.map((e) => `${e.term}/${e.index}/${e.cmd.length}`).join(','));
    expect(new Set(logs).size).toBe(1);
    expect(c.applied.get(1)!.length).toBe(11); // the leader's no-op, then the ten
  });

  it('a leader cut off from its majority steps down (CheckQuorum); the majority elects another and keeps committing', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    const old = c.leaders()[0];
    c.isolate(old.id);
    const stuck = old.propose(c.now, new Uint8Array([EntryKind.App, 1]));
    expect(stuck).toBeDefined();
    c.run(600);
    expect(old.role).not.toBe(Role.Leader);
    const now = c.leaders();
    expect(now).toHaveLength(1);
    expect(now[0].id).not.toBe(old.id);
    const idx = c.propose('after')!;
    c.run(100);
    expect(now[0].commit).toBeGreaterThanOrEqual(idx);
    // The old leader's uncommitted entry was never applied anywhere, and is gone once it heals.
    c.isolate(old.id, false);
    c.run(500);
    expect(old.commit).toBe(now[0].commit);
    const seq = (id: number): string =>
      c.applied
        .get(id)!
        .map((e) => `${e.term}/${e.index}`)
        .join(',');
    expect(seq(old.id)).toBe(seq(now[0].id));
  });

  it('a healed minority does not depose a working leader (PreVote and stickiness)', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    const leader = c.leaders()[0];
    const other = [1, 2, 3].find((x) => x !== leader.id)!;
    c.isolate(other);
    c.run(2000); // the isolated member times out again and again
    const termBefore = leader.term;
    c.isolate(other, false);
    c.run(500);
    expect(leader.role).toBe(Role.Leader);
    expect(leader.term).toBe(termBefore);
    expect(c.nodes.get(other)!.term).toBe(termBefore);
  });

  it('membership changes: one at a time, only after the leader committed in its term, and a removed leader steps down', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    const l = c.leaders()[0];
    expect(l.changeMembers(c.now, { add: 4, remove: 1 })).toEqual({ ok: false, reason: 'exactly one of add and remove' });
    expect(l.changeMembers(c.now, { add: 2 })).toMatchObject({ ok: false });
    // Add node 4: it starts knowing only the old configuration and learns the new one from the log.
    c.ids.push(4);
    c.start(4, [1, 2, 3]);
    const r = l.changeMembers(c.now, { add: 4 });
    expect(r.ok).toBe(true);
    // A second change before the first is committed is refused.
    const r2 = l.changeMembers(c.now, { remove: 3 });
    if (l.configIndex > l.commit) expect(r2).toMatchObject({ ok: false });
    c.run(300);
    expect(c.nodes.get(4)!.members).toEqual([1, 2, 3, 4]);
    expect(c.nodes.get(4)!.commit).toBe(l.commit);
    // Remove the leader itself: it commits the change, then steps down; the rest elect a leader.
    expect(l.changeMembers(c.now, { remove: l.id }).ok).toBe(true);
    c.run(1000);
    expect(l.role).not.toBe(Role.Leader);
    const next = c.leaders().filter((x) => x.members.includes(x.id));
    expect(next).toHaveLength(1);
    expect(next[0].members).not.toContain(l.id);
    expect(c.propose('still-committing')).toBeDefined();
  });

  it('a follower behind a compacted log is caught up by a chunked snapshot, then by entries', () => {
    const c = new Cluster([1, 2, 3], { maxLogEntries: 16 });
    c.run(500);
    const l = c.leaders()[0];
    const lag = [1, 2, 3].find((x) => x !== l.id)!;
    c.isolate(lag);
    for (let i = 0; i < 100; i++) c.propose(`x${i}`);
    c.run(100);
    expect(l.firstIndex).toBeGreaterThan(c.nodes.get(lag)!.lastIndex + 1);
    c.isolate(lag, false);
    c.run(500);
    const f = c.nodes.get(lag)!;
    expect(f.stats.snapshotsInstalled).toBe(1);
    expect(f.commit).toBe(l.commit);
    expect(c.applied.get(lag)!.length).toBe(l.commit);
  });

  it('restarts from its disk with its term, vote and log, and never votes twice in a term', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    for (let i = 0; i < 5; i++) c.propose(`y${i}`);
    c.run(50);
    const f = [...c.nodes.values()].find((r) => r.role !== Role.Leader)!;
    const before = { term: f.term, vote: f.vote, last: f.lastIndex };
    const again = c.start(f.id);
    expect({ term: again.term, vote: again.vote, last: again.lastIndex }).toEqual(before);
    again.handleMessage(c.now, 3, { t: 'vote', term: again.term, lastIndex: 999, lastTerm: again.term, pre: false });
    const resp = again.ready()?.messages[0];
    if (before.vote !== 0 && before.vote !== 3) expect(resp?.msg).toMatchObject({ t: 'voteResp', granted: false });
  });

  const lone = (disk: MemDomainStore, applied: LogEntry[] = []): Raft =>
    new Raft(
      {
        id: 2,
        initialMembers: [1, 2, 3],
        stored: disk.load(),
        sm: { apply: (e) => applied.push(e), snapshot: () => new Uint8Array(), restore: () => true },
        random: (a) => a,
      },
      0,
    );
  const entries = (from: number, n: number): { term: number; cmd: Uint8Array }[] =>
    Array.from({ length: n }, (_, i) => ({ term: 1, cmd: new Uint8Array([EntryKind.App, from + i]) }));

  it('a crash between saving a snapshot and compacting the log does not wedge the restarted member', () => {
    const disk = new MemDomainStore();
    disk.persist([
      { kind: 'append', entries: Array.from({ length: 10 }, (_, i) => ({ term: 1, index: i + 1, cmd: new Uint8Array([EntryKind.Noop]) })) },
      { kind: 'snapshot', meta: { index: 50, term: 1, members: [1, 2, 3] }, data: new Uint8Array() },
    ]);
    const r = lone(disk);
    expect(r.lastIndex).toBe(50);
    disk.persist(r.ready()!.writes);
    expect(disk.base).toBe(50);
    r.handleMessage(1, 1, { t: 'append', term: 1, prevIndex: 50, prevTerm: 1, commit: 51, entries: entries(51, 1) });
    expect(r.commit).toBe(51);
  });

  it("a follower's commit index never goes backwards (a probe with fewer entries than were committed)", () => {
    const applied: LogEntry[] = [];
    const r = lone(new MemDomainStore(), applied);
    r.handleMessage(1, 1, { t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 15, entries: entries(1, 15) });
    expect(r.commit).toBe(15);
    r.handleMessage(2, 1, { t: 'append', term: 1, prevIndex: 10, prevTerm: 1, commit: 20, entries: entries(11, 2) });
    expect(r.commit).toBe(15);
    r.ready(); // committed entries are applied when the Ready is taken (etcd's CommittedEntries)
    expect(applied).toHaveLength(15);
  });

  /** One step of `r`'s output: its writes made durable, its messages returned (not delivered). */
  const step = (c: Cluster, id: number): { to: number; msg: RaftMsg }[] => {
    const rd = c.nodes.get(id)!.ready();
    if (rd) c.disks.get(id)!.persist(rd.writes);
    return [...(rd?.messages ?? [])];
  };

  it('batching: the commands proposed between two Readies leave together, a few appends per follower, not one per command', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    const l = c.leaders()[0];
    for (let i = 0; i < 40; i++) l.propose(c.now, new Uint8Array([EntryKind.App, ...enc(`cmd${i}`.padEnd(100, '.'))]));
    const out = step(c, l.id);
    for (const f of [1, 2, 3].filter((x) => x !== l.id)) {
      const appends = out.filter((m) => m.to === f && m.msg.t === 'append');
      const entries = appends.reduce((n, m) => n + (m.msg.t === 'append' ? m.msg.entries.length : 0), 0);
      expect(entries).toBe(40);
      expect(appends.length).toBeLessThanOrEqual(5); // ~8 entries of 100 B per 1,100-byte append
    }
    // The leader counts itself only with a follower's acknowledgement: nothing commits in its own step.
    expect(l.commit).toBeLessThan(l.lastIndex);
    for (const m of out) c.nodes.get(m.to)!.handleMessage(c.now, l.id, m.msg);
    c.run(100);
    expect(l.commit).toBe(l.lastIndex);
    for (const id of [1, 2, 3]) expect(c.applied.get(id)!.length).toBe(l.lastIndex);
  });

  it('a lost append costs one probe, not one resend of the window per later append refused with the same hint', () => {
    const c = new Cluster([1, 2, 3]);
    c.run(500);
    const l = c.leaders()[0];
    const f = [1, 2, 3].find((x) => x !== l.id)!;
    for (let i = 0; i < 40; i++) l.propose(c.now, new Uint8Array([EntryKind.App, ...enc(`cmd${i}`.padEnd(100, '.'))]));
    const toF = step(c, l.id).filter((m) => m.to === f && m.msg.t === 'append');
    expect(toF.length).toBeGreaterThanOrEqual(4);
    // The first append is lost; the follower refuses every later one (its log has a gap), all with the same hint.
    for (const m of toF.slice(1)) c.nodes.get(f)!.handleMessage(c.now, l.id, m.msg);
    const refusals = step(c, f).filter((m) => m.msg.t === 'appendResp' && !m.msg.ok);
    expect(refusals).toHaveLength(toF.length - 1);
    const resent: RaftMsg[] = [];
    for (const r of refusals) {
      l.handleMessage(c.now, f, r.msg);
      for (const m of step(c, l.id)) if (m.to === f && m.msg.t === 'append') resent.push(m.msg);
    }
    // One probe from the follower's last index; the other refusals were stale.
    expect(resent).toHaveLength(1);
    expect(resent[0]).toMatchObject({ t: 'append', prevIndex: c.nodes.get(f)!.lastIndex });
    c.run(200);
    expect(c.nodes.get(f)!.commit).toBe(l.commit);
    expect(l.commit).toBe(l.lastIndex);
  });

  it('encodes configurations canonically', () => {
    expect(decodeConfig(encodeConfig([1, 300, 2 ** 40]))).toEqual([1, 300, 2 ** 40]);
  });
});

describe('QN wire codec (wire/qn.ts)', () => {
  const bodies: QnEnvelope['body'][] = [
    { t: 'vote', term: 3, lastIndex: 10, lastTerm: 2, pre: true },
    { t: 'voteResp', term: 3, granted: false, pre: false },
    { t: 'append', term: 4, prevIndex: 9, prevTerm: 3, commit: 8, entries: [{ term: 4, cmd: new Uint8Array([2, 1, 2]) }] },
    { t: 'appendResp', term: 4, ok: true, index: 10 },
    { t: 'snap', term: 4, index: 50, lastTerm: 3, members: [1, 2, 3], offset: 0, total: 3, data: new Uint8Array([9, 9, 9]) },
    {
      t: 'snap',
      term: 4,
      index: 50,
      lastTerm: 3,
      members: [1, 2, 3],
      base: 20,
      baseTerm: 2,
      offset: 0,
      total: 3,
      data: new Uint8Array([9, 9, 9]),
    },
    { t: 'snapResp', term: 4, index: 50, offset: 3 },
    { t: 'fwd', cmd: new Uint8Array([2, 7]) },
    { t: 'hello', neighbours: [2, 3], commit: 77 },
    { t: 'removed', index: 12 },
  ];
  it('round-trips every message kind', () => {
    for (const body of bodies) {
      const e: QnEnvelope = { domain: 0xdeadbeef, from: 1, to: 2, ttl: 8, body };
      expect(decodeEnvelope(encodeEnvelope(e))).toEqual(e);
    }
  });
  it('names the field at fault in every truncation and rejects trailing bytes', () => {
    for (const body of bodies) {
      const b = encodeEnvelope({ domain: 1, from: 1, to: 2, ttl: 8, body });
      for (let n = 0; n < b.length; n++) expect(() => decodeEnvelope(b.subarray(0, n))).toThrow(WireError);
      const long = new Uint8Array(b.length + 1);
      long.set(b);
      expect(() => decodeEnvelope(long)).toThrow(/qn: /);
    }
    expect(() => decodeEnvelope(new Uint8Array([0x40, 0, 0, 0, 1, 1, 2, 8, 99]))).toThrow(/qn.kind: unknown QN message kind 99/);
  });
});

describe('QSCS collapse in a domain (core/qn/state.ts)', () => {
  const regs = [
    { name: 'a', kind: 'map' as const },
    { name: 'b', kind: 'map' as const },
    { name: 's', kind: 'stream' as const },
  ];
  const groups = [{ name: 'ab', registers: ['a', 'b'] }];
  const apply = (st: DomainState, index: number, c: Candidate): void => st.apply({ term: 1, index, cmd: encodeCandidate(c) });
  const k = enc('k');

  it('a multi-register candidate commits on every register at once, or on none', () => {
    const st = new DomainState(5, regs, groups);
    const outcomes: number[] = [];
    st.onCollapse = (c) => outcomes.push(c.outcome);
    apply(st, 1, {
      origin: 1,
      seq: 1,
      ops: [
        { register: 'a', delta: { op: DeltaOp.Set, key: k, value: enc('1') } },
        { register: 'b', delta: { op: DeltaOp.Set, key: k, value: enc('1') } },
      ],
    });
    const digest = st.digest();
    // The cas on b fails: the set on a must not happen either.
    apply(st, 2, {
      origin: 1,
      seq: 2,
      ops: [
        { register: 'a', delta: { op: DeltaOp.Set, key: k, value: enc('2') } },
        { register: 'b', delta: { op: DeltaOp.Cas, key: k, expect: 7, value: enc('2') } },
      ],
    });
    expect(outcomes).toEqual([0, CollapseReject.CasMismatch]);
    expect((st.registers.get('a')!.state as MapState).get(k)!.value).toEqual(enc('1'));
    expect({ hi: st.digest().hi, lo: st.digest().lo }).toEqual({ hi: digest.hi, lo: digest.lo });
    expect(st.groups.get('ab')!.version).toBe(1);
    expect(st.registers.get('a')!.version).toBe(1);
  });

  it('rejects two deltas on one key and stream appends at the wrong offset; a retried candidate gets its first outcome', () => {
    const st = new DomainState(5, regs, groups);
    const seen: { outcome: number; duplicate: boolean }[] = [];
    st.onCollapse = (c) => seen.push({ outcome: c.outcome, duplicate: c.duplicate });
    apply(st, 1, {
      origin: 2,
      seq: 1,
      ops: [
        { register: 'a', delta: { op: DeltaOp.Set, key: k, value: enc('1') } },
        { register: 'a', delta: { op: DeltaOp.Del, key: k } },
      ],
    });
    apply(st, 2, {
      origin: 2,
      seq: 2,
      ops: [
        { register: 's', delta: { op: DeltaOp.Append, offset: 0, data: enc('ab') } },
        { register: 's', delta: { op: DeltaOp.Append, offset: 2, data: enc('c') } },
      ],
    });
    apply(st, 3, { origin: 2, seq: 3, ops: [{ register: 's', delta: { op: DeltaOp.Append, offset: 0, data: enc('x') } }] });
    apply(st, 4, { origin: 2, seq: 2, ops: [{ register: 's', delta: { op: DeltaOp.Append, offset: 3, data: enc('d') } }] });
    expect(seen).toEqual([
      { outcome: CollapseReject.DuplicateKey, duplicate: false },
      { outcome: 0, duplicate: false },
      { outcome: CollapseReject.AppendOffset, duplicate: false },
      { outcome: 0, duplicate: true },
    ]);
    expect(st.registers.get('s')!.state.size()).toBe(3);
  });

  it('a snapshot restores the same digest, versions and outcome table', () => {
    const st = new DomainState(9, regs, groups);
    for (let i = 1; i <= 50; i++)
      apply(st, i, {
        origin: 1,
        seq: i,
        ops: [
          {
            register: i % 2 ? 'a' : 's',
            delta:
              i % 2
                ? { op: DeltaOp.Set, key: enc(`k${i}`), value: enc(`v${i}`) }
                : { op: DeltaOp.Append, offset: st.registers.get('s')!.state.size(), data: enc(`${i}`) },
          },
        ],
      });
    const copy = new DomainState(9, regs, groups);
    copy.restore(st.snapshot(), 50);
    expect(copy.digest()).toEqual(st.digest());
    expect(copy.groups.get('ab')!.version).toBe(st.groups.get('ab')!.version);
    expect(copy.outcomeOf(1, 17)).toBe(0);
    // A snapshot of another index is refused whole, and the state is left as it was.
    expect(copy.restore(st.snapshot(), 49)).toBe(false);
    expect(copy.digest()).toEqual(st.digest());
  });
});

describe('domain simulation (testing/sim/domain.ts)', () => {
  const faults = { ...DOMAIN_SIM_DEFAULTS, partitions: true, crashes: true, cuts: true, skew: true };

  it(
    '1,000 seeds, 3 members, with partitions, crashes, link cuts, skew, loss, duplication and reordering',
    () => {
      const s = runDomainSeeds(1000, 1, { ...faults, nodes: 3 });
      expect(s.failures).toEqual([]);
      expect(s.converged).toBe(1000);
      // The runs exercised what they claim: conflicts, leader changes, snapshots, relays.
      expect(s.rejected).toBeGreaterThan(1000);
      expect(s.leaderChanges).toBeGreaterThan(2000);
      expect(s.snapshots).toBeGreaterThan(100);
      expect(s.relayed).toBeGreaterThan(1000);
    },
    SEED_RUN_TIMEOUT_MS,
  );

  it('200 seeds, 3 members, with a faulty store: a failed batch fences its member (nothing of that Ready leaves), which restarts from what survived', () => {
    const s = runDomainSeeds(200, 500_001, { ...faults, nodes: 3, storeFaults: 0.02 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(200);
    expect(s.storeFaults).toBeGreaterThan(200);
  });

  it(
    '1,000 seeds, 5 members, with the same faults',
    () => {
      const s = runDomainSeeds(1000, 100_001, { ...faults, nodes: 5 });
      expect(s.failures).toEqual([]);
      expect(s.converged).toBe(1000);
      expect(s.crashes).toBeGreaterThan(1000);
    },
    SEED_RUN_TIMEOUT_MS,
  );

  it('100 seeds, 7 members', () => {
    const s = runDomainSeeds(100, 200_001, { ...faults, nodes: 7 });
    expect(s.failures).toEqual([]);
  });

  it('membership changes under faults: remove a member and add a fresh one (3 and 5 members, 150 seeds each)', () => {
    for (const nodes of [3, 5]) {
      const s = runDomainSeeds(150, 300_001, { ...faults, nodes, membership: true });
      expect(s.failures).toEqual([]);
    }
  });

  it(
    'heavy faults: 30% loss, 20% duplication, 30% reordering, 300 candidates (100 seeds)',
    () => {
      const s = runDomainSeeds(100, 400_001, { ...faults, nodes: 5, loss: 0.3, dup: 0.2, reorder: 0.3, ops: 300 });
      expect(s.failures).toEqual([]);
    },
    SEED_RUN_TIMEOUT_MS,
  );

  it('a seed replays exactly', () => {
    const a = runDomainSim({ ...faults, seed: 77, nodes: 5 });
    expect(runDomainSim({ ...faults, seed: 77, nodes: 5 })).toEqual(a);
    expect(runDomainSim({ ...faults, seed: 78, nodes: 5 }).bytesSent).not.toBe(a.bytesSent);
  });

  it('the checker is not vacuous: a member whose state is corrupted in memory is reported', () => {
    const s = runDomainSeeds(20, 1, { ...faults, nodes: 3, corrupt: 0.3 });
    expect(s.failedSeeds.length).toBeGreaterThan(15);
    expect(s.failures[0].violations.join('\n')).toMatch(/state after index \d+ differs/);
  });
});

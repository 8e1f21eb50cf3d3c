/**
 * What one member can make every member of a QN domain hold (issue 13): the outcome table,
 * the registers and an incoming snapshot are bounded, deterministically on every member.
 * Each regression test is named after the attack it reproduces.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { Raft, Role, STAGING_FIRST_BYTES } from '../core/qn/raft.js';
import { EMPTY_STORED } from '../core/qn/persist.js';
import {
  CollapseReject,
  DomainState,
  MAX_ORIGINS,
  MAX_OUTCOMES,
  OUTCOME_WINDOW,
  encodeCandidate,
  snapshotBound,
  type CandidateOp,
} from '../core/qn/state.js';
import { Trio } from './domain-trio.js';

const set = (key: number, value: Uint8Array) => ({
  register: 'kv',
  delta: { op: DeltaOp.Set, key: new Uint8Array([key >> 8, key & 255, 1]), value } as const,
});

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

  it('domain grow: a member forwarding candidates that set fresh 1 KB keys is stopped at the quota on every member (quota-exceeded)', () => {
    const maxBytes = 64 * 1024;
    const t = new Trio(7, { maxLogEntries: 4096, registers: [{ name: 'kv', kind: 'map', maxKeys: 1000, maxBytes }] });
    t.run(1500);
    const L = t.leader()!;
    const M = [...t.nodes.values()].find((n) => n.raft.role === Role.Follower)!;
    const N = 200;
    for (let i = 1; i <= N; i++) {
      const cmd = encodeCandidate({ origin: M.id, seq: 1_000_000 + i, ops: [set(i, new Uint8Array(1000).fill(i & 255))] });
      t.inject(M.id, L.id, { t: 'fwd', cmd });
      if (i % 50 === 0) t.run(50);
    }
    t.run(500);
    const kv = (n: typeof L) => n.state.registers.get('kv')!.state;
    // An entry: key (1 + 3), version (1 octet below 128), value (2 + 1000).
    const fits = Math.floor(maxBytes / 1007);
    for (const n of t.nodes.values()) {
      expect(n.state.index).toBe(L.state.index);
      expect(n.state.digest()).toEqual(L.state.digest());
      expect(kv(n).fullTransferBytes()).toBeLessThanOrEqual(maxBytes);
      expect(kv(n).size()).toBe(fits);
      expect(n.state.outcomeOf(M.id, 1_000_000 + fits)).toBe(0);
      expect(n.state.outcomeOf(M.id, 1_000_000 + fits + 1)).toBe(CollapseReject.QuotaExceeded);
      expect(n.state.outcomeOf(M.id, 1_000_000 + N)).toBe(CollapseReject.QuotaExceeded);
    }
    // At the quota: a write that does not grow the register still commits, and a delete makes room.
    const honest = (ops: CandidateOp[]) => {
      const r = L.propose(t.now, ops);
      return 'seq' in r ? t.await(L.id, r.seq, 2000) : r.refused;
    };
    expect(honest([set(1, new Uint8Array(1000))])).toBe('committed');
    expect(honest([set(900, new Uint8Array(1000))])).toBe('rejected');
    expect(
      honest([{ register: 'kv', delta: { op: DeltaOp.Del, key: set(1, new Uint8Array()).delta.key } }, set(900, new Uint8Array(1000))]),
    ).toBe('committed');
  });

  it('quota in one candidate: deltas are counted at the sizes earlier deltas leave, and a candidate over quota changes nothing (maps and streams)', () => {
    const st = new DomainState(
      1,
      [
        { name: 'm', kind: 'map', maxKeys: 2 },
        { name: 's', kind: 'stream', maxBytes: 1024 },
      ],
      [],
    );
    let index = 0;
    const apply = (ops: CandidateOp[]): number => {
      st.apply({ term: 1, index: ++index, cmd: encodeCandidate({ origin: 1, seq: index, ops }) });
      return st.outcomeOf(1, index)!;
    };
    const m = (k: number, op: DeltaOp.Set | DeltaOp.Del = DeltaOp.Set): CandidateOp => ({
      register: 'm',
      delta: op === DeltaOp.Set ? { op, key: new Uint8Array([k]), value: new Uint8Array([k]) } : { op, key: new Uint8Array([k]) },
    });
    const s = (offset: number, n: number): CandidateOp => ({
      register: 's',
      delta: { op: DeltaOp.Append, offset, data: new Uint8Array(n) },
    });
    expect(apply([m(1), m(2), m(3)])).toBe(CollapseReject.QuotaExceeded);
    expect(apply([m(1), s(0, 1000), s(1000, 25)])).toBe(CollapseReject.QuotaExceeded);
    expect(st.registers.get('m')!.state.size()).toBe(0);
    expect(st.registers.get('s')!.version).toBe(0);
    expect(apply([m(1), m(2), s(0, 1000), s(1000, 24)])).toBe(0);
    // A delete earlier in the candidate makes room for a new key in the same candidate.
    expect(apply([m(3)])).toBe(CollapseReject.QuotaExceeded);
    expect(apply([m(1, DeltaOp.Del), m(3)])).toBe(0);
    expect(apply([s(1024, 1)])).toBe(CollapseReject.QuotaExceeded);
    // The snapshot of a state at its quota restores, outcome 6 included.
    const copy = new DomainState(1, st.specs, []);
    expect(copy.restore(st.snapshot(), index)).toBe(true);
    expect(copy.digest()).toEqual(st.digest());
    expect(copy.outcomeOf(1, index)).toBe(CollapseReject.QuotaExceeded);
  });

  it('snapshot hoard: a leader cannot make a follower stage more than the bound its quotas give, and staging is one buffer that grows with what arrived', () => {
    const registers = [{ name: 'kv', kind: 'map' as const, maxBytes: 1 << 20 }];
    const t = new Trio(11, { registers });
    t.run(1500);
    expect(t.put('a', '1')).toBe('committed');
    const L = t.leader()!;
    const f = t.follower()!;
    const bound = snapshotBound(registers, []);
    expect(f.raft.maxSnapshotBytes).toBe(bound);
    expect(bound).toBeLessThan((1 << 20) + MAX_ORIGINS * 4096 * 8 + MAX_ORIGINS * 9 + 1024);
    const snap = (index: number, offset: number, total: number, data: Uint8Array) =>
      t.inject(L.id, f.id, { t: 'snap', term: f.raft.term, index, lastTerm: f.raft.term, members: [1, 2, 3], offset, total, data });
    const index = f.raft.commit + 100;
    snap(index, 0, bound + 1, new Uint8Array(700));
    expect(f.stats.drops['bad-snapshot']).toBe(1);
    expect(f.raft.incomingBufferBytes).toBe(0);
    // At the bound: one buffer, of STAGING_FIRST_BYTES until more arrives (not the claimed total).
    snap(index, 0, bound, new Uint8Array(700));
    snap(index, 700, bound, new Uint8Array(700));
    expect(f.raft.incomingBufferBytes).toBe(STAGING_FIRST_BYTES);
    expect(f.raft.incomingBytes).toBe(1400);
    // A chunk that runs past the total is not part of the transfer (the codec refuses it; Raft would too).
    snap(index + 1, 0, 1000, new Uint8Array(700));
    expect(f.raft.incomingBufferBytes).toBe(1000);
    snap(index + 1, 700, 1000, new Uint8Array(301));
    expect(f.stats.drops.malformed).toBe(1);
    expect(
      f.raft.handleMessage(t.now, L.id, {
        t: 'snap',
        term: f.raft.term,
        index: index + 1,
        lastTerm: f.raft.term,
        members: [1, 2, 3],
        offset: 700,
        total: 1000,
        data: new Uint8Array(301),
      }),
    ).toBe('snapshot-mismatch');
    expect(f.raft.incomingBytes).toBe(700);
    snap(index + 1, 700, 1000, new Uint8Array(300));
    expect(f.stats.drops['bad-snapshot']).toBe(2); // complete, and not a snapshot: dropped whole
    expect(f.raft.incomingBufferBytes).toBe(0);
    expect(f.raft.stats.snapshotsInstalled).toBe(0);
    t.run(300);
    expect(t.put('b', '2')).toBe('committed');
  });

  it('snapshot bound: a state filled to its quotas, with outcomes, snapshots within snapshotBound', () => {
    const specs = [
      { name: 'm', kind: 'map' as const, maxBytes: 8192 },
      { name: 's', kind: 'stream' as const, maxBytes: 4096 },
    ];
    const groups = [{ name: 'g', registers: ['m', 's'] }];
    const st = new DomainState(3, specs, groups);
    let index = 0;
    for (let i = 0; i < 200; i++) {
      const ops: CandidateOp[] = [{ register: 'm', delta: { op: DeltaOp.Set, key: new Uint8Array([i, 7]), value: new Uint8Array(100) } }];
      st.apply({ term: 1, index: ++index, cmd: encodeCandidate({ origin: 1 + (i % 5), seq: index, ops }) });
      const len = st.registers.get('s')!.state.size();
      st.apply({
        term: 1,
        index: ++index,
        cmd: encodeCandidate({
          origin: 9,
          seq: index,
          ops: [{ register: 's', delta: { op: DeltaOp.Append, offset: len, data: new Uint8Array(100) } }],
        }),
      });
    }
    expect(st.registers.get('m')!.state.fullTransferBytes()).toBeGreaterThan(8192 - 110);
    expect(st.registers.get('s')!.state.size()).toBe(4000);
    const snap = st.snapshot();
    expect(snap.length).toBeGreaterThan(8192 + 4000 - 110);
    expect(snap.length).toBeLessThanOrEqual(snapshotBound(specs, groups));
  });

  it('poison outcomes: 129 made-up origins with full windows leave at most MAX_OUTCOMES outcomes, the least recent origin gone whole', () => {
    const st = new DomainState(5, [{ name: 'kv', kind: 'map' }], []);
    // A cheap candidate (an unknown register: rejected, recorded): only the table grows.
    const ops: CandidateOp[] = [{ register: 'none', delta: { op: DeltaOp.Del, key: new Uint8Array([1]) } }];
    let index = 0;
    const origins = MAX_OUTCOMES / OUTCOME_WINDOW + 1;
    for (let o = 1; o <= origins; o++)
      for (let seq = 1; seq <= OUTCOME_WINDOW; seq++) st.apply({ term: 1, index: ++index, cmd: encodeCandidate({ origin: o, seq, ops }) });
    expect(st.outcomeCount).toBe(MAX_OUTCOMES);
    expect(st.originCount).toBe(origins - 1);
    expect(st.outcomeOf(1, OUTCOME_WINDOW)).toBeUndefined();
    expect(st.outcomeOf(2, 1)).toBe(CollapseReject.UnknownRegister);
    const copy = new DomainState(5, st.specs, []);
    expect(copy.restore(st.snapshot(), index)).toBe(true);
    expect(copy.outcomeCount).toBe(MAX_OUTCOMES);
    // The same next eviction on both: origin 2 is the least recent on each.
    for (const s of [st, copy]) s.apply({ term: 1, index: index + 1, cmd: encodeCandidate({ origin: 1, seq: 1, ops }) });
    expect(copy.snapshot()).toEqual(st.snapshot());
    expect(copy.outcomeOf(2, 1)).toBeUndefined();
    expect(copy.outcomeOf(3, 1)).toBe(CollapseReject.UnknownRegister);
  });

  it('snapshot hoard beyond memory: a total within a configured bound this host cannot allocate is never allocated at its first chunk, never thrown', () => {
    const r = new Raft(
      {
        id: 2,
        initialMembers: [1, 2, 3],
        stored: EMPTY_STORED,
        sm: { apply: () => {}, snapshot: () => new Uint8Array(), restore: () => true },
        random: (a) => a,
        maxSnapshotBytes: 2 ** 47,
      },
      0,
    );
    expect(
      r.handleMessage(1, 1, {
        t: 'snap',
        term: 1,
        index: 10,
        lastTerm: 1,
        members: [1, 2, 3],
        offset: 0,
        total: 2 ** 46,
        data: new Uint8Array(10),
      }),
    ).toBeUndefined();
    expect(r.incomingBufferBytes).toBe(STAGING_FIRST_BYTES);
    // Another transfer replaces it (and releases its buffer).
    expect(
      r.handleMessage(1, 1, {
        t: 'snap',
        term: 1,
        index: 11,
        lastTerm: 1,
        members: [1, 2, 3],
        offset: 0,
        total: 10,
        data: new Uint8Array(10),
      }),
    ).toBeUndefined();
    expect(r.stats.snapshotsInstalled).toBe(1);
    expect(r.incomingBufferBytes).toBe(0);
  });
});

/**
 * What a leader's snapshot or difference may make a member hold (docs/PROTOCOL.md §15.4,
 * "Install limits"): no register past its quota, or past what it already holds if that is more;
 * the member's own snapshot, read back from its store, is not limited. And a difference is
 * checked at its own cost before the member copies its state to patch it (a review found a
 * 24-octet `snapDiff` costing 0.67 s of work at 300,000 keys, each time).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { DomainState, encodeCandidate, type DomainRegisterSpec } from '../core/qn/state.js';
import type { LogEntry } from '../core/qn/raft.js';
import type { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const SEED = 7;

/** A state of one map register `kv` holding keys k0..k<n-1> (values `v<i>` padded to `pad` octets), at index `index`. */
function mapState(specs: DomainRegisterSpec[], n: number, index: number, pad = 0): DomainState {
  const s = new DomainState(SEED, specs, []);
  const reg = s.registers.get('kv')!;
  reg.version = index;
  for (let i = 0; i < n; i++) (reg.state as MapState).put(enc(`k${i}`), enc(`v${i}`.padEnd(pad, '.')), 1 + (i % index));
  s.index = index;
  return s;
}

const keysOf = (s: DomainState): number => (s.registers.get('kv')!.state as MapState).size();

/** Log entries from+1..from+n, the i-th a set of key k<i mod keys> by `origin` (its seq i). */
function entries(n: number, keys: number, from = 0, origin = 5): LogEntry[] {
  const out: LogEntry[] = [];
  for (let i = 1; i <= n; i++) {
    const ops = [{ register: 'kv', delta: { op: DeltaOp.Set as const, key: enc(`k${i % keys}`), value: enc(`v${i}`) } }];
    out.push({ term: 1, index: from + i, cmd: encodeCandidate({ origin, seq: i, ops }) });
  }
  return out;
}

const applied = (specs: DomainRegisterSpec[], es: LogEntry[]): DomainState => {
  const s = new DomainState(SEED, specs, []);
  for (const e of es) s.apply(e);
  return s;
};

afterEach(() => vi.restoreAllMocks());

describe("a leader's snapshot and the register quotas", () => {
  const tight = [{ name: 'kv', kind: 'map' as const, maxKeys: 1000, maxBytes: 1 << 20 }];

  it('is refused past maxKeys (the member unchanged); the same octets from the member’s own store restore', () => {
    const data = mapState([{ name: 'kv', kind: 'map' }], 1500, 10).snapshot();
    const m = mapState(tight, 3, 5);
    expect(m.restore(data, 10, true)).toBe(false);
    expect([m.index, keysOf(m)]).toEqual([5, 3]);
    expect(m.restore(data, 10)).toBe(true);
    expect(keysOf(m)).toBe(1500);
  });

  it('is refused past maxBytes, for a map and for a stream', () => {
    const mapSpec = [{ name: 'kv', kind: 'map' as const, maxBytes: 4096 }];
    const big = mapState([{ name: 'kv', kind: 'map' }], 10, 10, 1000).snapshot(); // ~10 KB of entries
    expect(new DomainState(SEED, mapSpec, []).restore(big, 10, true)).toBe(false);
    expect(new DomainState(SEED, mapSpec, []).restore(mapState([{ name: 'kv', kind: 'map' }], 3, 10, 1000).snapshot(), 10, true)).toBe(
      true,
    );

    const stream = (limit?: number): DomainRegisterSpec[] => [{ name: 's', kind: 'stream', ...(limit ? { maxBytes: limit } : {}) }];
    const src = new DomainState(SEED, stream(), []);
    const reg = src.registers.get('s')!;
    (reg.state as StreamState).appendBytes(new Uint8Array(10_000));
    reg.version = 1;
    src.index = 1;
    expect(new DomainState(SEED, stream(4096), []).restore(src.snapshot(), 1, true)).toBe(false);
    expect(new DomainState(SEED, stream(10_000), []).restore(src.snapshot(), 1, true)).toBe(true);
  });

  it('a quota lowered under what the member holds: the leader may keep it there, not take it further', () => {
    const holding = mapState([{ name: 'kv', kind: 'map' }], 1500, 10);
    const m = new DomainState(SEED, tight, []);
    expect(m.restore(holding.snapshot(), 10)).toBe(true); // its own, from before the quota was lowered
    expect(m.restore(mapState([{ name: 'kv', kind: 'map' }], 1500, 20).snapshot(), 20, true)).toBe(true);
    expect(m.restore(mapState([{ name: 'kv', kind: 'map' }], 1501, 30).snapshot(), 30, true)).toBe(false);
    expect([m.index, keysOf(m)]).toEqual([20, 1500]);
  });

  it('a snapshot of many tiny entries within maxSnapshotBytes no longer makes a member hold past maxKeys', () => {
    // The review's case: 12,000 one-entry keys of 3 octets, empty values, against maxKeys 1,000.
    const src = new DomainState(SEED, [{ name: 'kv', kind: 'map' }], []);
    const reg = src.registers.get('kv')!;
    for (let i = 0; i < 12_000; i++) (reg.state as MapState).put(new Uint8Array([i & 255, (i >> 8) & 255, 1]), new Uint8Array(0), 1);
    reg.version = 1;
    src.index = 5;
    const m = new DomainState(SEED, [{ name: 'kv', kind: 'map', maxKeys: 1000, maxBytes: 65_536 }], []);
    expect(m.restore(src.snapshot(), 5, true)).toBe(false);
    expect(keysOf(m)).toBe(0);
  });
});

describe('a difference is checked before the state is copied', () => {
  const open = [{ name: 'kv', kind: 'map' as const }];

  it('an honest difference still patches to the leader’s state', () => {
    const es = entries(400, 50);
    const leader = applied(open, es);
    const data = leader.diff(100, es.slice(100))!;
    const f = applied(open, es.slice(0, 100));
    const full = f.patch(data, 100, 400)!;
    const g = new DomainState(SEED, open, []);
    expect(g.restore(full, 400, true)).toBe(true);
    expect(g.digest()).toEqual(leader.digest());
    expect(g.outcomeOf(5, 400)).toBe(leader.outcomeOf(5, 400));
  });

  it('garbage, a wrong digest or a register past its quota: refused without copying the state', () => {
    const es = entries(400, 50);
    const leader = applied(open, es);
    const data = leader.diff(100, es.slice(100))!;
    // varint 400 (2 octets) and varint 100 (1 octet) come first: octet 3 is the digest's.
    const wrongDigest = data.slice();
    wrongDigest[3] ^= 1;
    const f = applied(open, es.slice(0, 100));
    // 1,200 more entries of another origin, each a new key: 1,200 keys where the tight member allows 1,000.
    const es2 = [...es, ...entries(1200, 10_000, 400, 6)];
    const overQuota = applied(open, es2).diff(400, es2.slice(400))!;
    const tightAt400 = new DomainState(SEED, [{ name: 'kv', kind: 'map', maxKeys: 1000 }], []);
    expect(tightAt400.restore(applied(open, es).snapshot(), 400)).toBe(true);

    const copies = vi.spyOn(DomainState.prototype, 'snapshot');
    expect(f.patch(new Uint8Array([0x90, 0x03, 100, 1, 2, 3]), 100, 400)).toBeUndefined();
    expect(f.patch(wrongDigest, 100, 400)).toBeUndefined();
    expect(tightAt400.patch(overQuota, 400, 1600)).toBeUndefined();
    expect(copies).not.toHaveBeenCalled();
    // The same member, quota met: the difference applies (and only then is the state copied).
    const roomy = new DomainState(SEED, open, []);
    expect(roomy.restore(applied(open, es).snapshot(), 400)).toBe(true);
    expect(roomy.patch(overQuota, 400, 1600)).toBeDefined();
    expect(copies).toHaveBeenCalled();
  });
});

describe('through a domain member (raft installs what a leader sends with the limits)', () => {
  it('a snapshot past the quota is dropped as bad-snapshot and changes nothing', async () => {
    const { DomainNode } = await import('../core/qn/node.js');
    const { encodeEnvelope } = await import('../wire/qn.js');
    const [SELF, LEADER, OTHER, DOMAIN] = [10, 20, 30, 0x51];
    const specs = [{ name: 'kv', kind: 'map' as const, maxKeys: 1000 }];
    const own = mapState(specs, 10, 1);
    const n = new DomainNode(
      {
        domain: DOMAIN,
        name: 'd',
        id: SELF,
        members: [SELF, LEADER, OTHER],
        links: [LEADER, OTHER],
        registers: specs,
        seed: SEED,
        stored: {
          term: 1,
          vote: 0,
          base: 1,
          baseTerm: 1,
          entries: [],
          commit: 1,
          nextSeq: 1,
          pending: [],
          snapshot: { index: 1, term: 1, members: [SELF, LEADER, OTHER], data: own.snapshot() },
        },
        random: (a) => a,
        electionMs: 1_000_000,
        heartbeatMs: 100,
      },
      0,
    );
    for (let r = n.ready(); r; r = n.ready()) n.advance();
    const snap = (keys: number, index: number): Uint8Array => {
      const data = mapState([{ name: 'kv', kind: 'map' }], keys, index).snapshot();
      const body = { t: 'snap', term: 1, index, lastTerm: 1, members: [SELF, LEADER, OTHER], offset: 0, total: data.length, data } as const;
      return encodeEnvelope({ domain: DOMAIN, from: LEADER, to: SELF, ttl: 1, body });
    };
    n.handleDatagram(10, LEADER, snap(1001, 5));
    for (let r = n.ready(); r; r = n.ready()) n.advance();
    expect(n.stats.drops['bad-snapshot']).toBe(1);
    expect(keysOf(n.state)).toBe(10);
    n.handleDatagram(20, LEADER, snap(1000, 6));
    for (let r = n.ready(); r; r = n.ready()) n.advance();
    expect(keysOf(n.state)).toBe(1000);
  });
});

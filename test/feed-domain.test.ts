import { describe, expect, it } from 'vitest';
import { DomainChanges } from '../core/qn/changes.js';
import type { ChangeRing } from '../core/register/changes.js';
import { DeltaOp } from '../wire/delta.js';
import { Trio } from './domain-trio.js';

/**
 * The domain change feeds' source (core/qn/changes.ts) on three members over the in-memory
 * network: every member's ring holds the same committed changes at the same versions, rejected
 * candidates are not changes, a restarted member rebuilds its ring from its journal, and one
 * that installs a snapshot starts its ring again at the snapshot (never a wrong record).
 */
const dec = (b?: Uint8Array): string => new TextDecoder().decode(b);
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Version → "key=value" of what a ring holds. */
function contents(r: ChangeRing): Map<number, string> {
  const m = new Map<number, string>();
  for (let v = r.base + 1; v <= r.last; v++)
    m.set(
      v,
      r
        .at(v)!
        .changes.map((c) => `${c.op}:${dec(c.key)}=${dec(c.value)}`)
        .join(','),
    );
  return m;
}

describe('domain change rings', () => {
  it('agree across members, skip rejections, rebuild after a restart, restart at an installed snapshot', () => {
    const changes = new Map<number, DomainChanges>();
    const t = new Trio(11, (id) => {
      // A restarted member gets a fresh one, as spookd does.
      const c = new DomainChanges({ maxRecords: 16, maxBytes: 1 << 20 });
      changes.set(id, c);
      return { observer: c, maxLogEntries: 16 };
    });
    t.run(1000);
    const ring = (id: number): ChangeRing => changes.get(id)!.sync('kv', t.nodes.get(id)!.state.registers.get('kv')!.version);
    for (let i = 0; i < 10; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
    // A cas that fails is rejected at every member and is not a change.
    const l = t.leader()!;
    const bad = l.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Cas, key: enc('k1'), expect: 999, value: enc('no') } }]);
    expect('seq' in bad && t.await(l.id, bad.seq, 2000)).toBe('rejected');
    t.run(200);
    const version = l.state.registers.get('kv')!.version;
    expect(version).toBe(10);
    for (const id of [1, 2, 3]) {
      expect(ring(id).last).toBe(10);
      expect([...contents(ring(id)).values()].at(-1)).toBe('set:k9=v9');
    }
    expect(contents(ring(2))).toEqual(contents(ring(1)));
    expect(contents(ring(3))).toEqual(contents(ring(1)));

    // A restarted follower replays its journal: its ring holds the same records again.
    const f = t.follower()!.id;
    t.stop(f);
    t.start(f);
    t.run(500);
    const after = contents(ring(f));
    expect(after.size).toBeGreaterThan(0);
    for (const [v, c] of after) expect(c).toBe(contents(ring(l.id)).get(v));

    // A follower cut off while the leader compacts its log catches up by a snapshot: its ring starts there.
    const g = [1, 2, 3].find((x) => x !== l.id && x !== f)!;
    t.isolate(g);
    for (let i = 10; i < 60; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
    t.isolate(g, false);
    t.run(2000);
    expect(t.nodes.get(g)!.raft.stats.snapshotsInstalled).toBeGreaterThan(0);
    // Started again at the install itself, before any entry or reader (a live feed learns it at once).
    expect(changes.get(g)!.rings.get('kv')!.last).toBe(60);
    const rg = ring(g);
    expect(rg.last).toBe(60);
    expect(rg.base).toBeGreaterThan(10);
    const lead = contents(ring(t.leader()!.id));
    for (const [v, c] of contents(rg)) expect(c).toBe(lead.get(v));
    // And from there on it follows like the others.
    expect(t.put('k60', 'v60')).toBe('committed');
    t.run(200);
    expect(contents(ring(g)).get(61)).toBe('set:k60=v60');
  });
});

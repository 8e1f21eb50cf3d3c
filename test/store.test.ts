import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, appendFileSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import type { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { append, cas, enc, set, del } from './helpers.js';
import { SimWorld } from '../testing/sim/world.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { SpookEvent } from '../core/pair/events.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-store-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const REGS = [
  { name: 'kv', kind: 'map' as const },
  { name: 's', kind: 'stream' as const },
];

/** A sequencer HalfPair over a store in `dir`, loaded from whatever is there. */
function open(dir: string, maxLogBytes?: number) {
  const store = new DiskStore(dir, 'always', maxLogBytes);
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, store }, 0);
  const reports = [...pair.registers.values()].map((r) => store.load(r));
  return { store, pair, reports };
}

function commit(pair: HalfPair): void {
  pair.collapse(0);
}

// Committed history survives a restart: snapshot + log replay, torn tails cut, damage refused.
describe('DiskStore', () => {
  it('a restart replays the log to the same (version, hash) and continues sequence numbers', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 50; i++) a.pair.propose(0, 'kv', set(`k${i % 7}`, `v${i}`));
    a.pair.propose(0, 'kv', del('k3'));
    a.pair.propose(0, 's', append(0, 'hello'));
    commit(a.pair);
    const before = [...a.pair.registers.values()].map((r) => [r.version, r.hash.hi, r.hash.lo]);
    a.store.close();
    const b = open(dir);
    expect([...b.pair.registers.values()].map((r) => [r.version, r.hash.hi, r.hash.lo])).toEqual(before);
    expect(b.reports[0].replayed).toBeGreaterThan(0);
    expect((b.pair.register('kv').state as MapState).get(enc('k3'))).toBeUndefined();
    // New own candidates must not reuse a sequence number decided before the restart.
    const id = b.pair.propose(0, 'kv', set('after', 'restart'));
    expect(id.seq).toBeGreaterThan(51);
  });

  it('a torn tail (crash mid-write) is cut off and everything before it kept', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 10; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'v'));
      commit(a.pair);
    }
    const v = a.pair.register('kv').version;
    a.store.close();
    const log = join(dir, 'kv', 'log');
    appendFileSync(log, Buffer.from([0, 0, 0, 40, 1, 2, 3])); // a record header with half a body
    const sizeWithTear = statSync(log).size;
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(v);
    expect(b.reports[0].tornBytes).toBe(7);
    expect(statSync(log).size).toBe(sizeWithTear - 7);
  });

  it('a corrupted record ends the replay there (checksum), never applies garbage', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 5; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'v'));
      commit(a.pair);
    }
    a.store.close();
    const log = join(dir, 'kv', 'log');
    const buf = readFileSync(log);
    buf[buf.length - 3] ^= 0xff; // inside the last record
    writeFileSync(log, buf);
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(4);
  });

  it('compaction writes a snapshot, empties the log, and a restart loads the snapshot', () => {
    const dir = tmp();
    const a = open(dir, 2000);
    for (let i = 0; i < 200; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      a.pair.propose(0, 's', append((a.pair.register('s').state as StreamState).size() + i * 0, 'ab'));
      commit(a.pair);
    }
    expect(statSync(join(dir, 'kv', 'log')).size).toBeLessThan(2200);
    const before = a.pair.register('kv').hash;
    a.store.close();
    const b = open(dir);
    expect(b.reports[0].snapshotVersion).toBeGreaterThan(0);
    expect(b.pair.register('kv').hash).toEqual(before);
    expect(b.pair.register('kv').state.size()).toBe(200);
  });

  it('a damaged snapshot is a hard error naming the file', () => {
    const dir = tmp();
    const a = open(dir, 500);
    for (let i = 0; i < 50; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      commit(a.pair);
    }
    a.store.close();
    const snap = join(dir, 'kv', 'snapshot');
    const buf = readFileSync(snap);
    buf[20] ^= 1;
    writeFileSync(snap, buf);
    expect(() => open(dir)).toThrow(StoreError);
    expect(() => open(dir)).toThrow(/snapshot: checksum mismatch/);
  });
});

// Promises kept across a restart: a follower write reported `pending` is decided after it.
describe('durable own candidates', () => {
  const KV = [{ name: 'kv', kind: 'map' as const }];
  const pairOn = (dir: string, localId: number, now: number) => {
    const store = new DiskStore(dir, 'always');
    const pair = new HalfPair({ pairId: 3, localId, peerId: 3 - localId, seed: 11, registers: KV, store }, now);
    const reports = [...pair.registers.values()].map((r) => store.load(r));
    return { store, pair, reports };
  };

  /** Sequencer A and follower B, each on its own real DiskStore, in one simulated world. */
  function world() {
    const w = new SimWorld(5, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 3 });
    const dirA = tmp();
    const dirB = tmp();
    const a = pairOn(dirA, 1, 0);
    const b = pairOn(dirB, 2, 0);
    const events: { ep: string; ev: SpookEvent }[] = [];
    w.onEvent = (ep, ev) => events.push({ ep: ep.name, ev });
    const [ea, eb] = w.adopt(['A', 'B'], [a.pair, b.pair]);
    const entangled = () => ea.pair.state === PairState.ENTANGLED && eb.pair.state === PairState.ENTANGLED;
    expect(w.run(5000, entangled)).toBe(true);
    /** Stop B's daemon (its store closed, nothing else kept) and start it again from disk. */
    const restartB = () => {
      b.store.close();
      const b2 = pairOn(dirB, 2, w.now);
      eb.pair = b2.pair;
      b.store = b2.store;
      w.drain(eb);
      return b2.reports[0];
    };
    const outcomes = (seqs: number[]) =>
      events
        .filter((e) => e.ep === 'B' && e.ev.type === 'outcome' && seqs.includes(e.ev.seq))
        .map((e) => (e.ev as { seq: number; verdict: string }).seq + ':' + (e.ev as { verdict: string }).verdict);
    return { w, a, b, ea, eb, events, entangled, restartB, outcomes, close: () => (a.store.close(), b.store.close()) };
  }

  it('a write pending at a restart (never sent: the follower was cut off) is decided after it', () => {
    const t = world();
    t.w.net.setLink('B', 'A', false);
    t.w.net.setLink('A', 'B', false);
    const seqs = [1, 2, 3].map((i) => t.eb.pair.propose(t.w.now, 'kv', set(`p${i}`, `v${i}`)).seq);
    t.w.run(t.w.now + 100);
    expect(t.outcomes(seqs)).toEqual([]); // pending: what the CLI reports as "decided later"
    const rep = t.restartB();
    expect(rep.pendingRestored).toBe(3);
    t.w.net.setLink('B', 'A', true);
    t.w.net.setLink('A', 'B', true);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes(seqs).length === 3 && t.entangled())).toBe(true);
    expect(t.outcomes(seqs)).toEqual(seqs.map((s) => `${s}:committed`));
    const sa = t.a.pair.register('kv').state as MapState;
    expect(new TextDecoder().decode(sa.get(enc('p2'))!.value)).toBe('v2');
    // New writes after the restart use fresh sequence numbers and are decided too.
    const after = t.eb.pair.propose(t.w.now, 'kv', set('after', 'x')).seq;
    expect(after).toBeGreaterThan(Math.max(...seqs));
    t.w.drain(t.eb);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes([after]).length === 1)).toBe(true);
    t.close();
  });

  it('a write the sequencer decided while the follower was down is reported once, not applied twice', () => {
    const t = world();
    t.w.net.setLink('A', 'B', false); // B's proposals reach A; A's collapses do not reach B
    const seqs = [1, 2].map((i) => t.eb.pair.propose(t.w.now, 'kv', cas(`c${i}`, 0, 'first')).seq);
    t.w.drain(t.eb);
    t.w.run(t.w.now + 200);
    expect(t.a.pair.register('kv').origins.get(2)).toBe(Math.max(...seqs)); // decided at A
    expect(t.outcomes(seqs)).toEqual([]);
    expect(t.restartB().pendingRestored).toBe(2);
    t.w.net.setLink('A', 'B', true);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes(seqs).length === 2 && t.entangled())).toBe(true);
    expect(t.outcomes(seqs)).toEqual(seqs.map((s) => `${s}:committed`));
    const decidedAtA = t.events
      .filter((e) => e.ep === 'A' && e.ev.type === 'collapse')
      .flatMap((e) => (e.ev as { entries: readonly { origin: number; seq: number }[] }).entries)
      .filter((x) => x.origin === 2);
    expect(decidedAtA.map((x) => x.seq)).toEqual(seqs); // each once: the re-proposals were duplicates
    t.close();
  });
});

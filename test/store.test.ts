import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, appendFileSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../control/core/halfpair.js';
import { DiskStore, StoreError } from '../control/daemon/store.js';
import type { MapState } from '../control/core/register/map.js';
import type { StreamState } from '../control/core/register/stream.js';
import { append, enc, set, del } from './helpers.js';

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
  for (const r of pair.registers.values()) r.collapse(0);
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

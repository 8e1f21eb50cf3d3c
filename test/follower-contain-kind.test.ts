/**
 * Containment (review of the follower path): a Collapse record committing an op of the other
 * register kind (a map set on a stream, an append on a map) is one an honest sequencer never
 * sends (its check() rejects such an op, wrong-register-kind). The follower used to skip the op
 * and, the hash being that of the unchanged state, log and persist the record; at the next start
 * the store's replay applied it without the skip and threw: the register (and `spookd`) could no
 * longer load. Now the record is refused and counted as a violation (`invalid-record`, §7.4, rev
 * 1.32); a log written before that holds such a record replays it as it was applied (the op
 * skipped), to the state that was acknowledged.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { violationsIn } from '../core/etcp/drops.js';
import { DiskStore } from '../drivers/store/store.js';
import { StreamState } from '../core/register/stream.js';
import { MapState } from '../core/register/map.js';
import { MsgType, encodeMessage, type CollapseEntry } from '../wire/messages.js';
import { append, enc, set, tempDirs } from './helpers.js';

const tmp = tempDirs('follower-contain-kind');
const SEED = 77;
const REGS = [
  { name: 's', kind: 'stream' as const },
  { name: 'kv', kind: 'map' as const },
];

/** The follower (localId 2) over a store in `dir`, loaded from it. */
function open(dir: string) {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: SEED, registers: REGS, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

const record = (register: string, version: number, hash: { hi: number; lo: number }, entries: CollapseEntry[]): Uint8Array =>
  encodeMessage({ type: MsgType.Collapse, register, version, hash: { hi: hash.hi, lo: hash.lo }, entries });

/** Stream `s` after `data` was appended (its hash). */
function streamWith(data: string): StreamState {
  const st = new StreamState(SEED);
  if (data.length > 0) st.appendBytes(enc(data));
  return st;
}

describe('follower: a committed op of the other register kind', () => {
  it('a map set committed on a stream register is refused as a violation: not applied, not logged, the restart loads', () => {
    const dir = tmp();
    const a = open(dir);
    const empty = streamWith('').hash;
    const rec = record('s', 1, empty, [{ origin: 1, seq: 1, verdict: 'committed', delta: set('k', 'v') }]);
    expect(() => a.pair.handlePayload(0, 0, rec)).not.toThrow();
    expect(a.pair.register('s').version).toBe(0);
    expect(a.pair.register('s').log.get(1)).toBeUndefined();
    expect(a.pair.register('s').follower!.holdsNext).toBe(false);
    expect(a.pair.stats.drops['invalid-record']).toBe(1);
    expect(violationsIn(a.pair.stats.drops)).toBe(1);
    // Its copy again (the peer repeats it): refused again, each time counted.
    a.pair.handlePayload(1, 1, rec);
    expect(a.pair.stats.drops['invalid-record']).toBe(2);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    const b = open(dir);
    expect(b.pair.register('s').version).toBe(0);
    b.store.close();
  });

  it('an append committed on a map register: refused the same way; the honest record after it still applies', () => {
    const dir = tmp();
    const a = open(dir);
    const st = new MapState(SEED);
    const bad = record('kv', 1, st.hash, [{ origin: 1, seq: 1, verdict: 'committed', delta: append(0, 'zz') }]);
    a.pair.handlePayload(0, 0, bad);
    expect(a.pair.register('kv').version).toBe(0);
    expect(a.pair.stats.drops['invalid-record']).toBe(1);
    // The sequencer's record at v1, a set: applied and logged as ever.
    st.apply(set('a', '1'), 1);
    a.pair.handlePayload(1, 1, record('kv', 1, st.hash, [{ origin: 1, seq: 1, verdict: 'committed', delta: set('a', '1') }]));
    expect(a.pair.register('kv').version).toBe(1);
    expect(a.pair.register('kv').log.get(1)).toBeDefined();
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(1);
    expect(b.pair.register('kv').state.hash).toEqual(st.hash);
    b.store.close();
  });

  it('a record mixing the two kinds is refused whole, even when its hash is that of its right-kind ops', () => {
    const a = open(tmp());
    const after = streamWith('ab').hash;
    const rec = record('s', 1, after, [
      { origin: 1, seq: 1, verdict: 'committed', delta: append(0, 'ab') },
      { origin: 1, seq: 2, verdict: 'committed', delta: set('k', 'v') },
    ]);
    a.pair.handlePayload(0, 0, rec);
    expect(a.pair.register('s').version).toBe(0);
    expect(a.pair.register('s').state.size()).toBe(0);
    expect(a.pair.stats.drops['invalid-record']).toBe(1);
    a.store.close();
  });

  it('a log written before rev 1.32 holding such a record replays it as it was applied (the op skipped), to the acknowledged state', () => {
    const dir = tmp();
    const a = open(dir);
    // What an earlier follower logged: v1 of stream `s` appends "ab" and commits a map set
    // (skipped; the hash is that of "ab"), v2 of map `kv` commits an append (skipped: the empty
    // map's hash) after its v1 set.
    const s1 = streamWith('ab').hash;
    const kv = new MapState(SEED);
    kv.apply(set('a', '1'), 1);
    a.store.persist([
      {
        kind: 'append',
        register: 's',
        rec: {
          version: 1,
          hash: s1,
          encoded: record('s', 1, s1, [
            { origin: 1, seq: 1, verdict: 'committed', delta: append(0, 'ab') },
            { origin: 1, seq: 2, verdict: 'committed', delta: set('k', 'v') },
          ]),
        },
      },
      {
        kind: 'append',
        register: 'kv',
        rec: {
          version: 1,
          hash: { hi: kv.hash.hi, lo: kv.hash.lo },
          encoded: record('kv', 1, kv.hash, [{ origin: 1, seq: 3, verdict: 'committed', delta: set('a', '1') }]),
        },
      },
      {
        kind: 'append',
        register: 'kv',
        rec: {
          version: 2,
          hash: { hi: kv.hash.hi, lo: kv.hash.lo },
          encoded: record('kv', 2, kv.hash, [{ origin: 1, seq: 4, verdict: 'committed', delta: append(0, 'zz') }]),
        },
      },
    ]);
    a.store.close();
    let b: ReturnType<typeof open> | undefined;
    expect(() => (b = open(dir))).not.toThrow();
    const s = b!.pair.register('s');
    expect(s.version).toBe(1);
    expect(s.state.hash).toEqual(streamWith('ab').hash);
    expect(s.state.size()).toBe(2);
    const m = b!.pair.register('kv');
    expect(m.version).toBe(2);
    expect(m.state.hash).toEqual(kv.hash);
    // The marks of the skipped entries are kept, as the live path set them.
    expect(s.origins.get(1)).toBe(2);
    expect(m.origins.get(1)).toBe(4);
    b!.store.close();
  });
});

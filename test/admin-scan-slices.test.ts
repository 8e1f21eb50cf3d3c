import { afterEach, describe, expect, it, vi } from 'vitest';
import { MapState } from '../core/register/map.js';
import { Bucket, type KeyIndex } from '../core/register/keyspace.js';
import { collectScan, countScan, SCAN_SLICE, ScanGone, type ScanCount, type ScanSet } from '../drivers/admin/scan.js';
import { readHandlers } from '../drivers/admin/read.js';
import type { Spookd } from '../drivers/daemon/spookd.js';

// A scan gathers a pinned register a slice per turn of the event loop (drivers/admin/scan.ts): no
// turn does more than about a slice of work, what the register commits meanwhile is not seen (the
// pages are of the pinned version), and the copying part never makes the pin hold a bucket copy.

const enc = new TextEncoder();
const dec = new TextDecoder();
const N = 100_000;
const key = (i: number): string => `key-${String(i).padStart(8, '0')}`;

/** A map of N keys written in a scrambled order, value `v<i>` at version 1 + i % 7. */
function filled(): MapState {
  const st = new MapState(3);
  for (let j = 0; j < N; j++) {
    const i = (j * 7919) % N;
    st.put(enc.encode(key(i)), enc.encode(`v${i}`), 1 + (i % 7));
  }
  return st;
}

/** The whole of `pin` counted with no turns between slices. */
const countAll = (pin: KeyIndex): Promise<ScanCount> =>
  countScan(
    pin,
    new Uint8Array(0),
    async () => {},
    () => {},
  );

const entries = (set: ScanSet): [string, string, number][] =>
  Array.from({ length: set.length }, (_, i) => [dec.decode(set.key(i)), dec.decode(set.value(i)), set.version(i)]);

afterEach(() => vi.restoreAllMocks());

describe('scan gathered in slices', () => {
  it('takes a turn at least every slice of entries it reads, and gives the entries under the prefix in key order', async () => {
    const st = filled();
    const pin = st.snapshot(7);
    let turns = 0;
    const turn = async (): Promise<void> => void turns++;
    const prefix = enc.encode('key-0001'); // key-00010000 .. key-00019999
    const count = await countScan(pin, prefix, turn, () => {});
    expect(count).toEqual({ entries: 10_000, bytes: 10_000 * 12 + 10_000 * 6, smallest: 18 });
    expect(turns).toBeGreaterThanOrEqual(Math.floor(N / SCAN_SLICE));
    const before = turns;
    const set = await collectScan(pin, prefix, count, turn, () => {});
    expect(turns - before).toBeGreaterThanOrEqual(Math.floor(N / SCAN_SLICE));
    expect(entries(set)).toEqual(Array.from({ length: 10_000 }, (_, j) => [key(10_000 + j), `v${10_000 + j}`, 1 + ((10_000 + j) % 7)]));
    expect(set.firstAfter(enc.encode(key(10_499)))).toBe(500);
    expect(set.firstAfter(enc.encode('key-00010499x'))).toBe(500);
    expect(set.firstAfter(enc.encode('zzz'))).toBe(10_000);
  });

  it('gives the pinned version while the register is written between turns, and copies no bucket for the pin while it copies', async () => {
    const st = filled();
    const pin = st.snapshot(7);
    let w = 0;
    /** Between turns: overwrite, remove and add keys all over the register (every bucket, many times). */
    const writeSome = async (): Promise<void> => {
      for (let j = 0; j < 3_000; j++, w++) {
        const i = (w * 104_729) % N;
        if (w % 3 === 0) st.remove(enc.encode(key(i)));
        else if (w % 3 === 1) st.put(enc.encode(key(i)), enc.encode('changed'), 8);
        else st.put(enc.encode(`key-new-${w}`), enc.encode('new'), 8);
      }
    };
    const count = await countScan(pin, new Uint8Array(0), writeSome, () => {});
    expect(count.entries).toBe(N);
    const loads = vi.spyOn(Bucket.prototype, 'load');
    const set = await collectScan(pin, new Uint8Array(0), count, writeSome, () => {});
    expect(loads).not.toHaveBeenCalled();
    expect(w).toBeGreaterThan(20_000);
    expect(entries(set)).toEqual(Array.from({ length: N }, (_, i) => [key(i), `v${i}`, 1 + (i % 7)]));
    // Released: later writes copy nothing for it either.
    for (let i = 0; i < 1_000; i++) st.put(enc.encode(key(i * 97)), enc.encode('after'), 9);
    expect(loads).not.toHaveBeenCalled();
  });

  it('takes more turns for long keys: a slice counts the octets it copies and the key length it compares', async () => {
    const st = new MapState(3);
    const k = new Uint8Array(4_096).fill(0x61); // 4,092 octets in common: every comparison reads them all
    for (let i = 0; i < 4_000; i++) {
      new DataView(k.buffer).setUint32(4_092, Math.imul(i, 2_654_435_761));
      st.put(k, new Uint8Array(0), 1);
    }
    const pin = st.snapshot(1);
    const count = await countAll(pin);
    let turns = 0;
    const set = await collectScan(
      pin,
      new Uint8Array(0),
      count,
      async () => void turns++,
      () => {},
    );
    expect(set.length).toBe(4_000);
    for (let i = 1; i < set.length; i++) expect(Buffer.compare(set.key(i - 1), set.key(i))).toBe(-1);
    // 4,000 entries would be one slice if counted as entries; their 16 MiB of keys and the comparisons make many.
    expect(turns).toBeGreaterThanOrEqual(20);
  });

  it('stops at the first turn after its request is gone, and lets go of the pin', async () => {
    const st = filled();
    const pin = st.snapshot(7);
    const count = await countAll(pin);
    let turns = 0;
    let gone = false;
    const done = collectScan(
      pin,
      new Uint8Array(0),
      count,
      async () => {
        if (++turns === 2) gone = true;
      },
      () => {
        if (gone) throw new ScanGone();
      },
    );
    await expect(done).rejects.toBeInstanceOf(ScanGone);
    expect(turns).toBe(2);
    const loads = vi.spyOn(Bucket.prototype, 'load');
    for (let i = 0; i < 1_000; i++) st.put(enc.encode(key(i * 97)), enc.encode('after'), 9);
    expect(loads).not.toHaveBeenCalled();
  });
});

describe('concurrent scans through the admin handler', () => {
  it('run one at a time, each pinning the register when its turn comes: every page set is the register at its version', async () => {
    const st = new MapState(5);
    const M = 40_000;
    for (let i = 0; i < M; i++) st.put(enc.encode(key(i)), enc.encode('v1'), 1);
    const reg = { state: st, version: 1 };
    const h = { cfg: { name: 'd' }, node: { state: { registers: new Map([['kv', reg]]) } } };
    const daemon = { domains: new Map([['d', h]]), domain: () => h } as unknown as Spookd;
    const handlers = readHandlers(daemon);
    const conn = {};
    const call = { onClose: () => {}, onConnectionClose: () => {}, conn, backlog: () => 0, onDrain: () => () => {} };
    /** Version v (≥ 2) overwrites the keys i with i % 97 === v % 97, value `v<v>`. */
    const written = (i: number, at: number): number => {
      for (let v = at; v >= 2; v--) if (i % 97 === v % 97) return v;
      return 1;
    };
    let writing = true;
    const writer = (): void => {
      if (!writing) return;
      const v = ++reg.version;
      for (let i = v % 97; i < M; i += 97) st.put(enc.encode(key(i)), enc.encode(`v${v}`), v);
      setImmediate(writer);
    };
    setImmediate(writer);
    const scans = Array.from({ length: 12 }, async () => {
      let r = await handlers.dscan({ domain: 'd', register: 'kv', limit: 5_000 }, call);
      const got = [...r.entries];
      while (r.cursor)
        got.push(
          ...(r = await handlers.dscan({ domain: 'd', register: 'kv', limit: 5_000, cursor: r.cursor, after: got.at(-1)!.key.text }, call))
            .entries,
        );
      return { version: r.version, got };
    });
    const results = await Promise.all(scans);
    writing = false;
    const versions = results.map((r) => r.version);
    // In turn, the register moving on between them (at once, all twelve pinned version 1 and held a pin each).
    expect(new Set(versions).size).toBeGreaterThan(6);
    for (const { version, got } of results) {
      expect(got.length).toBe(M);
      for (let i = 0; i < M; i += 13) {
        const v = written(i, version);
        expect(got[i]).toMatchObject({ key: { text: key(i) }, value: { text: `v${v}` }, keyVersion: v });
      }
    }
  });
});

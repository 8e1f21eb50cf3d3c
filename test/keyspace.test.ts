import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  allEntries,
  buildIndex,
  childrenOf,
  countUnder,
  entriesUnder,
  prefixContains,
  prefixRange,
  type KeyIndex,
} from '../core/register/keyspace.js';

const entriesOf = (index: KeyIndex) => [...allEntries(index)];
import { MapState, type MapEntry } from '../core/register/map.js';
import { RECON_FANOUT, RECON_MAX_DEPTH } from '../wire/messages.js';

const TWO32 = 2 ** 32;
const M64 = (1n << 64n) - 1n;
const utf8 = new TextEncoder();

/** The prefix holding keyHash h at depth d: the top 4*d bits of h (computed with BigInt, independently of the source). */
function prefixOf(d: number, h: number): number {
  return Number(BigInt(h) >> BigInt(32 - 4 * d));
}

function multisetHash(entries: MapEntry[]): bigint {
  return entries.reduce((s, e) => (s + ((BigInt(e.hhi) << 32n) | BigInt(e.hlo))) & M64, 0n);
}

/** A map with n entries under `seed`, and its index. */
function indexed(seed: number, n: number, salt = 0): { map: MapState; index: KeyIndex } {
  const map = new MapState(seed);
  for (let i = 0; i < n; i++) map.put(utf8.encode(`key-${salt}-${i}`), utf8.encode(`value-${i}`), i + 1);
  return { map, index: buildIndex(map.values(), n, map.hash) };
}

function fakeEntry(keyHash: number, tag = 0): MapEntry {
  return { key: Uint8Array.of(tag), value: new Uint8Array(0), version: 1, keyHash, hhi: tag, hlo: keyHash };
}

// At every depth, the prefixes cut [0, 2^32) into equal, adjacent, non-overlapping ranges.
describe('prefixRange partitions the key space', () => {
  for (let d = 0; d <= RECON_MAX_DEPTH; d++) {
    it(`depth ${d}`, () => {
      const count = 16 ** d;
      const width = TWO32 / count;
      const check = (p: number) => {
        const [s, e] = prefixRange(d, p);
        expect(e - s).toBe(width);
        if (p + 1 < count) expect(prefixRange(d, p + 1)[0]).toBe(e);
      };
      expect(prefixRange(d, 0)[0]).toBe(0);
      expect(prefixRange(d, count - 1)[1]).toBe(TWO32);
      if (d <= 4) {
        for (let p = 0; p < count; p++) check(p);
      } else {
        const samples = fc.sample(fc.integer({ min: 0, max: count - 1 }), { numRuns: 2000, seed: d });
        for (const p of [0, 1, count - 2, count - 1, ...samples]) check(p);
      }
    });
  }

  it('property: every key hash lies in exactly its top-bits prefix at every depth', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: TWO32 - 1 }), fc.integer({ min: 0, max: RECON_MAX_DEPTH }), (h, d) => {
        const p = prefixOf(d, h);
        expect(prefixContains(d, p, h)).toBe(true);
        if (p > 0) expect(prefixContains(d, p - 1, h)).toBe(false);
        if (p + 1 < 16 ** d) expect(prefixContains(d, p + 1, h)).toBe(false);
        const [s, e] = prefixRange(d, p);
        expect(s <= h && h < e).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('property: a prefix range is the union of its 16 children, in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: RECON_MAX_DEPTH - 1 }), fc.integer({ min: 0, max: TWO32 - 1 }), (d, h) => {
        const p = prefixOf(d, h);
        const [s, e] = prefixRange(d, p);
        let at = s;
        for (let i = 0; i < RECON_FANOUT; i++) {
          const [cs, ce] = prefixRange(d + 1, p * RECON_FANOUT + i);
          expect(cs).toBe(at);
          at = ce;
        }
        expect(at).toBe(e);
      }),
      { numRuns: 1000 },
    );
  });

  it('depth 8 prefixes are single key hashes', () => {
    expect(prefixRange(8, 0xffffffff)).toEqual([0xffffffff, TWO32]);
    expect(prefixRange(8, 0x80000000)).toEqual([0x80000000, 0x80000001]);
  });
});

// The index is sorted by keyHash as an unsigned 32-bit number.
describe('buildIndex', () => {
  it('sorts synthetic entries by unsigned keyHash (top-bit hashes last)', () => {
    const hashes = [0xffffffff, 0, 0x80000000, 0x7fffffff, 0x80000001, 1, 0xdeadbeef, 0x12345678];
    const idx = buildIndex(
      hashes.map((h, i) => fakeEntry(h, i)),
      3,
      { hi: 1, lo: 2 },
    );
    expect(entriesOf(idx).map((e) => e.keyHash)).toEqual([...hashes].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(idx.version).toBe(3);
    expect(idx.hash).toEqual({ hi: 1, lo: 2 });
  });

  it('sorts real map entries, holds every entry once and copies the hash', () => {
    const { map, index } = indexed(77, 500);
    const entries = entriesOf(index);
    expect(entries).toHaveLength(500);
    expect(index.size).toBe(500);
    for (let i = 1; i < entries.length; i++) {
      expect(entries[i - 1].keyHash).toBeLessThanOrEqual(entries[i].keyHash);
    }
    expect(entries.some((e) => e.keyHash >= 0x80000000)).toBe(true);
    expect(entries.every((e) => e.keyHash >= 0 && e.keyHash < TWO32)).toBe(true);
    expect(new Set(entries)).toEqual(new Set(map.values()));
    const snapshot = { ...index.hash };
    map.put(utf8.encode('later'), utf8.encode('x'), 501);
    expect(index.hash).toEqual(snapshot);
    expect(entriesOf(index)).toHaveLength(500);
  });
});

// entriesUnder and childrenOf agree with brute force over the whole index.
describe('entriesUnder and childrenOf', () => {
  const indexArb = fc.record({ seed: fc.integer({ min: 0, max: 0xffffffff }), n: fc.integer({ min: 0, max: 300 }), salt: fc.nat(1000) });
  /** A (depth, prefix) that is either random or holds a chosen entry, so non-empty ranges are tested too. */
  const whereArb = fc.record({
    depth: fc.integer({ min: 0, max: RECON_MAX_DEPTH }),
    pick: fc.nat(),
    random: fc.integer({ min: 0, max: TWO32 - 1 }),
    useEntry: fc.boolean(),
  });

  function choose(index: KeyIndex, w: { depth: number; pick: number; random: number; useEntry: boolean }): number {
    const entries = entriesOf(index);
    const h = w.useEntry && entries.length > 0 ? entries[w.pick % entries.length].keyHash : w.random;
    return prefixOf(w.depth, h);
  }

  it('property: entriesUnder equals a brute-force filter of the index', () => {
    fc.assert(
      fc.property(indexArb, whereArb, ({ seed, n, salt }, w) => {
        const { index } = indexed(seed, n, salt);
        const p = choose(index, w);
        const brute = entriesOf(index).filter((e) => prefixOf(w.depth, e.keyHash) === p);
        expect(entriesUnder(index, w.depth, p)).toEqual(brute);
        expect(countUnder(index, w.depth, p)).toBe(brute.length);
      }),
      { numRuns: 300 },
    );
  });

  it('property: child counts sum to the parent count and child hashes sum to the parent multiset hash', () => {
    fc.assert(
      fc.property(indexArb, whereArb, ({ seed, n, salt }, w) => {
        const { index } = indexed(seed, n, salt);
        const depth = Math.min(w.depth, RECON_MAX_DEPTH - 1);
        const p = choose(index, { ...w, depth });
        const parent = entriesUnder(index, depth, p);
        const kids = childrenOf(index, depth, p);
        expect(kids).toHaveLength(RECON_FANOUT);
        expect(kids.reduce((s, c) => s + c.count, 0)).toBe(parent.length);
        const kidSum = kids.reduce((s, c) => (s + ((BigInt(c.hash.hi) << 32n) | BigInt(c.hash.lo))) & M64, 0n);
        expect(kidSum).toBe(multisetHash(parent));
        kids.forEach((c, i) => {
          const under = entriesUnder(index, depth + 1, p * RECON_FANOUT + i);
          expect(c.count).toBe(under.length);
          expect((BigInt(c.hash.hi) << 32n) | BigInt(c.hash.lo)).toBe(multisetHash(under));
        });
      }),
      { numRuns: 300 },
    );
  });

  it('the root children cover the whole map, and their hash sum is the map hash', () => {
    const { map, index } = indexed(5, 1000);
    const kids = childrenOf(index, 0, 0);
    expect(kids.reduce((s, c) => s + c.count, 0)).toBe(1000);
    expect(kids.every((c) => c.count > 0)).toBe(true); // 1000 uniform hashes fill all 16 buckets
    const sum = kids.reduce((s, c) => (s + ((BigInt(c.hash.hi) << 32n) | BigInt(c.hash.lo))) & M64, 0n);
    expect(sum).toBe((BigInt(map.hash.hi) << 32n) | BigInt(map.hash.lo));
    expect(entriesUnder(index, 0, 0)).toHaveLength(1000);
  });

  it('a depth-8 prefix holds exactly the entries with that key hash', () => {
    const { index } = indexed(5, 200);
    const e = entriesOf(index)[123];
    expect(entriesUnder(index, 8, e.keyHash)).toEqual(entriesOf(index).filter((x) => x.keyHash === e.keyHash));
  });

  it('childrenOf refuses depth 8 (leaves have no children)', () => {
    const { index } = indexed(5, 10);
    expect(() => childrenOf(index, RECON_MAX_DEPTH, 0)).toThrow(RangeError);
  });

  it('entries at the top of the hash space land in the last child', () => {
    const idx = buildIndex([fakeEntry(0xffffffff, 1), fakeEntry(0xf0000000, 2), fakeEntry(0x0fffffff, 3)], 1, { hi: 0, lo: 0 });
    const kids = childrenOf(idx, 0, 0);
    expect(kids[15].count).toBe(2);
    expect(kids[0].count).toBe(1);
    expect(kids.slice(1, 15).every((c) => c.count === 0 && c.hash.hi === 0 && c.hash.lo === 0)).toBe(true);
    const last = childrenOf(idx, 7, 0x0fffffff);
    expect(last[15].count).toBe(1);
  });
});

// A map keeps its key-hash order per write; a snapshot (a pin) is unaffected by later writes.
describe('MapState.snapshot (copy-on-write pins)', () => {
  it('property: after random writes the live index equals a sorted rebuild, and every snapshot still shows its own moment', () => {
    const opArb = fc.array(fc.record({ key: fc.nat(60), del: fc.boolean(), snap: fc.boolean() }), { maxLength: 400 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), opArb, (seed, ops) => {
        const map = new MapState(seed);
        const snaps: { index: KeyIndex; expect: MapEntry[] }[] = [];
        ops.forEach((op, i) => {
          const key = utf8.encode(`k${op.key}`);
          if (op.del) map.remove(key);
          else map.put(key, utf8.encode(`v${i}`), i + 1);
          if (op.snap) snaps.push({ index: map.snapshot(i), expect: entriesOf(buildIndex(map.values(), i, map.hash)) });
        });
        const live = map.snapshot(ops.length);
        const rebuilt = entriesOf(buildIndex(map.values(), 0, map.hash));
        expect(entriesOf(live).map((e) => e.keyHash)).toEqual(rebuilt.map((e) => e.keyHash));
        expect(new Set(entriesOf(live))).toEqual(new Set(rebuilt));
        expect(live.size).toBe(map.size());
        const kids = childrenOf(live, 0, 0);
        const sum = kids.reduce((s, c) => (s + ((BigInt(c.hash.hi) << 32n) | BigInt(c.hash.lo))) & M64, 0n);
        expect(sum).toBe((BigInt(map.hash.hi) << 32n) | BigInt(map.hash.lo));
        for (const s of snaps) {
          expect(new Set(entriesOf(s.index))).toEqual(new Set(s.expect));
          expect(s.index.size).toBe(s.expect.length);
          expect(childrenOf(s.index, 1, 3).reduce((n, c) => n + c.count, 0)).toBe(countUnder(s.index, 1, 3));
        }
      }),
      { numRuns: 200 },
    );
  });
});

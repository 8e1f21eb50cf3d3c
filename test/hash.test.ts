import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Hash64, Murmur3, hashEquals, hashHex, laneSeeds, murmur3 } from '../core/register/hash.js';
import { MapState } from '../core/register/map.js';
import { StreamState } from '../core/register/stream.js';
import { DeltaOp, RejectReason, type Delta } from '../wire/delta.js';

const utf8 = new TextEncoder();
const b = (s: string): Uint8Array => utf8.encode(s);

const M64 = (1n << 64n) - 1n;
const big = (h: { hi: number; lo: number }): bigint => (BigInt(h.hi) << 32n) | BigInt(h.lo);

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** Cut `data` at the given points (any order, any values) into consecutive chunks. */
function split(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, data.length]) {
    out.push(data.subarray(prev, p));
    prev = p;
  }
  return out;
}

// ---------------------------------------------------------------- Murmur3

/**
 * Published Murmur3_x86_32 vectors: Ian Boyd's SMHasher-verified table
 * (stackoverflow.com/a/31929528, also used by the mmh3 and Bitcoin Core test suites) and the
 * Wikipedia MurmurHash examples (seed 0x9747b28c).
 */
const VECTORS: Array<[string, Uint8Array, number, number]> = [
  ['(empty)', new Uint8Array(0), 0, 0x00000000],
  ['(empty)', new Uint8Array(0), 1, 0x514e28b7],
  ['(empty)', new Uint8Array(0), 0xffffffff, 0x81f16f39],
  ['ff ff ff ff', Uint8Array.from([0xff, 0xff, 0xff, 0xff]), 0, 0x76293b50],
  ['21 43 65 87', Uint8Array.from([0x21, 0x43, 0x65, 0x87]), 0, 0xf55b516b],
  ['21 43 65 87', Uint8Array.from([0x21, 0x43, 0x65, 0x87]), 0x5082edee, 0x2362f9de],
  ['21 43 65', Uint8Array.from([0x21, 0x43, 0x65]), 0, 0x7e4a8634],
  ['21 43', Uint8Array.from([0x21, 0x43]), 0, 0xa0f7b07a],
  ['21', Uint8Array.from([0x21]), 0, 0x72661cf4],
  ['00 00 00 00', new Uint8Array(4), 0, 0x2362f9de],
  ['00 00 00', new Uint8Array(3), 0, 0x85f0b427],
  ['00 00', new Uint8Array(2), 0, 0x30f4c306],
  ['00', new Uint8Array(1), 0, 0x514e28b7],
  ['aaaa', b('aaaa'), 0x9747b28c, 0x5a97808a],
  ['aaa', b('aaa'), 0x9747b28c, 0x283e0130],
  ['aa', b('aa'), 0x9747b28c, 0x5d211726],
  ['a', b('a'), 0x9747b28c, 0x7fa09ea6],
  ['abcd', b('abcd'), 0x9747b28c, 0xf0478627],
  ['abc', b('abc'), 0x9747b28c, 0xc84a62dd],
  ['ab', b('ab'), 0x9747b28c, 0x74875592],
  ['abc', b('abc'), 0, 0xb3dd93fa],
  ['abcdbcdecdef...nopq', b('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'), 0, 0xee925b90],
  ['Hello, world!', b('Hello, world!'), 0x9747b28c, 0x24884cba],
  ['ππππππππ (UTF-8)', b('ππππππππ'), 0x9747b28c, 0xd58063c1],
  ['"a" x 256', b('a'.repeat(256)), 0x9747b28c, 0x37405bdc],
  ['test', b('test'), 0x9747b28c, 0x704b81dc],
  ['hello', b('hello'), 0, 0x248bfa47], // also PROTOCOL.md Appendix A
  ['The quick brown fox jumps over the lazy dog', b('The quick brown fox jumps over the lazy dog'), 0x9747b28c, 0x2fa826cd],
];

// Murmur3_x86_32 matches the published reference vectors, one-shot and streamed byte by byte.
describe('Murmur3 reference vectors', () => {
  for (const [name, input, seed, want] of VECTORS) {
    it(`${name} seed 0x${seed.toString(16)} -> 0x${want.toString(16)}`, () => {
      expect(murmur3(seed, input)).toBe(want);
      expect(new Murmur3().reset(seed).update(input).digest()).toBe(want);
      const m = new Murmur3().reset(seed);
      for (let i = 0; i < input.length; i++) m.update(input, i, i + 1);
      expect(m.digest()).toBe(want);
    });
  }

  it('digests are unsigned 32-bit', () => {
    for (const [, input, seed] of VECTORS) {
      const d = murmur3(seed, input);
      expect(Number.isInteger(d) && d >= 0 && d <= 0xffffffff).toBe(true);
    }
  });
});

// The streaming form is split-independent; updateU32 is 4 LE bytes; digest() is read-only.
describe('Murmur3 streaming', () => {
  const seedArb = fc.integer({ min: 0, max: 0xffffffff });

  it('property: any split into update() calls gives the one-shot digest', () => {
    fc.assert(
      fc.property(seedArb, fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 12 }), (seed, data, cuts) => {
        const m = new Murmur3().reset(seed);
        for (const c of split(data, cuts)) m.update(c);
        expect(m.digest()).toBe(murmur3(seed, data));
      }),
      { numRuns: 1000 },
    );
  });

  it('property: update(b, start, end) hashes exactly that sub-range', () => {
    fc.assert(
      fc.property(seedArb, fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.nat(), (seed, data, x, y) => {
        const s = x % (data.length + 1);
        const e = s + (y % (data.length - s + 1));
        expect(new Murmur3().reset(seed).update(data, s, e).digest()).toBe(murmur3(seed, data.slice(s, e)));
      }),
    );
  });

  it('property: updateU32(v) equals update() with the 4 little-endian bytes, at any alignment', () => {
    const op = fc.oneof(fc.record({ u32: fc.integer({ min: 0, max: 0xffffffff }) }), fc.record({ bytes: fc.uint8Array({ maxLength: 7 }) }));
    fc.assert(
      fc.property(seedArb, fc.array(op, { maxLength: 12 }), (seed, ops) => {
        const viaU32 = new Murmur3().reset(seed);
        const viaBytes = new Murmur3().reset(seed);
        const all: Uint8Array[] = [];
        for (const o of ops) {
          if ('u32' in o) {
            const le = Uint8Array.from([o.u32 & 0xff, (o.u32 >>> 8) & 0xff, (o.u32 >>> 16) & 0xff, o.u32 >>> 24]);
            viaU32.updateU32(o.u32);
            viaBytes.update(le);
            all.push(le);
          } else {
            viaU32.update(o.bytes);
            viaBytes.update(o.bytes);
            all.push(o.bytes);
          }
        }
        expect(viaU32.digest()).toBe(viaBytes.digest());
        expect(viaU32.digest()).toBe(murmur3(seed, concat(all)));
      }),
      { numRuns: 1000 },
    );
  });

  it('updateU32 with a value >= 2^31 matches its LE bytes (unsigned handling)', () => {
    const v = 0x87654321;
    expect(new Murmur3().reset(0).updateU32(v).digest()).toBe(murmur3(0, Uint8Array.from([0x21, 0x43, 0x65, 0x87])));
    expect(new Murmur3().reset(0).updateU32(v).digest()).toBe(0xf55b516b); // published vector for 21 43 65 87
  });

  it('property: digest() does not change the state, so hashing can continue', () => {
    fc.assert(
      fc.property(seedArb, fc.uint8Array({ maxLength: 50 }), fc.uint8Array({ maxLength: 50 }), (seed, x, y) => {
        const m = new Murmur3().reset(seed).update(x);
        const d1 = m.digest();
        expect(m.digest()).toBe(d1);
        expect(d1).toBe(murmur3(seed, x));
        m.update(y);
        expect(m.digest()).toBe(murmur3(seed, concat([x, y])));
      }),
    );
  });

  it('clone() continues independently of the original', () => {
    const m = new Murmur3().reset(7).update(b('abc'));
    const c = m.clone();
    c.update(b('def'));
    expect(m.digest()).toBe(murmur3(7, b('abc')));
    expect(c.digest()).toBe(murmur3(7, b('abcdef')));
  });

  it('reset() forgets earlier input, including a partial block', () => {
    const m = new Murmur3().reset(1).update(b('xyz'));
    m.reset(0x9747b28c).update(b('Hello, world!'));
    expect(m.digest()).toBe(0x24884cba);
  });
});

// ---------------------------------------------------------------- Hash64

// Hash64 is arithmetic modulo 2^64 on two uint32 halves: add and sub are inverse, carries and borrows propagate.
describe('Hash64', () => {
  const u32 = fc.integer({ min: 0, max: 0xffffffff });

  it('property: add and sub match BigInt arithmetic modulo 2^64 and are inverse', () => {
    fc.assert(
      fc.property(u32, u32, u32, u32, (hi, lo, xh, xl) => {
        const h = new Hash64(hi, lo);
        h.add(xh, xl);
        expect(big(h)).toBe((big({ hi, lo }) + big({ hi: xh, lo: xl })) & M64);
        h.sub(xh, xl);
        expect(h.hi).toBe(hi);
        expect(h.lo).toBe(lo);
        h.sub(xh, xl);
        expect(big(h)).toBe((big({ hi, lo }) - big({ hi: xh, lo: xl })) & M64);
        h.add(xh, xl);
        expect(h.equals({ hi, lo })).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('carries from lo into hi at the 0xffffffff boundary', () => {
    const h = new Hash64(0, 0xffffffff);
    h.add(0, 1);
    expect([h.hi, h.lo]).toEqual([1, 0]);
    const g = new Hash64(5, 0xfffffffe);
    g.add(0, 0xffffffff);
    expect([g.hi, g.lo]).toEqual([6, 0xfffffffd]);
  });

  it('wraps at 2^64', () => {
    const h = new Hash64(0xffffffff, 0xffffffff);
    h.add(0, 1);
    expect([h.hi, h.lo]).toEqual([0, 0]);
    const g = new Hash64(0, 1);
    g.add(0xffffffff, 0xffffffff);
    expect([g.hi, g.lo]).toEqual([0, 0]);
    const k = new Hash64(0xffffffff, 0);
    k.add(1, 0);
    expect([k.hi, k.lo]).toEqual([0, 0]);
  });

  it('borrows from hi and wraps below zero', () => {
    const h = new Hash64(1, 0);
    h.sub(0, 1);
    expect([h.hi, h.lo]).toEqual([0, 0xffffffff]);
    const z = new Hash64(0, 0);
    z.sub(0, 1);
    expect([z.hi, z.lo]).toEqual([0xffffffff, 0xffffffff]);
    const w = new Hash64(0, 5);
    w.sub(1, 6);
    expect(big(w)).toBe((5n - ((1n << 32n) + 6n)) & M64);
  });

  it('property: sums are order-independent (a multiset hash)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(u32, u32), { maxLength: 30 }), fc.nat(), (items, rot) => {
        const a = new Hash64();
        for (const [x, y] of items) a.add(x, y);
        const b2 = new Hash64();
        const k = items.length ? rot % items.length : 0;
        for (const [x, y] of [...items.slice(k), ...items.slice(0, k)].reverse()) b2.add(x, y);
        expect(a.equals(b2)).toBe(true);
        expect(big(a)).toBe(items.reduce((s, [x, y]) => (s + big({ hi: x, lo: y })) & M64, 0n));
      }),
    );
  });

  it('hex rendering and equality helpers', () => {
    expect(hashHex({ hi: 0x1, lo: 0xabc })).toBe('0000000100000abc');
    expect(new Hash64(0xdeadbeef, 0).toString()).toBe('deadbeef00000000');
    expect(hashEquals({ hi: 1, lo: 2 }, { hi: 1, lo: 2 })).toBe(true);
    expect(hashEquals({ hi: 1, lo: 2 }, { hi: 2, lo: 1 })).toBe(false);
    const c = new Hash64(3, 4).copy();
    c.add(0, 1);
    expect([c.hi, c.lo]).toEqual([3, 5]);
  });
});

// ---------------------------------------------------------------- MapState

const set = (k: string, v: string): Delta => ({ op: DeltaOp.Set, key: b(k), value: b(v) });
const del = (k: string): Delta => ({ op: DeltaOp.Del, key: b(k) });
const cas = (k: string, expect: number, v: string): Delta => ({ op: DeltaOp.Cas, key: b(k), expect, value: b(v) });

/** Final entries: distinct keys, each with a value and the version that wrote it. */
const finalEntries = fc.uniqueArray(
  fc.record({
    key: fc.uint8Array({ minLength: 1, maxLength: 12 }),
    value: fc.uint8Array({ maxLength: 16 }),
    version: fc.integer({ min: 1, max: 2 ** 40 }),
  }),
  { selector: (e) => Array.from(e.key).join(','), maxLength: 25 },
);

// The map hash is a multiset hash of (key, value, version): history- and order-independent.
describe('MapState hash', () => {
  it('starts at (0,0)', () => {
    const m = new MapState(42);
    expect([m.hash.hi, m.hash.lo]).toEqual([0, 0]);
    expect(m.size()).toBe(0);
  });

  it('property: the same final entries in any order give the same hash', () => {
    fc.assert(
      fc.property(finalEntries, fc.integer({ min: 0, max: 0xffffffff }), fc.nat(), (entries, seed, shuffle) => {
        const a = new MapState(seed);
        for (const e of entries) a.apply({ op: DeltaOp.Set, key: e.key, value: e.value }, e.version);
        const order = entries.map((e, i) => ({ e, r: (Math.imul(i + 1, 2654435761) ^ shuffle) >>> 0 })).sort((x, y) => x.r - y.r);
        const bm = new MapState(seed);
        for (const { e } of order) bm.put(e.key.slice(), e.value.slice(), e.version);
        expect(bm.hash.equals(a.hash)).toBe(true);
        expect(bm.size()).toBe(entries.length);
        // and the hash is the sum of the per-entry lane hashes
        let sum = 0n;
        for (const e of a.values()) sum = (sum + big({ hi: e.hhi, lo: e.hlo })) & M64;
        expect(big(a.hash)).toBe(sum);
      }),
      { numRuns: 300 },
    );
  });

  it('property: history does not matter, only the final entries (overwrites and deleted keys leave no trace)', () => {
    fc.assert(
      fc.property(finalEntries, fc.array(fc.uint8Array({ minLength: 13, maxLength: 20 }), { maxLength: 10 }), (entries, junkKeys) => {
        const direct = new MapState(9);
        for (const e of entries) direct.put(e.key.slice(), e.value.slice(), e.version);
        const noisy = new MapState(9);
        let v = 1;
        for (const k of junkKeys) noisy.apply({ op: DeltaOp.Set, key: k, value: Uint8Array.of(1) }, v++);
        for (const e of entries) noisy.apply({ op: DeltaOp.Set, key: e.key, value: Uint8Array.of(0xee) }, v++);
        for (const k of junkKeys) noisy.apply({ op: DeltaOp.Del, key: k }, v++);
        for (const e of entries) noisy.apply({ op: DeltaOp.Set, key: e.key, value: e.value }, e.version);
        expect(noisy.hash.equals(direct.hash)).toBe(true);
        expect(noisy.size()).toBe(direct.size());
      }),
      { numRuns: 200 },
    );
  });

  it('set then del returns to the empty hash (0,0)', () => {
    const m = new MapState(1);
    m.apply(set('a', 'x'), 1);
    expect(m.hash.equals({ hi: 0, lo: 0 })).toBe(false);
    m.apply(set('b', 'y'), 2);
    m.apply(set('a', 'z'), 3);
    m.apply(del('a'), 4);
    m.apply(del('b'), 5);
    expect([m.hash.hi, m.hash.lo]).toEqual([0, 0]);
    expect(m.size()).toBe(0);
    expect(m.fullTransferBytes()).toBe(0);
  });

  it('deleting an absent key changes nothing', () => {
    const m = new MapState(1);
    m.apply(set('a', 'x'), 1);
    const before = m.hash.copy();
    m.apply(del('nope'), 2);
    expect(m.hash.equals(before)).toBe(true);
    expect(m.size()).toBe(1);
  });

  it('the hash depends on value, version, key and seed', () => {
    const hashOf = (seed: number, k: string, v: string, ver: number) => {
      const m = new MapState(seed);
      m.apply(set(k, v), ver);
      return m.hash.copy();
    };
    const h = hashOf(1, 'k', 'v', 1);
    expect(h.equals(hashOf(1, 'k', 'w', 1))).toBe(false);
    expect(h.equals(hashOf(1, 'k', 'v', 2))).toBe(false);
    expect(h.equals(hashOf(1, 'j', 'v', 1))).toBe(false);
    expect(h.equals(hashOf(2, 'k', 'v', 1))).toBe(false);
    expect(hashOf(1, 'k', 'v', 2 ** 32 + 1).equals(hashOf(1, 'k', 'v', 1))).toBe(false); // high half of the version counts
    // key/value boundary is part of the hash: ("ab","c") differs from ("a","bc")
    expect(hashOf(1, 'ab', 'c', 1).equals(hashOf(1, 'a', 'bc', 1))).toBe(false);
  });

  it('apply copies key and value (decoded deltas are views into a datagram)', () => {
    const m = new MapState(3);
    const key = b('key');
    const value = b('val');
    m.apply({ op: DeltaOp.Set, key, value }, 1);
    const h = m.hash.copy();
    key[0] = 0;
    value[0] = 0;
    expect(Array.from(m.get(b('key'))!.value)).toEqual(Array.from(b('val')));
    expect(m.hash.equals(h)).toBe(true);
  });
});

// check() applies the CAS and kind preconditions, without side effects.
describe('MapState check', () => {
  it('CAS on an absent key expects version 0', () => {
    const m = new MapState(5);
    expect(m.check(cas('k', 0, 'v'))).toBe(0);
    expect(m.check(cas('k', 1, 'v'))).toBe(RejectReason.CasMismatch);
  });

  it('CAS on a present key expects exactly its last-write version', () => {
    const m = new MapState(5);
    m.apply(set('k', 'v1'), 5);
    expect(m.check(cas('k', 5, 'v2'))).toBe(0);
    expect(m.check(cas('k', 0, 'v2'))).toBe(RejectReason.CasMismatch);
    expect(m.check(cas('k', 4, 'v2'))).toBe(RejectReason.CasMismatch);
    expect(m.check(cas('k', 6, 'v2'))).toBe(RejectReason.CasMismatch);
    m.apply(cas('k', 5, 'v2'), 7);
    expect(m.get(b('k'))!.version).toBe(7);
    expect(m.check(cas('k', 7, 'v3'))).toBe(0);
    expect(m.check(cas('k', 5, 'v3'))).toBe(RejectReason.CasMismatch);
    m.apply(del('k'), 8);
    expect(m.check(cas('k', 0, 'v4'))).toBe(0);
    expect(m.check(cas('k', 7, 'v4'))).toBe(RejectReason.CasMismatch);
  });

  it('Set and Del always pass; check() does not change the state', () => {
    const m = new MapState(5);
    m.apply(set('k', 'v'), 1);
    const h = m.hash.copy();
    expect(m.check(set('k', 'w'))).toBe(0);
    expect(m.check(del('k'))).toBe(0);
    expect(m.check(del('absent'))).toBe(0);
    expect(m.check(cas('k', 9, 'x'))).toBe(RejectReason.CasMismatch);
    expect(m.hash.equals(h)).toBe(true);
    expect(m.size()).toBe(1);
  });

  it('append on a map is rejected WrongKind, and applying one throws', () => {
    const m = new MapState(5);
    const app: Delta = { op: DeltaOp.Append, offset: 0, data: b('x') };
    expect(m.check(app)).toBe(RejectReason.WrongKind);
    expect(() => m.apply(app, 1)).toThrow();
    expect(m.size()).toBe(0);
  });
});

// ---------------------------------------------------------------- StreamState

const append = (offset: number, data: Uint8Array): Delta => ({ op: DeltaOp.Append, offset, data });

function streamOf(seed: number, chunks: Uint8Array[]): StreamState {
  const s = new StreamState(seed);
  for (const c of chunks) s.apply(append(s.size(), c), 1);
  return s;
}

// The stream hash depends only on the bytes, not on how they were chunked; offsets are enforced.
describe('StreamState', () => {
  it('property: the hash is independent of how the bytes were chunked into appends', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.uint8Array({ maxLength: 300 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (seed, data, cutsA, cutsB) => {
          const a = streamOf(seed, split(data, cutsA));
          const c = streamOf(seed, split(data, cutsB));
          const whole = streamOf(seed, [data]);
          expect(a.hash.equals(c.hash)).toBe(true);
          expect(a.hash.equals(whole.hash)).toBe(true);
          expect(a.size()).toBe(data.length);
          expect(a.fullTransferBytes()).toBe(data.length);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('different content gives a different hash; an empty append changes nothing', () => {
    const s = streamOf(1, [b('hello')]);
    expect(s.hash.equals(streamOf(1, [b('hellp')]).hash)).toBe(false);
    expect(s.hash.equals(streamOf(1, [b('hello!')]).hash)).toBe(false);
    expect(s.hash.equals(streamOf(2, [b('hello')]).hash)).toBe(false);
    const h = s.hash.copy();
    s.apply(append(5, new Uint8Array(0)), 2);
    expect(s.hash.equals(h)).toBe(true);
    expect(s.size()).toBe(5);
    expect(new StreamState(1).hash.equals(streamOf(1, [b('x')]).hash)).toBe(false);
  });

  it('check: an append must be at the current length; map deltas are WrongKind', () => {
    const s = streamOf(1, [b('abc')]);
    expect(s.check(append(3, b('d')))).toBe(0);
    expect(s.check(append(0, b('d')))).toBe(RejectReason.AppendOffset);
    expect(s.check(append(2, b('d')))).toBe(RejectReason.AppendOffset);
    expect(s.check(append(4, b('d')))).toBe(RejectReason.AppendOffset);
    expect(new StreamState(1).check(append(0, b('d')))).toBe(0);
    expect(new StreamState(1).check(append(1, b('d')))).toBe(RejectReason.AppendOffset);
    expect(s.check(set('k', 'v'))).toBe(RejectReason.WrongKind);
    expect(s.check(del('k'))).toBe(RejectReason.WrongKind);
    expect(s.check(cas('k', 0, 'v'))).toBe(RejectReason.WrongKind);
    expect(() => s.apply(set('k', 'v'), 2)).toThrow();
    expect(s.size()).toBe(3);
  });

  it('property: read(offset, len) across chunk boundaries equals slicing the concatenation', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 12 }), fc.nat(80), fc.nat(80), (chunks, offset, len) => {
        const s = streamOf(3, chunks);
        const all = concat(chunks);
        expect(Array.from(s.read(offset, len))).toEqual(Array.from(all.slice(offset, Math.min(all.length, offset + len))));
      }),
      { numRuns: 1000 },
    );
  });

  it('read spanning three chunks and reads past the end', () => {
    const s = streamOf(3, [b('abc'), b('de'), b('fghi')]);
    expect(new TextDecoder().decode(s.read(2, 5))).toBe('cdefg');
    expect(new TextDecoder().decode(s.read(0, 100))).toBe('abcdefghi');
    expect(s.read(9, 1).length).toBe(0);
    expect(s.read(50, 10).length).toBe(0);
    expect(s.read(4, 0).length).toBe(0);
  });

  it('apply copies the data (decoded deltas are views into a datagram)', () => {
    const s = new StreamState(3);
    const data = b('xyz');
    s.apply(append(0, data), 1);
    data[0] = 0;
    expect(new TextDecoder().decode(s.read(0, 3))).toBe('xyz');
  });

  it('property: hashAfter(chunks) equals the hash after actually appending them, and changes nothing', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 6 }),
        fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 6 }),
        (prefix, more) => {
          const s = streamOf(11, prefix);
          const before = s.hash.copy();
          const size = s.size();
          const predicted = s.hashAfter(more);
          expect(s.hash.equals(before)).toBe(true);
          expect(s.size()).toBe(size);
          for (const c of more) s.apply(append(s.size(), c), 2);
          expect(s.hash.equals(predicted)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------- PROTOCOL.md Appendix A

/**
 * The project's published hash vectors (docs/PROTOCOL.md Appendix A, "cross-checked by an
 * independent implementation written from §5"): derived seeds, entry hashes, register hashes.
 */
const APPENDIX_A = [
  {
    seed: 0x00000000,
    lanes: [0x0175ddcb, 0x1eecd02e],
    kv: { keyHash: 0xd00e61f4, hhi: 0x1c0f18dc, hlo: 0xd22b36e8 },
    color: { keyHash: 0x5dd89687, hhi: 0x23f62f5f, hlo: 0x41063d14 },
    map: '4005483c133173fc',
    emptyStream: 'fbb6d7b9bdefbece',
    abcde: 'dd38e24a13b902fe',
  },
  {
    seed: 0x00005eed,
    lanes: [0x541d44b9, 0xf747d4e1],
    kv: { keyHash: 0xc3abc3ea, hhi: 0x8fd1a436, hlo: 0x4ccb972b },
    color: { keyHash: 0x0e0ab6f1, hhi: 0x23f4e400, hlo: 0x5bcd48ce },
    map: 'b3c68836a898dff9',
    emptyStream: 'a1c5d34b9c38dfe1',
    abcde: '05a0d4597924e52d',
  },
];

// Derived seeds, entry hashes and register hashes match the protocol's published vectors.
describe('PROTOCOL.md Appendix A vectors', () => {
  for (const v of APPENDIX_A) {
    it(`seed 0x${v.seed.toString(16)}`, () => {
      expect(laneSeeds(v.seed)).toEqual(v.lanes);
      const m = new MapState(v.seed);
      const k = m.put(b('k'), b('v'), 1);
      expect({ keyHash: k.keyHash, hhi: k.hhi, hlo: k.hlo }).toEqual(v.kv);
      const c = m.put(b('color'), b('blue'), 2 ** 32 + 5);
      expect({ keyHash: c.keyHash, hhi: c.hhi, hlo: c.hlo }).toEqual(v.color);
      expect(hashHex(m.hash)).toBe(v.map);
      const s = new StreamState(v.seed);
      expect(hashHex(s.hash)).toBe(v.emptyStream);
      s.apply(append(0, b('ab')), 1);
      s.apply(append(2, b('cde')), 2);
      expect(hashHex(s.hash)).toBe(v.abcde);
    });
  }
});

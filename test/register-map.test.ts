/**
 * The map register's record-and-arena storage against a plain model: contents, the O(1)
 * multiset hash against entry hashes computed by the streaming Murmur3 (the §5 definition),
 * snapshots that keep their version while the map is written, and the quota check's upper-bound
 * fast path against an exact count.
 */
import { describe, expect, it } from 'vitest';
import { Hash64, Murmur3, laneSeeds } from '../core/register/hash.js';
import { MapState, entryWireLen } from '../core/register/map.js';
import { SortedKeys, allEntries, type KeyIndex } from '../core/register/keyspace.js';
import { QuotaCheck, type Quota } from '../core/register/quota.js';
import { DeltaOp, RejectReason, decodeDelta, encodeDelta, readDelta, type Delta, type SimpleDelta } from '../wire/delta.js';
import { Reader } from '../wire/buffer.js';
import { MAX_KEY_LEN } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';
import { Rng } from '../testing/sim/rng.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Entry hash halves as §5 defines them, through the streaming Murmur3 (independent of entryLanes). */
function refLanes(seed: number, key: Uint8Array, value: Uint8Array, version: number): [number, number] {
  return laneSeeds(seed).map((s) =>
    new Murmur3()
      .reset(s)
      .updateU32(key.length)
      .update(key)
      .update(value)
      .updateU32(version >>> 0)
      .updateU32(Math.floor(version / 2 ** 32))
      .digest(),
  ) as [number, number];
}

type Model = Map<string, { key: Uint8Array; value: Uint8Array; version: number }>;

function modelHash(seed: number, model: Model): Hash64 {
  const h = new Hash64();
  for (const e of model.values()) {
    const [hi, lo] = refLanes(seed, e.key, e.value, e.version);
    h.add(hi, lo);
  }
  return h;
}

function expectMatches(seed: number, m: MapState, model: Model): void {
  expect(m.size()).toBe(model.size);
  expect(m.hash.equals(modelHash(seed, model))).toBe(true);
  let bytes = 0;
  for (const e of model.values()) bytes += entryWireLen(e);
  expect(m.fullTransferBytes()).toBe(bytes);
  const seen = new Set<string>();
  for (const e of m.values()) {
    const want = model.get(hex(e.key));
    expect(want, `key ${hex(e.key)}`).toBeDefined();
    expect(hex(e.value)).toBe(hex(want!.value));
    expect(e.version).toBe(want!.version);
    expect([e.hhi, e.hlo]).toEqual(refLanes(seed, e.key, e.value, e.version));
    expect(e.keyHash).toBe(m.keyHashOf(e.key));
    seen.add(hex(e.key));
  }
  expect(seen.size).toBe(model.size);
}

function expectIndex(index: KeyIndex, model: Model): void {
  const got = [...allEntries(index)];
  expect(got).toHaveLength(model.size);
  for (let i = 1; i < got.length; i++) expect(got[i - 1].keyHash).toBeLessThanOrEqual(got[i].keyHash);
  for (const e of got) {
    const want = model.get(hex(e.key))!;
    expect(hex(e.value)).toBe(hex(want.value));
    expect(e.version).toBe(want.version);
  }
}

describe('MapState storage against a model', () => {
  for (const seed of [1, 7, 0xdeadbeef]) {
    it(`seed ${seed}: sets, cas, deletes and puts of varying sizes, with snapshots between`, () => {
      const rng = new Rng(seed);
      const m = new MapState(seed);
      const model: Model = new Map();
      const pins: { index: KeyIndex; model: Model }[] = [];
      // Few distinct keys so keys are overwritten (same size and new size), deleted and reinserted; a few share a bucket.
      const keys = Array.from({ length: 300 }, (_, i) => rng.bytes(1 + (i % 40)));
      for (let step = 1; step <= 6000; step++) {
        const key = keys[rng.int(0, keys.length - 1)];
        const r = rng.int(0, 99);
        // Versions above 2^32 too: the record keeps both halves.
        const version = step % 7 === 0 ? 2 ** 32 + step : step;
        if (r < 60) {
          const value = rng.bytes(rng.int(0, r < 5 ? 300 : 40));
          m.apply({ op: DeltaOp.Set, key, value }, version);
          model.set(hex(key), { key, value, version });
        } else if (r < 70) {
          const cur = model.get(hex(key));
          const expect0 = r < 65 ? (cur?.version ?? 0) : 12345;
          const d: Delta = { op: DeltaOp.Cas, key, expect: expect0, value: rng.bytes(8) };
          const verdict = m.check(d);
          expect(verdict).toBe(expect0 === (cur?.version ?? 0) ? 0 : RejectReason.CasMismatch);
          if (verdict === 0) {
            m.apply(d, version);
            model.set(hex(key), { key, value: (d as { value: Uint8Array }).value, version });
          }
        } else if (r < 90) {
          m.apply({ op: DeltaOp.Del, key }, version);
          model.delete(hex(key));
        } else if (r < 97) {
          const value = rng.bytes(rng.int(0, 20));
          const e = m.put(key.slice(), value, version);
          expect([e.hhi, e.hlo]).toEqual(refLanes(seed, key, value, version));
          model.set(hex(key), { key, value, version });
        } else {
          pins.push({ index: m.snapshot(step), model: new Map(model) });
        }
        const got = m.get(key);
        const want = model.get(hex(key));
        expect(got === undefined).toBe(want === undefined);
        if (got && want) expect([hex(got.value), got.version]).toEqual([hex(want.value), want.version]);
        if (step % 500 === 0) expectMatches(seed, m, model);
      }
      expectMatches(seed, m, model);
      expect(pins.length).toBeGreaterThan(50);
      // Every pin still shows the state at its version, though the map was written after it.
      for (const p of pins) expectIndex(p.index, p.model);
    });
  }

  it('entries read from get() and values() are copies: later writes do not change them', () => {
    const m = new MapState(3);
    const k = Uint8Array.of(1, 2, 3);
    m.apply({ op: DeltaOp.Set, key: k, value: Uint8Array.of(9, 9) }, 1);
    const got = m.get(k)!;
    const listed = [...m.values()][0];
    m.apply({ op: DeltaOp.Set, key: k, value: Uint8Array.of(7, 7) }, 2); // same size: overwritten in place
    expect([...got.value]).toEqual([9, 9]);
    expect([...listed.value]).toEqual([9, 9]);
    expect([...m.get(k)!.value]).toEqual([7, 7]);
  });

  it('a delta whose value is a view of its frame: the map keeps its own copy', () => {
    const m = new MapState(3);
    const frame = Uint8Array.of(1, 2, 3, 4, 5, 6);
    m.apply({ op: DeltaOp.Set, key: frame.subarray(0, 2), value: frame.subarray(2, 6) }, 1);
    frame.fill(0);
    expect([...m.get(Uint8Array.of(1, 2))!.value]).toEqual([3, 4, 5, 6]);
  });
});

/** The exact verdicts of §7.8 for deltas applied one after another (the model QuotaCheck must agree with). */
function exactVerdicts(
  model: Map<string, number>,
  quota: Quota,
  deltas: SimpleDelta[],
  v: number,
): { verdicts: number[]; keys: number; bytes: number } {
  const sizes = new Map(model);
  let bytes = [...sizes.values()].reduce((a, b) => a + b, 0);
  const verdicts: number[] = [];
  for (const d of deltas) {
    if (d.op === DeltaOp.Append) continue;
    const k = hex(d.key);
    const prev = sizes.get(k) ?? -1;
    if (d.op === DeltaOp.Del) {
      if (prev >= 0) bytes -= prev;
      sizes.delete(k);
      verdicts.push(0);
      continue;
    }
    const value = (d as { value: Uint8Array }).value;
    const len = entryWireLen({ key: d.key, value, version: v });
    const keys2 = sizes.size + (prev < 0 ? 1 : 0);
    const bytes2 = bytes - Math.max(prev, 0) + len;
    const over =
      value.length > quota.maxValueBytes || (keys2 > quota.maxKeys && keys2 > sizes.size) || (bytes2 > quota.maxBytes && bytes2 > bytes);
    if (over) {
      verdicts.push(RejectReason.QuotaExceeded);
      continue;
    }
    sizes.set(k, len);
    bytes = bytes2;
    verdicts.push(0);
  }
  return { verdicts, keys: sizes.size, bytes };
}

describe('QuotaCheck: the upper-bound fast path decides as the exact count does', () => {
  for (const applyEach of [false, true]) {
    it(`${applyEach ? 'sequencer (each admitted delta applied at once)' : 'follower (all checked, then applied)'}: 300 random collapses near the quota`, () => {
      const rng = new Rng(applyEach ? 11 : 12);
      for (let round = 0; round < 300; round++) {
        const m = new MapState(round);
        const model = new Map<string, number>();
        const keys = Array.from({ length: 12 }, (_, i) => Uint8Array.of(i, rng.int(0, 255)));
        for (let i = 0; i < rng.int(0, 8); i++) {
          const key = keys[rng.int(0, keys.length - 1)];
          const e = m.put(key, rng.bytes(rng.int(0, 6)), 1);
          model.set(hex(key), entryWireLen(e));
        }
        const quota: Quota = { maxKeys: rng.int(1, 12), maxBytes: rng.int(10, 120), maxValueBytes: rng.int(2, 8) };
        const v = 2;
        const deltas: SimpleDelta[] = Array.from({ length: rng.int(1, 14) }, () => {
          const key = keys[rng.int(0, keys.length - 1)];
          return rng.int(0, 3) === 0 ? { op: DeltaOp.Del, key } : { op: DeltaOp.Set, key, value: rng.bytes(rng.int(0, 9)) };
        });
        const want = exactVerdicts(model, quota, deltas, v);
        const q = new QuotaCheck(m, quota);
        const got: number[] = [];
        for (const d of deltas) {
          const verdict = q.admit(d, v);
          got.push(verdict);
          if (applyEach && verdict === 0) m.apply(d, v);
        }
        if (!applyEach) deltas.forEach((d, i) => got[i] === 0 && m.apply(d, v));
        expect(got, `round ${round}`).toEqual(want.verdicts);
        expect(m.size()).toBe(want.keys);
        expect(m.fullTransferBytes()).toBe(want.bytes);
      }
    });
  }
});

describe('readDelta: the short-set fast path reads what the checked path reads', () => {
  it('sets around the 1- and 2-byte length boundaries round-trip; every truncation and a non-minimal length throw', () => {
    for (const klen of [1, 127, 128, MAX_KEY_LEN]) {
      for (const vlen of [0, 1, 127, 128, 16_383, 16_384, 70_000]) {
        const d: Delta = { op: DeltaOp.Set, key: new Uint8Array(klen).fill(7), value: new Uint8Array(vlen).fill(9) };
        const enc = encodeDelta(d);
        const buf = new Uint8Array(enc.length + 3);
        buf.set(enc, 2);
        const r = new Reader(buf, 2);
        const got = readDelta(r, 'delta', true) as { op: DeltaOp; key: Uint8Array; value: Uint8Array };
        expect(r.pos).toBe(2 + enc.length);
        expect([got.op, got.key.length, got.value.length]).toEqual([DeltaOp.Set, klen, vlen]);
        expect(hex(got.key)).toBe(hex(d.key));
        expect(hex(got.value)).toBe(hex((d as { value: Uint8Array }).value));
        for (const cut of [1, 2, enc.length - vlen - 1, enc.length - 1]) {
          if (cut <= 0 || cut >= enc.length) continue;
          expect(() => decodeDelta(enc.subarray(0, cut)), `klen ${klen} vlen ${vlen} cut ${cut}`).toThrow(WireError);
        }
      }
    }
    // Value length 5 written in two bytes (0x85 0x00): not minimal, refused with the field named.
    expect(() => decodeDelta(Uint8Array.of(DeltaOp.Set, 1, 0x41, 0x85, 0x00, 1, 2, 3, 4, 5))).toThrow(/non-minimal/);
    expect(() => decodeDelta(Uint8Array.of(DeltaOp.Set, 0, 5))).toThrow(/empty key/);
  });
});

describe("a bucket's lower bound (interpolated start, then steps, then binary search)", () => {
  it('equals a linear scan for uniform, clustered and duplicate key hashes and bounds outside the bucket', () => {
    const rng = new Rng(11);
    const base = 0x5a3 << 20; // one bucket: the top 12 bits fixed
    const layouts: Record<string, () => number> = {
      uniform: () => base + rng.int(0, 0xfffff),
      clustered: () => base + 0x7ff00 + rng.int(0, 0xff),
      low: () => base + rng.int(0, 15),
      duplicates: () => base + rng.int(0, 3) * 0x40000,
    };
    for (const [name, draw] of Object.entries(layouts)) {
      for (const n of [0, 1, 2, 7, 40, 300]) {
        const keys = new SortedKeys();
        for (let i = 0; i < n; i++)
          keys.insert({ key: Uint8Array.of(i & 0xff, i >> 8), value: new Uint8Array(0), version: 1, keyHash: draw(), hhi: 0, hlo: 0 });
        const b = keys.read(base >>> 20);
        if (n === 0) {
          expect(b).toBeUndefined();
          continue;
        }
        const hashes = Array.from({ length: b!.n }, (_, i) => b!.keyHash(i));
        const probes = [0, base - 1, base, base + 0xfffff, base + 0x100000, 2 ** 32 - 1, 2 ** 32, ...hashes, ...hashes.map((h) => h + 1)];
        for (let t = 0; t < 200; t++) probes.push(base + rng.int(0, 0xfffff));
        for (const h of probes) {
          const want = hashes.findIndex((x) => x >= h);
          expect(b!.lowerBound(h), `${name} n=${n} h=${h}`).toBe(want < 0 ? hashes.length : want);
        }
      }
    }
  });
});

/**
 * Hostile review of the bucket changes (issue 16, applyfast): the lower bound that starts from
 * the key hash's low bits must be a lower bound for any hashes (clustered, duplicated, at the
 * bucket's edges); in-place overwrites that do not grow must keep the arena's accounting right
 * and leave pinned (shared) buckets as they were; growth and compaction lose nothing.
 */
import { describe, expect, it } from 'vitest';
import { BUCKET_SHIFT, KLEN, STRIDE, SortedKeys, VLEN, allEntries, type Bucket, type KeyIndex } from '../core/register/keyspace.js';
import { MapState, type MapEntry } from '../core/register/map.js';
import { DeltaOp } from '../wire/delta.js';
import { Rng } from '../testing/sim/rng.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function linearLowerBound(b: Bucket, h: number): number {
  let i = 0;
  while (i < b.n && b.keyHash(i) < h) i++;
  return i;
}

describe('Bucket.lowerBound from the hash bits', () => {
  // Buckets 0 and 5 (biased hashes negative), 2048 and 4095 (positive; 4095 ends at 2^32).
  for (const shape of ['uniform', 'clustered', 'duplicates', 'edges'] as const)
    for (const bucket of [0, 5, 2048, 4095])
      it(`${shape} hashes in bucket ${bucket}: every probe's bound is the linear scan's`, () => {
        const rng = new Rng(shape.length * 7919 + bucket);
        const lo = bucket * 2 ** BUCKET_SHIFT;
        const width = 2 ** BUCKET_SHIFT;
        for (const n of [0, 1, 2, 3, 7, 24, 100, 600]) {
          const keys = new SortedKeys();
          const hashes: number[] = [];
          for (let i = 0; i < n; i++) {
            let off: number;
            if (shape === 'uniform') off = rng.int(0, width - 1);
            else if (shape === 'clustered') off = (i % 3 === 0 ? 17 : width - 40) + rng.int(0, 20);
            else if (shape === 'duplicates') off = [0, 1, 1 << 19, (1 << 20) - 1, width - 1][rng.int(0, 4)];
            else off = i % 2 === 0 ? rng.int(0, 3) : width - 1 - rng.int(0, 3);
            hashes.push(lo + off);
            keys.insert({ key: Uint8Array.of(i & 255, i >> 8), value: new Uint8Array(0), version: 1, keyHash: lo + off, hhi: 0, hlo: 0 });
          }
          const b = keys.read(bucket);
          if (n === 0) {
            expect(b).toBeUndefined();
            continue;
          }
          const probes = new Set<number>([0, lo, lo + width, Math.max(0, lo - 1), 2 ** 32 - 1, 2 ** 32]);
          for (const h of hashes) for (const d of [-1, 0, 1]) probes.add(h + d);
          for (let i = 0; i < 200; i++) probes.add(lo + rng.int(0, width - 1));
          for (const p of [...probes].filter((x) => x >= 0 && x <= 2 ** 32))
            expect(b!.lowerBound(p), `n=${n} probe ${p - lo}`).toBe(linearLowerBound(b!, p));
          // Sorted and every key found at its hash.
          for (let i = 1; i < b!.n; i++) expect(b!.keyHash(i - 1)).toBeLessThanOrEqual(b!.keyHash(i));
          for (let i = 0; i < n; i++) expect(b!.find(hashes[i] | 0, Uint8Array.of(i & 255, i >> 8))).toBeGreaterThanOrEqual(0);
        }
      });
});

/** Keys of one MapState that all fall in one bucket (found by hashing candidates). */
function sameBucketKeys(m: MapState, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const want = m.keyHashOf(Uint8Array.of(0, 0, 0, 0)) >>> BUCKET_SHIFT;
  for (let i = 0; out.length < count; i++) {
    const k = Uint8Array.of(i & 255, (i >> 8) & 255, (i >> 16) & 255, i >>> 24);
    if (m.keyHashOf(k) >>> BUCKET_SHIFT === want) out.push(k);
  }
  return out;
}

function arenaAccounting(index: KeyIndex): void {
  for (const b of index.buckets) {
    if (!b) continue;
    let live = 0;
    for (let i = 0; i < b.n; i++) live += b.meta[i * STRIDE + KLEN] + b.meta[i * STRIDE + VLEN];
    expect(b.used - b.garbage).toBe(live);
    expect(b.used).toBeLessThanOrEqual(b.arena.length);
  }
}

describe('in-place overwrites, growth and compaction in one crowded bucket, with pins held', () => {
  for (const seed of [2, 11, 99]) {
    it(`seed ${seed}: shrinking and growing values against a model; every pin unchanged`, () => {
      const rng = new Rng(seed);
      const m = new MapState(seed);
      const keys = sameBucketKeys(m, 48);
      const model = new Map<string, { value: Uint8Array; version: number }>();
      const pins: { index: KeyIndex; model: Map<string, { value: Uint8Array; version: number }> }[] = [];
      for (let step = 1; step <= 5000; step++) {
        const key = keys[rng.int(0, keys.length - 1)];
        const r = rng.int(0, 99);
        if (r < 85) {
          // Mostly shrink (in place) with some growth: values from 0 to 2 KiB.
          const cur = model.get(hex(key))?.value.length ?? 0;
          const len = r < 60 ? rng.int(0, cur) : rng.int(0, r < 80 ? 64 : 2048);
          const value = rng.bytes(len);
          m.apply({ op: DeltaOp.Set, key, value }, step);
          model.set(hex(key), { value, version: step });
        } else if (r < 97) {
          m.apply({ op: DeltaOp.Del, key }, step);
          model.delete(hex(key));
        } else pins.push({ index: m.snapshot(step), model: new Map(model) });
        const got = m.get(key);
        const want = model.get(hex(key));
        expect(got && [hex(got.value), got.version]).toEqual(want && [hex(want.value), want.version]);
        if (step % 250 === 0) {
          const idx = m.snapshot(step);
          arenaAccounting(idx);
          pins.push({ index: idx, model: new Map(model) });
        }
      }
      expect(m.size()).toBe(model.size);
      for (const p of pins) {
        const got: MapEntry[] = [...allEntries(p.index)];
        expect(got.length).toBe(p.model.size);
        for (const e of got) {
          const w = p.model.get(hex(e.key))!;
          expect([hex(e.value), e.version]).toEqual([hex(w.value), w.version]);
        }
        arenaAccounting(p.index);
      }
    });
  }
});

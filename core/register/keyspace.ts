/**
 * The reconciliation key space (docs/PROTOCOL.md §8.2): map entries ordered by their
 * 32-bit seeded key hash, cut into a 16-ary tree (4 bits per level, 8 levels). A node's
 * summary is (entry count, multiset hash of its entries), so equal subtrees are skipped
 * and the bytes exchanged grow with the differences, not with the state.
 *
 * A map keeps its entries in this order all the time (SortedKeys): 4,096 buckets, the
 * depth-3 nodes, each a key-hash-sorted array with its count and hash maintained per
 * write. A pin is then a copy of the 4,096 bucket references (O(buckets), not a sort of
 * the map): buckets are copy-on-write, so a write after a snapshot clones the bucket it
 * touches and the snapshot keeps seeing the state at its version. Entries are immutable
 * (collapse replaces them), so shared buckets need no deeper copy.
 */
import { Hash64 } from './hash.js';
import type { MapEntry } from './map.js';
import { RECON_FANOUT, RECON_MAX_DEPTH, type ReconChild } from '../../wire/messages.js';

/** Depth of the tree whose nodes are the buckets; 16^3 = 4,096 buckets. */
export const BUCKET_DEPTH = 3;
const BUCKETS = RECON_FANOUT ** BUCKET_DEPTH;
const BUCKET_SHIFT = 32 - 4 * BUCKET_DEPTH;

interface Bucket {
  /** Sorted by keyHash (unsigned); equal hashes in insertion order. */
  entries: MapEntry[];
  hash: Hash64;
  /** Snapshot generation this bucket was created in; older buckets are shared and cloned before a write. */
  gen: number;
}

/** An immutable view of a map's entries in key-hash order at one version (a pin). */
export interface KeyIndex {
  version: number;
  hash: { hi: number; lo: number };
  size: number;
  buckets: readonly (Bucket | undefined)[];
}

const bucketOf = (keyHash: number): number => Math.floor(keyHash / 2 ** BUCKET_SHIFT);

/** First position in `entries` whose keyHash is ≥ h. */
function lowerBound(entries: readonly MapEntry[], h: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].keyHash < h) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The live sorted index of a MapState: O(log b + b) per write for a bucket of b entries. */
export class SortedKeys {
  private buckets: (Bucket | undefined)[] | undefined;
  private gen = 1;
  private count = 0;

  get size(): number {
    return this.count;
  }

  private writable(i: number): Bucket {
    this.buckets ??= new Array<Bucket | undefined>(BUCKETS);
    const b = this.buckets[i];
    if (b === undefined) return (this.buckets[i] = { entries: [], hash: new Hash64(), gen: this.gen });
    if (b.gen === this.gen) return b;
    // Shared with a snapshot: copy before writing (copy-on-write).
    return (this.buckets[i] = { entries: b.entries.slice(), hash: b.hash.copy(), gen: this.gen });
  }

  insert(e: MapEntry): void {
    const b = this.writable(bucketOf(e.keyHash));
    const at = lowerBound(b.entries, e.keyHash + 1);
    b.entries.splice(at, 0, e);
    b.hash.add(e.hhi, e.hlo);
    this.count++;
  }

  remove(e: MapEntry): void {
    const b = this.writable(bucketOf(e.keyHash));
    const at = b.entries.indexOf(e, lowerBound(b.entries, e.keyHash));
    if (at < 0) throw new Error('SortedKeys.remove: entry not indexed');
    b.entries.splice(at, 1);
    b.hash.sub(e.hhi, e.hlo);
    this.count--;
  }

  /** Replace `old` by `e` (same key, so the same key hash and position). */
  replace(old: MapEntry, e: MapEntry): void {
    const b = this.writable(bucketOf(e.keyHash));
    const at = b.entries.indexOf(old, lowerBound(b.entries, old.keyHash));
    if (at < 0) throw new Error('SortedKeys.replace: entry not indexed');
    b.entries[at] = e;
    b.hash.sub(old.hhi, old.hlo);
    b.hash.add(e.hhi, e.hlo);
  }

  /** A consistent view at this moment: O(4,096); later writes copy the buckets they touch. */
  snapshot(version: number, hash: { hi: number; lo: number }): KeyIndex {
    const buckets = this.buckets ? this.buckets.slice() : [];
    if (this.buckets) this.gen++;
    return { version, hash: { hi: hash.hi, lo: hash.lo }, size: this.count, buckets };
  }
}

/** An index of arbitrary entries (tests, tools); a map's own index comes from MapState.snapshot(). */
export function buildIndex(values: Iterable<MapEntry>, version: number, hash: { hi: number; lo: number }): KeyIndex {
  const keys = new SortedKeys();
  for (const e of values) keys.insert(e);
  return keys.snapshot(version, hash);
}

/** The key-hash range [start, end) covered by `prefix` at `depth`. */
export function prefixRange(depth: number, prefix: number): [number, number] {
  const width = 2 ** (32 - 4 * depth);
  const start = prefix * width;
  return [start, start + width];
}

export function prefixContains(depth: number, prefix: number, keyHash: number): boolean {
  const [s, e] = prefixRange(depth, prefix);
  return keyHash >= s && keyHash < e;
}

/**
 * Visit the entries under `prefix` at `depth` in key-hash order; stop early when `visit`
 * returns false. A node at depth ≤ 3 spans whole buckets, a deeper one part of one bucket.
 */
export function forEachUnder(index: KeyIndex, depth: number, prefix: number, visit: (e: MapEntry) => boolean | void): void {
  const [s, e] = prefixRange(depth, prefix);
  if (depth <= BUCKET_DEPTH) {
    const first = bucketOf(s);
    const last = bucketOf(e - 1);
    for (let i = first; i <= last; i++) {
      const b = index.buckets[i];
      if (b) for (const x of b.entries) if (visit(x) === false) return;
    }
    return;
  }
  const b = index.buckets[bucketOf(s)];
  if (!b) return;
  for (let i = lowerBound(b.entries, s); i < b.entries.length && b.entries[i].keyHash < e; i++) if (visit(b.entries[i]) === false) return;
}

export function entriesUnder(index: KeyIndex, depth: number, prefix: number): MapEntry[] {
  const out: MapEntry[] = [];
  forEachUnder(index, depth, prefix, (e) => void out.push(e));
  return out;
}

/** Entries under a node; O(buckets spanned) at depth ≤ 3 (bucket counts), else O(log b). */
export function countUnder(index: KeyIndex, depth: number, prefix: number): number {
  const [s, e] = prefixRange(depth, prefix);
  if (depth <= BUCKET_DEPTH) {
    let n = 0;
    for (let i = bucketOf(s); i <= bucketOf(e - 1); i++) n += index.buckets[i]?.entries.length ?? 0;
    return n;
  }
  const b = index.buckets[bucketOf(s)];
  return b ? lowerBound(b.entries, e) - lowerBound(b.entries, s) : 0;
}

/** Every entry in key-hash order. */
export function* allEntries(index: KeyIndex): IterableIterator<MapEntry> {
  for (const b of index.buckets) if (b) yield* b.entries;
}

/** Summaries of the 16 children of `prefix` at `depth`: from bucket sums above the buckets, from entries below. */
export function childrenOf(index: KeyIndex, depth: number, prefix: number): ReconChild[] {
  if (depth >= RECON_MAX_DEPTH) throw new RangeError(`depth ${depth} has no children`);
  const sums = Array.from({ length: RECON_FANOUT }, () => ({ count: 0, h: new Hash64() }));
  if (depth < BUCKET_DEPTH) {
    const per = RECON_FANOUT ** (BUCKET_DEPTH - depth - 1);
    const base = prefix * RECON_FANOUT * per;
    for (let c = 0; c < RECON_FANOUT; c++) {
      for (let i = base + c * per; i < base + (c + 1) * per; i++) {
        const b = index.buckets[i];
        if (!b) continue;
        sums[c].count += b.entries.length;
        sums[c].h.add(b.hash.hi, b.hash.lo);
      }
    }
  } else {
    const shift = 32 - 4 * (depth + 1);
    const base = prefix * RECON_FANOUT;
    forEachUnder(index, depth, prefix, (e) => {
      const child = Math.floor(e.keyHash / 2 ** shift) - base;
      sums[child].count++;
      sums[child].h.add(e.hhi, e.hlo);
    });
  }
  return sums.map((s) => ({ count: s.count, hash: { hi: s.h.hi, lo: s.h.lo } }));
}

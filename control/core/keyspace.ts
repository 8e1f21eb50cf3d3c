/**
 * The reconciliation key space (docs/PROTOCOL.md §8.2): map entries ordered by their
 * 32-bit seeded key hash, cut into a 16-ary tree (4 bits per level, 8 levels). A node's
 * summary is (entry count, multiset hash of its entries), so equal subtrees are skipped
 * and the bytes exchanged grow with the differences, not with the state.
 *
 * An index holds references to immutable MapEntry objects: collapse replaces entries,
 * never mutates them, so an index is a consistent snapshot of the state at the version
 * it was built, even while the register keeps collapsing.
 */
import { Hash64 } from './hash.js';
import type { MapEntry } from './register/map.js';
import { RECON_FANOUT, RECON_MAX_DEPTH, type ReconChild } from '../../transport/wire/messages.js';

export interface KeyIndex {
  version: number;
  hash: { hi: number; lo: number };
  /** Entries sorted by keyHash (unsigned). */
  entries: MapEntry[];
}

export function buildIndex(values: Iterable<MapEntry>, version: number, hash: { hi: number; lo: number }): KeyIndex {
  const entries = Array.from(values);
  entries.sort((a, b) => a.keyHash - b.keyHash);
  return { version, hash: { hi: hash.hi, lo: hash.lo }, entries };
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

function lowerBound(entries: MapEntry[], h: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].keyHash < h) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index positions [from, to) of the entries under `prefix`. */
export function rangeOf(index: KeyIndex, depth: number, prefix: number): [number, number] {
  const [s, e] = prefixRange(depth, prefix);
  return [lowerBound(index.entries, s), lowerBound(index.entries, e)];
}

export function entriesUnder(index: KeyIndex, depth: number, prefix: number): MapEntry[] {
  const [from, to] = rangeOf(index, depth, prefix);
  return index.entries.slice(from, to);
}

/** Summaries of the 16 children of `prefix` at `depth`. */
export function childrenOf(index: KeyIndex, depth: number, prefix: number): ReconChild[] {
  if (depth >= RECON_MAX_DEPTH) throw new RangeError(`depth ${depth} has no children`);
  const [from, to] = rangeOf(index, depth, prefix);
  const shift = 32 - 4 * (depth + 1);
  const base = prefix * RECON_FANOUT;
  const sums = Array.from({ length: RECON_FANOUT }, () => ({ count: 0, h: new Hash64() }));
  for (let i = from; i < to; i++) {
    const e = index.entries[i];
    const child = Math.floor(e.keyHash / 2 ** shift) - base;
    sums[child].count++;
    sums[child].h.add(e.hhi, e.hlo);
  }
  return sums.map((s) => ({ count: s.count, hash: { hi: s.h.hi, lo: s.h.lo } }));
}

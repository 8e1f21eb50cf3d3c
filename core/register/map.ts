/** The `map` register: key → bytes, each key with the register version that last wrote it. */
import { DeltaOp, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { varintLen } from '../../wire/buffer.js';
import { Hash64, Murmur3, fmix32, laneSeeds, murmur3 } from './hash.js';
import type { StateBlock } from './state.js';
import { SortedKeys, type KeyIndex } from './keyspace.js';

export interface MapEntry {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Register version of the collapse that last wrote this key (like etcd's mod_revision). */
  readonly version: number;
  /** Seeded Murmur3 of the key: the entry's position in the reconciliation key space. */
  readonly keyHash: number;
  readonly hhi: number;
  readonly hlo: number;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The bucket of a key hash: 30 bits keep V8's Map on small-integer keys (no boxing). */
const bucketOf = (keyHash: number): number => keyHash & 0x3fffffff;

export class MapState implements StateBlock {
  readonly kind = 'map' as const;
  readonly hash = new Hash64();
  /**
   * Entries by the seeded hash of their key; the rare keys that share a bucket sit in an
   * array. Numeric keys spare building a string per lookup, which dominated apply time.
   */
  private readonly buckets = new Map<number, MapEntry | MapEntry[]>();
  private count = 0;
  private readonly keySeed: number;
  private readonly seedHi: number;
  private readonly seedLo: number;
  private readonly lane = new Murmur3();
  private bytes = 0;
  /** The same entries in key-hash order, kept per write so a reconciliation pin costs no sort. */
  private readonly sorted = new SortedKeys();

  constructor(readonly seed: number) {
    this.keySeed = fmix32(seed ^ 0x5350_0003);
    [this.seedHi, this.seedLo] = laneSeeds(seed);
  }

  get(key: Uint8Array): MapEntry | undefined {
    return this.find(this.keyHashOf(key), key);
  }

  size(): number {
    return this.count;
  }

  /** An immutable key-hash-ordered view of the current entries (a reconciliation pin): O(4,096). */
  snapshot(version: number): KeyIndex {
    return this.sorted.snapshot(version, this.hash);
  }

  *values(): IterableIterator<MapEntry> {
    for (const b of this.buckets.values()) {
      if (Array.isArray(b)) yield* b;
      else yield b;
    }
  }

  keyHashOf(key: Uint8Array): number {
    return murmur3(this.keySeed, key);
  }

  private find(keyHash: number, key: Uint8Array): MapEntry | undefined {
    const b = this.buckets.get(bucketOf(keyHash));
    if (b === undefined) return undefined;
    if (!Array.isArray(b)) return bytesEqual(b.key, key) ? b : undefined;
    for (const e of b) if (bytesEqual(e.key, key)) return e;
    return undefined;
  }

  check(d: Delta): RejectReason | 0 {
    return d.op === DeltaOp.Txn ? (this.txnFailure(d.ops)?.reason ?? 0) : this.checkOne(d);
  }

  /**
   * The first op of a txn that fails, and why; undefined if all pass. Keys are distinct (the
   * decoder and validateDelta refuse repeats), so each cas reads the register as before the txn.
   */
  txnFailure(ops: readonly SimpleDelta[]): { op: number; reason: RejectReason } | undefined {
    for (let i = 0; i < ops.length; i++) {
      const reason = this.checkOne(ops[i]);
      if (reason !== 0) return { op: i, reason };
    }
    return undefined;
  }

  private checkOne(d: SimpleDelta): RejectReason | 0 {
    switch (d.op) {
      case DeltaOp.Set:
      case DeltaOp.Del:
        return 0;
      case DeltaOp.Cas: {
        const cur = this.get(d.key);
        return (cur ? cur.version : 0) === d.expect ? 0 : RejectReason.CasMismatch;
      }
      case DeltaOp.Append:
        return RejectReason.WrongKind;
    }
  }

  apply(d: Delta, version: number): void {
    switch (d.op) {
      case DeltaOp.Txn:
        // In order at one version: the hash is the same as the ops applied one by one.
        for (const o of d.ops) this.apply(o, version);
        return;
      case DeltaOp.Set:
      case DeltaOp.Cas: {
        const kh = this.keyHashOf(d.key);
        const old = this.find(kh, d.key);
        // Reuse the stored key bytes when the key exists: one allocation fewer per update.
        this.store(this.entryOf(old ? old.key : d.key.slice(), d.value.slice(), version, kh), old);
        return;
      }
      case DeltaOp.Del:
        this.remove(d.key);
        return;
      case DeltaOp.Append:
        throw new Error('append applied to a map register (check() rejects it)');
    }
  }

  /** Write an entry as-is (collapse, reconciliation, full transfer). Takes ownership of key and value. */
  put(key: Uint8Array, value: Uint8Array, version: number): MapEntry {
    const e = this.entryOf(key, value, version);
    this.store(e, this.find(e.keyHash, key));
    return e;
  }

  remove(key: Uint8Array): void {
    const kh = this.keyHashOf(key);
    const old = this.find(kh, key);
    if (!old) return;
    this.forget(old);
    this.sorted.remove(old);
    const bucket = bucketOf(kh);
    const b = this.buckets.get(bucket)!;
    if (!Array.isArray(b)) this.buckets.delete(bucket);
    else {
      const rest = b.filter((e) => e !== old);
      this.buckets.set(bucket, rest.length === 1 ? rest[0] : rest);
    }
    this.count--;
  }

  private store(e: MapEntry, old: MapEntry | undefined): void {
    const bucket = bucketOf(e.keyHash);
    if (old) {
      this.forget(old);
      const b = this.buckets.get(bucket)!;
      if (Array.isArray(b)) b[b.indexOf(old)] = e;
      else this.buckets.set(bucket, e);
      this.sorted.replace(old, e);
    } else {
      const b = this.buckets.get(bucket);
      if (b === undefined) this.buckets.set(bucket, e);
      else if (Array.isArray(b)) b.push(e);
      else this.buckets.set(bucket, [b, e]);
      this.count++;
      this.sorted.insert(e);
    }
    this.hash.add(e.hhi, e.hlo);
    this.bytes += entryWireLen(e);
  }

  /** The entry with its hashes computed, without storing it (reconciliation stages with this). */
  entryOf(key: Uint8Array, value: Uint8Array, version: number, keyHash = this.keyHashOf(key)): MapEntry {
    const hhi = this.entryLane(this.seedHi, key, value, version);
    const hlo = this.entryLane(this.seedLo, key, value, version);
    return { key, value, version, keyHash, hhi, hlo };
  }

  private entryLane(seed: number, key: Uint8Array, value: Uint8Array, version: number): number {
    return this.lane
      .reset(seed)
      .updateU32(key.length)
      .update(key)
      .update(value)
      .updateU32(version >>> 0)
      .updateU32(Math.floor(version / 2 ** 32))
      .digest();
  }

  private forget(e: MapEntry): void {
    this.hash.sub(e.hhi, e.hlo);
    this.bytes -= entryWireLen(e);
  }

  fullTransferBytes(): number {
    return this.bytes;
  }
}

/** Bytes an entry takes in reconciliation and snapshot messages: key, version, value. */
export function entryWireLen(e: { key: Uint8Array; value: Uint8Array; version: number }): number {
  return varintLen(e.key.length) + e.key.length + varintLen(e.version) + varintLen(e.value.length) + e.value.length;
}

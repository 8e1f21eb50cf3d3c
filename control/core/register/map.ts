/** The `map` register: key → bytes, each key with the register version that last wrote it. */
import { DeltaOp, RejectReason, type Delta } from '../../../transport/wire/delta.js';
import { varintLen } from '../../../transport/wire/buffer.js';
import { Hash64, Murmur3, fmix32, laneSeeds, murmur3 } from '../hash.js';
import type { StateBlock } from './state.js';

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

/** Map keys are bytes; a latin1 string is a 1:1, cheap Map key for them. */
export function keyString(key: Uint8Array): string {
  // Keys are at most MAX_KEY_LEN (256) bytes, well within apply()'s argument limit.
  return String.fromCharCode.apply(null, key as unknown as number[]);
}

export class MapState implements StateBlock {
  readonly kind = 'map' as const;
  readonly hash = new Hash64();
  private readonly entries = new Map<string, MapEntry>();
  private readonly keySeed: number;
  private readonly seedHi: number;
  private readonly seedLo: number;
  private readonly lane = new Murmur3();
  private bytes = 0;

  constructor(readonly seed: number) {
    this.keySeed = fmix32(seed ^ 0x5350_0003);
    [this.seedHi, this.seedLo] = laneSeeds(seed);
  }

  get(key: Uint8Array): MapEntry | undefined {
    return this.entries.get(keyString(key));
  }

  getByString(k: string): MapEntry | undefined {
    return this.entries.get(k);
  }

  size(): number {
    return this.entries.size;
  }

  values(): IterableIterator<MapEntry> {
    return this.entries.values();
  }

  keyHashOf(key: Uint8Array): number {
    return murmur3(this.keySeed, key);
  }

  check(d: Delta): RejectReason | 0 {
    switch (d.op) {
      case DeltaOp.Set:
      case DeltaOp.Del:
        return 0;
      case DeltaOp.Cas: {
        const cur = this.entries.get(keyString(d.key));
        return (cur ? cur.version : 0) === d.expect ? 0 : RejectReason.CasMismatch;
      }
      case DeltaOp.Append:
        return RejectReason.WrongKind;
    }
  }

  apply(d: Delta, version: number): void {
    switch (d.op) {
      case DeltaOp.Set:
      case DeltaOp.Cas: {
        // Reuse the stored key bytes when the key exists: one allocation fewer per update.
        const k = keyString(d.key);
        const old = this.entries.get(k);
        this.store(k, old ? old.key : d.key.slice(), d.value.slice(), version, old);
        return;
      }
      case DeltaOp.Del:
        this.remove(keyString(d.key));
        return;
      case DeltaOp.Append:
        throw new Error('append applied to a map register (check() rejects it)');
    }
  }

  /** Write an entry as-is (collapse, reconciliation, full transfer). Takes ownership of key and value. */
  put(key: Uint8Array, value: Uint8Array, version: number): MapEntry {
    const k = keyString(key);
    return this.store(k, key, value, version, this.entries.get(k));
  }

  private store(k: string, key: Uint8Array, value: Uint8Array, version: number, old: MapEntry | undefined): MapEntry {
    if (old) this.forget(old);
    const e = this.entryOf(key, value, version);
    this.entries.set(k, e);
    this.hash.add(e.hhi, e.hlo);
    this.bytes += entryWireLen(e);
    return e;
  }

  remove(k: string): void {
    const old = this.entries.get(k);
    if (!old) return;
    this.forget(old);
    this.entries.delete(k);
  }

  /** The entry with its hashes computed, without storing it (reconciliation stages with this). */
  entryOf(key: Uint8Array, value: Uint8Array, version: number): MapEntry {
    const keyHash = murmur3(this.keySeed, key);
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

  clear(): void {
    this.entries.clear();
    this.hash.hi = 0;
    this.hash.lo = 0;
    this.bytes = 0;
  }
}

/** Bytes an entry takes in reconciliation and snapshot messages: key, version, value. */
export function entryWireLen(e: { key: Uint8Array; value: Uint8Array; version: number }): number {
  return varintLen(e.key.length) + e.key.length + varintLen(e.version) + varintLen(e.value.length) + e.value.length;
}

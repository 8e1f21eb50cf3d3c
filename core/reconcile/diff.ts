/**
 * Catch-up by log diff (docs/PROTOCOL.md §8.2.1): the keys a follower's gap (since, pin]
 * touched, each once, with its entry at the pin (or as deleted), instead of every record of
 * the gap. Built by the responder from its delta log and a pin, a slice of records per call
 * (a follower's request must not stall the sequencer), then cut into parts that each fill one
 * payload.
 */
import { diffEntryLen, type DiffEntry, type ReconReqMsg } from '../../wire/messages.js';
import { BUCKET_SHIFT, type KeyIndex } from '../register/keyspace.js';
import type { MapEntry } from '../register/map.js';

/** Diff parts sent per request: the requester asks for the next window once it holds this one. */
export const DIFF_WINDOW = 64;

/** The entry of `key` (int32 key hash `kh`) in an index, or undefined. Views into a pinned bucket. */
export function lookup(index: KeyIndex, kh: number, key: Uint8Array): MapEntry | undefined {
  const b = index.buckets[kh >>> BUCKET_SHIFT];
  const i = b ? b.find(kh, key) : -1;
  return i >= 0 ? b!.entry(i) : undefined;
}

export const latin1 = (key: Uint8Array): string => String.fromCharCode.apply(null, key as unknown as number[]);

/** A diff of one pin from one version, built from the log a slice at a time. */
export class DiffPlan {
  /** The parts, once every record of the gap was read. */
  parts: DiffEntry[][] | undefined;
  /** A record of the gap was gone from the log (compacted under its bound): no diff; range reconciliation instead. */
  failed = false;
  /** The latest request that arrived before the diff was complete (answered when it is). */
  parked: ReconReqMsg | undefined;
  private next: number;
  private readonly found = new Map<string, DiffEntry>();

  constructor(
    readonly since: number,
    private readonly pinVersion: number,
    private readonly index: KeyIndex,
    /** Octets of entry encoding per part: a payload less its message header and an Ack. */
    private readonly partBytes: number,
  ) {
    this.next = since + 1;
  }

  /**
   * Read records of the gap until about `budget` keys and records are done. `touched(v)` gives
   * the keys record v's committed entries write (undefined if the log no longer holds it).
   */
  advance(budget: number, touched: (v: number) => readonly Uint8Array[] | undefined, keyHash: (key: Uint8Array) => number): void {
    let work = 0;
    while (this.next <= this.pinVersion && work < budget) {
      const keys = touched(this.next);
      if (keys === undefined) return this.fail();
      for (const key of keys) {
        const k = latin1(key);
        if (this.found.has(k)) continue;
        const e = lookup(this.index, keyHash(key) | 0, key);
        // A key written after `since` holds a later version at the pin; anything else is a log that is not this pin's.
        if (e !== undefined && e.version <= this.since) return this.fail();
        this.found.set(k, e ? { key: e.key, version: e.version, value: e.value } : { key: key.slice(), version: 0, value: undefined });
      }
      work += keys.length + 1;
      this.next++;
    }
    if (this.next > this.pinVersion) this.finish();
  }

  private fail(): void {
    this.failed = true;
    this.found.clear();
  }

  /** Deletions first, then entries in ascending version (one-octet version deltas), packed into parts. */
  private finish(): void {
    const dels: DiffEntry[] = [];
    const puts: DiffEntry[] = [];
    for (const e of this.found.values()) (e.value ? puts : dels).push(e);
    this.found.clear();
    puts.sort((a, b) => a.version - b.version);
    const parts: DiffEntry[][] = [[]];
    let size = 0;
    let prev = this.since;
    for (const e of dels.concat(puts)) {
      let len = diffEntryLen(e, prev);
      if (size + len > this.partBytes && parts[parts.length - 1].length > 0) {
        parts.push([]);
        size = 0;
        prev = this.since;
        len = diffEntryLen(e, prev);
      }
      parts[parts.length - 1].push(e);
      size += len;
      if (e.value) prev = e.version;
    }
    this.parts = parts;
  }
}

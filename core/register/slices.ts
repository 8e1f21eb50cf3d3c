/**
 * A pinned register encoded a slice at a time, so a large snapshot is written while the event
 * loop keeps serving (issue 16: written at once, 10^7 keys held it ~9 s). Used by a pair's
 * register snapshot (drivers/store/snapshot-job.ts) and a QN domain's (core/qn/state.ts pin()).
 */
import { Writer } from '../../wire/buffer.js';
import { writePairSnapshotEntry } from '../../wire/journal.js';
import type { Bucket, KeyIndex } from './keyspace.js';

/** Bytes encoded per slice: a few milliseconds of the event loop. */
export const SNAPSHOT_SLICE = 1 << 18;

/** Appends about one slice of the body to `w` (whatever `w` holds already); false once the whole body is written. */
export type Slices = (w: Writer) => boolean;

/** A state pinned for a background snapshot: its encoding, a slice at a time, and what lets go of the pin. */
export interface PinnedSnapshot {
  readonly slices: Slices;
  /** Drop what is still pinned (a map's buckets not written yet): later writes then copy nothing for it. */
  release(): void;
}

/** Runs `parts` one after the other as one body. */
export function concatSlices(parts: readonly Slices[]): Slices {
  let i = 0;
  return (w) => {
    const end = w.pos + SNAPSHOT_SLICE;
    while (i < parts.length && w.pos < end) if (!parts[i](w)) i++;
    return i < parts.length;
  };
}

/** Fixed bytes, as one part of a body. */
export function bytesSlices(bytes: Uint8Array): Slices {
  return (w) => {
    w.bytes(bytes);
    return false;
  };
}

/**
 * A pinned map's buckets (`pin`, from MapState.snapshot), each entry as `varint key length, key, varint
 * version, varint value length, value`, each bucket written once and then released (later
 * writes to it copy nothing for this pin). In key-hash order, except that a bucket the table is
 * about to write is encoded then, in place from the table before the write (`early`, written
 * with the next slice), and dropped: the pin never copies a bucket. Copy-on-write held a copy
 * of every bucket written before the job reached it: at 10^7 keys under a uniform load, most of
 * the register. `early` holds what was written since the last slice (all of the register at
 * worst, if the disk stalls).
 */
export function mapSlices(pin: KeyIndex): PinnedSnapshot {
  // The pin's own array: emptied as buckets are written (the table skips those it no longer holds).
  const buckets = pin.buckets as (Bucket | undefined)[];
  const early = new Writer(1 << 16);
  let to = early;
  const entry = (a: Uint8Array, off: number, kl: number, vl: number, version: number): void =>
    writePairSnapshotEntry(to, a, off, kl, version, a, off + kl, vl);
  /** Bucket `k`'s entries into `w`: in place while it is pending (no copy), else from the copy another pin made. */
  const encode = (w: Writer, k: Bucket): void => {
    to = w;
    if (k.pending) k.visitSource(entry);
    else {
      const a = k.arena;
      for (let i = 0; i < k.n; i++) entry(a, k.offset(i), k.keyLen(i), k.valueLen(i), k.version(i));
    }
  };
  let broken: Error | undefined;
  for (let b = 0; b < buckets.length; b++) {
    const k = buckets[b];
    if (k?.pending)
      k.onTouch = () => {
        // Inside a write to the register (table.ts touch): whatever happens here fails the snapshot, never the write.
        try {
          encode(early, k);
        } catch (e) {
          broken ??= e as Error;
        }
        buckets[b] = undefined;
      };
  }
  let b = 0;
  const slices: Slices = (w) => {
    if (broken) throw broken;
    const end = w.pos + SNAPSHOT_SLICE;
    if (early.pos > 0) {
      w.bytes(early.buf.subarray(0, early.pos));
      early.reset();
    }
    while (b < buckets.length && w.pos < end) {
      const k = buckets[b];
      if (k !== undefined) {
        k.onTouch = undefined; // read here, in order
        buckets[b] = undefined; // first: should the read throw, a write must not find the bucket pending without its hook
        encode(w, k);
      }
      b++;
    }
    return b < buckets.length;
  };
  return {
    slices,
    // The table reaches a pin's buckets through this array only: emptied, it holds nothing for it.
    release: () => buckets.fill(undefined),
  };
}

/**
 * A register's snapshot written in the background. Written at once, a 10^7-key register held
 * the event loop for ~9 s (`bench snapshot`) and the hub's socket dropped thousands of datagrams
 * (issue 16). Here the state is pinned at one version: a map's copy-on-write buckets
 * (core/register/table.ts), a stream's length (it only grows). So the file holds the entries
 * `encodeRegisterSnapshot` writes at that version (in the same order when nothing is written
 * meanwhile; a bucket written meanwhile moves ahead, mapSlices). It is encoded a slice at a
 * time; each slice is written through libuv's thread pool, and the event loop runs between
 * slices. Then the file is fsynced, renamed over the snapshot, and its directory fsynced.
 *
 * The store rotated the log aside when the job began, and records committed meanwhile go to a
 * fresh log. The store drops the old log once `done` reports the snapshot durable (store.ts).
 * A cancelled or failed job only removes its own temporary file; the old log still covers
 * everything the snapshot would have.
 */
import { renameSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Writer } from '../../wire/buffer.js';
import {
  PAIR_SNAPSHOT_CHUNK,
  PairSnapshotKind,
  writePairSnapshotChunk,
  writePairSnapshotEntry,
  writePairSnapshotPrefix,
} from '../../wire/journal.js';
import { incrementalHash } from '../../crypto/primitives.js';
import type { Bucket } from '../../core/register/keyspace.js';
import { MapState } from '../../core/register/map.js';
import type { StreamState } from '../../core/register/stream.js';
import type { RegisterImage } from '../../core/pair/types.js';

/** Bytes encoded per slice: a few milliseconds of the event loop. */
export const SNAPSHOT_SLICE = 1 << 18;

/** Appends about one slice of the body to `w`; false once the whole body is written. */
type Slices = (w: Writer) => boolean;

/** Each job writes its own temporary file: a cancelled one still finishing cannot touch the next one's. */
let jobs = 0;
/** Temporary files of background snapshots (a crash leaves them; the store removes them at load). */
export const SNAPSHOT_PART = 'snapshot.part-';

export class SnapshotJob {
  /** Resolves with the snapshot's size once it is durable under its name; rejects on a write that failed. Never settles for a cancelled job. */
  readonly done: Promise<number>;
  /** The register's version the snapshot holds. */
  readonly version: number;
  private cancelled = false;
  /** Drops what the job still pins (a map's buckets not written yet): later writes then copy nothing for it. */
  private release: () => void = () => undefined;

  /**
   * Pin `image` now (O(4,096) for a map) and start writing `snap` in `dir`. `beforeSlice` is
   * awaited before each slice once the partial file exists (tests hold a job mid-way with it).
   */
  constructor(
    image: RegisterImage,
    dir: string,
    snap: string,
    private readonly beforeSlice?: () => Promise<void>,
  ) {
    const st = image.state;
    this.version = image.version;
    const head = {
      version: image.version,
      hash: { hi: st.hash.hi, lo: st.hash.lo },
      origins: new Map(image.origins),
      rejections: new Map(image.peerRejections ?? []),
    };
    const prefix = new Writer(256);
    let slices: Slices;
    if (st instanceof MapState) {
      const pin = st.snapshot(image.version);
      writePairSnapshotPrefix(prefix, head, PairSnapshotKind.Map, pin.size);
      const buckets = pin.buckets as (Bucket | undefined)[];
      slices = mapSlices(buckets);
      this.release = () => buckets.fill(undefined);
    } else {
      const size = st.size();
      const count = Math.ceil(size / PAIR_SNAPSHOT_CHUNK);
      writePairSnapshotPrefix(prefix, head, PairSnapshotKind.Stream, count);
      slices = streamSlices(st, size);
    }
    const tmp = join(dir, `${SNAPSHOT_PART}${process.pid}-${++jobs}`);
    this.done = new Promise<number>((resolve, reject) => {
      this.write(tmp, prefix, slices, dir, snap).then(
        (bytes) => {
          if (bytes >= 0) resolve(bytes);
        },
        (e: unknown) => {
          this.release();
          void unlink(tmp)
            .catch(() => undefined) // not there: it was renamed, or never made
            .then(() => {
              if (!this.cancelled) reject(e as Error);
            });
        },
      );
    });
  }

  /** Stop at the next slice and remove the temporary file; `done` never settles. */
  cancel(): void {
    this.cancelled = true;
    this.release();
  }

  /** The whole file, then its name: the size written, or -1 when cancelled. */
  private async write(tmp: string, w: Writer, slices: Slices, dir: string, snap: string): Promise<number> {
    const fh = await open(tmp, 'w', 0o600);
    const sum = incrementalHash('SHA256');
    let bytes = 0;
    try {
      for (;;) {
        if (this.beforeSlice) await this.beforeSlice();
        if (this.cancelled) break;
        const more = slices(w);
        const part = w.buf.subarray(0, w.pos);
        sum.update(part);
        for (let at = 0; at < part.length;) at += (await fh.write(part, at)).bytesWritten;
        bytes += part.length;
        w.reset();
        if (!more) break;
      }
      if (!this.cancelled) {
        const digest = sum.digest();
        for (let at = 0; at < digest.length;) at += (await fh.write(digest, at)).bytesWritten;
        bytes += digest.length;
        await fh.sync();
      }
    } finally {
      await fh.close();
    }
    if (this.cancelled) {
      await unlink(tmp).catch(() => undefined);
      return -1;
    }
    // At once, in the same turn as the check above: a synchronous snapshot the store writes after
    // cancelling this job must not be replaced by this older one.
    renameSync(tmp, snap);
    const d = await open(dir, 'r');
    try {
      await d.sync(); // the rename durable before the store drops the log it replaces
    } finally {
      await d.close();
    }
    return this.cancelled ? -1 : bytes;
  }
}

/**
 * A pinned map's buckets, each written once and then released (later writes to it copy nothing
 * for this pin). In key-hash order, except that a bucket the table is about to write is encoded
 * then, in place from the table before the write (`early`, written with the next slice), and
 * dropped: the job never copies a bucket. Copy-on-write held a copy of every bucket written
 * before the job reached it: at 10^7 keys under a uniform load, most of the register. `early`
 * holds what was written since the last slice (all of the register at worst, if the disk stalls).
 */
function mapSlices(buckets: (Bucket | undefined)[]): Slices {
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
        // Inside a write to the register (table.ts touch): whatever happens here fails the job, never the write.
        try {
          encode(early, k);
        } catch (e) {
          broken ??= e as Error;
        }
        buckets[b] = undefined;
      };
  }
  let b = 0;
  return (w) => {
    if (broken) throw broken;
    if (early.pos > 0) {
      w.bytes(early.buf.subarray(0, early.pos));
      early.reset();
    }
    while (b < buckets.length && w.pos < SNAPSHOT_SLICE) {
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
}

/** A stream's first `size` bytes (appends after the pin land beyond them) in the snapshot's chunks. */
function streamSlices(st: StreamState, size: number): Slices {
  let at = 0;
  return (w) => {
    while (at < size && w.pos < SNAPSHOT_SLICE) {
      writePairSnapshotChunk(w, st.read(at, Math.min(PAIR_SNAPSHOT_CHUNK, size - at)));
      at += PAIR_SNAPSHOT_CHUNK;
    }
    return at < size;
  };
}

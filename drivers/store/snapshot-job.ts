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
import { PAIR_SNAPSHOT_CHUNK, PairSnapshotKind, writePairSnapshotChunk, writePairSnapshotPrefix } from '../../wire/journal.js';
import { incrementalHash } from '../../crypto/primitives.js';
import { MapState } from '../../core/register/map.js';
import { SNAPSHOT_SLICE, mapSlices, type PinnedSnapshot, type Slices } from '../../core/register/slices.js';
import type { StreamState } from '../../core/register/stream.js';
import type { RegisterImage } from '../../core/pair/types.js';

/** Each job writes its own temporary file: a cancelled one still finishing cannot touch the next one's. */
let jobs = 0;
/** Temporary files of background snapshots (a crash leaves them; the store removes them at load). */
export const SNAPSHOT_PART = 'snapshot.part-';

/**
 * A snapshot file written in the background: `head`, the pinned body a slice at a time, then
 * the SHA-256 of everything before it (the layout of a pair register's and of a domain's
 * snapshot file alike), fsynced and renamed over `snap`.
 */
export class BackgroundSnapshot {
  /** Resolves with the snapshot's size once it is durable under its name; rejects on a write that failed. Never settles for a cancelled job. */
  readonly done: Promise<number>;
  /** Resolves once the job touches the directory no more, however it ended (cancelled included). */
  readonly ended: Promise<void>;
  private cancelled = false;

  /** Start writing at once; `beforeSlice` is awaited before each slice once the partial file exists (tests hold a job mid-way with it). */
  constructor(
    head: Writer,
    private readonly pinned: PinnedSnapshot,
    dir: string,
    snap: string,
    private readonly beforeSlice?: () => Promise<void>,
  ) {
    const tmp = join(dir, `${SNAPSHOT_PART}${process.pid}-${++jobs}`);
    let ended: () => void = () => undefined;
    this.ended = new Promise<void>((r) => (ended = r));
    this.done = new Promise<number>((resolve, reject) => {
      this.write(tmp, head, pinned.slices, dir, snap).then(
        (bytes) => {
          ended();
          if (bytes >= 0) resolve(bytes);
        },
        (e: unknown) => {
          pinned.release();
          void unlink(tmp)
            .catch(() => undefined) // not there: it was renamed, or never made
            .then(() => {
              ended();
              if (!this.cancelled) reject(e as Error);
            });
        },
      );
    });
  }

  /** Stop at the next slice and remove the temporary file; `done` never settles. */
  cancel(): void {
    this.cancelled = true;
    this.pinned.release();
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
 * A pair register pinned at one version for its background snapshot: the file's head and its
 * body's slices. The store pins a register when the batch that made the snapshot due is written
 * (the replica then holds that batch exactly) and starts the job once the batch is durable.
 */
export interface PinnedRegister {
  readonly version: number;
  readonly head: Writer;
  readonly pinned: PinnedSnapshot;
}

/** Pin `image` now: O(4,096) for a map (copy-on-write buckets), its length for a stream. Release `pinned` if never written. */
export function pinRegister(image: RegisterImage): PinnedRegister {
  const st = image.state;
  const head = {
    version: image.version,
    hash: { hi: st.hash.hi, lo: st.hash.lo },
    origins: new Map(image.origins),
    rejections: new Map(image.peerRejections ?? []),
  };
  const prefix = new Writer(256);
  if (st instanceof MapState) {
    const pin = st.snapshot(image.version);
    writePairSnapshotPrefix(prefix, head, PairSnapshotKind.Map, pin.size);
    return { version: image.version, head: prefix, pinned: mapSlices(pin) };
  }
  const size = st.size();
  const count = Math.ceil(size / PAIR_SNAPSHOT_CHUNK);
  writePairSnapshotPrefix(prefix, head, PairSnapshotKind.Stream, count);
  return { version: image.version, head: prefix, pinned: { slices: streamSlices(st, size), release: () => undefined } };
}

/** A pair register's snapshot (§10.1) written in the background. */
export class SnapshotJob extends BackgroundSnapshot {
  /** The register's version the snapshot holds. */
  readonly version: number;

  /** Start writing `snap` in `dir` from `pin` (pinRegister). */
  constructor(pin: PinnedRegister, dir: string, snap: string, beforeSlice?: () => Promise<void>) {
    super(pin.head, pin.pinned, dir, snap, beforeSlice);
    this.version = pin.version;
  }
}

/** A stream's first `size` bytes (appends after the pin land beyond them) in the snapshot's chunks. */
function streamSlices(st: StreamState, size: number): Slices {
  let at = 0;
  return (w) => {
    const end = w.pos + SNAPSHOT_SLICE;
    while (at < size && w.pos < end) {
      writePairSnapshotChunk(w, st.read(at, Math.min(PAIR_SNAPSHOT_CHUNK, size - at)));
      at += PAIR_SNAPSHOT_CHUNK;
    }
    return at < size;
  };
}

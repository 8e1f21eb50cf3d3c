/**
 * Durable register history for spookd: per register, a snapshot file and an append-only
 * log of Collapse records after it (docs/ARCHITECTURE.md, "Durability"; the layouts are in
 * wire/journal.ts, this module does the I/O).
 *
 *  log       [u32 length][4-byte SHA-256 prefix of the record][record] ...
 *  snapshot  "SPKSNAP2" | body | 32-byte SHA-256 of magic+body, written to a temporary
 *            file, fsynced, renamed over the old one, directory fsynced. The body carries
 *            the sequencer's unacknowledged rejections (§8.5); "SPKSNAP1" files (none) still load.
 *            A large register's snapshot is written in the background (snapshot-job.ts): the
 *            log is renamed `log.old` when it starts, records go on in a fresh `log`, and
 *            `log.old` is removed once the snapshot is durable. A load finds `log.old` after a
 *            crash, a stop or a failure mid-snapshot: it replays its records before the log's,
 *            then writes a snapshot at once, which covers both, and removes it.
 *  lease     the highest own candidate sequence number handed out (so a restart never
 *            reuses one), once per 1,024 proposals: two checksummed slots overwritten in
 *            place in turn and fsynced with the batch (wire/journal.ts).
 *  snapshot.next, @replacing  while a batch that replaces registers lands: their new
 *            snapshots beside the old, and the record (store directory) by which a load takes
 *            the batch back or completes it (rev 1.24, `beginLanding`, `land`); spookd writes
 *            `snapshot.next` in the background while the batch's fsyncs run (rev 1.26, `syncAll`).
 *  pending   own candidates as proposed, [u32 length][4-byte SHA-256 prefix][varint seq |
 *            delta | varint stamp (rev 1.24: the order across registers)] ..., appended
 *            (and flushed like the log) before the proposer hears of the candidate;
 *            rewritten atomically with only the undecided ones at load (when that differs,
 *            once the log that decided the others is fsynced) and, past 1 MiB and twice what
 *            the undecided ones take, once the batch that grew it is durable.
 *            A restart proposes the undecided ones again.
 *
 * What a batch's end rewrites is taken when the batch is written (`TakenBatch`): spookd fsyncs
 * the batch off the event loop while the pair steps on, and what the pair applies meanwhile is
 * on disk only with the next batch (PROTOCOL.md §10.1, rev 1.23).
 *
 * A record is written (and, with fsync "always", flushed) before the collapse it holds
 * can leave the host, so after `kill -9` every version a peer or a proposer may have seen
 * is on disk. Loading stops at the first torn or corrupt record and truncates the log
 * there (a torn tail is the expected result of a crash mid-write), unless whole records
 * follow it: that is damage, a hard error like a corrupt snapshot, never silently cut.
 * Directories and files are fsynced into their parents when created.
 */
import {
  closeSync,
  existsSync,
  fsync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { EntryDelta } from '../../wire/cross.js';
import { groupNeeds, keptRecords, type LoggedRegister } from '../../core/pair/groups.js';
import {
  MAX_PAIR_RECORD,
  PAIR_SNAPSHOT_CHUNK,
  PairSnapshotKind,
  RECORD_HEADER,
  collapseRecordVersion,
  decodeLease,
  decodePairSnapshotHead,
  decodePendingRecord,
  decodeReplacing,
  encodeLeaseFile,
  encodeLeaseSlot,
  LEASE_SLOT_STRIDE,
  encodePairSnapshot,
  encodePendingRecord,
  encodeReplacing,
  frameRecord,
  readFrames,
  readPairSnapshotBody,
  damagedAt,
  type Replacing,
} from '../../wire/journal.js';
import { hash as cryptoHash } from '../../crypto/primitives.js';
import { SNAPSHOT_PART, SnapshotJob, pinRegister, type PinnedRegister } from './snapshot-job.js';
import type { LogRecord } from '../../core/pair/log.js';
import { MapState } from '../../core/register/map.js';
import { type StreamState } from '../../core/register/stream.js';
import type { Replica } from '../../core/pair/replica.js';
import type { OwnCandidate, PairStore, PairWrite, RegisterImage } from '../../core/pair/types.js';

export type FsyncPolicy = 'always' | 'everysec' | 'never';

/** A replacement's new snapshot, beside the register's `snapshot` until the batch's `commit` record is durable (rev 1.24). */
const SNAPSHOT_NEXT = 'snapshot.next';
/**
 * The replacement record (wire/journal.ts), in the store's directory while a batch that replaces
 * registers lands (rev 1.24). '@' is never in a register's directory name (encodeURIComponent escapes it).
 */
const REPLACING = '@replacing';

const sha256 = (...parts: Uint8Array[]): Uint8Array => cryptoHash('SHA256', ...parts);

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

/**
 * A batch refused before anything of it was written, its disk whole: a register replaced and then
 * ahead of its last record (a record applied after the replacement diverged). Not a disk failure;
 * the caller still fences the pair (nothing of the batch may leave).
 */
export class StoreRefused extends StoreError {
  constructor(message: string) {
    super(message);
    this.name = 'StoreRefused';
  }
}

/**
 * An atomic write that found no descriptor to open its temporary file (EMFILE, ENFILE): nothing
 * was changed, so a rewrite the store may put off (a snapshot, a pending list) is tried again later.
 */
export class NoDescriptor extends Error {
  constructor(cause: Error) {
    super(cause.message);
    this.name = 'NoDescriptor';
  }
}

const noDescriptor = (e: unknown): boolean => {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EMFILE' || code === 'ENFILE';
};

/** Where a register's files are (its directory is its name, URI-encoded). */
interface RegisterPaths {
  dir: string;
  log: string;
  logOld: string;
  snap: string;
  next: string;
  lease: string;
  pending: string;
}

interface RegisterFiles {
  dir: string;
  logFd: number;
  logBytes: number;
  /** The highest version the log (and `log.old`) may hold a record of: at least every record's. */
  logTop: number;
  /** The size of the register's snapshot file (0: none). */
  snapBytes: number;
  dirty: boolean;
  pendingFd: number;
  pendingBytes: number;
  pendingDirty: boolean;
  /** The pending list passed PENDING_COMPACT_BYTES: rewritten once the batch is durable (batchDurable). */
  pendingCompactDue: boolean;
  leaseFd: number;
  /** The slot holding the last durable lease; the next lease goes to the other one. */
  leaseSlot: number;
  /** The slot a batch not yet durable wrote (it becomes `leaseSlot` at batchDurable). */
  leaseWritten: number | undefined;
}

/**
 * What the end of a batch rewrites, taken from the replicas when the batch is written: they then
 * hold exactly what it holds. By the time its fsyncs end (off the event loop) a follower may have
 * applied more, which is not on disk yet: a snapshot of that (a part of a cross-register txn
 * whose anchor's record is in the next batch) could not be cut at a restart, and a pending list
 * rewritten from it could drop a candidate whose deciding record a crash then loses.
 */
interface TakenBatch {
  /** Per register: the snapshot's bytes (written at once) or its pin (written in the background). */
  snapshots: Map<string, { bytes: Uint8Array; version: number } | { pin: PinnedRegister }>;
  /** Per register whose pending list passed PENDING_COMPACT_BYTES: the list of undecided candidates. */
  pending: Map<string, Uint8Array>;
}

/** Rewrite the pending list (undecided candidates only) once the file passes this. */
const PENDING_COMPACT_BYTES = 1024 * 1024;

/** A register whose state is larger is snapshotted in the background (written at once, 1 MiB holds the event loop ~13 ms). */
export const BACKGROUND_SNAPSHOT_BYTES = 1024 * 1024;

export interface LoadReport {
  register: string;
  snapshotVersion: number;
  replayed: number;
  version: number;
  tornBytes: number;
  /** Own candidates pending at the last stop, proposed again (decided after the restart). */
  pendingRestored: number;
}

/** A batch's replaced registers on their way to disk (DiskStore `landing`). */
interface Landing {
  readonly images: readonly RegisterImage[];
  /** Each image pinned when the batch was written (none for the PairStore path, written at once). */
  readonly pins: readonly PinnedRegister[];
  /** Each `snapshot.next` once written and durable: what the `commit` record names. */
  staged?: { register: string; checksum: Uint8Array; bytes: number }[];
}

export class DiskStore implements PairStore {
  private readonly files = new Map<string, RegisterFiles>();
  private readonly replicas = new Map<string, Replica>();
  private timer: NodeJS.Timeout | undefined;

  private closed = false;
  private groupsChecked = false;
  /** Registers whose log passed maxLogBytes in the batch being written: snapshotted once it is durable. */
  private readonly snapshotDue = new Set<string>();
  /** What the batch written and not yet durable rewrites at its end (`write` takes it, `batchDurable` writes it). */
  private taken: TakenBatch | undefined;
  /** Background snapshots under way, per register (at most one each). */
  private readonly jobs = new Map<string, SnapshotJob>();
  /** A register whose state is larger is snapshotted in the background (tests lower it). */
  backgroundSnapshotBytes = BACKGROUND_SNAPSHOT_BYTES;
  /**
   * A background snapshot failed (ENOSPC, EIO). Nothing is lost: `log.old` and the log still hold
   * every record, and the next snapshot of that register is written at once (where a failure is
   * fatal, as any write). spookd logs it.
   */
  onSnapshotFailed: (e: StoreError) => void = () => undefined;
  /**
   * Set once a background flush failed (what it held may be lost), or a batch that replaces
   * registers failed after its replacement record (a load would take back what came after it):
   * nothing more is written.
   */
  private failed: StoreError | undefined;
  /**
   * A flush of the store's own (before a snapshot or a pending list's rewrite, or at close) failed
   * and no `onFlushFailed` reported it: `close` throws it, so a stop never reports a clean end.
   */
  private flushLost: StoreError | undefined;
  /** A replacement record was written and is not yet removed durably (`write` sets `failed` if it throws meanwhile). */
  private recordOut = false;
  /** `syncAll` calls not settled: the store may not close meanwhile (a descriptor reused mid-fsync would sync another file). */
  private syncing = 0;
  /**
   * The registers the batch written last replaces (rev 1.26): pinned as the batch left them when
   * `write` took it, their `snapshot.next` written by `syncAll` in the background (by `syncNow`
   * at once), landed by `batchDurable`. Written at once, a 10^7-key register's snapshot held the
   * event loop for seconds, and a sequencer can make us reconcile once a second (§8.2).
   */
  private landing: Landing | undefined;

  constructor(
    readonly dir: string,
    readonly fsync: FsyncPolicy,
    /** Snapshot and truncate a register's log once it grows past this and past its last snapshot. */
    readonly maxLogBytes = 64 * 1024 * 1024,
    /**
     * A write through the PairStore methods that fails (ENOSPC, EIO) leaves a committed
     * version that is not on disk: nothing may be sent or reported after it. Throws by
     * default. spookd uses `persist`, which throws StoreError, and fences the pair.
     */
    private readonly onFatal: (e: Error) => never = (e) => {
      throw e;
    },
    /**
     * The once-a-second flush of fsync "everysec" failed: writes already reported durable may be
     * lost. Called once (the timer stops; later writes throw); spookd fences the pair. Without
     * one, the error is thrown from the timer (an uncaught exception).
     */
    private readonly onFlushFailed: (e: StoreError) => void = (e) => {
      throw e;
    },
  ) {
    mkdirDurable(dir);
    if (fsync === 'everysec') {
      this.timer = setInterval(() => this.backgroundFlush(), 1000);
      this.timer.unref();
    }
  }

  private backgroundFlush(): void {
    if (this.closed || this.failed) return;
    try {
      this.flush();
    } catch (e) {
      // A failed fsync may have dropped the dirty pages: a retry that succeeds proves nothing.
      this.failed = e instanceof StoreError ? e : new StoreError(`${this.dir}: fsync: ${(e as Error).message}`);
      this.flushLost = undefined; // reported here (spookd counts it)
      clearInterval(this.timer);
      this.onFlushFailed(this.failed);
    }
  }

  /**
   * Before the first register loads: cut every log at the first record of a cross-register
   * group not wholly on disk (core/pair/groups.ts), so no register replays a part without the others.
   */
  private cutTornGroups(): void {
    this.groupsChecked = true;
    const regs = new Map<string, LoggedRegister & { files: string[]; ends: { file: number; end: number }[] }>();
    for (const entry of readdirSync(this.dir, { withFileTypes: true })) {
      let register: string;
      try {
        register = decodeURIComponent(entry.name);
      } catch {
        continue; // not a directory this store made (paths() encodes every name)
      }
      const p = this.paths(register);
      if (!entry.isDirectory()) continue;
      // log.old (a background snapshot did not finish) holds the records before the log's.
      const files = [p.logOld, p.log].filter((f) => existsSync(f));
      const read = files.map((f, i) => ({
        i,
        ...(f === p.logOld ? readRotatedLog(f) : readFramesChecked(f, readFileSync(f), MAX_PAIR_RECORD)),
      }));
      const records = read.flatMap((r) => r.records.map((x) => ({ file: r.i, end: x.offset + RECORD_HEADER + x.rec.length, rec: x.rec })));
      regs.set(register, {
        files,
        ends: records.map(({ file, end }) => ({ file, end })),
        records: records.map(({ rec }) => ({ version: collapseRecordVersion(rec), needs: groupNeeds(rec) })),
        snapshotVersion: () => (existsSync(p.snap) ? decodePairSnapshotHead(readFileSync(p.snap), sha256).head.version : 0),
      });
    }
    for (const [name, k] of keptRecords(regs)) {
      const r = regs.get(name)!;
      if (k === r.records.length) continue;
      // Cut after the k-th record: in its file, and every later file emptied.
      const cutFile = k === 0 ? 0 : r.ends[k - 1].file;
      r.files.forEach((f, i) => {
        if (i === cutFile) truncateSync(f, k === 0 ? 0 : r.ends[k - 1].end);
        else if (i > cutFile) truncateSync(f, 0);
      });
    }
  }

  /** A background snapshot job: the seam tests replace to hold one mid-way. */
  protected snapshotJob(pin: PinnedRegister, dir: string, snap: string): SnapshotJob {
    return new SnapshotJob(pin, dir, snap);
  }

  /**
   * A snapshot written at once, or a replacement record (`writeAtomic`): the seam tests replace to
   * stop the process right before or after its rename.
   */
  protected writeSnapshot(path: string, data: Uint8Array, dir: string): void {
    writeAtomic(path, data, dir);
  }

  /** A replacement's `snapshot.next` renamed over its `snapshot`: the seam tests replace to stop the process between two. */
  protected renameSnapshot(from: string, to: string): void {
    renameSync(from, to);
  }

  /** fsync(2), the seam tests replace to inject a failing disk (with `syncFdAsync`, its form off the event loop). */
  protected syncFd(fd: number): void {
    fsyncSync(fd);
  }

  protected syncFdAsync(fd: number): Promise<void> {
    return new Promise((resolve, reject) => fsync(fd, (e) => (e ? reject(e) : resolve())));
  }

  private paths(register: string): RegisterPaths {
    const d = join(this.dir, encodeURIComponent(register));
    return {
      dir: d,
      log: join(d, 'log'),
      logOld: join(d, 'log.old'),
      snap: join(d, 'snapshot'),
      next: join(d, SNAPSHOT_NEXT),
      lease: join(d, 'lease'),
      pending: join(d, 'pending'),
    };
  }

  /**
   * Load a register's snapshot and log into a fresh replica (before the pair starts), and
   * open its log for appending. Throws StoreError on a corrupt snapshot or a log that does not replay.
   */
  load(replica: Replica): LoadReport {
    if (!this.groupsChecked) {
      this.rollForward();
      this.cutTornGroups();
    }
    const p = this.paths(replica.name);
    mkdirDurable(p.dir);
    // What a background snapshot was writing when the process ended (a crash, a stop): never renamed, so
    // nothing; likewise a replacement's new snapshot whose replacement record never became durable.
    for (const name of readdirSync(p.dir))
      if (name.startsWith(SNAPSHOT_PART) || name === SNAPSHOT_NEXT) rmSync(join(p.dir, name), { force: true });
    this.replicas.set(replica.name, replica);
    let snapshotVersion = 0;
    if (existsSync(p.snap)) snapshotVersion = restoreRegisterSnapshot(replica, readFileSync(p.snap), p.snap);
    const leaseFile = existsSync(p.lease) ? decodeLease(readFileSync(p.lease), sha256) : { upTo: 0, slot: -1 };
    if (!leaseFile)
      throw new StoreError(`${p.lease}: no valid lease in it (both slots fail their checksum): own sequence numbers could be reused`);
    const lease = leaseFile.upTo;
    let replayed = 0;
    let tornBytes = 0;
    /** Replay the records of `path` above the version reached (those at or below it are in the snapshot). */
    const replay = (path: string, records: { offset: number; rec: Uint8Array }[]): void => {
      for (const { offset, rec } of records) {
        if (collapseRecordVersion(rec) <= replica.version) continue;
        try {
          replica.replayRecord(rec);
        } catch (e) {
          throw new StoreError(`${path} at byte ${offset}: ${(e as Error).message}`);
        }
        replayed++;
      }
    };
    // log.old: the log as a background snapshot that did not finish found it; its records come first
    // (none can be skipped: the log's continue from them).
    const rotated = existsSync(p.logOld);
    if (rotated) replay(p.logOld, readRotatedLog(p.logOld).records);
    if (existsSync(p.log)) {
      const buf = readFileSync(p.log);
      const { records, end } = readFramesChecked(p.log, buf, MAX_PAIR_RECORD);
      replay(p.log, records);
      tornBytes = buf.length - end;
      if (tornBytes > 0) truncateSync(p.log, end);
    }
    replica.continueSeqAfter(lease);
    // Own candidates pending at the stop: the history decides some; the rest are proposed again.
    const pendingWas = existsSync(p.pending) ? readFileSync(p.pending) : undefined;
    const pendingRestored = pendingWas
      ? replica.restorePending(
          readFramesChecked(p.pending, pendingWas, MAX_PAIR_RECORD).records.map(({ offset, rec }) => {
            // Checksummed yet not decodable (a bug, or a newer spookd's op after a downgrade): refused
            // as the log refuses such a record, never dropped: its proposer was told it is pending.
            const c = decodePendingRecord(rec);
            if (!c) throw new StoreError(`${p.pending} at byte ${offset}: a pending candidate that does not decode`);
            return c;
          }),
        )
      : 0;
    const fds: number[] = [];
    let logFd: number, pendingFd: number, leaseFd: number;
    try {
      // What was read is made durable before anything is served from it: a process killed before its
      // batch's fsyncs left it in the page cache only, and a power loss after this restart would
      // otherwise take back numbers and versions the restarted pair has sent (a clean fsync: ~50 µs).
      // The history first (log.old, the log, their names): the records that decided own candidates
      // must be on disk before those leave `pending` (as compactPending), else a power loss right
      // after the rewrite loses a candidate its proposer was told is pending.
      fds.push((logFd = openSync(p.log, 'a', 0o600)));
      this.syncFd(logFd);
      if (rotated) {
        const fd = openSync(p.logOld, 'r');
        try {
          this.syncFd(fd);
        } finally {
          closeSync(fd);
        }
      }
      fsyncDir(p.dir);
      // Rewritten with the undecided ones only (unless that is what it holds, torn tail aside: each
      // rewrite costs two fsyncs, and a hub loads a register per peer).
      const pendingNow = encodePendingFile(replica.ownCandidates());
      if (!pendingWas || Buffer.compare(pendingWas, pendingNow) !== 0) writeAtomic(p.pending, pendingNow, p.dir);
      // A new register, or a lease file in the text form before rev 1.22: written in slots once.
      if (leaseFile.slot < 0) writeAtomic(p.lease, encodeLeaseFile(lease, sha256), p.dir);
      // Both exist now, their names durable (written by writeAtomic, here or before).
      fds.push((pendingFd = openSync(p.pending, 'a', 0o600)), (leaseFd = openSync(p.lease, 'r+', 0o600)));
      this.syncFd(pendingFd);
      this.syncFd(leaseFd);
    } catch (e) {
      for (const fd of fds) closeSync(fd);
      throw new StoreError(`${p.dir}: ${(e as Error).message}`);
    }
    this.files.set(replica.name, {
      dir: p.dir,
      logFd,
      logBytes: existsSync(p.log) ? statSync(p.log).size : 0,
      logTop: replica.version,
      snapBytes: existsSync(p.snap) ? statSync(p.snap).size : 0,
      dirty: false,
      pendingFd,
      pendingBytes: statSync(p.pending).size,
      pendingDirty: false,
      pendingCompactDue: false,
      leaseFd,
      leaseSlot: Math.max(leaseFile.slot, 0),
      leaseWritten: undefined,
    });
    // One snapshot now covers log.old and the log, and log.old goes: before the pair runs, so no
    // background job meets a log.old it must not overwrite.
    if (rotated) this.replaced(replica);
    return { register: replica.name, snapshotVersion, replayed, version: replica.version, tornBytes, pendingRestored };
  }

  /**
   * Make a batch of writes (one or more steps of a pair, in order) durable: every record is
   * written, then each file the batch touched is fsynced once (fsync "always"; "everysec" and
   * "never" leave them to the timer and the kernel). A register the batch replaces is
   * snapshotted last, once the rest is fsynced; what the batch's end rewrites (a snapshot of a
   * log grown too long, a pending list past 1 MiB) is as the batch left it. Throws StoreError
   * on the first failure: some of the batch may be on disk, none of it may be relied on (the
   * caller fences the pair).
   */
  persist(writes: readonly PairWrite[]): void {
    this.syncNow(this.write(writes));
    this.batchDurable();
  }

  /** fsync the descriptors `write` returned, and write its replaced registers' snapshots, here and now. Throws StoreError. */
  syncNow(fds: readonly number[]): void {
    try {
      for (const fd of fds) this.syncFd(fd);
    } catch (e) {
      throw new StoreError(`${this.dir}: fsync: ${(e as Error).message}`);
    }
    if (this.staging) this.stageNow(this.landing!);
  }

  /** Whether the batch written last still has snapshots to write (`syncAll` writes them even with no descriptor to fsync). */
  get staging(): boolean {
    return this.landing !== undefined && this.landing.staged === undefined;
  }

  /**
   * `persist` in three steps, so that the fsyncs of many stores run at once and off the event
   * loop (spookd's group commit): write the batch and get the descriptors fsync "always" must
   * sync (none under the other policies), `syncAll` them (which also writes the snapshots of the
   * registers the batch replaced, in the background: `staging`), then `batchDurable` (which lands
   * them). Until then no other batch may be written to this store: the caller holds what the
   * batch caused (HalfPair's `writesDurable`). Throws StoreError, as `persist`.
   */
  write(writes: readonly PairWrite[]): number[] {
    if (this.closed) throw new StoreError(`${this.dir}: write after the store was closed`);
    if (this.failed) throw new StoreError(`${this.dir}: write after a failed write or flush (${this.failed.message})`);
    if (this.syncing) throw new StoreError(`${this.dir}: write while the last batch is being synced`);
    this.dropLanding(); // one a caller never made durable (it failed): never landed
    const touched = new Set<number>();
    // Registers whose state the batch replaces (reconciliation, a full transfer): snapshotted last,
    // as the batch leaves them (the image is the register, which holds every record the batch
    // applied after the replacement too: those are not written to its log, the snapshot covers them).
    let replaced: Map<string, { image: RegisterImage; top: number }> | undefined;
    for (const w of writes)
      if (w.kind === 'replaced') (replaced ??= new Map()).set(w.image.name, { image: w.image, top: w.version });
      else if (w.kind === 'append') {
        const r = replaced?.get(w.register);
        if (r) r.top = w.rec.version;
      }
    let at = '';
    try {
      if (replaced) {
        at = `${this.dir}: replacing ${[...replaced.keys()].join(', ')}`;
        this.beginReplacing(writes, replaced);
      }
      for (const w of writes) {
        if (w.kind === 'replaced') continue;
        const f = this.files.get(w.register);
        if (!f) continue;
        at = `${join(this.dir, w.register)}: ${w.kind}`;
        switch (w.kind) {
          case 'append':
            if (!replaced?.has(w.register)) this.writeRecord(f, w.register, w.rec, touched);
            break;
          case 'proposed':
            this.writePending(f, w.register, { seq: w.seq, delta: w.delta, stamp: w.stamp }, touched);
            break;
          case 'lease':
            this.writeLease(f, w.upTo, touched);
            break;
        }
      }
      if (replaced) {
        // The snapshots are written once the rest is (syncAll or syncNow) and land only after both
        // are durable (batchDurable): a part of a cross-register txn the snapshot holds must not
        // outlive its anchor's record, whether that came before the replacement or after it.
        if (this.fsync !== 'always') this.flush();
        at = `${this.dir}: replaced ${[...replaced.keys()].join(', ')}`;
        this.landing = this.beginLanding(
          [...replaced.values()].map((r) => r.image),
          true,
        );
      }
    } catch (e) {
      if (e instanceof StoreRefused) throw e;
      const err = new StoreError(`${at}: ${(e as Error).message}`);
      // A replacement record left behind is completed or taken back at the next load: no later
      // batch may be written meanwhile, or taking it back would cut that batch too.
      if (this.recordOut) this.failed = err;
      throw err;
    }
    this.dropTaken();
    try {
      this.taken = this.take();
    } catch (e) {
      const err = e instanceof StoreError ? e : new StoreError(`${this.dir}: ${(e as Error).message}`);
      // As a fault above: a replacement record left behind keeps every later batch out.
      if (this.recordOut) this.failed ??= err;
      throw err;
    }
    return [...touched];
  }

  /**
   * fsync the descriptors `write` returned, all at once on libuv's thread pool: the event loop
   * goes on meanwhile, and the disk sees the fsyncs of every store of the pass together.
   * Rejects with StoreError. The store may not close before it settles.
   */
  async syncAll(fds: readonly number[]): Promise<void> {
    this.syncing++;
    const l = this.staging ? this.landing : undefined;
    // Every fsync and snapshot settles before this does: none may outlive the count that keeps the files open.
    const results = await Promise.allSettled([...fds.map(async (fd) => this.syncFdAsync(fd)), ...(l ? [this.stageInBackground(l)] : [])]);
    this.syncing--;
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      const err = new StoreError(`${this.dir}: fsync: ${(failed.reason as Error).message}`);
      if (this.recordOut) this.failed ??= err; // a load takes the batch back, and would take a later one with it
      throw err;
    }
  }

  /**
   * The batch is durable: its lease slot holds the lease now, and what grew too long (a pending
   * list, a log) is rewritten as the batch left it (TakenBatch, taken by `write`). Throws StoreError.
   */
  batchDurable(): void {
    const l = this.landing;
    if (l) {
      this.landing = undefined;
      try {
        if (l.staged === undefined) this.stageNow(l);
        this.land(l);
      } catch (e) {
        const err =
          e instanceof StoreError
            ? e
            : new StoreError(`${this.dir}: replaced ${l.images.map((i) => i.name).join(', ')}: ${(e as Error).message}`);
        if (this.recordOut) this.failed ??= err;
        this.dropTaken();
        throw err;
      }
    }
    const t = this.taken ?? this.take();
    this.taken = undefined;
    try {
      for (const f of this.files.values())
        if (f.leaseWritten !== undefined) {
          f.leaseSlot = f.leaseWritten;
          f.leaseWritten = undefined;
        }
      for (const [register, list] of t.pending) {
        const f = this.files.get(register);
        if (!f) continue;
        try {
          this.compactPending(register, f, list);
        } catch (e) {
          // The batch is durable and the old list whole: its next append asks again (pendingCompactDue).
          if (e instanceof NoDescriptor) {
            this.snapshotFailed(new StoreError(`${join(this.dir, register)}: pending list not rewritten (tried again): ${e.message}`));
            continue;
          }
          throw new StoreError(`${join(this.dir, register)}: pending: ${(e as Error).message}`);
        }
      }
      try {
        this.writeSnapshots(t);
      } catch (e) {
        throw new StoreError(`${this.dir}: snapshot: ${(e as Error).message}`);
      }
    } finally {
      releasePins(t);
    }
  }

  /** What the end of the batch written now will rewrite: the due snapshots and pending lists, from the replicas as they are. */
  private take(): TakenBatch {
    const t: TakenBatch = { snapshots: new Map(), pending: new Map() };
    for (const [register, f] of this.files) {
      const r = this.replicas.get(register);
      if (f.pendingCompactDue && r) t.pending.set(register, encodePendingFile(r.ownCandidates()));
      f.pendingCompactDue = false;
    }
    try {
      for (const register of this.snapshotDue) {
        const r = this.replicas.get(register);
        if (!r || !this.files.has(register) || this.jobs.has(register)) continue; // one at a time: the next append asks again
        // Ahead of its log: a record applied whose hash diverged, or one of a group another record of
        // which did, is never logged, and the register reconciles; its replacement is the snapshot.
        if (r.version !== this.files.get(register)!.logTop) continue;
        // A log.old left by a failed background snapshot: this one at once, which covers it.
        if (r.state.fullTransferBytes() < this.backgroundSnapshotBytes || existsSync(this.paths(register).logOld))
          t.snapshots.set(register, { bytes: encodeRegisterSnapshot(r), version: r.version });
        else t.snapshots.set(register, { pin: pinRegister(r) });
      }
    } catch (e) {
      releasePins(t); // the pins taken so far: nobody else holds them
      throw new StoreError(`${this.dir}: snapshot: ${(e as Error).message}`);
    }
    this.snapshotDue.clear();
    return t;
  }

  /** A batch taken and never made durable (it failed, the store closes): its pins go. */
  private dropTaken(): void {
    if (this.taken) releasePins(this.taken);
    this.taken = undefined;
  }

  /** A batch's replacements that never land (it failed, the store closes): their pins go. */
  private dropLanding(): void {
    if (this.landing) for (const pin of this.landing.pins) pin.pinned.release();
    this.landing = undefined;
  }

  /** Append a pending own candidate (fsynced by the caller through `touched`, or marked dirty). */
  private writePending(f: RegisterFiles, register: string, c: OwnCandidate, touched: Set<number>): void {
    const framed = frameRecord(encodePendingRecord(c), sha256, MAX_PAIR_RECORD);
    writeAll(f.pendingFd, framed);
    f.pendingBytes += framed.length;
    // Not before half the file is decided either: undecided candidates past 1 MiB (a sequencer
    // deciding nothing) had the whole list rewritten at every batch that proposed (76 octets
    // rewritten per octet proposed at 600 x 2 KB, up to 64 MiB of them each time). Each rewrite
    // now follows as many octets appended as it writes.
    const r = this.replicas.get(register);
    if (r && f.pendingBytes > Math.max(PENDING_COMPACT_BYTES, 2 * r.pendingListBytes)) f.pendingCompactDue = true;
    if (this.fsync === 'always') touched.add(f.pendingFd);
    else f.pendingDirty = true;
  }

  /**
   * Rewrite a pending list grown past PENDING_COMPACT_BYTES with `list`, the candidates the batch
   * left undecided, once the batch is durable: the records that decided the others must be on
   * disk before their candidates leave this file (a sequencer's own ones may be nowhere else).
   * Under fsync "always" the batch's are; else the log is fsynced first.
   */
  private compactPending(register: string, f: RegisterFiles, list: Uint8Array): void {
    if (this.fsync !== 'always') this.flushRegister(register, f);
    const p = this.paths(register);
    writeAtomic(p.pending, list, p.dir);
    // The new file open before the old descriptor closes: a failure above leaves the store's fds whole.
    const fd = openSync(p.pending, 'a', 0o600);
    closeSync(f.pendingFd);
    f.pendingFd = fd;
    f.pendingBytes = statSync(p.pending).size;
    f.pendingDirty = false;
  }

  /** Append a Collapse record (fsynced by the caller through `touched`); snapshot once the log is too long. */
  private writeRecord(f: RegisterFiles, register: string, rec: LogRecord, touched: Set<number>): void {
    // One the log's reader would not take back (MAX_PAIR_RECORD) is refused, never written: the pair is fenced.
    const framed = frameRecord(rec.encoded, sha256, MAX_PAIR_RECORD);
    writeAll(f.logFd, framed);
    f.logBytes += framed.length;
    f.logTop = Math.max(f.logTop, rec.version);
    if (this.fsync === 'always') touched.add(f.logFd);
    else f.dirty = true;
    // Snapshotted once the whole batch is on disk, never before: a snapshot holding a part of a
    // cross-register txn whose anchor's record a crash then lost could not be cut (core/pair/groups.ts).
    // Not before the log outgrows the last snapshot either: each rewrite of the whole register then
    // follows as many bytes of log, so snapshots cost O(bytes written), not O(bytes² / maxLogBytes)
    // (10^7 keys: a 500 MB register rewritten every 64 MiB of log, 15% of the hub's time, issue 16).
    // A restart replays at most as much log as it reads snapshot.
    if (f.logBytes > Math.max(this.maxLogBytes, f.snapBytes)) this.snapshotDue.add(register);
  }

  /** A step's writes on the PairStore path (persistWrites), as one batch: as `persist`, its failure fatal. */
  batch(writes: readonly PairWrite[]): void {
    try {
      this.persist(writes);
    } catch (e) {
      this.onFatal(e as Error);
    }
  }

  /** Write the snapshots the batch made due, as it left them, now that all of it is durable. */
  private writeSnapshots(t: TakenBatch): void {
    if (t.snapshots.size === 0) return;
    if (this.fsync !== 'always') this.flush(); // "everysec" and "never" left the logs dirty
    for (const [register, s] of t.snapshots) {
      const f = this.files.get(register);
      if (!f) continue;
      if ('bytes' in s)
        try {
          this.installSnapshot(register, f, s.bytes, s.version);
        } catch (e) {
          // Nothing was changed (the log holds every record): the register's next append asks again.
          if (!(e instanceof NoDescriptor)) throw e;
          this.snapshotFailed(new StoreError(`${join(this.dir, register)}: snapshot not written (tried again): ${e.message}`));
        }
      else
        try {
          this.snapshotInBackground(register, f, s.pin);
          t.snapshots.delete(register); // the job owns its pin now
        } catch (e) {
          if (!(e instanceof NoDescriptor)) throw e;
          this.snapshotFailed(new StoreError(`${join(this.dir, register)}: snapshot not written (tried again): ${e.message}`));
        }
    }
  }

  /**
   * Rotate the log aside and write the snapshot of the state as it is now in the background
   * (snapshot-job.ts); records committed meanwhile go to the fresh log. `log.old` is removed
   * once the snapshot is durable: until then it and the log hold everything after the last one.
   */
  private snapshotInBackground(register: string, f: RegisterFiles, pin: PinnedRegister): void {
    const p = this.paths(register);
    // Renamed first: if anything below throws, f.logFd is still an open descriptor (of log.old) that close() may close.
    renameSync(p.log, p.logOld);
    let fresh: number | undefined;
    try {
      fresh = openSync(p.log, 'a', 0o600);
      fsyncDir(p.dir); // the rename before any record in the fresh log
    } catch (e) {
      // No descriptor for the fresh log or its directory (EMFILE): the log renamed back over the
      // empty one, nothing changed, so put off as a snapshot written at once is (it fenced the pair).
      if (fresh !== undefined) closeSync(fresh);
      renameSync(p.logOld, p.log);
      throw noDescriptor(e) ? new NoDescriptor(e as Error) : e;
    }
    closeSync(f.logFd);
    f.logFd = fresh;
    f.logBytes = 0;
    const job = this.snapshotJob(pin, p.dir, p.snap);
    this.jobs.set(register, job);
    job.done.then(
      (bytes) => {
        if (this.jobs.get(register) !== job) return; // cancelled: a snapshot written at once replaced it
        this.jobs.delete(register);
        f.snapBytes = bytes;
        try {
          unlinkSync(p.logOld);
        } catch (e) {
          this.snapshotFailed(new StoreError(`${p.logOld}: ${(e as Error).message}`));
        }
      },
      (e: Error) => {
        if (this.jobs.get(register) !== job) return;
        this.jobs.delete(register);
        this.snapshotFailed(new StoreError(`${p.snap}: background snapshot at v${job.version}: ${e.message}`));
      },
    );
  }

  /**
   * Wait, at most `ms`, for the background snapshots under way to end (durable or failed). A stop
   * does, so that the next start finds no log.old to replay and snapshot again before it serves.
   */
  async settle(ms: number): Promise<void> {
    if (this.jobs.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.jobs.values()].map((j) => j.done)),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
  }

  /** Tell of a failed background snapshot; a handler that throws must not become an unhandled rejection. */
  private snapshotFailed(e: StoreError): void {
    try {
      this.onSnapshotFailed(e);
    } catch {
      // the handler's own failure: nothing more to do (the next snapshot is written at once regardless)
    }
  }

  /** The background snapshot of `register` under way: resolves with its size once durable (never, if cancelled). */
  snapshotting(register: string): Promise<number> | undefined {
    return this.jobs.get(register)?.done;
  }

  /** Stop a background snapshot of `register` (a snapshot written at once supersedes it, or the store closes). */
  private cancelJob(register: string): void {
    this.jobs.get(register)?.cancel();
    this.jobs.delete(register);
  }

  proposed(register: string, seq: number, delta: EntryDelta, stamp?: number): void {
    if (this.closed) this.onFatal(new StoreError(`${this.dir}: proposal on register ${register} after the store was closed`));
    const f = this.files.get(register);
    if (!f) return;
    try {
      const touched = new Set<number>();
      this.writePending(f, register, { seq, delta, stamp }, touched);
      for (const fd of touched) this.syncFd(fd);
    } catch (e) {
      this.onFatal(new StoreError(`${join(this.dir, register)}: cannot persist own candidate ${seq}: ${(e as Error).message}`));
    }
  }

  append(register: string, rec: LogRecord): void {
    if (this.closed) this.onFatal(new StoreError(`${this.dir}: append to register ${register} after the store was closed`));
    const f = this.files.get(register);
    if (!f) return;
    try {
      const touched = new Set<number>();
      this.writeRecord(f, register, rec, touched);
      for (const fd of touched) this.syncFd(fd);
    } catch (e) {
      this.onFatal(new StoreError(`${join(this.dir, register)}: cannot persist v${rec.version}: ${(e as Error).message}`));
    }
  }

  /**
   * Write a snapshot of the replica's current state, then empty its log (the snapshot covers it), as
   * a batch that replaces it lands (`installReplaced`: whole, its log emptied durably, whatever
   * version it goes to).
   */
  replaced(replica: RegisterImage): void {
    this.installReplaced([replica]);
  }

  /** `snap`, the register at `version`, becomes its snapshot, atomically, and its log is emptied (the snapshot covers it). */
  private installSnapshot(register: string, f: RegisterFiles, snap: Uint8Array, version: number): void {
    const p = this.paths(register);
    this.cancelJob(register);
    this.writeSnapshot(p.snap, snap, p.dir);
    truncateSync(p.log, 0);
    this.snapshotLanded(p, f, version, snap.length);
  }

  /**
   * Before a batch that replaces registers writes anything: each image must be its register as
   * the batch's records leave it (one ahead holds a record applied and never logged, its hash
   * diverged: no snapshot may hold it), and the `undo` replacement record names the size of each
   * log the batch appends to, so that a crash before the batch lands takes all of it back.
   */
  private beginReplacing(writes: readonly PairWrite[], replaced: ReadonlyMap<string, { image: RegisterImage; top: number }>): void {
    for (const [name, { image, top }] of replaced)
      if (image.version !== top)
        throw new StoreRefused(
          `${this.dir}: register ${name} is at v${image.version}, its last record in the batch v${top}: not snapshotted (a record applied after the replacement diverged; nothing of the batch written)`,
        );
    const logs = new Map<string, number>();
    for (const w of writes)
      if (w.kind === 'append' && !replaced.has(w.register) && !logs.has(w.register)) {
        const f = this.files.get(w.register);
        if (f) logs.set(w.register, f.logBytes);
      }
    if (logs.size === 0) return; // nothing to take back
    const entries = [...logs].map(([register, logBytes]) => ({ register, logBytes }));
    this.recordOut = true;
    this.writeSnapshot(join(this.dir, REPLACING), encodeReplacing({ kind: 'undo', logs: entries }, sha256), this.dir);
  }

  /** A replacement through `replaced` (the PairStore path): its snapshot written and landed at once. */
  private installReplaced(images: readonly RegisterImage[]): void {
    const l = this.beginLanding(images, false);
    this.stageNow(l);
    this.land(l);
  }

  /**
   * The registers a batch replaced, as the batch left them: the batch lands all or nothing
   * (rev 1.24). Its records are appended under an `undo` replacement record and made durable;
   * each new snapshot is written beside the register's (`snapshot.next`, durable: `stageNow`, or
   * `stageInBackground` a slice at a time, rev 1.26); then `land`: a `commit` record naming them
   * replaces the `undo` one, they are renamed over the snapshots, the registers' logs emptied,
   * durably, and the record removed. A load that finds the record undoes the batch (`undo`) or
   * completes the renames (`commit`): `rollForward`. Two registers renamed one after the other, or
   * a register replaced to a version its old log also holds, can never be seen half done: a crash
   * between would show a part of a cross-register txn without the rest.
   */
  private beginLanding(images: readonly RegisterImage[], pin: boolean): Landing {
    const kept = images.filter((image) => this.files.has(image.name));
    for (const image of kept) {
      this.snapshotDue.delete(image.name); // this one covers it
      this.cancelJob(image.name);
    }
    return { images: kept, pins: pin ? kept.map((image) => pinRegister(image)) : [] };
  }

  /** Each replaced register's `snapshot.next`, written and fsynced here and now. */
  private stageNow(l: Landing): void {
    for (const pin of l.pins) pin.pinned.release(); // the images are as pinned: nothing stepped since `write`
    l.staged = l.images.map((image) => {
      const p = this.paths(image.name);
      const snap = encodeRegisterSnapshot(image);
      writeDurable(p.next, snap);
      fsyncDir(p.dir);
      return { register: image.name, checksum: snap.slice(snap.length - 32), bytes: snap.length }; // not a view: the snapshot's bytes go
    });
  }

  /** Each replaced register's `snapshot.next` from its pin, a slice at a time, the event loop running between (snapshot-job.ts). */
  private async stageInBackground(l: Landing): Promise<void> {
    // Every job settles before this does (the store may not close under one).
    const done = await Promise.allSettled(
      l.images.map(async (image, i) => {
        const p = this.paths(image.name);
        const bytes = await this.snapshotJob(l.pins[i], p.dir, p.next).done;
        return { register: image.name, checksum: fileTail(p.next, 32), bytes };
      }),
    );
    const failed = done.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    l.staged = done.map((r) => (r as PromiseFulfilledResult<NonNullable<Landing['staged']>[number]>).value);
  }

  /** The staged snapshots land together: the `commit` record, the renames, the logs emptied, the record removed. */
  private land(l: Landing): void {
    const snapshots = l.staged!;
    const record = join(this.dir, REPLACING);
    this.recordOut = true;
    this.writeSnapshot(record, encodeReplacing({ kind: 'commit', snapshots }, sha256), this.dir);
    l.images.forEach((image, i) => {
      const f = this.files.get(image.name)!;
      const p = this.paths(image.name);
      this.renameSnapshot(p.next, p.snap);
      // Emptied durably: a log it replaced may hold records above the new version (a sequencer
      // that lost versions), which a restart would replay onto the snapshot, and fail.
      ftruncateSync(f.logFd, 0);
      this.syncFd(f.logFd);
      // The version pinned, not the register's now (a second reconciliation may have installed meanwhile).
      this.snapshotLanded(p, f, l.pins[i]?.version ?? image.version, snapshots[i].bytes);
      fsyncDir(p.dir); // the rename and log.old's removal
    });
    unlinkSync(record);
    fsyncDir(this.dir); // gone before any later batch writes: a restart must not complete it again
    this.recordOut = false;
  }

  /** The register's snapshot at `version` was renamed into place and its log emptied (the snapshot covers it). */
  private snapshotLanded(p: RegisterPaths, f: RegisterFiles, version: number, snapBytes: number): void {
    if (existsSync(p.logOld)) unlinkSync(p.logOld); // what a cancelled or failed background snapshot left
    f.logBytes = 0;
    f.logTop = version; // a truncation not fsynced: the disk may still hold records up to it
    f.snapBytes = snapBytes;
  }

  /**
   * A batch that replaced registers stopped before its replacement record was removed (rev 1.24).
   * `undo`: its records may be in part on disk, its snapshots are not: each log it appended to is
   * cut back to its size before the batch (nothing of the batch was acknowledged: `write` lands it
   * before it returns). `commit`: every record is durable and every new snapshot written; those
   * not renamed yet are renamed now, and each of those registers' logs emptied. Each
   * `snapshot.next` the batch wrote ends with the checksum the record holds; a register whose
   * `snapshot` ends with it was renamed already. Anything else (a file from another run, a
   * directory restored or edited) refuses the load: renaming it could put an older state over a
   * newer one.
   */
  private rollForward(): void {
    const record = join(this.dir, REPLACING);
    rmSync(`${record}.tmp`, { force: true }); // a record whose write a crash cut short: never renamed, so nothing
    if (!existsSync(record)) return;
    const fail = (why: string): never => {
      throw new StoreError(
        `${record}: ${why}; refusing to load registers it may name half replaced (see OPERATIONS.md, "Replacement record")`,
      );
    };
    const r = ((): Replacing => {
      try {
        return decodeReplacing(readFileSync(record), sha256);
      } catch (e) {
        return fail((e as Error).message);
      }
    })();
    const next =
      r.kind === 'undo'
        ? []
        : r.snapshots.map(({ register, checksum }) => {
            const p = this.paths(register);
            if (existsSync(p.next) && Buffer.compare(fileTail(p.next, 32), checksum) === 0) return { p, rename: true };
            if (existsSync(p.snap) && Buffer.compare(fileTail(p.snap, 32), checksum) === 0) return { p, rename: false }; // renamed before the stop
            return fail(`register ${register}: neither ${p.next} nor ${p.snap} is the snapshot it names`);
          });
    try {
      if (r.kind === 'undo') for (const { register, logBytes } of r.logs) truncateDurable(this.paths(register).log, logBytes);
      for (const { p, rename } of next) {
        if (rename) renameSync(p.next, p.snap);
        truncateDurable(p.log, 0);
        if (existsSync(p.logOld)) unlinkSync(p.logOld);
        fsyncDir(p.dir);
      }
      unlinkSync(record);
      fsyncDir(this.dir);
    } catch (e) {
      fail(`completing the replacement it records: ${(e as Error).message}`);
    }
  }

  lease(register: string, upTo: number): void {
    const f = this.files.get(register);
    if (!f) return;
    const touched = new Set<number>();
    this.writeLease(f, upTo, touched);
    for (const fd of touched) this.syncFd(fd);
    f.leaseSlot = f.leaseWritten!;
    f.leaseWritten = undefined;
  }

  /**
   * Overwrite the slot that does not hold the last durable lease (every lease of one batch goes to
   * the same slot: until the batch is durable the other must stay whole). Under fsync "always" the
   * caller fsyncs it with the batch, off the event loop; else it is fsynced here, as before rev 1.22.
   */
  private writeLease(f: RegisterFiles, upTo: number, touched: Set<number>): void {
    const slot = f.leaseWritten ?? 1 - f.leaseSlot;
    const b = encodeLeaseSlot(upTo, sha256);
    for (let at = 0; at < b.length;) at += writeSync(f.leaseFd, b, at, b.length - at, slot * LEASE_SLOT_STRIDE + at);
    f.leaseWritten = slot;
    if (this.fsync === 'always') touched.add(f.leaseFd);
    else this.syncFd(f.leaseFd);
  }

  /** fsync what fsync "everysec" or "never" left dirty. Throws StoreError (naming the file) on failure. */
  flush(): void {
    for (const [register, f] of this.files) this.flushRegister(register, f);
  }

  /**
   * fsync what a register's log and pending list hold unsynced. A failure fails the store: the
   * kernel may have dropped those pages, records written and acknowledged under "everysec" or
   * "never", and a retried fsync would succeed with them lost (PostgreSQL's "fsyncgate"; before,
   * the flush at close retried it and the stop was reported clean). Throws StoreError.
   */
  private flushRegister(register: string, f: RegisterFiles): void {
    try {
      if (f.dirty) {
        this.syncFd(f.logFd);
        f.dirty = false;
      }
      if (f.pendingDirty) {
        this.syncFd(f.pendingFd);
        f.pendingDirty = false;
      }
    } catch (e) {
      const err = new StoreError(`${join(this.dir, register)}: fsync: ${(e as Error).message}`);
      this.failed ??= err;
      this.flushLost ??= err;
      throw err;
    }
  }

  /**
   * Flush (unless a flush already failed) and close every file, even when the flush throws:
   * then the StoreError is thrown after the files are closed, as is a flush that failed before
   * and was not reported through `onFlushFailed`.
   */
  close(opts: { abandonPending?: boolean } = {}): void {
    if (this.closed) return;
    // The caller waits for its syncs (spookd's stop and removePeer): closing under one would let it
    // fsync a reused descriptor, and a store loaded from this directory meanwhile meet this one's files.
    if (this.syncing > 0) throw new StoreError(`${this.dir}: close while a batch is being synced`);
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.dropTaken();
    this.dropLanding();
    // A background snapshot not finished: the next load replays its log.old (spookd's stop waits for one first, bounded).
    for (const register of [...this.jobs.keys()]) this.cancelJob(register);
    let failure: unknown;
    try {
      if (!this.failed) this.flush();
    } finally {
      failure = this.closeFiles(opts.abandonPending === true);
    }
    // A failed flush no one was told of (a batch's, before a snapshot): what it held may be lost.
    failure ??= this.flushLost;
    if (failure !== undefined) throw failure;
  }

  /** Closes every descriptor of every register whatever fails on the way; returns the first failure. */
  private closeFiles(abandonPending: boolean): unknown {
    let failure: unknown;
    for (const f of this.files.values()) {
      // Its peer removed (a reload): own candidates not decided are not proposed again at the next load,
      // a failed store's too (their proposers were told peer-removed). Emptied in place, through its own
      // descriptor: written anew (a temporary file renamed over it), a disk with no inode or octet
      // left, or no descriptor to spare, kept every candidate, proposed again if the peer came back.
      if (abandonPending)
        try {
          ftruncateSync(f.pendingFd, 0);
          this.syncFd(f.pendingFd);
        } catch (e) {
          failure ??= e;
        }
      for (const fd of [f.logFd, f.pendingFd, f.leaseFd])
        try {
          closeSync(fd);
        } catch (e) {
          failure ??= e;
        }
    }
    this.files.clear();
    return failure;
  }
}

/**
 * Load a register's snapshot file into a fresh replica; returns its version. Throws StoreError
 * (naming `path`) on a bad magic or checksum, a kind that differs, or a state that does not
 * hash to the recorded value.
 */
export function restoreRegisterSnapshot(replica: Replica, buf: Uint8Array, path: string): number {
  let snap: ReturnType<typeof decodePairSnapshotHead>;
  try {
    snap = decodePairSnapshotHead(buf, sha256);
  } catch (e) {
    throw new StoreError(`${path}: ${(e as Error).message}`);
  }
  const { head, body } = snap;
  if ((head.kind === PairSnapshotKind.Map) !== replica.state instanceof MapState)
    throw new StoreError(`${path}: register kind differs from the configuration`);
  try {
    replica.restore(
      head.version,
      (st) =>
        readPairSnapshotBody(
          body,
          head.kind,
          (key, version, value) => (st as MapState).put(key, value, version),
          (chunk) => (st as StreamState).appendBytes(chunk),
          (n) => (st as MapState).reserveKeys(n),
        ),
      new Map(head.origins),
      0,
      head.rejections,
    );
  } catch (e) {
    // A body that passed the checksum yet does not decode (a bug, or a file made to look whole).
    throw new StoreError(`${path}: ${(e as Error).message}`);
  }
  if (replica.hash.hi !== head.hash.hi || replica.hash.lo !== head.hash.lo)
    throw new StoreError(`${path}: state does not hash to the recorded value`);
  return head.version;
}

/**
 * The records of a `log.old`. It was rotated after a durable batch, so it ends on a whole record:
 * anything else is damage, refused (naming the file) before anything is cut or replayed.
 */
function readRotatedLog(path: string): ReturnType<typeof readFrames> {
  const buf = readFileSync(path);
  const read = readFrames(buf, MAX_PAIR_RECORD, sha256);
  if (read.end !== buf.length) throw new StoreError(`${path} at byte ${read.end}: damaged record; refusing to load past it`);
  return read;
}

/**
 * The framed records of a log, pending list or domain journal (`buf`, read from `path`) up to the
 * first bad one, which the caller cuts as a torn tail: the end of the last write before a crash.
 * A bad record whose own length leads, record by record, through whole records to the end of the
 * file is no torn tail but damage (a bad sector, a bit flip) with records after it that were
 * acknowledged: refused, naming the file and the offset, before anything is cut or replayed (the
 * file is left as it is; wire/journal.ts damagedAt).
 */
export function readFramesChecked(path: string, buf: Uint8Array, max: number): ReturnType<typeof readFrames> {
  const read = readFrames(buf, max, sha256);
  if (read.end === buf.length) return read;
  const after = damagedAt(buf, read.end, sha256);
  if (after >= 0)
    throw new StoreError(
      `${path} at byte ${read.end}: damaged record followed by whole records (at byte ${after}); refusing to load past it`,
    );
  return read;
}

/** A register's snapshot file (SPKSNAP2, wire/journal.ts) of the replica's current state. */
export function encodeRegisterSnapshot(replica: RegisterImage): Uint8Array {
  const st = replica.state;
  const head = { version: replica.version, hash: st.hash, origins: replica.origins, rejections: replica.peerRejections ?? new Map() };
  if (st instanceof MapState)
    return encodePairSnapshot(head, { kind: PairSnapshotKind.Map, count: st.size(), entries: st.values() }, sha256);
  const count = Math.ceil(st.size() / PAIR_SNAPSHOT_CHUNK);
  const chunks = (function* () {
    for (let i = 0; i < count; i++) yield st.read(i * PAIR_SNAPSHOT_CHUNK, PAIR_SNAPSHOT_CHUNK);
  })();
  return encodePairSnapshot(head, { kind: PairSnapshotKind.Stream, count, chunks }, sha256);
}

/**
 * Replace `path` with `data` without fsyncs: written aside, then renamed over it, so a reader
 * (or a crash) sees the old content or the new, never a file cut short. For small files
 * rewritten often whose loss to a power cut is harmless (writeAtomic when it is not).
 */
export function replaceFile(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.tmp`;
  try {
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export function writeAtomic(path: string, data: Uint8Array, dir: string): void {
  const tmp = `${path}.tmp`;
  try {
    writeDurable(tmp, data);
  } catch (e) {
    // A partial copy (ENOSPC, EDQUOT, EIO) would hold the space an operator is freeing: gone; the file is as it was.
    rmSync(tmp, { force: true });
    throw noDescriptor(e) ? new NoDescriptor(e as Error) : e;
  }
  renameSync(tmp, path);
  fsyncDir(dir);
}

/** Create (or overwrite) `path` with `data`, fsynced; its directory entry is the caller's to fsync. */
function writeDurable(path: string, data: Uint8Array): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    writeAll(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The last `n` octets of file `path` (fewer if it is shorter). */
function fileTail(path: string, n: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const out = new Uint8Array(Math.min(n, size));
    readSync(fd, out, 0, out.length, size - out.length);
    return out;
  } finally {
    closeSync(fd);
  }
}

/** Cut `path` (if it exists and is longer) to `size` octets, fsynced. */
function truncateDurable(path: string, size: number): void {
  if (!existsSync(path) || statSync(path).size <= size) return;
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, size);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** write(2) until all of `buf` is written: a short write (a full disk, 2 GiB at once) must not leave half a record. */
function writeAll(fd: number, buf: Uint8Array): void {
  for (let at = 0; at < buf.length;) at += writeSync(fd, buf, at);
}

/** fsync a directory: the renames and creations in it are durable. */
export function fsyncDir(dir: string): void {
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Create `dir` (0700) and any missing parent, each made durable in its parent (fsynced): a file's
 * own fsync does not make its directory's entry durable. Nothing to fsync when `dir` exists.
 */
export function mkdirDurable(dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  const top = resolve(first);
  for (let d = resolve(dir); ; d = dirname(d)) {
    fsyncDir(dirname(d));
    if (d === top || dirname(d) === d) break;
  }
}

/** Release the pins of a taken batch's background snapshots not handed to a job. */
function releasePins(t: TakenBatch): void {
  for (const s of t.snapshots.values()) if ('pin' in s) s.pin.pinned.release();
  t.snapshots.clear();
}

/** A whole pending file: one framed record per own candidate. */
function encodePendingFile(cands: readonly OwnCandidate[]): Uint8Array {
  return Buffer.concat(cands.map((c) => frameRecord(encodePendingRecord(c), sha256, MAX_PAIR_RECORD)));
}

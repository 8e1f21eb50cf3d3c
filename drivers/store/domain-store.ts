/**
 * Durable state of one QN domain member (docs/PROTOCOL.md §15.8; layouts in wire/journal.ts):
 *
 *  journal   framed records: Raft's term/vote, appended and truncated log entries,
 *            compaction points, the commit index, and the candidates proposed here that have
 *            no outcome yet. Rewritten whole (atomically) after each compaction.
 *  snapshot  "SPKQSNP2" | index, term, members, state | 32-byte SHA-256, written atomically:
 *            at once for an install, in the background (BackgroundSnapshot) for the snapshots
 *            that compact the log ('snapshot-begin'). The journal keeps every entry until the
 *            node, told the snapshot is durable, compacts it.
 *
 * The member hands its writes over in batches (a Ready, core/qn/persist.ts): persist() writes
 * a batch's records and fsyncs once (fsync "always") before it returns, and the member's
 * messages leave only after that, so Raft's rule holds: nothing is sent that depends on state
 * that is not on disk. Loading stops at the first torn or corrupt record and cuts the journal
 * there, unless whole records follow it: that is damage, refused (StoreError, the file untouched).
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { hash } from '../../crypto/primitives.js';
import {
  JournalRecordType as Rec,
  MAX_JOURNAL_RECORD,
  REWRITE_APPEND_CHUNK,
  decodeDomainSnapshot,
  decodeJournalRecord,
  encodeDomainSnapshot,
  encodeJournalRecord,
  frameRecord,
  writeDomainSnapshotHead,
  type DomainSnapshotFile,
  type JournalEntry,
  type JournalRecord,
} from '../../wire/journal.js';
import { Writer } from '../../wire/buffer.js';
import { DomainImage, type DomainStore, type DomainWrite, type StoredDomain } from '../../core/qn/persist.js';
import type { SnapshotMeta } from '../../core/qn/raft.js';
import type { PinnedSnapshot } from '../../core/register/slices.js';
import { StoreError, fsyncDir, mkdirDurable, readFramesChecked, writeAtomic, type FsyncPolicy } from './store.js';
import { BackgroundSnapshot, SNAPSHOT_PART } from './snapshot-job.js';

/** How a background snapshot ended: durable under its name, or failed (nothing compacted; the journal still covers it). */
export type SnapshotReport =
  { readonly meta: SnapshotMeta; readonly ok: true } | { readonly meta: SnapshotMeta; readonly ok: false; readonly error: StoreError };

const sha256 = (...parts: Uint8Array[]): Uint8Array => hash('SHA256', ...parts);
// One the journal's reader would not take back (MAX_JOURNAL_RECORD) is refused, never written.
const framed = (r: JournalRecord): Uint8Array => frameRecord(encodeJournalRecord(r), sha256, MAX_JOURNAL_RECORD);
/** Room for an Append record's own octets and each entry's term, index and length (8 + 8 + 8). */
const APPEND_SLACK = 64;
const ENTRY_SLACK = 24;
/**
 * The journal is rewritten from the image, between compactions too, once it passes this and
 * twice what the image would take (LIVE_ENTRY octets a record besides its command): a leader
 * that overwrote its uncommitted entries again and again (or records that undo each other)
 * grew it without end while the log held one entry (4.1 MB for 4,000 appends of 1 KB).
 */
const JOURNAL_REWRITE_FLOOR = 1024 * 1024;
const LIVE_ENTRY = 64;

/** The journal record of a write (undefined: a snapshot, which has its own file). */
function recordOf(w: DomainWrite): JournalRecord | undefined {
  switch (w.kind) {
    case 'hard':
      return { type: Rec.Hard, term: w.term, vote: w.vote };
    case 'append':
      return { type: Rec.Append, entries: w.entries };
    case 'truncate':
      return { type: Rec.Truncate, from: w.from };
    case 'compact':
      return { type: Rec.Compact, base: w.base, baseTerm: w.baseTerm, reset: w.reset };
    case 'commit':
      return { type: Rec.Commit, commit: w.index };
    case 'pending':
      return { type: Rec.Pending, seq: w.seq, cmd: w.cmd };
    case 'drop-pending':
      return { type: Rec.Drop, seq: w.seq };
    case 'next-seq':
      return { type: Rec.NextSeq, nextSeq: w.nextSeq };
    // NextSeq 0 (no seq is 0): a journal older readers take, raising nothing.
    case 'behind':
      return { type: Rec.NextSeq, nextSeq: 0 };
    case 'snapshot':
    case 'snapshot-begin':
      return undefined;
  }
}

/** The write a journal record replays as. */
function writeOf(r: JournalRecord): DomainWrite {
  switch (r.type) {
    case Rec.Hard:
      return { kind: 'hard', term: r.term, vote: r.vote };
    case Rec.Append:
      return { kind: 'append', entries: r.entries };
    case Rec.Truncate:
      return { kind: 'truncate', from: r.from };
    case Rec.Compact:
      return { kind: 'compact', base: r.base, baseTerm: r.baseTerm, reset: r.reset };
    case Rec.Pending:
      return { kind: 'pending', seq: r.seq, cmd: r.cmd };
    case Rec.Drop:
      return { kind: 'drop-pending', seq: r.seq };
    case Rec.Commit:
      return { kind: 'commit', index: r.commit };
    case Rec.NextSeq:
      return r.nextSeq === 0 ? { kind: 'behind' } : { kind: 'next-seq', nextSeq: r.nextSeq };
  }
}

export class FileDomainStore implements DomainStore {
  /** What the files hold, in memory: replayed at open, kept in step by persist(), rewritten from at compaction. */
  private readonly image = new DomainImage();
  private fd: number;
  private readonly journal: string;
  private readonly snapPath: string;
  private timer: NodeJS.Timeout | undefined;
  /** Bytes cut from a torn journal tail at load. */
  readonly tornBytes: number = 0;
  /** Set once a background flush failed (or the journal was not reopened): what it held may be lost, so nothing more is written. */
  private failed: StoreError | undefined;
  /** The background snapshot being written (one at a time: Raft asks for the next only after it is reported). */
  private job: { meta: SnapshotMeta; run: BackgroundSnapshot } | undefined;
  /** Jobs still touching the directory (a cancelled one removes its partial file after close()): settled(). */
  private readonly unsettled = new Set<BackgroundSnapshot>();
  /** The image's snapshot has no bytes (written in the background): load() reads them from the file. */
  private snapshotOnDiskOnly = false;
  /** The journal's size (what was loaded, then what was appended, or the last rewrite's). */
  private journalSize = 0;

  constructor(
    readonly dir: string,
    readonly fsync: FsyncPolicy,
    /**
     * The once-a-second fsync of fsync "everysec" failed: records already made "durable" may be
     * lost. Called once (the timer stops; later writes throw); spookd fences the domain. Without
     * one, the error is thrown from the timer (an uncaught exception).
     */
    private readonly onFlushFailed: (e: StoreError) => void = (e) => {
      throw e;
    },
    /** How each background snapshot ended, always after persist() returned (the driver tells the node). */
    private readonly onSnapshot: (r: SnapshotReport) => void = () => undefined,
  ) {
    mkdirDurable(dir);
    this.journal = join(dir, 'journal');
    this.snapPath = join(dir, 'snapshot');
    // What a crash left of a background snapshot: the journal still covers it.
    for (const f of readdirSync(dir)) if (f.startsWith(SNAPSHOT_PART)) rmSync(join(dir, f), { force: true });
    if (existsSync(this.snapPath)) {
      const s = this.readSnapshotFile();
      this.image.apply({ kind: 'snapshot', meta: { index: s.index, term: s.term, members: [...s.members] }, data: s.data });
    }
    const existed = existsSync(this.journal);
    if (existed) {
      const buf = readFileSync(this.journal);
      const { records, end } = readFramesChecked(this.journal, buf, MAX_JOURNAL_RECORD);
      for (const { offset, rec } of records) {
        try {
          const r = decodeJournalRecord(rec);
          this.image.apply(writeOf(r));
        } catch (e) {
          throw new StoreError(`${this.journal} at byte ${offset}: ${(e as Error).message}`);
        }
      }
      if (end < buf.length) {
        this.tornBytes = buf.length - end;
        truncateSync(this.journal, end);
      }
      this.journalSize = end;
    }
    this.fd = openSync(this.journal, 'a', 0o600);
    if (this.fsync !== 'never') this.syncFd(this.fd);
    // A new journal's name durable before Raft's term, vote and entries are fsynced into it (once).
    if (!existed) fsyncDir(dir);
    if (this.fsync === 'everysec') {
      this.timer = setInterval(() => this.backgroundFlush(), 1000);
      this.timer.unref();
    }
  }

  private backgroundFlush(): void {
    if (this.failed) return;
    try {
      this.syncFd(this.fd);
    } catch (e) {
      // A failed fsync may have dropped the dirty pages: a retry that succeeds proves nothing.
      this.failed = new StoreError(`${this.journal}: fsync: ${(e as Error).message}`);
      clearInterval(this.timer);
      this.onFlushFailed(this.failed);
    }
  }

  /**
   * A background flush failed, or the journal could not be reopened after a rewrite: what the journal
   * acknowledged in its last second may be lost. `close` skips the fsync then (a retry proves nothing,
   * or there is no descriptor) and so does not throw for it: the stop reports it from here.
   */
  get flushFailed(): boolean {
    return this.failed !== undefined;
  }

  /** fsync(2), the one seam tests replace to inject a failing disk. */
  protected syncFd(fd: number): void {
    fsyncSync(fd);
  }

  load(): StoredDomain {
    const st = this.image.load();
    if (!this.snapshotOnDiskOnly) return st;
    const s = this.readSnapshotFile();
    return { ...st, snapshot: { index: s.index, term: s.term, members: [...s.members], data: s.data } };
  }

  private readSnapshotFile(): DomainSnapshotFile {
    try {
      return decodeDomainSnapshot(readFileSync(this.snapPath), sha256);
    } catch (e) {
      throw new StoreError(`${this.snapPath}: ${(e as Error).message}`);
    }
  }

  /** The snapshot file if it holds `index` or a later one (what Raft sends a follower), else undefined (unreadable, or older). */
  readSnapshot(index: number): (SnapshotMeta & { data: Uint8Array }) | undefined {
    try {
      const s = this.readSnapshotFile();
      return s.index >= index ? { index: s.index, term: s.term, members: [...s.members], data: s.data } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Resolves once no background snapshot, cancelled ones included, touches the directory any more. */
  async settled(): Promise<void> {
    await Promise.all([...this.unsettled].map((j) => j.ended));
  }

  /** The index of the background snapshot being written, or 0. */
  get snapshotting(): number {
    return this.job?.meta.index ?? 0;
  }

  /**
   * Journal records are gathered and written together, then fsynced once (fsync "always";
   * a batch of Commit and Drop records only is not fsynced: an older commit index is still a
   * committed one, and a candidate whose Drop is lost is pending again after a restart, until
   * the member applies its entry again and drops it again, with the same outcome). A snapshot file is written after the
   * records before it are durable; a compaction rewrites the journal from the image, which
   * already holds the records gathered before it. Throws StoreError if anything failed.
   */
  persist(writes: readonly DomainWrite[]): void {
    if (this.failed) throw new StoreError(`${this.dir}: write after a failed flush (${this.failed.message})`);
    let batch: Uint8Array[] = [];
    let sync = false;
    const flush = (): void => {
      if (batch.length > 0) {
        const buf = batch.length === 1 ? batch[0] : Buffer.concat(batch);
        // A short write would leave half a record mid-file and cut everything after it at load.
        for (let off = 0; off < buf.length;) off += writeSync(this.fd, buf, off);
        this.journalSize += buf.length;
        batch = [];
      }
      if (sync && this.fsync === 'always') this.syncFd(this.fd);
      sync = false;
    };
    try {
      for (const w of writes) {
        // Framed before the image takes it: a record too large to read back fails the batch unwritten.
        const rec = w.kind === 'compact' ? undefined : recordOf(w);
        const bytes = rec && framed(rec);
        this.image.apply(w);
        if (w.kind === 'snapshot') {
          flush();
          // An install supersedes a background snapshot under way, which must not rename its older file over this one.
          this.cancelJob();
          writeAtomic(this.snapPath, encodeDomainSnapshot({ ...w.meta, data: w.data }, sha256), this.dir);
          this.snapshotOnDiskOnly = false;
        } else if (w.kind === 'snapshot-begin') {
          flush();
          this.beginSnapshot(w.meta, w.pinned);
        } else if (w.kind === 'compact') {
          // The rewrite holds what the gathered records say: they need not be written first.
          batch = [];
          sync = false;
          this.rewrite();
        } else {
          batch.push(bytes!);
          if (w.kind !== 'commit' && w.kind !== 'drop-pending') sync = true;
        }
      }
      flush();
      // Bounded by what the log holds, not by what was ever sent: amortized, at most about one
      // octet rewritten per octet appended.
      const im = this.image;
      const live = im.cmdBytes + LIVE_ENTRY * (im.entries.length + im.pending.size + 4);
      if (this.journalSize > Math.max(JOURNAL_REWRITE_FLOOR, 2 * live)) this.rewrite();
    } catch (e) {
      throw new StoreError(`${this.dir}: ${(e as Error).message}`);
    }
  }

  /** Start writing the snapshot of `pinned` in the background; onSnapshot reports how it ended. */
  private beginSnapshot(meta: SnapshotMeta, pinned: PinnedSnapshot): void {
    this.cancelJob();
    const run = this.backgroundSnapshot(writeDomainSnapshotHead(new Writer(64 + 8 * meta.members.length), meta), pinned);
    const job = { meta, run };
    this.job = job;
    this.unsettled.add(run);
    void run.ended.then(() => this.unsettled.delete(run));
    run.done.then(
      () => {
        if (this.job !== job) return;
        this.job = undefined;
        this.image.apply({ kind: 'snapshot', meta, data: new Uint8Array(0) });
        this.snapshotOnDiskOnly = true;
        this.report({ meta, ok: true });
      },
      (e: unknown) => {
        if (this.job !== job) return;
        this.job = undefined;
        this.report({ meta, ok: false, error: new StoreError(`${this.snapPath}: ${(e as Error).message}`) });
      },
    );
  }

  /** onSnapshot, from a promise's callback: what it throws must not become an unhandled rejection (it would end the process). */
  private report(r: SnapshotReport): void {
    try {
      this.onSnapshot(r);
    } catch (e) {
      this.onFlushFailed(new StoreError(`${this.dir}: after a background snapshot: ${(e as Error).message}`));
    }
  }

  /** The seam tests replace to hold a snapshot mid-way or make it fail. */
  protected backgroundSnapshot(head: Writer, pinned: PinnedSnapshot): BackgroundSnapshot {
    return new BackgroundSnapshot(head, pinned, this.dir, this.snapPath);
  }

  private cancelJob(): void {
    this.job?.run.cancel();
    this.job = undefined;
  }

  /** After compaction the journal is rewritten from the image: it stays proportional to the retained log. */
  private rewrite(): void {
    const im = this.image;
    const parts: Uint8Array[] = [
      framed({ type: Rec.Hard, term: im.term, vote: im.vote }),
      framed({ type: Rec.Compact, base: im.base, baseTerm: im.baseTerm, reset: true }),
    ];
    // Records of at most REWRITE_APPEND_CHUNK entries and MAX_JOURNAL_RECORD octets (each entry fits alone: one message's).
    let chunk: JournalEntry[] = [];
    let size = APPEND_SLACK;
    for (const e of im.entries) {
      const sz = e.cmd.length + ENTRY_SLACK;
      if (chunk.length > 0 && (chunk.length === REWRITE_APPEND_CHUNK || size + sz > MAX_JOURNAL_RECORD)) {
        parts.push(framed({ type: Rec.Append, entries: chunk }));
        chunk = [];
        size = APPEND_SLACK;
      }
      chunk.push(e);
      size += sz;
    }
    if (chunk.length > 0) parts.push(framed({ type: Rec.Append, entries: chunk }));
    parts.push(framed({ type: Rec.NextSeq, nextSeq: im.nextSeq }));
    // Still catching up since it started empty: so it stays after the rewrite (NextSeq 0, 'behind').
    if (im.behind) parts.push(framed({ type: Rec.NextSeq, nextSeq: 0 }));
    parts.push(framed({ type: Rec.Commit, commit: im.commit }));
    for (const [seq, cmd] of im.pending) parts.push(framed({ type: Rec.Pending, seq, cmd }));
    const data = Buffer.concat(parts);
    closeSync(this.fd);
    try {
      writeAtomic(this.journal, data, this.dir);
      this.journalSize = data.length;
    } finally {
      // Never keep a closed descriptor (its number may be reused by another file).
      try {
        this.fd = openSync(this.journal, 'a', 0o600);
      } catch (e) {
        // None left (EMFILE: another thread took the one freed above): the number kept would be the
        // next file's, which a later write would go to and close() would close. The store is failed:
        // nothing more is written (the domain is fenced), and close() closes nothing.
        this.fd = -1;
        this.failed ??= new StoreError(`${this.journal}: reopen after a rewrite: ${(e as Error).message}`);
        clearInterval(this.timer);
      }
    }
  }

  /** fsync what "everysec" left (unless a background flush failed) and close, even when the fsync throws (StoreError). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    // Nothing is lost: the journal keeps every entry the snapshot would have covered.
    this.cancelJob();
    try {
      if (this.fsync === 'everysec' && !this.failed) this.syncFd(this.fd);
    } catch (e) {
      throw new StoreError(`${this.journal}: fsync: ${(e as Error).message}`);
    } finally {
      if (this.fd >= 0) closeSync(this.fd);
    }
  }

  journalBytes(): number {
    return statSync(this.journal).size;
  }
}

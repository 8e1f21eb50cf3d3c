/**
 * Durable state of one QN domain member (docs/ARCHITECTURE.md, "Durability"):
 *
 *  journal   [u32 length][4-byte SHA-256 prefix][record] ...: Raft's term/vote, appended
 *            and truncated log entries, compaction points, and the candidates proposed here
 *            that have no outcome yet. Rewritten whole (atomically) after each compaction.
 *  snapshot  "SPKQSNP1" | index, term, members, state | 32-byte SHA-256, written atomically.
 *
 * Each call returns once its record is written (and fsynced with fsync "always"), so Raft's
 * rule holds: nothing is sent that depends on state that is not on disk. Loading stops at
 * the first torn or corrupt record and cuts the journal there.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, statSync, truncateSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Reader, Writer } from '../../wire/buffer.js';
import { MemDisk } from '../../core/qn/disk.js';
import type { LogEntry, NodeId, SnapshotMeta } from '../../core/qn/raft.js';
import { StoreError, writeAtomic, type FsyncPolicy } from './store.js';

const SNAP_MAGIC = new TextEncoder().encode('SPKQSNP1');
const MAX_RECORD = 16 * 1024 * 1024;
const sum4 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest().subarray(0, 4);

enum Rec {
  Hard = 1,
  Append = 2,
  Truncate = 3,
  Compact = 4,
  Pending = 5,
  Drop = 6,
  /** The next own candidate sequence number (kept across journal rewrites: never reused). */
  NextSeq = 7,
  /** The commit index (written without fsync: a lost one only means an older committed index). */
  Commit = 8,
}

export class FileDomainDisk extends MemDisk {
  private fd: number;
  private readonly journal: string;
  private readonly snapPath: string;
  private replaying = false;
  private timer: NodeJS.Timeout | undefined;
  /** Bytes cut from a torn journal tail at load. */
  readonly tornBytes: number = 0;

  constructor(
    readonly dir: string,
    readonly fsync: FsyncPolicy,
  ) {
    super();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.journal = join(dir, 'journal');
    this.snapPath = join(dir, 'snapshot');
    if (existsSync(this.snapPath)) this.snapshot = decodeSnapshot(readFileSync(this.snapPath), this.snapPath);
    if (existsSync(this.journal)) {
      const buf = readFileSync(this.journal);
      let off = 0;
      this.replaying = true;
      try {
        while (buf.length - off >= 8) {
          const len = buf.readUInt32BE(off);
          if (len === 0 || len > MAX_RECORD || off + 8 + len > buf.length) break;
          const rec = buf.subarray(off + 8, off + 8 + len);
          if (!sum4(rec).equals(buf.subarray(off + 4, off + 8))) break;
          try {
            this.replay(new Uint8Array(rec));
          } catch (e) {
            throw new StoreError(`${this.journal} at byte ${off}: ${(e as Error).message}`);
          }
          off += 8 + len;
        }
      } finally {
        this.replaying = false;
      }
      if (off < buf.length) {
        this.tornBytes = buf.length - off;
        truncateSync(this.journal, off);
      }
    }
    this.fd = openSync(this.journal, 'a', 0o600);
    if (this.fsync !== 'never') fsyncSync(this.fd);
    if (this.fsync === 'everysec') {
      this.timer = setInterval(() => fsyncSync(this.fd), 1000);
      this.timer.unref();
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    closeSync(this.fd);
  }

  private replay(rec: Uint8Array): void {
    const r = new Reader(rec);
    switch (r.u8('record.type') as Rec) {
      case Rec.Hard:
        super.saveHard(r.varint('term'), r.varint('vote'));
        break;
      case Rec.Append: {
        const n = r.varint('entries');
        const es: LogEntry[] = [];
        for (let i = 0; i < n; i++)
          es.push({ term: r.varint('entry.term'), index: r.varint('entry.index'), cmd: r.lenBytes('entry.cmd', MAX_RECORD).slice() });
        super.append(es);
        break;
      }
      case Rec.Truncate:
        super.truncate(r.varint('from'));
        break;
      case Rec.Compact:
        super.compact(r.varint('base'), r.varint('baseTerm'), r.u8('reset') === 1);
        break;
      case Rec.Pending:
        super.savePending(r.varint('seq'), r.lenBytes('cmd', MAX_RECORD).slice());
        break;
      case Rec.Drop:
        super.dropPending(r.varint('seq'));
        break;
      case Rec.NextSeq:
        this.nextSeq = Math.max(this.nextSeq, r.varint('nextSeq'));
        break;
      case Rec.Commit:
        super.saveCommit(r.varint('commit'));
        break;
      default:
        throw new Error('unknown journal record type');
    }
    r.expectEnd('record');
  }

  private write(w: Writer, sync = true): void {
    if (this.replaying) return;
    const rec = w.finish();
    const head = Buffer.alloc(8);
    head.writeUInt32BE(rec.length, 0);
    sum4(rec).copy(head, 4);
    const buf = Buffer.concat([head, rec]);
    // A short write would leave half a record mid-file and cut everything after it at load.
    for (let off = 0; off < buf.length;) off += writeSync(this.fd, buf, off);
    if (sync && this.fsync === 'always') fsyncSync(this.fd);
  }

  override saveHard(term: number, vote: NodeId): void {
    super.saveHard(term, vote);
    this.write(new Writer(16).u8(Rec.Hard).varint(term).varint(vote));
  }

  override append(entries: readonly LogEntry[]): void {
    super.append(entries);
    const w = new Writer(256).u8(Rec.Append).varint(entries.length);
    for (const e of entries) w.varint(e.term).varint(e.index).lenBytes(e.cmd);
    this.write(w);
  }

  override saveCommit(index: number): void {
    super.saveCommit(index);
    this.write(new Writer(16).u8(Rec.Commit).varint(index), false);
  }

  override truncate(from: number): void {
    super.truncate(from);
    this.write(new Writer(16).u8(Rec.Truncate).varint(from));
  }

  override saveSnapshot(meta: SnapshotMeta, data: Uint8Array): void {
    super.saveSnapshot(meta, data);
    writeAtomic(this.snapPath, encodeSnapshot(meta, data), this.dir);
  }

  /** After compaction the journal is rewritten from memory: it stays proportional to the retained log. */
  override compact(base: number, baseTerm: number, reset: boolean): void {
    super.compact(base, baseTerm, reset);
    const body = new Writer(1 << 16);
    const frame = (w: Writer): void => {
      const rec = w.finish();
      body.u32(rec.length).bytes(sum4(rec)).bytes(rec);
    };
    frame(new Writer(16).u8(Rec.Hard).varint(this.term).varint(this.vote));
    frame(new Writer(16).u8(Rec.Compact).varint(this.base).varint(this.baseTerm).u8(1));
    for (let i = 0; i < this.entries.length; i += 256) {
      const chunk = this.entries.slice(i, i + 256);
      const w = new Writer(4096).u8(Rec.Append).varint(chunk.length);
      for (const e of chunk) w.varint(e.term).varint(e.index).lenBytes(e.cmd);
      frame(w);
    }
    frame(new Writer(16).u8(Rec.NextSeq).varint(this.nextSeq));
    frame(new Writer(16).u8(Rec.Commit).varint(this.commit));
    for (const [seq, cmd] of this.pending) frame(new Writer(64).u8(Rec.Pending).varint(seq).lenBytes(cmd));
    closeSync(this.fd);
    try {
      writeAtomic(this.journal, body.finish(), this.dir);
    } finally {
      // Never keep a closed descriptor (its number may be reused by another file).
      this.fd = openSync(this.journal, 'a', 0o600);
    }
  }

  override savePending(seq: number, cmd: Uint8Array): void {
    super.savePending(seq, cmd);
    this.write(new Writer(64).u8(Rec.Pending).varint(seq).lenBytes(cmd));
  }

  override dropPending(seq: number): void {
    super.dropPending(seq);
    this.write(new Writer(16).u8(Rec.Drop).varint(seq));
  }

  journalBytes(): number {
    return statSync(this.journal).size;
  }
}

function encodeSnapshot(meta: SnapshotMeta, data: Uint8Array): Uint8Array {
  const w = new Writer(data.length + 64);
  w.bytes(SNAP_MAGIC).varint(meta.index).varint(meta.term).varint(meta.members.length);
  for (const m of meta.members) w.varint(m);
  w.lenBytes(data);
  const body = w.finish();
  const out = new Uint8Array(body.length + 32);
  out.set(body);
  out.set(createHash('sha256').update(body).digest(), body.length);
  return out;
}

function decodeSnapshot(buf: Buffer, path: string): SnapshotMeta & { data: Uint8Array } {
  if (buf.length < SNAP_MAGIC.length + 32 || !buf.subarray(0, SNAP_MAGIC.length).equals(Buffer.from(SNAP_MAGIC)))
    throw new StoreError(`${path}: not a domain snapshot`);
  const body = buf.subarray(0, buf.length - 32);
  if (
    !createHash('sha256')
      .update(body)
      .digest()
      .equals(buf.subarray(buf.length - 32))
  )
    throw new StoreError(`${path}: checksum mismatch`);
  const r = new Reader(new Uint8Array(body), SNAP_MAGIC.length);
  const index = r.varint('snapshot.index');
  const term = r.varint('snapshot.term');
  const n = r.varint('snapshot.members');
  const members: NodeId[] = [];
  for (let i = 0; i < n; i++) members.push(r.varint('snapshot.member'));
  const data = r.lenBytes('snapshot.data', 2 ** 40).slice();
  r.expectEnd('snapshot');
  return { index, term, members, data };
}

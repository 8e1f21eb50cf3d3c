/**
 * Durable register history for spookd: per register, a snapshot file and an append-only
 * log of Collapse records after it (docs/ARCHITECTURE.md, "Durability").
 *
 *  log       [u32 length][4-byte SHA-256 prefix of the record][record] ...
 *  snapshot  "SPKSNAP1" | body | 32-byte SHA-256 of magic+body, written to a temporary
 *            file, fsynced, renamed over the old one, directory fsynced.
 *  lease     the highest own candidate sequence number handed out (so a restart never
 *            reuses one), rewritten atomically once per 1,024 proposals.
 *  pending   own candidates as proposed, [u32 length][4-byte SHA-256 prefix][varint seq |
 *            delta] ..., appended (and flushed like the log) before the proposer hears
 *            of the candidate; rewritten atomically with only the undecided ones at load
 *            and whenever it passes 1 MiB. A restart proposes the undecided ones again.
 *
 * A record is written (and, with fsync "always", flushed) before the collapse it holds
 * can leave the host, so after `kill -9` every version a peer or a proposer may have seen
 * is on disk. Loading stops at the first torn or corrupt record and truncates the log
 * there (a torn tail is the expected result of a crash mid-write); a corrupt snapshot is a
 * hard error, never silently replaced by an empty state.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Reader, Writer } from '../../wire/buffer.js';
import { readDelta, writeDelta, type Delta } from '../../wire/delta.js';
import { MAX_DELTA_LEN, MAX_KEY_LEN } from '../../wire/constants.js';
import type { LogRecord } from '../../core/pair/log.js';
import { MapState } from '../../core/register/map.js';
import { type StreamState } from '../../core/register/stream.js';
import type { Replica } from '../../core/pair/replica.js';
import type { PairStore, RegisterImage } from '../../core/pair/types.js';

export type FsyncPolicy = 'always' | 'everysec' | 'never';

const SNAP_MAGIC = new TextEncoder().encode('SPKSNAP1');
const RECORD_HEADER = 8;
/** A record larger than this is corruption, not data (a Collapse record fits one datagram). */
const MAX_RECORD = 64 * 1024;

const sum4 = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest().subarray(0, 4);

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

interface RegisterFiles {
  dir: string;
  logFd: number;
  logBytes: number;
  dirty: boolean;
  pendingFd: number;
  pendingBytes: number;
  pendingDirty: boolean;
}

/** Rewrite the pending list (undecided candidates only) once the file passes this. */
const PENDING_COMPACT_BYTES = 1024 * 1024;

export interface LoadReport {
  register: string;
  snapshotVersion: number;
  replayed: number;
  version: number;
  tornBytes: number;
  /** Own candidates pending at the last stop, proposed again (decided after the restart). */
  pendingRestored: number;
}

export class DiskStore implements PairStore {
  private readonly files = new Map<string, RegisterFiles>();
  private readonly replicas = new Map<string, Replica>();
  private timer: NodeJS.Timeout | undefined;

  private closed = false;

  constructor(
    readonly dir: string,
    readonly fsync: FsyncPolicy,
    /** Snapshot and truncate a register's log once it grows past this. */
    readonly maxLogBytes = 64 * 1024 * 1024,
    /**
     * A write that fails (ENOSPC, EIO) leaves a committed version that is not on disk: the
     * daemon must stop before it is sent or reported (fail-stop). Tests keep the throw.
     */
    private readonly onFatal: (e: Error) => never = (e) => {
      throw e;
    },
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (fsync === 'everysec') {
      this.timer = setInterval(() => this.flush(), 1000);
      this.timer.unref();
    }
  }

  private paths(register: string): { dir: string; log: string; snap: string; lease: string; pending: string } {
    const d = join(this.dir, encodeURIComponent(register));
    return { dir: d, log: join(d, 'log'), snap: join(d, 'snapshot'), lease: join(d, 'lease'), pending: join(d, 'pending') };
  }

  /**
   * Load a register's snapshot and log into a fresh replica (before the pair starts), and
   * open its log for appending. Throws StoreError on a corrupt snapshot or a log that does not replay.
   */
  load(replica: Replica): LoadReport {
    const p = this.paths(replica.name);
    mkdirSync(p.dir, { recursive: true, mode: 0o700 });
    this.replicas.set(replica.name, replica);
    let snapshotVersion = 0;
    if (existsSync(p.snap)) snapshotVersion = this.loadSnapshot(replica, readFileSync(p.snap), p.snap);
    const lease = existsSync(p.lease) ? Number(readFileSync(p.lease, 'utf8').trim()) || 0 : 0;
    let replayed = 0;
    let tornBytes = 0;
    if (existsSync(p.log)) {
      const buf = readFileSync(p.log);
      let off = 0;
      while (off < buf.length) {
        if (buf.length - off < RECORD_HEADER) break;
        const len = buf.readUInt32BE(off);
        if (len === 0 || len > MAX_RECORD || off + RECORD_HEADER + len > buf.length) break;
        const rec = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
        if (!sum4(rec).equals(buf.subarray(off + 4, off + 8))) break;
        const version = peekVersion(rec);
        if (version > replica.version) {
          try {
            replica.replayRecord(new Uint8Array(rec));
          } catch (e) {
            throw new StoreError(`${p.log} at byte ${off}: ${(e as Error).message}`);
          }
          replayed++;
        }
        off += RECORD_HEADER + len;
      }
      tornBytes = buf.length - off;
      if (tornBytes > 0) truncateSync(p.log, off);
    }
    replica.continueSeqAfter(lease);
    // Own candidates pending at the stop: the history decides some; the rest are proposed again.
    const pendingRestored = existsSync(p.pending) ? replica.restorePending(readFramed(readFileSync(p.pending)).flatMap(decodePending)) : 0;
    writeAtomic(p.pending, encodePending(replica.ownCandidates()), p.dir);
    const logFd = openSync(p.log, 'a', 0o600);
    const pendingFd = openSync(p.pending, 'a', 0o600);
    this.files.set(replica.name, {
      dir: p.dir,
      logFd,
      logBytes: existsSync(p.log) ? statSync(p.log).size : 0,
      dirty: false,
      pendingFd,
      pendingBytes: statSync(p.pending).size,
      pendingDirty: false,
    });
    return { register: replica.name, snapshotVersion, replayed, version: replica.version, tornBytes, pendingRestored };
  }

  proposed(register: string, seq: number, delta: Delta): void {
    if (this.closed) this.onFatal(new StoreError(`${this.dir}: proposal on register ${register} after the store was closed`));
    const f = this.files.get(register);
    if (!f) return;
    try {
      const r = this.replicas.get(register);
      if (r && f.pendingBytes > PENDING_COMPACT_BYTES) {
        // Rewrite with the undecided candidates only (and this one), then append from there.
        const p = this.paths(register);
        closeSync(f.pendingFd);
        writeAtomic(p.pending, encodePending([...r.ownCandidates(), { seq, delta }]), p.dir);
        f.pendingFd = openSync(p.pending, 'a', 0o600);
        f.pendingBytes = statSync(p.pending).size;
        return;
      }
      const framed = frame(encodePending([{ seq, delta }], false));
      writeSync(f.pendingFd, framed);
      f.pendingBytes += framed.length;
      if (this.fsync === 'always') fsyncSync(f.pendingFd);
      else f.pendingDirty = true;
    } catch (e) {
      this.onFatal(new StoreError(`${join(this.dir, register)}: cannot persist own candidate ${seq}: ${(e as Error).message}`));
    }
  }

  append(register: string, rec: LogRecord): void {
    if (this.closed) this.onFatal(new StoreError(`${this.dir}: append to register ${register} after the store was closed`));
    const f = this.files.get(register);
    if (!f) return;
    try {
      this.write(f, register, rec);
    } catch (e) {
      this.onFatal(new StoreError(`${join(this.dir, register)}: cannot persist v${rec.version}: ${(e as Error).message}`));
    }
  }

  private write(f: RegisterFiles, register: string, rec: LogRecord): void {
    const framed = frame(rec.encoded);
    writeSync(f.logFd, framed);
    f.logBytes += framed.length;
    if (this.fsync === 'always') fsyncSync(f.logFd);
    else f.dirty = true;
    if (f.logBytes > this.maxLogBytes) {
      const r = this.replicas.get(register);
      if (r) this.replaced(r);
    }
  }

  /** Write a snapshot of the replica's current state, then empty its log (the snapshot covers it). */
  replaced(replica: RegisterImage): void {
    const p = this.paths(replica.name);
    const f = this.files.get(replica.name);
    if (!f) return;
    writeAtomic(p.snap, encodeSnapshot(replica), p.dir);
    truncateSync(p.log, 0);
    f.logBytes = 0;
  }

  lease(register: string, upTo: number): void {
    const p = this.paths(register);
    if (!this.files.has(register)) return;
    writeAtomic(p.lease, new TextEncoder().encode(`${upTo}\n`), p.dir);
  }

  flush(): void {
    for (const f of this.files.values()) {
      if (f.dirty) {
        fsyncSync(f.logFd);
        f.dirty = false;
      }
      if (f.pendingDirty) {
        fsyncSync(f.pendingFd);
        f.pendingDirty = false;
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.flush();
    for (const f of this.files.values()) {
      closeSync(f.logFd);
      closeSync(f.pendingFd);
    }
    this.files.clear();
  }

  private loadSnapshot(replica: Replica, buf: Buffer, path: string): number {
    if (buf.length < SNAP_MAGIC.length + 32 || !buf.subarray(0, SNAP_MAGIC.length).equals(Buffer.from(SNAP_MAGIC))) {
      throw new StoreError(`${path}: not a Spook snapshot (bad magic or too short)`);
    }
    const body = buf.subarray(0, buf.length - 32);
    if (
      !createHash('sha256')
        .update(body)
        .digest()
        .equals(buf.subarray(buf.length - 32))
    ) {
      throw new StoreError(`${path}: checksum mismatch; refusing to start on a damaged snapshot`);
    }
    const r = new Reader(new Uint8Array(body), SNAP_MAGIC.length);
    const kind = r.u8('snapshot.kind');
    const version = r.varint('snapshot.version');
    const hash = r.hash64('snapshot.hash');
    const origins = new Map<number, number>();
    const no = r.varint('snapshot.origins');
    for (let i = 0; i < no; i++) origins.set(r.varint('origin'), r.varint('seq'));
    if ((kind === 1) !== replica.state instanceof MapState) throw new StoreError(`${path}: register kind differs from the configuration`);
    replica.restore(
      version,
      (st) => {
        if (st instanceof MapState) {
          const n = r.varint('snapshot.entries');
          for (let i = 0; i < n; i++) {
            const key = r.lenBytes('key', MAX_KEY_LEN).slice();
            const version = r.varint('version');
            st.put(key, r.lenBytes('value', MAX_DELTA_LEN).slice(), version);
          }
        } else {
          const n = r.varint('snapshot.chunks');
          for (let i = 0; i < n; i++) (st as StreamState).appendBytes(r.lenBytes('chunk', 1 << 20).slice());
        }
      },
      origins,
    );
    if (replica.hash.hi !== hash.hi || replica.hash.lo !== hash.lo)
      throw new StoreError(`${path}: state does not hash to the recorded value`);
    return version;
  }
}

function encodeSnapshot(replica: RegisterImage): Uint8Array {
  const w = new Writer(1 << 16);
  w.bytes(SNAP_MAGIC);
  const st = replica.state;
  w.u8(st instanceof MapState ? 1 : 2)
    .varint(replica.version)
    .hash64(st.hash);
  w.varint(replica.origins.size);
  for (const [o, s] of replica.origins) w.varint(o).varint(s);
  if (st instanceof MapState) {
    w.varint(st.size());
    for (const e of st.values()) w.lenBytes(e.key).varint(e.version).lenBytes(e.value);
  } else {
    const CHUNK = 1 << 20;
    const n = Math.ceil(st.size() / CHUNK);
    w.varint(n);
    for (let i = 0; i < n; i++) w.lenBytes(st.read(i * CHUNK, CHUNK));
  }
  const body = w.finish();
  const out = new Uint8Array(body.length + 32);
  out.set(body);
  out.set(createHash('sha256').update(body).digest(), body.length);
  return out;
}

export function writeAtomic(path: string, data: Uint8Array, dir: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** The version of an encoded Collapse record without decoding its entries. */
function peekVersion(rec: Uint8Array): number {
  const r = new Reader(rec);
  r.u8('type');
  r.varint('length');
  r.lenBytes('register', 64);
  return r.varint('version');
}

/** `[u32 length][4-byte SHA-256 prefix][record]`, the framing of the log and pending files. */
function frame(rec: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(RECORD_HEADER + rec.length);
  framed.writeUInt32BE(rec.length, 0);
  sum4(rec).copy(framed, 4);
  framed.set(rec, RECORD_HEADER);
  return framed;
}

/** The framed records of a file, up to the first torn or corrupt one. */
function readFramed(buf: Buffer): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; buf.length - off >= RECORD_HEADER;) {
    const len = buf.readUInt32BE(off);
    if (len === 0 || len > MAX_RECORD || off + RECORD_HEADER + len > buf.length) break;
    const rec = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
    if (!sum4(rec).equals(buf.subarray(off + 4, off + 8))) break;
    out.push(new Uint8Array(rec));
    off += RECORD_HEADER + len;
  }
  return out;
}

/** One own candidate per record: varint seq, then the delta (§4.1). `framed`: the whole file. */
function encodePending(cands: { seq: number; delta: Delta }[], framed = true): Uint8Array {
  const parts = cands.map((c) => {
    const w = new Writer(64);
    w.varint(c.seq);
    writeDelta(w, c.delta);
    return w.finish();
  });
  if (!framed) return parts[0];
  return Buffer.concat(parts.map((p) => frame(p)));
}

function decodePending(rec: Uint8Array): { seq: number; delta: Delta }[] {
  try {
    const r = new Reader(rec);
    const seq = r.varint('pending.seq');
    return [{ seq, delta: readDelta(r, 'pending.delta') }];
  } catch {
    return []; // checksummed, so only a bug writes one that does not decode: skip it
  }
}

/**
 * The delta log: the encoded Collapse records after a compaction base, bounded in
 * records and bytes. The state at `base` is the snapshot the log is compacted behind
 * (in memory it is the live StateBlock minus the records; on disk, spookd's snapshot).
 */
import type { Hash64Parts } from '../../wire/buffer.js';

export interface LogRecord {
  version: number;
  /** State hash after this collapse. */
  hash: Hash64Parts;
  /** The encoded Collapse message (type, length, body), ready to retransmit or persist. */
  encoded: Uint8Array;
}

export interface LogLimits {
  maxRecords: number;
  maxBytes: number;
}

/** What a register's readers may see of its log (only the register's roles append, compact or reset it). */
export type LogView = Pick<
  DeltaLog,
  'base' | 'baseHash' | 'last' | 'length' | 'sizeBytes' | 'forcedCompactions' | 'covers' | 'get' | 'hashAt'
>;

export class DeltaLog {
  /** Dropped records leave a hole (undefined) before `head` until the array is compacted. */
  private records: (LogRecord | undefined)[] = [];
  private head = 0; // index of the oldest live record in `records`
  private bytes = 0;
  private baseVersion = 0;
  private baseHashParts: Hash64Parts = { hi: 0, lo: 0 };
  private forced = 0;

  constructor(readonly limits: LogLimits) {}

  /** The version the log is compacted behind: it serves every version after it. */
  get base(): number {
    return this.baseVersion;
  }

  /** The state hash at `base`. */
  get baseHash(): Hash64Parts {
    return this.baseHashParts;
  }

  /** Records dropped by the bounds before the peer acknowledged them. */
  get forcedCompactions(): number {
    return this.forced;
  }

  get last(): number {
    return this.base + this.length;
  }

  get length(): number {
    return this.records.length - this.head;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  append(rec: LogRecord, peerAcked: number): void {
    if (rec.version !== this.last + 1) {
      throw new Error(`log append out of order: version ${rec.version} after ${this.last}`);
    }
    this.records.push(rec);
    this.bytes += rec.encoded.length;
    while (this.length > this.limits.maxRecords || (this.bytes > this.limits.maxBytes && this.length > 1)) {
      if (this.baseVersion >= peerAcked) this.forced++;
      this.dropOldest();
    }
  }

  /** Whether the log can serve every version after `v`. */
  covers(v: number): boolean {
    return v >= this.base && v <= this.last;
  }

  get(v: number): LogRecord | undefined {
    if (v <= this.base || v > this.last) return undefined;
    return this.records[this.head + (v - this.base - 1)];
  }

  hashAt(v: number): Hash64Parts | undefined {
    if (v === this.base) return this.baseHash;
    return this.get(v)?.hash;
  }

  /** Drop records up to and including `v` (every member has acknowledged them). */
  compactThrough(v: number): void {
    while (this.length > 0 && this.base < v) this.dropOldest();
  }

  /** Restart the log at `base` (after reconciliation or a full transfer replaced the state). */
  reset(base: number, hash: Hash64Parts): void {
    this.records = [];
    this.head = 0;
    this.bytes = 0;
    this.baseVersion = base;
    this.baseHashParts = { hi: hash.hi, lo: hash.lo };
  }

  private dropOldest(): void {
    const rec = this.records[this.head]!;
    this.records[this.head] = undefined;
    this.head++;
    this.bytes -= rec.encoded.length;
    this.baseVersion = rec.version;
    this.baseHashParts = rec.hash;
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }
}

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

export class DeltaLog {
  private records: LogRecord[] = [];
  private head = 0; // index of the oldest live record in `records`
  private bytes = 0;
  base = 0;
  baseHash: Hash64Parts = { hi: 0, lo: 0 };
  /** Records dropped by the bounds before the peer acknowledged them. */
  forcedCompactions = 0;

  constructor(readonly limits: LogLimits) {}

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
      if (this.base >= peerAcked) this.forcedCompactions++;
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
    this.base = base;
    this.baseHash = { hi: hash.hi, lo: hash.lo };
  }

  private dropOldest(): void {
    const rec = this.records[this.head];
    this.records[this.head] = undefined as unknown as LogRecord;
    this.head++;
    this.bytes -= rec.encoded.length;
    this.base = rec.version;
    this.baseHash = rec.hash;
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * The recent committed changes of one register, for change feeds: per version, the changes it
 * committed (rejected candidates are not changes), after a base version, bounded in records
 * and bytes. A feed serves every version after `base`; one behind it is told `compacted`.
 * Keys and values are copied in once, so the bound counts what the ring really holds.
 */
import { DeltaOp, type Delta } from '../../wire/delta.js';

export interface Change {
  op: 'set' | 'del' | 'append';
  key?: Uint8Array;
  /** The new value (set, cas), or the appended bytes. */
  value?: Uint8Array;
  offset?: number;
}

export interface ChangeRecord {
  version: number;
  changes: readonly Change[];
  /** Bytes charged to the ring: keys and values plus a fixed overhead per change. */
  bytes: number;
}

export interface ChangeLimits {
  maxRecords: number;
  maxBytes: number;
}

/** What one change costs besides its bytes (the objects that hold it). */
const CHANGE_OVERHEAD = 64;

/** The changes one committed delta makes. Exhaustive: a new DeltaOp must say what it changes. */
export function changesOf(d: Delta): Change[] {
  switch (d.op) {
    case DeltaOp.Set:
    case DeltaOp.Cas:
      return [{ op: 'set', key: d.key, value: d.value }];
    case DeltaOp.Del:
      return [{ op: 'del', key: d.key }];
    case DeltaOp.Append:
      return [{ op: 'append', value: d.data, offset: d.offset }];
    case DeltaOp.Txn:
      // One version, its ops' changes in order (keys are distinct; appends chain).
      return d.ops.flatMap(changesOf);
    default: {
      const unknown: never = d;
      throw new Error(`no change feed mapping for delta ${JSON.stringify(unknown)}`);
    }
  }
}

export class ChangeRing {
  private records: (ChangeRecord | undefined)[] = [];
  private head = 0;
  private baseVersion: number;
  private bytes = 0;
  private restarts = 0;
  /** Called after every add or reset (feeds wake up and send what is new). */
  readonly wakers = new Set<() => void>();

  constructor(
    readonly limits: ChangeLimits,
    base = 0,
  ) {
    this.baseVersion = base;
  }

  /** Every version after this one is held. */
  get base(): number {
    return this.baseVersion;
  }

  get last(): number {
    return this.baseVersion + this.records.length - this.head;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  /** Times the ring started again (a reset, a gap): what a reader counted before is void. */
  get epoch(): number {
    return this.restarts;
  }

  /** Whether a feed that delivered up to `v` can continue from here. */
  covers(v: number): boolean {
    return v >= this.baseVersion && v <= this.last;
  }

  /** The record of version `v`, if held. */
  at(v: number): ChangeRecord | undefined {
    if (v <= this.baseVersion || v > this.last) return undefined;
    return this.records[this.head + (v - this.baseVersion - 1)];
  }

  /**
   * Version `v` committed `changes`. A version already held is ignored (a record seen twice); one
   * past a gap restarts the ring just before it (what lay between is not known here).
   */
  add(version: number, changes: readonly Change[]): void {
    if (version <= this.last) return;
    if (version !== this.last + 1) this.restart(version - 1);
    let bytes = 0;
    // Own copies: a view would keep its whole datagram or log entry alive, past what the bound counts.
    const own = changes.map((c) => {
      bytes += CHANGE_OVERHEAD + (c.key?.length ?? 0) + (c.value?.length ?? 0);
      return { ...c, ...(c.key ? { key: c.key.slice() } : {}), ...(c.value ? { value: c.value.slice() } : {}) };
    });
    this.records.push({ version, changes: own, bytes });
    this.bytes += bytes;
    while (
      this.records.length - this.head > this.limits.maxRecords ||
      (this.bytes > this.limits.maxBytes && this.records.length - this.head > 1)
    )
      this.dropOldest();
    this.wake();
  }

  /** The state was replaced at `version` (reconciliation, a snapshot): nothing before it is served any more. */
  reset(version: number): void {
    this.restart(version);
    this.wake();
  }

  private restart(version: number): void {
    this.restarts++;
    this.records = [];
    this.head = 0;
    this.bytes = 0;
    this.baseVersion = version;
  }

  private wake(): void {
    for (const w of this.wakers) w();
  }

  private dropOldest(): void {
    const rec = this.records[this.head]!;
    this.records[this.head] = undefined;
    this.head++;
    this.bytes -= rec.bytes;
    this.baseVersion = rec.version;
    if (this.head > 1024 && this.head * 2 > this.records.length) {
      this.records = this.records.slice(this.head);
      this.head = 0;
    }
  }
}

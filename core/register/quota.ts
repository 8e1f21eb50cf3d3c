/**
 * Register quotas (docs/PROTOCOL.md §7.8): the most keys and octets a register may hold,
 * whoever wrote them. Part of collapse, so both ends decide alike: the sequencer rejects a
 * candidate that would grow the register past its quota (`quota-exceeded`), and the
 * follower checks every committed record against its own quota before applying it, so a
 * sequencer that ignores the quota cannot make this host hold more.
 */
import { DEFAULT_MAX_VALUE_BYTES, MAX_VALUE_LEN } from '../../wire/constants.js';
import { DeltaOp, RejectReason, deltaValueLen, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { MapState, entryWireLen } from './map.js';
import type { StreamState } from './stream.js';

export interface Quota {
  /** Entries of a map register (ignored for streams). */
  maxKeys: number;
  /** Octets: Σ entry encodings (key, version, value) of a map; the length of a stream. */
  maxBytes: number;
  /** Largest value of one entry (map) or one append (stream), at most MAX_VALUE_LEN (§4). */
  maxValueBytes: number;
}

/** Throws (RangeError, naming the register) unless `q.maxValueBytes` is an integer in 1..MAX_VALUE_LEN (§4). */
export function checkMaxValueBytes(register: string, q: Quota): void {
  if (!(Number.isSafeInteger(q.maxValueBytes) && q.maxValueBytes >= 1 && q.maxValueBytes <= MAX_VALUE_LEN))
    throw new RangeError(`register ${register}: maxValueBytes ${q.maxValueBytes} is not 1..${MAX_VALUE_LEN} (MAX_VALUE_LEN)`);
}

/** A key as a map key (one char per byte). */
const latin1 = (k: Uint8Array): string => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('latin1');

/** The most a simple delta can grow a register by, in octets (a set: a new key of its full size). */
function growthBound(o: SimpleDelta, map: boolean, v: number): number {
  switch (o.op) {
    case DeltaOp.Append:
      return map ? 0 : o.data.length;
    case DeltaOp.Set:
    case DeltaOp.Cas:
      return map ? entryWireLen({ key: o.key, value: o.value, version: v }) : 0;
    case DeltaOp.Del:
      return 0;
  }
}

/**
 * The most octets a map register holds whatever its quota says: its entries live in one arena
 * (table.ts) of at most 2^32 - 4 bytes, and an entry there takes at most 5 times its octets on
 * the wire (16-byte header and padding to 4 against at least 3 octets of lengths and version: a
 * 1-byte key and an empty value take 4 on the wire, 20 in the arena), less 256 MiB for an
 * overwritten entry's old copy while its new one is written. A quota above this (about 805 MB)
 * is counted as this, so both ends refuse rather than fail.
 */
export const MAP_MAX_BYTES = Math.floor((2 ** 32 - 2 ** 28) / 5);

/** A map register's effective octet quota. */
export const mapMaxBytes = (q: Quota): number => Math.min(q.maxBytes, MAP_MAX_BYTES);

/** Each field's larger value. */
export const quotaMax = (a: Quota, b: Quota): Quota => ({
  maxKeys: Math.max(a.maxKeys, b.maxKeys),
  maxBytes: Math.max(a.maxBytes, b.maxBytes),
  maxValueBytes: Math.max(a.maxValueBytes, b.maxValueBytes),
});

export const QUOTA_DEFAULTS: Quota = { maxKeys: 1_000_000, maxBytes: 256 * 1024 * 1024, maxValueBytes: DEFAULT_MAX_VALUE_BYTES };

/**
 * The size a register would have as committed deltas are applied one after another (one
 * collapse). Keys written earlier in the same collapse are tracked here, so the check
 * reads the state only for keys this collapse has not touched.
 */
export class QuotaCheck {
  private keys: number;
  private bytes: number;
  /** Entry size of each key touched so far (-1: absent now); only once exact. */
  private readonly touched = new Map<string, number>();
  /**
   * Until a delta could reach the quota, growth is counted as an upper bound (every set a new
   * key of its full size) and nothing per key is kept: what the bound admits, the exact count
   * admits too. When the bound first comes short, counting turns exact: if the state has not
   * changed since this check began (follower, domain), the deltas admitted so far are
   * replayed; if it has, the caller applied each admitted delta (sequencer), so the state
   * itself is the exact count.
   */
  private exact = false;
  private readonly admitted: Delta[] = [];
  private readonly admittedAt: number[] = [];
  /** The state's write count (map) or length (stream) when this check began. */
  private readonly mark: number;
  /** quota.maxBytes, for a map at most MAP_MAX_BYTES. */
  private readonly maxBytes: number;

  constructor(
    private readonly state: MapState | StreamState,
    private readonly quota: Quota,
  ) {
    this.keys = state instanceof MapState ? state.size() : 0;
    this.bytes = state.fullTransferBytes();
    this.mark = state instanceof MapState ? state.writes : state.size();
    this.maxBytes = state instanceof MapState ? mapMaxBytes(quota) : quota.maxBytes;
  }

  /**
   * 0 when applying `d` at version `v` keeps the register within quota (or does not grow it); the
   * effect is then counted. A txn is admitted whole or not at all: a refused one leaves no trace.
   * The state must not change while the check lives, except by applying every admitted delta.
   */
  admit(d: Delta, v: number): 0 | RejectReason.QuotaExceeded {
    if (this.exact) return this.admitExact(d, v);
    if (deltaValueLen(d) > this.quota.maxValueBytes) return RejectReason.QuotaExceeded;
    const st = this.state;
    const map = st instanceof MapState;
    let keys = 0;
    let bytes = 0;
    if (d.op !== DeltaOp.Txn) {
      bytes = growthBound(d, map, v);
      if (map && (d.op === DeltaOp.Set || d.op === DeltaOp.Cas)) keys = 1;
    } else {
      for (const o of d.ops) {
        bytes += growthBound(o, map, v);
        if (map && (o.op === DeltaOp.Set || o.op === DeltaOp.Cas)) keys++;
      }
    }
    if (this.keys + keys <= this.quota.maxKeys && this.bytes + bytes <= this.maxBytes) {
      this.keys += keys;
      this.bytes += bytes;
      this.admitted.push(d);
      this.admittedAt.push(v);
      return 0;
    }
    this.exact = true;
    this.keys = map ? st.size() : 0;
    this.bytes = st.fullTransferBytes();
    // Unchanged since the check began: replay what it admitted. Changed: the caller applied that, and the state counts it.
    if ((map ? st.writes : st.size()) === this.mark)
      for (let i = 0; i < this.admitted.length; i++) this.admitExact(this.admitted[i], this.admittedAt[i]);
    this.admitted.length = 0;
    this.admittedAt.length = 0;
    return this.admitExact(d, v);
  }

  private admitExact(d: Delta, v: number): 0 | RejectReason.QuotaExceeded {
    if (d.op !== DeltaOp.Txn) return this.admitOne(d, v);
    // A txn's values together are bounded like one value (a peer's candidate; local ones are refused at propose).
    if (deltaValueLen(d) > this.quota.maxValueBytes) return RejectReason.QuotaExceeded;
    const keys = this.keys;
    const bytes = this.bytes;
    const before = new Map<string, number | undefined>();
    for (const o of d.ops) {
      if (o.op !== DeltaOp.Append) {
        const k = latin1(o.key);
        if (!before.has(k)) before.set(k, this.touched.get(k));
      }
      if (this.admitOne(o, v) !== 0) {
        this.keys = keys;
        this.bytes = bytes;
        for (const [k, t] of before) {
          if (t === undefined) this.touched.delete(k);
          else this.touched.set(k, t);
        }
        return RejectReason.QuotaExceeded;
      }
    }
    return 0;
  }

  private admitOne(d: SimpleDelta, v: number): 0 | RejectReason.QuotaExceeded {
    const st = this.state;
    // A value over the register's limit (a peer's candidate; local ones are refused at propose).
    if (deltaValueLen(d) > this.quota.maxValueBytes) return RejectReason.QuotaExceeded;
    if (d.op === DeltaOp.Append) {
      if (st instanceof MapState) return 0; // the wrong kind: never applied
      const bytes = this.bytes + d.data.length;
      if (bytes > this.maxBytes && d.data.length > 0) return RejectReason.QuotaExceeded;
      this.bytes = bytes;
      return 0;
    }
    if (!(st instanceof MapState)) return 0;
    const k = latin1(d.key);
    let prev = this.touched.get(k);
    prev ??= st.entryLenOf(d.key);
    if (d.op === DeltaOp.Del) {
      if (prev >= 0) {
        this.keys--;
        this.bytes -= prev;
      }
      this.touched.set(k, -1);
      return 0;
    }
    const len = entryWireLen({ key: d.key, value: d.value, version: v });
    const keys = this.keys + (prev < 0 ? 1 : 0);
    const bytes = this.bytes - Math.max(prev, 0) + len;
    if ((keys > this.quota.maxKeys && keys > this.keys) || (bytes > this.maxBytes && bytes > this.bytes)) return RejectReason.QuotaExceeded;
    this.keys = keys;
    this.bytes = bytes;
    this.touched.set(k, len);
    return 0;
  }
}

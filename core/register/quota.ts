/**
 * Register quotas (docs/PROTOCOL.md §7.8): the most keys and octets a register may hold,
 * whoever wrote them. Part of collapse, so both ends decide alike: the sequencer rejects a
 * candidate that would grow the register past its quota (`quota-exceeded`), and the
 * follower checks every committed record against its own quota before applying it, so a
 * sequencer that ignores the quota cannot make this host hold more.
 */
import { DEFAULT_MAX_VALUE_BYTES } from '../../wire/constants.js';
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

/** A key as a map key (one char per byte). */
const latin1 = (k: Uint8Array): string => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('latin1');

export const QUOTA_DEFAULTS: Quota = { maxKeys: 1_000_000, maxBytes: 256 * 1024 * 1024, maxValueBytes: DEFAULT_MAX_VALUE_BYTES };

/**
 * The size a register would have as committed deltas are applied one after another (one
 * collapse). Keys written earlier in the same collapse are tracked here, so the check
 * reads the state only for keys this collapse has not touched.
 */
export class QuotaCheck {
  private keys: number;
  private bytes: number;
  /** Entry size of each key touched so far (-1: absent now). */
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly state: MapState | StreamState,
    private readonly quota: Quota,
  ) {
    this.keys = state instanceof MapState ? state.size() : 0;
    this.bytes = state.fullTransferBytes();
  }

  /**
   * 0 when applying `d` at version `v` keeps the register within quota (or does not grow it); the
   * effect is then counted. A txn is admitted whole or not at all: a refused one leaves no trace.
   */
  admit(d: Delta, v: number): 0 | RejectReason.QuotaExceeded {
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
      if (bytes > this.quota.maxBytes && d.data.length > 0) return RejectReason.QuotaExceeded;
      this.bytes = bytes;
      return 0;
    }
    if (!(st instanceof MapState)) return 0;
    const k = latin1(d.key);
    let prev = this.touched.get(k);
    if (prev === undefined) {
      const cur = st.get(d.key);
      prev = cur ? entryWireLen(cur) : -1;
    }
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
    if ((keys > this.quota.maxKeys && keys > this.keys) || (bytes > this.quota.maxBytes && bytes > this.bytes))
      return RejectReason.QuotaExceeded;
    this.keys = keys;
    this.bytes = bytes;
    this.touched.set(k, len);
    return 0;
  }
}

/**
 * Delta encoding (docs/PROTOCOL.md §4). One delta is one operation on one register;
 * the encoding is canonical: the same delta always gives the same bytes.
 */
import { DropReason, MAX_DELTA_LEN, MAX_KEY_LEN, MAX_VALUE_LEN } from './constants.js';
import { Reader, Writer, varintLen } from './buffer.js';
import { WireError } from './errors.js';

export enum DeltaOp {
  Set = 1,
  Del = 2,
  Cas = 3,
  Append = 4,
}

export type Delta =
  | { op: DeltaOp.Set; key: Uint8Array; value: Uint8Array }
  | { op: DeltaOp.Del; key: Uint8Array }
  /** Commit only if the key's version is `expect` (0: the key must be absent). */
  | { op: DeltaOp.Cas; key: Uint8Array; expect: number; value: Uint8Array }
  /** Commit only if the stream's length is `offset`. */
  | { op: DeltaOp.Append; offset: number; data: Uint8Array };

export function encodedDeltaLen(d: Delta): number {
  switch (d.op) {
    case DeltaOp.Set:
      return 1 + varintLen(d.key.length) + d.key.length + varintLen(d.value.length) + d.value.length;
    case DeltaOp.Del:
      return 1 + varintLen(d.key.length) + d.key.length;
    case DeltaOp.Cas:
      return 1 + varintLen(d.key.length) + d.key.length + varintLen(d.expect) + varintLen(d.value.length) + d.value.length;
    case DeltaOp.Append:
      return 1 + varintLen(d.offset) + varintLen(d.data.length) + d.data.length;
  }
}

export function writeDelta(w: Writer, d: Delta): void {
  w.u8(d.op);
  switch (d.op) {
    case DeltaOp.Set:
      w.lenBytes(d.key).lenBytes(d.value);
      return;
    case DeltaOp.Del:
      w.lenBytes(d.key);
      return;
    case DeltaOp.Cas:
      w.lenBytes(d.key).varint(d.expect).lenBytes(d.value);
      return;
    case DeltaOp.Append:
      w.varint(d.offset).lenBytes(d.data);
      return;
  }
}

function readKey(r: Reader, field: string): Uint8Array {
  const k = r.lenBytes(`${field}.key`, MAX_KEY_LEN);
  if (k.length === 0) throw new WireError(DropReason.MalformedPayload, `${field}.key`, 'empty key');
  return k;
}

/** Reads one delta. Key and value are views into the reader's buffer (no copy). */
export function readDelta(r: Reader, field = 'delta'): Delta {
  const start = r.pos;
  const op = r.u8(`${field}.op`);
  let d: Delta;
  switch (op) {
    case DeltaOp.Set:
      d = { op, key: readKey(r, field), value: r.lenBytes(`${field}.value`, MAX_VALUE_LEN) };
      break;
    case DeltaOp.Del:
      d = { op, key: readKey(r, field) };
      break;
    case DeltaOp.Cas:
      d = {
        op,
        key: readKey(r, field),
        expect: r.varint(`${field}.expect`),
        value: r.lenBytes(`${field}.value`, MAX_VALUE_LEN),
      };
      break;
    case DeltaOp.Append:
      d = { op, offset: r.varint(`${field}.offset`), data: r.lenBytes(`${field}.data`, MAX_VALUE_LEN) };
      break;
    default:
      throw new WireError(DropReason.MalformedPayload, `${field}.op`, `unknown delta op ${op}`);
  }
  if (r.pos - start > MAX_DELTA_LEN) {
    throw new WireError(DropReason.MalformedPayload, field, `${r.pos - start} bytes exceeds ${MAX_DELTA_LEN}`);
  }
  return d;
}

export function encodeDelta(d: Delta): Uint8Array {
  const w = new Writer(encodedDeltaLen(d));
  writeDelta(w, d);
  return w.finish();
}

export function decodeDelta(buf: Uint8Array): Delta {
  const r = new Reader(buf);
  const d = readDelta(r);
  r.expectEnd('delta');
  return d;
}

/** The value (map) or appended data (stream) a delta carries: what a register's `maxValueBytes` bounds. */
export function deltaValueLen(d: Delta): number {
  switch (d.op) {
    case DeltaOp.Set:
    case DeltaOp.Cas:
      return d.value.length;
    case DeltaOp.Del:
      return 0;
    case DeltaOp.Append:
      return d.data.length;
  }
}

/**
 * Check a locally proposed delta against the limits a peer will enforce, before it becomes a
 * candidate: the wire's (MAX_KEY_LEN, MAX_VALUE_LEN) and, when given, the register's own value
 * limit. The message names the limit at fault.
 */
export function validateDelta(d: Delta, maxValueBytes = MAX_VALUE_LEN): void {
  if ('key' in d) {
    if (d.key.length === 0) throw new RangeError('delta key is empty');
    if (d.key.length > MAX_KEY_LEN) throw new RangeError(`key is ${d.key.length} bytes; the limit MAX_KEY_LEN is ${MAX_KEY_LEN}`);
  }
  const v = deltaValueLen(d);
  const limit = Math.min(maxValueBytes, MAX_VALUE_LEN);
  if (v > limit) {
    throw new RangeError(
      limit < MAX_VALUE_LEN
        ? `value is ${v} bytes; register cfg limit maxValueBytes is ${limit}`
        : `value is ${v} bytes; the limit MAX_VALUE_LEN is ${MAX_VALUE_LEN}`,
    );
  }
}

/** Why a candidate was rejected at collapse. 0 on the wire means committed. */
export enum RejectReason {
  CasMismatch = 1,
  AppendOffset = 2,
  WrongKind = 3,
  /** The register would hold more keys or octets than its quota (PROTOCOL.md §7.8). */
  QuotaExceeded = 4,
}

export const REJECT_REASON_NAMES: Record<RejectReason, string> = {
  [RejectReason.CasMismatch]: 'cas-version-mismatch',
  [RejectReason.AppendOffset]: 'append-offset-mismatch',
  [RejectReason.WrongKind]: 'wrong-register-kind',
  [RejectReason.QuotaExceeded]: 'quota-exceeded',
};

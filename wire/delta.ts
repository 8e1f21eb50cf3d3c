/**
 * Delta encoding (docs/PROTOCOL.md §4). One delta is one operation on one register, or a
 * transaction (§4.2): a bounded list of such operations decided together. The encoding is
 * canonical: the same delta always gives the same bytes.
 */
import { DropReason, MAX_DELTA_LEN, MAX_KEY_LEN, MAX_TXN_OPS, MAX_VALUE_LEN } from './constants.js';
import { Reader, Writer, varintLen } from './buffer.js';
import { WireError } from './errors.js';

export enum DeltaOp {
  Set = 1,
  Del = 2,
  Cas = 3,
  Append = 4,
  /** A pair transaction (§4.2): 1-MAX_TXN_OPS simple deltas on one register, all committed or none. */
  Txn = 5,
  /** A cross-register transaction of a pair (wire/cross.ts, §4.6): parts on 2-16 registers, all committed or none. */
  Cross = 6,
  /** One register's part of a committed cross-register transaction, in that register's Collapse record (wire/cross.ts). */
  Part = 7,
}

/** One operation: what a transaction is made of. */
export type SimpleDelta =
  | { op: DeltaOp.Set; key: Uint8Array; value: Uint8Array }
  | { op: DeltaOp.Del; key: Uint8Array }
  /** Commit only if the key's version is `expect` (0: the key must be absent). */
  | { op: DeltaOp.Cas; key: Uint8Array; expect: number; value: Uint8Array }
  /** Commit only if the stream's length is `offset`. */
  | { op: DeltaOp.Append; offset: number; data: Uint8Array };

/**
 * A transaction: its ops are checked together (map: distinct keys, each cas against the register
 * before the txn; stream: each append at the offset the previous one leaves) and applied in order
 * at one version, or none is. No nesting.
 */
export interface TxnDelta {
  op: DeltaOp.Txn;
  ops: SimpleDelta[];
}

export type Delta = SimpleDelta | TxnDelta;

/** Whether `d` is a stream's op (an append, or a txn of appends) rather than a map's: a txn's ops are all of one kind (txnFault). */
export function isStreamDelta(d: Delta): boolean {
  return (d.op === DeltaOp.Txn ? d.ops[0]?.op : d.op) === DeltaOp.Append;
}

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
    case DeltaOp.Txn: {
      let n = 1 + varintLen(d.ops.length);
      for (const o of d.ops) n += encodedDeltaLen(o);
      return n;
    }
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
    case DeltaOp.Txn:
      w.varint(d.ops.length);
      for (const o of d.ops) writeDelta(w, o);
      return;
  }
}

function readKey(r: Reader, field: string): Uint8Array {
  const k = r.lenBytes(`${field}.key`, MAX_KEY_LEN);
  if (k.length === 0) throw new WireError(DropReason.MalformedPayload, `${field}.key`, 'empty key');
  return k;
}

/** The key of a map op as a string (latin1: one char per byte), for duplicate checks. */
export function keyString(k: Uint8Array): string {
  let s = '';
  for (let i = 0; i < k.length; i += 4096) s += String.fromCharCode(...k.subarray(i, i + 4096));
  return s;
}

/**
 * Why a transaction's op list is not valid, or undefined: 1-MAX_TXN_OPS ops, none a txn, not
 * map and stream ops mixed, no key twice (the checks a peer's decoder and a local proposal share).
 */
export function txnFault(ops: readonly Delta[]): { op: number | undefined; why: string } | undefined {
  if (ops.length === 0 || ops.length > MAX_TXN_OPS) return { op: undefined, why: `${ops.length} ops (1-${MAX_TXN_OPS})` };
  const appends = ops[0].op === DeltaOp.Append;
  const keys = new Set<string>();
  for (let i = 0; i < ops.length; i++) {
    const o = ops[i];
    if (o.op === DeltaOp.Txn) return { op: i, why: 'a txn inside a txn' };
    if ((o.op === DeltaOp.Append) !== appends) return { op: i, why: 'map and stream ops mixed' };
    if (o.op === DeltaOp.Append) continue;
    const k = keyString(o.key);
    if (keys.has(k)) return { op: i, why: 'a key the txn already writes' };
    keys.add(k);
  }
  return undefined;
}

/**
 * Reads one delta. Key and value are views into the reader's buffer (no copy). A transaction
 * (op 5) is read only where `txn` allows it (pair candidates, collapse records, the pending
 * journal); elsewhere (domain candidates, inside a txn) op 5 is unknown.
 */
export function readDelta(r: Reader, field = 'delta', txn = false): Delta {
  return readSetFast(r) ?? readDeltaChecked(r, field, txn);
}

/** Where shortSetAt leaves a set's key and value: offsets into the buffer it read (no view, no object). */
export const shortSet = { koff: 0, klen: 0, voff: 0, vlen: 0 };

/**
 * A set with short lengths (1-byte key length, value length under 2^14) at buf[p, end), read in
 * place: its end, with key and value offsets left in `shortSet`; -1 for anything else or anything
 * malformed (which readDeltaChecked then reads, and names the fault). The common delta, without
 * a field name, an object or a view per read.
 */
export function shortSetAt(buf: Uint8Array, p: number, end: number): number {
  const start = p;
  if (end - p < 3 || buf[p] !== DeltaOp.Set) return -1;
  const klen = buf[p + 1];
  if (klen === 0 || klen >= 0x80 || klen > MAX_KEY_LEN) return -1;
  p += 2;
  const kend = p + klen;
  if (kend + 1 > end) return -1;
  let vlen = buf[kend];
  let vstart = kend + 1;
  if (vlen >= 0x80) {
    if (vstart >= end) return -1;
    const hi = buf[vstart];
    // Two bytes at most, minimal (no zero last byte).
    if (hi === 0 || hi >= 0x80) return -1;
    vlen = (vlen & 0x7f) | (hi << 7);
    vstart++;
  }
  const vend = vstart + vlen;
  if (vend > end || vlen > MAX_VALUE_LEN || vend - start > MAX_DELTA_LEN) return -1;
  shortSet.koff = p;
  shortSet.klen = klen;
  shortSet.voff = vstart;
  shortSet.vlen = vlen;
  return vend;
}

/**
 * A short set (shortSetAt) as a delta whose key and value view the reader's buffer; undefined
 * (reader untouched) for anything else, left to readDeltaChecked.
 */
export function readSetFast(r: Reader): Delta | undefined {
  const buf = r.buf;
  const e = shortSetAt(buf, r.pos, r.end);
  if (e < 0) return undefined;
  r.pos = e;
  const { koff, klen, voff, vlen } = shortSet;
  return { op: DeltaOp.Set, key: buf.subarray(koff, koff + klen), value: buf.subarray(voff, voff + vlen) };
}

function readDeltaChecked(r: Reader, field: string, txn: boolean): Delta {
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
    case DeltaOp.Txn: {
      if (!txn) throw new WireError(DropReason.MalformedPayload, `${field}.op`, `delta op ${op} (txn) is not allowed here`);
      const n = r.varint(`${field}.ops`);
      if (n === 0 || n > MAX_TXN_OPS) throw new WireError(DropReason.MalformedPayload, `${field}.ops`, `${n} ops (1-${MAX_TXN_OPS})`);
      const ops: SimpleDelta[] = [];
      for (let i = 0; i < n; i++) {
        ops.push(readDelta(r, `${field}.ops[${i}]`) as SimpleDelta);
        // Bounded as it is read, not after: a long list of large ops stops at the limit.
        if (r.pos - start > MAX_DELTA_LEN) throw new WireError(DropReason.MalformedPayload, field, `txn exceeds ${MAX_DELTA_LEN} bytes`);
      }
      const bad = txnFault(ops);
      if (bad) throw new WireError(DropReason.MalformedPayload, `${field}.ops[${bad.op}]`, bad.why);
      d = { op: DeltaOp.Txn, ops };
      break;
    }
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

export function decodeDelta(buf: Uint8Array, txn = false): Delta {
  const r = new Reader(buf);
  const d = readDelta(r, 'delta', txn);
  r.expectEnd('delta');
  return d;
}

/**
 * The value (map) or appended data (stream) a delta carries, what a register's `maxValueBytes`
 * bounds: for a txn, the sum of its ops' (it crosses as one message, which the receiver's
 * reassembly quota, sized from maxValueBytes, must be able to hold).
 */
export function deltaValueLen(d: Delta): number {
  switch (d.op) {
    case DeltaOp.Set:
    case DeltaOp.Cas:
      return d.value.length;
    case DeltaOp.Del:
      return 0;
    case DeltaOp.Append:
      return d.data.length;
    case DeltaOp.Txn:
      return d.ops.reduce((sum, o) => sum + deltaValueLen(o), 0);
  }
}

/**
 * Check a locally proposed delta against the limits a peer will enforce, before it becomes a
 * candidate: the wire's (MAX_KEY_LEN, MAX_VALUE_LEN, a txn's shape and MAX_DELTA_LEN) and, when
 * given, the register's own value limit. The message names the limit at fault.
 */
export function validateDelta(d: Delta, maxValueBytes = MAX_VALUE_LEN): void {
  if (d.op === DeltaOp.Txn) {
    const bad = txnFault(d.ops);
    if (bad) throw new RangeError(bad.op === undefined ? `txn has ${bad.why}` : `txn op ${bad.op}: ${bad.why}`);
    for (let i = 0; i < d.ops.length; i++) {
      const o = d.ops[i];
      if ('key' in o && o.key.length === 0) throw new RangeError(`txn op ${i}: key is empty`);
      if ('key' in o && o.key.length > MAX_KEY_LEN)
        throw new RangeError(`txn op ${i}: key is ${o.key.length} bytes; the limit MAX_KEY_LEN is ${MAX_KEY_LEN}`);
    }
    const len = encodedDeltaLen(d);
    if (len > MAX_DELTA_LEN) throw new RangeError(`txn encodes to ${len} bytes; the limit MAX_DELTA_LEN is ${MAX_DELTA_LEN}`);
  }
  if ('key' in d) {
    if (d.key.length === 0) throw new RangeError('delta key is empty');
    if (d.key.length > MAX_KEY_LEN) throw new RangeError(`key is ${d.key.length} bytes; the limit MAX_KEY_LEN is ${MAX_KEY_LEN}`);
  }
  const v = deltaValueLen(d);
  const limit = Math.min(maxValueBytes, MAX_VALUE_LEN);
  if (v > limit) {
    const what = d.op === DeltaOp.Txn ? `txn values total ${v} bytes` : `value is ${v} bytes`;
    throw new RangeError(
      limit < MAX_VALUE_LEN
        ? `${what}; register cfg limit maxValueBytes is ${limit}`
        : `${what}; the limit MAX_VALUE_LEN is ${MAX_VALUE_LEN}`,
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

/**
 * Cross-register transactions of a pair (docs/PROTOCOL.md §4.6): what a candidate or a collapse
 * entry carries beyond one register's delta.
 *
 * - op 6 `cross`: a candidate over 2-MAX_CROSS_PARTS registers of the pair, proposed on its
 *   first part's register (the anchor), decided whole by the anchor's collapse;
 * - op 7 `part`: in another register's Collapse record, that register's share of a committed
 *   `cross`, naming the anchor and the anchor's version.
 *
 * `at` in a part is the version the part commits at in its register: 0 in a proposal (and the
 * pending journal), set by the sequencer in the anchor's Collapse entry, so every end knows
 * which record of each register holds each part.
 */
import { Reader, Writer, varintLen } from './buffer.js';
import { DropReason, MAX_DELTA_LEN, MAX_TXN_OPS } from './constants.js';
import { DeltaOp, deltaValueLen, encodedDeltaLen, readDelta, validateDelta, writeDelta, type Delta } from './delta.js';
import { WireError } from './errors.js';
import { nameBytes, readName, writeName } from './names.js';

/** Most registers one cross-register transaction spans. */
export const MAX_CROSS_PARTS = 16;

/** One register's share of a cross-register transaction: one delta (a single op or an op-5 txn). */
export interface CrossPart {
  register: string;
  /** The version this part commits at in `register`: 0 in a proposal, set by the sequencer in a record. */
  at: number;
  delta: Delta;
}

/** Op 6: parts on distinct registers; parts[0] is the anchor, the register the candidate is proposed on. */
export interface CrossDelta {
  op: DeltaOp.Cross;
  parts: CrossPart[];
}

/** Op 7: in a Collapse record of another register, its part of the `cross` entry committed at `anchor` v`anchorVersion`. */
export interface PartDelta {
  op: DeltaOp.Part;
  anchor: string;
  anchorVersion: number;
  delta: Delta;
}

/** What a pair candidate (op 1-6) or a collapse entry (op 1-7) carries. */
export type EntryDelta = Delta | CrossDelta | PartDelta;

/** Where an entry delta is read: a candidate (Propose, pending journal) or a Collapse record. */
export type EntryContext = 'candidate' | 'record';

export function encodedEntryDeltaLen(d: EntryDelta): number {
  switch (d.op) {
    case DeltaOp.Cross: {
      let n = 1 + varintLen(d.parts.length);
      for (const p of d.parts) {
        const nb = nameBytes(p.register);
        n += varintLen(nb) + nb + varintLen(p.at) + encodedDeltaLen(p.delta);
      }
      return n;
    }
    case DeltaOp.Part: {
      const nb = nameBytes(d.anchor);
      return 1 + varintLen(nb) + nb + varintLen(d.anchorVersion) + encodedDeltaLen(d.delta);
    }
    default:
      return encodedDeltaLen(d);
  }
}

export function writeEntryDelta(w: Writer, d: EntryDelta): void {
  switch (d.op) {
    case DeltaOp.Cross:
      w.u8(d.op).varint(d.parts.length);
      for (const p of d.parts) {
        writeName(w, p.register);
        w.varint(p.at);
        writeDelta(w, p.delta);
      }
      return;
    case DeltaOp.Part:
      w.u8(d.op);
      writeName(w, d.anchor);
      w.varint(d.anchorVersion);
      writeDelta(w, d.delta);
      return;
    default:
      writeDelta(w, d);
  }
}

/**
 * Reads a candidate's or a record entry's delta: ops 1-5 as readDelta, op 6 in both, op 7 in a
 * record only. Shape checks here (counts, distinct registers, `at` 0 in a candidate and set in a
 * record, the whole within MAX_DELTA_LEN, each `at` counted as in a candidate); which registers
 * exist is the receiver's to check.
 */
export function readEntryDelta(r: Reader, field: string, where: EntryContext): EntryDelta {
  const start = r.pos;
  const op = r.buf[r.pos];
  if (op !== DeltaOp.Cross && op !== DeltaOp.Part) return readDelta(r, field, true);
  r.u8(`${field}.op`);
  const fault = (f: string, why: string): WireError => new WireError(DropReason.MalformedPayload, f, why);
  // Octets the parts' `at` versions take beyond the one each takes in a candidate: a record's
  // entry is bounded as the candidate it was (rev 1.34), so every candidate accepted can be
  // logged and sent once the sequencer has filled in its versions.
  let atExtra = 0;
  const bounded = (): void => {
    // Checked while reading, so a long list of large parts stops at the limit.
    if (r.pos - start - atExtra > MAX_DELTA_LEN) throw fault(field, `cross-register txn exceeds ${MAX_DELTA_LEN} bytes`);
  };
  if (op === DeltaOp.Part) {
    if (where !== 'record') throw fault(`${field}.op`, 'delta op 7 (part) is only in a Collapse record');
    const anchor = readName(r, `${field}.anchor`);
    const anchorVersion = r.varint(`${field}.anchorVersion`);
    if (anchorVersion === 0) throw fault(`${field}.anchorVersion`, 'anchor version 0');
    const delta = readDelta(r, `${field}.delta`, true);
    bounded();
    return { op: DeltaOp.Part, anchor, anchorVersion, delta };
  }
  const k = r.varint(`${field}.parts`);
  if (k < 2 || k > MAX_CROSS_PARTS) throw fault(`${field}.parts`, `${k} parts (2-${MAX_CROSS_PARTS})`);
  const parts: CrossPart[] = [];
  const seen = new Set<string>();
  let ops = 0;
  for (let i = 0; i < k; i++) {
    const f = `${field}.parts[${i}]`;
    const register = readName(r, `${f}.register`);
    if (seen.has(register)) throw fault(`${f}.register`, `register ${register} has two parts`);
    seen.add(register);
    const at = r.varint(`${f}.at`);
    if (where === 'candidate' && at !== 0) throw fault(`${f}.at`, `version ${at} in a candidate (0: the sequencer sets it)`);
    if (where === 'record' && at === 0) throw fault(`${f}.at`, 'version 0 in a record');
    atExtra += varintLen(at) - 1;
    const delta = readDelta(r, `${f}.delta`, true);
    ops += delta.op === DeltaOp.Txn ? delta.ops.length : 1;
    if (ops > MAX_TXN_OPS) throw fault(`${f}.delta`, `more than ${MAX_TXN_OPS} ops in all`);
    bounded();
    parts.push({ register, at, delta });
  }
  return { op: DeltaOp.Cross, parts };
}

export function decodeEntryDelta(buf: Uint8Array, where: EntryContext): EntryDelta {
  const r = new Reader(buf);
  const d = readEntryDelta(r, 'delta', where);
  r.expectEnd('delta');
  return d;
}

/** The delta of `register` in an entry: the part naming it, the part's inner delta, or the delta itself. */
export function partFor(d: EntryDelta, register: string): Delta | undefined {
  if (d.op === DeltaOp.Cross) return d.parts.find((p) => p.register === register)?.delta;
  if (d.op === DeltaOp.Part) return d.delta;
  return d;
}

/** The delta an entry applies to the register whose record holds it (a cross entry: its anchor part). */
export function ownPart(d: EntryDelta): Delta {
  if (d.op === DeltaOp.Cross) return d.parts[0].delta;
  if (d.op === DeltaOp.Part) return d.delta;
  return d;
}

/** Value octets the entry carries in all (what the message crossing holds; for a cross txn, every part's). */
export function entryValueLen(d: EntryDelta): number {
  if (d.op === DeltaOp.Cross) return d.parts.reduce((n, p) => n + deltaValueLen(p.delta), 0);
  return deltaValueLen(d.op === DeltaOp.Part ? d.delta : d);
}

/**
 * Check a local cross-register txn's shape (what a peer's decoder enforces) and each part against
 * `limit(register)`, the register's maxValueBytes (undefined: no such register). Throws RangeError
 * naming the part at fault.
 */
export function validateCross(d: CrossDelta, anchor: string, limit: (register: string) => number | undefined): void {
  const k = d.parts.length;
  if (k < 2 || k > MAX_CROSS_PARTS) throw new RangeError(`cross-register txn has ${k} parts (2-${MAX_CROSS_PARTS})`);
  if (d.parts[0].register !== anchor)
    throw new RangeError(`part 0 names register ${d.parts[0].register}, not ${anchor}, the register it is proposed on`);
  const seen = new Set<string>();
  let ops = 0;
  d.parts.forEach((p, i) => {
    if (seen.has(p.register)) throw new RangeError(`part ${i}: register ${p.register} has two parts`);
    seen.add(p.register);
    const max = limit(p.register);
    if (max === undefined) throw new RangeError(`part ${i}: no register ${p.register} in this pair`);
    if (p.at !== 0) throw new RangeError(`part ${i}: at must be 0 in a proposal`);
    try {
      validateDelta(p.delta, max);
    } catch (e) {
      throw new RangeError(`part ${i} (register ${p.register}): ${(e as Error).message}`);
    }
    ops += p.delta.op === DeltaOp.Txn ? p.delta.ops.length : 1;
  });
  if (ops > MAX_TXN_OPS) throw new RangeError(`cross-register txn has ${ops} ops; the limit MAX_TXN_OPS is ${MAX_TXN_OPS}`);
  const len = encodedEntryDeltaLen(d);
  if (len > MAX_DELTA_LEN) throw new RangeError(`cross-register txn encodes to ${len} bytes; the limit MAX_DELTA_LEN is ${MAX_DELTA_LEN}`);
}

export function encodeEntryDelta(d: EntryDelta): Uint8Array {
  const w = new Writer(encodedEntryDeltaLen(d));
  writeEntryDelta(w, d);
  return w.finish();
}

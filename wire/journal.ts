/**
 * Layouts of what spookd keeps on disk (docs/PROTOCOL.md §10.1 for pairs, §15.8 for QN
 * domains): record framing, the domain journal's records and snapshot file, and a pair
 * register's snapshot, pending and lease files. Codecs only: the stores (drivers/store/) do
 * the I/O. Checksums are SHA-256 and injected (wire does no cryptography).
 */
import { Reader, Writer, type Hash64Parts } from './buffer.js';
import { readEntryDelta, writeEntryDelta, type EntryDelta } from './cross.js';
import { REJECT_REASON_NAMES, type RejectReason } from './delta.js';
import { MAX_KEY_LEN, MAX_MESSAGE_LEN, MAX_REGISTER_NAME_LEN, MAX_VALUE_LEN } from './constants.js';
import { MAX_QN_MESSAGE_LEN } from './qn.js';

/** SHA-256 of the concatenated parts (crypto/primitives.ts `hash('SHA256', ...)` in the stores). */
export type Sha256 = (...parts: Uint8Array[]) => Uint8Array;

/** A malformed file: the store adds its path. */
export class JournalFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JournalFormatError';
  }
}

// ---------------------------------------------------------------- framing

/** Every record of a log, pending list or journal: `u32 length` || SHA-256(record)[0..4] || record. */
export const RECORD_HEADER = 8;
/**
 * Largest pair log or pending record: one Collapse message (a follower's with its own deltas put
 * back is at most MAX_MESSAGE_LEN whole, rev 1.34), or a pending candidate. The store refuses to
 * write a larger one; larger on disk is damage.
 */
export const MAX_PAIR_RECORD = MAX_MESSAGE_LEN + 64 * 1024;
/**
 * Largest domain journal record (rev 1.34; 16 MiB before, less than one write may take): an
 * Append of the entries of one QN message (MAX_QN_MESSAGE_LEN), each with its index added (at
 * most 8 octets, at most 4,096 entries), or a Pending candidate (one entry). A rewrite splits its
 * Append records within it; the store refuses to write a larger one.
 */
export const MAX_JOURNAL_RECORD = MAX_QN_MESSAGE_LEN + 64 * 1024;

/** A framed record; one larger than `max`, which no reader would take back, is refused (RangeError). */
export function frameRecord(rec: Uint8Array, sha256: Sha256, max = Infinity): Uint8Array {
  if (rec.length > max) throw new RangeError(`a record of ${rec.length} octets exceeds the limit of ${max}: not written`);
  const out = new Uint8Array(RECORD_HEADER + rec.length);
  new DataView(out.buffer).setUint32(0, rec.length);
  out.set(sha256(rec).subarray(0, 4), 4);
  out.set(rec, RECORD_HEADER);
  return out;
}

/**
 * The framed records of a file up to the first torn or corrupt one (length 0, above `max`,
 * past the end, or a checksum that does not match), each with its offset; `end` is where the
 * valid prefix ends (the file's length when nothing is torn).
 */
export function readFrames(buf: Uint8Array, max: number, sha256: Sha256): { records: { offset: number; rec: Uint8Array }[]; end: number } {
  const records: { offset: number; rec: Uint8Array }[] = [];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (buf.length - off >= RECORD_HEADER) {
    const len = view.getUint32(off);
    if (len === 0 || len > max || off + RECORD_HEADER + len > buf.length) break;
    const rec = buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + len);
    const sum = sha256(rec);
    if (sum[0] !== buf[off + 4] || sum[1] !== buf[off + 5] || sum[2] !== buf[off + 6] || sum[3] !== buf[off + 7]) break;
    records.push({ offset: off, rec: rec.slice() });
    off += RECORD_HEADER + len;
  }
  return { records, end: off };
}

/** A disk sector: a crash leaves unwritten ones whole, all zeros where a file was extended. */
const SECTOR = 512;

/**
 * Whether the bad record at `end` (readFrames) is damage rather than a torn tail, and where the
 * whole records after it start (-1: a torn tail). Damage: the bad record's own length is intact
 * and whole, checksum-valid records follow it exactly to the end of the file, and no aligned
 * sector starting in it is all zeros (zeroSector). A crash leaves none of that: its last record is cut short (its length
 * points past the end), or the unwritten part of a batch reads as zeros. A length above the
 * readers' limit is no tear either (rev 1.34): records of any length are walked, so one too large
 * to read is refused with what follows it, never cut. Only the offsets the
 * records' own lengths name are read, never any other: a value that holds a frame-shaped run of
 * octets (a peer's, a client's) is inside its record and never taken for one. Linear: one hash
 * per record after the bad one. What this cannot tell from a tear (a damaged length, a zeroed
 * sector) is cut as before.
 */
export function damagedAt(buf: Uint8Array, end: number, sha256: Sha256): number {
  if (buf.length - end < RECORD_HEADER) return -1;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const frameEnd = (off: number): number => {
    const len = view.getUint32(off);
    return len === 0 ? -1 : off + RECORD_HEADER + len;
  };
  const next = frameEnd(end);
  if (next < 0 || next >= buf.length || zeroSector(buf, end, next)) return -1;
  for (let off = next; off < buf.length;) {
    if (buf.length - off < RECORD_HEADER) return -1;
    const to = frameEnd(off);
    if (to < 0 || to > buf.length) return -1;
    const sum = sha256(buf.subarray(off + RECORD_HEADER, to));
    if (sum[0] !== buf[off + 4] || sum[1] !== buf[off + 5] || sum[2] !== buf[off + 6] || sum[3] !== buf[off + 7]) return -1;
    off = to;
  }
  return next;
}

/**
 * Whether an aligned sector of the file that starts within [from, to) is all zeros. It may run
 * past `to` into the next record: an unwritten sector ending on that record's first octets (its
 * length's high octets, zeros already) leaves it whole, and was taken for damage before. One
 * starting before `from` is not looked at: it either ends on the bad record's own zero length
 * octets (and does not explain the damage) or zeroes its length (read as a tear already).
 */
function zeroSector(buf: Uint8Array, from: number, to: number): boolean {
  for (let s = Math.ceil(from / SECTOR) * SECTOR; s < to && s + SECTOR <= buf.length; s += SECTOR) {
    let i = s;
    while (i < s + SECTOR && buf[i] === 0) i++;
    if (i === s + SECTOR) return true;
  }
  return false;
}

// ---------------------------------------------------------------- domain journal (§15.8)

export enum JournalRecordType {
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

export interface JournalEntry {
  readonly term: number;
  readonly index: number;
  readonly cmd: Uint8Array;
}

export type JournalRecord =
  | { readonly type: JournalRecordType.Hard; readonly term: number; readonly vote: number }
  | { readonly type: JournalRecordType.Append; readonly entries: readonly JournalEntry[] }
  | { readonly type: JournalRecordType.Truncate; readonly from: number }
  | { readonly type: JournalRecordType.Compact; readonly base: number; readonly baseTerm: number; readonly reset: boolean }
  | { readonly type: JournalRecordType.Pending; readonly seq: number; readonly cmd: Uint8Array }
  | { readonly type: JournalRecordType.Drop; readonly seq: number }
  | { readonly type: JournalRecordType.NextSeq; readonly nextSeq: number }
  | { readonly type: JournalRecordType.Commit; readonly commit: number };

export function encodeJournalRecord(r: JournalRecord): Uint8Array {
  const w = new Writer(64).u8(r.type);
  switch (r.type) {
    case JournalRecordType.Hard:
      w.varint(r.term).varint(r.vote);
      break;
    case JournalRecordType.Append:
      w.varint(r.entries.length);
      for (const e of r.entries) w.varint(e.term).varint(e.index).lenBytes(e.cmd);
      break;
    case JournalRecordType.Truncate:
      w.varint(r.from);
      break;
    case JournalRecordType.Compact:
      w.varint(r.base)
        .varint(r.baseTerm)
        .u8(r.reset ? 1 : 0);
      break;
    case JournalRecordType.Pending:
      w.varint(r.seq).lenBytes(r.cmd);
      break;
    case JournalRecordType.Drop:
      w.varint(r.seq);
      break;
    case JournalRecordType.NextSeq:
      w.varint(r.nextSeq);
      break;
    case JournalRecordType.Commit:
      w.varint(r.commit);
      break;
  }
  return w.finish();
}

/** Throws a WireError (a field that does not decode) or a JournalFormatError (an unknown type). */
export function decodeJournalRecord(rec: Uint8Array): JournalRecord {
  const r = new Reader(rec);
  let out: JournalRecord;
  const type = r.u8('record.type') as JournalRecordType;
  switch (type) {
    case JournalRecordType.Hard:
      out = { type, term: r.varint('term'), vote: r.varint('vote') };
      break;
    case JournalRecordType.Append: {
      const n = r.varint('entries');
      const entries: JournalEntry[] = [];
      for (let i = 0; i < n; i++)
        entries.push({
          term: r.varint('entry.term'),
          index: r.varint('entry.index'),
          cmd: r.lenBytes('entry.cmd', MAX_JOURNAL_RECORD).slice(),
        });
      out = { type, entries };
      break;
    }
    case JournalRecordType.Truncate:
      out = { type, from: r.varint('from') };
      break;
    case JournalRecordType.Compact:
      out = { type, base: r.varint('base'), baseTerm: r.varint('baseTerm'), reset: r.u8('reset') === 1 };
      break;
    case JournalRecordType.Pending:
      out = { type, seq: r.varint('seq'), cmd: r.lenBytes('cmd', MAX_JOURNAL_RECORD).slice() };
      break;
    case JournalRecordType.Drop:
      out = { type, seq: r.varint('seq') };
      break;
    case JournalRecordType.NextSeq:
      out = { type, nextSeq: r.varint('nextSeq') };
      break;
    case JournalRecordType.Commit:
      out = { type, commit: r.varint('commit') };
      break;
    default:
      throw new JournalFormatError('unknown journal record type');
  }
  r.expectEnd('record');
  return out;
}

/** Entries per Append record when the journal is rewritten whole. */
export const REWRITE_APPEND_CHUNK = 256;

// ---------------------------------------------------------------- domain snapshot file (§15.8)

/** Version 1: the data length-prefixed (still read). */
export const DOMAIN_SNAPSHOT_MAGIC_V1 = new TextEncoder().encode('SPKQSNP1');
/** The current layout (rev 1.20): the data runs to the checksum, so a snapshot written in the background need not know its length first. */
export const DOMAIN_SNAPSHOT_MAGIC = new TextEncoder().encode('SPKQSNP2');

export interface DomainSnapshotHead {
  readonly index: number;
  readonly term: number;
  readonly members: readonly number[];
}

export interface DomainSnapshotFile extends DomainSnapshotHead {
  readonly data: Uint8Array;
}

/** Everything before the data: magic, index, term, members. */
export function writeDomainSnapshotHead(w: Writer, s: DomainSnapshotHead): Writer {
  w.bytes(DOMAIN_SNAPSHOT_MAGIC).varint(s.index).varint(s.term).varint(s.members.length);
  for (const m of s.members) w.varint(m);
  return w;
}

export function encodeDomainSnapshot(s: DomainSnapshotFile, sha256: Sha256): Uint8Array {
  return sealed(
    writeDomainSnapshotHead(new Writer(s.data.length + 64), s)
      .bytes(s.data)
      .finish(),
    sha256,
  );
}

export function decodeDomainSnapshot(buf: Uint8Array, sha256: Sha256): DomainSnapshotFile {
  const v1 = startsWith(buf, DOMAIN_SNAPSHOT_MAGIC_V1);
  if (buf.length < DOMAIN_SNAPSHOT_MAGIC.length + 32 || !(v1 || startsWith(buf, DOMAIN_SNAPSHOT_MAGIC)))
    throw new JournalFormatError('not a domain snapshot');
  const body = unseal(buf, sha256, 'checksum mismatch');
  const r = new Reader(body, DOMAIN_SNAPSHOT_MAGIC.length);
  const index = r.varint('snapshot.index');
  const term = r.varint('snapshot.term');
  const n = r.varint('snapshot.members');
  const members: number[] = [];
  for (let i = 0; i < n; i++) members.push(r.varint('snapshot.member'));
  let data: Uint8Array;
  if (v1) {
    data = r.lenBytes('snapshot.data', 2 ** 40).slice();
    r.expectEnd('snapshot');
  } else data = body.subarray(r.pos); // a view of `buf`, read for this alone
  return { index, term, members, data };
}

// ---------------------------------------------------------------- pair register files (§10.1)

/** The current snapshot layout (version 2: the head carries the peer's unacknowledged rejections, §10.1). */
export const PAIR_SNAPSHOT_MAGIC = new TextEncoder().encode('SPKSNAP2');
/** Version 1 (no rejections), still read: a data directory written before revision 1.8 loads. */
export const PAIR_SNAPSHOT_MAGIC_V1 = new TextEncoder().encode('SPKSNAP1');
/** Stream snapshots are written in chunks of this many octets. */
export const PAIR_SNAPSHOT_CHUNK = 1 << 20;

export enum PairSnapshotKind {
  Map = 1,
  Stream = 2,
}

export interface PairSnapshotHead {
  /** 1 (SPKSNAP1, read only) or 2. */
  readonly format: 1 | 2;
  readonly kind: PairSnapshotKind;
  readonly version: number;
  readonly hash: Hash64Parts;
  /** Causal marks: per origin, the highest candidate sequence decided. */
  readonly origins: ReadonlyMap<number, number>;
  /**
   * The sequencer's §8.5 list: seq → reason of each rejected candidate of the peer that the
   * peer had not acknowledged (empty on a follower, and in a version 1 file).
   */
  readonly rejections: ReadonlyMap<number, RejectReason>;
}

export type PairSnapshotBody =
  | {
      readonly kind: PairSnapshotKind.Map;
      readonly entries: Iterable<{ key: Uint8Array; version: number; value: Uint8Array }>;
      readonly count: number;
    }
  | { readonly kind: PairSnapshotKind.Stream; readonly chunks: Iterable<Uint8Array>; readonly count: number };

/** Always writes the current format (SPKSNAP2). */
export function encodePairSnapshot(head: Omit<PairSnapshotHead, 'kind' | 'format'>, body: PairSnapshotBody, sha256: Sha256): Uint8Array {
  const w = new Writer(1 << 16);
  writePairSnapshotPrefix(w, head, body.kind, body.count);
  if (body.kind === PairSnapshotKind.Map)
    for (const e of body.entries) writePairSnapshotEntry(w, e.key, 0, e.key.length, e.version, e.value, 0, e.value.length);
  else for (const c of body.chunks) writePairSnapshotChunk(w, c);
  return sealed(w.finish(), sha256);
}

/**
 * A pair snapshot up to its body's entries or chunks: magic, kind, version, hash, origins,
 * rejections and the count. The file is this, the entries or chunks, then the SHA-256 of all
 * of it (encodePairSnapshot at once; drivers/store/snapshot-job.ts a slice at a time).
 */
export function writePairSnapshotPrefix(
  w: Writer,
  head: Omit<PairSnapshotHead, 'kind' | 'format'>,
  kind: PairSnapshotKind,
  count: number,
): void {
  w.bytes(PAIR_SNAPSHOT_MAGIC).u8(kind).varint(head.version).hash64(head.hash);
  w.varint(head.origins.size);
  for (const [o, s] of head.origins) w.varint(o).varint(s);
  w.varint(head.rejections.size);
  for (const [seq, reason] of head.rejections) w.varint(seq).u8(reason);
  w.varint(count);
}

/** One map entry of a pair snapshot: key k[ko, ko + kl), value v[vo, vo + vl) (views need no allocation). */
export function writePairSnapshotEntry(
  w: Writer,
  k: Uint8Array,
  ko: number,
  kl: number,
  version: number,
  v: Uint8Array,
  vo: number,
  vl: number,
): void {
  w.varint(kl).bytesAt(k, ko, kl).varint(version).varint(vl).bytesAt(v, vo, vl);
}

/** One stream chunk of a pair snapshot. */
export function writePairSnapshotChunk(w: Writer, chunk: Uint8Array): void {
  w.lenBytes(chunk);
}

/**
 * A pair snapshot's head, checked (magic, checksum), and a reader positioned at its body for
 * readPairSnapshotBody: the body is decoded straight into the register's state. Reads both
 * formats; a version 1 head has no rejections.
 */
export function decodePairSnapshotHead(buf: Uint8Array, sha256: Sha256): { head: PairSnapshotHead; body: Reader } {
  const format = startsWith(buf, PAIR_SNAPSHOT_MAGIC) ? 2 : startsWith(buf, PAIR_SNAPSHOT_MAGIC_V1) ? 1 : 0;
  if (buf.length < PAIR_SNAPSHOT_MAGIC.length + 32 || format === 0)
    throw new JournalFormatError('not a Spook snapshot (bad magic or too short)');
  const body = unseal(buf, sha256, 'checksum mismatch; refusing to start on a damaged snapshot');
  const r = new Reader(body, PAIR_SNAPSHOT_MAGIC.length);
  const kind = r.u8('snapshot.kind') as PairSnapshotKind;
  const version = r.varint('snapshot.version');
  const hash = r.hash64('snapshot.hash');
  const origins = new Map<number, number>();
  const no = r.varint('snapshot.origins');
  for (let i = 0; i < no; i++) origins.set(r.varint('origin'), r.varint('seq'));
  const rejections = new Map<number, RejectReason>();
  if (format === 2) {
    const nr = r.varint('snapshot.rejections');
    for (let i = 0; i < nr; i++) {
      const seq = r.varint('rejection.seq');
      const reason = r.u8('rejection.reason');
      if (REJECT_REASON_NAMES[reason as RejectReason] === undefined)
        throw new JournalFormatError(`snapshot rejection with unknown reason ${reason}`);
      rejections.set(seq, reason as RejectReason);
    }
  }
  return { head: { format, kind, version, hash, origins, rejections }, body: r };
}

/** Calls `entry` per map entry, or `chunk` per stream chunk, in file order. */
export function readPairSnapshotBody(
  r: Reader,
  kind: PairSnapshotKind,
  entry: (key: Uint8Array, version: number, value: Uint8Array) => void,
  chunk: (data: Uint8Array) => void,
  /** Told how many entries follow (at most the bytes left can hold), before the first: a map sizes its table for them. */
  entries?: (n: number) => void,
): void {
  if (kind === PairSnapshotKind.Map) {
    const n = r.varint('snapshot.entries');
    entries?.(Math.min(n, r.remaining >>> 2));
    for (let i = 0; i < n; i++) {
      const key = r.lenBytes('key', MAX_KEY_LEN).slice();
      const version = r.varint('version');
      entry(key, version, r.lenBytes('value', MAX_VALUE_LEN).slice());
    }
  } else {
    const n = r.varint('snapshot.chunks');
    for (let i = 0; i < n; i++) chunk(r.lenBytes('chunk', 1 << 20).slice());
  }
}

/** A pending-list record: one own candidate, `varint seq` || the delta (§4.1) || `varint stamp` (rev 1.24, when it has one). */
export function encodePendingRecord(c: { seq: number; delta: EntryDelta; stamp?: number }): Uint8Array {
  const w = new Writer(64);
  w.varint(c.seq);
  writeEntryDelta(w, c.delta);
  // Its place in the pair's order across registers (rev 1.24): a trailing varint, which readers before it ignore.
  if (c.stamp !== undefined) w.varint(c.stamp);
  return w.finish();
}

/** Above any stamp a pair hands out (one per proposal): a larger one is damage, read as none. */
const MAX_PENDING_STAMP = 2 ** 48;

/** The trailing stamp of a pending record (rev 1.24), if there is a sound one: the candidate stands without it. */
function pendingStamp(r: Reader): { stamp?: number } {
  if (r.remaining === 0) return {};
  try {
    const stamp = r.varint('pending.stamp');
    return stamp <= MAX_PENDING_STAMP ? { stamp } : {};
  } catch {
    return {};
  }
}

/** Undefined for a record that does not decode (checksummed, so only a bug writes one). */
export function decodePendingRecord(rec: Uint8Array): { seq: number; delta: EntryDelta; stamp?: number } | undefined {
  try {
    const r = new Reader(rec);
    const seq = r.varint('pending.seq');
    const delta = readEntryDelta(r, 'pending.delta', 'candidate');
    return { seq, delta, ...pendingStamp(r) };
  } catch {
    return undefined;
  }
}

/**
 * The lease file (rev 1.22): two slots of LEASE_SLOT octets, at offsets 0 and LEASE_SLOT_STRIDE
 * (distinct pages and sectors: a torn write of one cannot reach the other), each
 * `SHA-256(upTo octets)[0..4]` || `u32` 0 || `u64 upTo` (little-endian), overwritten in place in
 * turn; a lease only grows, so the valid slot of the higher `upTo` holds it. A write torn by a
 * crash spoils only the slot it was writing, whose fsync had not ended, so nothing that lease
 * covered had left the host.
 */
export const LEASE_SLOT = 16;
export const LEASE_SLOT_STRIDE = 4096;
export const LEASE_FILE_LEN = LEASE_SLOT_STRIDE + LEASE_SLOT;

export function encodeLeaseSlot(upTo: number, sha256: Sha256): Uint8Array {
  const out = new Uint8Array(LEASE_SLOT);
  const v = new DataView(out.buffer);
  v.setUint32(8, upTo % 2 ** 32, true);
  v.setUint32(12, Math.floor(upTo / 2 ** 32), true);
  out.set(sha256(out.subarray(8)).subarray(0, 4), 0);
  return out;
}

/** A whole lease file: both slots holding `upTo`. */
export function encodeLeaseFile(upTo: number, sha256: Sha256): Uint8Array {
  const out = new Uint8Array(LEASE_FILE_LEN);
  const slot = encodeLeaseSlot(upTo, sha256);
  out.set(slot, 0);
  out.set(slot, LEASE_SLOT_STRIDE);
  return out;
}

/**
 * The lease a lease file holds and the slot it is in; undefined when neither slot is valid. A file
 * of another length is the text form before rev 1.22 (the number in decimal, a newline; slot -1),
 * which a store rewrites in slots at load; anything else there is undefined too.
 */
export function decodeLease(buf: Uint8Array, sha256: Sha256): { upTo: number; slot: number } | undefined {
  if (buf.length !== LEASE_FILE_LEN) {
    const text = new TextDecoder().decode(buf);
    return /^\d{1,16}\n?$/.test(text) && Number(text.trim()) <= Number.MAX_SAFE_INTEGER
      ? { upTo: Number(text.trim()), slot: -1 }
      : undefined;
  }
  let best: { upTo: number; slot: number } | undefined;
  for (let slot = 0; slot < 2; slot++) {
    const b = buf.subarray(slot * LEASE_SLOT_STRIDE, slot * LEASE_SLOT_STRIDE + LEASE_SLOT);
    const sum = sha256(b.subarray(8));
    if (sum[0] !== b[0] || sum[1] !== b[1] || sum[2] !== b[2] || sum[3] !== b[3]) continue;
    if (b[4] !== 0 || b[5] !== 0 || b[6] !== 0 || b[7] !== 0) continue;
    const v = new DataView(b.buffer, b.byteOffset, LEASE_SLOT);
    const upTo = v.getUint32(12, true) * 2 ** 32 + v.getUint32(8, true);
    if (upTo > Number.MAX_SAFE_INTEGER) continue;
    if (!best || upTo > best.upTo) best = { upTo, slot };
  }
  return best;
}

/**
 * The replacement record (rev 1.24): a batch that replaces registers of a pair (reconciliation,
 * a full transfer) is made durable all or nothing through it.
 *  - `undo`, written before the batch appends anything: the size of each log the batch appends
 *    to before it did. A load that finds it cuts those logs back there: the batch never happened.
 *  - `commit`, written over it once the batch's records are fsynced and each new snapshot is
 *    written beside the old (`snapshot.next`, fsynced): the registers and the checksum their new
 *    snapshot file ends with. A load that finds it completes the renames (roll-forward).
 * `"SPKRPLC1"` || `u8` kind (1 undo, 2 commit) || `varint` count || each: register name as
 * `lenBytes` (UTF-8) || `varint` log size (undo) or 32-octet checksum (commit) || SHA-256 of
 * everything before it.
 */
export const REPLACING_MAGIC = new TextEncoder().encode('SPKRPLC1');

export type Replacing =
  /** Cut each register's log back to `logBytes`: the batch is undone. */
  | { kind: 'undo'; logs: { register: string; logBytes: number }[] }
  /** Rename each register's `snapshot.next`, ending with `checksum`, over its `snapshot`: the batch lands. */
  | { kind: 'commit'; snapshots: { register: string; checksum: Uint8Array }[] };

export function encodeReplacing(r: Replacing, sha256: Sha256): Uint8Array {
  const entries = r.kind === 'undo' ? r.logs : r.snapshots;
  const names = entries.map((e) => new TextEncoder().encode(e.register));
  const w = new Writer(64 + names.reduce((n, b) => n + b.length + 44, 0))
    .bytes(REPLACING_MAGIC)
    .u8(r.kind === 'undo' ? 1 : 2)
    .varint(entries.length);
  names.forEach((name, i) => {
    w.lenBytes(name);
    if (r.kind === 'undo') w.varint(r.logs[i].logBytes);
    else {
      const sum = r.snapshots[i].checksum;
      if (sum.length !== 32) throw new RangeError(`replacing: checksum of ${r.snapshots[i].register} is ${sum.length} octets, not 32`);
      w.bytes(sum);
    }
  });
  return sealed(w.finish(), sha256);
}

/** A replacement record. Throws JournalFormatError on a bad magic, kind or checksum. */
export function decodeReplacing(buf: Uint8Array, sha256: Sha256): Replacing {
  if (buf.length < REPLACING_MAGIC.length + 32 || !startsWith(buf, REPLACING_MAGIC))
    throw new JournalFormatError('not a replacement record (bad magic or too short)');
  const r = new Reader(unseal(buf, sha256, 'checksum mismatch'), REPLACING_MAGIC.length);
  const kind = r.u8('replacing.kind');
  if (kind !== 1 && kind !== 2) throw new JournalFormatError(`replacement record of unknown kind ${kind}`);
  const n = r.varint('replacing.count');
  const name = (): string => new TextDecoder('utf-8', { fatal: true }).decode(r.lenBytes('replacing.register', MAX_REGISTER_NAME_LEN));
  const out: Replacing = kind === 1 ? { kind: 'undo', logs: [] } : { kind: 'commit', snapshots: [] };
  for (let i = 0; i < n; i++) {
    const register = name();
    if (out.kind === 'undo') out.logs.push({ register, logBytes: r.varint('replacing.logBytes') });
    else out.snapshots.push({ register, checksum: r.bytes(32, 'replacing.checksum').slice() });
  }
  r.expectEnd('replacing');
  return out;
}

/** The version of an encoded Collapse record (`type` || `length` || register || version ...), without decoding its entries. */
export function collapseRecordVersion(rec: Uint8Array): number {
  const r = new Reader(rec);
  r.u8('type');
  r.varint('length');
  r.lenBytes('register', 64);
  return r.varint('version');
}

// ---------------------------------------------------------------- helpers

function startsWith(buf: Uint8Array, magic: Uint8Array): boolean {
  for (let i = 0; i < magic.length; i++) if (buf[i] !== magic[i]) return false;
  return true;
}

/** body || SHA-256(body). */
function sealed(body: Uint8Array, sha256: Sha256): Uint8Array {
  const out = new Uint8Array(body.length + 32);
  out.set(body);
  out.set(sha256(body), body.length);
  return out;
}

/** The body before its trailing SHA-256, which must match. */
function unseal(buf: Uint8Array, sha256: Sha256, mismatch: string): Uint8Array {
  const body = buf.subarray(0, buf.length - 32);
  const sum = sha256(body);
  for (let i = 0; i < 32; i++) if (sum[i] !== buf[body.length + i]) throw new JournalFormatError(mismatch);
  return body;
}

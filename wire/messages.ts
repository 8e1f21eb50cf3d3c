/**
 * ESTP messages, carried in the payload of Data frames (docs/PROTOCOL.md §3).
 * Each message is `type u8 | length varint | body`; a frame holds one or more.
 */
import { DropReason, MAX_KEY_LEN, MAX_MESSAGE_LEN, MAX_PAYLOAD_LEN, MAX_VALUE_LEN } from './constants.js';
import { Reader, Writer, varintLen, type Hash64Parts } from './buffer.js';
import { DeltaOp, readSetFast, type Delta, type RejectReason } from './delta.js';
import { WireError } from './errors.js';
import { nameBytes, readName, writeName } from './names.js';
import { encodedEntryDeltaLen, readEntryDelta, writeEntryDelta, type EntryDelta } from './cross.js';
import { scanPacked, type PackedEntries } from './packed.js';

export enum MsgType {
  Status = 1,
  Ack = 2,
  Propose = 3,
  Collapse = 4,
  ReconReq = 5,
  ReconNode = 6,
  ReconEntries = 7,
  ReconMeta = 8,
  SnapReq = 9,
  SnapChunk = 10,
  StreamReq = 11,
  StreamData = 12,
  Close = 13,
  /** 15: the sender's register manifest (rev 1.9, §3.6.15) */
  Manifest = 15,
  // ---- large values (rev 1.9) ----
  /** One piece of a message too large for a payload (§3.4). */
  Fragment = 14,
  /** Which pieces of a fragmented message arrived (§3.4): selective acknowledgement. */
  FragmentAck = 16,
  // ---- catch-up by log diff (rev 1.12) ----
  /** The keys a log gap touched, each once, at a pin's version (§8.2.1). */
  ReconDiff = 17,
}

/** Request flag: the responder also sends ReconMeta. */
export const REQ_WANT_META = 0x01;
/** ReconReq flag (rev 1.12): answer with the log diff since `diff.since` (§8.2.1). */
export const REQ_WANT_DIFF = 0x02;
/** Reconciliation tree fan-out: 4 bits of key hash per level, 8 levels over a 32-bit key hash. */
export const RECON_FANOUT = 16;
export const RECON_MAX_DEPTH = 8;
const MAX_LIST = 4096;
/** A snapshot of 2^24 chunks of ~1.1 kB is ~18 GB: far beyond any register a peer may ask us to stage. */
const MAX_SNAPSHOT_CHUNKS = 1 << 24;

export interface StatusMsg {
  type: MsgType.Status;
  register: string;
  /** Committed version and hash. */
  version: number;
  hash: Hash64Parts;
  /** Lowest version the sender can still serve from its log minus one (its compaction base). */
  logBase: number;
  /** Highest own candidate sequence such that every own candidate up to it knows its outcome. */
  resolvedSeq: number;
  /**
   * Versions above `version` the sender already holds out of order (a follower's reorder
   * buffer), as ascending disjoint ranges: selective acknowledgement, so the sequencer
   * resends only the gaps (RFC 9002's acknowledgement ranges, at the level of versions).
   */
  held: VersionRange[];
}
export interface VersionRange {
  from: number;
  /** Inclusive. */
  to: number;
}
export const MAX_HELD_RANGES = 16;
export interface AckMsg {
  type: MsgType.Ack;
  largestPn: number;
  ackDelayMs: number;
}
/** A pair candidate: one delta proposed by `origin` under its sequence number `seq`. */
export interface PairCandidate {
  origin: number;
  seq: number;
  /** Ops 1-6: one register's delta, or a cross-register txn anchored at the Propose's register (wire/cross.ts). */
  delta: EntryDelta;
}
export interface ProposeMsg {
  type: MsgType.Propose;
  register: string;
  /**
   * The proposer's lowest undecided sequence number: every lower one it will never send
   * (decided, or abandoned by a restart), so the sequencer may skip a gap below it.
   */
  base: number;
  candidates: PairCandidate[];
}
/** How collapse decided one candidate. On the wire: a verdict byte, 0 committed (the delta follows), else the RejectReason. */
export type Decision = { verdict: 'committed'; delta: EntryDelta } | { verdict: 'rejected'; reason: RejectReason };
export type CollapseEntry = { origin: number; seq: number } & Decision;

/** The verdict byte of a decision (the admin API names it instead: 'committed', or 'rejected' with the reason's name). */
export function verdictByte(d: Decision): number {
  return d.verdict === 'committed' ? 0 : d.reason;
}
export interface CollapseMsg {
  type: MsgType.Collapse;
  register: string;
  version: number;
  /** State hash after applying this collapse. */
  hash: Hash64Parts;
  entries: CollapseEntry[];
  /**
   * Rev 1.9 (large values, §3.6.4): indexes of committed entries whose delta is not repeated,
   * because it is the receiver's own candidate (verdict byte VERDICT_OWN_ELIDED). Decoded, such
   * an entry holds ELIDED_DELTA until the receiver puts its own delta back; never in a log record.
   */
  elided?: number[];
}

/** The verdict byte of a committed entry whose delta is the receiver's own candidate, left out (§3.6.4). */
export const VERDICT_OWN_ELIDED = 0x80;
/** What an elided entry holds once decoded: an empty-keyed del that no state accepts (a decoder never yields one otherwise). */
export const ELIDED_DELTA: Delta = Object.freeze({ op: DeltaOp.Del, key: new Uint8Array(0) }) as Delta;
export interface Prefix {
  depth: number;
  prefix: number;
}
export interface ReconReqMsg {
  type: MsgType.ReconReq;
  register: string;
  targetVersion: number;
  /** REQ_WANT_META, and REQ_WANT_DIFF exactly when `diff` is present (the encoder sets it from `diff`). */
  flags: number;
  prefixes: Prefix[];
  /** Rev 1.12: the requester's version and the first diff part it lacks; no prefixes then (§8.2.1). */
  diff?: DiffWant;
}
export interface DiffWant {
  since: number;
  fromPart: number;
}
/** One key of a log diff: its entry at the pin, or `value` undefined if the pin does not hold it (deleted). */
export interface DiffEntry {
  key: Uint8Array;
  /** 0 for a deletion. */
  version: number;
  value: Uint8Array | undefined;
}
export interface ReconDiffMsg {
  type: MsgType.ReconDiff;
  register: string;
  targetVersion: number;
  since: number;
  part: number;
  parts: number;
  /** Deletions, then entries in ascending version (each version a varint delta from the previous, §8.2.1). */
  entries: DiffEntry[];
}
export interface ReconChild {
  count: number;
  hash: Hash64Parts;
}
export interface ReconNodeMsg {
  type: MsgType.ReconNode;
  register: string;
  targetVersion: number;
  depth: number;
  prefix: number;
  children: ReconChild[];
}
export interface WireEntry {
  key: Uint8Array;
  version: number;
  value: Uint8Array;
}
export interface ReconEntriesMsg {
  type: MsgType.ReconEntries;
  register: string;
  targetVersion: number;
  depth: number;
  prefix: number;
  part: number;
  parts: number;
  entries: WireEntry[];
}
export interface OriginMark {
  origin: number;
  seq: number;
}
/** A rejected candidate whose proposer may not have heard of it yet (§8.5). */
export interface RejectionMark {
  origin: number;
  seq: number;
  reason: RejectReason;
}
export interface ReconMetaMsg {
  type: MsgType.ReconMeta;
  register: string;
  targetVersion: number;
  hash: Hash64Parts;
  /** Entries (map) or bytes (stream). */
  size: number;
  origins: OriginMark[];
  /** Rejections the requester has not yet acknowledged (its resolvedSeq is below them). */
  rejections: RejectionMark[];
}
export interface SnapReqMsg {
  type: MsgType.SnapReq;
  register: string;
  targetVersion: number;
  flags: number;
  fromChunk: number;
}
export interface SnapChunkMsg {
  type: MsgType.SnapChunk;
  register: string;
  targetVersion: number;
  chunk: number;
  chunks: number;
  entries: WireEntry[];
}
export interface StreamReqMsg {
  type: MsgType.StreamReq;
  register: string;
  targetVersion: number;
  flags: number;
  offset: number;
}
export interface StreamDataMsg {
  type: MsgType.StreamData;
  register: string;
  targetVersion: number;
  offset: number;
  data: Uint8Array;
}
export interface CloseMsg {
  type: MsgType.Close;
  reason: CloseReason;
}

export enum CloseReason {
  /** The pair is torn down for good (operator removed it). */
  Closed = 0,
  /** The sender is shutting down and will come back: decohere now rather than after the silence timeout. */
  GoingAway = 1,
}

/** Manifest flags (§3.6.15): the sender holds the receiver's whole manifest and it equals its own. */
export const MANIFEST_MATCHED = 0x01;
/** Manifest flag: this sending answers one of the receiver's (which must not be answered again). */
export const MANIFEST_REPLY = 0x02;
/** Parts of one manifest (each fits one payload), registers per manifest, limits per register. */
export const MAX_MANIFEST_PARTS = 256;
export const MAX_MANIFEST_REGISTERS = 1024;
export const MAX_MANIFEST_LIMITS = 16;
/** A limit's id (§3.6.15 table) and value; ids ascend within an entry. */
export interface ManifestLimit {
  id: number;
  value: number;
}
/** One register as its host declares it: what must be equal at both ends for the register to be shared. */
export interface ManifestEntry {
  name: string;
  /** PairSnapshotKind numbering: 1 map, 2 stream; any other value is a kind this revision does not know. */
  kind: number;
  limits: ManifestLimit[];
}
export interface ManifestMsg {
  type: MsgType.Manifest;
  flags: number;
  /** Murmur3 (seed 0) of the concatenated entry encodings of every part, in order: which manifest this part belongs to. */
  digest: number;
  part: number;
  parts: number;
  entries: ManifestEntry[];
}

// ---- large values (rev 1.9) ----

/**
 * One piece of a message (type, length, body) larger than a payload (§3.4). Piece `index` of
 * `count` carries bytes [index·F, min((index+1)·F, total)) of the message, F = ceil(total/count):
 * the layout follows from (total, count), so two pieces can neither overlap nor leave a hole.
 */
export interface FragmentMsg {
  type: MsgType.Fragment;
  /** The sender's number for the message, unique within the session (increasing). */
  msgId: number;
  total: number;
  index: number;
  count: number;
  bytes: Uint8Array;
}
/** Inclusive range of fragment indexes. */
export interface IndexRange {
  from: number;
  to: number;
}
/**
 * The fragments of message `msgId` the receiver holds, as ascending disjoint ranges (RFC 9002
 * §19.3 acknowledgement ranges, at the level of fragments); the whole range once it is complete.
 */
export interface FragmentAckMsg {
  type: MsgType.FragmentAck;
  msgId: number;
  ranges: IndexRange[];
}
export const MAX_FRAGMENT_ACK_RANGES = 32;
/** Most fragments of one message: a largest message in pieces of at least 1 KiB. */
export const MAX_FRAGMENTS = Math.ceil(MAX_MESSAGE_LEN / 1024);
/**
 * The smallest piece `F = ceil(total / count)` of a layout (rev 1.33): a sender cuts pieces of
 * its payload limit less their framing (at least 1400 − 67), so even a message just past it in 2
 * pieces has `F` ≥ 667. Smaller pieces only multiply the receiver's work and bookkeeping per byte.
 */
export const MIN_FRAGMENT_PIECE = 512;

/** Bytes a fragment of `index` carries, for a message of `total` bytes in `count` fragments (0: no such fragment). */
export function fragmentLen(total: number, count: number, index: number): number {
  const f = Math.ceil(total / count);
  return Math.max(0, Math.min(f, total - index * f));
}

/** What a fragment's layout may be (ESTP §3.7, QN §15.9): the largest message and piece, the most pieces. */
export interface FragmentLimits {
  maxTotal: number;
  maxCount: number;
  maxPiece: number;
}

/**
 * A fragment's body, `varint msgId, total, count, index` then `lenBytes piece`, refusing any
 * layout a sender would not make: a fragmented message is larger than a piece, in at least 2
 * pieces, each within `maxPiece` and at least MIN_FRAGMENT_PIECE (but the last), and the piece
 * holds exactly its share. Fields are `<field>.*`.
 */
export function readFragmentBody(
  r: Reader,
  field: string,
  lim: FragmentLimits,
): { msgId: number; total: number; count: number; index: number; bytes: Uint8Array } {
  const msgId = r.varint(`${field}.msgId`);
  const total = r.varint(`${field}.total`);
  const count = r.varint(`${field}.count`);
  if (total > lim.maxTotal) throw new WireError(DropReason.MalformedPayload, `${field}.total`, `${total} exceeds ${lim.maxTotal}`);
  const piece = Math.ceil(total / count);
  if (count < 2 || count > lim.maxCount || piece > lim.maxPiece || piece < MIN_FRAGMENT_PIECE || (count - 1) * piece >= total)
    throw new WireError(DropReason.MalformedPayload, `${field}.count`, `${count} pieces do not lay out ${total} bytes`);
  const index = r.varint(`${field}.index`);
  if (index >= count) throw new WireError(DropReason.MalformedPayload, `${field}.index`, `${index} of ${count}`);
  const bytes = r.lenBytes(`${field}.bytes`, lim.maxPiece);
  const want = fragmentLen(total, count, index);
  if (bytes.length !== want)
    throw new WireError(DropReason.MalformedPayload, `${field}.bytes`, `${bytes.length} bytes where piece ${index} of ${count} is ${want}`);
  return { msgId, total, count, index, bytes };
}

/** A fragment acknowledgement's body: `varint msgId`, then ascending disjoint index ranges below `maxCount`. */
export function readFragmentAckBody(r: Reader, field: string, maxCount: number): { msgId: number; ranges: IndexRange[] } {
  const msgId = r.varint(`${field}.msgId`);
  const n = r.varint(`${field}.ranges`);
  if (n > MAX_FRAGMENT_ACK_RANGES)
    throw new WireError(DropReason.MalformedPayload, `${field}.ranges`, `count ${n} exceeds ${MAX_FRAGMENT_ACK_RANGES}`);
  const ranges: IndexRange[] = [];
  let floor = 0;
  for (let i = 0; i < n; i++) {
    const from = r.varint(`${field}.ranges[${i}].from`);
    const to = from + r.varint(`${field}.ranges[${i}].length`);
    if (from < floor || to >= maxCount)
      throw new WireError(DropReason.MalformedPayload, `${field}.ranges[${i}]`, `range ${from}..${to} is not ascending and disjoint`);
    ranges.push({ from, to });
    floor = to + 2;
  }
  return { msgId, ranges };
}

export type Message =
  | FragmentMsg
  | FragmentAckMsg
  | StatusMsg
  | AckMsg
  | ProposeMsg
  | CollapseMsg
  | ReconReqMsg
  | ReconNodeMsg
  | ReconEntriesMsg
  | ReconDiffMsg
  | ReconMetaMsg
  | SnapReqMsg
  | SnapChunkMsg
  | StreamReqMsg
  | StreamDataMsg
  | CloseMsg
  | ManifestMsg;

const MAX_REJECT_REASON = 4;

function readReason(r: Reader, field: string): RejectReason {
  const v = r.u8(field);
  if (v === 0 || v > MAX_REJECT_REASON) throw new WireError(DropReason.MalformedPayload, field, `unknown reject reason ${v}`);
  return v as RejectReason;
}

function readFlags(r: Reader, field: string, allowed = REQ_WANT_META): number {
  const v = r.u8(field);
  if (v & ~allowed) throw new WireError(DropReason.MalformedPayload, field, `reserved flag bits set: 0x${v.toString(16)}`);
  return v;
}

function readCount(r: Reader, field: string, max = MAX_LIST): number {
  const n = r.varint(field);
  if (n > max) throw new WireError(DropReason.MalformedPayload, field, `count ${n} exceeds ${max}`);
  return n;
}

function writeEntries(w: Writer, entries: WireEntry[]): void {
  w.varint(entries.length);
  for (const e of entries) w.lenBytes(e.key).varint(e.version).lenBytes(e.value);
}

/** Entries of a pin at `target`: each a present key, so written at a version in 1..target (rev 1.34). */
function readEntries(r: Reader, field: string, target: number): WireEntry[] {
  const n = readCount(r, `${field}.count`);
  const out: WireEntry[] = [];
  for (let i = 0; i < n; i++) {
    const key = r.lenBytes(`${field}[${i}].key`, MAX_KEY_LEN);
    if (key.length === 0) throw new WireError(DropReason.MalformedPayload, `${field}[${i}].key`, 'empty key');
    // Version 0 reads as absent to every cas; one past the pin is later than the register installed.
    const version = r.varint(`${field}[${i}].version`);
    if (version === 0 || version > target)
      throw new WireError(DropReason.MalformedPayload, `${field}[${i}].version`, `v${version} is not in 1..${target}`);
    out.push({ key, version, value: r.lenBytes(`${field}[${i}].value`, MAX_VALUE_LEN) });
  }
  return out;
}

/** Octets of one diff entry after the previous entry's version `prev` (§8.2.1). */
export function diffEntryLen(e: DiffEntry, prev: number): number {
  const head = varintLen(e.key.length * 2 + (e.value ? 0 : 1)) + e.key.length;
  return e.value ? head + varintLen(e.version - prev) + varintLen(e.value.length) + e.value.length : head;
}

function writeDiffEntries(w: Writer, since: number, entries: DiffEntry[]): void {
  let prev = since;
  for (const e of entries) {
    w.varint(e.key.length * 2 + (e.value ? 0 : 1)).bytes(e.key);
    if (!e.value) continue;
    if (e.version < prev) throw new RangeError(`diff entry version ${e.version} below ${prev}: entries must ascend from since`);
    w.varint(e.version - prev).lenBytes(e.value);
    prev = e.version;
  }
}

/** Entries to the end of the body; each put's version ascends from `since`, is after it, and is at most the pin's. */
function readDiffEntries(r: Reader, since: number, target: number): DiffEntry[] {
  const out: DiffEntry[] = [];
  let prev = since;
  for (let i = 0; r.remaining > 0; i++) {
    const head = r.varint(`reconDiff[${i}].key`);
    const klen = Math.floor(head / 2);
    if (klen === 0 || klen > MAX_KEY_LEN)
      throw new WireError(DropReason.MalformedPayload, `reconDiff[${i}].key`, `key length ${klen} not in 1..${MAX_KEY_LEN}`);
    const key = r.bytes(klen, `reconDiff[${i}].key`);
    if (head % 2 === 1) {
      out.push({ key, version: 0, value: undefined });
      continue;
    }
    const version = prev + r.varint(`reconDiff[${i}].version`);
    if (version > target)
      throw new WireError(DropReason.MalformedPayload, `reconDiff[${i}].version`, `v${version} is past the pin's v${target}`);
    // A key the gap wrote holds a version after it (rev 1.34): at `since` it was written before (or is v0, absent).
    if (version <= since)
      throw new WireError(DropReason.MalformedPayload, `reconDiff[${i}].version`, `v${version} is not after since v${since}`);
    out.push({ key, version, value: r.lenBytes(`reconDiff[${i}].value`, MAX_VALUE_LEN) });
    prev = version;
  }
  return out;
}

function writeBody(w: Writer, m: Message): void {
  switch (m.type) {
    case MsgType.Status:
      writeName(w, m.register);
      w.varint(m.version).hash64(m.hash).varint(m.logBase).varint(m.resolvedSeq).varint(m.held.length);
      for (const h of m.held) w.varint(h.from).varint(h.to - h.from);
      return;
    case MsgType.Ack:
      w.varint(m.largestPn).varint(m.ackDelayMs);
      return;
    case MsgType.Propose:
      writeName(w, m.register);
      w.varint(m.base).varint(m.candidates.length);
      for (const c of m.candidates) {
        w.varint(c.origin).varint(c.seq);
        writeEntryDelta(w, c.delta);
      }
      return;
    case MsgType.Collapse:
      writeCollapseBody(w, m);
      return;
    case MsgType.ReconReq:
      writeName(w, m.register);
      if (m.diff && m.prefixes.length > 0) throw new RangeError('a ReconReq asks for a diff or for prefixes, not both');
      w.varint(m.targetVersion).u8(m.diff ? m.flags | REQ_WANT_DIFF : m.flags & ~REQ_WANT_DIFF);
      if (m.diff) w.varint(m.diff.since).varint(m.diff.fromPart);
      w.varint(m.prefixes.length);
      for (const p of m.prefixes) w.u8(p.depth).u32(p.prefix);
      return;
    case MsgType.ReconDiff:
      writeName(w, m.register);
      w.varint(m.targetVersion).varint(m.since).varint(m.part).varint(m.parts);
      writeDiffEntries(w, m.since, m.entries);
      return;
    case MsgType.ReconNode:
      writeName(w, m.register);
      if (m.children.length !== RECON_FANOUT) throw new RangeError(`ReconNode needs ${RECON_FANOUT} children, got ${m.children.length}`);
      w.varint(m.targetVersion).u8(m.depth).u32(m.prefix);
      for (const c of m.children) w.varint(c.count).hash64(c.hash);
      return;
    case MsgType.ReconEntries:
      writeName(w, m.register);
      w.varint(m.targetVersion).u8(m.depth).u32(m.prefix).varint(m.part).varint(m.parts);
      writeEntries(w, m.entries);
      return;
    case MsgType.ReconMeta:
      writeName(w, m.register);
      w.varint(m.targetVersion).hash64(m.hash).varint(m.size).varint(m.origins.length);
      for (const o of m.origins) w.varint(o.origin).varint(o.seq);
      w.varint(m.rejections.length);
      for (const o of m.rejections) w.varint(o.origin).varint(o.seq).u8(o.reason);
      return;
    case MsgType.SnapReq:
      writeName(w, m.register);
      w.varint(m.targetVersion).u8(m.flags).varint(m.fromChunk);
      return;
    case MsgType.SnapChunk:
      writeName(w, m.register);
      w.varint(m.targetVersion).varint(m.chunk).varint(m.chunks);
      writeEntries(w, m.entries);
      return;
    case MsgType.StreamReq:
      writeName(w, m.register);
      w.varint(m.targetVersion).u8(m.flags).varint(m.offset);
      return;
    case MsgType.StreamData:
      writeName(w, m.register);
      w.varint(m.targetVersion).varint(m.offset).lenBytes(m.data);
      return;
    case MsgType.Close:
      w.u8(m.reason);
      return;
    case MsgType.Manifest:
      w.u8(m.flags).u32(m.digest).varint(m.part).varint(m.parts).varint(m.entries.length);
      for (const e of m.entries) writeManifestEntry(w, e);
      return;
    case MsgType.Fragment:
      w.varint(m.msgId).varint(m.total).varint(m.count).varint(m.index).lenBytes(m.bytes);
      return;
    case MsgType.FragmentAck:
      w.varint(m.msgId).varint(m.ranges.length);
      for (const r of m.ranges) w.varint(r.from).varint(r.to - r.from);
      return;
  }
}

/** One manifest entry: `name | kind u8 | count varint | (id varint, value varint)*`; also what the digest covers. */
export function writeManifestEntry(w: Writer, e: ManifestEntry): void {
  writeName(w, e.name);
  w.u8(e.kind).varint(e.limits.length);
  for (const l of e.limits) w.varint(l.id).varint(l.value);
}

function readManifestEntry(r: Reader, i: number): ManifestEntry {
  const name = readName(r);
  const kind = r.u8(`manifest[${i}].kind`);
  const n = readCount(r, `manifest[${i}].limits`, MAX_MANIFEST_LIMITS);
  const limits: ManifestLimit[] = [];
  for (let j = 0; j < n; j++) {
    const id = r.varint(`manifest[${i}].limits[${j}].id`);
    if (id === 0 || (j > 0 && id <= limits[j - 1].id))
      throw new WireError(DropReason.MalformedPayload, `manifest[${i}].limits[${j}].id`, `id ${id} is zero or not ascending`);
    limits.push({ id, value: r.varint(`manifest[${i}].limits[${j}].value`) });
  }
  return { name, kind, limits };
}

/** The Collapse body alone: this is also the record the delta log keeps. */
/** Octets of `encodeCollapse(m)` (type, length and body), without encoding it. */
export function encodedCollapseLen(m: Omit<CollapseMsg, 'type'>): number {
  const nb = nameBytes(m.register);
  let n = varintLen(nb) + nb + varintLen(m.version) + 16 + varintLen(m.entries.length);
  m.entries.forEach((e, i) => {
    n += varintLen(e.origin) + varintLen(e.seq) + 1;
    if (e.verdict === 'committed' && !m.elided?.includes(i)) n += encodedEntryDeltaLen(e.delta);
  });
  return 1 + varintLen(n) + n;
}

export function writeCollapseBody(w: Writer, m: Omit<CollapseMsg, 'type'>): void {
  writeName(w, m.register);
  w.varint(m.version).hash64(m.hash).varint(m.entries.length);
  m.entries.forEach((e, i) => {
    if (e.verdict === 'committed' && m.elided?.includes(i)) {
      w.varint(e.origin).varint(e.seq).u8(VERDICT_OWN_ELIDED);
      return;
    }
    w.varint(e.origin).varint(e.seq).u8(verdictByte(e));
    if (e.verdict === 'committed') writeEntryDelta(w, e.delta);
  });
}

function readCollapseEntries(r: Reader, n: number): { entries: CollapseEntry[]; elided: number[] } {
  const entries: CollapseEntry[] = [];
  const elided: number[] = [];
  for (let i = 0; i < n; i++) {
    // Field names are built only for a fault (every entry of a full record would build four).
    const origin = r.varintAt('collapse', i, '.origin');
    const seq = r.varintAt('collapse', i, '.seq');
    const verdict = r.u8At('collapse', i, '.verdict');
    if (verdict === VERDICT_OWN_ELIDED) {
      elided.push(i);
      entries.push({ origin, seq, verdict: 'committed', delta: ELIDED_DELTA });
      continue;
    }
    if (verdict > MAX_REJECT_REASON)
      throw new WireError(DropReason.MalformedPayload, `collapse[${i}].verdict`, `unknown verdict ${verdict}`);
    entries.push(
      verdict === 0
        ? { origin, seq, verdict: 'committed', delta: readSetFast(r) ?? readEntryDelta(r, `collapse[${i}].delta`, 'record') }
        : { origin, seq, verdict: 'rejected', reason: verdict as RejectReason },
    );
  }
  return { entries, elided };
}

/**
 * A decoded Collapse whose entries stay bytes until read (packed.ts): `entries` decodes them
 * (views into the same buffer, as an eager decode gives) the first time it is read; assigning
 * them drops the bytes. A class, not a literal with accessors: one is made per record received.
 */
class PackedCollapse implements CollapseMsg {
  readonly type = MsgType.Collapse;
  #entries: CollapseEntry[] | undefined;
  #packed: PackedEntries | undefined;

  constructor(
    public register: string,
    public version: number,
    public hash: Hash64Parts,
    packed: PackedEntries,
  ) {
    this.#packed = packed;
  }

  get entries(): CollapseEntry[] {
    if (this.#entries === undefined) {
      const p = this.#packed!;
      this.#entries = readCollapseEntries(new Reader(p.buf, p.start, p.end), p.count).entries;
    }
    return this.#entries;
  }

  set entries(e: CollapseEntry[]) {
    this.#entries = e;
    this.#packed = undefined; // the bytes no longer say what the entries do
  }

  get packed(): PackedEntries | undefined {
    return this.#packed;
  }
}

/** A decoded Collapse's entries as bytes, if they were left so (every entry a committed short set or a rejection). */
export function collapsePacked(m: CollapseMsg): PackedEntries | undefined {
  return m instanceof PackedCollapse ? m.packed : undefined;
}

function readBody(r: Reader, type: number): Message | undefined {
  switch (type) {
    case MsgType.Status: {
      const register = readName(r);
      const version = r.varint('status.version');
      const hash = r.hash64('status.hash');
      const logBase = r.varint('status.logBase');
      const resolvedSeq = r.varint('status.resolvedSeq');
      const n = readCount(r, 'status.held', MAX_HELD_RANGES);
      const held: VersionRange[] = [];
      let floor = version + 1;
      for (let i = 0; i < n; i++) {
        const from = r.varint(`status.held[${i}].from`);
        const to = from + r.varint(`status.held[${i}].length`);
        if (from <= floor || !Number.isSafeInteger(to)) {
          throw new WireError(DropReason.MalformedPayload, `status.held[${i}]`, `range ${from}..${to} is not above v${floor} with a gap`);
        }
        held.push({ from, to });
        floor = to + 1;
      }
      return { type, register, version, hash, logBase, resolvedSeq, held };
    }
    case MsgType.Ack:
      return { type, largestPn: r.varint('ack.largestPn'), ackDelayMs: r.varint('ack.ackDelay') };
    case MsgType.Propose: {
      const register = readName(r);
      const base = r.varint('propose.base');
      const n = readCount(r, 'propose.count');
      const candidates: PairCandidate[] = [];
      for (let i = 0; i < n; i++) {
        candidates.push({
          origin: r.varintAt('propose', i, '.origin'),
          seq: r.varintAt('propose', i, '.seq'),
          delta: readSetFast(r) ?? readEntryDelta(r, `propose[${i}].delta`, 'candidate'),
        });
      }
      return { type, register, base, candidates };
    }
    case MsgType.Collapse: {
      const register = readName(r);
      const version = r.varint('collapse.version');
      const hash = r.hash64('collapse.hash');
      const n = readCount(r, 'collapse.count');
      const packed = scanPacked(r, n, MAX_REJECT_REASON, version);
      if (packed) return new PackedCollapse(register, version, hash, packed);
      const { entries, elided } = readCollapseEntries(r, n);
      return elided.length > 0 ? { type, register, version, hash, entries, elided } : { type, register, version, hash, entries };
    }
    case MsgType.ReconReq: {
      const register = readName(r);
      const targetVersion = r.varint('reconReq.targetVersion');
      const flags = readFlags(r, 'reconReq.flags', REQ_WANT_META | REQ_WANT_DIFF);
      const diff = flags & REQ_WANT_DIFF ? { since: r.varint('reconReq.since'), fromPart: r.varint('reconReq.fromPart') } : undefined;
      const n = readCount(r, 'reconReq.count', diff ? 0 : 256);
      const prefixes: Prefix[] = [];
      for (let i = 0; i < n; i++) {
        const depth = r.u8(`reconReq[${i}].depth`);
        if (depth > RECON_MAX_DEPTH)
          throw new WireError(DropReason.MalformedPayload, `reconReq[${i}].depth`, `${depth} exceeds ${RECON_MAX_DEPTH}`);
        const prefix = r.u32(`reconReq[${i}].prefix`);
        if (prefix >= 16 ** depth)
          throw new WireError(DropReason.MalformedPayload, `reconReq[${i}].prefix`, `${prefix} does not fit depth ${depth}`);
        prefixes.push({ depth, prefix });
      }
      return diff ? { type, register, targetVersion, flags, prefixes, diff } : { type, register, targetVersion, flags, prefixes };
    }
    case MsgType.ReconDiff: {
      const register = readName(r);
      const targetVersion = r.varint('reconDiff.targetVersion');
      const since = r.varint('reconDiff.since');
      if (since > targetVersion)
        throw new WireError(DropReason.MalformedPayload, 'reconDiff.since', `v${since} is past the pin's v${targetVersion}`);
      const part = r.varint('reconDiff.part');
      const parts = r.varint('reconDiff.parts');
      if (parts === 0 || part >= parts || parts > MAX_SNAPSHOT_CHUNKS)
        throw new WireError(DropReason.MalformedPayload, 'reconDiff.part', `part ${part} of ${parts}`);
      return { type, register, targetVersion, since, part, parts, entries: readDiffEntries(r, since, targetVersion) };
    }
    case MsgType.ReconNode: {
      const register = readName(r);
      const targetVersion = r.varint('reconNode.targetVersion');
      const depth = r.u8('reconNode.depth');
      if (depth >= RECON_MAX_DEPTH) throw new WireError(DropReason.MalformedPayload, 'reconNode.depth', `${depth} has no children`);
      const prefix = r.u32('reconNode.prefix');
      const children: ReconChild[] = [];
      for (let i = 0; i < RECON_FANOUT; i++)
        children.push({ count: r.varint(`reconNode[${i}].count`), hash: r.hash64(`reconNode[${i}].hash`) });
      return { type, register, targetVersion, depth, prefix, children };
    }
    case MsgType.ReconEntries: {
      const register = readName(r);
      const targetVersion = r.varint('reconEntries.targetVersion');
      const depth = r.u8('reconEntries.depth');
      if (depth > RECON_MAX_DEPTH)
        throw new WireError(DropReason.MalformedPayload, 'reconEntries.depth', `${depth} exceeds ${RECON_MAX_DEPTH}`);
      const prefix = r.u32('reconEntries.prefix');
      const part = r.varint('reconEntries.part');
      const parts = r.varint('reconEntries.parts');
      if (parts === 0 || part >= parts || parts > MAX_LIST)
        throw new WireError(DropReason.MalformedPayload, 'reconEntries.part', `part ${part} of ${parts}`);
      return { type, register, targetVersion, depth, prefix, part, parts, entries: readEntries(r, 'reconEntries', targetVersion) };
    }
    case MsgType.ReconMeta: {
      const register = readName(r);
      const targetVersion = r.varint('reconMeta.targetVersion');
      const hash = r.hash64('reconMeta.hash');
      const size = r.varint('reconMeta.size');
      const origins: OriginMark[] = [];
      const no = readCount(r, 'reconMeta.origins');
      for (let i = 0; i < no; i++)
        origins.push({ origin: r.varint(`reconMeta.origins[${i}].origin`), seq: r.varint(`reconMeta.origins[${i}].seq`) });
      const rejections: RejectionMark[] = [];
      const nr = readCount(r, 'reconMeta.rejections');
      for (let i = 0; i < nr; i++) {
        rejections.push({
          origin: r.varint(`reconMeta.rejections[${i}].origin`),
          seq: r.varint(`reconMeta.rejections[${i}].seq`),
          reason: readReason(r, `reconMeta.rejections[${i}].reason`),
        });
      }
      return { type, register, targetVersion, hash, size, origins, rejections };
    }
    case MsgType.SnapReq:
      return {
        type,
        register: readName(r),
        targetVersion: r.varint('snapReq.targetVersion'),
        flags: readFlags(r, 'snapReq.flags'),
        fromChunk: r.varint('snapReq.fromChunk'),
      };
    case MsgType.SnapChunk: {
      const register = readName(r);
      const targetVersion = r.varint('snapChunk.targetVersion');
      const chunk = r.varint('snapChunk.chunk');
      const chunks = r.varint('snapChunk.chunks');
      if (chunk >= chunks || chunks > MAX_SNAPSHOT_CHUNKS)
        throw new WireError(DropReason.MalformedPayload, 'snapChunk.chunk', `chunk ${chunk} of ${chunks}`);
      return { type, register, targetVersion, chunk, chunks, entries: readEntries(r, 'snapChunk', targetVersion) };
    }
    case MsgType.StreamReq:
      return {
        type,
        register: readName(r),
        targetVersion: r.varint('streamReq.targetVersion'),
        flags: readFlags(r, 'streamReq.flags'),
        offset: r.varint('streamReq.offset'),
      };
    case MsgType.StreamData:
      return {
        type,
        register: readName(r),
        targetVersion: r.varint('streamData.targetVersion'),
        offset: r.varint('streamData.offset'),
        data: r.lenBytes('streamData.data', MAX_PAYLOAD_LEN),
      };
    case MsgType.Close: {
      const reason = r.u8('close.reason');
      if (reason > CloseReason.GoingAway)
        throw new WireError(DropReason.MalformedPayload, 'close.reason', `unknown close reason ${reason}`);
      return { type, reason };
    }
    case MsgType.Manifest: {
      const flags = r.u8('manifest.flags');
      if (flags & ~(MANIFEST_MATCHED | MANIFEST_REPLY))
        throw new WireError(DropReason.MalformedPayload, 'manifest.flags', `reserved flag bits set: 0x${flags.toString(16)}`);
      const digest = r.u32('manifest.digest');
      const part = r.varint('manifest.part');
      const parts = r.varint('manifest.parts');
      if (parts === 0 || part >= parts || parts > MAX_MANIFEST_PARTS)
        throw new WireError(DropReason.MalformedPayload, 'manifest.part', `part ${part} of ${parts} (at most ${MAX_MANIFEST_PARTS})`);
      const n = readCount(r, 'manifest.count', MAX_MANIFEST_REGISTERS);
      const entries: ManifestEntry[] = [];
      for (let i = 0; i < n; i++) entries.push(readManifestEntry(r, i));
      return { type, flags, digest, part, parts, entries };
    }
    case MsgType.Fragment:
      return {
        type,
        ...readFragmentBody(r, 'fragment', { maxTotal: MAX_MESSAGE_LEN, maxCount: MAX_FRAGMENTS, maxPiece: MAX_PAYLOAD_LEN }),
      };
    case MsgType.FragmentAck:
      return { type, ...readFragmentAckBody(r, 'fragmentAck', MAX_FRAGMENTS) };
    default:
      return undefined;
  }
}

/** One scratch writer for message bodies (encoding never nests): a message costs one allocation, its own bytes. */
let bodyScratch = new Writer(1024);
/** Past this, the scratch a large message grew is let go after use (not held for the process's life). */
const SCRATCH_KEEP = 1 << 16;

function scratch(): Writer {
  if (bodyScratch.buf.length > SCRATCH_KEEP) bodyScratch = new Writer(1024);
  return bodyScratch.reset();
}

export function writeMessage(w: Writer, m: Message): void {
  const body = scratch();
  writeBody(body, m);
  w.u8(m.type).varint(body.pos).bytes(body.buf.subarray(0, body.pos));
}

/** `type u8 | length varint | body` with the body in `body` (positions 0..pos): exactly sized. */
export function frameMessage(type: MsgType, body: Writer): Uint8Array {
  const out = new Uint8Array(1 + varintLen(body.pos) + body.pos);
  writeFramed(type, body, out, 0);
  return out;
}

/** `type u8 | length varint | body` written into `out` at `at` (the caller made room). */
function writeFramed(type: MsgType, body: Writer, out: Uint8Array, at: number): void {
  const len = body.pos;
  out[at] = type;
  // The length's varint, every byte by the same operations: a body under 128 bytes (the steady
  // state's) and a longer one (a catch-up's) run the same code, so the first longer one does
  // not deoptimise this function (len < 2^31: MAX_MESSAGE_LEN).
  let v = len;
  let p = at + 1;
  let more: boolean;
  do {
    const low = v & 0x7f;
    v >>>= 7;
    more = v > 0;
    out[p++] = low | (more ? 0x80 : 0);
  } while (more);
  const src = body.buf;
  if (len > 64) out.set(src.subarray(0, len), p);
  else for (let i = 0; i < len; i++) out[p + i] = src[i];
}

export function encodeMessage(m: Message): Uint8Array {
  const body = scratch();
  writeBody(body, m);
  return frameMessage(m.type, body);
}

/**
 * encodeMessage(m) written into `out` at `at` if it fits before `out.length`: the bytes written;
 * if it does not fit, minus its encoded length and nothing is written.
 */
export function encodeMessageInto(m: Message, out: Uint8Array, at: number): number {
  const body = scratch();
  writeBody(body, m);
  const total = 1 + varintLen(body.pos) + body.pos;
  if (total > out.length - at) return -total;
  writeFramed(m.type, body, out, at);
  return total;
}

/** The encoded Collapse message (type, length, body) of a record: what the delta log keeps and sends. */
export function encodeCollapse(m: Omit<CollapseMsg, 'type'>): Uint8Array {
  const body = scratch();
  writeCollapseBody(body, m);
  return frameMessage(MsgType.Collapse, body);
}

export interface DecodedPayload {
  messages: Message[];
  /** The encoded form (type, length, body) of each message, parallel to `messages`. */
  raws: Uint8Array[];
  /** Messages of a type this version does not know: skipped (their length is known), and counted. */
  unknown: number;
}

/** Decode every message of a Data payload. Throws WireError naming the first malformed field. */
export function decodeMessages(payload: Uint8Array): DecodedPayload {
  const r = new Reader(payload);
  const messages: Message[] = [];
  const raws: Uint8Array[] = [];
  let unknown = 0;
  if (payload.length === 0) throw new WireError(DropReason.MalformedPayload, 'payload', 'empty Data payload');
  while (r.remaining > 0) {
    const start = r.pos;
    const type = r.u8('message.type');
    const len = r.varint('message.length');
    if (len > r.remaining) {
      throw new WireError(DropReason.MalformedPayload, 'message.length', `says ${len} but ${r.remaining} bytes remain`);
    }
    const end = r.pos + len;
    const body = new Reader(r.buf, r.pos, end);
    const m = readBody(body, type);
    if (m === undefined) unknown++;
    else {
      body.expectEnd(`message(${MsgType[type]})`);
      messages.push(m);
      raws.push(payload.subarray(start, end));
    }
    r.pos = end;
  }
  return { messages, raws, unknown };
}

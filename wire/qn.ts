/**
 * QN messages on the wire (docs/PROTOCOL.md §15.3). A QN message travels alone in the
 * payload of a sealed ETCP Data frame; its first byte, 0x40, sets it apart from ESTP
 * messages (types 1-16, below 0x40), so a receiver dispatches on that byte.
 *
 *   envelope = 0x40 domain:u32 from:varint to:varint ttl:u8 body
 *   body     = kind:u8 fields...
 */
import { Reader, Writer } from './buffer.js';
import { DropReason, MAX_VALUE_LEN } from './constants.js';
import { WireError } from './errors.js';
import { readFragmentAckBody, readFragmentBody, type IndexRange } from './messages.js';

/** A member's id: the first 48 bits of its static key (§15.1); 0 means none. */
export type NodeId = number;

/** The Raft messages a QN envelope carries (§15.4), as Raft steps on them. */
export type RaftMsg =
  | { t: 'vote'; term: number; lastIndex: number; lastTerm: number; pre: boolean }
  /** `term`: the request's term when granted, else the voter's term. */
  | { t: 'voteResp'; term: number; granted: boolean; pre: boolean }
  | { t: 'append'; term: number; prevIndex: number; prevTerm: number; commit: number; entries: { term: number; cmd: Uint8Array }[] }
  /** ok: `index` is the follower's last index known to match; not ok: a hint where to retry from. */
  | { t: 'appendResp'; term: number; ok: boolean; index: number }
  /**
   * A chunk of a snapshot (kind 5), or with `base` > 0 of a state difference (kind 13,
   * `snapDiff`): the state at `index` as a patch of the state at `base` (term `baseTerm`),
   * which the follower's log holds (§15.4, "Catch-up by difference").
   */
  | {
      t: 'snap';
      term: number;
      index: number;
      lastTerm: number;
      members: NodeId[];
      offset: number;
      total: number;
      data: Uint8Array;
      base?: number;
      baseTerm?: number;
    }
  | { t: 'snapResp'; term: number; index: number; offset: number };

export const QN_MSG_TYPE = 0x40;
/** Relays decrement it; at 0 a message is dropped (routing loops end). */
export const QN_DEFAULT_TTL = 8;
const MAX_MEMBERS = 64;
const MAX_ENTRIES = 4096;
/**
 * Largest QN message (§15.3): one candidate of at most the largest register value
 * (MAX_VALUE_LEN) plus CANDIDATE_ROOM for keys and framing, in an append (or a fwd) that may
 * be sealed. A message larger than QN_MAX_DATAGRAM travels as fragments (§15.9).
 */
export const CANDIDATE_ROOM = 64 * 1024;
export const MAX_QN_MESSAGE_LEN = MAX_VALUE_LEN + CANDIDATE_ROOM + 1024;
const MAX_ENTRY_LEN = MAX_VALUE_LEN + CANDIDATE_ROOM;
const MAX_SNAP_CHUNK = 64 * 1024;
/**
 * Largest QN datagram: a message up to this size travels whole, a larger one as fragments of
 * at most this size (within an ETCP sealed payload, MAX_SEALED_PAYLOAD = 1416).
 */
export const QN_MAX_DATAGRAM = 1400;
/** Most fragments of one QN message: the largest message in pieces of at least 1 KiB. */
export const MAX_QN_FRAGMENTS = Math.ceil(MAX_QN_MESSAGE_LEN / 1024);

export type QnBody =
  | RaftMsg
  /** A candidate forwarded to the leader by the member it was proposed at. */
  | { t: 'fwd'; cmd: Uint8Array }
  /** Routing: the members the sender hears directly. */
  | { t: 'hello'; neighbours: NodeId[]; commit: number }
  /** To a node that is no longer a member: its removal is committed at `index`. */
  | { t: 'removed'; index: number }
  /**
   * Another body (kind and fields), sealed end to end by `from` for `to` (§15.5): what a
   * message crossing a relay carries, so the relay can neither forge nor alter it.
   */
  | { t: 'sealed'; box: Uint8Array }
  /**
   * Piece `index` of `count` of one message (an envelope) larger than a datagram, sent to the
   * next hop only (§15.9): bytes [index·F, min((index+1)·F, total)), F = ceil(total/count).
   */
  | { t: 'frag'; msgId: number; total: number; index: number; count: number; bytes: Uint8Array }
  /** The pieces of message `msgId` the receiver holds, as ascending disjoint ranges. */
  | { t: 'fragAck'; msgId: number; ranges: IndexRange[] };

export interface QnEnvelope {
  domain: number;
  from: NodeId;
  to: NodeId;
  ttl: number;
  body: QnBody;
}

const KIND = {
  vote: 1,
  voteResp: 2,
  append: 3,
  appendResp: 4,
  snap: 5,
  snapResp: 6,
  fwd: 7,
  hello: 8,
  removed: 9,
  sealed: 10,
  frag: 11,
  fragAck: 12,
  snapDiff: 13,
} as const;
/** At least the kind octet, and the 16-octet tag. */
const MIN_BOX = 17;

export function encodeEnvelope(e: QnEnvelope): Uint8Array {
  const w = new Writer(64);
  w.u8(QN_MSG_TYPE).u32(e.domain).varint(e.from).varint(e.to).u8(e.ttl);
  writeBody(w, e.body);
  return w.finish();
}

/** What a relay seal authenticates besides the body: type, domain, from and to (not ttl, which relays decrement). */
export function sealedHeader(domain: number, from: NodeId, to: NodeId): Uint8Array {
  return new Writer(24).u8(QN_MSG_TYPE).u32(domain).varint(from).varint(to).finish();
}

/** A body alone (kind and fields): the plaintext of a seal. */
export function encodeBody(b: QnBody): Uint8Array {
  const w = new Writer(64);
  writeBody(w, b);
  return w.finish();
}

/** Decodes a body alone (a seal's plaintext); a sealed body inside a seal is malformed. */
export function decodeBody(buf: Uint8Array): QnBody {
  const r = new Reader(buf);
  const b = readBody(r);
  if (b.t === 'sealed') throw new WireError(DropReason.MalformedPayload, 'sealed', 'a seal inside a seal');
  // Fragments are per hop (§15.9): never sealed end to end.
  if (b.t === 'frag' || b.t === 'fragAck') throw new WireError(DropReason.MalformedPayload, 'sealed', 'a fragment inside a seal');
  r.expectEnd('qn');
  return b;
}

function writeBody(w: Writer, b: QnBody): void {
  w.u8(b.t === 'snap' && b.base ? KIND.snapDiff : KIND[b.t]);
  switch (b.t) {
    case 'vote':
      w.varint(b.term)
        .varint(b.lastIndex)
        .varint(b.lastTerm)
        .u8(b.pre ? 1 : 0);
      break;
    case 'voteResp':
      w.varint(b.term)
        .u8(b.granted ? 1 : 0)
        .u8(b.pre ? 1 : 0);
      break;
    case 'append':
      w.varint(b.term).varint(b.prevIndex).varint(b.prevTerm).varint(b.commit).varint(b.entries.length);
      for (const en of b.entries) w.varint(en.term).lenBytes(en.cmd);
      break;
    case 'appendResp':
      w.varint(b.term)
        .u8(b.ok ? 1 : 0)
        .varint(b.index);
      break;
    case 'snap':
      w.varint(b.term).varint(b.index).varint(b.lastTerm).varint(b.members.length);
      for (const m of b.members) w.varint(m);
      if (b.base) w.varint(b.base).varint(b.baseTerm ?? 0);
      w.varint(b.offset).varint(b.total).lenBytes(b.data);
      break;
    case 'snapResp':
      w.varint(b.term).varint(b.index).varint(b.offset);
      break;
    case 'fwd':
      w.lenBytes(b.cmd);
      break;
    case 'hello':
      w.varint(b.neighbours.length);
      for (const n of b.neighbours) w.varint(n);
      w.varint(b.commit);
      break;
    case 'removed':
      w.varint(b.index);
      break;
    case 'sealed':
      w.lenBytes(b.box);
      break;
    case 'frag':
      w.varint(b.msgId).varint(b.total).varint(b.count).varint(b.index).lenBytes(b.bytes);
      break;
    case 'fragAck':
      w.varint(b.msgId).varint(b.ranges.length);
      for (const x of b.ranges) w.varint(x.from).varint(x.to - x.from);
      break;
  }
}

const bool = (r: Reader, f: string): boolean => {
  const v = r.u8(f);
  if (v > 1) throw new WireError(DropReason.MalformedPayload, f, `must be 0 or 1, got ${v}`);
  return v === 1;
};

function count(r: Reader, f: string, max: number): number {
  const n = r.varint(f);
  if (n > max) throw new WireError(DropReason.MalformedPayload, f, `${n} exceeds ${max}`);
  return n;
}

/** Decodes one envelope; a WireError names the field at fault. Byte fields are views into `buf`. */
export function decodeEnvelope(buf: Uint8Array): QnEnvelope {
  const r = new Reader(buf);
  const type = r.u8('qn.type');
  if (type !== QN_MSG_TYPE) throw new WireError(DropReason.MalformedPayload, 'qn.type', `0x${type.toString(16)} is not a QN message`);
  const domain = r.u32('qn.domain');
  const from = r.varint('qn.from');
  const to = r.varint('qn.to');
  const ttl = r.u8('qn.ttl');
  const body = readBody(r);
  r.expectEnd('qn');
  return { domain, from, to, ttl, body };
}

function readBody(r: Reader): QnBody {
  const kind = r.u8('qn.kind');
  let body: QnBody;
  switch (kind) {
    case KIND.vote:
      body = {
        t: 'vote',
        term: r.varint('vote.term'),
        lastIndex: r.varint('vote.lastIndex'),
        lastTerm: r.varint('vote.lastTerm'),
        pre: bool(r, 'vote.pre'),
      };
      break;
    case KIND.voteResp:
      body = { t: 'voteResp', term: r.varint('voteResp.term'), granted: bool(r, 'voteResp.granted'), pre: bool(r, 'voteResp.pre') };
      break;
    case KIND.append: {
      const term = r.varint('append.term');
      const prevIndex = r.varint('append.prevIndex');
      const prevTerm = r.varint('append.prevTerm');
      const commit = r.varint('append.commit');
      const n = count(r, 'append.entries', MAX_ENTRIES);
      const entries: { term: number; cmd: Uint8Array }[] = [];
      for (let i = 0; i < n; i++) {
        const t = r.varint('entry.term');
        const cmd = r.lenBytes('entry.cmd', MAX_ENTRY_LEN);
        if (cmd.length === 0) throw new WireError(DropReason.MalformedPayload, 'entry.cmd', 'empty command');
        entries.push({ term: t, cmd });
      }
      body = { t: 'append', term, prevIndex, prevTerm, commit, entries };
      break;
    }
    case KIND.appendResp:
      body = { t: 'appendResp', term: r.varint('appendResp.term'), ok: bool(r, 'appendResp.ok'), index: r.varint('appendResp.index') };
      break;
    case KIND.snap:
    case KIND.snapDiff: {
      const term = r.varint('snap.term');
      const index = r.varint('snap.index');
      const lastTerm = r.varint('snap.lastTerm');
      const n = count(r, 'snap.members', MAX_MEMBERS);
      const members: NodeId[] = [];
      for (let i = 0; i < n; i++) members.push(r.varint('snap.member'));
      let diff: { base: number; baseTerm: number } | undefined;
      if (kind === KIND.snapDiff) {
        const base = r.varint('snapDiff.base');
        const baseTerm = r.varint('snapDiff.baseTerm');
        // A difference from an earlier state (a base of 0 would be a whole snapshot, kind 5).
        if (base === 0 || base >= index)
          throw new WireError(DropReason.MalformedPayload, 'snapDiff.base', `${base} (1 to index - 1 = ${index - 1})`);
        diff = { base, baseTerm };
      }
      const offset = r.varint('snap.offset');
      const total = r.varint('snap.total');
      const data = r.lenBytes('snap.data', MAX_SNAP_CHUNK);
      if (offset + data.length > total)
        throw new WireError(DropReason.MalformedPayload, 'snap.data', `chunk ends at ${offset + data.length}, past total ${total}`);
      body = { t: 'snap', term, index, lastTerm, members, ...diff, offset, total, data };
      break;
    }
    case KIND.snapResp:
      body = { t: 'snapResp', term: r.varint('snapResp.term'), index: r.varint('snapResp.index'), offset: r.varint('snapResp.offset') };
      break;
    case KIND.fwd:
      body = { t: 'fwd', cmd: r.lenBytes('fwd.cmd', MAX_ENTRY_LEN) };
      break;
    case KIND.hello: {
      const n = count(r, 'hello.neighbours', MAX_MEMBERS);
      const neighbours: NodeId[] = [];
      for (let i = 0; i < n; i++) neighbours.push(r.varint('hello.neighbour'));
      body = { t: 'hello', neighbours, commit: r.varint('hello.commit') };
      break;
    }
    case KIND.removed:
      body = { t: 'removed', index: r.varint('removed.index') };
      break;
    case KIND.sealed: {
      const box = r.lenBytes('sealed.box', MAX_QN_MESSAGE_LEN);
      if (box.length < MIN_BOX) throw new WireError(DropReason.MalformedPayload, 'sealed.box', `${box.length} octets; at least ${MIN_BOX}`);
      body = { t: 'sealed', box };
      break;
    }
    case KIND.frag:
      // Only a message larger than a datagram is cut, in pieces of 1 KiB to a datagram.
      body = {
        t: 'frag',
        ...readFragmentBody(r, 'frag', { maxTotal: MAX_QN_MESSAGE_LEN, maxCount: MAX_QN_FRAGMENTS, maxPiece: QN_MAX_DATAGRAM }),
      };
      break;
    case KIND.fragAck:
      body = { t: 'fragAck', ...readFragmentAckBody(r, 'fragAck', MAX_QN_FRAGMENTS) };
      break;
    default:
      throw new WireError(DropReason.MalformedPayload, 'qn.kind', `unknown QN message kind ${kind}`);
  }
  return body;
}

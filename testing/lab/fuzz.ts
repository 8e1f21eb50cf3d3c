/**
 * Seeded generators of hostile but well-formed-looking input for the adversary
 * (testing/lab/adversary.ts): ESTP payloads, QN envelopes and WRAP records, built with the
 * project's own codecs so that most of them pass decoding and reach the protocol cores,
 * then mutated or replaced by noise for the rest. Deterministic from the Rng's seed.
 */
import { type Rng } from '../sim/rng.js';
import {
  CloseReason,
  decodeMessages,
  encodeMessage,
  MsgType,
  RECON_FANOUT,
  RECON_MAX_DEPTH,
  REQ_WANT_META,
  type Message,
} from '../../wire/messages.js';
import { DeltaOp, type Delta } from '../../wire/delta.js';
import { MAX_FRAME_LEN, HEADER_LEN } from '../../wire/constants.js';
import { TAGLEN } from '../../crypto/primitives.js';
import { encodeEnvelope, QN_MSG_TYPE, type QnBody } from '../../wire/qn.js';
import { encodeConfig, EntryKind } from '../../core/qn/raft.js';
import { encodeCandidate } from '../../core/qn/state.js';
import { manifestDigest } from '../../core/pair/manifest.js';
import { encodeRecord, RecordType, type CloseCode, OPEN_DATAGRAM, OPEN_DELTA, type WrapRecord, type Target } from '../../wire/wrap.js';

/** Largest ESTP/QN payload a sealed Data frame carries. */
export const MAX_PAYLOAD = MAX_FRAME_LEN - HEADER_LEN - TAGLEN;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** A field value drawn towards the edges: 0, 1, u32 and 2^53 boundaries, or anything. */
export function edgy(rng: Rng, max = MAX_SAFE): number {
  const v = rng.pick([
    0,
    1,
    2,
    rng.int(0, 64),
    rng.int(0, 0xffff),
    2 ** 31 - 1,
    2 ** 32 - 1,
    2 ** 32,
    MAX_SAFE - 1,
    MAX_SAFE,
    rng.int(0, 2 ** 30) * 2 ** 23 + rng.int(0, 2 ** 23 - 1),
  ]);
  return Math.min(v, max);
}

const u32 = (rng: Rng): number => edgy(rng, 2 ** 32 - 1);
const u8 = (rng: Rng): number => rng.int(0, 255);
const hash = (rng: Rng): { hi: number; lo: number } => ({ hi: u32(rng), lo: u32(rng) });

function bytes(rng: Rng, max: number): Uint8Array {
  return rng.bytes(rng.chance(0.7) ? rng.int(0, Math.min(max, 32)) : rng.int(0, max));
}

function key(rng: Rng): Uint8Array {
  return rng.chance(0.5) ? new TextEncoder().encode(`k${rng.int(0, 50)}`) : bytes(rng, 300);
}

function delta(rng: Rng): Delta {
  switch (rng.int(1, 4) as DeltaOp) {
    case DeltaOp.Set:
      return { op: DeltaOp.Set, key: key(rng), value: bytes(rng, 1300) };
    case DeltaOp.Del:
      return { op: DeltaOp.Del, key: key(rng) };
    case DeltaOp.Cas:
      return { op: DeltaOp.Cas, key: key(rng), expect: edgy(rng), value: bytes(rng, 600) };
    case DeltaOp.Append:
      return { op: DeltaOp.Append, offset: edgy(rng), data: bytes(rng, 1300) };
    default:
      throw new Error('unreachable: rng.int(1, 4)');
  }
}

export interface EstpContext {
  /** The victim pair's register names (valid names reach the register code). */
  registers: string[];
  /** The pair's member ids (1 and 2): valid origins. */
  origins: number[];
  /**
   * Whether a Close may tear the pair down for good (reason Closed). Off, a Close only says
   * the peer goes away (the pair decoheres and comes back): one Closed would otherwise end
   * the campaign early, every later payload ignored by a CLOSED pair.
   */
  closes?: boolean;
}

function register(rng: Rng, ctx: EstpContext): string {
  return rng.chance(0.85) ? rng.pick(ctx.registers) : rng.pick(['x', 'ü'.repeat(30), 'r'.repeat(64), `reg${rng.int(0, 9)}`]);
}

const list = <T>(rng: Rng, max: number, one: () => T): T[] =>
  Array.from({ length: rng.chance(0.8) ? rng.int(0, 4) : rng.int(0, max) }, one);

/** One ESTP message of any type, its fields drawn at the edges. */
export function estpMessage(rng: Rng, ctx: EstpContext): Message {
  const reg = register(rng, ctx);
  const origin = (): number => (rng.chance(0.8) ? rng.pick(ctx.origins) : edgy(rng));
  const entries = (): { key: Uint8Array; version: number; value: Uint8Array }[] =>
    list(rng, 40, () => ({ key: key(rng), version: edgy(rng), value: bytes(rng, 200) }));
  // Every type: 1-13, 14 Fragment, 15 Manifest, 16 FragmentAck.
  const t = rng.int(1, 16) as MsgType;
  switch (t) {
    case MsgType.Status: {
      const version = edgy(rng);
      const held = list(rng, 16, () => ({ from: 0, to: 0 }));
      let floor = Math.min(version, MAX_SAFE - 1000) + 2;
      for (const h of held) {
        h.from = floor;
        h.to = floor + rng.int(0, 3);
        floor = h.to + 2;
      }
      return { type: t, register: reg, version, hash: hash(rng), logBase: edgy(rng), resolvedSeq: edgy(rng), held };
    }
    case MsgType.Ack:
      return { type: t, largestPn: edgy(rng), ackDelayMs: edgy(rng) };
    case MsgType.Propose:
      return {
        type: t,
        register: reg,
        base: edgy(rng),
        candidates: list(rng, 30, () => ({ origin: origin(), seq: edgy(rng), delta: delta(rng) })),
      };
    case MsgType.Collapse:
      return {
        type: t,
        register: reg,
        version: edgy(rng),
        hash: hash(rng),
        entries: list(rng, 20, () =>
          rng.chance(0.7)
            ? { origin: origin(), seq: edgy(rng), verdict: 'committed', delta: delta(rng) }
            : { origin: origin(), seq: edgy(rng), verdict: 'rejected', reason: rng.int(1, 3) },
        ),
      };
    case MsgType.ReconReq:
      return {
        type: t,
        register: reg,
        targetVersion: edgy(rng),
        flags: rng.chance(0.5) ? REQ_WANT_META : 0,
        prefixes: list(rng, 256, () => {
          const depth = rng.int(0, RECON_MAX_DEPTH);
          return { depth, prefix: rng.int(0, 16 ** depth - 1) };
        }),
      };
    case MsgType.ReconNode:
      return {
        type: t,
        register: reg,
        targetVersion: edgy(rng),
        depth: rng.int(0, RECON_MAX_DEPTH - 1),
        prefix: u32(rng),
        children: Array.from({ length: RECON_FANOUT }, () => ({ count: edgy(rng), hash: hash(rng) })),
      };
    case MsgType.ReconEntries: {
      const parts = rng.int(1, 4096);
      return {
        type: t,
        register: reg,
        targetVersion: edgy(rng),
        depth: rng.int(0, RECON_MAX_DEPTH),
        prefix: u32(rng),
        part: rng.int(0, parts - 1),
        parts,
        entries: entries(),
      };
    }
    case MsgType.ReconMeta:
      return {
        type: t,
        register: reg,
        targetVersion: edgy(rng),
        hash: hash(rng),
        size: edgy(rng),
        origins: list(rng, 50, () => ({ origin: origin(), seq: edgy(rng) })),
        rejections: list(rng, 50, () => ({ origin: origin(), seq: edgy(rng), reason: rng.int(1, 3) })),
      };
    case MsgType.SnapReq:
      return { type: t, register: reg, targetVersion: edgy(rng), flags: rng.chance(0.5) ? REQ_WANT_META : 0, fromChunk: edgy(rng) };
    case MsgType.SnapChunk: {
      const chunks = edgy(rng, 2 ** 24);
      return { type: t, register: reg, targetVersion: edgy(rng), chunk: rng.int(0, Math.max(0, chunks - 1)), chunks, entries: entries() };
    }
    case MsgType.StreamReq:
      return { type: t, register: reg, targetVersion: edgy(rng), flags: rng.chance(0.5) ? REQ_WANT_META : 0, offset: edgy(rng) };
    case MsgType.StreamData:
      return { type: t, register: reg, targetVersion: edgy(rng), offset: edgy(rng), data: bytes(rng, 1300) };
    case MsgType.Close:
      return { type: t, reason: ctx.closes ? rng.int(0, 1) : 1 };
    case MsgType.Manifest: {
      // The victim's own registers with kinds and limits drawn at the edges; a digest that
      // mostly matches its entries, so most sendings reach the comparison.
      const entries = list(rng, 40, () => ({
        name: register(rng, ctx),
        kind: rng.chance(0.8) ? rng.int(1, 2) : u8(rng),
        limits: list(rng, 16, () => ({ id: 0, value: edgy(rng) })).map((l, i) => ({ ...l, id: i + 1 })),
      }));
      const parts = rng.chance(0.8) ? 1 : rng.int(1, 256);
      return {
        type: t,
        flags: rng.int(0, 3),
        digest: rng.chance(0.8) ? manifestDigest(entries) : u32(rng),
        part: rng.int(0, parts - 1),
        parts,
        entries,
      };
    }
    case MsgType.Fragment: {
      // Mostly valid layouts over few ids, so pieces collide, contradict and complete.
      const total = rng.chance(0.7) ? rng.int(1400, 20_000) : rng.int(1400, 4_000_000);
      const count = Math.ceil(total / 1300);
      const index = rng.int(0, count - 1);
      const len = Math.max(0, Math.min(Math.ceil(total / count), total - index * Math.ceil(total / count)));
      return { type: t, msgId: rng.int(0, 8), total, count, index, bytes: rng.bytes(len) };
    }
    case MsgType.FragmentAck: {
      const ranges = list(rng, 32, () => ({ from: 0, to: 0 }));
      let floor = 0;
      for (const r of ranges) {
        r.from = floor + rng.int(0, 3);
        r.to = r.from + rng.int(0, 20);
        floor = r.to + 2;
      }
      return { type: t, msgId: rng.int(0, 8), ranges };
    }
    default:
      throw new RangeError(`no such message type ${t}`);
  }
}

/** Flip, overwrite, cut, insert or splice bytes (the first `keep` bytes are left alone). */
export function mutate(rng: Rng, buf: Uint8Array, keep = 0): Uint8Array {
  let b = new Uint8Array(buf);
  for (let n = rng.int(1, 4); n > 0; n--) {
    if (b.length <= keep) b = new Uint8Array([...b, ...rng.bytes(rng.int(1, 8))]);
    const at = rng.int(keep, b.length - 1);
    switch (rng.int(0, 5)) {
      case 0:
        b[at] ^= 1 << rng.int(0, 7);
        break;
      case 1:
        b[at] = rng.pick([0x00, 0x7f, 0x80, 0xff]);
        break;
      case 2:
        b = b.slice(0, at);
        break;
      case 3:
        b = new Uint8Array([...b.subarray(0, at), ...rng.bytes(rng.int(1, 16)), ...b.subarray(at)]);
        break;
      case 4: {
        // A maximal varint (2^53-1) where a length or a count was.
        b = new Uint8Array([...b.subarray(0, at), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, ...b.subarray(at + 1)]);
        break;
      }
      case 5:
        b = new Uint8Array([...b, ...b.subarray(keep, Math.min(b.length, keep + rng.int(1, 64)))]);
        break;
    }
  }
  return b.subarray(0, MAX_PAYLOAD);
}

function encodeOr(rng: Rng, make: () => Uint8Array): Uint8Array {
  try {
    return make();
  } catch {
    return rng.bytes(rng.int(1, 64)); // an encoder refused the drawn fields (e.g. a name over 64 bytes)
  }
}

/** An ESTP Data payload: valid messages (one or several), mutated ones, or noise. */
export function estpPayload(rng: Rng, ctx: EstpContext): Uint8Array {
  for (;;) {
    const p = anyEstpPayload(rng, ctx);
    if (ctx.closes || !closesPair(p)) return p;
  }
}

/** Whether a payload decodes whole (so it is dispatched) with a Close that ends the pair: a mutation can make one. */
function closesPair(p: Uint8Array): boolean {
  try {
    return decodeMessages(p).messages.some((m) => m.type === MsgType.Close && m.reason === CloseReason.Closed);
  } catch {
    return false;
  }
}

function anyEstpPayload(rng: Rng, ctx: EstpContext): Uint8Array {
  const p = rng.float();
  if (p < 0.45) {
    const parts: Uint8Array[] = [];
    let len = 0;
    for (let n = rng.chance(0.7) ? 1 : rng.int(2, 4); n > 0; n--) {
      const m = encodeOr(rng, () => encodeMessage(estpMessage(rng, ctx)));
      if (len + m.length > MAX_PAYLOAD) break;
      parts.push(m);
      len += m.length;
    }
    if (parts.length === 0) return encodeOr(rng, () => encodeMessage({ type: MsgType.Ack, largestPn: edgy(rng), ackDelayMs: 0 }));
    return concat(parts);
  }
  if (p < 0.85)
    return mutate(
      rng,
      encodeOr(rng, () => encodeMessage(estpMessage(rng, ctx))),
    );
  const noise = rng.bytes(rng.int(0, 200));
  if (noise.length > 0 && noise[0] === QN_MSG_TYPE) noise[0] = 0x41; // ESTP noise; QN is its own category
  return noise;
}

export interface QnContext {
  /** Domain ids to address: the targeted one first, then others (and random ones are drawn too). */
  domains: number[];
  self: number;
  victim: number;
  /** Other node ids of the targeted domain (honest members). */
  others: number[];
  registers: string[];
  /**
   * A plausible Raft position the generator advances as it sends: appends that chain on
   * each other (and then contradict what they claimed committed) reach deeper than
   * independent random fields do.
   */
  cursor: { term: number; index: number };
}

function qnEntryCmd(rng: Rng, ctx: QnContext): Uint8Array {
  const ids = (): number[] => list(rng, 70, () => (rng.chance(0.6) ? rng.pick([ctx.self, ctx.victim, ...ctx.others]) : edgy(rng)));
  switch (rng.int(0, 5)) {
    case 0:
      return new Uint8Array([EntryKind.Noop]);
    case 1:
      return encodeConfig(ids());
    case 2:
      // A poisoned configuration: the kind byte, then anything.
      return new Uint8Array([EntryKind.Config, ...rng.bytes(rng.int(0, 40))]);
    case 3:
      return encodeOr(rng, () =>
        encodeCandidate({
          origin: rng.chance(0.5) ? ctx.self : edgy(rng),
          seq: edgy(rng),
          ops: list(rng, 6, () => ({ register: rng.chance(0.8) ? rng.pick(ctx.registers) : `r${rng.int(0, 9)}`, delta: delta(rng) })).slice(
            0,
            6,
          ),
        }),
      );
    case 4:
      return new Uint8Array([EntryKind.App, ...rng.bytes(rng.int(0, 60))]);
    default:
      return new Uint8Array([rng.int(3, 255), ...rng.bytes(rng.int(0, 20))]);
  }
}

function qnBody(rng: Rng, ctx: QnContext): QnBody {
  const pre = rng.chance(0.5);
  switch (rng.int(1, 9)) {
    case 1:
      if (rng.chance(0.5))
        return {
          t: 'vote',
          term: ctx.cursor.term + rng.int(0, 2),
          lastIndex: ctx.cursor.index + rng.int(0, 2),
          lastTerm: ctx.cursor.term,
          pre,
        };
      return { t: 'vote', term: edgy(rng), lastIndex: edgy(rng), lastTerm: edgy(rng), pre };
    case 2:
      return { t: 'voteResp', term: edgy(rng), granted: rng.chance(0.5), pre };
    case 3: {
      if (rng.chance(0.4))
        return {
          t: 'append',
          term: edgy(rng),
          prevIndex: edgy(rng),
          prevTerm: edgy(rng),
          commit: edgy(rng),
          entries: list(rng, 12, () => ({ term: edgy(rng), cmd: qnEntryCmd(rng, ctx) })),
        };
      // Near the cursor: same or next term, a little before or after the last index sent, and
      // a commit index that claims what was just sent (or more).
      const c = ctx.cursor;
      const term = c.term + rng.int(0, 1);
      const prevIndex = Math.max(0, c.index - rng.int(-1, 3));
      const entries = Array.from({ length: rng.int(0, 4) }, () => ({
        term: rng.chance(0.8) ? term : rng.int(0, term + 1),
        cmd: qnEntryCmd(rng, ctx),
      }));
      c.term = term;
      c.index = prevIndex + entries.length;
      return { t: 'append', term, prevIndex, prevTerm: Math.max(0, term - rng.int(0, 1)), commit: c.index + rng.int(0, 2), entries };
    }
    case 4:
      return { t: 'appendResp', term: edgy(rng), ok: rng.chance(0.5), index: edgy(rng) };
    case 5: {
      const data = bytes(rng, 900);
      const total = rng.chance(0.5) ? data.length : edgy(rng);
      const offset = rng.chance(0.5) ? 0 : Math.max(0, total - data.length);
      return {
        t: 'snap',
        term: edgy(rng),
        index: edgy(rng),
        lastTerm: edgy(rng),
        members: list(rng, 64, () => (rng.chance(0.5) ? rng.pick([ctx.self, ctx.victim, ...ctx.others]) : edgy(rng))),
        offset,
        total: Math.max(total, offset + data.length),
        data,
      };
    }
    case 6:
      return { t: 'snapResp', term: edgy(rng), index: edgy(rng), offset: edgy(rng) };
    case 7:
      return { t: 'fwd', cmd: qnEntryCmd(rng, ctx) };
    case 8:
      return {
        t: 'hello',
        neighbours: list(rng, 64, () => (rng.chance(0.6) ? rng.pick([ctx.victim, ...ctx.others]) : edgy(rng))),
        commit: edgy(rng),
      };
    default:
      return { t: 'removed', index: edgy(rng) };
  }
}

/**
 * A QN payload: an envelope for the targeted domain (mostly), claiming to be from this node,
 * the victim or another member, addressed to the victim or relayed to another member; then
 * mutated, or noise behind the QN type byte and a real domain id.
 */
export function qnPayload(rng: Rng, ctx: QnContext): Uint8Array {
  const domain = rng.chance(0.85) ? ctx.domains[0] : rng.chance(0.5) ? rng.pick(ctx.domains) : u32(rng);
  const member = (): number => rng.pick([ctx.victim, ...ctx.others]);
  const from = rng.chance(0.7) ? ctx.self : rng.chance(0.7) ? member() : edgy(rng);
  const to = rng.chance(0.75) ? ctx.victim : rng.chance(0.8) ? member() : edgy(rng);
  const ttl = rng.chance(0.8) ? 8 : u8(rng);
  const p = rng.float();
  const env = (): Uint8Array => {
    const body = qnBody(rng, ctx);
    let e = encodeEnvelope({ domain, from, to, ttl, body });
    // One envelope per datagram: shed entries until it fits.
    while (e.length > MAX_PAYLOAD && body.t === 'append' && body.entries.length > 0) {
      body.entries.pop();
      e = encodeEnvelope({ domain, from, to, ttl, body });
    }
    return e.subarray(0, MAX_PAYLOAD);
  };
  if (p < 0.6) return env();
  if (p < 0.9) return mutate(rng, env(), 5); // the type byte and domain id kept: it reaches the node
  const head = new Uint8Array(5);
  head[0] = QN_MSG_TYPE;
  new DataView(head.buffer).setUint32(1, domain);
  return concat([head, rng.bytes(rng.int(0, 120))]);
}

export interface WrapContext {
  /** Conversation ids the adversary reuses so that later records hit connections it opened. */
  conns: number[];
  /** Destinations an OPEN names (harmless in the lab: closed ports, the victim's own carrier). */
  targets: Target[];
}

/** One WRAP record (before the carrier seals it): valid-looking, mutated, or noise. */
export function wrapRecord(rng: Rng, ctx: WrapContext): Uint8Array {
  const conn = (): number => (rng.chance(0.8) ? rng.pick(ctx.conns) : u32(rng));
  const offset = (): number => (rng.chance(0.5) ? rng.int(0, 1 << 20) : edgy(rng));
  const make = (): WrapRecord => {
    switch (rng.int(1, 12) as RecordType) {
      case RecordType.Hello:
        return { type: RecordType.Hello, version: rng.chance(0.7) ? 1 : u8(rng), bootId: BigInt(u32(rng)) };
      case RecordType.Open:
        return {
          type: RecordType.Open,
          conn: conn(),
          wrapPort: rng.int(0, 65535),
          target: rng.pick(ctx.targets),
          holdMs: rng.chance(0.5) ? rng.int(100, 30_000) : u32(rng),
          flags: rng.pick([0, OPEN_DELTA, OPEN_DATAGRAM, OPEN_DELTA | OPEN_DATAGRAM, u8(rng)]),
        };
      case RecordType.Opened:
        return { type: RecordType.Opened, conn: conn() };
      case RecordType.Data:
        return {
          type: RecordType.Data,
          conn: conn(),
          offset: offset(),
          data: rng.bytes(rng.chance(0.9) ? rng.int(0, 1024) : rng.int(0, 16_384)),
        };
      case RecordType.Ref:
        return { type: RecordType.Ref, conn: conn(), offset: offset(), length: rng.int(1, 65_536), digest: rng.bytes(32) };
      case RecordType.Nack:
        return { type: RecordType.Nack, conn: conn(), offset: offset() };
      case RecordType.Close:
        return { type: RecordType.Close, conn: conn(), code: rng.int(0, 12) as CloseCode, text: 'x'.repeat(rng.int(0, 50)) };
      case RecordType.Ping:
      case RecordType.Pong:
        return { type: rng.pick([RecordType.Ping, RecordType.Pong]) };
      default:
        return { type: rng.pick([RecordType.Ack, RecordType.Fin, RecordType.Resume]), conn: conn(), offset: offset() };
    }
  };
  const p = rng.float();
  if (p < 0.6) return encodeOr(rng, () => encodeRecord(make()));
  if (p < 0.9)
    return mutate(
      rng,
      encodeOr(rng, () => encodeRecord(make())),
    );
  return rng.bytes(rng.int(0, 64));
}

export const concat = (parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);

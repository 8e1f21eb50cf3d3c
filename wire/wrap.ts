/**
 * WRAP records (docs/PROTOCOL.md §16): what two spookd say to each other about wrapped
 * connections, inside the sealed records of a carrier. Each wrapped TCP connection is two
 * `stream` registers, one per direction; DATA is the Append delta of one of them, addressed
 * by offset, so a repeated or resent DATA is idempotent and a resumed stream restarts at the
 * exact offset the receiver reports.
 */
import { Reader, Writer } from './buffer.js';

/** Delta mode's largest content-defined chunk (§16.9). */
export const CHUNK_MAX = 64 * 1024;
/** Octets of a chunk's SHA-256 that name it in REF and NACK records (§16.9). */
export const DIGEST_LEN = 16;

export const WRAP_VERSION = 1;
/** Largest DATA payload: several socket reads per record keep the per-record costs (AEAD setup, syscalls) small. */
export const MAX_DATA = 256 * 1024;
const MAX_TEXT = 200;

export enum RecordType {
  Hello = 1,
  Open = 2,
  Opened = 3,
  Data = 4,
  Ack = 5,
  Fin = 6,
  Close = 7,
  Resume = 8,
  Ping = 9,
  Pong = 10,
  /** Delta mode: a chunk of the stream that the receiver holds, by digest (§16.9). */
  Ref = 11,
  /** Delta mode: the receiver does not hold a referenced chunk: resend from this offset. */
  Nack = 12,
}

/** OPEN flags. */
export const OPEN_DELTA = 0x01;
/** The connection is a UDP flow: its streams carry datagrams, each as u16 length + bytes (§16.10). */
export const OPEN_DATAGRAM = 0x02;

/** Why a wrapped connection ended (both ends log and count it under this name). */
export enum CloseCode {
  ClientReset = 1,
  ServerReset = 2,
  HoldExpired = 3,
  DialFailed = 4,
  PeerRestarted = 5,
  UnknownConnection = 6,
  Shutdown = 7,
  ProtocolError = 8,
  WrapperRemoved = 9,
  TooManyConnections = 10,
  /** The serving side's dial policy does not allow the destination (§16.5.1); sent with no text. */
  Refused = 11,
}

/** The operator's name of each close code (logs, counters, `spook wrap stats`). */
export type CloseName =
  | 'client-reset'
  | 'server-reset'
  | 'hold-expired'
  | 'dial-failed'
  | 'peer-restarted'
  | 'unknown-connection'
  | 'shutdown'
  | 'protocol-error'
  | 'wrapper-removed'
  | 'too-many-connections'
  | 'refused';

export const CLOSE_NAMES: Record<CloseCode, CloseName> = {
  [CloseCode.ClientReset]: 'client-reset',
  [CloseCode.ServerReset]: 'server-reset',
  [CloseCode.HoldExpired]: 'hold-expired',
  [CloseCode.DialFailed]: 'dial-failed',
  [CloseCode.PeerRestarted]: 'peer-restarted',
  [CloseCode.UnknownConnection]: 'unknown-connection',
  [CloseCode.Shutdown]: 'shutdown',
  [CloseCode.ProtocolError]: 'protocol-error',
  [CloseCode.WrapperRemoved]: 'wrapper-removed',
  [CloseCode.TooManyConnections]: 'too-many-connections',
  [CloseCode.Refused]: 'refused',
};

export interface Target {
  family: 4 | 6;
  address: string;
  port: number;
}

export type WrapRecord =
  /** window: the sender's receive window per connection; buffer: per peer, all connections (§16.5.5). */
  | { type: RecordType.Hello; version: number; bootId: bigint; window?: number; buffer?: number }
  | { type: RecordType.Open; conn: number; wrapPort: number; target: Target; holdMs: number; flags: number }
  | { type: RecordType.Ref; conn: number; offset: number; length: number; digest: Uint8Array }
  | { type: RecordType.Nack; conn: number; offset: number }
  | { type: RecordType.Opened; conn: number }
  | { type: RecordType.Data; conn: number; offset: number; data: Uint8Array }
  | { type: RecordType.Ack | RecordType.Fin | RecordType.Resume; conn: number; offset: number }
  | { type: RecordType.Close; conn: number; code: CloseCode; text: string }
  | { type: RecordType.Ping | RecordType.Pong };

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });

function writeOffset(w: Writer, v: number): void {
  w.u32(Math.floor(v / 2 ** 32)).u32(v >>> 0);
}

function readOffset(r: Reader, field: string): number {
  const hi = r.u32(`${field}.hi`);
  if (hi >= 2 ** 21) throw new RangeError(`${field}: offset beyond 2^53`);
  return hi * 2 ** 32 + r.u32(`${field}.lo`);
}

function writeTarget(w: Writer, t: Target): void {
  w.u8(t.family);
  if (t.family === 4) for (const p of t.address.split('.')) w.u8(Number(p));
  else w.bytes(ipv6Bytes(t.address));
  w.u16(t.port);
}

function readTarget(r: Reader): Target {
  const family = r.u8('open.family');
  if (family === 4) {
    const b = r.bytes(4, 'open.address');
    return { family, address: [...b].join('.'), port: r.u16('open.port') };
  }
  if (family === 6) {
    const b = r.bytes(16, 'open.address');
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
    return { family, address: groups.join(':'), port: r.u16('open.port') };
  }
  throw new RangeError(`open.family: ${family} is neither 4 nor 6`);
}

/** An IPv6 address in text form → its 16 bytes ("::" and a dotted IPv4 tail allowed). */
export function ipv6Bytes(addr: string): Uint8Array {
  const bad = (): never => {
    throw new RangeError(`"${addr}" is not an IPv6 address`);
  };
  const parseGroups = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const q = g.split('.').map(Number);
        if (q.length !== 4 || q.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) bad();
        out.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) bad();
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const halves = addr.split('::');
  if (halves.length > 2) bad();
  const head = parseGroups(halves[0]);
  const tail = halves.length === 2 ? parseGroups(halves[1]) : [];
  const zeros = 8 - head.length - tail.length;
  if (zeros < 0 || (halves.length === 1 && zeros !== 0)) bad();
  const groups = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** The 13 octets before a DATA record's bytes (the hot path sends them as a separate part). */
export function encodeDataHeader(conn: number, offset: number): Uint8Array {
  // Plain byte stores: a DataView would make V8 materialise the small array's buffer (slow).
  const out = new Uint8Array(DATA_HEADER_LEN);
  const hi = Math.floor(offset / 2 ** 32);
  const lo = offset >>> 0;
  out[0] = RecordType.Data;
  out[1] = conn >>> 24;
  out[2] = conn >>> 16;
  out[3] = conn >>> 8;
  out[4] = conn;
  out[5] = hi >>> 24;
  out[6] = hi >>> 16;
  out[7] = hi >>> 8;
  out[8] = hi;
  out[9] = lo >>> 24;
  out[10] = lo >>> 16;
  out[11] = lo >>> 8;
  out[12] = lo;
  return out;
}

export const DATA_HEADER_LEN = 13;

/** The header of a DATA record whose bytes arrive in pieces, or undefined if `first` is not one. */
export function decodeDataHeader(first: Uint8Array): { conn: number; offset: number } | undefined {
  if (first.length < DATA_HEADER_LEN || first[0] !== RecordType.Data) return undefined;
  const r = new Reader(first, 1, DATA_HEADER_LEN);
  try {
    return { conn: r.u32('data.conn'), offset: readOffset(r, 'data.offset') };
  } catch {
    return undefined; // the general decoder names the field at fault
  }
}

export function encodeRecord(rec: WrapRecord): Uint8Array {
  if (rec.type === RecordType.Data) {
    const out = new Uint8Array(DATA_HEADER_LEN + rec.data.length);
    out.set(encodeDataHeader(rec.conn, rec.offset));
    out.set(rec.data, DATA_HEADER_LEN);
    return out;
  }
  const w = new Writer(32).u8(rec.type);
  switch (rec.type) {
    case RecordType.Hello:
      w.u8(rec.version)
        .u32(Number(rec.bootId >> 32n))
        .u32(Number(rec.bootId & 0xffffffffn));
      if (rec.window !== undefined) w.u32(rec.window).u32(rec.buffer ?? rec.window);
      break;
    case RecordType.Open:
      w.u32(rec.conn).u16(rec.wrapPort);
      writeTarget(w, rec.target);
      w.u32(rec.holdMs).u8(rec.flags);
      break;
    case RecordType.Ref:
      w.u32(rec.conn);
      writeOffset(w, rec.offset);
      w.u32(rec.length).bytes(rec.digest);
      break;
    case RecordType.Nack:
      w.u32(rec.conn);
      writeOffset(w, rec.offset);
      break;
    case RecordType.Opened:
      w.u32(rec.conn);
      break;
    case RecordType.Ack:
    case RecordType.Fin:
    case RecordType.Resume:
      w.u32(rec.conn);
      writeOffset(w, rec.offset);
      break;
    case RecordType.Close: {
      const t = enc.encode(rec.text).subarray(0, MAX_TEXT);
      w.u32(rec.conn).u8(rec.code).u8(t.length).bytes(t);
      break;
    }
    case RecordType.Ping:
    case RecordType.Pong:
      break;
  }
  return w.finish();
}

/** Decode one record; throws (WireError or RangeError) naming the field at fault. */
export function decodeRecord(buf: Uint8Array): WrapRecord {
  const r = new Reader(buf);
  const type = r.u8('record.type');
  let rec: WrapRecord;
  switch (type) {
    case RecordType.Hello: {
      const version = r.u8('hello.version');
      const bootId = (BigInt(r.u32('hello.bootId.hi')) << 32n) | BigInt(r.u32('hello.bootId.lo'));
      rec = { type, version, bootId };
      if (r.remaining > 0) Object.assign(rec, { window: r.u32('hello.window'), buffer: r.u32('hello.buffer') });
      break;
    }
    case RecordType.Open: {
      const conn = r.u32('open.conn');
      const wrapPort = r.u16('open.wrapPort');
      const target = readTarget(r);
      rec = { type, conn, wrapPort, target, holdMs: r.u32('open.holdMs'), flags: r.remaining > 0 ? r.u8('open.flags') : 0 };
      break;
    }
    case RecordType.Ref: {
      const conn = r.u32('ref.conn');
      const offset = readOffset(r, 'ref.offset');
      const length = r.u32('ref.length');
      if (length === 0 || length > CHUNK_MAX) throw new RangeError(`ref.length: ${length}, must be 1-${CHUNK_MAX}`);
      rec = { type, conn, offset, length, digest: r.bytes(DIGEST_LEN, 'ref.digest') };
      break;
    }
    case RecordType.Nack: {
      const conn = r.u32('nack.conn');
      rec = { type, conn, offset: readOffset(r, 'nack.offset') };
      break;
    }
    case RecordType.Opened:
      rec = { type, conn: r.u32('opened.conn') };
      break;
    case RecordType.Data: {
      const conn = r.u32('data.conn');
      const offset = readOffset(r, 'data.offset');
      if (r.remaining > MAX_DATA) throw new RangeError(`data.bytes: ${r.remaining} bytes, at most ${MAX_DATA}`);
      rec = { type, conn, offset, data: r.bytes(r.remaining, 'data.bytes') };
      return rec;
    }
    case RecordType.Ack:
    case RecordType.Fin:
    case RecordType.Resume: {
      const conn = r.u32('stream.conn');
      rec = { type, conn, offset: readOffset(r, 'stream.offset') };
      break;
    }
    case RecordType.Close: {
      const conn = r.u32('close.conn');
      const code = r.u8('close.code') as CloseCode;
      const text = dec.decode(r.bytes(r.u8('close.text.length'), 'close.text'));
      rec = { type, conn, code, text };
      break;
    }
    case RecordType.Ping:
    case RecordType.Pong:
      rec = { type };
      break;
    default:
      throw new RangeError(`record.type: unknown record type ${type}`);
  }
  r.expectEnd(`record type ${type}`);
  return rec;
}

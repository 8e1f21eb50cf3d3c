/**
 * The fixed 20-byte frame header (docs/PROTOCOL.md §2), read and written through its one
 * declaration, ESTP_HEADER in wire/layouts.ts (bpf/spook_xdp.c parses the struct generated
 * from it). The same checks run in the XDP program; `decodeFrame` is the TypeScript twin of
 * its verdict.
 */
import {
  DropReason,
  FLAGS_RESERVED_MASK,
  FrameType,
  HEADER_LEN,
  MAGIC,
  MAX_FRAME_LEN,
  MAX_HANDSHAKE_PAYLOAD_LEN,
  PROTOCOL_VERSION,
} from './constants.js';
import { WireError } from './errors.js';
import { ESTP_HEADER } from './layouts.js';

const H = ESTP_HEADER.fields;

export interface FrameHeader {
  type: FrameType;
  flags: number;
  payloadLen: number;
  pairId: number;
  packetNumber: number;
}

export interface Frame {
  header: FrameHeader;
  payload: Uint8Array;
}

if (ESTP_HEADER.list.some((f) => f.size > 1 && f.order !== 'network')) throw new Error('ESTP_HEADER: put() writes network order only');

/** Store `v` (below 2^53) big-endian in the `size` bytes of field `f`. */
function put(out: Uint8Array, f: { offset: number; size: number }, v: number): void {
  for (let i = f.offset + f.size - 1; i >= f.offset; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
}

/** Field `f` (1, 2, 4 or 8 bytes, big-endian) of `b` as a number: a u64 as hi·2^32 + lo, as U64Field.getNumber reads it. */
function get(b: Uint8Array, f: { offset: number; size: number }): number {
  const o = f.offset;
  switch (f.size) {
    case 1:
      return b[o];
    case 2:
      return (b[o] << 8) | b[o + 1];
    case 4:
      return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
    default:
      return (
        (((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0) * 2 ** 32 +
        (((b[o + 4] << 24) | (b[o + 5] << 16) | (b[o + 6] << 8) | b[o + 7]) >>> 0)
      );
  }
}

const KNOWN_TYPES = new Set<number>([FrameType.HandshakeInit, FrameType.HandshakeResp, FrameType.CookieReply, FrameType.Data]);

export function isHandshakeType(t: number): boolean {
  return t === FrameType.HandshakeInit || t === FrameType.HandshakeResp || t === FrameType.CookieReply;
}

export function encodeFrame(h: Omit<FrameHeader, 'payloadLen'>, payload: Uint8Array): Uint8Array {
  if (HEADER_LEN + payload.length > MAX_FRAME_LEN) {
    throw new WireError(DropReason.Oversized, 'frame', `${HEADER_LEN + payload.length} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  const out = new Uint8Array(HEADER_LEN + payload.length);
  out.set(payload, HEADER_LEN);
  return writeFrameHeader(out, h);
}

/**
 * Write the header into the first HEADER_LEN bytes of `out`, whose rest is the payload
 * (a payload built behind room for its header is framed without another copy). Returns `out`.
 */
export function writeFrameHeader(out: Uint8Array, h: Omit<FrameHeader, 'payloadLen'>): Uint8Array {
  const len = out.length;
  if (len > MAX_FRAME_LEN) {
    throw new WireError(DropReason.Oversized, 'frame', `${len} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  if (!Number.isSafeInteger(h.packetNumber) || h.packetNumber < 0) {
    throw new RangeError(`packet number out of range: ${h.packetNumber}`);
  }
  // Every datagram passes here: plain byte stores at the declaration's offsets (all its fields are in network order).
  put(out, H.magic, MAGIC);
  put(out, H.version, PROTOCOL_VERSION);
  put(out, H.type, h.type);
  put(out, H.flags, h.flags);
  put(out, H.hdr_len, HEADER_LEN);
  put(out, H.payload_len, len - HEADER_LEN);
  put(out, H.pair_id, h.pairId);
  put(out, H.packet_number, h.packetNumber);
  return out;
}

/**
 * Parse and validate a frame. Checks run in the order the XDP program runs them, so
 * both report the same first fault. `knownPair` answers whether a Data frame's pair id
 * is in the pair table (omit it to skip that check).
 */
export function decodeFrame(buf: Uint8Array, knownPair?: (pairId: number) => boolean): Frame {
  if (buf.length > MAX_FRAME_LEN) {
    throw new WireError(DropReason.Oversized, 'frame', `${buf.length} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  if (buf.length < HEADER_LEN) {
    throw new WireError(DropReason.Truncated, 'header', `${buf.length} bytes, header needs ${HEADER_LEN}`);
  }
  // Every datagram passes here: byte loads at the declaration's offsets, no DataView per frame.
  const magic = get(buf, H.magic);
  if (magic !== MAGIC) {
    throw new WireError(DropReason.BadMagic, 'header.magic', `0x${magic.toString(16)} is not 0x${MAGIC.toString(16)}`);
  }
  const version = get(buf, H.version);
  if (version !== PROTOCOL_VERSION) {
    throw new WireError(DropReason.BadVersion, 'header.version', `${version} is not ${PROTOCOL_VERSION}`);
  }
  const type = get(buf, H.type);
  if (!KNOWN_TYPES.has(type)) {
    throw new WireError(DropReason.UnknownType, 'header.type', `unknown frame type ${type}`);
  }
  const flags = get(buf, H.flags);
  if (flags & FLAGS_RESERVED_MASK) {
    throw new WireError(DropReason.ReservedFlags, 'header.flags', `reserved bits set: 0x${flags.toString(16)}`);
  }
  const hdrLen = get(buf, H.hdr_len);
  if (hdrLen !== HEADER_LEN) {
    throw new WireError(DropReason.BadHeaderLen, 'header.hdr_len', `${hdrLen} is not ${HEADER_LEN}`);
  }
  const payloadLen = get(buf, H.payload_len);
  if (HEADER_LEN + payloadLen !== buf.length) {
    throw new WireError(
      DropReason.LengthMismatch,
      'header.payload_len',
      `says ${payloadLen} but ${buf.length - HEADER_LEN} bytes follow the header`,
    );
  }
  if (isHandshakeType(type) && payloadLen > MAX_HANDSHAKE_PAYLOAD_LEN) {
    throw new WireError(DropReason.Oversized, 'header.payload_len', `handshake payload ${payloadLen} exceeds ${MAX_HANDSHAKE_PAYLOAD_LEN}`);
  }
  const pairId = get(buf, H.pair_id);
  if (type === FrameType.Data && knownPair && !knownPair(pairId)) {
    throw new WireError(DropReason.UnknownPair, 'header.pair_id', `pair ${pairId} is not in the pair table`);
  }
  const packetNumber = get(buf, H.packet_number);
  return {
    header: { type, flags, payloadLen, pairId, packetNumber },
    payload: buf.subarray(HEADER_LEN),
  };
}

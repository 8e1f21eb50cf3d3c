/**
 * The fixed 20-byte frame header (docs/PROTOCOL.md §2). The same checks run in
 * bpf/spook_xdp.c; `checkFrame` is the TypeScript twin of the XDP verdict.
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

const KNOWN_TYPES = new Set<number>([FrameType.HandshakeInit, FrameType.HandshakeResp, FrameType.CookieReply, FrameType.Data]);

export function isHandshakeType(t: number): boolean {
  return t === FrameType.HandshakeInit || t === FrameType.HandshakeResp || t === FrameType.CookieReply;
}

export function encodeFrame(h: Omit<FrameHeader, 'payloadLen'>, payload: Uint8Array): Uint8Array {
  const len = HEADER_LEN + payload.length;
  if (len > MAX_FRAME_LEN) {
    throw new WireError(DropReason.Oversized, 'frame', `${len} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  if (!Number.isSafeInteger(h.packetNumber) || h.packetNumber < 0) {
    throw new RangeError(`packet number out of range: ${h.packetNumber}`);
  }
  const out = new Uint8Array(len);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, MAGIC);
  out[2] = PROTOCOL_VERSION;
  out[3] = h.type;
  out[4] = h.flags;
  out[5] = HEADER_LEN;
  dv.setUint16(6, payload.length);
  dv.setUint32(8, h.pairId >>> 0);
  dv.setUint32(12, Math.floor(h.packetNumber / 2 ** 32));
  dv.setUint32(16, h.packetNumber >>> 0);
  out.set(payload, HEADER_LEN);
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
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint16(0);
  if (magic !== MAGIC) {
    throw new WireError(DropReason.BadMagic, 'header.magic', `0x${magic.toString(16)} is not 0x${MAGIC.toString(16)}`);
  }
  if (buf[2] !== PROTOCOL_VERSION) {
    throw new WireError(DropReason.BadVersion, 'header.version', `${buf[2]} is not ${PROTOCOL_VERSION}`);
  }
  const type = buf[3];
  if (!KNOWN_TYPES.has(type)) {
    throw new WireError(DropReason.UnknownType, 'header.type', `unknown frame type ${type}`);
  }
  const flags = buf[4];
  if (flags & FLAGS_RESERVED_MASK) {
    throw new WireError(DropReason.ReservedFlags, 'header.flags', `reserved bits set: 0x${flags.toString(16)}`);
  }
  if (buf[5] !== HEADER_LEN) {
    throw new WireError(DropReason.BadHeaderLen, 'header.hdr_len', `${buf[5]} is not ${HEADER_LEN}`);
  }
  const payloadLen = dv.getUint16(6);
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
  const pairId = dv.getUint32(8);
  if (type === FrameType.Data && knownPair && !knownPair(pairId)) {
    throw new WireError(DropReason.UnknownPair, 'header.pair_id', `pair ${pairId} is not in the pair table`);
  }
  const packetNumber = dv.getUint32(12) * 2 ** 32 + dv.getUint32(16);
  return {
    header: { type, flags, payloadLen, pairId, packetNumber },
    payload: buf.subarray(HEADER_LEN),
  };
}

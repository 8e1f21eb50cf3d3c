/**
 * Wire constants of ESTP v1. docs/PROTOCOL.md is normative; bpf/ gets the same
 * numbers (a test fails when the C header and this file drift).
 */

/** "SP" in network byte order. */
export const MAGIC = 0x5350;
export const PROTOCOL_VERSION = 1;
/** Fixed header length in bytes (magic..packet number). */
export const HEADER_LEN = 20;
/** Largest frame (header + payload) a v1 endpoint sends or accepts: 1500-byte MTU less IPv6 (40) and UDP (8). */
export const MAX_FRAME_LEN = 1452;
export const MAX_PAYLOAD_LEN = MAX_FRAME_LEN - HEADER_LEN;
/** Handshake payloads are small and fixed-size in ETCP; anything larger is a flood or an attack. */
export const MAX_HANDSHAKE_PAYLOAD_LEN = 256;
/** Register names are short identifiers. */
export const MAX_REGISTER_NAME_LEN = 64;
/** Largest key (§4). */
export const MAX_KEY_LEN = 4096;
/**
 * Largest value (map) or appended data (stream) the wire carries at all (§4): a register's
 * own limit (`maxValueBytes`, default DEFAULT_MAX_VALUE_BYTES) is at most this.
 */
export const MAX_VALUE_LEN = 64 * 1024 * 1024;
/** A register's value limit when its configuration names none. */
export const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/** Largest single encoded delta: op, a largest key and value with their lengths, a cas version. */
export const MAX_DELTA_LEN = MAX_VALUE_LEN + MAX_KEY_LEN + 32;
/**
 * Largest ESTP message (type, length, body): one largest delta with the framing of a Collapse,
 * Propose, ReconEntries or SnapChunk. A message larger than a payload travels as Fragments (§3.4).
 */
export const MAX_MESSAGE_LEN = MAX_DELTA_LEN + 1024;
/** Most ops in one pair transaction (DeltaOp.Txn, PROTOCOL.md §4.5); the whole txn is one delta, within MAX_DELTA_LEN. */
export const MAX_TXN_OPS = 256;

export enum FrameType {
  HandshakeInit = 1,
  HandshakeResp = 2,
  CookieReply = 3,
  Data = 4,
}

/** Flag bits; bit 0 is the key phase (ETCP rekeying). All others are reserved and must be zero. */
export const FLAG_KEY_PHASE = 0x01;
export const FLAGS_RESERVED_MASK = 0xfe;

/**
 * Why a frame was dropped. Shared with the XDP program's counters (same numbers),
 * so an operator reading `spook maps dump counters` and daemon metrics sees one vocabulary.
 */
export enum DropReason {
  Truncated = 1,
  BadMagic = 2,
  BadVersion = 3,
  UnknownType = 4,
  BadHeaderLen = 5,
  LengthMismatch = 6,
  Oversized = 7,
  ReservedFlags = 8,
  UnknownPair = 9,
  HandshakeRateLimited = 10,
  MalformedPayload = 11,
  /** An IP fragment of a UDP datagram to the ESTP port, other than one of a pair's Data frame (XDP only, PROTOCOL.md §13.1). */
  Fragment = 12,
  /**
   * An IPv6 packet whose extension-header chain is longer than the XDP program follows (XDP
   * only): where it goes cannot be seen, so it is not let past the checks unexamined.
   */
  ExtChain = 13,
}

/** The operators' names of the DropReasons (metrics, admin `drops`, logs): a closed set. */
export const WIRE_DROP_NAMES = [
  'truncated',
  'bad-magic',
  'bad-version',
  'unknown-type',
  'bad-header-len',
  'length-mismatch',
  'oversized',
  'reserved-flags',
  'unknown-pair',
  'handshake-rate-limited',
  'malformed-payload',
  'fragment',
  'ext-chain',
] as const;
export type WireDropName = (typeof WIRE_DROP_NAMES)[number];

export const DROP_REASON_NAMES: Record<DropReason, WireDropName> = {
  [DropReason.Truncated]: 'truncated',
  [DropReason.BadMagic]: 'bad-magic',
  [DropReason.BadVersion]: 'bad-version',
  [DropReason.UnknownType]: 'unknown-type',
  [DropReason.BadHeaderLen]: 'bad-header-len',
  [DropReason.LengthMismatch]: 'length-mismatch',
  [DropReason.Oversized]: 'oversized',
  [DropReason.ReservedFlags]: 'reserved-flags',
  [DropReason.UnknownPair]: 'unknown-pair',
  [DropReason.HandshakeRateLimited]: 'handshake-rate-limited',
  [DropReason.MalformedPayload]: 'malformed-payload',
  [DropReason.Fragment]: 'fragment',
  [DropReason.ExtChain]: 'ext-chain',
};

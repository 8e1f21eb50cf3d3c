/**
 * The ETCP handshake messages (docs/PROTOCOL.md §12.2, §12.8): the payloads of HandshakeInit,
 * HandshakeResp and CookieReply frames, fixed-size and declared field by field as wireguard-go's
 * noise-protocol.go declares MessageInitiation, MessageResponse and MessageCookieReply. The
 * sealed fields are opaque here: core/etcp/noise.ts produces and opens them. Network order;
 * byte-packed like every wire struct. Not rendered into C (the XDP program does not parse them).
 */
import { array, layout, u32, u64, u8 } from './layouts.js';

/** Sizes of the primitives, as crypto/primitives.ts and core/etcp/cookie.ts define them (a test checks they agree). */
export const KEY_LEN = 32;
export const AEAD_TAG_LEN = 16;
export const XNONCE_LEN = 24;
export const MAC_LEN = 16;
export const COOKIE_LEN = 16;

const net = { order: 'network' } as const;

/** The plaintext the initiator seals in message 1: versions it speaks, capabilities, a fresh timestamp. */
export const INIT_PAYLOAD = layout('etcp_init_payload', { doc: 'HandshakeInit payload (sealed)', packed: true }, [
  u8('version_min'),
  u8('version_max'),
  u32('capabilities', net),
  u64('timestamp', net),
]);

/** The plaintext the responder seals in message 2: the version it chose, the capabilities both offer. */
export const RESP_PAYLOAD = layout('etcp_resp_payload', { doc: 'HandshakeResp payload (sealed)', packed: true }, [
  u8('version'),
  u32('capabilities', net),
]);

/** HandshakeInit: the sender's index, Noise IK message 1 (e, s sealed, payload sealed), mac1, mac2. */
export const HANDSHAKE_INIT = layout('etcp_handshake_init', { doc: 'HandshakeInit frame payload', packed: true }, [
  u32('sender_index', net),
  array('ephemeral', 'u8', KEY_LEN),
  array('static_sealed', 'u8', KEY_LEN + AEAD_TAG_LEN),
  array('payload_sealed', 'u8', INIT_PAYLOAD.size + AEAD_TAG_LEN),
  array('mac1', 'u8', MAC_LEN),
  array('mac2', 'u8', MAC_LEN),
]);

/** HandshakeResp: both indices, Noise IK message 2 (e, payload sealed), mac1, mac2 (zero in v2). */
export const HANDSHAKE_RESP = layout('etcp_handshake_resp', { doc: 'HandshakeResp frame payload', packed: true }, [
  u32('sender_index', net),
  u32('receiver_index', net),
  array('ephemeral', 'u8', KEY_LEN),
  array('payload_sealed', 'u8', RESP_PAYLOAD.size + AEAD_TAG_LEN),
  array('mac1', 'u8', MAC_LEN),
  array('mac2', 'u8', MAC_LEN),
]);

/** CookieReply: the index of the init it answers, a random nonce, the cookie sealed to that init's mac1. */
export const COOKIE_REPLY = layout('etcp_cookie_reply', { doc: 'CookieReply frame payload', packed: true }, [
  u32('receiver_index', net),
  array('nonce', 'u8', XNONCE_LEN),
  array('cookie_sealed', 'u8', COOKIE_LEN + AEAD_TAG_LEN),
]);

/** The Noise message inside a handshake payload: from its first Noise field to mac1. */
export const noiseMessage = (l: typeof HANDSHAKE_INIT | typeof HANDSHAKE_RESP, payload: Uint8Array): Uint8Array =>
  payload.subarray(l.fields.ephemeral.offset, l.fields.mac1.offset);

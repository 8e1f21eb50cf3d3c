/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* GENERATED from wire/constants.ts by tools/bpf-header.ts: do not edit. */
/* ESTP v1 frame header constants (docs/PROTOCOL.md section 2). */
#ifndef SPOOK_WIRE_H
#define SPOOK_WIRE_H

#define SPOOK_MAGIC 0x5350
#define SPOOK_VERSION 1
#define SPOOK_HEADER_LEN 20
#define SPOOK_MAX_FRAME_LEN 1452
#define SPOOK_MAX_HANDSHAKE_PAYLOAD_LEN 256
#define SPOOK_FLAG_KEY_PHASE 0x01
#define SPOOK_FLAGS_RESERVED_MASK 0xfe

/* Frame types */
#define SPOOK_FRAME_HANDSHAKE_INIT 1
#define SPOOK_FRAME_HANDSHAKE_RESP 2
#define SPOOK_FRAME_COOKIE_REPLY 3
#define SPOOK_FRAME_DATA 4

/* Drop reasons: the same numbers index the XDP counters and the daemon metrics. */
enum spook_drop_reason {
	SPOOK_DROP_TRUNCATED = 1, /* truncated */
	SPOOK_DROP_BAD_MAGIC = 2, /* bad-magic */
	SPOOK_DROP_BAD_VERSION = 3, /* bad-version */
	SPOOK_DROP_UNKNOWN_TYPE = 4, /* unknown-type */
	SPOOK_DROP_BAD_HEADER_LEN = 5, /* bad-header-len */
	SPOOK_DROP_LENGTH_MISMATCH = 6, /* length-mismatch */
	SPOOK_DROP_OVERSIZED = 7, /* oversized */
	SPOOK_DROP_RESERVED_FLAGS = 8, /* reserved-flags */
	SPOOK_DROP_UNKNOWN_PAIR = 9, /* unknown-pair */
	SPOOK_DROP_HANDSHAKE_RATE_LIMITED = 10, /* handshake-rate-limited */
	SPOOK_DROP_MALFORMED_PAYLOAD = 11, /* malformed-payload */
	SPOOK_DROP_FRAGMENT = 12, /* fragment */
	SPOOK_DROP_EXT_CHAIN = 13, /* ext-chain */
	SPOOK_DROP__MAX = 14,
};

#endif /* SPOOK_WIRE_H */

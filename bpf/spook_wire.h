/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */
/* GENERATED from wire/constants.ts and wire/layouts.ts by tools/bpf-header.ts: do not edit. */
/* ESTP v1 frame header constants (docs/PROTOCOL.md section 2), and the structs BPF and user space share. */
#ifndef SPOOK_WIRE_H
#define SPOOK_WIRE_H

#include <linux/types.h>

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

/* XDP counters slots besides the drop reasons, and the pair table size. */
#define SPOOK_CNT_PASS_ESTP 0
#define SPOOK_CNT_PASS_OTHER 14
#define SPOOK_CNT_PASS_FRAGMENT 15
#define SPOOK_CNT_SLOTS 16
#define SPOOK_PAIR_SLOTS 65536

/* wrap_ports value bits and size, and wrap_stats slots (drivers/bpf/wrap-hooks.ts names them). */
#define WRAP_TCP 1
#define WRAP_UDP 2
#define SPOOK_WRAP_MAX_PORTS 256
#define WRAP_DOWN_DIRECT 1
#define WRAP_DOWN_REFUSE 2
#define SPOOK_WRAP_REFUSAL_ENTRIES 4096
#define SPOOK_ORIG_UID 1 /* spook_orig.flags: uid recorded */
enum spook_wrap_stat {
	WRAP_CNT_REDIRECTED = 0, /* connect rewritten to the proxy */
	WRAP_CNT_SKIPPED_SELF = 1, /* spookd's own connect */
	WRAP_CNT_NO_PORT = 2, /* destination port not wrapped */
	WRAP_CNT_LOOPBACK = 3, /* destination 127/8, ::1, or unspecified */
	WRAP_CNT_OTHER_NETNS = 4, /* not spookd's network namespace */
	WRAP_CNT_NOT_TCP = 5, /* protocol not intercepted: not TCP, nor UDP with UDP on */
	WRAP_CNT_SAVE_FAILED = 6, /* orig_by_cookie/udp_orig_by_client update failed: not redirected */
	WRAP_CNT_HANDED_OVER = 7, /* sockops moved an entry to orig_by_client */
	WRAP_CNT_UDP_REDIRECTED = 8, /* UDP connect or unconnected send rewritten to the UDP proxy */
	WRAP_CNT_UDP_UNBOUND = 9, /* UDP connect of an unbound socket the hook found no free port for: not redirected */
	WRAP_CNT_UDP_REVERSE = 10, /* datagram from the UDP proxy given the original source */
	WRAP_CNT_DOWN_DIRECT = 11, /* peer without a carrier, whenDown direct: not redirected */
	WRAP_CNT_DOWN_REFUSED = 12, /* peer without a carrier, whenDown refuse: connect() failed (EHOSTUNREACH) */
	WRAP_CNT_MEMO_REFUSED = 13, /* destination in wrap_refusals: connect() failed with its errno */
	WRAP_CNT_SLOTS = 14,
};

/* ESTP v1 frame header (docs/PROTOCOL.md section 2), network order */
struct spook_estp_hdr {
	__be16 magic; /* "SP" */
	__u8 version;
	__u8 type;
	__u8 flags;
	__u8 hdr_len; /* always 20 */
	__be16 payload_len;
	__be32 pair_id;
	__be64 packet_number;
} __attribute__((packed));
_Static_assert(sizeof(struct spook_estp_hdr) == 20, "struct spook_estp_hdr is 20 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, magic) == 0 && sizeof(((struct spook_estp_hdr *)0)->magic) == 2, "spook_estp_hdr.magic: 2 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, version) == 2 && sizeof(((struct spook_estp_hdr *)0)->version) == 1, "spook_estp_hdr.version: 1 bytes at 2 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, type) == 3 && sizeof(((struct spook_estp_hdr *)0)->type) == 1, "spook_estp_hdr.type: 1 bytes at 3 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, flags) == 4 && sizeof(((struct spook_estp_hdr *)0)->flags) == 1, "spook_estp_hdr.flags: 1 bytes at 4 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, hdr_len) == 5 && sizeof(((struct spook_estp_hdr *)0)->hdr_len) == 1, "spook_estp_hdr.hdr_len: 1 bytes at 5 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, payload_len) == 6 && sizeof(((struct spook_estp_hdr *)0)->payload_len) == 2, "spook_estp_hdr.payload_len: 2 bytes at 6 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, pair_id) == 8 && sizeof(((struct spook_estp_hdr *)0)->pair_id) == 4, "spook_estp_hdr.pair_id: 4 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_estp_hdr, packet_number) == 12 && sizeof(((struct spook_estp_hdr *)0)->packet_number) == 8, "spook_estp_hdr.packet_number: 8 bytes at 12 (wire/layouts.ts)");

/* the XDP config map value */
struct spook_config {
	__u16 port; /* ESTP UDP port (host order); 0 disables validation */
	__u16 enforce_pairs;
	__u32 hs_rate; /* handshake frames per second per source */
	__u32 hs_burst; /* bucket depth */
	__u8 pad[4];
};
_Static_assert(sizeof(struct spook_config) == 16, "struct spook_config is 16 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_config, port) == 0 && sizeof(((struct spook_config *)0)->port) == 2, "spook_config.port: 2 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_config, enforce_pairs) == 2 && sizeof(((struct spook_config *)0)->enforce_pairs) == 2, "spook_config.enforce_pairs: 2 bytes at 2 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_config, hs_rate) == 4 && sizeof(((struct spook_config *)0)->hs_rate) == 4, "spook_config.hs_rate: 4 bytes at 4 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_config, hs_burst) == 8 && sizeof(((struct spook_config *)0)->hs_burst) == 4, "spook_config.hs_burst: 4 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_config, pad) == 12 && sizeof(((struct spook_config *)0)->pad) == 4, "spook_config.pad: 4 bytes at 12 (wire/layouts.ts)");

/* the XDP pairs map value (per CPU) */
struct spook_pair_slot {
	__u32 id; /* 0: free */
	__u8 pad[4];
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct spook_pair_slot) == 24, "struct spook_pair_slot is 24 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_pair_slot, id) == 0 && sizeof(((struct spook_pair_slot *)0)->id) == 4, "spook_pair_slot.id: 4 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_pair_slot, pad) == 4 && sizeof(((struct spook_pair_slot *)0)->pad) == 4, "spook_pair_slot.pad: 4 bytes at 4 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_pair_slot, packets) == 8 && sizeof(((struct spook_pair_slot *)0)->packets) == 8, "spook_pair_slot.packets: 8 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_pair_slot, bytes) == 16 && sizeof(((struct spook_pair_slot *)0)->bytes) == 8, "spook_pair_slot.bytes: 8 bytes at 16 (wire/layouts.ts)");

/* the XDP hs_buckets map key */
struct spook_src_key {
	__u32 family;
	__u8 addr[16];
};
_Static_assert(sizeof(struct spook_src_key) == 20, "struct spook_src_key is 20 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_src_key, family) == 0 && sizeof(((struct spook_src_key *)0)->family) == 4, "spook_src_key.family: 4 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_src_key, addr) == 4 && sizeof(((struct spook_src_key *)0)->addr) == 16, "spook_src_key.addr: 16 bytes at 4 (wire/layouts.ts)");

/* the XDP frag_ids map key: a fragmented datagram as the IP layer names it (source, identification) */
struct spook_frag_key {
	__u32 family;
	__be32 id;
	__u8 addr[16];
};
_Static_assert(sizeof(struct spook_frag_key) == 24, "struct spook_frag_key is 24 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_frag_key, family) == 0 && sizeof(((struct spook_frag_key *)0)->family) == 4, "spook_frag_key.family: 4 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_frag_key, id) == 4 && sizeof(((struct spook_frag_key *)0)->id) == 4, "spook_frag_key.id: 4 bytes at 4 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_frag_key, addr) == 8 && sizeof(((struct spook_frag_key *)0)->addr) == 16, "spook_frag_key.addr: 16 bytes at 8 (wire/layouts.ts)");

/* the XDP hs_buckets map value */
struct spook_bucket {
	__u64 tokens; /* in nano-tokens: 1 frame = NSEC_PER_SEC */
	__u64 last_ns;
};
_Static_assert(sizeof(struct spook_bucket) == 16, "struct spook_bucket is 16 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_bucket, tokens) == 0 && sizeof(((struct spook_bucket *)0)->tokens) == 8, "spook_bucket.tokens: 8 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_bucket, last_ns) == 8 && sizeof(((struct spook_bucket *)0)->last_ns) == 8, "spook_bucket.last_ns: 8 bytes at 8 (wire/layouts.ts)");

/* the wrap_cfg map value */
struct spook_wrap_config {
	__u64 netns_cookie; /* 0: not configured, nothing is redirected */
	__u64 pidns_dev; /* spookd's pid namespace (stat of /proc/self/ns/pid): */
	__u64 pidns_ino; /*   self_tgid is a pid in that namespace */
	__u32 self_tgid;
	__u16 proxy_port;
	__u16 udp_proxy_port; /* 0: UDP interception off */
};
_Static_assert(sizeof(struct spook_wrap_config) == 32, "struct spook_wrap_config is 32 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, netns_cookie) == 0 && sizeof(((struct spook_wrap_config *)0)->netns_cookie) == 8, "spook_wrap_config.netns_cookie: 8 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, pidns_dev) == 8 && sizeof(((struct spook_wrap_config *)0)->pidns_dev) == 8, "spook_wrap_config.pidns_dev: 8 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, pidns_ino) == 16 && sizeof(((struct spook_wrap_config *)0)->pidns_ino) == 8, "spook_wrap_config.pidns_ino: 8 bytes at 16 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, self_tgid) == 24 && sizeof(((struct spook_wrap_config *)0)->self_tgid) == 4, "spook_wrap_config.self_tgid: 4 bytes at 24 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, proxy_port) == 28 && sizeof(((struct spook_wrap_config *)0)->proxy_port) == 2, "spook_wrap_config.proxy_port: 2 bytes at 28 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_wrap_config, udp_proxy_port) == 30 && sizeof(((struct spook_wrap_config *)0)->udp_proxy_port) == 2, "spook_wrap_config.udp_proxy_port: 2 bytes at 30 (wire/layouts.ts)");

/* orig_by_cookie, orig_by_client and udp_orig_by_client value */
struct spook_orig {
	__u8 family; /* 4 or 6 */
	__u8 flags; /* SPOOK_ORIG_UID: uid is set (0 in a wrap_refusals key) */
	__u16 port; /* host order */
	__be32 ip4; /* family 4 */
	__u8 ip6[16]; /* family 6 */
	__u32 uid; /* the client task's uid, bpf_get_current_uid_gid() & 0xffffffff */
};
_Static_assert(sizeof(struct spook_orig) == 28, "struct spook_orig is 28 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, family) == 0 && sizeof(((struct spook_orig *)0)->family) == 1, "spook_orig.family: 1 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, flags) == 1 && sizeof(((struct spook_orig *)0)->flags) == 1, "spook_orig.flags: 1 bytes at 1 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, port) == 2 && sizeof(((struct spook_orig *)0)->port) == 2, "spook_orig.port: 2 bytes at 2 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, ip4) == 4 && sizeof(((struct spook_orig *)0)->ip4) == 4, "spook_orig.ip4: 4 bytes at 4 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, ip6) == 8 && sizeof(((struct spook_orig *)0)->ip6) == 16, "spook_orig.ip6: 16 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_orig, uid) == 24 && sizeof(((struct spook_orig *)0)->uid) == 4, "spook_orig.uid: 4 bytes at 24 (wire/layouts.ts)");

/* orig_by_client and udp_orig_by_client key */
struct spook_client {
	__u8 family; /* 4 or 6 */
	__u8 pad[1];
	__u16 port; /* host order */
	__be32 addr[4]; /* family 4: addr[0], the rest 0 */
};
_Static_assert(sizeof(struct spook_client) == 20, "struct spook_client is 20 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_client, family) == 0 && sizeof(((struct spook_client *)0)->family) == 1, "spook_client.family: 1 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_client, pad) == 1 && sizeof(((struct spook_client *)0)->pad) == 1, "spook_client.pad: 1 bytes at 1 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_client, port) == 2 && sizeof(((struct spook_client *)0)->port) == 2, "spook_client.port: 2 bytes at 2 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_client, addr) == 4 && sizeof(((struct spook_client *)0)->addr) == 16, "spook_client.addr: 16 bytes at 4 (wire/layouts.ts)");

/* wrap_refusals value (key: struct spook_orig of the destination) */
struct spook_refusal {
	__u64 expires_ns; /* bpf_ktime_get_ns() after which the entry is ignored (and deleted) */
	__u32 errno; /* what connect() returns meanwhile (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH) */
	__u8 pad[4];
};
_Static_assert(sizeof(struct spook_refusal) == 16, "struct spook_refusal is 16 bytes (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_refusal, expires_ns) == 0 && sizeof(((struct spook_refusal *)0)->expires_ns) == 8, "spook_refusal.expires_ns: 8 bytes at 0 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_refusal, errno) == 8 && sizeof(((struct spook_refusal *)0)->errno) == 4, "spook_refusal.errno: 4 bytes at 8 (wire/layouts.ts)");
_Static_assert(__builtin_offsetof(struct spook_refusal, pad) == 12 && sizeof(((struct spook_refusal *)0)->pad) == 4, "spook_refusal.pad: 4 bytes at 12 (wire/layouts.ts)");

_Static_assert(sizeof(struct spook_estp_hdr) == SPOOK_HEADER_LEN, "the ESTP header struct is HEADER_LEN bytes");

#endif /* SPOOK_WIRE_H */

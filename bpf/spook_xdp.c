// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * Spook XDP fast path: validate ESTP framing and link conformance at the NIC
 * (docs/PROTOCOL.md section 2). UDP to the ESTP port is checked in the same order as
 * transport/wire/header.ts decodeFrame(), with the same drop reasons (spook_wire.h is
 * generated from the TypeScript constants); everything that is not ESTP passes
 * untouched. Parsing follows xdp-tutorial's helpers: a cursor, and a bounds check
 * before every read.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "spook_wire.h"

/* Counter slots besides the drop reasons (1..SPOOK_DROP__MAX-1). */
#define SPOOK_CNT_PASS_ESTP 0
#define SPOOK_CNT_PASS_OTHER SPOOK_DROP__MAX
#define SPOOK_CNT_SLOTS (SPOOK_DROP__MAX + 1)
#define MAX_VLAN_DEPTH 2
#define NSEC_PER_SEC 1000000000ULL

struct spook_config {
	__u16 port;       /* ESTP UDP port (host order); 0 disables validation */
	__u16 enforce_pairs;
	__u32 hs_rate;    /* handshake frames per second per source */
	__u32 hs_burst;   /* bucket depth */
	__u32 pad;
};

/*
 * One slot of the pair table. Pair ids are ETCP session indices, which the control plane
 * chooses so that their low 16 bits are unique among live sessions (as WireGuard's index
 * table does); the slot is the low 16 bits, and `id` confirms the full id. An array
 * lookup is a few instructions where a hash lookup hashes the key.
 */
struct pair_slot {
	__u32 id;      /* 0: free */
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

#define PAIR_SLOTS 65536

struct src_key {
	__u32 family;
	__u8 addr[16];
};

struct bucket {
	__u64 tokens; /* in nano-tokens: 1 frame = NSEC_PER_SEC */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spook_config);
} config SEC(".maps");

/*
 * The pair table: local indices of established ETCP sessions, kept in step by the control
 * plane, with per-CPU packet/byte counters (one lookup does both jobs on the hot path).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAIR_SLOTS);
	__type(key, __u32);
	__type(value, struct pair_slot);
} pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPOOK_CNT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct src_key);
	__type(value, struct bucket);
} hs_buckets SEC(".maps");

struct hdr_cursor {
	void *pos;
};

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end, __u16 *proto)
{
	struct ethhdr *eth = nh->pos;
	if ((void *)(eth + 1) > data_end)
		return -1;
	nh->pos = eth + 1;
	__u16 type = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_DEPTH; i++) {
		if (type != bpf_htons(ETH_P_8021Q) && type != bpf_htons(ETH_P_8021AD))
			break;
		struct { __be16 tci; __be16 proto; } *vlan = nh->pos;
		if ((void *)(vlan + 1) > data_end)
			return -1;
		type = vlan->proto;
		nh->pos = vlan + 1;
	}
	*proto = type;
	return 0;
}

/* Returns the UDP header, or NULL when the packet is not (unfragmented) UDP. */
static __always_inline struct udphdr *parse_udp(struct hdr_cursor *nh, void *data_end, __u16 proto, struct src_key *src)
{
	__u8 l4;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = nh->pos;
		if ((void *)(ip + 1) > data_end)
			return NULL;
		__u32 hlen = ip->ihl * 4;
		if (hlen < sizeof(*ip) || nh->pos + hlen > data_end)
			return NULL;
		if (ip->frag_off & bpf_htons(0x3fff)) /* a fragment: cannot see the whole frame */
			return NULL;
		l4 = ip->protocol;
		src->family = 4;
		__builtin_memcpy(src->addr, &ip->saddr, 4);
		nh->pos += hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = nh->pos;
		if ((void *)(ip6 + 1) > data_end)
			return NULL;
		l4 = ip6->nexthdr; /* extension headers are not followed: such packets pass */
		src->family = 6;
		__builtin_memcpy(src->addr, &ip6->saddr, 16);
		nh->pos = ip6 + 1;
	} else {
		return NULL;
	}
	if (l4 != IPPROTO_UDP)
		return NULL;
	struct udphdr *udp = nh->pos;
	if ((void *)(udp + 1) > data_end)
		return NULL;
	nh->pos = udp + 1;
	return udp;
}

/* Token bucket per source address: true if a handshake frame may pass. */
static __always_inline int handshake_allowed(struct src_key *src, struct spook_config *cfg)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 cap = (__u64)cfg->hs_burst * NSEC_PER_SEC;
	struct bucket *b = bpf_map_lookup_elem(&hs_buckets, src);
	if (!b) {
		struct bucket fresh = { .tokens = cap >= NSEC_PER_SEC ? cap - NSEC_PER_SEC : 0, .last_ns = now };
		bpf_map_update_elem(&hs_buckets, src, &fresh, BPF_ANY);
		return cap >= NSEC_PER_SEC;
	}
	__u64 tokens = b->tokens + (now - b->last_ns) * cfg->hs_rate;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < NSEC_PER_SEC) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - NSEC_PER_SEC;
	return 1;
}

SEC("xdp")
int spook_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = data };
	struct src_key src = {};
	__u16 proto;
	__u32 zero = 0;

	struct spook_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->port == 0)
		return XDP_PASS;
	if (parse_ethhdr(&nh, data_end, &proto) < 0)
		goto other;
	struct udphdr *udp = parse_udp(&nh, data_end, proto, &src);
	if (!udp || udp->dest != bpf_htons(cfg->port))
		goto other;

	/* The ESTP frame is the UDP payload; its length is what the socket would deliver. */
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp))
		goto other; /* the kernel drops it */
	__u32 frame_len = udp_len - sizeof(*udp);
	__u8 *f = nh.pos;

	if (frame_len > SPOOK_MAX_FRAME_LEN)
		return drop(SPOOK_DROP_OVERSIZED);
	if (frame_len < SPOOK_HEADER_LEN || (void *)(f + SPOOK_HEADER_LEN) > data_end)
		return drop(SPOOK_DROP_TRUNCATED);
	if (f[0] != (SPOOK_MAGIC >> 8) || f[1] != (SPOOK_MAGIC & 0xff))
		return drop(SPOOK_DROP_BAD_MAGIC);
	if (f[2] != SPOOK_VERSION)
		return drop(SPOOK_DROP_BAD_VERSION);
	__u8 type = f[3];
	if (type < SPOOK_FRAME_HANDSHAKE_INIT || type > SPOOK_FRAME_DATA)
		return drop(SPOOK_DROP_UNKNOWN_TYPE);
	if (f[4] & SPOOK_FLAGS_RESERVED_MASK)
		return drop(SPOOK_DROP_RESERVED_FLAGS);
	if (f[5] != SPOOK_HEADER_LEN)
		return drop(SPOOK_DROP_BAD_HEADER_LEN);
	__u32 payload_len = ((__u32)f[6] << 8) | f[7];
	if (payload_len + SPOOK_HEADER_LEN != frame_len)
		return drop(SPOOK_DROP_LENGTH_MISMATCH);
	int handshake = type != SPOOK_FRAME_DATA;
	if (handshake && payload_len > SPOOK_MAX_HANDSHAKE_PAYLOAD_LEN)
		return drop(SPOOK_DROP_OVERSIZED);
	__u32 pair_id = ((__u32)f[8] << 24) | ((__u32)f[9] << 16) | ((__u32)f[10] << 8) | f[11];
	if (!handshake) {
		__u32 slot = pair_id & (PAIR_SLOTS - 1);
		struct pair_slot *ps = bpf_map_lookup_elem(&pairs, &slot);
		if (ps && ps->id == pair_id && pair_id != 0) {
			/* Passed data frames are counted per pair only: no second map write on the hot path. */
			ps->packets += 1;
			ps->bytes += frame_len;
			return XDP_PASS;
		}
		if (cfg->enforce_pairs)
			return drop(SPOOK_DROP_UNKNOWN_PAIR);
	} else if (!handshake_allowed(&src, cfg)) {
		return drop(SPOOK_DROP_HANDSHAKE_RATE_LIMITED);
	}
	count(SPOOK_CNT_PASS_ESTP);
	return XDP_PASS;
other:
	count(SPOOK_CNT_PASS_OTHER);
	return XDP_PASS;
}

/* The baseline for `spook bench xdp`: the cheapest possible program. */
SEC("xdp")
int spook_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

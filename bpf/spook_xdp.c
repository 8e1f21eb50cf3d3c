// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * Spook XDP fast path: validate ESTP framing and link conformance at the NIC
 * (docs/PROTOCOL.md section 2). UDP to the ESTP port is checked in the same order as
 * wire/header.ts decodeFrame(), with the same drop reasons (spook_wire.h is
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

/* The counter slots (SPOOK_CNT_*), the pair table size and every map key and value struct
 * come from spook_wire.h, generated from wire/layouts.ts, which drivers/bpf/xdp.ts reads too. */
#define MAX_VLAN_DEPTH 2
#define NSEC_PER_SEC 1000000000ULL
#define IPV4_MF 0x2000
#define IPV4_OFFSET 0x1fff
#define IPV6_FRAG_OFFSET 0xfff8
#define IPV6_FRAG_MORE 0x0001
#define MAX_IPV6_EXT 8
/* A recorded ESTP fragment train is forgotten after this long (Linux's ipfrag_time is 30 s). */
#define FRAG_TTL_NS (30 * NSEC_PER_SEC)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spook_config);
} config SEC(".maps");

/*
 * The pair table: local indices of established ETCP sessions, kept in step by the control
 * plane, with per-CPU packet/byte counters (one lookup does both jobs on the hot path).
 * Pair ids are ETCP session indices, which the control plane chooses so that their low 16
 * bits are unique among live sessions (as WireGuard's index table does); the slot is the low
 * 16 bits, and `id` confirms the full id. An array lookup is a few instructions where a hash
 * lookup hashes the key.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPOOK_PAIR_SLOTS);
	__type(key, __u32);
	__type(value, struct spook_pair_slot);
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
	__type(key, struct spook_src_key);
	__type(value, struct spook_bucket);
} hs_buckets SEC(".maps");

/*
 * Fragment trains whose first fragment was dropped (it was UDP to the ESTP port and not a
 * pair's Data frame): the later fragments carry no UDP header, so they are recognised by their
 * IP identification.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct spook_frag_key);
	__type(value, __u64); /* when the first fragment was seen (ns) */
} frag_ids SEC(".maps");

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

enum l4_result {
	L4_OTHER = 0, /* not UDP, or not a packet we can read: passes as pass-other */
	L4_UDP = 1,   /* an unfragmented UDP datagram: *udp is its header */
	L4_FRAG = 2,  /* a fragment of a UDP datagram to the ESTP port (or unreadable as one): drop */
	L4_EXT_CHAIN = 3, /* an IPv6 extension-header chain longer than MAX_IPV6_EXT: drop */
	L4_FRAG_PASS = 4, /* the first fragment of a pair's Data frame (a smaller-MTU path): pass */
};

static __always_inline int ipv6_ext_header(__u8 l4)
{
	return l4 == IPPROTO_HOPOPTS || l4 == IPPROTO_ROUTING || l4 == IPPROTO_DSTOPTS || l4 == IPPROTO_FRAGMENT;
}

static __always_inline int frag_seen(struct spook_frag_key *fk)
{
	__u64 *t = bpf_map_lookup_elem(&frag_ids, fk);
	return t && bpf_ktime_get_ns() - *t < FRAG_TTL_NS;
}

/*
 * True if a first fragment's UDP payload opens with the header of a Data frame that passes
 * §2.3 steps 1-10 for the datagram's whole length (its UDP length field). Linux discards a
 * train whose fragments overlap, so the reassembled datagram carries exactly this header.
 */
static __always_inline int fragment_of_pair(struct udphdr *udp, void *data_end, struct spook_config *cfg)
{
	struct spook_estp_hdr *h = (void *)(udp + 1);
	if ((void *)(h + 1) > data_end)
		return 0;
	__u32 udp_len = bpf_ntohs(udp->len); /* 0 (an IPv6 jumbogram's) fails here too */
	if (udp_len < sizeof(*udp) + sizeof(*h) || udp_len - sizeof(*udp) > SPOOK_MAX_FRAME_LEN)
		return 0;
	if (h->magic != bpf_htons(SPOOK_MAGIC) || h->version != SPOOK_VERSION || h->type != SPOOK_FRAME_DATA ||
	    (h->flags & SPOOK_FLAGS_RESERVED_MASK) || h->hdr_len != SPOOK_HEADER_LEN ||
	    bpf_ntohs(h->payload_len) + SPOOK_HEADER_LEN + sizeof(*udp) != udp_len)
		return 0;
	__u32 pair_id = bpf_ntohl(h->pair_id);
	__u32 slot = pair_id & (SPOOK_PAIR_SLOTS - 1);
	struct spook_pair_slot *ps = bpf_map_lookup_elem(&pairs, &slot);
	if (ps && ps->id == pair_id && pair_id != 0)
		return 1;
	return !cfg->enforce_pairs;
}

/*
 * A first fragment (offset 0, more to come) of a UDP datagram: the UDP header is at nh->pos.
 * A conforming sender's frames fit a 1500-octet MTU, but its kernel fragments a large Data
 * frame on a path of smaller MTU: one for a pair in the table passes, and its train is
 * forgotten so that its later fragments pass too (the daemon checks the reassembled frame in
 * full). Any other first fragment to the ESTP port (a handshake type, an unknown pair, a
 * header §2.3 refuses, one too short for the UDP or frame header: RFC 1858's tiny fragment)
 * is dropped and its train recorded so the later fragments drop too.
 */
static __always_inline int first_fragment(struct hdr_cursor *nh, void *data_end, struct spook_config *cfg, struct spook_frag_key *fk)
{
	struct udphdr *udp = nh->pos;
	if ((void *)(udp + 1) > data_end)
		return L4_FRAG;
	if (udp->dest != bpf_htons(cfg->port))
		return L4_OTHER;
	if (fragment_of_pair(udp, data_end, cfg)) {
		/* A dropped train of the same source and identification must not take this one's fragments. */
		bpf_map_delete_elem(&frag_ids, fk);
		return L4_FRAG_PASS;
	}
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&frag_ids, fk, &now, BPF_ANY);
	return L4_FRAG;
}

/* What parse_l4 saw of an IPv6 packet, for a UDP length field of 0 (spook_xdp). */
struct ip6_len {
	__u32 payload_len; /* the IPv6 header's Payload Length field */
	__u32 ext_len;     /* octets of extension headers walked before the UDP header */
};

/* Classifies the packet after the Ethernet header; on L4_UDP, *udp_out is the UDP header. */
static __always_inline int parse_l4(struct hdr_cursor *nh, void *data_end, __u16 proto, struct spook_src_key *src, struct spook_config *cfg, struct udphdr **udp_out, struct ip6_len *l6)
{
	struct spook_frag_key fk = {};
	__u8 l4;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = nh->pos;
		if ((void *)(ip + 1) > data_end)
			return L4_OTHER;
		__u32 hlen = ip->ihl * 4;
		if (hlen < sizeof(*ip) || nh->pos + hlen > data_end)
			return L4_OTHER;
		l4 = ip->protocol;
		src->family = 4;
		__builtin_memcpy(src->addr, &ip->saddr, 4);
		nh->pos += hlen;
		__u16 frag = bpf_ntohs(ip->frag_off);
		if (frag & (IPV4_MF | IPV4_OFFSET)) {
			if (l4 != IPPROTO_UDP)
				return L4_OTHER;
			fk.family = 4;
			fk.id = ip->id;
			__builtin_memcpy(fk.addr, &ip->saddr, 4);
			if (frag & IPV4_OFFSET) /* no UDP header: known only by its train */
				return frag_seen(&fk) ? L4_FRAG : L4_OTHER;
			return first_fragment(nh, data_end, cfg, &fk);
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = nh->pos;
		if ((void *)(ip6 + 1) > data_end)
			return L4_OTHER;
		l4 = ip6->nexthdr;
		src->family = 6;
		__builtin_memcpy(src->addr, &ip6->saddr, 16);
		nh->pos = ip6 + 1;
		l6->payload_len = bpf_ntohs(ip6->payload_len);
		int first_frag = 0;
		/* Up to MAX_IPV6_EXT extension headers are followed: hop-by-hop, routing, destination options, fragment. */
#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT; i++) {
			if (l4 == IPPROTO_HOPOPTS || l4 == IPPROTO_ROUTING || l4 == IPPROTO_DSTOPTS) {
				struct { __u8 nexthdr; __u8 hdrlen; } *ext = nh->pos;
				if ((void *)(ext + 1) > data_end)
					return L4_OTHER;
				l4 = ext->nexthdr;
				__u32 elen = (ext->hdrlen + 1) * 8;
				nh->pos += elen;
				l6->ext_len += elen;
			} else if (l4 == IPPROTO_FRAGMENT) {
				struct { __u8 nexthdr; __u8 reserved; __be16 frag_off; __be32 id; } *fh = nh->pos;
				if ((void *)(fh + 1) > data_end)
					return L4_OTHER;
				__u16 off = bpf_ntohs(fh->frag_off);
				l4 = fh->nexthdr;
				nh->pos = fh + 1;
				l6->ext_len += sizeof(*fh);
				if (!(off & (IPV6_FRAG_OFFSET | IPV6_FRAG_MORE)))
					continue; /* an atomic fragment (RFC 6946): a whole datagram */
				fk.family = 6;
				fk.id = fh->id;
				__builtin_memcpy(fk.addr, &ip6->saddr, 16);
				if (off & IPV6_FRAG_OFFSET)
					return frag_seen(&fk) ? L4_FRAG : L4_OTHER;
				first_frag = 1;
			} else {
				break;
			}
		}
		/* Still on an extension header: its destination cannot be seen, so it could be an ESTP
		 * frame or fragment; letting it pass would skip every check (PROTOCOL.md §13.1). */
		if (ipv6_ext_header(l4))
			return L4_EXT_CHAIN;
		if (l4 != IPPROTO_UDP)
			return L4_OTHER;
		if (first_frag)
			return first_fragment(nh, data_end, cfg, &fk);
	} else {
		return L4_OTHER;
	}
	if (l4 != IPPROTO_UDP)
		return L4_OTHER;
	struct udphdr *udp = nh->pos;
	if ((void *)(udp + 1) > data_end)
		return L4_OTHER;
	nh->pos = udp + 1;
	*udp_out = udp;
	return L4_UDP;
}

/* Token bucket per source address: true if a handshake frame may pass. */
static __always_inline int handshake_allowed(struct spook_src_key *src, struct spook_config *cfg)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 cap = (__u64)cfg->hs_burst * NSEC_PER_SEC;
	struct spook_bucket *b = bpf_map_lookup_elem(&hs_buckets, src);
	if (!b) {
		struct spook_bucket fresh = { .tokens = cap >= NSEC_PER_SEC ? cap - NSEC_PER_SEC : 0, .last_ns = now };
		bpf_map_update_elem(&hs_buckets, src, &fresh, BPF_ANY);
		return cap >= NSEC_PER_SEC;
	}
	/* Another CPU may have moved last_ns past our `now`. Past a full refill (cap / hs_rate ns)
	 * the bucket is full: the product below could leave u64 after hours idle at a high rate. */
	__u64 elapsed = now > b->last_ns ? now - b->last_ns : 0;
	__u64 tokens = cfg->hs_rate && elapsed >= cap / cfg->hs_rate ? cap : b->tokens + elapsed * cfg->hs_rate;
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
	struct spook_src_key src = {};
	__u16 proto;
	__u32 zero = 0;

	struct spook_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->port == 0)
		return XDP_PASS;
	if (parse_ethhdr(&nh, data_end, &proto) < 0)
		goto other;
	struct udphdr *udp = NULL;
	struct ip6_len l6 = {};
	int l4 = parse_l4(&nh, data_end, proto, &src, cfg, &udp, &l6);
	if (l4 == L4_FRAG)
		return drop(SPOOK_DROP_FRAGMENT);
	if (l4 == L4_FRAG_PASS) {
		count(SPOOK_CNT_PASS_FRAGMENT);
		return XDP_PASS;
	}
	if (l4 == L4_EXT_CHAIN)
		return drop(SPOOK_DROP_EXT_CHAIN);
	if (l4 != L4_UDP || !udp || udp->dest != bpf_htons(cfg->port))
		goto other;

	/* The ESTP frame is the UDP payload; its length is what the socket would deliver. */
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len == 0 && src.family == 6) {
		/*
		 * IPv6 UDP length 0: Linux's __udp6_lib_rcv reads it as a jumbogram (RFC 2675) and takes
		 * ulen = skb->len, i.e. it delivers the datagram (IPv4's __udp4_lib_rcv drops it, like
		 * any length < 8, as IPv6 does 1..7). By then ip6_rcv_core has trimmed the skb to the
		 * IPv6 Payload Length and each extension header has been pulled, so skb->len is that
		 * field less the extension headers walked above: the same length, and the same checks,
		 * as with a correct UDP length (never the packet's end, which may hold link padding).
		 * A Payload Length of 0 too claims an IPv6 jumbogram, whose length is in a hop-by-hop
		 * Jumbo option and over 65,535 (the kernel then drops a packet shorter than that, or
		 * without the option takes the rest of the buffer): a length the program does not
		 * reproduce, and beyond any ESTP frame, so it drops as oversized (step 1). A remainder
		 * under 8 is a packet the kernel drops while parsing it.
		 */
		if (l6.payload_len == 0)
			return drop(SPOOK_DROP_OVERSIZED);
		udp_len = l6.payload_len > l6.ext_len ? l6.payload_len - l6.ext_len : 0;
	}
	if (udp_len < sizeof(*udp))
		goto other; /* the kernel drops it */
	__u32 frame_len = udp_len - sizeof(*udp);
	struct spook_estp_hdr *h = nh.pos;

	if (frame_len > SPOOK_MAX_FRAME_LEN)
		return drop(SPOOK_DROP_OVERSIZED);
	if (frame_len < sizeof(*h) || (void *)(h + 1) > data_end)
		return drop(SPOOK_DROP_TRUNCATED);
	if (h->magic != bpf_htons(SPOOK_MAGIC))
		return drop(SPOOK_DROP_BAD_MAGIC);
	if (h->version != SPOOK_VERSION)
		return drop(SPOOK_DROP_BAD_VERSION);
	__u8 type = h->type;
	if (type < SPOOK_FRAME_HANDSHAKE_INIT || type > SPOOK_FRAME_DATA)
		return drop(SPOOK_DROP_UNKNOWN_TYPE);
	if (h->flags & SPOOK_FLAGS_RESERVED_MASK)
		return drop(SPOOK_DROP_RESERVED_FLAGS);
	if (h->hdr_len != SPOOK_HEADER_LEN)
		return drop(SPOOK_DROP_BAD_HEADER_LEN);
	__u32 payload_len = bpf_ntohs(h->payload_len);
	if (payload_len + SPOOK_HEADER_LEN != frame_len)
		return drop(SPOOK_DROP_LENGTH_MISMATCH);
	int handshake = type != SPOOK_FRAME_DATA;
	if (handshake && payload_len > SPOOK_MAX_HANDSHAKE_PAYLOAD_LEN)
		return drop(SPOOK_DROP_OVERSIZED);
	__u32 pair_id = bpf_ntohl(h->pair_id);
	if (!handshake) {
		__u32 slot = pair_id & (SPOOK_PAIR_SLOTS - 1);
		struct spook_pair_slot *ps = bpf_map_lookup_elem(&pairs, &slot);
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

// SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0)
/*
 * Spook wrappers: transparent TCP and UDP interception at connect()/sendmsg()
 * time, the way socket-level load balancers do it (Cilium socket LB, merbridge). Attached
 * to the cgroup-v2 root, so these programs see every process on the machine; they act
 * only in the network namespace spookd runs in (wrap_cfg.netns_cookie), never on spookd's
 * own sockets, never on loopback destinations, and only on TCP and UDP (below).
 *
 *   connect4/6: destination port wrapped -> remember the original destination (and the
 *               connecting task's uid) under the socket cookie and rewrite the destination
 *               to spookd's proxy on loopback.
 *   sockops:    at TCP_CONNECT_CB the client's local address and port are assigned
 *               (inet_hash_connect runs before tcp_connect), and the SYN has not left yet:
 *               move the entry to orig_by_client[family, local address, local port], which
 *               is the remote address and port the proxy sees on accept(). The entry exists
 *               before the proxy can accept the connection. Keyed by the whole client
 *               address, not the port alone: two clients on different local addresses (or
 *               an IPv4 and an IPv6 socket) may share a port number. An IPv4-mapped local
 *               address is recorded as IPv4, which is how the IPv4 proxy listener sees it.
 *
 * IPv6: a native destination is redirected to [::1]:proxy. A v4-mapped destination
 * (::ffff:a.b.c.d on a dual-stack socket) is treated as IPv4: it is recorded as family 4
 * and redirected to ::ffff:127.0.0.1, i.e. the same IPv4 proxy listener.
 *
 * UDP (DNS, CoAP), IPv4 and IPv6, the way Cilium's socket LB does it; on while
 * wrap_cfg.udp_proxy_port is nonzero. The proxy listens on 127.0.0.1 and [::1] on that
 * port. The record is keyed by the client's local address and port, which the proxy sees
 * as the datagram's source (a socket bound to 0.0.0.0 or :: sends to loopback from
 * loopback, so an unspecified address is recorded as 127.0.0.1 or ::1; a v4-mapped
 * destination on a dual-stack socket goes to the IPv4 proxy and is recorded as IPv4):
 *   connect4/6: the socket is recorded in udp_orig_by_client[src] and connected to the
 *              proxy. A socket not bound yet is bound here first (bpf_bind() to a random
 *              port of Linux's default ephemeral range, its own address kept): the kernel
 *              would autobind it only after this hook, and the proxy knows a client by
 *              its port. If no port is free after a few tries it goes direct (udp_unbound).
 *   sendmsg4/6: the same for each unconnected send (the socket is autobound by then).
 *   recvmsg4/6: a datagram from the proxy to a recorded socket gets the original
 *              destination as its source, so the client sees the real server (and a
 *              connected socket, connected to the proxy, accepts it).
 * udp_orig_by_client entries stay (a flow has many datagrams); spookd deletes them.
 *
 * Honest connects (TCP, both families; docs/OPERATIONS.md "What a client sees when it connects"),
 * checked in connect4/6 before the rewrite, from two maps spookd keeps:
 *   wrap_down[port]:  the wrapper's peer has no carrier: WRAP_DOWN_DIRECT leaves the destination
 *                     as it is (the direct path), WRAP_DOWN_REFUSE fails connect() at once with
 *                     EHOSTUNREACH (bpf_set_retval; return 0). Absent: redirect (hold).
 *   wrap_refusals[destination]: the far side's last dial to it was refused or unreachable, less
 *                     than a second ago: connect() fails with that errno, as it would direct.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "spook_wire.h" /* the map structs, wrap_stats slots and wrap_ports bits (wire/layouts.ts) */

#define SOCK_STREAM 1 /* <linux/net.h> and <sys/socket.h> are not usable from BPF; */
#define SOCK_DGRAM 2  /*   the values are ABI */
#define AF_INET 2
#define AF_INET6 10
#define LOOPBACK4 0x7f000001 /* 127.0.0.1, host order */
#define UDP_BIND_TRIES 8
#define EPHEMERAL_LO 32768 /* Linux's default ip_local_port_range */
#define EPHEMERAL_HI 60999
#define ORIG_ENTRIES 65536
#define EHOSTUNREACH 113 /* <errno.h> is not usable from BPF either; the value is ABI */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spook_wrap_config);
} wrap_cfg SEC(".maps");

/* Wrapped destination ports (host order) -> WRAP_TCP | WRAP_UDP: the protocols wrapped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPOOK_WRAP_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u32);
} wrap_ports SEC(".maps");

/* Between connect() and TCP_CONNECT_CB: socket cookie -> original destination. LRU, so
 * entries of connects that failed before the SYN age out by themselves. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ORIG_ENTRIES);
	__type(key, __u64);
	__type(value, struct spook_orig);
} orig_by_cookie SEC(".maps");

/* For the proxy: client (family, local address, local port) -> original destination; the
 * proxy deletes the entry when it has read it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ORIG_ENTRIES);
	__type(key, struct spook_client);
	__type(value, struct spook_orig);
} orig_by_client SEC(".maps");

/* For the UDP proxy: client (family, local address, local port) -> original destination.
 * Not deleted on lookup: spookd deletes it when its flow ends; LRU ages out the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ORIG_ENTRIES);
	__type(key, struct spook_client);
	__type(value, struct spook_orig);
} udp_orig_by_client SEC(".maps");

/* TCP-wrapped ports (host order) whose peer has no carrier -> WRAP_DOWN_DIRECT | WRAP_DOWN_REFUSE. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPOOK_WRAP_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u32);
} wrap_down SEC(".maps");

/* Destinations (struct spook_orig, zero-padded, flags and uid 0) the far side's dial to failed -> errno until expires_ns. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SPOOK_WRAP_REFUSAL_ENTRIES);
	__type(key, struct spook_orig);
	__type(value, struct spook_refusal);
} wrap_refusals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WRAP_CNT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} wrap_stats SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&wrap_stats, &slot);
	if (c)
		*c += 1;
}

static __always_inline struct spook_wrap_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&wrap_cfg, &zero);
}

static __always_inline int in_netns(struct bpf_sock_addr *ctx, struct spook_wrap_config *cfg)
{
	return cfg->netns_cookie != 0 && cfg->netns_cookie == bpf_get_netns_cookie(ctx);
}

/* The tgid as spookd's pid namespace sees it (process.pid), so this also holds when
 * spookd runs in a container. A task outside that namespace is never spookd. */
static __always_inline int is_self(struct spook_wrap_config *cfg)
{
	struct bpf_pidns_info ns = {};
	return bpf_get_ns_current_pid_tgid(cfg->pidns_dev, cfg->pidns_ino, &ns, sizeof(ns)) == 0 && ns.tgid == cfg->self_tgid;
}

/*
 * The checks common to all hooks, cheapest first. Returns the config when the socket may
 * be redirected (protocol intercepted, right netns, port wrapped for that protocol, not
 * spookd itself), else NULL; *bit tells which protocol (WRAP_TCP or WRAP_UDP).
 */
static __always_inline struct spook_wrap_config *should_wrap(struct bpf_sock_addr *ctx, __u16 port, __u32 *bit)
{
	struct spook_wrap_config *cfg = config();
	if (!cfg) { /* never: an array element always exists */
		count(WRAP_CNT_OTHER_NETNS);
		return NULL;
	}
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		*bit = WRAP_TCP;
	else if (ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP && cfg->udp_proxy_port)
		*bit = WRAP_UDP;
	else {
		count(WRAP_CNT_NOT_TCP);
		return NULL;
	}
	if (!in_netns(ctx, cfg)) {
		count(WRAP_CNT_OTHER_NETNS);
		return NULL;
	}
	__u32 *protos = bpf_map_lookup_elem(&wrap_ports, &port);
	if (!protos || !(*protos & *bit)) {
		count(WRAP_CNT_NO_PORT);
		return NULL;
	}
	if (is_self(cfg)) {
		count(WRAP_CNT_SKIPPED_SELF);
		return NULL;
	}
	return cfg;
}

/*
 * The connecting (or sending) task's uid beside the destination: spookd counts a peer's slots per
 * user (docs/PROTOCOL.md 16.5.1). Set only in the records for the proxy, after connect_verdict():
 * as a wrap_refusals key the struct is the destination alone (flags and uid 0).
 */
static __always_inline void record_uid(struct spook_orig *orig)
{
	orig->flags = SPOOK_ORIG_UID;
	orig->uid = (__u32)bpf_get_current_uid_gid();
}

static __always_inline int save_orig(struct bpf_sock_addr *ctx, struct spook_orig *orig)
{
	record_uid(orig);
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&orig_by_cookie, &cookie, orig, BPF_ANY) != 0) {
		count(WRAP_CNT_SAVE_FAILED);
		return -1;
	}
	return 0;
}

static __always_inline int is_loopback4(__u32 ip4 /* network order */)
{
	__u32 h = bpf_ntohl(ip4);
	return (h >> 24) == 127 || h == 0;
}

/*
 * A UDP socket's key: its bound address and port. An unspecified address is the loopback
 * address it sends to the proxy from: 127.0.0.1 towards an IPv4 destination (v4: also a
 * dual-stack socket's v4-mapped one), else ::1. A v4-mapped bound address is IPv4.
 */
static __always_inline void udp_client(struct bpf_sock *sk, int v4, struct spook_client *key)
{
	key->port = (__u16)sk->src_port; /* host order */
	if (sk->family == AF_INET) {
		__u32 ip4 = sk->src_ip4; /* network order */
		key->family = 4;
		key->addr[0] = ip4 ? ip4 : bpf_htonl(LOOPBACK4);
		return;
	}
	__u32 a0 = sk->src_ip6[0], a1 = sk->src_ip6[1], a2 = sk->src_ip6[2], a3 = sk->src_ip6[3];
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
		key->family = 4;
		key->addr[0] = a3 ? a3 : bpf_htonl(LOOPBACK4);
	} else if ((a0 | a1 | a2 | a3) == 0) {
		key->family = v4 ? 4 : 6;
		key->addr[0] = v4 ? bpf_htonl(LOOPBACK4) : 0;
		key->addr[3] = v4 ? 0 : bpf_htonl(1);
	} else {
		key->family = 6;
		key->addr[0] = a0;
		key->addr[1] = a1;
		key->addr[2] = a2;
		key->addr[3] = a3;
	}
}

/* Bind an unbound socket to a free port now, keeping its address (connect hooks only). */
static __always_inline int udp_autobind(struct bpf_sock_addr *ctx, struct bpf_sock *sk)
{
	for (int i = 0; i < UDP_BIND_TRIES; i++) {
		__u16 port = EPHEMERAL_LO + bpf_get_prandom_u32() % (EPHEMERAL_HI - EPHEMERAL_LO + 1);
		long rc;
		if (sk->family == AF_INET) {
			struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = bpf_htons(port) };
			sa.sin_addr.s_addr = sk->src_ip4;
			rc = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		} else {
			struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_port = bpf_htons(port) };
			sa.sin6_addr.in6_u.u6_addr32[0] = sk->src_ip6[0];
			sa.sin6_addr.in6_u.u6_addr32[1] = sk->src_ip6[1];
			sa.sin6_addr.in6_u.u6_addr32[2] = sk->src_ip6[2];
			sa.sin6_addr.in6_u.u6_addr32[3] = sk->src_ip6[3];
			rc = bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
		}
		if (rc == 0)
			return 0;
	}
	return -1;
}

/*
 * UDP: record the original destination under the socket's local address and port and send
 * to the UDP proxy instead. Called after should_wrap() and the loopback check. hook6 and
 * may_bind are constants of the calling hook (the verifier allows user_ip6 writes and
 * bpf_bind() only in some hooks).
 */
static __always_inline int udp_redirect(struct bpf_sock_addr *ctx, struct spook_wrap_config *cfg, struct spook_orig *orig, int hook6,
					int may_bind)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	if (sk->src_port == 0 && (!may_bind || udp_autobind(ctx, sk) != 0)) {
		count(WRAP_CNT_UDP_UNBOUND);
		return 1;
	}
	struct spook_client key = {};
	udp_client(sk, orig->family == 4, &key);
	record_uid(orig);
	if (bpf_map_update_elem(&udp_orig_by_client, &key, orig, BPF_ANY) != 0) {
		count(WRAP_CNT_SAVE_FAILED);
		return 1;
	}
	if (hook6) { /* ::ffff:127.0.0.1 (the IPv4 proxy) or ::1 */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = orig->family == 4 ? bpf_htonl(0xffff) : 0;
		ctx->user_ip6[3] = orig->family == 4 ? bpf_htonl(LOOPBACK4) : bpf_htonl(1);
	} else {
		ctx->user_ip4 = bpf_htonl(LOOPBACK4);
	}
	ctx->user_port = bpf_htons(cfg->udp_proxy_port);
	count(WRAP_CNT_UDP_REDIRECTED);
	return 1;
}

/*
 * TCP only, after should_wrap() and the loopback check: 1 to redirect, 0 to leave the socket
 * alone (direct), -1 to fail connect() (the errno is set: return 0 from the hook).
 */
static __always_inline int connect_verdict(__u16 port, struct spook_orig *orig)
{
	__u32 *down = bpf_map_lookup_elem(&wrap_down, &port);
	if (down && *down == WRAP_DOWN_DIRECT) {
		count(WRAP_CNT_DOWN_DIRECT);
		return 0;
	}
	if (down && *down == WRAP_DOWN_REFUSE) {
		count(WRAP_CNT_DOWN_REFUSED);
		bpf_set_retval(-EHOSTUNREACH);
		return -1;
	}
	struct spook_refusal *r = bpf_map_lookup_elem(&wrap_refusals, orig);
	if (!r)
		return 1;
	if (bpf_ktime_get_ns() >= r->expires_ns) {
		bpf_map_delete_elem(&wrap_refusals, orig);
		return 1;
	}
	count(WRAP_CNT_MEMO_REFUSED);
	bpf_set_retval(-(int)r->errno);
	return -1;
}

SEC("cgroup/connect4")
int spook_connect4(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 ip4 = ctx->user_ip4;
	__u32 bit = 0;
	struct spook_wrap_config *cfg = should_wrap(ctx, port, &bit);
	if (!cfg)
		return 1;
	if (is_loopback4(ip4)) {
		count(WRAP_CNT_LOOPBACK);
		return 1;
	}
	struct spook_orig orig = {};
	orig.family = 4;
	orig.port = port;
	orig.ip4 = ip4;
	if (bit == WRAP_UDP)
		return udp_redirect(ctx, cfg, &orig, 0, 1);
	int v = connect_verdict(port, &orig);
	if (v <= 0)
		return v == 0 ? 1 : 0;
	if (save_orig(ctx, &orig))
		return 1;
	ctx->user_ip4 = bpf_htonl(LOOPBACK4);
	ctx->user_port = bpf_htons(cfg->proxy_port);
	count(WRAP_CNT_REDIRECTED);
	return 1;
}

/*
 * The IPv6 destination of connect6/sendmsg6 as an original destination (v4-mapped ones as
 * IPv4; `orig` zero-initialised by the caller: it is a map key). 0 for loopback (::, ::1, a
 * mapped 127/8), which is counted and never wrapped.
 */
static __always_inline int orig_of6(struct bpf_sock_addr *ctx, __u16 port, struct spook_orig *orig, int *mapped)
{
	__u32 a[4];
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	*mapped = a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
	int loop = *mapped ? is_loopback4(a[3])
			   : (a[0] | a[1] | a[2]) == 0 && (a[3] == 0 || a[3] == bpf_htonl(1)); /* :: or ::1 */
	if (loop) {
		count(WRAP_CNT_LOOPBACK);
		return 0;
	}
	orig->port = port;
	if (*mapped) {
		orig->family = 4;
		orig->ip4 = a[3];
	} else {
		orig->family = 6;
		__builtin_memcpy(orig->ip6, a, 16);
	}
	return 1;
}

SEC("cgroup/connect6")
int spook_connect6(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 bit = 0;
	struct spook_wrap_config *cfg = should_wrap(ctx, port, &bit);
	if (!cfg)
		return 1;
	struct spook_orig orig = {};
	int mapped = 0;
	if (!orig_of6(ctx, port, &orig, &mapped))
		return 1;
	if (bit == WRAP_UDP)
		return udp_redirect(ctx, cfg, &orig, 1, 1);
	int v = connect_verdict(port, &orig);
	if (v <= 0)
		return v == 0 ? 1 : 0;
	if (save_orig(ctx, &orig))
		return 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0xffff) : 0;
	ctx->user_ip6[3] = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1); /* ::ffff:127.0.0.1 or ::1 */
	ctx->user_port = bpf_htons(cfg->proxy_port);
	count(WRAP_CNT_REDIRECTED);
	return 1;
}

/* Unconnected UDP sends (sendto). Returns at once while UDP interception is off. */
SEC("cgroup/sendmsg4")
int spook_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct spook_wrap_config *cfg = config();
	if (!cfg || !cfg->udp_proxy_port)
		return 1;
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 ip4 = ctx->user_ip4;
	__u32 bit = 0;
	cfg = should_wrap(ctx, port, &bit);
	if (!cfg || bit != WRAP_UDP)
		return 1;
	if (is_loopback4(ip4)) {
		count(WRAP_CNT_LOOPBACK);
		return 1;
	}
	struct spook_orig orig = { .family = 4, .port = port, .ip4 = ip4 };
	return udp_redirect(ctx, cfg, &orig, 0, 0);
}

/* Unconnected UDP sends on IPv6 sockets: native destinations, and v4-mapped ones as IPv4. */
SEC("cgroup/sendmsg6")
int spook_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct spook_wrap_config *cfg = config();
	if (!cfg || !cfg->udp_proxy_port)
		return 1;
	__u16 port = bpf_ntohs(ctx->user_port);
	__u32 bit = 0;
	cfg = should_wrap(ctx, port, &bit);
	if (!cfg || bit != WRAP_UDP)
		return 1;
	struct spook_orig orig = {};
	int mapped = 0;
	if (!orig_of6(ctx, port, &orig, &mapped))
		return 1;
	return udp_redirect(ctx, cfg, &orig, 1, 0);
}

/* Replies of the UDP proxy: give them the original destination as their source. */
SEC("cgroup/recvmsg4")
int spook_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct spook_wrap_config *cfg = config();
	if (!cfg || !cfg->udp_proxy_port)
		return 1;
	if (ctx->user_ip4 != bpf_htonl(LOOPBACK4) || ctx->user_port != bpf_htons(cfg->udp_proxy_port))
		return 1;
	if (!in_netns(ctx, cfg))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct spook_client key = {};
	udp_client(sk, 1, &key);
	struct spook_orig *orig = bpf_map_lookup_elem(&udp_orig_by_client, &key);
	if (!orig || orig->family != 4 || is_self(cfg))
		return 1;
	ctx->user_ip4 = orig->ip4;
	ctx->user_port = bpf_htons(orig->port);
	count(WRAP_CNT_UDP_REVERSE);
	return 1; /* recvmsg hooks must return 1 */
}

/* The same on IPv6 sockets: from [::1] (an IPv6 flow) or ::ffff:127.0.0.1 (a v4-mapped one). */
SEC("cgroup/recvmsg6")
int spook_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct spook_wrap_config *cfg = config();
	if (!cfg || !cfg->udp_proxy_port || ctx->user_port != bpf_htons(cfg->udp_proxy_port))
		return 1;
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	int mapped = a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);
	if (mapped ? a3 != bpf_htonl(LOOPBACK4) : (a0 | a1 | a2) != 0 || a3 != bpf_htonl(1))
		return 1;
	if (!in_netns(ctx, cfg))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct spook_client key = {};
	udp_client(sk, mapped, &key);
	struct spook_orig *orig = bpf_map_lookup_elem(&udp_orig_by_client, &key);
	if (!orig || orig->family != (mapped ? 4 : 6) || is_self(cfg))
		return 1;
	if (mapped) {
		ctx->user_ip6[3] = orig->ip4;
	} else {
		__u32 a[4];
		__builtin_memcpy(a, orig->ip6, 16);
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
	}
	ctx->user_port = bpf_htons(orig->port);
	count(WRAP_CNT_UDP_REVERSE);
	return 1;
}

SEC("sockops")
int spook_sockops(struct bpf_sock_ops *skops)
{
	/* TCP_CONNECT_CB needs no cb_flags: it is called for every active open. */
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct spook_orig *orig = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
	if (!orig)
		return 1;
	struct spook_client key = { .port = (__u16)skops->local_port }; /* host order, assigned by inet_hash_connect() */
	if (skops->family == AF_INET) {
		key.family = 4;
		key.addr[0] = skops->local_ip4;
	} else {
		__u32 a0 = skops->local_ip6[0], a1 = skops->local_ip6[1], a2 = skops->local_ip6[2], a3 = skops->local_ip6[3];
		if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) { /* v4-mapped: the IPv4 listener sees a.b.c.d */
			key.family = 4;
			key.addr[0] = a3;
		} else {
			key.family = 6;
			key.addr[0] = a0;
			key.addr[1] = a1;
			key.addr[2] = a2;
			key.addr[3] = a3;
		}
	}
	struct spook_orig copy = *orig;  /* copy before the delete frees the element */
	bpf_map_update_elem(&orig_by_client, &key, &copy, BPF_ANY);
	bpf_map_delete_elem(&orig_by_cookie, &cookie);
	count(WRAP_CNT_HANDED_OVER);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

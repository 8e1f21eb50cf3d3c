/**
 * Builds link-layer packets around an ESTP frame (or any UDP payload) for BPF_PROG_TEST_RUN:
 * Ethernet with optional VLAN tags, IPv4 or IPv6, UDP. Checksums are left zero (XDP does
 * not verify them; UDP over IPv4 allows zero). The headers are declared as layouts (the
 * kernel's struct names; not rendered into C, <linux/*.h> has them) so tests that craft
 * fragments or extension-header chains name the fields they change.
 */
import { array, layout, u16, u32, u8, viewOf } from '../wire/layouts.js';

const net = { order: 'network' } as const;
export const ETH = layout('ethhdr', { doc: 'Ethernet' }, [array('dest', 'u8', 6), array('source', 'u8', 6), u16('proto', net)]);
/** An 802.1Q/802.1ad tag after the Ethernet header (whose proto is the tag's TPID). */
export const VLAN = layout('vlan_hdr', { doc: '802.1Q tag' }, [u16('tci', net), u16('proto', net)]);
export const IPV4 = layout('iphdr', { doc: 'IPv4 without options' }, [
  u8('ver_ihl'),
  u8('tos'),
  u16('tot_len', net),
  u16('id', net),
  u16('frag_off', net),
  u8('ttl'),
  u8('protocol'),
  u16('check', net),
  array('saddr', 'u8', 4),
  array('daddr', 'u8', 4),
]);
export const IPV6 = layout('ipv6hdr', { doc: 'IPv6' }, [
  u32('ver_tc_flow', net),
  u16('payload_len', net),
  u8('nexthdr'),
  u8('hop_limit'),
  array('saddr', 'u8', 16),
  array('daddr', 'u8', 16),
]);
/** The IPv6 Fragment header (RFC 8200 §4.5): offset in 8-octet units << 3, M flag in bit 0. */
export const IPV6_FRAG = layout('frag_hdr', { doc: 'IPv6 Fragment header' }, [
  u8('nexthdr'),
  u8('reserved'),
  u16('frag_off', net),
  u32('id', net),
]);
/** An IPv6 options header (hop-by-hop, destination options) of 8 octets: hdrlen 0. */
export const IPV6_OPTS = layout('ipv6_opt_hdr', { doc: 'IPv6 options header' }, [u8('nexthdr'), u8('hdrlen'), array('options', 'u8', 6)]);
export const UDP = layout('udphdr', { doc: 'UDP' }, [u16('source', net), u16('dest', net), u16('len', net), u16('check', net)]);

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const IPPROTO_UDP = 17;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_DSTOPTS = 60;

export interface PacketOptions {
  ipv6?: boolean;
  vlans?: number[];
  srcPort?: number;
  dstPort: number;
  /** Last byte of the source address (for per-source handshake buckets). */
  src?: number;
  /** Override the UDP length field (to make it lie). */
  udpLen?: number;
  protocol?: number;
}

/** The Ethernet header and VLAN tags before an IP header of `ethertype`. */
export function ethHeader(ethertype: number, vlans: number[] = []): Buffer {
  const out = Buffer.alloc(ETH.size + VLAN.size * vlans.length);
  const dv = viewOf(out);
  ETH.fields.dest.set(dv, new Uint8Array([2, 0, 0, 0, 0, 2]));
  ETH.fields.source.set(dv, new Uint8Array([2, 0, 0, 0, 0, 1]));
  // An outer 802.1ad tag when stacked, 802.1Q otherwise; each header names what follows it.
  const tpid = (i: number): number => (i === 0 && vlans.length > 1 ? ETH_P_8021AD : ETH_P_8021Q);
  ETH.fields.proto.set(dv, vlans.length > 0 ? tpid(0) : ethertype);
  vlans.forEach((id, i) => {
    const at = ETH.size + VLAN.size * i;
    VLAN.fields.tci.set(dv, id & 0x0fff, at);
    VLAN.fields.proto.set(dv, i < vlans.length - 1 ? tpid(i + 1) : ethertype, at);
  });
  return out;
}

export function udpPacket(payload: Uint8Array, o: PacketOptions): Buffer {
  const eth = ethHeader(o.ipv6 ? ETH_P_IPV6 : ETH_P_IP, o.vlans);
  const udp = Buffer.alloc(UDP.size);
  const u = viewOf(udp);
  UDP.fields.source.set(u, o.srcPort ?? 40000);
  UDP.fields.dest.set(u, o.dstPort);
  UDP.fields.len.set(u, o.udpLen ?? UDP.size + payload.length);
  const l4 = Buffer.concat([udp, payload]);
  let ip: Buffer;
  if (o.ipv6) {
    ip = Buffer.alloc(IPV6.size);
    const v = viewOf(ip);
    IPV6.fields.ver_tc_flow.set(v, 6 << 28);
    IPV6.fields.payload_len.set(v, l4.length);
    IPV6.fields.nexthdr.set(v, o.protocol ?? IPPROTO_UDP);
    IPV6.fields.hop_limit.set(v, 64);
    IPV6.fields.saddr.set(v, new Uint8Array([0xfd, ...new Array<number>(14).fill(0), o.src ?? 1]));
    IPV6.fields.daddr.set(v, new Uint8Array([0xfd, ...new Array<number>(14).fill(0), 2]));
  } else {
    ip = Buffer.alloc(IPV4.size);
    const v = viewOf(ip);
    IPV4.fields.ver_ihl.set(v, 0x45);
    IPV4.fields.tot_len.set(v, IPV4.size + l4.length);
    IPV4.fields.ttl.set(v, 64);
    IPV4.fields.protocol.set(v, o.protocol ?? IPPROTO_UDP);
    IPV4.fields.saddr.set(v, new Uint8Array([10, 0, 0, o.src ?? 1]));
    IPV4.fields.daddr.set(v, new Uint8Array([10, 0, 0, 2]));
  }
  return Buffer.concat([eth, ip, l4]);
}

/**
 * Builds link-layer packets around an ESTP frame (or any UDP payload) for BPF_PROG_TEST_RUN:
 * Ethernet with optional VLAN tags, IPv4 or IPv6, UDP. Checksums are left zero (XDP does
 * not verify them; UDP over IPv4 allows zero).
 */
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

export function udpPacket(payload: Uint8Array, o: PacketOptions): Buffer {
  const vlans = o.vlans ?? [];
  const eth = Buffer.alloc(14 + 4 * vlans.length);
  eth.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1], 0);
  let off = 12;
  vlans.forEach((id, i) => {
    eth.writeUInt16BE(i === 0 && vlans.length > 1 ? 0x88a8 : 0x8100, off);
    eth.writeUInt16BE(id & 0x0fff, off + 2);
    off += 4;
  });
  eth.writeUInt16BE(o.ipv6 ? 0x86dd : 0x0800, off);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(o.srcPort ?? 40000, 0);
  udp.writeUInt16BE(o.dstPort, 2);
  udp.writeUInt16BE(o.udpLen ?? 8 + payload.length, 4);
  const l4 = Buffer.concat([udp, payload]);
  let ip: Buffer;
  if (o.ipv6) {
    ip = Buffer.alloc(40);
    ip[0] = 0x60;
    ip.writeUInt16BE(l4.length, 4);
    ip[6] = o.protocol ?? 17;
    ip[7] = 64;
    ip[8] = 0xfd;
    ip[23] = o.src ?? 1;
    ip[24] = 0xfd;
    ip[39] = 2;
  } else {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + l4.length, 2);
    ip[8] = 64;
    ip[9] = o.protocol ?? 17;
    ip.set([10, 0, 0, o.src ?? 1], 12);
    ip.set([10, 0, 0, 2], 16);
  }
  return Buffer.concat([eth, ip, l4]);
}

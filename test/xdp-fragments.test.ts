import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XdpProgram, XDP_PASS } from '../drivers/bpf/xdp.js';
import { ETH, IPV4, IPV6, IPV6_FRAG, IPPROTO_FRAGMENT, UDP, udpPacket } from '../testing/packet.js';
import { encodeFrame, decodeFrame } from '../wire/header.js';
import { FrameType, MAX_FRAME_LEN, HEADER_LEN } from '../wire/constants.js';
import { viewOf } from '../wire/layouts.js';

/**
 * Review 39d, finding 1: an honest full-size Data frame (spookd seals up to 1416 octets of plaintext:
 * a 1452-octet frame, §2.2) crossing a path whose MTU is below 1480 (IPv4: a GCP VPC's 1460, VXLAN's
 * 1450, a WireGuard underlay) or 1500 (IPv6: PPPoE's 1492) is fragmented by the sender's own kernel
 * (Node's UDP sockets use IP_PMTUDISC_WANT: the kernel fragments). Without XDP the receiving kernel
 * reassembles it and decodeFrame accepts it; with XDP every fragment is dropped (`fragment`), so every
 * large message (a value over ~1.4 kB, a snapshot chunk) is lost on every retransmission.
 */
const PORT = 51911;
const PAIR = 0x0a0b0c0d;
let xdp: XdpProgram;

beforeAll(() => {
  xdp = XdpProgram.load();
  xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
  xdp.addPair(PAIR);
});
afterAll(() => xdp?.close());

/** The fragments Linux emits for `datagram` (a whole UDP datagram behind `pkt`'s IP header) on a route of `mtu`. */
function linuxFragments(pkt: Buffer, ipv6: boolean, mtu: number, id: number): Buffer[] {
  const eth = pkt.subarray(0, ETH.size);
  const ipLen = ipv6 ? IPV6.size : IPV4.size;
  const ip = pkt.subarray(ETH.size, ETH.size + ipLen);
  const l4 = pkt.subarray(ETH.size + ipLen);
  const per = Math.floor((mtu - ipLen - (ipv6 ? IPV6_FRAG.size : 0)) / 8) * 8;
  const out: Buffer[] = [];
  for (let off = 0; off < l4.length; off += per) {
    const piece = l4.subarray(off, Math.min(off + per, l4.length));
    const more = off + per < l4.length;
    const h = Buffer.from(ip);
    const v = viewOf(h);
    if (!ipv6) {
      IPV4.fields.id.set(v, id);
      IPV4.fields.frag_off.set(v, (more ? 0x2000 : 0) | (off / 8));
      IPV4.fields.tot_len.set(v, ipLen + piece.length);
      out.push(Buffer.concat([eth, h, piece]));
    } else {
      const fh = Buffer.alloc(IPV6_FRAG.size);
      const f = viewOf(fh);
      IPV6_FRAG.fields.nexthdr.set(f, IPV6.fields.nexthdr.get(viewOf(ip)));
      IPV6_FRAG.fields.frag_off.set(f, ((off / 8) << 3) | (more ? 1 : 0));
      IPV6_FRAG.fields.id.set(f, id);
      IPV6.fields.nexthdr.set(v, IPPROTO_FRAGMENT);
      IPV6.fields.payload_len.set(v, fh.length + piece.length);
      out.push(Buffer.concat([eth, h, fh, piece]));
    }
  }
  return out;
}

describe('honest full-size frames fragmented on a smaller-MTU path', () => {
  // A full-size sealed Data frame for a pair in the table, as spookd sends (MAX_SEALED_PAYLOAD + tag).
  const frame = encodeFrame({ type: FrameType.Data, flags: 0, pairId: PAIR, packetNumber: 7 }, new Uint8Array(MAX_FRAME_LEN - HEADER_LEN));
  for (const [ipv6, mtu, where] of [
    [false, 1460, 'IPv4 over a 1460-octet MTU (GCP VPC default)'],
    [false, 1450, 'IPv4 over VXLAN (1450)'],
    [true, 1492, 'IPv6 over PPPoE (1492)'],
  ] as const) {
    it(`${where}: the fragments of a frame the daemon accepts once reassembled are not all dropped`, () => {
      // The daemon accepts the reassembled datagram: it is a valid frame of a known pair.
      expect(() => decodeFrame(frame, (id) => id === PAIR)).not.toThrow();
      const whole = udpPacket(frame, { dstPort: PORT, ipv6 });
      expect(UDP.fields.len.get(viewOf(whole), ETH.size + (ipv6 ? IPV6.size : IPV4.size))).toBe(frame.length + 8);
      const frags = linuxFragments(whole, ipv6, mtu, 0x1234);
      expect(frags.length).toBe(2);
      const verdicts = frags.map((p) => xdp.testRun(p).retval);
      // Currently [XDP_DROP, XDP_DROP] (counted `fragment`): the honest frame can never arrive.
      expect(verdicts).toEqual([XDP_PASS, XDP_PASS]);
    });
  }
});

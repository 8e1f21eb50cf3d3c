import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XdpProgram, XDP_DROP, XDP_PASS } from '../drivers/bpf/xdp.js';
import {
  ETH,
  ETH_P_ARP,
  IPPROTO_DSTOPTS,
  IPPROTO_FRAGMENT,
  IPPROTO_UDP,
  IPV4,
  IPV6,
  IPV6_FRAG,
  IPV6_OPTS,
  UDP,
  udpPacket,
} from '../testing/packet.js';
import { encodeFrame, decodeFrame } from '../wire/header.js';
import { DROP_REASON_NAMES, type DropReason, FrameType, HEADER_LEN, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION } from '../wire/constants.js';
import { ESTP_HEADER, viewOf } from '../wire/layouts.js';
import { HANDSHAKE_INIT } from '../wire/etcp.js';
import { WireError } from '../wire/errors.js';
import { Rng } from '../testing/sim/rng.js';

/**
 * The XDP program through BPF_PROG_TEST_RUN (needs root/CAP_BPF, as CI has): a fixture
 * for every drop reason and pass path, then a differential test against the TypeScript
 * decoder on 100,000 generated frames.
 */
const PORT = 51900;
const PAIR = 0x0a0b0c0d;
const H = ESTP_HEADER.fields;
let xdp: XdpProgram;

beforeAll(() => {
  xdp = XdpProgram.load();
  xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
  xdp.addPair(PAIR);
});
afterAll(() => xdp?.close());

const data = (pairId = PAIR, payload = new Uint8Array(40)): Uint8Array =>
  encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: 5 }, payload);
const hs = (len = HANDSHAKE_INIT.size): Uint8Array =>
  encodeFrame({ type: FrameType.HandshakeInit, flags: 0, pairId: 0, packetNumber: 0 }, new Uint8Array(len));
/** A frame built by hand (encodeFrame refuses oversized ones). */
const raw = (type: number, pairId: number, payloadLen: number): Uint8Array => {
  const f = Buffer.alloc(HEADER_LEN + payloadLen);
  f.set(
    ESTP_HEADER.encode({ magic: MAGIC, version: PROTOCOL_VERSION, type, hdr_len: HEADER_LEN, payload_len: payloadLen, pair_id: pairId }),
  );
  return f;
};
/** A copy of the frame with one header byte (a field's first byte, plus `byte`) set to v. */
const mut = (f: Uint8Array, field: keyof typeof H, v: number, byte = 0): Uint8Array => {
  const c = f.slice();
  c[H[field].offset + byte] = v;
  return c;
};

const pairPackets = (): number => xdp.pairStats().find((p) => p.pairId === PAIR)?.packets ?? 0;

/** Runs one packet; returns the verdict and which counters moved ('pass-pair': the pair's own counter). */
function run(pkt: Buffer): { verdict: number; moved: string[] } {
  const before = xdp.counters();
  const pb = pairPackets();
  const { retval } = xdp.testRun(pkt);
  const after = xdp.counters();
  const moved = Object.keys(after).filter((k) => after[k] !== before[k]);
  if (pairPackets() !== pb) moved.push('pass-pair');
  return { verdict: retval, moved };
}

describe('XDP fixtures (BPF_PROG_TEST_RUN)', () => {
  const cases: [string, Uint8Array, string][] = [
    ['truncated', data().subarray(0, H.pair_id.offset + 4), 'truncated'],
    ['bad magic', mut(data(), 'magic', 0x99), 'bad-magic'],
    ['bad version', mut(data(), 'version', 9), 'bad-version'],
    ['unknown type', mut(data(), 'type', 77), 'unknown-type'],
    ['reserved flags', mut(data(), 'flags', 0x80), 'reserved-flags'],
    ['bad header length', mut(data(), 'hdr_len', 24), 'bad-header-len'],
    ['payload length lies', mut(data(), 'payload_len', 99, 1), 'length-mismatch'],
    ['oversized frame', raw(FrameType.Data, PAIR, MAX_FRAME_LEN - HEADER_LEN + 1), 'oversized'],
    ['oversized handshake', raw(FrameType.HandshakeInit, 0, 300), 'oversized'],
    ['unknown pair', data(0x1234), 'unknown-pair'],
    ['valid data frame (counted on its pair)', data(), 'pass-pair'],
    ['valid handshake', hs(), 'pass-estp'],
    [
      'valid cookie reply (§12.8)',
      encodeFrame({ type: FrameType.CookieReply, flags: 0, pairId: 0x1234, packetNumber: 0 }, new Uint8Array(60)),
      'pass-estp',
    ],
  ];
  for (const [name, frame, counter] of cases) {
    it(`${name} → ${counter}`, () => {
      for (const opts of [{}, { ipv6: true }, { vlans: [42] }, { vlans: [7, 42], ipv6: true }]) {
        const r = run(udpPacket(frame, { dstPort: PORT, ...opts }));
        expect(r.verdict).toBe(counter.startsWith('pass') ? XDP_PASS : XDP_DROP);
        expect(r.moved).toEqual([counter]);
      }
    });
  }

  it('non-ESTP traffic passes untouched: other UDP ports, TCP, non-IP', () => {
    expect(run(udpPacket(mut(data(), 'magic', 0x99), { dstPort: 53 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    expect(run(udpPacket(data(), { dstPort: PORT, protocol: 6 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    const arp = Buffer.alloc(60);
    ETH.fields.proto.set(viewOf(arp), ETH_P_ARP);
    expect(run(arp)).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
  });

  it('counts packets and bytes per pair', () => {
    const before = xdp.pairStats().find((p) => p.pairId === PAIR) ?? { packets: 0, bytes: 0 };
    run(udpPacket(data(), { dstPort: PORT }));
    const after = xdp.pairStats().find((p) => p.pairId === PAIR)!;
    expect(after.packets - before.packets).toBe(1);
    expect(after.bytes - before.bytes).toBe(60);
  });

  it('rate-limits handshakes per source address (token bucket)', () => {
    xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1, handshakeBurst: 3 });
    try {
      const verdicts = Array.from({ length: 5 }, () => xdp.testRun(udpPacket(hs(), { dstPort: PORT, src: 77 })).retval);
      expect(verdicts).toEqual([XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP]);
      // Another source has its own bucket.
      expect(xdp.testRun(udpPacket(hs(), { dstPort: PORT, src: 78 })).retval).toBe(XDP_PASS);
      expect(run(udpPacket(hs(), { dstPort: PORT, src: 77 })).moved).toEqual(['handshake-rate-limited']);
    } finally {
      xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
    }
  });
});

/**
 * Crafted IP fragments of an ESTP datagram (PROTOCOL.md §13.1): `udpPacket`'s packet with the
 * IPv4 identification and flags/offset set, or an IPv6 Fragment header spliced in. A non-first
 * fragment carries `rest` after the IP (and Fragment) header instead of the UDP header.
 */
function fragment(
  frame: Uint8Array,
  o: { ipv6?: boolean; id: number; offset: number; more: boolean; dstPort?: number; rest?: Uint8Array; ext?: number; src?: number },
): Buffer {
  const pkt = udpPacket(frame, { dstPort: o.dstPort ?? PORT, ipv6: o.ipv6, src: o.src });
  const eth = pkt.subarray(0, ETH.size);
  if (!o.ipv6) {
    const ip = Buffer.from(pkt.subarray(ETH.size, ETH.size + IPV4.size));
    const l4 = o.offset > 0 ? Buffer.from(o.rest ?? new Uint8Array(64)) : pkt.subarray(ETH.size + IPV4.size);
    const v = viewOf(ip);
    IPV4.fields.id.set(v, o.id);
    IPV4.fields.frag_off.set(v, (o.more ? 0x2000 : 0) | o.offset); // MF, offset in 8-octet units
    IPV4.fields.tot_len.set(v, IPV4.size + l4.length);
    return Buffer.concat([eth, ip, l4]);
  }
  const ip = Buffer.from(pkt.subarray(ETH.size, ETH.size + IPV6.size));
  const l4 = o.offset > 0 ? Buffer.from(o.rest ?? new Uint8Array(64)) : pkt.subarray(ETH.size + IPV6.size);
  const fh = Buffer.alloc(IPV6_FRAG.size);
  const f = viewOf(fh);
  IPV6_FRAG.fields.nexthdr.set(f, IPPROTO_UDP);
  IPV6_FRAG.fields.frag_off.set(f, (o.offset << 3) | (o.more ? 1 : 0));
  IPV6_FRAG.fields.id.set(f, o.id);
  let ext = Buffer.alloc(0);
  if (o.ext !== undefined) {
    ext = Buffer.alloc(IPV6_OPTS.size); // a destination-options header before the Fragment header
    IPV6_OPTS.fields.nexthdr.set(viewOf(ext), IPPROTO_FRAGMENT);
  }
  const v = viewOf(ip);
  IPV6.fields.nexthdr.set(v, o.ext !== undefined ? o.ext : IPPROTO_FRAGMENT);
  IPV6.fields.payload_len.set(v, ext.length + fh.length + l4.length);
  return Buffer.concat([eth, ip, ext, fh, l4]);
}

describe('XDP and IP fragments (PROTOCOL.md §13.1)', () => {
  for (const ipv6 of [false, true]) {
    const fam = ipv6 ? 'IPv6' : 'IPv4';
    it(`attack: a handshake flood split into ${fam} fragments is dropped (first fragment by port, the rest by identification), counted as fragment`, () => {
      xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1, handshakeBurst: 1 });
      try {
        for (let i = 0; i < 20; i++) {
          const id = 0x4000 + i;
          expect(run(fragment(hs(), { ipv6, id, offset: 0, more: true, src: 90 }))).toEqual({ verdict: XDP_DROP, moved: ['fragment'] });
          expect(run(fragment(hs(), { ipv6, id, offset: 11, more: false, src: 90 }))).toEqual({
            verdict: XDP_DROP,
            moved: ['fragment'],
          });
        }
        // The rate limit was never consulted: an unfragmented handshake from that source still passes.
        expect(run(udpPacket(hs(), { dstPort: PORT, ipv6, src: 90 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-estp'] });
      } finally {
        xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
      }
    });

    it(`${fam}: fragments of other traffic pass; a tiny first fragment (no room for the UDP header) drops`, () => {
      // First fragment to another port, and its train: pass.
      expect(run(fragment(data(), { ipv6, id: 0x5001, offset: 0, more: true, dstPort: 53 }))).toEqual({
        verdict: XDP_PASS,
        moved: ['pass-other'],
      });
      expect(run(fragment(data(), { ipv6, id: 0x5001, offset: 8, more: false }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
      // A later fragment of a train never seen (it may belong to anything): pass.
      expect(run(fragment(data(), { ipv6, id: 0x5002, offset: 8, more: true }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
      // A later fragment with the identification of a dropped train but another source: pass.
      run(fragment(hs(), { ipv6, id: 0x5003, offset: 0, more: true, src: 5 }));
      expect(run(fragment(data(), { ipv6, id: 0x5003, offset: 8, more: false, src: 6 }))).toEqual({
        verdict: XDP_PASS,
        moved: ['pass-other'],
      });
      // First fragment holding 4 octets of UDP: its port cannot be seen.
      const tiny = fragment(data(), { ipv6, id: 0x5004, offset: 0, more: true });
      const cut = ETH.size + (ipv6 ? IPV6.size + IPV6_FRAG.size : IPV4.size) + UDP.fields.len.offset;
      expect(run(tiny.subarray(0, cut))).toEqual({ verdict: XDP_DROP, moved: ['fragment'] });
    });

    it(`${fam}: a pair's Data frame fragmented on a smaller-MTU path passes (pass-fragment, then pass-other); other first fragments still drop their train`, () => {
      const big = data(PAIR, new Uint8Array(MAX_FRAME_LEN - HEADER_LEN));
      // A dropped train of the same source and identification is forgotten once the pair's first fragment passes.
      run(fragment(hs(), { ipv6, id: 0x5101, offset: 0, more: true }));
      expect(run(fragment(big, { ipv6, id: 0x5101, offset: 0, more: true }))).toEqual({ verdict: XDP_PASS, moved: ['pass-fragment'] });
      expect(run(fragment(big, { ipv6, id: 0x5101, offset: 160, more: false }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
      // Not a pair's well-formed Data frame: the first fragment and its train drop, as before.
      const refused: [string, Uint8Array][] = [
        ['unknown pair', data(0x1234, new Uint8Array(1000))],
        ['handshake type', mut(big, 'type', FrameType.HandshakeInit)],
        ['length mismatch', mut(big, 'payload_len', 0, 1)],
        ['bad magic', mut(big, 'magic', 0x99)],
        ['reserved flags', mut(big, 'flags', 0x80)],
        ['oversized', raw(FrameType.Data, PAIR, MAX_FRAME_LEN - HEADER_LEN + 8)],
      ];
      for (const [i, [name, f]] of refused.entries()) {
        const id = 0x5200 + i;
        expect(run(fragment(f, { ipv6, id, offset: 0, more: true })), name).toEqual({ verdict: XDP_DROP, moved: ['fragment'] });
        expect(run(fragment(f, { ipv6, id, offset: 160, more: false })), name).toEqual({ verdict: XDP_DROP, moved: ['fragment'] });
      }
      // A first fragment cut inside the frame header: it cannot be checked.
      const cut = ETH.size + (ipv6 ? IPV6.size + IPV6_FRAG.size : IPV4.size) + UDP.size + HEADER_LEN - 4;
      expect(run(fragment(big, { ipv6, id: 0x5301, offset: 0, more: true }).subarray(0, cut))).toEqual({
        verdict: XDP_DROP,
        moved: ['fragment'],
      });
    });
  }

  it('IPv6: an atomic fragment (offset 0, no more) is a whole datagram and is checked as one; a Fragment header behind a destination-options header is followed', () => {
    expect(run(fragment(data(), { ipv6: true, id: 0x6001, offset: 0, more: false }))).toEqual({ verdict: XDP_PASS, moved: ['pass-pair'] });
    expect(run(fragment(mut(data(), 'magic', 0x99), { ipv6: true, id: 0x6002, offset: 0, more: false }))).toEqual({
      verdict: XDP_DROP,
      moved: ['bad-magic'],
    });
    expect(run(fragment(hs(), { ipv6: true, id: 0x6003, offset: 0, more: true, ext: IPPROTO_DSTOPTS }))).toEqual({
      verdict: XDP_DROP,
      moved: ['fragment'],
    });
    expect(run(fragment(hs(), { ipv6: true, id: 0x6003, offset: 20, more: false, ext: IPPROTO_DSTOPTS }))).toEqual({
      verdict: XDP_DROP,
      moved: ['fragment'],
    });
  });
});

/** `udpPacket`'s IPv6 packet with `n` destination-options headers (8 octets each) before `inner` (UDP, 17, or a Fragment header, 44). */
function withDstOpts(pkt: Buffer, n: number, inner = IPPROTO_UDP): Buffer {
  const eth = pkt.subarray(0, ETH.size);
  const ip = Buffer.from(pkt.subarray(ETH.size, ETH.size + IPV6.size));
  const rest = pkt.subarray(ETH.size + IPV6.size);
  const exts = Array.from({ length: n }, (_, i) => {
    const e = Buffer.alloc(IPV6_OPTS.size);
    IPV6_OPTS.fields.nexthdr.set(viewOf(e), i === n - 1 ? inner : IPPROTO_DSTOPTS);
    return e;
  });
  const v = viewOf(ip);
  IPV6.fields.nexthdr.set(v, n > 0 ? IPPROTO_DSTOPTS : inner);
  IPV6.fields.payload_len.set(v, IPV6_OPTS.size * n + rest.length);
  return Buffer.concat([eth, ip, ...exts, rest]);
}

describe('XDP and IPv6 extension-header chains (PROTOCOL.md §13.1)', () => {
  it('attack: a handshake flood behind more extension headers than the program follows is dropped as ext-chain, not passed unexamined', () => {
    for (let i = 0; i < 50; i++) {
      expect(run(withDstOpts(udpPacket(hs(), { dstPort: PORT, ipv6: true, src: 77 }), 9))).toEqual({
        verdict: XDP_DROP,
        moved: ['ext-chain'],
      });
    }
    // Up to 8 are followed: the frame is checked like any other (and the rate limit applies).
    expect(run(withDstOpts(udpPacket(data(), { dstPort: PORT, ipv6: true }), 8))).toEqual({ verdict: XDP_PASS, moved: ['pass-pair'] });
    expect(run(withDstOpts(udpPacket(mut(data(), 'magic', 0x99), { dstPort: PORT, ipv6: true }), 8))).toEqual({
      verdict: XDP_DROP,
      moved: ['bad-magic'],
    });
    // Other traffic with a short chain passes; a chain too long to follow drops whatever its port (it cannot be seen).
    expect(run(withDstOpts(udpPacket(data(), { dstPort: 53, ipv6: true }), 3))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    expect(run(withDstOpts(udpPacket(data(), { dstPort: 53, ipv6: true }), 9))).toEqual({ verdict: XDP_DROP, moved: ['ext-chain'] });
    // A first fragment to the ESTP port behind four destination-options headers is still seen as one.
    expect(run(withDstOpts(fragment(hs(), { ipv6: true, id: 0x7001, offset: 0, more: true }), 4, IPPROTO_FRAGMENT))).toEqual({
      verdict: XDP_DROP,
      moved: ['fragment'],
    });
  });
});

/** The packet with its UDP length field overwritten (`at`: the UDP header's offset). */
function withUdpLen(pkt: Buffer, at: number, len: number): Buffer {
  const c = Buffer.from(pkt);
  UDP.fields.len.set(viewOf(c), len, at);
  return c;
}

describe('XDP and a UDP length of 0 over IPv6 (PROTOCOL.md §13.1)', () => {
  // Linux's __udp6_lib_rcv reads UDP length 0 as "the rest of the IPv6 payload" and delivers the
  // datagram; the program must check it exactly as the same frame with a correct length.
  const zero = (f: Uint8Array, o: { vlans?: number[]; src?: number } = {}): Buffer =>
    udpPacket(f, { dstPort: PORT, ipv6: true, udpLen: 0, ...o });
  const right = (f: Uint8Array, o: { vlans?: number[]; src?: number } = {}): Buffer => udpPacket(f, { dstPort: PORT, ipv6: true, ...o });

  it('attack: an unknown-pair frame and a handshake with UDP length 0 get the verdict and counter of the same frame with a correct length', () => {
    const cases: [string, Uint8Array, number, string][] = [
      ['unknown pair', data(0x1234), XDP_DROP, 'unknown-pair'],
      ['valid-looking handshake', hs(), XDP_PASS, 'pass-estp'],
      ['data frame of the pair', data(), XDP_PASS, 'pass-pair'],
      ['bad magic', mut(data(), 'magic', 0x99), XDP_DROP, 'bad-magic'],
      ['payload length lies', mut(data(), 'payload_len', 99, 1), XDP_DROP, 'length-mismatch'],
      ['oversized handshake', raw(FrameType.HandshakeInit, 0, 300), XDP_DROP, 'oversized'],
      ['truncated', data().subarray(0, H.pair_id.offset + 4), XDP_DROP, 'truncated'],
    ];
    for (const [name, f, verdict, counter] of cases) {
      for (const vlans of [[], [42], [7, 42]]) {
        const want = { verdict, moved: [counter] };
        expect(run(right(f, { vlans })), `${name}, correct length, vlans ${vlans.join('.')}`).toEqual(want);
        expect(run(zero(f, { vlans })), `${name}, UDP length 0, vlans ${vlans.join('.')}`).toEqual(want);
      }
      // Behind extension headers the kernel's length is the Payload Length less those headers.
      expect(run(withDstOpts(right(f), 3)), `${name}, correct length behind 3 destination-options headers`).toEqual({
        verdict,
        moved: [counter],
      });
      expect(run(withDstOpts(zero(f), 3)), `${name}, UDP length 0 behind 3 destination-options headers`).toEqual({
        verdict,
        moved: [counter],
      });
      // In an atomic fragment (its Fragment header is an extension header too).
      const atomic = fragment(f, { ipv6: true, id: 0x8001, offset: 0, more: false });
      expect(run(withUdpLen(atomic, ETH.size + IPV6.size + IPV6_FRAG.size, 0)), `${name}, UDP length 0 in an atomic fragment`).toEqual({
        verdict,
        moved: [counter],
      });
    }
    // The pair is counted with the frame's real length.
    const before = xdp.pairStats().find((p) => p.pairId === PAIR)!;
    run(zero(data()));
    const after = xdp.pairStats().find((p) => p.pairId === PAIR)!;
    expect([after.packets - before.packets, after.bytes - before.bytes]).toEqual([1, 60]);
  });

  it('attack: a handshake flood with UDP length 0 is rate-limited like any other', () => {
    xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1, handshakeBurst: 2 });
    try {
      expect(run(zero(hs(), { src: 91 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-estp'] });
      expect(run(right(hs(), { src: 91 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-estp'] });
      for (let i = 0; i < 20; i++) expect(run(zero(hs(), { src: 91 }))).toEqual({ verdict: XDP_DROP, moved: ['handshake-rate-limited'] });
    } finally {
      xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
    }
  });

  it('the length is the IPv6 Payload Length (not the packet end, which may hold link padding); a Payload Length of 0 drops as oversized', () => {
    const padded = Buffer.concat([zero(data()), Buffer.alloc(24)]);
    expect(run(padded)).toEqual({ verdict: XDP_PASS, moved: ['pass-pair'] });
    expect(run(Buffer.concat([zero(data(0x1234)), Buffer.alloc(24)]))).toEqual({ verdict: XDP_DROP, moved: ['unknown-pair'] });
    // Payload Length 1 octet short of the frame: the kernel delivers one octet less, which the frame's own length field contradicts.
    const short = zero(data());
    IPV6.fields.payload_len.set(viewOf(short), UDP.size + data().length - 1, ETH.size);
    expect(run(short)).toEqual({ verdict: XDP_DROP, moved: ['length-mismatch'] });
    // IPv6 Payload Length 0 claims a jumbogram (RFC 2675: over 65,535 octets).
    const jumbo = zero(hs());
    IPV6.fields.payload_len.set(viewOf(jumbo), 0, ETH.size);
    expect(run(jumbo)).toEqual({ verdict: XDP_DROP, moved: ['oversized'] });
  });

  it('lengths the kernel drops still pass unexamined: IPv6 1..7, IPv4 0..7, and IPv6 length 0 with no room for the UDP header', () => {
    for (const len of [1, 4, 7]) {
      expect(run(udpPacket(hs(), { dstPort: PORT, ipv6: true, udpLen: len }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    }
    for (const len of [0, 4, 7])
      expect(run(udpPacket(hs(), { dstPort: PORT, udpLen: len }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    const tiny = zero(hs());
    IPV6.fields.payload_len.set(viewOf(tiny), 4, ETH.size);
    expect(run(tiny)).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
    // Other ports are not looked at, whatever the length.
    expect(run(udpPacket(hs(), { dstPort: 53, ipv6: true, udpLen: 0 }))).toEqual({ verdict: XDP_PASS, moved: ['pass-other'] });
  });
});

/** The TypeScript verdict for the same frame: decodeFrame with the same pair table. */
function tsVerdict(frame: Uint8Array): string {
  try {
    const f = decodeFrame(frame, (id) => id === PAIR);
    return f.header.type === FrameType.Data ? 'pass-pair' : 'pass-estp';
  } catch (e) {
    if (e instanceof WireError) return DROP_REASON_NAMES[e.reason as DropReason];
    throw e;
  }
}

describe('C and TypeScript agree', () => {
  it('100,000 generated frames (valid, mutated, truncated, random): identical verdicts and reasons', () => {
    const rng = new Rng(20261124);
    const bases = [
      data(),
      data(0x1234),
      hs(),
      hs(61),
      data(PAIR, new Uint8Array(1300)),
      raw(FrameType.Data, PAIR, 1500),
      raw(FrameType.HandshakeResp, 0, 400),
      encodeFrame({ type: FrameType.CookieReply, flags: 1, pairId: 3, packetNumber: 0 }, new Uint8Array(64)),
    ];
    const disagreements: string[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) {
      let f: Uint8Array;
      const kind = rng.int(0, 9);
      const base = rng.pick(bases);
      if (kind === 0) f = base;
      else if (kind <= 5) {
        // Mutate header bytes mostly, sometimes the payload.
        f = base.slice();
        for (let m = rng.int(1, 3); m > 0; m--)
          f[rng.chance(0.85) ? rng.int(0, HEADER_LEN - 1) : rng.int(0, f.length - 1)] = rng.int(0, 255);
      } else if (kind <= 7) f = base.subarray(0, rng.int(0, base.length));
      else if (kind === 8) f = rng.bytes(rng.int(0, 64));
      else {
        // Correct header, lying or oversized lengths.
        f = base.slice();
        H.payload_len.set(viewOf(f), rng.int(0, 1600));
      }
      const ipv6 = rng.chance(0.3);
      const vlans = rng.chance(0.2) ? [rng.int(1, 4000)] : [];
      const r = run(udpPacket(f, { dstPort: PORT, ipv6, vlans }));
      const want = tsVerdict(f);
      const got = r.moved.length === 1 ? r.moved[0] : `?${r.moved.join('+')}`;
      seen.add(want);
      if (got !== want && disagreements.length < 10)
        disagreements.push(`#${i} ${Buffer.from(f.subarray(0, HEADER_LEN + 4)).toString('hex')} (len ${f.length}): ts=${want} xdp=${got}`);
    }
    expect(disagreements).toEqual([]);
    // The generator reached every reason the two can share.
    for (const r of [
      'pass-estp',
      'pass-pair',
      'truncated',
      'bad-magic',
      'bad-version',
      'unknown-type',
      'reserved-flags',
      'bad-header-len',
      'length-mismatch',
      'oversized',
      'unknown-pair',
    ]) {
      expect(seen.has(r), r).toBe(true);
    }
  }, 120_000);
});

describe('spookd without the fast path', () => {
  it('a refused attach (no such interface) leaves the daemon running without XDP, with the reason in its status', async () => {
    const { FastPath } = await import('../drivers/daemon/fastpath.js');
    const { pino } = await import('pino');
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => void lines.push(s) });
    const { mkdtempSync, readdirSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    // The attachment record (an intent, written before the attach) goes in dataDir, as in any loaded config.
    const dataDir = mkdtempSync(join(tmpdir(), 'xdp-noif-'));
    const cfg = {
      dataDir,
      // A rate above what the program takes (a release before 1.34 loaded any u32): used as 1,000,000, with a warning.
      xdp: { interface: 'no-such-if0', mode: 'auto', handshakeRate: 10_000_000, handshakeBurst: 1, pinDir: '/sys/fs/bpf/spook-test' },
    } as never;
    try {
      const fp = new FastPath(cfg, log);
      expect(() => fp.start(51900)).not.toThrow();
      expect(lines.join('')).toMatch(/xdp\.handshakeRate above 1000000: 1000000 used/);
      const st = fp.status();
      expect(st.enabled).toBe(false);
      expect(st.error).toMatch(/no network interface named no-such-if0/);
      expect(lines.join('')).toMatch(/XDP fast path unavailable; spookd runs without it/);
      expect(() => fp.addPair(1)).not.toThrow();
      fp.stop();
      expect(readdirSync(dataDir)).toEqual([]); // the intent removed with the failed attach
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

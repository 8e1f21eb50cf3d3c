/**
 * `spook-lab bench xdp`: nanoseconds per packet through BPF_PROG_TEST_RUN with repeat, for
 * four kinds of packet, beside a trivial XDP_PASS program measured in the same run.
 */
import { XdpProgram, XDP_DROP, XDP_PASS } from '../drivers/bpf/xdp.js';
import { udpPacket } from '../testing/packet.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';

export interface XdpBenchResult {
  repeat: number;
  rounds: number;
  baselineNs: number;
  validDataNs: number;
  malformedNs: number;
  unknownPairNs: number;
  nonEstpNs: number;
  worstVsBaseline: number;
}

export function runXdpBench(repeat: number, rounds: number): XdpBenchResult {
  const port = 51900;
  const p = XdpProgram.load();
  try {
    p.configure({ port, enforcePairs: true, handshakeRate: 1000, handshakeBurst: 1000 });
    p.addPair(7);
    const frame = (pairId: number): Uint8Array =>
      encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: 9 }, new Uint8Array(64));
    const bad = frame(7).slice();
    bad[2] = 9; // wrong version: dropped after the magic check
    const packets = {
      validDataNs: { pkt: udpPacket(frame(7), { dstPort: port }), want: XDP_PASS },
      malformedNs: { pkt: udpPacket(bad, { dstPort: port }), want: XDP_DROP },
      unknownPairNs: { pkt: udpPacket(frame(8), { dstPort: port }), want: XDP_DROP },
      nonEstpNs: { pkt: udpPacket(frame(7), { dstPort: 443 }), want: XDP_PASS },
    };
    // Median of rounds, interleaved so machine noise hits every kind alike.
    const samples: Record<string, number[]> = { baselineNs: [], validDataNs: [], malformedNs: [], unknownPairNs: [], nonEstpNs: [] };
    for (let r = 0; r < rounds; r++) {
      samples.baselineNs.push(p.testRun(packets.validDataNs.pkt, repeat, 'spook_xdp_pass').durationNs);
      for (const [k, v] of Object.entries(packets)) {
        const t = p.testRun(v.pkt, repeat);
        if (t.retval !== v.want) throw new Error(`bench: ${k} returned ${t.retval}, expected ${v.want}`);
        samples[k].push(t.durationNs);
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)])) as Record<keyof typeof samples, number>;
    return {
      repeat,
      rounds,
      baselineNs: m.baselineNs,
      validDataNs: m.validDataNs,
      malformedNs: m.malformedNs,
      unknownPairNs: m.unknownPairNs,
      nonEstpNs: m.nonEstpNs,
      worstVsBaseline: Number((Math.max(m.validDataNs, m.malformedNs, m.unknownPairNs, m.nonEstpNs) / m.baselineNs).toFixed(2)),
    };
  } finally {
    p.close();
  }
}

/**
 * CPU a sequencer spends per reconciliation request that asks for a fresh pin (the attack
 * of issue 13: `targetVersion` 0, WANT_META, 256 root prefixes, from the authorised
 * follower), at a given map size. Usage: vite-node bench/recon-pin.ts [keys] [requests] [reuse|fresh] [root|deep]
 * `fresh`: the log keeps one record, so no pin can be reused and every request (one per
 * second, inside the rate limit) builds a new one; a SnapReq then measures the chunking
 * slices (work() per handleTimeout).
 */
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { MsgType, REQ_WANT_META, encodeMessage } from '../wire/messages.js';
import { DeltaOp } from '../wire/delta.js';

const n = Number(process.argv[2] ?? 100_000);
const requests = Number(process.argv[3] ?? 5);
const fresh = process.argv[4] === 'fresh';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const seq = new HalfPair(
  {
    pairId: 1,
    localId: 1,
    peerId: 2,
    seed: 5,
    registers: [{ name: 'kv', kind: 'map', log: fresh ? { maxRecords: 1, maxBytes: 1 << 20 } : undefined }],
  },
  0,
);
seq.register('kv').restore(1, (st) => {
  for (let i = 0; i < n; i++) (st as MapState).put(enc(`key-${i}`), enc(`value-${i}`), 1);
});
// `deep`: 256 distinct depth-3 prefixes (a bucket scan each) against the held pin.
const deep = process.argv[5] === 'deep';
const req = encodeMessage({
  type: MsgType.ReconReq,
  register: 'kv',
  targetVersion: 0,
  flags: REQ_WANT_META,
  prefixes: Array.from({ length: 256 }, (_, i) => (deep ? { depth: 3, prefix: i * 13 } : { depth: 0, prefix: 0 })),
});
let pn = 0;
let now = 1;
const samples: number[] = [];
for (let i = 0; i < requests; i++) {
  // The state moves between requests, as a live register does.
  seq.propose(now, 'kv', { op: DeltaOp.Set, key: enc(`key-${i}`), value: enc(`x${i}`) });
  seq.collapse(now);
  const t0 = process.cpuUsage();
  seq.handleDatagram(now, encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn++ }, req));
  while (seq.pollTransmit(now)) {
    // drain: only the sequencer's state matters here
  }
  const d = process.cpuUsage(t0);
  samples.push((d.user + d.system) / 1000);
  now += fresh ? 1000 : 10;
}
const cpu = (f: () => void): number => {
  const t0 = process.cpuUsage();
  f();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1000;
};
// A full transfer's first SnapReq: chunking the pin is O(n), done in bounded slices.
const slices: number[] = [];
const snap = encodeMessage({ type: MsgType.SnapReq, register: 'kv', targetVersion: 0, flags: REQ_WANT_META, fromChunk: 0 });
now += 1000;
const first = cpu(() => seq.handleDatagram(now, encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn++ }, snap)));
for (let t = seq.pollTimeout(); t !== undefined && t <= now; t = seq.pollTimeout()) slices.push(cpu(() => seq.handleTimeout(now)));
const drops = seq.stats.drops;
console.log(
  JSON.stringify({
    keys: n,
    mode: fresh ? 'fresh' : 'reuse',
    msPerRequest: samples.map((s) => Math.round(s)),
    pinsBuilt: seq.register('kv').sequencer!.responder.pinsBuilt,
    snapReqMs: Math.round(first),
    chunkSlices: slices.length,
    maxSliceMs: Math.round(slices.reduce((m, s) => Math.max(m, s), 0)),
    drops,
  }),
);

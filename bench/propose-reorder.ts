/**
 * A follower's writes over a link that reorders datagrams, against the same link delivering in
 * order (issue 16): two HalfPairs over the seeded simulator, the follower writing 32-octet sets
 * either as fast as its window allows (`saturating`: 1,024 undecided) or one a millisecond
 * (`paced`); per row, commits a second and p50/p99 commit latency (simulated ms) with the link's
 * delays drawn per datagram (reordered) and with the same draws kept in order (`fifo`), and the
 * ratio. Until PROTOCOL 1.37 the sequencer ignored a candidate past a gap, so a reordered window
 * drained one in-order run per RTO (1-4 ms of jitter: 0.01 of the in-order rate).
 *
 *   node dist/bench/propose-reorder.js [--json] [seconds=4]
 */
import { PairState } from '../core/pair/lifecycle.js';
import { DeltaOp } from '../wire/delta.js';
import { SimWorld } from '../testing/sim/world.js';

interface Figure {
  commitsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  retransmitTimeouts: number;
}
type Mode = 'saturating' | 'paced';
interface Link {
  minDelayMs: number;
  maxDelayMs: number;
  reorder: number;
  loss: number;
}

function measure(mode: Mode, link: Link, fifo: boolean, ms: number): Figure {
  const world = new SimWorld(5, { loss: 0, dup: 0, reorder: 0, minDelayMs: link.minDelayMs, maxDelayMs: link.maxDelayMs });
  world.verify = false; // the simulator's own checks are not what is measured
  const sentAt = new Map<number, number>();
  const lat: number[] = [];
  let t0 = 0;
  world.onEvent = (ep, ev) => {
    if (ep.name !== 'B' || ev.type !== 'outcome') return;
    const at = sentAt.get(ev.seq);
    if (at !== undefined && at >= t0) lat.push(world.now - at);
    sentAt.delete(ev.seq);
  };
  const [a, b] = world.addPair(['A', 'B'], { pairId: 9, seed: 1234, registers: [{ name: 'kv', kind: 'map' }] });
  if (!world.run(3000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED))
    throw new Error('bench: the pair did not form');
  world.net.faults = { loss: link.loss, dup: 0, reorder: link.reorder, minDelayMs: link.minDelayMs, maxDelayMs: link.maxDelayMs, fifo };
  const start = world.now + 1;
  t0 = start + 1000; // a second of warm-up, not counted
  const end = t0 + ms;
  const enc = new TextEncoder();
  const value = enc.encode('v'.repeat(32));
  let i = 0;
  for (let t = start; t < end; t++)
    world.at(t, () => {
      const r = b.pair.register('kv');
      const n = mode === 'saturating' ? 1024 - r.pendingCount : 1;
      for (let k = 0; k < n && r.pendingCount < 1024; k++) {
        const { seq } = b.pair.propose(world.now, 'kv', { op: DeltaOp.Set, key: enc.encode(`k${i++ % 5000}`), value });
        sentAt.set(seq, world.now);
      }
    });
  const rt0 = b.pair.stats.retransmitTimeouts;
  world.run(end);
  lat.sort((x, y) => x - y);
  return {
    commitsPerSec: Math.round(lat.length / (ms / 1000)),
    p50Ms: Number((lat[Math.floor(lat.length * 0.5)] ?? NaN).toFixed(1)),
    p99Ms: Number((lat[Math.floor(lat.length * 0.99)] ?? NaN).toFixed(1)),
    retransmitTimeouts: b.pair.stats.retransmitTimeouts - rt0,
  };
}

const args = process.argv.slice(2);
const json = args.includes('--json');
const seconds = Number(args.find((x) => /^\d+$/.test(x)) ?? 4);
const links: Link[] = [
  { minDelayMs: 1, maxDelayMs: 4, reorder: 0, loss: 0 },
  { minDelayMs: 1, maxDelayMs: 4, reorder: 0, loss: 0.01 },
  { minDelayMs: 5, maxDelayMs: 20, reorder: 0, loss: 0 },
  { minDelayMs: 2, maxDelayMs: 2, reorder: 0.05, loss: 0 },
];
const rows = [];
for (const mode of ['saturating', 'paced'] as const)
  for (const link of links) {
    const inOrder = measure(mode, link, true, seconds * 1000);
    const reordered = measure(mode, link, false, seconds * 1000);
    rows.push({ mode, ...link, inOrder, reordered, rateRatio: Number((reordered.commitsPerSec / inOrder.commitsPerSec).toFixed(2)) });
  }
if (json) console.log(JSON.stringify({ seconds, rows }, null, 2));
else
  for (const r of rows)
    console.log(
      `${r.mode.padEnd(10)} ${r.minDelayMs}-${r.maxDelayMs} ms${r.reorder ? ` reorder ${r.reorder}` : ''}${r.loss ? ` loss ${r.loss}` : ''}: ` +
        `in order ${r.inOrder.commitsPerSec}/s p50 ${r.inOrder.p50Ms} ms p99 ${r.inOrder.p99Ms} ms; ` +
        `reordered ${r.reordered.commitsPerSec}/s p50 ${r.reordered.p50Ms} ms p99 ${r.reordered.p99Ms} ms; ratio ${r.rateRatio}`,
    );

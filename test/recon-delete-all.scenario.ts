/**
 * The 150,000-key "delete everything" re-entanglement, run as its own process (vite-node)
 * so it has Node's default stack, as spookd does: vitest's workers have a stack four times
 * larger, which hides an overflow. Prints one JSON line with the outcome.
 */
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';
import { SimWorld } from '../testing/sim/world.js';
import { DeltaOp } from '../wire/delta.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const n = Number(process.argv[2] ?? 150_000);
const KV = [{ name: 'kv', kind: 'map' as const, log: { maxRecords: 64, maxBytes: 1 << 20 } }];

const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 3 });
const opts = { pairId: 9, seed: 4321, registers: KV };
const a = new HalfPair({ ...opts, localId: 1, peerId: 2 }, 0);
const b = new HalfPair({ ...opts, localId: 2, peerId: 1 }, 0);
for (const p of [a, b]) {
  p.register('kv').restore(1, (st) => {
    for (let i = 0; i < n; i++) (st as MapState).put(enc(`k${i}`), enc('v'), 1);
  });
}
world.adopt(['A', 'B'], [a, b]);
const aligned = (): boolean => {
  const ra = a.register('kv');
  const rb = b.register('kv');
  return (
    a.state === PairState.ENTANGLED &&
    b.state === PairState.ENTANGLED &&
    ra.version === rb.version &&
    ra.hash.hi === rb.hash.hi &&
    ra.hash.lo === rb.hash.lo
  );
};
const formed = world.run(10_000, aligned);
world.net.setLink('A', 'B', false);
world.net.setLink('B', 'A', false);
// The sequencer deletes every key while the follower is cut off, then writes past its log.
for (let i = 0; i < n; i++) {
  a.propose(world.now, 'kv', { op: DeltaOp.Del, key: enc(`k${i}`) });
  if (i % 1000 === 999) a.collapse(world.now);
}
for (let i = 0; i < 3; i++) a.propose(world.now, 'kv', { op: DeltaOp.Set, key: enc(`new${i}`), value: enc('x') });
a.collapse(world.now);
const logBase = a.register('kv').log.base;
world.run(world.now + 7000);
world.net.setLink('A', 'B', true);
world.net.setLink('B', 'A', true);
let converged = false;
let error: string | undefined;
try {
  converged = world.run(world.now + 60_000, aligned);
} catch (e) {
  error = String(e);
}
const sb = b.register('kv').state as MapState;
console.log(
  JSON.stringify({
    formed,
    logBase,
    converged,
    error,
    size: sb.size(),
    hasOld: sb.get(enc('k0')) !== undefined,
    hasNew: sb.get(enc('new2')) !== undefined,
    fullTransfers: b.stats.fullTransfers,
  }),
);

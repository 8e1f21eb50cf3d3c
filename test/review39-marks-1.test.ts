/**
 * Review 39 (state that grows with peer input): a follower sets `mark[origin] = seq` for every
 * entry of every Collapse record, whatever `origin` the sequencer names (follower.ts
 * applyEntries / applyPacked). A pair has two origins (its two member ids); a sequencer that
 * names a new origin in each rejected entry (~6 octets on the wire, nothing applied, the hash
 * unchanged so the record is valid and logged) makes the follower's causal-mark map grow by one
 * entry per entry, never released (no quota counts it; only an adoption replaces it), and every
 * snapshot of the register carries it.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { MapState } from '../core/register/map.js';
import { MsgType, encodeMessage, type CollapseEntry } from '../wire/messages.js';
import { RejectReason } from '../wire/delta.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heap = (): number => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

const SEED = 77;
const RECORDS = 1000;
const PER_RECORD = 250;

function follower(): HalfPair {
  return new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: SEED, registers: [{ name: 'kv', kind: 'map' as const }] }, 0);
}

function run(originOf: (r: number, i: number) => number): { marks: number; wire: number; ms: number; version: number; heap: number } {
  const h0 = heap();
  const p = follower();
  const h = new MapState(SEED).hash;
  let wire = 0;
  const t0 = performance.now();
  for (let r = 0; r < RECORDS; r++) {
    const entries: CollapseEntry[] = [];
    for (let i = 0; i < PER_RECORD; i++)
      entries.push({ origin: originOf(r, i), seq: 1, verdict: 'rejected', reason: RejectReason.CasMismatch });
    const raw = encodeMessage({ type: MsgType.Collapse, register: 'kv', version: r + 1, hash: { hi: h.hi, lo: h.lo }, entries });
    wire += raw.length;
    p.handlePayload(r, r, raw);
  }
  const ms = performance.now() - t0;
  const reg = p.register('kv');
  const held = heap() - h0;
  expect(p.register("kv").version).toBe(RECORDS); // keeps the pair alive across the measure
  return { marks: reg.origins.size, wire, ms, version: reg.version, heap: held };
}

describe('review39: causal marks of origins a sequencer invents', () => {
  it("a follower keeps marks only for the pair's own origins, however many origins records name", () => {
    // Honest for scale: the same records, every rejection of the peer's own origin (1).
    const honest = run(() => 1);
    const hostile = run((r, i) => 1000 + r * PER_RECORD + i);
    console.log(
      `honest: ${honest.marks} marks after ${honest.version} records (${honest.wire} octets, ${honest.ms.toFixed(0)} ms, heap +${(honest.heap / 2 ** 20).toFixed(1)} MiB); ` +
        `hostile: ${hostile.marks} marks after ${hostile.version} records (${hostile.wire} octets, ${hostile.ms.toFixed(0)} ms, heap +${(hostile.heap / 2 ** 20).toFixed(1)} MiB)`,
    );
    expect(honest.version).toBe(RECORDS);
    expect(hostile.version).toBe(RECORDS); // every record was valid, applied and logged
    expect(honest.marks).toBeLessThanOrEqual(2);
    // A pair has two origins; at most what an adoption (ReconMeta) may carry, 4,096.
    expect(hostile.marks).toBeLessThanOrEqual(4096);
  });
});

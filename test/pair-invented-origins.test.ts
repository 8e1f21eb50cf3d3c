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
import { DeltaOp, RejectReason } from '../wire/delta.js';
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

function run(
  originOf: (r: number, i: number) => number,
  general = false,
): {
  marks: number;
  wire: number;
  ms: number;
  version: number;
  heap: number;
  refused: number;
} {
  const h0 = heap();
  const p = follower();
  const h = new MapState(SEED).hash;
  let wire = 0;
  const t0 = performance.now();
  for (let r = 0; r < RECORDS; r++) {
    const entries: CollapseEntry[] = [];
    for (let i = 0; i < PER_RECORD; i++)
      entries.push({ origin: originOf(r, i), seq: 1, verdict: 'rejected', reason: RejectReason.CasMismatch });
    // A delete of a key nobody holds: the record is read by the general reader, not in place.
    if (general)
      entries.push({ origin: originOf(r, PER_RECORD), seq: 2, verdict: 'committed', delta: { op: DeltaOp.Del, key: new Uint8Array([9]) } });
    const raw = encodeMessage({ type: MsgType.Collapse, register: 'kv', version: r + 1, hash: { hi: h.hi, lo: h.lo }, entries });
    wire += raw.length;
    p.handlePayload(r, r, raw);
  }
  const ms = performance.now() - t0;
  const reg = p.register('kv');
  const held = heap() - h0;
  expect(p.register('kv').origins.size).toBeGreaterThanOrEqual(0); // keeps the pair alive across the measure
  return { marks: reg.origins.size, wire, ms, version: reg.version, heap: held, refused: p.stats.drops['invalid-record'] ?? 0 };
}

describe('causal marks of origins a sequencer invents', () => {
  it("a follower keeps marks only for the pair's own origins, however many origins records name", () => {
    // Honest for scale: the same records, every rejection of the peer's own origin (1).
    const honest = run(() => 1);
    const hostile = run((r, i) => 1000 + r * PER_RECORD + i);
    // The same with the packed form's origins: a set among them (records of sets and rejections are read in place).
    const mixed = run((r, i) => (i === 0 ? 1 : i === 1 ? 2 : 3));
    expect(mixed.version).toBe(0);
    expect(mixed.refused).toBeGreaterThan(0);
    // The general reader's records: honest ones apply, one naming a third origin (in its last entry) is refused.
    const generalHonest = run((r, i) => 1 + (i % 2), true);
    expect(generalHonest.version).toBe(RECORDS);
    expect(generalHonest.marks).toBe(2);
    const generalHostile = run((r, i) => (i === PER_RECORD ? 5 : 1), true);
    expect(generalHostile.version).toBe(0);
    expect(generalHostile.refused).toBeGreaterThan(0);
    console.log(
      `honest: ${honest.marks} marks after ${honest.version} records (${honest.wire} octets, ${honest.ms.toFixed(0)} ms, heap +${(honest.heap / 2 ** 20).toFixed(1)} MiB); ` +
        `hostile: ${hostile.marks} marks after ${hostile.version} records (${hostile.wire} octets, ${hostile.ms.toFixed(0)} ms, heap +${(hostile.heap / 2 ** 20).toFixed(1)} MiB)`,
    );
    expect(honest.version).toBe(RECORDS);
    expect(honest.marks).toBeLessThanOrEqual(2);
    // A record naming an origin that is neither end of the pair is refused (invalid-record, rev 1.34): nothing of it is kept.
    // (The first is refused; the later ones wait for it, held or dropped beyond the window.)
    expect(hostile.version).toBe(0);
    expect(hostile.refused).toBeGreaterThan(0);
    expect(hostile.marks).toBe(0);
  });
});

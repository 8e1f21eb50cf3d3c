import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DeltaOp, type Delta } from '../wire/delta.js';
import type { MapState } from '../core/register/map.js';
import { ProposeError } from '../core/pair/replica.js';
import { harness } from './helpers.js';

// Property: any interleaving of concurrent writes at both ends, under any loss/dup/reorder,
// log size and cut, converges to one (version, hash) per register with every candidate
// decided exactly once at its proposer. (The simulator adds the replay-against-history check.)
const key = fc.integer({ min: 0, max: 5 }).map((i) => new TextEncoder().encode(`k${i}`));
const value = fc.uint8Array({ minLength: 0, maxLength: 24 });
const op = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), key, value }),
  fc.record({ kind: fc.constant('del' as const), key }),
  fc.record({ kind: fc.constant('cas' as const), key, value, stale: fc.boolean() }),
  fc.record({ kind: fc.constant('append' as const), data: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
);
const step = fc.record({
  at: fc.integer({ min: 0, max: 15_000 }),
  side: fc.constantFrom('A', 'B'),
  op,
});
const scenario = fc.record({
  seed: fc.integer({ min: 1, max: 1_000_000 }),
  loss: fc.double({ min: 0, max: 0.3, noNaN: true }),
  dup: fc.double({ min: 0, max: 0.1, noNaN: true }),
  reorder: fc.double({ min: 0, max: 0.3, noNaN: true }),
  steps: fc.array(step, { minLength: 1, maxLength: 40 }),
  cut: fc.option(fc.record({ from: fc.integer({ min: 0, max: 12_000 }), len: fc.integer({ min: 100, max: 9000 }) })),
  logRecords: fc.constantFrom(4, 64, 4096),
});

describe('convergence property', () => {
  it('random concurrent workloads converge with no lost or double-decided candidate', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const registers = [
          { name: 'kv', kind: 'map' as const, log: { maxRecords: s.logRecords, maxBytes: 1 << 20 } },
          { name: 'st', kind: 'stream' as const, log: { maxRecords: s.logRecords, maxBytes: 1 << 20 } },
        ];
        const h = harness(registers, { loss: s.loss, dup: s.dup, reorder: s.reorder }, s.seed);
        const proposed = new Set<string>();
        const decided = new Map<string, string>();
        for (const st of s.steps) {
          h.world.at(st.at, () => {
            const ep = st.side === 'A' ? h.a : h.b;
            let reg = 'kv';
            let d: Delta;
            const o = st.op;
            if (o.kind === 'set') d = { op: DeltaOp.Set, key: o.key, value: o.value };
            else if (o.kind === 'del') d = { op: DeltaOp.Del, key: o.key };
            else if (o.kind === 'cas') {
              const cur = (ep.pair.register('kv').state as MapState).get(o.key)?.version ?? 0;
              d = { op: DeltaOp.Cas, key: o.key, expect: o.stale ? cur + 1 : cur, value: o.value };
            } else {
              reg = 'st';
              d = { op: DeltaOp.Append, offset: ep.pair.register('st').nextAppendOffset, data: o.data };
            }
            try {
              const id = ep.pair.propose(h.world.now, reg, d);
              proposed.add(`${reg}/${id.origin}:${id.seq}`);
            } catch (e) {
              if (!(e instanceof ProposeError)) throw e;
            }
          });
        }
        if (s.cut) {
          h.world.at(s.cut.from, () => h.cut());
          h.world.at(s.cut.from + s.cut.len, () => h.heal());
        }
        h.world.onEvent = (_ep, ev) => {
          if (ev.type !== 'outcome') return;
          const id = `${ev.register}/${ev.origin}:${ev.seq}`;
          expect(decided.has(id), `${id} decided twice`).toBe(false);
          decided.set(id, ev.verdict);
        };
        h.world.run(16_000);
        expect(h.settle(300_000)).toBe(true);
        for (const id of proposed) expect(decided.has(id), `${id} never decided`).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});

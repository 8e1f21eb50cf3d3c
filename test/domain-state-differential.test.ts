import { describe, expect, it } from 'vitest';
import { DomainState, encodeCandidate, type CandidateOp, type DomainRegisterSpec, type GroupSpec } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import type { LogEntry } from '../core/qn/raft.js';
import type { MapState } from '../core/register/map.js';
import { Rng } from '../testing/sim/rng.js';

const specs: DomainRegisterSpec[] = [
  { name: 'a', kind: 'map', maxKeys: 6, maxBytes: 120, maxValueBytes: 30 },
  { name: 'b', kind: 'map', maxKeys: 4, maxBytes: 400 },
  { name: 's', kind: 'stream', maxBytes: 60 },
];
const groups: GroupSpec[] = [
  { name: 'g1', registers: ['a', 'b'] },
  { name: 'g2', registers: ['s'] },
  { name: 'g3', registers: ['a', 's'] },
];

function state(st: DomainState) {
  return {
    snap: Buffer.from(st.snapshot()).toString('hex'),
    d: st.digest(),
    g: [...st.groups].map(([n, g]) => `${n}:${g.version}`),
  };
}

/**
 * A domain's state machine, three ways (PROTOCOL.md §15.2, §15.4): a member that applies every
 * entry, one restored from a snapshot at random points, and one patched by a difference from a
 * random earlier base must hold the same snapshot bytes, digest and group versions after every
 * entry, whatever candidates a member or a leader commits (several ops across grouped
 * registers at their quotas, failing cas and appends, unknown registers, colliding and
 * retried seqs): a command applying differently on two members would be divergence.
 */
describe('domain state machine, applied, restored and patched', () => {
  it('60 seeds of 400 random entries: the three agree after every entry', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const g = new Rng(seed);
      const r = (): number => g.float();
      const int = (n: number): number => g.int(0, n - 1);
      const keys = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'kk8'].map((k) => new TextEncoder().encode(k));
      const live = new DomainState(seed, specs, groups);
      let restored = new DomainState(seed, specs, groups);
      const log: LogEntry[] = [];
      const cands: Uint8Array[] = [];
      for (let i = 1; i <= 400; i++) {
        let cmd: Uint8Array;
        if (cands.length > 0 && r() < 0.1) cmd = cands[int(cands.length)];
        else {
          const n = 1 + int(5);
          const ops: CandidateOp[] = [];
          let soff = live.registers.get('s')!.state.size();
          for (let j = 0; j < n; j++) {
            const reg = ['a', 'b', 's', 'x'][int(r() < 0.05 ? 4 : 3)];
            if (reg === 's') {
              const data = new Uint8Array(int(12));
              const off = r() < 0.8 ? soff : int(soff + 2);
              ops.push({ register: reg, delta: { op: DeltaOp.Append, offset: off, data } });
              soff = off + data.length;
            } else {
              const key = keys[int(keys.length)];
              const value = new Uint8Array(int(r() < 0.1 ? 40 : 12)).fill(int(256));
              const k = int(3);
              if (k === 0) ops.push({ register: reg, delta: { op: DeltaOp.Set, key, value } });
              else if (k === 1) ops.push({ register: reg, delta: { op: DeltaOp.Del, key } });
              else {
                const reg0 = live.registers.get(reg);
                const cur = reg0 && reg0.kind === 'map' ? (reg0.state as MapState).versionOf(key) : 0;
                ops.push({ register: reg, delta: { op: DeltaOp.Cas, key, expect: r() < 0.7 ? cur : int(5), value } });
              }
            }
          }
          cmd = encodeCandidate({ origin: 1 + int(3), seq: 1 + int(2000), ops });
          cands.push(cmd);
        }
        const e: LogEntry = { term: 1, index: i, cmd };
        log.push(e);
        const b = live.index;
        live.apply(e);
        restored.apply(e);
        if (r() < 0.05) {
          const fresh = new DomainState(seed, specs, groups);
          expect(fresh.restore(restored.snapshot(), restored.index)).toBe(true);
          restored = fresh;
        }
        if (r() < 0.05 && b > 0) {
          const base = Math.max(0, i - 1 - int(20));
          // a member at `base`: rebuild
          const m = new DomainState(seed, specs, groups);
          for (const x of log.slice(0, base)) m.apply(x);
          const d = live.diff(base, log.slice(base));
          expect(d).toBeDefined();
          const p = m.patch(d!, base, i);
          expect(p, `seed ${seed} i ${i}`).toBeDefined();
          const pm = new DomainState(seed, specs, groups);
          expect(pm.restore(p!, i)).toBe(true);
          expect(state(pm), `seed ${seed} patch at ${i}`).toEqual(state(live));
        }
        expect(state(restored), `seed ${seed} at ${i}`).toEqual(state(live));
      }
    }
  });
});

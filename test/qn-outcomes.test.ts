import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { DomainState, MAX_ORIGINS, MAX_OUTCOMES, OUTCOME_WINDOW, encodeCandidate } from '../core/qn/state.js';
import { MinHeap } from '../core/util/min-heap.js';
import { Rng } from '../testing/sim/rng.js';

/**
 * The outcome table (§15.2 step 4) against a model written plainly: per origin the outcomes of
 * its seqs, the least seq evicted past OUTCOME_WINDOW (found by a scan, always), the least
 * recently deciding origins evicted past MAX_ORIGINS or MAX_OUTCOMES. DomainState takes the
 * least seq from a heap; both must hold the same outcomes (whether each entry was a duplicate
 * after every entry, the whole table every 997 entries and at the end; seqs in order,
 * out of order, retries inside and far below the window, the latter forgotten: nothing
 * recorded once the window is full), across a snapshot restore too.
 */
class Model {
  readonly origins = new Map<number, Map<number, number>>();
  total = 0;

  record(origin: number, seq: number, outcome: number): void {
    const seen = this.origins.get(origin) ?? new Map<number, number>();
    this.origins.delete(origin);
    this.origins.set(origin, seen);
    seen.set(seq, outcome);
    this.total++;
    if (seen.size > OUTCOME_WINDOW) {
      seen.delete(Math.min(...seen.keys()));
      this.total--;
    }
    while (this.origins.size > MAX_ORIGINS || this.total > MAX_OUTCOMES) {
      const [least, m] = this.origins.entries().next().value!;
      this.origins.delete(least);
      this.total -= m.size;
    }
  }
}

const enc = new TextEncoder();

describe('QN outcome table', () => {
  it('holds what a plain model holds, seqs ascending or not, through a restore', () => {
    const rng = new Rng(16);
    let st = new DomainState(3, [{ name: 'kv', kind: 'map' }], []);
    const model = new Model();
    const next = new Map<number, number>();
    let index = 0;
    let checked = 0;
    const check = (): void => {
      expect(st.originCount).toBe(model.origins.size);
      expect(st.outcomeCount).toBe(model.total);
      for (const [origin, seen] of model.origins)
        for (const [seq, outcome] of seen) {
          expect(st.outcomeOf(origin, seq)).toBe(outcome);
          checked++;
        }
    };
    for (let i = 0; i < 30_000; i++) {
      // Origin 1 proposes in order, as one member does; 2 mostly in order with retries of older
      // seqs; a few others now and then.
      // Origin 7 in order too, but now and then retrying a candidate decided far below its window.
      const r = rng.float();
      const origin = r < 0.35 ? 1 : r < 0.7 ? 7 : r < 0.92 ? 2 : rng.int(3, 6);
      let seq = (next.get(origin) ?? 0) + 1 + (rng.float() < 0.1 ? rng.int(1, 3) : 0);
      next.set(origin, seq);
      if (origin === 2 && rng.float() < 0.02) seq = Math.max(1, seq - rng.int(1, 5_000));
      if (origin === 7 && seq > 2 * OUTCOME_WINDOW && rng.float() < 0.05) seq -= rng.int(OUTCOME_WINDOW + 2_000, 2 * OUTCOME_WINDOW);
      // One in five a cas that fails: a rejection is an outcome too.
      const key = enc.encode(`k${i % 50}`);
      const delta =
        rng.float() < 0.2 ? { op: DeltaOp.Cas as const, key, expect: 999_999, value: key } : { op: DeltaOp.Set as const, key, value: key };
      let decided: { outcome: number; duplicate: boolean } | undefined;
      st.onCollapse = (c) => (decided = c);
      st.apply({ term: 1, index: ++index, cmd: encodeCandidate({ origin, seq, ops: [{ register: 'kv', delta }] }) });
      // A seq the table still holds is a duplicate (nothing recorded); so is one below a full
      // window's least seq (forgotten: applied again, a replay undid its origin's later writes).
      const seen = model.origins.get(origin);
      const forgotten = !!seen && seen.size >= OUTCOME_WINDOW && seq < Math.min(...seen.keys());
      expect(decided!.duplicate).toBe((seen?.has(seq) ?? false) || forgotten);
      expect(!!(decided as { forgotten?: boolean }).forgotten).toBe(forgotten);
      if (!decided!.duplicate) model.record(origin, seq, decided!.outcome);
      if (i % 997 === 0) check();
      if (i === 15_000) {
        // A member that restores a snapshot learns each origin's seqs from its table.
        const restored = new DomainState(3, [{ name: 'kv', kind: 'map' }], []);
        expect(restored.restore(st.snapshot(), st.index)).toBe(true);
        st = restored;
        check();
      }
    }
    check();
    // The seeds reach what is checked: full windows evicted, for the ordered origins and the other.
    for (const o of [1, 2, 7]) expect(model.origins.get(o)!.size).toBe(OUTCOME_WINDOW);
    expect(checked).toBeGreaterThan(100_000);
  });

  it('MinHeap gives the least first, built from values or pushed, as sorting does', () => {
    const rng = new Rng(17);
    for (let round = 0; round < 50; round++) {
      const init = Array.from({ length: rng.int(0, 300) }, () => rng.int(0, 1_000));
      const heap = new MinHeap(init);
      const model = [...init];
      for (let i = 0; i < 2_000; i++) {
        if (rng.float() < 0.55) {
          const v = rng.int(0, 1_000);
          heap.push(v);
          model.push(v);
        } else {
          model.sort((a, b) => a - b);
          expect(heap.peek()).toBe(model[0]);
          expect(heap.pop()).toBe(model.shift());
        }
        expect(heap.size).toBe(model.length);
      }
    }
  });
});

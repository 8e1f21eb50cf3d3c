import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DeadlineHeap } from '../core/util/deadline-heap.js';

// Property: after any sequence of inserts, re-keys, removals and pops, the heap agrees with a
// plain model (a map from item to deadline): same size, same earliest deadline, same key per
// item, and popDue(now) yields exactly the model's items due at `now`, earliest first.
const item = fc.integer({ min: 0, max: 30 });
const at = fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constant(undefined));
const op = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), item, at }),
  fc.record({ kind: fc.constant('delete' as const), item }),
  fc.record({ kind: fc.constant('pop' as const), now: fc.integer({ min: -1, max: 1000 }) }),
);

describe('DeadlineHeap', () => {
  it('agrees with a sorted-array model under any sequence of operations', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const heap = new DeadlineHeap<number>();
        const model = new Map<number, number>();
        const sorted = (): [number, number][] => [...model].sort((a, b) => a[1] - b[1]);
        for (const o of ops) {
          if (o.kind === 'set') {
            heap.set(o.item, o.at);
            if (o.at === undefined) model.delete(o.item);
            else model.set(o.item, o.at);
          } else if (o.kind === 'delete') {
            heap.delete(o.item);
            model.delete(o.item);
          } else {
            const due = sorted().filter(([, t]) => t <= o.now);
            const got: number[] = [];
            for (let x = heap.popDue(o.now); x !== undefined; x = heap.popDue(o.now)) got.push(x);
            // Popped earliest first; ties in any order: compare the deadlines, then the sets.
            expect(got.map((x) => model.get(x))).toEqual(due.map(([, t]) => t));
            expect(new Set(got)).toEqual(new Set(due.map(([x]) => x)));
            for (const x of got) model.delete(x);
          }
          expect(heap.size).toBe(model.size);
          expect(heap.peek()).toBe(sorted()[0]?.[1]);
          for (let x = 0; x <= 30; x++) {
            expect(heap.has(x)).toBe(model.has(x));
            expect(heap.at(x)).toBe(model.get(x));
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('pops nothing before the earliest deadline and everything due at it', () => {
    const heap = new DeadlineHeap<string>();
    heap.set('a', 30);
    heap.set('b', 10);
    heap.set('c', 20);
    heap.set('b', 40); // re-keyed later: c is now the earliest
    expect(heap.peek()).toBe(20);
    expect(heap.popDue(19)).toBeUndefined();
    expect(heap.popDue(30)).toBe('c');
    expect(heap.popDue(30)).toBe('a');
    expect(heap.popDue(30)).toBeUndefined();
    expect(heap.peek()).toBe(40);
  });

  it('refuses a NaN deadline (it would corrupt the order), naming the field', () => {
    expect(() => new DeadlineHeap<string>().set('a', NaN)).toThrow(/deadline is NaN/);
  });
});

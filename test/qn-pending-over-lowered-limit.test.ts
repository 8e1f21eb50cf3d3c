/**
 * A candidate pending across a restart under a lowered maxValueBytes (declared the same on every
 * member, as OPERATIONS.md asks) is larger than any member takes now: the leader drops its pieces
 * (`fragment-quota`) or its fwd (`oversized-candidate`), Raft's checkCommand refuses it. It was
 * resent for ever and `doutcome` answered `pending` for ever. It is now given up on at the restart,
 * reported `unknown` (appended before the restart, it may still commit), never sent again.
 */
import { describe, expect, it } from 'vitest';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('a candidate pending across a restart that lowered maxValueBytes (core/qn/node.ts)', () => {
  it('is reported unknown and never resent, not pending for ever; the member goes on committing', () => {
    let big = true;
    const t = new Trio(4, () => ({ registers: [{ name: 'kv', kind: 'map' as const, maxValueBytes: big ? 1 << 20 : 1024 }] }));
    t.run(1000);
    const A = t.leader()!;
    const C = [1, 2, 3].find((x) => x !== A.id)!;
    t.isolate(C);
    const r = t.nodes
      .get(C)!
      .propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: new Uint8Array(900_000) } }]);
    expect(r).toEqual({ seq: 1 });
    t.run(50);
    for (const id of [1, 2, 3]) t.stop(id);
    big = false;
    for (const id of [1, 2, 3]) t.start(id);
    t.isolate(C, false);
    expect(t.await(C, 1, 3000)).toBe('unknown'); // was pending after 3 s, and for ever
    const n = t.nodes.get(C)!;
    expect(n.pendingCount).toBe(0);
    expect(n.outcomeOf(1)?.verdict).toBe('unknown');
    // Nothing of it is sent any more; the member still commits.
    const drops = (): number =>
      [...t.nodes.values()].reduce((a, x) => a + (x.stats.drops['fragment-quota'] ?? 0) + (x.stats.drops['oversized-candidate'] ?? 0), 0);
    const before = drops();
    t.run(2000);
    expect(drops()).toBe(before);
    expect(t.put('small', 'v', C)).toBe('committed');
    expect(n.outcomeOf(2)?.verdict).toBe('committed');
  });
});

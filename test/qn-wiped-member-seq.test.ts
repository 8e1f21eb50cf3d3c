/**
 * A bootstrap member that restarts with nothing stored (its directory wiped) would number its
 * candidates from 1 again while the domain's table holds its earlier ones (§15.2): a candidate
 * it proposed before catching up was taken for a duplicate of its old seq and reported
 * committed, with the old outcome, though never applied. A member that started empty now
 * numbers nothing until it has caught up (`catching-up`, nothing kept); its writer holds the
 * write and proposes it then, under a seq above its old ones.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Trio } from './domain-trio.js';
import { DeltaOp } from '../wire/delta.js';
import type { MapState } from '../core/register/map.js';
import { OUTCOME_WINDOW } from '../core/qn/state.js';

/** Numbered after a wipe: above `decided` by a whole number of OUTCOME_WINDOWs (drawn at random, node.ts raiseAboveOwnTail). */
const jumped = (seq: number, decided: number): boolean => seq > decided + OUTCOME_WINDOW && (seq - decided - 1) % OUTCOME_WINDOW === 0;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string) => [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }];

describe('a wiped bootstrap member proposing (core/qn/node.ts)', () => {
  it('a write it accepts is applied, never reported committed for an older candidate of the same seq', () => {
    const t = new Trio(4);
    t.run(1000);
    const A = t.leader()!;
    const C = [1, 2, 3].find((x) => x !== A.id)!;
    for (let i = 0; i < 3; i++) expect(t.put(`k${i}`, 'v', C)).toBe('committed');
    t.stop(C);
    t.disks.set(C, new MemDomainStore());
    t.events.set(C, []);
    const C2 = t.start(C);
    const has = (id: number, k: string): boolean =>
      (t.nodes.get(id)!.state.registers.get('kv')!.state as MapState).get(enc(k)) !== undefined;
    // Before it has caught up: nothing numbered, nothing kept (the writer holds the write).
    const early = C2.propose(t.now, set('z', 'new'));
    expect(early).toMatchObject({ code: 'catching-up', refused: expect.stringMatching(/nothing was proposed/) });
    expect(C2.pendingCount).toBe(0);
    expect(C2.catchingUp).toBe(true);
    // Held as dpropose holds it: proposed once caught up, under a seq above its old 1-3.
    let r = C2.propose(t.now, set('z', 'new'));
    for (let i = 0; 'refused' in r && i < 400; i++) {
      expect(r).toMatchObject({ code: 'catching-up' });
      t.run(5);
      r = C2.propose(t.now, set('z', 'new'));
    }
    expect(C2.catchingUp).toBe(false);
    // Above its old 1-3 and as many as its earlier life may have had undecided (qn-wiped-member-outcome).
    expect('seq' in r && jumped(r.seq, 3)).toBe(true);
    expect(t.await(C, (r as { seq: number }).seq, 2000)).toBe('committed');
    expect(has(A.id, 'z')).toBe(true);
    t.run(500);
    expect(C2.raft.applied).toBe(A.raft.applied);
    expect(t.put('w', 'new', C)).toBe('committed');
    expect(has(A.id, 'w')).toBe(true);
  });

  it("a brand-new domain's first write is held only until the first leader's term starts, then commits as seq 1", () => {
    const t = new Trio(5);
    const n = t.nodes.get(2)!;
    expect(n.propose(t.now, set('a', '1'))).toMatchObject({ code: 'catching-up' });
    let r = n.propose(t.now, set('a', '1'));
    for (let i = 0; 'refused' in r && i < 400; i++) {
      t.run(5);
      r = n.propose(t.now, set('a', '1'));
    }
    expect(r).toEqual({ seq: 1 });
    expect(t.await(2, 1, 2000)).toBe('committed');
  });
});

/**
 * Review of the cross-register txns: a part record the follower needs must find room among held
 * records even when later (larger) records fill the reorder bytes; else the pair deadlocks.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp, type Delta } from '../wire/delta.js';
import type { CrossDelta } from '../wire/cross.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
];
const cross = (...parts: [string, Delta][]): CrossDelta => ({
  op: DeltaOp.Cross,
  parts: parts.map(([register, delta]) => ({ register, at: 0, delta })),
});
const LIMIT = 4 * 1024 * 1024; // reorderByteLimit(1 MiB)

describe('cross-register txn review: reorder bytes and a two-part group', () => {
  it('honest sequencer, records delivered out of order: the follower converges', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    h.cut();
    const a = h.a.pair;
    const t = h.world.now;
    const b0 = a.register('kv2').version;
    const k0 = a.register('kv').version;
    a.propose(t, 'kv', cross(['kv', set('a1', '1')], ['kv2', set('x1', '1')]));
    a.propose(t, 'kv', cross(['kv', set('a2', '2')], ['kv2', set('x2', '2')]));
    a.collapse(t);
    // Each cross starts a collapse of its own: two anchor records, one part each in kv2.
    expect(a.register('kv').version).toBe(k0 + 2);
    expect(a.register('kv2').version).toBe(b0 + 2);
    const rec = (r: string, v: number) => a.register(r).log.get(v)!.encoded;
    const p1 = rec('kv2', b0 + 1).length;
    const p2 = rec('kv2', b0 + 2).length;
    // Three large writes, then one sized so that p1 + the four leave less room than p2.
    for (let i = 0; i < 4; i++) a.propose(t, 'kv2', set(`big${i}`, 'y'.repeat(1_000_000)));
    a.collapse(t);
    let used = p1;
    for (let i = 0; i < 4; i++) used += rec('kv2', b0 + 3 + i).length;
    const v4 = b0 + 7;
    const probe = (n: number) =>
      encodeMessage({
        type: MsgType.Collapse,
        register: 'kv2',
        version: v4,
        hash: { hi: 0, lo: 0 },
        entries: [{ origin: 1, seq: 5, verdict: 'committed', delta: set('big4', 'y'.repeat(n)) }],
      }).length;
    let n = LIMIT - used - p2 - 40;
    while (probe(n) + used + p2 <= LIMIT) n++;
    while (probe(n) + used > LIMIT) n--;
    a.propose(t, 'kv2', set('big4', 'y'.repeat(n)));
    a.collapse(t);
    let pn = 800_000;
    const feed = (r: string, v: number) => h.b.pair.handlePayload(h.world.now, pn++, rec(r, v));
    feed('kv2', b0 + 1);
    for (let v = b0 + 3; v <= v4; v++) feed('kv2', v);
    feed('kv', k0 + 1);
    feed('kv', k0 + 2);
    feed('kv2', b0 + 2); // arrives last (reordered): no room
    h.heal();
    const ok = h.settle(600_000);
    expect(ok).toBe(true);
  });
  it('control: the same records, the second part before the large ones', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    h.cut();
    const a = h.a.pair;
    const t = h.world.now;
    const b0 = a.register('kv2').version;
    const k0 = a.register('kv').version;
    a.propose(t, 'kv', cross(['kv', set('a1', '1')], ['kv2', set('x1', '1')]));
    a.propose(t, 'kv', cross(['kv', set('a2', '2')], ['kv2', set('x2', '2')]));
    a.collapse(t);
    // Each cross starts a collapse of its own: two anchor records, one part each in kv2.
    expect(a.register('kv').version).toBe(k0 + 2);
    expect(a.register('kv2').version).toBe(b0 + 2);
    const rec = (r: string, v: number) => a.register(r).log.get(v)!.encoded;
    const p1 = rec('kv2', b0 + 1).length;
    const p2 = rec('kv2', b0 + 2).length;
    // Three large writes, then one sized so that p1 + the four leave less room than p2.
    for (let i = 0; i < 4; i++) a.propose(t, 'kv2', set(`big${i}`, 'y'.repeat(1_000_000)));
    a.collapse(t);
    let used = p1;
    for (let i = 0; i < 4; i++) used += rec('kv2', b0 + 3 + i).length;
    const v4 = b0 + 7;
    const probe = (n: number) =>
      encodeMessage({
        type: MsgType.Collapse,
        register: 'kv2',
        version: v4,
        hash: { hi: 0, lo: 0 },
        entries: [{ origin: 1, seq: 5, verdict: 'committed', delta: set('big4', 'y'.repeat(n)) }],
      }).length;
    let n = LIMIT - used - p2 - 40;
    while (probe(n) + used + p2 <= LIMIT) n++;
    while (probe(n) + used > LIMIT) n--;
    a.propose(t, 'kv2', set('big4', 'y'.repeat(n)));
    a.collapse(t);
    let pn = 800_000;
    const feed = (r: string, v: number) => h.b.pair.handlePayload(h.world.now, pn++, rec(r, v));
    feed('kv2', b0 + 1);
    feed('kv2', b0 + 2);
    for (let v = b0 + 3; v <= v4; v++) feed('kv2', v);
    feed('kv', k0 + 1);
    feed('kv', k0 + 2);
    h.heal();
    const ok = h.settle(600_000);
    expect(ok).toBe(true);
  });
});

/**
 * Review of the cross-register txns: a part record the follower needs must find room among held
 * records even when later (larger) records fill the reorder bytes; else the pair deadlocks.
 */
import { describe, expect, it } from 'vitest';
import { MsgType, encodeMessage } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { cross, harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
];
const LIMIT = 4 * 1024 * 1024; // reorderByteLimit(1 MiB)

/**
 * Two cross txns (kv anchors, one part each in kv2), then kv2 records filling the reorder bytes
 * so that the first part and those leave less room than the second part; the records reach the
 * follower in `order` (the second part last: reordered). Returns whether the pair converges.
 */
function deliver(secondPartLast: boolean): boolean {
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
  const rec = (r: string, v: number): Uint8Array => a.register(r).log.get(v)!.encoded;
  const p1 = rec('kv2', b0 + 1).length;
  const p2 = rec('kv2', b0 + 2).length;
  // Four large writes, then one sized so that p1 + the five leave less room than p2.
  for (let i = 0; i < 4; i++) a.propose(t, 'kv2', set(`big${i}`, 'y'.repeat(1_000_000)));
  a.collapse(t);
  let used = p1;
  for (let i = 0; i < 4; i++) used += rec('kv2', b0 + 3 + i).length;
  const v4 = b0 + 7;
  const probe = (n: number): number =>
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
  const feed = (r: string, v: number): boolean => h.b.pair.handlePayload(h.world.now, pn++, rec(r, v));
  feed('kv2', b0 + 1);
  if (!secondPartLast) feed('kv2', b0 + 2);
  for (let v = b0 + 3; v <= v4; v++) feed('kv2', v);
  feed('kv', k0 + 1);
  feed('kv', k0 + 2);
  if (secondPartLast) feed('kv2', b0 + 2); // no room left: held records above it make room
  h.heal();
  return h.settle(600_000);
}

describe('cross-register txn: reorder bytes and a two-part group', () => {
  it('honest sequencer, records delivered out of order: the follower converges', () => {
    expect(deliver(true)).toBe(true);
  });
  it('control: the same records, the second part before the large ones', () => {
    expect(deliver(false)).toBe(true);
  });
});

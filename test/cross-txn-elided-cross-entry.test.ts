/** Review of the cross-register txns: a sequencer that elides the follower's own cross entry makes it apply part 0 alone and log an unreplayable record. */
import { describe, expect, it } from 'vitest';
import { MsgType, decodeMessages, encodeMessage } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { MapState } from '../core/register/map.js';
import { cross, enc, harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
];

describe('cross-register txn: elided cross entry', () => {
  it('is refused (elided-unknown), never applied without its parts', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    h.cut();
    const id = h.b.pair.propose(h.world.now, 'kv', cross(['kv', set('a', '1')], ['kv2', set('b', '2')]));
    const v = h.b.pair.register('kv').version;
    const st = new MapState(1234);
    st.apply(set('a', '1'), v + 1);
    const m = {
      type: MsgType.Collapse as const,
      register: 'kv',
      version: v + 1,
      hash: { hi: st.hash.hi, lo: st.hash.lo },
      entries: [
        { origin: id.origin, seq: id.seq, verdict: 'committed' as const, delta: cross(['kv', set('a', '1')], ['kv2', set('b', '2')]) },
      ],
    };
    const writes: Uint8Array[] = [];
    expect(() => h.b.pair.handlePayload(h.world.now, 700_000, encodeMessage({ ...m, elided: [0] }))).not.toThrow();
    const kv = h.b.pair.register('kv').state as MapState;
    const kv2 = h.b.pair.register('kv2').state as MapState;
    // What was logged replays?
    const rec = h.b.pair.register('kv').log?.get?.(v + 1) as { encoded: Uint8Array } | undefined;
    // Whatever was logged replays: a record with an own cross delta put back (at 0) would not decode.
    if (rec) expect(() => decodeMessages(rec.encoded)).not.toThrow();
    void writes;
    expect((kv.get(enc('a')) !== undefined) === (kv2.get(enc('b')) !== undefined)).toBe(true);
  });
});

/**
 * Hostile review of "a diff is served from any base within the costed gap" (sequencer diffFrom,
 * PROTOCOL §8.2.1): a follower that asks from many later bases, one after another, must not make
 * the sequencer build more than the pin rate allows, nor a diff from below the costed base.
 */
import { describe, expect, it } from 'vitest';
import type { RegisterSpec } from '../core/pair/types.js';
import type { MapState } from '../core/register/map.js';
import { PIN_BURST, PIN_INTERVAL_MS } from '../core/reconcile/reentangle.js';
import { MsgType, REQ_WANT_DIFF, REQ_WANT_META, type ReconReqMsg } from '../wire/messages.js';
import { enc, harness, proposeNow, set } from './helpers.js';

const regs = (): RegisterSpec[] => [{ name: 'kv', kind: 'map', log: { maxRecords: 100_000, maxBytes: 1 << 26 } }];

describe('diff bases above the costed one', () => {
  it('1,000 requests from varying later bases: builds bounded by the pin rate, none below the costed base or past the version', () => {
    const h = harness(regs(), {}, 5);
    for (const ep of [h.a, h.b])
      ep.pair.register('kv').restore(1, (st) => {
        for (let i = 0; i < 2000; i++) (st as MapState).put(enc(`key-${i}`), enc(`initial-${i}`), 1);
      });
    expect(h.settle()).toBe(true);
    h.cut();
    h.world.run(h.world.now + 6_000);
    for (let i = 0; i < 800; i++) proposeNow(h, h.a, 'kv', set(`key-${i % 40}`, `hot-${i}`));
    const seq = h.a.pair.register('kv').sequencer!;
    const costed = (): number | undefined => (seq as unknown as { diffSince: number | undefined }).diffSince;
    h.heal();
    expect(h.world.run(h.world.now + 30_000, () => costed() !== undefined)).toBe(true);
    h.cut(); // the honest follower is out of the way: only the hostile requests below reach the sequencer
    const base = costed()!;
    const version = h.a.pair.register('kv').version;
    expect(version - base).toBeGreaterThan(100);
    const built0 = seq.responder.diffsBuilt;
    const t0 = h.world.now;
    const sinces: number[] = [];
    const respond = seq.respond.bind(seq);
    seq.respond = (now, m) => {
      if (m.type === MsgType.ReconDiff) sinces.push(m.since);
      respond(now, m);
    };
    for (let i = 0; i < 1000; i++) {
      const since = [base - 1, base, base + 1 + (i % (version - base)), version, version + 1][i % 5];
      const m: ReconReqMsg = {
        type: MsgType.ReconReq,
        register: 'kv',
        targetVersion: 0,
        flags: REQ_WANT_META | REQ_WANT_DIFF,
        prefixes: [],
        diff: { since, fromPart: 0 },
      };
      seq.responder.onReconReq(h.world.now, m);
      if (i % 10 === 9) h.world.run(h.world.now + 20); // 2 s in all: the responder's sliced work runs
    }
    const elapsed = h.world.now - t0;
    const built = seq.responder.diffsBuilt - built0;
    expect(sinces.length).toBeGreaterThan(0); // served: the requests did reach the diff path
    expect(built).toBeLessThanOrEqual(PIN_BURST + Math.ceil(elapsed / PIN_INTERVAL_MS) + 1);
    for (const s of sinces) {
      expect(s).toBeGreaterThanOrEqual(base);
      expect(s).toBeLessThanOrEqual(version);
    }
  });
});

/**
 * The sequencer counts, per record, the times it sent it without the follower's own delta
 * (§3.6.4, `elidedSent`), and every follower Status walks that whole map to forget what the
 * follower acknowledged. Honestly it holds the send window (256). A follower that wrote many
 * values larger than a payload (whose records are shortened whenever sent) and then reports
 * versions going down, 257 at a time, with a wrong hash (the pair re-entangles; nothing is
 * compacted), has every record of the log sent shortened once, and counted: then each Status
 * walks them all. Measured: see the console line.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { DeltaOp } from '../wire/delta.js';
import { MsgType, encodeMessage, type Message } from '../wire/messages.js';
import { concatBytes, enc, peerManifest } from './helpers.js';

const WRITES = 6000;

describe("the sequencer's count of shortened sends", () => {
  it('holds at most twice the send window, whatever versions a follower reports', () => {
    const regs = [{ name: 'kv', kind: 'map' as const }];
    const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: regs }, 0);
    let pn = 1;
    let now = 1;
    const feed = (payload: Uint8Array) => {
      a.handlePayload(now, pn++, payload);
      if ((a.pollTimeout() ?? Infinity) <= now) a.handleTimeout(now);
      while (a.pollTransmit(now));
    };
    a.handlePayload(now, pn++, peerManifest(regs));
    const status = (version: number): Message => ({
      type: MsgType.Status,
      register: 'kv',
      version,
      hash: { hi: 1, lo: 1 }, // not the sequencer's: nothing is compacted
      logBase: 0,
      resolvedSeq: 0,
      held: [],
    });
    feed(encodeMessage({ ...status(0), hash: { hi: 0, lo: 0 } }));
    const value = new Uint8Array(3000).fill(7); // a short set above a payload
    for (let seq = 1; seq <= WRITES; seq++) {
      feed(
        encodeMessage({
          type: MsgType.Propose,
          register: 'kv',
          base: seq,
          candidates: [{ origin: 2, seq, delta: { op: DeltaOp.Set, key: enc(`k${seq}`), value } }],
        }),
      );
      a.collapse(now);
      now++;
    }
    let last = 0;
    for (let top = WRITES - 256; top >= 0; top -= 257) {
      last = top;
      feed(encodeMessage(status(top)));
      now++;
    }
    const held = (a.register('kv').sequencer as unknown as { elidedSent: Map<number, unknown> }).elidedSent.size;
    const payload = concatBytes(Array.from({ length: 60 }, () => encodeMessage(status(last))));
    const t = performance.now();
    for (let i = 0; i < 200; i++) feed(payload);
    const ms = (performance.now() - t) / 200;
    console.log(`${held} sends counted; a datagram of 60 Statuses took ${ms.toFixed(3)} ms`);
    // Before the fix: 5,888 counted (every record of the log) and 0.77 ms a datagram; after, 512 and 0.24 ms.
    expect(held).toBeLessThanOrEqual(512);
  }, 30_000);
});

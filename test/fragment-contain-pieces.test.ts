/**
 * Containment of fragment reassembly (docs/PROTOCOL.md §3.7, rev 1.33). A hostile review
 * showed that a partial message was charged `total` bytes but also kept a byte per piece and one
 * {from,to} object per isolated run of pieces, kept sorted by Array.splice: with 1-byte pieces
 * (total = count = 65,542) and every other one sent, 64 partial messages charged 4.00 MiB of a
 * 5 MiB quota grew the heap by 96.9 MiB, and pieces sent highest-first cost a splice each
 * (quadratic). Now a layout's pieces are at least MIN_FRAGMENT_PIECE (512) bytes, a partial
 * message holds at most MAX_HELD_RANGES ranges (a piece opening one more is dropped), and what
 * it holds besides its bytes is charged to the quota.
 */
import { describe, expect, it } from 'vitest';
import v8 from 'node:v8';
import vm from 'node:vm';
import { FragmentSender, MAX_HELD_RANGES, PARTIAL_BOOKKEEPING, Reassembler } from '../core/pair/fragment.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { MsgType, MAX_FRAGMENTS, decodeMessages, encodeMessage, fragmentLen, type FragmentMsg } from '../wire/messages.js';
import { concatBytes } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const mem = (): number => {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const MiB = 1 << 20;

const REGS = [{ name: 'kv', kind: 'map' as const }];
const pair = () => new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
const evens = (count: number): number[] => Array.from({ length: Math.ceil(count / 2) }, (_, k) => 2 * k);

describe('fragment reassembly holds what its quota counts', () => {
  it("the review's attack: 1-byte pieces, every other one, of 64 messages: refused as malformed, nothing held", () => {
    const COUNT = MAX_FRAGMENTS; // 65,542 one-byte pieces: total = count
    const p = pair();
    const one = new Uint8Array([0x55]);
    const m0 = mem();
    for (let msgId = 1; msgId <= 64; msgId++) {
      const idx = evens(COUNT).slice(0, 8000); // enough to show the bound, fast
      for (let i = 0; i < idx.length; i += 100) {
        const msgs = idx
          .slice(i, i + 100)
          .map((index) => encodeMessage({ type: MsgType.Fragment, msgId, total: COUNT, count: COUNT, index, bytes: one }));
        p.handlePayload(0, msgId * 1000 + i / 100, concatBytes(msgs));
        while (p.pollEvent() !== undefined); // a driver drains events
      }
    }
    const grew = mem() - m0;
    const charged = p.fragments.reassemblyBytes;
    console.log(
      `1-byte pieces: ${p.fragments.partials} partials, ${(charged / MiB).toFixed(2)} MiB charged, memory grew ${(grew / MiB).toFixed(1)} MiB; malformed payloads ${p.stats.drops['malformed-payload'] ?? 0}`,
    );
    // Before: 64 partials, 4.00 MiB charged, the heap grew ~30 MiB for these 8,000 pieces each (96.9 MiB for all 32,771).
    expect(grew).toBeLessThan(2 * charged + 2 * MiB);
    expect(p.fragments.partials).toBe(0);
    expect(p.stats.drops['malformed-payload']).toBe(64 * 80);
  });

  it('pieces of the smallest size, scattered highest-first: bounded ranges, bounded work, the bookkeeping charged', () => {
    const PIECE = 512;
    const COUNT = 131_072; // a 64 MiB message
    const TOTAL = PIECE * COUNT;
    const piece = new Uint8Array(PIECE).fill(7);
    const feed = (order: number[]): { ms: number; r: Reassembler; drops: number } => {
      let drops = 0;
      const r = new Reassembler(TOTAL + PARTIAL_BOOKKEEPING, 10_000, (reason) => {
        if (reason === 'fragment-quota') drops++;
      });
      const t0 = performance.now();
      for (const index of order) r.onFragment(0, { type: MsgType.Fragment, msgId: 1, total: TOTAL, count: COUNT, index, bytes: piece });
      return { ms: performance.now() - t0, r, drops };
    };
    const asc = evens(COUNT);
    const desc = evens(COUNT).reverse();
    feed(asc); // warm up
    const inOrder = feed(asc);
    const m0 = mem();
    const hostile = feed(desc);
    const grew = mem() - m0;
    console.log(
      `${asc.length} pieces of ${PIECE} B: ascending ${inOrder.ms.toFixed(1)} ms, descending ${hostile.ms.toFixed(1)} ms; charged ${hostile.r.bytes} B, memory grew ${grew} B; ${hostile.drops} pieces past ${MAX_HELD_RANGES} ranges dropped`,
    );
    // Before: every piece was a splice at the front of up to 65,536 ranges (several times the ascending time).
    expect(hostile.r.rangeCount).toBeLessThanOrEqual(256);
    expect(hostile.r.rangeCount).toBe(MAX_HELD_RANGES);
    expect(hostile.ms).toBeLessThan(3 * inOrder.ms + 30);
    expect(hostile.drops).toBe(asc.length - MAX_HELD_RANGES);
    expect(hostile.r.bytes).toBe(TOTAL + PARTIAL_BOOKKEEPING);
    expect(grew).toBeLessThan(1.25 * hostile.r.bytes);
    // The ranges reported are still the lowest held.
    const ack = hostile.r.pendingAcks()[0];
    expect(ack.ranges[0]).toEqual({ from: COUNT - 2 * MAX_HELD_RANGES, to: COUNT - 2 * MAX_HELD_RANGES });
    // The dropped pieces and the holes, sent again in order, complete the message: the first pass
    // joins the held ranges into one (the pieces below them are dropped: isolated), the second fills it.
    let whole: Uint8Array | undefined;
    for (let pass = 0; pass < 2; pass++)
      for (let index = 0; index < COUNT; index++) {
        const w = hostile.r.onFragment(1, { type: MsgType.Fragment, msgId: 1, total: TOTAL, count: COUNT, index, bytes: piece });
        whole ??= w;
      }
    expect(whole?.length).toBe(TOTAL);
    expect(hostile.r.bytes).toBe(0);
  });

  it("an honest sender's layouts decode, for messages just past a payload and at the largest", () => {
    for (const maxPayload of [1400, 1416, 1432]) {
      for (const total of [maxPayload + 1, 2 * maxPayload, 3 * (maxPayload - 67) + 1, 1 << 20]) {
        const s = new FragmentSender(maxPayload);
        expect(s.add(0, new Uint8Array(total), undefined)).toBe(true);
        const f = s.next(0, maxPayload)!;
        const layoutOk = Math.ceil(f.total / f.count) >= 512;
        expect(layoutOk).toBe(true);
        const last: FragmentMsg = { ...f, index: f.count - 1, bytes: new Uint8Array(fragmentLen(f.total, f.count, f.count - 1)) };
        for (const m of [f, last]) expect(decodeMessages(encodeMessage(m)).messages[0]).toMatchObject({ total, count: f.count });
      }
    }
  });
});

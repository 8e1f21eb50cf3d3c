/**
 * The work a fragment conflict lets a peer repeat (PROTOCOL.md §3.7.4). A partial message is
 * given its whole buffer when its first piece arrives, and a piece that contradicts it discards
 * it: its room in the reassembly quota was free again at once. So a peer alternating two tiny
 * pieces of one id, the last piece of a layout of nearly the whole quota and one of another
 * layout, made the receiver allocate (and the GC reclaim) the quota's octets for every ~25 octets
 * sent (~150 ms per 1,432-octet datagram of them at the default 5 MiB quota). Now a discarded
 * message's charge stays held until the reassembler's staleMs after the conflict, as a partial
 * message that fell silent then would be. The peer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { Reassembler } from '../core/pair/fragment.js';
import { MsgType, encodeMessage, type FragmentMsg } from '../wire/messages.js';
import { concatBytes } from './helpers.js';

const REGS = [{ name: 'kv', kind: 'map' as const }];
/** The default reassembly quota of REGS (4 × 1 MiB + 1 MiB). */
const QUOTA = 5 << 20;
const F = 1432;
/** The largest layout of pieces of F whose last piece is 1 octet, within the quota. */
const COUNT = Math.floor((QUOTA - 2560 - 1) / F) + 1;
const TOTAL = (COUNT - 1) * F + 1;

/** The last piece of a layout of `total` octets in COUNT pieces (F = ceil(total / COUNT) = 1432). */
const last = (msgId: number, total: number): FragmentMsg => ({
  type: MsgType.Fragment,
  msgId,
  total,
  count: COUNT,
  index: COUNT - 1,
  bytes: new Uint8Array(total - (COUNT - 1) * F),
});

describe('a fragment conflict is no way to allocate the quota over and over', () => {
  it('two tiny pieces of one id, alternating layouts, a datagram full of them: cheap, the quota held', () => {
    const p = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
    const msgs: Uint8Array[] = [];
    let size = 0;
    for (let k = 0; size < 1400; k++) {
      const m = encodeMessage(last(7, k % 2 === 0 ? TOTAL : TOTAL + 1));
      msgs.push(m);
      size += m.length;
    }
    const payload = concatBytes(msgs);
    expect(payload.length).toBeLessThanOrEqual(1432);
    const N = 40;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      p.handlePayload(i, i + 1, payload);
      while (p.pollEvent() !== undefined); // a driver drains events
    }
    const ms = (performance.now() - t0) / N;
    const conflicts = p.stats.drops['fragment-conflict'] ?? 0;
    console.log(
      `${msgs.length} pieces of ${Math.round(size / msgs.length)} octets a datagram, ${TOTAL}-octet layouts: ${ms.toFixed(2)} ms per datagram, ` +
        `${conflicts} conflicts, ${p.fragments.partials} partial(s) holding ${p.fragments.reassemblyBytes} octets of the quota`,
    );
    // Before: a buffer of ~5 MiB allocated for every other piece, ~60 pieces a datagram (~40 ms on this machine).
    expect(ms).toBeLessThan(5);
  });

  it("a conflicting partial's charge stays held until it would be stale; then a new message is taken", () => {
    const drops: string[] = [];
    const r = new Reassembler(QUOTA, 1000, (reason) => drops.push(reason));
    let allocated = 0;
    for (let i = 0; i < 100; i++) {
      const before = r.bytes;
      r.onFragment(0, last(9, i % 2 === 0 ? TOTAL : TOTAL + 1));
      if (r.bytes > before) allocated++;
    }
    expect(allocated).toBe(1); // before: 50
    expect(drops.filter((d) => d === 'fragment-conflict').length).toBe(1);
    // The discarded message's charge stays held: another message has no room meanwhile, nothing is acknowledged.
    expect(r.partialCount).toBe(0);
    expect(r.bytes).toBe(TOTAL + 2560);
    expect(r.onFragment(500, last(10, TOTAL))).toBeUndefined();
    r.evictStale(999);
    expect(r.bytes).toBe(TOTAL + 2560);
    expect(r.pendingAcks()).toEqual([]);
    // staleMs after the conflict its charge is let go: a new message is taken, and completes as ever.
    const total = 2 * 600;
    const piece = (index: number): FragmentMsg => ({
      type: MsgType.Fragment,
      msgId: 11,
      total,
      count: 2,
      index,
      bytes: new Uint8Array(600).fill(index + 1),
    });
    expect(r.onFragment(1000, piece(0))).toBeUndefined();
    const whole = r.onFragment(1001, piece(1));
    expect(whole?.length).toBe(total);
    expect(r.partialCount).toBe(0);
    expect(r.bytes).toBe(0);
  });
});

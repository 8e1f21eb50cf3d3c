/**
 * Containment (review of the follower path): a Collapse that leaves out (elides, §3.6.4) the
 * follower's own pending candidates was expanded and re-encoded, a copy of every own value it
 * names, before anything decided whether the record could be used; a record past a gap was then
 * dropped by the reorder byte limit, nothing kept, so the peer could repeat it for free: one
 * datagram of 40 records of ~27 octets, each naming four own pending writes of 1 MiB, cost ~160 MiB
 * of copying (96-132 ms). Now a held record keeps its wire form; the left-out deltas are put back
 * only when the record is applied, and its octets encoded only when it is logged (rev 1.32).
 */
import { describe, expect, it, vi } from 'vitest';
import { MsgType, decodeMessages, encodeMessage, type CollapseEntry, type Message } from '../wire/messages.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { MapState } from '../core/register/map.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { concatBytes } from './helpers.js';

/** Octets the pair's encodeMessage calls produced (the copies an expanded record costs). */
const encoded = vi.hoisted(() => ({ bytes: 0 }));
vi.mock('../wire/messages.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../wire/messages.js')>();
  return {
    ...orig,
    encodeMessage: (m: Message) => {
      const out = orig.encodeMessage(m);
      encoded.bytes += out.length;
      return out;
    },
  };
});

const SEED = 7;
const REGS = [{ name: 'kv', kind: 'map' as const }];
const MiB = 1 << 20;
const big = (i: number): Delta => ({ op: DeltaOp.Set, key: new TextEncoder().encode(`big${i}`), value: new Uint8Array(MiB).fill(i) });

function follower() {
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: SEED, registers: REGS }, 0);
  // Four own pending writes of 1 MiB each (the default maxValueBytes), waiting for the sequencer.
  const ids = [0, 1, 2, 3].map((i) => f.propose(0, 'kv', big(i)));
  return { f, ids };
}

/** One payload of Collapse records at versions 2.. (past the gap at v1), each naming the own candidates. */
function payload(ids: { origin: number; seq: number }[], elide: boolean, n: number): Uint8Array {
  const msgs: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const entries: CollapseEntry[] = ids.map((id) =>
      elide
        ? { origin: id.origin, seq: id.seq, verdict: 'committed', delta: { op: DeltaOp.Del, key: new Uint8Array(0) } }
        : { origin: id.origin, seq: id.seq, verdict: 'rejected', reason: 1 },
    );
    msgs.push(
      encodeMessage({
        type: MsgType.Collapse,
        register: 'kv',
        version: 2 + k,
        hash: { hi: k, lo: 0 },
        entries,
        ...(elide ? { elided: ids.map((_, i) => i) } : {}),
      }),
    );
  }
  return concatBytes(msgs);
}

describe('follower: records leaving out own deltas are expanded only when applied', () => {
  it('a datagram of 40 elided records past a gap copies no own value, however often it comes', () => {
    const { f, ids } = follower();
    const hostile = payload(ids, true, 40);
    expect(hostile.length).toBeLessThan(1432);
    const time = (p: Uint8Array, reps: number, pn: number): number => {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) f.handlePayload(0, pn + i, p.slice());
      return (performance.now() - t0) / reps;
    };
    const control = payload(ids, false, 40);
    time(control, 3, 0);
    const ctl = time(control, 20, 100);
    encoded.bytes = 0;
    const bad = time(hostile, 10, 200);
    console.log(
      `payload ${hostile.length} B: control ${ctl.toFixed(3)} ms/datagram, elided ${bad.toFixed(3)} ms/datagram; encoded ${encoded.bytes} B in 10`,
    );
    // Before: 40 records x 4 MiB re-encoded per datagram (~1.6 GiB in 10).
    expect(encoded.bytes).toBeLessThan(64 * 1024);
    expect(f.register('kv').version).toBe(0);
    // Held in their wire form (they are within the reorder limits now): a few octets each.
    expect((f.register('kv').follower as unknown as { reorderBytes: number }).reorderBytes).toBeLessThan(64 * 1024);
  });

  it('the held elided record is put back whole when it applies: logged as the sequencer sealed it, own outcomes committed', () => {
    const { f, ids } = follower();
    f.handlePayload(0, 1, payload(ids, true, 40)); // hostile copies first: v2..v41 held
    // The sequencer's v1 (an empty collapse of a rejection) and v2 committing the four writes, left out.
    const st = new MapState(SEED);
    const v1 = encodeMessage({
      type: MsgType.Collapse,
      register: 'kv',
      version: 1,
      hash: { hi: st.hash.hi, lo: st.hash.lo },
      entries: [{ origin: 1, seq: 1, verdict: 'rejected', reason: 1 }],
    });
    for (let i = 0; i < 4; i++) st.apply(big(i), 2);
    const whole = {
      type: MsgType.Collapse as const,
      register: 'kv',
      version: 2,
      hash: { hi: st.hash.hi, lo: st.hash.lo },
      entries: ids.map((id, i): CollapseEntry => ({ origin: id.origin, seq: id.seq, verdict: 'committed', delta: big(i) })),
    };
    const v2 = encodeMessage({ ...whole, elided: [0, 1, 2, 3] });
    expect(v2.length).toBeLessThan(100);
    f.handlePayload(1, 2, v2); // replaces the hostile copy held at v2
    expect(f.register('kv').version).toBe(0);
    encoded.bytes = 0;
    f.handlePayload(2, 3, v1);
    // v1 and v2 applied; v3 (hostile: it leaves out candidates no longer pending) is refused.
    expect(f.register('kv').version).toBe(2);
    expect(encoded.bytes).toBeLessThanOrEqual(4 * MiB + 1024); // v2 encoded once, to be logged
    expect(f.register('kv').state.hash).toEqual(st.hash);
    expect(f.stats.drops['elided-unknown']).toBe(1);
    const logged = f.register('kv').log.get(2)!.encoded;
    expect(Buffer.compare(logged, encodeMessage(whole))).toBe(0);
    expect(decodeMessages(logged).messages[0]).not.toHaveProperty('elided');
    const outcomes: { seq: number; verdict: string }[] = [];
    for (let ev = f.pollEvent(); ev; ev = f.pollEvent()) if (ev.type === 'outcome') outcomes.push({ seq: ev.seq, verdict: ev.verdict });
    expect(outcomes).toEqual(ids.map((id) => ({ seq: id.seq, verdict: 'committed' })));
  });
});

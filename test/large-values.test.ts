import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import { MapState } from '../core/register/map.js';
import { QUOTA_DEFAULTS, QuotaCheck } from '../core/register/quota.js';
import { DeltaOp, RejectReason, type Delta } from '../wire/delta.js';
import { FrameType, MAX_KEY_LEN } from '../wire/constants.js';
import { encodeFrame } from '../wire/header.js';
import { MsgType, encodeMessage, type FragmentMsg, type Message } from '../wire/messages.js';
import { SimWorld, type SimEndpoint } from '../testing/sim/world.js';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';

const te = new TextEncoder();
const MiB = 1024 * 1024;

/** Deterministic bytes, different per seed (so a misplaced fragment changes the value). */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const set = (key: string | Uint8Array, value: Uint8Array): Delta => ({
  op: DeltaOp.Set,
  key: typeof key === 'string' ? te.encode(key) : key,
  value,
});

function valueAt(ep: SimEndpoint, key: Uint8Array): Uint8Array | undefined {
  const st = ep.pair.register('kv').state as MapState;
  return st.get(key)?.value;
}

function world(seed: number, faults: { loss: number; reorder: number; dup: number }, maxValueBytes = MiB) {
  const w = new SimWorld(seed, { ...faults, minDelayMs: 1, maxDelayMs: 4 });
  const [a, b] = w.addPair(['A', 'B'], {
    pairId: 7,
    seed: 99,
    registers: [{ name: 'kv', kind: 'map', quota: { maxValueBytes } }],
  });
  w.run(2000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
  return { w, a, b };
}

const same = (x: Uint8Array | undefined, y: Uint8Array): boolean => x !== undefined && Buffer.compare(Buffer.from(x), Buffer.from(y)) === 0;

describe('large values (§3.4 fragmentation)', () => {
  it('a 1 MiB value proposed by each end commits identically at both through 1% loss, reordering and duplication', () => {
    const { w, a, b } = world(11, { loss: 0.01, reorder: 0.1, dup: 0.01 });
    expect(a.pair.state).toBe(PairState.ENTANGLED);
    const v1 = pattern(MiB, 1);
    const v2 = pattern(MiB, 2);
    const k1 = te.encode('big-from-follower');
    const k2 = te.encode('big-from-sequencer');
    const start = w.now;
    const bytes0 = w.net.stats.bytesSent;
    const sent0 = w.net.stats.sent;
    w.at(w.now + 1, () => {
      b.pair.propose(w.now, 'kv', set(k1, v1)); // the follower: a fragmented Propose, then a Collapse without its delta (§3.6.4)
      a.pair.propose(w.now, 'kv', set(k2, v2)); // the sequencer: a fragmented Collapse
      b.pair.propose(w.now, 'kv', set('small', te.encode('after'))); // small traffic goes on beside
    });
    const done = w.run(start + 60_000, () =>
      [a, b].every((e) => same(valueAt(e, k1), v1) && same(valueAt(e, k2), v2) && valueAt(e, te.encode('small')) !== undefined),
    );
    expect(done).toBe(true);
    w.run(w.now + 3000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
    const ra = a.pair.register('kv');
    const rb = b.pair.register('kv');
    expect(rb.version).toBe(ra.version);
    expect(rb.hash).toEqual(ra.hash);
    const ms = w.now - start;
    const fa = a.pair.fragments;
    const fb = b.pair.fragments;
    console.log(
      `2 x 1 MiB through the sim (1% loss, 10% reorder): ${ms} ms simulated, ${w.net.stats.sent - sent0} datagrams, ` +
        `${w.net.stats.bytesSent - bytes0} bytes on the wire; fragments sent A ${fa.fragmentsSent} (resent ${fa.fragmentsResent}), ` +
        `B ${fb.fragmentsSent} (resent ${fb.fragmentsResent})`,
    );
    // Selective retransmission: a lost fragment is resent alone, never the whole message.
    expect(fa.fragmentsResent + fb.fragmentsResent).toBeLessThan((fa.fragmentsSent + fb.fragmentsSent) * 0.25);
    expect(fa.reassemblyBytes + fb.reassemblyBytes).toBe(0);
  });

  it('a large value in flight does not hold up the small writes of another register (the window, registers first)', () => {
    const w = new SimWorld(17, { loss: 0.01, reorder: 0.05, dup: 0, minDelayMs: 1, maxDelayMs: 4 });
    const [a, b] = w.addPair(['A', 'B'], {
      pairId: 7,
      seed: 99,
      registers: [
        { name: 'kv', kind: 'map' },
        { name: 'other', kind: 'map' },
      ],
    });
    w.run(2000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
    const big = pattern(MiB, 8);
    const t0 = w.now + 1;
    w.at(t0, () => a.pair.propose(w.now, 'kv', set('big', big)));
    let smallAt: number | undefined;
    let bigAt: number | undefined;
    const other = (e: SimEndpoint) => (e.pair.register('other').state as MapState).get(te.encode('s9'));
    for (let i = 0; i < 10; i++) w.at(t0 + 5 + i * 5, () => b.pair.propose(w.now, 'other', set(`s${i}`, te.encode('x'))));
    w.run(
      t0 + 30_000,
      () => {
        if (smallAt === undefined && other(a) && other(b)) smallAt = w.now;
        if (bigAt === undefined && same(valueAt(b, te.encode('big')), big)) bigAt = w.now;
        return smallAt !== undefined && bigAt !== undefined;
      },
      1,
    );
    // The ten small writes (the last proposed at +50 ms) are committed at both ends long before the 1 MiB value arrives.
    console.log(
      `small writes of another register committed at +${Math.round(smallAt! - t0)} ms, the 1 MiB value at +${Math.round(bigAt! - t0)} ms`,
    );
    expect(smallAt! - t0).toBeLessThan(90);
    expect(bigAt! - t0).toBeGreaterThan(smallAt! - t0 + 30);
  });

  it('a key of MAX_KEY_LEN (4 KiB) with a value commits at both ends; one byte more is refused naming the limit', () => {
    const { w, a, b } = world(3, { loss: 0.02, reorder: 0.05, dup: 0 });
    const key = pattern(MAX_KEY_LEN, 9).map((x) => x | 1);
    const value = pattern(100_000, 4);
    w.at(w.now + 1, () => b.pair.propose(w.now, 'kv', set(key, value)));
    expect(w.run(w.now + 30_000, () => [a, b].every((e) => same(valueAt(e, key), value)))).toBe(true);
    let err: unknown;
    try {
      b.pair.propose(w.now, 'kv', set(new Uint8Array(MAX_KEY_LEN + 1).fill(1), value));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProposeError);
    expect((err as ProposeError).code).toBe('too-large');
    expect((err as ProposeError).message).toBe(`register kv: key is ${MAX_KEY_LEN + 1} bytes; the limit MAX_KEY_LEN is ${MAX_KEY_LEN}`);
  });

  it("a value over the register's limit is refused with the limit's name, at the proposer and at the sequencer", () => {
    const { w, a, b } = world(5, { loss: 0, reorder: 0, dup: 0 });
    for (const ep of [a, b]) {
      let err: unknown;
      try {
        ep.pair.propose(w.now, 'kv', set('k', new Uint8Array(2 * MiB)));
      } catch (e) {
        err = e;
      }
      expect((err as ProposeError).code).toBe('too-large');
      expect((err as ProposeError).message).toBe('register kv: value is 2097152 bytes; register cfg limit maxValueBytes is 1048576');
      // A txn's values count together (it crosses as one message the peer's reassembly quota must hold):
      // six values of 1 MiB, each within the limit, are refused whole (review: before, such a txn wedged the register).
      const six = { op: DeltaOp.Txn, ops: Array.from({ length: 6 }, (_, i) => set(`t${i}`, new Uint8Array(MiB))) } as const;
      expect(() => ep.pair.propose(w.now, 'kv', six)).toThrow(
        /txn values total 6291456 bytes; register cfg limit maxValueBytes is 1048576/,
      );
    }
    // A peer's txn over the limit (one that lies, or runs other code) is rejected at collapse, never committed.
    const q = new QuotaCheck(new MapState(), { ...QUOTA_DEFAULTS, maxValueBytes: MiB });
    expect(q.admit({ op: DeltaOp.Txn, ops: [set('x', new Uint8Array(MiB / 2)), set('y', new Uint8Array(MiB / 2 + 1))] }, 1)).toBe(
      RejectReason.QuotaExceeded,
    );
    expect(q.admit({ op: DeltaOp.Txn, ops: [set('x', new Uint8Array(MiB / 2)), set('y', new Uint8Array(MiB / 2))] }, 1)).toBe(0);
    // Ends configured with different value limits never pair: the limit is in the manifest (§6.3),
    // so the difference is named and a write is refused before anything could commit that the
    // other end may not hold. (A peer that lies in its manifest meets quota-exceeded, §7.8.)
    const w2 = new SimWorld(6, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 2 });
    const seq = new HalfPair({ pairId: 8, seed: 1, localId: 1, peerId: 2, registers: [{ name: 'kv', kind: 'map' }] }, 0);
    const fol = new HalfPair(
      { pairId: 8, seed: 1, localId: 2, peerId: 1, registers: [{ name: 'kv', kind: 'map', quota: { maxValueBytes: 4 * MiB } }] },
      0,
    );
    const causes: string[] = [];
    w2.onEvent = (_ep, ev) => {
      if (ev.type === 'lifecycle' && ev.to === PairState.DECOHERENT) causes.push(ev.cause);
    };
    const [s2, f2] = w2.adopt(['S', 'F'], [seq, fol]);
    expect(w2.run(2000, () => causes.length >= 2)).toBe(true);
    expect(causes.every((c) => /register-mismatch.*maxValueBytes/.test(c))).toBe(true);
    expect(() => f2.pair.propose(w2.now, 'kv', set('k', new Uint8Array(2 * MiB).fill(3)))).toThrow(
      /maxValueBytes 4194304 here vs 1048576 at the peer/,
    );
    expect((s2.pair.register('kv').state as MapState).get(te.encode('k'))).toBeUndefined();
  });

  it('pending large writes are bounded in bytes as well as in count: 64 MiB of 1 MiB values, then buffer-full naming the bound', () => {
    const lone = new HalfPair({ pairId: 3, seed: 1, localId: 2, peerId: 1, registers: [{ name: 'kv', kind: 'map' }] }, 0);
    let accepted = 0;
    let refusal: ProposeError | undefined;
    for (let i = 0; i < 200 && !refusal; i++) {
      try {
        lone.propose(0, 'kv', set(`k${i}`, new Uint8Array(MiB)));
        accepted++;
      } catch (e) {
        refusal = e as ProposeError;
      }
    }
    // The count bound (maxPending 1024) is far away: the byte bound (4 × maxValueBytes, at least 64 MiB) refused.
    expect(accepted).toBe(64);
    expect(refusal?.code).toBe('buffer-full');
    expect(refusal?.message).toMatch(/pending values would hold 68157440 bytes, over 67108864/);
    // Small writes still fit beside them until the bytes run out; a delete carries none.
    expect(() => lone.propose(0, 'kv', { op: DeltaOp.Del, key: te.encode('k0') })).not.toThrow();
  });

  it('a large value written during a cut arrives through re-entanglement, by log replay, reconciliation and full transfer', () => {
    for (const method of ['log', 'reconcile', 'full'] as const) {
      const w = new SimWorld(21, { loss: 0.01, reorder: 0.05, dup: 0.01, minDelayMs: 1, maxDelayMs: 4 });
      // A log of 2 records cannot bring the follower across 3 versions: it reconciles (ReconEntries carrying 1 MiB values).
      const log = method === 'log' ? undefined : { maxRecords: 2, maxBytes: 64 * MiB };
      const [a, b] = w.addPair(['A', 'B'], { pairId: 9, seed: 5, registers: [{ name: 'kv', kind: 'map', log }] });
      const methods: string[] = [];
      w.onEvent = (_ep, ev) => {
        if (ev.type === 'reentangled') methods.push(ev.method);
      };
      w.run(2000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
      const cut = (up: boolean) => () => {
        w.net.setLink('A', 'B', up);
        w.net.setLink('B', 'A', up);
      };
      w.at(w.now + 1, cut(false));
      const values = [pattern(MiB, 31), pattern(MiB - 7, 32), pattern(300_000, 33)];
      w.at(w.now + 10, () => values.forEach((v, i) => a.pair.propose(w.now, 'kv', set(`cut-${i}`, v))));
      w.run(w.now + 8000, () => b.pair.state === PairState.DECOHERENT);
      expect(b.pair.state).toBe(PairState.DECOHERENT);
      w.at(w.now + 1, cut(true));
      let forced = false;
      const ok = w.run(
        w.now + 60_000,
        () => {
          // 'full': the session the follower starts is switched to a full transfer (SnapChunks carrying
          // the large entries), as when a reconciliation does not verify; reached through its private
          // method, since no fault of this scenario makes one fail.
          const q = b.pair.register('kv').follower!.requester;
          if (method === 'full' && q && !forced) {
            (q as unknown as { startFull(): void }).startFull();
            forced = true;
          }
          return [a, b].every(
            (e) => e.pair.state === PairState.ENTANGLED && values.every((v, i) => same(valueAt(e, te.encode(`cut-${i}`)), v)),
          );
        },
        1,
      );
      expect(ok, method).toBe(true);
      expect(b.pair.register('kv').hash).toEqual(a.pair.register('kv').hash);
      expect(methods, method).toContain(method);
    }
  });
});

/** A cleartext Data frame of `msgs` for pair 7 (the simulator's pairs are not sealed). */
const frame = (pn: number, ...msgs: Message[]): Uint8Array =>
  encodeFrame({ type: FrameType.Data, flags: 0, pairId: 7, packetNumber: pn }, Buffer.concat(msgs.map(encodeMessage)));
const piece = (msgId: number, total: number, count: number, index: number, fillByte = 0): FragmentMsg => {
  const f = Math.ceil(total / count);
  return { type: MsgType.Fragment, msgId, total, count, index, bytes: new Uint8Array(Math.min(f, total - index * f)).fill(fillByte) };
};

describe('large values in the seeded simulator and the figures', () => {
  it('4 seeds at 10% loss with reordering, cuts, crashes and store faults, 15% of writes large (8 KiB-1 MiB): all converge, nothing lost', () => {
    const s = runSeeds(4, 1, { ...SIM_DEFAULTS, cuts: true, crashes: true, storeFaults: 0.01, largeValues: 0.15 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(4);
    expect(s.lostCommits).toBe(0);
    expect(s.crashes).toBeGreaterThan(0);
    // Large values really crossed: far more bytes than the small workload alone (~1 MB per seed).
    expect(s.bytesSent).toBeGreaterThan(4 * 5_000_000);
  }, 120_000);

  it('time and bytes to commit one 1 MiB value through the simulator (1-4 ms one way), from each role, at 0% and 1% loss', () => {
    const rows: string[] = [];
    for (const loss of [0, 0.01])
      for (const from of ['sequencer', 'follower'] as const) {
        const { w, a, b } = world(31, { loss, reorder: loss > 0 ? 0.05 : 0, dup: 0 });
        const ep = from === 'sequencer' ? a : b;
        const v = pattern(MiB, 5);
        const t0 = w.now + 1;
        const bytes0 = w.net.stats.bytesSent;
        const dg0 = w.net.stats.sent;
        w.at(t0, () => ep.pair.propose(w.now, 'kv', set('one', v)));
        // Committed at both ends: the proposer holds it (its outcome) and so does the other.
        expect(w.run(t0 + 60_000, () => same(valueAt(a, te.encode('one')), v) && same(valueAt(b, te.encode('one')), v), 1)).toBe(true);
        rows.push(
          `  from the ${from}, ${loss * 100}% loss: ${Math.round(w.now - t0)} ms, ${w.net.stats.sent - dg0} datagrams, ${w.net.stats.bytesSent - bytes0} bytes`,
        );
      }
    console.log(`one 1 MiB value committed at both ends through the simulator:\n${rows.join('\n')}`);
  });
});

describe('a hostile peer and the reassembly quota', () => {
  it('fragments that never complete, contradict each other or exceed the quota: memory stays within it, drops are counted, the pair carries on', () => {
    const { w, a, b } = world(13, { loss: 0, reorder: 0, dup: 0 });
    const quota = b.pair.fragments.reassemblyQuota;
    expect(quota).toBe(4 * MiB + MiB);
    let pn = 1_000_000;
    let maxHeld = 0;
    const inject = (...msgs: Message[]) => {
      b.pair.handleDatagram(w.now, frame(pn++, ...msgs));
      maxHeld = Math.max(maxHeld, b.pair.fragments.reassemblyBytes);
    };
    w.at(w.now + 1, () => {
      // 100 messages of 1 MiB that never complete: one piece each.
      for (let id = 1; id <= 100; id++) inject(piece(id, MiB, 800, 0));
      // One larger than the whole quota.
      inject(piece(500, 60 * MiB, Math.ceil((60 * MiB) / 1300), 0));
      // Contradictions: a held message's layout changes, a held piece's bytes change.
      inject(piece(1, 2 * MiB, 1600, 1));
      inject(piece(2, MiB, 800, 0, 0xff));
    });
    w.run(w.now + 10);
    const d = b.pair.stats.drops;
    expect(maxHeld).toBeLessThanOrEqual(quota);
    expect(b.pair.fragments.reassemblyBytes).toBeLessThanOrEqual(quota);
    expect(b.pair.fragments.partials).toBeLessThanOrEqual(5);
    expect(d['fragment-quota']).toBeGreaterThanOrEqual(96);
    expect(d['fragment-conflict']).toBe(2);
    // The pair carries on: a large value still commits both ways (the stale partials are evicted for it).
    const v = pattern(MiB, 77);
    w.at(w.now + 1, () => b.pair.propose(w.now, 'kv', set('after-attack', v)));
    expect(w.run(w.now + 60_000, () => [a, b].every((e) => same(valueAt(e, te.encode('after-attack')), v)))).toBe(true);
    expect(b.pair.fragments.reassemblyBytes).toBeLessThanOrEqual(quota);
    expect(a.pair.state === PairState.ENTANGLED || a.pair.state === PairState.COLLAPSING).toBe(true);
  });

  it("a Collapse leaving out a delta that is not the follower's pending candidate is not applied, and counted", () => {
    const { w, b } = world(15, { loss: 0, reorder: 0, dup: 0 });
    const v = b.pair.register('kv').version;
    const forged = {
      type: MsgType.Collapse,
      register: 'kv',
      version: v + 1,
      hash: { hi: 1, lo: 2 },
      entries: [{ origin: 2, seq: 77, verdict: 'committed', delta: set('x', te.encode('y')) }],
      elided: [0],
    } as Message;
    w.at(w.now + 1, () => b.pair.handleDatagram(w.now, frame(3_000_000, forged)));
    w.run(w.now + 20);
    expect(b.pair.stats.drops['elided-unknown']).toBe(1);
    expect(b.pair.register('kv').version).toBe(v);
  });

  it('a reassembled message that is not a register message is malformed; a completed one is acknowledged whole again', () => {
    const { w, b } = world(14, { loss: 0, reorder: 0, dup: 0 });
    // A Close smuggled in fragments: refused as malformed, the pair stays up.
    const close = encodeMessage({ type: MsgType.Close, reason: 0 });
    const padded = new Uint8Array(3000);
    padded.set(close);
    const f = Math.ceil(padded.length / 3);
    w.at(w.now + 1, () => {
      for (let i = 0; i < 3; i++)
        b.pair.handleDatagram(
          w.now,
          frame(2_000_000 + i, {
            type: MsgType.Fragment,
            msgId: 42,
            total: 3000,
            count: 3,
            index: i,
            bytes: padded.subarray(i * f, (i + 1) * f),
          }),
        );
      // A duplicate piece of the completed message.
      b.pair.handleDatagram(
        w.now,
        frame(2_000_010, { type: MsgType.Fragment, msgId: 42, total: 3000, count: 3, index: 0, bytes: padded.subarray(0, f) }),
      );
    });
    w.run(w.now + 50);
    expect(b.pair.state).not.toBe(PairState.CLOSED);
    // The padded Close does not decode as one message: counted, never thrown.
    expect((b.pair.stats.drops['malformed-payload'] ?? 0) + (b.pair.stats.drops['unknown-message'] ?? 0)).toBeGreaterThan(0);
    expect(b.pair.stats.drops['fragment-duplicate']).toBe(1);
    expect(b.pair.fragments.reassemblyBytes).toBe(0);
  });
});

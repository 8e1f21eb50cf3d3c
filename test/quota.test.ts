import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { FrameType } from '../wire/constants.js';
import { DeltaOp } from '../wire/delta.js';
import { encodeFrame } from '../wire/header.js';
import { MsgType, encodeMessage, type Message } from '../wire/messages.js';
import { SimWorld } from '../testing/sim/world.js';
import { PairState } from '../core/pair/lifecycle.js';
import { cas, enc, harness, peerManifest, proposeNow, set, del } from './helpers.js';

type Outcome = { ep: string; origin: number; seq: number; verdict: string; reason?: string };
const outcomes = (h: ReturnType<typeof harness>): Outcome[] =>
  h.events.filter((e) => e.ev.type === 'outcome').map((e) => ({ ep: e.ep, ...(e.ev as Omit<Outcome, 'ep'>) }));

let pn = 0;
const frame = (pairId: number, ...ms: Message[]): Uint8Array =>
  encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: pn++ }, Uint8Array.from(ms.flatMap((m) => [...encodeMessage(m)])));

describe('register quotas (part of collapse)', () => {
  it('writes past maxKeys are rejected quota-exceeded, identically at both ends; a delete makes room', () => {
    const h = harness([{ name: 'kv', kind: 'map', quota: { maxKeys: 10, maxBytes: 1 << 20 } }]);
    expect(h.settle()).toBe(true);
    for (let i = 0; i < 8; i++) proposeNow(h, h.a, 'kv', set(`a${i}`, 'x'));
    for (let i = 0; i < 8; i++) proposeNow(h, h.b, 'kv', set(`b${i}`, 'y'));
    expect(h.settle()).toBe(true);
    const sa = h.a.pair.register('kv').state as MapState;
    const sb = h.b.pair.register('kv').state as MapState;
    expect(sa.size()).toBe(10);
    expect(sb.size()).toBe(10);
    const out = outcomes(h);
    expect(out.filter((o) => o.verdict === 'committed')).toHaveLength(10);
    const rejected = out.filter((o) => o.verdict === 'rejected');
    expect(rejected).toHaveLength(6);
    expect(rejected.every((o) => o.reason === 'quota-exceeded')).toBe(true);
    // An overwrite that does not grow the register, and a delete, are always allowed.
    const [first] = [...sa.values()];
    proposeNow(h, h.b, 'kv', set(new TextDecoder().decode(first.key), 'z'));
    expect(h.settle()).toBe(true);
    expect(outcomes(h).filter((o) => o.verdict === 'committed')).toHaveLength(11);
    proposeNow(h, h.a, 'kv', del(new TextDecoder().decode(first.key)));
    expect(h.settle()).toBe(true);
    proposeNow(h, h.b, 'kv', cas('late', 0, 'fits'));
    expect(h.settle()).toBe(true);
    expect(sb.get(enc('late'))).toBeDefined();
    expect(sb.size()).toBe(10);
    expect(h.a.pair.register('kv').hash).toEqual(h.b.pair.register('kv').hash);
  });

  it('maxBytes bounds a stream: an append past it is rejected at both ends', () => {
    const h = harness([{ name: 's', kind: 'stream', quota: { maxKeys: 1, maxBytes: 1024 } }]);
    h.settle();
    proposeNow(h, h.b, 's', { op: DeltaOp.Append, offset: 0, data: new Uint8Array(1000) });
    expect(h.settle()).toBe(true);
    proposeNow(h, h.b, 's', { op: DeltaOp.Append, offset: 1000, data: new Uint8Array(100) });
    expect(h.settle()).toBe(true);
    expect(h.a.pair.register('s').state.size()).toBe(1000);
    expect(h.b.pair.register('s').state.size()).toBe(1000);
    expect(outcomes(h).filter((o) => o.reason === 'quota-exceeded')).toHaveLength(1);
  });

  // Attack: a sequencer that ignores the quota (or is configured with a larger one) commits
  // past it; the follower must not hold more than its own quota.
  it("a sequencer over the follower's quota cannot make the follower hold more (quota-violation, nothing kept)", () => {
    const world = new SimWorld(3, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 3 });
    const opts = { pairId: 4, seed: 99 };
    const regs = [{ name: 'kv', kind: 'map' as const, quota: { maxKeys: 20, maxBytes: 1 << 20 } }];
    const a = new HalfPair({ ...opts, localId: 1, peerId: 2, registers: regs }, 0);
    const b = new HalfPair({ ...opts, localId: 2, peerId: 1, registers: regs }, 0);
    // The sequencer lies: its manifest says 20 keys (so the pair forms, §6.3), it enforces 1000.
    a.register('kv').cfg.quota = { maxKeys: 1000, maxBytes: 1 << 20 };
    world.adopt(['A', 'B'], [a, b]);
    world.run(2000, () => a.state === PairState.ENTANGLED && b.state === PairState.ENTANGLED);
    for (let i = 0; i < 200; i++) world.at(world.now + 1 + i, () => void a.propose(world.now, 'kv', set(`k${i}`, 'v')));
    world.run(world.now + 20_000);
    expect((a.register('kv').state as MapState).size()).toBe(200);
    expect((b.register('kv').state as MapState).size()).toBeLessThanOrEqual(20);
    expect(b.stats.drops['quota-violation']).toBeGreaterThan(0);
  });
});

describe('receive windows', () => {
  // Attack: an authorised follower pushes candidates without waiting for their outcomes,
  // never acknowledging its rejections; the sequencer must not grow its queue or its list
  // of rejections to remember.
  it("candidates past the sequencer's receive window are counted, not kept", () => {
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map', maxPending: 16 }] }, 0);
    let s = 0;
    for (let round = 0; round < 40; round++) {
      // `base` skips whatever was dropped, so every candidate is the next expected one.
      const base = s + 1;
      const candidates = Array.from({ length: 20 }, () => ({ origin: 2, seq: ++s, delta: cas(`c${s}`, 7, 'never') }));
      seq.handleDatagram(round, frame(1, { type: MsgType.Propose, register: 'kv', base, candidates }));
      if (round % 2 === 1) seq.collapse(round); // rejects them all (cas on absent keys)
    }
    expect(seq.stats.drops['beyond-window']).toBeGreaterThan(100);
    expect(seq.register('kv').sequencer!.peerRejections.size).toBeLessThanOrEqual(32);
    expect(seq.register('kv').sequencer!.hasPending).toBe(false);
  });

  it("a collapse record past the follower's send window is counted and not held", () => {
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0);
    for (let v = 300; v < 340; v++) {
      fol.handleDatagram(v, frame(1, { type: MsgType.Collapse, register: 'kv', version: v, hash: { hi: 0, lo: 0 }, entries: [] }));
    }
    expect(fol.stats.drops['beyond-window']).toBe(40);
    expect(fol.register('kv').status().held).toEqual([]);
  });
});

describe('reconciliation responses are held within bounds', () => {
  // Attack: a sequencer answers an outstanding prefix with thousands of parts of a set it
  // never completes, so that the follower holds them all.
  it('incomplete ReconEntries sets beyond 1 MiB and a leaf of largest values are dropped and counted', () => {
    // Values of at most 1 KiB: the bound is 1 MiB + 8 KiB (§3.4 large values widen it with maxValueBytes).
    const fol = new HalfPair(
      { pairId: 1, localId: 2, peerId: 1, seed: 5, registers: [{ name: 'kv', kind: 'map', quota: { maxValueBytes: 1024 } }] },
      0,
    );
    fol.handlePayload(1, 1_000_000, peerManifest([{ name: 'kv', kind: 'map', quota: { maxValueBytes: 1024 } }])); // the peer's registers match: the pair may form
    // The sequencer's log starts past us: the follower reconciles and asks for the root.
    fol.handleDatagram(
      1,
      frame(1, { type: MsgType.Status, register: 'kv', version: 50, hash: { hi: 1, lo: 2 }, logBase: 40, resolvedSeq: 0, held: [] }),
    );
    const req = fol.pollTransmit(1);
    expect(req).toBeDefined();
    expect(fol.register('kv').reconciling).toBe(true);
    const value = new Uint8Array(1000);
    for (let part = 0; part < 2000; part++) {
      fol.handleDatagram(
        2,
        frame(1, {
          type: MsgType.ReconEntries,
          register: 'kv',
          targetVersion: 50,
          depth: 0,
          prefix: 0,
          part,
          parts: 4096,
          entries: [{ key: enc(`k${part}`), version: 1, value }],
        }),
      );
    }
    expect(fol.stats.drops['quota-violation']).toBeGreaterThanOrEqual(1);
    expect(fol.register('kv').state.size()).toBe(0);
  });
});

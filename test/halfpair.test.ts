import { describe, expect, it } from 'vitest';
import { DeltaOp, RejectReason } from '../wire/delta.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import type { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { append, cas, enc, harness, proposeNow, set } from './helpers.js';
import { MsgType, encodeMessage, type Message } from '../wire/messages.js';
import { PAIR_DROPS, PAIR_VIOLATIONS } from '../core/pair/drops.js';
import { PAIR_VIOLATIONS as ETCP_PAIR_VIOLATIONS } from '../core/etcp/drops.js';
import { WIRE_DROP_NAMES } from '../wire/constants.js';

const KV = [{ name: 'kv', kind: 'map' as const }];

// Collapse: both ends commit the same candidates in the same order, conflicts rejected identically.
describe('collapse', () => {
  it('forms aligned, commits from both ends, same (version, hash)', () => {
    const h = harness(KV);
    expect(h.settle()).toBe(true);
    proposeNow(h, h.a, 'kv', set('x', '1'));
    proposeNow(h, h.b, 'kv', set('y', '2'));
    expect(h.settle()).toBe(true);
    const sa = h.a.pair.register('kv').state as MapState;
    const sb = h.b.pair.register('kv').state as MapState;
    expect(new TextDecoder().decode(sb.get(enc('x'))!.value)).toBe('1');
    expect(new TextDecoder().decode(sa.get(enc('y'))!.value)).toBe('2');
    expect(h.a.pair.register('kv').version).toBeGreaterThanOrEqual(2);
  });

  it('conflicting cas: exactly one commits, the loser is told, both ends record the same verdicts', () => {
    const h = harness(KV);
    h.settle();
    const ia = proposeNow(h, h.a, 'kv', cas('leader', 0, 'A'));
    const ib = proposeNow(h, h.b, 'kv', cas('leader', 0, 'B'));
    expect(h.settle()).toBe(true);
    const outcomes = h.events
      .filter((e) => e.ev.type === 'outcome')
      .map((e) => e.ev as { origin: number; seq: number; verdict: string; reason?: string });
    const oa = outcomes.find((o) => o.origin === ia.origin && o.seq === ia.seq)!;
    const ob = outcomes.find((o) => o.origin === ib.origin && o.seq === ib.seq)!;
    expect([oa.verdict, ob.verdict].sort()).toEqual(['committed', 'rejected']);
    expect([oa.reason, ob.reason]).toContain('cas-version-mismatch');
    // Both ends saw the same collapse entries for every version.
    const sig = (ep: string) =>
      h.events
        .filter((e) => e.ep === ep && e.ev.type === 'collapse')
        .map((e) => {
          const c = e.ev as { version: number; entries: readonly { origin: number; seq: number; verdict: string }[] };
          return `${c.version}:${c.entries.map((x) => `${x.origin}/${x.seq}/${x.verdict}`).join(',')}`;
        });
    expect(sig('B')).toEqual(sig('A'));
  });

  it('append at a stale offset is rejected at both ends, the stream stays identical', () => {
    const h = harness([{ name: 's', kind: 'stream' }]);
    h.settle();
    proposeNow(h, h.a, 's', append(0, 'hello '));
    proposeNow(h, h.b, 's', append(0, 'world'));
    expect(h.settle()).toBe(true);
    const sa = h.a.pair.register('s').state as StreamState;
    const sb = h.b.pair.register('s').state as StreamState;
    expect(new TextDecoder().decode(sa.read(0, 100))).toBe('hello ');
    expect(sb.read(0, 100)).toEqual(sa.read(0, 100));
    const rejected = h.events.filter((e) => e.ev.type === 'outcome' && e.ev.verdict === 'rejected');
    expect(rejected).toHaveLength(1);
  });
});

// Local writes are refused clearly, never dropped silently.
describe('proposals', () => {
  it('a follower with a long non-ASCII register name gets every proposal across (packing counts bytes)', () => {
    const name = `${'é'.repeat(31)}x`; // 63 bytes, 32 characters
    const h = harness([{ name, kind: 'map', maxPending: 512 }]);
    h.settle();
    for (let i = 0; i < 300; i++) h.b.pair.propose(h.world.now, name, set(`k${i}`, 'v'.repeat(30)));
    h.world.drain(h.b);
    expect(h.settle()).toBe(true);
    expect(h.a.pair.register(name).state.size()).toBe(300);
  });

  it('register names must be 1..64 UTF-8 bytes', () => {
    expect(() => harness([{ name: 'é'.repeat(33), kind: 'map' }])).toThrowError(/66 bytes; it must be 1\.\.64/);
    expect(() => harness([{ name: '', kind: 'map' }])).toThrowError(/must be 1\.\.64/);
  });

  it('a full candidate buffer refuses with buffer-full', () => {
    const h = harness([{ name: 'kv', kind: 'map', maxPending: 3 }]);
    h.settle();
    h.cut();
    for (let i = 0; i < 3; i++) h.b.pair.propose(h.world.now, 'kv', set(`k${i}`, 'v'));
    expect(() => h.b.pair.propose(h.world.now, 'kv', set('k3', 'v'))).toThrowError(/candidate buffer full \(3 pending/);
    try {
      h.b.pair.propose(h.world.now, 'kv', set('k3', 'v'));
    } catch (e) {
      expect((e as ProposeError).code).toBe('buffer-full');
    }
  });

  it('freeze policy refuses writes on the follower while decoherent; reads still serve the committed version', () => {
    const h = harness([{ name: 'kv', kind: 'map', policy: 'freeze' }]);
    h.settle();
    proposeNow(h, h.a, 'kv', set('x', 'committed'));
    h.settle();
    h.cut();
    h.world.run(h.world.now + 6000);
    expect(h.b.pair.state).toBe(PairState.DECOHERENT);
    expect(() => h.b.pair.propose(h.world.now, 'kv', set('x', 'nope'))).toThrowError(/frozen while the pair is DECOHERENT/);
    expect(new TextDecoder().decode((h.b.pair.register('kv').state as MapState).get(enc('x'))!.value)).toBe('committed');
  });

  it('invalid deltas are refused with the reason', () => {
    const h = harness(KV);
    expect(() => h.a.pair.propose(0, 'kv', { op: DeltaOp.Set, key: new Uint8Array(0), value: enc('v') })).toThrowError(/key is empty/);
    expect(() => h.a.pair.propose(0, 'kv', { op: DeltaOp.Append, offset: 0, data: enc('x') })).toThrowError(
      /map register cannot take delta op Append/,
    );
    expect(() => h.a.pair.propose(0, 'nope', set('k', 'v'))).toThrowError(/no register named nope/);
  });
});

// Decoherence and the three re-entanglement paths.
describe('decoherence and re-entanglement', () => {
  it('silence decoheres both ends; the sequencer keeps committing, the follower buffers; log path re-entangles', () => {
    const h = harness(KV);
    h.settle();
    h.cut();
    for (let i = 0; i < 50; i++)
      h.world.at(h.world.now + 10 + i * 20, () => void h.a.pair.propose(h.world.now, 'kv', set(`a${i}`, `${i}`)));
    h.world.at(h.world.now + 2000, () => void h.b.pair.propose(h.world.now, 'kv', set('b-buffered', '1')));
    h.world.run(h.world.now + 7000);
    expect(h.a.pair.state).toBe(PairState.DECOHERENT);
    expect(h.b.pair.state).toBe(PairState.DECOHERENT);
    expect(h.a.pair.register('kv').version).toBeGreaterThanOrEqual(50);
    expect(h.b.pair.register('kv').version).toBe(0);
    const before = h.a.pair.stats.reentangleBytes + h.b.pair.stats.reentangleBytes;
    h.heal();
    expect(h.settle()).toBe(true);
    const methods = h.events.filter((e) => e.ev.type === 'reentangled').map((e) => (e.ev as { method: string }).method);
    expect(methods).toEqual(['log', 'log']);
    expect((h.a.pair.register('kv').state as MapState).get(enc('b-buffered'))).toBeDefined();
    // Only the missed collapses crossed: a small multiple of 50 deltas, nothing like a snapshot.
    expect(h.a.pair.stats.reentangleBytes + h.b.pair.stats.reentangleBytes - before).toBeLessThan(50 * 120);
    expect(h.a.pair.stats.fullTransfers + h.b.pair.stats.fullTransfers).toBe(0);
  });

  it('a gap whose missed collapses rewrite a few keys is reconciled, one of distinct keys sent as a log diff (§8.2.1)', () => {
    const run = (distinct: number): { method: string; bytes: number; logBytes: number; diffs: number } => {
      const h = harness(KV);
      h.settle();
      for (let i = 0; i < 100; i++) proposeNow(h, h.a, 'kv', set(`k${i}`, 'v0'));
      expect(h.settle()).toBe(true);
      h.cut();
      for (let i = 0; i < 600; i++)
        h.world.at(h.world.now + 1 + i, () => void h.a.pair.propose(h.world.now, 'kv', set(`k${i % distinct}`, `v${i}`)));
      h.world.run(h.world.now + 7000);
      const mark = h.events.length;
      const before = h.world.net.stats.bytesSent;
      const logBytes = h.a.pair.register('kv').log.sizeBytes;
      const diffs = h.a.pair.register('kv').sequencer!.responder.diffsBuilt;
      h.heal();
      expect(h.settle()).toBe(true);
      const m = h.events.slice(mark).find((e) => e.ep === 'B' && e.ev.type === 'reentangled')!.ev as { method: string };
      return {
        method: m.method,
        bytes: h.world.net.stats.bytesSent - before,
        logBytes,
        diffs: h.a.pair.register('kv').sequencer!.responder.diffsBuilt - diffs,
      };
    };
    const hot = run(5); // 600 collapses over 5 keys: 5 keys once, far cheaper than the records
    expect(hot.method).toBe('reconcile');
    const spread = run(600); // 600 collapses, each a different key: each key once still beats each record (no hash, version, origin)
    expect(spread.method).toBe('reconcile');
    expect(spread.diffs).toBe(1);
    expect(spread.bytes).toBeLessThan(spread.logBytes);
    expect(hot.bytes).toBeLessThan(spread.bytes / 3);
  });

  it('a gap the log no longer covers is reconciled by range hashes', () => {
    const h = harness([{ name: 'kv', kind: 'map', log: { maxRecords: 4, maxBytes: 1 << 20 } }]);
    h.settle();
    for (let i = 0; i < 200; i++) proposeNow(h, h.a, 'kv', set(`k${i}`, 'v0'));
    expect(h.settle()).toBe(true);
    h.cut();
    for (let i = 0; i < 20; i++)
      h.world.at(h.world.now + 10 + i * 10, () => void h.a.pair.propose(h.world.now, 'kv', set(`k${i * 7}`, 'v1')));
    h.world.run(h.world.now + 7000);
    const mark = h.events.length;
    h.heal();
    expect(h.settle()).toBe(true);
    const b = h.events
      .slice(mark)
      .filter((e) => e.ep === 'B' && e.ev.type === 'reentangled')
      .map((e) => (e.ev as { method: string }).method);
    expect(b).toEqual(['reconcile']);
    expect(h.b.pair.stats.fullTransfers).toBe(0);
  });

  it('a hash mismatch (corrupted follower) is detected and repaired without a full transfer', () => {
    const h = harness(KV);
    h.settle();
    for (let i = 0; i < 30; i++) proposeNow(h, h.a, 'kv', set(`k${i}`, 'v'));
    h.settle();
    (h.b.pair.register('kv').state as MapState).put(enc('k3'), enc('garbage'), 1);
    proposeNow(h, h.a, 'kv', set('trigger', 'x'));
    expect(h.settle()).toBe(true);
    const causes = h.events.filter((e) => e.ev.type === 'lifecycle').map((e) => (e.ev as { cause: string }).cause);
    expect(causes.some((c) => c.startsWith('hash-mismatch'))).toBe(true);
    expect(new TextDecoder().decode((h.b.pair.register('kv').state as MapState).get(enc('k3'))!.value)).toBe('v');
  });

  it("a stream that is not a prefix of the sequencer's falls back to a counted full transfer", () => {
    const h = harness([{ name: 's', kind: 'stream' }]);
    h.settle();
    proposeNow(h, h.a, 's', append(0, 'abc'));
    h.settle();
    (h.b.pair.register('s').state as StreamState).appendBytes(enc('xyz-diverged-and-longer'));
    proposeNow(h, h.a, 's', append(3, 'def'));
    expect(h.settle()).toBe(true);
    expect(h.b.pair.stats.fullTransfers).toBe(1);
    expect(new TextDecoder().decode((h.b.pair.register('s').state as StreamState).read(0, 100))).toBe('abcdef');
  });

  it('close is a lifecycle transition at both ends', () => {
    const h = harness(KV);
    h.settle();
    h.a.pair.close(h.world.now, 'operator');
    h.world.drain(h.a);
    h.world.run(h.world.now + 100);
    expect(h.a.pair.state).toBe(PairState.CLOSED);
    expect(h.b.pair.state).toBe(PairState.CLOSED);
    expect(() => h.a.pair.propose(h.world.now, 'kv', set('x', '1'))).toThrowError(/pair is closed/);
  });
});

// Bad input gets a counted drop, never a crash.
describe('inbound garbage', () => {
  it('counts malformed, foreign and unknown-register frames by reason and keeps syncing', () => {
    const h = harness(KV);
    h.settle();
    const p = h.b.pair;
    expect(p.handleDatagram(h.world.now, new Uint8Array([1, 2, 3]))).toBe(false);
    const good = new Uint8Array(24);
    good.set([0x53, 0x50, 1, 4, 0, 20, 0, 4, 0, 0, 0, 99]);
    expect(p.handleDatagram(h.world.now, good)).toBe(false); // pair 99 is not ours
    expect(p.stats.drops['truncated']).toBe(1);
    expect(p.stats.drops['unknown-pair']).toBe(1);
    proposeNow(h, h.a, 'kv', set('still', 'works'));
    expect(h.settle()).toBe(true);
  });

  it('every drop a pair counts is a named PairDrop, and the violations the peer table counts are among them', () => {
    const h = harness(KV);
    h.settle();
    const p = h.b.pair;
    p.handleDatagram(h.world.now, new Uint8Array([1, 2, 3]));
    p.handlePayload(h.world.now, 1000, new Uint8Array([0xff, 0xff, 0xff]));
    const candidates = [{ origin: 1, seq: 1, delta: set('x', '1') }];
    p.handlePayload(h.world.now, 1001, encodeMessage({ type: MsgType.Propose, register: 'kv', base: 1, candidates })); // b is the follower
    p.handlePayload(h.world.now, 1002, encodeMessage({ type: MsgType.Propose, register: 'nope', base: 1, candidates }));
    const known = new Set<string>([...PAIR_DROPS, ...WIRE_DROP_NAMES]);
    const counted = Object.keys(p.stats.drops);
    expect(counted).toEqual(expect.arrayContaining(['truncated', 'propose-to-follower', 'unknown-register']));
    for (const r of counted) expect(known).toContain(r);
    for (const v of PAIR_VIOLATIONS) expect(PAIR_DROPS).toContain(v);
    expect(ETCP_PAIR_VIOLATIONS).toBe(PAIR_VIOLATIONS); // one list, re-exported where the violation check is
  });
});

describe('a follower that lost its data', () => {
  it('candidates it proposed with reused sequence numbers are rejected, never reported committed', async () => {
    const { SimWorld } = await import('../testing/sim/world.js');
    const { HalfPair } = await import('../core/pair/halfpair.js');
    const world = new SimWorld(3, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 2 });
    const regs = [{ name: 'kv', kind: 'map' as const, log: { maxRecords: 4, maxBytes: 1 << 20 } }];
    const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 9, registers: regs }, 0);
    // The sequencer has already decided the follower's candidates up to seq 10.
    a.register('kv').restore(20, (st) => (st as MapState).put(enc('x'), enc('1'), 20), new Map([[2, 10]]));
    const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 9, registers: regs }, 0); // wiped: starts at seq 1
    const ids = [b.propose(0, 'kv', set('lost-1', 'v')), b.propose(0, 'kv', set('lost-2', 'v'))];
    const outcomes: { seq: number; verdict: string; reason?: string }[] = [];
    world.onEvent = (ep, ev) => {
      if (ep.name === 'B' && ev.type === 'outcome') outcomes.push(ev);
    };
    world.adopt(['A', 'B'], [a, b]);
    world.run(10_000, () => outcomes.length === 2);
    expect(outcomes.map((o) => [o.seq, o.verdict, o.reason])).toEqual(ids.map((id) => [id.seq, 'rejected', 'sequence-reused']));
    expect((a.register('kv').state as MapState).get(enc('lost-1'))).toBeUndefined();
    // New writes continue above the sequencer's mark and commit.
    const next = b.propose(world.now, 'kv', set('after', 'v'));
    expect(next.seq).toBeGreaterThan(10);
    world.drain(world.endpoints[1]);
    world.run(world.now + 10_000, () => (a.register('kv').state as MapState).get(enc('after')) !== undefined);
    expect((a.register('kv').state as MapState).get(enc('after'))).toBeDefined();
  });
});

// Forged extremes from the authorised peer (found by test/estp-fuzz.test.ts), one per attack.
describe('forged extremes from the peer', () => {
  const inject = (h: ReturnType<typeof harness>, to: 'a' | 'b', m: Message): void => {
    const ep = h[to];
    ep.pair.handlePayload(h.world.now, 10_000_000 + Math.floor(h.world.now), encodeMessage(m));
    h.world.drain(ep);
  };

  // (Within the send window, 256 versions, a forged Status is indistinguishable from a
  // reordered one: the follower then waits for the sequencer to pass it, writes committing.)
  it('a forged sequencer Status beyond the send window does not wedge the follower in REENTANGLING', () => {
    const h = harness(KV);
    h.settle();
    const r = h.a.pair.register('kv');
    h.cut();
    h.world.run(h.world.now + 6000); // decohered: the follower takes its target from the next Status
    inject(h, 'b', { ...r.status(), version: r.version + 5000 });
    h.heal();
    expect(h.settle(30_000)).toBe(true);
  });

  it('a forged follower Status far ahead does not wedge the sequencer (its version is no staleness reference)', () => {
    const h = harness([
      { name: 'kv', kind: 'map' },
      { name: 'idle', kind: 'map' },
    ]);
    h.settle();
    h.cut();
    h.world.run(h.world.now + 6000);
    inject(h, 'a', { ...h.b.pair.register('idle').status(), version: 120 });
    h.heal();
    expect(h.settle(30_000)).toBe(true);
  });

  it('an Ack naming a packet from the future does not stop RTT sampling', () => {
    const h = harness(KV);
    h.settle();
    inject(h, 'a', { type: MsgType.Ack, largestPn: 2 ** 53 - 1, ackDelayMs: 0 });
    h.world.net.setLink('A', 'B', true);
    const before = h.a.pair.rttMs;
    for (let i = 0; i < 20; i++) proposeNow(h, h.a, 'kv', set(`k${i}`, 'v'));
    expect(h.settle()).toBe(true);
    // Samples keep coming: the estimate moved off its old value (links are 1-5 ms).
    expect(h.a.pair.rttMs).not.toBe(before);
  });

  it('a forged causal mark of 2^53-1 for the follower refuses its writes; nothing throws from pollTransmit', () => {
    const h = harness([{ name: 'kv', kind: 'map', log: { maxRecords: 4, maxBytes: 1 << 20 } }]);
    h.settle();
    const rb = h.b.pair.register('kv');
    // The follower adopts a pin whose marks claim its own origin decided everything.
    rb.follower!.install(h.world.now, {
      method: 'reconcile',
      version: rb.version,
      change: { kind: 'edit-map', deletes: [], puts: [] },
      origins: new Map([[2, 2 ** 53 - 1]]),
      rejections: new Map(),
    });
    expect(() => h.b.pair.propose(h.world.now, 'kv', set('x', 'y'))).toThrow(ProposeError);
    expect(() => h.world.drain(h.b)).not.toThrow();
  });

  it('a Propose whose base jumps past any restart gap is dropped; the follower keeps committing', () => {
    const h = harness(KV);
    h.settle();
    inject(h, 'a', {
      type: MsgType.Propose,
      register: 'kv',
      base: 2 ** 53 - 1,
      candidates: [{ origin: 2, seq: 2 ** 53 - 1, delta: set('evil', 'x') }],
    });
    expect(h.a.pair.stats.drops['beyond-window']).toBe(1);
    proposeNow(h, h.b, 'kv', set('honest', 'y'));
    expect(h.settle()).toBe(true);
    expect((h.a.pair.register('kv').state as MapState).get(enc('honest'))).toBeDefined();
  });
});

describe('the sequencer rebuilds its §8.5 rejections at a restart', () => {
  /** A Collapse record whose entries are all rejected (the state, and so its hash, unchanged). */
  const rejectedRecord = (version: number, hash: { hi: number; lo: number }, seqs: number[], origin = 2) =>
    encodeMessage({
      type: MsgType.Collapse,
      register: 'kv',
      version,
      hash,
      entries: seqs.map((seq) => ({ origin, seq, verdict: 'rejected' as const, reason: RejectReason.CasMismatch })),
    });

  it('from the snapshot and the replayed records, the most recent 2·maxPending kept; a follower keeps none', async () => {
    const { HalfPair } = await import('../core/pair/halfpair.js');
    const regs = [{ name: 'kv', kind: 'map' as const, maxPending: 4 }];
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 9, registers: regs }, 0).register('kv');
    const h = { hi: seq.hash.hi, lo: seq.hash.lo };
    seq.restore(3, () => {}, new Map([[2, 3]]), 0, new Map([[3, RejectReason.QuotaExceeded]]));
    seq.replayRecord(rejectedRecord(4, h, [4, 5]));
    seq.replayRecord(rejectedRecord(5, h, [1], 1)); // its own candidate: not the peer's list
    expect([...seq.peerRejections]).toEqual([
      [3, RejectReason.QuotaExceeded],
      [4, RejectReason.CasMismatch],
      [5, RejectReason.CasMismatch],
    ]);
    seq.replayRecord(rejectedRecord(6, h, [6, 7, 8, 9, 10, 11]));
    expect([...seq.peerRejections.keys()]).toEqual([4, 5, 6, 7, 8, 9, 10, 11]); // 2 · maxPending, the oldest dropped
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 9, registers: regs }, 0).register('kv');
    fol.restore(3, () => {}, new Map([[2, 3]]), 0, new Map([[3, RejectReason.QuotaExceeded]]));
    fol.replayRecord(rejectedRecord(4, h, [4, 5]));
    expect(fol.peerRejections.size).toBe(0);
  });

  it('kept in seq order whatever order a load gives them; a Status releases those up to its resolvedSeq, only when it advances', async () => {
    const { HalfPair } = await import('../core/pair/halfpair.js');
    const { peerManifest } = await import('./helpers.js');
    const regs = [{ name: 'kv', kind: 'map' as const, maxPending: 8 }];
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 9, registers: regs }, 0);
    const seq = pair.register('kv');
    const h = { hi: seq.hash.hi, lo: seq.hash.lo };
    seq.restore(
      3,
      () => {},
      new Map([[2, 9]]),
      0,
      new Map([
        [7, RejectReason.QuotaExceeded],
        [3, RejectReason.QuotaExceeded],
      ]),
    );
    seq.replayRecord(rejectedRecord(4, h, [5])); // below one kept: no store written by collapse does this
    seq.replayRecord(rejectedRecord(5, h, [8]));
    expect([...seq.peerRejections.keys()]).toEqual([3, 5, 7, 8]);
    let pn = 1;
    pair.handlePayload(1, pn++, peerManifest(regs));
    const status = (resolvedSeq: number) =>
      pair.handlePayload(
        1,
        pn++,
        encodeMessage({ type: MsgType.Status, register: 'kv', version: 5, hash: h, logBase: 0, resolvedSeq, held: [] }),
      );
    status(5);
    expect([...seq.peerRejections.keys()]).toEqual([7, 8]);
    status(4); // no advance: nothing more released
    expect([...seq.peerRejections.keys()]).toEqual([7, 8]);
    status(8);
    expect(seq.peerRejections.size).toBe(0);
  });
});

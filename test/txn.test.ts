/**
 * Transactions (issue 15): a pair txn (DeltaOp 5) is decided whole by the collapse at both ends,
 * across cuts and restarts; a hostile txn is dropped and counted; the library's txn() and the
 * typed domain API (openDomain) against running spookd.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeltaOp, decodeDelta, encodeDelta, encodedDeltaLen, validateDelta, type Delta, type SimpleDelta } from '../wire/delta.js';
import { WireError } from '../wire/errors.js';
import { MAX_DELTA_LEN, MAX_TXN_OPS } from '../wire/constants.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { decodeCandidate, encodeCandidate } from '../core/qn/state.js';
import { DiskStore } from '../drivers/store/store.js';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';
import { append, cas, del, enc, harness, proposeNow, set, type Harness } from './helpers.js';

const KV = [{ name: 'kv', kind: 'map' as const }];
const txn = (...ops: Delta[]): Delta => ({ op: DeltaOp.Txn, ops: ops as SimpleDelta[] });
const text = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);

const dirs: string[] = [];
const tmp = (p: string): string => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** The WireError a decode throws (anything else fails the test). */
function wireFault(f: () => unknown): WireError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WireError);
    return e as WireError;
  }
  throw new Error('decoded without a fault');
}

describe('txn delta encoding (PROTOCOL.md §4.2)', () => {
  const good = txn(set('a', '1'), del('b'), cas('c', 3, 'x'));

  it('round-trips canonically; encodedDeltaLen is exact; decoded only where a txn is allowed', () => {
    const b = encodeDelta(good);
    expect(b.length).toBe(encodedDeltaLen(good));
    expect(b[0]).toBe(5);
    expect(b[1]).toBe(3);
    const back = decodeDelta(b, true);
    expect(encodeDelta(back)).toEqual(b);
    expect(back).toMatchObject({ op: DeltaOp.Txn, ops: [{ op: DeltaOp.Set }, { op: DeltaOp.Del }, { op: DeltaOp.Cas, expect: 3 }] });
    // Elsewhere (a domain candidate, inside a txn) op 5 is not a delta.
    expect(wireFault(() => decodeDelta(b)).field).toBe('delta.op');
    const cand = encodeCandidate({ origin: 1, seq: 1, ops: [{ register: 'kv', delta: good }] });
    expect(wireFault(() => decodeCandidate(cand)).field).toBe('candidate.delta.op');
  });

  it('refuses 0 or more than 256 ops, nesting, a key twice, mixed kinds, oversize, and every truncation', () => {
    // One-byte keys (3 bytes an op): 256 ops fit the size limit, so the count is what is refused.
    const ops = (n: number): SimpleDelta[] =>
      Array.from({ length: n }, (_, i) => ({ op: DeltaOp.Del, key: new Uint8Array([i % 256, ...(i >= 256 ? [1] : [])]) }));
    const at = (d: Delta): string | undefined => wireFault(() => decodeDelta(encodeDelta(d), true)).field;
    expect(at({ op: DeltaOp.Txn, ops: [] })).toBe('delta.ops');
    expect(at({ op: DeltaOp.Txn, ops: ops(MAX_TXN_OPS + 1) })).toBe('delta.ops');
    expect(() => decodeDelta(encodeDelta({ op: DeltaOp.Txn, ops: ops(MAX_TXN_OPS) }), true)).not.toThrow();
    expect(at(txn(set('a', '1'), txn(set('b', '2'))))).toBe('delta.ops[1].op');
    expect(at(txn(set('a', '1'), cas('a', 0, '2')))).toBe('delta.ops[1]');
    expect(at(txn(append(0, 'x'), set('a', '1')))).toBe('delta.ops[1]');
    expect(at(txn(set('a', 'v'.repeat(MAX_DELTA_LEN - 20)), set('b', 'v'.repeat(100))))).toBe('delta');
    const b = encodeDelta(good);
    for (let n = 0; n < b.length; n++) wireFault(() => decodeDelta(b.subarray(0, n), true));
    // The same checks refuse a local proposal, naming the op.
    expect(() => validateDelta(txn(set('a', '1'), del('a')))).toThrow(/txn op 1: a key the txn already writes/);
    expect(() => validateDelta({ op: DeltaOp.Txn, ops: [] })).toThrow(/0 ops/);
    expect(() => validateDelta(txn(set('', '1')))).toThrow(/txn op 0: key is empty/);
    expect(() => validateDelta(good)).not.toThrow();
  });
});

/** Both ends' (version, hash) of a register. */
const ends = (h: Harness, r = 'kv'): unknown[] =>
  [h.a, h.b].map((ep) => {
    const x = ep.pair.register(r);
    return [x.version, x.hash.hi, x.hash.lo];
  });

const outcomeOf = (h: Harness, id: { origin: number; seq: number }) =>
  h.events.map((e) => e.ev).find((ev) => ev.type === 'outcome' && ev.origin === id.origin && ev.seq === id.seq);

describe('pair txn: atomic at both ends', () => {
  for (const from of ['sequencer', 'follower'] as const) {
    it(`from the ${from}: committed whole at one version, hash as its ops applied one by one; a failed guard changes nothing and names its op`, () => {
      const h = harness(KV);
      expect(h.settle()).toBe(true);
      const ep = from === 'sequencer' ? h.a : h.b;
      proposeNow(h, h.a, 'kv', set('x', 'old'));
      expect(h.settle()).toBe(true);
      const v1 = h.a.pair.register('kv').version;
      const ops = [set('a', '1'), set('b', '2'), del('x'), cas('c', 0, '3')];
      const id = proposeNow(h, ep, 'kv', txn(...ops));
      expect(h.settle()).toBe(true);
      expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
      const v2 = h.a.pair.register('kv').version;
      for (const e of [h.a, h.b]) {
        const st = e.pair.register('kv').state as MapState;
        expect(['a', 'b', 'c'].map((k) => [text(st.get(enc(k))?.value), st.get(enc(k))?.version])).toEqual([
          ['1', v2],
          ['2', v2],
          ['3', v2],
        ]);
        expect(st.get(enc('x'))).toBeUndefined();
      }
      const [ea, eb] = ends(h);
      expect(eb).toEqual(ea);
      // The O(1) hash contract: the same as applying the ops one by one at that version.
      const replay = new MapState(1234);
      replay.apply(set('x', 'old'), v1);
      for (const o of ops) replay.apply(o, v2);
      expect([v2, replay.hash.hi, replay.hash.lo]).toEqual(ea);

      // A guard fails (op 1): nothing changes at either end; the outcome says which op.
      const before = ends(h).map((x) => (x as number[]).slice(1));
      const bad = proposeNow(h, ep, 'kv', txn(set('a', 'NEW'), cas('b', 999, 'NEW'), del('c')));
      expect(h.settle()).toBe(true);
      expect(outcomeOf(h, bad)).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', op: 1 });
      expect(ends(h).map((x) => (x as number[]).slice(1))).toEqual(before);
      for (const e of [h.a, h.b]) {
        const st = e.pair.register('kv').state as MapState;
        expect(['a', 'b', 'c'].map((k) => text(st.get(enc(k))?.value))).toEqual(['1', '2', '3']);
      }
    });
  }

  it('a stream txn: chained appends commit together; a wrong offset at op 1 rejects all (op named)', () => {
    const h = harness([{ name: 's', kind: 'stream' }]);
    h.settle();
    const ok = proposeNow(h, h.b, 's', txn(append(0, 'abc'), append(3, 'def')));
    expect(h.settle()).toBe(true);
    const bad = proposeNow(h, h.b, 's', txn(append(6, 'g'), append(6, 'h')));
    expect(h.settle()).toBe(true);
    expect(outcomeOf(h, ok)).toMatchObject({ verdict: 'committed' });
    expect(outcomeOf(h, bad)).toMatchObject({ verdict: 'rejected', reason: 'append-offset-mismatch', op: 1 });
    for (const e of [h.a, h.b]) expect(text((e.pair.register('s').state as StreamState).read(0, 100))).toBe('abcdef');
    expect(ends(h, 's')[1]).toEqual(ends(h, 's')[0]);
    // The local end refuses a txn of the wrong kind before it is a candidate.
    expect(() => h.b.pair.propose(h.world.now, 's', txn(set('k', 'v')))).toThrow(/cannot take delta op Set/);
  });

  it('across a cut past the silence timeout: after re-entanglement both ends agree, each txn whole or absent', () => {
    const h = harness([{ name: 'kv', kind: 'map', log: { maxRecords: 4, maxBytes: 1 << 20 } }]);
    h.settle();
    proposeNow(h, h.a, 'kv', set('k0', 'base'));
    h.settle();
    const k0 = (h.a.pair.register('kv').state as MapState).get(enc('k0'))!.version;
    h.cut();
    // The follower's txns wait for the link: one guarded on k0, which the sequencer changes meanwhile.
    const lost = proposeNow(h, h.b, 'kv', txn(cas('k0', k0, 'B'), set('k1', 'B'), set('k2', 'B')));
    const won = proposeNow(h, h.b, 'kv', txn(set('k3', 'B'), set('k4', 'B')));
    // The sequencer commits txns and single writes past its log bound: the follower must reconcile.
    proposeNow(h, h.a, 'kv', set('k0', 'A'));
    for (let i = 0; i < 10; i++) proposeNow(h, h.a, 'kv', txn(set(`a${i}`, `${i}`), set(`b${i}`, `${i}`)));
    h.world.run(h.world.now + 10_000);
    h.heal();
    expect(h.settle(120_000)).toBe(true);
    expect(h.b.pair.stats.reentanglements).toBeGreaterThan(0);
    expect(ends(h)[1]).toEqual(ends(h)[0]);
    expect(outcomeOf(h, lost)).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch' });
    expect(outcomeOf(h, won)).toMatchObject({ verdict: 'committed' });
    for (const e of [h.a, h.b]) {
      const st = e.pair.register('kv').state as MapState;
      expect(['k0', 'k1', 'k2', 'k3', 'k4'].map((k) => text(st.get(enc(k))?.value))).toEqual(['A', undefined, undefined, 'B', 'B']);
      expect(st.get(enc('k3'))!.version).toBe(st.get(enc('k4'))!.version);
      for (let i = 0; i < 10; i++) expect(st.get(enc(`a${i}`))!.version).toBe(st.get(enc(`b${i}`))!.version);
    }
  });

  it('120 simulated seeds of txns at 30% loss with cuts and reconciliation: convergence, nothing committed lost', () => {
    const s = runSeeds(120, 1, { ...SIM_DEFAULTS, loss: 0.3, dup: 0.05, reorder: 0.2, cuts: true, txn: 0.4 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(120);
    expect(s.lostCommits).toBe(0);
    expect(s.rejected).toBeGreaterThan(50);
    expect(s.reconciles).toBeGreaterThan(5);
  });

  it('60 simulated seeds of txns with crashes and store faults: what was acknowledged survives', () => {
    const s = runSeeds(60, 1, { ...SIM_DEFAULTS, crashes: true, storeFaults: 0.01, txn: 0.4 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(60);
    expect(s.lostCommits).toBe(0);
  });
});

describe('a hostile peer', () => {
  it('a Propose or Collapse with a malformed txn (too many ops, nested, truncated) is dropped and counted, never thrown', () => {
    const h = harness(KV);
    h.settle();
    const ops = (n: number): SimpleDelta[] => Array.from({ length: n }, (_, i) => ({ op: DeltaOp.Del, key: enc(`k${i}`) }));
    const bad: Delta[] = [
      { op: DeltaOp.Txn, ops: ops(MAX_TXN_OPS + 1) },
      txn(set('a', '1'), txn(set('b', '2'))),
      { op: DeltaOp.Txn, ops: [] },
    ];
    const payloads = bad.flatMap((delta) => [
      encodeMessage({ type: MsgType.Propose, register: 'kv', base: 1, candidates: [{ origin: 2, seq: 1, delta }] }),
      encodeMessage({
        type: MsgType.Collapse,
        register: 'kv',
        version: 99,
        hash: { hi: 0, lo: 0 },
        entries: [{ origin: 1, seq: 1, verdict: 'committed', delta }],
      }),
    ]);
    // Truncated: a txn that claims 3 ops and carries 2 (the message length itself is right).
    const two = encodeMessage({
      type: MsgType.Propose,
      register: 'kv',
      base: 1,
      candidates: [{ origin: 2, seq: 1, delta: txn(del('a'), del('b')) }],
    });
    const i = two.indexOf(5, two.length - 9);
    expect(two[i + 1]).toBe(2);
    const short = two.slice();
    short[i + 1] = 3;
    payloads.push(short);
    const drops = (): number => Object.values(h.a.pair.stats.drops).reduce((x, y) => x + y, 0);
    const before = drops();
    let pn = 5000;
    for (const p of payloads) {
      expect(() => h.a.pair.handlePayload(h.world.now, pn++, p)).not.toThrow();
      expect(() => h.b.pair.handlePayload(h.world.now, pn++, p)).not.toThrow();
    }
    expect(drops() - before).toBeGreaterThanOrEqual(payloads.length);
    expect(h.a.pair.stats.drops['malformed-payload'] ?? 0).toBeGreaterThanOrEqual(6);
    expect(h.a.pair.register('kv').state.size()).toBe(0);
    // The pair goes on.
    const id = proposeNow(h, h.b, 'kv', txn(set('still', 'works'), set('and', 'atomic')));
    expect(h.settle()).toBe(true);
    expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
    expect(ends(h)[1]).toEqual(ends(h)[0]);
  });
});

describe('txn in the journal', () => {
  /** A pair over a store in `dir`, loaded from it (as spookd starts). */
  function open(dir: string, localId = 1) {
    const store = new DiskStore(dir, 'always');
    const pair = new HalfPair({ pairId: 1, localId, peerId: 3 - localId, seed: 77, registers: KV, writes: 'driver' }, 0);
    for (const r of pair.registers.values()) store.load(r);
    return { store, pair };
  }

  it('a committed txn survives a restart (log replay, same version and hash); a pending one is proposed again', () => {
    const dir = tmp('spook-txn-');
    const a = open(dir);
    a.pair.propose(0, 'kv', txn(set('a', '1'), set('b', '2'), cas('c', 0, '3')));
    a.pair.propose(0, 'kv', txn(set('a', 'X'), cas('b', 42, 'X')));
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    const before = [a.pair.register('kv').version, a.pair.register('kv').hash.hi, a.pair.register('kv').hash.lo];
    a.store.close();
    const b = open(dir);
    const r = b.pair.register('kv');
    expect([r.version, r.hash.hi, r.hash.lo]).toEqual(before);
    const st = r.state as MapState;
    expect(['a', 'b', 'c'].map((k) => text(st.get(enc(k))?.value))).toEqual(['1', '2', '3']);
    b.store.close();

    // A follower's own txn is durable before it is told pending, and comes back after a restart.
    const fdir = tmp('spook-txn-f-');
    const f = open(fdir, 2);
    f.pair.propose(0, 'kv', txn(set('p', '1'), set('q', '2')));
    f.store.persist(f.pair.pollWrites());
    f.pair.writesDurable();
    f.store.close();
    const g = open(fdir, 2);
    expect(g.pair.register('kv').pendingCount).toBe(1);
    g.store.close();
  });
});

/**
 * Transactions (issue 15): a pair txn (DeltaOp 5) is decided whole by the collapse at both ends,
 * across cuts and restarts; a hostile txn is dropped and counted; the library's txn() and the
 * typed domain API (openDomain) against running spookd.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeltaOp, decodeDelta, encodeDelta, encodedDeltaLen, validateDelta, type Delta, type SimpleDelta } from '../wire/delta.js';
import type { EntryDelta } from '../wire/cross.js';
import { MAX_DELTA_LEN, MAX_TXN_OPS, MAX_VALUE_LEN } from '../wire/constants.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { ProposeError } from '../core/pair/replica.js';
import { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { decodeCandidate, encodeCandidate } from '../core/qn/state.js';
import { DiskStore } from '../drivers/store/store.js';
import { runSeeds } from '../testing/sim/batch.js';
import { EstpFuzzer } from '../testing/sim/fuzz-estp.js';
import { SimWorld } from '../testing/sim/world.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';
import { append, cas, del, enc, harness, proposeNow, set, type Harness, expectSeedsClean, wireFault } from './helpers.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { openRegister } from '../client/register.js';
import { openDomain } from '../client/domain.js';
import { SpookError } from '../client/admin-client.js';

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
    // Each value within MAX_VALUE_LEN, the whole over MAX_DELTA_LEN: refused as it is read.
    expect(at(txn(set('a', 'v'.repeat(MAX_VALUE_LEN - 50)), set('b', 'v'.repeat(MAX_DELTA_LEN - MAX_VALUE_LEN + 100))))).toBe('delta');
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
    expectSeedsClean(s, 120);
    expect(s.rejected).toBeGreaterThan(50);
    expect(s.reconciles).toBeGreaterThan(5);
  });

  it('60 simulated seeds of txns with crashes and store faults: what was acknowledged survives', () => {
    const s = runSeeds(60, 1, { ...SIM_DEFAULTS, crashes: true, storeFaults: 0.01, txn: 0.4 });
    expectSeedsClean(s, 60);
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

/**
 * The daemon path: three spookd in this process on loopback (a, b, c; each pairs with the other
 * two and all three are members of domain `main`, with group `g` = {kv, kv2}).
 */
describe('the library against spookd: RegisterHandle.txn and openDomain', () => {
  const lab = inProcess('spook-txn', ['a', 'b', 'c'], portBase('txn.test.ts'));
  const d: Record<string, Spookd> = {};
  const sock = (n: string): string => join(lab.dir, `${n}.sock`);
  const domain = (others: string[]) => ({
    // Pair registers: config, and two more for transactions across registers of a pair.
    registers: [
      { name: 'config', kind: 'map' },
      { name: 'audit', kind: 'map' },
      { name: 'events', kind: 'stream' },
    ],
    domains: [
      {
        name: 'main',
        members: others,
        registers: [
          { name: 'kv', kind: 'map' },
          { name: 'kv2', kind: 'map' },
          { name: 'log', kind: 'stream' },
        ],
        groups: [{ name: 'g', registers: ['kv', 'kv2'] }],
      },
    ],
  });

  beforeAll(async () => {
    for (const n of ['a', 'b', 'c']) {
      const others = ['a', 'b', 'c'].filter((x) => x !== n);
      d[n] = new Spookd(configOf(lab, n, others, domain(others)), lab.keys[n], logOf(lab, n));
    }
    await Promise.all(Object.values(d).map((s) => s.start()));
    await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED);
  }, 30_000);

  afterAll(async () => {
    await Promise.all(Object.values(d).map((s) => s.stop()));
    rmSync(lab.dir, { recursive: true, force: true });
  });

  it('a pair txn commits whole at both ends; a failed guard rejects all and names its op; a bad txn is refused by code', async () => {
    const reg = await openRegister('config', { socket: sock('a'), peer: 'b' });
    try {
      const ok = await reg.txn([
        { op: 'set', key: 'x', value: '1' },
        { op: 'set', key: 'y', value: new Uint8Array([0xff, 0]) },
        { op: 'cas', key: 'z', expect: 0, value: 'z' },
      ]);
      expect(ok).toMatchObject({ verdict: 'committed', reason: null });
      const [x, y] = [await reg.get('x'), await reg.get('y')];
      expect([x.value, x.keyVersion, y.keyVersion, [...y.bytes!]]).toEqual(['1', ok.version, ok.version, [0xff, 0]]);
      const bad = await reg.txn([
        { op: 'set', key: 'x', value: 'NEW' },
        { op: 'del', key: 'y' },
        { op: 'cas', key: 'z', expect: 12345, value: 'NEW' },
      ]);
      expect(bad).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 2 });
      expect((await reg.get('x')).value).toBe('1');
      expect((await reg.get('y')).found).toBe(true);
      await until('b holds what a holds', () => {
        const [ra, rb] = [d.a.link('b').pair.register('config'), d.b.link('a').pair.register('config')];
        return ra.version === rb.version && ra.hash.hi === rb.hash.hi && ra.hash.lo === rb.hash.lo;
      });
      const dup = await reg
        .txn([
          { op: 'set', key: 'k', value: '1' },
          { op: 'del', key: 'k' },
        ])
        .catch((e: unknown) => e);
      expect(dup).toBeInstanceOf(SpookError);
      expect(dup).toMatchObject({ code: 'invalid-delta', message: expect.stringMatching(/txn op 1: a key the txn already writes/) });
      const none = await reg.txn([]).catch((e: unknown) => e);
      expect(none).toMatchObject({ code: 'bad-argument', field: 'ops' });
      const wrong = await reg.txn([{ op: 'set', key: 'k', value: '1' }, { op: 'nope' } as never]).catch((e: unknown) => e);
      expect(wrong).toMatchObject({ code: 'bad-argument', field: 'ops[1].op' });
    } finally {
      reg.close();
    }
  });

  it('a pair txn across registers (config, audit, events) commits whole at both ends, visible together to the far end; a failed guard anywhere rejects all', async () => {
    const [cfg, audit] = await Promise.all([
      openRegister('config', { socket: sock('a'), peer: 'b' }),
      openRegister('audit', { socket: sock('b'), peer: 'a' }),
    ]);
    const farCfg = await openRegister('config', { socket: sock('b'), peer: 'a' });
    const seen: string[] = [];
    const w = await audit.watch('', { onChange: (c) => void seen.push(`${c.op}:${c.key}@${c.version}`) });
    try {
      const ok = await cfg.txn([
        { op: 'cas', key: 'acct', expect: 0, value: '90' },
        { register: 'audit', op: 'set', key: 't1', value: 'acct-10' },
        { register: 'events', op: 'append', data: 'debit;' },
      ]);
      expect(ok).toMatchObject({ register: 'config', verdict: 'committed', reason: null });
      // At the far end: each register holds its part, at that register's own version.
      await until('b holds the txn in every register', () =>
        ['config', 'audit', 'events'].every((r) => {
          const [ra, rb] = [d.a.link('b').pair.register(r), d.b.link('a').pair.register(r)];
          return ra.version === rb.version && ra.hash.hi === rb.hash.hi && ra.hash.lo === rb.hash.lo && rb.version > 0;
        }),
      );
      expect((await farCfg.get('acct')).value).toBe('90');
      expect((await audit.get('t1')).value).toBe('acct-10');
      await until('the far end watcher saw the audit part', () => seen.length > 0);
      expect(seen).toEqual([`set:t1@${d.b.link('a').pair.register('audit').version}`]);
      // A guard in the audit part fails: nothing anywhere, the op named across parts (config's 1 op, then audit's).
      const before = ['config', 'audit', 'events'].map((r) => d.b.link('a').pair.register(r).hash.lo);
      const bad = await cfg.txn([
        { op: 'set', key: 'acct', value: '0' },
        { register: 'audit', op: 'cas', key: 't1', expect: 999, value: 'x' },
        { register: 'events', op: 'append', data: 'never;' },
      ]);
      expect(bad).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 1 });
      await until('b settled', () => d.b.link('a').pair.register('config').version === d.a.link('b').pair.register('config').version);
      expect(['audit', 'events'].map((r) => d.b.link('a').pair.register(r).hash.lo)).toEqual(before.slice(1));
      expect((await farCfg.get('acct')).value).toBe('90');
      // Ops interleaving registers: failedOp is the index in the order given (the txn groups them by register).
      const mixed = await cfg.txn([
        { op: 'set', key: 'x', value: '1' },
        { register: 'audit', op: 'set', key: 't', value: '1' },
        { op: 'cas', key: 'y', expect: 999, value: 'z' },
      ]);
      expect(mixed).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 2 });
      // A register the pair lacks is refused by name before anything is proposed.
      const unknown = await cfg
        .txn([
          { op: 'set', key: 'a', value: '1' },
          { register: 'nope', op: 'set', key: 'a', value: '1' },
        ])
        .catch((e: unknown) => e);
      expect(unknown).toMatchObject({ code: 'unknown-register', field: 'ops[1].register' });
    } finally {
      w.close();
      for (const r of [cfg, audit, farCfg]) r.close();
    }
  });

  it('openDomain: members, leader, lag; writes; a txn over two registers; a group and its scoped txn; outcome by seq', async () => {
    const dom = await openDomain(undefined, { socket: sock('a') });
    const other = await openDomain('main', { socket: sock('c') });
    try {
      expect(dom.name).toBe('main');
      await untilAsync('a leader', async () => (await dom.leader()) !== null);
      const members = await dom.members();
      expect(members.map((m) => m.member).sort()).toEqual(['b', 'c', 'self']);
      expect(members).toHaveLength(3);
      expect(members.filter((m) => m.role === 'leader')).toHaveLength(1);
      for (const m of members) expect(m).toHaveProperty('lag');

      const kv = dom.register('kv');
      const w = await kv.set('a', 'one');
      expect(w).toMatchObject({ domain: 'main', verdict: 'committed' });
      expect(await dom.outcome(w.seq)).toMatchObject({ seq: w.seq, verdict: 'committed' });
      expect((await kv.get('a')).value).toBe('one');
      expect(await dom.register('log').append('hello ')).toMatchObject({ verdict: 'committed' });
      expect(await dom.register('log').append('world')).toMatchObject({ verdict: 'committed' });
      expect(new TextDecoder().decode((await dom.register('log').read()).bytes)).toBe('hello world');

      const g0 = await dom.group('g').info();
      expect(g0).toMatchObject({ name: 'g', registers: ['kv', 'kv2'], state: 'coherent' });
      const t = await dom.txn([
        { register: 'kv', op: 'set', key: 'left', value: 'L' },
        { register: 'kv2', op: 'set', key: 'right', value: 'R' },
      ]);
      expect(t).toMatchObject({ verdict: 'committed' });
      // Both halves are visible at another member together (one log index).
      await untilAsync('c applied the txn', async () => (await other.register('kv2').get('right')).found);
      const [l, r] = [await other.register('kv').get('left'), await other.register('kv2').get('right')];
      expect([l.value, r.value, l.index]).toEqual(['L', 'R', r.index]);
      expect((await dom.group('g').info()).version).toBe(g0.version + 1);

      // A failed guard in a domain txn: nothing of it commits.
      const kvA = (await kv.get('a')).keyVersion!;
      const bad = await dom.txn([
        { register: 'kv2', op: 'set', key: 'right', value: 'NEW' },
        { register: 'kv', op: 'cas', key: 'a', expect: kvA + 100, value: 'NEW' },
      ]);
      expect(bad).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 1 });
      expect((await dom.register('kv2').get('right')).value).toBe('R');
      expect(await dom.outcome(bad.seq)).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch' });
      const good = await dom.group('g').txn([
        { register: 'kv', op: 'cas', key: 'a', expect: kvA, value: 'two' },
        { register: 'kv2', op: 'del', key: 'right' },
      ]);
      expect(good).toMatchObject({ verdict: 'committed' });
      expect([(await kv.get('a')).value, (await dom.register('kv2').get('right')).found]).toEqual(['two', false]);
      const outside = await dom
        .group('g')
        .txn([{ register: 'log', op: 'append', data: 'x' }])
        .catch((e: unknown) => e);
      expect(outside).toMatchObject({ code: 'bad-argument', field: 'ops[0].register' });
      expect(await dom.lag()).not.toBeUndefined();
      expect((await dom.status()).registers.map((x) => x.name)).toEqual(['kv', 'kv2', 'log']);
      const unknown = await openDomain('nope', { socket: sock('a') }).catch((e: unknown) => e);
      expect(unknown).toMatchObject({ code: 'unknown-domain' });
    } finally {
      dom.close();
      other.close();
    }
  }, 30_000);

  it('the feed sees a txn as one version of all its changes: a pair txn at the far end, a domain txn on another member (openDomain scan + watch)', async () => {
    const at = await openRegister('config', { socket: sock('a'), peer: 'b' });
    const far = await openRegister('config', { socket: sock('b'), peer: 'a' });
    const dom = await openDomain('main', { socket: sock('a') });
    const other = await openDomain('main', { socket: sock('c') });
    try {
      // The pair: b watches from its current version; a's txn arrives as one version with every change.
      const from = (await far.size()).version;
      const seen: { version: number; op: string; key?: string; value?: string }[] = [];
      const w = await far.watch('t/', {
        fromVersion: from,
        onChange: (c) => void seen.push({ version: c.version, op: c.op, key: c.key, value: c.value }),
      });
      const t = await at.txn([
        { op: 'set', key: 't/1', value: 'one' },
        { op: 'set', key: 't/2', value: 'two' },
      ]);
      expect(t.verdict).toBe('committed');
      await until('b saw both changes', () => seen.length >= 2);
      w.close();
      expect(seen).toEqual([
        { version: t.version, op: 'set', key: 't/1', value: 'one' },
        { version: t.version, op: 'set', key: 't/2', value: 'two' },
      ]);

      // The domain: c scans kv at one version, then watches from it; a's txn over kv and kv2 shows in both registers' feeds at one index.
      const kv = other.register('kv');
      const before = await kv.scanAll('');
      const got: string[] = [];
      const wk = await kv.watch('d/', { fromVersion: before.version, onChange: (c) => void got.push(`${c.key}=${c.value}`) });
      const dt = await dom.txn([
        { register: 'kv', op: 'set', key: 'd/x', value: 'X' },
        { register: 'kv2', op: 'set', key: 'd/y', value: 'Y' },
      ]);
      expect(dt.verdict).toBe('committed');
      await until('c saw kv change', () => got.length >= 1);
      wk.close();
      expect(got).toEqual(['d/x=X']);
      const after = await other.register('kv2').scanAll('d/');
      expect(after.entries.map((e) => `${e.key}=${e.value}`)).toEqual(['d/y=Y']);
      expect((await other.register('kv2').size()).keys).toBeGreaterThanOrEqual(1);
    } finally {
      for (const h of [at, far, dom, other]) h.close();
    }
  }, 30_000);

  it('a domain write without a majority answers pending, and outcome(seq) finds it committed once a majority is back', async () => {
    const dom = await openDomain('main', { socket: sock('a') });
    try {
      await Promise.all([d.b.stop(), d.c.stop()]);
      const w = await dom.register('kv').set('while-alone', 'x', { timeoutMs: 2_500 });
      // The library asks the daemon to wait what is left of its 2.5 s less 1 s: 1,500 ms, less what has elapsed.
      expect(w).toMatchObject({ verdict: 'pending', reason: expect.stringMatching(/no outcome within \d+ ms/) });
      const waited = Number(/no outcome within (\d+) ms/.exec(w.reason ?? '')![1]);
      expect(waited).toBeLessThanOrEqual(1500);
      expect(waited).toBeGreaterThan(1000);
      expect(await dom.outcome(w.seq)).toMatchObject({ verdict: 'pending' });
      d.b = new Spookd(configOf(lab, 'b', ['a', 'c'], domain(['a', 'c'])), lab.keys.b, logOf(lab, 'b'));
      await d.b.start();
      await untilAsync('the pending write committed', async () => (await dom.outcome(w.seq)).verdict === 'committed', 20_000);
      expect((await dom.register('kv').get('while-alone')).value).toBe('x');
      d.c = new Spookd(configOf(lab, 'c', ['a', 'b'], domain(['a', 'b'])), lab.keys.c, logOf(lab, 'c'));
      await d.c.start();
    } finally {
      dom.close();
    }
  }, 40_000);
});

async function untilAsync(what: string, f: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('ESTP fuzz with txn and cross-register txn deltas', () => {
  // Fuzz seeds 5 and 1 found two liveness faults of the core once the peer behaved again (fixed with them):
  // 5: a Status below what the sequencer believed (an earlier one lied) did not make it resend, so the
  //    follower waited forever; 1: a Collapse deciding an own sequence number not yet used made the
  //    candidate that later took it count as resolved, so it was never proposed.
  // With `cross`, candidates and records also carry cross-register txns (op 6) and parts (op 7, §4.6).
  it.each([
    [5, false],
    [1, false],
    [2, true],
    [9, true],
  ])(
    '20,000 fuzzed payloads with txns into both roles (fuzz seed %i, cross %s): nothing escapes, memory bounded, the pair heals and commits txns',
    (seed, cross) => {
      const world = new SimWorld(17, { loss: 0.02, dup: 0.01, reorder: 0.05, minDelayMs: 1, maxDelayMs: 4 });
      const regs = [
        { name: 'kv', kind: 'map' as const, maxPending: 64, quota: { maxKeys: 5000, maxBytes: 4 << 20 } },
        { name: 's', kind: 'stream' as const, maxPending: 64, quota: { maxKeys: 1, maxBytes: 4 << 20 } },
      ];
      const opts = { pairId: 6, seed: 2024, registers: regs };
      const [A, B] = world.adopt(
        ['A', 'B'],
        [new HalfPair({ ...opts, localId: 1, peerId: 2 }, 0), new HalfPair({ ...opts, localId: 2, peerId: 1 }, 0)],
      );
      expect(world.run(5000, () => A.pair.state === PairState.ENTANGLED && B.pair.state === PairState.ENTANGLED)).toBe(true);
      const fuzz = new EstpFuzzer(Number(process.env.FUZZ_SEED ?? seed), ['kv', 's'], () => A.pair.register('kv').version, true, cross);
      const escaped: string[] = [];
      let pn = 1_000_000;
      for (let i = 0; i < 20_000; i++) {
        const target = i % 2 === 0 ? A : B;
        try {
          target.pair.handlePayload(world.now, pn++, fuzz.payload());
        } catch (e) {
          escaped.push(`${target.name}: ${(e as Error).stack?.split('\n').slice(0, 3).join(' | ')}`);
        }
        if (i % 50 === 0) {
          world.drain(A);
          world.drain(B);
          world.run(world.now + 3);
        }
      }
      expect(escaped.slice(0, 5)).toEqual([]);
      for (const ep of [A, B])
        for (const n of ['kv', 's']) expect(ep.pair.register(n).state.fullTransferBytes()).toBeLessThanOrEqual(4 << 20);
      expect(A.pair.stats.drops['malformed-payload'] + B.pair.stats.drops['malformed-payload']).toBeGreaterThan(2_000);
      // The peer behaves again: a txn from each end commits and both ends agree.
      const told = new Map<string, string>();
      world.onEvent = (ep, ev) => {
        if (ev.type === 'outcome') told.set(`${ep.name}:${ev.seq}`, ev.verdict);
      };
      // (A status the fuzz sent in the sequencer's name may claim a version ahead of the real one, in either
      // register: the follower re-entangles once the sequencer's writes pass it, §8.6. So both registers are written.)
      const write = (ep: typeof A, d: EntryDelta, r = 'kv'): string | undefined => {
        try {
          return `${ep.name}:${ep.pair.propose(world.now, r, d).seq}`;
        } catch (e) {
          if (e instanceof ProposeError) return undefined;
          throw e;
        }
      };
      for (let i = 0; i < 600 && !(A.pair.state === PairState.ENTANGLED && B.pair.state === PairState.ENTANGLED); i++) {
        world.at(world.now + 1, () => {
          for (const ep of [A, B]) {
            write(ep, set(`${ep.name}-w${i % 50}`, `${i}`));
            write(ep, { op: DeltaOp.Append, offset: ep.pair.register('s').nextAppendOffset, data: enc('.') }, 's');
          }
        });
        world.run(world.now + 10);
      }
      const aligned = (): boolean =>
        A.pair.state === PairState.ENTANGLED &&
        B.pair.state === PairState.ENTANGLED &&
        ['kv', 's'].every((n) => {
          const [ra, rb] = [A.pair.register(n), B.pair.register(n)];
          return (
            ra.version === rb.version && ra.hash.hi === rb.hash.hi && ra.hash.lo === rb.hash.lo && ra.pendingCount + rb.pendingCount === 0
          );
        });
      const healed = world.run(world.now + 120_000, aligned);
      expect(healed).toBe(true);
      // One end after the other: an append names the stream's length, which the other end's write moves.
      for (const ep of [A, B]) {
        const id = cross
          ? write(ep, {
              op: DeltaOp.Cross,
              parts: [
                { register: 'kv', at: 0, delta: txn(set(`${ep.name}-x`, '1'), set(`${ep.name}-y`, '2')) },
                { register: 's', at: 0, delta: { op: DeltaOp.Append, offset: ep.pair.register('s').nextAppendOffset, data: enc(ep.name) } },
              ],
            })
          : write(ep, txn(set(`${ep.name}-x`, '1'), set(`${ep.name}-y`, '2')));
        world.drain(ep);
        expect(world.run(world.now + 60_000, () => aligned() && id !== undefined && told.get(id) === 'committed')).toBe(true);
      }
    },
  );
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient } from '../../client/admin-client.js';
import type { AdminArgs, MapGetResult, PairSummary, RegisterSummary } from '../../client/protocol.js';
import { Lab, until } from '../../testing/lab/netns.js';

/**
 * The 150,000-key "delete everything" re-entanglement between two spookd (issue 13; the
 * in-process version is test/recon-scale.test.ts). Hosts ra and rb in network namespaces, one
 * veth link. Register `kv` keeps a small delta log (256 records): the 150,000 deletes the
 * sequencer commits while the follower is cut off (one collapse each) cannot be replayed, so
 * the follower must reconcile. Register `side` is unrelated and must keep committing meanwhile.
 * Figures (phase times, re-entanglement bytes, side-register stalls) are printed as one JSON line.
 */
// SPOOK_RECON_KEYS: a smaller run while working on this test (the overflow needs more than ~125,000).
const N = Number(process.env.SPOOK_RECON_KEYS ?? 150_000);
// At most RECON_LEAF_MAX (8): the sequencer answers the root with its entries, so the follower stages
// the deletion of all 150,000 keys under one prefix at once (where the spread overflowed).
const NEW = 5;
const LOG_RECORDS = 256;
// Admin requests in flight on one connection while loading and deleting.
const WINDOW = 256;

const REGISTERS = [
  { name: 'kv', kind: 'map', policy: 'buffer', maxPending: 4096, logRecords: LOG_RECORDS, maxKeys: 4 * N, maxBytes: 256 * 1024 * 1024 },
  { name: 'side', kind: 'map', policy: 'buffer', maxPending: 1024 },
];

let lab: Lab;
// Host names and subnet of their own: other e2e files' labs may share this process (pid prefix).
const [A, B] = ['ra', 'rb'];
const other = (h: string): string => (h === A ? B : A);
const pair = (host: string): Promise<PairSummary> => lab.admin(host, 'pair', { peer: other(host) });
const reg = (p: PairSummary, name: string): RegisterSummary => p.registers.find((r) => r.name === name)!;

async function aligned(): Promise<boolean> {
  const [p, q] = await Promise.all([pair(A), pair(B)]);
  return (
    p.state === 'ENTANGLED' &&
    q.state === 'ENTANGLED' &&
    p.registers.every((r) => {
      const o = reg(q, r.name);
      return r.version === o.version && r.hash === o.hash && r.pending === 0 && o.pending === 0;
    })
  );
}

/** Run `n` admin requests on one connection, `window` in flight; every one must commit. */
async function pipeline<C extends 'set' | 'del'>(
  host: string,
  n: number,
  window: number,
  cmd: C,
  args: (i: number) => AdminArgs<C>,
): Promise<void> {
  const c = await AdminClient.connect(lab.host(host).socket);
  let next = 0;
  let failed = false;
  try {
    const worker = async (): Promise<void> => {
      try {
        while (next < n && !failed) {
          const i = next++;
          const r = await c.request<'set' | 'del'>(cmd, args(i));
          if (r.verdict !== 'committed') throw new Error(`${cmd} #${i} on ${host}: ${r.verdict} (${r.reason})`);
        }
      } catch (e) {
        failed = true; // the other workers stop too: nothing is sent on a closed connection
        throw e;
      }
    };
    await Promise.all(Array.from({ length: window }, worker));
  } finally {
    c.close();
  }
}

beforeAll(async () => {
  lab = new Lab([A, B], [{ a: A, b: B, subnet: 41 }], 47700);
  // fsync everysec: this test is about reconciliation, not durability (spookd.test.ts covers kill -9).
  for (const h of [A, B]) lab.configure(h, REGISTERS, { fsync: 'everysec', logLevel: 'info' });
  await Promise.all([A, B].map((h) => lab.start(h)));
  await until('pair formed', aligned, 20_000);
}, 30_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('150,000-key reconciliation between two spookd', () => {
  // Attack/regression (issue 13): an honest re-entanglement that had to delete more than
  // ~125,000 keys overflowed the follower's stack (`deletes.push(...entries)`): a crash loop.
  it('the follower, cut off while the sequencer deletes every key and writes past its log, reconciles to exactly the new keys; another register keeps committing', async () => {
    const seq = (await pair(A)).role === 'sequencer' ? A : B;
    const fol = other(seq);
    const t: Record<string, number> = {};
    let mark = Date.now();
    const lap = (k: string): void => {
      t[k] = Date.now() - mark;
      mark = Date.now();
    };

    // Load: one admin connection, 256 sets in flight (each its own collapse), the follower connected.
    await pipeline(seq, N, WINDOW, 'set', (i) => ({ peer: fol, register: 'kv', key: `k/${i}`, value: 'v' }));
    lap('load');
    await until('follower caught up', aligned, 60_000, 250);
    lap('catchUp');
    const f0 = await pair(fol);
    expect(reg(f0, 'kv').size).toBe(N);

    lab.setLink(A, B, false);
    await until(
      'both ends DECOHERENT',
      async () => (await pair(A)).state === 'DECOHERENT' && (await pair(B)).state === 'DECOHERENT',
      15_000,
    );
    lap('cut');
    await pipeline(seq, N, WINDOW, 'del', (i) => ({ peer: fol, register: 'kv', key: `k/${i}` }));
    await pipeline(seq, NEW, 16, 'set', (i) => ({ peer: fol, register: 'kv', key: `new/${i}`, value: `n${i}` }));
    lap('deleteAll');
    const s0 = await pair(seq);
    expect(reg(s0, 'kv').size).toBe(NEW);
    // The follower's version was compacted away: the log cannot bring it back.
    expect(reg(s0, 'kv').logBase).toBeGreaterThan(reg(f0, 'kv').version);
    const folPid = (await lab.admin(fol, 'status')).pid;

    // What the follower's spookd reports, in the order it happened (both streams share one
    // connection, so lines arrive in emission order): lifecycle and how each register
    // re-entangled (events), and each collapse it applies to the unrelated register (watch).
    type Seen =
      | { kind: 'lifecycle'; to: string; cause: string; at: number }
      | { kind: 'reentangled'; register: string; method: string; at: number }
      | { kind: 'side'; at: number };
    const seen: Seen[] = [];
    const events = await AdminClient.connect(lab.host(fol).socket);
    await events.stream('events', { peer: seq }, (ev) => {
      if (ev.type === 'lifecycle') seen.push({ kind: 'lifecycle', to: String(ev.to), cause: String(ev.cause), at: Number(ev.at) });
      if (ev.type === 'reentangled')
        seen.push({ kind: 'reentangled', register: String(ev.register), method: String(ev.method), at: Number(ev.at) });
    });
    await events.stream('watch', { peer: seq, register: 'side' }, (ev) => void seen.push({ kind: 'side', at: Number(ev.at) }));
    const kvDone = (): number => seen.findIndex((e) => e.kind === 'reentangled' && e.register === 'kv');

    // The unrelated register: the follower keeps writing to it, from the cut (those writes
    // wait, buffered) through the reconciliation and after; each goes to the sequencer and back.
    let sideCommitted = 0;
    let sideMaxLatency = 0; // of writes issued after the heal
    let stopSide = false;
    let healedAt = Infinity;
    const sideWriter = async (w: number): Promise<void> => {
      const c = await AdminClient.connect(lab.host(fol).socket);
      try {
        for (let i = 0; !stopSide; i++) {
          const t0 = Date.now();
          const r = await c.request('set', { peer: seq, register: 'side', key: `s/${w}/${i}`, value: `${i}`, timeoutMs: 20_000 });
          if (r.verdict !== 'committed') throw new Error(`side write ${w}/${i}: ${r.verdict} (${r.reason})`);
          sideCommitted++;
          if (t0 >= healedAt) sideMaxLatency = Math.max(sideMaxLatency, Date.now() - t0);
        }
      } finally {
        c.close();
      }
    };
    // Settles to the first error (asserted below), never an unhandled rejection.
    const sideWriters = Promise.all([sideWriter(0), sideWriter(1)]).then(
      () => undefined,
      (e: Error) => e.message,
    );

    // Both writers' first writes are buffered at the follower before the link comes back.
    await until('side writes buffered', async () => reg(await pair(fol), 'side').pending >= 2, 10_000, 20);
    healedAt = Date.now();
    lab.setLink(A, B, true);
    let sideError: string | undefined;
    try {
      await until('kv re-entangled', async () => kvDone() >= 0, 30_000, 20);
      const kvSeenAt = Date.now();
      const atKv = sideCommitted;
      await until('side writes continue after it', async () => sideCommitted >= atKv + 20, 10_000, 20);
      lap('reconcile');
      stopSide = true;
      sideError = await sideWriters;
      await until('aligned after the heal', aligned, 30_000, 100);
      lap('settle');
      t.healToReentangled = kvSeenAt - healedAt;
    } catch (e) {
      // Say why: a fenced pair names the exception that fenced it.
      const p = await pair(fol).catch(() => undefined);
      throw new Error(`${(e as Error).message}; follower pair ${p?.state}, fenced ${JSON.stringify(p?.fenced)}\n${lab.logOf(fol)}`);
    } finally {
      stopSide = true;
      events.close();
    }
    expect(sideError).toBeUndefined();

    // The follower's spookd lived through it: same process, nothing fenced.
    expect(lab.host(fol).proc!.exitCode).toBeNull();
    const st = await lab.admin(fol, 'status');
    expect(st.pid).toBe(folPid);
    expect(st.drops['internal-error'] ?? 0).toBe(0);
    const [f1, s1] = await Promise.all([pair(fol), pair(seq)]);
    expect(f1.state).toBe('ENTANGLED');
    expect(f1.fenced).toBeNull();

    // Converged to the sequencer's (version, hash), holding exactly the new keys.
    expect(reg(f1, 'kv').version).toBe(reg(s1, 'kv').version);
    expect(reg(f1, 'kv').hash).toBe(reg(s1, 'kv').hash);
    expect(reg(f1, 'kv').size).toBe(NEW);
    const get = async (key: string): Promise<MapGetResult> =>
      (await lab.admin(fol, 'get', { peer: seq, register: 'kv', key })) as MapGetResult;
    for (let i = 0; i < NEW; i++) expect((await get(`new/${i}`)).value?.text).toBe(`n${i}`);
    for (const i of [0, 1, 77_777 % N, N - 1]) expect((await get(`k/${i}`)).found).toBe(false);

    // By reconciliation: the gap was unfillable from the log, no full transfer, one re-entanglement.
    const lifecycle = seen.filter((e) => e.kind === 'lifecycle');
    const method = (register: string): string | undefined => {
      for (const e of seen) if (e.kind === 'reentangled' && e.register === register) return e.method;
      return undefined;
    };
    expect(lifecycle.some((e) => e.cause.startsWith('unfillable-gap'))).toBe(true);
    expect(method('kv')).toBe('reconcile');
    expect(method('side')).toBe('log');
    expect(f1.fullTransfers).toBe(f0.fullTransfers);
    expect(f1.reentanglements).toBe(f0.reentanglements + 1);
    // O(what the sequencer holds), not O(what was deleted): far below the ~2 MB state.
    const bytes = f1.reentangleBytes - f0.reentangleBytes + (s1.reentangleBytes - s0.reentangleBytes);
    expect(bytes).toBeGreaterThan(0);
    expect(bytes * 16).toBeLessThan(reg(f0, 'kv').stateBytes);

    // The unrelated register kept committing: the follower applied side collapses after it
    // began re-entangling and before kv's reconciliation finished, and never stalled for long.
    const heard = seen.findIndex((e) => e.kind === 'lifecycle' && e.to === 'REENTANGLING');
    const done = kvDone();
    expect(heard).toBeGreaterThanOrEqual(0);
    const during = seen.slice(heard, done).filter((e) => e.kind === 'side').length;
    const sideAts = seen
      .slice(heard)
      .filter((e) => e.kind === 'side')
      .map((e) => e.at);
    let maxGap = 0;
    for (let i = 1; i < sideAts.length; i++) maxGap = Math.max(maxGap, sideAts[i] - sideAts[i - 1]);
    expect(during).toBeGreaterThan(0);
    expect(maxGap).toBeLessThan(1500);

    console.log(
      JSON.stringify({
        keys: N,
        loadReentanglements: f0.reentanglements,
        loadFullTransfers: f0.fullTransfers,
        ms: t,
        reentanglingMs: Math.round(seen[done].at - seen[heard].at),
        reentangleBytes: bytes,
        deletedStateBytes: reg(f0, 'kv').stateBytes,
        sideCommitted,
        sideCommitsWhileReentangling: during,
        sideWriteMaxLatencyMs: sideMaxLatency,
        sideMaxGapMs: Math.round(maxGap),
        // From the datagram that completed kv's reconciliation to the next side collapse: the
        // follower's event loop applying 150,000 deletes and writing the register's snapshot.
        firstSideAfterReconcileMs: Math.round((seen.slice(done).find((e) => e.kind === 'side')?.at ?? NaN) - seen[done].at),
      }),
    );
  }, 150_000);
});

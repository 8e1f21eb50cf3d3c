import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminClient } from '../../control/client/admin-client.js';
import { Lab, until } from '../../control/lab/netns.js';

/**
 * The 150,000-key "delete everything" re-entanglement between two spookd (issue 13): the
 * in-process version is test/recon-scale.test.ts. Hosts a and b in network namespaces, one
 * veth link; register `kv` has a small delta log (256 records), so the ~2,500 collapses
 * written during the cut cannot be replayed and the follower must reconcile; register `side`
 * is unrelated and must keep committing meanwhile.
 */
const N = Number(process.env.SPOOK_RECON_KEYS ?? 150_000);
const NEW = 100;
const LOG_RECORDS = 256;
const WINDOW = Number(process.env.SPOOK_RECON_WINDOW ?? 256);

const REGISTERS = [
  { name: 'kv', kind: 'map', policy: 'buffer', maxPending: 4096, logRecords: LOG_RECORDS, maxKeys: 4 * N, maxBytes: 256 * 1024 * 1024 },
  { name: 'side', kind: 'map', policy: 'buffer', maxPending: 1024 },
];

interface Reg {
  name: string;
  version: number;
  hash: string;
  size: number;
  pending: number;
  logBase: number;
  stateBytes: number;
}
interface PairInfo {
  state: string;
  role: string;
  reentangleBytes: number;
  reentanglements: number;
  fullTransfers: number;
  bytesSent: number;
  registers: Reg[];
}
interface Outcome {
  verdict: string;
  version: number | null;
  reason: string | null;
}

let lab: Lab;
// Host names and subnet of their own: other e2e files' labs may share this process (pid prefix).
const [A, B] = ['ra', 'rb'];
const other = (h: string): string => (h === A ? B : A);
const pair = (host: string): Promise<PairInfo> => lab.admin<PairInfo>(host, 'pair', { peer: other(host) });
const reg = (p: PairInfo, name: string): Reg => p.registers.find((r) => r.name === name)!;

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
async function pipeline(host: string, n: number, window: number, cmd: string, args: (i: number) => Record<string, unknown>): Promise<void> {
  const c = await AdminClient.connect(lab.host(host).socket);
  let next = 0;
  try {
    const worker = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const r = await c.request<Outcome>(cmd, args(i));
        if (r.verdict !== 'committed') throw new Error(`${cmd} #${i} on ${host}: ${r.verdict} (${r.reason})`);
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
    await until('both ends DECOHERENT', async () => (await pair(A)).state === 'DECOHERENT' && (await pair(B)).state === 'DECOHERENT', 15_000);
    lap('cut');
    await pipeline(seq, N, WINDOW, 'del', (i) => ({ peer: fol, register: 'kv', key: `k/${i}` }));
    await pipeline(seq, NEW, 16, 'set', (i) => ({ peer: fol, register: 'kv', key: `new/${i}`, value: `n${i}` }));
    lap('deleteAll');
    const s0 = await pair(seq);
    expect(reg(s0, 'kv').size).toBe(NEW);
    // The follower's version was compacted away: the log cannot bring it back.
    expect(reg(s0, 'kv').logBase).toBeGreaterThan(reg(f0, 'kv').version);
    const folPid = (await lab.admin<{ pid: number }>(fol, 'status')).pid;

    // What the follower's spookd reports, on its own clock: lifecycle, how each register
    // re-entangled (events), and the collapses it applies to the unrelated register (watch).
    const events = await AdminClient.connect(lab.host(fol).socket);
    const lifecycle: { to: string; at: number; cause: string }[] = [];
    const reentangled: { register: string; method: string; at: number }[] = [];
    const sideCollapses: number[] = [];
    await events.stream('events', { peer: seq }, (ev) => {
      if (ev.type === 'lifecycle') lifecycle.push({ to: String(ev.to), at: Number(ev.at), cause: String(ev.cause) });
      if (ev.type === 'reentangled') reentangled.push({ register: String(ev.register), method: String(ev.method), at: Number(ev.at) });
    });
    await events.stream('watch', { peer: seq, register: 'side' }, (ev) => void sideCollapses.push(Number(ev.at)));
    // The unrelated register: the follower keeps writing to it (each write goes to the
    // sequencer and back), before, during and after the reconciliation.
    let sideCommitted = 0;
    let stopSide = false;
    const sideWriter = async (w: number): Promise<void> => {
      const c = await AdminClient.connect(lab.host(fol).socket);
      try {
        for (let i = 0; !stopSide; i++) {
          const r = await c.request<Outcome>('set', { peer: seq, register: 'side', key: `s/${w}/${i}`, value: `${i}`, timeoutMs: 20_000 });
          if (r.verdict !== 'committed') throw new Error(`side write ${w}/${i}: ${r.verdict} (${r.reason})`);
          sideCommitted++;
        }
      } finally {
        c.close();
      }
    };
    const sideWriters = Promise.all([0, 1].map(sideWriter));

    const healedAt = Date.now();
    lab.setLink(A, B, true);
    try {
      await until('kv re-entangled', async () => reentangled.some((e) => e.register === 'kv'), 30_000, 20);
      const kvSeenAt = Date.now();
      const atKv = sideCommitted;
      await until('side writes continue after it', async () => sideCommitted >= atKv + 20, 10_000, 20);
      lap('reconcile');
      stopSide = true;
      await sideWriters;
      await until('aligned after the heal', aligned, 30_000, 100);
      lap('settle');
      t.healToReentangled = kvSeenAt - healedAt;
    } finally {
      stopSide = true;
      events.close();
    }

    // The follower's spookd lived through it: same process, nothing fenced.
    expect(lab.host(fol).proc!.exitCode).toBeNull();
    const st = await lab.admin<{ pid: number; drops: Record<string, number> }>(fol, 'status');
    expect(st.pid).toBe(folPid);
    expect(st.drops['internal-error'] ?? 0).toBe(0);
    const [f1, s1] = await Promise.all([pair(fol), pair(seq)]);
    expect(f1.state).toBe('ENTANGLED');

    // Converged to the sequencer's (version, hash), holding exactly the new keys.
    expect(reg(f1, 'kv').version).toBe(reg(s1, 'kv').version);
    expect(reg(f1, 'kv').hash).toBe(reg(s1, 'kv').hash);
    expect(reg(f1, 'kv').size).toBe(NEW);
    const get = (key: string): Promise<{ found: boolean; value?: { text: string } }> => lab.admin(fol, 'get', { peer: seq, register: 'kv', key });
    for (let i = 0; i < NEW; i++) expect((await get(`new/${i}`)).value?.text).toBe(`n${i}`);
    for (const i of [0, 1, 77_777 % N, N - 1]) expect((await get(`k/${i}`)).found).toBe(false);

    // By reconciliation: the gap was unfillable from the log, no full transfer, one re-entanglement.
    expect(lifecycle.some((e) => e.cause.startsWith('unfillable-gap'))).toBe(true);
    expect(reentangled.find((e) => e.register === 'kv')?.method).toBe('reconcile');
    expect(reentangled.find((e) => e.register === 'side')?.method).toBe('log');
    expect(f1.fullTransfers).toBe(f0.fullTransfers);
    expect(f1.reentanglements).toBe(f0.reentanglements + 1);
    // O(what the sequencer holds), not O(what was deleted): far below the ~2 MB state.
    const bytes = f1.reentangleBytes - f0.reentangleBytes + (s1.reentangleBytes - s0.reentangleBytes);
    expect(bytes).toBeGreaterThan(0);
    expect(bytes * 16).toBeLessThan(reg(f0, 'kv').stateBytes);

    // The unrelated register kept committing: follower writes committed while the pair was
    // re-entangling (between peer-heard and aligned, on the follower's clock), and no long stall.
    const heard = lifecycle.find((e) => e.to === 'REENTANGLING')!;
    const done = lifecycle.find((e) => e.to === 'ENTANGLED' && e.at >= heard.at)!;
    const during = sideCollapses.filter((at) => at >= heard.at && at <= done.at).length;
    const after = sideCollapses.filter((at) => at >= heard.at);
    let maxGap = 0;
    for (let i = 1; i < after.length; i++) maxGap = Math.max(maxGap, after[i] - after[i - 1]);
    expect(during).toBeGreaterThan(0);
    expect(maxGap).toBeLessThan(2000);

    console.log(
      JSON.stringify({
        keys: N,
        ms: t,
        reentanglingMs: Math.round(done.at - heard.at),
        reentangleBytes: bytes,
        deletedStateBytes: reg(f0, 'kv').stateBytes,
        sideCommitted,
        sideCommitsWhileReentangling: during,
        sideMaxGapMs: Math.round(maxGap),
      }),
    );
  }, 150_000);
});

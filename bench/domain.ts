/**
 * `spook-lab bench domain`: three spookd on loopback forming a QN domain (real UDP, ETCP,
 * fsync as configured).
 *
 *  committedPerSec       candidates (one set each) proposed on the leader through the admin
 *                        API, 256 in flight, until each is reported committed;
 *  pairCommittedPerSec   the baseline, same daemons and same run: sets on a pair register
 *                        between the leader and a follower;
 *  catchUpMs / Bytes     a follower stopped (SIGSTOP) while the other two commit `missed`
 *                        updates, then resumed: time until it has applied everything, and
 *                        the QN bytes it received and sent meanwhile (payload of the sealed
 *                        frames, ETCP's 36 bytes per frame not included);
 *  fullStateBytes        what a full copy of the domain's registers would cost.
 */
import { AdminClient } from '../client/admin-client.js';
import type { DomainSummary } from '../client/protocol.js';
import { Lab, sleep, until } from '../testing/lab/netns.js';

export interface DomainBenchResult {
  deltas: number;
  fsync: string;
  committedPerSec: number;
  pairCommittedPerSec: number;
  missedUpdates: number;
  catchUpMs: number;
  catchUpBytes: number;
  fullStateBytes: number;
  catchUpVsFull: number;
  leaderChanges: number;
}

const HOSTS = ['a', 'b', 'c'];

async function parallel(total: number, inflight: number, one: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < total) await one(next++);
    }),
  );
  return performance.now() - t0;
}

export async function runDomainBench(o: { deltas: number; missed: number; fsync: string; basePort: number }): Promise<DomainBenchResult> {
  const lab = new Lab(
    HOSTS,
    [
      { a: 'a', b: 'b', subnet: 1 },
      { a: 'a', b: 'c', subnet: 2 },
      { a: 'b', b: 'c', subnet: 3 },
    ],
    o.basePort,
    true,
  );
  const clients = new Map<string, AdminClient>();
  try {
    for (const h of HOSTS)
      lab.configure(h, [{ name: 'p', kind: 'map', maxPending: 65536 }], {
        fsync: o.fsync,
        logLevel: 'warn',
        domains: [
          {
            name: 'bench',
            members: HOSTS.filter((x) => x !== h),
            registers: [{ name: 'kv', kind: 'map' }],
            maxPending: 4096,
            electionMs: 1000,
            heartbeatMs: 100,
          },
        ],
      });
    await Promise.all(HOSTS.map((h) => lab.start(h)));
    for (const h of HOSTS) clients.set(h, await AdminClient.connect(lab.host(h).socket));
    const info = (h: string): Promise<DomainSummary> => clients.get(h)!.request('domain', { domain: 'bench' });
    const leader = await until(
      'a leader',
      async () => {
        for (const h of HOSTS) if ((await info(h)).role === 'leader') return h;
        return undefined;
      },
      30_000,
    );
    const follower = HOSTS.find((h) => h !== leader)!;
    const lc = clients.get(leader)!;
    const value = 'v'.repeat(100);
    const ms = await parallel(o.deltas, 256, async (i) => {
      const r = await lc.request('dpropose', {
        domain: 'bench',
        ops: [{ register: 'kv', op: 'set', key: `key-${i}`, value }],
        timeoutMs: 60_000,
      });
      if (r.verdict !== 'committed') throw new Error(`candidate ${i}: ${r.verdict}`);
    });
    const committedPerSec = Math.round(o.deltas / (ms / 1000));
    // The baseline: the same daemons committing sets on a pair register.
    await until('pair entangled', async () => (await lc.request('pair', { peer: follower })).state === 'ENTANGLED', 20_000);
    const pairMs = await parallel(o.deltas, 256, (i) =>
      lc.request('set', { peer: follower, register: 'p', key: `key-${i}`, value, timeoutMs: 60_000 }),
    );
    const pairCommittedPerSec = Math.round(o.deltas / (pairMs / 1000));

    // Catch-up: stop a follower, commit `missed` updates on the other two, resume it.
    await until('follower caught up', async () => (await info(follower)).appliedIndex === (await info(leader)).commitIndex, 30_000);
    const before = await info(follower);
    lab.host(follower).proc!.kill('SIGSTOP');
    await parallel(o.missed, 256, (i) =>
      lc.request('dpropose', {
        domain: 'bench',
        ops: [{ register: 'kv', op: 'set', key: `key-${i % o.deltas}`, value: `${i}`.padEnd(100, '.') }],
        timeoutMs: 60_000,
      }),
    );
    const target = (await info(leader)).commitIndex;
    await sleep(200);
    const t0 = performance.now();
    lab.host(follower).proc!.kill('SIGCONT');
    const after = await until(
      'follower caught up after the stop',
      async () => {
        const x = await info(follower);
        return x.appliedIndex >= target ? x : undefined;
      },
      120_000,
      20,
    );
    const catchUpMs = Math.round(performance.now() - t0);
    const catchUpBytes = after.stats.bytesIn - before.stats.bytesIn + (after.stats.bytesOut - before.stats.bytesOut);
    return {
      deltas: o.deltas,
      fsync: o.fsync,
      committedPerSec,
      pairCommittedPerSec,
      missedUpdates: o.missed,
      catchUpMs,
      catchUpBytes,
      fullStateBytes: after.fullStateBytes,
      catchUpVsFull: Number((catchUpBytes / after.fullStateBytes).toFixed(3)),
      leaderChanges: (await info(leader)).stats.leaderChanges,
    };
  } finally {
    for (const c of clients.values()) c.close();
    await lab.destroy();
  }
}

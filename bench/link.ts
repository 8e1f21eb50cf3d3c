/**
 * `spook-lab bench link`: two spookd processes over loopback UDP (real sockets, ETCP, fsync
 * as configured).
 *
 *  committedPerSec       set deltas/s proposed through the admin API on the sequencer and
 *                        committed and applied at the follower (same version and hash);
 *  bytesPerDelta         bytes on the wire (both directions, sealed frames) per delta;
 *  reentangleBytes/Ms    after the follower was stopped (SIGSTOP) for `cutMs` while the
 *                        sequencer took `rate` updates/s: bytes both ends exchanged while
 *                        re-entangling, and the time from SIGCONT to aligned;
 *  fullStateBytes        what a full transfer of the registers would cost at that point;
 *  etcd                  the same-run baseline (issue 16): a ONE-member etcd (Debian's
 *                        etcd-server, foreground on loopback, WAL fsynced per commit) under
 *                        the same load through the etcd3 client (the same number of puts of
 *                        the same keys and values, 256 in flight), and the pair's ratio to it
 *                        (goal: 3x). Run after the pair, on the same machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient } from '../client/admin-client.js';
import type { PairSummary } from '../client/protocol.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { etcdPuts, etcdVersion, withEtcd } from './etcd.js';
import { loadFigures } from './load.js';

export interface LinkBenchResult {
  deltas: number;
  committedPerSec: number;
  bytesPerDelta: number;
  fsync: string;
  cutMs: number;
  ratePerSec: number;
  missedUpdates: number;
  reentangleBytes: number;
  reentangleMs: number;
  fullStateBytes: number;
  reentangleVsFull: number;
  /** The one-member etcd baseline of this run (null with --no-etcd). */
  etcd: { puts: number; acked: number; putsPerSec: number; p50Ms: number; p99Ms: number; version: string; members: 1 } | null;
  etcdCommittedPerSec: number | null;
  /** committedPerSec / etcdCommittedPerSec (goal >= 3). */
  vsEtcd: number | null;
}

/** The pair's load, shared with the etcd baseline. */
const INFLIGHT = 256;
const VALUE = 'v'.repeat(32);
const keyOf = (i: number): string => `k${i % 50_000}`;

const ROOT = new URL('../../', import.meta.url).pathname;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runLinkBench(o: {
  deltas: number;
  cutMs: number;
  rate: number;
  fsync: string;
  basePort: number;
  /** Measure the one-member etcd baseline (on basePort+10, +11) after the pair. */
  etcd?: boolean;
}): Promise<LinkBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-link-'));
  const keys = [generateKeyPair(), generateKeyPair()];
  const procs: ChildProcess[] = [];
  const sockets = [join(dir, 'a.sock'), join(dir, 'b.sock')];
  try {
    for (let i = 0; i < 2; i++) {
      const keyFile = join(dir, `key${i}`);
      writeFileSync(keyFile, `${encodeKey(keys[i].privateKey)}\n`, { mode: 0o600 });
      const cfg = {
        listen: `127.0.0.1:${o.basePort + i}`,
        privateKeyFile: keyFile,
        dataDir: join(dir, `data${i}`),
        adminSocket: sockets[i],
        fsync: o.fsync,
        logLevel: 'warn',
        peers: [{ name: 'peer', publicKey: encodeKey(keys[1 - i].publicKey), endpoint: `127.0.0.1:${o.basePort + 1 - i}` }],
        registers: [{ name: 'kv', kind: 'map', maxPending: 100_000 }],
      };
      writeFileSync(join(dir, `conf${i}`), JSON.stringify(cfg));
      procs.push(spawn(process.execPath, [join(ROOT, 'bin/spookd'), '--config', join(dir, `conf${i}`)], { stdio: 'ignore' }));
    }
    const clients: AdminClient[] = [];
    for (const s of sockets) {
      for (let t = 0; ; t++) {
        try {
          clients.push(await AdminClient.connect(s));
          break;
        } catch (e) {
          if (t > 150) throw e;
          await sleep(100);
        }
      }
    }
    const info = (i: number): Promise<PairSummary> => clients[i].request('pair', {});
    const aligned = async (): Promise<boolean> => {
      const [p, q] = await Promise.all([info(0), info(1)]);
      return (
        p.state === 'ENTANGLED' &&
        q.state === 'ENTANGLED' &&
        p.registers[0].version === q.registers[0].version &&
        p.registers[0].hash === q.registers[0].hash &&
        p.registers[0].pending + q.registers[0].pending === 0
      );
    };
    const waitAligned = async (limitMs: number): Promise<void> => {
      const end = Date.now() + limitMs;
      while (!(await aligned())) {
        if (Date.now() > end) throw new Error('bench: the pair did not align');
        await sleep(5);
      }
    };
    await waitAligned(20_000);
    const seq = (await info(0)).role === 'sequencer' ? 0 : 1;
    const fol = 1 - seq;

    // Throughput: a window of outstanding proposals on the sequencer.
    const bytes0 = (await info(0)).bytesSent + (await info(1)).bytesSent;
    const t0 = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < o.deltas) {
        const i = next++;
        await clients[seq].request('set', { register: 'kv', key: keyOf(i), value: VALUE });
      }
    };
    await Promise.all(Array.from({ length: INFLIGHT }, worker));
    await waitAligned(60_000);
    const dt = (performance.now() - t0) / 1000;
    const bytes1 = (await info(0)).bytesSent + (await info(1)).bytesSent;

    // A cut: stop the follower while the sequencer keeps committing at `rate`/s.
    const pid = procs[fol].pid!;
    process.kill(pid, 'SIGSTOP');
    const cutStart = Date.now();
    let missed = 0;
    const writes: Promise<unknown>[] = [];
    while (Date.now() - cutStart < o.cutMs) {
      const due = Math.floor(((Date.now() - cutStart) / 1000) * o.rate);
      while (missed < due)
        writes.push(clients[seq].request('set', { register: 'kv', key: `cut${missed % 5000}`, value: `${missed++}`, timeoutMs: 100 }));
      await sleep(2);
    }
    await Promise.all(writes);
    const before = (await info(seq)).reentangleBytes;
    process.kill(pid, 'SIGCONT');
    const folBefore = (await info(fol)).reentangleBytes;
    const r0 = performance.now();
    await waitAligned(60_000);
    const reentangleMs = performance.now() - r0;
    const after = (await info(seq)).reentangleBytes + (await info(fol)).reentangleBytes;
    const reentangleBytes = after - before - folBefore;
    const fullStateBytes = (await info(seq)).registers.reduce((a, r) => a + r.stateBytes, 0);
    for (const c of clients) c.close();
    for (const p of procs) p.kill('SIGKILL'); // the baseline runs alone
    const etcd = o.etcd === false ? null : await etcdBaseline(o.deltas, o.basePort + 10);
    return {
      deltas: o.deltas,
      committedPerSec: Math.round(o.deltas / dt),
      bytesPerDelta: Number(((bytes1 - bytes0) / o.deltas).toFixed(1)),
      fsync: o.fsync,
      cutMs: o.cutMs,
      ratePerSec: o.rate,
      missedUpdates: missed,
      reentangleBytes,
      reentangleMs: Math.round(reentangleMs),
      fullStateBytes,
      reentangleVsFull: Number((reentangleBytes / fullStateBytes).toFixed(4)),
      etcd,
      etcdCommittedPerSec: etcd && etcd.putsPerSec,
      vsEtcd: etcd && Number((o.deltas / dt / etcd.putsPerSec).toFixed(2)),
    };
  } finally {
    for (const p of procs) {
      try {
        process.kill(p.pid!, 'SIGCONT');
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The same puts (keys, values, in flight) on a one-member etcd started for the purpose (client port `port`). */
async function etcdBaseline(puts: number, port: number): Promise<LinkBenchResult['etcd']> {
  const version = etcdVersion();
  return withEtcd(
    port - 10,
    async (etcd) => {
      const load = await etcdPuts(
        etcd.client(etcd.leaderUrl),
        { sets: puts, inflight: INFLIGHT, limitMs: 300_000, key: keyOf },
        () => VALUE,
      );
      const f = loadFigures(load);
      return { puts, acked: load.acked, putsPerSec: f.perSec, p50Ms: f.p50Ms, p99Ms: f.p99Ms, version, members: 1 as const };
    },
    1,
  );
}

/**
 * `spook-lab bench attack`: how much one authorised, hostile peer slows a victim's other pair.
 *
 * Three spookd identities on loopback: the victim v, an honest peer h and the adversary x
 * (testing/lab/adversary.ts, in its own process; no spookd runs for x). v is the follower of
 * its pair with h, so each measured write crosses the link: a `set` at v through the admin
 * API, timed until v reports it committed. v is the sequencer of its pair with x, whose map
 * holds `keys` entries: the register x's reconciliation requests make v pin. v's dial policy
 * lets x reach the wrapper flood's sink, so that flood is served (dialled, delivered,
 * acknowledged), the most it can cost.
 *
 * Phases, in one run: an unattacked phase before each attack and one after the last (the
 * baseline is all of them pooled, so background load on a shared machine falls on both
 * sides), and x running each attack in turn (fresh-pin reconciliation requests, a handshake
 * flood, a wrapper flood), v given time to recover after each. Per phase: p50 and p99 commit
 * latency and the ratio of the p99 to the pooled unattacked p99 (goal: within 2x); what v
 * did about the attack (its drop and wrapper counters, deltas over the phase) and the CPU
 * time v and the adversary used, so a figure can be told from an attack that never arrived.
 * The `writes` writes of a phase are spread evenly over `attackMs`, one at a time; a write
 * that does not commit within WRITE_TIMEOUT_MS counts as that long and ends the phase.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AdminClient } from '../client/admin-client.js';
import { Lab, ROOT, sleep, until } from '../testing/lab/netns.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import type { Attack, AttackReport, AttackSpec } from '../testing/lab/adversary.js';

const WRITE_TIMEOUT_MS = 10_000;
/** After an attack, v must commit a write within this long again before the next phase. */
const RECOVERY_MS = 60_000;
const VALUE = 'v'.repeat(100);

export interface AttackPhase {
  attack: 'none' | 'recon' | 'handshake' | 'wrap';
  /** Wall-clock start (ISO 8601): an unattacked phase's figures are read next to its neighbours'. */
  at: string;
  writes: number;
  /** Writes that did not commit within WRITE_TIMEOUT_MS (or were refused). */
  failed: number;
  p50Ms: number;
  p99Ms: number;
  /** p99 over the pooled unattacked p99 (goal: at most 2); 1 for the unattacked phases. */
  ratio: number;
  /** What the adversary sent: requests, handshake frames, WRAP records. */
  attackerSent: number;
  /** Data frames v sent the adversary back (its answers to reconciliation requests). */
  attackerReceived: number;
  /** Handshake frames v answered with: HandshakeResps (each a DH) and CookieReplies. */
  handshakeResponses: number;
  cookieReplies: number;
  /** What v counted over the phase (deltas, non-zero only): drops by reason, wrapper counters for x. */
  victim: Record<string, number>;
  /** CPU time (user + system) over the phase: v's, and the adversary process's. */
  victimCpuMs: number;
  attackerCpuMs: number;
  /** ms from the end of the attack until v committed a write again (-1: not within RECOVERY_MS). */
  recoveryMs: number;
  victimAlive: boolean;
}

export interface AttackBenchResult {
  keys: number;
  reconRate: number;
  handshakeRate: number;
  fsync: string;
  attackerNice: number;
  /** The p99 of every unattacked write of the run, pooled: what each attacked p99 is divided by. */
  baselineP99Ms: number;
  baselineWrites: number;
  phases: AttackPhase[];
}

const pct = (sorted: number[], p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const round = (x: number): number => Math.round(x * 100) / 100;

function compareKeys(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

/** A request that gives up after `ms` (a frozen daemon answers late or never). */
function within<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<'timeout'>((r) => (t = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(t));
}

/** User + system CPU time of a process in ms (Linux /proc; clock ticks of 10 ms), 0 when it is gone. */
function cpuMs(p: ChildProcess | undefined): number {
  if (p?.pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // utime, stime (fields 14 and 15)
  } catch {
    return 0;
  }
}

/** Numeric leaves of a JSON value, flattened to dotted names. */
function flatten(v: unknown, prefix: string, out: Record<string, number>): Record<string, number> {
  if (typeof v === 'number') out[prefix] = v;
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

async function parallel(total: number, inflight: number, one: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (next < total) await one(next++);
    }),
  );
}

export async function runAttackBench(o: {
  keys: number;
  writes: number;
  attackMs: number;
  reconRate: number;
  handshakeRate: number;
  fsync: string;
  basePort: number;
  attackerNice?: number;
  log?: (line: string) => void;
}): Promise<AttackBenchResult> {
  const log = o.log ?? (() => {});
  const lab = new Lab(
    ['v', 'h', 'x'],
    [
      { a: 'v', b: 'h', subnet: 1 },
      { a: 'v', b: 'x', subnet: 2 },
    ],
    o.basePort,
    true,
  );
  // Keys ordered h < v < x: v follows h (the measured pair) and sequences x (the attacked one).
  const keys: KeyPair[] = [generateKeyPair(), generateKeyPair(), generateKeyPair()].sort((a, b) => compareKeys(a.publicKey, b.publicKey));
  lab.host('h').key = keys[0];
  lab.host('v').key = keys[1];
  lab.host('x').key = keys[2];
  const clients: AdminClient[] = [];
  try {
    const common = { fsync: o.fsync, logLevel: 'warn', wrap: { interception: 'off' } };
    // The wrapper flood's sink (served by the adversary) is a destination v lets x reach.
    const sink = { family: 4 as const, address: '127.0.0.1', port: lab.host('x').port + 100 };
    lab.configure('v', [{ name: 'p', kind: 'map', maxPending: 65536 }], {
      ...common,
      wrap: { ...common.wrap, allow: [{ peer: 'x', to: `${sink.address}:${sink.port}` }] },
    });
    lab.configure('h', [{ name: 'p', kind: 'map', maxPending: 65536 }], common);
    await Promise.all(['v', 'h'].map((h) => lab.start(h)));
    const admin = await AdminClient.connect(lab.host('v').socket);
    clients.push(admin);
    await until('v-h entangled', async () => (await admin.request('pair', { peer: 'h' })).state === 'ENTANGLED', 20_000);

    // The attacked register: v, x's sequencer, commits these on its own (x never answers).
    log(`loading ${o.keys} keys into v's pair with x`);
    await parallel(o.keys, 256, async (i) => {
      const r = await admin.request('set', {
        peer: 'x',
        register: 'p',
        key: `key-${i}`,
        value: VALUE,
        timeoutMs: 60_000,
      });
      if (r.verdict !== 'committed') throw new Error(`preload ${i}: ${r.verdict}`);
    });

    const v = lab.host('v');
    const x = lab.host('x');
    let attackerCpu = 0;
    const runAttack = (seed: number, attack: Attack): Promise<AttackReport> => {
      const spec: AttackSpec = {
        seed,
        privateKey: encodeKey(x.key.privateKey),
        victim: { publicKey: encodeKey(v.key.publicKey), host: '127.0.0.1', port: v.port },
        bind: { host: '127.0.0.1', port: x.port },
        attack,
      };
      // attackerNice > 0: the adversary yields the CPU to v and h (on a real network it has its own host).
      const argv = [process.execPath, join(ROOT, 'dist/testing/lab/adversary.js'), JSON.stringify(spec)];
      const cmd = o.attackerNice ? ['nice', '-n', String(o.attackerNice), ...argv] : argv;
      const p = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
      let cpu = 0;
      const sample = setInterval(() => (cpu = cpuMs(p) || cpu), 100); // the last reading before it exits
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      return new Promise((resolve) => {
        const kill = setTimeout(() => p.kill('SIGKILL'), o.attackMs + 30_000);
        p.on('exit', () => {
          clearTimeout(kill);
          clearInterval(sample);
          attackerCpu = cpu;
          try {
            resolve(JSON.parse(out.trim().split('\n').pop()!) as AttackReport);
          } catch {
            resolve({
              kind: attack.kind,
              sent: 0,
              handshakes: 0,
              received: 0,
              carriers: 0,
              idleOpened: 0,
              bytes: 0,
              ms: 0,
              errors: ['the adversary printed no report'],
            });
          }
        });
      });
    };

    let seq = 0;
    /** Sequential writes at v on its pair with h, one every ms/writes (spread over the attack), until the phase's time is up. */
    const measure = async (ms: number): Promise<{ lat: number[]; failed: number }> => {
      const c = await AdminClient.connect(v.socket);
      clients.push(c);
      const lat: number[] = [];
      let failed = 0;
      const start = performance.now();
      const every = ms / o.writes;
      while (lat.length < o.writes && performance.now() < start + ms) {
        await sleep(start + lat.length * every - performance.now());
        const t0 = performance.now();
        const r = await within(
          c.request('set', {
            peer: 'h',
            register: 'p',
            key: `w-${seq++ % 1000}`,
            value: VALUE,
            timeoutMs: WRITE_TIMEOUT_MS,
          }),
          WRITE_TIMEOUT_MS + 1000,
        ).catch(() => 'timeout' as const);
        lat.push(performance.now() - t0);
        if (r === 'timeout' || r.verdict !== 'committed') failed++;
        if (r === 'timeout') break; // this connection has a request outstanding: the phase ends here
      }
      return { lat: lat.sort((a, b) => a - b), failed };
    };
    const alive = (): boolean => v.proc !== undefined && v.proc.exitCode === null && v.proc.signalCode === null;
    /** Time until v commits a write again on a fresh connection. */
    const recovery = async (): Promise<number> => {
      const t0 = performance.now();
      while (alive() && performance.now() - t0 < RECOVERY_MS) {
        const c = await within(AdminClient.connect(v.socket), 5000).catch(() => 'timeout' as const);
        if (c !== 'timeout') {
          clients.push(c);
          const r = await within(
            c.request('set', { peer: 'h', register: 'p', key: 'recovery', value: VALUE, timeoutMs: 5000 }),
            6000,
          ).catch(() => 'timeout' as const);
          if (r !== 'timeout' && r.verdict === 'committed') return Math.round(performance.now() - t0);
        }
        await sleep(200);
      }
      return -1;
    };

    /** v's counters now: daemon drops, x's pair drops and budget refusals, x's wrapper session and carrier refusals. */
    const counters = async (): Promise<Record<string, number>> => {
      const c = await within(admin.request('status', {}), 5000).catch(() => 'timeout' as const);
      const pair = await within(admin.request('pair', { peer: 'x' }), 5000).catch(() => 'timeout' as const);
      const wrap = await within(admin.request('wrap-stats', {}), 5000).catch(() => 'timeout' as const);
      const out: Record<string, number> = {};
      if (c !== 'timeout') flatten(c.drops, 'drops', out);
      if (pair !== 'timeout')
        flatten({ drops: pair.drops, overBudget: pair.overBudget, datagramsReceived: pair.datagramsReceived }, 'pairX', out);
      if (wrap !== 'timeout') {
        const { peer: _, lastError: __, carrier: ___, ...w } = wrap.peers.find((q) => q.peer === 'x') ?? { peer: 'x' };
        flatten({ carrierRefused: wrap.carrierRefused, ...w }, 'wrapX', out);
      }
      return out;
    };
    const delta = (before: Record<string, number>, after: Record<string, number>): Record<string, number> => {
      const d: Record<string, number> = {};
      // Gauges (buffered bytes, connections) are reported as they stand at the end; counters as deltas.
      const gauge = /bufferedIn|bufferedOut|connections|carrierBytes/;
      for (const [k, v] of Object.entries(after)) {
        if (k.endsWith('maxBufferedBytes')) continue; // configuration, not a count
        const x = gauge.test(k) ? v : v - (before[k] ?? 0);
        if (x !== 0) d[k] = x;
      }
      return d;
    };

    const phases: AttackPhase[] = [];
    const baseline: number[] = [];
    const phase = async (name: AttackPhase['attack'], attack?: Attack): Promise<boolean> => {
      log(`phase ${name}`);
      const at = new Date().toISOString();
      const before = await counters();
      const cpu0 = cpuMs(v.proc);
      attackerCpu = 0;
      const running = attack ? runAttack(phases.length + 1, attack) : undefined;
      if (running) await sleep(300); // the attack under way before the first timed write
      const m = await measure(o.attackMs);
      const report = await running;
      const victimCpuMs = cpuMs(v.proc) - cpu0;
      const victim = delta(before, await counters());
      const recoveryMs = attack ? await recovery() : 0;
      if (!attack) baseline.push(...m.lat);
      phases.push({
        attack: name,
        at,
        writes: m.lat.length,
        failed: m.failed,
        p50Ms: round(pct(m.lat, 50)),
        p99Ms: round(pct(m.lat, 99)),
        ratio: 1,
        attackerSent: report?.sent ?? 0,
        attackerReceived: report?.received ?? 0,
        handshakeResponses: report?.handshakeResponses ?? 0,
        cookieReplies: report?.cookieReplies ?? 0,
        victim,
        victimCpuMs,
        attackerCpuMs: attack ? attackerCpu : 0,
        recoveryMs,
        victimAlive: alive(),
      });
      if (report?.errors.length) log(`  adversary: ${report.errors.join('; ')}`);
      return alive() && recoveryMs >= 0;
    };

    // Unattacked phases between the attacks: the baseline shares the run's background load.
    const attacks: [AttackPhase['attack'], Attack][] = [
      ['recon', { kind: 'recon-flood', durationMs: o.attackMs, rate: o.reconRate, register: 'p' }],
      ['handshake', { kind: 'handshake-flood', durationMs: o.attackMs, rate: o.handshakeRate }],
      // The adversary is also the destination v dials (it reads and discards): the bench process only measures.
      ['wrap', { kind: 'wrap-flood', durationMs: o.attackMs, connections: 64, sink, serve: 'discard' }],
    ];
    let ok = true;
    for (const [name, attack] of attacks) {
      await phase('none');
      if (!(ok = await phase(name, attack))) break;
    }
    if (ok) await phase('none');
    else log(`v ${alive() ? 'did not recover' : 'died'}; later phases skipped:\n${lab.logOf('v')}`);
    baseline.sort((a, b) => a - b);
    const baselineP99Ms = round(pct(baseline, 99));
    for (const p of phases) if (p.attack !== 'none') p.ratio = round(p.p99Ms / baselineP99Ms);
    return {
      keys: o.keys,
      reconRate: o.reconRate,
      handshakeRate: o.handshakeRate,
      fsync: o.fsync,
      attackerNice: o.attackerNice ?? 0,
      baselineP99Ms,
      baselineWrites: baseline.length,
      phases,
    };
  } finally {
    for (const c of clients) c.close();
    // SIGTERM first: a daemon run with SPOOK_LAB_NODE_ARGS=--cpu-prof writes its profile only on a clean exit.
    await Promise.all(['v', 'h'].map((h) => lab.stop(h).catch(() => undefined)));
    await lab.destroy();
  }
}

import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, ROOT, sleep, until } from '../../testing/lab/netns.js';
import { encodeKey } from '../../drivers/daemon/keys.js';
import { generateKeyPair } from '../../crypto/primitives.js';
import { pairIdentity } from '../../core/etcp/endpoint.js';
import { CloseReason, encodeMessage, MsgType } from '../../wire/messages.js';
import type { Attack, AttackReport, AttackSpec } from '../../testing/lab/adversary.js';
import type {
  AdminArgs,
  AdminCommand,
  AdminRequestArgs,
  AdminResult,
  DomainMapGetResult,
  DomainOutcome,
  MapGetResult,
  Outcome,
} from '../../client/protocol.js';

/**
 * Containment (issue 13): an authorised peer `adv`, built from the project's own code
 * (testing/lab/adversary.ts), attacks a victim spookd `vic` in network namespaces with sealed,
 * authenticated but hostile ESTP, QN and WRAP messages (over 100,000 in all) and with
 * unauthenticated pressure. vic has an honest pair with hon1 and an honest domain `main` with
 * hon1 and hon2, of which adv is not a member; adv is a member of a second domain, `shared`
 * (vic, hon1, adv).
 *
 * Categories: estp (fuzz, then one payload that closes the pair twice), qn-member,
 * qn-non-member, wrap (fuzz), wrap-memory (a server that never reads, 512 MiB pushed at it)
 * and unauthenticated (handshake replays, idle carrier sockets).
 * Each category is its own test and asserts the same things, during and after the attack:
 * vic is alive, its admin socket answers, the honest pair vic-hon1 keeps committing (and the
 * writes reach hon1), `main` keeps committing (and the writes reach hon2), neither of them
 * decoheres (lost contact is what a stalled victim causes), and vic's RSS stays under
 * RSS_BOUND_MB. A category that kills a host is followed by a fresh start of every host (data
 * wiped) so that the next category is judged on its own.
 */
// Names unique among the e2e labs (namespaces are named after them within one test process).
const HOSTS = ['vic', 'hon1', 'hon2', 'adv'];
const REGISTERS = [
  { name: 'config', kind: 'map' },
  { name: 'journal', kind: 'stream' },
];
const DOMAIN_REGS = [{ name: 'kv', kind: 'map' }];
/** vic's resident set may not pass this during or after an attack (idle, it is ~70-90 MB). */
const RSS_BOUND_MB = 256;
/** Honest writes made while an attack runs, one every HONEST_EVERY_MS. */
const HONEST_EVERY_MS = 400;
/** systemd's default soft descriptor limit, which an installed spookd runs with. */
const SERVICE_NOFILE = 1024;

let lab: Lab;
let generation = 0;

function configureAll(): void {
  const dom = (name: string, members: string[]): object => ({ name, members, registers: DOMAIN_REGS, electionMs: 600, heartbeatMs: 60 });
  const common = { logLevel: 'info', wrap: { interception: 'off' } };
  const peer = (n: string, from: string): { name: string; publicKey: string; endpoint?: string } => {
    const p = lab.host(n);
    const addr = p.addrs.get(from);
    return { name: n, publicKey: encodeKey(p.key.publicKey), ...(addr ? { endpoint: `${addr}:${p.port}` } : {}) };
  };
  // The fuzz must reach the protocol cores: the violation limit (a separate defence) would cut
  // the session after 100 malformed messages and hide what the cores do with the rest, and the
  // per-peer work budget (another, §12.9) would drop most of the fuzz before it is opened.
  lab.configure('vic', REGISTERS, {
    ...common,
    violationLimit: 1_000_000,
    peerBudgetMs: 1000,
    domains: [dom('main', ['hon1', 'hon2']), dom('shared', ['hon1', 'adv'])],
  });
  lab.configure('hon1', REGISTERS, { ...common, domains: [dom('main', ['vic', 'hon2']), dom('shared', ['vic', 'adv'])] }, [
    peer('vic', 'hon1'),
    peer('hon2', 'hon1'),
    peer('adv', 'hon1'),
  ]);
  lab.configure('hon2', REGISTERS, { ...common, domains: [dom('main', ['vic', 'hon1'])] });
}

const alive = (h: string): boolean => {
  const p = lab.host(h).proc;
  return !!p && p.exitCode === null && p.signalCode === null;
};

/** An admin request that gives up after `ms` (a frozen daemon must fail the test, not hang it). */
async function admin<C extends AdminCommand>(h: string, cmd: C, args?: AdminArgs<C>, ms = 5000): Promise<AdminResult<C>> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      lab.admin(h, cmd, ...([args] as AdminRequestArgs<C>)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`admin ${cmd} on ${h}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const pairWrite = (key: string): Promise<Outcome> =>
  admin('vic', 'set', { peer: 'hon1', register: 'config', key, value: key, timeoutMs: 3000 });
const domainWrite = (key: string): Promise<DomainOutcome> =>
  admin('vic', 'dpropose', { domain: 'main', ops: [{ register: 'kv', op: 'set', key, value: key }], timeoutMs: 5000 });

function rssMb(h: string): number {
  const status = readFileSync(`/proc/${lab.host(h).proc!.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function healthy(): Promise<boolean> {
  const p = await admin('vic', 'pair', { peer: 'hon1' });
  const d = await Promise.all(['vic', 'hon1', 'hon2'].map((h) => admin(h, 'domain', { domain: 'main' })));
  return p.state === 'ENTANGLED' && d.every((x) => x.state === 'coherent') && d.filter((x) => x.role === 'leader').length === 1;
}

/**
 * Every host up, the honest pair and domain working and vic's memory under the bound; after a
 * casualty (a dead host, or memory the last category left held), all of them start afresh.
 */
async function heal(): Promise<void> {
  const up =
    ['vic', 'hon1', 'hon2'].every(alive) &&
    rssMb('vic') < RSS_BOUND_MB &&
    (await until('healthy', healthy, 15_000).then(
      () => true,
      () => false,
    ));
  if (up) return;
  generation++;
  for (const h of ['vic', 'hon1', 'hon2']) {
    await lab.kill9(h);
    const dir = lab.host(h).dir;
    rmSync(join(dir, 'data'), { recursive: true, force: true });
    // Each start gets a clean log: a failure message then shows this category's lines only.
    if (existsSync(join(dir, 'spookd.log'))) renameSync(join(dir, 'spookd.log'), join(dir, `spookd.${generation}.log`));
  }
  await Promise.all(['vic', 'hon1', 'hon2'].map((h) => lab.start(h)));
  await until('healthy after a fresh start', healthy, 30_000);
}

/** Run the adversary in adv's namespace; resolves with its report (or the reason it has none). */
function attack(seed: number, a: Attack, timeoutMs: number): Promise<AttackReport> {
  const x = lab.host('adv');
  const v = lab.host('vic');
  const spec: AttackSpec = {
    seed,
    privateKey: encodeKey(x.key.privateKey),
    victim: { publicKey: encodeKey(v.key.publicKey), host: v.addrs.get('adv')!, port: v.port },
    bind: { host: x.addrs.get('vic')!, port: x.port },
    attack: a,
  };
  const p = spawn('ip', ['netns', 'exec', x.ns, process.execPath, join(ROOT, 'dist/testing/lab/adversary.js'), JSON.stringify(spec)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stdout.on('data', (c: Buffer) => (out += c.toString()));
  p.stderr.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`the adversary ran past ${timeoutMs} ms`));
    }, timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      if (code === 0 && out.trim()) resolve(JSON.parse(out.trim().split('\n').pop()!) as AttackReport);
      else reject(new Error(`the adversary exited with ${code}: ${err.slice(-2000)}`));
    });
  });
}

/** Counters that move only when the honest pair or domain lost contact (decoherence). */
async function disruptions(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [h, peer] of [
    ['vic', 'hon1'],
    ['hon1', 'vic'],
  ])
    out[`pair ${h}-${peer} re-entanglements`] = (await admin(h, 'pair', { peer })).reentanglements;
  for (const h of ['vic', 'hon1', 'hon2'])
    out[`domain main partitions seen at ${h}`] = (await admin(h, 'domain', { domain: 'main' })).partitionsSeen;
  return out;
}

/** Why contact was lost, as the hosts saw it: recent partitions (when, cause) and datagrams dropped over a work budget. */
async function contactReport(): Promise<string> {
  const out: string[] = [];
  for (const h of ['vic', 'hon1', 'hon2']) {
    const d = await admin(h, 'domain', { domain: 'main' }).catch((e: Error) => e);
    const s = await admin(h, 'status').catch((e: Error) => e);
    const parts =
      d instanceof Error
        ? d.message
        : `${JSON.stringify(d.recentPartitions)} (now ${d.role} in term ${d.term}; ${JSON.stringify({ elections: d.stats.elections, leaderChanges: d.stats.leaderChanges, stepDowns: d.stats.stepDowns })})`;
    const drops =
      s instanceof Error ? s.message : JSON.stringify({ peer: s.drops['peer-over-budget'], source: s.drops['source-over-budget'] });
    out.push(`${h}: partitions ${parts}; over budget ${drops}`);
  }
  return out.join('\n');
}

interface Verdict {
  before: Record<string, number>;
  report: AttackReport;
  /** Honest writes that did not commit while the attack ran (with why). */
  honestFailures: string[];
  honestWrites: number;
  maxRssMb: number;
  /** When the attack started (ISO time, as the hosts' partition records). */
  startedAt: string;
}

/** Attack while writing honestly through vic every HONEST_EVERY_MS; then the common assertions. */
async function underAttack(name: string, seed: number, a: Attack, timeoutMs: number): Promise<Verdict> {
  const before = await disruptions();
  const startedAt = new Date().toISOString();
  const failures: string[] = [];
  let writes = 0;
  let maxRssMb = 0;
  let done = false;
  const honest = (async () => {
    for (let i = 0; !done; i++) {
      const t0 = performance.now();
      if (!alive('vic')) break;
      try {
        maxRssMb = Math.max(maxRssMb, rssMb('vic'));
      } catch {
        /* exited between the check and the read */
      }
      const key = `${name}/${i}`;
      writes++;
      const o = await (i % 2 === 0 ? pairWrite(key) : domainWrite(key)).catch((e: Error) => ({ verdict: e.message }));
      if (o.verdict !== 'committed') failures.push(`${i % 2 === 0 ? 'pair' : 'domain'} write ${key}: ${o.verdict}`);
      await sleep(Math.max(0, HONEST_EVERY_MS - (performance.now() - t0)));
    }
  })();
  let report: AttackReport;
  try {
    report = await attack(seed, a, timeoutMs);
  } catch (e) {
    report = {
      kind: a.kind,
      sent: 0,
      handshakes: 0,
      received: 0,
      carriers: 0,
      idleOpened: 0,
      bytes: 0,
      ms: 0,
      errors: [(e as Error).message],
    };
  } finally {
    done = true;
    await honest;
  }
  // The figures the lead compares between runs (sent, handshakes, carriers, the adversary's own errors).
  console.log(
    `[adversary ${name}] ${JSON.stringify(report)}; honest writes ${writes}, failed ${failures.length}, max RSS ${maxRssMb.toFixed(0)} MB`,
  );
  return { before, report, honestFailures: failures, honestWrites: writes, maxRssMb, startedAt };
}

/** The first exception a host's log shows (its message and where it was thrown), if any. */
function firstError(h: string): string | undefined {
  let lines: string[];
  try {
    lines = readFileSync(join(lab.host(h).dir, 'spookd.log'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
  // Node prints an uncaught exception as `Name: message` and then its stack (`    at ...`).
  const at = lines.findIndex((l, i) => /^\w+: /.test(l) && lines[i + 1]?.startsWith('    at '));
  return at < 0 ? undefined : lines.slice(at, at + 8).join('\n');
}

/** The assertions every category shares; messages carry the daemons' last log lines. */
async function expectContained(name: string, v: Verdict): Promise<void> {
  const logs = (): string =>
    ['vic', 'hon1', 'hon2'].map((h) => `--- ${h} (${alive(h) ? 'alive' : 'DEAD'}):\n${firstError(h) ?? lab.logOf(h)}`).join('\n');
  expect(alive('vic'), `the victim died under the ${name} attack\n${logs()}`).toBe(true);
  expect(['hon1', 'hon2'].every(alive), `an honest host died during the ${name} attack\n${logs()}`).toBe(true);
  const status = await admin('vic', 'status').catch((e: Error) => e);
  expect(status instanceof Error ? status.message : 'answers', 'the admin socket').toBe('answers');
  expect(v.honestFailures, `honest writes during the ${name} attack (of ${v.honestWrites})\n${logs()}`).toEqual([]);
  // After the attack: a pair write that reaches h1 and a domain write that reaches h2.
  const key = `${name}/after`;
  expect((await pairWrite(key).catch((e: Error) => ({ verdict: e.message }))).verdict, 'pair write after the attack').toBe('committed');
  expect((await domainWrite(key).catch((e: Error) => ({ verdict: e.message }))).verdict, 'domain write after the attack').toBe('committed');
  await until(
    'the pair write at h1',
    async () => ((await admin('hon1', 'get', { peer: 'vic', register: 'config', key })) as MapGetResult).found,
    10_000,
  );
  await until(
    'the domain write at h2',
    async () => ((await admin('hon2', 'dget', { domain: 'main', register: 'kv', key })) as DomainMapGetResult).found,
    10_000,
  );
  // Contained means unnoticed by the honest pair and domain: neither lost contact (decohered).
  await until('the honest pair entangled', async () => (await admin('vic', 'pair', { peer: 'hon1' })).state === 'ENTANGLED', 10_000);
  const after = await disruptions();
  const why = JSON.stringify(after) === JSON.stringify(v.before) ? '' : `\n${await contactReport()}`;
  expect(after, `the honest pair or domain decohered during the ${name} attack (attack from ${v.startedAt})${why}`).toEqual(v.before);
  v.maxRssMb = Math.max(v.maxRssMb, rssMb('vic'));
  expect(v.maxRssMb, `vic's RSS under the ${name} attack (MB)`).toBeLessThan(RSS_BOUND_MB);
}

const canRun = process.getuid?.() === 0;

describe.runIf(canRun)('an authorised adversary against spookd in network namespaces', () => {
  const sent: Record<string, number> = {};

  beforeEach(async () => {
    if (!lab) {
      lab = new Lab(
        HOSTS,
        [
          { a: 'vic', b: 'hon1', subnet: 61 },
          { a: 'vic', b: 'hon2', subnet: 62 },
          { a: 'hon1', b: 'hon2', subnet: 63 },
          { a: 'vic', b: 'adv', subnet: 64 },
        ],
        47700,
      );
      // vic is the sequencer of its pair with adv: reconciliation requests from adv are served by vic.
      while (pairIdentity(lab.host('vic').key.publicKey, lab.host('adv').key.publicKey).localId !== 1)
        lab.host('adv').key = generateKeyPair();
      configureAll();
      await Promise.all(['vic', 'hon1', 'hon2'].map((h) => lab.start(h)));
    }
    await heal();
  }, 90_000);

  afterAll(async () => {
    await lab?.destroy();
    // At least 100,000 fuzzed ESTP, QN and WRAP messages across the categories (when all of them ran).
    if (Object.keys(sent).length === 4) expect(Object.values(sent).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(100_000);
  }, 30_000);

  it('estp: 30,000 fuzzed ESTP payloads on the pair session', async () => {
    const received = async (): Promise<number> => (await admin('vic', 'pair', { peer: 'adv' })).datagramsReceived;
    const r0 = await received();
    const v = await underAttack('estp', 1, { kind: 'estp', count: 30_000, rate: 6000, registers: REGISTERS.map((r) => r.name) }, 40_000);
    sent.estp = v.report.sent;
    await expectContained('estp', v);
    expect(v.report).toMatchObject({ sent: 30_000, errors: [] });
    // The fuzz reached the pair core: a few may be lost in the socket buffer, none to a closed pair.
    expect((await received()) - r0).toBeGreaterThan(20_000);
    // Then what the fuzz rarely draws: one payload that closes the pair twice (the pair ends, that is all).
    const close = Buffer.from(encodeMessage({ type: MsgType.Close, reason: CloseReason.Closed })).toString('hex');
    const v2 = await underAttack('estp-close-twice', 7, { kind: 'payloads', payloads: [close + close] }, 20_000);
    await expectContained('estp-close-twice', v2);
  }, 90_000);

  it('qn-member: 25,000 fuzzed QN messages for a domain the adversary is a member of', async () => {
    const members = [encodeKey(lab.host('hon1').key.publicKey)];
    const v = await underAttack(
      'qn-member',
      2,
      { kind: 'qn', count: 25_000, rate: 6000, domain: 'shared', otherDomains: ['main'], members, registers: ['kv'] },
      40_000,
    );
    sent.qnMember = v.report.sent;
    await expectContained('qn-member', v);
    expect(v.report).toMatchObject({ sent: 25_000, errors: [] });
  }, 90_000);

  it('qn-non-member: 25,000 fuzzed QN messages for a domain the adversary is not a member of', async () => {
    const members = ['hon1', 'hon2'].map((h) => encodeKey(lab.host(h).key.publicKey));
    const v = await underAttack(
      'qn-non-member',
      3,
      { kind: 'qn', count: 25_000, rate: 6000, domain: 'main', otherDomains: ['shared'], members, registers: ['kv'] },
      40_000,
    );
    sent.qnNonMember = v.report.sent;
    await expectContained('qn-non-member', v);
    expect(v.report).toMatchObject({ sent: 25_000, errors: [] });
  }, 90_000);

  it('wrap: 25,000 fuzzed WRAP records over an authenticated carrier', async () => {
    const vAddr = lab.host('vic').addrs.get('adv')!;
    const targets = [
      { family: 4 as const, address: '127.0.0.1', port: 9 }, // closed port on vic
      { family: 4 as const, address: '127.0.0.1', port: lab.host('vic').port }, // vic's own carrier port
      { family: 4 as const, address: vAddr, port: 1 },
      { family: 4 as const, address: '192.0.2.1', port: 80 }, // TEST-NET: no route in the lab
      { family: 6 as const, address: '::1', port: 9 },
    ];
    const recordsIn = async (): Promise<number> => (await admin('vic', 'wrap-stats')).peers.find((p) => p.peer === 'adv')!.recordsIn;
    const r0 = await recordsIn();
    const v = await underAttack('wrap', 4, { kind: 'wrap', count: 25_000, rate: 6000, targets }, 40_000);
    sent.wrap = v.report.sent;
    await expectContained('wrap', v);
    expect(v.report).toMatchObject({ sent: 25_000, errors: [] });
    // The fuzz reached the WRAP session: records in flight when vic drops a carrier (a hello of another version) are lost.
    expect((await recordsIn()) - r0).toBeGreaterThan(12_500);
  }, 90_000);

  it('wrap-memory: 512 MiB of WRAP DATA into wrapped connections whose server never reads', async () => {
    // The adversary serves the destination itself and never reads: whatever vic buffers, adv made it hold.
    // (Once servers have a dial policy, vic's configuration must allow adv this destination, or the test only shows the refusal.)
    const x = lab.host('adv');
    const sink = { family: 4 as const, address: x.addrs.get('vic')!, port: x.port + 100 };
    const v = await underAttack(
      'wrap-memory',
      6,
      { kind: 'wrap-flood', durationMs: 8000, connections: 8, sink, maxBytes: 512 * 2 ** 20, serve: 'never-read' },
      30_000,
    );
    await expectContained('wrap-memory', v);
    expect(v.report.errors).toEqual([]);
  }, 90_000);

  it('unauthenticated: replayed and unauthorised HandshakeInits at 8,000/s and 2,000 idle carrier connections', async () => {
    // vic runs with a service's descriptor limit: idle connections must not starve it.
    const pid = String(lab.host('vic').proc!.pid);
    const before = execFileSync('prlimit', ['--pid', pid, '--nofile', '--raw', '--noheadings', '--output', 'SOFT,HARD'], {
      encoding: 'utf8',
    })
      .trim()
      .split(/\s+/);
    execFileSync('prlimit', ['--pid', pid, `--nofile=${SERVICE_NOFILE}:${before[1]}`]);
    try {
      const drops = async (): Promise<Record<string, number>> => (await admin('vic', 'status')).drops;
      const d0 = await drops();
      const v = await underAttack(
        'unauthenticated',
        5,
        { kind: 'unauthenticated', durationMs: 6000, initRate: 8000, idleConnections: 2000 },
        30_000,
      );
      await expectContained('unauthenticated', v);
      expect(v.report.errors).toEqual([]);
      expect(v.report.idleOpened).toBeGreaterThanOrEqual(2000);
      const d1 = await drops();
      // Refused, and counted as such (nothing answered an unauthorised key).
      expect((d1['unauthorized-key'] ?? 0) - (d0['unauthorized-key'] ?? 0)).toBeGreaterThan(0);
    } finally {
      if (alive('vic')) execFileSync('prlimit', ['--pid', pid, `--nofile=${before[0]}:${before[1]}`]);
    }
  }, 90_000);
});

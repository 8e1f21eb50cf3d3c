/**
 * Honest connects (issue 17; docs/OPERATIONS.md, "What a client sees when it connects"): real
 * node clients in the client namespace connect through wrappers and, in the same run, directly
 * to the same server host, and the two are compared:
 * - a refusing server: direct ECONNREFUSED at once; wrapped, the first connect is reset within a
 *   round trip, and the next one (the refusal remembered in the hook) gets ECONNREFUSED itself;
 * - an unreachable server (no ARP answer): both fail after the neighbour timeout (wrapped: reset),
 *   and the next wrapped connect gets EHOSTUNREACH from the hook;
 * - a silent server (its SYNs vanish): direct, the client's own connect
 *   timeout fires; wrapped, the connection is reset at the wrapper's connect timeout;
 * - the serving spookd stopped: `direct` reaches the server as direct does, `refuse` fails at once
 *   (EHOSTUNREACH), `hold` is reset at its connect timeout; a connect made while the carrier is
 *   only briefly gone (within the grace) is held and carried once the serving spookd is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { Lab, requireRoot, until } from '../../testing/lab/netns.js';
import { nsArgv } from '../../testing/lab/servers.js';
import { DOWN_GRACE_MS, ERRNO } from '../../core/wrap/connect.js';
import { execFileSync } from 'node:child_process';

const REFUSED = 7201; // wrapped, nothing listens on the server
const SILENT = 7202; // wrapped, to an address whose SYNs vanish
const HOLD = 7203; // wrapped, whenDown hold, echo server
const DIRECT = 7204; // wrapped, whenDown direct, echo server
const REFUSE = 7205; // wrapped, whenDown refuse, echo server
const PLAIN = 7210; // not wrapped, echo server: the direct path
const PLAIN_CLOSED = 7211; // not wrapped, nothing listens
const CONNECT_TIMEOUT_MS = 3_000;
const SILENT_NET = '10.79.72';

/** One warm node process in the client namespace: each run() is a list of connects, made one after the other. */
const CLIENT = `
const net = require('net');
function one(c) {
  return new Promise((res) => {
    const t0 = performance.now();
    const ms = () => Math.round(performance.now() - t0);
    const r = { name: c.name, connected: false };
    let done = false, s, ct, bound;
    const finish = () => { if (done) return; done = true; clearTimeout(ct); clearTimeout(bound); s.destroy(); res(r); };
    s = net.connect({ host: c.host, port: c.port });
    if (c.connectTimeoutMs) ct = setTimeout(() => { if (!r.connected) { r.error = 'client-connect-timeout'; r.errorMs = ms(); finish(); } }, c.connectTimeoutMs);
    bound = setTimeout(() => { r.error = r.error || 'test-bound'; r.errorMs = ms(); finish(); }, c.boundMs || 20000);
    s.on('connect', () => { r.connected = true; r.connectMs = ms(); clearTimeout(ct); if (c.send) s.write(c.send); });
    s.on('data', (d) => { r.echo = (r.echo || '') + d; if (c.send && r.echo.length >= c.send.length) { r.echoMs = ms(); finish(); } });
    s.on('error', (e) => { r.error = e.code || e.message; r.errorMs = ms(); finish(); });
    s.on('close', () => { if (r.errorMs === undefined) { r.error = 'closed'; r.errorMs = ms(); } finish(); });
  });
}
require('readline').createInterface({ input: process.stdin }).on('line', async (line) => {
  const out = [];
  for (const c of JSON.parse(line)) out.push(await one(c));
  process.stdout.write(JSON.stringify(out) + '\\n');
});
process.stdout.write('ready\\n');
`;

const ECHO = `
const net = require('net');
for (const p of process.argv.slice(1)) net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(+p, '0.0.0.0', () => console.log('listening ' + p));
`;

interface Connect {
  name: string;
  host: string;
  port: number;
  connectTimeoutMs?: number;
  boundMs?: number;
  send?: string;
}
interface Outcome {
  name: string;
  connected: boolean;
  connectMs?: number;
  error?: string;
  errorMs?: number;
  echo?: string;
  echoMs?: number;
}

class Clients {
  private out = '';
  private readonly waiters: ((r: Outcome[]) => void)[] = [];
  constructor(private readonly proc: ChildProcess) {
    proc.stdout!.on('data', (c: Buffer) => {
      this.out += c.toString();
      let nl;
      while ((nl = this.out.indexOf('\n')) >= 0) {
        const line = this.out.slice(0, nl);
        this.out = this.out.slice(nl + 1);
        if (line.startsWith('[')) this.waiters.shift()?.(JSON.parse(line) as Outcome[]);
        else if (line === 'ready') this.ready();
      }
    });
  }
  private ready: () => void = () => undefined;
  readonly started = new Promise<void>((r) => (this.ready = r));
  run(cs: Connect[]): Promise<Outcome[]> {
    return new Promise((r) => {
      this.waiters.push(r);
      this.proc.stdin!.write(`${JSON.stringify(cs)}\n`);
    });
  }
}

let lab: Lab;
let clients: Clients;
const procs: ChildProcess[] = [];
let server: string; // the server host's address, from the client
const figures: string[] = [];

const sh = (cmd: string, args: string[]): void => void execFileSync(cmd, args, { stdio: 'ignore' });

async function carrier(): Promise<string> {
  return (await lab.admin('cc', 'wrap-stats')).peers[0].carrier;
}

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['cc', 'cs'], [{ a: 'cc', b: 'cs', subnet: 72 }], 48050);
  server = lab.host('cs').addrs.get('cc')!;
  const cs = lab.host('cs').ns;
  // A silent destination: the server host sends its packets, to a MAC no one has, into a veth
  // whose other end drops them (not its address); no ARP, no ICMP: every SYN vanishes.
  sh('ip', ['-n', cs, 'link', 'add', 'sil0', 'type', 'veth', 'peer', 'name', 'sil1']);
  sh('ip', ['-n', cs, 'addr', 'add', `${SILENT_NET}.1/24`, 'dev', 'sil0']);
  sh('ip', ['-n', cs, 'link', 'set', 'sil0', 'up']);
  sh('ip', ['-n', cs, 'link', 'set', 'sil1', 'up']);
  sh('ip', ['-n', cs, 'neigh', 'add', `${SILENT_NET}.2`, 'lladdr', '02:00:00:00:79:72', 'dev', 'sil0', 'nud', 'permanent']);
  sh('ip', ['netns', 'exec', cs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  sh('ip', ['-n', lab.host('cc').ns, 'route', 'add', `${SILENT_NET}.0/24`, 'via', server]);
  const regs = [{ name: 'r', kind: 'map' }];
  const w = (port: number, extra: object = {}): object => ({
    protocol: 'tcp',
    port,
    peer: 'cs',
    connectTimeout: CONNECT_TIMEOUT_MS,
    ...extra,
  });
  lab.configure('cc', regs, {
    wrap: {
      wrappers: [
        w(REFUSED),
        w(SILENT),
        w(HOLD),
        w(DIRECT, { whenDown: 'direct' }),
        // Long enough to outlast the serving spookd's restart (the brief-outage case).
        w(REFUSE, { whenDown: 'refuse', connectTimeout: 30_000 }),
      ],
    },
  });
  lab.configure('cs', regs, {
    wrap: {
      allow: [
        { peer: 'cc', to: `${server}:${REFUSED}-${REFUSE}` },
        { peer: 'cc', to: `${SILENT_NET}.0/24:${SILENT}` },
        { peer: 'cc', to: `${server.replace(/\.2$/, '.99')}:${REFUSE}` },
      ],
    },
  });
  const echo = spawn(
    ...(([c, ...a]) => [c, a] as const)(nsArgv(cs, process.execPath, ['-e', ECHO, ...[HOLD, DIRECT, REFUSE, PLAIN].map(String)])),
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  procs.push(echo);
  let listening = 0;
  echo.stdout!.on('data', (c: Buffer) => (listening += c.toString().split('listening').length - 1));
  const cl = spawn(...(([c, ...a]) => [c, a] as const)(nsArgv(lab.host('cc').ns, process.execPath, ['-e', CLIENT])), {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  procs.push(cl);
  clients = new Clients(cl);
  await lab.start('cc');
  await lab.start('cs');
  await until('the carrier', async () => (await carrier()) === 'up' || undefined, 20_000);
  await until('the echo servers', async () => listening >= 4 || undefined, 10_000);
  await clients.started;
}, 60_000);

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  if (figures.length) console.log(`honest connects, wrapped vs direct (same run):\n  ${figures.join('\n  ')}`);
  await lab?.destroy();
}, 30_000);

const show = (r: Outcome): string =>
  `${r.connected ? `connected ${r.connectMs} ms, ` : ''}${r.echo ? `echo ${r.echoMs} ms` : `${r.error} ${r.errorMs} ms`}`;

describe('honest connects', () => {
  it('a refusing server: direct refused at once; wrapped reset within a round trip, then refused by the hook', async () => {
    const [direct, first, second] = await clients.run([
      { name: 'direct', host: server, port: PLAIN_CLOSED },
      { name: 'wrapped', host: server, port: REFUSED },
      { name: 'wrapped again', host: server, port: REFUSED },
    ]);
    figures.push(`refused: direct ${show(direct)}; wrapped ${show(first)}; wrapped again ${show(second)}`);
    expect(direct).toMatchObject({ connected: false, error: 'ECONNREFUSED' });
    // The first wrapped connect completes locally; the far side's refusal comes back as a reset.
    expect(first).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(first.errorMs!).toBeLessThan(2_000);
    // The next one, within REFUSAL_MEMO_MS, is refused in the connect hook as it would be direct.
    expect(second).toMatchObject({ connected: false, error: 'ECONNREFUSED' });
    expect(second.errorMs!).toBeLessThan(500);
    const st = await lab.admin('cc', 'wrap-stats');
    expect(st.hooks?.memo_refused).toBeGreaterThanOrEqual(1);
    expect(st.connects.refusalsRemembered).toBeGreaterThanOrEqual(1);
    expect(ERRNO.ECONNREFUSED).toBe(111);
  }, 20_000);

  it('an unreachable server (no ARP answer): both fail after the neighbour timeout, the next wrapped connect at once', async () => {
    const nobody = server.replace(/\.2$/, '.99');
    const [direct, first, second] = await clients.run([
      { name: 'direct', host: nobody, port: PLAIN },
      // A wrapper whose connect timeout (30 s) outlasts the far side's neighbour timeout.
      { name: 'wrapped', host: nobody, port: REFUSE },
      { name: 'wrapped again', host: nobody, port: REFUSE },
    ]);
    figures.push(`unreachable: direct ${show(direct)}; wrapped ${show(first)}; wrapped again ${show(second)}`);
    expect(direct).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(first).toMatchObject({ connected: true, error: 'ECONNRESET' });
    // The far side's own neighbour timeout, about the direct one's (both ~3 s), plus a round trip.
    expect(first.errorMs!).toBeLessThan(direct.errorMs! + 3_000);
    expect(second).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(second.errorMs!).toBeLessThan(500);
  }, 30_000);

  it("a silent server: direct, the client's own connect timeout fires; wrapped, reset at the wrapper's connect timeout", async () => {
    const [direct, wrapped] = await clients.run([
      { name: 'direct', host: `${SILENT_NET}.2`, port: PLAIN, connectTimeoutMs: CONNECT_TIMEOUT_MS },
      { name: 'wrapped', host: `${SILENT_NET}.2`, port: SILENT, boundMs: 20_000 },
    ]);
    figures.push(`silent: direct ${show(direct)}; wrapped (connectTimeout ${CONNECT_TIMEOUT_MS} ms) ${show(wrapped)}`);
    expect(direct).toMatchObject({ connected: false, error: 'client-connect-timeout' });
    expect(wrapped).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(wrapped.errorMs!).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 500);
    expect(wrapped.errorMs!).toBeLessThan(CONNECT_TIMEOUT_MS + 5_000);
    expect((await lab.admin('cc', 'wrap-stats')).connects.timedOut).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('a connect while the carrier is briefly gone (within the grace) is held and carried when it returns', async () => {
    const stopping = lab.stop('cs');
    await until('the carrier lost', async () => (await carrier()) !== 'up' || undefined, 10_000, 20);
    const lostAt = Date.now();
    // On the `refuse` wrapper: within the grace it is held, never refused.
    const pending = clients.run([{ name: 'during redial', host: server, port: REFUSE, send: 'carried', boundMs: 40_000 }]);
    await stopping;
    await lab.start('cs');
    const [r] = await pending;
    figures.push(`connect ${Date.now() - lostAt} ms before the end, made within the grace of a carrier loss: ${show(r)}`);
    expect(r).toMatchObject({ connected: true, echo: 'carried' });
    await until('the carrier back', async () => (await carrier()) === 'up' || undefined, 20_000);
  }, 60_000);

  it('the serving spookd stopped: direct reaches the server, refuse fails at once, hold resets at its bound', async () => {
    await lab.stop('cs');
    await until('the carrier lost', async () => (await carrier()) !== 'up' || undefined, 10_000, 20);
    // After the grace the hooks apply whenDown.
    await until(
      'the down ports in the hooks',
      async () => {
        const d = (await lab.admin('cc', 'wrap-stats')).connects.downPorts;
        return (d.includes(DIRECT) && d.includes(REFUSE)) || undefined;
      },
      DOWN_GRACE_MS + 10_000,
      50,
    );
    const [plain, direct, refuse, hold] = await clients.run([
      { name: 'plain direct', host: server, port: PLAIN, send: 'hello' },
      { name: 'whenDown direct', host: server, port: DIRECT, send: 'hello' },
      { name: 'whenDown refuse', host: server, port: REFUSE, send: 'hello' },
      { name: 'whenDown hold', host: server, port: HOLD, send: 'hello', boundMs: 20_000 },
    ]);
    figures.push(
      `serving spookd down: plain direct ${show(plain)}; whenDown direct ${show(direct)}; refuse ${show(refuse)}; hold (connectTimeout ${CONNECT_TIMEOUT_MS} ms) ${show(hold)}`,
    );
    expect(plain).toMatchObject({ connected: true, echo: 'hello' });
    expect(direct).toMatchObject({ connected: true, echo: 'hello' });
    expect(refuse).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(refuse.errorMs!).toBeLessThan(500);
    expect(hold).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(hold.errorMs!).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 500);
    expect(hold.errorMs!).toBeLessThan(CONNECT_TIMEOUT_MS + 5_000);
    const st = await lab.admin('cc', 'wrap-stats');
    expect(st.hooks?.down_direct).toBeGreaterThanOrEqual(1);
    expect(st.hooks?.down_refused).toBeGreaterThanOrEqual(1);
    const list = await lab.admin('cc', 'wraps');
    expect(list.find((x) => x.port === REFUSE)).toMatchObject({ whenDown: 'refuse', connectTimeoutMs: 30_000 });
    expect(list.find((x) => x.port === HOLD)).toMatchObject({ whenDown: 'hold', connectTimeoutMs: CONNECT_TIMEOUT_MS });
  }, 60_000);
});

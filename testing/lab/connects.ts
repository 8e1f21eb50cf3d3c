/**
 * The honest-connects lab (test/e2e/wrap-connect.test.ts, bench/wrap-connect.ts): a client host
 * `cc` and a server host `cs` in namespaces, a spookd on each, and on the client five TCP
 * wrappers, one per case, next to unwrapped ports that give the direct path to the same server:
 *
 *   REFUSED  nothing listens on the server             (whenDown hold)
 *   SILENT   to SILENT_NET.2, whose SYNs vanish         (whenDown hold)
 *   HOLD     an echo server                             (whenDown hold)
 *   DIRECT   an echo server                             (whenDown direct)
 *   REFUSE   an echo server; connect timeout 30 s       (whenDown refuse)
 *   PLAIN    an echo server, not wrapped: direct; PLAIN_CLOSED: nothing listens, not wrapped.
 *
 * One warm node process in the client namespace makes the connects (run(): a list, one after
 * the other), so no process start-up sits between a connect and the one before it.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { Lab, until } from './netns.js';
import { nsArgv } from './servers.js';

export const CONNECT_PORTS = {
  REFUSED: 7201,
  SILENT: 7202,
  HOLD: 7203,
  DIRECT: 7204,
  REFUSE: 7205,
  PLAIN: 7210,
  PLAIN_CLOSED: 7211,
} as const;
export const SILENT_NET = '10.79.72';

const CLIENT = `
const net = require('net');
function one(c) {
  return new Promise((res) => {
    const t0 = performance.now();
    const ms = () => Math.round((performance.now() - t0) * 10) / 10;
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

export interface Connect {
  name: string;
  host: string;
  port: number;
  /** The client's own connect timeout (none: the kernel's). */
  connectTimeoutMs?: number;
  /** The most the case may take (the result says `test-bound`). */
  boundMs?: number;
  /** Written on connect; the case ends when it is echoed. */
  send?: string;
}

/** What the client saw, in ms from its connect() call. */
export interface Outcome {
  name: string;
  connected: boolean;
  connectMs?: number;
  error?: string;
  errorMs?: number;
  echo?: string;
  echoMs?: number;
}

const sh = (cmd: string, args: string[]): void => void execFileSync(cmd, args, { stdio: 'ignore' });
const spawnIn = (ns: string, args: string[], stdio: ('pipe' | 'ignore' | 'inherit')[]): ChildProcess => {
  const [cmd, ...rest] = nsArgv(ns, process.execPath, args);
  return spawn(cmd, rest, { stdio });
};

export class ConnectLab {
  private out = '';
  private readonly waiters: ((r: Outcome[]) => void)[] = [];
  private readonly procs: ChildProcess[] = [];
  private client!: ChildProcess;
  /** The server host's address, from the client. */
  readonly server: string;
  /** An address on the server's link that no host answers ARP for. */
  readonly nobody: string;

  private constructor(
    readonly lab: Lab,
    /** The wrappers' connect timeout (REFUSE's is 30 s, to outlast a serving spookd's restart). */
    readonly connectTimeoutMs: number,
  ) {
    this.server = lab.host('cs').addrs.get('cc')!;
    this.nobody = this.server.replace(/\.2$/, '.99');
  }

  /** Make the namespaces, configure and start both spookd, the echo servers and the client; resolves once the carrier is up. */
  static async start(o: { basePort: number; subnet: number; connectTimeoutMs: number; logLevel?: string }): Promise<ConnectLab> {
    const lab = new Lab(['cc', 'cs'], [{ a: 'cc', b: 'cs', subnet: o.subnet }], o.basePort);
    const cl = new ConnectLab(lab, o.connectTimeoutMs);
    try {
      await cl.setUp(o.logLevel);
      return cl;
    } catch (e) {
      await cl.close();
      throw e;
    }
  }

  private async setUp(logLevel = 'debug'): Promise<void> {
    const { lab, server } = this;
    const P = CONNECT_PORTS;
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
      connectTimeout: this.connectTimeoutMs,
      ...extra,
    });
    lab.configure('cc', regs, {
      logLevel,
      wrap: {
        wrappers: [
          w(P.REFUSED),
          w(P.SILENT),
          w(P.HOLD),
          w(P.DIRECT, { whenDown: 'direct' }),
          w(P.REFUSE, { whenDown: 'refuse', connectTimeout: 30_000 }),
        ],
      },
    });
    lab.configure('cs', regs, {
      logLevel,
      wrap: {
        allow: [
          { peer: 'cc', to: `${server}:${P.REFUSED}-${P.REFUSE}` },
          { peer: 'cc', to: `${SILENT_NET}.0/24:${P.SILENT}` },
          { peer: 'cc', to: `${this.nobody}:${P.REFUSE}` },
        ],
      },
    });
    const echo = spawnIn(cs, ['-e', ECHO, ...[P.HOLD, P.DIRECT, P.REFUSE, P.PLAIN].map(String)], ['ignore', 'pipe', 'inherit']);
    this.procs.push(echo);
    let listening = 0;
    echo.stdout!.on('data', (c: Buffer) => (listening += c.toString().split('listening').length - 1));
    this.client = spawnIn(lab.host('cc').ns, ['-e', CLIENT], ['pipe', 'pipe', 'inherit']);
    this.procs.push(this.client);
    const ready = new Promise<void>((resolve) => {
      this.client.stdout!.on('data', (c: Buffer) => {
        this.out += c.toString();
        for (let nl = this.out.indexOf('\n'); nl >= 0; nl = this.out.indexOf('\n')) {
          const line = this.out.slice(0, nl);
          this.out = this.out.slice(nl + 1);
          if (line.startsWith('[')) this.waiters.shift()?.(JSON.parse(line) as Outcome[]);
          else if (line === 'ready') resolve();
        }
      });
    });
    await lab.start('cc');
    await lab.start('cs');
    await this.carrierUp();
    await until('the echo servers', async () => listening >= 4 || undefined, 10_000);
    await ready;
  }

  /** The client's carrier to cs: `up`, `dialing` or `down`. */
  async carrier(): Promise<string> {
    return (await this.lab.admin('cc', 'wrap-stats')).peers[0].carrier;
  }

  async carrierUp(timeoutMs = 20_000): Promise<void> {
    await until('the carrier', async () => (await this.carrier()) === 'up' || undefined, timeoutMs);
  }

  /** Make the connects one after the other; resolves with what the client saw of each. */
  run(cs: Connect[]): Promise<Outcome[]> {
    return new Promise((r) => {
      this.waiters.push(r);
      this.client.stdin!.write(`${JSON.stringify(cs)}\n`);
    });
  }

  async close(): Promise<void> {
    for (const p of this.procs) p.kill('SIGKILL');
    await this.lab.destroy();
  }
}

/** One outcome as a line: `connected 1 ms, ECONNRESET 8 ms`, or `echo 3 ms`. */
export function showOutcome(r: Outcome): string {
  return `${r.connected ? `connected ${r.connectMs} ms, ` : ''}${r.echo ? `echo ${r.echoMs} ms` : `${r.error} ${r.errorMs} ms`}`;
}

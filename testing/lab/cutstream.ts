/**
 * Streams through a link cut, for the wrapper survival tests (issue 17: never worse than
 * direct). A server in one namespace sends each client a counter stream (32-bit big-endian
 * words, about 3 MB/s while its socket takes it); a client in the other namespace opens one
 * connection per port, checks every word is the next one, and notes when bytes stopped and
 * started again (gaps). On `stop()` each client asks its server to end: the server ends the
 * stream after what it has sent, reports how much that was, and the client reads to the end.
 * A stream that survived the cut has no error, every word in order, and all the server sent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { nsArgv } from './servers.js';
import { until, type Lab } from './netns.js';

/** The server: counter words to every connection until the client says anything, then FIN. */
const SERVER = `
const net = require('net');
const [addr, ...ports] = process.argv.slice(1);
for (const port of ports) {
  net.createServer((s) => {
    let n = 0, sent = 0, done = false;
    const tick = setInterval(() => {
      while (!done && s.writableLength < 256 * 1024) {
        const b = Buffer.allocUnsafe(64 * 1024);
        for (let i = 0; i < b.length; i += 4) b.writeUInt32BE(n++ >>> 0, i);
        s.write(b);
        sent += b.length;
        if (sent % (256 * 1024) === 0) break; // about 256 KiB a tick
      }
    }, 80);
    s.on('data', () => { if (done) return; done = true; clearInterval(tick); s.end(); console.log(JSON.stringify({ port: +port, sent })); });
    s.on('error', (e) => { clearInterval(tick); console.log(JSON.stringify({ port: +port, sent, error: e.message })); });
  }).listen(+port, addr, () => console.log(JSON.stringify({ listening: +port })));
}
`;

/** The client: one connection per port; prints "flowing" once each has 1 MiB, a JSON report after "stop" on stdin. */
const CLIENT = `
const net = require('net');
const [addr, ...ports] = process.argv.slice(1);
const GAP_MS = +process.env.GAP_MS || 1000;
const out = {};
let flowing = false;
for (const port of ports) {
  const r = out[port] = { received: 0, inOrder: true, gaps: [], ended: false, error: null, lastAt: 0 };
  let next = 0, carry = Buffer.alloc(0), last = 0;
  const s = net.connect(+port, addr);
  r.sock = s;
  s.on('data', (c) => {
    const t = Date.now();
    if (last && t - last >= GAP_MS) r.gaps.push({ from: last, to: t });
    last = t;
    r.lastAt = t;
    r.received += c.length;
    let b = carry.length ? Buffer.concat([carry, c]) : c;
    const whole = b.length - (b.length % 4);
    for (let i = 0; i < whole; i += 4) if (b.readUInt32BE(i) !== (next++ >>> 0)) { r.inOrder = false; }
    carry = Buffer.from(b.subarray(whole));
    if (!flowing && ports.every((p) => out[p].received >= 1 << 20)) { flowing = true; console.log('flowing'); }
  });
  s.on('end', () => { r.ended = true; finish(); });
  s.on('error', (e) => { r.error = e.message; finish(); });
}
function finish() {
  if (!ports.every((p) => out[p].ended || out[p].error)) return;
  for (const p of ports) delete out[p].sock;
  console.log(JSON.stringify(out));
  process.exit(0);
}
process.stdin.on('data', () => {
  for (const p of ports) if (!out[p].error) out[p].sock.write('stop');
  // STOP_WAIT_MS: a stream that has not ended by then is reported stalled (its path is gone for good).
  if (process.env.STOP_WAIT_MS) setTimeout(() => {
    for (const p of ports) if (!out[p].ended && !out[p].error) { out[p].error = 'stalled'; out[p].sock.destroy(); }
    finish();
  }, +process.env.STOP_WAIT_MS);
});
`;

export interface StreamReport {
  received: number;
  inOrder: boolean;
  /** Silences of GAP_MS or more, as Date.now() instants: bytes stopped at `from`, came again at `to`. */
  gaps: { from: number; to: number }[];
  /** When the last byte came (Date.now()). */
  lastAt: number;
  /** The stream ended with the server's FIN (not a reset). */
  ended: boolean;
  error: string | null;
  /** What the server sent on this connection (from its report). */
  sent: number | undefined;
  serverError: string | undefined;
}

export class CutStreams {
  private server: ChildProcess;
  private client: ChildProcess | undefined;
  private serverLines: string[] = [];
  private clientOut = '';

  constructor(
    readonly serverNs: string,
    readonly clientNs: string,
    readonly addr: string,
    readonly ports: number[],
    /** gapMs: the shortest silence recorded as a gap (1,000); stopWaitMs: after stop(), streams not ended by then are reported `stalled`. */
    private readonly opts: { gapMs?: number; stopWaitMs?: number } = {},
  ) {
    const argv = nsArgv(serverNs, process.execPath, ['-e', SERVER, addr, ...ports.map(String)]);
    this.server = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    this.server.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      this.serverLines.push(...lines.filter(Boolean));
    });
  }

  private async waitFor(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms (client: ${this.clientOut.slice(-500)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Start the clients once the servers listen; resolves when every stream is flowing. */
  async start(timeoutMs = 30_000): Promise<void> {
    await this.waitFor(
      'the servers listening',
      () => this.serverLines.filter((l) => l.includes('listening')).length === this.ports.length,
      10_000,
    );
    const argv = nsArgv(this.clientNs, process.execPath, ['-e', CLIENT, this.addr, ...this.ports.map(String)]);
    const env = {
      ...process.env,
      GAP_MS: String(this.opts.gapMs ?? 1000),
      STOP_WAIT_MS: this.opts.stopWaitMs ? String(this.opts.stopWaitMs) : '',
    };
    this.client = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], env });
    this.client.stdout!.on('data', (c: Buffer) => (this.clientOut += c.toString()));
    await this.waitFor('every stream flowing', () => this.clientOut.includes('flowing'), timeoutMs);
  }

  /** Ask every server to end its stream; resolves with each connection's report, by port. */
  async stop(timeoutMs = 60_000): Promise<Record<number, StreamReport>> {
    this.client!.stdin!.write('stop\n');
    const report = (): string | undefined => this.clientOut.split('\n').find((l) => l.startsWith('{'));
    await this.waitFor('the streams ending', () => report() !== undefined, timeoutMs);
    await this.waitFor(
      'the servers reporting',
      () => this.serverLines.filter((l) => l.includes('"sent"')).length >= this.ports.length,
      5_000,
    ).catch(() => undefined);
    const client = JSON.parse(report()!) as Record<string, Omit<StreamReport, 'sent' | 'serverError'>>;
    const out: Record<number, StreamReport> = {};
    for (const p of this.ports) {
      const srv = this.serverLines.map((l) => JSON.parse(l) as { port?: number; sent?: number; error?: string }).find((l) => l.port === p);
      out[p] = { ...client[p], sent: srv?.sent, serverError: srv?.error };
    }
    return out;
  }

  close(): void {
    this.client?.kill('SIGKILL');
    this.server.kill('SIGKILL');
  }
}

/**
 * Start `client` and `server` with one register and a TCP wrapper of `port` on the client towards
 * `server`, which may dial `serverAddr:port`; resolves once the client's carrier is up.
 */
export async function startWrappedPair(lab: Lab, client: string, server: string, serverAddr: string, port: number): Promise<void> {
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure(client, regs, { wrap: { wrappers: [{ protocol: 'tcp', port, peer: server }] } });
  lab.configure(server, regs, { wrap: { allow: [{ peer: client, to: `${serverAddr}:${port}` }] } });
  await lab.start(client);
  await lab.start(server);
  await until('the carrier', async () => (await lab.admin(client, 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
}

/** Milliseconds from `at` (a heal) to the first byte the stream got after it; NaN if none came. */
export function resumeAfter(s: StreamReport, at: number): number {
  return (s.gaps.find((g) => g.to >= at)?.to ?? NaN) - at;
}

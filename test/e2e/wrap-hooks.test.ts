import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Lab, ROOT, requireRoot, until } from '../../control/lab/netns.js';

/**
 * The wrappers' cgroup hooks (bpf/spook_wrap.c via control/bpf/wrap-hooks.ts) between two
 * namespaces joined by a veth: in A a hook owner (standing in for spookd) runs a proxy on
 * loopback; clients in A that connect to B:5022 land on the proxy, which learns B:5022 as
 * the original destination; everything else (other ports, loopback, UDP, the owner's own
 * connects, other namespaces, and everything after close() or kill -9) goes direct.
 */
const run = promisify(execFile);
const SUBNET = 61;
const A_IP = `10.77.${SUBNET}.1`;
const B_IP = `10.77.${SUBNET}.2`;
const B_IP6 = `fd77:${SUBNET}::2`;
const WRAPPED = 5022;
const DIRECT = 5023;
const PROXY = 15001;

// Namespaces named like the Lab's (spk<pid>-...), so Lab.cleanupStale removes them after a crash.
const NS_A = `spk${process.pid}-wrapa`;
const NS_B = `spk${process.pid}-wrapb`;
let dir: string;
const procs: ChildProcess[] = [];

const sh = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

const fetchLine = `
import net from 'node:net';
export const fetchLine = (host, port) => new Promise((resolve) => {
  let text = '';
  const s = net.connect({ host, port, timeout: 3000 });
  s.on('data', (d) => (text += d));
  s.on('end', () => resolve(text.trim()));
  s.on('timeout', () => { s.destroy(); resolve('timeout'); });
  s.on('error', (e) => resolve('error ' + e.code));
});
`;

const SCRIPTS: Record<string, string> = {
  'fetch.mjs': fetchLine,
  // A client: one TCP exchange (or a UDP connect, reporting the peer address the kernel kept).
  'client.mjs': `
import dgram from 'node:dgram';
import net from 'node:net';
import { fetchLine } from './fetch.mjs';
const [host, port, proto] = process.argv.slice(2);
if (proto === 'udp') {
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  s.connect(Number(port), host, () => { console.log('udp ' + s.remoteAddress().address + ':' + s.remoteAddress().port); s.close(); });
} else {
  console.log(await fetchLine(host, Number(port)));
}
`,
  // The real servers in B, and a trap on B's loopback that would catch a wrong redirect there.
  'server.mjs': `
import net from 'node:net';
const listen = (port, host, text) => new Promise((r) => net.createServer((s) => s.end(text + '\\n')).listen(port, host, r));
await Promise.all([listen(${WRAPPED}, '::', 'direct ${WRAPPED}'), listen(${DIRECT}, '::', 'direct ${DIRECT}'), listen(${PROXY}, '127.0.0.1', 'trap')]);
console.log(JSON.stringify({ ready: true }));
`,
  // The hook owner: WrapHooks plus a proxy that answers with the original destination; driven by JSON lines on stdin.
  'owner.mjs': `
import net from 'node:net';
import { createInterface } from 'node:readline';
import { WrapHooks } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist/control/bpf/wrap-hooks.js')).href)};
import { fetchLine } from './fetch.mjs';
const proxyPort = Number(process.argv[2]);
const hooks = WrapHooks.open({ proxyPort });
hooks.setPorts([${WRAPPED}]);
const onConn = (s) => s.end('proxy ' + JSON.stringify(hooks.originalDst(s.remotePort) ?? null) + '\\n');
await Promise.all(['127.0.0.1', '::1'].map((h) => new Promise((r) => net.createServer(onConn).listen(proxyPort, h, r))));
const reply = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
createInterface({ input: process.stdin }).on('line', async (line) => {
  const m = JSON.parse(line);
  try {
    if (m.cmd === 'setPorts') hooks.setPorts(m.ports);
    if (m.cmd === 'close') hooks.close();
    const text = m.cmd === 'connect' ? await fetchLine(m.host, m.port) : undefined;
    reply({ id: m.id, text, stats: m.cmd === 'stats' ? hooks.stats() : undefined });
  } catch (e) {
    reply({ id: m.id, error: String(e) });
  }
});
reply({ ready: true });
`,
};

/** A long-running node script in a namespace, answering JSON lines. */
class Remote {
  private next = 1;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  private stderr = '';
  readonly ready: Promise<void>;

  constructor(
    ns: string,
    script: string,
    args: string[] = [],
    readonly proc = spawn('ip', ['netns', 'exec', ns, process.execPath, join(dir, script), ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
  ) {
    procs.push(proc);
    proc.stderr!.on('data', (d: Buffer) => (this.stderr += d));
    this.ready = new Promise((resolve, reject) => {
      proc.once('exit', (code) => reject(new Error(`${script} exited (${code}): ${this.stderr}`)));
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as Record<string, unknown>;
        if (m.ready) resolve();
        this.waiting.get(m.id as number)?.(m);
      });
    });
  }

  async call(cmd: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.next++;
    const reply = new Promise<Record<string, unknown>>((r) => this.waiting.set(id, r));
    this.proc.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    const m = await reply;
    if (m.error) throw new Error(`${cmd}: ${m.error as string}`);
    return m;
  }

  async kill9(): Promise<void> {
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
  }
}

/** What a fresh client process in `ns` gets from host:port ("proxy {...}", "direct N", "trap", "error E"). */
async function client(ns: string, host: string, port: number, proto = 'tcp'): Promise<string> {
  const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'client.mjs'), host, String(port), proto], { timeout: 10_000 });
  return stdout.trim();
}
const proxied = (address: string, family: 4 | 6 = 4, port = WRAPPED): string => `proxy ${JSON.stringify({ family, address, port })}`;

/** Build what the test runs when it is missing or older than its source (`make test` has built it already). */
function ensureBuilt(): void {
  const stale = (out: string, ...srcs: string[]): boolean => !existsSync(join(ROOT, out)) || srcs.some((s) => statSync(join(ROOT, s)).mtimeMs > statSync(join(ROOT, out)).mtimeMs);
  // -o: never let a stale stamp turn this into npm ci / apt-get in the middle of a test run.
  if (stale('bpf/spook_wrap.o', 'bpf/spook_wrap.c')) execFileSync('make', ['-s', '-o', 'node_modules/.stamp', '-o', 'node_modules/.stamp-apt', 'bpf/spook_wrap.o'], { cwd: ROOT, stdio: 'inherit' });
  if (stale('dist/control/bpf/wrap-hooks.js', 'control/bpf/wrap-hooks.ts', 'control/bpf/libbpf.ts')) {
    // Just these modules, with tsconfig's options: the rest of the tree need not compile.
    const opts = ['--outDir', 'dist', '--rootDir', '.', '--target', 'ES2022', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--strict', '--declaration', '--sourceMap', '--skipLibCheck', '--types', 'node'];
    execFileSync(join(ROOT, 'node_modules/.bin/tsc'), [...opts, 'control/bpf/wrap-hooks.ts'], { cwd: ROOT, stdio: 'inherit' });
  }
}

let owner: Remote;

beforeAll(async () => {
  requireRoot();
  ensureBuilt();
  Lab.cleanupStale();
  dir = mkdtempSync(join(tmpdir(), 'spook-wrap-'));
  for (const [name, text] of Object.entries(SCRIPTS)) writeFileSync(join(dir, name), text);
  for (const ns of [NS_A, NS_B]) {
    sh('netns', 'add', ns);
    sh('-n', ns, 'link', 'set', 'lo', 'up');
  }
  const [ifA, ifB] = [`v${SUBNET}wa`, `v${SUBNET}wb`];
  sh('link', 'add', ifA, 'netns', NS_A, 'type', 'veth', 'peer', 'name', ifB, 'netns', NS_B);
  sh('-n', NS_A, 'addr', 'add', `${A_IP}/24`, 'dev', ifA);
  sh('-n', NS_B, 'addr', 'add', `${B_IP}/24`, 'dev', ifB);
  sh('-n', NS_A, 'addr', 'add', `fd77:${SUBNET}::1/64`, 'dev', ifA, 'nodad');
  sh('-n', NS_B, 'addr', 'add', `${B_IP6}/64`, 'dev', ifB, 'nodad');
  sh('-n', NS_A, 'link', 'set', ifA, 'up');
  sh('-n', NS_B, 'link', 'set', ifB, 'up');
  await new Remote(NS_B, 'server.mjs').ready;
  owner = new Remote(NS_A, 'owner.mjs', [String(PROXY)]);
  await owner.ready;
}, 60_000);

afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const ns of [NS_A, NS_B]) {
    try {
      sh('netns', 'del', ns);
    } catch {
      /* not created */
    }
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

describe('wrap hooks (cgroup connect4/connect6/sockops)', () => {
  it('redirects connects to wrapped ports in its namespace to the proxy, which learns the original destination', async () => {
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(proxied(B_IP));
    expect(await client(NS_A, B_IP6, WRAPPED)).toBe(proxied(B_IP6, 6));
    // A v4-mapped destination on an IPv6 socket is treated as IPv4 (lands on the IPv4 proxy).
    expect(await client(NS_A, `::ffff:${B_IP}`, WRAPPED)).toBe(proxied(B_IP));
    const stats = (await owner.call('stats')).stats as Record<string, number>;
    expect(stats.redirected).toBe(3);
    // Every entry reached orig_by_port (the local port is known at TCP_CONNECT_CB) and was consumed.
    expect(stats.handed_over).toBe(3);
  });

  it('leaves other ports, loopback, UDP, its own connects and other namespaces alone', async () => {
    expect(await client(NS_A, B_IP, DIRECT)).toBe(`direct ${DIRECT}`);
    expect(await client(NS_A, '127.0.0.1', WRAPPED)).toBe('error ECONNREFUSED'); // nothing listens on A's loopback:5022
    expect(await client(NS_A, B_IP, WRAPPED, 'udp')).toBe(`udp ${B_IP}:${WRAPPED}`);
    expect((await owner.call('connect', { host: B_IP, port: WRAPPED })).text).toBe(`direct ${WRAPPED}`);
    // B has a trap on its loopback proxy port: a redirect there would answer "trap".
    expect(await client(NS_B, B_IP, WRAPPED)).toBe(`direct ${WRAPPED}`);
    const stats = (await owner.call('stats')).stats as Record<string, number>;
    expect(stats.redirected).toBe(3);
    expect(stats.skipped_self).toBe(1);
    expect(stats.loopback).toBe(1);
    expect(stats.not_tcp).toBeGreaterThanOrEqual(1);
    expect(stats.other_netns).toBeGreaterThanOrEqual(1);
  });

  it('follows setPorts, and close() restores the direct path', async () => {
    await owner.call('setPorts', { ports: [] });
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(`direct ${WRAPPED}`);
    await owner.call('setPorts', { ports: [DIRECT, WRAPPED] });
    expect(await client(NS_A, B_IP, DIRECT)).toBe(proxied(B_IP, 4, DIRECT));
    await owner.call('setPorts', { ports: [WRAPPED] });
    expect(await client(NS_A, B_IP, DIRECT)).toBe(`direct ${DIRECT}`);
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(proxied(B_IP));
    await owner.call('close');
    await owner.call('close'); // idempotent
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(`direct ${WRAPPED}`);
  });

  it('kill -9 of the owner closes its links: connects go direct again', async () => {
    const second = new Remote(NS_A, 'owner.mjs', [String(PROXY + 1)]);
    await second.ready;
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(proxied(B_IP));
    await second.kill9();
    await until('direct path after kill -9', async () => (await client(NS_A, B_IP, WRAPPED)) === `direct ${WRAPPED}`, 5_000);
  });
});

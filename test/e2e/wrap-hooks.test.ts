import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { Lab, ROOT, requireRoot, until } from '../../testing/lab/netns.js';

/**
 * The wrappers' cgroup hooks (bpf/spook_wrap.c via drivers/bpf/wrap-hooks.ts) between two
 * namespaces joined by a veth: in A a hook owner (standing in for spookd) runs a proxy on
 * loopback; clients in A that connect to B:5022 land on the proxy, which learns B:5022 as
 * the original destination; everything else (other ports, loopback, UDP, the owner's own
 * connects, other namespaces, and everything after close() or kill -9) goes direct.
 * UDP (IPv4, IPv6, v4-mapped): a second owner with a UDP proxy (127.0.0.1 and [::1]) echoes
 * datagrams sent to B:5683, by connect (bound first or not) or sendto, and the client sees
 * the reply come from B:5683.
 */
const run = promisify(execFile);
const SUBNET = 61;
const A_IP = `10.77.${SUBNET}.1`;
const B_IP = `10.77.${SUBNET}.2`;
const B_IP6 = `fd77:${SUBNET}::2`;
const B_IP_2 = `10.77.${SUBNET}.3`;
const B_IP6_2 = `fd77:${SUBNET}::3`;
const EXTRA_A4 = [`10.77.${SUBNET}.11`, `10.77.${SUBNET}.12`];
const EXTRA_A6 = [`fd77:${SUBNET}::11`, `fd77:${SUBNET}::12`];
const WRAPPED = 5022;
const DIRECT = 5023;
const PROXY = 15001;
const COAP = 5683;
const UDP_PROXY = 15101;

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
  // A UDP client sending "hi" (to an IPv4, IPv6 or v4-mapped host: udp4 or udp6 socket): "connect"
  // (bind first), "sendto" (unconnected), or "unbound" (connect() without a bind, through libc:
  // node's dgram always binds first). Prints {local, reply, from}; from is the reply's source (recvfrom).
  'udp.mjs': `
import dgram from 'node:dgram';
import net from 'node:net';
import { createRequire } from 'node:module';
const [host, port, mode] = process.argv.slice(2);
const v6 = net.isIPv6(host);
const out = (m) => { console.log(JSON.stringify(m)); process.exit(0); };
if (mode === 'unbound') {
  const c = createRequire(${JSON.stringify(join(ROOT, 'package.json'))})('koffi').load('libc.so.6');
  const socket = c.func('int socket(int, int, int)');
  const connect = c.func('int connect(int, const void *, uint32_t)');
  const setsockopt = c.func('int setsockopt(int, int, int, const void *, uint32_t)');
  const getsockname = c.func('int getsockname(int, void *, void *)');
  const send = c.func('intptr_t send(int, const void *, size_t, int)');
  const recvfrom = c.func('intptr_t recvfrom(int, void *, size_t, int, void *, void *)');
  const fd = socket(v6 ? 10 : 2, 2, 0); // AF_INET6 or AF_INET, SOCK_DGRAM
  const sa = Buffer.alloc(v6 ? 28 : 16);
  sa.writeUInt16LE(v6 ? 10 : 2, 0);
  sa.writeUInt16BE(Number(port), 2);
  if (!v6) host.split('.').forEach((o, i) => (sa[4 + i] = Number(o)));
  else {
    // Expand "a::b" (and a trailing dotted IPv4) into 16 bytes at offset 8.
    const [head, tail = ''] = host.split('::');
    const words = (t) => t.split(':').filter(Boolean).flatMap((w) => (w.includes('.') ? w.split('.').map(Number).reduce((a, b, i) => (i % 2 ? [...a.slice(0, -1), a.at(-1) * 256 + b] : [...a, b]), []) : [parseInt(w, 16)]));
    const h = words(head), t = words(tail);
    [...h, ...Array(8 - h.length - t.length).fill(0), ...t].forEach((w, i) => sa.writeUInt16BE(w, 8 + 2 * i));
  }
  if (connect(fd, sa, sa.length) < 0) out({ error: 'connect' });
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(3n, 0); // SO_RCVTIMEO 3 s
  setsockopt(fd, 1, 20, tv, 16);
  const me = Buffer.alloc(28), len = Buffer.alloc(4);
  len.writeUInt32LE(28);
  getsockname(fd, me, len);
  send(fd, Buffer.from('hi'), 2, 0);
  const buf = Buffer.alloc(100), from = Buffer.alloc(28), flen = Buffer.alloc(4);
  flen.writeUInt32LE(28);
  const n = recvfrom(fd, buf, 100, 0, from, flen);
  const addr = v6
    ? new net.SocketAddress({ family: 'ipv6', address: Array.from({ length: 8 }, (_, i) => from.readUInt16BE(8 + 2 * i).toString(16)).join(':') }).address
    : [...from.subarray(4, 8)].join('.');
  out({ local: me.readUInt16BE(2), reply: n < 0 ? 'timeout' : buf.subarray(0, Number(n)).toString(), from: n < 0 ? undefined : addr + ':' + from.readUInt16BE(2) });
}
const s = dgram.createSocket(v6 ? 'udp6' : 'udp4');
setTimeout(() => out({ local: s.address().port, reply: 'timeout' }), 3000);
s.on('message', (m, r) => out({ local: s.address().port, reply: String(m), from: r.address + ':' + r.port }));
if (mode === 'connect') s.bind(0, v6 ? '::' : '0.0.0.0', () => s.connect(Number(port), host, () => s.send('hi')));
else s.send('hi', Number(port), host);
`,
  // A burst of TCP connects, each bound to one of several local addresses and a port that the
  // other addresses use too, to a wrapped destination; the proxy answers with the original
  // destination it learned, which must be the connect's own. Prints {ok, wrong, none, errors}.
  'burst.mjs': `
import net from 'node:net';
const { clients, dests, ports, firstPort, parallel } = JSON.parse(process.argv[2]);
const jobs = [];
for (let p = 0; p < ports; p++) clients.forEach((local, i) => jobs.push({ local, localPort: firstPort + p, dest: dests[(p + i) % dests.length] }));
const tally = { ok: 0, wrong: 0, none: 0, errors: 0, samples: [] };
const one = (j) => new Promise((resolve) => {
  const s = net.connect({ host: j.dest.host, port: j.dest.port, localAddress: j.local, localPort: j.localPort, timeout: 5000 });
  let text = '';
  s.on('data', (d) => (text += d));
  s.on('timeout', () => s.destroy(new Error('timeout')));
  s.on('error', (e) => { tally.errors++; if (tally.samples.length < 5) tally.samples.push(j.local + ':' + j.localPort + ' ' + e.message); resolve(); });
  s.on('close', () => {
    const got = JSON.parse(text.trim().replace(/^proxy /, '') || 'null');
    if (got === null) tally.none++;
    else if (got.address === j.dest.expect && got.port === j.dest.port) tally.ok++;
    else { tally.wrong++; if (tally.samples.length < 5) tally.samples.push(JSON.stringify({ j, got })); }
    resolve();
  });
});
let next = 0;
await Promise.all(Array.from({ length: parallel }, async () => { while (next < jobs.length) await one(jobs[next++]); }));
console.log(JSON.stringify({ total: jobs.length, ...tally }));
`,
  // The real servers in B (TCP and UDP), and a trap on B's loopback that would catch a wrong redirect there.
  'server.mjs': `
import dgram from 'node:dgram';
import net from 'node:net';
const listen = (port, host, text) => new Promise((r) => net.createServer((s) => s.end(text + '\\n')).listen(port, host, r));
// UDP on IPv6 bound to B_IP6 itself: an unbound socket would answer from whichever of B's addresses the route picks.
const udp1 = (type, port, host) => new Promise((r) => { const s = dgram.createSocket({ type, ipv6Only: type === 'udp6' }); s.on('message', (m, ri) => s.send('direct:' + m, ri.port, ri.address)); s.bind(port, host, r); });
const udp = (port) => Promise.all([udp1('udp4', port, '0.0.0.0'), udp1('udp6', port, '${B_IP6}')]);
await Promise.all([listen(${WRAPPED}, '::', 'direct ${WRAPPED}'), listen(${DIRECT}, '::', 'direct ${DIRECT}'), listen(${COAP}, '::', 'direct ${COAP}'), listen(${PROXY}, '127.0.0.1', 'trap'), udp(${WRAPPED}), udp(${COAP})]);
console.log(JSON.stringify({ ready: true }));
`,
  // The hook owner: WrapHooks plus a proxy that answers with the original destination; driven by JSON lines on stdin.
  // With a UDP proxy port (argv[3]) it also wraps UDP ${COAP} and echoes datagrams, noting originalUdpDst.
  'owner.mjs': `
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { WrapHooks } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist/drivers/bpf/wrap-hooks.js')).href)};
import { fetchLine } from './fetch.mjs';
const [proxyPort, udpProxyPort] = process.argv.slice(2).map(Number);
const hooks = WrapHooks.open(udpProxyPort ? { proxyPort, udpProxyPort } : { proxyPort });
if (udpProxyPort) hooks.setPorts([${WRAPPED}], [${COAP}]);
else hooks.setPorts([${WRAPPED}]);
const onConn = (s) => s.end('proxy ' + JSON.stringify(hooks.originalDst({ address: s.remoteAddress, port: s.remotePort }) ?? null) + '\\n');
await Promise.all(['127.0.0.1', '::1'].map((h) => new Promise((r) => net.createServer(onConn).listen(proxyPort, h, r))));
let seen = [];
if (udpProxyPort) {
  for (const [type, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']]) {
    const u = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
    u.on('message', (m, r) => {
      seen.push({ from: r.address, port: r.port, orig: hooks.originalUdpDst(r) ?? null });
      u.send('echo:' + m, r.port, r.address);
    });
    await new Promise((r) => u.bind(udpProxyPort, host, r));
  }
}
// The owner's own UDP exchange (spookd dialling a real server): must go direct.
const udpExchange = (host, port) => new Promise((resolve) => {
  const s = dgram.createSocket('udp4');
  const done = (v) => { clearTimeout(timer); s.close(); resolve(v); };
  const timer = setTimeout(() => done('timeout'), 3000);
  s.on('message', (m) => done(String(m)));
  s.send('hi', port, host);
});
const reply = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
createInterface({ input: process.stdin }).on('line', async (line) => {
  const m = JSON.parse(line);
  try {
    let value;
    if (m.cmd === 'setPorts') m.udp ? hooks.setPorts(m.ports, m.udp) : hooks.setPorts(m.ports);
    if (m.cmd === 'close') hooks.close();
    if (m.cmd === 'udpSeen') [value, seen] = [seen, []];
    if (m.cmd === 'udpOrig') value = hooks.originalUdpDst({ address: '127.0.0.1', port: m.port }) ?? null;
    if (m.cmd === 'forgetUdp') hooks.forgetUdp({ address: '127.0.0.1', port: m.port });
    if (m.cmd === 'udpExchange') value = await udpExchange(m.host, m.port);
    const text = m.cmd === 'connect' ? await fetchLine(m.host, m.port) : undefined;
    reply({ id: m.id, text, value, stats: m.cmd === 'stats' ? hooks.stats() : undefined });
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
  const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'client.mjs'), host, String(port), proto], {
    timeout: 10_000,
  });
  return stdout.trim();
}
interface UdpResult {
  local: number;
  reply: string;
  from?: string;
}
/** What a fresh UDP client in `ns` gets for "hi" sent to host:port (see udp.mjs for the modes). */
async function udpClient(ns: string, host: string, port: number, mode: 'connect' | 'sendto' | 'unbound'): Promise<UdpResult> {
  const { stdout } = await run('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'udp.mjs'), host, String(port), mode], {
    timeout: 10_000,
  });
  return JSON.parse(stdout) as UdpResult;
}
/** The proxy's answer for a client of root's (uid 0: the hooks record the connecting task's uid beside the destination). */
const proxied = (address: string, family: 4 | 6 = 4, port = WRAPPED): string =>
  `proxy ${JSON.stringify({ family, address, port, uid: 0 })}`;

/** Build what the test runs when it is missing or older than its source (`make test` has built it already). */
function ensureBuilt(): void {
  const stale = (out: string, ...srcs: string[]): boolean =>
    !existsSync(join(ROOT, out)) || srcs.some((s) => statSync(join(ROOT, s)).mtimeMs > statSync(join(ROOT, out)).mtimeMs);
  // -o: never let a stale stamp turn this into npm ci / apt-get in the middle of a test run.
  if (stale('bpf/spook_wrap.o', 'bpf/spook_wrap.c'))
    execFileSync('make', ['-s', '-o', 'node_modules/.stamp', '-o', 'node_modules/.stamp-apt', 'bpf/spook_wrap.o'], {
      cwd: ROOT,
      stdio: 'inherit',
    });
  if (stale('dist/drivers/bpf/wrap-hooks.js', 'drivers/bpf/wrap-hooks.ts', 'drivers/bpf/libbpf.ts')) {
    // Just these modules, with tsconfig's options: the rest of the tree need not compile.
    const opts = [
      '--outDir',
      'dist',
      '--rootDir',
      '.',
      '--target',
      'ES2022',
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--strict',
      '--declaration',
      '--sourceMap',
      '--skipLibCheck',
      '--types',
      'node',
    ];
    execFileSync(join(ROOT, 'node_modules/.bin/tsc'), [...opts, 'drivers/bpf/wrap-hooks.ts'], { cwd: ROOT, stdio: 'inherit' });
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
  // More addresses: clients on several local addresses, destinations on several of B's.
  for (const a of EXTRA_A4) sh('-n', NS_A, 'addr', 'add', `${a}/24`, 'dev', ifA);
  for (const a of EXTRA_A6) sh('-n', NS_A, 'addr', 'add', `${a}/64`, 'dev', ifA, 'nodad');
  sh('-n', NS_B, 'addr', 'add', `${B_IP_2}/24`, 'dev', ifB);
  sh('-n', NS_B, 'addr', 'add', `${B_IP6_2}/64`, 'dev', ifB, 'nodad');
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

  it('wrong destination through shared client ports: 2,400 mixed IPv4/IPv6 connects from six local addresses that share port numbers each reach their own destination', async () => {
    const clients = [A_IP, ...EXTRA_A4, `fd77:${SUBNET}::1`, ...EXTRA_A6];
    const dests = [
      { host: B_IP, expect: B_IP, port: WRAPPED },
      { host: B_IP_2, expect: B_IP_2, port: WRAPPED },
      { host: B_IP6, expect: B_IP6, port: WRAPPED },
      { host: B_IP6_2, expect: B_IP6_2, port: WRAPPED },
    ];
    // IPv4 clients get the IPv4 destinations, IPv6 ones the IPv6 destinations.
    const spec = (fam: 4 | 6): string =>
      JSON.stringify({
        clients: clients.filter((c) => (fam === 4) === !c.includes(':')),
        dests: dests.filter((d) => (fam === 4) === !d.host.includes(':')),
        ports: 400,
        firstPort: 41000,
        parallel: 150,
      });
    const burstOwner = new Remote(NS_A, 'owner.mjs', [String(PROXY + 3)]);
    await burstOwner.ready;
    const started = Date.now();
    // Both families at once: an IPv4 and an IPv6 socket use each port number at the same time.
    const [v4, v6] = await Promise.all(
      [4, 6].map(async (fam) => {
        const { stdout } = await run('ip', ['netns', 'exec', NS_A, process.execPath, join(dir, 'burst.mjs'), spec(fam as 4 | 6)], {
          timeout: 60_000,
        });
        return JSON.parse(stdout) as { total: number; ok: number; wrong: number; none: number; errors: number; samples: string[] };
      }),
    );
    const elapsed = Date.now() - started;
    expect(v4, JSON.stringify(v4.samples)).toMatchObject({ total: 1200, ok: 1200, wrong: 0, none: 0, errors: 0 });
    expect(v6, JSON.stringify(v6.samples)).toMatchObject({ total: 1200, ok: 1200, wrong: 0, none: 0, errors: 0 });
    const st = (await burstOwner.call('stats')).stats as Record<string, number>;
    await burstOwner.kill9();
    expect(st.redirected).toBe(2400);
    expect(st.handed_over).toBe(2400);
    expect(elapsed).toBeLessThan(30_000);
  }, 60_000);

  it('kill -9 of the owner closes its links: connects go direct again', async () => {
    const second = new Remote(NS_A, 'owner.mjs', [String(PROXY + 1)]);
    await second.ready;
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(proxied(B_IP));
    await second.kill9();
    await until('direct path after kill -9', async () => (await client(NS_A, B_IP, WRAPPED)) === `direct ${WRAPPED}`, 5_000);
  });
});

describe('wrap hooks for UDP (cgroup connect4/6, sendmsg4/6, recvmsg4/6)', () => {
  let udpOwner: Remote;
  const stats = async (): Promise<Record<string, number>> => (await udpOwner.call('stats')).stats as Record<string, number>;
  const seen = async (): Promise<unknown> => (await udpOwner.call('udpSeen')).value;
  const orig = { family: 4, address: B_IP, port: COAP, uid: 0 };

  beforeAll(async () => {
    udpOwner = new Remote(NS_A, 'owner.mjs', [String(PROXY + 2), String(UDP_PROXY)]);
    await udpOwner.ready;
  }, 20_000);

  it('redirects a bound, connected UDP socket to the UDP proxy; the reply comes from the original destination', async () => {
    const r = await udpClient(NS_A, B_IP, COAP, 'connect');
    expect(r.reply).toBe('echo:hi');
    expect(r.from).toBe(`${B_IP}:${COAP}`); // recvmsg4 rewrote 127.0.0.1:UDP_PROXY
    expect(await seen()).toEqual([{ from: '127.0.0.1', port: r.local, orig }]);
    const s = await stats();
    expect([s.udp_redirected, s.udp_reverse, s.udp_unbound]).toEqual([1, 1, 0]);
  });

  it('redirects unconnected sends (sendmsg4), and recvfrom reports the original destination', async () => {
    const r = await udpClient(NS_A, B_IP, COAP, 'sendto');
    expect(r.reply).toBe('echo:hi');
    expect(r.from).toBe(`${B_IP}:${COAP}`);
    expect(await seen()).toEqual([{ from: '127.0.0.1', port: r.local, orig }]);
    // originalUdpDst does not delete (a flow has many datagrams); forgetUdp does.
    expect((await udpOwner.call('udpOrig', { port: r.local })).value).toEqual(orig);
    await udpOwner.call('forgetUdp', { port: r.local });
    expect((await udpOwner.call('udpOrig', { port: r.local })).value).toBeNull();
    const s = await stats();
    expect([s.udp_redirected, s.udp_reverse]).toEqual([2, 2]);
  });

  it("intercepts a UDP socket connected before it is bound (the hook binds it), and leaves the owner's own sends alone", async () => {
    const r = await udpClient(NS_A, B_IP, COAP, 'unbound');
    expect(r).toMatchObject({ reply: 'echo:hi', from: `${B_IP}:${COAP}` });
    expect(r.local).toBeGreaterThanOrEqual(32768); // bound by the hook, in the default ephemeral range
    expect((await udpOwner.call('udpExchange', { host: B_IP, port: COAP })).value).toBe('direct:hi');
    expect(await seen()).toEqual([{ from: '127.0.0.1', port: r.local, orig }]);
    const s = await stats();
    expect([s.udp_redirected, s.udp_reverse, s.udp_unbound]).toEqual([3, 3, 0]);
    expect(s.skipped_self).toBe(1);
  });

  it('IPv6: connected (bound or not) and unconnected sockets reach the [::1] proxy; v4-mapped destinations the IPv4 one', async () => {
    const orig6 = { family: 6, address: B_IP6, port: COAP, uid: 0 };
    for (const mode of ['connect', 'sendto', 'unbound'] as const) {
      const r = await udpClient(NS_A, B_IP6, COAP, mode);
      expect(r, mode).toMatchObject({ reply: 'echo:hi', from: `${B_IP6}:${COAP}` });
      expect(await seen(), mode).toEqual([{ from: '::1', port: r.local, orig: orig6 }]);
    }
    // A dual-stack socket sending to ::ffff:B: recorded as IPv4, the reply from ::ffff:B.
    for (const mode of ['connect', 'sendto', 'unbound'] as const) {
      const r = await udpClient(NS_A, `::ffff:${B_IP}`, COAP, mode);
      expect(r, mode).toMatchObject({ reply: 'echo:hi', from: `::ffff:${B_IP}:${COAP}` });
      expect(await seen(), mode).toEqual([{ from: '127.0.0.1', port: r.local, orig }]);
    }
    // The same exchanges direct (port not wrapped for UDP) reach B's server.
    expect(await udpClient(NS_A, B_IP6, WRAPPED, 'unbound')).toMatchObject({ reply: 'direct:hi', from: `${B_IP6}:${WRAPPED}` });
    expect(await udpClient(NS_A, B_IP6, WRAPPED, 'sendto')).toMatchObject({ reply: 'direct:hi', from: `${B_IP6}:${WRAPPED}` });
    const s = await stats();
    expect([s.udp_redirected, s.udp_reverse, s.udp_unbound]).toEqual([9, 9, 0]);
  });

  it('wraps each protocol only where asked', async () => {
    // WRAPPED is TCP only, COAP UDP only.
    expect(await udpClient(NS_A, B_IP, WRAPPED, 'connect')).toMatchObject({ reply: 'direct:hi', from: `${B_IP}:${WRAPPED}` });
    expect(await udpClient(NS_A, B_IP, WRAPPED, 'sendto')).toMatchObject({ reply: 'direct:hi', from: `${B_IP}:${WRAPPED}` });
    expect(await client(NS_A, B_IP, COAP)).toBe(`direct ${COAP}`);
    expect(await client(NS_A, B_IP, WRAPPED)).toBe(proxied(B_IP));
    // Both protocols on one port.
    await udpOwner.call('setPorts', { ports: [WRAPPED, COAP], udp: [COAP] });
    expect(await client(NS_A, B_IP, COAP)).toBe(proxied(B_IP, 4, COAP));
    expect((await udpClient(NS_A, B_IP, COAP, 'connect')).reply).toBe('echo:hi');
    // The single-argument setPorts means TCP only.
    await udpOwner.call('setPorts', { ports: [WRAPPED, COAP] });
    expect((await udpClient(NS_A, B_IP, COAP, 'sendto')).reply).toBe('direct:hi');
    expect(await client(NS_A, B_IP, COAP)).toBe(proxied(B_IP, 4, COAP));
    const s = await stats();
    expect(s.udp_redirected).toBe(10);
    expect(s.no_port).toBeGreaterThanOrEqual(4);
  });

  it('close() restores the direct path for UDP', async () => {
    await udpOwner.call('setPorts', { ports: [WRAPPED], udp: [COAP] });
    expect((await udpClient(NS_A, B_IP, COAP, 'sendto')).reply).toBe('echo:hi');
    await udpOwner.call('close');
    expect(await udpClient(NS_A, B_IP, COAP, 'sendto')).toMatchObject({ reply: 'direct:hi', from: `${B_IP}:${COAP}` });
    expect(await udpClient(NS_A, B_IP, COAP, 'connect')).toMatchObject({ reply: 'direct:hi', from: `${B_IP}:${COAP}` });
  });
});

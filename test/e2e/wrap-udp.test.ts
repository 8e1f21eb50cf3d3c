/**
 * UDP wrappers end to end: two hosts in namespaces (client `uc`, server `us`) with IPv4 and IPv6
 * addresses on their link, a spookd on each, and a DNS-style server on `us` that answers on one
 * port over TCP (u16 length-prefixed messages, as DNS over TCP) and over UDP, on IPv4 and IPv6.
 * The port is wrapped for both transports with the CLI (`spook wrap add udp|tcp --port N`). Real
 * clients on `uc`: TCP, UDP bound and connected, unconnected (sendto), connected without a bind
 * (connect(2) through libc: node's dgram always binds first), a dual-stack socket sending to a
 * v4-mapped address. Each exchange is made direct first, then wrapped: the same reply from the
 * same source, except the address the server saw (the serving spookd's, when carried).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { WrapperEntry, WrapStatsResult } from '../../client/protocol.js';
import { Lab, ROOT, requireRoot, until } from '../../testing/lab/netns.js';
import { nsRun } from '../../testing/lab/servers.js';

const run = promisify(execFile);
const SUBNET = 69;
const PORT = 5353;
const C6 = `fd69:${SUBNET}::1`;
const S6 = `fd69:${SUBNET}::2`;

let lab: Lab;
let C = '';
let S = '';
let c4 = '';
let s4 = '';
let server: ChildProcess | undefined;

/** The server: "<transport>:<query> <the source address it saw>" on TCP and UDP, IPv4 and IPv6. */
const SERVER = `
import dgram from 'node:dgram';
import net from 'node:net';
const [port, ...hosts] = process.argv.slice(2);
const plain = (a) => a.replace(/^::ffff:/, '');
for (const host of hosts) {
  // Bound to each address: an unbound socket would answer from whichever address the route picks.
  const u = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', ipv6Only: net.isIPv6(host) });
  u.on('message', (m, r) => u.send('udp:' + m + ' ' + plain(r.address), r.port, r.address));
  await new Promise((r) => u.bind(Number(port), host, r));
  await new Promise((r) => net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const q = buf.subarray(2, 2 + buf.readUInt16BE(0)).toString();
        buf = buf.subarray(2 + q.length);
        const a = Buffer.from('tcp:' + q + ' ' + plain(s.remoteAddress));
        s.write(Buffer.concat([Buffer.from([a.length >> 8, a.length & 0xff]), a]));
      }
    });
    s.on('error', () => {});
  }).listen(Number(port), host, r));
}
console.log('ready');
`;

/**
 * The clients: one exchange each, printed as {reply, from}: from is the source of the reply
 * (the server's address and port, as the client's socket reports it).
 */
const CLIENT = `
import dgram from 'node:dgram';
import net from 'node:net';
import { createRequire } from 'node:module';
const [mode, host, port, query] = process.argv.slice(2);
const v6 = net.isIPv6(host);
const out = (m) => { console.log(JSON.stringify(m)); process.exit(0); };
setTimeout(() => out({ reply: 'timeout' }), 5000);
if (mode === 'tcp') {
  const s = net.connect({ host, port: Number(port) }, () => s.write(Buffer.concat([Buffer.from([0, query.length]), Buffer.from(query)])));
  let buf = Buffer.alloc(0);
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) out({ reply: buf.subarray(2).toString(), from: s.remoteAddress + ':' + s.remotePort });
  });
  s.on('error', (e) => out({ reply: 'error ' + e.code }));
} else if (mode === 'unbound') {
  const c = createRequire(${JSON.stringify(join(ROOT, 'package.json'))})('koffi').load('libc.so.6');
  const socket = c.func('int socket(int, int, int)');
  const connect = c.func('int connect(int, const void *, uint32_t)');
  const send = c.func('intptr_t send(int, const void *, size_t, int)');
  const recvfrom = c.func('intptr_t recvfrom(int, void *, size_t, int, void *, void *)');
  const fd = socket(v6 ? 10 : 2, 2 | 0x800, 0); // SOCK_DGRAM | SOCK_NONBLOCK
  const sa = Buffer.alloc(v6 ? 28 : 16);
  sa.writeUInt16LE(v6 ? 10 : 2, 0);
  sa.writeUInt16BE(Number(port), 2);
  if (v6) expand(host).copy(sa, 8);
  else host.split('.').forEach((o, i) => (sa[4 + i] = Number(o)));
  if (connect(fd, sa, sa.length) < 0) out({ reply: 'connect failed' });
  send(fd, Buffer.from(query), query.length, 0);
  const buf = Buffer.alloc(512), from = Buffer.alloc(28), flen = Buffer.alloc(4);
  const poll = () => {
    flen.writeUInt32LE(28);
    const n = Number(recvfrom(fd, buf, 512, 0, from, flen));
    if (n < 0) return void setTimeout(poll, 10);
    const addr = v6
      ? new net.SocketAddress({ family: 'ipv6', address: Array.from({ length: 8 }, (_, i) => from.readUInt16BE(8 + 2 * i).toString(16)).join(':') }).address
      : [...from.subarray(4, 8)].join('.');
    out({ reply: buf.subarray(0, n).toString(), from: addr + ':' + from.readUInt16BE(2) });
  };
  poll();
} else {
  const s = dgram.createSocket(v6 ? 'udp6' : 'udp4');
  s.on('message', (m, r) => out({ reply: String(m), from: r.address + ':' + r.port }));
  if (mode === 'connect') s.bind(0, () => s.connect(Number(port), host, () => s.send(query)));
  else s.send(query, Number(port), host);
}
/** 16 bytes of an IPv6 address (with :: and a trailing dotted IPv4). */
function expand(a) {
  const words = (t) => t.split(':').filter(Boolean).flatMap((w) => (w.includes('.') ? ((o) => [o[0] * 256 + o[1], o[2] * 256 + o[3]])(w.split('.').map(Number)) : [parseInt(w, 16)]));
  const [head, tail = ''] = a.split('::');
  const h = words(head), t = a.includes('::') ? words(tail) : [];
  const b = Buffer.alloc(16);
  [...h, ...Array(8 - h.length - t.length).fill(0), ...t].forEach((w, i) => b.writeUInt16BE(w, 2 * i));
  return b;
}
`;

type Mode = 'tcp' | 'connect' | 'sendto' | 'unbound';
interface Exchange {
  reply: string;
  from?: string;
}

async function exchange(mode: Mode, host: string, query: string): Promise<Exchange> {
  const r = await nsRun(C, process.execPath, [join(lab.dir, 'client.mjs'), mode, host, String(PORT), query], { timeoutMs: 15_000 });
  if (r.code !== 0) throw new Error(`client ${mode} ${host}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Exchange;
}

const spook = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, 'bin/spook'), ...args, '--socket', lab.host('uc').socket]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
};
const stats = (): Promise<WrapStatsResult> => lab.admin('uc', 'wrap-stats');
const wrapperOf = async (transport: 'tcp' | 'udp'): Promise<number> =>
  (await stats()).wrappers.find((w) => w.port === PORT && w.transport === transport)?.connections ?? -1;

/** The exchanges compared: every transport, family and kind of socket, with the address each targets. */
const CASES: { name: string; mode: Mode; host: () => string }[] = [
  { name: 'tcp ipv4', mode: 'tcp', host: () => s4 },
  { name: 'tcp ipv6', mode: 'tcp', host: () => S6 },
  { name: 'udp ipv4 connected', mode: 'connect', host: () => s4 },
  { name: 'udp ipv4 sendto', mode: 'sendto', host: () => s4 },
  { name: 'udp ipv4 connected unbound', mode: 'unbound', host: () => s4 },
  { name: 'udp ipv6 connected', mode: 'connect', host: () => S6 },
  { name: 'udp ipv6 sendto', mode: 'sendto', host: () => S6 },
  { name: 'udp ipv6 connected unbound', mode: 'unbound', host: () => S6 },
  { name: 'udp v4-mapped sendto', mode: 'sendto', host: () => `::ffff:${s4}` },
  { name: 'udp v4-mapped connected unbound', mode: 'unbound', host: () => `::ffff:${s4}` },
];
/** What the server saw as the source: the client host's address direct, the serving spookd's (on the server host) wrapped. */
const seenAs = (c: (typeof CASES)[number], wrapped: boolean): string => (c.host().includes('.') ? (wrapped ? s4 : c4) : wrapped ? S6 : C6);

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['uc', 'us'], [{ a: 'uc', b: 'us', subnet: SUBNET }], 48100);
  C = lab.host('uc').ns;
  S = lab.host('us').ns;
  c4 = lab.host('uc').addrs.get('us')!;
  s4 = lab.host('us').addrs.get('uc')!;
  // IPv6 on the link too (the Lab gives IPv4 only).
  for (const [ns, a] of [
    [C, C6],
    [S, S6],
  ])
    execFileSync('ip', ['-n', ns, 'addr', 'add', `${a}/64`, 'dev', `v${SUBNET}${ns === C ? 'uc' : 'us'}`, 'nodad']);
  writeFileSync(join(lab.dir, 'server.mjs'), SERVER);
  writeFileSync(join(lab.dir, 'client.mjs'), CLIENT);
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure('uc', regs);
  const allow = ['tcp', 'udp'].flatMap((protocol) => [s4, `[${S6}]`].map((a) => ({ peer: 'uc', to: `${a}:${PORT}`, protocol })));
  lab.configure('us', regs, { wrap: { allow } });
  server = spawn('ip', ['netns', 'exec', S, process.execPath, join(lab.dir, 'server.mjs'), String(PORT), s4, S6], { stdio: 'ignore' });
  await lab.start('uc');
  await lab.start('us');
  await until('the server', async () => (await exchange('sendto', s4, 'ping')).reply.startsWith('udp:ping'), 10_000);
}, 60_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  await lab?.destroy();
}, 30_000);

describe('one port wrapped for TCP and UDP, UDP over IPv6, connected unbound UDP sockets', () => {
  const direct = new Map<string, Exchange>();

  it('direct: every exchange answers, from the server, which sees the client host', async () => {
    for (const c of CASES) {
      const r = await exchange(c.mode, c.host(), c.name.replace(/ /g, '-'));
      expect(r.reply, c.name).toBe(`${c.mode === 'tcp' ? 'tcp' : 'udp'}:${c.name.replace(/ /g, '-')} ${seenAs(c, false)}`);
      direct.set(c.name, r);
    }
  });

  it('spook wrap add udp and tcp on one port: both succeed and both are listed', async () => {
    const udp = await spook('wrap', 'add', 'udp', '--port', String(PORT), '--peer', 'us', '--hold', '30s');
    expect(udp.code, udp.stderr).toBe(0);
    const tcp = await spook('wrap', 'add', 'tcp', '--port', String(PORT), '--peer', 'us', '--hold', '30s');
    expect(tcp.code, tcp.stderr).toBe(0);
    const again = await spook('wrap', 'add', 'coap', '--port', String(PORT), '--peer', 'us');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/udp port 5353 is already wrapped/);
    const list = JSON.parse((await spook('wrap', 'list', '--json')).stdout) as WrapperEntry[];
    expect(list.map((w) => `${w.protocol} ${w.transport} ${w.port}`).sort()).toEqual(['tcp tcp 5353', 'udp udp 5353']);
    await until('the carrier', async () => (await stats()).peers[0].carrier === 'up' || undefined, 20_000);
  });

  it('wrapped: the same replies from the same source, carried (the server sees the serving spookd)', async () => {
    const before = { tcp: await wrapperOf('tcp'), udp: await wrapperOf('udp') };
    for (const c of CASES) {
      const r = await exchange(c.mode, c.host(), c.name.replace(/ /g, '-'));
      const d = direct.get(c.name)!;
      expect(r.reply, c.name).toBe(d.reply.replace(seenAs(c, false), seenAs(c, true)));
      // UDP: the reply's source is the real server, as direct (recvmsg4/6). TCP's getpeername() shows the proxy.
      if (c.mode !== 'tcp') expect(r.from, c.name).toBe(d.from);
    }
    const st = await stats();
    expect(await wrapperOf('tcp')).toBe(before.tcp + 2);
    expect(await wrapperOf('udp')).toBe(before.udp + 8);
    expect(st.hooks).toMatchObject({ udp_unbound: 0 });
    expect(st.hooks!.udp_redirected).toBeGreaterThanOrEqual(8);
  }, 60_000);

  it('removing one transport leaves the other: the error names the field, then UDP goes direct and TCP stays carried', async () => {
    const ambiguous = await spook('wrap', 'remove', '--port', String(PORT));
    expect(ambiguous.code).not.toBe(0);
    expect(ambiguous.stderr).toMatch(/wrapped for both tcp and udp/);
    const e = await lab.admin('uc', 'wrap-remove', { port: PORT }).catch((x: { code: string; field: string }) => x);
    expect(e).toMatchObject({ code: 'conflict', field: 'transport' });
    const rm = await spook('wrap', 'remove', '--port', String(PORT), '--transport', 'udp');
    expect(rm.code, rm.stderr).toBe(0);
    expect(rm.stdout).toMatch(/udp port 5353 is no longer wrapped/);
    const list = JSON.parse((await spook('wrap', 'list', '--json')).stdout) as WrapperEntry[];
    expect(list.map((w) => w.transport)).toEqual(['tcp']);
    const udp = CASES.find((c) => c.name === 'udp ipv6 connected unbound')!;
    expect((await exchange(udp.mode, udp.host(), 'after')).reply).toBe(`udp:after ${seenAs(udp, false)}`);
    const tcp = CASES.find((c) => c.name === 'tcp ipv6')!;
    expect((await exchange(tcp.mode, tcp.host(), 'after')).reply).toBe(`tcp:after ${seenAs(tcp, true)}`);
  }, 30_000);
});

/**
 * Wrappers end to end: two hosts in namespaces (client `wc`, server `ws`) joined by a veth, a
 * spookd on each, real Debian servers on the server host and the real, unmodified clients on
 * the client host connecting to the servers' real address and port. The client host's spookd
 * intercepts (BPF cgroup hooks) and carries each connection to the server host's spookd, which
 * dials the server. For SSH, HTTP, PostgreSQL and SMB the link is cut for 5 s in the middle of
 * a transfer: the transfer completes with the same checksum, on the same connection.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WrapperStats, WrapStatsResult } from '../../client/protocol.js';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, ROOT, requireRoot, sleep, until } from '../../testing/lab/netns.js';
import {
  nsExec,
  nsRun,
  sha256,
  startCoapServer,
  startMosquitto,
  startNginx,
  startPostgres,
  startSamba,
  startSlapd,
  startSshd,
  wsEcho,
  type CoapServer,
  type MosquittoServer,
  type NginxServer,
  type PostgresServer,
  type RunningServer,
  type SambaServer,
  type SlapdServer,
  type SshdServer,
} from '../../testing/lab/servers.js';

const PORTS = { ssh: 2222, pg: 5432, smb: 4450, ldap: 3890, http: 8080, mqtt: 18830, coap: 5683 };
const CUT_MS = 5_000;

let lab: Lab;
let C = '';
let S = '';
let addr = '';
let dir = '';
const servers: RunningServer[] = [];
let ssh: SshdServer;
let pg: PostgresServer;
let smb: SambaServer;
let ldap: SlapdServer;
let http: NginxServer;
let mqtt: MosquittoServer;
let coap: CoapServer;

const stats = (): Promise<WrapStatsResult> => lab.admin('wc', 'wrap-stats');
const wrapper = async (port: number): Promise<WrapperStats> => (await stats()).wrappers.find((w) => w.port === port)!;

/** Cut the link for CUT_MS once `started()` says the transfer is under way; resolves when it is back up. */
async function cutDuring(started: () => Promise<boolean>): Promise<void> {
  await until('the transfer to start', async () => (await started()) || undefined, 30_000, 20);
  lab.setLink('wc', 'ws', false);
  await sleep(CUT_MS);
  lab.setLink('wc', 'ws', true);
}

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['wc', 'ws'], [{ a: 'wc', b: 'ws', subnet: 66 }], 47800);
  C = lab.host('wc').ns;
  S = lab.host('ws').ns;
  addr = lab.host('ws').addrs.get('wc')!;
  dir = join(lab.dir, 'work');
  mkdirSync(dir, { recursive: true });
  const regs = [{ name: 'r', kind: 'map' }];
  // One wrapper from the config file; the others are added with the admin API (spook wrap add).
  lab.configure('wc', regs, {
    metrics: { listen: '127.0.0.1:9465' },
    wrap: { wrappers: [{ protocol: 'ssh', port: PORTS.ssh, peer: 'ws', hold: '30s' }] },
  });
  // The serving side's dial policy (default deny): exactly the servers, each with its protocol.
  const allow = Object.entries(PORTS).map(([name, port]) => ({
    peer: 'wc',
    to: `${addr}:${port}`,
    protocol: name === 'coap' ? 'udp' : 'tcp',
  }));
  lab.configure('ws', regs, { wrap: { allow } });
  const [s1, s2, s3, s4, s5, s6, s7] = await Promise.all([
    startSshd(S, addr, PORTS.ssh, join(lab.dir, 'sshd')),
    startPostgres(S, addr, PORTS.pg, join(lab.dir, 'pg')),
    startSamba(S, addr, PORTS.smb, join(lab.dir, 'smb')),
    startSlapd(S, addr, PORTS.ldap, join(lab.dir, 'slapd')),
    startNginx(S, addr, PORTS.http, join(lab.dir, 'nginx')),
    startMosquitto(S, addr, PORTS.mqtt, join(lab.dir, 'mqtt')),
    startCoapServer(S, addr, PORTS.coap),
  ]);
  [ssh, pg, smb, ldap, http, mqtt, coap] = [s1, s2, s3, s4, s5, s6, s7];
  servers.push(s1, s2, s3, s4, s5, s6, s7);
  await lab.start('wc');
  await lab.start('ws');
  for (const [protocol, port] of [
    ['postgres', PORTS.pg],
    ['smb', PORTS.smb],
    ['ldap', PORTS.ldap],
    ['http', PORTS.http],
    ['mqtt', PORTS.mqtt],
    ['coap', PORTS.coap],
  ] as const) {
    await lab.admin('wc', 'wrap-add', { protocol, port, peer: 'ws', hold: '30s' });
  }
  await until('the carrier', async () => (await stats()).peers[0].carrier === 'up' || undefined, 20_000);
}, 90_000);

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
  await lab?.destroy();
}, 30_000);

describe('wrappers with real clients and servers', () => {
  it('intercepts with BPF: the client connects to the real address and port', async () => {
    const st = await stats();
    expect(st.interception).toBe('bpf');
    expect(st.wrappers.map((w) => w.port).sort((a, b) => a - b)).toEqual(Object.values(PORTS).sort((a, b) => a - b));
  });

  it('ssh runs a command through the wrapper', async () => {
    const out = await nsExec(C, 'ssh', [...ssh.sshArgs, addr, 'echo spook-$((6*7))'], { timeoutMs: 20_000 });
    expect(out.trim()).toBe('spook-42');
    const st = await stats();
    expect(st.protocols.ssh.connections).toBeGreaterThanOrEqual(1);
    expect(st.hooks!.redirected).toBeGreaterThanOrEqual(1);
  });

  it('scp of 50 MB survives a 5 s link cut: same checksum, one connection', async () => {
    const src = join(dir, 'scp-src.bin');
    writeFileSync(src, randomBytes(50 * 1024 * 1024));
    const before = await wrapper(PORTS.ssh);
    // -l 120000 Kbit/s: about 4 s for the file, so the cut lands mid-transfer.
    const run = nsRun(C, 'scp', [...ssh.scpArgs, '-l', '120000', src, `root@${addr}:${join(dir, 'scp-dst.bin')}`], { timeoutMs: 90_000 });
    await cutDuring(async () => (await wrapper(PORTS.ssh)).bytesUp - before.bytesUp > 8 * 1024 * 1024);
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(join(dir, 'scp-dst.bin'))).toBe(sha256(src));
    const after = await wrapper(PORTS.ssh);
    expect(after.connections - before.connections).toBe(1); // no reconnect
    expect(after.outages - before.outages).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('curl of 50 MB from nginx survives a 5 s link cut', async () => {
    writeFileSync(join(http.docroot, 'big.bin'), randomBytes(50 * 1024 * 1024));
    const before = await wrapper(PORTS.http);
    const out = join(dir, 'curl.bin');
    const run = nsRun(C, 'curl', ['-sS', '-f', '--limit-rate', '12M', '-o', out, `${http.baseUrl}/big.bin`], { timeoutMs: 90_000 });
    await cutDuring(async () => (await wrapper(PORTS.http)).bytesDown - before.bytesDown > 8 * 1024 * 1024);
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(out)).toBe(sha256(join(http.docroot, 'big.bin')));
    const after = await wrapper(PORTS.http);
    expect(after.connections - before.connections).toBe(1);
    expect(after.outages - before.outages).toBeGreaterThanOrEqual(1);
    expect((await stats()).protocols.http.connections).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('a WebSocket echo through nginx is recognised as websocket', async () => {
    const big = randomBytes(48 * 1024).toString('base64');
    expect(await wsEcho(C, http.wsUrl, ['hello spook', big, 'bye'], 15_000)).toEqual(['hello spook', big, 'bye']);
    expect((await stats()).protocols.websocket.connections).toBeGreaterThanOrEqual(1);
  });

  it('psql and pgbench work through the wrapper', async () => {
    const out = await nsExec(C, pg.psql, [...pg.connArgs, '-d', pg.database, '-Atc', 'SELECT 40 + 2, inet_server_addr()'], {
      timeoutMs: 15_000,
    });
    expect(out.trim()).toBe(`42|${addr}`);
    await nsExec(C, pg.pgbench, [...pg.connArgs, '-i', '-s', '1', '-q', pg.database], { timeoutMs: 60_000 });
    const bench = await nsExec(C, pg.pgbench, [...pg.connArgs, '-c', '4', '-j', '2', '-T', '3', pg.database], { timeoutMs: 30_000 });
    expect(Number(/number of transactions actually processed: (\d+)/.exec(bench)?.[1])).toBeGreaterThan(50);
    expect((await stats()).protocols.postgres.connections).toBeGreaterThanOrEqual(5);
  }, 90_000);

  it('a 64 MB PostgreSQL result survives a 5 s link cut', async () => {
    // Rows are produced slowly (pg_sleep) so that the cut lands while they stream.
    const rows = 20_000;
    const q = `SELECT repeat(md5(g::text), 100) FROM generate_series(1, ${rows}) g, LATERAL (SELECT pg_sleep(0.0002)) s`;
    const want = createHash('sha256');
    for (let g = 1; g <= rows; g++) want.update(`${createHash('md5').update(String(g)).digest('hex').repeat(100)}\n`);
    const before = await wrapper(PORTS.pg);
    const run = nsRun(C, pg.psql, [...pg.connArgs, '-d', pg.database, '-At', '-c', q], { timeoutMs: 90_000 });
    await cutDuring(async () => (await wrapper(PORTS.pg)).bytesDown - before.bytesDown > 2 * 1024 * 1024);
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(createHash('sha256').update(r.stdout).digest('hex')).toBe(want.digest('hex'));
    const after = await wrapper(PORTS.pg);
    expect(after.connections - before.connections).toBe(1);
    expect(after.outages - before.outages).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('smbclient put and get of 200 MB survive a 5 s link cut', async () => {
    const src = join(dir, 'smb-up.bin');
    writeFileSync(src, randomBytes(200 * 1024 * 1024));
    const before = await wrapper(PORTS.smb);
    const run = nsRun(C, 'smbclient', [...smb.smbclientArgs, '-c', `lcd ${dir}; put smb-up.bin stored.bin; get stored.bin smb-down.bin`], {
      timeoutMs: 120_000,
    });
    await cutDuring(async () => (await wrapper(PORTS.smb)).bytesUp - before.bytesUp > 30 * 1024 * 1024);
    const r = await run;
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(sha256(join(smb.sharePath, 'stored.bin'))).toBe(sha256(src));
    expect(sha256(join(dir, 'smb-down.bin'))).toBe(sha256(src));
    const after = await wrapper(PORTS.smb);
    expect(after.connections - before.connections).toBe(1);
    expect(after.outages - before.outages).toBeGreaterThanOrEqual(1);
    expect((await stats()).protocols.smb.connections).toBeGreaterThanOrEqual(1);
  }, 150_000);

  it('ldapadd then ldapsearch through the wrapper', async () => {
    const ldif = `dn: uid=alice,${ldap.baseDN}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: Liddell\nmail: alice@spook.test\n`;
    await nsExec(C, 'ldapadd', ldap.bindArgs, { input: ldif, timeoutMs: 15_000 });
    const out = await nsExec(C, 'ldapsearch', [...ldap.bindArgs, '-LLL', '-b', ldap.baseDN, '(uid=alice)', 'mail'], { timeoutMs: 15_000 });
    expect(out).toContain('mail: alice@spook.test');
    expect((await stats()).protocols.ldap.connections).toBeGreaterThanOrEqual(2);
  });

  it('mosquitto retained message through the wrapper', async () => {
    const msg = `retained-${Date.now()}`;
    await nsExec(C, 'mosquitto_pub', [...mqtt.clientArgs, '-q', '1', '-r', '-t', 'spook/lab', '-m', msg], { timeoutMs: 10_000 });
    const out = await nsExec(C, 'mosquitto_sub', [...mqtt.clientArgs, '-q', '1', '-t', 'spook/lab', '-C', '1', '-W', '8'], {
      timeoutMs: 12_000,
    });
    expect(out.trim()).toBe(msg);
    expect((await stats()).protocols.mqtt.connections).toBeGreaterThanOrEqual(2);
  });

  it('delta mode: a polled resource goes by reference, byte for byte', async () => {
    await lab.admin('wc', 'wrap-remove', { port: PORTS.http });
    await lab.admin('wc', 'wrap-add', { protocol: 'http', port: PORTS.http, peer: 'ws', hold: '30s', delta: true });
    writeFileSync(join(http.docroot, 'polled.bin'), randomBytes(2 * 1024 * 1024));
    const want = sha256(join(http.docroot, 'polled.bin'));
    for (let i = 0; i < 4; i++) {
      const out = join(dir, `polled-${i}.bin`);
      await nsExec(C, 'curl', ['-sS', '-f', '-o', out, `${http.baseUrl}/polled.bin`], { timeoutMs: 20_000 });
      expect(sha256(out)).toBe(want);
    }
    const server = (await lab.admin('ws', 'wrap-stats')).peers[0];
    const client = (await lab.admin('wc', 'wrap-stats')).peers[0];
    // Polls 2-4 (6 MiB) went almost entirely as references.
    expect(server.refBytes).toBeGreaterThan(5 * 1024 * 1024);
    expect(client.refsExpanded).toBeGreaterThan(0);
    expect(client.nacksSent).toBe(0);
  });

  it('coap-client gets a resource from coap-server through the wrapper (UDP carried as datagrams)', async () => {
    const out = await nsExec(C, 'coap-client-notls', ['-m', 'get', '-B', '5', `${coap.baseUri}/.well-known/core`], { timeoutMs: 15_000 });
    expect(out).toContain('</time>');
    const st = await stats();
    expect(st.protocols.coap.connections).toBeGreaterThanOrEqual(1);
    expect(st.hooks!.udp_redirected).toBeGreaterThanOrEqual(1);
    expect((await wrapper(PORTS.coap)).bytesDown).toBeGreaterThan(20);
  });

  it('1,100 idle unauthenticated connections to the carrier port: at most the per-source limit is held, the admin socket answers, the carrier stays up', async () => {
    const flood = `const net = require('net'); const all = []; let up = 0;
      for (let i = 0; i < 1100; i++) { const s = net.connect(${lab.host('ws').port}, '${addr}', () => up++); s.on('error', () => {}); all.push(s); }
      setTimeout(() => { console.log(up); for (const s of all) s.destroy(); }, 3000);`;
    const running = nsRun(C, process.execPath, ['-e', flood], { timeoutMs: 20_000 });
    await sleep(2_000);
    const st = await lab.admin('ws', 'wrap-stats'); // the admin socket still answers
    expect(st.carrierPending).toBeLessThanOrEqual(16); // wrap.maxHandshakesPerSource: one source here
    // Reset unread: over the pending slots of the source (checked first), or over its accept rate (wrap.handshakeRatePerSource, 20/s).
    expect(st.carrierRefused['too-many-from-source'] + st.carrierRefused['handshake-rate-source']).toBeGreaterThanOrEqual(1_000);
    expect(st.peers[0].carrier).toBe('up');
    await running;
    const out = await nsExec(C, 'ssh', [...ssh.sshArgs, addr, 'echo still-carried'], { timeoutMs: 20_000 });
    expect(out.trim()).toBe('still-carried');
  }, 40_000);

  it('port scan through the wrapper: every destination outside the dial policy gets the same reset, nothing is dialled', async () => {
    // Not allowed: the server host's own spookd port (listening), a closed port, an unreachable host.
    const targets = [`${addr}:${lab.host('ws').port}`, `${addr}:2223`, '10.77.199.9:2222'];
    const probe = `const [h, p] = process.argv[1].split(':'); const s = require('net').connect(+p, h, () => s.write('probe'));
      let out = 'no answer'; s.setTimeout(5000, () => s.destroy()); s.on('data', () => (out = 'data')); s.on('end', () => (out = 'eof')); s.on('error', (e) => (out = e.code)); s.on('close', () => console.log(out));`;
    for (const t of targets)
      await lab.admin('wc', 'wrap-add', { protocol: 'tcp', port: Number(t.split(':')[1]), peer: 'ws', hold: '30s' }).catch(() => undefined);
    const before = (await lab.admin('ws', 'wrap-policy'))[0].refused;
    const answers: string[] = [];
    for (const t of targets) answers.push((await nsExec(C, process.execPath, ['-e', probe, t], { timeoutMs: 15_000 })).trim());
    for (const t of targets) {
      const port = Number(t.split(':')[1]);
      if (port !== PORTS.ssh) await lab.admin('wc', 'wrap-remove', { port });
    }
    expect(answers).toEqual(['ECONNRESET', 'ECONNRESET', 'ECONNRESET']);
    const policy = await lab.admin('ws', 'wrap-policy');
    expect(policy[0].refused - before).toBe(3);
    expect(policy[0].allow).toContainEqual({ to: `${addr}:${PORTS.ssh}`, protocol: 'tcp' });
    const spook = (...args: string[]): string =>
      execFileSync(process.execPath, [join(ROOT, 'bin/spook'), ...args, '--socket', lab.host('ws').socket], { encoding: 'utf8' });
    expect(JSON.parse(spook('wrap', 'policy', '--json'))).toEqual(policy);
    expect(spook('wrap', 'policy')).toMatch(
      new RegExp(`^wc +tcp:${addr.replace(/\./g, '\\.')}:${PORTS.ssh} .* ${policy[0].refused}$`, 'm'),
    );
  }, 60_000);

  it('spook wrap list, stats and conns print tables and JSON', () => {
    const spook = (...args: string[]): string =>
      execFileSync(process.execPath, [join(ROOT, 'bin/spook'), ...args, '--socket', lab.host('wc').socket], { encoding: 'utf8' });
    const list = JSON.parse(spook('wrap', 'list', '--json')) as { protocol: string; port: number; delta: boolean }[];
    expect(list.find((w) => w.port === PORTS.coap)).toMatchObject({ protocol: 'coap', delta: false });
    const table = spook('wrap', 'stats');
    expect(table).toMatch(/^interception {2}bpf/m);
    expect(table).toMatch(/^ssh +tcp +2222 +ws /m);
    expect(table).toMatch(/^postgres +\d+ +\d+ +\d+ +\d+$/m); // per recognised protocol
    expect(spook('wrap', 'conns')).toMatch(/^ws +\d+ +client +[\d.]+:5683 +coap +open/m); // the CoAP flow lives until idle
  });

  it('exports the wrapper counters to Prometheus', () => {
    const text = lab.runIn('wc', `const r = await fetch('http://127.0.0.1:9465/metrics'); console.log(await r.text());`);
    const ssh = /^spook_wrap_connections_total\{port="2222",protocol="ssh",peer="ws"\} (\d+)$/m.exec(text);
    expect(Number(ssh?.[1])).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/^spook_wrap_outages_total\{port="2222",protocol="ssh",peer="ws"\} [1-9]/m);
    expect(text).toMatch(/^spook_wrap_protocol_connections_total\{protocol="postgres"\} [1-9]/m);
    expect(text).toMatch(/^spook_wrap_closes_total\{port="5432",protocol="postgres",reason="completed"\} [1-9]/m);
  });

  it('removing a wrapper restores the direct path; so does stopping spookd, even with kill -9', async () => {
    const fetch = async (): Promise<string> =>
      nsExec(C, 'curl', ['-sS', '-f', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', `${http.baseUrl}/big.bin`], {
        timeoutMs: 15_000,
      });
    const redirected = async (): Promise<number> => (await stats()).hooks!.redirected;
    let n = await redirected();
    expect(await fetch()).toBe('200');
    expect(await redirected()).toBe(n + 1);
    await lab.admin('wc', 'wrap-remove', { port: PORTS.http });
    n = await redirected();
    expect(await fetch()).toBe('200');
    expect(await redirected()).toBe(n); // direct
    // A carried connection open when wc is killed: the kernel resets its end (SO_LINGER 0), no clean EOF.
    const held = `const s = require('net').connect(${PORTS.ssh}, '${addr}'); let out = 'open';
      s.on('data', () => {}); s.on('end', () => (out = 'eof')); s.on('error', (e) => (out = e.code)); s.on('close', () => console.log(out));
      setTimeout(() => s.destroy(), 15000).unref();`;
    const open = nsRun(C, process.execPath, ['-e', held], { timeoutMs: 20_000 });
    await until('the held ssh connection', async () => (await wrapper(PORTS.ssh)).active >= 1 || undefined, 10_000, 50);
    // kill -9: the hooks' links die with the process; clients go direct at once.
    await lab.kill9('wc');
    expect((await open).stdout.trim()).toBe('ECONNRESET');
    const r = await nsRun(C, 'ssh', [...ssh.sshArgs, addr, 'echo direct'], { timeoutMs: 20_000 });
    expect(r.stdout.trim()).toBe('direct');
  }, 60_000);
});

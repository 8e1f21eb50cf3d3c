/**
 * Beyond every anchor (issue 17): wrapped connections survive a restart of either spookd. An ssh
 * session printing a numbered line every 50 ms and a counter stream (testing/lab/cutstream.ts),
 * both through wrappers, across a `systemctl restart`-equivalent of the client-side spookd and
 * then of the server-side one, each run under the lab's service manager (testing/lab/fdstore.ts:
 * NOTIFY_SOCKET, a descriptor store, LISTEN_FDS at the next start): every line and every byte
 * arrives, in order, on the first connection, and both end cleanly. The same with a plain restart
 * (no service manager: no store) resets both, as before: the two behaviours side by side.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, requireRoot, sleep, until } from '../../testing/lab/netns.js';
import { CutStreams, type StreamReport } from '../../testing/lab/cutstream.js';
import { nsArgv, startSshd, type SshdServer } from '../../testing/lab/servers.js';
import { SshTicker } from '../../testing/lab/sshticker.js';
import { LabServiceManager } from '../../testing/lab/fdstore.js';

const STREAM = 7201;
const STREAM_PLAIN = 7203;
const SSH = 7222;
/** A server that reads nothing until told: the server-side spookd's writes to it stay queued. */
const STALL = 7205;
const C = 'rc';
const S = 'rs';

let lab: Lab;
let addr: string;
let sshd: SshdServer;
let mgrC: LabServiceManager;
let mgrS: LabServiceManager;
const cleanup: (() => void)[] = [];

/** Every line-k in order from 1, then done-N with N the last k. */
function expectAllLines(t: SshTicker): number {
  const texts = t.lines.map((l) => l.text);
  const n = texts.length - 1;
  expect(texts.slice(0, n)).toEqual(Array.from({ length: n }, (_, i) => `line-${i + 1}`));
  expect(texts[n]).toBe(`done-${n}`);
  return n;
}

/**
 * The stalled reader: the client writes counter words as fast as its socket takes them; the
 * server reads nothing until `go` exists, then checks every word. On "stop" (stdin) the client
 * ends; the server reports what it got.
 */
const STALL_SERVER = `
const net = require('net'), fs = require('fs');
const [addr, port, go] = process.argv.slice(1);
net.createServer((s) => {
  s.pause();
  let n = 0, got = 0, ok = true, carry = Buffer.alloc(0);
  const t = setInterval(() => {
    if (!fs.existsSync(go)) return;
    clearInterval(t);
    s.on('data', (c) => {
      got += c.length;
      const b = carry.length ? Buffer.concat([carry, c]) : c;
      const whole = b.length - (b.length % 4);
      for (let i = 0; i < whole; i += 4) if (b.readUInt32BE(i) !== (n++ >>> 0)) ok = false;
      carry = Buffer.from(b.subarray(whole));
    });
    s.on('end', () => console.log(JSON.stringify({ got, ok })));
    s.on('error', (e) => console.log(JSON.stringify({ got, ok, error: e.message })));
    s.resume();
  }, 50);
}).listen(+port, addr, () => console.log('listening'));
`;
const STALL_CLIENT = `
const net = require('net');
const [addr, port] = process.argv.slice(1);
let n = 0, sent = 0, stop = false;
const s = net.connect(+port, addr, () => { console.log('connected'); pump(); });
function pump() {
  while (!stop) {
    const b = Buffer.allocUnsafe(16384);
    for (let i = 0; i < b.length; i += 4) b.writeUInt32BE(n++ >>> 0, i);
    sent += b.length;
    if (!s.write(b)) return void s.once('drain', pump);
  }
}
s.on('error', (e) => console.log(JSON.stringify({ sent, error: e.message })));
process.stdin.on('data', () => { stop = true; s.end(() => console.log(JSON.stringify({ sent }))); });
`;

function run(ns: string, script: string, args: string[]): { proc: ReturnType<typeof spawn>; out: () => string } {
  const argv = nsArgv(ns, process.execPath, ['-e', script, ...args]);
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  cleanup.push(() => proc.kill('SIGKILL'));
  return { proc, out: () => out };
}

const ticker = (stopFile: string): SshTicker => {
  const t = new SshTicker(lab.host(C).ns, addr, sshd, stopFile);
  cleanup.push(() => t.kill());
  return t;
};

/** The longest silence of the stream (of GAP_MS or more, the streams' gapMs) ending in [from, to). */
const GAP_MS = 100;
const gapIn = (s: StreamReport, from: number, to: number): number =>
  Math.max(0, ...s.gaps.filter((g) => g.to >= from && g.to < to).map((g) => g.to - g.from));

beforeAll(async () => {
  requireRoot();
  lab = new Lab([C, S], [{ a: C, b: S, subnet: 71 }], 48150);
  addr = lab.host(S).addrs.get(C)!;
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure(C, regs, { wrap: { wrappers: [STREAM, STREAM_PLAIN, SSH, STALL].map((port) => ({ protocol: 'tcp', port, peer: S })) } });
  lab.configure(S, regs, { wrap: { allow: [STREAM, STREAM_PLAIN, SSH, STALL].map((p) => ({ peer: C, to: `${addr}:${p}` })) } });
  mgrC = new LabServiceManager();
  mgrS = new LabServiceManager();
  await lab.start(C, { env: mgrC.env() });
  await lab.start(S, { env: mgrS.env() });
  await until('the carrier', async () => (await lab.admin(C, 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
  sshd = await startSshd(lab.host(S).ns, addr, SSH, join(lab.host(S).dir, 'sshd'));
}, 90_000);

afterAll(async () => {
  for (const f of cleanup) f();
  await sshd?.stop?.();
  await lab?.destroy();
  mgrC?.close();
  mgrS?.close();
}, 30_000);

async function carried(host: string, n: number): Promise<void> {
  await until(
    `${n} carried connections on ${host}`,
    async () => ((await lab.admin(host, 'wrap-conns')).length === n ? true : undefined),
    15_000,
  );
}

describe('a restart of either spookd', () => {
  it('through the descriptor store: the ssh session and the stream go on, every byte in order', async () => {
    expect(mgrC.ready).toBeGreaterThanOrEqual(1); // READY=1 (Type=notify)
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [STREAM], { gapMs: GAP_MS });
    cleanup.push(() => streams.close());
    await streams.start();
    const ssh = ticker(join(lab.host(S).dir, 'stop-ticker'));
    await until('ssh output', async () => (ssh.lines.length >= 10 ? true : undefined), 20_000);
    const go = join(lab.host(S).dir, 'stall-go');
    const stallServer = run(lab.host(S).ns, STALL_SERVER, [addr, String(STALL), go]);
    await until('the stalled server', async () => (stallServer.out().includes('listening') ? true : undefined), 10_000);
    const stallClient = run(lab.host(C).ns, STALL_CLIENT, [addr, String(STALL)]);
    await carried(C, 3);
    // The server-side spookd has written all its window can hold towards a server that does not read.
    await until(
      'the stalled connection full',
      async () => ((await lab.admin(S, 'wrap-conns')).some((c) => c.received >= 1 << 20) ? true : undefined),
      20_000,
    );

    const restartC = Date.now();
    const rc = await mgrC.restart(lab, C);
    expect(rc.handedOver).toBe(3);
    await carried(C, 3);
    const linesBefore = ssh.lines.length;
    await until('ssh output after the client-side restart', async () => (ssh.lines.length >= linesBefore + 20 ? true : undefined), 20_000);

    const restartS = Date.now();
    const rs = await mgrS.restart(lab, S);
    expect(rs.handedOver).toBe(3);
    await carried(S, 3);
    // The stalled connection's socket had not taken everything: the rest came again from the peer.
    expect(readFileSync(join(lab.host(S).dir, 'spookd.log'), 'utf8')).toMatch(/"partial":[1-9].*handed over/);
    const linesMid = ssh.lines.length;
    await until('ssh output after the server-side restart', async () => (ssh.lines.length >= linesMid + 20 ? true : undefined), 20_000);
    const end = Date.now();

    writeFileSync(go, '');
    stallClient.proc.stdin!.write('stop\n');
    await until('the stalled stream ending', async () => (stallServer.out().includes('"got"') ? true : undefined), 30_000);
    const stalled = JSON.parse(
      stallServer
        .out()
        .split('\n')
        .find((l) => l.includes('"got"'))!,
    ) as { got: number; ok: boolean; error?: string };
    await until('the stalled client', async () => (stallClient.out().includes('"sent"') ? true : undefined), 10_000);
    const sentStalled = JSON.parse(
      stallClient
        .out()
        .split('\n')
        .find((l) => l.includes('"sent"'))!,
    ) as { sent: number; error?: string };
    expect(stalled.error).toBeUndefined();
    expect(sentStalled.error).toBeUndefined();
    expect(stalled.ok).toBe(true);
    expect(stalled.got).toBe(sentStalled.sent);
    const code = await ssh.finish();
    expect(code, ssh.stderr).toBe(0);
    const lines = expectAllLines(ssh);
    const r = (await streams.stop())[STREAM];
    expect(r.error).toBeNull();
    expect(r.serverError).toBeUndefined();
    expect(r.ended).toBe(true);
    expect(r.inOrder).toBe(true);
    expect(r.received).toBe(r.sent);
    // One connection each the whole time: nothing reset, nothing reopened.
    const st = await lab.admin(C, 'wrap-stats');
    for (const w of st.wrappers.filter((x) => x.port !== STREAM_PLAIN)) expect(w.closes['client-reset'] ?? 0).toBe(0);
    console.log(
      `restart through the store: client side stopped in ${rc.stoppedMs} ms, back in ${rc.downMs} ms; server side ${rs.stoppedMs} / ${rs.downMs} ms; ` +
        `ssh: ${lines} lines in order, longest silence ${ssh.gapIn(restartC, restartS)} ms (client-side restart), ${ssh.gapIn(restartS, end)} ms (server-side); ` +
        `stalled reader: ${(stalled.got / 1e6).toFixed(1)} MB in order; ` +
        `stream: ${(r.received / 1e6).toFixed(1)} MB in order, longest silence ${gapIn(r, restartC, restartS)} ms / ${gapIn(r, restartS, end)} ms`,
    );
  }, 150_000);

  it('a plain restart (no service manager) resets them, as before', async () => {
    // From here the client-side spookd runs with no service manager (its stop closes what it carries).
    await lab.stop(C);
    mgrC.flush();
    await lab.start(C);
    await until('the carrier', async () => (await lab.admin(C, 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [STREAM_PLAIN]);
    cleanup.push(() => streams.close());
    await streams.start();
    const ssh = ticker(join(lab.host(S).dir, 'stop-ticker-plain'));
    await until('ssh output', async () => (ssh.lines.length >= 10 ? true : undefined), 20_000);
    await lab.stop(C);
    await lab.start(C); // no NOTIFY_SOCKET: a clean stop closes what is carried
    const code = await Promise.race([ssh.exit, sleep(20_000).then(() => -1)]);
    expect(code).not.toBe(0);
    expect(code).not.toBe(-1);
    expect(ssh.lines.at(-1)?.text.startsWith('done-')).toBe(false);
    const r = (await streams.stop())[STREAM_PLAIN];
    expect(r.error ?? r.serverError).toBeTruthy();
    expect(existsSync(ssh.stopFile)).toBe(false);
  }, 90_000);
});

/**
 * The per-user share of a peer's wrap slots through the real BPF hooks (PROTOCOL §16.5.1): the
 * connect hooks record the connecting task's uid beside the original destination, and the
 * client side's spookd counts its peer's slots by it. Two hosts in namespaces, a spookd on each,
 * `wrap.maxConnections` 8 on the client side (a reserve of 1); an idle TCP server on the server
 * host. Clients run as uid 65534 (nobody) and as root (uid 0), spawned with child_process's
 * `uid` option by a root helper inside the client namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WrapStatsResult } from '../../client/protocol.js';
import { Lab, requireRoot, until } from '../../testing/lab/netns.js';

const PORT = 7301;
const NOBODY = 65534;

let lab: Lab;
let C = '';
let S = '';
let serverAddr = '';
const procs: ChildProcess[] = [];

/** The idle server: accepts and holds every connection. */
const SERVER = `
const net = require('node:net');
net.createServer((s) => s.on('error', () => {})).listen(${PORT}, '0.0.0.0', () => console.log('ready'));
`;
/** As the given uid: `n` connects to host:port, one after the other, each held open; exits when its stdin ends. */
const CLIENT = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
(async () => {
  for (let i = 0; i < Number(n); i++)
    await new Promise((r) => { const s = net.connect(Number(port), host, r); s.on('error', () => {}); s.on('close', r); });
  console.log('uid ' + process.getuid() + ' connected ' + n);
})();
process.stdin.on('end', () => process.exit(0)).resume();
`;
/** Root, in the namespace: runs CLIENT as argv[1] (uid and gid), sharing its stdin; exits with it. */
const AS_USER = `
const { spawn } = require('node:child_process');
const [uid, ...args] = process.argv.slice(1);
const c = spawn(process.execPath, ['-e', ${JSON.stringify(CLIENT)}, ...args], { uid: Number(uid), gid: Number(uid), stdio: 'inherit' });
c.on('exit', (code) => process.exit(code ?? 1));
`;

/** A node script in namespace `ns`; resolves once it printed a line (the reply to `expect`). */
function nsNode(ns: string, script: string, args: string[], expectLine: RegExp): Promise<ChildProcess> {
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  procs.push(p);
  let out = '';
  return new Promise((resolve, reject) => {
    p.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (expectLine.test(out)) resolve(p);
    });
    p.stderr!.on('data', (d: Buffer) => (out += d));
    p.once('exit', (code) => reject(new Error(`node in ${ns} exited (${code}): ${out}`)));
  });
}

/** `n` connects to the wrapped server as `uid`, held open by a process of that uid. */
const connectAs = (uid: number, n: number): Promise<ChildProcess> =>
  nsNode(C, AS_USER, [String(uid), serverAddr, String(PORT), String(n)], new RegExp(`uid ${uid} connected ${n}`));

const stats = (): Promise<WrapStatsResult> => lab.admin('shc', 'wrap-stats');

/** Waits until the client side has settled `total` intercepted connections (carried or refused), then its counts. */
async function settled(total: number): Promise<{ carried: number; refused: Record<string, number> }> {
  return until(
    `${total} intercepted connections carried or refused`,
    async () => {
      const s = await stats();
      const carried = s.peers[0].connections;
      const refused = s.refused;
      return carried + Object.values(refused).reduce((a, b) => a + b, 0) === total ? { carried, refused } : undefined;
    },
    10_000,
    50,
  );
}

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['shc', 'shs'], [{ a: 'shc', b: 'shs', subnet: 74 }], 48260);
  C = lab.host('shc').ns;
  S = lab.host('shs').ns;
  serverAddr = lab.host('shs').addrs.get('shc')!;
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure('shc', regs, {
    wrap: { interception: 'bpf', maxConnections: 8, wrappers: [{ protocol: 'tcp', port: PORT, peer: 'shs' }] },
  });
  lab.configure('shs', regs, { wrap: { allow: [{ peer: 'shc', to: `${serverAddr}:${PORT}` }] } });
  await nsNode(S, SERVER, [], /ready/);
  await lab.start('shc');
  await lab.start('shs');
  await until('the carrier', async () => (await stats()).peers[0].carrier === 'up' || undefined, 20_000);
}, 60_000);

afterAll(async () => {
  for (const p of procs) {
    p.stdin?.end(); // the user's client exits with its helper's stdin
    p.kill();
  }
  await lab?.destroy();
}, 30_000);

describe('the reserve of a peer’s slots, with the uid from the BPF hooks', () => {
  it('nobody gets 7 of 8 slots and is refused the last (user-share); root then gets it; the next finds the peer full', async () => {
    await connectAs(NOBODY, 8);
    // Before the uid reached the manager: 8 carried, nothing refused, and root's connect below refused.
    expect(await settled(8)).toEqual({ carried: 7, refused: { 'user-share': 1 } });
    await connectAs(0, 1);
    expect(await settled(9)).toEqual({ carried: 8, refused: { 'user-share': 1 } });
    await connectAs(0, 1);
    expect(await settled(10)).toEqual({ carried: 8, refused: { 'user-share': 1, 'too-many-connections': 1 } });
    // The refusals name the uid the hook recorded: nobody's, then root's. (The count above moves before
    // the line reaches the file: spookd's log is written asynchronously, so wait for both lines.)
    const lines = (): string[] =>
      readFileSync(join(lab.host('shc').dir, 'spookd.log'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('intercepted connection refused'));
    await until('both refusals logged', () => Promise.resolve(lines().length >= 2 || undefined), 5_000);
    const refusals = lines()
      .map((l) => JSON.parse(l) as { uid?: number; why: string })
      .map((l) => [l.uid, l.why]);
    expect(refusals).toEqual([
      [NOBODY, 'user-share'],
      [0, 'too-many-connections'],
    ]);
  }, 30_000);
});

/**
 * A plain relay pair for `bench wrap --only speed`: two C relays in a row (bench/native/relay-floor.c:
 * a thread per direction, no encryption, no framing), one in each namespace, where a wrapper has
 * its two spookd and `ssh -L` its ssh and sshd: what a relay pair costs per byte and per request
 * without encryption or recovery (not per connection set-up: it opens a TCP connection per hop).
 * Built with the project's clang (the Makefile installs it for the BPF objects).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { nsExec, nsRun } from '../testing/lab/servers.js';
import { ROOT, until, type Lab } from '../testing/lab/netns.js';

/** a's 127.0.0.1:`local` → b's `bAddr`:`middle` → b's `bAddr`:`target`. */
export interface FloorRoute {
  local: number;
  middle: number;
  target: number;
}

const SOURCE = join(ROOT, 'bench', 'native', 'relay-floor.c');

export async function startRelayFloor(lab: Lab, bAddr: string, routes: FloorRoute[]): Promise<{ pids: number[]; stop: () => void }> {
  const bin = join(lab.dir, 'relay-floor');
  await nsExec(lab.host('a').ns, 'clang', ['-O2', '-o', bin, SOURCE, '-lpthread'], { timeoutMs: 60_000 });
  const procs: ChildProcess[] = [];
  const stop = (): void => {
    for (const p of procs) p.kill('SIGKILL');
  };
  try {
    for (const r of routes) {
      procs.push(
        spawn('ip', ['netns', 'exec', lab.host('b').ns, bin, bAddr, String(r.middle), bAddr, String(r.target)], { stdio: 'ignore' }),
      );
      procs.push(
        spawn('ip', ['netns', 'exec', lab.host('a').ns, bin, '127.0.0.1', String(r.local), bAddr, String(r.middle)], { stdio: 'ignore' }),
      );
      // b's relay first (a's accepts whether or not b's listens), then a's.
      for (const [host, port] of [
        [bAddr, r.middle],
        ['127.0.0.1', r.local],
      ] as const)
        await until(
          `the relay floor on ${host}:${port}`,
          async () => (await nsRun(lab.host('a').ns, 'bash', ['-c', `exec 3<>/dev/tcp/${host}/${port}`], { timeoutMs: 2000 })).code === 0,
          15_000,
          100,
        );
    }
    return { pids: procs.map((p) => p.pid ?? -1), stop };
  } catch (e) {
    stop();
    throw e;
  }
}

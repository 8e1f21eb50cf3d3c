/**
 * A multi-host lab on one machine (used by the end-to-end tests and `spook-lab demo link`): network namespaces joined by veth links, one spookd
 * per namespace, admin sockets reachable from the test. Everything it creates carries a
 * per-run prefix and is removed by `destroy()`, which tests call in afterAll (also on
 * failure). Needs root (CAP_NET_ADMIN), as CI has.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { AdminClient } from '../../client/admin-client.js';
import type { AdminCommand, AdminRequestArgs, AdminResult } from '../../client/protocol.js';
import { encodeKey } from '../../drivers/daemon/keys.js';
import { generateKeyPair, type KeyPair } from '../../crypto/primitives.js';

/** The checkout's root (where bin/spookd is), from source or from dist/. */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the Spook checkout (package.json) above the lab module');
    dir = up;
  }
  return dir;
}
export const ROOT = findRoot();

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('the netns end-to-end tests need root (CAP_NET_ADMIN) to create namespaces; run make test as root, as CI does');
  }
}

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

export interface Host {
  name: string;
  ns: string;
  key: KeyPair;
  port: number;
  dir: string;
  socket: string;
  proc?: ChildProcess;
  addrs: Map<string, string>; // peer host name → this host's address on the link to it
}

export interface LinkSpec {
  a: string;
  b: string;
  subnet: number; // 10.77.<subnet>.0/24
}

export class Lab {
  readonly prefix: string;
  readonly hosts = new Map<string, Host>();
  private readonly links: { spec: LinkSpec; ifA: string; ifB: string }[] = [];
  readonly dir: string;

  /**
   * `loopback: true` runs every host on 127.0.0.1 without namespaces (no root needed); a
   * "cut" then stops the second host's process (SIGSTOP) instead of downing a link.
   */
  constructor(
    names: string[],
    links: LinkSpec[],
    basePort = 47100,
    readonly loopback = false,
  ) {
    if (!loopback) requireRoot();
    this.prefix = `spk${process.pid}`;
    // Per set of hosts too: test files run in worker threads of one process (one pid) at once.
    this.dir = join(tmpdir(), `${this.prefix}-${names.join('-')}-lab`);
    if (!loopback) Lab.cleanupStale();
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    names.forEach((name, i) => {
      const ns = `${this.prefix}-${name}`;
      if (!loopback) {
        sh('ip', ['netns', 'add', ns]);
        sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      }
      const dir = join(this.dir, name);
      mkdirSync(dir, { recursive: true });
      this.hosts.set(name, {
        name,
        ns,
        key: generateKeyPair(),
        port: basePort + i,
        dir,
        socket: join(dir, 'admin.sock'),
        addrs: new Map(),
      });
    });
    for (const spec of links) {
      if (loopback) {
        this.host(spec.a).addrs.set(spec.b, '127.0.0.1');
        this.host(spec.b).addrs.set(spec.a, '127.0.0.1');
        this.links.push({ spec, ifA: '', ifB: '' });
        continue;
      }
      const a = this.hosts.get(spec.a)!;
      const b = this.hosts.get(spec.b)!;
      const ifA = `v${spec.subnet}${spec.a}`.slice(0, 15);
      const ifB = `v${spec.subnet}${spec.b}`.slice(0, 15);
      sh('ip', ['link', 'add', ifA, 'netns', a.ns, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.ns]);
      sh('ip', ['-n', a.ns, 'addr', 'add', `10.77.${spec.subnet}.1/24`, 'dev', ifA]);
      sh('ip', ['-n', b.ns, 'addr', 'add', `10.77.${spec.subnet}.2/24`, 'dev', ifB]);
      sh('ip', ['-n', a.ns, 'link', 'set', ifA, 'up']);
      sh('ip', ['-n', b.ns, 'link', 'set', ifB, 'up']);
      a.addrs.set(b.name, `10.77.${spec.subnet}.1`);
      b.addrs.set(a.name, `10.77.${spec.subnet}.2`);
      this.links.push({ spec, ifA, ifB });
    }
  }

  /** Remove namespaces a previous run left behind (a test killed before its afterAll). */
  static cleanupStale(): void {
    let list = '';
    try {
      list = sh('ip', ['netns', 'list']);
    } catch {
      return;
    }
    for (const line of list.split('\n')) {
      const ns = line.split(' ')[0];
      const owner = /^spk(\d+)-/.exec(ns);
      // Only labs whose creating process is gone: another test file's live lab is left alone.
      if (owner && !alive(Number(owner[1]))) {
        try {
          sh('ip', ['netns', 'pids', ns])
            .split('\n')
            .filter(Boolean)
            .forEach((pid) => {
              try {
                process.kill(Number(pid), 'SIGKILL');
              } catch {
                /* already gone */
              }
            });
          sh('ip', ['netns', 'del', ns]);
        } catch {
          /* best effort */
        }
      }
    }
  }

  host(name: string): Host {
    return this.hosts.get(name)!;
  }

  /** Write a host's key and config: peers are the hosts it has a link to. */
  configure(
    name: string,
    registers: object[],
    extra: Record<string, unknown> = {},
    peersOverride?: { name: string; publicKey: string; endpoint?: string }[],
  ): string {
    const h = this.host(name);
    const keyFile = join(h.dir, 'key');
    if (!existsSync(keyFile)) writeFileSync(keyFile, `${encodeKey(h.key.privateKey)}\n`, { mode: 0o600 });
    const peers =
      peersOverride ??
      [...h.addrs.keys()].map((p) => {
        const peer = this.host(p);
        return { name: p, publicKey: encodeKey(peer.key.publicKey), endpoint: `${peer.addrs.get(name)}:${peer.port}` };
      });
    const listenAddr = h.addrs.size > 0 && !this.loopback ? '0.0.0.0' : '127.0.0.1';
    const cfg = {
      listen: `${listenAddr}:${h.port}`,
      privateKeyFile: keyFile,
      dataDir: join(h.dir, 'data'),
      adminSocket: h.socket,
      fsync: 'always',
      logLevel: 'debug',
      timing: { keepaliveMs: 300, silenceMs: 1500 },
      peers,
      registers,
      ...extra,
    };
    const path = join(h.dir, 'spookd.conf');
    writeFileSync(path, JSON.stringify(cfg, null, 2)); // JSON is YAML
    return path;
  }

  /**
   * Start spookd in the host's namespace and wait for its admin socket. `env`: added to its
   * environment; `fds`: passed at 3.. with LISTEN_PID set to the daemon's pid (a service
   * manager's descriptor store, testing/lab/fdstore.ts).
   */
  async start(name: string, opts: { env?: Record<string, string>; fds?: number[] } = {}): Promise<void> {
    const h = this.host(name);
    const log = join(h.dir, 'spookd.log');
    // SPOOK_LAB_NODE_ARGS: extra node flags for the lab's daemons (e.g. --cpu-prof when profiling a benchmark).
    const nodeArgs = (process.env.SPOOK_LAB_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const daemon = [process.execPath, ...nodeArgs, join(ROOT, 'bin/spookd'), '--config', join(h.dir, 'spookd.conf')];
    // LISTEN_PID is the daemon's own pid: sh exports its $$ and execs it.
    if (opts.fds?.length) daemon.unshift('sh', '-c', 'export LISTEN_PID=$$; exec "$@"', 'sh');
    // A service manager's variables reach the daemon only through `opts.env` (a runner under systemd has its own).
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(NOTIFY_SOCKET|FDSTORE|LISTEN_\w+)$/.test(k)));
    const spawnOpts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe', ...(opts.fds ?? [])], env: { ...env, ...opts.env } };
    const proc = this.loopback ? spawn(daemon[0], daemon.slice(1), spawnOpts) : spawn('ip', ['netns', 'exec', h.ns, ...daemon], spawnOpts);
    proc.stdout!.on('data', (c: Buffer) => writeFileSync(log, c, { flag: 'a' }));
    proc.stderr!.on('data', (c: Buffer) => writeFileSync(log, c, { flag: 'a' }));
    h.proc = proc;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`spookd on ${name} exited with ${proc.exitCode}:\n${this.logOf(name)}`);
      try {
        const c = await AdminClient.connect(h.socket);
        c.close();
        return;
      } catch {
        await sleep(100);
      }
    }
    throw new Error(`spookd on ${name} did not open ${h.socket} within 15 s:\n${this.logOf(name)}`);
  }

  logOf(name: string): string {
    try {
      return readFileSync(join(this.host(name).dir, 'spookd.log'), 'utf8')
        .split('\n')
        .slice(-40)
        .join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** kill -9: no shutdown path runs. */
  async kill9(name: string): Promise<void> {
    const h = this.host(name);
    if (!h.proc) return;
    // `ip netns exec` execs the daemon, so the child pid is spookd itself.
    h.proc.kill('SIGKILL');
    await new Promise<void>((resolve) =>
      h.proc!.exitCode !== null || h.proc!.signalCode !== null ? resolve() : h.proc!.once('exit', () => resolve()),
    );
    h.proc = undefined;
  }

  async stop(name: string): Promise<number | null> {
    const h = this.host(name);
    if (!h.proc) return null;
    const p = h.proc;
    p.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) =>
      p.exitCode !== null ? resolve(p.exitCode) : p.once('exit', (c) => resolve(c)),
    );
    h.proc = undefined;
    return code;
  }

  setLink(a: string, b: string, up: boolean): void {
    const l = this.links.find((x) => (x.spec.a === a && x.spec.b === b) || (x.spec.a === b && x.spec.b === a))!;
    if (this.loopback) {
      this.host(l.spec.b).proc?.kill(up ? 'SIGCONT' : 'SIGSTOP');
      return;
    }
    sh('ip', ['-n', this.host(l.spec.a).ns, 'link', 'set', l.ifA, up ? 'up' : 'down']);
  }

  /** Run a node script inside a host's namespace (a hostile or unauthorised sender). */
  runIn(name: string, script: string): string {
    return sh('ip', ['netns', 'exec', this.host(name).ns, process.execPath, '--input-type=module', '-e', script]);
  }

  /** One admin request to a host's spookd (client/protocol.ts). */
  async admin<C extends AdminCommand>(name: string, cmd: C, ...args: AdminRequestArgs<C>): Promise<AdminResult<C>> {
    const c = await AdminClient.connect(this.host(name).socket);
    try {
      return await c.request(cmd, ...args);
    } finally {
      c.close();
    }
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts.values()) {
      h.proc?.kill('SIGCONT');
      if (h.proc) await this.kill9(h.name).catch(() => undefined);
      if (this.loopback) continue;
      try {
        sh('ip', ['netns', 'del', h.ns]);
      } catch {
        /* already gone */
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `check` until it returns a truthy value or the time runs out. */
export async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/** Whether this process can build a namespace lab (root, iproute2, netns support). */
export function canUseNetns(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = `spkprobe${process.pid}`;
  try {
    sh('ip', ['netns', 'add', probe]);
    sh('ip', ['netns', 'del', probe]);
    return true;
  } catch {
    return false;
  }
}

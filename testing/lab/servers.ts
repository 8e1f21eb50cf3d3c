/**
 * Real protocol servers and clients for end-to-end tests: sshd, PostgreSQL, Samba, OpenLDAP,
 * nginx (+ a WebSocket echo backend), Mosquitto and a CoAP server, each started as a
 * foreground child process inside a network namespace (`ip netns exec NS ...`) on a given
 * address and port, with all its state in a directory the caller owns (use a distinct one per
 * server). Every `start*` resolves only once the server accepts connections (or throws, with
 * the tail of its output, after a bounded time) and returns `stop()`, which kills the
 * server's whole process group. Needs root and the Debian packages named in each function.
 *
 * The client helpers (`nsExec`, `nsRun`, `wsEcho`, ...) run the real Debian clients inside a
 * namespace, so a test can reach a server directly or through whatever sits in between.
 */
import { createServer, type AddressInfo } from 'node:net';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  createWriteStream,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  type WriteStream,
} from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { tmpdir } from 'node:os';
import { ROOT, sleep } from './netns.js';

/** Directory of the PostgreSQL 15 server binaries (initdb, postgres, psql, pgbench, pg_isready). */
export const PG_BIN = '/usr/lib/postgresql/15/bin';

const DEFAULT_READY_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// Running things in a namespace

export interface ExecOptions {
  /** Kill the command (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed (stdin is /dev/null otherwise). */
  input?: string | Buffer;
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** Run as this system user (setpriv --reuid/--regid/--init-groups), e.g. 'postgres'. */
  user?: string;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** argv that runs `cmd args` inside `ns` (optionally as `user`): `ip netns exec` execs it, so the pid is the command's. */
export function nsArgv(ns: string, cmd: string, args: string[], user?: string): string[] {
  const asUser = user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', '--'] : [];
  return ['ip', 'netns', 'exec', ns, ...asUser, cmd, ...args];
}

/** Run a command inside a namespace; never throws for a non-zero exit (see `nsExec`). */
export function nsRun(ns: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const argv = nsArgv(ns, cmd, args, opts.user);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => undefined); // the command may exit without reading it all
      child.stdin!.end(opts.input);
    }
  });
}

/** Run a command inside a namespace and return its stdout; throws (with stderr) on a non-zero exit or timeout. */
export async function nsExec(ns: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<string> {
  const r = await nsRun(ns, cmd, args, opts);
  if (r.code !== 0 || r.timedOut) {
    const why = r.timedOut
      ? `timed out after ${opts.timeoutMs ?? 30_000} ms`
      : r.signal
        ? `was killed by ${r.signal}`
        : `exited with ${r.code}`;
    throw new Error(`[${ns}] ${cmd} ${args.join(' ')} ${why}\nstderr:\n${tail(r.stderr, 30)}\nstdout:\n${tail(r.stdout, 10)}`);
  }
  return r.stdout;
}

/** Whether a TCP connect to addr:port from inside `ns` succeeds (bash's /dev/tcp, 2 s bound). */
export async function tcpProbe(ns: string, addr: string, port: number): Promise<boolean> {
  const host = addr.includes(':') ? `[${addr}]` : addr;
  const r = await nsRun(ns, 'bash', ['-c', `exec 3<>/dev/tcp/${host}/${port}`], { timeoutMs: 2_000 }).catch(() => undefined);
  return r?.code === 0;
}

/** Pids holding a listening (tcp) or bound (udp) socket on `port` inside `ns` (ss -p). */
export async function listenerPids(ns: string, proto: 'tcp' | 'udp', port: number): Promise<Set<number>> {
  const r = await nsRun(ns, 'ss', ['-H', '-l', '-n', '-p', proto === 'tcp' ? '-t' : '-u', `sport = :${port}`], { timeoutMs: 3_000 });
  return new Set([...r.stdout.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])));
}

/** Bring a namespace's loopback up (idempotent). */
export function nsLoopbackUp(ns: string): void {
  execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
}

/** sha256 (hex) of a file or buffer. */
/** A TCP port on 127.0.0.1 free a moment ago (for listeners that must know their port before they bind). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function sha256(data: string | Buffer, isPath = typeof data === 'string'): string {
  return createHash('sha256')
    .update(isPath ? readFileSync(data as string) : data)
    .digest('hex');
}

/**
 * A WebSocket client run by node inside `ns` (the `ws` package): connects to `url`, sends each
 * message in turn, waiting for its echo, and returns what came back, in order.
 */
export async function wsEcho(ns: string, url: string, messages: string[], timeoutMs = 10_000): Promise<string[]> {
  const script = `
import { createRequire } from 'node:module';
const require = createRequire(${JSON.stringify(join(ROOT, 'package.json'))});
const WebSocket = require('ws');
const { url, messages } = JSON.parse(process.env.SPOOK_WS_JOB);
const ws = new WebSocket(url);
const got = [];
ws.on('error', (e) => { console.error(String(e && e.stack || e)); process.exit(2); });
ws.on('unexpected-response', (_req, res) => { console.error('unexpected HTTP ' + res.statusCode); process.exit(3); });
ws.on('open', () => { if (messages.length === 0) { ws.close(); } else { ws.send(messages[0]); } });
ws.on('message', (data) => {
  got.push(data.toString());
  if (got.length < messages.length) ws.send(messages[got.length]); else ws.close();
});
ws.on('close', () => { process.stdout.write(JSON.stringify(got)); process.exit(0); });
`;
  const out = await nsExec(ns, process.execPath, ['--input-type=module', '-e', script], {
    timeoutMs,
    env: { SPOOK_WS_JOB: JSON.stringify({ url, messages }) },
  });
  return JSON.parse(out) as string[];
}

// ---------------------------------------------------------------------------------------------
// Server processes

export interface RunningServer {
  /** What runs (sshd, postgres, ...). */
  name: string;
  ns: string;
  addr: string;
  port: number;
  /** The server process (leader of its own process group). */
  pid: number;
  /** The last `lines` lines of its stdout+stderr. */
  logTail(lines?: number): string;
  /** Kill it (SIGTERM, then SIGKILL after 5 s) with its whole process group; idempotent. */
  stop(): Promise<void>;
}

class ServerProc {
  readonly proc: ChildProcess;
  private buf = '';
  private log?: WriteStream;
  private stopping?: Promise<void>;

  constructor(
    readonly name: string,
    readonly ns: string,
    cmd: string,
    args: string[],
    opts: { user?: string; env?: Record<string, string>; cwd?: string; logFile?: string; stopSignal?: NodeJS.Signals } = {},
  ) {
    this.stopSignal = opts.stopSignal ?? 'SIGTERM';
    const argv = nsArgv(ns, cmd, args, opts.user);
    if (opts.logFile) this.log = createWriteStream(opts.logFile, { flags: 'a' });
    // detached: its own session and process group, so stop() can kill the children too.
    this.proc = spawn(argv[0], argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, ...opts.env },
      cwd: opts.cwd,
    });
    const sink = (c: Buffer): void => {
      this.buf = (this.buf + c.toString('utf8')).slice(-64 * 1024);
      // Children of the group can still write after stop() ended the log: keep only the tail then.
      if (this.log && !this.log.writableEnded) this.log.write(c);
    };
    this.proc.stdout!.on('data', sink);
    this.proc.stderr!.on('data', sink);
    this.proc.on('error', (e) => sink(Buffer.from(`spawn error: ${e.message}\n`)));
  }

  private readonly stopSignal: NodeJS.Signals;

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  tail(lines = 40): string {
    return tail(this.buf, lines);
  }

  private killGroup(sig: NodeJS.Signals): void {
    const pid = this.proc.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        this.proc.kill(sig);
      } catch {
        /* gone */
      }
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (!this.exited) {
        const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
        this.killGroup(this.stopSignal);
        const t = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
        if (!t) {
          this.killGroup('SIGKILL');
          await Promise.race([exited, sleep(2_000)]);
        }
      }
      // Leftover group members (workers, per-connection children) whose leader already exited.
      this.killGroup('SIGKILL');
      await new Promise<void>((r) => (this.log ? this.log.end(() => r()) : r()));
    })();
    return this.stopping;
  }

  /**
   * Poll `ready` until true and (with `owns`) the port's socket belongs to this process, not
   * to another one already there; throw with the output tail if the process exits or time
   * runs out (killing it).
   */
  async waitReady(
    what: string,
    ready: () => Promise<boolean>,
    owns?: { proto: 'tcp' | 'udp'; port: number },
    timeoutMs = DEFAULT_READY_MS,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let holders = '';
    while (Date.now() < deadline) {
      if (this.exited) {
        await sleep(50); // let the last output arrive
        throw new Error(
          `${this.name} in ${this.ns} exited (code ${this.proc.exitCode}, signal ${this.proc.signalCode}) before ${what}; output tail:\n${this.tail()}`,
        );
      }
      if (await ready().catch(() => false)) {
        if (!owns) return;
        const pids = await listenerPids(this.ns, owns.proto, owns.port).catch(() => new Set<number>());
        if (this.proc.pid !== undefined && pids.has(this.proc.pid)) return;
        holders = pids.size
          ? ` (${owns.proto} port ${owns.port} is held by pid ${[...pids].join(', ')}, not by ${this.name} pid ${this.proc.pid})`
          : '';
      }
      await sleep(100);
    }
    await this.stop();
    throw new Error(`${this.name} in ${this.ns}: ${what} did not happen within ${timeoutMs} ms${holders}; output tail:\n${this.tail()}`);
  }

  handle(addr: string, port: number): RunningServer {
    return {
      name: this.name,
      ns: this.ns,
      addr,
      port,
      pid: this.proc.pid ?? -1,
      logTail: (n?: number) => this.tail(n),
      stop: () => this.stop(),
    };
  }
}

function tail(s: string, lines: number): string {
  return s
    .split('\n')
    .slice(-lines - 1)
    .join('\n')
    .trimEnd();
}

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; status?: number | null; message: string };
    const why = err.status != null ? `exited with ${err.status}` : err.message.split('\n')[0];
    throw new Error(`${cmd} ${args.join(' ')} ${why}\n${tail(`${err.stderr ?? ''}${err.stdout ?? ''}`, 30)}`);
  }
}

function fresh(dir: string): string {
  const d = resolve(dir);
  mkdirSync(d, { recursive: true });
  return d;
}

const hostPort = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

// ---------------------------------------------------------------------------------------------
// sshd

export interface SshdServer extends RunningServer {
  user: string;
  identityFile: string;
  /** Options shared by ssh and scp: identity, no host-key checks, batch mode. */
  commonOptions: string[];
  /** `ssh ...sshArgs host command` */
  sshArgs: string[];
  /** `scp ...scpArgs src root@host:dst` (scp uses -P for the port). */
  scpArgs: string[];
}

/** OpenSSH sshd (`-D -e -f`), root login by a generated ed25519 key; sftp subsystem for scp. */
export async function startSshd(ns: string, addr: string, port: number, dir: string): Promise<SshdServer> {
  const d = fresh(dir);
  const hostKey = join(d, 'ssh_host_ed25519_key');
  const clientKey = join(d, 'id_ed25519');
  for (const k of [hostKey, clientKey]) {
    rmSync(k, { force: true });
    rmSync(`${k}.pub`, { force: true });
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'spook-lab', '-f', k]);
  }
  const authorized = join(d, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }); // privilege-separation dir
  const config = join(d, 'sshd_config');
  writeFileSync(
    config,
    [
      `ListenAddress ${hostPort(addr, port)}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(d, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no', // the key files live in a temp dir
      'UseDNS no',
      'PrintMotd no',
      'LogLevel VERBOSE',
      'Subsystem sftp internal-sftp', // scp uses the SFTP protocol since OpenSSH 9
      'MaxStartups 100:30:200',
      '',
    ].join('\n'),
  );
  run('/usr/sbin/sshd', ['-t', '-f', config]);
  const p = new ServerProc('sshd', ns, '/usr/sbin/sshd', ['-D', '-e', '-f', config], { logFile: join(d, 'sshd.log') });
  await p.waitReady(`listening on ${hostPort(addr, port)}`, () => tcpProbe(ns, addr, port), { proto: 'tcp', port });
  const commonOptions = [
    '-i',
    clientKey,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'BatchMode=yes',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'ConnectTimeout=10',
  ];
  return {
    ...p.handle(addr, port),
    user: 'root',
    identityFile: clientKey,
    commonOptions,
    sshArgs: [...commonOptions, '-p', String(port), '-l', 'root'],
    scpArgs: [...commonOptions, '-P', String(port)],
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

export interface PostgresServer extends RunningServer {
  user: string;
  database: string;
  dataDir: string;
  socketDir: string;
  /** Absolute paths of the matching client binaries. */
  psql: string;
  pgbench: string;
  /** `-h addr -p port -U postgres`, for psql/pgbench/pg_isready run by any OS user (trust auth). */
  connArgs: string[];
  /** PGHOST/PGPORT/PGUSER/PGDATABASE for the same. */
  env: Record<string, string>;
}

/**
 * Make `dir` traversable by other users (postgres cannot run as root). Ancestors are only
 * touched when they are below the system temp dir (i.e. made by the test).
 */
function openPathFor(dir: string): void {
  const tmp = resolve(tmpdir());
  let d = resolve(dir);
  while (true) {
    const mode = statSync(d).mode & 0o7777;
    if ((mode & 0o011) !== 0o011) chmodSync(d, mode | 0o011);
    const up = dirname(d);
    const rel = relative(tmp, up);
    if (up === d || rel === '' || rel === '..' || rel.startsWith(`..${sep}`)) break;
    d = up;
  }
}

/**
 * PostgreSQL 15 (initdb + postgres as the `postgres` user, trust auth from anywhere, fsync off) on
 * `addr`, and on `alsoListen` too (a tunnel's address); clients are given `addr`.
 */
export async function startPostgres(
  ns: string,
  addr: string,
  port: number,
  dir: string,
  alsoListen: string[] = [],
): Promise<PostgresServer> {
  const d = fresh(dir);
  openPathFor(d);
  const uid = Number(run('id', ['-u', 'postgres']).trim());
  const gid = Number(run('id', ['-g', 'postgres']).trim());
  const socketDir = join(d, 'sock');
  mkdirSync(socketDir, { recursive: true });
  chownSync(socketDir, uid, gid);
  const pgRoot = join(d, 'pg');
  mkdirSync(pgRoot, { recursive: true });
  chownSync(pgRoot, uid, gid);
  const pgData = join(pgRoot, 'data');
  rmSync(pgData, { recursive: true, force: true }); // initdb wants it absent or empty
  const asPg = ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--'];
  try {
    run(asPg[0], [...asPg.slice(1), 'test', '-w', pgRoot]);
  } catch {
    throw new Error(
      `startPostgres: the postgres user cannot write ${pgRoot}; pass a dir whose parents are traversable by other users (e.g. under ${tmpdir()})`,
    );
  }
  run(asPg[0], [
    ...asPg.slice(1),
    join(PG_BIN, 'initdb'),
    '-D',
    pgData,
    '-U',
    'postgres',
    '-A',
    'trust',
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
    '--no-instructions',
  ]);
  writeFileSync(
    join(pgData, 'pg_hba.conf'),
    ['local all all trust', 'host all all 0.0.0.0/0 trust', 'host all all ::/0 trust', ''].join('\n'),
  );
  const p = new ServerProc(
    'postgres',
    ns,
    join(PG_BIN, 'postgres'),
    [
      '-D',
      pgData,
      '-c',
      `listen_addresses=${[addr, ...alsoListen].join(',')}`,
      '-p',
      String(port),
      '-k',
      socketDir,
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'max_connections=100',
      '-c',
      'logging_collector=off',
    ],
    { user: 'postgres', env: { LANG: 'C', LC_ALL: 'C' }, logFile: join(d, 'postgres.log'), stopSignal: 'SIGINT' /* fast shutdown */ },
  );
  const connArgs = ['-h', addr, '-p', String(port), '-U', 'postgres'];
  await p.waitReady(
    `accepting connections on ${hostPort(addr, port)}`,
    async () => (await nsRun(ns, join(PG_BIN, 'pg_isready'), [...connArgs, '-t', '2'], { timeoutMs: 3_000 })).code === 0,
    { proto: 'tcp', port },
  );
  return {
    ...p.handle(addr, port),
    user: 'postgres',
    database: 'postgres',
    dataDir: pgData,
    socketDir,
    psql: join(PG_BIN, 'psql'),
    pgbench: join(PG_BIN, 'pgbench'),
    connArgs,
    env: { PGHOST: addr, PGPORT: String(port), PGUSER: 'postgres', PGDATABASE: 'postgres' },
  };
}

// ---------------------------------------------------------------------------------------------
// Samba

export interface SambaServer extends RunningServer {
  share: string;
  /** Local directory backing the share. */
  sharePath: string;
  user: string;
  password: string;
  configFile: string;
  /** `//addr/share` */
  unc: string;
  /** `smbclient ...smbclientArgs -c 'put f; get f'` */
  smbclientArgs: string[];
}

/** smbd (`-F --no-process-group --debug-stdout`), one writable share `spook`, user root with a tdbsam password. */
export async function startSamba(ns: string, addr: string, port: number, dir: string): Promise<SambaServer> {
  const d = fresh(dir);
  const sub = (n: string): string => {
    const p = join(d, n);
    mkdirSync(p, { recursive: true });
    return p;
  };
  const sharePath = sub('share');
  const priv = sub('private');
  const user = 'root';
  const password = 'spook-lab-pw';
  const configFile = join(d, 'smb.conf');
  writeFileSync(
    configFile,
    `[global]
  workgroup = SPOOKLAB
  netbios name = SPOOKLAB
  server string = spook lab
  server role = standalone server
  smb ports = ${port}
  interfaces = ${addr}
  bind interfaces only = yes
  disable netbios = yes
  private dir = ${priv}
  lock directory = ${sub('lock')}
  state directory = ${sub('state')}
  cache directory = ${sub('cache')}
  pid directory = ${sub('pid')}
  ncalrpc dir = ${sub('ncalrpc')}
  binddns dir = ${sub('bind-dns')}
  passdb backend = tdbsam:${join(priv, 'passdb.tdb')}
  log file = ${join(d, 'log.%m')}
  log level = 1
  max log size = 0
  security = user
  map to guest = never
  server min protocol = SMB2_02
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  usershare max shares = 0
  invalid users =
  kernel oplocks = no

[spook]
  path = ${sharePath}
  read only = no
  browseable = yes
  guest ok = no
  create mask = 0644
`,
  );
  run('smbpasswd', ['-c', configFile, '-s', '-a', user], `${password}\n${password}\n`);
  const p = new ServerProc('smbd', ns, '/usr/sbin/smbd', ['-F', '--no-process-group', '--debug-stdout', '-d', '1', '-s', configFile], {
    logFile: join(d, 'smbd.log'),
  });
  await p.waitReady(`listening on ${hostPort(addr, port)}`, () => tcpProbe(ns, addr, port), { proto: 'tcp', port });
  const unc = `//${addr}/spook`;
  return {
    ...p.handle(addr, port),
    share: 'spook',
    sharePath,
    user,
    password,
    configFile,
    unc,
    smbclientArgs: [unc, '-p', String(port), '-U', `${user}%${password}`, '-m', 'SMB3'],
  };
}

// ---------------------------------------------------------------------------------------------
// OpenLDAP

export interface SlapdServer extends RunningServer {
  url: string;
  baseDN: string;
  bindDN: string;
  password: string;
  /** `ldapsearch/ldapadd ...bindArgs ...` (-x simple bind as the rootdn). */
  bindArgs: string[];
}

/** slapd (slapd.conf, mdb database for dc=spook,dc=test with the base entry preloaded by slapadd), `-d none -h ldap://addr:port/`. */
export async function startSlapd(ns: string, addr: string, port: number, dir: string): Promise<SlapdServer> {
  const d = fresh(dir);
  const db = join(d, 'db');
  rmSync(db, { recursive: true, force: true });
  mkdirSync(db, { recursive: true });
  const baseDN = 'dc=spook,dc=test';
  const bindDN = `cn=admin,${baseDN}`;
  const password = 'spook-lab-pw';
  const conf = join(d, 'slapd.conf');
  writeFileSync(
    conf,
    `include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile ${join(d, 'slapd.pid')}
argsfile ${join(d, 'slapd.args')}

database mdb
maxsize 268435456
suffix "${baseDN}"
rootdn "${bindDN}"
rootpw ${password}
directory ${db}
index objectClass eq
`,
  );
  const baseLdif = join(d, 'base.ldif');
  writeFileSync(baseLdif, `dn: ${baseDN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Spook lab\ndc: spook\n`);
  run('slapadd', ['-f', conf, '-l', baseLdif]);
  const url = `ldap://${hostPort(addr, port)}/`;
  // `-d none`: foreground, and errors (bind failures...) still reach stderr; `-d 0` prints nothing.
  const p = new ServerProc('slapd', ns, '/usr/sbin/slapd', ['-d', 'none', '-h', url, '-f', conf], { logFile: join(d, 'slapd.log') });
  await p.waitReady(`listening on ${url}`, () => tcpProbe(ns, addr, port), { proto: 'tcp', port });
  return { ...p.handle(addr, port), url, baseDN, bindDN, password, bindArgs: ['-x', '-H', url, '-D', bindDN, '-w', password] };
}

// ---------------------------------------------------------------------------------------------
// nginx + WebSocket echo backend

export interface NginxServer extends RunningServer {
  /** Files here are served at http://addr:port/ (ETag on). */
  docroot: string;
  baseUrl: string;
  /** ws://addr:port/ws: proxied (Upgrade) to the echo backend. */
  wsUrl: string;
  /** The echo backend, on 127.0.0.1 in the same namespace (reachable only through nginx). */
  backendPort: number;
}

/**
 * nginx (`daemon off;`, every path in `dir`) serving `docroot` with ETags, and `/ws` proxied
 * with Upgrade/Connection headers to a `ws` echo server on 127.0.0.1:`backendPort`
 * (default port + 1) inside the same namespace, whose loopback this brings up.
 */
export async function startNginx(ns: string, addr: string, port: number, dir: string, backendPort = port + 1): Promise<NginxServer> {
  const d = fresh(dir);
  const docroot = join(d, 'docroot');
  mkdirSync(docroot, { recursive: true });
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(d, 'tmp', t), { recursive: true });
  nsLoopbackUp(ns);

  const echoScript = join(d, 'ws-echo.mjs');
  writeFileSync(
    echoScript,
    `import { createRequire } from 'node:module';
const require = createRequire(${JSON.stringify(join(ROOT, 'package.json'))});
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: ${backendPort} });
wss.on('listening', () => console.log('ws echo listening on 127.0.0.1:${backendPort}'));
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
`,
  );
  const echo = new ServerProc('ws-echo', ns, process.execPath, [echoScript], { logFile: join(d, 'ws-echo.log') });
  try {
    await echo.waitReady(`listening on 127.0.0.1:${backendPort}`, () => tcpProbe(ns, '127.0.0.1', backendPort), {
      proto: 'tcp',
      port: backendPort,
    });
  } catch (e) {
    await echo.stop();
    throw e;
  }

  const conf = join(d, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
master_process on;
worker_processes 1;
user root;
pid ${join(d, 'nginx.pid')};
error_log stderr notice;
events { worker_connections 512; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log ${join(d, 'access.log')};
  client_body_temp_path ${join(d, 'tmp', 'body')};
  proxy_temp_path ${join(d, 'tmp', 'proxy')};
  fastcgi_temp_path ${join(d, 'tmp', 'fastcgi')};
  uwsgi_temp_path ${join(d, 'tmp', 'uwsgi')};
  scgi_temp_path ${join(d, 'tmp', 'scgi')};
  sendfile on;
  etag on;
  keepalive_timeout 30;
  client_max_body_size 0;
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen ${hostPort(addr, port)};
    server_name _;
    root ${docroot};
    location / { try_files $uri $uri/ =404; }
    location /ws {
      proxy_pass http://127.0.0.1:${backendPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
`,
  );
  const nginxArgs = ['-p', `${d}/`, '-e', 'stderr', '-c', conf];
  try {
    await nsExec(ns, '/usr/sbin/nginx', [...nginxArgs, '-t', '-q'], { timeoutMs: 10_000 }); // -t binds the listen address: in ns
  } catch (e) {
    await echo.stop();
    throw e;
  }
  const p = new ServerProc('nginx', ns, '/usr/sbin/nginx', nginxArgs, { logFile: join(d, 'nginx.log') });
  try {
    await p.waitReady(`listening on ${hostPort(addr, port)}`, () => tcpProbe(ns, addr, port), { proto: 'tcp', port });
  } catch (e) {
    await echo.stop();
    throw e;
  }
  const h = p.handle(addr, port);
  return {
    ...h,
    logTail: (n?: number) => `${p.tail(n)}\n--- ws-echo ---\n${echo.tail(n)}`,
    stop: async () => {
      await Promise.all([p.stop(), echo.stop()]);
    },
    docroot,
    baseUrl: `http://${hostPort(addr, port)}`,
    wsUrl: `ws://${hostPort(addr, port)}/ws`,
    backendPort,
  };
}

// ---------------------------------------------------------------------------------------------
// Mosquitto

export interface MosquittoServer extends RunningServer {
  /** `mosquitto_pub/mosquitto_sub ...clientArgs ...` */
  clientArgs: string[];
}

/** mosquitto (foreground, `listener port addr`, anonymous, no persistence). */
export async function startMosquitto(ns: string, addr: string, port: number, dir: string): Promise<MosquittoServer> {
  const d = fresh(dir);
  const conf = join(d, 'mosquitto.conf');
  writeFileSync(
    conf,
    `per_listener_settings false
listener ${port} ${addr}
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
`,
  );
  const p = new ServerProc('mosquitto', ns, '/usr/sbin/mosquitto', ['-c', conf], { logFile: join(d, 'mosquitto.log') });
  await p.waitReady(`listening on ${hostPort(addr, port)}`, () => tcpProbe(ns, addr, port), { proto: 'tcp', port });
  return { ...p.handle(addr, port), clientArgs: ['-h', addr, '-p', String(port)] };
}

// ---------------------------------------------------------------------------------------------
// CoAP

export interface CoapServer extends RunningServer {
  /** coap://addr:port */
  baseUri: string;
}

/** libcoap's coap-server-notls (`-A addr -p port`: UDP and TCP), ready once GET /.well-known/core answers. */
export async function startCoapServer(ns: string, addr: string, port: number): Promise<CoapServer> {
  const baseUri = `coap://${hostPort(addr, port)}`;
  const p = new ServerProc('coap-server', ns, '/usr/bin/coap-server-notls', ['-A', addr, '-p', String(port), '-v', '4']);
  await p.waitReady(
    `answering at ${baseUri}`,
    async () => {
      const r = await nsRun(ns, 'coap-client-notls', ['-m', 'get', '-B', '1', `${baseUri}/.well-known/core`], { timeoutMs: 3_000 });
      return r.code === 0 && r.stdout.includes('<');
    },
    { proto: 'udp', port },
  );
  return { ...p.handle(addr, port), baseUri };
}

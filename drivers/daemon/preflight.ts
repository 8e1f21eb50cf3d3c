/**
 * What can fail at start, checked before it: `spookd --check-config` runs every check (ports
 * too, unless told not to), and a start runs the ones that need no probing, so that a bad path
 * or a host's own key is reported by field, not by a stack trace from deep inside the start.
 */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { dirname } from 'node:path';
import { isIPv6 } from 'node:net';
import type { KeyPair } from '../../crypto/primitives.js';
import { decodeKey } from './keys.js';
import { ConfigError, parseHostPort, type SpookdConfig } from './config.js';

/** One thing that would fail, by the configuration field at fault. */
export interface Problem {
  field: string;
  message: string;
}

export const formatProblems = (file: string, problems: readonly Problem[]): string =>
  problems.map((p) => `${file}: ${p.field}: ${p.message}`).join('\n');

/** Checks that read the filesystem and the key only (no sockets). */
export function checkPaths(cfg: SpookdConfig, key: KeyPair): Problem[] {
  const problems: Problem[] = [];
  cfg.peers.forEach((p, i) => {
    // Compared as keys, not as text (the same 32 bytes may be written with or without padding).
    if (Buffer.from(decodeKey(p.publicKey, `peers.${i}.publicKey`)).equals(Buffer.from(key.publicKey)))
      problems.push({
        field: `peers.${i}.publicKey`,
        message: `is this host's own public key (from privateKeyFile): a host cannot pair with itself; use the other host's key`,
      });
  });
  const dir = (field: string, path: string): void => {
    const m = writableDir(path);
    if (m) problems.push({ field, message: `${path}: ${m}` });
  };
  dir('dataDir', cfg.dataDir);
  const sock = cfg.adminSocket;
  if (existsSync(sock) && !statSync(sock).isSocket())
    problems.push({ field: 'adminSocket', message: `${sock} exists and is not a socket (spookd replaces only a stale socket)` });
  else dir('adminSocket', dirname(sock));
  return problems;
}

/** Whether `path` is, or can be made, a directory this process writes into (undefined: yes). */
function writableDir(path: string): string | undefined {
  let at = path;
  // The nearest part of the path that exists must be a directory we may write into (to create the rest).
  while (!existsSync(at)) {
    const up = dirname(at);
    if (up === at) return 'no part of the path exists';
    at = up;
  }
  const st = statSync(at);
  if (!st.isDirectory()) return at === path ? 'is a file, not a directory' : `${at} is a file, not a directory`;
  try {
    accessSync(at, constants.W_OK | constants.X_OK);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'EROFS' ? 'is on a read-only file system' : 'is not writable by this user';
    return at === path ? why : `cannot be created: ${at} ${why}`;
  }
  return undefined;
}

/**
 * The addresses spookd binds, each tried and released: the ESTP UDP port and the carrier's TCP
 * port on `listen`, the metrics listener, the wrappers' intercept listener (unless port 0).
 */
export async function checkPorts(cfg: SpookdConfig): Promise<Problem[]> {
  const tries: { field: string; at: string; kind: 'udp' | 'tcp' }[] = [
    { field: 'listen', at: cfg.listen, kind: 'udp' },
    { field: 'listen', at: cfg.listen, kind: 'tcp' }, // the wrappers' carrier shares the port number
  ];
  if (cfg.metrics) tries.push({ field: 'metrics.listen', at: cfg.metrics.listen, kind: 'tcp' });
  const intercept = parseHostPort(cfg.wrap.intercept, true)!;
  if (intercept.port !== 0) tries.push({ field: 'wrap.intercept', at: cfg.wrap.intercept, kind: 'tcp' });
  const problems: Problem[] = [];
  for (const t of tries) {
    const hp = parseHostPort(t.at, true)!;
    const code = await (t.kind === 'udp' ? tryUdp(hp.host, hp.port) : tryTcp(hp.host, hp.port));
    if (code) problems.push({ field: t.field, message: `${t.at} (${t.kind.toUpperCase()}): ${describeBindError(code)}` });
  }
  return problems;
}

/** A bind error as an operator reads it. */
export function describeBindError(code: string): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'already in use (another spookd, or another program: `ss -lntup`) (EADDRINUSE)';
    case 'EADDRNOTAVAIL':
      return 'not an address of this host (EADDRNOTAVAIL)';
    case 'EACCES':
      return 'permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE) (EACCES)';
    default:
      return code;
  }
}

const tryUdp = (host: string, port: number): Promise<string | undefined> =>
  new Promise((resolve) => {
    const s = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: false });
    s.once('error', (e: NodeJS.ErrnoException) => {
      s.close();
      resolve(e.code ?? e.message);
    });
    s.bind(port, host, () => s.close(() => resolve(undefined)));
  });

const tryTcp = (host: string, port: number): Promise<string | undefined> =>
  new Promise((resolve) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(undefined)));
  });

/**
 * A listen() failure named by the configuration field whose address it was (`candidates`:
 * configured HOST:PORT and field); anything else is returned as it was.
 */
export function bindFault(e: unknown, candidates: [string, string][]): unknown {
  const x = e as NodeJS.ErrnoException & { address?: string; port?: number };
  if (typeof x?.code !== 'string' || x.syscall !== 'listen') return e;
  for (const [at, field] of candidates) {
    const hp = parseHostPort(at, true);
    if (hp && hp.port === x.port && (x.address === undefined || x.address === hp.host))
      return new ConfigError(`${field}: ${at}: ${describeBindError(x.code)}`);
  }
  return e;
}

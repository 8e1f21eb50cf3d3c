/**
 * spookd's configuration file (YAML), validated with a schema: an error names the file,
 * the field and what is wrong, and the daemon does not start half-configured.
 * The documented example is docs/spookd.conf.example.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { DEFAULT_TIMING } from '../../core/pair/halfpair.js';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { decodeKey } from './keys.js';
import { DEFAULT_MAX_VALUE_BYTES, MAX_REGISTER_NAME_LEN, MAX_VALUE_LEN } from '../../wire/constants.js';
import { transportOf, WRAP_PROTOCOLS, wrapperKey } from '../../core/wrap/protocols.js';
import { parseDestination } from '../wrap/policy.js';
import { MAX_HOLD_MS, MIN_HOLD_MS } from '../../core/wrap/hold.js';
import { DEFAULT_WHEN_DOWN, MAX_CONNECT_TIMEOUT_MS, MIN_CONNECT_TIMEOUT_MS, WHEN_DOWN } from '../../core/wrap/connect.js';

const destinationOk = (s: string): boolean => {
  try {
    parseDestination(s);
    return true;
  } catch {
    return false;
  }
};

const hostPort = z
  .string()
  .refine((s) => parseHostPort(s) !== undefined, { message: 'must be HOST:PORT with an IP address (IPv6 in brackets) and a port 1-65535' });

const register = z
  .object({
    name: z
      .string()
      .min(1)
      .refine((s) => Buffer.byteLength(s) <= MAX_REGISTER_NAME_LEN, { message: `at most ${MAX_REGISTER_NAME_LEN} UTF-8 bytes` })
      // Its directory in each peer's: "." would be the peer's directory itself, ".." the data directory.
      .refine((s) => s !== '.' && s !== '..', { message: '"." and ".." are not register names' }),
    kind: z.enum(['map', 'stream']),
    policy: z.enum(['buffer', 'freeze']).default('buffer'),
    maxPending: z.number().int().min(1).max(1_000_000).default(1024),
    logRecords: z.number().int().min(4).default(65536),
    /** Quota (PROTOCOL.md §7.8): entries (map) and octets this register may hold; both peers must agree. */
    maxKeys: z.number().int().min(1).default(1_000_000),
    maxBytes: z
      .number()
      .int()
      .min(1024)
      .default(256 * 1024 * 1024),
    // ---- large values ----
    /** Largest value (map) or append (stream), bytes; both peers must agree (PROTOCOL.md §4, §3.4). */
    maxValueBytes: z.number().int().min(1).max(MAX_VALUE_LEN).default(DEFAULT_MAX_VALUE_BYTES),
  })
  .strict();

/** Names a peer's directory in dataDir cannot have: the directory itself, its parent, and what spookd keeps beside the peers'. */
const RESERVED_PEER_NAMES = ['.', '..', 'domains', 'xdp-attached.json'];

const peer = z
  .object({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (1-64)')
      // Its directory in dataDir, beside what spookd keeps there itself.
      .refine((s) => !RESERVED_PEER_NAMES.includes(s), {
        message: `not one of ${RESERVED_PEER_NAMES.map((n) => JSON.stringify(n)).join(', ')}`,
      }),
    // Trimmed here, once: the reload compares keys as text, and a quoted key with a space was a rekey.
    publicKey: z
      .string()
      .trim()
      .superRefine((s, ctx) => {
        try {
          decodeKey(s, 'publicKey');
        } catch {
          ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'not a base64 X25519 public key (32 bytes)' });
        }
      }),
    /** Where the peer's spookd listens: an IP address or a DNS name (resolved at start, again while it does not answer). */
    endpoint: z
      .string()
      .refine((s) => parseEndpoint(s) !== undefined, {
        message: 'must be HOST:PORT with an IP address (IPv6 in brackets) or a DNS name, and a port 1-65535',
      })
      .optional(),
  })
  .strict();

/** A DNS name as RFC 1123 allows it (labels of letters, digits and hyphens, 253 octets at most). */
const DNS_NAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** A peer endpoint: HOST:PORT with an IP address (`name: false`) or a DNS name (`name: true`). */
export function parseEndpoint(s: string): { host: string; port: number; name: boolean } | undefined {
  const ip = parseHostPort(s);
  if (ip) return { ...ip, name: false };
  const m = /^([^:[\]]+):(\d+)$/.exec(s);
  if (!m || !DNS_NAME.test(m[1]) || /^[\d.]+$/.test(m[1])) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1], port, name: true } : undefined;
}

/** A duration: milliseconds, or text such as 500ms, 30s, 2m, 1h. */
export function parseDuration(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms'];
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a duration: milliseconds, or a number with ms, s, m or h (30s)' });
    return z.NEVER;
  }
  return ms;
});

const holdInRange = (ms: number): boolean => ms >= MIN_HOLD_MS && ms <= MAX_HOLD_MS;

/** A wrapper's hold (config and `spook wrap add`): a duration from 100 ms to 24 h, else undefined. */
export function parseHold(v: string | number): number | undefined {
  const ms = parseDuration(v);
  return ms !== undefined && holdInRange(ms) ? ms : undefined;
}

const connectTimeoutInRange = (ms: number): boolean => ms >= MIN_CONNECT_TIMEOUT_MS && ms <= MAX_CONNECT_TIMEOUT_MS;

/** A wrapper's connect timeout (config and `spook wrap add`): a duration from 100 ms to 1 h, else undefined. */
export function parseConnectTimeout(v: string | number): number | undefined {
  const ms = parseDuration(v);
  return ms !== undefined && connectTimeoutInRange(ms) ? ms : undefined;
}

/** Existing TCP and UDP protocols carried over pairs (docs/OPERATIONS.md, "Wrappers"). */
const wrapper = z
  .object({
    protocol: z.enum(WRAP_PROTOCOLS),
    port: z.number().int().min(1).max(65535),
    /** The peer whose spookd opens the connection to the real server: a peer name or its public key. */
    peer: z.string().min(1),
    /**
     * How long a link outage may last before both ends close the connection (100 ms to 24 h).
     * Absent: this host's TCP patience (drivers/wrap/hold.ts; 925 s with Linux's defaults).
     */
    hold: duration.refine(holdInRange, { message: 'must be between 100ms and 24h' }).optional(),
    /** Delta mode: stream chunks the other side already holds are sent as references (PROTOCOL §16.9). */
    delta: z.boolean().default(false),
    /** TCP: what connect() does while the peer has no carrier (docs/OPERATIONS.md, "What a client sees when it connects"). */
    whenDown: z.enum(WHEN_DOWN).default(DEFAULT_WHEN_DOWN),
    /** TCP: a connection the far side has not confirmed within this is reset. Absent: this host's SYN patience (127 s). */
    connectTimeout: duration.refine(connectTimeoutInRange, { message: 'must be between 100ms and 1h' }).optional(),
  })
  .strict();

/**
 * A destination a peer may make this host dial for its wrapped connections (PROTOCOL §16.5.1):
 * ADDR:PORT, ADDR/PREFIX:PORT or ADDR:LO-HI ([IPv6] in brackets, * for any address).
 */
const allowRule = z
  .object({
    /** A peer name or public key, or * for every peer. */
    peer: z.string().min(1),
    to: z
      .string()
      .refine((s) => destinationOk(s), { message: 'must be ADDR:PORT, ADDR/PREFIX:PORT or ADDR:LO-HI ([IPv6], * for any address)' }),
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
  })
  .strict();

const wrap = z
  .object({
    /** Where intercepted connections arrive (port 0: any free port; the BPF hooks are told which). */
    intercept: z
      .string()
      .refine((s) => parseHostPort(s, true) !== undefined, {
        message: 'must be HOST:PORT with an IP address and a port 0-65535 (0: any free port)',
      })
      .default('127.0.0.1:0'),
    /** auto: BPF cgroup hooks, or a warning and no interception if the kernel refuses; bpf: refuse to start without them. */
    interception: z.enum(['auto', 'bpf', 'off']).default('auto'),
    windowBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(256 * 1024 * 1024)
      .default(4 * 1024 * 1024),
    /** Per peer: most wrapped connections carried at once. */
    maxConnections: z.number().int().min(1).max(65536).default(1024),
    /**
     * Per peer and direction: most bytes buffered for its wrapped connections (bytes read
     * and not yet acknowledged, bytes received and not yet taken by the local socket).
     */
    maxBufferedBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(4 * 1024 * 1024 * 1024 - 1)
      .default(64 * 1024 * 1024),
    /** Carrier TCP connections that have not completed their handshake: at most this many, and per source address. */
    maxHandshakes: z.number().int().min(1).max(65536).default(256),
    maxHandshakesPerSource: z.number().int().min(1).max(65536).default(16),
    /** A carrier connection that has not completed its handshake (and sent its first record) by then is closed. */
    handshakeTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    /** Carrier connections accepted per second, in all (peers' known addresses apart) and per source address; over either, reset unread. */
    handshakeRate: z.number().int().min(1).max(10_000).default(200),
    handshakeRatePerSource: z.number().int().min(1).max(10_000).default(20),
    /** The carrier is dropped and redialled after this long without a record. */
    silenceMs: z.number().int().min(300).default(3000),
    wrappers: z.array(wrapper).max(256).default([]),
    /** What peers may make this host dial (default: nothing; every OPEN is refused). */
    allow: z.array(allowRule).max(4096).default([]),
  })
  .strict();

const domainName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (1-64)')
  // Its directory in dataDir/domains: "." would be that directory itself, ".." dataDir.
  .refine((s) => s !== '.' && s !== '..', { message: '"." and ".." are not domain names' });

/** A QN domain this node is a member of (docs/OPERATIONS.md, "Domains"). */
const domain = z
  .object({
    name: domainName,
    /** The other members, by peer name; this node is always a member. Every member must list the same set. */
    members: z.array(z.string()).min(1),
    registers: z
      // Quota (PROTOCOL.md §15.2): as a pair register's, and every member must declare the same.
      .array(
        z
          .object({
            name: register.shape.name,
            kind: z.enum(['map', 'stream']),
            maxKeys: register.shape.maxKeys,
            maxBytes: register.shape.maxBytes,
            // ---- large values on domains ----
            maxValueBytes: register.shape.maxValueBytes,
          })
          .strict(),
      )
      .min(1),
    /**
     * This node joins a running domain (etcd's initial-cluster-state=existing): it starts as a
     * non-member and waits for a leader to add it (`spook domain member add`).
     */
    join: z.boolean().default(false),
    /** QSCS entanglement groups: registers whose candidates collapse together (one group version). */
    groups: z.array(z.object({ name: domainName, registers: z.array(z.string()).min(1) }).strict()).default([]),
    /** While this member cannot reach a majority: keep new candidates (up to maxPending) or refuse them. */
    policy: z.enum(['buffer', 'refuse']).default('buffer'),
    /** At most OUTCOME_WINDOW: a retried candidate must still find its first outcome. */
    maxPending: z.number().int().min(1).max(4096).default(1024),
    electionMs: z.number().int().min(100).default(1000),
    heartbeatMs: z.number().int().min(10).default(100),
    /** Raft log entries kept before a snapshot (half are kept after it, for cheap catch-up). */
    maxLogEntries: z.number().int().min(16).default(100_000),
  })
  .strict();

/**
 * A socket mode as octal digits: "0660", "660", or a YAML number written 0660 (YAML 1.2 reads it
 * as 660, whose digits are taken as octal); `0o660` (a YAML octal, 432) is refused, not misread.
 */
const fileMode = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const s = String(v).replace(/^0o?/, '');
  if (!/^[0-7]{3}$/.test(s)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be three octal digits such as "0660" (got ${JSON.stringify(v)})` });
    return z.NEVER;
  }
  return parseInt(s, 8);
});

export const configSchema = z
  .object({
    listen: hostPort,
    /**
     * SO_RCVBUF of the UDP socket (bytes; Linux caps it at net.core.rmem_max). Every peer's frames
     * share it: the 208 KiB default lost the bursts of 1,000 peers (bench scale), for good for the
     * peers whose keepalives kept arriving in the same burst.
     */
    udpReceiveBufferBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(1024 * 1024 * 1024)
      .default(4 * 1024 * 1024),
    privateKeyFile: z.string().min(1),
    dataDir: z.string().min(1),
    adminSocket: z.string().min(1),
    /**
     * A group (name or gid) whose members may use the admin socket: every admin command, reads,
     * writes, membership changes and wrappers included (docs/SECURITY.md). Unset: root only.
     */
    adminGroup: z
      .union([
        z.string().regex(/^[^\s:/]{1,64}$/, 'a group name (no spaces, colons or slashes) or a gid'),
        z.number().int().min(0).max(0xfffffffe),
      ])
      .optional(),
    /** The admin socket's mode: default 0600, or 0660 with adminGroup. Never any access for others. */
    adminMode: fileMode.optional(),
    fsync: z.enum(['always', 'everysec', 'never']).default('always'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
    /** auto: pretty on a terminal, syslog priority prefixes under the journal (JOURNAL_STREAM), JSON otherwise. */
    logFormat: z.enum(['auto', 'json', 'journal', 'pretty']).default('auto'),
    metrics: z.object({ listen: hostPort }).strict().optional(),
    /** The XDP fast path on the interface that carries ESTP traffic (off when absent). */
    xdp: z
      .object({
        interface: z.string().min(1),
        mode: z.enum(['auto', 'native', 'generic']).default('auto'),
        /**
         * Per source address. The map fields are u32 (2^32 would wrap to 0 and drop every
         * handshake: refused); above XDP_HANDSHAKE_MAX the fast path uses that, with a warning
         * (a release before 1.34 took any u32, so such a configuration still starts).
         */
        handshakeRate: z.number().int().min(1).max(0xffffffff).default(20),
        handshakeBurst: z.number().int().min(1).max(0xffffffff).default(40),
        pinDir: z.string().default('/sys/fs/bpf/spook'),
      })
      .strict()
      .optional(),
    timing: z
      .object({
        keepaliveMs: z.number().int().min(50).optional(),
        silenceMs: z.number().int().min(200).optional(),
        /** The initiator of a session re-handshakes (fresh keys) after this long. */
        rekeyAfterMs: z.number().int().min(1000).optional(),
        /** A superseded session still opens frames until it has been idle this long. */
        sessionGraceMs: z.number().int().min(500).optional(),
      })
      .strict()
      .default({}),
    /** ETCP handshake DoS protection (docs/PROTOCOL.md §12.8). */
    handshakes: z
      .object({
        /** HandshakeInits per second (with a valid mac1) above which a cookie (mac2) is required. */
        cookieThreshold: z.number().int().min(1).default(50),
        /** Under load, HandshakeInits with a valid cookie processed per source address per second. */
        perSourceLimit: z.number().int().min(1).default(5),
        /** HandshakeInits accepted per peer per second, from any source (one per 1000/n ms). */
        perPeerLimit: z.number().int().min(1).max(1000).default(10),
      })
      .strict()
      .default({}),
    /** CPU milliseconds per second one peer's datagrams may take; past it they are dropped (docs/PROTOCOL.md §12.9). */
    peerBudgetMs: z.number().int().min(10).max(1000).default(100),
    /** A peer whose authenticated frames break the protocol this many times is disconnected. */
    violationLimit: z.number().int().min(1).default(100),
    peers: z.array(peer).min(1),
    registers: z.array(register).min(1),
    domains: z.array(domain).default([]),
    wrap: wrap.default({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    const dup = <T>(items: T[], key: (t: T) => string, path: string): void => {
      const seen = new Set<string>();
      items.forEach((it, i) => {
        const k = key(it);
        if (seen.has(k)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path, i], message: `duplicate ${JSON.stringify(k)}` });
        seen.add(k);
      });
    };
    if (c.adminMode !== undefined) {
      const m = c.adminMode;
      const bad =
        (m & 0o007) !== 0
          ? 'gives other users access: any local user could run every admin command (use adminGroup)'
          : (m & 0o600) !== 0o600
            ? 'must give the owner read and write (0600 at least)'
            : c.adminGroup !== undefined && (m & 0o020) === 0
              ? 'gives adminGroup no write permission: its members could not connect (use 0660)'
              : undefined;
      if (bad) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['adminMode'], message: `0${m.toString(8)} ${bad}` });
    }
    // A pair decoheres after silenceMs without a frame: it must outlast two keepalives, or one lost
    // keepalive (or a keepalive longer than the silence) would decohere an idle, healthy pair.
    const keepalive = c.timing.keepaliveMs ?? DEFAULT_TIMING.keepaliveMs;
    const silence = c.timing.silenceMs ?? DEFAULT_TIMING.silenceMs;
    if (silence < 2 * keepalive)
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['timing', c.timing.silenceMs === undefined ? 'keepaliveMs' : 'silenceMs'],
        message: `silenceMs (${silence}) must be at least twice keepaliveMs (${keepalive})`,
      });
    dup(c.peers, (p) => p.name, 'peers');
    dup(c.peers, (p) => p.publicKey, 'peers');
    dup(c.registers, (r) => r.name, 'registers');
    dup(c.domains, (d) => d.name, 'domains');
    // One wrapper per transport and port: a port may be wrapped for TCP and for UDP (DNS).
    dup(c.wrap.wrappers, (w) => wrapperKey(transportOf(w.protocol), w.port), 'wrap.wrappers');
    c.wrap.wrappers.forEach((w, i) => {
      if (!c.peers.some((p) => p.name === w.peer || p.publicKey === w.peer)) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['wrap', 'wrappers', i, 'peer'],
          message: `no peer named or keyed ${JSON.stringify(w.peer)}`,
        });
      }
    });
    if (c.wrap.maxBufferedBytes < c.wrap.windowBytes)
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['wrap', 'maxBufferedBytes'],
        message: `must be at least windowBytes (${c.wrap.windowBytes})`,
      });
    c.wrap.allow.forEach((r, i) => {
      if (r.peer !== '*' && !c.peers.some((p) => p.name === r.peer || p.publicKey === r.peer)) {
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['wrap', 'allow', i, 'peer'],
          message: `no peer named or keyed ${JSON.stringify(r.peer)}`,
        });
      }
    });
    const peers = new Set(c.peers.map((p) => p.name));
    c.domains.forEach((d, i) => {
      d.members.forEach((m, j) => {
        if (!peers.has(m))
          ctx.addIssue({
            code: z.ZodIssueCode.custom,
            path: ['domains', i, 'members', j],
            message: `no peer named ${JSON.stringify(m)} (a member must be a configured peer)`,
          });
      });
      const regs = new Set(d.registers.map((r) => r.name));
      d.groups.forEach((g, j) =>
        g.registers.forEach((r, k) => {
          if (!regs.has(r))
            ctx.addIssue({
              code: z.ZodIssueCode.custom,
              path: ['domains', i, 'groups', j, 'registers', k],
              message: `no register named ${JSON.stringify(r)} in domain ${d.name}`,
            });
        }),
      );
      if (d.heartbeatMs * 3 > d.electionMs)
        ctx.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['domains', i, 'heartbeatMs'],
          message: `must be at most a third of electionMs (${d.electionMs})`,
        });
    });
  });

export type SpookdConfig = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  constructor(
    message: string,
    /** The fields at fault (`wrap.wrappers.0.port`), when known. */
    readonly fields: string[] = [],
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function parseHostPort(s: string, allowPortZero = false): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (!isIP(m[1]) || !Number.isInteger(port) || port < (allowPortZero ? 0 : 1) || port > 65535) return undefined;
  return { host: m[1], port };
}

/** Parse and validate; every problem is reported as `FILE: field.path: message`. */
export function loadConfig(path: string): SpookdConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid YAML: ${(e as Error).message}`);
  }
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    const fields = r.error.issues.map((i) => (i.path.length ? i.path.join('.') : '(top level)'));
    const lines = r.error.issues.map((i, k) => `${path}: ${fields[k]}: ${i.message}`);
    throw new ConfigError(lines.join('\n'), fields);
  }
  return r.data;
}

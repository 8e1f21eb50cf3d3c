import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { configSchema, type SpookdConfig } from '../drivers/daemon/config.js';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import type { MapState } from '../core/register/map.js';
import type { SpookEvent } from '../core/pair/events.js';
import { DeltaOp } from '../wire/delta.js';

/**
 * Several spookd in the test's own process on loopback, each named, each with a key, a port, a
 * data directory, an admin socket and a log kept in memory: what the in-process daemon tests share.
 */
export interface InProcess {
  readonly dir: string;
  readonly host: string;
  readonly keys: Record<string, KeyPair>;
  readonly port: Record<string, number>;
  readonly logs: Record<string, string[]>;
}

/** Hosts `names` on consecutive ports from `base`: the calling file's own ports, `portBase(<file>)` (test/ports.ts, sized for them). */
export function inProcess(prefix: string, names: string[], base: number, host = '127.0.0.1'): InProcess {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const keys: Record<string, KeyPair> = {};
  const port: Record<string, number> = {};
  const logs: Record<string, string[]> = {};
  names.forEach((n, i) => {
    keys[n] = generateKeyPair();
    port[n] = base + i;
    logs[n] = [];
  });
  return { dir, host, keys, port, logs };
}

/** Host `name`'s configuration, peering with `peers` and sharing one map register `config`; `extra` overrides. */
export function configOf(p: InProcess, name: string, peers: string[], extra: Record<string, unknown> = {}): SpookdConfig {
  writeFileSync(join(p.dir, `${name}.key`), Buffer.from(p.keys[name].privateKey).toString('base64'));
  return configSchema.parse({
    listen: `${p.host}:${p.port[name]}`,
    privateKeyFile: join(p.dir, `${name}.key`),
    dataDir: join(p.dir, name),
    adminSocket: join(p.dir, `${name}.sock`),
    fsync: 'never',
    timing: { keepaliveMs: 100, silenceMs: 3000 },
    peers: peers.map((q) => ({ name: q, publicKey: encodeKey(p.keys[q].publicKey), endpoint: `${p.host}:${p.port[q]}` })),
    registers: [{ name: 'config', kind: 'map' }],
    ...extra,
  });
}

/** Warnings and errors of host `name`, kept in `p.logs[name]`. */
export const logOf = (p: InProcess, name: string): Logger => pino({ level: 'warn' }, { write: (s: string) => void p.logs[name].push(s) });

export async function until(what: string, f: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Propose `key` = v on `config` as the admin API does (local write, then the commit pass). */
export function write(from: Spookd, peer: string, key: string): { origin: number; seq: number } {
  const link = from.link(peer);
  const id = link.pair.propose(from.now(), 'config', { op: DeltaOp.Set, key: Buffer.from(key), value: Buffer.from('v') });
  from.kick(link);
  return id;
}

/** `write`, collecting what the proposer is told about it. */
export function writeTold(from: Spookd, peer: string, key: string): { told: SpookEvent[] } {
  const link = from.link(peer);
  const told: SpookEvent[] = [];
  const id = write(from, peer, key);
  from.subscribers.add((l, ev) => {
    if (l === link && ev.type === 'outcome' && ev.origin === id.origin && ev.seq === id.seq) told.push(ev);
  });
  return { told };
}

export const has = (s: Spookd, peer: string, key: string): boolean =>
  (s.link(peer).pair.register('config').state as MapState).get(Buffer.from(key)) !== undefined;

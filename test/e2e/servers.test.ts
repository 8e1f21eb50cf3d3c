import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, requireRoot } from '../../testing/lab/netns.js';
import {
  nsExec,
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

/**
 * The real-server harness, baseline: two namespaces (client, server) joined by one veth; every
 * server runs in the server namespace and is reached DIRECTLY from the client namespace with
 * the real Debian clients. (Namespaces are made here rather than with Lab: Lab's per-process
 * directory is shared with the other e2e files running in this process.)
 */
const CLI = `spk${process.pid}-svcli`;
const SRV = `spk${process.pid}-svsrv`;
const CLI_ADDR = '10.99.0.1';
const SRV_ADDR = '10.99.0.2';
const PORTS = { ssh: 2222, pg: 5433, smb: 4450, ldap: 3890, http: 8080, mqtt: 18830, coap: 5683 };

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

interface Servers {
  ssh: SshdServer;
  pg: PostgresServer;
  smb: SambaServer;
  ldap: SlapdServer;
  http: NginxServer;
  mqtt: MosquittoServer;
  coap: CoapServer;
}
const started: Partial<Servers> = {};
const failed: Partial<Record<keyof Servers, unknown>> = {};
let root = '';

/** A started server, or the reason it failed to start (so one broken server fails only its own tests). */
function need<K extends keyof Servers>(k: K): Servers[K] {
  const s = started[k];
  if (s) return s as Servers[K];
  throw new Error(`${k} did not start: ${failed[k] instanceof Error ? (failed[k] as Error).message : String(failed[k])}`);
}

beforeAll(async () => {
  requireRoot();
  Lab.cleanupStale(); // namespaces of killed runs (same spk<pid>- prefix)
  root = mkdtempSync(join(tmpdir(), `spk${process.pid}-servers-`));
  for (const ns of [CLI, SRV]) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  sh('ip', ['link', 'add', 'vcli', 'netns', CLI, 'type', 'veth', 'peer', 'name', 'vsrv', 'netns', SRV]);
  sh('ip', ['-n', CLI, 'addr', 'add', `${CLI_ADDR}/24`, 'dev', 'vcli']);
  sh('ip', ['-n', SRV, 'addr', 'add', `${SRV_ADDR}/24`, 'dev', 'vsrv']);
  sh('ip', ['-n', CLI, 'link', 'set', 'vcli', 'up']);
  sh('ip', ['-n', SRV, 'link', 'set', 'vsrv', 'up']);

  const starts: { [K in keyof Servers]: () => Promise<Servers[K]> } = {
    ssh: () => startSshd(SRV, SRV_ADDR, PORTS.ssh, join(root, 'sshd')),
    pg: () => startPostgres(SRV, SRV_ADDR, PORTS.pg, join(root, 'postgres')),
    smb: () => startSamba(SRV, SRV_ADDR, PORTS.smb, join(root, 'samba')),
    ldap: () => startSlapd(SRV, SRV_ADDR, PORTS.ldap, join(root, 'slapd')),
    http: () => startNginx(SRV, SRV_ADDR, PORTS.http, join(root, 'nginx')),
    mqtt: () => startMosquitto(SRV, SRV_ADDR, PORTS.mqtt, join(root, 'mosquitto')),
    coap: () => startCoapServer(SRV, SRV_ADDR, PORTS.coap),
  };
  await Promise.all(
    (Object.keys(starts) as (keyof Servers)[]).map(async (k) => {
      try {
        (started as Record<string, RunningServer>)[k] = await starts[k]();
      } catch (e) {
        failed[k] = e;
      }
    }),
  );
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(Object.values(started).map((s) => (s as RunningServer).stop()));
  for (const ns of [CLI, SRV]) {
    try {
      for (const pid of sh('ip', ['netns', 'pids', ns]).split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    } catch {
      /* namespace never made */
    }
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
  }
  if (root) rmSync(root, { recursive: true, force: true });
}, 30_000);

/** A fresh local directory for one test's files. */
function work(name: string): string {
  const d = join(root, 'work', name);
  mkdirSync(d, { recursive: true });
  return d;
}

describe('real servers reached directly from the client namespace', () => {
  it('ssh runs a command in the server namespace', async () => {
    const s = need('ssh');
    const out = await nsExec(CLI, 'ssh', [...s.sshArgs, SRV_ADDR, 'echo spook-$((6*7)); ip -4 -o addr show'], { timeoutMs: 15_000 });
    expect(out).toContain('spook-42');
    expect(out).toContain(SRV_ADDR);
  });

  it('scp copies a 5 MB random file both ways intact', async () => {
    const s = need('ssh');
    const d = work('scp');
    const src = join(d, 'src.bin');
    writeFileSync(src, randomBytes(5 * 1024 * 1024));
    const want = sha256(src);
    await nsExec(CLI, 'scp', [...s.scpArgs, src, `root@${SRV_ADDR}:${join(d, 'remote.bin')}`], { timeoutMs: 30_000 });
    const remoteSum = await nsExec(CLI, 'ssh', [...s.sshArgs, SRV_ADDR, `sha256sum ${join(d, 'remote.bin')}`], { timeoutMs: 15_000 });
    expect(remoteSum.split(' ')[0]).toBe(want);
    await nsExec(CLI, 'scp', [...s.scpArgs, `root@${SRV_ADDR}:${join(d, 'remote.bin')}`, join(d, 'back.bin')], { timeoutMs: 30_000 });
    expect(sha256(join(d, 'back.bin'))).toBe(want);
  });

  it('psql runs a SELECT on the server', async () => {
    const s = need('pg');
    const out = await nsExec(
      CLI,
      s.psql,
      [...s.connArgs, '-d', s.database, '-Atc', 'SELECT 40 + 2, inet_server_addr(), inet_client_addr()'],
      { timeoutMs: 15_000 },
    );
    expect(out.trim()).toBe(`42|${SRV_ADDR}|${CLI_ADDR}`);
  });

  it('pgbench -i then a 5 s run', async () => {
    const s = need('pg');
    await nsExec(CLI, s.pgbench, [...s.connArgs, '-i', '-s', '1', '-q', s.database], { timeoutMs: 30_000 });
    const out = await nsExec(CLI, s.pgbench, [...s.connArgs, '-c', '4', '-j', '2', '-T', '5', s.database], { timeoutMs: 30_000 });
    const n = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1] ?? 0);
    expect(n).toBeGreaterThan(100);
    expect(out).toMatch(/number of failed transactions: 0 /);
  }, 40_000);

  it('smbclient put/get round-trips a file', async () => {
    const s = need('smb');
    const d = work('smb');
    writeFileSync(join(d, 'up.bin'), randomBytes(2 * 1024 * 1024));
    const want = sha256(join(d, 'up.bin'));
    await nsExec(CLI, 'smbclient', [...s.smbclientArgs, '-c', `lcd ${d}; put up.bin stored.bin; get stored.bin down.bin`], {
      timeoutMs: 30_000,
    });
    expect(sha256(join(s.sharePath, 'stored.bin'))).toBe(want);
    expect(sha256(join(d, 'down.bin'))).toBe(want);
  });

  it('ldapadd then ldapsearch finds the entry', async () => {
    const s = need('ldap');
    const ldif = `dn: uid=alice,${s.baseDN}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice Spook\nsn: Spook\nmail: alice@spook.test\n`;
    await nsExec(CLI, 'ldapadd', s.bindArgs, { input: ldif, timeoutMs: 15_000 });
    const out = await nsExec(CLI, 'ldapsearch', [...s.bindArgs, '-LLL', '-b', s.baseDN, '(uid=alice)', 'mail', 'cn'], {
      timeoutMs: 15_000,
    });
    expect(out).toContain(`dn: uid=alice,${s.baseDN}`);
    expect(out).toContain('mail: alice@spook.test');
  });

  it('curl fetches a file from nginx (checksum, ETag, 304)', async () => {
    const s = need('http');
    const d = work('http');
    writeFileSync(join(s.docroot, 'blob.bin'), randomBytes(3 * 1024 * 1024));
    const want = sha256(join(s.docroot, 'blob.bin'));
    const headers = await nsExec(
      CLI,
      'curl',
      ['-sS', '-f', '--max-time', '15', '-D', '-', '-o', join(d, 'blob.bin'), `${s.baseUrl}/blob.bin`],
      { timeoutMs: 20_000 },
    );
    expect(sha256(join(d, 'blob.bin'))).toBe(want);
    const etag = /^etag: *(.+?)\r?$/im.exec(headers)?.[1];
    expect(etag).toBeTruthy();
    const code = await nsExec(
      CLI,
      'curl',
      ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', '-H', `If-None-Match: ${etag}`, `${s.baseUrl}/blob.bin`],
      { timeoutMs: 15_000 },
    );
    expect(code).toBe('304');
  });

  it('a WebSocket echo round trip through nginx /ws', async () => {
    const s = need('http');
    const big = randomBytes(48 * 1024).toString('base64');
    const got = await wsEcho(CLI, s.wsUrl, ['hello spook', big, 'bye'], 15_000);
    expect(got).toEqual(['hello spook', big, 'bye']);
  });

  it('mosquitto_pub -r then mosquitto_sub -C 1 gets the retained message', async () => {
    const s = need('mqtt');
    const msg = `retained-${randomBytes(6).toString('hex')}`;
    await nsExec(CLI, 'mosquitto_pub', [...s.clientArgs, '-q', '1', '-r', '-t', 'spook/lab', '-m', msg], { timeoutMs: 10_000 });
    const out = await nsExec(CLI, 'mosquitto_sub', [...s.clientArgs, '-q', '1', '-t', 'spook/lab', '-C', '1', '-W', '8'], {
      timeoutMs: 12_000,
    });
    expect(out.trim()).toBe(msg);
  });

  it('coap-client GETs /.well-known/core and / from coap-server', async () => {
    const s = need('coap');
    const core = await nsExec(CLI, 'coap-client-notls', ['-m', 'get', '-B', '5', `${s.baseUri}/.well-known/core`], { timeoutMs: 10_000 });
    expect(core).toContain('</time>');
    const index = await nsExec(CLI, 'coap-client-notls', ['-m', 'get', '-B', '5', `${s.baseUri}/`], { timeoutMs: 10_000 });
    expect(index).toMatch(/libcoap/i);
  });

  it('the servers are not reachable from the root namespace addresses (isolation sanity)', () => {
    // The server address exists only inside SRV: it is not one of the root namespace's own.
    expect(sh('ip', ['-4', '-o', 'addr', 'show'])).not.toContain(SRV_ADDR);
    expect(readFileSync('/proc/self/net/dev', 'utf8')).not.toContain('vsrv');
  });
});

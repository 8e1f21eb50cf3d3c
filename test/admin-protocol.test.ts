import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { AdminClient, AdminError, DaemonNotRunning } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import { ADMIN_ERROR_CODES, type AdminCommand, type AdminErrorCode, type CollapseEvent, type LifecycleEvent } from '../client/protocol.js';

/**
 * The admin protocol (client/protocol.ts) against a real spookd admin socket in this process:
 * results typed per command, failures as {code, message, field} with stable codes.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-admin-'));
const port = 27000 + (process.pid % 1000) * 2; // below the ephemeral range
const socket = join(dir, 'a.sock');
const keys = { a: generateKeyPair(), b: generateKeyPair() };
let d: Spookd;
/** a's peer, started only by the stream test: until then the pair is forming. */
let b: Spookd;
let client: AdminClient;

function make(name: 'a' | 'b', peer: 'a' | 'b', extra: Record<string, unknown> = {}): Spookd {
  writeFileSync(join(dir, `${name}.key`), Buffer.from(keys[name].privateKey).toString('base64'));
  const at = (n: string): number => port + (n === 'a' ? 0 : 1);
  const cfg = configSchema.parse({
    listen: `127.0.0.1:${at(name)}`,
    privateKeyFile: join(dir, `${name}.key`),
    dataDir: join(dir, name),
    adminSocket: join(dir, `${name}.sock`),
    fsync: 'never',
    timing: { keepaliveMs: 100, silenceMs: 3000 },
    peers: [{ name: peer, publicKey: encodeKey(keys[peer].publicKey), endpoint: `127.0.0.1:${at(peer)}` }],
    registers: [{ name: 'config', kind: 'map' }],
    ...extra,
  });
  return new Spookd(cfg, keys[name], pino({ level: 'silent' }));
}

beforeAll(async () => {
  // A domain of two members, b never in it: no majority, so a never leads.
  d = make('a', 'b', { domains: [{ name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' }] });
  b = make('b', 'a');
  await d.start();
  client = await AdminClient.connect(socket);
});

afterAll(async () => {
  client?.close();
  await d?.stop();
  await b?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function until(f: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The AdminError a request rejects with. */
async function failure(p: Promise<unknown>): Promise<AdminError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(AdminError);
  return e as AdminError;
}

describe('admin protocol', () => {
  it('answers a command with its typed result', async () => {
    const s = await client.request('status');
    expect(s.pid).toBe(process.pid);
    expect(s.pairs).toEqual([{ peer: 'b', state: 'FORMING' }]);
    const p = await client.request('pair', { peer: 'b' });
    expect(p.registers.map((r) => r.name)).toEqual(['config']);
    expect(p.timers.map((t) => t.timer)).toContain('keepalive'); // the pair core's named timers, earliest first
    const g = await client.request('get', { register: 'config', key: 'absent' });
    expect(g).toMatchObject({ register: 'config', found: false });
  });

  it('a bad argument: code bad-argument, the field named', async () => {
    const e = await failure(client.request('set', { register: 'config', key: 'k', value: 'v', timeoutMs: -1 }));
    expect({ code: e.code, field: e.field }).toEqual({ code: 'bad-argument', field: 'timeoutMs' });
    expect(e.message).toBe('argument timeoutMs must be an integer in [0, 600000]');
    const k = await failure(client.request('get', { register: 'config', key: 7 as unknown as string }));
    expect({ code: k.code, field: k.field, message: k.message }).toEqual({
      code: 'bad-argument',
      field: 'key',
      message: 'argument key must be a string',
    });
    // Inside a list, the field says where.
    const op = await failure(client.request('dpropose', { ops: [{ register: 'kv', op: 'cas', key: 'k', value: 'v', expect: -1 }] }));
    expect({ code: op.code, field: op.field }).toEqual({ code: 'bad-argument', field: 'ops[0].expect' });
    const ops = await failure(client.request('dpropose', { ops: [] }));
    expect({ code: ops.code, field: ops.field }).toEqual({ code: 'bad-argument', field: 'ops' });
  });

  it('an unknown command: code unknown-command, every command listed', async () => {
    const e = await failure(client.request('frobnicate' as AdminCommand));
    expect(e.code).toBe('unknown-command');
    expect(e.message).toMatch(/^unknown command "frobnicate" \(status, pairs, pair, .*, wrap-policy(, [a-z-]+)*\)$/);
    // Not a way into the handler table's prototype either.
    expect((await failure(client.request('constructor' as AdminCommand))).code).toBe('unknown-command');
  });

  it('unknown peer, register, domain, group, candidate; not the leader; a wrapper that is not there', async () => {
    const cases: [Promise<unknown>, AdminErrorCode, string | undefined][] = [
      [client.request('pair', { peer: 'nobody' }), 'unknown-peer', 'peer'],
      [client.request('get', { register: 'nope', key: 'k' }), 'unknown-register', 'register'],
      [client.request('domain', { domain: 'other' }), 'unknown-domain', 'domain'],
      [client.request('dget', { register: 'nope', key: 'k' }), 'unknown-register', 'register'],
      [client.request('group', { group: 'g' }), 'unknown-group', 'group'],
      [client.request('doutcome', { seq: 99 }), 'unknown-candidate', 'seq'],
      [client.request('member', { add: 'nobody' }), 'unknown-peer', 'add'],
      [client.request('member', { remove: 'b' }), 'not-leader', undefined],
      [client.request('wrap-remove', { port: 5432 }), 'conflict', 'port'],
      [client.request('wrap-add', { protocol: 'gopher', port: 70, peer: 'b' }), 'bad-argument', 'protocol'],
    ];
    for (const [p, code, field] of cases) {
      const e = await failure(p);
      expect({ code: e.code, field: e.field }, e.message).toEqual({ code, field });
    }
  });

  it('the wire form of a failure: {ok: false, error: {code, message, field}}; a bad line gets bad-request', async () => {
    const sock = connect(socket);
    const lines: string[] = [];
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => {
      buf += c;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write('{"id":5,"cmd":"pair","args":{"peer":3}}\nnot json\n');
    while (lines.length < 2) await new Promise((r) => setTimeout(r, 10));
    sock.destroy();
    expect(JSON.parse(lines[0])).toEqual({
      id: 5,
      ok: false,
      error: { code: 'bad-argument', message: 'argument peer must be a string', field: 'peer' },
    });
    const bad = JSON.parse(lines[1]) as { id: number; ok: boolean; error: { code: string } };
    expect([bad.id, bad.ok, bad.error.code]).toEqual([0, false, 'bad-request']);
  });

  it('streams and the library: lifecycle events, then a write and its collapse (openRegister over watch and events)', async () => {
    const config = await openRegister('config', { socket });
    const lifecycle: LifecycleEvent[] = [];
    const collapses: CollapseEvent[] = [];
    await config.onLifecycle((ev) => lifecycle.push(ev));
    await config.onCollapse((ev) => collapses.push(ev));
    try {
      await new Promise((r) => setTimeout(r, 100)); // both streams subscribed
      await b.start();
      await until(() => lifecycle.some((ev) => ev.to === 'ENTANGLED'));
      expect(lifecycle[0]).toMatchObject({ type: 'lifecycle', peer: 'b', from: 'FORMING' });
      const w = await config.set('color', 'blue');
      expect(w).toMatchObject({ register: 'config', verdict: 'committed', reason: null });
      await until(() => collapses.some((c) => c.version === w.version));
      const c = collapses.find((x) => x.version === w.version)!;
      expect(c).toMatchObject({ type: 'collapse', peer: 'b', register: 'config' });
      expect(c.entries).toContainEqual({ origin: w.origin, seq: w.seq, verdict: 0 });
      expect(await config.get('color')).toMatchObject({ found: true, value: 'blue', version: w.version });
      // A value that is not UTF-8 comes back whole as bytes (and not as text).
      const bin = Uint8Array.from([0xff, 0x00, 0xfe, 0x80]);
      const wb = await config.set('blob', bin);
      expect(wb.verdict).toBe('committed');
      const got = await config.get('blob');
      expect(got.value).toBeUndefined();
      expect(got.bytes).toEqual(bin);
      expect((await config.get('color')).bytes).toEqual(new TextEncoder().encode('blue'));
    } finally {
      config.close();
    }
  });

  it('no daemon: DaemonNotRunning, an AdminError with code daemon-not-running', async () => {
    const e = await failure(AdminClient.connect(join(dir, 'none.sock')));
    expect(e).toBeInstanceOf(DaemonNotRunning);
    expect(e.code).toBe('daemon-not-running');
    expect(ADMIN_ERROR_CODES).toContain(e.code);
  });
});

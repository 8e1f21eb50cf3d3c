import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { AdminClient, AdminError, DaemonNotRunning } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import { errorCodeDocs } from '../tools/admin-doc.js';
import {
  ADMIN_COMMANDS,
  ADMIN_ERROR_CODES,
  type AdminCommand,
  type AdminErrorCode,
  type CollapseEvent,
  type LifecycleEvent,
} from '../client/protocol.js';
import { portBase } from './ports.js';

/**
 * The admin protocol (client/protocol.ts) against a real spookd admin socket in this process:
 * results typed per command, failures as {code, message, field} with stable codes.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-admin-'));
const port = portBase('admin-protocol.test.ts');
const socket = join(dir, 'a.sock');
const keys = { a: generateKeyPair(), b: generateKeyPair() };
let d: Spookd;
/** a's peer, started only by the stream test: until then the pair is forming. */
let b: Spookd;
let client: AdminClient;
let startedAt: number;

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
  startedAt = Date.now();
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

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * The error codes each folder's sources write: every string literal whose contextual type is
 * AdminErrorCode (an AdminFault's or SpookError's code, a table of codes, an error body's `code`).
 */
function errorCodesWritten(folders: string[]): Record<string, Set<string>> {
  const files = folders.flatMap((folder) =>
    readdirSync(join(ROOT, folder), { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => join(ROOT, folder, f)),
  );
  const program = ts.createProgram(files, {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
    types: ['node'],
  });
  const checker = program.getTypeChecker();
  const all = new Set<string>(ADMIN_ERROR_CODES);
  const isCodeType = (t: ts.Type | undefined): boolean => {
    const lits = (t?.isUnion() ? t.types : t ? [t] : []).filter((x) => x.isStringLiteral()).map((x) => (x as ts.StringLiteralType).value);
    return lits.length >= all.size && [...all].every((c) => lits.includes(c));
  };
  const found: Record<string, Set<string>> = Object.fromEntries(folders.map((f) => [f, new Set<string>()]));
  for (const f of files) {
    const into = found[relative(ROOT, f).split(sep)[0]];
    const visit = (n: ts.Node): void => {
      if (ts.isStringLiteral(n) && isCodeType(checker.getContextualType(n))) into.add(n.text);
      n.forEachChild(visit);
    };
    visit(program.getSourceFile(f)!);
  }
  return found;
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
    expect(p.registers[0].snapshotting).toBe(false); // no background snapshot under way (store-background.test.ts has them)
    expect(p.timers.map((t) => t.timer)).toContain('keepalive'); // the pair core's named timers, earliest first
    const g = await client.request('get', { register: 'config', key: 'absent' });
    expect(g).toMatchObject({ register: 'config', found: false });
  });

  it('one clock: instants are epoch ms, durations ms', async () => {
    const now = Date.now();
    const p = await client.request('pair', { peer: 'b' });
    expect(p.since).toBeGreaterThanOrEqual(startedAt - 5);
    expect(p.since).toBeLessThanOrEqual(now + 5);
    expect(p.fenced).toBeNull();
    for (const t of p.timers) {
      expect(t.inMs).toBeGreaterThanOrEqual(0);
      if (t.at !== null) {
        expect(Number.isInteger(t.at)).toBe(true);
        expect(Math.abs(t.at - (now + t.inMs))).toBeLessThan(1_000); // the deadline is `inMs` from now, on the wall clock
      }
    }
    const s = await client.request('status');
    expect(s.uptimeMs).toBeLessThanOrEqual(Date.now() - startedAt + 5);
    expect((await client.request('xdp')).attachedAt).toBeNull(); // no XDP here: null, else epoch ms
    expect((await client.request('domain', { domain: 'main' })).recentPartitions.every((x) => typeof x.at === 'number')).toBe(true);
  });

  it('watch and events refuse an unknown peer or register at once (not a silent stream)', async () => {
    const reg = await failure(client.stream('watch', { register: 'nope' }, () => {}));
    expect(reg.code).toBe('unknown-register');
    expect(reg.field).toBe('register');
    expect(reg.message).toContain('configured: config');
    const peer = await failure(client.stream('events', { peer: 'zed' }, () => {}));
    expect(peer.code).toBe('unknown-peer');
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
      [client.request('wrap-remove', { port: 5432, transport: 'udp' }), 'conflict', 'port'],
      [client.request('wrap-remove', { port: 5432, transport: 'sctp' as 'udp' }), 'bad-argument', 'transport'],
      [client.request('wrap-add', { protocol: 'gopher', port: 70, peer: 'b' }), 'bad-argument', 'protocol'],
      [client.request('wrap-add', { protocol: 'ssh', port: 70, peer: 'b', whenDown: 'maybe' as 'hold' }), 'bad-argument', 'whenDown'],
      [client.request('wrap-add', { protocol: 'ssh', port: 70, peer: 'b', connectTimeout: '2h' }), 'bad-argument', 'connectTimeout'],
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
      // Exactly the fields of CollapseEvent, the state hash among them as 16 hex digits.
      expect(Object.keys(c).sort()).toEqual(['at', 'entries', 'hash', 'pair', 'peer', 'register', 'type', 'version']);
      expect(c.hash).toMatch(/^[0-9a-f]{16}$/);
      expect(c.pair).toBe(w.pair); // the pair that numbered the write's seq
      expect(c.entries).toContainEqual({ origin: w.origin, seq: w.seq, verdict: 'committed', reason: null });
      expect(await config.get('color')).toMatchObject({ found: true, value: 'blue', version: w.version });
      // A rejection: the same strings as the write's outcome, the reason by name.
      const r = await config.cas('color', 999, 'red');
      expect(r).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch' });
      await until(() => collapses.some((x) => x.entries.some((e) => e.seq === r.seq && e.origin === r.origin)));
      const rc = collapses.flatMap((x) => x.entries).find((e) => e.seq === r.seq && e.origin === r.origin);
      expect(rc).toEqual({ origin: r.origin, seq: r.seq, verdict: 'rejected', reason: 'cas-version-mismatch' });
      // One clock: event instants are epoch ms, as Date.now() is.
      for (const ev of [...lifecycle, ...collapses]) {
        expect(Number.isInteger(ev.at)).toBe(true);
        expect(ev.at).toBeGreaterThanOrEqual(startedAt - 5);
        expect(ev.at).toBeLessThanOrEqual(Date.now() + 5);
      }
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

  it("the daemon's tables answer exactly ADMIN_COMMANDS: every command has a handler, every handler is listed", () => {
    const { commands, streams } = d['admin']!.commands;
    expect([...commands, ...streams].sort()).toEqual([...ADMIN_COMMANDS].sort());
    expect(commands.filter((c) => streams.includes(c))).toEqual([]);
  });

  it('every error code the daemon can send is in ADMIN_ERROR_CODES and every listed code is sent (client-side codes by the library only)', () => {
    const { drivers: daemon, client: library } = errorCodesWritten(['drivers', 'client']);
    const codes = errorCodeDocs();
    expect(codes.map((c) => c.value)).toEqual([...ADMIN_ERROR_CODES]);
    expect([...daemon].filter((c) => !(ADMIN_ERROR_CODES as readonly string[]).includes(c))).toEqual([]);
    const clientSide = codes.filter((c) => /^Client side\b/.test(c.doc)).map((c) => c.value);
    expect(clientSide).toEqual(expect.arrayContaining(['daemon-not-running', 'connection-closed', 'timeout', 'aborted']));
    for (const c of codes) {
      if (clientSide.includes(c.value)) {
        expect(daemon.has(c.value), `${c.value} is documented client side, yet spookd sends it`).toBe(false);
        expect(library.has(c.value), `${c.value} is documented client side, yet the library never raises it`).toBe(true);
      } else expect(daemon.has(c.value), `${c.value}: spookd never sends it (a client-side code says "Client side:")`).toBe(true);
    }
  }, 60_000);

  it('no daemon: DaemonNotRunning, an AdminError with code daemon-not-running', async () => {
    const e = await failure(AdminClient.connect(join(dir, 'none.sock')));
    expect(e).toBeInstanceOf(DaemonNotRunning);
    expect(e.code).toBe('daemon-not-running');
    expect(ADMIN_ERROR_CODES).toContain(e.code);
  });
});

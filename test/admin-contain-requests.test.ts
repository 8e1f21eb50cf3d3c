import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { ADMIN_COMMANDS, ADMIN_MAX_REQUEST } from '../client/protocol.js';
import { ADMIN_ARGUMENTS, ECHO_MAX } from '../drivers/admin/args.js';
import { ADMIN_LIMITS, MAX_REQUESTS_IN_PROGRESS } from '../drivers/admin/server.js';
import { FEED_LIMITS } from '../drivers/admin/feed.js';
import { WATCH_LIMITS } from '../drivers/admin/pair.js';
import { RawAdmin, startSoloSpookd, until } from './admin-solo.js';

/**
 * Containment of the admin socket's requests (review): a request's unknown fields are refused before
 * anything is kept of it, a command awaiting its answer holds its id and not its line, the lines
 * awaiting answers are bounded in characters, an error never quotes more than a few dozen characters
 * of what was sent, and a wrapper's duration of another type is a bad argument naming it.
 *
 * One spookd in this process whose peer never runs; its domain `main` has a member that never runs
 * either (no majority), so a `dpropose` waits for its outcome as long as asked. Ports: free ones the
 * kernel gives (UDP and TCP), not a block of test/ports.ts.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-contain-req-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

const startSpookd = (): Promise<Spookd> =>
  startSoloSpookd(dir, socket, {
    domains: [{ name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer', maxPending: 4096 }],
  });
type Raw = RawAdmin;
const Raw = { open: (): Promise<RawAdmin> => RawAdmin.open(socket) };

/** A domain write that stays pending (no majority) for a minute; `pad` rides in its op, a field no check reads. */
const pendingWrite = (id: number, value: string, pad?: string): unknown => ({
  id,
  cmd: 'dpropose',
  args: { domain: 'main', timeoutMs: 60_000, ops: [{ register: 'kv', op: 'set', key: `k${id}`, value, ...(pad ? { pad } : {}) }] },
});

beforeAll(async () => {
  d = await startSpookd();
});

afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the argument schema', () => {
  it('declares every command and stream once, and docs/ADMIN-API.md shows exactly those argument names', () => {
    const doc = readFileSync(new URL('../docs/ADMIN-API.md', import.meta.url), 'utf8');
    expect(Object.keys(ADMIN_ARGUMENTS).sort()).toEqual([...ADMIN_COMMANDS].sort());
    for (const c of ADMIN_COMMANDS) {
      const at = doc.search(new RegExp(`^#{3,4} ${c}$`, 'm'));
      expect(at, c).toBeGreaterThan(0);
      const section = doc.slice(at, doc.indexOf('\n#', at + 1));
      const shown = [...section.matchAll(/^\| `([^`]+)`(?: \/ `([^`]+)`)? \|/gm)].flatMap((m) => (m[2] ? [m[1], m[2]] : [m[1]]));
      expect(shown.sort(), c).toEqual([...ADMIN_ARGUMENTS[c]].sort());
    }
  });

  it('documents the limits beside the others (requests in progress, watch streams)', () => {
    const doc = readFileSync(new URL('../docs/ADMIN-API.md', import.meta.url), 'utf8');
    const row = (code: string): string => doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`)) ?? '';
    expect(row('too-many-requests')).toContain(`(${MAX_REQUESTS_IN_PROGRESS})`);
    expect(row('too-many-requests')).toContain(`${ADMIN_LIMITS.maxInProgressChars} characters`);
    expect(row('too-many-requests')).toContain(`${ADMIN_LIMITS.maxInProgressTotal} characters`);
    expect(row('too-many-watchers')).toContain(
      `\`watch\`/\`events\`: as many of those streams (${WATCH_LIMITS.perConnection} per connection, ${WATCH_LIMITS.total} in all)`,
    );
    expect(row('too-many-watchers')).toContain(`(${FEED_LIMITS.perConnection} per connection, ${FEED_LIMITS.total} in all)`);
    expect(row('bad-request')).toContain('has a field its command does not define');
    // One request of the largest size always fits beside smaller ones, and in all.
    expect(ADMIN_LIMITS.maxInProgressChars).toBeGreaterThanOrEqual(2 * ADMIN_MAX_REQUEST);
    expect(ADMIN_LIMITS.maxInProgressTotal).toBeGreaterThanOrEqual(ADMIN_LIMITS.maxInProgressChars);
  });
});

describe('unknown argument fields', () => {
  it('are refused for every command and stream (bad-request naming the field), and nothing runs', async () => {
    const c = await Raw.open();
    try {
      const subscribers = d.subscribers.size;
      ADMIN_COMMANDS.forEach((cmd, i) => c.write({ id: i + 1, cmd, args: { zz: 1 } }));
      for (let i = 0; i < ADMIN_COMMANDS.length; i++) {
        const r = await c.reply(i + 1);
        expect(r.error, ADMIN_COMMANDS[i]).toEqual({
          code: 'bad-request',
          message: expect.stringContaining('no argument "zz"') as string,
          field: 'zz',
        });
      }
      expect(d.subscribers.size).toBe(subscribers);
      expect(d.wraps.list()).toEqual([]);
      // The names it takes are still taken; a command without arguments takes none.
      c.write({ id: 100, cmd: 'status', args: {} });
      c.write({ id: 101, cmd: 'pair', args: { peer: 'b' } });
      c.write({ id: 102, cmd: 'status', args: { peer: 'b' } });
      expect((await c.reply(100)).ok).toBe(true);
      expect((await c.reply(101)).ok).toBe(true);
      expect((await c.reply(102)).error).toMatchObject({
        code: 'bad-request',
        field: 'peer',
        message: expect.stringMatching(/arguments: none/),
      });
      // args that is not an object is refused naming it.
      c.write({ id: 103, cmd: 'status', args: [1] });
      c.write({ id: 104, cmd: 'status', args: 'x' });
      expect((await c.reply(103)).error).toMatchObject({ code: 'bad-request', field: 'args' });
      expect((await c.reply(104)).error).toMatchObject({ code: 'bad-request', field: 'args' });
    } finally {
      c.close();
    }
  });

  it('a large unknown field is refused before the command runs: no write is pending, nothing is counted in progress', async () => {
    const c = await Raw.open();
    try {
      const junk = `[${'[],'.repeat(700_000)}[]]`; // 2 MiB of line that JSON.parse inflates many times
      c.write(
        `{"id":1,"cmd":"dpropose","args":{"domain":"main","timeoutMs":60000,"ops":[{"register":"kv","op":"set","key":"j","value":"v"}],"junk":${junk}}}\n`,
      );
      const r = await c.reply(1);
      expect(r.error).toMatchObject({ code: 'bad-request', field: 'junk' });
      expect(r.error!.message).toContain('dpropose has no argument "junk" (its arguments: domain, ops, timeoutMs)');
      expect(d.admin!.connections.every((x) => x.inProgress === 0 && x.cleanups === 0)).toBe(true);
      expect(d.admin!.inProgressChars).toBe(0);
      expect(d.domain('main').node.outcomeOf(1)).toBeUndefined();
    } finally {
      c.close();
    }
  });
});

describe('a command awaiting its answer', () => {
  it('holds its id, not its request line nor its parsed arguments', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heap = (): number => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    const c = await Raw.open();
    try {
      // A field inside an op, which no check reads: parsed, then never used. (Flat from the start: a repeat() would be
      // flattened, 8 MB more of this test's own, when first written.)
      const pad = Buffer.alloc(8_000_000, 'x').toString('latin1');
      const R = 3;
      const before = heap();
      for (let i = 0; i < R; i++) c.write(`${JSON.stringify(pendingWrite(10 + i, 'v', pad))}\n`);
      await until(() => d.admin!.connections.some((x) => x.inProgress === R));
      const per = (heap() - before) / R;
      // Before: the parsed request stayed referenced until the answer (8 MB of string each, more with the line).
      expect(per).toBeLessThan(1_000_000);
    } finally {
      c.close();
    }
    await until(() => d.admin!.inProgressChars === 0);
  });
});

describe('request lines awaiting their answer', () => {
  it('are bounded in characters per connection and in all (too-many-requests naming the limit); released when answered or closed', async () => {
    const admin = d.admin!;
    const saved = { ...admin.limits };
    Object.assign(admin.limits, { maxInProgressChars: 100_000, maxInProgressTotal: 150_000 });
    const a = await Raw.open();
    const b = await Raw.open();
    try {
      const value = 'v'.repeat(40_000);
      a.write(pendingWrite(1, value));
      a.write(pendingWrite(2, value));
      a.write(pendingWrite(3, value));
      const refused = await a.reply(3);
      expect(refused.error).toMatchObject({ code: 'too-many-requests' });
      expect(refused.error!.message).toMatch(/limit of 100000 \(maxInProgressChars\)/);
      await until(() => admin.connections.some((x) => x.inProgress === 2));
      const held = admin.inProgressChars;
      expect(held).toBeGreaterThan(80_000);
      expect(held).toBeLessThanOrEqual(100_000);
      // Another connection: one more fits in all, the next does not.
      b.write(pendingWrite(4, value));
      b.write(pendingWrite(5, value));
      const refusedAll = await b.reply(5);
      expect(refusedAll.error).toMatchObject({ code: 'too-many-requests' });
      expect(refusedAll.error!.message).toMatch(/limit of 150000 \(maxInProgressTotal\)/);
      // A small request still fits; an answered one holds nothing.
      b.write({ id: 6, cmd: 'status' });
      expect((await b.reply(6)).ok).toBe(true);
      // The first connection goes: what it held is released, and the other's next write is taken.
      a.close();
      await until(() => admin.inProgressChars < held);
      b.write(pendingWrite(7, value));
      await until(() => admin.connections.some((x) => x.inProgress === 2));
      expect(b.lines.find((l) => l.id === 7)).toBeUndefined(); // pending, not refused
      // One request as large as the per-connection limit is taken when nothing else is in progress.
      b.close();
      await until(() => admin.inProgressChars === 0);
      const c = await Raw.open();
      const line = JSON.stringify(pendingWrite(8, 'v'));
      c.write(`${JSON.stringify(pendingWrite(8, 'v'.repeat(100_000 - line.length + 1)))}\n`);
      await until(() => admin.connections.some((x) => x.inProgress === 1));
      expect(admin.inProgressChars).toBe(100_000);
      c.close();
      await until(() => admin.inProgressChars === 0);
    } finally {
      a.close();
      b.close();
      Object.assign(admin.limits, saved);
    }
  });
});

describe('an error quotes what was sent', () => {
  it('cut to a few dozen characters, however much was sent (unknown command, field, peer, register, domain, group, cursor, op, protocol)', async () => {
    const big = '\\'.repeat(1_000_000); // 2 MB as JSON: each character escaped
    const c = await Raw.open();
    try {
      const requests: [string, Record<string, unknown>][] = [
        [big, {}],
        ['status', { [big]: 1 }],
        ['pair', { peer: big }],
        ['get', { peer: 'b', register: big, key: 'k' }],
        ['set', { peer: 'b', register: big, key: 'k', value: 'v' }],
        ['scan', { peer: 'b', register: big }],
        ['scan', { peer: 'b', register: 'config', cursor: big }],
        ['watch', { register: big }],
        ['feed', { peer: 'b', register: big }],
        ['domain', { domain: big }],
        ['group', { group: big }],
        ['dget', { domain: 'main', register: big, key: 'k' }],
        ['dscan', { domain: 'main', register: big }],
        ['dfeed', { domain: 'main', register: big }],
        ['dpropose', { domain: 'main', ops: [{ register: 'kv', op: big, key: 'k' }] }],
        ['txn', { peer: 'b', register: 'config', ops: [{ op: big, key: 'k' }] }],
        ['txn', { peer: 'b', register: 'config', ops: [{ register: big, op: 'del', key: 'k' }] }],
        ['member', { domain: 'main', add: big }],
        ['wrap-add', { protocol: big, port: 5555, peer: 'b' }],
        ['wrap-add', { protocol: 'tcp', port: 5555, peer: big }],
        ['wrap-add', { protocol: 'tcp', port: 5555, peer: 'b', whenDown: big }],
        ['wrap-remove', { port: 5555, transport: big }],
      ];
      requests.forEach(([cmd, args], i) => c.write({ id: i + 1, cmd, args }));
      for (let i = 0; i < requests.length; i++) {
        const r = await c.reply(i + 1);
        const what = `${requests[i][0].slice(0, 20)} ${Object.keys(requests[i][1]).join(',').slice(0, 40)}`;
        expect(r.ok, what).toBe(false);
        expect(r.rawLength, what).toBeLessThan(1000);
        expect(r.error!.message, what).toContain(`(truncated: ${big.length} characters)`);
        expect((r.error!.field ?? '').length, what).toBeLessThanOrEqual(ECHO_MAX + 1);
      }
    } finally {
      c.close();
    }
  });
});

describe('wrap-add durations', () => {
  it('of another type than text or milliseconds: bad-argument naming the field, not an internal error', async () => {
    const c = await Raw.open();
    try {
      c.write({ id: 1, cmd: 'wrap-add', args: { protocol: 'tcp', port: 5555, peer: 'b', hold: true } });
      c.write({ id: 2, cmd: 'wrap-add', args: { protocol: 'tcp', port: 5555, peer: 'b', connectTimeout: {} } });
      c.write({ id: 3, cmd: 'wrap-add', args: { protocol: 'tcp', port: 5555, peer: 'b', hold: ['30s'] } });
      expect((await c.reply(1)).error).toMatchObject({ code: 'bad-argument', field: 'hold' });
      expect((await c.reply(2)).error).toMatchObject({ code: 'bad-argument', field: 'connectTimeout' });
      expect((await c.reply(3)).error).toMatchObject({ code: 'bad-argument', field: 'hold' });
      expect(d.wraps.list()).toEqual([]);
    } finally {
      c.close();
    }
  });
});

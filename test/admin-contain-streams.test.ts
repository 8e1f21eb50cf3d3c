import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { ChangeRing } from '../core/register/changes.js';
import { Feeds, type FeedOptions } from '../drivers/admin/feed.js';
import { feedsOf } from '../drivers/admin/read.js';
import { WATCH_LIMITS, watchesOf } from '../drivers/admin/pair.js';
import type { Call } from '../drivers/admin/handlers.js';
import { RawAdmin, startSoloSpookd, until } from './admin-solo.js';

/**
 * Containment of the admin socket's streams (review): `watch` and `events` are bounded per connection
 * and in all, as feeds are; a feed that ends by itself (`compacted`, `overflow`) lets go of what it
 * held for its connection (its removal hook, its callbacks) at once, not when the connection closes.
 *
 * One spookd in this process whose peer never runs. Ports: free ones the kernel gives (UDP and TCP),
 * not a block of test/ports.ts.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-contain-streams-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

const startSpookd = (): Promise<Spookd> =>
  startSoloSpookd(dir, socket, { domains: [{ name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' }] });
type Raw = RawAdmin;
const Raw = { open: (): Promise<RawAdmin> => RawAdmin.open(socket) };

beforeAll(async () => {
  d = await startSpookd();
});

afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('watch and events streams', () => {
  it(`are bounded per connection (${WATCH_LIMITS.perConnection}) and in all (${WATCH_LIMITS.total}): too-many-watchers; released when the connection goes`, async () => {
    const base = d.subscribers.size;
    const conns: Raw[] = [];
    try {
      // One connection: its limit of watch and events streams together, then one more is refused and subscribes nothing.
      const a = await Raw.open();
      conns.push(a);
      for (let i = 0; i < WATCH_LIMITS.perConnection; i++)
        a.write({ id: i + 1, cmd: i % 2 ? 'events' : 'watch', args: i % 4 === 0 ? { peer: 'b' } : {} });
      await a.until(() => a.lines.length >= WATCH_LIMITS.perConnection);
      expect(a.lines.every((l) => l.result === 'streaming')).toBe(true);
      const removals = d.removals.size;
      a.write({ id: 1000, cmd: 'watch', args: { peer: 'b', register: 'config' } });
      a.write({ id: 1001, cmd: 'events', args: {} });
      await a.until(() => a.answered(1001) !== undefined);
      for (const id of [1000, 1001]) {
        expect(a.answered(id)!.error?.code).toBe('too-many-watchers');
        expect(a.answered(id)!.error?.message).toContain(`the limit is ${WATCH_LIMITS.perConnection}`);
      }
      expect(d.subscribers.size - base).toBe(WATCH_LIMITS.perConnection);
      expect(d.removals.size).toBe(removals);
      // Other connections up to the limit in all; then one more anywhere is refused.
      const others = WATCH_LIMITS.total / WATCH_LIMITS.perConnection - 1;
      for (let k = 0; k < others; k++) {
        const c = await Raw.open();
        conns.push(c);
        let s = '';
        for (let i = 0; i < WATCH_LIMITS.perConnection; i++) s += `${JSON.stringify({ id: i + 1, cmd: 'watch', args: {} })}\n`;
        c.write(s);
        await c.until(() => c.lines.length >= WATCH_LIMITS.perConnection);
        expect(c.lines.every((l) => l.result === 'streaming')).toBe(true);
      }
      expect(watchesOf.get(d)!.open).toBe(WATCH_LIMITS.total);
      const late = await Raw.open();
      conns.push(late);
      late.write({ id: 1, cmd: 'watch', args: {} });
      await late.until(() => late.lines.length >= 1);
      expect(late.lines[0].error).toMatchObject({
        code: 'too-many-watchers',
        message: expect.stringContaining(`spookd has ${WATCH_LIMITS.total}`),
      });
      // The first connection goes: its streams are released, and the late one may open one.
      a.close();
      await until(() => watchesOf.get(d)!.open === WATCH_LIMITS.total - WATCH_LIMITS.perConnection);
      late.write({ id: 2, cmd: 'watch', args: {} });
      await late.until(() => late.lines.length >= 2);
      expect(late.lines[1].result).toBe('streaming');
    } finally {
      for (const c of conns) c.close();
    }
    await until(() => watchesOf.get(d)!.open === 0 && d.subscribers.size === base);
  });
});

describe('a feed that ends by itself', () => {
  it('compacted: its removal hook and its callbacks go at once, not when the connection closes (feed and dfeed)', async () => {
    const c = await Raw.open();
    try {
      const removals = d.removals.size;
      const N = 200; // over the 64 feeds a connection may hold open: each ended frees its place
      for (let i = 0; i < N; i += 40) {
        let s = '';
        for (let j = i; j < i + 40; j++)
          s += `${JSON.stringify(
            j % 2
              ? { id: j + 1, cmd: 'feed', args: { peer: 'b', register: 'config', fromVersion: 1e12 } }
              : { id: j + 1, cmd: 'dfeed', args: { domain: 'main', register: 'kv', fromVersion: 1e12 } },
          )}\n`;
        c.write(s);
        await c.until(() => c.lines.filter((l) => l.event?.type === 'compacted').length === i + 40);
      }
      expect(c.lines.filter((l) => l.result === 'streaming').length).toBe(N);
      // Nothing is held for them: no removal hook, no callback for the connection's end, no open feed.
      expect(d.removals.size).toBe(removals);
      expect(d.admin!.connections.map((x) => x.cleanups)).toEqual([0]);
      expect(feedsOf.get(d)!.stats.open).toBe(0);
      // The connection goes on.
      c.write({ id: 1000, cmd: 'status' });
      await c.until(() => c.answered(1000) !== undefined);
      expect(c.answered(1000)!.ok).toBe(true);
    } finally {
      c.close();
    }
  });

  it('overflow or compacted: Feeds tells it once (finished), not when the client closes it', async () => {
    const ring = new ChangeRing({ maxRecords: 100, maxBytes: 1 << 20 });
    const feeds = new Feeds();
    const open = (o: Partial<FeedOptions>, backlog: number): { finished: number; closes: (() => void)[]; events: string[] } => {
      const r = { finished: 0, closes: [] as (() => void)[], events: [] as string[] };
      const call: Call = {
        onClose: (f) => void r.closes.push(f),
        onConnectionClose: () => {},
        conn: r,
        backlog: () => backlog,
        onDrain: () => () => {},
      };
      feeds.open(
        { ring, current: () => ring.last },
        { fromVersion: 0, prefix: new Uint8Array(0), maxBytes: 1024, maxEvents: 10, ...o },
        call,
        (ev) => void r.events.push(ev.type),
        () => void r.finished++,
      );
      return r;
    };
    const over = open({}, 1 << 20); // its client never reads: over its 1 KiB at once
    const behind = open({ fromVersion: 5 }, 0); // past the register's version
    const live = open({}, 0);
    await new Promise((r) => setTimeout(r, 50));
    expect([over.events, over.finished]).toEqual([['overflow'], 1]);
    expect([behind.events, behind.finished]).toEqual([['compacted'], 1]);
    expect(live.finished).toBe(0);
    expect(feeds.stats.open).toBe(1);
    // Closed by its client: its callbacks run, it is not said to have finished by itself.
    for (const f of live.closes) f();
    expect(live.finished).toBe(0);
    expect(feeds.stats.open).toBe(0);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { Spookd } from '../drivers/daemon/spookd.js';
import { type SpookError } from '../client/admin-client.js';
import { openRegister, type RegisterHandle } from '../client/register.js';
import { Session } from '../client/session.js';
import * as feed from '../client/feed.js';
import type { Outcome } from '../client/protocol.js';
import { feedsOf } from '../drivers/admin/read.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';

/**
 * The library tells the application the truth when spookd or the application misbehaves: a
 * handle closed while a watch reconnects, a stream started as its handle closes, an overflow, a
 * stalled consumer, a write that waited for a reconnect. Two spookd in this process (a pair a-b).
 */
const lab = inProcess('spook-client-truth', ['a', 'b'], portBase('client-truth.test.ts'));
const cfg = (name: 'a' | 'b') => configOf(lab, name, [name === 'a' ? 'b' : 'a']);
const hosts: Partial<Record<'a' | 'b', Spookd>> = {};
const sock = (n: 'a' | 'b'): string => cfg(n).adminSocket;

async function start(n: 'a' | 'b'): Promise<void> {
  hosts[n] = new Spookd(cfg(n), lab.keys[n], logOf(lab, n));
  await hosts[n]!.start();
}
async function stop(n: 'a' | 'b'): Promise<void> {
  await hosts[n]?.stop();
  hosts[n] = undefined;
}
const entangled = (): boolean => (['a', 'b'] as const).every((n) => hosts[n]?.link(n === 'a' ? 'b' : 'a').pair.state === 'ENTANGLED');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const committed = (o: Outcome): number => {
  expect(o.verdict).toBe('committed');
  return o.version!;
};

let ra: RegisterHandle;

beforeAll(async () => {
  await start('a');
  await start('b');
  await until('the pair entangled', entangled);
  ra = await openRegister('config', { socket: sock('a') });
}, 30_000);
afterAll(async () => {
  ra?.close();
  await stop('a');
  await stop('b');
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('the library tells the truth', { timeout: 60_000 }, () => {
  it('a watch whose handle is closed while it resubscribes stops retrying (ended as by close(): no onEnd)', async () => {
    const session = await Session.open(sock('a'));
    let streamCalls = 0;
    const real = session.stream.bind(session);
    (session as unknown as { stream: typeof real }).stream = ((...a: Parameters<typeof real>) => {
      streamCalls++;
      return real(...a);
    }) as typeof real;
    const ends: SpookError[] = [];
    await feed.watch(session, { register: 'config' }, 'f1/', {
      onChange: () => {},
      onEnd: (e) => ends.push(e),
    });
    expect(streamCalls).toBe(1);
    // spookd goes away: the watch starts resubscribing with backoff (documented).
    await stop('a');
    await sleep(300);
    // The application closes its handle (here: the session the handle owns).
    session.close();
    const atClose = streamCalls;
    await start('a');
    // Before: an attempt every 2 s for ever, each failing `connection-closed`, taken as transient.
    await sleep(2_500);
    expect(streamCalls - atClose).toBeLessThanOrEqual(1); // at most the attempt under way at close()
    const settled = streamCalls;
    await sleep(2_500);
    expect(streamCalls).toBe(settled);
    expect(ends).toEqual([]);
    await until('the pair entangled again', entangled);
  });

  it('a stream started just before close() is refused and closed: nothing delivered after close()', async () => {
    const h = await openRegister('config', { socket: sock('a') });
    const got: number[] = [];
    const p = h.onCollapse((ev) => got.push(ev.version));
    h.close(); // the application closes the handle: "close(): Closes the request connection and every stream"
    await expect(p).rejects.toMatchObject({ code: 'connection-closed' }); // before: it resolved, the stream open
    const v = committed(await ra.set('f2/k', 'v'));
    await until('a watch of the other handle sees it', async () => (await ra.size()).version >= v, 5_000);
    await sleep(300);
    expect(got).toEqual([]);
  });

  it('on an overflow from spookd, onOverflow and onEnd name the last version delivered: resuming from it misses nothing', async () => {
    const v0 = (await ra.size()).version;
    const delivered: number[] = [];
    let info: { lastVersion: number; limit: string } | undefined;
    let deliveredAtOverflow = -1;
    let end: SpookError | undefined;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const w = await ra.watch('f3/', {
      fromVersion: v0,
      maxQueue: 2,
      maxBufferBytes: 16_384,
      onChange: async (c) => {
        if (delivered.length === 0) await gate;
        else await sleep(20);
        delivered.push(c.version);
      },
      onOverflow: (i) => {
        info = i;
        deliveredAtOverflow = w.lastVersion;
        return 'stop';
      },
      onEnd: (e) => (end = e),
    });
    const value = 'z'.repeat(6_000); // one change is under maxBufferBytes
    const versions: number[] = [];
    for (let i = 0; i < 400 && feedsOf.get(hosts.a!)!.stats.overflows === 0; i++) versions.push(committed(await ra.set(`f3/${i}`, value)));
    await until('spookd told overflow', () => feedsOf.get(hosts.a!)!.stats.overflows > 0, 10_000);
    release();
    await until('the watch ended', () => end !== undefined, 20_000);
    expect(info?.limit).toBe('bytes');
    // "Everything up to `lastVersion` was delivered" (before: spookd's last version sent, some of it
    // queued here, not delivered, and dropped by 'stop').
    expect(info!.lastVersion).toBe(deliveredAtOverflow);
    expect(end!.message).toContain(`delivered up to version ${info!.lastVersion}`);
    // An application that resumes from the lastVersion it was told sees every version.
    const after: number[] = [];
    const w2 = await ra.watch('f3/', { fromVersion: info!.lastVersion, onChange: (c) => void after.push(c.version) });
    await until('caught up', () => w2.lastVersion >= Math.max(...versions), 10_000);
    w2.close();
    const seen = new Set([...delivered, ...after]);
    const missed = versions.filter((v) => !seen.has(v));
    expect(missed).toEqual([]);
  });

  it('a stalled consumer holds the library to maxQueueBytes of queued values, then every change is delivered', async () => {
    const session = await Session.open(sock('a'));
    let bytesIn = 0;
    const real = session.stream.bind(session);
    (session as unknown as { stream: typeof real }).stream = ((cmd, args, fn, opts) =>
      real(
        cmd,
        args,
        (ev) => {
          bytesIn += JSON.stringify(ev).length;

          fn(ev);
        },
        opts,
      )) as typeof real;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let delivered = 0;
    const maxBufferBytes = 1 << 20; // what the docs present as the bound of what is held for a slow consumer
    const w = await feed.watch(session, { register: 'config' }, 'f4/', {
      maxBufferBytes,
      maxQueueBytes: maxBufferBytes,
      onChange: async () => {
        delivered++;
        await gate; // the consumer is stuck on its first change
      },
    });
    const value = 'm'.repeat(64 * 1024);
    let last = 0;
    // 100 versions (6.4 MiB of values): within what spookd keeps of the register's changes, so the
    // watch can resume after its overflow (a longer stall ends it `compacted`, and the application rescans).
    for (let i = 0; i < 100; i++) last = committed(await ra.set('f4/k', value));
    await sleep(500);
    // Before: all 100 read and queued for a consumer that took one (~14 MiB on the wire, 14x
    // maxBufferBytes). Now reading stops at maxQueueBytes (and what a read already held), spookd's
    // buffer takes the rest, and past it the watch resumes from what was delivered.
    expect(delivered).toBe(1);
    expect(bytesIn).toBeLessThan(6 * maxBufferBytes);
    release();
    await until('delivered', () => w.lastVersion >= last, 20_000);
    w.close();
    session.close();
  });

  it('a write that waited for a reconnect still hears `pending` before its deadline', async () => {
    // The writer is the pair's follower (the sequencer decides alone); its peer away, its write stays buffered (pending).
    const f: 'a' | 'b' = hosts.a!.link('b').pair.role === 'sequencer' ? 'b' : 'a';
    const other: 'a' | 'b' = f === 'a' ? 'b' : 'a';
    const h = await openRegister('config', { socket: sock(f) });
    await stop(other);
    await stop(f);
    const t0 = Date.now();
    const p = h.set('f5/k', 'v', { timeoutMs: 4_000 }).then(
      (o) => o,
      (e: unknown) => e,
    );
    await sleep(2_000);
    await start(f);
    const r = await p;
    // LIBRARY.md: `pending` comes 1 s before the call's timeoutMs, reckoned once connected (before:
    // 3,000 ms told to spookd before 2 s of reconnecting, so the call's own deadline passed first: `timeout`).
    expect(r).toMatchObject({ verdict: 'pending' });
    expect(Date.now() - t0).toBeLessThan(4_600);
    // The write was in fact proposed and is buffered (pending) in spookd: it will still be decided.
    expect(hosts[f]!.link(other).pair.register('config').pendingCount).toBeGreaterThan(0);
    h.close();
    await start(other);
    await until('the pair entangled again', entangled, 20_000);
  });

  it('a write answered pending: outcome(seq) says pending, across a restart, then its verdict and version, after another restart too', async () => {
    const f: 'a' | 'b' = hosts.a!.link('b').pair.role === 'sequencer' ? 'b' : 'a';
    const other: 'a' | 'b' = f === 'a' ? 'b' : 'a';
    await stop(other);
    const h = await openRegister('config', { socket: sock(f) });
    const o = await h.set('out/k', 'v', { timeoutMs: 1_500 });
    expect(o.verdict).toBe('pending');
    expect(await h.outcome(o.seq)).toMatchObject({ verdict: 'pending', version: null, seq: o.seq });
    await stop(f);
    await start(f);
    expect(await h.outcome(o.seq)).toMatchObject({ verdict: 'pending' }); // its pending record, restored
    await start(other);
    await until('the pair entangled again', entangled, 20_000);
    let told: Outcome | undefined;
    await until('decided', () => {
      void h.outcome(o.seq).then((x) => (told = x));
      return told?.verdict === 'committed';
    });
    const got = await h.get('out/k');
    expect(told!.version).toBe(got.keyVersion);
    // Another restart: the outcome is read back from the log.
    await stop(f);
    await start(f);
    expect(await h.outcome(o.seq)).toMatchObject({ verdict: 'committed', version: got.keyVersion });
    await expect(h.outcome(o.seq + 1_000_000)).rejects.toMatchObject({ code: 'unknown-candidate' });
    h.close();
    await until('the pair entangled again', entangled, 20_000);
  });
});

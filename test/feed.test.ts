import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { rmSync } from 'node:fs';
import { Spookd } from '../drivers/daemon/spookd.js';
import { SCAN_LIMITS, feedsOf } from '../drivers/admin/read.js';
import { AdminClient, SpookError } from '../client/admin-client.js';
import { openRegister, type RegisterHandle } from '../client/register.js';
import { Session, deadline } from '../client/session.js';
import * as feed from '../client/feed.js';
import type { Outcome, DomainOutcome } from '../client/protocol.js';
import { ChangeRing } from '../core/register/changes.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';

/**
 * Scan and the change feed against two spookd in this process (a pair, and a two-member domain):
 * pages of one version while writes go on, an expired cursor refused, a watcher that resumes
 * across a spookd restart with no gap and no duplicate, compaction and overflow told explicitly.
 */
const base = portBase('feed.test.ts');
const lab = inProcess('spook-feed', ['a', 'b'], base);
const extra = {
  registers: [
    { name: 'config', kind: 'map' },
    { name: 'small', kind: 'map', logRecords: 4 },
    { name: 's', kind: 'stream' },
  ],
  domains: [{ name: 'dom', members: [] as string[], registers: [{ name: 'kv', kind: 'map' }], electionMs: 200, heartbeatMs: 20 }],
};
const cfg = (name: 'a' | 'b') => {
  const other = name === 'a' ? 'b' : 'a';
  return configOf(lab, name, [other], { ...extra, domains: [{ ...extra.domains[0], members: [other] }] });
};
const hosts: Record<string, Spookd> = {};
const sock = (n: string): string => cfg(n as 'a' | 'b').adminSocket;

async function start(n: 'a' | 'b'): Promise<void> {
  hosts[n] = new Spookd(cfg(n), lab.keys[n], logOf(lab, n));
  await hosts[n].start();
}
const entangled = (): boolean => ['a', 'b'].every((n) => hosts[n]?.link(n === 'a' ? 'b' : 'a').pair.state === 'ENTANGLED');

let ra: RegisterHandle;
let rb: RegisterHandle;

beforeAll(async () => {
  await start('a');
  await start('b');
  await until('the pair entangled', entangled);
  ra = await openRegister('config', { socket: sock('a') });
  rb = await openRegister('config', { socket: sock('b') });
});
afterAll(async () => {
  ra?.close();
  rb?.close();
  for (const h of Object.values(hosts)) await h.stop();
  rmSync(lab.dir, { recursive: true, force: true });
});

const committed = (o: Outcome): number => {
  expect(o.verdict).toBe('committed');
  return o.version!;
};
const key = (i: number): string => String(i).padStart(3, '0');

async function failure(p: Promise<unknown>): Promise<SpookError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(SpookError);
  return e as SpookError;
}

describe('ChangeRing', () => {
  const change = (n: number) => [{ op: 'set' as const, key: new Uint8Array([n]), value: new Uint8Array(100) }];
  it('holds the versions after its base, bounded in records and bytes; a gap or a reset starts it again', () => {
    const r = new ChangeRing({ maxRecords: 4, maxBytes: 1_000 }, 10);
    let woken = 0;
    r.wakers.add(() => woken++);
    for (let v = 11; v <= 14; v++) r.add(v, change(v));
    expect([r.base, r.last, r.covers(10), r.at(11)?.version]).toEqual([10, 14, true, 11]);
    r.add(12, change(0)); // seen already: ignored
    expect(r.at(12)?.changes[0].key).toEqual(new Uint8Array([12]));
    r.add(15, change(15)); // past 4 records
    expect([r.base, r.last, r.covers(10)]).toEqual([11, 15, false]);
    for (let v = 16; v <= 30; v++) r.add(v, change(v)); // 165 bytes a record: at most 6 fit in 1,000, 4 records
    expect(r.sizeBytes).toBeLessThanOrEqual(1_000);
    expect(r.last - r.base).toBe(4);
    r.add(40, change(40)); // a gap: what lay between is unknown
    expect([r.base, r.last]).toEqual([39, 40]);
    r.reset(50);
    expect([r.base, r.last, r.sizeBytes]).toEqual([50, 50, 0]);
    expect(woken).toBe(4 + 1 + 15 + 1 + 1); // not for the record seen already
  });
});

describe('scan', { timeout: 30_000 }, () => {
  it('pages of one version while writes continue, in byte order, with size', async () => {
    for (let i = 0; i < 50; i++) committed(await ra.set(`k/${key(i)}`, `v${i}`));
    const first = await ra.scan('k/', { limit: 7 });
    const V = first.version;
    expect(first.entries.map((e) => e.key)).toEqual(Array.from({ length: 7 }, (_, i) => `k/${key(i)}`));
    expect(first.next).toBeDefined();
    // Writes after the first page: changed, deleted and new keys, from both ends.
    committed(await ra.set('k/005', 'changed'));
    committed(await rb.del('k/020'));
    committed(await rb.set('k/999', 'new'));
    const pages = [first];
    for (let p = first; p.next;) pages.push((p = await ra.scan('k/', { limit: 7, ...p.next })));
    expect(pages.length).toBe(8);
    for (const p of pages) expect(p.version).toBe(V);
    const all = pages.flatMap((p) => p.entries);
    expect(all.map((e) => e.key)).toEqual(Array.from({ length: 50 }, (_, i) => `k/${key(i)}`));
    expect(all.map((e) => e.value)).toEqual(Array.from({ length: 50 }, (_, i) => `v${i}`));
    for (const e of all) expect(e.keyVersion).toBeLessThanOrEqual(V);
    // A fresh scan sees the writes, at a later version; scanAll walks every page.
    const now = await rb.scanAll('k/', { limit: 9 });
    expect(now.version).toBe(V + 3);
    expect(now.entries.length).toBe(50);
    expect(now.entries.find((e) => e.key === 'k/005')?.value).toBe('changed');
    expect(now.entries.some((e) => e.key === 'k/020')).toBe(false);
    expect(now.entries.at(-1)?.key).toBe('k/999');
    const sz = await ra.size();
    expect(sz).toMatchObject({ kind: 'map', keys: 50, version: V + 3 });
  });

  it('a page after its cursor expired, or of a version no longer held, fails cursor-expired', async () => {
    const first = await ra.scan('k/', { limit: 5, cursorTtlMs: 100 });
    await new Promise((r) => setTimeout(r, 300));
    const e = await failure(ra.scan('k/', { limit: 5, ...first.next }));
    expect(e.code).toBe('cursor-expired');
    expect(e.field).toBe('cursor');
    committed(await ra.set('k/000', 'moved on'));
    const v = await failure(ra.scan('k/', { version: first.version, after: 'k/004' }));
    expect(v.code).toBe('cursor-expired');
    expect(v.field).toBe('version');
  });

  it('cursors and feeds are bounded per connection: too-many-cursors, too-many-watchers', async () => {
    for (const k of ['n/1', 'n/2']) committed(await ra.set(k, 'v'));
    const c = await AdminClient.connect(sock('a'));
    try {
      for (let i = 0; i < 16; i++) expect((await c.request('scan', { register: 'config', prefix: 'n/', limit: 1 })).cursor).toBeDefined();
      const e = await failure(c.request('scan', { register: 'config', prefix: 'n/', limit: 1 }));
      expect(e.code).toBe('too-many-cursors');
      // A scan that fits one page needs no cursor.
      expect((await c.request('scan', { register: 'config', prefix: 'n/', limit: 2 })).cursor).toBeUndefined();
      // The bytes all cursors reference are bounded too: with the bound lowered below one more cursor's, a new one is refused.
      const other = await AdminClient.connect(sock('a'));
      const saved = SCAN_LIMITS.totalBytes;
      try {
        SCAN_LIMITS.totalBytes = 0;
        const b = await failure(other.request('scan', { register: 'config', prefix: 'n/', limit: 1 }));
        expect(b.code).toBe('too-many-cursors');
        expect(b.message).toMatch(/bytes; the limits are .* and 0 \(this scan: \d+ bytes\)/);
      } finally {
        SCAN_LIMITS.totalBytes = saved;
        other.close();
      }
      for (let i = 0; i < 64; i++) await c.stream('feed', { register: 'config' }, () => {});
      expect((await failure(c.stream('feed', { register: 'config' }, () => {}))).code).toBe('too-many-watchers');
      expect(feedsOf.get(hosts.a)!.stats.open).toBeGreaterThanOrEqual(64);
    } finally {
      c.close();
    }
    await until('the feeds ended with their connection', () => feedsOf.get(hosts.a)!.stats.open === 0);
  });

  it('stream registers: scan refused by name, size gives the length', async () => {
    const s = await openRegister('s', { socket: sock('a') });
    try {
      committed(await s.append('hello'));
      expect((await failure(s.scan())).code).toBe('wrong-register-kind');
      expect(await s.size()).toMatchObject({ kind: 'stream', length: 5 });
    } finally {
      s.close();
    }
  });
});

describe('watch', { timeout: 60_000 }, () => {
  it('resumes across a spookd restart with no gap and no duplicate (against the committed sequence)', async () => {
    const v0 = (await ra.size()).version;
    const got: feed.Change[] = [];
    const w = await ra.watch('w/', { fromVersion: v0, onChange: (c) => void got.push(c) });
    const outcomes: Promise<Outcome>[] = [];
    for (let i = 0; i < 40; i++) {
      outcomes.push(rb.set(`w/${key(i)}`, `x${i}`, { timeoutMs: 30_000 }));
      await new Promise((r) => setTimeout(r, 10));
      if (i === 15) {
        // Mid-stream: spookd a goes away under the watcher and comes back.
        await hosts.a.stop();
        await new Promise((r) => setTimeout(r, 200));
        await start('a');
      }
    }
    const expected = (await Promise.all(outcomes)).map((o, i) => ({ key: `w/${key(i)}`, version: committed(o), value: `x${i}` }));
    expected.sort((x, y) => x.version - y.version);
    const last = expected.at(-1)!.version;
    await until('the watcher caught up', () => w.lastVersion >= last, 30_000);
    expect(got.map((c) => ({ key: c.key, version: c.version, value: c.value }))).toEqual(expected);
    expect(got.every((c) => c.op === 'set')).toBe(true);
    expect(w.resubscribes).toBeGreaterThanOrEqual(1);
    w.close();
    await until('the pair entangled again', entangled);
  });

  it('rejected candidates are not changes; deletes are', async () => {
    const v0 = (await ra.size()).version;
    const got: feed.Change[] = [];
    const w = await ra.watch('r/', { fromVersion: v0, onChange: (c) => void got.push(c) });
    const v1 = committed(await ra.set('r/a', '1'));
    const bad = await ra.cas('r/a', 999, '2');
    expect(bad.verdict).toBe('rejected');
    const v2 = committed(await ra.del('r/a'));
    await until('delivered', () => w.lastVersion >= v2);
    expect(got.map((c) => [c.op, c.key, c.version])).toEqual([
      ['set', 'r/a', v1],
      ['del', 'r/a', v2],
    ]);
    w.close();
  });

  it('a version older than spookd holds is reported compacted; the mirror rescans and resumes', async () => {
    const small = await openRegister('small', { socket: sock('a') });
    try {
      for (let i = 0; i < 10; i++) committed(await small.set(`c/${i}`, `${i}`));
      let compacted: { fromVersion: number; oldest: number; current: number } | undefined;
      const w = await small.watch('', { fromVersion: 0, onChange: () => {}, onCompacted: (i) => (compacted = i) });
      await until('compacted', () => compacted !== undefined);
      expect(compacted!.fromVersion).toBe(0);
      expect(compacted!.oldest).toBeGreaterThanOrEqual(6); // the log keeps 4 records
      expect(compacted!.current).toBe(10);
      w.close();
      // Without onCompacted: onEnd with code `compacted`.
      let ended: SpookError | undefined;
      const w2 = await small.watch('', { fromVersion: 1, onChange: () => {}, onEnd: (e) => (ended = e) });
      await until('ended', () => ended !== undefined);
      expect(ended!.code).toBe('compacted');
      w2.close();
      // The mirror: scan, then watch from the scan's version.
      const mirror = new Map<string, string>();
      const snap = await small.scanAll();
      for (const e of snap.entries) mirror.set(e.key, e.value!);
      const w3 = await small.watch('', {
        fromVersion: snap.version,
        onChange: (c) => (c.op === 'del' ? mirror.delete(c.key!) : mirror.set(c.key!, c.value!)),
      });
      const v = committed(await small.set('c/3', 'three'));
      committed(await small.del('c/4'));
      await until('mirror current', () => w3.lastVersion >= v + 1);
      const truth = await small.scanAll();
      expect([...mirror].sort()).toEqual(truth.entries.map((e) => [e.key, e.value]));
      w3.close();
    } finally {
      small.close();
    }
  });

  it('a consumer that does not read gets overflow with the last version sent; the buffer stays bounded', async () => {
    const v0 = (await ra.size()).version;
    const feeds = feedsOf.get(hosts.a)!;
    const overflows = feeds.stats.overflows;
    feeds.stats.maxBacklog = 0;
    const raw = connect(sock('a'));
    await new Promise((r) => raw.once('connect', r));
    raw.write(
      `${JSON.stringify({ id: 1, cmd: 'feed', args: { register: 'config', prefix: 'o/', fromVersion: v0, maxBufferBytes: 16384 } })}\n`,
    );
    await new Promise((r) => setTimeout(r, 100));
    raw.pause();
    const value = 'x'.repeat(1000);
    let total = 0;
    for (let b = 0; b < 8; b++) {
      const batch = Array.from({ length: 100 }, (_, i) => ra.set(`o/${key(b * 100 + i)}`, value));
      for (const o of await Promise.all(batch)) committed(o);
      total += 100 * 1400;
    }
    await until('overflow', () => feeds.stats.overflows > overflows);
    // What spookd held for it never passed its buffer (plus the one event being written).
    expect(feeds.stats.maxBacklog).toBeLessThan(16384 + 2048);
    let text = '';
    raw.setEncoding('utf8');
    raw.on('data', (s: string) => (text += s));
    raw.resume();
    await until('the overflow line', () => text.includes('"overflow"'));
    const lines = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ id: 1, ok: true, result: 'streaming' });
    const events = lines.slice(1).map((l) => l.event);
    const last = events.at(-1);
    expect(last).toMatchObject({ type: 'overflow', register: 'config' });
    const versions = events.filter((e) => e.type === 'changes').map((e) => e.version);
    // In order, none skipped before the overflow, and it names the last version sent.
    for (let i = 1; i < versions.length; i++) expect(versions[i]).toBeGreaterThan(versions[i - 1]);
    expect(last.lastVersion).toBe(versions.at(-1) ?? v0);
    expect(text.length).toBeLessThan(total / 2);
    raw.destroy();
  });

  it('a slow async consumer: the library stops reading, spookd tells overflow, the watch resumes from lastVersion, loses nothing', async () => {
    const v0 = (await ra.size()).version;
    const got: string[] = [];
    const overflows: { lastVersion: number; limit: string }[] = [];
    const w = await ra.watch('q/', {
      fromVersion: v0,
      maxQueue: 20,
      maxBufferBytes: 16384,
      onChange: async (c) => {
        got.push(c.key!);
        if (got.length % 50 === 0) await new Promise((r) => setTimeout(r, 20));
      },
      onOverflow: (i) => {
        overflows.push(i);
        return 'resume';
      },
    });
    const value = 'y'.repeat(1000);
    let last = 0;
    for (let b = 0; b < 8; b++) {
      const outs = await Promise.all(Array.from({ length: 100 }, (_, i) => ra.set(`q/${key(b * 100 + i)}`, value)));
      last = Math.max(last, ...outs.map(committed));
    }
    await until('delivered', () => w.lastVersion >= last, 30_000);
    expect(got).toEqual(Array.from({ length: 800 }, (_, i) => `q/${key(i)}`));
    expect(overflows.length).toBeGreaterThan(0);
    expect(overflows[0].limit).toBe('bytes');
    expect(w.resubscribes).toBeGreaterThanOrEqual(overflows.length);
    w.close();
  });

  it('events/s delivered to a library consumer (catch-up and live)', async () => {
    const N = 3000;
    const v0 = (await ra.size()).version;
    let live = 0;
    let liveFirst = 0;
    let liveLast = 0;
    const wl = await ra.watch('b/', {
      fromVersion: v0,
      onChange: () => {
        if (live++ === 0) liveFirst = performance.now();
        liveLast = performance.now();
      },
    });
    const t0 = performance.now();
    for (let b = 0; b < N / 250; b++) {
      const outs = await Promise.all(Array.from({ length: 250 }, (_, i) => ra.set(`b/${key(b * 250 + i)}`, 'value')));
      for (const o of outs) committed(o);
    }
    const writeMs = performance.now() - t0;
    await until('live delivered', () => live === N, 30_000);
    let n = 0;
    const c0 = performance.now();
    const wc = await ra.watch('b/', { fromVersion: v0, onChange: () => void n++ });
    await until('caught up', () => n === N, 30_000);
    const catchMs = performance.now() - c0;
    wl.close();
    wc.close();
    console.log(
      `feed: ${N} changes; writes ${Math.round((N / writeMs) * 1000)}/s; live delivered ${Math.round((live / Math.max(1, liveLast - liveFirst)) * 1000)}/s; catch-up ${Math.round((N / catchMs) * 1000)} events/s`,
    );
    expect(n).toBe(N);
  });
});

describe('domain registers', { timeout: 60_000 }, () => {
  const kv: feed.DomainTarget = { domain: 'dom', register: 'kv' };
  let session: Session;
  beforeAll(async () => {
    session = await Session.open(sock('a'));
  });
  afterAll(() => session?.close());
  const dset = (k: string, v: string): Promise<DomainOutcome> =>
    session.request(
      'dpropose',
      { domain: 'dom', ops: [{ register: 'kv', op: 'set', key: k, value: v }], timeoutMs: 10_000 },
      deadline({ timeoutMs: 20_000 }),
    );

  it('scan pages at one version and a watch with no gap, against the committed outcomes', async () => {
    await until(
      'a domain leader',
      () => hosts.a.domain('dom').node.raft.leader !== 0 && hosts.a.domain('dom').node.raft.leader !== undefined,
      20_000,
    );
    const v0 = (await feed.size(session, kv)).version;
    const got: feed.Change[] = [];
    const w = await feed.watch(session, kv, 'd/', { fromVersion: v0, onChange: (c) => void got.push(c) });
    for (let i = 0; i < 20; i++) expect((await dset(`d/${key(i)}`, `${i}`)).verdict).toBe('committed');
    // A rejected candidate is not a change.
    const cas = {
      domain: 'dom',
      ops: [{ register: 'kv', op: 'cas' as const, key: 'd/001', expect: 12345, value: 'no' }],
      timeoutMs: 10_000,
    };
    expect((await session.request('dpropose', cas, deadline({ timeoutMs: 20_000 }))).verdict).toBe('rejected');
    const first = await feed.scan(session, kv, 'd/', { limit: 6 });
    expect((await dset('d/000', 'later')).verdict).toBe('committed');
    const pages = [first];
    for (let p = first; p.next;) pages.push((p = await feed.scan(session, kv, 'd/', { limit: 6, ...p.next })));
    const all = pages.flatMap((p) => p.entries);
    expect(all.map((e) => e.key)).toEqual(Array.from({ length: 20 }, (_, i) => `d/${key(i)}`));
    expect(all[0].value).toBe('0');
    for (const p of pages) expect(p.version).toBe(first.version);
    expect(await feed.size(session, kv)).toMatchObject({ kind: 'map', keys: 20, version: first.version + 1 });
    await until('delivered', () => w.lastVersion >= first.version + 1);
    expect(got.map((c) => c.key)).toEqual([...Array.from({ length: 20 }, (_, i) => `d/${key(i)}`), 'd/000']);
    expect(got.map((c) => c.version)).toEqual(Array.from({ length: 21 }, (_, i) => v0 + 1 + i));
    w.close();
  });

  it('a domain watcher resumes across a restart of its spookd with no gap and no duplicate', async () => {
    const sb = await Session.open(sock('b'));
    try {
      const v0 = (await feed.size(session, kv)).version;
      const got: feed.Change[] = [];
      const w = await feed.watch(session, kv, 'e/', { fromVersion: v0, onChange: (c) => void got.push(c) });
      const outs: Promise<DomainOutcome>[] = [];
      for (let i = 0; i < 20; i++) {
        const args = { domain: 'dom', ops: [{ register: 'kv', op: 'set' as const, key: `e/${key(i)}`, value: `${i}` }], timeoutMs: 20_000 };
        outs.push(sb.request('dpropose', args, deadline({ timeoutMs: 30_000 })));
        await new Promise((r) => setTimeout(r, 10));
        if (i === 7) {
          await hosts.a.stop();
          await new Promise((r) => setTimeout(r, 200));
          await start('a');
        }
      }
      const done = await Promise.all(outs);
      for (const o of done) expect(o.verdict).toBe('committed');
      const expected = done.map((o, i) => ({ key: `e/${key(i)}`, index: o.index! })).sort((x, y) => x.index - y.index);
      await until('delivered', () => w.lastVersion >= v0 + 20, 30_000);
      expect(got.map((c) => c.key)).toEqual(expected.map((e) => e.key));
      expect(got.map((c) => c.version)).toEqual(Array.from({ length: 20 }, (_, i) => v0 + 1 + i));
      expect(w.resubscribes).toBeGreaterThanOrEqual(1);
      w.close();
    } finally {
      sb.close();
    }
  });
});

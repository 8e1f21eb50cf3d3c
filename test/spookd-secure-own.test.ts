import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { has, inProcess, until, writeTold, type InProcess } from './inproc.js';
import { portBase } from './ports.js';
import { sequencingPair } from './hold-store.js';
import { QUOTA_DEFAULTS } from '../core/register/quota.js';
import { pairHandlers } from '../drivers/admin/pair.js';

/**
 * A sequencer's own write that waits past its client's timeout because the ends' registers differ
 * (PROTOCOL.md §6.3, §7.1, §10.1 rev 1.22): it is said "pending" only once it is durable, in its
 * pending record (HalfPair.secureOwn) or in the collapse that decided it, and no rewrite of the
 * pending list drops it before that collapse is on disk. Two spookd in this process, a sequencing.
 */
const base = portBase('spookd-secure-own.test.ts');
const call = { onClose: () => {} } as never;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const QUOTA = { ...QUOTA_DEFAULTS, maxKeys: 3 };

/** Two spookd, `a` sequencing their pair (sequencingPair), and a set at `a` whose answer is kept. */
function twoSpookd(lab: InProcess) {
  const { d, stores, make } = sequencingPair(lab);
  /** A set at a with its client's timeout; its answer lands in `answers[key]`. */
  const answers: Record<string, { verdict: string } | undefined> = {};
  const set = (key: string, value: string, timeoutMs: number): void =>
    void Promise.resolve(pairHandlers(d.a).set({ peer: 'c', register: 'config', key, value, timeoutMs } as never, call)).then(
      (r) => (answers[key] = r as { verdict: string }),
    );
  /** The verdict `key` is answered with (at most 5 s from now). */
  const verdictOf = async (key: string): Promise<string> => {
    await until(`${key} answered`, () => answers[key] !== undefined, 5_000);
    return answers[key]!.verdict;
  };
  return { d, stores, make, set, answers, verdictOf };
}

describe('spookd: a sequencer write held by a register mismatch', () => {
  const lab = inProcess('spook-secure', ['a', 'c'], base);
  const { d, stores, make, set, answers, verdictOf } = twoSpookd(lab);

  it('decided in a batch still syncing when its timeout ends: said only once that batch is durable, then committed', async () => {
    expect(d.a.link('c').pair.role).toBe('sequencer');
    const s = stores.get('a-c')!;
    set('k-race', 'v', 1500);
    d.a.link('c').pair.setQuota(d.a.now(), 'config', QUOTA); // a reload at a, in the same turn
    await sleep(500);
    expect(d.a.link('c').pair.registerMismatch).toBeDefined();
    expect(d.a.link('c').pair.register('config').pendingCount).toBe(1);
    // c is reloaded too: the registers agree, a collapses k-race, and that batch's fsync is slow.
    s.hold = true;
    d.c.link('a').pair.setQuota(d.c.now(), 'config', QUOTA);
    await until('the collapse batch syncing', () => s.held.length > 0);
    expect(d.a.link('c').pair.register('config').pendingCount).toBe(0); // decided, in memory only
    await sleep(1500); // its timeout ends: not in the pending file, and its collapse not on disk
    expect(answers['k-race']).toBeUndefined();
    s.release();
    expect(await verdictOf('k-race')).toBe('committed');
  }, 30_000);

  it('still undecided when its timeout ends: recorded, and said "pending" once that record is durable', async () => {
    const s = stores.get('a-c')!;
    set('k-sec', 'v', 800);
    d.a.link('c').pair.setQuota(d.a.now(), 'config', { ...QUOTA, maxKeys: 5 });
    await sleep(400);
    expect(d.a.link('c').pair.registerMismatch).toBeDefined();
    s.hold = true;
    await sleep(1_000); // the timeout ended: the batch with its record is held
    expect(s.held.length).toBeGreaterThan(0);
    expect(answers['k-sec']).toBeUndefined();
    s.release();
    expect(await verdictOf('k-sec')).toBe('pending');
  }, 30_000);

  it('a restart of the sequencer proposes it again: committed at both ends once the registers agree', async () => {
    // a restarts with its configured quota, which c no longer holds: c is reloaded back as well.
    await d.a.stop();
    d.a = make('a', ['c']);
    await d.a.start();
    d.c.link('a').pair.setQuota(d.c.now(), 'config', QUOTA_DEFAULTS);
    await until('k-sec at both ends', () => has(d.a, 'c', 'k-sec') && has(d.c, 'a', 'k-sec'), 10_000);
    expect(d.a.link('c').pair.register('config').pendingCount).toBe(0);
    const w = writeTold(d.a, 'c', 'after');
    await until('a write after it commits', () => w.told.length === 1);
    expect(w.told[0]).toMatchObject({ verdict: 'committed' });
  }, 30_000);

  it('its peer removed meanwhile (a reload): peer-removed, and known not committed', async () => {
    let failed: unknown;
    void Promise.resolve(
      pairHandlers(d.a).set({ peer: 'c', register: 'config', key: 'k-gone', value: 'v', timeoutMs: 60_000 } as never, call),
    ).catch((e: unknown) => (failed = e));
    d.a.link('c').pair.setQuota(d.a.now(), 'config', QUOTA);
    await sleep(300);
    expect(d.a.link('c').pair.register('config').pendingCount).toBe(1);
    await d.a.removePeer('c');
    await until('answered', () => failed !== undefined);
    expect(failed).toMatchObject({ code: 'peer-removed' });
    expect(String((failed as Error).message)).toMatch(/pair's sequencer, could decide the write .*it was not committed/);
  }, 30_000);
});

describe('spookd: the pending list rewritten past 1 MiB at the sequencer', () => {
  const lab = inProcess('spook-secure-compact', ['a', 'c'], base + 2);
  const { d, stores, set, answers } = twoSpookd(lab);

  it('keeps writes said "pending" until the collapse that decided them is durable', async () => {
    const s = stores.get('a-c')!;
    const pendingFile = (): Buffer => readFileSync(join(lab.dir, 'a', 'c', 'config', 'pending'));
    set('Z1', 'z'.repeat(700_000), 300);
    set('W', 'w'.repeat(400_000), 1200);
    set('X', 'x', 1600);
    d.a.link('c').pair.setQuota(d.a.now(), 'config', QUOTA);
    await sleep(1000);
    expect(answers.Z1?.verdict).toBe('pending');
    s.hold = true;
    await sleep(300); // W's timeout: the batch with its record (the file passes 1 MiB) is held
    expect(s.held.length).toBeGreaterThan(0);
    d.c.link('a').pair.setQuota(d.c.now(), 'config', QUOTA); // the registers agree: Z1 and W are collapsed
    await sleep(400); // X's timeout
    for (const f of s.held.splice(0)) f(); // W's batch reaches the disk; what follows stays held
    await sleep(300);
    expect(answers.W?.verdict).toBe('pending');
    expect(s.held.length).toBeGreaterThan(0); // the collapse of Z1 and W is not durable yet
    expect(pendingFile().includes(Buffer.from('zzzz'))).toBe(true);
    expect(pendingFile().includes(Buffer.from('wwww'))).toBe(true);
    s.release();
    await until('the collapse durable, then the list rewritten without them', () => !pendingFile().includes(Buffer.from('zzzz')), 10_000);
    expect(has(d.c, 'a', 'Z1') || has(d.a, 'c', 'Z1')).toBe(true);
  }, 30_000);
});

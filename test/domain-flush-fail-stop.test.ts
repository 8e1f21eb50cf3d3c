/**
 * A domain whose journal's background flush (fsync "everysec") fails is fenced: what it had
 * acknowledged in the last second may be lost. The stop reports it (`storeFailures`, exit 74), as
 * it does a pair store's failed flush, never a clean end: the domain store's close skips the
 * fsync once a flush failed (a retry proves nothing), so nothing else counted it.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { rmSync } from 'node:fs';
import { Spookd } from '../drivers/daemon/spookd.js';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';

const lab = inProcess('spook-dom-flush-fail', ['a', 'b'], 0);
afterAll(() => {
  vi.restoreAllMocks();
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('a domain whose background flush fails', () => {
  it('is fenced, and the stop reports the failure', async () => {
    lab.port.a = await freePort();
    lab.port.b = await freePort(); // nothing runs there: a's domain has no leader, which changes nothing here
    const a = new Spookd(
      configOf(lab, 'a', ['b'], {
        fsync: 'everysec',
        domains: [{ name: 'dom', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], electionMs: 200, heartbeatMs: 20 }],
      }),
      lab.keys.a,
      logOf(lab, 'a'),
    );
    await a.start();
    const seen: Record<string, unknown> = {};
    try {
      // The disk drops the journal's pages: every fsync from now fails (EIO).
      vi.spyOn(FileDomainStore.prototype as unknown as { syncFd: (fd: number) => void }, 'syncFd').mockImplementation(() => {
        throw new Error('EIO: i/o error, fsync (injected)');
      });
      await until('the domain fenced', () => a.domains.get('dom')!.node.fencedCause !== undefined, 5_000);
      seen.fenced = a.domains.get('dom')!.node.fencedCause;
    } finally {
      seen.stopReport = (await a.stop()).storeFailures;
      vi.restoreAllMocks();
    }
    // main: { fenced: 'durable storage failed: …', stopReport: 0 } (exit 0)
    expect(seen).toEqual({ fenced: expect.stringMatching(/durable storage failed.*EIO/), stopReport: 1 });
  }, 20_000);
});

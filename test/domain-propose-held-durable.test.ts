/**
 * A write dpropose held while its member caught up (drivers/admin/domain.ts) is proposed when the
 * member has caught up, within what is left of its timeoutMs. Under group commit (spookd's
 * batchTurns: the turn's inputs are written at its end, setImmediate) its candidate is written
 * with the next turn's batch; if the time left is nothing, its answer must still wait for that
 * batch: `pending` names a seq that is durable, and a batch that fails (the domain fenced) is
 * `refused`, as for a write proposed at once, never `pending` for a candidate never written.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DomainHost, domainIdOf, nodeIdOf, type DomainConfig } from '../drivers/daemon/domains.js';
import { domainHandlers } from '../drivers/admin/domain.js';
import type { Call } from '../drivers/admin/handlers.js';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { encodeEnvelope, type QnBody } from '../wire/qn.js';
import { EntryKind } from '../core/qn/raft.js';
import { generateKeyPair } from '../crypto/primitives.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('a held dpropose proposed with no time left (drivers/admin/domain.ts)', () => {
  it('is answered only once its batch is written: refused when that batch fails, not pending', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-dheld-'));
    dirs.push(dataDir);
    const self = generateKeyPair();
    const peer = generateKeyPair();
    const cfg = {
      name: 'main',
      members: ['b'],
      registers: [{ name: 'kv', kind: 'map' }],
      join: false,
      groups: [],
      policy: 'buffer',
      maxPending: 16,
      electionMs: 60_000, // it stays a follower: b leads
      heartbeatMs: 10_000,
      maxLogEntries: 1000,
    } as DomainConfig;
    const h = new DomainHost(cfg, self, [{ name: 'b', publicKey: peer.publicKey }], dataDir, 'always', pino({ level: 'silent' }), 0);
    const b = nodeIdOf(peer.publicKey);
    let clock = 0; // the daemon's clock (d.now), moved by the test
    // The store fails from the batch after the catch-up on (a disk error): that batch fences the domain.
    let failing = false;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const store = (h as any).store as { persist: (w: unknown) => void };
    const persist = store.persist.bind(store);
    store.persist = (w) => {
      if (failing) throw new Error('EIO (test)');
      persist(w);
    };
    const drain = (): void => h.drain(() => {});
    // As spookd (domainDirty): the turn's inputs are written at its end, then the domain drains.
    let queued = false;
    h.batchTurns(() => {
      if (queued) return;
      queued = true;
      setImmediate(() => {
        queued = false;
        h.flush();
        if (!h.node.catchingUp) failing = true;
        drain();
        // What else the turn does after the waiters proposed (the fsync of a busy turn): 5 ms.
        queueMicrotask(() => {
          for (const t = performance.now(); performance.now() - t < 5;);
        });
      });
    });
    const d = {
      domains: new Map([['main', h]]),
      domain: () => h,
      now: () => clock,
      observeCommit: () => {},
      kickDomain: () => {},
    } as unknown as Spookd;
    const call: Call = { onClose: () => {}, onConnectionClose: () => {}, conn: {}, backlog: () => 0, onDrain: () => () => {} };
    const answer = domainHandlers(d).dpropose(
      { domain: 'main', ops: [{ register: 'kv', op: 'set', key: 'k', value: 'v' }], timeoutMs: 2_000 },
      call,
    ) as Promise<unknown>;
    const settled = answer.then(
      (v) => ({ resolved: v }),
      (e: unknown) => ({ rejected: e }),
    );
    await new Promise((r) => setTimeout(r, 5));
    expect(h.node.pendingCount).toBe(0); // held
    // b's committed Noop arrives as the call's time runs out on the daemon's clock (the hold's
    // timer has not fired yet: it is a real one, and the turn runs first).
    clock = 2_000;
    const body: QnBody = {
      t: 'append',
      term: 1,
      prevIndex: 0,
      prevTerm: 0,
      commit: 1,
      entries: [{ term: 1, cmd: new Uint8Array([EntryKind.Noop]) }],
    };
    h.handleDatagram(0, b, encodeEnvelope({ domain: domainIdOf('main'), from: b, to: h.selfId, ttl: 8, body }));
    const r = await settled;
    await new Promise((res) => setTimeout(res, 20)); // the batch's turn, if it had not come yet
    console.log(JSON.stringify({ answer: r, message: (r as { rejected?: Error }).rejected?.message, fenced: h.node.fencedCause ?? null }));
    expect(h.node.fencedCause).toMatch(/EIO/); // its batch was never written
    // main: resolved { verdict: 'pending', seq: 1 } before its batch was written, which then failed
    expect(r).toMatchObject({ rejected: { code: 'refused', message: expect.stringMatching(/fenced/) } });
    h.close();
  });
});

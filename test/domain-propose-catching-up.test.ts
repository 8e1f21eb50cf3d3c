/**
 * spookd's `dpropose` at a member that started empty (new, or its directory wiped): the member
 * numbers no write until it has caught up with a leader (core/qn/node.ts, `catching-up`), so the
 * call holds the write within its timeoutMs and proposes it then; if the time runs out first it
 * is refused, nothing proposed, so the application may retry.
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
import { decodeEnvelope, encodeEnvelope, type QnBody } from '../wire/qn.js';
import { EntryKind } from '../core/qn/raft.js';
import { generateKeyPair } from '../crypto/primitives.js';
import type { DomainOutcome } from '../client/protocol.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh member of domain `main` with one other member, `b` (played by the test), and dpropose over it. */
function setup(): {
  h: DomainHost;
  fromB: (body: QnBody) => void;
  toB: () => QnBody[];
  dpropose: (key: string, timeoutMs: number) => Promise<DomainOutcome>;
} {
  const dataDir = mkdtempSync(join(tmpdir(), 'spook-dprop-'));
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
  const sent: QnBody[] = [];
  const drain = (): void => h.drain((_p, bytes) => void sent.push(decodeEnvelope(bytes).body));
  const d = {
    domains: new Map([['main', h]]),
    domain: () => h,
    now: () => performance.now(),
    observeCommit: () => {},
    kickDomain: drain,
  } as unknown as Spookd;
  const call: Call = { onClose: () => {}, onConnectionClose: () => {}, conn: {}, backlog: () => 0, onDrain: () => () => {} };
  const handlers = domainHandlers(d);
  return {
    h,
    fromB: (body) => {
      h.handleDatagram(performance.now(), b, encodeEnvelope({ domain: domainIdOf('main'), from: b, to: h.selfId, ttl: 8, body }));
      drain();
    },
    toB: () => sent.splice(0),
    dpropose: async (key, timeoutMs) =>
      handlers.dpropose({ domain: 'main', ops: [{ register: 'kv', op: 'set', key, value: 'v' }], timeoutMs }, call),
  };
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

describe('dpropose at a member that started empty (drivers/admin/domain.ts)', () => {
  it('is refused once its time runs out before the member caught up, saying nothing was proposed', async () => {
    const { h, dpropose } = setup();
    expect(h.node.catchingUp).toBe(true);
    await expect(dpropose('k', 50)).rejects.toMatchObject({
      code: 'refused',
      message: expect.stringMatching(/not caught up within 50 ms.*nothing was proposed, so the write may be retried/),
    });
    await expect(dpropose('k', 0)).rejects.toMatchObject({ code: 'refused', message: expect.stringMatching(/nothing was proposed/) });
    expect(h.node.pendingCount).toBe(0);
    expect(h.node.outcomeOf(1)).toBeUndefined();
    h.close();
  });

  it('holds the write until the member caught up, then proposes it and answers its outcome', async () => {
    const { h, fromB, toB, dpropose } = setup();
    const answer = dpropose('k', 5_000);
    await tick();
    expect(h.node.pendingCount).toBe(0); // held, not numbered
    // b leads term 1 and has committed its Noop: the member applies it and has caught up.
    fromB({ t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 1, entries: [{ term: 1, cmd: new Uint8Array([EntryKind.Noop]) }] });
    await tick();
    expect(h.node.catchingUp).toBe(false);
    expect(h.node.pendingCount).toBe(1);
    const fwd = toB().find((m) => m.t === 'fwd');
    expect(fwd).toBeDefined();
    // b appends and commits it.
    const cmd = (fwd as Extract<QnBody, { t: 'fwd' }>).cmd;
    fromB({ t: 'append', term: 1, prevIndex: 1, prevTerm: 1, commit: 2, entries: [{ term: 1, cmd }] });
    await expect(answer).resolves.toMatchObject({ domain: 'main', seq: 1, verdict: 'committed', index: 2 });
    h.close();
  });
});

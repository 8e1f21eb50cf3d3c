/**
 * A domain whose own durable state cannot be applied, or whose node throws unexpectedly, is
 * fenced (decoherent, with its cause logged), never the process: spookd starts and serves its
 * other domains, and the operator's way back is documented (docs/OPERATIONS.md).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DomainHost, domainIdOf, nodeIdOf, type DomainConfig } from '../drivers/daemon/domains.js';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { encodeEnvelope } from '../wire/qn.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { EntryKind } from '../core/qn/raft.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { DeltaOp } from '../wire/delta.js';
import { Trio } from './domain-trio.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * A member that has served before: its journal holds an entry. One started empty numbers no write
 * until it has caught up with a leader (rev 1.37), and these members hear none.
 */
function served(dataDir: string, name: string): void {
  const disk = new FileDomainStore(join(dataDir, 'domains', name), 'always');
  disk.persist([{ kind: 'append', entries: [{ term: 1, index: 1, cmd: new Uint8Array([EntryKind.Noop]) }] }]);
  disk.close();
}

function host(dataDir: string, name: string, lines: string[]): { h: DomainHost; peerId: number } {
  const self = generateKeyPair();
  const peer = generateKeyPair();
  const cfg: DomainConfig = {
    name,
    members: ['b'],
    registers: [{ name: 'kv', kind: 'map' }],
    join: false,
    groups: [],
    policy: 'buffer',
    maxPending: 16,
    electionMs: 1000,
    heartbeatMs: 100,
    maxLogEntries: 1000,
  } as DomainConfig;
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const h = new DomainHost(cfg, self, [{ name: 'b', publicKey: peer.publicKey }], dataDir, 'always', log, 0);
  return { h, peerId: nodeIdOf(peer.publicKey) };
}

describe('fencing a domain (drivers/daemon/domains.ts)', () => {
  it('poisoned journal: an entry that cannot be applied fences that domain at start, naming it and the index; another domain still serves', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-fence-'));
    dirs.push(dataDir);
    // A journal written past the checks (an older version, a bug): index 2 is a Config entry that does not decode.
    const disk = new FileDomainStore(join(dataDir, 'domains', 'bad'), 'always');
    disk.persist([
      {
        kind: 'append',
        entries: [
          { term: 1, index: 1, cmd: new Uint8Array([EntryKind.Noop]) },
          { term: 1, index: 2, cmd: new Uint8Array([EntryKind.Config, 0xff]) },
        ],
      },
    ]);
    disk.close();
    const lines: string[] = [];
    const bad = host(dataDir, 'bad', lines).h;
    served(dataDir, 'good');
    const good = host(dataDir, 'good', lines).h;
    expect(bad.node.fencedCause).toMatch(/journal entry 2 cannot be applied/);
    expect(bad.summary(0)).toMatchObject({ state: 'decoherent', fenced: expect.stringMatching(/entry 2/) });
    const err = lines.map((l) => JSON.parse(l)).find((l) => l.level === 50);
    expect(err).toMatchObject({ domain: 'bad', msg: expect.stringMatching(/domain bad fenced: journal entry 2/) });
    expect(bad.propose(0, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }])).toMatchObject({
      refused: expect.stringMatching(/fenced/),
    });
    expect(bad.node.pollTimeout()).toBe(Infinity);
    // The other domain is untouched: loaded, timers running, proposals accepted.
    expect(good.node.fencedCause).toBeUndefined();
    expect(good.node.pollTimeout()).toBeLessThan(Infinity);
    expect(good.propose(0, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }])).toEqual({ seq: 1 });
    good.close();
    bad.close();
    // A snapshot file that fails its checksum fences its domain too, instead of stopping spookd.
    mkdirSync(join(dataDir, 'domains', 'torn'), { recursive: true });
    writeFileSync(join(dataDir, 'domains', 'torn', 'snapshot'), Buffer.from('SPKQSNP1 not a real snapshot, and no checksum at all'));
    const torn = host(dataDir, 'torn', lines).h;
    expect(torn.node.fencedCause).toMatch(/cannot load .*torn.*checksum mismatch/);
    expect(torn.disk).toBeUndefined();
    torn.close();
  });

  it('a store that fails to persist a Ready fences the domain: the vote that depended on it is never sent, the failure logged once', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-fence-'));
    dirs.push(dataDir);
    const vote = (h: DomainHost, peerId: number, term: number): Uint8Array =>
      encodeEnvelope({
        domain: domainIdOf('main'),
        from: peerId,
        to: h.selfId,
        ttl: 8,
        body: { t: 'vote', term, lastIndex: 10, lastTerm: term - 1, pre: false },
      });
    const sent = (h: DomainHost): { peer: string; payload: Uint8Array }[] => {
      const out: { peer: string; payload: Uint8Array }[] = [];
      h.drain((peer, payload) => out.push({ peer, payload }));
      return out;
    };
    // A healthy store: the vote is granted once its term and vote are durable, and sent.
    const ok = host(dataDir, 'main', []);
    sent(ok.h);
    ok.h.handleDatagram(1, ok.peerId, vote(ok.h, ok.peerId, 5));
    expect(sent(ok.h)).toHaveLength(1);
    expect(ok.h.node.raft.vote).toBe(ok.peerId);
    ok.h.close();
    // A store whose write fails (EIO): nothing of that Ready leaves.
    const lines: string[] = [];
    const { h, peerId } = host(mkdtempSync(join(dataDir, 'b-')), 'main', lines);
    sent(h);
    h.disk!.persist = () => {
      throw new Error('EIO: i/o error, write');
    };
    expect(() => h.handleDatagram(1, peerId, vote(h, peerId, 5))).not.toThrow();
    expect(h.node.fencedCause).toMatch(/^durable storage failed: .*EIO/);
    expect(sent(h)).toHaveLength(0);
    expect(() => h.handleDatagram(2, peerId, vote(h, peerId, 6))).not.toThrow();
    expect(sent(h)).toHaveLength(0);
    expect(h.node.stats.drops.fenced).toBe(1);
    expect(h.propose(3, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }])).toMatchObject({
      refused: expect.stringMatching(/fenced/),
    });
    const errors = lines.map((l) => JSON.parse(l)).filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ domain: 'main', msg: expect.stringMatching(/domain main fenced: durable storage failed/) });
    h.close();
  });

  it('group commit (batchTurns): inputs wait for flush(); nothing they caused leaves before their batch is durable, and a failed batch tells its waiters', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-fence-'));
    dirs.push(dataDir);
    const vote = (h: DomainHost, peerId: number, term: number): Uint8Array =>
      encodeEnvelope({
        domain: domainIdOf('main'),
        from: peerId,
        to: h.selfId,
        ttl: 8,
        body: { t: 'vote', term, lastIndex: 10, lastTerm: term - 1, pre: false },
      });
    const sent = (h: DomainHost): number => {
      let n = 0;
      h.drain(() => n++);
      return n;
    };
    served(dataDir, 'main');
    const { h, peerId } = host(dataDir, 'main', []);
    sent(h);
    let dirty = 0;
    h.batchTurns(() => dirty++);
    const persisted: number[] = [];
    const persist = h.disk!.persist.bind(h.disk!);
    h.disk!.persist = (w) => {
      persisted.push(w.length);
      persist(w);
    };
    // Two inputs in one turn: one notice, no write and nothing sent until the flush.
    h.handleDatagram(1, peerId, vote(h, peerId, 5));
    const seq = h.propose(1, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }]);
    expect(seq).toEqual({ seq: 1 });
    expect(dirty).toBe(1);
    expect(persisted).toEqual([]);
    expect(sent(h)).toBe(0);
    const told: (Error | undefined)[] = [];
    h.whenDurable((e) => told.push(e));
    expect(told).toEqual([]);
    expect(h.flush()).toBeUndefined();
    // One batch, one persist (the vote and the candidate together), then the vote leaves.
    expect(persisted).toHaveLength(1);
    expect(told).toEqual([undefined]);
    expect(sent(h)).toBe(1);
    // A batch that fails: the domain is fenced, its waiters hear why, nothing of it leaves.
    h.disk!.persist = () => {
      throw new Error('EIO: i/o error, write');
    };
    h.handleDatagram(2, peerId, vote(h, peerId, 6));
    h.whenDurable((e) => told.push(e));
    expect(h.flush()).toBeInstanceOf(Error);
    expect(told[1]?.message).toMatch(/EIO/);
    expect(h.node.fencedCause).toMatch(/^durable storage failed: .*EIO/);
    expect(sent(h)).toBe(0);
    h.close();
  });

  it('an unexpected exception out of the node fences its domain (internal-error), logged once and counted, never thrown', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-fence-'));
    dirs.push(dataDir);
    const lines: string[] = [];
    const { h, peerId } = host(dataDir, 'main', lines);
    // A bug inside the core, simulated: Raft throws on a well-formed message from a member.
    h.node.raft.handleMessage = () => {
      throw new Error('simulated bug');
    };
    const msg = encodeEnvelope({
      domain: domainIdOf('main'),
      from: peerId,
      to: h.selfId,
      ttl: 8,
      body: { t: 'appendResp', term: 0, ok: false, index: 0 },
    });
    expect(() => h.handleDatagram(1, peerId, msg)).not.toThrow();
    expect(() => h.handleDatagram(2, peerId, msg)).not.toThrow();
    expect(h.node.fencedCause).toBe('internal-error');
    expect(h.node.coherenceState).toBe('decoherent');
    expect(h.internalErrors).toBe(1); // the second message was dropped as fenced: the node is not entered again
    expect(h.node.stats.drops.fenced).toBe(1);
    expect(lines.map((l) => JSON.parse(l)).filter((l) => l.level === 50)).toHaveLength(1);
    h.close();
  });

  it('an exception while applying what a leader committed (out of ready(), at the end-of-turn flush) fences the domain, never thrown', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-fence-'));
    dirs.push(dataDir);
    const lines: string[] = [];
    const { h, peerId } = host(dataDir, 'main', lines);
    let dirty = 0;
    h.batchTurns(() => dirty++); // as spookd runs it: inputs mark the domain, the turn's end flushes
    // A bug in applying a committed entry, simulated: Raft's ready() (which applies) throws, and
    // again when the fence drains it.
    h.node.raft.ready = () => {
      throw new Error('simulated apply bug');
    };
    const msg = encodeEnvelope({
      domain: domainIdOf('main'),
      from: peerId,
      to: h.selfId,
      ttl: 8,
      body: { t: 'appendResp', term: 0, ok: false, index: 0 },
    });
    h.handleDatagram(1, peerId, msg);
    expect(dirty).toBe(1);
    let failed: Error | undefined;
    expect(() => (failed = h.flush())).not.toThrow();
    expect(failed?.message).toBe('simulated apply bug');
    expect(h.node.fencedCause).toBe('internal-error');
    expect(h.node.coherenceState).toBe('decoherent');
    expect(h.internalErrors).toBe(1);
    expect(() => h.flush()).not.toThrow();
    expect(lines.map((l) => JSON.parse(l)).filter((l) => l.level === 50)).toHaveLength(1);
    h.close();
  });

  it("the operator's way back: remove the fenced member, wipe its data, add it again with join; it takes a snapshot from the majority", () => {
    const wiped = new Set<number>();
    const t = new Trio(11, (id) =>
      wiped.has(id) ? { members: [1, 2, 3].filter((x) => x !== id), maxLogEntries: 16 } : { maxLogEntries: 16 },
    );
    t.run(600);
    for (let i = 0; i < 40; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
    const victim = t.follower()!.id;
    // Its journal gets an entry that cannot be applied; at restart it is fenced.
    t.stop(victim);
    const d = t.disks.get(victim)!;
    d.persist([
      {
        kind: 'append',
        entries: [{ term: d.entries.at(-1)!.term, index: d.base + d.entries.length + 1, cmd: new Uint8Array([EntryKind.Config, 0]) }],
      },
    ]);
    const fenced = t.start(victim);
    expect(fenced.fencedCause).toMatch(/journal entry \d+ cannot be applied/);
    t.run(300);
    expect(t.put('during', '1')).toBe('committed'); // the other two carry on
    // Remove it on the leader, wipe its directory (a fresh disk), start it with join (members without itself), add it back.
    expect(t.leader()!.changeMembers(t.now, { remove: victim }).ok).toBe(true);
    t.run(200);
    t.stop(victim);
    t.disks.set(victim, new MemDomainStore());
    wiped.add(victim);
    const back = t.start(victim);
    t.run(100);
    expect(t.leader()!.changeMembers(t.now, { add: victim }).ok).toBe(true);
    t.run(1000);
    expect(back.fencedCause).toBeUndefined();
    expect(back.raft.stats.snapshotsInstalled).toBe(1);
    expect(back.state.digest()).toEqual(t.leader()!.state.digest());
    expect(back.coherenceState).toBe('coherent');
  });
});

/**
 * What a domain member can make spookd log through the domain's leader and lifecycle events
 * (§15.8). A member that answers with a higher term (a `voteResp` not granted) leaves the
 * receiver without a leader (decoherent), and an `append` of that term makes it the leader
 * again (coherent): three info lines ("domain lifecycle" twice, "domain leader") for two
 * datagrams of ~20 octets, repeatable at will, each term one more. Before, every such line was
 * written, without any limit (the pair's lifecycle lines were limited in rev 1.33,
 * test/spookd-log-limits.test.ts). Now each domain's leader and lifecycle lines are logged at
 * most once per kind per 10 s, the rest counted (`suppressed`, warningsSuppressed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { encodeEnvelope, type QnBody } from '../wire/qn.js';
import { freePort } from './admin-solo.js';
import { until } from './inproc.js';
import { EntryKind } from '../core/qn/raft.js';

const dir = mkdtempSync(join(tmpdir(), 'spook-dlog-'));
const lines: string[] = [];
let a: Spookd;

beforeAll(async () => {
  const keys = { a: generateKeyPair(), b: generateKeyPair() };
  writeFileSync(join(dir, 'a.key'), Buffer.from(keys.a.privateKey).toString('base64'));
  for (let attempt = 0; ; attempt++) {
    // b has no endpoint and never runs: what "b" sends is put into a's handler below.
    const cfg = configSchema.parse({
      listen: `127.0.0.1:${await freePort()}`,
      privateKeyFile: join(dir, 'a.key'),
      dataDir: join(dir, 'a'),
      adminSocket: join(dir, 'a.sock'),
      fsync: 'never',
      peers: [{ name: 'b', publicKey: encodeKey(keys.b.publicKey) }],
      registers: [{ name: 'config', kind: 'map' }],
      // An election timeout far beyond the test: a never campaigns, so only b's messages move it.
      domains: [{ name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], electionMs: 600_000, heartbeatMs: 100 }],
    });
    a = new Spookd(cfg, keys.a, pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }));
    try {
      await a.start();
      return;
    } catch (e) {
      await a.stop().catch(() => {});
      if (attempt >= 5) throw e; // the port was taken between the probe and the bind
    }
  }
});

afterAll(async () => {
  await a?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('domain log lines a member can cause (§15.8)', () => {
  it('a member flipping the leadership term after term: the leader and lifecycle lines stay within a limit, the rest counted', async () => {
    const dom = a.domain('main');
    const b = dom.idOf.get('b')!;
    const self = (dom as unknown as { selfId: number }).selfId;
    let octets = 0;
    /** `body` as a gets an authentic domain datagram of b's (the driver's own path after the AEAD). */
    const send = async (body: QnBody): Promise<void> => {
      const payload = encodeEnvelope({ domain: dom.id, from: b, to: self, ttl: 8, body });
      octets += payload.length;
      (a as unknown as { onTableEvent(now: number, ev: unknown, touched: Set<unknown>): void }).onTableEvent(
        a.now(),
        { type: 'domain-payload', peer: 'b', domainId: dom.id, payload },
        new Set(),
      );
      await turn(); // the domain's group commit (end of the turn) takes its Ready: its events are logged then
      await turn();
    };
    const count = (msg: string): number => lines.filter((l) => (JSON.parse(l) as { msg: string }).msg === msg).length;
    // b's term starts with its Noop, committed: a (started empty) has caught up, and is coherent under b.
    await send({
      t: 'append',
      term: 1,
      prevIndex: 0,
      prevTerm: 0,
      commit: 1,
      entries: [{ term: 1, cmd: new Uint8Array([EntryKind.Noop]) }],
    });
    await until('b leads at a, a coherent', () => dom.node.raft.leader === b && dom.node.coherenceState === 'coherent');
    const before = { leader: count('domain leader'), lifecycle: count('domain lifecycle') };
    const bytes0 = lines.reduce((s, l) => s + l.length, 0);
    octets = 0;
    const ROUNDS = 200;
    for (let term = 2; term < 2 + ROUNDS; term++) {
      await send({ t: 'voteResp', term, granted: false, pre: false }); // a follows the term, leaderless
      await send({ t: 'append', term, prevIndex: 1, prevTerm: 1, commit: 1, entries: [] }); // b leads it
    }
    expect(dom.node.raft.term).toBe(1 + ROUNDS);
    expect(dom.node.raft.leader).toBe(b);
    const leader = count('domain leader') - before.leader;
    const lifecycle = count('domain lifecycle') - before.lifecycle;
    const logged = lines.reduce((s, l) => s + l.length, 0) - bytes0;
    console.log(
      `${ROUNDS} leadership flips from b (${octets} octets of QN payload): ${leader} 'domain leader' and ${lifecycle} 'domain lifecycle' lines, ${logged} octets of log (${(logged / octets).toFixed(2)} per octet sent)`,
    );
    // Within the window: one line of each kind (a flip's lifecycle lines are two kinds: to decoherent, to coherent).
    expect(leader).toBeLessThanOrEqual(1);
    expect(lifecycle).toBeLessThanOrEqual(2);
    // What the domain did is still counted (`spook domain show`: its partitions).
    expect(dom.node.stats.partitions).toBeGreaterThanOrEqual(ROUNDS);
    // Once the window is over, where the domain ended up is logged (the last line shown said decoherent).
    (dom as unknown as { settleLines(): void }).settleLines();
    const settled = lines.map((l) => JSON.parse(l) as { msg: string; coherence?: string; suppressed?: number }).at(-1)!;
    expect(settled).toMatchObject({ msg: 'domain lifecycle: transitions left out of the log', coherence: 'coherent' });
    expect(settled.suppressed).toBeGreaterThanOrEqual(3 * ROUNDS - 3);
  }, 30_000);
});

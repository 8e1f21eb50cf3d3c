/**
 * A domain's group commit is charged to the peer whose datagrams caused it (§12.9). A member
 * (here b, claiming leadership) sends a follower appends of small writes, each committing the
 * entry it carries: handling each datagram was charged to b, but the end-of-turn flush it made
 * (journal writes, applying the committed entry, events, the acknowledgement) was charged to
 * nobody, 3.6x the charged time with 100 sets per entry (4.6x with 40 one-set entries per
 * datagram): b's budget of 100 ms/s let it take ~0.46 s/s of the process while another peer
 * was busy. Now the flush is charged to the peers whose datagrams brought entries or, at a
 * member that does not lead, moved the commit index in that turn.
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
import { encodeCandidate } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import { freePort } from './admin-solo.js';

const dir = mkdtempSync(join(tmpdir(), 'spook-dcharge-'));
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
      // a never campaigns in the test: only b's messages move it.
      domains: [{ name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], electionMs: 600_000, heartbeatMs: 100 }],
    });
    a = new Spookd(cfg, keys.a, pino({ level: 'silent' }));
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

describe("a domain's group commit and the work budget (§12.9)", () => {
  it("a member's appends: the flush they cause at a follower is charged to it", async () => {
    const dom = a.domain('main');
    const b = dom.idOf.get('b')!;
    let octets = 0;
    /** `body` as a gets an authentic domain datagram of b's (the driver's own path after the AEAD, charged to b). */
    const send = (body: QnBody): void => {
      const payload = encodeEnvelope({ domain: dom.id, from: b, to: dom.selfId, ttl: 8, body });
      octets += payload.length;
      (a as unknown as { onTableEvent(now: number, ev: unknown, touched: Set<unknown>): void }).onTableEvent(
        a.now(),
        { type: 'domain-payload', peer: 'b', domainId: dom.id, payload },
        new Set(),
      );
    };
    // The flushes' CPU (what spookd charges: never the disk's time, as for a pair's batch).
    let flushMs = 0;
    const flush = dom.flush.bind(dom);
    dom.flush = () => {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      try {
        return flush();
      } finally {
        // As spookd measures it: the process's CPU, at most the wall time (its other threads count too).
        const c = process.cpuUsage(c0);
        flushMs += Math.min((c.user + c.system) / 1000, performance.now() - t0);
      }
    };
    send({ t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [] });
    await turn();
    await turn();
    const budget = a.link('b').budget;
    const spent0 = budget.spentMs;
    flushMs = 0;
    octets = 0;
    const DATAGRAMS = 600;
    let last = dom.node.raft.lastIndex;
    for (let seq = 1; seq <= DATAGRAMS; seq++) {
      // One candidate of 100 sets (~1,040 octets), committed by the append that carries it.
      const ops = Array.from({ length: 100 }, (_, k) => ({
        register: 'kv',
        delta: { op: DeltaOp.Set as const, key: Buffer.from([k, seq >> 8, seq & 255]), value: Buffer.from([1]) },
      }));
      const entries = [{ term: 1, cmd: encodeCandidate({ origin: b, seq, ops }) }];
      send({ t: 'append', term: 1, prevIndex: last, prevTerm: last === 0 ? 0 : 1, commit: last + 1, entries });
      last++;
      await turn(); // the group commit of this turn
    }
    await turn();
    expect(dom.node.raft.applied).toBe(last);
    const charged = budget.spentMs - spent0;
    console.log(
      `${DATAGRAMS} appends from b (${octets} octets): ${charged.toFixed(0)} ms charged to b, ${flushMs.toFixed(0)} ms of CPU in the domain's flushes (${((1000 * flushMs) / octets).toFixed(2)} µs per octet)`,
    );
    // Everything b's datagrams caused is charged: their handling, and the flushes (with what they sent).
    expect(charged).toBeGreaterThanOrEqual(flushMs);
  }, 30_000);
});

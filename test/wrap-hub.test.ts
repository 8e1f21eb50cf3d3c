/**
 * A WrapManager with many configured peers (a hub): a turn re-keys only the peers it touched
 * and a tick steps only the due ones (a DeadlineHeap, as spookd's pairs), not every peer. Before,
 * every flush's schedule() visited every peer: a request through a hub with 1,000 configured
 * peers, one of them connected, cost 12x its CPU (node dist/bench/wrap-rrcpu.js 20000 2 4 0 1000).
 * Every peer is still stepped at least once a second (the sweep: a peer's address learnt, a dial).
 */
import { describe, expect, it } from 'vitest';
import { stat } from 'node:fs';
import { createServer } from 'node:net';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';
import { dialCarrier } from '../drivers/wrap/carrier.js';
import { encodeRecord, RecordType } from '../wire/wrap.js';
import { freePort } from '../testing/lab/servers.js';
import { WRAP_TEST_SETTINGS } from './helpers.js';

const log = pino({ level: 'silent' });
const settings = WRAP_TEST_SETTINGS;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;
const target = { family: 4 as const, address: '10.0.0.2', port: 22 };
const onePeer = (role: 0 | 1, peerAddr: () => { address: string; port: number } | undefined = () => undefined): WrapManager =>
  new WrapManager(
    {
      key: generateKeyPair(),
      peers: [{ name: 'p0', publicKey: generateKeyPair().publicKey, role }],
      peerAddr,
      listen: { host: '127.0.0.1', port: 0 },
    },
    settings,
    [],
    log,
  );
const turn = async (): Promise<void> => {
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
};

describe("the WrapManager's peers: their timers, and removal", () => {
  it("with 1,000 configured peers, a flush of one looks at that peer's deadlines alone; the sweep still steps every peer within a second", async () => {
    const peers = Array.from({ length: 1_000 }, (_, i) => ({ name: `p${i}`, publicKey: generateKeyPair().publicKey, role: 1 as const }));
    const m = new WrapManager(
      { key: generateKeyPair(), peers, peerAddr: () => undefined, listen: { host: '127.0.0.1', port: 0 } },
      settings,
      [],
      log,
    );
    await m.start();
    try {
      const mi = m as Internals;
      await turn();
      let polls = 0;
      for (const ps of mi.peers.values()) {
        const s = ps.session;
        const own = s.pollTimeout.bind(s);
        s.pollTimeout = () => {
          polls++;
          return own();
        };
      }
      mi.flushSoon(mi.peers.get('p0'));
      await turn();
      expect(polls).toBeGreaterThanOrEqual(1); // p0 re-keyed
      expect(polls).toBeLessThanOrEqual(2); // and nobody else (the scan visited all 1,000)
      polls = 0;
      await new Promise((r) => setTimeout(r, 1_300));
      expect(polls).toBeGreaterThanOrEqual(1_000); // the sweep
    } finally {
      await m.stop();
    }
  }, 20_000);

  // Found by the review of the change: the two cases below each waited for the sweep (up to a second) or never ended.
  it('a hold that expires with the carrier down stays keyed when the peer is flushed just past its deadline', async () => {
    const m = onePeer(1);
    await m.start();
    const mi = m as Internals;
    try {
      await turn();
      const ps = mi.peers.get('p0');
      const HOLD = 200;
      const t0 = performance.now();
      const id = ps.session.openLocal(t0, 22, target, HOLD); // held: there is no carrier
      mi.flush(ps);
      await new Promise((r) => setTimeout(r, HOLD - 50));
      // An I/O callback (the poll phase, before the timers) just past the deadline flushes the peer, as a held client's write would.
      await new Promise<void>((r) =>
        stat('/', () => {
          while (performance.now() < t0 + HOLD + 5);
          mi.flush(ps);
          r();
        }),
      );
      await turn();
      expect(ps.session.conns.has(id) ? mi.peerTimers.at(ps) : 0).toBeLessThanOrEqual(t0 + HOLD); // dropped: keyed at the sweep only
      while (ps.session.conns.has(id)) await new Promise((r) => setTimeout(r, 2));
      expect(performance.now() - (t0 + HOLD)).toBeLessThan(500);
    } finally {
      await m.stop();
    }
  }, 10_000);

  it('a peer removed while its carrier dial is in flight is never stepped or dialled again (a rekey removes and adds it)', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r())); // every dial is refused at once
    const m = onePeer(0, () => ({ address: '127.0.0.1', port }));
    await m.start();
    const mi = m as Internals;
    try {
      const old = mi.peers.get('p0');
      let oldDials = 0;
      const started = old.redial.started.bind(old.redial);
      old.redial.started = (now: number) => {
        oldDials++;
        started(now);
      };
      mi.ensureCarrier(old);
      expect(oldDials).toBe(1); // in flight
      m.removePeer('p0');
      m.addPeer({ name: 'p0', publicKey: generateKeyPair().publicKey, role: 0 });
      await new Promise((r) => setTimeout(r, 1_500));
      expect(oldDials).toBe(1);
      expect(mi.peerTimers.has(old)).toBe(false);
    } finally {
      await m.stop();
    }
  }, 10_000);

  it('a carrier whose handshake completed before its peer was removed is closed at its first record, never adopted', async () => {
    const me = generateKeyPair();
    const them = generateKeyPair();
    const port = await freePort();
    const m = new WrapManager(
      {
        key: me,
        peers: [{ name: 'p0', publicKey: them.publicKey, role: 1 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port },
      },
      settings,
      [],
      log,
    );
    await m.start();
    const mi = m as Internals;
    try {
      const old = mi.peers.get('p0');
      const c = await dialCarrier('127.0.0.1', port, them, me.publicKey); // authenticated as p0
      let closed = false;
      c.start({ onRecord: () => {}, onClose: () => void (closed = true), onDrain: () => {} });
      m.removePeer('p0'); // a reload, between its handshake and its first record
      c.send([encodeRecord({ type: RecordType.Hello, version: 1, bootId: 7n })]);
      for (let i = 0; i < 200 && !closed; i++) await new Promise((r) => setTimeout(r, 10));
      expect(closed).toBe(true);
      expect(old.carrier).toBeUndefined();
    } finally {
      await m.stop();
    }
  }, 10_000);
});

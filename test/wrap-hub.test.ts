/**
 * A WrapManager with many configured peers (a hub): a turn re-keys only the peers it touched
 * and a tick steps only the due ones (a DeadlineHeap, as spookd's pairs), not every peer. Before,
 * every flush's schedule() visited every peer: a request through a hub with 1,000 configured
 * peers, one of them connected, cost 12x its CPU (node dist/bench/wrap-rrcpu.js 20000 2 4 0 1000).
 * Every peer is still stepped at least once a second (the sweep: a peer's address learnt, a dial).
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';

const log = pino({ level: 'silent' });
const settings = {
  intercept: { host: '127.0.0.1', port: 0 },
  interception: 'off' as const,
  windowBytes: 1024 * 1024,
  maxConnections: 64,
  silenceMs: 3_000,
};
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;
const turn = async (): Promise<void> => {
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
};

describe('a wrapper hub with 1,000 configured peers', () => {
  it("a flush of one peer looks at that peer's deadlines alone; the sweep still steps every peer within a second", async () => {
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
});

/**
 * What an unauthenticated client of the metrics listener can make spookd spend. A scrape blocks
 * the event loop for its whole run (a hub of 1,000 peers with 4 registers: 0.07-0.25 s, 1.4 MB) and a
 * request is ~35 octets: before, every request ran a scrape of its own, pipelined ones too, so
 * one 70 KB write of 2,000 pipelined requests held the daemon's loop for 2-8 minutes. Now requests
 * share a scrape begun after they came, scrapes take at most a tenth of the loop, and a
 * connection with more than 8 requests unanswered is closed.
 */
import { describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { get } from 'node:http';
import { pino } from 'pino';
import { Metrics } from '../drivers/admin/metrics.js';
import type { Spookd } from '../drivers/daemon/spookd.js';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

/** The listener's port (OS-assigned). */
let port = 0;
const REQ = 'GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n';

/** A hub's worth of state as a scrape reads it: `peers` links with `registers` registers each. */
function hub(peers: number, registers: number): Spookd {
  const links = new Map<string, unknown>();
  for (let i = 0; i < peers; i++) {
    const regs = new Map<string, unknown>();
    for (let j = 0; j < registers; j++) regs.set(`r${j}`, { name: `r${j}`, version: i * j, pendingCount: 0 });
    const stats = {
      bytesSent: 1,
      bytesReceived: 2,
      reentanglements: 0,
      fullTransfers: 0,
      retransmitTimeouts: 0,
      drops: { 'bad-frame': 1 },
    };
    links.set(`peer-${i}`, {
      name: `peer-${i}`,
      pair: { state: 'ENTANGLED', registerMismatch: false, rttMs: 1.5, registers: regs, stats },
    });
  }
  return {
    subscribers: new Set(),
    removals: new Set(),
    ready: true,
    links,
    drops: {},
    table: { peer: () => ({ handshakesSent: 1, sessionsEstablished: 1, unanswered: 0 }) },
    warns: { suppressed: 0 },
    domains: new Map(),
    fastPath: { status: () => ({ enabled: false }) },
    wraps: { wrappers: new Map(), peerCounters: () => [], protocols: { toJSON: () => ({}) } },
  } as unknown as Spookd;
}

/** The listener on a hub of `peers`, with its scrapes counted and timed. */
async function listener(peers: number): Promise<{ m: Metrics; scrapes: { n: number; ms: number } }> {
  const m = new Metrics(hub(peers, 4), '127.0.0.1:0', pino({ level: 'silent' }));
  await m.start();
  port = ((m as unknown as { server: Server }).server.address() as AddressInfo).port;
  const scrapes = { n: 0, ms: 0 };
  const run = m.registry.metrics.bind(m.registry);
  m.registry.metrics = async () => {
    scrapes.n++;
    const t0 = performance.now();
    try {
      return await run();
    } finally {
      scrapes.ms += performance.now() - t0;
    }
  };
  return { m, scrapes };
}

/** One scrape on a connection of its own: the body. */
const scrape = (): Promise<string> =>
  new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });

const opened = async (): Promise<Socket> => {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  return s;
};

/** Octets read on `s` until `n` responses (each ending in the exposition's last line) or its end. */
const responses = (s: Socket, n: number): Promise<number> =>
  new Promise((resolve) => {
    let seen = 0;
    let tail = '';
    s.on('data', (b: Buffer) => {
      const t = tail + b.toString('latin1');
      seen += t.split('HTTP/1.1 200').length - 1;
      tail = t.slice(-16);
      if (seen >= n) resolve(seen);
    });
    s.once('close', () => resolve(seen));
  });

describe('the metrics listener against scrape floods', () => {
  it('answers pipelined and simultaneous requests from shared scrapes', async () => {
    const { m, scrapes } = await listener(200);
    try {
      const s = await opened();
      const got = responses(s, 8);
      s.write(REQ.repeat(8));
      expect(await got).toBe(8);
      s.destroy();
      const many = await Promise.all(Array.from({ length: 30 }, () => scrape()));
      expect(many.every((t) => t.includes('spook_register_version{peer="peer-199",register="r3"} 597'))).toBe(true);
      console.log(`8 pipelined + 30 simultaneous requests: ${scrapes.n} scrapes, ${scrapes.ms.toFixed(0)} ms`);
      // Before: 38 scrapes. Now the 8 share one, the 30 at most two (one may have been waiting already).
      expect(scrapes.n).toBeLessThanOrEqual(3);
    } finally {
      await m.stop();
    }
  }, 30_000);

  it('spends at most about a tenth of the loop on back-to-back scrapes', async () => {
    const { m, scrapes } = await listener(200);
    try {
      // One client scraping as fast as it is answered, for 2 s.
      const t0 = performance.now();
      let answered = 0;
      while (performance.now() - t0 < 2000) {
        await scrape();
        answered++;
      }
      const share = scrapes.ms / (performance.now() - t0);
      console.log(
        `back to back for 2 s: ${answered} answered, ${scrapes.n} scrapes, ${scrapes.ms.toFixed(0)} ms (${(share * 100).toFixed(0)}%)`,
      );
      expect(answered).toBeGreaterThan(1);
      expect(share).toBeLessThan(0.15);
    } finally {
      await m.stop();
    }
  }, 30_000);

  it('closes a connection that pipelines requests without reading the answers', async () => {
    const { m, scrapes } = await listener(200);
    try {
      // 300 pipelined requests in one write, never read: the connection is closed, not 300 scrapes run.
      const before = { ...scrapes };
      const s = await opened();
      s.pause();
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      s.write(REQ.repeat(300));
      await Promise.race([closed, new Promise((r) => setTimeout(r, 20_000))]);
      console.log(
        `300 pipelined, unread: ${scrapes.n - before.n} scrapes, ${(scrapes.ms - before.ms).toFixed(0)} ms; closed: ${s.destroyed}`,
      );
      expect(scrapes.n - before.n).toBeLessThanOrEqual(1);
      expect(s.destroyed).toBe(true);
    } finally {
      await m.stop();
    }
  }, 30_000);
});

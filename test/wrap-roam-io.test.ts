/**
 * The dialling side follows the peer's address (drivers/wrap/roam.ts, PROTOCOL §16.2 *Redial on
 * the peer's packets*), two WrapManagers on loopback, no root: the pair's address for the peer
 * moves from 127.0.0.1 to 127.0.0.2 in the middle of a transfer, and the peer's next
 * authenticated packet (peerHeard) makes the sequencer dial the new address at once and replace
 * its carrier; the connection goes on, byte for byte. Packets from an address it already
 * dialled start nothing, and a flood of them starts at most one attempt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type Interceptor } from '../drivers/wrap/manager.js';
import { until } from '../testing/lab/netns.js';
import { freePort } from '../testing/lab/servers.js';
import { HEARD_MIN_GAP_MS } from '../core/wrap/redial.js';

const lines: { msg: string; [k: string]: unknown }[] = [];
const log = pino(
  { level: 'info' },
  new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { msg: string });
      done();
    },
  }),
);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('the sequencer follows the peer to a new address', () => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  let server: Server;
  const received: Buffer[] = [];
  let ma: WrapManager;
  let mb: WrapManager;
  let peerIp = '127.0.0.1';
  let pb = 0;

  beforeAll(async () => {
    server = createServer({ allowHalfOpen: true }, (s) => {
      const got: Buffer[] = [];
      s.on('data', (d) => got.push(d));
      s.on('end', () => {
        received.push(Buffer.concat(got));
        s.end('done');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const serverPort = (server.address() as AddressInfo).port;
    pb = await freePort();
    const settings = {
      intercept: { host: '127.0.0.1', port: 0 },
      interception: 'auto' as const,
      windowBytes: 1024 * 1024,
      maxConnections: 64,
      silenceMs: 3_000,
    };
    // b accepts carriers on every loopback address: 127.0.0.1 and 127.0.0.2 are both its addresses.
    mb = new WrapManager(
      { key: b, peers: [{ name: 'a', publicKey: a.publicKey, role: 1 }], peerAddr: () => undefined, listen: { host: '0.0.0.0', port: pb } },
      { ...settings, interception: 'off', allow: [{ peer: 'a', to: `127.0.0.1:${serverPort}`, protocol: 'tcp' }] },
      [],
      log.child({ host: 'b' }),
    );
    const stand: Interceptor = {
      setPorts: () => {},
      originalDst: () => ({ family: 4, address: '127.0.0.1', port: serverPort }),
      stats: () => ({}),
      close: () => {},
    };
    ma = new WrapManager(
      {
        key: a,
        peers: [{ name: 'b', publicKey: b.publicKey, role: 0 }],
        peerAddr: () => ({ address: peerIp, port: pb }),
        listen: { host: '127.0.0.1', port: await freePort() },
      },
      settings,
      [{ protocol: 'tcp', port: serverPort, peer: 'b', holdMs: 30_000 }],
      log.child({ host: 'a' }),
      () => stand,
    );
    await mb.start();
    await ma.start();
    await until('the carrier', async () => ma.stats().peers[0].carrier === 'up' || undefined, 10_000, 20);
  });

  afterAll(async () => {
    await ma?.stop();
    await mb?.stop();
    server?.close();
  });

  const ups = (): string[] => lines.filter((l) => l.host === 'a' && l.msg === 'carrier up').map((l) => String(l.remote));
  const moves = (): { to?: unknown; on?: unknown }[] =>
    lines.filter((l) => l.host === 'a' && l.msg === 'the peer moved: dialling its new address');

  it('a packet from a new address replaces the carrier at once; the connection goes on byte for byte', async () => {
    expect(ups().at(-1)).toBe(`127.0.0.1:${pb}`);
    // The first dial started less than HEARD_MIN_GAP_MS ago on a fast machine: a packet then would
    // start the next attempt only that much later (the rate limit), not in the same turn as asserted below.
    await new Promise((r) => setTimeout(r, HEARD_MIN_GAP_MS + 50));
    // Heard from the address the carrier goes to: nothing to do.
    for (let i = 0; i < 20; i++) ma.peerHeard('b');
    expect(moves()).toEqual([]);

    const data = randomBytes(24 * 1024 * 1024);
    const intercept = Number(String(ma.stats().intercept).split(':')[1]);
    const reply = await new Promise<string>((resolve, reject) => {
      const s = connect({ port: intercept, host: '127.0.0.1', allowHalfOpen: true });
      let off = 0;
      let moved = false;
      let got = '';
      s.on('data', (d) => (got += d));
      s.on('end', () => resolve(got));
      s.on('error', reject);
      const pump = (): void => {
        while (off < data.length) {
          const piece = data.subarray(off, off + 256 * 1024);
          off += piece.length;
          if (!moved && off >= data.length / 3) {
            // The pair hears the peer from a new address (roaming), then many more of its packets.
            moved = true;
            peerIp = '127.0.0.2';
            for (let i = 0; i < 50; i++) ma.peerHeard('b');
            // At once, and one attempt for the flood (HEARD_MIN_GAP_MS).
            expect(moves()).toEqual([{ ...moves()[0], to: '127.0.0.2', on: 'peer-heard' }]);
          }
          if (!s.write(piece)) return void s.once('drain', pump);
        }
        s.end();
      };
      s.once('connect', pump);
    });
    expect(reply).toBe('done');
    expect(received.length).toBe(1);
    expect(sha(received[0])).toBe(sha(data));
    await until('the new carrier', async () => ups().at(-1) === `127.0.0.2:${pb}` || undefined, 5_000, 20);
    // One attempt for the flood of packets; a loaded machine may add the redial timer's own
    // (REDIAL_MS after it, when the first handshake takes longer): those are not the packets'.
    const heard = (): number => moves().filter((m) => m.on === 'peer-heard').length;
    expect(heard()).toBe(1);
    const before = moves().length;
    const st = ma.stats();
    expect(st.wrappers[0].connections).toBe(1);
    expect(st.wrappers[0].closes).toEqual({ completed: 1 });
    // Now at the new address: its packets start nothing more.
    for (let i = 0; i < 20; i++) ma.peerHeard('b');
    expect(moves().length).toBe(before);
    expect(heard()).toBe(1);
  }, 30_000);
});

import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { wsTlsBytes, ySyncMessage } from '../bench/compare.js';

/**
 * bench compare's y-websocket row counts each message as a WebSocket frame in one TLS 1.3
 * record (wsTlsBytes). Checked here against the real stack: `ws` over node:tls on loopback,
 * through a TCP relay that counts the bytes each way.
 */
describe("bench compare's y-websocket framing", () => {
  it('matches the TCP bytes of ws over TLS 1.3 on loopback, both ways, for small and large messages', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-wstls-'));
    try {
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost'].concat([
          '-keyout',
          join(dir, 'key.pem'),
          '-out',
          join(dir, 'cert.pem'),
        ]),
        { stdio: 'ignore' },
      );
      const server = https.createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) });
      const wss = new WebSocketServer({ server });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const counts = { up: 0, down: 0 };
      const relay = net.createServer((c) => {
        const s = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
        c.on('data', (d) => ((counts.up += d.length), s.write(d)));
        s.on('data', (d) => ((counts.down += d.length), c.write(d)));
        c.on('close', () => s.destroy());
        s.on('close', () => c.destroy());
      });
      await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
      const serverSide = new Promise<WebSocket>((r) => wss.on('connection', r));
      const client = new WebSocket(`wss://127.0.0.1:${(relay.address() as AddressInfo).port}/doc`, { rejectUnauthorized: false });
      await new Promise((r) => client.on('open', r));
      const conn = await serverSide;
      await new Promise((r) => setTimeout(r, 200)); // TLS 1.3 session tickets after the handshake
      const received = (ws: WebSocket): Promise<void> => new Promise((r) => ws.once('message', () => r()));
      for (const size of [58, 120, 200, 70_000]) {
        const m = ySyncMessage(2, new Uint8Array(size));
        for (const fromClient of [true, false]) {
          const before = { ...counts };
          const got = received(fromClient ? conn : client);
          (fromClient ? client : conn).send(m);
          await got;
          await new Promise((r) => setTimeout(r, 20));
          const sent = fromClient ? counts.up - before.up : counts.down - before.down;
          const records = Math.ceil((m.length + (fromClient ? 14 : 10)) / 16_384); // a TLS record holds at most 2^14 octets
          expect({ size, fromClient, sent }).toEqual({ size, fromClient, sent: wsTlsBytes(m, fromClient) + (records - 1) * 22 });
        }
      }
      client.close();
      await new Promise((r) => setTimeout(r, 50));
      wss.close();
      server.close();
      relay.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * spookd listening on `[::]` (a dual-stack udp6 socket: it receives IPv4 as `::ffff:a.b.c.d`) with
 * a peer configured by an IPv4 literal. A udp6 socket refuses to send to a bare IPv4 address
 * (EINVAL), so every HandshakeInit to that peer was lost and, if both ends were set up so, the
 * pair never formed; and the peer's exemptions (global DH bucket, failing-frame budget, seeded
 * with its configured endpoint, §12.8, §12.9) named `a.b.c.d`, which no datagram's source ever
 * matches there. Ports are the OS's.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configSchema } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { FrameType } from '../wire/constants.js';

const dir = mkdtempSync(join(tmpdir(), 'spook-dual-'));
const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
  rmSync(dir, { recursive: true, force: true });
});

const bound = (s: Socket, port: number, host: string): Promise<number> =>
  new Promise((resolve) => s.bind(port, host, () => resolve(s.address().port)));

describe('spookd on a dual-stack [::] socket, a peer configured by IPv4 address', () => {
  it('sends its HandshakeInits to the peer, and knows the peer at the address its datagrams come from', async () => {
    // The peer: a plain IPv4 socket that records what reaches it.
    const peer = createSocket('udp4');
    const got: Uint8Array[] = [];
    peer.on('message', (m) => got.push(new Uint8Array(m)));
    const peerPort = await bound(peer, 0, '127.0.0.1');
    cleanup.push(() => void peer.close());
    // A free port for spookd's [::] socket (taken from the OS, then released).
    const probe = createSocket('udp6');
    const port = await bound(probe, 0, '::');
    await new Promise<void>((r) => probe.close(() => r()));

    // Keys drawn until this host is member 1 (the lower key): it initiates at once (§12.6).
    let a = generateKeyPair();
    let b = generateKeyPair();
    if (Buffer.compare(Buffer.from(a.publicKey), Buffer.from(b.publicKey)) > 0) [a, b] = [b, a];
    writeFileSync(join(dir, 'a.key'), Buffer.from(a.privateKey).toString('base64'));
    const cfg = configSchema.parse({
      listen: `[::]:${port}`,
      privateKeyFile: join(dir, 'a.key'),
      dataDir: join(dir, 'a'),
      adminSocket: join(dir, 'a.sock'),
      fsync: 'never',
      peers: [{ name: 'b', publicKey: encodeKey(b.publicKey), endpoint: `127.0.0.1:${peerPort}` }],
      registers: [{ name: 'config', kind: 'map' }],
    });
    const lines: string[] = [];
    const d = new Spookd(cfg, a, pino({ level: 'warn' }, { write: (s: string) => void lines.push(s) }));
    await d.start();
    cleanup.push(() => d.stop().then(() => undefined));

    const end = Date.now() + 3000;
    while (got.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    // Before: nothing arrived (each send failed with EINVAL: "UDP socket error" in the log).
    expect(lines.filter((l) => l.includes('UDP socket error'))).toEqual([]);
    expect(got.length).toBeGreaterThan(0);
    expect(got[0][3]).toBe(FrameType.HandshakeInit); // magic (2), version, type
    // Where the peer is, as the socket reports its datagrams' sources: the same string a reply from
    // it carries, so roaming, and the exemptions seeded from the configuration, recognise it.
    expect(d.link('b').addr?.address).toBe('::ffff:127.0.0.1');
  }, 15_000);
});

/**
 * Review 39o-2: the dial policy's `*` is meant to reach anything but this host ("any address of
 * either family except this host's own (loopback), which a rule must name"; an unspecified
 * target is refused "since connecting there reaches the host itself"). It excludes only
 * 127/8 and ::1: an OPEN naming one of this host's own non-loopback addresses (its LAN or
 * public address, an IPv6 ULA) is allowed by `*` and reaches every service of this host that
 * listens on 0.0.0.0 / :: — the very services the loopback and unspecified refusals protect
 * (and, on a host whose firewall accepts `-i lo`, ones closed to the outside).
 */
import { describe, expect, it } from 'vitest';
import { createServer, connect, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { DialPolicy } from '../drivers/wrap/policy.js';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';
import { encodeRecord, RecordType } from '../wire/wrap.js';

const ownAddresses = (): { family: 4 | 6; address: string }[] =>
  Object.values(networkInterfaces())
    .flat()
    .filter((a) => a && !a.internal && !a.address.startsWith('fe80'))
    .map((a) => ({ family: a!.family === 'IPv4' ? (4 as const) : (6 as const), address: a!.address }));

describe('`*` in wrap.allow never reaches this host', () => {
  it("an OPEN to this host's own non-loopback address is refused under a `*` rule, as 127.0.0.1 is", async () => {
    const own = ownAddresses();
    expect(own.length).toBeGreaterThan(0); // the sandbox has eth0
    // A service of this host, listening on every address (as most do).
    const server = createServer((s) => s.end('this-host-only\n'));
    await new Promise<void>((r) => server.listen(0, '::', () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const policy = new DialPolicy([{ peer: '*', to: `*:${port}`, protocol: 'tcp' }]);
      // Loopback and unspecified: refused (documented).
      expect(policy.allows('p', { family: 4, address: '127.0.0.1', port }, 'tcp')).toBe(false);
      expect(policy.allows('p', { family: 4, address: '0.0.0.0', port }, 'tcp')).toBe(false);

      // Through a session as spookd builds it: the peer's OPEN to this host's own address.
      const s = new WrapSession({
        role: 0,
        bootId: 1n,
        windowBytes: 65536,
        maxConnections: 8,
        pingMs: 1000,
        silenceMs: 3000,
        mayDial: (t, d) => policy.allows('p', t, d ? 'udp' : 'tcp'),
      });
      s.onCarrierUp(0);
      s.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n }));
      const dials: WrapEvent[] = [];
      let id = 3;
      for (const a of own) {
        const target = { family: a.family, address: a.address, port };
        s.handleRecord(1, encodeRecord({ type: RecordType.Open, conn: id, wrapPort: port, target, holdMs: 1000, flags: 0 }));
        id += 2;
      }
      for (let e = s.pollEvent(); e; e = s.pollEvent()) if (e.type === 'dial') dials.push(e);

      // What those dials reach (manager.dial connects exactly so):
      const reached: string[] = [];
      for (const d of dials) {
        if (d.type !== 'dial') continue;
        const got = await new Promise<string>((resolve) => {
          const c = connect({ host: d.target.address, port: d.target.port, family: d.target.family });
          let buf = '';
          c.on('data', (b) => (buf += b.toString()));
          c.on('end', () => resolve(buf.trim()));
          c.on('error', (e) => resolve(`error ${e.message}`));
        });
        reached.push(`${d.target.address} -> ${got}`);
      }
      expect(reached).toEqual([]);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

/**
 * A peer configured by DNS name that has only IPv4 addresses (an A record, no AAAA), on a spookd
 * listening on `[::]`: a dual-stack udp6 socket reaches it IPv4-mapped (`::ffff:a.b.c.d`), as it
 * does a peer configured by IPv4 literal (spookd.conf(5): a `[::]` listen serves IPv4 peers).
 * The name was looked up for IPv6 addresses only (getaddrinfo with AF_INET6 and no AI_V4MAPPED):
 * ENOTFOUND at the start and at every re-resolution, so the peer never had an endpoint and this
 * side never initiated to it. `localhost` here is such a name where /etc/hosts gives it only
 * 127.0.0.1 (as in the test image); where it also has ::1, that is the answer.
 */
import { describe, expect, it } from 'vitest';
import { isIPv6 } from 'node:net';
import { configSchema } from '../drivers/daemon/config.js';
import { resolveEndpoints, systemLookup } from '../drivers/daemon/resolve.js';

describe('a named peer with IPv4 addresses only, on an IPv6 listen', () => {
  it('resolves to an address the udp6 socket can send to (IPv4-mapped)', async () => {
    const v6 = await systemLookup('localhost', 6).catch((e: NodeJS.ErrnoException) => `error ${e.code}`);
    console.log(`localhost for a [::] listen: ${v6}`);
    expect(isIPv6(v6)).toBe(true);
    expect(['::1', '::ffff:127.0.0.1']).toContain(v6);
    // IPv4 listens are unchanged.
    expect(await systemLookup('localhost', 4)).toBe('127.0.0.1');
    const cfg = configSchema.parse({
      listen: '[::]:51900',
      privateKeyFile: '/k',
      dataDir: '/d',
      adminSocket: '/s',
      peers: [{ name: 'b', publicKey: 'A'.repeat(43) + '=', endpoint: 'localhost:51901' }],
      registers: [{ name: 'config', kind: 'map' }],
    });
    const r = await resolveEndpoints(cfg);
    expect(r.failed).toEqual([]);
    expect(['[::1]:51901', '[::ffff:127.0.0.1]:51901']).toContain(r.cfg.peers[0].endpoint);
  });
});

import { describe, expect, it } from 'vitest';
import { configSchema } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

/**
 * Review 39j, finding 4 (74f701e): xdp.handshakeRate / handshakeBurst above 1,000,000 are now refused
 * at load, so a configuration the previous release started with (e.g. handshakeRate: 10000000, "no
 * limit in practice"; any value below 2^32 fitted the u32 field) makes the upgraded spookd refuse to
 * start at all (systemd: Restart=on-failure every 2 s, then the start limit), where an XDP problem is
 * otherwise one warning and no fast path. Clamping to the maximum with a warning keeps it running.
 */
const base = {
  listen: '127.0.0.1:32703',
  privateKeyFile: '/nonexistent/x.key',
  dataDir: '/nonexistent/x',
  adminSocket: '/nonexistent/x.sock',
  peers: [{ name: 'y', publicKey: encodeKey(generateKeyPair().publicKey) }],
  registers: [{ name: 'config', kind: 'map' }],
};

describe('an upgrade with a large xdp.handshakeRate', () => {
  it('a rate the previous release accepted (10,000,000 < 2^32) still loads', () => {
    const r = configSchema.safeParse({ ...base, xdp: { interface: 'eth0', handshakeRate: 10_000_000, handshakeBurst: 20_000_000 } });
    // Currently: refused, "Number must be less than or equal to 1000000" (xdp.handshakeRate, xdp.handshakeBurst).
    expect(r.success ? 'loaded' : r.error.issues.map((i) => i.path.join('.')).join(', ')).toBe('loaded');
  });
});

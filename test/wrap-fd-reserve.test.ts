/**
 * The reserve the process-wide cap on wrapped connections' descriptors leaves (drivers/wrap/manager.ts
 * descriptorCap) for what opens later: each peer's carrier, and the carrier dials in flight
 * (MAX_DIALS_IN_FLIGHT, 21) of the peers this side dials (role 0: the pair's sequencer). A peer this
 * side only accepts from is never dialled, yet its dials were reserved too: a hub of 1,000 such
 * peers reserved 22,320 descriptors, so under a limit of 4,096 (systemd before 240: 1024 soft,
 * 4096 hard, which Node raises the soft one to) the cap was 0, and every wrapped connection was
 * refused (too-many-descriptors) with none held.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

function hub(peers: number, dialled: number, limit: number): Internals {
  const list = Array.from({ length: peers }, (_, i) => ({
    name: `p${i}`,
    publicKey: generateKeyPair().publicKey,
    role: (i < dialled ? 0 : 1) as 0 | 1,
  }));
  return new WrapManager(
    { key: generateKeyPair(), peers: list, peerAddr: () => undefined, listen: { host: '127.0.0.1', port: 0 } },
    { intercept: { host: '127.0.0.1', port: 0 }, interception: 'off', windowBytes: 65536, descriptorLimit: limit },
    [],
    pino({ level: 'silent' }),
  );
}

describe('the descriptor reserve of a hub', () => {
  it('1,000 peers this side accepts from, a limit of 4,096: wrapped connections are admitted', () => {
    const m = hub(1000, 0, 4096);
    const ps = m.peers.get('p0');
    expect(m.descriptorRefusalOf(ps)).toBeUndefined(); // main: too-many-descriptors, with none held
    const cap = m.stats().descriptors.cap;
    console.log(JSON.stringify(m.stats().descriptors));
    // The limit less those open, 256 handshake slots, a carrier per peer and 64: above 2,500 here.
    expect(cap).toBeGreaterThan(2500);
  });

  it('the peers this side dials still have their dials reserved', () => {
    const a = hub(100, 0, 100_000).descriptorCap();
    const b = hub(100, 50, 100_000).descriptorCap();
    // MAX_DIALS_IN_FLIGHT (21) each: 1,050, give or take what this process opened between the two.
    expect(Math.abs(a - b - 50 * 21)).toBeLessThan(20);
  });
});

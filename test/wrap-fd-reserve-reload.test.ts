/**
 * The reserve the cap on wrapped connections' descriptors leaves (drivers/wrap/manager.ts
 * descriptorCap) is for the peers known now: a carrier each, and the dials in flight
 * (MAX_DIALS_IN_FLIGHT, 21) of those this side dials. Peers a reload adds after the cap was first
 * worked out (the first wrapped connection) need theirs as much as those configured at start, and
 * a peer a reload removes no longer does.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

const peer = (i: number, role: 0 | 1): { name: string; publicKey: Uint8Array; role: 0 | 1 } => ({
  name: `p${i}`,
  publicKey: generateKeyPair().publicKey,
  role,
});

function manager(peers: { name: string; publicKey: Uint8Array; role: 0 | 1 }[], limit: number): Internals {
  return new WrapManager(
    { key: generateKeyPair(), peers, peerAddr: () => undefined, listen: { host: '127.0.0.1', port: 0 } },
    { intercept: { host: '127.0.0.1', port: 0 }, interception: 'off', windowBytes: 65536, descriptorLimit: limit },
    [],
    pino({ level: 'silent' }),
  );
}

describe('the descriptor reserve across a reload', () => {
  it('grows with the peers a reload adds after the cap was first needed, and shrinks with those it removes', () => {
    const m = manager([peer(0, 0)], 100_000);
    const before = m.descriptorCap(); // the first wrapped connection: worked out with one peer
    for (let i = 1; i <= 100; i++) m.addPeer(peer(i, 0));
    const added = m.descriptorCap();
    console.log(JSON.stringify({ before, afterAdding100Dialled: added }));
    // 100 carriers and 100 × 21 dials: 2,200 fewer for wrapped connections (main: unchanged).
    expect(before - added).toBe(100 * 22);
    expect(m.stats().descriptors.cap).toBe(added);
    for (let i = 1; i <= 100; i++) m.removePeer(`p${i}`);
    expect(m.descriptorCap()).toBe(before);
  });

  it('a hub given 200 dialled peers by a reload under a limit of 8,192 admits no more than one started with them', () => {
    const list = Array.from({ length: 200 }, (_, i) => peer(i + 1, 0));
    const fresh = manager(list, 8192).descriptorCap();
    const m = manager([peer(0, 1)], 8192);
    m.descriptorCap();
    for (const p of list) m.addPeer(p);
    const reloaded = m.descriptorCap();
    console.log(JSON.stringify({ fresh, reloaded }));
    // One more accepted-from peer (p0): its carrier, give or take what this process opened between.
    expect(Math.abs(reloaded - Math.max(0, fresh - 1))).toBeLessThan(20);
  });
});

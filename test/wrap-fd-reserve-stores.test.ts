/**
 * The descriptors a peer's store holds (a log, a pending list and a lease per register) for the
 * cap on wrapped connections' descriptors (drivers/wrap/manager.ts descriptorCap). Those of the
 * peers configured when the cap is first worked out are in what is open then; a peer a reload
 * adds after opens its store's files later: they must lower the cap as much (its reserve counts
 * its carrier and dials only), or at the cap wrapped connections hold the descriptors the reserve
 * keeps for handshakes and carriers. A peer a reload removes gives its store's back.
 */
import { closeSync, openSync } from 'node:fs';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type WrapPeer } from '../drivers/wrap/manager.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

/** An accepted-from peer whose store holds 3 descriptors per register (8 registers). */
const peer = (i: number): WrapPeer => ({ name: `p${i}`, publicKey: generateKeyPair().publicKey, role: 1, descriptors: 3 * 8 });

function manager(peers: WrapPeer[], limit: number): Internals {
  return new WrapManager(
    { key: generateKeyPair(), peers, peerAddr: () => undefined, listen: { host: '127.0.0.1', port: 0 } },
    { intercept: { host: '127.0.0.1', port: 0 }, interception: 'off', windowBytes: 65536, descriptorLimit: limit },
    [],
    pino({ level: 'silent' }),
  );
}

describe("peers' store descriptors in the wrapped connections' cap", () => {
  it('a reload adding 100 peers (8 registers each) lowers the cap by their carriers and their stores', () => {
    const m = manager([peer(0)], 100_000);
    const before = m.descriptorCap(); // the first wrapped connection: p0's store files open already
    const fds: number[] = [];
    try {
      for (let i = 1; i <= 100; i++) {
        // spookd.addPeer: the peer's store loaded (its files open), then the wrappers told of it.
        for (let k = 0; k < 3 * 8; k++) fds.push(openSync('/dev/null', 'r'));
        m.addPeer(peer(i));
      }
      const added = m.descriptorCap();
      console.log(JSON.stringify({ before, afterAdding100: added, storeFds: fds.length }));
      // 100 carriers and 2,400 store descriptors (main: 100, the stores' not counted).
      expect(before - added).toBe(100 + 100 * 24);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    // Removed (their stores closed): the cap is as before.
    for (let i = 1; i <= 100; i++) m.removePeer(`p${i}`);
    expect(m.descriptorCap()).toBe(before);
  });
});

import { describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import { PairState } from '../core/pair/lifecycle.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';

/**
 * Review 39 (time): HandshakeInit timestamps are the initiator's wall clock (spookd:
 * `timestamp: () => Date.now()`), the responder persists the highest it accepted (`last-init`)
 * whatever its size, and the initiator keeps its own last one (`lastSentTimestamp`) in memory only.
 * An initiator whose clock was once ahead (an RTC a day fast at boot, a VM restored with a wrong
 * clock, then NTP steps it back) is refused (`handshake-replayed`) after its next restart for as
 * long as the clock was ahead. Where only it can dial (the responder has no endpoint for it: NAT,
 * a roaming host), the pair cannot form for that long: a day here, years for a clock set to 2038.
 */
const DAY = 86_400_000;
const WALL = 1_760_000_000_000; // the right wall-clock time when the test starts

function keys(seed: number): { a: KeyPair; b: KeyPair } {
  const r = new Rng(seed);
  const kp = (): KeyPair => {
    const privateKey = r.bytes(32);
    return { privateKey, publicKey: publicKeyOf(privateKey) };
  };
  return { a: kp(), b: kp() };
}

describe('ETCP init timestamps and a wall clock that was ahead', () => {
  it('a restarted initiator whose clock was a day ahead before still forms its pair', () => {
    const k = keys(7);
    const rng = new Rng(1);
    const random = (n: number): Uint8Array => rng.bytes(n);
    const at: Record<'a' | 'b', Addr> = { a: { address: 'a', port: 1 }, b: { address: 'b', port: 1 } };
    const clock = { now: 0 };
    /** b's `last-init` files, as spookd persists and reloads them. */
    const lastInit = new Map<string, number>();

    const table = (self: 'a' | 'b', wallOffset: number): PeerTable => {
      const peer = self === 'a' ? 'b' : 'a';
      return new PeerTable({
        etcp: new EtcpEndpoint({
          staticKey: k[self],
          peers: [{ name: peer, publicKey: k[peer].publicKey }],
          random,
          perPeerLimit: 10,
          acceptedInits: self === 'b' ? new Map(lastInit) : undefined,
          onInitAccepted: self === 'b' ? (p, ts) => void lastInit.set(p.name, ts) : undefined,
        }),
        localPublicKey: k[self].publicKey,
        peers: [
          {
            name: peer,
            publicKey: k[peer].publicKey,
            // b does not know where a is (a is behind NAT): only a can dial.
            endpoint: self === 'a' ? at.b : undefined,
            pairState: () => PairState.ENTANGLED,
            budgetMs: 100,
          },
        ],
        now: clock.now,
        clock: () => clock.now,
        // The driver's wall clock: spookd passes Date.now(), here the right time plus the host's error.
        timestamp: (now) => WALL + now + wallOffset,
        violationLimit: 100,
      });
    };

    const run = (a: PeerTable, b: PeerTable, forMs: number): void => {
      const end = clock.now + forMs;
      for (;;) {
        for (let moved = true; moved; ) {
          moved = false;
          for (const [from, t, other] of [
            ['a', a, b],
            ['b', b, a],
          ] as const)
            for (let d = t.pollTransmit(); d; d = t.pollTransmit()) {
              moved = true;
              other.handleDatagram(clock.now, at[from], d.datagram);
            }
          for (const t of [a, b]) while (t.pollEvent());
        }
        const next = Math.min(a.pollTimeout() ?? Infinity, b.pollTimeout() ?? Infinity);
        if (next > end) break;
        clock.now = Math.max(clock.now, next);
        a.handleTimeout(clock.now);
        b.handleTimeout(clock.now);
      }
      clock.now = end;
    };

    // a boots with its clock a day fast and pairs with b: b records a's init timestamp (a day ahead).
    let a = table('a', DAY);
    let b = table('b', 0);
    run(a, b, 10_000);
    expect(a.canSend('b')).toBe(true);
    expect(lastInit.get('a')).toBeGreaterThan(WALL + DAY);

    // NTP steps a's clock right; a (and b, with its persisted last-init) restart.
    a = table('a', 0);
    b = table('b', 0);
    run(a, b, 60_000);
    expect(b.drops['handshake-replayed'] ?? 0).toBe(0);
    expect(a.canSend('b')).toBe(true);
  });
});

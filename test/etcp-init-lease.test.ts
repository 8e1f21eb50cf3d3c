import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import { PairState } from '../core/pair/lifecycle.js';
import { Rng } from '../testing/sim/rng.js';
import { generateKeyPair, publicKeyOf, type KeyPair } from '../crypto/primitives.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configSchema } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';

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
    /** a's `@init-lease` file, likewise. */
    let lease: number | undefined;

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
          initLease: self === 'a' ? lease : undefined,
          onInitLease: self === 'a' ? (upTo) => ((lease = upTo), true) : undefined,
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
        for (let moved = true; moved;) {
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

describe('spookd keeps its init timestamps above those it sent before a restart', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  /** spookd x, not started (no socket), with peer y; its ETCP endpoint, to make inits with. */
  function host(dir: string, kx: KeyPair, ky: KeyPair, logs: string[] = []) {
    writeFileSync(join(dir, 'x.key'), Buffer.from(kx.privateKey).toString('base64'));
    const cfg = configSchema.parse({
      listen: '127.0.0.1:32700', // never bound
      privateKeyFile: join(dir, 'x.key'),
      dataDir: join(dir, 'x'),
      adminSocket: join(dir, 'x.sock'),
      peers: [{ name: 'y', publicKey: encodeKey(ky.publicKey) }],
      registers: [{ name: 'config', kind: 'map' }],
    });
    const x = new Spookd(cfg, kx, pino({ level: 'warn' }, { write: (s: string) => void logs.push(s) }));
    return { x, etcp: (x as unknown as { etcp: EtcpEndpoint }).etcp, close: () => x.link('y').store.close() };
  }

  /** y, restarted with what it persisted: the HandshakeInit timestamps it accepted from x. */
  function responder(kx: KeyPair, ky: KeyPair, accepted: Map<string, number>): EtcpEndpoint {
    const rng = new Rng(3);
    return new EtcpEndpoint({
      staticKey: ky,
      peers: [{ name: 'x', publicKey: kx.publicKey }],
      random: (n) => rng.bytes(n),
      acceptedInits: new Map(accepted),
      onInitAccepted: (p, ts) => void accepted.set(p.name, ts),
    });
  }

  it('its first init after a restart is above the last one sent before, a day ahead', () => {
    const dir = mkdtempSync(join(tmpdir(), 'etcp-init-lease-'));
    dirs.push(dir);
    const kx = generateKeyPair();
    const ky = generateKeyPair();
    const accepted = new Map<string, number>();
    const x1 = host(dir, kx, ky);
    // x's clock is a day fast (PeerTable passes Date.now() as the timestamp).
    expect(responder(kx, ky, accepted).handleHandshake(0, x1.etcp.initiate(0, ky.publicKey, Date.now() + DAY), 'x:1').kind).toBe('respond');
    x1.close();
    // Persisted before the init left, leased ahead of it.
    expect(Number(readFileSync(join(dir, 'x', '@init-lease'), 'utf8'))).toBeGreaterThan(accepted.get('x')!);
    // The clock stepped right, x restarts: y accepts its init.
    const x2 = host(dir, kx, ky);
    const r = responder(kx, ky, accepted).handleHandshake(0, x2.etcp.initiate(0, ky.publicKey, Date.now()), 'x:1');
    x2.close();
    expect(r.kind === 'drop' ? r.reason : r.kind).toBe('respond');
  });

  it('a lease that cannot be read or written is warned about, and inits still leave', () => {
    const dir = mkdtempSync(join(tmpdir(), 'etcp-init-lease-'));
    dirs.push(dir);
    const kx = generateKeyPair();
    const ky = generateKeyPair();
    mkdirSync(join(dir, 'x', '@init-lease'), { recursive: true }); // neither a file to read nor one to replace
    const logs: string[] = [];
    const x = host(dir, kx, ky, logs);
    const r = responder(kx, ky, new Map()).handleHandshake(0, x.etcp.initiate(0, ky.publicKey, Date.now()), 'x:1');
    x.etcp.initiate(0, ky.publicKey, Date.now()); // tried again, not warned again (one warning a minute)
    x.close();
    expect(r.kind).toBe('respond');
    expect(logs.filter((l) => l.includes('unreadable init timestamp lease'))).toHaveLength(1);
    expect(logs.filter((l) => l.includes('cannot persist the init timestamp lease'))).toHaveLength(1);
  });
});

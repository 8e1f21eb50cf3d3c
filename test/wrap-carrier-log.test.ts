/**
 * `carrier up` and `carrier lost` are logged rate-limited per peer (drivers/wrap/manager.ts,
 * VIOLATION_LOG_MS), as violations and resumptions are: each was an info line of its own, and a
 * peer that completes a handshake and drops the carrier at once (about 40 a second per source,
 * the handshake admission's rate) had this host write two lines per cycle, without bound.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { VIOLATION_LOG_MS, WrapManager } from '../drivers/wrap/manager.js';
import { WRAP_TEST_SETTINGS } from './helpers.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

/** A carrier as adopt() uses it: closing it reports the close, as a real one's socket would. */
function fakeCarrier(remoteAddress = '192.0.2.9'): Internals {
  const c: Internals = {
    socket: { localAddress: '192.0.2.1', remoteAddress, remotePort: 7000, cork: () => undefined, uncork: () => undefined },
    cipher: 'chacha20-poly1305',
    writable: true,
    inputPaused: false,
    bytesIn: 0,
    bytesOut: 0,
    budget: undefined,
    handlers: undefined,
    start(h: Internals) {
      c.handlers = h;
    },
    send: () => true,
    resumeInput: () => undefined,
    close(why: string) {
      const h = c.handlers;
      c.handlers = undefined;
      h?.onClose(why);
    },
  };
  return c;
}

describe('carrier up and lost in the log', () => {
  it('a peer cycling its carrier 50 times within 10 s: a line of each per 10 s, the count carried', () => {
    const lines: { msg: string; peer?: string; remote?: string; suppressed?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const m = new WrapManager(
      {
        key: generateKeyPair(),
        peers: [{ name: 'b', publicKey: generateKeyPair().publicKey, role: 1 }], // it dials: this side never redials
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      WRAP_TEST_SETTINGS,
      [],
      log,
    );
    const mi = m as Internals;
    let t = 1_000;
    mi.now = () => t;
    const ps = mi.peers.get('b');
    const ups = (): typeof lines => lines.filter((l) => l.msg === 'carrier up');
    const losts = (): typeof lines => lines.filter((l) => l.msg === 'carrier lost');
    const cycle = (remote?: string): void => {
      const c = fakeCarrier(remote);
      mi.adopt(ps, c);
      t += 5;
      c.close('closed by the peer');
      t += 5;
    };
    const ROUNDS = 50;
    for (let k = 0; k < ROUNDS; k++) cycle();
    const n = ups().length + losts().length;
    const octets = [...ups(), ...losts()].reduce((s, l) => s + JSON.stringify(l).length, 0);
    console.log(`${ROUNDS} carrier cycles: ${n} lines, ${octets} octets`);
    expect(ups().length).toBe(1);
    expect(losts().length).toBe(1);

    // 10 s later the next cycle is two lines again, each with the count not logged meanwhile.
    t += VIOLATION_LOG_MS;
    cycle();
    expect(ups().length).toBe(2);
    expect(losts().length).toBe(2);
    expect(ups().at(-1)!.suppressed).toBe(ROUNDS - 1);
    expect(losts().at(-1)!.suppressed).toBe(ROUNDS - 1);
    expect(ups().at(-1)!.peer).toBe('b');

    // A carrier on another path (the peer roamed) is news: logged at once, its cycles limited as well.
    cycle('198.51.100.4');
    expect(ups().length).toBe(3);
    expect(ups().at(-1)!.remote).toBe('198.51.100.4:7000');
    for (let k = 0; k < ROUNDS; k++) cycle(k % 2 ? '198.51.100.4' : '192.0.2.9');
    expect(ups().length).toBe(3);
    expect(losts().length).toBe(2);
    m.stop?.();
  });
});

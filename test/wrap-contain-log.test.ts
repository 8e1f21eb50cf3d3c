/**
 * A peer's protocol violations are logged rate-limited (drivers/wrap/manager.ts, VIOLATION_LOG_MS):
 * the first, then at most one line per 10 s carrying the number not logged since; the session's
 * counters stay exact, and one peer's flood does not silence another peer's first violation.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { VIOLATION_LOG_MS, WrapManager } from '../drivers/wrap/manager.js';
import { encodeRecord, RecordType } from '../wire/wrap.js';
import { WRAP_TEST_SETTINGS } from './helpers.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

describe('wrap protocol violations in the log', () => {
  it('a flood of undecodable and before-HELLO records: one line per peer per 10 s, with the count suppressed; counters exact', () => {
    const lines: { msg: string; peer?: string; kind?: string; suppressed?: number }[] = [];
    const log = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const a = generateKeyPair();
    const m = new WrapManager(
      {
        key: a,
        peers: [
          { name: 'b', publicKey: generateKeyPair().publicKey, role: 1 },
          { name: 'c', publicKey: generateKeyPair().publicKey, role: 1 },
        ],
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
    const b = mi.peers.get('b');
    const c = mi.peers.get('c');
    const flood = (ps: Internals, n: number): void => {
      for (let i = 0; i < n; i++) {
        ps.session.handleRecord(t, i % 2 ? Uint8Array.of(99) : encodeRecord({ type: RecordType.Ping }));
        mi.moveRecords(ps, t);
      }
    };
    const violations = (): typeof lines => lines.filter((l) => l.msg === 'wrap protocol violation');

    flood(b, 10_000);
    expect(violations()).toHaveLength(1);
    expect(violations()[0]).toMatchObject({ peer: 'b', kind: 'before-hello' });
    expect(violations()[0].suppressed).toBeUndefined();
    expect(b.session.counters.violations).toBe(10_000);

    // Another peer's first violation is its own line.
    flood(c, 1);
    expect(violations().map((l) => l.peer)).toEqual(['b', 'c']);

    t += VIOLATION_LOG_MS - 1;
    flood(b, 5);
    expect(violations()).toHaveLength(2);
    t += 1;
    flood(b, 1);
    expect(violations()).toHaveLength(3);
    expect(violations()[2]).toMatchObject({ peer: 'b', suppressed: 9_999 + 5 });
    expect(b.session.counters.violations).toBe(10_006);
  });
});

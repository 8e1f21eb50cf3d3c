/**
 * A local user's refused connections to wrapped ports (SECURITY.md, local unprivileged users): each
 * was a warning line of its own, so any local process connecting in a loop (to the intercept
 * listener itself: no original destination; past its share of a peer's slots: user-share) wrote
 * ~200 octets of log per connect, without limit. Now one line per reason and user a minute, the
 * rest counted (the refusals themselves still are, in `refused`).
 */
import { describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { pino } from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type InterceptedDst, type Interceptor } from '../drivers/wrap/manager.js';

describe('refused intercepted connections', () => {
  it('500 connects without an original destination: a line or two, every one counted', async () => {
    const lines: string[] = [];
    const stand: Interceptor = {
      setPorts: () => {},
      originalDst: (): InterceptedDst | undefined => undefined,
      originalUdpDst: (): InterceptedDst | undefined => undefined,
      stats: () => ({}),
      close: () => {},
    };
    const m = new WrapManager(
      {
        key: generateKeyPair(),
        peers: [{ name: 'b', publicKey: generateKeyPair().publicKey, role: 0 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      { intercept: { host: '127.0.0.1', port: 0 }, interception: 'auto', windowBytes: 65536, maxConnections: 16, silenceMs: 3000 },
      [{ protocol: 'tcp', port: 5432, peer: 'b', holdMs: 1000, connectTimeoutMs: 60_000 }],
      pino({ level: 'warn' }, { write: (s: string) => void lines.push(s) }),
      () => stand,
    );
    await m.start();
    const port = Number(String(m.stats().intercept).split(':')[1]);
    try {
      for (let batch = 0; batch < 10; batch++)
        await Promise.all(
          Array.from(
            { length: 50 },
            () =>
              new Promise<void>((r) => {
                const s = connect(port, '127.0.0.1');
                s.on('error', () => {});
                s.on('close', () => r());
              }),
          ),
        );
      const refused = lines.filter((l) => l.includes('intercepted connection refused'));
      console.log(`500 refused connects: ${refused.length} lines, ${refused.reduce((n, l) => n + l.length, 0)} octets`);
      expect(m.refused['no-original-destination']).toBe(500);
      expect(refused.length).toBeLessThanOrEqual(2);
    } finally {
      await m.stop();
    }
  }, 30_000);
});

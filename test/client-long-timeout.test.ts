import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient } from '../client/admin-client.js';
import { Session, deadline } from '../client/session.js';

/**
 * A call's `timeoutMs` past 2^31 - 1 ms (24.8 days, e.g. 30 days or Infinity for "wait as long
 * as it takes"): Node's setTimeout takes a signed 32-bit delay and fires a longer one (or
 * Infinity) after 1 ms, with a TimeoutOverflowWarning. The call was abandoned as `timeout` at
 * once although spookd answered 100 ms later (for a write: the write took effect and the caller
 * was told it timed out).
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-client-long-timeout-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in spookd on a Unix socket answering each request line after `delayMs`. */
async function fakeSpookd(path: string, delayMs: number): Promise<Server> {
  const server = createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const { id } = JSON.parse(buf.slice(0, nl)) as { id: number };
        buf = buf.slice(nl + 1);
        setTimeout(() => s.writable && s.write(`${JSON.stringify({ id, ok: true, result: { peers: [] } })}\n`), delayMs);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return server;
}

const outcomeOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'answered',
    (e: Error & { code?: string }) => e.code ?? e.message,
  );

describe('client calls with a timeout beyond what a timer holds', () => {
  for (const [name, timeoutMs] of [
    ['30 days', 30 * 86_400_000],
    ['2^31 ms', 2 ** 31],
    ['Infinity', Infinity],
  ] as const) {
    it(`a call with timeoutMs ${name} is answered, not abandoned at once`, async () => {
      const path = join(dir, `${timeoutMs}.sock`);
      const server = await fakeSpookd(path, 100);
      const session = await Session.open(path);
      const client = await AdminClient.connect(path);
      try {
        expect(await outcomeOf(session.request('status', {}, deadline({ timeoutMs })))).toBe('answered');
        expect(await outcomeOf(client.request('status', {}, { timeoutMs }))).toBe('answered');
        expect(client.pendingCount).toBe(0);
      } finally {
        session.close();
        client.close();
        await new Promise<void>((r) => server.close(() => r()));
      }
    });
  }

  it('a short timeout still fires', async () => {
    const path = join(dir, 'short.sock');
    const server = await fakeSpookd(path, 1_000);
    const client = await AdminClient.connect(path);
    try {
      const t0 = performance.now();
      expect(await outcomeOf(client.request('status', {}, { timeoutMs: 50 }))).toBe('timeout');
      expect(performance.now() - t0).toBeLessThan(900);
    } finally {
      client.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session, deadline } from '../client/session.js';

/**
 * Review 39 (time): the client library's deadlines (client/session.ts, `deadline` and `left`) are
 * absolute instants of the wall clock (Date.now). A step of the host's clock during a call moves
 * its deadline by the step: back an hour, a call with a 300 ms timeout keeps reconnecting to a
 * stopped spookd (and would wait for an answer) for an hour; forward a day, a call with 10 s to go
 * is abandoned at once as `timeout` although spookd answers within 100 ms. spookd itself measures
 * every wait on performance.now().
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-client-deadline-'));
const HOUR = 3_600_000;
afterEach(() => vi.restoreAllMocks());
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in spookd on a Unix socket answering each request line after `delayMs`. */
async function fakeSpookd(path: string, delayMs: number): Promise<{ server: Server; conns: Set<Socket> }> {
  const conns = new Set<Socket>();
  const server = createServer((s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
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
  return { server, conns };
}

describe('client deadlines and a wall-clock step', () => {
  it('a call of 300 ms to a stopped spookd gives up within about 300 ms although the clock stepped back an hour', async () => {
    const path = join(dir, 'a.sock');
    const { server, conns } = await fakeSpookd(path, 0);
    const session = await Session.open(path);
    // spookd stops: its socket goes, the session's connection ends.
    for (const c of conns) c.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    await vi.waitFor(() => expect((session as unknown as { client: { open: boolean } }).client.open).toBe(false));

    const d = deadline({ timeoutMs: 300 });
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() - HOUR); // the clock steps back an hour
    const t0 = performance.now();
    const call = session.request('status', {}, d).then(
      () => 'answered',
      (e: Error & { code?: string }) => e.code ?? e.message,
    );
    const outcome = await Promise.race([call, new Promise<string>((r) => setTimeout(() => r('still waiting after 3 s'), 3000))]);
    const took = performance.now() - t0;
    vi.restoreAllMocks(); // the clock is right again: the call ends (it must not outlive the test)
    await call;
    session.close();
    expect(outcome).toBe('timeout');
    expect(took).toBeLessThan(1500);
  });

  it('a call with 10 s left is answered in 100 ms although the clock stepped forward a day', async () => {
    const path = join(dir, 'b.sock');
    const { server } = await fakeSpookd(path, 100);
    const session = await Session.open(path);
    try {
      const d = deadline({ timeoutMs: 10_000 });
      const real = Date.now.bind(Date);
      vi.spyOn(Date, 'now').mockImplementation(() => real() + 24 * HOUR); // the clock steps forward a day
      const outcome = await session.request('status', {}, d).then(
        () => 'answered',
        (e: Error & { code?: string }) => e.code ?? e.message,
      );
      expect(outcome).toBe('answered');
    } finally {
      session.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

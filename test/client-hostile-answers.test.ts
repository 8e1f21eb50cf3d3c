import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient, type SpookError } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';

/**
 * The library against a spookd (or whatever listens on its socket) that answers garbage: a line that
 * is JSON but not an object (`null`), or a feed event without its fields. Each gives the application
 * an error; none may throw inside the library's socket handler, where nothing can catch it (the
 * application's process ends on an uncaught TypeError).
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-client-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in spookd: `answer` gives the lines to send for each request. */
async function fakeSpookd(path: string, answer: (req: { id: number; cmd: string }) => string[]): Promise<Server> {
  const server = createServer((s: Socket) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('error', () => {});
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const req = JSON.parse(buf.slice(0, nl)) as { id: number; cmd: string };
        buf = buf.slice(nl + 1);
        for (const l of answer(req)) s.write(`${l}\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return server;
}

describe('the library facing garbage from spookd', { timeout: 15_000 }, () => {
  it('a line that is JSON but not an object (null) does not throw in the socket handler; the call is still answered', async () => {
    const path = join(dir, 'a.sock');
    const server = await fakeSpookd(path, (req) => ['null', '7', JSON.stringify({ id: req.id, ok: true, result: { pid: 1 } })]);
    const client = await AdminClient.connect(path);
    const sock = (client as unknown as { sock: Socket }).sock;
    // What the socket's 'data' listener does with such a line, seen directly (in the socket it is an uncaught exception).
    expect(() => sock.emit('data', 'null\n')).not.toThrow();
    const r = await client.request('status', {}, { timeoutMs: 2_000 });
    expect(r).toEqual({ pid: 1 });
    client.close();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('a feed event without its fields ends the watch with an error (onEnd), never an exception in the socket handler', async () => {
    const path = join(dir, 'b.sock');
    const server = await fakeSpookd(path, (req) => {
      if (req.cmd === 'size') return [JSON.stringify({ id: req.id, ok: true, result: { register: 'config', version: 5, kind: 'map' } })];
      if (req.cmd === 'feed')
        return [
          JSON.stringify({ id: req.id, ok: true, result: 'streaming' }),
          JSON.stringify({ id: req.id, peer: 'b', event: { type: 'changes', register: 'config' } }),
        ];
      return [JSON.stringify({ id: req.id, ok: false, error: { code: 'unknown-command', message: 'no' } })];
    });
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => void uncaught.push(e);
    process.on('uncaughtException', onUncaught);
    const h = await openRegister('config', { socket: path });
    const changes: unknown[] = [];
    let ended: SpookError | undefined;
    try {
      await h.watch('', { onChange: (c) => void changes.push(c), onEnd: (e) => (ended = e) });
      for (let t0 = Date.now(); ended === undefined && uncaught.length === 0 && Date.now() - t0 < 3_000;)
        await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.off('uncaughtException', onUncaught);
      h.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
    expect(uncaught.map((e) => String(e))).toEqual([]);
    expect(changes).toEqual([]);
    expect(ended?.code).toBe('internal');
  });
});

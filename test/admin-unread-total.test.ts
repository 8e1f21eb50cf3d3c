import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import type { Spookd } from '../drivers/daemon/spookd.js';
import type { ADMIN_LIMITS } from '../drivers/admin/server.js';
import { RawAdmin, startSoloSpookd, until } from './admin-solo.js';

/**
 * What spookd buffers for admin clients that do not read their answers: 8 MiB per connection
 * (MAX_CLIENT_BUFFER), and 1,024 connections. Without a bound on all of them together, one local
 * client that opens connections and never reads holds 8 GiB of answer strings in spookd's heap
 * (4 GiB by default): spookd ends out of memory. Past ADMIN_LIMITS.maxUnreadTotal in all, the
 * connection that stopped reading first is dropped; a client that reads is still answered.
 *
 * One spookd in this process whose peer never runs; free ports the kernel gives.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-unread-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

beforeAll(async () => {
  d = await startSoloSpookd(dir, socket);
});

afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The server's sockets of its client connections, and what each has buffered unread. */
const serverSockets = (): Socket[] => [...(d.admin as unknown as { clients: Map<Socket, unknown> }).clients.keys()];
const unreadTotal = (): number => serverSockets().reduce((n, s) => n + s.writableLength, 0);

describe('answers admin clients leave unread', { timeout: 30_000 }, () => {
  it(`are bounded in all (maxUnreadTotal), not only per connection: the connection that stopped reading first goes`, async () => {
    // A cheap large answer: an unknown command is answered at once with the list of commands.
    const probe = await RawAdmin.open(socket);
    const answer = (await probe.ask('x', {})).rawLength + 1;
    const limits = d.admin!.limits as typeof ADMIN_LIMITS & { maxUnreadTotal?: number };
    const budget = 16 << 20;
    limits.maxUnreadTotal = budget;

    const perConn = 6 << 20; // under the 8 MiB of one connection
    const requests = Math.floor(perConn / answer);
    const line = `${JSON.stringify({ id: 1, cmd: 'x' })}\n`.repeat(requests);
    const hogs: { sock: Socket; closed: boolean }[] = [];
    const N = 10;
    for (let i = 0; i < N; i++) {
      const sock = connect(socket);
      const h = { sock, closed: false };
      sock.on('close', () => (h.closed = true));
      sock.on('error', () => {});
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.pause(); // never reads
      hogs.push(h);
      const before = serverSockets().length;
      sock.write(line);
      // Every answer written (or the connection dropped): the server's backlog for it stops growing.
      let last = -1;
      await until(() => {
        const now = unreadTotal();
        const settled = now === last;
        last = now;
        return settled && serverSockets().length <= before;
      }, 20_000);
      await new Promise((r) => setTimeout(r, 20));
    }
    const held = unreadTotal();
    console.log(
      `answer ${answer} B; ${N} connections that never read, ${requests} answers each: spookd holds ${(held / 2 ** 20).toFixed(1)} MiB unread ` +
        `(${serverSockets().length - 1} of them still connected)`,
    );
    // A client that reads is still answered.
    expect((await probe.ask('status', {})).ok).toBe(true);
    // Found within an eighth more than the limit (it is not counted on every answer), then brought under it.
    expect(held).toBeLessThanOrEqual(budget + budget / 8 + answer);
    // The one that stopped reading first went (it reads what was sent, then the end); the latest is still served.
    const first = hogs[0];
    first.sock.on('data', () => {});
    first.sock.resume();
    await until(() => first.closed);
    const latest = hogs[N - 1];
    let tail = '';
    latest.sock.setEncoding('utf8');
    latest.sock.on('data', (c: string) => (tail = (tail + c).slice(-4096)));
    latest.sock.resume();
    latest.sock.write(`${JSON.stringify({ id: 99, cmd: 'status' })}\n`);
    await until(() => tail.includes('"id":99,"ok":true') || latest.closed);
    expect(latest.closed).toBe(false);
    for (const h of hogs) h.sock.destroy();
    probe.close();
    await until(() => serverSockets().length === 0);
  });
});

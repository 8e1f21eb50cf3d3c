/**
 * Past maxUnreadTotal in all, spookd drops the admin connection behind for longest (server.ts
 * shedUnread). A client that reads a trickle and tops its backlog up, so that it holds megabytes
 * for seconds, was behind only since its last read (a backlog that shrank restarted its age): any
 * other client with an answer not read at once was behind for longer, and was shed, while the one
 * holding the most for longest stayed. Its age is now that of its oldest byte not read.
 *
 * One spookd in this process whose peer never runs; free ports the kernel gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { RawAdmin, startSoloSpookd, until } from './admin-solo.js';

const dir = mkdtempSync(join(tmpdir(), 'spook-shed-trickle-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

beforeAll(async () => {
  d = await startSoloSpookd(dir, socket);
});

afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const serverSockets = (): Socket[] => [...(d.admin as unknown as { clients: Map<Socket, unknown> }).clients.keys()];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A raw client connection and the server's socket for it. */
async function open(): Promise<{ sock: Socket; server: Socket; closed: () => boolean }> {
  const before = new Set(serverSockets());
  const sock = connect(socket);
  let closed = false;
  sock.on('close', () => (closed = true));
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', () => r()));
  await until(() => serverSockets().some((s) => !before.has(s)));
  const server = serverSockets().find((s) => !before.has(s))!;
  return { sock, server, closed: () => closed };
}

describe('which admin client is shed past maxUnreadTotal', { timeout: 30_000 }, () => {
  it('the one holding megabytes for seconds behind a trickle of reads, not one whose answer is a moment old', async () => {
    const probe = await RawAdmin.open(socket);
    const answer = (await probe.ask('x', {})).rawLength + 1; // an unknown command: answered with the list of commands
    probe.close();
    const MiB = 1 << 20;
    const line = (bytes: number): string => `${JSON.stringify({ id: 1, cmd: 'x' })}\n`.repeat(Math.ceil(bytes / answer));

    // The trickler: 2 MiB of answers, then one chunk read every 100 ms and topped up to 2 MiB again.
    const trickler = await open();
    trickler.sock.pause();
    let readBytes = 0;
    trickler.sock.on('data', (c: Buffer) => {
      readBytes += c.length;
      trickler.sock.pause();
    });
    trickler.sock.write(line(2 * MiB));
    await until(() => trickler.server.writableLength > 1.5 * MiB);
    let reading = true;
    const loop = (async () => {
      while (reading && !trickler.closed()) {
        trickler.sock.resume(); // one chunk, then paused again
        await sleep(100);
        if (trickler.server.writableLength < 2 * MiB) trickler.sock.write(line(0.125 * MiB));
      }
    })();
    await sleep(1500);
    expect(readBytes).toBeGreaterThan(0); // it reads, a little
    expect(trickler.server.writableLength).toBeGreaterThan(1.5 * MiB); // and holds megabytes throughout

    // Another client asks 2 MiB in steps (pipelined requests, a stream's events) and reads them half a second
    // later (busy meanwhile): in all over the limit, one must go.
    d.admin!.limits.maxUnreadTotal = 2.5 * MiB;
    const other = await open();
    other.sock.pause();
    for (let i = 0; i < 8 && !other.closed() && !trickler.closed(); i++) {
      other.sock.write(line(0.25 * MiB));
      await sleep(50);
    }
    await sleep(100);
    const shed = { trickler: trickler.closed() || trickler.server.destroyed, other: other.closed() || other.server.destroyed };
    reading = false;
    await loop;
    console.log(`shed ${JSON.stringify(shed)}; the trickler read ${readBytes} octets in 2 s`);
    expect(shed).toEqual({ trickler: true, other: false });
    trickler.sock.destroy();
    other.sock.resume(); // it reads now
    other.sock.destroy();
    await until(() => serverSockets().length === 0);
  });
});

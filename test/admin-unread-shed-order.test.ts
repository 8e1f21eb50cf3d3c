/**
 * Past maxUnreadTotal in all, spookd drops the admin connection behind for longest (server.ts
 * shedUnread). A client that reads steadily, its backlog never quite empty (a stream, pipelined
 * requests), is not behind since its first large answer: what it read since counts. A client that
 * stopped reading later, holding more and growing, goes first; the reader is still served. And a
 * client that reads a trickle and tops its backlog up, holding megabytes for seconds, is as old as
 * its oldest byte not read (a backlog that shrank restarting its age let it hold them for ever,
 * while any client whose answer was a moment old was shed first).
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

const dir = mkdtempSync(join(tmpdir(), 'spook-shed-order-'));
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
  it('the one that stopped reading, not the earlier one that reads steadily with a backlog never empty', async () => {
    const probe = await RawAdmin.open(socket);
    const answer = (await probe.ask('x', {})).rawLength + 1; // an unknown command: answered with the list of commands
    probe.close();
    const MiB = 1 << 20;
    const line = (bytes: number): string => `${JSON.stringify({ id: 1, cmd: 'x' })}\n`.repeat(Math.ceil(bytes / answer));

    // The reader: 1.5 MiB of answers asked at once (behind from then), then read a chunk per tick and topped up,
    // so that spookd's backlog for it stays near 1.5 MiB, never empty, while it reads throughout.
    const reader = await open();
    reader.sock.pause();
    let readBytes = 0;
    reader.sock.on('data', (c: Buffer) => {
      readBytes += c.length;
      reader.sock.pause();
    });
    reader.sock.write(line(1.5 * MiB));
    await until(() => reader.server.writableLength > MiB);
    let reading = true;
    const loop = (async () => {
      while (reading && !reader.closed()) {
        reader.sock.resume(); // one chunk, then paused again
        await sleep(5);
        if (reader.server.writableLength < 1.5 * MiB) reader.sock.write(line(0.25 * MiB));
      }
    })();
    await sleep(300);
    expect(readBytes).toBeGreaterThan(MiB); // it reads
    expect(reader.server.writableLength).toBeGreaterThan(0); // and its backlog is never empty

    // The staller, later: it never reads. In all over the limit: one of them must go.
    const limits = d.admin!.limits;
    limits.maxUnreadTotal = 4 * MiB;
    const staller = await open();
    staller.sock.pause();
    // Asked in steps, as the reader reads on: 3.5 MiB unread in all, unless it is shed first.
    for (let i = 0; i < 14 && !staller.closed() && !reader.closed(); i++) {
      staller.sock.write(line(0.25 * MiB));
      await sleep(50);
    }
    await sleep(200);
    reading = false;
    await loop;
    const shed = { reader: reader.closed() || reader.server.destroyed, staller: staller.closed() || staller.server.destroyed };
    expect(shed).toEqual({ reader: false, staller: true });
    reader.sock.destroy();
    staller.sock.destroy();
    await until(() => serverSockets().length === 0);
  });

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

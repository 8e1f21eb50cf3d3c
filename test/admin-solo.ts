/**
 * One spookd in this process for admin-socket tests, whose peer (and domain members) never run:
 * free loopback ports the kernel gives (UDP and TCP), not a block of test/ports.ts; and a raw
 * admin connection that writes lines as they are and parses the replies.
 */
import { writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

/** A port free for UDP and TCP on loopback now (spookd listens on both: datagrams and the wrappers' carrier). */
export async function freePort(): Promise<number> {
  for (;;) {
    const u = createSocket('udp4');
    const port = await new Promise<number>((resolve, reject) => {
      u.once('error', reject);
      u.bind(0, '127.0.0.1', () => resolve(u.address().port));
    });
    const tcp = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    u.close();
    if (tcp) return port;
  }
}

/** spookd `a` in `dir`, admin socket `socket`, peer `b` that never runs, register `config`; `extra` adds to its configuration. */
export async function startSoloSpookd(dir: string, socket: string, extra: Record<string, unknown> = {}): Promise<Spookd> {
  const keys = { a: generateKeyPair(), b: generateKeyPair() };
  writeFileSync(join(dir, 'a.key'), Buffer.from(keys.a.privateKey).toString('base64'));
  for (let attempt = 0; ; attempt++) {
    const cfg = configSchema.parse({
      listen: `127.0.0.1:${await freePort()}`,
      privateKeyFile: join(dir, 'a.key'),
      dataDir: join(dir, 'a'),
      adminSocket: socket,
      fsync: 'never',
      timing: { keepaliveMs: 100, silenceMs: 3000 },
      peers: [{ name: 'b', publicKey: encodeKey(keys.b.publicKey), endpoint: `127.0.0.1:${await freePort()}` }],
      registers: [{ name: 'config', kind: 'map' }],
      ...extra,
    });
    const s = new Spookd(cfg, keys.a, pino({ level: 'silent' }));
    try {
      await s.start();
      return s;
    } catch (e) {
      await s.stop().catch(() => {});
      if (attempt >= 5) throw e; // the port was taken between the probe and the bind: try another
    }
  }
}

/** A reply line as these tests read it. */
export interface AdminLine<R = unknown> {
  id?: number;
  ok?: boolean;
  result?: R;
  event?: { type: string };
  error?: { code: string; message: string; field?: string };
}

/** A raw admin connection: lines written as they are, replies parsed (and kept as sent: `raw`). */
export class RawAdmin<R = unknown> {
  raw: string[] = [];
  lines: AdminLine<R>[] = [];
  private buf = '';
  closed = false;
  private next = 1;
  constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => {
      this.buf += c;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const l = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.raw.push(l);
        this.lines.push(JSON.parse(l) as AdminLine<R>);
      }
    });
    sock.on('close', () => (this.closed = true));
    sock.on('error', () => {});
  }
  static open<R = unknown>(socket: string): Promise<RawAdmin<R>> {
    return new Promise((resolve, reject) => {
      const s = connect(socket, () => resolve(new RawAdmin<R>(s)));
      s.once('error', reject);
    });
  }
  write(x: unknown): void {
    this.sock.write(typeof x === 'string' ? x : `${JSON.stringify(x)}\n`);
  }
  /** The reply to request `id`, with the length of its line. */
  async reply(id: number, ms = 10_000): Promise<AdminLine<R> & { rawLength: number }> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.lines.findIndex((l) => l.id === id);
      if (i >= 0) return { ...this.lines[i], rawLength: this.raw[i].length };
      if (this.closed || Date.now() > end) throw new Error(`no reply to ${id}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  /** The answer to request `id` (not a stream's event line), if it came. */
  answered(id: number): AdminLine<R> | undefined {
    return this.lines.find((l) => l.id === id && (l.ok !== undefined || l.event === undefined));
  }
  async until(f: () => boolean, ms = 20_000): Promise<void> {
    const end = Date.now() + ms;
    while (!f()) {
      if (this.closed || Date.now() > end) throw new Error('timed out waiting for lines');
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  /** One request (the next id) and its answer. */
  async ask(cmd: string, args: Record<string, unknown>, ms = 20_000): Promise<AdminLine<R>> {
    const id = this.next++;
    this.write({ id, cmd, args });
    return this.reply(id, ms);
  }
  close(): void {
    this.sock.destroy();
  }
}

/** Waits for `f` to hold (polled every 10 ms), at most `ms`. */
export async function until(f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

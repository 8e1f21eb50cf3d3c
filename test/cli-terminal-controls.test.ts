import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reader, Writer } from '../wire/buffer.js';
import { readName, writeName } from '../wire/names.js';
import { describeDiffs, diffManifests, manifestEntry } from '../core/pair/manifest.js';
import { showBytes } from '../drivers/admin/args.js';
import { spookProgram } from '../cli/program.js';

/**
 * `spook` prints to an operator's terminal what peers chose: a register name a peer declares (any
 * UTF-8 of 1-64 octets on the wire, ESC included) in `status`'s register-mismatch, a value a peer
 * wrote (its `text` when "printable": C1 controls such as U+009B, CSI, pass). Printed raw, they are
 * terminal control sequences (clear the screen, set the title, move the cursor over what was printed).
 * Every control a terminal acts on is shown escaped, in the human output and in `--json` alike.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-cli-controls-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

/** A stand-in spookd answering each command with `results[cmd]`. */
async function fakeSpookd(path: string, results: Record<string, unknown>): Promise<Server> {
  const server = createServer((s: Socket) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('error', () => {});
    s.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const req = JSON.parse(buf.slice(0, nl)) as { id: number; cmd: string };
        buf = buf.slice(nl + 1);
        s.write(`${JSON.stringify({ id: req.id, ok: true, result: results[req.cmd] })}\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return server;
}

/** Runs `spook ARGS` in this process; what it printed on stdout. */
async function spook(args: string[]): Promise<string> {
  let printed = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    printed += typeof s === 'string' ? s : Buffer.from(s).toString('utf8');
    return true;
  });
  try {
    await spookProgram().parseAsync(['node', 'spook', ...args]);
  } finally {
    vi.restoreAllMocks();
  }
  return printed;
}

describe('spook and terminal controls from peers', { timeout: 15_000 }, () => {
  // A register name as a peer's Manifest carries it: accepted by the wire (valid UTF-8), then described by spookd as it is.
  const w = new Writer(128);
  writeName(w, '\x1b]0;owned\x07\x1b[2J');
  const evil = readName(new Reader(w.buf.subarray(0, w.pos)));
  const quota = { maxKeys: 10, maxBytes: 1000, maxValueBytes: 100 };
  const mismatch = describeDiffs(
    diffManifests(
      [manifestEntry({ name: 'config', kind: 'map', quota } as never)],
      [
        manifestEntry({ name: 'config', kind: 'map', quota } as never),
        { ...manifestEntry({ name: 'x', kind: 'map', quota } as never), name: evil },
      ],
    ),
    'b',
  );
  // A value a peer wrote, as spookd shows it: C1 CSI (U+009B) passes as "printable" text.
  const value = showBytes(new TextEncoder().encode('ok\u009b2J\u009d0;owned\u009c'));

  it('spookd relays them as given (the premise)', () => {
    expect(mismatch).toMatch(CONTROL);
    expect(value.text).toMatch(CONTROL);
  });

  it('`spook status` and `spook get`, for people and with --json, print none of them raw', async () => {
    const path = join(dir, 'a.sock');
    const server = await fakeSpookd(path, {
      status: {
        publicKey: 'k',
        listen: '127.0.0.1:1',
        uptimeMs: 1000,
        pid: 1,
        xdp: 'off',
        pairs: [{ peer: 'b', state: 'DECOHERENT', registerMismatch: mismatch }],
        drops: {},
        warningsSuppressed: 0,
      },
      get: { register: 'config', version: 3, found: true, keyVersion: 3, value },
    });
    try {
      const outs = {
        status: await spook(['status', '-s', path]),
        statusJson: await spook(['status', '-s', path, '--json']),
        get: await spook(['get', 'config', 'k', '-s', path]),
        getJson: await spook(['get', 'config', 'k', '-s', path, '--json']),
      };
      const raw = Object.fromEntries(Object.entries(outs).map(([k, s]) => [k, s.match(CONTROL)?.[0] ?? null]));
      expect(raw).toEqual({ status: null, statusJson: null, get: null, getJson: null });
      // Still there to read, escaped; --json still parses to the same value.
      expect(outs.status).toContain('owned');
      expect((JSON.parse(outs.getJson) as { value: { text: string } }).value.text).toBe(value.text);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

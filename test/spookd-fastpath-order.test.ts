import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { PairState } from '../core/pair/lifecycle.js';
import { FrameType } from '../wire/constants.js';
import { decodeFrame } from '../wire/header.js';
import { HANDSHAKE_RESP } from '../wire/etcp.js';
import { viewOf } from '../wire/layouts.js';
import { portBase } from './ports.js';

/**
 * The order in which spookd executes the peer table's outputs (drivers/daemon/spookd.ts,
 * drain): two spookd in this process on loopback, their fast paths and their sends recorded in
 * one list each. With `enforce_pairs`, XDP drops Data frames of pairs it does not know: the
 * responder's pair slot must exist before its HandshakeResp leaves (the initiator's first Data
 * frame follows the response at once), and the response leaves before any Data frame on its session.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-order-'));
const base = portBase('spookd-fastpath-order.test.ts');
const host = '127.0.0.4'; // an address of its own: no port of the other tests
const keys: Record<string, KeyPair> = { p: generateKeyPair(), q: generateKeyPair() };
const port: Record<string, number> = { p: base, q: base + 1 };
const d: Record<string, Spookd> = {};
type Step = { added: number } | { removed: number } | { sent: FrameType; pairId: number; responder?: number };
const steps: Record<string, Step[]> = { p: [], q: [] };

function make(name: string, peer: string): Spookd {
  writeFileSync(join(dir, `${name}.key`), Buffer.from(keys[name].privateKey).toString('base64'));
  const cfg = configSchema.parse({
    listen: `${host}:${port[name]}`,
    privateKeyFile: join(dir, `${name}.key`),
    dataDir: join(dir, name),
    adminSocket: join(dir, `${name}.sock`),
    fsync: 'never',
    timing: { keepaliveMs: 100, silenceMs: 3000 },
    peers: [{ name: peer, publicKey: encodeKey(keys[peer].publicKey), endpoint: `${host}:${port[peer]}` }],
    registers: [{ name: 'config', kind: 'map' }],
  });
  const s = new Spookd(cfg, keys[name], pino({ level: 'silent' }));
  const fp = s.fastPath;
  const add = fp.addPair.bind(fp);
  const remove = fp.removePair.bind(fp);
  fp.addPair = (i) => (steps[name].push({ added: i }), add(i));
  fp.removePair = (i) => (steps[name].push({ removed: i }), remove(i));
  return s;
}

/** Record every datagram the daemon sends (its socket exists once started). */
function recordSends(name: string): void {
  const sock = (d[name] as unknown as { socket: { send: (...a: unknown[]) => void } }).socket;
  const send = sock.send.bind(sock);
  sock.send = (...a: unknown[]) => {
    const f = decodeFrame(a[0] as Uint8Array);
    // A HandshakeResp names the responder's new index (its pair slot) in its payload.
    const responder = f.header.type === FrameType.HandshakeResp ? HANDSHAKE_RESP.fields.sender_index.get(viewOf(f.payload)) : undefined;
    steps[name].push({ sent: f.header.type, pairId: f.header.pairId, responder });
    return send(...a);
  };
}

async function until(what: string, f: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe('spookd: fast path and sends in order', () => {
  it('the responder adds the XDP pair slot before its HandshakeResp leaves, and sends no Data frame on the session before the response', async () => {
    d.p = make('p', 'q');
    d.q = make('q', 'p');
    await d.p.start();
    recordSends('p');
    await d.q.start();
    recordSends('q');
    await until(
      'p-q entangled',
      () => d.p.link('q').pair.state === PairState.ENTANGLED && d.q.link('p').pair.state === PairState.ENTANGLED,
    );
    let responses = 0;
    for (const name of ['p', 'q']) {
      const s = steps[name];
      s.forEach((st, i) => {
        if (!('sent' in st) || st.sent !== FrameType.HandshakeResp) return;
        responses++;
        const before = s.slice(0, i);
        // The responder's pair slot was added before the response left.
        expect(before).toContainEqual({ added: st.responder });
        // No Data frame on the session it forms (they carry the initiator's index, the response's pair id) left before it.
        expect(before.filter((x) => 'sent' in x && x.sent === FrameType.Data && x.pairId === st.pairId)).toEqual([]);
      });
    }
    expect(responses).toBeGreaterThan(0);
  }, 30_000);
});

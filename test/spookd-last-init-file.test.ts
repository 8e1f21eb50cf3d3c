import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configSchema } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';

/**
 * Review 39 (time), the responder's `last-init`: spookd wrote it in place (truncate, then write,
 * no fsync), so a failed write or a crash after the truncate left it empty, and it read it back
 * with Number(), for which '' is 0: the peer's replay protection was reset without a word (and
 * garbage, NaN, was dropped likewise). It is now replaced atomically, and a damaged one refuses
 * the peer's inits up to this host's clock at start, with a warning (PROTOCOL.md §12.2.1).
 */
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** spookd x (not started: no socket) with peer `peer` (ky), its `last-init` for y as `lastInit` holds. */
function responder(kx: KeyPair, ky: KeyPair, lastInit?: string, peer = 'y') {
  const dir = mkdtempSync(join(tmpdir(), 'spook-last-init-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'x.key'), Buffer.from(kx.privateKey).toString('base64'));
  if (lastInit !== undefined) {
    mkdirSync(join(dir, 'x', 'y'), { recursive: true });
    writeFileSync(join(dir, 'x', 'y', 'last-init'), lastInit);
  }
  const cfg = configSchema.parse({
    listen: '127.0.0.1:32701', // never bound
    privateKeyFile: join(dir, 'x.key'),
    dataDir: join(dir, 'x'),
    adminSocket: join(dir, 'x.sock'),
    peers: [{ name: peer, publicKey: encodeKey(ky.publicKey) }],
    registers: [{ name: 'config', kind: 'map' }],
  });
  const logs: string[] = [];
  const x = new Spookd(cfg, kx, pino({ level: 'warn' }, { write: (s: string) => void logs.push(s) }));
  const etcp = (x as unknown as { etcp: EtcpEndpoint }).etcp;
  return { x, etcp, logs, file: join(dir, 'x', 'y', 'last-init'), close: () => x.link(peer).store.close() };
}

describe("spookd's last-init", () => {
  for (const [what, text] of [
    ['empty (a torn in-place write)', ''],
    ['garbage', 'x\n'],
  ])
    it(`${what}: an init from before the restart is still refused, with a warning`, () => {
      const kx = generateKeyPair();
      const ky = generateKeyPair();
      const y = new EtcpEndpoint({ staticKey: ky, peers: [{ name: 'x', publicKey: kx.publicKey }], random });
      const captured = y.initiate(0, kx.publicKey, Date.now() - 60_000); // sent a minute before x's restart
      const x = responder(kx, ky, text);
      const r = x.etcp.handleHandshake(0, captured, '127.0.0.9:1');
      x.close();
      expect(r.kind === 'drop' && r.reason).toBe('handshake-replayed');
      expect(x.logs.filter((l) => l.includes('unreadable handshake timestamp'))).toHaveLength(1);
      // An honest init (the wall clock now, or later) is answered.
      const x2 = responder(kx, ky, text);
      const fresh = x2.etcp.handleHandshake(0, y.initiate(0, kx.publicKey, Date.now() + 1000), '127.0.0.9:1');
      x2.close();
      expect(fresh.kind).toBe('respond');
    });

  it('is replaced (written aside and renamed), never rewritten in place', () => {
    const kx = generateKeyPair();
    const ky = generateKeyPair();
    const y = new EtcpEndpoint({ staticKey: ky, peers: [{ name: 'x', publicKey: kx.publicKey }], random });
    const x = responder(kx, ky, '5\n');
    const before = statSync(x.file).ino;
    const r = x.etcp.handleHandshake(0, y.initiate(0, kx.publicKey, 1000), '127.0.0.9:1');
    x.close();
    expect(r.kind).toBe('respond');
    expect(statSync(x.file).ino).not.toBe(before);
    expect(existsSync(`${x.file}.tmp`)).toBe(false);
    expect(readFileSync(x.file, 'utf8')).toBe('1000\n');
  });

  it('of a peer added by a reload is read: an init from before the restart stays refused', () => {
    const kx = generateKeyPair();
    const ky = generateKeyPair();
    const y = new EtcpEndpoint({ staticKey: ky, peers: [{ name: 'x', publicKey: kx.publicKey }], random });
    const captured = y.initiate(0, kx.publicKey, Date.now() - 60_000);
    // x accepted it before its restart (last-init holds it); y is not configured at start, a reload adds it.
    const x = responder(kx, generateKeyPair(), `${Date.now() - 60_000}\n`, 'z');
    x.x.addPeer({ name: 'y', publicKey: encodeKey(ky.publicKey) });
    clearTimeout((x.x as unknown as { timer?: NodeJS.Timeout }).timer); // not started: no tick
    const r = x.etcp.handleHandshake(0, captured, '127.0.0.9:1');
    x.close();
    x.x.link('y').store.close();
    expect(r.kind === 'drop' && r.reason).toBe('handshake-replayed');
  });
});

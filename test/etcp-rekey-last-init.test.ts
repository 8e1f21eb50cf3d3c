import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configSchema } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';

/**
 * Review 39j, finding 2 (e0e6578): a peer rekeyed across a restart inherits the OLD key's
 * `last-init`. The constructor reads `<dataDir>/<peer>/last-init` before addLink's claimPairDir
 * retires the old pair's directory, so the new key's inits are refused (`handshake-replayed`) until
 * its clock passes the old key's last accepted timestamp; the same rekey by reload reads it after the
 * link (as e0e6578 takes care to: "a rekeyed peer's directory (and the old key's last-init) went
 * aside") and answers at once. The old key's timestamps can be well ahead of the clock: a host whose
 * clock ran ahead, which the new @init-lease keeps ahead (and a restart loop pushes 60 s further per restart).
 */
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('a rekeyed peer and the old key’s last-init', () => {
  it('a new key configured across a restart is answered, as by a reload', () => {
    const kx = generateKeyPair();
    const kyOld = generateKeyPair();
    const kyNew = generateKeyPair();
    const dir = mkdtempSync(join(tmpdir(), 'r39j-2-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'x.key'), Buffer.from(kx.privateKey).toString('base64'));
    // The old pair's directory: keys (x, yOld), and yOld's last accepted init, a day ahead of the clock.
    const peerDir = join(dir, 'x', 'y');
    mkdirSync(peerDir, { recursive: true });
    writeFileSync(join(peerDir, 'pair'), `${encodeKey(kx.publicKey)}\n${encodeKey(kyOld.publicKey)}\n`);
    writeFileSync(join(peerDir, 'last-init'), `${Date.now() + 86_400_000}\n`);
    const cfg = configSchema.parse({
      listen: '127.0.0.1:32702', // never bound
      privateKeyFile: join(dir, 'x.key'),
      dataDir: join(dir, 'x'),
      adminSocket: join(dir, 'x.sock'),
      peers: [{ name: 'y', publicKey: encodeKey(kyNew.publicKey) }], // the operator rekeyed y, then restarted
      registers: [{ name: 'config', kind: 'map' }],
    });
    const x = new Spookd(cfg, kx, pino({ level: 'silent' }));
    const etcp = (x as unknown as { etcp: EtcpEndpoint }).etcp;
    try {
      const y = new EtcpEndpoint({ staticKey: kyNew, peers: [{ name: 'x', publicKey: kx.publicKey }], random });
      const r = etcp.handleHandshake(0, y.initiate(0, kx.publicKey, Date.now()), '127.0.0.9:1');
      // Currently: handshake-replayed, "init timestamp <now> not after <now + 1 day>" (the old key's).
      expect(r.kind === 'drop' ? `${r.reason}: ${r.detail}` : r.kind).toBe('respond');
    } finally {
      x.link('y').store.close();
    }
  });
});

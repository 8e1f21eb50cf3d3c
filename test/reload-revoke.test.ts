/**
 * Revocation by reload (OPERATIONS.md, "Reloading"): a peer the file no longer names, or names
 * with a new key, loses every access at once; a peer whose addition is refused is trusted
 * nowhere; a `wrap.allow` rule written for a key follows the key, never a name it had.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { DiskStore } from '../drivers/store/store.js';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair } from '../crypto/primitives.js';
import type { SpookdConfig } from '../drivers/daemon/config.js';
import { configOf, has, inProcess, until, write } from './inproc.js';
import { portBase } from './ports.js';

// z, x, b: a domain host; v: wrap.allow by key; u, c, other: an addition whose store fails; y, d: a file in the way; w: allow rules.
const p = inProcess('reload-revoke', ['z', 'x', 'b', 'v', 'u', 'c', 'other', 'y', 'w'], portBase('reload-revoke.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const start = async (d: Spookd): Promise<Spookd> => {
  all.push(d);
  await d.start();
  return d;
};
const etcpOf = (d: Spookd): EtcpEndpoint => (d as unknown as { etcp: EtcpEndpoint }).etcp;
const refusals = (r: { refused: ({ peer: string } | { field: string } | object)[] }): string[] =>
  r.refused.map((x) => ('peer' in x ? `peer ${x.peer}` : 'field' in x ? `field ${x.field}` : '?'));

describe('a host with a domain', () => {
  const dom = (members: string[]) => [{ name: 'main', members, registers: [{ name: 'kv', kind: 'map' as const }], policy: 'buffer' }];

  it('removes and rekeys a peer that is no member of it; a member is still refused', async () => {
    // z peers with b (the domain's other member) and x (no member: a domain link all the same).
    const z = await start(new Spookd(configOf(p, 'z', ['b', 'x'], { domains: dom(['b']) }), p.keys.z, silent));
    const x = await start(new Spookd(configOf(p, 'x', ['z']), p.keys.x, silent));
    await until('z-x entangled', () => z.link('x').pair.state === 'ENTANGLED' && x.link('z').pair.state === 'ENTANGLED');
    write(x, 'z', 'before');
    await until('x write reaches z', () => has(z, 'x', 'before'));

    const r = await applyConfig(z, configOf(p, 'z', ['b'], { domains: dom(['b']) }));
    expect([r.removed, r.refused]).toEqual([['x'], []]);
    expect(z.links.has('x')).toBe(false);
    expect(z.table.peer('x')).toBeUndefined();
    expect(z.domains.get('main')!.idOf.has('x')).toBe(false);

    // Back with its key, then rekeyed (its key believed stolen): the new key only.
    expect((await applyConfig(z, configOf(p, 'z', ['b', 'x'], { domains: dom(['b']) }))).added).toEqual(['x']);
    const stolen = configOf(p, 'z', ['b', 'x'], { domains: dom(['b']) });
    const fresh = generateKeyPair().publicKey;
    stolen.peers = stolen.peers.map((q) => (q.name === 'x' ? { ...q, publicKey: encodeKey(fresh) } : q));
    const r2 = await applyConfig(z, stolen);
    expect([r2.rekeyed, r2.refused]).toEqual([['x'], []]);
    expect(Buffer.from(z.link('x').publicKey).equals(Buffer.from(fresh))).toBe(true);
    // A new pair (its roles and hash seed are its keys'): from an empty store, the old one kept aside.
    expect(readdirSync(z.cfg.dataDir).filter((f) => f.startsWith('x.retired-'))).toHaveLength(1);
    expect(z.link('x').pair.register('config').version).toBe(0);
    const init = new EtcpEndpoint({ staticKey: p.keys.x, peers: [{ name: 'z', publicKey: p.keys.z.publicKey }], random }).initiate(
      0,
      p.keys.z.publicKey,
      Date.now(),
    );
    const out = etcpOf(z).handleHandshake(z.now(), init, '127.0.0.1:1');
    expect(out.kind === 'drop' && out.reason).toBe('unauthorized-key');

    // b is a voter: its removal is refused, it keeps its pair.
    const r3 = await applyConfig(z, { ...stolen, peers: stolen.peers.filter((q) => q.name !== 'b') });
    expect(r3.refused).toEqual([{ peer: 'b', reason: 'peer b is a member of domain main: change the domain first' }]);
    expect(z.links.has('b')).toBe(true);
  }, 40_000);
});

describe('wrap.allow by key across a reload', () => {
  it('follows the key: a rename keeps the grant with the key, a new key under the old name gets none', async () => {
    const ssh = { address: '10.0.0.5', port: 22 };
    const K = encodeKey(p.keys.x.publicKey);
    const cfg0 = configOf(p, 'v', ['x'], { wrap: { allow: [{ peer: K, to: '10.0.0.5:22', protocol: 'tcp' }] } });
    const v = await start(new Spookd(cfg0, p.keys.v, silent));
    expect(v.wraps.policy.allows('x', ssh, 'tcp')).toBe(true);

    // The host holding K renamed x -> old-x; the rules (by key) unchanged.
    const cfg1: SpookdConfig = { ...cfg0, peers: cfg0.peers.map((q) => ({ ...q, name: 'old-x' })) };
    const r1 = await applyConfig(v, cfg1);
    expect([r1.removed, r1.added, r1.refused, r1.allowChanged]).toEqual([['x'], ['old-x'], [], true]);
    expect(v.wraps.policy.allows('old-x', ssh, 'tcp')).toBe(true);
    expect(v.wraps.policy.rules).toEqual([{ peer: 'old-x', to: '10.0.0.5:22', protocol: 'tcp' }]);

    // Another host configured under the freed name x, with its own key: the file grants it nothing.
    const cfg2: SpookdConfig = {
      ...cfg1,
      peers: [...cfg1.peers, { name: 'x', publicKey: encodeKey(generateKeyPair().publicKey), endpoint: '127.0.0.1:9' }],
    };
    const r2 = await applyConfig(v, cfg2);
    expect([r2.added, r2.refused, r2.allowChanged]).toEqual([['x'], [], false]);
    expect(v.wraps.policy.allows('x', ssh, 'tcp')).toBe(false);
    expect(v.wraps.policy.allows('old-x', ssh, 'tcp')).toBe(true);
  }, 30_000);
});

describe('a reload whose peer addition fails', () => {
  it('leaves its key unauthorised (no session forms), and a later reload adds it', async () => {
    let storeFails = true;
    const u = await start(
      new Spookd(configOf(p, 'u', ['other']), p.keys.u, silent, (peer, dir, fsync, onFlushFailed) => {
        if (peer === 'c' && storeFails) throw new Error(`EACCES: permission denied, mkdir '${dir}'`);
        return new DiskStore(dir, fsync, undefined, undefined, onFlushFailed);
      }),
    );
    const withC = configOf(p, 'u', ['other', 'c']);
    const r = await applyConfig(u, withC);
    expect([r.added, refusals(r)]).toEqual([[], ['peer c']]);
    expect(u.links.has('c')).toBe(false);
    expect(u.table.peer('c')).toBeUndefined();

    // c (configured with u) handshakes: refused as any unknown key, nothing formed.
    const c = await start(new Spookd(configOf(p, 'c', ['u']), p.keys.c, silent));
    await until('u refuses c', () => (u.drops['unauthorized-key'] ?? 0) > 0);
    expect([...etcpOf(u).sessions.values()].some((s) => s.peer.name === 'c')).toBe(false);
    expect(u.drops['internal-error'] ?? 0).toBe(0);

    // The disk mended, the operator reloads again: added, and the pair forms.
    storeFails = false;
    expect((await applyConfig(u, withC)).added).toEqual(['c']);
    await until('u-c entangled', () => u.link('c').pair.state === 'ENTANGLED' && c.link('u').pair.state === 'ENTANGLED');
  }, 30_000);

  it('without injection: a file where its directory goes refuses it, and its key is refused too', async () => {
    const y = await start(new Spookd(configOf(p, 'y', ['other']), p.keys.y, silent));
    mkdirSync(y.cfg.dataDir, { recursive: true });
    writeFileSync(join(y.cfg.dataDir, 'c'), 'not a directory');
    const r = await applyConfig(y, configOf(p, 'y', ['other', 'c']));
    expect(refusals(r)).toEqual(['peer c']);
    const init = new EtcpEndpoint({ staticKey: p.keys.c, peers: [{ name: 'y', publicKey: p.keys.y.publicKey }], random }).initiate(
      0,
      p.keys.y.publicKey,
      Date.now(),
    );
    const out = etcpOf(y).handleHandshake(y.now(), init, '127.0.0.1:1');
    expect(out.kind === 'drop' && out.reason).toBe('unauthorized-key');
  }, 30_000);

  it("leaves out only that peer's wrap.allow rules: another peer's revocation applies", async () => {
    const ssh = { address: '10.0.0.5', port: 22 };
    const w = await start(
      new Spookd(
        configOf(p, 'w', ['other'], { wrap: { allow: [{ peer: 'other', to: '10.0.0.5:22', protocol: 'tcp' }] } }),
        p.keys.w,
        silent,
        (peer, dir, fsync, onFlushFailed) => {
          if (peer === 'c') throw new Error(`ENOSPC: no space left on device, mkdir '${dir}'`);
          return new DiskStore(dir, fsync, undefined, undefined, onFlushFailed);
        },
      ),
    );
    // The file revokes other's grant and adds c with a grant of its own; c's store cannot be made.
    const rules = [
      { peer: 'c', to: '10.0.0.6:443', protocol: 'tcp' as const },
      { peer: 'other', to: '10.0.0.7:80', protocol: 'tcp' as const },
    ];
    const r = await applyConfig(w, configOf(p, 'w', ['other', 'c'], { wrap: { allow: rules } }));
    expect(refusals(r)).toEqual(['peer c', 'field wrap.allow[0]']);
    expect(r.allowChanged).toBe(true);
    expect(w.wraps.policy.allows('other', ssh, 'tcp')).toBe(false);
    expect(w.wraps.policy.allows('other', { address: '10.0.0.7', port: 80 }, 'tcp')).toBe(true);
    // The rule left out is not taken as applied: the next reload tries it again.
    expect(w.cfg.wrap.allow).toEqual([rules[1]]);
  }, 30_000);
});

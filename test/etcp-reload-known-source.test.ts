/**
 * A peer's configured endpoint is exempt from the global handshake DH bucket before its first
 * handshake (§12.8: `knownSources`, so that a flood right after a start does not lock honest
 * peers out). A peer added by a reload (or rekeyed: removed, then added), or moved by one to a
 * new endpoint, is configured as one at the start is, and gets the same exemption. Nothing binds: the daemons are not started, and
 * their ETCP endpoint is driven directly with the handshakes a flood and the peer would send.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { configOf, inProcess, until } from './inproc.js';

const silent = pino({ level: 'silent' });
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const dirs: string[] = [];
const daemons: Spookd[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop().catch(() => {});
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const THRESHOLD = 2;
const B_AT = '192.0.2.1:7000';

/** What host `h` does with b's HandshakeInit (cookie taken) from its configured endpoint, the global DH bucket spent by strangers. */
function underFlood(h: Spookd, kb: ReturnType<typeof generateKeyPair>): string {
  const etcp = (h as unknown as { etcp: EtcpEndpoint }).etcp;
  const kc = generateKeyPair(); // strangers: they know h's public key, h does not know theirs
  const stranger = (): EtcpEndpoint => new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: h.key.publicKey, name: 'h' }], random });
  const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: h.key.publicKey, name: 'h' }], random });
  let now = 1_000_000;
  const warm = stranger();
  for (let i = 0; i <= THRESHOLD; i++) etcp.handleHandshake(now, warm.initiate(now, h.key.publicKey), `198.51.100.200:${i}`);
  const cookied = (ep: EtcpEndpoint, src: string): void => {
    const r = etcp.handleHandshake(now, ep.initiate(now, h.key.publicKey), src);
    expect(r.kind).toBe('cookie');
    if (r.kind === 'cookie') ep.handleHandshake(now, r.datagram, 'h');
  };
  const strangers = Array.from({ length: 10 }, (_, i) => ({ src: `198.51.100.${i}:4000`, ep: stranger() }));
  for (const s of strangers) cookied(s.ep, s.src);
  cookied(b, B_AT);
  now += 1000;
  for (const s of strangers) etcp.handleHandshake(now, s.ep.initiate(now, h.key.publicKey), s.src);
  now += 1;
  const r = etcp.handleHandshake(now, b.initiate(now, h.key.publicKey), B_AT);
  return r.kind === 'drop' ? r.reason : r.kind;
}

describe('a peer added by a reload, under a handshake flood', () => {
  it('is answered from its configured endpoint, as a peer configured at the start is', async () => {
    const p = inProcess('spook-reload-known', ['h', 'b', 'c'], 1);
    dirs.push(p.dir);
    const extra = { handshakes: { cookieThreshold: THRESHOLD } };
    const withB = configOf(p, 'h', ['b'], extra);
    withB.peers[0].endpoint = B_AT;

    const atStart = new Spookd(withB, p.keys.h, silent);
    daemons.push(atStart);
    expect(underFlood(atStart, p.keys.b)).toBe('respond');

    const p2 = inProcess('spook-reload-known', ['h', 'b', 'c'], 1);
    dirs.push(p2.dir);
    Object.assign(p2.keys, p.keys);
    const alone = configOf(p2, 'h', ['c'], extra); // c only (a configuration names at least one peer)
    const reloaded = new Spookd(alone, p.keys.h, silent);
    daemons.push(reloaded);
    const r = await applyConfig(reloaded, { ...alone, peers: [...alone.peers, ...withB.peers] });
    expect(r.added).toEqual(['b']);
    expect(underFlood(reloaded, p.keys.b)).toBe('respond');
  });

  it('so is a peer rekeyed by a reload (its new key, at its endpoint)', async () => {
    const p = inProcess('spook-reload-known', ['h', 'b', 'c'], 1);
    dirs.push(p.dir);
    const extra = { handshakes: { cookieThreshold: THRESHOLD } };
    const withC = configOf(p, 'h', ['c'], extra);
    const h = new Spookd({ ...withC, peers: [{ ...withC.peers[0], name: 'b', endpoint: B_AT }] }, p.keys.h, silent);
    daemons.push(h);
    const withB = configOf(p, 'h', ['b'], extra);
    withB.peers[0].endpoint = B_AT;
    const r = await applyConfig(h, { ...h.cfg, peers: withB.peers });
    expect(r.rekeyed).toEqual(['b']);
    expect(underFlood(h, p.keys.b)).toBe('respond');
  });

  it('so is a peer a reload moves to a new endpoint (before it has handshaken from there)', async () => {
    const p = inProcess('spook-reload-known', ['h', 'b'], 1);
    dirs.push(p.dir);
    const extra = { handshakes: { cookieThreshold: THRESHOLD } };
    const cfg = configOf(p, 'h', ['b'], extra);
    cfg.peers[0].endpoint = '203.0.113.50:7000';
    const h = new Spookd(cfg, p.keys.h, silent);
    daemons.push(h);
    const r = await applyConfig(h, { ...cfg, peers: [{ ...cfg.peers[0], endpoint: B_AT }] });
    expect(r.moved).toEqual(['b']);
    expect(underFlood(h, p.keys.b)).toBe('respond');
  });

  it('so is a named peer whose name resolves to a new address (re-resolved while it does not answer)', async () => {
    const p = inProcess('spook-reload-known', ['h', 'b'], 1);
    dirs.push(p.dir);
    const cfg = configOf(p, 'h', ['b'], { handshakes: { cookieThreshold: THRESHOLD } });
    cfg.peers[0].endpoint = '203.0.113.50:7000'; // b.spook.test as resolved at the start
    const h = new Spookd(cfg, p.keys.h, silent);
    daemons.push(h);
    h.watchNames(new Map([['b', { host: 'b.spook.test', port: 7000 }]]), () => Promise.resolve('192.0.2.1'), 20);
    await until('b re-resolved', () => h.link('b').addr?.address === '192.0.2.1');
    expect(underFlood(h, p.keys.b)).toBe('respond');
  });
});

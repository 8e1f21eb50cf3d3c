/**
 * A configured IPv6 endpoint may be written in any of its textual forms (`[2001:DB8:0::1]`), with
 * a zone id (`[fd00::2%eth0]`), but the UDP socket names a datagram's source in one form
 * (`2001:db8::1`, as inet_ntop writes it), with a zone only for a link-local address (fe80::/10,
 * as Node's AddressToJS appends the interface's name). Both checks that compare the two by text
 * failed for a peer written otherwise: its exemption from the global DH bucket under a handshake
 * flood (§12.8, knownSources) never matched it, and (since CookieReplies are taken only from the
 * host an init went to) neither did its CookieReply, so under load the pair never formed in
 * either direction. Only the loopback binds (OS ports).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { sourceOf } from '../core/etcp/peers.js';
import { pairSummary } from '../drivers/admin/pair.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { configOf, inProcess } from './inproc.js';

const silent = pino({ level: 'silent' });
const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));
const dirs: string[] = [];
const daemons: Spookd[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop().catch(() => {});
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const THRESHOLD = 2;
/** As configured, and as the socket reports the same host's datagrams. */
const WRITTEN = '[2001:DB8:0:0::1]:7000';
const SEEN = '2001:db8::1:7000';

function daemon(endpoint: string): { h: Spookd; kb: ReturnType<typeof generateKeyPair> } {
  const p = inProcess('spook-ipv6-form', ['h', 'b'], 1);
  dirs.push(p.dir);
  const cfg = configOf(p, 'h', ['b'], { handshakes: { cookieThreshold: THRESHOLD } });
  cfg.listen = '[::1]:0';
  cfg.peers[0].endpoint = endpoint;
  const h = new Spookd(cfg, p.keys.h, silent);
  daemons.push(h);
  return { h, kb: p.keys.b };
}

/** Spend the global DH bucket of `etcp` with a stranger's inits (it knows the key, the host does not know its). */
function flood(etcp: EtcpEndpoint, key: Uint8Array, now: number): void {
  const kc = generateKeyPair();
  const warm = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: key, name: 'x' }], random });
  for (let i = 0; i <= THRESHOLD; i++) etcp.handleHandshake(now, warm.initiate(now, key), `198.51.100.200:${i}`);
}

/**
 * What the host of a peer configured at `endpoint` does with that peer's CookieReply to its init,
 * the reply's source named `seen` by the socket (the peer under a flood, so it answers with one).
 */
function cookieReply(endpoint: string, seen: string): string {
  const { h, kb } = daemon(endpoint);
  const etcp = (h as unknown as { etcp: EtcpEndpoint }).etcp;
  const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: h.key.publicKey, name: 'h' }], random, cookieThreshold: THRESHOLD });
  const now = 1_000_000;
  flood(b, kb.publicKey, now);
  // As the peer table sends an init (peers.ts initiate): to the address it holds for b.
  const init = etcp.tryInitiate(now, kb.publicKey, now, sourceOf(h.link('b').addr!));
  if ('drop' in init) throw new Error(init.drop);
  const reply = b.handleHandshake(now, init.datagram, '2001:db8::2:7000');
  expect(reply.kind).toBe('cookie');
  if (reply.kind !== 'cookie') return reply.kind;
  const r = etcp.handleHandshake(now, reply.datagram, seen);
  return r.kind === 'drop' ? `${r.reason}: ${r.detail}` : r.kind;
}

/** What a udp6 socket names as the source of a datagram sent from `from` (bound there). */
async function sourceSeen(from: string): Promise<string> {
  const r = createSocket({ type: 'udp6' });
  const s = createSocket({ type: 'udp6' });
  try {
    await new Promise<void>((res) => r.bind(0, '::1', () => res()));
    await new Promise<void>((res) => s.bind(0, from, () => res()));
    const got = new Promise<string>((res) => r.once('message', (_m, rinfo) => res(rinfo.address)));
    s.send('x', r.address().port, '::1');
    return await got;
  } finally {
    r.close();
    s.close();
  }
}

describe('a peer whose IPv6 endpoint is written otherwise than the socket names it', () => {
  it('keeps its exemption from the global DH bucket under a flood', () => {
    const { h, kb } = daemon(WRITTEN);
    const etcp = (h as unknown as { etcp: EtcpEndpoint }).etcp;
    const b = new EtcpEndpoint({ staticKey: kb, peers: [{ publicKey: h.key.publicKey, name: 'h' }], random });
    let now = 1_000_000;
    flood(etcp, h.key.publicKey, now);
    const first = etcp.handleHandshake(now, b.initiate(now, h.key.publicKey), SEEN);
    expect(first.kind).toBe('cookie');
    if (first.kind === 'cookie') b.handleHandshake(now, first.datagram, 'h');
    for (let i = 0; i < 10; i++) {
      const kc = generateKeyPair();
      const s = new EtcpEndpoint({ staticKey: kc, peers: [{ publicKey: h.key.publicKey, name: 'h' }], random });
      const r = etcp.handleHandshake(now, s.initiate(now, h.key.publicKey), `198.51.100.${i}:4000`);
      if (r.kind === 'cookie') s.handleHandshake(now, r.datagram, 'h');
      now += 1;
      etcp.handleHandshake(now, s.initiate(now, h.key.publicKey), `198.51.100.${i}:4000`);
    }
    now += 1;
    const r = etcp.handleHandshake(now, b.initiate(now, h.key.publicKey), SEEN);
    expect(r.kind === 'drop' ? r.reason : r.kind).toBe('respond');
  });

  it('has its CookieReply taken by the host that sent the init', () => {
    expect(cookieReply(WRITTEN, SEEN)).toBe('cookie-stored');
  });
});

describe('a peer whose IPv6 endpoint carries a zone id', () => {
  it('is held as the socket names its sources: no zone off link-local', async () => {
    const seen = await sourceSeen('::1');
    expect(seen).toBe('::1');
    const { h } = daemon('[::1%lo]:7000');
    expect(h.link('b').addr?.address).toBe(seen);
    // Link-local: the socket names the interface, so the zone stays.
    const { h: l } = daemon('[FE80::FC:0:1%eth0]:7000');
    expect(l.link('b').addr?.address).toBe('fe80::fc:0:1%eth0');
    // IPv4-mapped, zone or not: dotted, as the socket writes it.
    const { h: m } = daemon('[::FFFF:7F00:1%lo]:7000');
    expect(m.link('b').addr?.address).toBe('::ffff:127.0.0.1');
    // The admin API writes it as a configuration file does: brackets, so the port stays apart.
    expect(pairSummary(h.link('b')).endpoint).toBe('[::1]:7000');
  });

  it('has its CookieReply taken by the host that sent the init', () => {
    // The socket names the reply's source without the zone (fd00::2 is not link-local).
    expect(cookieReply('[fd00::2%eth0]:7000', 'fd00::2:7000')).toBe('cookie-stored');
  });
});

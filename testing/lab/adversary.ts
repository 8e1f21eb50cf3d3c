/**
 * An authenticated adversary built from the project's own code: it holds a key the victim
 * spookd authorises (it is a configured peer), forms ETCP sessions with the real handshake
 * (core/etcp/) and a WRAP carrier with the real carrier handshake (drivers/wrap/carrier.ts),
 * and then sends sealed, well-authenticated but hostile payloads (testing/lab/fuzz.ts). It
 * also applies unauthenticated pressure (replayed HandshakeInits from an unauthorised key,
 * idle TCP connections to the carrier port) and the floods `spook-lab bench attack` measures.
 *
 * Every attack is deterministic from its seed and bounded in count and time. Run it as
 * `node dist/testing/lab/adversary.js '<AttackSpec as JSON>'` (inside the attacker's network
 * namespace in the end-to-end test): it prints one JSON AttackReport line.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { EtcpEndpoint, pairIdentity, type Session } from '../../core/etcp/endpoint.js';
import { publicKeyOf, type KeyPair } from '../../crypto/primitives.js';
import { FrameType } from '../../wire/constants.js';
import { decodeFrame, isHandshakeType } from '../../wire/header.js';
import { encodeMessage, MsgType, REQ_WANT_META } from '../../wire/messages.js';
import { dialCarrier, type Carrier } from '../../drivers/wrap/carrier.js';
import { encodeDataHeader, encodeRecord, RecordType, type Target } from '../../wire/wrap.js';
import { domainIdOf, nodeIdOf } from '../../drivers/daemon/domains.js';
import { decodeKey } from '../../drivers/daemon/keys.js';
import { Rng } from '../sim/rng.js';
import { estpPayload, qnPayload, wrapRecord } from './fuzz.js';

export type Attack =
  /** Fuzzed ESTP payloads on the pair session. */
  | { kind: 'estp'; count: number; rate: number; registers: string[] }
  /** Given payloads (hex), each sealed in a Data frame on the pair session: a named attack a test crafted. */
  | { kind: 'payloads'; payloads: string[] }
  /** Fuzzed QN envelopes for `domain` (the adversary may or may not be one of its members). */
  | { kind: 'qn'; count: number; rate: number; domain: string; otherDomains: string[]; members: string[]; registers: string[] }
  /** Fuzzed WRAP records over an authenticated carrier. */
  | { kind: 'wrap'; count: number; rate: number; targets: Target[] }
  /** A replayed HandshakeInit of an unauthorised key, replayed and garbage inits, idle carrier-port connections. */
  | { kind: 'unauthenticated'; durationMs: number; initRate: number; idleConnections: number }
  /** Reconciliation requests that each ask for a fresh pin of `register` (the victim must be the pair's sequencer). */
  | { kind: 'recon-flood'; durationMs: number; rate: number; register: string }
  /** Fresh authorised HandshakeInits and replays of an unauthorised one. */
  | { kind: 'handshake-flood'; durationMs: number; rate: number }
  /**
   * Wrapped connections opened to `sink` and DATA pushed into them as fast as the carrier
   * takes it, up to `maxBytes`. With `serve` the adversary is the sink itself (on
   * sink.address, which the victim must reach): it reads and discards, or never reads, and
   * then what the victim buffers is what the peer made it hold.
   */
  | { kind: 'wrap-flood'; durationMs: number; connections: number; sink: Target; maxBytes?: number; serve?: 'discard' | 'never-read' };

export interface AttackSpec {
  seed: number;
  /** The adversary's authorised private key (base64, as spookd key files). */
  privateKey: string;
  victim: { publicKey: string; host: string; port: number };
  /** The UDP address the victim has configured for this peer (its handshakes arrive there). */
  bind: { host: string; port: number };
  attack: Attack;
}

export interface AttackReport {
  kind: Attack['kind'];
  /** Messages (ESTP payloads, QN envelopes, WRAP records, handshake frames) sent. */
  sent: number;
  handshakes: number;
  /** Data frames the victim sent back on the pair. */
  received: number;
  /** Handshake frames the victim answered with: HandshakeResps (a DH done) and CookieReplies (none). */
  handshakeResponses?: number;
  cookieReplies?: number;
  carriers: number;
  idleOpened: number;
  /** Bytes of WRAP DATA pushed (wrap-flood). */
  bytes: number;
  ms: number;
  errors: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends `count` items (or until `untilMs`) at `rate` per second, yielding to the event loop between small bursts. */
async function paced(rate: number, count: number, untilMs: number, one: (i: number) => void | Promise<void>): Promise<number> {
  const t0 = performance.now();
  const burst = Math.max(1, Math.min(64, Math.floor(rate / 200)));
  let i = 0;
  for (; i < count && performance.now() < untilMs; i++) {
    await one(i);
    if (i % burst === burst - 1) await sleep(Math.max(0, t0 + ((i + 1) / rate) * 1000 - performance.now()));
  }
  return i;
}

/** The adversary's ETCP side: a UDP socket, the real endpoint, the session it sends on. */
class EtcpLink {
  readonly ep: EtcpEndpoint;
  session: Session | undefined;
  received = 0;
  responses = 0;
  cookies = 0;
  private waiting: (() => void) | undefined;
  handshakes = 0;

  constructor(
    private readonly sock: UdpSocket,
    private readonly key: KeyPair,
    private readonly victim: { publicKey: Uint8Array; host: string; port: number },
  ) {
    this.ep = new EtcpEndpoint({
      staticKey: key,
      peers: [{ name: 'victim', publicKey: victim.publicKey }],
      random: seededRandom(key.publicKey),
    });
    sock.on('message', (msg) => this.onDatagram(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength)));
  }

  private onDatagram(buf: Uint8Array): void {
    let frame;
    try {
      frame = decodeFrame(buf, (id) => this.ep.sessions.has(id));
    } catch {
      return;
    }
    if (!isHandshakeType(frame.header.type)) {
      this.received++; // what the victim says on the pair is only counted (it answers reconciliation requests)
      return;
    }
    if (frame.header.type === FrameType.HandshakeResp) this.responses++;
    else if (frame.header.type === FrameType.CookieReply) this.cookies++;
    const r = this.ep.handleHandshake(Date.now(), buf, `${this.victim.host}:${this.victim.port}`);
    // A CookieReply is stored by the endpoint: the next init carries mac2.
    if (r.kind === 'drop' || r.kind === 'cookie' || r.kind === 'cookie-stored') return;
    if (r.kind === 'respond') this.sock.send(r.datagram, this.victim.port, this.victim.host);
    this.use(r.session);
    this.waiting?.();
  }

  private use(s: Session): void {
    if (this.session) this.ep.close(this.session.localIndex);
    this.session = s;
  }

  /** A fresh session (the victim adopts it at our first Data frame). */
  async handshake(timeoutMs = 10_000): Promise<void> {
    const before = this.session;
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      this.sock.send(this.ep.initiate(Date.now(), this.victim.publicKey), this.victim.port, this.victim.host);
      this.handshakes++;
      await new Promise<void>((r) => {
        const t = setTimeout(r, 500);
        this.waiting = () => (clearTimeout(t), r());
      });
      this.waiting = undefined;
      if (this.session && this.session !== before) return;
    }
    throw new Error(`no handshake response from ${this.victim.host}:${this.victim.port} within ${timeoutMs} ms`);
  }

  send(payload: Uint8Array): void {
    this.sock.send(this.session!.seal(payload), this.victim.port, this.victim.host);
  }

  /** A HandshakeInit from this key, to flood or replay. */
  init(): Uint8Array {
    return this.ep.initiate(Date.now(), this.victim.publicKey);
  }
}

/** Session indices and ephemeral keys from a hash chain: the adversary's runs repeat exactly. */
function seededRandom(seed: Uint8Array): (n: number) => Uint8Array {
  let state = createHash('sha256').update(seed).update('spook adversary').digest();
  return (n) => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n; off += 32) {
      state = createHash('sha256').update(state).digest();
      out.set(state.subarray(0, Math.min(32, n - off)), off);
    }
    return out;
  };
}

/** An X25519 key pair derived from the seed: the unauthorised key the victim has never heard of. */
function rogueKey(seed: number): KeyPair {
  const privateKey = new Uint8Array(createHash('sha256').update(`spook rogue key ${seed}`).digest());
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

export class Adversary {
  private readonly rng: Rng;
  private readonly key: KeyPair;
  private readonly victim: { publicKey: Uint8Array; host: string; port: number };
  private sock: UdpSocket | undefined;
  private link: EtcpLink | undefined;
  readonly report: AttackReport;

  constructor(private readonly spec: AttackSpec) {
    this.rng = new Rng(spec.seed);
    const privateKey = decodeKey(spec.privateKey, 'adversary key');
    this.key = { privateKey, publicKey: publicKeyOf(privateKey) };
    this.victim = { ...spec.victim, publicKey: decodeKey(spec.victim.publicKey, 'victim key') };
    this.report = { kind: spec.attack.kind, sent: 0, handshakes: 0, received: 0, carriers: 0, idleOpened: 0, bytes: 0, ms: 0, errors: [] };
  }

  private async udp(): Promise<EtcpLink> {
    if (this.link) return this.link;
    const sock = createSocket('udp4');
    sock.on('error', (e) => this.error(`udp: ${e.message}`));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(this.spec.bind.port, this.spec.bind.host, () => (sock.off('error', reject), resolve()));
    });
    this.sock = sock;
    this.link = new EtcpLink(sock, this.key, this.victim);
    return this.link;
  }

  private error(e: string): void {
    if (this.report.errors.length < 20) this.report.errors.push(e);
  }

  async run(): Promise<AttackReport> {
    const t0 = performance.now();
    const a = this.spec.attack;
    try {
      switch (a.kind) {
        case 'estp':
          await this.sealed(a.count, a.rate, Infinity, () => estpPayload(this.rng, { registers: a.registers, origins: [1, 2] }));
          break;
        case 'qn': {
          const ctx = {
            domains: [domainIdOf(a.domain), ...a.otherDomains.map(domainIdOf)],
            self: nodeIdOf(this.key.publicKey),
            victim: nodeIdOf(this.victim.publicKey),
            others: a.members.map((m) => nodeIdOf(decodeKey(m, 'member key'))),
            registers: a.registers,
            cursor: { term: 1, index: 0 },
          };
          await this.sealed(a.count, a.rate, Infinity, () => qnPayload(this.rng, ctx));
          break;
        }
        case 'payloads': {
          const list = a.payloads.map((h) => new Uint8Array(Buffer.from(h, 'hex')));
          await this.sealed(list.length, 1000, Infinity, () => list[this.report.sent]);
          break;
        }
        case 'wrap':
          await this.wrap(a.count, a.rate, a.targets);
          break;
        case 'unauthenticated':
          await this.unauthenticated(a.durationMs, a.initRate, a.idleConnections);
          break;
        case 'recon-flood':
          await this.sealed(Infinity, a.rate, performance.now() + a.durationMs, () =>
            encodeMessage({
              type: MsgType.ReconReq,
              register: a.register,
              targetVersion: this.rng.int(1, 2 ** 40),
              flags: REQ_WANT_META,
              prefixes: [{ depth: 0, prefix: 0 }],
            }),
          );
          break;
        case 'handshake-flood':
          await this.handshakeFlood(a.durationMs, a.rate);
          break;
        case 'wrap-flood':
          await this.wrapFlood(a.durationMs, a.connections, a.sink, a.maxBytes ?? Infinity, a.serve);
          break;
      }
    } catch (e) {
      this.error((e as Error).message);
    } finally {
      await sleep(100); // datagrams still queued in the socket leave before it closes
      this.sock?.close();
      this.report.handshakes += this.link?.handshakes ?? 0;
      this.report.received = this.link?.received ?? 0;
      this.report.handshakeResponses = this.link?.responses ?? 0;
      this.report.cookieReplies = this.link?.cookies ?? 0;
      this.report.ms = Math.round(performance.now() - t0);
    }
    return this.report;
  }

  /** Sealed payloads on a pair session; a fresh handshake every 2,000 (sessions turn over under fire too). */
  private async sealed(count: number, rate: number, untilMs: number, make: () => Uint8Array): Promise<void> {
    const link = await this.udp();
    await link.handshake();
    await paced(rate, count, untilMs, async (i) => {
      // A victim that no longer answers handshakes has fallen: the attack ends there (the error says when).
      if (i > 0 && i % 2000 === 0)
        await link.handshake(3000).catch((e: Error) => Promise.reject(new Error(`after ${i} messages: ${e.message}`)));
      link.send(make());
      this.report.sent++;
    });
  }

  private async carrier(): Promise<Carrier> {
    const c = await dialCarrier(this.victim.host, this.victim.port, this.key, this.victim.publicKey);
    this.report.carriers++;
    c.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
    // A WRAP session starts with a hello; the boot id comes from the seed.
    c.send([encodeRecord({ type: RecordType.Hello, version: 1, bootId: BigInt(this.rng.int(1, 2 ** 31)) })]);
    return c;
  }

  /** Until the carrier takes more (its queue under the high-water mark) or closes. */
  private async writable(c: Carrier): Promise<void> {
    for (let i = 0; i < 200 && !c.writable && !c.socket.destroyed; i++) await sleep(5);
  }

  private async wrap(count: number, rate: number, targets: Target[]): Promise<void> {
    const conns = Array.from({ length: 16 }, (_, i) => i * 2 + this.rng.int(0, 1));
    let c: Carrier | undefined;
    await paced(rate, count, Infinity, async () => {
      if (!c || c.socket.destroyed) {
        // The victim may drop a carrier that breaks the protocol: dial again.
        c = undefined;
        for (let tries = 0; !c && tries < 20; tries++) c = await this.carrier().catch(() => sleep(100).then(() => undefined));
        if (!c) throw new Error(`after ${this.report.sent} records: cannot dial the carrier 20 times in a row`);
      }
      c.send([wrapRecord(this.rng, { conns, targets })]);
      this.report.sent++;
      await this.writable(c);
    });
    c?.close('adversary done');
  }

  private async unauthenticated(durationMs: number, initRate: number, idle: number): Promise<void> {
    const until = performance.now() + durationMs;
    const link = await this.udp();
    const rogue = new EtcpEndpoint({
      staticKey: rogueKey(this.spec.seed),
      peers: [{ name: 'victim', publicKey: this.victim.publicKey }],
      random: seededRandom(new Uint8Array([1])),
    });
    const rogueInit = rogue.initiate(Date.now(), this.victim.publicKey);
    // An authorised init the victim accepts once; every later copy is a replay.
    const ownInit = link.init();
    this.sock!.send(ownInit, this.victim.port, this.victim.host);
    const garbage = (): Uint8Array => {
      const f = new Uint8Array(rogueInit);
      for (let i = 0; i < 4; i++) f[this.rng.int(24, f.length - 1)] ^= 0xff;
      return f;
    };
    const sockets = new Set<Socket>();
    const open = (): void => {
      if (performance.now() >= until) return;
      const s = connect({ host: this.victim.host, port: this.victim.port });
      sockets.add(s);
      this.report.idleOpened++;
      s.on('error', () => {});
      // Held open and silent; when the victim closes it, another takes its place at once.
      s.on('close', () => {
        sockets.delete(s);
        setImmediate(open);
      });
    };
    for (let i = 0; i < idle; i++) open();
    this.report.sent += await paced(initRate, Infinity, until, () => {
      const r = this.rng.float();
      this.sock!.send(r < 0.8 ? rogueInit : r < 0.9 ? ownInit : garbage(), this.victim.port, this.victim.host);
    });
    for (const s of sockets) s.destroy();
  }

  private async handshakeFlood(durationMs: number, rate: number): Promise<void> {
    const link = await this.udp();
    const rogue = new EtcpEndpoint({
      staticKey: rogueKey(this.spec.seed),
      peers: [{ name: 'victim', publicKey: this.victim.publicKey }],
      random: seededRandom(new Uint8Array([2])),
    });
    const rogueInit = rogue.initiate(Date.now(), this.victim.publicKey);
    this.report.sent += await paced(rate, Infinity, performance.now() + durationMs, () => {
      this.sock!.send(this.rng.chance(0.5) ? link.init() : rogueInit, this.victim.port, this.victim.host);
    });
  }

  private async wrapFlood(
    durationMs: number,
    connections: number,
    sink: Target,
    maxBytes: number,
    serve: 'discard' | 'never-read' | undefined,
  ): Promise<void> {
    const until = performance.now() + durationMs;
    const held: Socket[] = [];
    const server = serve ? createServer({ pauseOnConnect: serve === 'never-read' }, (s) => held.push(s.on('error', () => {}))) : undefined;
    if (serve === 'discard') server!.on('connection', (s) => s.resume());
    if (server) await new Promise<void>((resolve, reject) => server.once('error', reject).listen(sink.port, sink.address, () => resolve()));
    try {
      await this.push(until, connections, sink, maxBytes);
    } finally {
      for (const s of held) s.destroy();
      server?.close();
    }
  }

  private async push(until: number, connections: number, sink: Target, maxBytes: number): Promise<void> {
    // Connection ids the victim expects from this side: the parity of the pair's follower when the victim is sequencer.
    const victimRole = pairIdentity(this.victim.publicKey, this.key.publicKey).localId === 1 ? 0 : 1;
    const ids = Array.from({ length: connections }, (_, i) => 2 * (i + 1) + (1 - victimRole));
    const data = this.rng.bytes(16 * 1024);
    const offsets = new Map<number, number>();
    while (performance.now() < until && this.report.bytes < maxBytes) {
      let c: Carrier;
      try {
        c = await this.carrier();
      } catch (e) {
        this.error(`carrier: ${(e as Error).message}`);
        await sleep(200);
        continue;
      }
      for (const id of ids) {
        c.send([encodeRecord({ type: RecordType.Open, conn: id, wrapPort: sink.port, target: sink, holdMs: 30_000, flags: 0 })]);
        offsets.set(id, 0);
        this.report.sent++;
      }
      for (let i = 0; performance.now() < until && this.report.bytes < maxBytes && !c.socket.destroyed; i++) {
        const id = ids[i % ids.length];
        const off = offsets.get(id)!;
        c.send([encodeDataHeader(id, off), data]);
        offsets.set(id, off + data.length);
        this.report.sent++;
        this.report.bytes += data.length;
        if (!c.writable) await this.writable(c);
        else if (i % 16 === 15) await sleep(0);
      }
      c.close('adversary done');
    }
  }
}

/** CLI: one attack from a JSON spec; the report as one JSON line on stdout. */
async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as AttackSpec;
  const report = await new Adversary(spec).run();
  process.stdout.write(`${JSON.stringify(report)}\n`);
  // Carriers and idle sockets are closed; nothing should keep the loop alive, but never hang a test.
  setTimeout(() => process.exit(0), 200).unref();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    process.stderr.write(`adversary: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}

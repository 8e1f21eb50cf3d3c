/** Small builders shared by the HalfPair tests. */
import { afterEach, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint, type EndpointOptions } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import type { KeyPair } from '../crypto/primitives.js';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CrossDelta } from '../wire/cross.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { PairState } from '../core/pair/lifecycle.js';
import { SimWorld, type SimEndpoint } from '../testing/sim/world.js';
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import type { SpookEvent } from '../core/pair/events.js';
import { OwnManifest, manifestEntry } from '../core/pair/manifest.js';
import { QUOTA_DEFAULTS, type Quota } from '../core/register/quota.js';
import type { MapState } from '../core/register/map.js';
import { MANIFEST_REPLY, MsgType, decodeMessages, encodeMessage, type Message, type WireEntry } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import type { StreamReport } from '../testing/lab/cutstream.js';
import { WireError } from '../wire/errors.js';
import { DomainNode, type DomainNodeOptions } from '../core/qn/node.js';
import { EMPTY_STORED, driveReady } from '../core/qn/persist.js';
import type { FileDomainStore } from '../drivers/store/domain-store.js';

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const set = (k: string, v: string): Delta => ({ op: DeltaOp.Set, key: enc(k), value: enc(v) });
export const del = (k: string): Delta => ({ op: DeltaOp.Del, key: enc(k) });
export const cas = (k: string, expect: number, v: string): Delta => ({ op: DeltaOp.Cas, key: enc(k), expect, value: enc(v) });
export const append = (offset: number, data: string): Delta => ({ op: DeltaOp.Append, offset, data: enc(data) });

export interface Harness {
  world: SimWorld;
  a: SimEndpoint;
  b: SimEndpoint;
  events: { ep: string; ev: SpookEvent }[];
  cut(): void;
  heal(): void;
  aligned(register?: string): boolean;
  settle(maxMs?: number): boolean;
}

/** A pair A (sequencer) / B (follower) in a fresh simulated world. */
export function harness(
  registers: RegisterSpec[],
  faults: Partial<{ loss: number; dup: number; reorder: number }> = {},
  seed = 1,
): Harness {
  const world = new SimWorld(seed, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5, ...faults });
  const events: Harness['events'] = [];
  world.onEvent = (ep, ev) => events.push({ ep: ep.name, ev });
  const [a, b] = world.addPair(['A', 'B'], { pairId: 9, seed: 1234, registers });
  const h: Harness = {
    world,
    a,
    b,
    events,
    cut() {
      world.net.setLink('A', 'B', false);
      world.net.setLink('B', 'A', false);
    },
    heal() {
      world.net.setLink('A', 'B', true);
      world.net.setLink('B', 'A', true);
    },
    aligned(register?: string) {
      const names = register ? [register] : registers.map((r) => r.name);
      if (a.pair.state !== PairState.ENTANGLED || b.pair.state !== PairState.ENTANGLED) return false;
      return names.every((n) => {
        const ra = a.pair.register(n);
        const rb = b.pair.register(n);
        return (
          ra.version === rb.version &&
          ra.hash.hi === rb.hash.hi &&
          ra.hash.lo === rb.hash.lo &&
          ra.pendingCount === 0 &&
          rb.pendingCount === 0
        );
      });
    },
    settle(maxMs = 60_000) {
      return world.run(world.now + maxMs, () => h.aligned());
    },
  };
  return h;
}

/** Propose through the world so the endpoint is drained afterwards, as a daemon would. */
export function proposeNow(h: Harness, ep: SimEndpoint, register: string, d: Delta): { origin: number; seq: number } {
  const id = ep.pair.propose(h.world.now, register, d);
  h.world.drain(ep);
  return id;
}

/** The Manifest (encoded) a peer declaring `registers` sends (§6.3): fed to a bare HalfPair so it may form and count violations. */
export function peerManifest(registers: RegisterSpec[]): Uint8Array {
  const entries = registers.map((r) => manifestEntry({ name: r.name, kind: r.kind, quota: { ...QUOTA_DEFAULTS, ...r.quota } }));
  return encodeMessage(new OwnManifest(entries).messages(MANIFEST_REPLY)[0]);
}

/** A cross-register txn (op 6, PROTOCOL.md §4.6) of these parts, the first on the register it is proposed on. */
export const cross = (...parts: [string, Delta][]): CrossDelta => ({
  op: DeltaOp.Cross,
  parts: parts.map(([register, delta]) => ({ register, at: 0, delta })),
});

/** Fresh temporary directories named `prefix-*`, removed after each test of the calling file. */
export function tempDirs(prefix: string): () => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), `${prefix}-`));
    dirs.push(d);
    return d;
  };
}

/** The sequence numbers of a pair's own candidates on `register` still undecided (restored after a restart included). */
export const ownSeqs = (pair: HalfPair, register: string): number[] =>
  pair
    .register(register)
    .ownCandidates()
    .map((c) => c.seq);

/** A batch of simulated seeds ran clean: no failure, every seed converged, nothing committed lost. */
export function expectSeedsClean(s: { failures: unknown[]; converged: number; lostCommits: number }, seeds: number): void {
  expect(s.failures).toEqual([]);
  expect(s.converged).toBe(seeds);
  expect(s.lostCommits).toBe(0);
}

/**
 * A counter stream (testing/lab/cutstream.ts) came through a cut: no error, ended by the server,
 * every byte in order, and one silence that covers the cut (bytes buffered for a moment aside).
 */
export function expectCarriedThrough(name: string, s: StreamReport, cut: { downAt: number; upAt: number }): void {
  expect(s.error, name).toBeNull();
  expect(s.serverError, name).toBeUndefined();
  expect(s.ended, name).toBe(true);
  expect(s.inOrder, name).toBe(true);
  expect(s.received, name).toBe(s.sent);
  expect(
    s.gaps.some((g) => g.from <= cut.downAt + 1_000 && g.to >= cut.upAt),
    `${name} ${JSON.stringify(s.gaps)}`,
  ).toBe(true);
}

/** The WireError a decode throws (anything else fails the test). */
export function wireFault(f: () => unknown): WireError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(WireError);
    return e as WireError;
  }
  throw new Error('decoded without a fault');
}

/** For one test file: listen on 127.0.0.1 with a handler, resolving the port; every server closes after each test. */
export function loopbackServers(): (onSocket: (s: Socket) => void) => Promise<number> {
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  return async (onSocket) => {
    const server = createServer(onSocket);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as AddressInfo).port;
  };
}

/** The version of the Status (of `register`, or the last of any) that datagram `d`, an unsealed frame, carries. */
export function statusVersion(d: Uint8Array, register?: string): number | undefined {
  let v: number | undefined;
  for (const m of decodeMessages(decodeFrame(d).payload).messages)
    if (m.type === MsgType.Status && (register === undefined || m.register === register)) v = m.version;
  return v;
}

/** Two HalfPairs driven by `step`: once both are ENTANGLED, `n` sets on kv from `a`, 200 steps apart; both at v`n`. */
export function entangleWithSets(a: HalfPair, b: HalfPair, step: () => void, now: () => number, n = 3): void {
  for (let i = 0; i < 5000 && !(a.state === PairState.ENTANGLED && b.state === PairState.ENTANGLED); i++) step();
  for (let i = 0; i < n; i++) {
    a.propose(now(), 'kv', set(`k${i}`, 'v'));
    for (let t = 0; t < 200; t++) step();
  }
  expect([a.register('kv').version, b.register('kv').version]).toEqual([n, n]);
}

/** A WrapManager's settings for tests in one process on loopback (interception off: no root, no BPF). */
export const WRAP_TEST_SETTINGS = {
  intercept: { host: '127.0.0.1', port: 0 },
  interception: 'off' as const,
  windowBytes: 1024 * 1024,
  maxConnections: 64,
  silenceMs: 3_000,
};

/** Octets of several messages, one payload (what a peer puts in one datagram). */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Every message `p` sends now, decoded (its datagrams drained). */
export function sentMessages(p: HalfPair, now: number): Message[] {
  const out: Message[] = [];
  for (let d = p.pollTransmit(now); d; d = p.pollTransmit(now)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
  return out;
}

/**
 * A follower of one map register `kv` (quota `quota`) holding `own` at v1, its peer's manifest
 * taken, and `feed`: messages in one payload, a millisecond later, what it sends back.
 */
export function mapFollower(quota: Partial<Quota>, own: WireEntry[]) {
  const regs = [{ name: 'kv', kind: 'map' as const, quota }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  f.register('kv').restore(1, (st) => {
    for (const e of own) (st as MapState).put(e.key, e.value, e.version);
  });
  let pn = 1;
  let t = 1;
  const feed = (...ms: Message[]): Message[] => {
    f.handlePayload(t, pn++, concatBytes(ms.map((m) => encodeMessage(m))));
    t += 1;
    return sentMessages(f, t);
  };
  f.handlePayload(t, pn++, peerManifest(regs));
  return { f, feed, reg: f.register('kv') };
}

/** The ids of handMember's domain: this member, the member a test plays (a leader, a liar), the third. */
export const HAND = { domain: 0x51, self: 10, adv: 20, third: 30 } as const;

/**
 * Member HAND.self of a three-member domain (links to the other two) of one map register `kv`,
 * its store empty, driven by hand: a test feeds it datagrams as HAND.adv. `over`: any option.
 */
export function handMember(over: Partial<DomainNodeOptions> = {}): DomainNode {
  return new DomainNode(
    {
      domain: HAND.domain,
      name: 'd',
      id: HAND.self,
      members: [HAND.self, HAND.adv, HAND.third],
      links: [HAND.adv, HAND.third],
      registers: [{ name: 'kv', kind: 'map' }],
      seed: 1,
      stored: EMPTY_STORED,
      random: (a) => a,
      electionMs: 1_000_000,
      heartbeatMs: 100,
      ...over,
    },
    0,
  );
}

/**
 * A single-member domain of one map register `kv` on `disk`, elected (it leads itself, so every
 * proposal commits at once); `sync` hands each Ready's writes to the journal, `put` proposes a set
 * at `at` and syncs, returning the candidate's number.
 */
export function soloDomain(
  disk: FileDomainStore,
  maxLogEntries = 1000,
): { node: DomainNode; sync: () => void; put: (k: string, v: string, at: number) => number } {
  const node = new DomainNode(
    {
      domain: 1,
      name: 'd',
      id: 1,
      members: [1],
      links: [],
      registers: [{ name: 'kv', kind: 'map' }],
      seed: 3,
      stored: disk.load(),
      random: (a) => a,
      electionMs: 100,
      heartbeatMs: 20,
      maxLogEntries,
    },
    0,
  );
  const sync = (): void =>
    void driveReady(
      node,
      disk,
      () => {},
      () => {},
    );
  node.handleTimeout(500); // elects itself: term and vote written before any vote could leave
  sync();
  const put = (k: string, v: string, at: number): number => {
    const r = node.propose(at, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }]);
    node.handleTimeout(at);
    sync();
    return r.seq!;
  };
  return { node, sync, put };
}

/**
 * One host's ETCP endpoint and peer table with a single peer `peer` at `at` (its configured
 * endpoint exempt, as spookd seeds `knownSources`), sources keyed by host as spookd's
 * `sourceHost`; `etcp` adds endpoint options (a cookie threshold, a per-peer limit).
 */
export function peerTableOfOne(
  self: KeyPair,
  peer: { name: string; key: KeyPair; at: Addr },
  clock: { now: number },
  etcp: Partial<EndpointOptions> = {},
): { etcp: EtcpEndpoint; table: PeerTable } {
  const endpoint = new EtcpEndpoint({
    staticKey: self,
    peers: [{ name: peer.name, publicKey: peer.key.publicKey }],
    random: (n) => new Uint8Array(randomBytes(n)),
    sourceHost: (src) => src.slice(0, src.lastIndexOf(':')),
    knownSources: [{ peer: peer.name, source: `${peer.at.address}:${peer.at.port}` }],
    ...etcp,
  });
  const table = new PeerTable({
    etcp: endpoint,
    localPublicKey: self.publicKey,
    peers: [{ name: peer.name, publicKey: peer.key.publicKey, endpoint: peer.at, pairState: () => PairState.ENTANGLED, budgetMs: 100 }],
    now: 0,
    clock: () => clock.now,
    violationLimit: 100,
  });
  return { etcp: endpoint, table };
}

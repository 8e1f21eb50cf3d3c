import { describe, expect, it } from 'vitest';
import { runEtcpSim } from '../testing/sim/etcp.js';
import { hashHex } from '../core/register/hash.js';
import { EtcpEndpoint, type Session } from '../core/etcp/endpoint.js';
import { PeerTable, sourceOf, type Addr } from '../core/etcp/peers.js';
import { PAIR_VIOLATIONS, violationsIn } from '../core/etcp/drops.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { DeltaOp } from '../wire/delta.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';
import { peerManifest } from './helpers.js';

/**
 * A few tables wired by hand, delivering at once: h (peers g and x), g (peer h) and x, a bare
 * EtcpEndpoint holding h's key for an authorised but hostile peer. Fake clock throughout, and
 * static keys from a seed: the keys decide who is member 1 of each pair (who initiates, who
 * rekeys on age), so random keys would make a run depend on a coin toss.
 */
function trio({
  keySeed = 0,
  ...o
}: {
  rekeyAfterMs: number;
  sessionGraceMs: number;
  violationLimit?: number;
  rekeyAfterMessages?: number;
  keySeed?: number;
}) {
  const rng = new Rng(1);
  const random = (n: number): Uint8Array => rng.bytes(n);
  const keyRng = new Rng(keySeed);
  const keyPair = (): KeyPair => {
    const privateKey = keyRng.bytes(32);
    return { privateKey, publicKey: publicKeyOf(privateKey) };
  };
  const k: Record<'h' | 'g' | 'x', KeyPair> = { h: keyPair(), g: keyPair(), x: keyPair() };
  const at: Record<'h' | 'g' | 'x', Addr> = { h: { address: 'h', port: 1 }, g: { address: 'g', port: 1 }, x: { address: 'x', port: 1 } };
  const clock = { now: 0 };
  const table = (self: 'h' | 'g', peers: ('h' | 'g' | 'x')[]): PeerTable =>
    new PeerTable({
      etcp: new EtcpEndpoint({
        staticKey: k[self],
        peers: peers.map((p) => ({ name: p, publicKey: k[p].publicKey })),
        random,
        perPeerLimit: 1000,
      }),
      localPublicKey: k[self].publicKey,
      peers: peers.map((p) => ({
        name: p,
        publicKey: k[p].publicKey,
        endpoint: at[p],
        pairState: () => PairState.ENTANGLED,
        budgetMs: 100,
      })),
      now: 0,
      clock: () => clock.now,
      violationLimit: o.violationLimit ?? 100,
      ...o,
    });
  const h = table('h', ['g', 'x']);
  const g = table('g', ['h']);
  const x = new EtcpEndpoint({ staticKey: k.x, peers: [{ name: 'h', publicKey: k.h.publicKey }], random });
  const xGot: Session[] = [];
  /** Deliver every queued datagram (and what it causes) at once. */
  const route = (): void => {
    for (let moved = true; moved;) {
      moved = false;
      for (const [from, t] of [
        ['h', h],
        ['g', g],
      ] as const)
        for (let d = t.pollTransmit(); d; d = t.pollTransmit()) {
          moved = true;
          if (d.to.address === 'x') {
            const r = x.handleHandshake(clock.now, d.datagram, sourceOf(at.h));
            if (r.kind === 'established') xGot.push(r.session);
          } else (d.to.address === 'h' ? h : g).handleDatagram(clock.now, at[from], d.datagram);
        }
      for (const t of [h, g]) while (t.pollEvent());
    }
  };
  /** Run both tables' timers up to `to`. */
  const advance = (to: number): void => {
    for (;;) {
      const next = Math.min(h.pollTimeout() ?? Infinity, g.pollTimeout() ?? Infinity);
      if (next > to) break;
      clock.now = Math.max(clock.now, next);
      h.handleTimeout(clock.now);
      g.handleTimeout(clock.now);
      route();
    }
    clock.now = to;
  };
  return { h, g, x, k, at, clock, route, advance, xGot };
}

describe('ETCP peer table', () => {
  // The keys decide who initiates the honest pair (and rekeys it on age): both ways round.
  it.each([
    { keySeed: 0, hInitiates: true },
    { keySeed: 1, hInitiates: false },
  ])(
    'attack (deterministic twin of the spookd-contain test): an authorised peer handshaking in a loop and keeping every old session busy holds at most 7 sessions; old sessions die at their hard age; the honest peer still rekeys (h initiates: $hInitiates)',
    ({ keySeed, hInitiates }) => {
      const t = trio({ rekeyAfterMs: 2000, sessionGraceMs: 500, keySeed });
      const { h, g, x, clock } = t;
      expect(h.peer('g')!.role).toBe(hInitiates ? 'sequencer' : 'follower');
      const hEtcp = (h as unknown as { o: { etcp: EtcpEndpoint } }).o.etcp;
      const ofX = (): number => [...hEtcp.sessions.values()].filter((s) => s.peer.name === 'x').length;
      // x never uses every second session it forms: they stay unconfirmed at h until they expire or are pushed out.
      const unused = new Set<Session>();
      // Meanwhile the honest pair exchanges a frame each way (as its keepalives do): a responder sends on
      // a new session only once the initiator has used it, so without traffic a rekey by g never reaches h.
      const poke = (): void => {
        for (const s of t.xGot)
          if (!unused.has(s)) h.handleDatagram(clock.now, t.at.x, s.seal(new Uint8Array([0x40, 0xde, 0xad, 0xbe, 0xef])));
        expect(h.sendPayload('g', new Uint8Array([MsgType.Status]))).toBe(true);
        expect(g.sendPayload('h', new Uint8Array([MsgType.Status]))).toBe(true);
        t.route();
      };
      t.advance(100);
      expect(h.peer('g')!.session).toBeDefined();
      const gFirst = h.peer('g')!.session!.localIndex;
      let most = 0;
      let mostOld = 0;
      // x: two handshakes, then a frame on every session it ever had (but the unused ones), every 50 ms for 3 s.
      const measure = (): void => {
        most = Math.max(most, ofX());
        mostOld = Math.max(mostOld, h.peer('x')!.oldSessions.length);
      };
      while (clock.now < 3100) {
        h.handleDatagram(clock.now, t.at.x, x.initiate(clock.now, t.k.h.publicKey));
        t.route();
        measure();
        t.advance(clock.now + 2); // h takes one init per ms from a peer (perPeerLimit)
        h.handleDatagram(clock.now, t.at.x, x.initiate(clock.now, t.k.h.publicKey));
        t.route();
        measure();
        if (t.xGot.length > 0) unused.add(t.xGot[t.xGot.length - 1]);
        poke();
        measure();
        t.advance(clock.now + 48);
      }
      expect(t.xGot.length).toBe(120);
      expect(most).toBe(7); // 1 current + 2 superseded + 4 unconfirmed
      expect(mostOld).toBe(2);
      // x stops handshaking but keeps its superseded sessions busy: they still go at their hard age
      // (rekey + 2 grace = 3 s from establishment), and their frames then drop.
      const olds = h.peer('x')!.oldSessions.map((o) => o.session);
      expect(olds.length).toBe(2);
      const hardAge = Math.max(...olds.map((s) => s.establishedAt)) + 3000;
      const unknown0 = h.drops['unknown-pair'] ?? 0;
      while (clock.now < hardAge) {
        poke();
        expect(h.peer('x')!.oldSessions.map((o) => o.session)).toEqual(olds.filter((s) => s.establishedAt + 3000 > clock.now));
        t.advance(clock.now + 40);
      }
      poke();
      for (const s of olds) expect(hEtcp.sessions.has(s.localIndex)).toBe(false);
      expect(h.peer('x')!.oldSessions).toEqual([]);
      expect((h.drops['unknown-pair'] ?? 0) - unknown0).toBeGreaterThan(20);
      // The honest pair was never cut and rekeys on schedule.
      expect(h.peer('g')!.disconnects).toBe(0);
      expect(h.peer('g')!.session!.localIndex).not.toBe(gFirst);
      expect(h.peer('g')!.session!.establishedAt).toBeGreaterThan(clock.now - 2100);
      // Both ends send on the same, fresh session.
      expect(g.peer('h')!.session!.remoteIndex).toBe(h.peer('g')!.session!.localIndex);
    },
  );

  it('names its timers, and arms nothing it cannot act on: no handshake without an address or with a closed pair', () => {
    const t = trio({ rekeyAfterMs: 2000, sessionGraceMs: 500 });
    // With these keys g is member 2 of its pair with h: member 2 holds back at first contact.
    expect(t.g.peer('h')!.role).toBe('follower');
    expect(t.g.timers('h').handshake).toBe(1500);
    t.g.setAddress('h', undefined);
    expect(t.g.timers('h')).toEqual({});
    expect(t.g.pollTimeout()).toBeUndefined();
    t.h.fence('x');
    expect(t.h.timers('x')).toEqual({});
    t.h.handleDatagram(0, t.at.x, t.x.initiate(0, t.k.h.publicKey));
    expect(t.h.drops['peer-fenced']).toBe(1);
  });

  it('rekeys after a number of frames sealed on a session: the initiator does, the responder never (no crossed handshakes)', () => {
    const t = trio({ rekeyAfterMs: 600_000, sessionGraceMs: 5_000, rekeyAfterMessages: 5 });
    t.advance(5000);
    const first = t.g.peer('h')!.session!;
    const [ini, iniPeer, resp, respPeer] = first.initiator ? ([t.g, 'h', t.h, 'g'] as const) : ([t.h, 'g', t.g, 'h'] as const);
    expect(resp.peer(respPeer)!.session!.initiator).toBe(false);
    const sessions = (): unknown[] => [
      t.g.peer('h')!.session,
      t.h.peer('g')!.session,
      t.g.peer('h')!.unconfirmed.length,
      t.h.peer('g')!.unconfirmed.length,
    ];
    const formed = sessions();
    // The responder seals past the limit: no rekey timer, no handshake.
    for (let i = 0; i < 6; i++) resp.seal(respPeer, new Uint8Array([MsgType.Status]));
    expect(resp.timers(respPeer).rekey).toBeUndefined();
    t.advance(t.clock.now + 1);
    expect(sessions()).toEqual(formed);
    // The initiator does: it rekeys once its own count reaches the limit.
    expect(ini.timers(iniPeer).rekey ?? Infinity).toBeGreaterThan(t.clock.now);
    const before = ini.peer(iniPeer)!.session!;
    for (let i = 0; i < 5; i++) ini.seal(iniPeer, new Uint8Array([MsgType.Status]));
    expect(ini.timers(iniPeer).rekey).toBeLessThanOrEqual(t.clock.now);
    t.advance(t.clock.now + 1);
    expect(ini.peer(iniPeer)!.session).not.toBe(before);
    expect(ini.peer(iniPeer)!.session!.packetsSent).toBe(0);
  });

  it('roaming: the address follows a Data frame that opens, never one that fails or is replayed', () => {
    const t = trio({ rekeyAfterMs: 60_000, sessionGraceMs: 5_000 });
    t.advance(2000);
    const sg = (t.g as unknown as { o: { etcp: EtcpEndpoint } }).o.etcp;
    const s = [...sg.sessions.values()][0];
    expect(t.h.peer('g')!.addr).toEqual(t.at.g);
    const frame = s.seal(new Uint8Array([MsgType.Status]));
    const elsewhere = { address: 'g2', port: 7 };
    t.h.handleDatagram(t.clock.now, elsewhere, frame);
    expect(t.h.peer('g')!.addr).toEqual(elsewhere);
    const attacker = { address: 'evil', port: 6 };
    t.h.handleDatagram(t.clock.now, attacker, frame); // a replay
    const forged = s.seal(new Uint8Array([MsgType.Status]));
    forged[forged.length - 1] ^= 1;
    t.h.handleDatagram(t.clock.now, attacker, forged);
    expect(t.h.peer('g')!.addr).toEqual(elsewhere);
    expect(t.h.drops.replayed).toBe(1);
    expect(t.h.drops['data-auth-failed']).toBe(1);
  });

  it('every violation reason is a drop the pair core counts (a misspelt one would never reach the limit)', () => {
    const pair = (localId: number) =>
      new HalfPair({ pairId: 0, localId, peerId: 3 - localId, seed: 1, registers: [{ name: 'config', kind: 'map' }] }, 0);
    const seq = pair(1);
    const fol = pair(2);
    const propose = (register: string, origin: number): Uint8Array =>
      encodeMessage({
        type: MsgType.Propose,
        register,
        base: 1,
        candidates: [{ origin, seq: 1, delta: { op: DeltaOp.Set, key: new Uint8Array([1]), value: new Uint8Array([2]) } }],
      });
    const cases: [HalfPair, Uint8Array][] = [
      [seq, new Uint8Array([MsgType.Status, 0xff])], // malformed-payload
      [seq, propose('nope', 2)], // unknown-register
      [seq, propose('config', 1)], // wrong-origin: the sequencer's own origin, from the peer
      [fol, propose('config', 1)], // propose-to-follower
      [
        fol,
        encodeMessage({
          type: MsgType.Collapse,
          register: 'config',
          version: 1,
          hash: { hi: 0, lo: 0 },
          entries: [{ origin: 1, seq: 1, verdict: 'committed', delta: { op: DeltaOp.Append, offset: 0, data: new Uint8Array([1]) } }],
        }),
      ], // invalid-record: an append committed on a map register
    ];
    let pn = 1;
    // A register the peer names is a violation only once its manifest matched (§6.3).
    seq.handlePayload(1, pn++, peerManifest([{ name: 'config', kind: 'map' }]));
    for (const [p, payload] of cases) p.handlePayload(1, pn++, payload);
    const seen = new Set([...Object.keys(seq.stats.drops), ...Object.keys(fol.stats.drops)]);
    for (const v of PAIR_VIOLATIONS) expect(seen).toContain(v);
    expect(violationsIn(seq.stats.drops) + violationsIn(fol.stats.drops)).toBe(5);
  });
});

describe('ETCP peer table in the simulator', () => {
  it('three nodes over a lossy, reordering network for 5 simulated minutes, one roaming, an eavesdropper replaying and forging, one node violating toward another: sessions rekey and re-form, roaming follows authenticated frames only, the violator alone is cut, every pair converges', () => {
    const r = runEtcpSim({
      seed: 14,
      nodes: ['a', 'b', 'c'],
      faults: { loss: 0.05, dup: 0.01, reorder: 0.05, minDelayMs: 5, maxDelayMs: 40 },
      durationMs: 300_000,
      rekeyAfterMs: 20_000,
      sessionGraceMs: 4_000,
      violationLimit: 10,
      writeEveryMs: 2_000,
      roam: { node: 'b', everyMs: 15_000 },
      attackPerSecond: 5,
      violator: { from: 'c', to: 'a', everyMs: 250 },
      settleMs: 30_000,
    });
    const n = (x: string) => r.nodes.get(x)!;
    expect(r.violations).toEqual([]);
    expect(r.foreignAddrs).toBe(0);
    expect(r.roams).toBeGreaterThan(10);
    expect(r.replays).toBeGreaterThan(1000);
    expect(r.net.lost).toBeGreaterThan(100);
    // The violator is cut again and again by its victim; nobody else ever is.
    expect(n('a').cuts.get('c')).toBeGreaterThanOrEqual(3);
    for (const [x, p] of [
      ['a', 'b'],
      ['b', 'a'],
      ['b', 'c'],
      ['c', 'b'],
      ['c', 'a'],
    ])
      expect(n(x).cuts.get(p) ?? 0).toBe(0);
    // Rekeys through the run: about one session per 20 s per pair (the initiator's count).
    expect((n('a').established.get('b') ?? 0) + (n('b').established.get('a') ?? 0)).toBeGreaterThanOrEqual(2 * 13);
    for (const x of ['a', 'b', 'c'])
      for (const p of ['a', 'b', 'c']) {
        if (x === p) continue;
        expect(n(x).pairs.get(p)!.state).toBe('ENTANGLED');
        expect(hashHex(n(x).pairs.get(p)!.register('config').hash)).toBe(hashHex(n(p).pairs.get(x)!.register('config').hash));
      }
    expect(r.writes).toBeGreaterThan(100);
    // b roamed: its peers follow it to where it is now.
    expect(n('a').table.peer('b')!.addr).toEqual(n('b').addr);
    expect(n('c').table.peer('b')!.addr).toEqual(n('b').addr);
  }, 60_000);
});

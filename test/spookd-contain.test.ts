import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configOf, has, inProcess, logOf, until, write } from './inproc.js';
import { portBase } from './ports.js';
import { rmSync } from 'node:fs';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { PairState } from '../core/pair/lifecycle.js';
import { EtcpEndpoint, type Session } from '../core/etcp/endpoint.js';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';

/**
 * Containment in the driver (docs/PROTOCOL.md §12.9), with three spookd in this process on
 * loopback: a (peers b and c), b, c. A fault injected into a's handling of one peer fences that
 * pair only; a peer whose datagrams are expensive is held to its work budget.
 */
const base = portBase('spookd-contain.test.ts');
const lab = inProcess('spook-contain', ['a', 'b', 'c', 'h', 'g', 'x', 'l', 'm'], base);
const { dir, keys, port, logs } = lab;
const d: Record<string, Spookd> = {};

const make = (name: string, peers: string[], extra: Record<string, unknown> = {}): Spookd =>
  new Spookd(configOf(lab, name, peers, extra), keys[name], logOf(lab, name));

beforeAll(async () => {
  // The shipped budget (100 ms/s). An idle pair's own keepalives cost a few ms/s of it, and up to 20 ms/s when
  // its code is cold (run this rarely, V8 leaves it interpreted) on a loaded host: a tighter budget here refused
  // b's keepalives until the a-b pair decohered, and these tests failed for that, not for what they test.
  d.a = make('a', ['b', 'c']);
  d.b = make('b', ['a']);
  d.c = make('c', ['a']);
  await Promise.all(Object.values(d).map((s) => s.start()));
  await until(
    'a-b and a-c entangled',
    () => d.a.link('b').pair.state === PairState.ENTANGLED && d.a.link('c').pair.state === PairState.ENTANGLED,
  );
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe('spookd containment (§12.9)', () => {
  it('attack: a peer whose datagrams are expensive is held to its work budget, and the other peer is still served', async () => {
    const lc = d.a.link('c');
    // The budgets are work-conserving (core/etcp/budget.ts): c is held only while another peer has work. An idle
    // b's keepalives sit near the threshold, so on a loaded host c was sometimes let through uncontended and the
    // bound below failed for that. b keeps the host busy with writes for the whole window, so c is held throughout.
    let busyN = 0;
    const busy = setInterval(() => {
      if (busyN < 600) write(d.b, 'a', `busy-${busyN++}`);
      else clearInterval(busy);
    }, 10);
    await until('b busy at a', () => d.a.link('b').budget.recentDemand(d.a.now()) >= 30, 10_000);
    const real = lc.pair.handlePayload.bind(lc.pair);
    lc.pair.handlePayload = (...args: Parameters<typeof real>) => {
      const until = performance.now() + 60; // 60 ms of CPU per datagram from c
      while (performance.now() < until);
      return real(...args);
    };
    const spent0 = lc.budget.spentMs;
    const t0 = performance.now();
    const received0 = lc.pair.stats.datagramsReceived;
    const b0 = d.a.link('b').pair.stats.datagramsReceived;
    await new Promise((r) => setTimeout(r, 2000)); // c sends keepalives every 100 ms: 1,200 ms of work asked
    const seconds = (performance.now() - t0) / 1000;
    const spent = lc.budget.spentMs - spent0;
    clearInterval(busy);
    const B = lc.budget.msPerSecond;
    expect(B).toBe(100);
    // At most the bucket (B ms) plus B ms/s, plus one datagram's overrun beyond what was left: its 60 ms of CPU as
    // measured in wall time, which a loaded host (the suite runs files in parallel on 2 cores) stretches.
    expect(spent).toBeLessThanOrEqual(B + B * seconds + 2 * 60);
    expect(lc.budget.refused).toBeGreaterThan(0);
    expect(d.a.drops['peer-over-budget']).toBeGreaterThan(0);
    expect(lc.pair.stats.datagramsReceived - received0).toBeLessThan(10);
    // b, meanwhile, was served: its keepalives handled, a write across.
    expect(d.a.link('b').pair.stats.datagramsReceived - b0).toBeGreaterThan(10);
    write(d.b, 'a', 'b-during-c-flood');
    await until('b write reaches a', () => has(d.a, 'b', 'b-during-c-flood'));
    lc.pair.handlePayload = real;
    expect(lc.fenced).toBeUndefined();
  }, 20_000);
  it("attack: forged Data frames carrying an honest peer's pair id (seen on the path) are charged to their source address, not to the peer: the peer's budget is untouched and its writes cross", async () => {
    const lb = d.a.link('b');
    const pairId = lb.session!.localIndex; // what b's frames to a carry
    const sock = createSocket('udp4');
    // Another address than b's (127.0.0.1): frames from b's own address, any port, are always opened.
    await new Promise<void>((r) => sock.bind(0, '127.0.0.2', () => r()));
    // From a full bucket: b's own work before (its handshakes, the tests above, stretched on a loaded host) may
    // have left it in debt, which would refuse frames with its pair id whatever the forgery does.
    await until("b's budget full", () => lb.budget.settled(d.a.now()), 10_000);
    const before = { ...d.a.drops };
    const refused0 = lb.budget.refused;
    const spent0 = lb.budget.spentMs;
    // Who b's budget is charged for: the address of the datagram a is handling, or b's own timers. (In time, b's own
    // frames cost well under its 100 ms here on an idle host; work is timed on the wall clock, which a loaded host stretches
    // past any fixed bound: so the test attributes the charges.)
    const sa = d.a as unknown as { onDatagram(buf: Uint8Array, rinfo: { address: string }): void };
    const onDatagram = sa.onDatagram;
    let handling: string | undefined;
    sa.onDatagram = function (this: unknown, buf, rinfo) {
      handling = rinfo.address;
      try {
        onDatagram.call(this, buf, rinfo);
      } finally {
        handling = undefined;
      }
    };
    const charge = lb.budget.charge;
    const chargedFor = new Map<string, number>();
    lb.budget.charge = function (this: typeof lb.budget, ms: number) {
      const who = handling ?? 'timers';
      chargedFor.set(who, (chargedFor.get(who) ?? 0) + 1);
      charge.call(this, ms);
    };
    let pn = 1_000_000;
    const forged = (): Uint8Array =>
      encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: pn++ }, new Uint8Array(randomBytes(1200)));
    const flood = setInterval(() => {
      for (let i = 0; i < 100; i++) sock.send(forged(), port.a, '127.0.0.1');
    }, 5); // up to 20,000 frames/s: enough to empty the source's failure budget many times over
    try {
      await new Promise((r) => setTimeout(r, 1500));
      write(d.b, 'a', 'b-during-forgery');
      await until('b write reaches a during the forgery', () => has(d.a, 'b', 'b-during-forgery'));
    } finally {
      clearInterval(flood);
      sock.close();
      sa.onDatagram = onDatagram;
      lb.budget.charge = charge;
    }
    const grew = (k: string): number => (d.a.drops[k] ?? 0) - (before[k] ?? 0);
    expect(grew('data-auth-failed')).toBeGreaterThan(100);
    // Whether the source's failure budget (SOURCE_FAILURE_BUDGET_MS of work a second) refuses any of them depends on
    // what a failed open costs: ~1.4 µs with libsodium keeps 20,000 forgeries a second within it, ~6 µs with
    // node:crypto does not. Its refusals are tested in test/budget.test.ts; here, who is charged.
    // b's budget paid for b's own frames (keepalives every 100 ms, the write) only, never for one of the forgeries.
    expect(chargedFor.get('127.0.0.1')).toBeGreaterThan(10);
    expect([...chargedFor.keys()].filter((k) => k !== '127.0.0.1' && k !== 'timers')).toEqual([]);
    // So b is never held back, unless a loaded host stretched b's own work past its bucket: its budget then rightly
    // refuses it (and forged frames with its pair id, before their AEAD); its write crossed.
    if (lb.budget.spentMs - spent0 < lb.budget.msPerSecond) expect(lb.budget.refused - refused0).toBe(0);
    expect(lb.fenced).toBeUndefined();
  }, 40_000);
  it('attack: an exception while handling one peer fences that pair only (cause internal-error, logged once, counted); the process and the other pair carry on', async () => {
    const lb = d.a.link('b');
    lb.pair.handlePayload = () => {
      throw new RangeError('injected fault in the pair core');
    };
    write(d.b, 'a', 'from-b'); // b's frames now reach a's faulty handler
    await until('a fences b', () => lb.fenced !== undefined);
    expect(lb.fenced).toMatchObject({ cause: 'internal-error', error: 'RangeError: injected fault in the pair core' });
    expect(lb.session).toBeUndefined();
    expect(lb.pair.state).toBe('DECOHERENT');
    // b keeps sending (keepalives, retransmissions, new handshakes): nothing more is logged or counted as an error.
    await new Promise((r) => setTimeout(r, 1000));
    expect(d.a.drops['internal-error']).toBe(1);
    expect(logs.a.filter((l) => l.includes('pair fenced')).length).toBe(1);
    // The other pair still commits both ways.
    write(d.c, 'a', 'from-c');
    write(d.a, 'c', 'to-c');
    await until('a-c writes cross', () => has(d.a, 'c', 'from-c') && has(d.c, 'a', 'to-c'));
    expect(d.a.link('c').fenced).toBeUndefined();
  }, 20_000);

  it('attack: one precomputed HandshakeInit from an unauthorised key replayed 4,000/s: one warning, one DH (replays are known by their mac1), and a peer restarting meanwhile still pairs', async () => {
    const intruder = new EtcpEndpoint({
      staticKey: generateKeyPair(),
      peers: [{ name: 'a', publicKey: keys.a.publicKey }],
      random: (n) => new Uint8Array(randomBytes(n)),
    });
    const init = intruder.initiate(0, keys.a.publicKey);
    const sock = createSocket('udp4');
    const before = { ...d.a.drops };
    let sent = 0;
    const flood = setInterval(() => {
      for (let i = 0; i < 40; i++) sock.send(init, port.a, '127.0.0.1');
      sent += 40;
    }, 10);
    try {
      await new Promise((r) => setTimeout(r, 1000)); // a is under load by now
      // c restarts during the flood: it must handshake with a while a is under load. a forgets c's
      // address (as if c had no configured endpoint), so the handshake is c's, answered by a.
      await d.c.stop();
      await new Promise((r) => setTimeout(r, 100)); // c's GoingAway (authenticated: it sets the address) is in
      d.a.table.setAddress('c', undefined);
      d.c = make('c', ['a']);
      await d.c.start();
      await until(
        'c pairs with a again under the flood',
        () => d.c.link('a').pair.state === PairState.ENTANGLED && d.a.link('c').pair.state === PairState.ENTANGLED,
        20_000,
      );
      write(d.c, 'a', 'after-restart');
      await until('write crosses', () => has(d.a, 'c', 'after-restart'));
      // c's first init was answered with a cookie; its retry, with mac2, was processed.
      expect((d.c as unknown as { etcp: { cookieFrom: Map<string, unknown> } }).etcp.cookieFrom.size).toBe(1);
      expect(d.c.link('a').session?.initiator).toBe(true);
    } finally {
      clearInterval(flood);
      sock.close();
    }
    const grew = (k: string): number => (d.a.drops[k] ?? 0) - (before[k] ?? 0);
    expect(sent).toBeGreaterThan(3000);
    // One DH, for the first copy; every replay is dropped by its mac1 (no DH, no CookieReply). The flood
    // still counts toward the load, so c's handshake needed its cookie (above).
    expect(grew('refused-replay')).toBeGreaterThan(sent / 2);
    expect(grew('unauthorized-key')).toBe(1);
    expect(logs.a.filter((l) => l.includes('handshake refused')).length).toBe(1);
  }, 40_000);
});

/**
 * Session hoarding: h has peers g (honest) and x (authorised, hostile). x handshakes with h
 * again and again, sends a frame on each new session (so h adopts it) and keeps sending on
 * every superseded one. h's timing is short (rekey 2 s, grace 0.5 s: superseded sessions live
 * at most 3 s from their establishment), so the hard limit shows within the test.
 */
describe('spookd session bounds (§12.3, §12.6)', () => {
  const s: Record<string, Spookd> = {};
  beforeAll(async () => {
    // perPeerLimit raised: this is about the sessions a peer can hold, not how fast it may handshake (tested in etcp.test.ts);
    // so is the work budget: on a loaded host the DHs of x's loop cost 5-30 ms each, and x's frames were then refused
    // before they could keep its old sessions alive (budgets are tested above and in etcp-peers.test.ts).
    s.h = make('h', ['g', 'x'], {
      timing: { keepaliveMs: 100, silenceMs: 3000, rekeyAfterMs: 2000, sessionGraceMs: 500 },
      handshakes: { perPeerLimit: 1000 },
      peerBudgetMs: 1000,
    });
    s.g = make('g', ['h'], { timing: { keepaliveMs: 100, silenceMs: 3000, rekeyAfterMs: 2000, sessionGraceMs: 500 } });
    await s.h.start();
    await s.g.start();
    await until('h-g entangled', () => s.h.link('g').pair.state === PairState.ENTANGLED);
  }, 30_000);
  afterAll(async () => {
    await s.h.stop();
    await s.g.stop();
  });

  it('attack: an authorised peer handshaking in a loop and keeping every old session busy holds at most 7 sessions; old sessions die at their hard age; the honest pair is not fenced and still handshakes', async () => {
    const x = new EtcpEndpoint({
      staticKey: keys.x,
      peers: [{ name: 'h', publicKey: keys.h.publicKey }],
      random: (n) => new Uint8Array(randomBytes(n)),
    });
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(port.x, '127.0.0.1', () => r()));
    const mine: Session[] = [];
    let waiting: ((s: Session | undefined) => void) | undefined;
    sock.on('message', (m) => {
      const r = x.handleHandshake(performance.now(), new Uint8Array(m), 'h');
      if (r.kind === 'established') waiting?.(r.session);
    });
    const poke = (ss: Session): void => void sock.send(ss.seal(new Uint8Array([0x40, 0xde, 0xad, 0xbe, 0xef])), port.h, '127.0.0.1');
    const etcp = (s.h as unknown as { etcp: { sessions: Map<number, Session> } }).etcp;
    const ofX = (): number => [...etcp.sessions.values()].filter((ss) => ss.peer.name === 'x').length;
    let most = 0;
    let mostOld = 0;
    // The loop runs 3 s, and on a loaded host longer: until x has formed over 30 sessions (a round takes a DH
    // at h) and h holds two superseded ones, which the second phase watches age out. Starved past the grace
    // (500 ms) between two rounds, h rightly retires them for idleness; the next round restores them.
    const oldsHeld = (): number => s.h.link('x').peer.oldSessions.length;
    try {
      const t0 = performance.now();
      while (performance.now() - t0 < 3000 || mine.length <= 30 || oldsHeld() < 2) {
        if (performance.now() - t0 > 20_000) throw new Error(`after 20 s: ${mine.length} sessions formed, ${oldsHeld()} superseded held`);
        const got = await new Promise<Session | undefined>((res) => {
          waiting = res;
          sock.send(x.initiate(performance.now(), keys.h.publicKey, Date.now()), port.h, '127.0.0.1');
          setTimeout(() => res(undefined), 300);
        });
        if (got) mine.push(got);
        for (const ss of mine) poke(ss); // every session x ever had, every round (~25/s: under the cookie threshold)
        await new Promise((r) => setTimeout(r, 40));
        most = Math.max(most, ofX());
        mostOld = Math.max(mostOld, oldsHeld());
      }
      expect(mine.length).toBeGreaterThan(30);
      expect(most).toBeLessThanOrEqual(7);
      expect(mostOld).toBeLessThanOrEqual(2);
      // x stops handshaking and keeps its superseded sessions busy (a frame on each every 40 ms): they still
      // go at their hard age, 3 s from establishment (+ up to 2 s for the timer), and their frames then drop.
      const olds = s.h.link('x').peer.oldSessions.map((o) => o.session.localIndex);
      expect(olds.length).toBe(2);
      const unknown0 = s.h.drops['unknown-pair'] ?? 0;
      // At least 5.5 s, and on a host so loaded that h's timer runs later still, until they are gone (the
      // exact hard age is the deterministic twin's, in etcp-peers.test.ts).
      const t1 = performance.now();
      while (performance.now() - t1 < 5500 || (olds.some((i) => etcp.sessions.has(i)) && performance.now() - t1 < 15_000)) {
        for (const ss of mine) poke(ss);
        await new Promise((r) => setTimeout(r, 40));
      }
      for (const i of olds) expect(etcp.sessions.has(i)).toBe(false);
      expect(s.h.link('x').peer.oldSessions).toEqual([]);
      expect((s.h.drops['unknown-pair'] ?? 0) - unknown0).toBeGreaterThan(100);
    } finally {
      sock.close();
    }
    // The honest pair was never fenced and works; it still forms fresh sessions (h and g rekey every 2 s).
    const lg = s.h.link('g');
    expect(lg.fenced).toBeUndefined();
    const before = lg.session!.localIndex;
    await until('h-g rekeyed', () => s.h.link('g').session !== undefined && s.h.link('g').session!.localIndex !== before);
    write(s.g, 'h', 'after-hoard');
    await until('g write reaches h', () => has(s.h, 'g', 'after-hoard'));
  }, 75_000);

  it('attack: with the session index space full, an honest pair that must handshake is not fenced: the init is counted as no-free-index and retried', async () => {
    const etcp = (s.h as unknown as { etcp: { sessions: Map<number, Session> } }).etcp;
    const lg = s.h.link('g');
    const any = lg.session!;
    const fakes: number[] = [];
    for (let lo = 1; lo <= 0xffff; lo++) {
      const idx = ((0x7e << 24) | lo) >>> 0;
      if (!etcp.sessions.has(idx)) {
        etcp.sessions.set(idx, { ...any, peer: { name: 'nobody', publicKey: new Uint8Array(32) } } as unknown as Session);
        fakes.push(idx);
      }
    }
    const before = s.h.drops['no-free-index'] ?? 0;
    try {
      // h loses g's sessions (as after a disconnect): h must initiate, and cannot.
      s.h.table.dropSessions('g');
      await until('h counts no-free-index', () => (s.h.drops['no-free-index'] ?? 0) > before, 10_000);
      expect(lg.fenced).toBeUndefined();
    } finally {
      for (const i of fakes) etcp.sessions.delete(i);
    }
    // Index space back: the pair forms again and carries writes.
    await until(
      'h-g entangled again',
      () => s.h.link('g').session !== undefined && s.h.link('g').pair.state === PairState.ENTANGLED,
      20_000,
    );
    write(s.h, 'g', 'after-full');
    await until('h write reaches g', () => has(s.g, 'h', 'after-full'));
    expect(lg.fenced).toBeUndefined();
  }, 40_000);
});

describe('spookd work budget: local writes', () => {
  /** A spookd (l) whose peer (m) is configured with no endpoint and never answers: every bit of work on the pair is local. */
  let l: Spookd;
  beforeAll(async () => {
    l = make('l', [], {
      listen: `127.0.0.3:${base}`, // an address of its own: no port of the others
      peerBudgetMs: 20,
      peers: [{ name: 'm', publicKey: encodeKey(keys.m.publicKey) }],
    });
    await l.start();
  });
  let stopped = false;
  afterAll(async () => {
    if (!stopped) await l?.stop();
  });

  it("a burst of local writes to one pair does not drain its peer's work budget (nor make it look busy)", async () => {
    const lm = l.link('m');
    const real = lm.pair.collapse.bind(lm.pair);
    lm.pair.collapse = (...args: Parameters<typeof real>) => {
      const until = performance.now() + 5; // 5 ms of CPU per commit pass of the pair
      while (performance.now() < until);
      return real(...args);
    };
    const spent0 = lm.budget.spentMs;
    const passes0 = l.commits.passes;
    for (let i = 0; i < 30; i++) {
      write(l, 'm', `local-${i}`);
      await new Promise((r) => setImmediate(r)); // one commit pass per write
    }
    lm.pair.collapse = real;
    expect(l.commits.passes - passes0).toBeGreaterThanOrEqual(30); // 150 ms of local work or more
    expect(lm.budget.spentMs - spent0).toBeLessThan(20);
    expect(lm.budget.recentWork(l.now())).toBeLessThan(20);
    expect(lm.fenced).toBeUndefined();
  });

  it("a peer's own frames are still charged: the commit pass they cause draws on its budget", async () => {
    const lc = d.a.link('c'); // a-b was fenced above; c was restarted and re-paired
    expect(lc.fenced).toBeUndefined();
    const real = lc.pair.collapse.bind(lc.pair);
    lc.pair.collapse = (...args: Parameters<typeof real>) => {
      const until = performance.now() + 2; // 2 ms of CPU per commit pass of the pair
      while (performance.now() < until);
      return real(...args);
    };
    const spent0 = lc.budget.spentMs;
    const received0 = lc.pair.stats.datagramsReceived;
    write(d.c, 'a', 'from-c-charged'); // c's frames, no local write on a
    await until('c write reaches a', () => has(d.a, 'c', 'from-c-charged'));
    lc.pair.collapse = real;
    expect(lc.pair.stats.datagramsReceived - received0).toBeGreaterThan(0);
    expect(lc.budget.spentMs - spent0).toBeGreaterThanOrEqual(2); // at least one pass, charged
    expect(lc.fenced).toBeUndefined();
  });

  it('stop: a write kicked while spookd stops, or after, is not committed after the stop began: nothing sent, nothing fenced, no internal error', async () => {
    const lm = l.link('m');
    write(l, 'm', 'before-stop');
    const stopping = l.stop();
    write(l, 'm', 'during-stop'); // its commit pass is queued for after stop() began
    const passes = l.commits.passes;
    await stopping;
    stopped = true;
    write(l, 'm', 'after-stop');
    await new Promise((r) => setTimeout(r, 50));
    expect(l.commits.passes).toBe(passes);
    expect(lm.fenced).toBeUndefined();
    expect(logs.l.filter((x) => x.includes('internal error'))).toEqual([]);
  });
});

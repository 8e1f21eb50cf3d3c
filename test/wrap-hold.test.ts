/**
 * The wrapper's default hold (TCP's patience, core/wrap/hold.ts) and the carrier's redial
 * schedule (core/wrap/redial.ts), driven with `now`: a healed link is found within
 * REDIAL_MAX_MS, and a dead peer gets a bounded number of attempts.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultHoldMs, tcpPatienceMs, MAX_HOLD_MS } from '../core/wrap/hold.js';
import { HEARD_MIN_GAP_MS, Redialer, REDIAL_MAX_MS, REDIAL_MS } from '../core/wrap/redial.js';
import { LOCAL_CHECK_MS, LocalAddresses, sameAddress } from '../drivers/wrap/roam.js';
import { hostDefaultHoldMs, readTcpRetries2 } from '../drivers/wrap/hold.js';
import { CloseCode } from '../wire/wrap.js';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';

describe('default hold: TCP patience', () => {
  it("follows the kernel's tcp_model_timeout: 924.6 s for tcp_retries2 = 15", () => {
    expect(tcpPatienceMs(15)).toBe(924_600); // (2^10 - 1) * 200 ms + (15 - 9) * 120 s
    expect(tcpPatienceMs(0)).toBe(200);
    expect(tcpPatienceMs(3)).toBe(3_000); // (2^4 - 1) * 200 ms
    expect(tcpPatienceMs(9)).toBe(204_600); // the last doubling
    expect(tcpPatienceMs(10)).toBe(324_600); // then 120 s per retry
    expect(tcpPatienceMs(8)).toBe(102_200); // RFC 1122's 100 s minimum for R2
  });

  it('is the patience rounded up to the second, within the hold bounds; 925 s by default', () => {
    expect(defaultHoldMs(15)).toBe(925_000);
    expect(defaultHoldMs(undefined)).toBe(925_000);
    expect(defaultHoldMs(Number.NaN)).toBe(925_000);
    expect(defaultHoldMs(-1)).toBe(925_000);
    expect(defaultHoldMs(5)).toBe(13_000); // 12.6 s: a host made impatient on purpose stays so
    expect(defaultHoldMs(0)).toBe(1_000);
    expect(defaultHoldMs(100_000)).toBe(MAX_HOLD_MS);
  });

  it("reads the host's tcp_retries2, and assumes Linux's default when it cannot", () => {
    const d = mkdtempSync(join(tmpdir(), 'spook-hold-'));
    writeFileSync(join(d, 'r'), '20\n');
    writeFileSync(join(d, 'bad'), 'x\n');
    expect(readTcpRetries2(join(d, 'r'))).toBe(20);
    expect(hostDefaultHoldMs(join(d, 'r'))).toBe(1_525_000); // 204.6 s + 11 * 120 s, rounded up
    expect(readTcpRetries2(join(d, 'bad'))).toBeUndefined();
    expect(hostDefaultHoldMs(join(d, 'missing'))).toBe(925_000);
    // This host: at least as patient as its own TCP.
    const here = readTcpRetries2();
    if (here !== undefined) expect(hostDefaultHoldMs()).toBeGreaterThanOrEqual(tcpPatienceMs(here));
  });
});

describe('carrier redial schedule', () => {
  /** Drive `r` from `from` to `to` in 1 ms steps: attempts that fail after `failMs` (undefined: never end). */
  function drive(r: Redialer, from: number, to: number, failMs: number | undefined): number[] {
    const starts: number[] = [];
    const ends: number[] = [];
    for (let now = from; now <= to; now++) {
      while (ends.length && ends[0] <= now) {
        ends.shift();
        r.finished();
      }
      if (r.due(now)) {
        r.started(now);
        starts.push(now);
        if (failMs !== undefined) ends.push(now + failMs);
      }
    }
    return starts;
  }

  it('dials at once at start, then backs off from REDIAL_MS to REDIAL_MAX_MS and stays there', () => {
    const r = new Redialer(10);
    const starts = drive(r, 0, 3_000, 1); // refused at once (RST, no route)
    expect(starts.slice(0, 4)).toEqual([0, REDIAL_MS, REDIAL_MS + 2 * REDIAL_MS, 3 * REDIAL_MS + REDIAL_MAX_MS]);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]);
    expect(Math.max(...gaps)).toBe(REDIAL_MAX_MS);
    expect(REDIAL_MAX_MS).toBeLessThanOrEqual(1_000);
  });

  it('a loss waits REDIAL_MS for the first attempt; a carrier up resets the backoff', () => {
    const r = new Redialer(10);
    drive(r, 0, 5_000, 1);
    r.up();
    r.lost(10_000);
    expect(r.due(10_000)).toBe(false);
    expect(r.nextAt()).toBe(10_000 + REDIAL_MS);
    expect(drive(r, 10_000, 11_000, 1)).toEqual([10_250, 10_500, 11_000]);
  });

  it('against a blackholed peer attempts overlap: a new one every REDIAL_MAX_MS, at most maxInFlight at once', () => {
    // As spookd sizes it: an attempt's longest life / REDIAL_MAX_MS, and one more.
    const max = Math.ceil(10_000 / REDIAL_MAX_MS) + 1;
    const r = new Redialer(max);
    // Each attempt hangs 10 s (connect then handshake timeout): attempts keep starting anyway.
    const starts = drive(r, 0, 60_000, 10_000);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]);
    expect(Math.max(...gaps)).toBe(REDIAL_MAX_MS);
    expect(r.dialing).toBeLessThanOrEqual(max);
    // The cost: no more than 1000 / REDIAL_MAX_MS attempts a second.
    expect(starts.length).toBeLessThanOrEqual(60_000 / REDIAL_MAX_MS + 3);
  });

  it('never more than maxInFlight attempts at once', () => {
    const r = new Redialer(3);
    const starts = drive(r, 0, 10_000, undefined); // none ever ends
    expect(starts.length).toBe(3);
    expect(r.nextAt()).toBeUndefined();
    r.finished();
    expect(r.due(10_001)).toBe(true);
  });

  it("the peer's authenticated packets bring the next attempt forward, at most one per HEARD_MIN_GAP_MS", () => {
    const r = new Redialer(21);
    r.up();
    r.lost(1_000); // the next attempt at 1,250
    r.heard(1_010); // the peer came back (or moved): at once, not at 1,250
    expect(r.due(1_010)).toBe(true);
    r.started(1_010);
    // A flood of packets: no new attempt before HEARD_MIN_GAP_MS has passed since the last start.
    r.heard(1_020);
    expect(r.due(1_020)).toBe(false);
    expect(r.nextAt()).toBe(1_010 + HEARD_MIN_GAP_MS);
    expect(r.due(1_010 + HEARD_MIN_GAP_MS)).toBe(true);
    // Heard every ms for 10 s while every attempt hangs: still at most 1000 / HEARD_MIN_GAP_MS a second.
    let starts = 0;
    for (let now = 2_000; now < 12_000; now++) {
      r.heard(now);
      if (r.due(now)) {
        r.started(now);
        starts++;
      }
      if (starts % 5 === 0) r.finished();
    }
    expect(starts).toBeLessThanOrEqual(10_000 / HEARD_MIN_GAP_MS + 1);
    expect(r.dialing).toBeLessThanOrEqual(21);
    // Hearing never pushes an attempt that was due sooner later.
    const q = new Redialer(4);
    q.heard(0);
    expect(q.due(0)).toBe(true);
  });
});

describe('address changes under a carrier (drivers/wrap/roam.ts)', () => {
  it('compares addresses with IPv4-mapped forms folded', () => {
    expect(sameAddress('::ffff:10.0.0.1', '10.0.0.1')).toBe(true);
    expect(sameAddress('10.0.0.1', '10.0.0.3')).toBe(false);
    expect(sameAddress(undefined, '10.0.0.1')).toBe(false);
  });

  it("reads the host's addresses at most every LOCAL_CHECK_MS; unreadable: nothing is gone", () => {
    let addrs = ['10.0.0.1', '::1'];
    let reads = 0;
    const l = new LocalAddresses(() => (reads++, addrs));
    expect(l.has(0, '10.0.0.1')).toBe(true);
    expect(l.has(0, '::ffff:10.0.0.1')).toBe(true);
    addrs = ['10.0.0.3'];
    expect(l.has(LOCAL_CHECK_MS - 1, '10.0.0.1')).toBe(true); // not read again yet
    expect(l.due(LOCAL_CHECK_MS - 1)).toBe(false);
    expect(l.nextAt()).toBe(LOCAL_CHECK_MS);
    expect(l.has(LOCAL_CHECK_MS, '10.0.0.1')).toBe(false); // gone
    expect(l.has(LOCAL_CHECK_MS, '10.0.0.3')).toBe(true);
    expect(l.gone(LOCAL_CHECK_MS, '10.0.0.1')).toBe(true);
    // An address no read ever listed is never taken for a move (no carrier closed for it every check).
    expect(l.gone(LOCAL_CHECK_MS, '192.0.2.9')).toBe(false);
    expect(reads).toBe(2);
    expect(sameAddress('fe80::1%eth0', 'fe80::1')).toBe(true);
    const broken = new LocalAddresses(() => {
      throw new Error('getifaddrs failed');
    });
    expect(broken.has(0, '10.0.0.1')).toBe(true);
  });
});

describe('nothing but the hold ends a connection during an outage', () => {
  const target = { family: 4 as const, address: '10.0.0.2', port: 22 };
  const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };

  /** Two sessions with a carrier that goes silent at `cutAt`: every timer of both fires as due until `until`. */
  function outage(holdMs: number, until: number, healAt?: number) {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    const evs: { side: 'a' | 'b'; at: number; ev: WrapEvent }[] = [];
    let linked = true;
    const pump = (now: number): void => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) if (linked) b.handleRecord(now, Buffer.concat(r));
        for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) if (linked) a.handleRecord(now, Buffer.concat(r));
      }
      for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push({ side: 'a', at: now, ev: e });
      for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.push({ side: 'b', at: now, ev: e });
    };
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, holdMs)!;
    pump(0);
    b.dialed(0, id);
    a.localData(0, id, new Uint8Array(1000).fill(1));
    pump(0);
    linked = false; // the cut: records vanish, the carriers' TCP says nothing
    a.localData(1, id, new Uint8Array(500).fill(2)); // sent into the outage: lost
    pump(1);
    let now = 1;
    while (now < until) {
      const next = Math.min(a.pollTimeout() ?? Infinity, b.pollTimeout() ?? Infinity, healAt !== undefined && !linked ? healAt : Infinity);
      if (next > until) break;
      now = Math.max(now, next);
      if (healAt !== undefined && !linked && now >= healAt) {
        linked = true;
        a.onCarrierUp(now); // the redialled carrier
        b.onCarrierUp(now);
      }
      a.handleTimeout(now);
      b.handleTimeout(now);
      pump(now);
    }
    return { evs, id };
  }

  it('a silent carrier is dropped (silence), then the connection is held until the default hold, and no other timer closes it', () => {
    const hold = defaultHoldMs(15);
    const { evs } = outage(hold, 2_000_000);
    const drops = evs.filter((e) => e.ev.type === 'drop-carrier');
    expect(drops.map((e) => e.side).sort()).toEqual(['a', 'b']);
    const droppedAt = Math.max(...drops.map((e) => e.at));
    expect(droppedAt).toBeLessThanOrEqual(3_001);
    const closes = evs.filter((e) => e.ev.type === 'close');
    expect(closes.map((e) => (e.ev as { code: CloseCode }).code)).toEqual([CloseCode.HoldExpired, CloseCode.HoldExpired]);
    // Not a moment before the hold (counted from each side's carrier loss).
    for (const c of closes) expect(c.at).toBeGreaterThanOrEqual(hold);
    expect(Math.max(...closes.map((c) => c.at))).toBeLessThanOrEqual(droppedAt + hold);
  });

  it('a 924 s outage: held throughout, then resumed with every byte, nothing closed', () => {
    const { evs, id } = outage(defaultHoldMs(15), 1_000_000, 924_000);
    expect(evs.filter((e) => e.ev.type === 'close')).toEqual([]);
    expect(evs.filter((e) => e.ev.type === 'resumed').map((e) => e.side)).toEqual(expect.arrayContaining(['a', 'b']));
    const got = Buffer.concat(
      evs.filter((e) => e.side === 'b' && e.ev.type === 'deliver' && e.ev.conn === id).map((e) => (e.ev as { data: Uint8Array }).data),
    );
    expect(got).toEqual(Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(500, 2)]));
  });
});

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
import { Redialer, REDIAL_MAX_MS, REDIAL_MS } from '../core/wrap/redial.js';
import { hostDefaultHoldMs, readTcpRetries2 } from '../drivers/wrap/hold.js';

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
});

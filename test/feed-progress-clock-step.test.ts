import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChangeRing } from '../core/register/changes.js';
import { FEED_LIMITS, Feeds } from '../drivers/admin/feed.js';
import type { Call } from '../drivers/admin/handlers.js';

/**
 * Review 39 (time): a feed's `progress` pacing (drivers/admin/feed.ts, `lastProgressAt`) reads the
 * wall clock (Date.now). When the host's clock steps back (NTP step, VM restore) after a progress
 * was sent, the next one waits for the step's length: one hour back, no progress for an hour,
 * while every other timer of spookd runs on performance.now().
 */
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const HOUR = 3_600_000;

afterEach(() => vi.restoreAllMocks());

describe('feed progress and a wall-clock step', () => {
  it('a feed filtered by prefix still gets progress about once a second after the clock steps back an hour', async () => {
    const ring = new ChangeRing({ maxRecords: 100, maxBytes: 1 << 20 });
    const feeds = new Feeds();
    const events: { type: string; version?: number }[] = [];
    const closes: (() => void)[] = [];
    const call: Call = {
      onClose: (f) => void closes.push(f),
      onConnectionClose: () => {},
      conn: {},
      backlog: () => 0,
      onDrain: () => () => {},
    };
    feeds.open(
      { ring, current: () => ring.last },
      { fromVersion: 0, prefix: enc('a/'), maxBytes: 1 << 20, maxEvents: 1000 },
      call,
      (ev) => void events.push(ev as { type: string; version?: number }),
      () => {},
    );
    try {
      // A version the feed's prefix does not match: caught up, it is told by a progress at once.
      ring.add(1, [{ op: 'set', key: enc('b/1'), value: enc('x') }]);
      for (const wake of ring.wakers) wake();
      await vi.waitFor(() => expect(events.some((e) => e.type === 'progress' && e.version === 1)).toBe(true), { timeout: 1000 });

      // The host's clock steps back an hour (spookd keeps running).
      const real = Date.now.bind(Date);
      vi.spyOn(Date, 'now').mockImplementation(() => real() - HOUR);

      ring.add(2, [{ op: 'set', key: enc('b/2'), value: enc('y') }]);
      for (const wake of ring.wakers) wake();
      // progressMs (1 s) paces progress: the subscriber should hear of version 2 within about that.
      const t0 = performance.now();
      while (performance.now() - t0 < FEED_LIMITS.progressMs + 1500 && !events.some((e) => e.version === 2))
        await new Promise((r) => setTimeout(r, 50));
      expect(events.filter((e) => e.type === 'progress').map((e) => e.version)).toEqual([1, 2]);
    } finally {
      for (const f of closes) f();
    }
  });
});

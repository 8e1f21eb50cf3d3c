/**
 * Hostile review of the map table's pins (core16): the table holds each pin through a WeakRef
 * and dropped the dead ones only at a write's first touch of a bucket. A register nobody writes
 * but a peer's reconciliation pins once a second (PIN_INTERVAL_MS) then kept one WeakRef per pin
 * for as long as it stayed idle: memory without bound. Pins nobody holds must not accumulate.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { MapState } from '../core/register/map.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('pins of an idle map register', () => {
  it('10,000 pins dropped without a write in between leave no trace in the table', async () => {
    const st = new MapState(7);
    for (let i = 0; i < 100; i++) st.put(Uint8Array.of(i, 1), Uint8Array.of(i), i + 1);
    const held = st.snapshot(100); // one pin still read: it stays
    // One pin per job, as reconciliation takes them (WeakRef targets survive the job that made them).
    for (let i = 0; i < 10_000; i++) {
      st.snapshot(100);
      await tick();
      if (i % 50 === 49) gc();
    }
    gc();
    await tick();
    st.snapshot(100);
    const pins = (st as unknown as { t: { pins: unknown[] } }).t.pins;
    expect(pins.length).toBeLessThan(200);
    // The held pin still sees the entries as they were, after a write that follows.
    st.put(Uint8Array.of(0, 1), Uint8Array.of(9, 9), 101);
    const b = held.buckets.find((x) => x !== undefined && x.n > 0)!;
    expect(b.entry(0).version).toBeLessThanOrEqual(100);
    expect(held.buckets.reduce((n, x) => n + (x?.n ?? 0), 0)).toBe(100);
  });
});

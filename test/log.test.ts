import { describe, expect, it } from 'vitest';
import { DeltaLog, type LogRecord } from '../core/pair/log.js';

/** A record for version v whose hash and bytes are recognisable. */
function rec(v: number, size = 10): LogRecord {
  return { version: v, hash: { hi: v, lo: (v * 7919) >>> 0 }, encoded: new Uint8Array(size).fill(v & 0xff) };
}

function logWith(n: number, limits = { maxRecords: 1000, maxBytes: 1 << 20 }, size = 10): DeltaLog {
  const log = new DeltaLog(limits);
  for (let v = 1; v <= n; v++) log.append(rec(v, size), n);
  return log;
}

// A fresh log is empty at base 0 and serves nothing but its base.
describe('empty log', () => {
  it('starts at base 0 with the zero hash', () => {
    const log = new DeltaLog({ maxRecords: 10, maxBytes: 1000 });
    expect(log.base).toBe(0);
    expect(log.last).toBe(0);
    expect(log.length).toBe(0);
    expect(log.sizeBytes).toBe(0);
    expect(log.forcedCompactions).toBe(0);
    expect(log.covers(0)).toBe(true);
    expect(log.covers(1)).toBe(false);
    expect(log.get(0)).toBeUndefined();
    expect(log.get(1)).toBeUndefined();
    expect(log.hashAt(0)).toEqual({ hi: 0, lo: 0 });
    expect(log.hashAt(1)).toBeUndefined();
  });
});

// append/get/covers/hashAt agree on which versions the log holds.
describe('append and lookup', () => {
  it('holds every appended record by version', () => {
    const log = logWith(5);
    expect(log.length).toBe(5);
    expect(log.last).toBe(5);
    expect(log.sizeBytes).toBe(50);
    for (let v = 1; v <= 5; v++) {
      expect(log.get(v)?.version).toBe(v);
      expect(log.hashAt(v)).toEqual(rec(v).hash);
      expect(Array.from(log.get(v)!.encoded)).toEqual(Array.from(rec(v).encoded));
    }
    expect(log.get(0)).toBeUndefined();
    expect(log.get(6)).toBeUndefined();
    expect(log.hashAt(0)).toEqual({ hi: 0, lo: 0 });
    expect(log.hashAt(6)).toBeUndefined();
    for (let v = 0; v <= 5; v++) expect(log.covers(v), `covers(${v})`).toBe(true);
    expect(log.covers(6)).toBe(false);
    expect(log.covers(-1)).toBe(false);
  });

  it('refuses out-of-order appends and is unchanged by them', () => {
    const log = logWith(3);
    expect(() => log.append(rec(5), 0)).toThrow(/out of order/);
    expect(() => log.append(rec(3), 0)).toThrow(/out of order/);
    expect(() => log.append(rec(1), 0)).toThrow(/out of order/);
    expect(log.last).toBe(3);
    expect(log.length).toBe(3);
    expect(log.sizeBytes).toBe(30);
    log.append(rec(4), 0);
    expect(log.last).toBe(4);
    expect(() => new DeltaLog({ maxRecords: 5, maxBytes: 100 }).append(rec(2), 0)).toThrow(/out of order/);
  });
});

// The record and byte bounds drop the oldest records and move the base (and its hash) forward.
describe('bounds', () => {
  it('maxRecords keeps the newest records and advances base/baseHash', () => {
    const log = new DeltaLog({ maxRecords: 3, maxBytes: 1 << 20 });
    for (let v = 1; v <= 5; v++) {
      log.append(rec(v), 5);
      expect(log.length).toBeLessThanOrEqual(3);
    }
    expect(log.length).toBe(3);
    expect(log.base).toBe(2);
    expect(log.baseHash).toEqual(rec(2).hash);
    expect(log.last).toBe(5);
    expect(log.get(2)).toBeUndefined();
    expect(log.get(3)?.version).toBe(3);
    expect(log.hashAt(2)).toEqual(rec(2).hash);
    expect(log.hashAt(1)).toBeUndefined();
    expect(log.covers(1)).toBe(false);
    expect(log.covers(2)).toBe(true);
    expect(log.sizeBytes).toBe(30);
  });

  it('maxBytes drops the oldest records until the log fits', () => {
    const log = new DeltaLog({ maxRecords: 100, maxBytes: 100 });
    log.append(rec(1, 40), 10);
    log.append(rec(2, 40), 10);
    expect(log.length).toBe(2);
    log.append(rec(3, 40), 10); // 120 > 100: drop 1
    expect(log.length).toBe(2);
    expect(log.base).toBe(1);
    expect(log.sizeBytes).toBe(80);
    log.append(rec(4, 90), 10); // 170: drop 2 (130), drop 3 (90)
    expect(log.length).toBe(1);
    expect(log.base).toBe(3);
    expect(log.baseHash).toEqual(rec(3).hash);
    expect(log.sizeBytes).toBe(90);
    expect(log.sizeBytes).toBeLessThanOrEqual(100);
  });

  it('a single record larger than maxBytes is kept alone (the newest collapse stays servable)', () => {
    const log = new DeltaLog({ maxRecords: 100, maxBytes: 100 });
    log.append(rec(1, 30), 10);
    log.append(rec(2, 30), 10);
    log.append(rec(3, 500), 10);
    expect(log.length).toBe(1);
    expect(log.base).toBe(2);
    expect(log.get(3)?.encoded.length).toBe(500);
  });

  it('forcedCompactions counts only drops of records the peer has not acknowledged', () => {
    const log = new DeltaLog({ maxRecords: 2, maxBytes: 1 << 20 });
    log.append(rec(1), 2);
    log.append(rec(2), 2);
    log.append(rec(3), 2); // drops 1, acked
    log.append(rec(4), 2); // drops 2, acked
    expect(log.forcedCompactions).toBe(0);
    log.append(rec(5), 2); // drops 3, not acked
    expect(log.forcedCompactions).toBe(1);
    log.append(rec(6), 6); // drops 4, acked now
    expect(log.forcedCompactions).toBe(1);
    log.append(rec(7), 0); // drops 5, peer acked nothing
    log.append(rec(8), 0); // drops 6
    expect(log.forcedCompactions).toBe(3);
  });

  it('forcedCompactions counts every unacknowledged record of a multi-record byte drop', () => {
    const log = new DeltaLog({ maxRecords: 100, maxBytes: 100 });
    for (let v = 1; v <= 4; v++) log.append(rec(v, 25), 1); // 100 bytes, fits
    log.append(rec(5, 100), 1); // drops 1 (acked), 2, 3, 4 (not acked)
    expect(log.length).toBe(1);
    expect(log.forcedCompactions).toBe(3);
  });
});

// compactThrough and reset move the base explicitly.
describe('compaction and reset', () => {
  it('compactThrough(v) drops records up to and including v', () => {
    const log = logWith(5);
    log.compactThrough(3);
    expect(log.base).toBe(3);
    expect(log.baseHash).toEqual(rec(3).hash);
    expect(log.length).toBe(2);
    expect(log.sizeBytes).toBe(20);
    expect(log.get(3)).toBeUndefined();
    expect(log.get(4)?.version).toBe(4);
    expect(log.hashAt(3)).toEqual(rec(3).hash);
    expect(log.covers(2)).toBe(false);
    expect(log.covers(3)).toBe(true);
    expect(log.forcedCompactions).toBe(0);
    log.compactThrough(1); // behind the base: nothing to do
    expect(log.base).toBe(3);
    expect(log.length).toBe(2);
  });

  it('compactThrough beyond the last version empties the log at its last version', () => {
    const log = logWith(5);
    log.compactThrough(50);
    expect(log.length).toBe(0);
    expect(log.base).toBe(5);
    expect(log.last).toBe(5);
    expect(log.sizeBytes).toBe(0);
    expect(log.hashAt(5)).toEqual(rec(5).hash);
    log.append(rec(6), 0);
    expect(log.get(6)?.version).toBe(6);
  });

  it('reset(base, hash) discards records and restarts at base', () => {
    const log = logWith(5);
    const hash = { hi: 0xaaaa, lo: 0xbbbb };
    log.reset(100, hash);
    hash.hi = 0; // the log keeps its own copy
    expect(log.base).toBe(100);
    expect(log.last).toBe(100);
    expect(log.length).toBe(0);
    expect(log.sizeBytes).toBe(0);
    expect(log.baseHash).toEqual({ hi: 0xaaaa, lo: 0xbbbb });
    expect(log.hashAt(100)).toEqual({ hi: 0xaaaa, lo: 0xbbbb });
    expect(log.get(3)).toBeUndefined();
    expect(log.covers(5)).toBe(false);
    expect(() => log.append(rec(6), 0)).toThrow(/out of order/);
    log.append(rec(101), 0);
    expect(log.get(101)?.version).toBe(101);
  });
});

// Appending far more records than the bound keeps length and memory bounded.
describe('memory bound', () => {
  it('100,000 appends with maxRecords 100 never hold more than 100 records', () => {
    const log = new DeltaLog({ maxRecords: 100, maxBytes: 1 << 30 });
    const enc = new Uint8Array(8);
    for (let v = 1; v <= 100_000; v++) {
      log.append({ version: v, hash: { hi: 0, lo: v }, encoded: enc }, v);
      if (log.length > 100) throw new Error(`length ${log.length} after version ${v}`);
    }
    expect(log.length).toBe(100);
    expect(log.base).toBe(99_900);
    expect(log.sizeBytes).toBe(800);
    expect(log.get(100_000)?.hash.lo).toBe(100_000);
    expect(log.get(99_901)?.hash.lo).toBe(99_901);
    expect(log.get(99_900)).toBeUndefined();
    expect(log.hashAt(99_900)).toEqual({ hi: 0, lo: 99_900 });
    expect(log.forcedCompactions).toBe(0); // peer acked everything as it went
    // the backing array is compacted too, not just the live window
    const backing = (log as unknown as { records: unknown[] }).records;
    expect(backing.length).toBeLessThan(4096);
  });
});

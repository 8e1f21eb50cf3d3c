/**
 * A power cut during an unsynced batch on a file system that writes a file's pages back out of
 * order (XFS, ext4 data=writeback, a device without ordered writes) can leave a sector of a record
 * unwritten (read as zeros) with later whole records of the same batch after it. No fsync covered
 * that sector, so nothing at or after it was acknowledged: the stores cut it as a torn tail, as
 * etcd's WAL does (`isTornEntry`), and refuse only damage (a bad checksum over non-zero octets)
 * followed by whole records (PROTOCOL.md §10.1, §15.8).
 *
 * The unwritten sector need not lie inside the bad record: it may end a few octets into the next
 * record, on octets that were zeros already (a record's length is a big-endian u32: those of a
 * record under 64 KiB start with two zero octets, under 256 with three), and that record then
 * checks whole. Such an image was refused as damage.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { MAX_JOURNAL_RECORD, MAX_PAIR_RECORD, RECORD_HEADER, damagedAt, frameRecord, readFrames } from '../wire/journal.js';
import { hash } from '../crypto/primitives.js';
import { ownSeqs, set, soloDomain, tempDirs } from './helpers.js';

const tmp = tempDirs('spook-torn-sector');
const sha = (...p: Uint8Array[]): Uint8Array => hash('SHA256', ...p);
const offsets = (buf: Uint8Array, max: number): number[] => readFrames(buf, max, sha).records.map((r) => r.offset);
const SECTOR = 512;

function open(dir: string) {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
  const reports = [...pair.registers.values()].map((r) => store.load(r));
  return { store, pair, report: reports[0] };
}

/**
 * Build a file whose record `b` (an offset the build reports) starts `into` octets before a sector
 * boundary, by growing a record before it one octet at a time (`grow`).
 */
function aligned<T extends { b: number }>(build: (grow: number) => T, into: number): T {
  let grow = 0;
  for (let i = 0; i < 8; i++) {
    const t = build(grow);
    const miss = (SECTOR - into - (t.b % SECTOR) + SECTOR) % SECTOR;
    if (miss === 0) return t;
    grow += miss;
  }
  throw new Error('no alignment');
}

/** The pair log: one acknowledged record (v1), then a batch written and never fsynced: A (`aLen` octets of value), B, C, D. */
function pairLog(aLen: number) {
  const dir = tmp();
  const a = open(dir);
  a.pair.propose(0, 'kv', set('k0', 'v0'));
  a.pair.collapse(0);
  a.store.persist(a.pair.pollWrites());
  a.pair.writesDurable();
  const path = join(dir, 'kv', 'log');
  const acked = statSync(path).size;
  a.pair.propose(0, 'kv', set('a', 'a'.repeat(aLen)));
  a.pair.collapse(0);
  for (const k of ['b', 'c', 'd']) {
    a.pair.propose(0, 'kv', set(k, k));
    a.pair.collapse(0);
  }
  a.store.write(a.pair.pollWrites()); // written only: the power fails before its fsync returns
  a.store.close();
  const buf = readFileSync(path);
  const offs = offsets(buf, MAX_PAIR_RECORD);
  expect(offs).toHaveLength(5);
  expect(offs[1]).toBe(acked);
  return { dir, path, buf, acked, a: offs[1], b: offs[2] };
}

/** The pending list: one candidate reported pending (acknowledged), then a batch never fsynced: A, B, C. */
function pendingList(aLen: number) {
  const dir = tmp();
  const a = open(dir);
  const s0 = a.pair.propose(0, 'kv', set('k0', 'v0')).seq;
  a.pair.secureOwn(0, 'kv', s0);
  a.store.persist(a.pair.pollWrites());
  a.pair.writesDurable();
  const path = join(dir, 'kv', 'pending');
  const acked = statSync(path).size;
  for (const [k, v] of [
    ['a', 'a'.repeat(aLen)],
    ['b', 'b'],
    ['c', 'c'],
  ])
    a.pair.secureOwn(0, 'kv', a.pair.propose(0, 'kv', set(k, v)).seq);
  a.store.write(a.pair.pollWrites());
  a.store.close();
  const buf = readFileSync(path);
  const offs = offsets(buf, MAX_PAIR_RECORD);
  expect(offs).toHaveLength(4);
  expect(offs[1]).toBe(acked);
  return { dir, path, buf, acked, a: offs[1], b: offs[2] };
}

/**
 * A domain journal: puts acknowledged (each batch fsynced), then a put of a value of `aLen`
 * octets whose batch (its Pending record A, its Append record B, two small ones) is written and
 * never fsynced.
 */
function domainJournal(aLen: number) {
  const dir = tmp();
  const synced: number[] = [];
  const path = join(dir, 'journal');
  class Disk extends FileDomainStore {
    protected override syncFd(fd: number): void {
      super.syncFd(fd);
      synced.push(statSync(path).size);
    }
  }
  const disk = new Disk(dir, 'always');
  const { node, put } = soloDomain(disk);
  expect(node.outcomeOf(put('p', 'v', 1000))?.verdict).toBe('committed');
  const acked = synced[synced.length - 1];
  put('a', 'a'.repeat(aLen), 1001);
  disk.close();
  const buf = readFileSync(path);
  const offs = offsets(buf, MAX_JOURNAL_RECORD);
  const i = offs.indexOf(acked);
  expect(i).toBeGreaterThan(0);
  expect(offs.length - i).toBe(4); // the unsynced batch: A, B and two more
  return { dir, path, buf, acked, a: offs[i], b: offs[i + 1] };
}

/** The image a power cut left: the sector ending `into` octets into record B never written (zeros). */
function unwritten(buf: Buffer, b: number, into: number): Buffer {
  const out = Buffer.from(buf);
  const s = b + into - SECTOR;
  expect(s % SECTOR).toBe(0);
  expect(buf.subarray(b, b + into).every((x) => x === 0)).toBe(true); // B's length's high octets: zeros already
  out.fill(0, s, s + SECTOR);
  return out;
}

describe('an unwritten sector in an unsynced batch is a torn tail, cut; damage is refused', () => {
  it('pair log: the sector ends 1, 2 or 3 octets into the next record: cut at the torn record (refused as damage before)', () => {
    for (const into of [1, 2, 3]) {
      const log = aligned((g) => pairLog(700 + g), into);
      const torn = unwritten(log.buf, log.b, into);
      writeFileSync(log.path, torn);
      const b = open(log.dir); // on main: StoreError "damaged record followed by whole records"
      expect(b.pair.register('kv').version).toBe(1);
      expect(b.report.tornBytes).toBe(log.buf.length - log.acked);
      b.store.close();
      expect(readFileSync(log.path)).toEqual(log.buf.subarray(0, log.acked));
    }
  });

  it('pair log: a sector wholly inside the torn record is cut (as before); a bad checksum over non-zero octets is refused', () => {
    const log = pairLog(1500);
    const s = Math.ceil((log.a + RECORD_HEADER) / SECTOR) * SECTOR;
    expect(s + SECTOR).toBeLessThanOrEqual(log.b);
    const torn = Buffer.from(log.buf);
    torn.fill(0, s, s + SECTOR);
    writeFileSync(log.path, torn);
    const b = open(log.dir);
    expect(b.pair.register('kv').version).toBe(1);
    expect(b.report.tornBytes).toBe(log.buf.length - log.acked);
    b.store.close();
    // Damage: one octet of A's value changed, no sector of zeros; the records after it stay.
    const dmg = aligned((g) => pairLog(700 + g), 2);
    const bad = Buffer.from(dmg.buf);
    bad[dmg.b - 10] ^= 0x01;
    writeFileSync(dmg.path, bad);
    expect(() => open(dmg.dir)).toThrow(StoreError);
    expect(() => open(dmg.dir)).toThrow(`${dmg.path} at byte ${dmg.a}: damaged record followed by whole records (at byte ${dmg.b})`);
    expect(readFileSync(dmg.path)).toEqual(bad);
  });

  it('pending list: the sector ends 2 octets into the next record: cut, the acknowledged candidate restored (refused before)', () => {
    const p = aligned((g) => pendingList(700 + g), 2);
    writeFileSync(p.path, unwritten(p.buf, p.b, 2));
    const b = open(p.dir);
    expect(b.report.pendingRestored).toBe(1);
    expect(ownSeqs(b.pair, 'kv')).toHaveLength(1);
    b.store.close();
    expect(readFileSync(p.path)).toEqual(p.buf.subarray(0, p.acked));
  });

  it('domain journal: the sector ends 2 octets into the next record: cut, every committed entry kept (refused before)', () => {
    const j = aligned((g) => domainJournal(700 + g), 2);
    writeFileSync(j.path, unwritten(j.buf, j.b, 2));
    const disk = new FileDomainStore(j.dir, 'always'); // on main: StoreError "damaged record followed by whole records"
    expect(disk.tornBytes).toBe(j.buf.length - j.acked);
    disk.close();
    expect(readFileSync(j.path)).toEqual(j.buf.subarray(0, j.acked));
    // Damage there instead (a bit flip in A, no zeros): refused, the journal untouched.
    const bad = Buffer.from(j.buf);
    bad[j.b - 10] ^= 0x01;
    writeFileSync(j.path, bad);
    expect(() => new FileDomainStore(j.dir, 'always')).toThrow(
      `${j.path} at byte ${j.a}: damaged record followed by whole records (at byte ${j.b})`,
    );
    expect(readFileSync(j.path)).toEqual(bad);
  });
});

describe('damagedAt: which sector of zeros marks a tear', () => {
  const frame = (n: number, fill: number): Buffer => Buffer.from(frameRecord(Buffer.alloc(n, fill), sha));
  it('a zero sector starting in the bad record counts even where it runs into the next record; one starting before it does not', () => {
    // A at 0 (1,022 octets framed), B at 1,022: the sector [512, 1024) takes A's last 510 octets and B's first two (zeros).
    const a = frame(1022 - RECORD_HEADER, 7);
    const tail = [frame(40, 9), frame(40, 10)];
    const img = Buffer.concat([a, ...tail]);
    img.fill(0, 512, 1024);
    expect(damagedAt(img, 0, sha)).toBe(-1); // a tear
    // A bad record whose only zero sector starts before it (in the record before, whose octets were
    // zeros, and on its own length's zero high octets) is damage: that sector does not explain it.
    const zeros = frame(1022 - RECORD_HEADER, 0); // a whole record of zeros, ending at 1022
    const bad = frame(100, 5);
    bad[RECORD_HEADER + 50] ^= 1;
    const img2 = Buffer.concat([zeros, bad, ...tail]);
    expect(readFrames(img2, MAX_PAIR_RECORD, sha).end).toBe(zeros.length);
    expect(damagedAt(img2, zeros.length, sha)).toBe(zeros.length + bad.length);
  });
});

describe('damagedAt under a sector-granular crash model', () => {
  it('records of 9 to 1,508 octets (non-zero bodies), one or two aligned sectors zeroed: every bad record a tear, never damage', () => {
    let x = 12345; // xorshift32, seeded
    const rnd = (n: number): number => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x % n;
    };
    let bad = 0;
    let refused = 0;
    for (let t = 0; t < 5000; t++) {
      const recs = Array.from({ length: 3 + rnd(8) }, () => {
        const b = Buffer.alloc(1 + rnd(rnd(2) ? 200 : 1500));
        for (let j = 0; j < b.length; j++) b[j] = 1 + rnd(255);
        return Buffer.from(frameRecord(b, sha));
      });
      const img = Buffer.concat(recs);
      const sectors = Math.floor(img.length / SECTOR);
      if (sectors < 1) continue;
      for (let k = 1 + rnd(2); k > 0; k--) {
        const s = rnd(sectors) * SECTOR;
        img.fill(0, s, s + SECTOR);
      }
      const end = readFrames(img, MAX_PAIR_RECORD, sha).end;
      if (end === img.length) continue;
      bad++;
      if (damagedAt(img, end, sha) >= 0) refused++;
    }
    expect(bad).toBeGreaterThan(4000);
    expect(refused).toBe(0); // main: 8 of 4,800 refused as damage
  });
});

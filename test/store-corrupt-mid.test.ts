/**
 * A damaged record with whole records after it (a bad sector, a bit flip mid-file) is not a torn
 * tail: the stores refuse to load, naming the file and the offset, and leave the file as it is;
 * a torn tail (the last record cut short, an unwritten page of zeros) is cut. Only the offsets the
 * records' own lengths name are read: a value holding a frame-shaped run of octets is never taken
 * for a record. Pair logs, pending lists and domain journals share the framing and the rule
 * (readFramesChecked, wire/journal.ts damagedAt).
 */
import { describe, expect, it } from 'vitest';
import { appendFileSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { DeltaOp } from '../wire/delta.js';
import { MAX_JOURNAL_RECORD, MAX_PAIR_RECORD, RECORD_HEADER, damagedAt, frameRecord, readFrames } from '../wire/journal.js';
import { hash } from '../crypto/primitives.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { pairIdentity } from '../core/etcp/endpoint.js';
import { configOf, inProcess, logOf } from './inproc.js';
import { enc, ownSeqs, set, soloDomain, tempDirs } from './helpers.js';
import { portBase } from './ports.js';

const tmp = tempDirs('spook-corrupt-mid');
const sha = (...p: Uint8Array[]): Uint8Array => hash('SHA256', ...p);
const offsets = (buf: Uint8Array, max: number): number[] => readFrames(buf, max, sha).records.map((r) => r.offset);

function open(dir: string, register = 'kv', seed = 77) {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed, registers: [{ name: register, kind: 'map' }], writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/** A pair store whose register `kv` has `n` records, each durable (acknowledged); the log's path and bytes. */
function pairLog(n: number, register = 'kv', dir = tmp(), seed = 77): { dir: string; path: string; buf: Buffer; version: number } {
  const a = open(dir, register, seed);
  for (let i = 0; i < n; i++) {
    a.pair.propose(0, register, set(`k${i}`, `v${i}`));
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
  }
  const version = a.pair.register(register).version;
  a.store.close();
  const path = join(dir, encodeURIComponent(register), 'log');
  return { dir, path, buf: readFileSync(path), version };
}

/** Deterministic garbage (xorshift32). */
function garbage(n: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function domainJournal(dir: string, n: number): { path: string; buf: Buffer } {
  const disk = new FileDomainStore(dir, 'always');
  const { node, put } = soloDomain(disk);
  for (let i = 0; i < n; i++) expect(node.outcomeOf(put(`k${i}`, 'v', 1000 + i))?.verdict).toBe('committed'); // acknowledged
  disk.close();
  const path = join(dir, 'journal');
  return { path, buf: readFileSync(path) };
}

describe('pair log: damage mid-file is refused, a torn tail is cut', () => {
  it('a bit flipped in the 2nd of 5 records: load refuses (StoreError naming the file and the offset), the file untouched', () => {
    const { dir, path, buf } = pairLog(5);
    const offs = offsets(buf, MAX_PAIR_RECORD);
    expect(offs).toHaveLength(5);
    buf[offs[1] + RECORD_HEADER] ^= 0x01;
    writeFileSync(path, buf);
    let err: unknown;
    try {
      open(dir);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StoreError);
    expect((err as Error).message).toContain(`${path} at byte ${offs[1]}: damaged record followed by whole records (at byte ${offs[2]})`);
    expect(readFileSync(path)).toEqual(buf); // the evidence is kept
    // The operator's way out, once a healthy copy is ruled out: cut the file at the offset named.
    truncateSync(path, offs[1]);
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(1);
    b.store.close();
  });

  it('what cannot be told from a tear is cut as one (a damaged length, a zeroed stretch): the known limit', () => {
    // A length that points past the end reads as the last record cut short; zeros as an unwritten page.
    const { dir, path, buf } = pairLog(5);
    const offs = offsets(buf, MAX_PAIR_RECORD);
    buf[offs[2] + 1] ^= 0x40; // the 3rd record claims 16 KiB more than the file has
    writeFileSync(path, buf);
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(2);
    b.store.close();
    const c = pairLog(6);
    const o = offsets(c.buf, MAX_PAIR_RECORD);
    c.buf.fill(0, o[1] + 3, o[3] - 2); // the 2nd's length and all after it up to the 3rd's last two octets
    writeFileSync(c.path, c.buf);
    const d = open(c.dir);
    expect(d.pair.register('kv').version).toBe(1);
    d.store.close();
  });

  it('a torn last record whose value holds a whole frame is cut, not taken for damage (a value is never read as records)', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 3; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, `v${i}`));
      a.pair.collapse(0);
      a.store.persist(a.pair.pollWrites());
      a.pair.writesDurable();
    }
    const path = join(dir, 'kv', 'log');
    const good = readFileSync(path).length;
    // A value (a client's, a peer's) made of frames, back to back: any tear after the first lies past whole "frames".
    const inner = Buffer.from(frameRecord(enc('any payload at all'), sha));
    const value = Buffer.concat(Array.from({ length: 40 }, () => inner));
    a.pair.propose(0, 'kv', { op: DeltaOp.Set, key: enc('blob'), value });
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites()); // written, the crash before its fsync: never acknowledged
    a.store.close();
    const at = readFileSync(path).indexOf(inner);
    expect(at).toBeGreaterThan(good);
    truncateSync(path, at + 10 * inner.length); // torn after ten of them (before: refused as damage)
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(3);
    b.store.close();
    expect(readFileSync(path).length).toBe(good);
  });

  it('an unsynced batch whose first page never reached the disk (zeros) and whose later records did is cut: none of it was acknowledged', () => {
    const dir = tmp();
    const a = open(dir);
    a.pair.propose(0, 'kv', set('k0', 'v0'));
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    const path = join(dir, 'kv', 'log');
    const acked = readFileSync(path).length;
    for (let i = 1; i <= 4; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(3000)));
      a.pair.collapse(0);
    }
    a.store.write(a.pair.pollWrites()); // written only: the power fails before its fsync
    a.store.close();
    const lost = readFileSync(path);
    lost.fill(0, acked + RECORD_HEADER, Math.min(lost.length, (Math.floor(acked / 4096) + 1) * 4096)); // its length kept, a page of its body not
    writeFileSync(path, lost);
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(1);
    b.store.close();
  });

  it('torn tails are still cut: garbage, a last record cut short, a last record zero-filled', () => {
    const { dir, path, buf, version } = pairLog(4);
    const offs = offsets(buf, MAX_PAIR_RECORD);
    for (const tail of [garbage(64 * 1024), buf.subarray(offs[3], buf.length - 5), Buffer.alloc(buf.length - offs[3])]) {
      writeFileSync(path, buf.subarray(0, offs[3]));
      appendFileSync(path, tail);
      const b = open(dir);
      expect(b.pair.register('kv').version).toBe(version - 1);
      b.store.close();
      expect(readFileSync(path)).toEqual(buf.subarray(0, offs[3]));
    }
    // A record header whose length runs past the end, then a garbage body.
    writeFileSync(path, buf);
    appendFileSync(path, Buffer.concat([Buffer.from([0, 0, 0x40, 0, 1, 2, 3, 4]), garbage(4096, 7)]));
    const c = open(dir);
    expect(c.pair.register('kv').version).toBe(version);
    c.store.close();
    expect(readFileSync(path)).toEqual(buf);
  });

  /** Three own candidates reported pending (secured, durable), the store closed: its pending list's path, bytes, record offsets. */
  function pendingThree(dir: string): { seqs: number[]; path: string; buf: Buffer; offs: number[] } {
    const a = open(dir);
    const seqs = [0, 1, 2].map((i) => a.pair.propose(0, 'kv', set(`k${i}`, 'v')).seq);
    for (const s of seqs) a.pair.secureOwn(0, 'kv', s);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    expect(ownSeqs(a.pair, 'kv')).toEqual(seqs);
    a.store.close();
    const path = join(dir, 'kv', 'pending');
    const buf = readFileSync(path);
    const offs = offsets(buf, MAX_PAIR_RECORD);
    expect(offs).toHaveLength(3);
    return { seqs, path, buf, offs };
  }

  it('a pending list damaged mid-file is refused too: the candidates after it were reported pending', () => {
    const dir = tmp();
    const { path, buf, offs } = pendingThree(dir);
    buf[offs[0] + RECORD_HEADER + 1] ^= 0x10;
    writeFileSync(path, buf);
    expect(() => open(dir)).toThrow(new RegExp(`${path} at byte 0: damaged record followed by whole records`));
    expect(readFileSync(path)).toEqual(buf);
  });

  it('a pending candidate that checksums but does not decode is refused, never dropped (its proposer was told pending)', () => {
    const dir = tmp();
    const { seqs, path, buf, offs } = pendingThree(dir);
    // The middle record replaced by one of a delta op no spookd knows (a newer one's, after a downgrade), checksum and all.
    const odd = frameRecord(Uint8Array.from([seqs[1], 0x7f, 0x7f, 0x7f]), sha);
    const bad = Buffer.concat([buf.subarray(0, offs[1]), odd, buf.subarray(offs[2])]);
    writeFileSync(path, bad);
    expect(() => open(dir)).toThrow(new RegExp(`${path} at byte ${offs[1]}: a pending candidate that does not decode`));
    expect(readFileSync(path)).toEqual(bad);
  });

  it('spookd refuses to start on it: new Spookd throws the StoreError (main.ts logs it as one fatal line, exit 1)', () => {
    const lab = inProcess('spook-corrupt-mid', ['a', 'b'], portBase('store-corrupt-mid.test.ts'));
    try {
      // a the sequencer (its own writes are logged at once), whatever keys were drawn.
      if (pairIdentity(lab.keys.a.publicKey, lab.keys.b.publicKey).localId !== 1) [lab.keys.a, lab.keys.b] = [lab.keys.b, lab.keys.a];
      const { path, buf } = pairLog(4, 'config', join(lab.dir, 'a', 'b'), pairIdentity(lab.keys.a.publicKey, lab.keys.b.publicKey).seed);
      const offs = offsets(buf, MAX_PAIR_RECORD);
      expect(offs).toHaveLength(4);
      buf[offs[1] + RECORD_HEADER + 2] ^= 0x80;
      writeFileSync(path, buf);
      expect(() => new Spookd(configOf(lab, 'a', ['b']), lab.keys.a, logOf(lab, 'a'))).toThrow(StoreError);
      expect(() => new Spookd(configOf(lab, 'a', ['b']), lab.keys.a, logOf(lab, 'a'))).toThrow(
        `${path} at byte ${offs[1]}: damaged record`,
      );
      expect(readFileSync(path)).toEqual(buf);
    } finally {
      rmSync(lab.dir, { recursive: true, force: true });
    }
  });
});

describe('domain journal: damage mid-file is refused, a torn tail is cut', () => {
  it('a bit flipped in the 2nd record: FileDomainStore refuses (StoreError naming the journal and the offset), the journal untouched', () => {
    const dir = tmp();
    const { path, buf } = domainJournal(dir, 5);
    const offs = offsets(buf, MAX_JOURNAL_RECORD);
    expect(offs.length).toBeGreaterThan(6);
    buf[offs[1] + RECORD_HEADER] ^= 0x01;
    writeFileSync(path, buf);
    expect(() => new FileDomainStore(dir, 'always')).toThrow(StoreError);
    expect(() => new FileDomainStore(dir, 'always')).toThrow(
      `${path} at byte ${offs[1]}: damaged record followed by whole records (at byte ${offs[2]})`,
    );
    expect(readFileSync(path)).toEqual(buf);
  });

  it('a torn last entry whose value holds a whole frame is cut, every committed entry kept', () => {
    const dir = tmp();
    const { path, buf } = domainJournal(dir, 3);
    const inner = Buffer.from(frameRecord(enc('any payload, as a client wrote it'), sha));
    const entry = Buffer.from(frameRecord(Buffer.concat([Buffer.from([1, 2, 3]), ...Array.from({ length: 20 }, () => inner)]), sha));
    appendFileSync(path, entry.subarray(0, entry.length - 100)); // torn, whole "frames" inside what reached the disk
    const disk = new FileDomainStore(dir, 'always');
    expect(disk.tornBytes).toBe(entry.length - 100);
    disk.close();
    expect(readFileSync(path)).toEqual(buf);
  });

  it('a garbage tail is cut as before, every committed entry kept', () => {
    const dir = tmp();
    const { path, buf } = domainJournal(dir, 5);
    appendFileSync(path, garbage(16 * 1024, 3));
    const disk = new FileDomainStore(dir, 'always');
    expect(disk.tornBytes).toBe(16 * 1024);
    const st = disk.load();
    expect(st.entries.length + st.base).toBeGreaterThanOrEqual(5);
    disk.close();
    expect(readFileSync(path)).toEqual(buf);
  });
});

describe('damagedAt', () => {
  const frame = (t: string): Buffer => Buffer.from(frameRecord(enc(t), sha));
  it('damage: the bad record whole by its length, whole records after it to the very end; else -1 (a tear)', () => {
    const good = [frame('one'), frame('two'), frame('three')];
    const bad = frame('a damaged record');
    bad[RECORD_HEADER + 2] ^= 4; // its checksum fails, its length holds
    expect(damagedAt(Buffer.concat([bad, ...good]), 0, sha)).toBe(bad.length);
    // A record after it cut short, or garbage at the end: no chain to the end, a tear.
    const whole = Buffer.concat([bad, ...good]);
    expect(damagedAt(whole.subarray(0, whole.length - 1), 0, sha)).toBe(-1);
    expect(damagedAt(Buffer.concat([bad, ...good, garbage(9)]), 0, sha)).toBe(-1);
    // The bad record is the last (cut short, or nothing after it): a tear.
    expect(damagedAt(bad.subarray(0, bad.length - 3), 0, sha)).toBe(-1);
    expect(damagedAt(bad, 0, sha)).toBe(-1);
    // Frames inside garbage are never read: only the offsets the lengths name.
    expect(damagedAt(Buffer.concat([Buffer.from([0xff]), garbage(10_000, 11), ...good]), 0, sha)).toBe(-1);
  });

  it('a bad record with a whole sector of zeros is an unwritten page (a crash), not damage', () => {
    const bad = Buffer.from(frameRecord(Buffer.alloc(2048, 7), sha));
    bad.fill(0, 1024, 1536);
    expect(damagedAt(Buffer.concat([bad, frame('after')]), 0, sha)).toBe(-1);
    bad.fill(7, 1024, 1536);
    bad[RECORD_HEADER] ^= 1;
    expect(damagedAt(Buffer.concat([bad, frame('after')]), 0, sha)).toBe(bad.length);
  });
});

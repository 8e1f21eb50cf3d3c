import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, statSync, appendFileSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import type { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { append, cas, enc, set, del } from './helpers.js';
import { SimWorld } from '../testing/sim/world.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { SpookEvent } from '../core/pair/events.js';
import { RejectReason } from '../wire/delta.js';
import { Writer } from '../wire/buffer.js';
import { hash as cryptoHash } from '../crypto/primitives.js';
import { PAIR_SNAPSHOT_MAGIC_V1, PairSnapshotKind, decodePairSnapshotHead, encodePairSnapshot } from '../wire/journal.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-store-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const REGS = [
  { name: 'kv', kind: 'map' as const },
  { name: 's', kind: 'stream' as const },
];

/** A sequencer HalfPair over a store in `dir`, loaded from whatever is there. */
function open(dir: string, maxLogBytes?: number) {
  const store = new DiskStore(dir, 'always', maxLogBytes);
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, store }, 0);
  const reports = [...pair.registers.values()].map((r) => store.load(r));
  return { store, pair, reports };
}

function commit(pair: HalfPair): void {
  pair.collapse(0);
}

// Committed history survives a restart: snapshot + log replay, torn tails cut, damage refused.
describe('DiskStore', () => {
  it('a restart replays the log to the same (version, hash) and continues sequence numbers', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 50; i++) a.pair.propose(0, 'kv', set(`k${i % 7}`, `v${i}`));
    a.pair.propose(0, 'kv', del('k3'));
    a.pair.propose(0, 's', append(0, 'hello'));
    commit(a.pair);
    const before = [...a.pair.registers.values()].map((r) => [r.version, r.hash.hi, r.hash.lo]);
    a.store.close();
    const b = open(dir);
    expect([...b.pair.registers.values()].map((r) => [r.version, r.hash.hi, r.hash.lo])).toEqual(before);
    expect(b.reports[0].replayed).toBeGreaterThan(0);
    expect((b.pair.register('kv').state as MapState).get(enc('k3'))).toBeUndefined();
    // New own candidates must not reuse a sequence number decided before the restart.
    const id = b.pair.propose(0, 'kv', set('after', 'restart'));
    expect(id.seq).toBeGreaterThan(51);
  });

  it('a torn tail (crash mid-write) is cut off and everything before it kept', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 10; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'v'));
      commit(a.pair);
    }
    const v = a.pair.register('kv').version;
    a.store.close();
    const log = join(dir, 'kv', 'log');
    appendFileSync(log, Buffer.from([0, 0, 0, 40, 1, 2, 3])); // a record header with half a body
    const sizeWithTear = statSync(log).size;
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(v);
    expect(b.reports[0].tornBytes).toBe(7);
    expect(statSync(log).size).toBe(sizeWithTear - 7);
  });

  it('a corrupted record ends the replay there (checksum), never applies garbage', () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 5; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'v'));
      commit(a.pair);
    }
    a.store.close();
    const log = join(dir, 'kv', 'log');
    const buf = readFileSync(log);
    buf[buf.length - 3] ^= 0xff; // inside the last record
    writeFileSync(log, buf);
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(4);
  });

  it('compaction writes a snapshot, empties the log, and a restart loads the snapshot', () => {
    const dir = tmp();
    const a = open(dir, 2000);
    for (let i = 0; i < 200; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      a.pair.propose(0, 's', append((a.pair.register('s').state as StreamState).size() + i * 0, 'ab'));
      commit(a.pair);
    }
    // Folded once past 2000 bytes and the last snapshot's size: at most one commit's records beyond.
    const limit = Math.max(2000, statSync(join(dir, 'kv', 'snapshot')).size);
    expect(statSync(join(dir, 'kv', 'log')).size).toBeLessThan(limit + 200);
    const before = a.pair.register('kv').hash;
    a.store.close();
    const b = open(dir);
    expect(b.reports[0].snapshotVersion).toBeGreaterThan(0);
    expect(b.pair.register('kv').hash).toEqual(before);
    expect(b.pair.register('kv').state.size()).toBe(200);
  });

  it('a log is folded only once it outgrows the last snapshot too: rewrites cost what was logged, not the register every maxLogBytes', () => {
    const dir = tmp();
    const a = open(dir, 500);
    const log = join(dir, 'kv', 'log');
    const snap = join(dir, 'kv', 'snapshot');
    let logged = 0;
    let folds = 0;
    let snapBytes = 0;
    for (let i = 0; i < 1000; i++) {
      const logBefore = statSync(log).size;
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      commit(a.pair);
      const after = statSync(log).size;
      if (after < logBefore) {
        // A fold: the log it replaced had outgrown both bounds, and the snapshot holds every key.
        folds++;
        expect(logBefore + 200).toBeGreaterThan(Math.max(500, snapBytes));
        snapBytes = statSync(snap).size;
        logged += logBefore;
      }
      expect(after).toBeLessThan(Math.max(500, snapBytes) + 200);
    }
    logged += statSync(log).size;
    // ~1,000 records of ~50 bytes: a fold every 500 bytes would be ~100 of them; doubling, a handful.
    expect(logged).toBeGreaterThan(100 * 500);
    expect(folds).toBeGreaterThan(1);
    expect(folds).toBeLessThan(12);
    const before = a.pair.register('kv').hash;
    a.store.close();
    const b = open(dir);
    expect(b.pair.register('kv').hash).toEqual(before);
    expect(b.pair.register('kv').state.size()).toBe(1000);
  });

  it('a damaged snapshot is a hard error naming the file', () => {
    const dir = tmp();
    const a = open(dir, 500);
    for (let i = 0; i < 50; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      commit(a.pair);
    }
    a.store.close();
    const snap = join(dir, 'kv', 'snapshot');
    const buf = readFileSync(snap);
    buf[20] ^= 1;
    writeFileSync(snap, buf);
    expect(() => open(dir)).toThrow(StoreError);
    expect(() => open(dir)).toThrow(/snapshot: checksum mismatch/);
  });

  it('a snapshot whose checksum holds but whose body does not decode is a StoreError naming the file, not a bare decode error', () => {
    const dir = tmp();
    const a = open(dir);
    a.store.close();
    mkdirSync(join(dir, 'kv'), { recursive: true });
    // Five entries announced, none written: sealed with a valid checksum.
    const head = { version: 3, hash: { hi: 0, lo: 0 }, origins: new Map<number, number>(), rejections: new Map() };
    const bad = encodePairSnapshot(head, { kind: PairSnapshotKind.Map, count: 5, entries: [] }, sha256);
    writeFileSync(join(dir, 'kv', 'snapshot'), bad);
    expect(() => open(dir)).toThrow(StoreError);
    expect(() => open(dir)).toThrow(/kv.snapshot: /);
  });
});

const sha256 = (...parts: Uint8Array[]): Uint8Array => cryptoHash('SHA256', ...parts);

/** A snapshot in the version 1 layout (before revision 1.8): no rejections in the head. */
function snapshotV1(
  version: number,
  hash: { hi: number; lo: number },
  origins: [number, number][],
  entries: [string, number, string][],
): Buffer {
  const w = new Writer(256);
  w.bytes(PAIR_SNAPSHOT_MAGIC_V1).u8(PairSnapshotKind.Map).varint(version).hash64(hash).varint(origins.length);
  for (const [o, q] of origins) w.varint(o).varint(q);
  w.varint(entries.length);
  for (const [k, v, val] of entries) w.lenBytes(enc(k)).varint(v).lenBytes(enc(val));
  const body = w.finish();
  return Buffer.concat([body, sha256(body)]);
}

// The snapshot file's format: version 2 carries the sequencer's §8.5 rejections; version 1 still loads.
describe('register snapshot format', () => {
  it('SPKSNAP2 carries the rejections (seq → reason) and a damaged reason is refused', () => {
    const rejections = new Map([
      [7, RejectReason.CasMismatch],
      [9, RejectReason.QuotaExceeded],
    ]);
    const buf = encodePairSnapshot(
      { version: 12, hash: { hi: 1, lo: 2 }, origins: new Map([[2, 9]]), rejections },
      { kind: PairSnapshotKind.Map, count: 0, entries: [] },
      sha256,
    );
    expect(new TextDecoder().decode(buf.subarray(0, 8))).toBe('SPKSNAP2');
    const { head } = decodePairSnapshotHead(buf, sha256);
    expect(head.format).toBe(2);
    expect([...head.rejections]).toEqual([...rejections]);
    // A reason outside 1-4 (with a valid checksum: only a bug writes one) is a format error, not a verdict.
    const body = Buffer.from(buf.subarray(0, buf.length - 32));
    body[body.indexOf(RejectReason.QuotaExceeded, 8 + 1 + 1 + 8)] = 9;
    expect(() => decodePairSnapshotHead(Buffer.concat([body, sha256(body)]), sha256)).toThrow(/unknown reason 9/);
  });

  it('an SPKSNAP1 snapshot (a data directory from before) still loads, with no rejections, and is rewritten as SPKSNAP2', () => {
    // The state to expect: build it through a replica, then write its snapshot in the old layout.
    const src = open(tmp());
    src.pair.register('kv').restore(4, (st) => {
      (st as MapState).put(enc('a'), enc('1'), 3);
      (st as MapState).put(enc('b'), enc('2'), 4);
    });
    const h = src.pair.register('kv').hash;
    src.store.close();
    const dir = tmp();
    mkdirSync(join(dir, 'kv'), { recursive: true });
    writeFileSync(
      join(dir, 'kv', 'snapshot'),
      snapshotV1(
        4,
        h,
        [
          [1, 3],
          [2, 1],
        ],
        [
          ['a', 3, '1'],
          ['b', 4, '2'],
        ],
      ),
    );
    const b = open(dir, 300);
    expect(b.reports[0].snapshotVersion).toBe(4);
    const kv = b.pair.register('kv');
    expect(kv.hash).toEqual(h);
    expect(kv.origins.get(2)).toBe(1);
    expect(kv.peerRejections.size).toBe(0);
    expect(new TextDecoder().decode((kv.state as MapState).get(enc('b'))!.value)).toBe('2');
    // The next snapshot (compaction) is written in the current format.
    for (let i = 0; i < 20; i++) {
      b.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(20)));
      commit(b.pair);
    }
    b.store.close();
    expect(
      readFileSync(join(dir, 'kv', 'snapshot'))
        .subarray(0, 8)
        .toString(),
    ).toBe('SPKSNAP2');
    expect(open(dir).pair.register('kv').version).toBe(kv.version);
  });
});

// Promises kept across a restart: a follower write reported `pending` is decided after it.
describe('durable own candidates', () => {
  const KV = [{ name: 'kv', kind: 'map' as const }];
  const pairOn = (dir: string, localId: number, now: number, maxLogBytes?: number) => {
    const store = new DiskStore(dir, 'always', maxLogBytes);
    const pair = new HalfPair({ pairId: 3, localId, peerId: 3 - localId, seed: 11, registers: KV, store }, now);
    const reports = [...pair.registers.values()].map((r) => store.load(r));
    return { store, pair, reports };
  };

  /** Sequencer A and follower B, each on its own real DiskStore, in one simulated world. */
  function world(maxLogBytesA?: number) {
    const w = new SimWorld(5, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 3 });
    const dirA = tmp();
    const dirB = tmp();
    const a = pairOn(dirA, 1, 0, maxLogBytesA);
    const b = pairOn(dirB, 2, 0);
    const events: { ep: string; ev: SpookEvent }[] = [];
    w.onEvent = (ep, ev) => events.push({ ep: ep.name, ev });
    const [ea, eb] = w.adopt(['A', 'B'], [a.pair, b.pair]);
    const entangled = () => ea.pair.state === PairState.ENTANGLED && eb.pair.state === PairState.ENTANGLED;
    expect(w.run(5000, entangled)).toBe(true);
    /** Stop B's daemon (its store closed, nothing else kept) and start it again from disk. */
    const restartB = () => {
      b.store.close();
      const b2 = pairOn(dirB, 2, w.now);
      eb.pair = b2.pair;
      b.store = b2.store;
      w.drain(eb);
      return b2.reports[0];
    };
    /** The same for the sequencer A. */
    const restartA = () => {
      a.store.close();
      const a2 = pairOn(dirA, 1, w.now, maxLogBytesA);
      ea.pair = a2.pair;
      a.pair = a2.pair;
      a.store = a2.store;
      w.drain(ea);
      return a2.reports[0];
    };
    const outcomes = (seqs: number[]) =>
      events
        .filter((e) => e.ep === 'B' && e.ev.type === 'outcome' && seqs.includes(e.ev.seq))
        .map((e) => (e.ev as { seq: number; verdict: string }).seq + ':' + (e.ev as { verdict: string }).verdict);
    return { w, a, b, ea, eb, events, entangled, restartA, restartB, outcomes, close: () => (a.store.close(), b.store.close()) };
  }

  it('a write pending at a restart (never sent: the follower was cut off) is decided after it', () => {
    const t = world();
    t.w.net.setLink('B', 'A', false);
    t.w.net.setLink('A', 'B', false);
    const seqs = [1, 2, 3].map((i) => t.eb.pair.propose(t.w.now, 'kv', set(`p${i}`, `v${i}`)).seq);
    t.w.run(t.w.now + 100);
    expect(t.outcomes(seqs)).toEqual([]); // pending: what the CLI reports as "decided later"
    const rep = t.restartB();
    expect(rep.pendingRestored).toBe(3);
    t.w.net.setLink('B', 'A', true);
    t.w.net.setLink('A', 'B', true);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes(seqs).length === 3 && t.entangled())).toBe(true);
    expect(t.outcomes(seqs)).toEqual(seqs.map((s) => `${s}:committed`));
    const sa = t.a.pair.register('kv').state as MapState;
    expect(new TextDecoder().decode(sa.get(enc('p2'))!.value)).toBe('v2');
    // New writes after the restart use fresh sequence numbers and are decided too.
    const after = t.eb.pair.propose(t.w.now, 'kv', set('after', 'x')).seq;
    expect(after).toBeGreaterThan(Math.max(...seqs));
    t.w.drain(t.eb);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes([after]).length === 1)).toBe(true);
    t.close();
  });

  it('a write the sequencer decided while the follower was down is reported once, not applied twice', () => {
    const t = world();
    t.w.net.setLink('A', 'B', false); // B's proposals reach A; A's collapses do not reach B
    const seqs = [1, 2].map((i) => t.eb.pair.propose(t.w.now, 'kv', cas(`c${i}`, 0, 'first')).seq);
    t.w.drain(t.eb);
    t.w.run(t.w.now + 200);
    expect(t.a.pair.register('kv').origins.get(2)).toBe(Math.max(...seqs)); // decided at A
    expect(t.outcomes(seqs)).toEqual([]);
    expect(t.restartB().pendingRestored).toBe(2);
    t.w.net.setLink('A', 'B', true);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes(seqs).length === 2 && t.entangled())).toBe(true);
    expect(t.outcomes(seqs)).toEqual(seqs.map((s) => `${s}:committed`));
    const decidedAtA = t.events
      .filter((e) => e.ep === 'A' && e.ev.type === 'collapse')
      .flatMap((e) => (e.ev as { entries: readonly { origin: number; seq: number }[] }).entries)
      .filter((x) => x.origin === 2);
    expect(decidedAtA.map((x) => x.seq)).toEqual(seqs); // each once: the re-proposals were duplicates
    t.close();
  });

  it('rejections the follower never heard of survive a sequencer restart (snapshot and log): it reconciles and reports them rejected', () => {
    // §8.5: the sequencer's list of rejected follower candidates is durable. A's log is small,
    // so a snapshot covers the first rejections and the log after it the later ones; B never
    // acknowledges them (A→B cut), A restarts, and B, behind A's log base, reconciles.
    const t = world(600);
    t.w.net.setLink('A', 'B', false);
    const propose = (d: ReturnType<typeof set>) => t.eb.pair.propose(t.w.now, 'kv', d).seq;
    const early = [propose(cas('r1', 5, 'no')), propose(set('ok1', 'yes')), propose(cas('r2', 7, 'no'))];
    t.w.drain(t.eb);
    t.w.run(t.w.now + 200);
    for (let i = 0; i < 30; i++) t.ea.pair.propose(t.w.now, 'kv', set(`a${i}`, 'x'.repeat(30))); // past 600 octets: a snapshot
    t.w.drain(t.ea);
    const late = [propose(cas('r3', 9, 'no')), propose(set('ok2', 'yes'))];
    t.w.drain(t.eb);
    t.w.run(t.w.now + 200);
    const seqs = [...early, ...late];
    expect(t.a.pair.register('kv').origins.get(2)).toBe(Math.max(...seqs)); // all decided at A
    expect(t.outcomes(seqs)).toEqual([]); // and none heard at B
    const rejected = [early[0], early[2], late[0]];
    expect([...t.a.pair.register('kv').peerRejections.keys()]).toEqual(rejected);
    const rep = t.restartA();
    expect(rep.snapshotVersion).toBeGreaterThan(0);
    expect(rep.replayed).toBeGreaterThan(0);
    expect([...t.a.pair.register('kv').peerRejections.keys()]).toEqual(rejected);
    t.w.net.setLink('A', 'B', true);
    expect(t.w.run(t.w.now + 30_000, () => t.outcomes(seqs).length === seqs.length && t.entangled())).toBe(true);
    expect(t.events.some((e) => e.ep === 'B' && e.ev.type === 'reentangled' && e.ev.method !== 'log')).toBe(true);
    expect(t.outcomes(seqs)).toEqual(seqs.map((s) => `${s}:${rejected.includes(s) ? 'rejected' : 'committed'}`));
    // Acknowledged now: B's Status pruned the list, and the next restart does not bring them back.
    expect(t.a.pair.register('kv').peerRejections.size).toBe(0);
    t.close();
  });
});

/**
 * Containment of the sequencer's gap costing (PROTOCOL §8.1 "Choosing the path"): a follower can
 * start a re-entanglement with every other datagram (Close{GoingAway}: the pair goes PeerSilent;
 * then a Status at an old version with its right hash: PeerHeard, a new re-entanglement, a new
 * costing). The work each costing does must not be a fresh walk of the gap's records: repeated,
 * the cycle costs about one costing (counted in records decoded, Sequencer.gapRecordsDecoded),
 * whether the follower repeats its version, steps it up, or the sequencer logs more meanwhile.
 * And the path chosen (replay, log diff, reconciliation) is the one a fresh costing chooses.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { Sequencer } from '../core/pair/sequencer.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { CloseReason, MsgType, encodeMessage, type Message } from '../wire/messages.js';
import { enc, peerManifest } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map', log: { maxRecords: 100_000, maxBytes: 1 << 28 } }];

/** What the tests read of the sequencer's private costing state. */
interface Costing {
  costGap(peerVersion: number): void;
  diffSince: number | undefined;
  servedBase: number;
  gapScan: { scan(from: number): { keys: number; entries: number; written: number } } | undefined;
  gapRecordsDecoded: number;
}

/** A sequencer (no follower: the test speaks for it), its register, and a way to feed it. */
function sequencer() {
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: REGS }, 0);
  const reg = pair.register('kv');
  const seq = reg.sequencer!;
  let pn = 1;
  let now = 10;
  const feed = (...ms: Message[]): void => {
    const parts = ms.map((m) => encodeMessage(m));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    pair.handlePayload(now, pn++, out);
    while (pair.pollTransmit(now)) {
      /* drained: what the sequencer sends does not matter here */
    }
  };
  /** Log one record committing a txn for each list of (key, value) pairs (distinct keys in each). */
  const log = (...txns: [string, Uint8Array][][]): void => {
    for (const writes of txns) {
      const ops: Delta[] = writes.map(([k, value]) => ({ op: DeltaOp.Set, key: enc(k), value }));
      pair.propose(now, 'kv', { op: DeltaOp.Txn, ops });
    }
    pair.collapse(now);
  };
  const status = (v: number): Message => ({
    type: MsgType.Status,
    register: 'kv',
    version: v,
    hash: { ...reg.log.hashAt(v)! },
    logBase: 0,
    resolvedSeq: 0,
    held: [],
  });
  let costings = 0;
  const c = seq as unknown as Costing;
  const inner = c.costGap.bind(seq);
  c.costGap = (v: number): void => {
    costings++;
    inner(v);
  };
  return {
    pair,
    reg,
    seq,
    c,
    feed,
    log,
    status,
    costings: () => costings,
    /** Close{GoingAway}, then a Status at `v`: a re-entanglement, and a costing. */
    cycle(v: number): void {
      now += 5;
      feed({ type: MsgType.Close, reason: CloseReason.GoingAway });
      feed(status(v));
    },
    /** The peer's manifest: the pair forms. */
    manifest(): void {
      pair.handlePayload(now, pn++, peerManifest(REGS));
    },
  };
}

const value = (n: number, fill = 0x62): Uint8Array => new Uint8Array(n).fill(fill);

/** `records` records of `per` distinct keys each (k0, k1, ... wrapping at `space`), then the manifest and a Status at `low`. */
function loaded(records: number, per: number, space: number, gapRecords: number) {
  const t = sequencer();
  let k = 0;
  for (let r = 0; r < records; r++) {
    const w: [string, Uint8Array][] = [];
    for (let j = 0; j < per; j++) w.push([`k${k++ % space}`, value(16)]);
    t.log(w);
  }
  t.manifest();
  const low = t.reg.version - gapRecords;
  t.feed(t.status(low));
  return { ...t, low };
}

describe('pair containment: gap costing per re-entanglement', () => {
  it('Close + Status at the same old version, 60 times: one costing decodes the gap, the rest nothing', () => {
    const t = loaded(1500, 20, 20_000, 1200);
    t.cycle(t.low);
    expect(t.pair.state).toBe(PairState.REENTANGLING);
    expect(t.costings()).toBe(1);
    const first = t.c.gapRecordsDecoded;
    expect(first).toBe(1200); // the gap, read once
    for (let i = 0; i < 60; i++) t.cycle(t.low);
    expect(t.costings()).toBe(61); // every cycle costed the gap again...
    expect(t.c.gapRecordsDecoded).toBe(first); // ...without reading a record
  });

  it('the follower steps its version up by one each cycle: still one reading of the gap', () => {
    const t = loaded(1500, 20, 20_000, 1200);
    for (let i = 0; i < 200; i++) t.cycle(t.low + i);
    expect(t.costings()).toBe(200);
    expect(t.reg.log.base).toBe(t.low + 199); // each Status compacted the log: the gap shrank
    expect(t.c.gapRecordsDecoded).toBe(1200);
  });

  it('the sequencer logs records between cycles, past GAP_COSTING_MAX: each new record read about once', () => {
    const t = loaded(6000, 2, 1_000_000, 5500); // a gap longer than the 4,096 records a costing reads
    t.cycle(t.low);
    expect(t.c.gapRecordsDecoded).toBe(4096);
    let added = 0;
    for (let i = 0; i < 120; i++) {
      for (let r = 0; r < 50; r++, added++) t.log([[`new${added}`, value(16)]]);
      t.cycle(t.low + i);
    }
    expect(t.costings()).toBe(121);
    // The records logged since, plus at most a fresh reading of 4,096 for each 4,096 logged
    // (the run kept is at most 2·4,096 records long). A fresh reading per cycle: 121 × 4,096.
    expect(t.c.gapRecordsDecoded).toBeLessThanOrEqual(4096 + added + 4096 * Math.ceil(added / 4096));
    expect(t.c.gapRecordsDecoded).toBeLessThan(4 * 4096);
  });

  it('the path chosen with the kept reading is the one a fresh reading chooses, over 40 random histories', () => {
    const outcomes = { replay: 0, diff: 0, reconcile: 0, short: 0 };
    let rnd = 0x2545f491;
    const rand = (n: number): number => {
      rnd ^= rnd << 13;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      return (rnd >>> 0) % n;
    };
    for (let run = 0; run < 40; run++) {
      const t = sequencer();
      // A state of small entries (its average entry prices a reconciliation), then a history
      // rewriting a hot set of keys, or writing fresh ones, with values of one size or another.
      const written = new Map<number, number>(); // version → octets its keys and values take
      const octets = (w: [string, Uint8Array][]): number => w.reduce((o, [k, v]) => o + enc(k).length + v.length, 0);
      const log = (...txns: [string, Uint8Array][][]): void => {
        const before = t.reg.version;
        t.log(...txns);
        // One record, or one per txn when they do not fit a payload together.
        if (t.reg.version === before + 1) written.set(t.reg.version, octets(txns.flat()));
        else if (t.reg.version === before + txns.length) txns.forEach((w, i) => written.set(before + 1 + i, octets(w)));
        else throw new Error(`${txns.length} txns made ${t.reg.version - before} records`);
      };
      const prefill = rand(3) * 4000;
      for (let i = 0; i < prefill; i += 200) {
        const w: [string, Uint8Array][] = [];
        for (let j = i; j < i + 200; j++) w.push([`p${j}`, value(4)]);
        log(w);
      }
      const hot = [5, 50, 500, 1_000_000][rand(4)];
      const vlen = [8, 64, 600][rand(3)];
      let fresh = 0;
      const history = (n: number): void => {
        for (let r = 0; r < n; r++) {
          // One txn, or two in one record (which may write the same key twice).
          const txns: [string, Uint8Array][][] = [];
          for (let x = rand(3) === 0 ? 2 : 1; x > 0; x--) {
            const w = new Map<string, Uint8Array>();
            const per = 1 + rand(12);
            for (let j = 0; j < per; j++) w.set(hot >= 1_000_000 ? `f${fresh++}` : `h${rand(hot)}`, value(vlen, r & 0xff));
            txns.push([...w]);
          }
          log(...txns);
        }
      };
      history(200 + rand(1800));
      t.manifest();
      let p = t.reg.version - 100 - rand(t.reg.version - prefill / 200 - 100);
      t.feed(t.status(p));
      const c = t.c;
      const seq: Sequencer = t.seq;
      const costGap = (Object.getPrototypeOf(seq) as Costing).costGap;
      const counted = c.costGap;
      // After each costing (from the kept reading), cost again from a fresh one and compare.
      c.costGap = (v: number): void => {
        const servedBefore = c.servedBase;
        counted(v);
        const kept = { diffSince: c.diffSince, servedBase: c.servedBase };
        const scan = c.gapScan;
        const decoded = c.gapRecordsDecoded;
        c.gapScan = undefined;
        c.servedBase = -1; // costGap sets it (to our version) when it chooses a diff or a reconciliation, and never reads it
        costGap.call(seq, v);
        const served = c.servedBase !== -1;
        const scanned = c.gapScan !== undefined; // this costing read records (the gap was not too small to cost)
        expect(kept).toEqual({ diffSince: c.diffSince, servedBase: served ? t.reg.version : servedBefore });
        c.servedBase = kept.servedBase;
        if (scanned) {
          // The kept reading's numbers are a scan's: distinct keys (as a Set of them counts),
          // keys written, their octets, over the most recent GAP_COSTING_MAX records of the gap.
          const version = t.reg.version;
          const from = Math.max(v + 1, version - 4096 + 1);
          const keys = new Set<string>();
          let entries = 0;
          let bytes = 0;
          for (let u = from; u <= version; u++) {
            const ks = seq.touchedKeys(u)!;
            for (const k of ks) keys.add(Buffer.from(k).toString('latin1'));
            entries += ks.length;
            bytes += written.get(u) ?? NaN;
          }
          expect(scan!.scan(from)).toEqual({ keys: keys.size, entries, written: bytes });
        }
        c.gapScan = scan; // the next costing goes on from the kept one
        c.gapRecordsDecoded = decoded;
        if (!scanned) outcomes.short++;
        else if (kept.diffSince !== undefined) outcomes.diff++;
        else if (served) outcomes.reconcile++;
        else outcomes.replay++;
      };
      for (let i = 0; i < 12; i++) {
        if (rand(2) === 0) history(rand(40));
        p = Math.min(t.reg.version - 1, p + rand(3) * rand(60));
        t.cycle(p);
      }
      expect(t.costings()).toBe(12);
    }
    // Every path was taken (and gaps too small to cost), so each was compared.
    expect(outcomes.replay).toBeGreaterThan(0);
    expect(outcomes.diff).toBeGreaterThan(0);
    expect(outcomes.reconcile).toBeGreaterThan(0);
    expect(outcomes.short).toBeGreaterThan(0);
  });
});

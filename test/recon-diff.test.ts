/**
 * Catch-up by log diff (docs/PROTOCOL.md §8.2.1, rev 1.12): the wire layout and its limits,
 * the path taken for a gap spread over many keys (under loss, duplication and reordering),
 * and a sequencer whose diff lies: nothing is applied, range reconciliation follows.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { MapState } from '../core/register/map.js';
import { DiffPlan } from '../core/reconcile/diff.js';
import { FrameType, MAX_KEY_LEN, MAX_VALUE_LEN } from '../wire/constants.js';
import { Writer } from '../wire/buffer.js';
import { WireError } from '../wire/errors.js';
import { decodeFrame, encodeFrame } from '../wire/header.js';
import {
  MsgType,
  REQ_WANT_DIFF,
  REQ_WANT_META,
  decodeMessages,
  diffEntryLen,
  encodeMessage,
  type Message,
  type ReconDiffMsg,
} from '../wire/messages.js';
import { writeName } from '../wire/names.js';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';
import { del, enc, expectSeedsClean, harness, peerManifest, proposeNow, set, type Harness } from './helpers.js';

function malformed(payload: Uint8Array, field: string): void {
  let err: unknown;
  try {
    decodeMessages(payload);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(WireError);
  expect((err as WireError).field).toBe(field);
}

/** A ReconDiff body written by hand: header fields, then raw entry octets. */
function diffBody(target: number, since: number, part: number, parts: number, entries: (w: Writer) => void): Uint8Array {
  const body = new Writer();
  writeName(body, 'm');
  body.varint(target).varint(since).varint(part).varint(parts);
  entries(body);
  return new Writer().u8(MsgType.ReconDiff).varint(body.pos).bytes(body.buf.subarray(0, body.pos)).finish();
}

describe('ReconReq WANT_DIFF and ReconDiff: layout and limits', () => {
  it('round-trip, and an entry costs its key and value plus three octets', () => {
    const req: Message = {
      type: MsgType.ReconReq,
      register: 'm',
      targetVersion: 0,
      flags: REQ_WANT_META | REQ_WANT_DIFF,
      prefixes: [],
      diff: { since: 12_345, fromPart: 64 },
    };
    expect(decodeMessages(encodeMessage(req)).messages[0]).toEqual(req);
    const value = new Uint8Array(36).fill(9);
    const diff: ReconDiffMsg = {
      type: MsgType.ReconDiff,
      register: 'm',
      targetVersion: 20_000,
      since: 10_000,
      part: 0,
      parts: 1,
      entries: [
        { key: enc('key-00001'), version: 0, value: undefined },
        { key: enc('key-00002'), version: 10_001, value },
        { key: enc('key-00003'), version: 10_001, value },
        { key: enc('key-00004'), version: 10_002, value },
      ],
    };
    const raw = encodeMessage(diff);
    expect(decodeMessages(raw).messages[0]).toEqual(diff);
    // Yjs pays ~54 octets per touched key of this workload (9-octet key, 36-octet value): a diff entry pays 48.
    expect(diffEntryLen(diff.entries[2], 10_001)).toBe(9 + 36 + 3);
    const bodyEntries = diff.entries.reduce((n, e, i) => n + diffEntryLen(e, i > 1 ? diff.entries[i - 1].version : 10_000), 0);
    expect(bodyEntries).toBe(1 + 9 + 3 * 48);
    // type, length, name, target, since, part, parts: 12 octets of header for this part.
    expect(raw.length - bodyEntries).toBe(12);
  });

  it('names the field at fault', () => {
    const req = (flags: number, tail: (w: Writer) => void): Uint8Array => {
      const body = new Writer();
      writeName(body, 'm');
      body.varint(0).u8(flags);
      tail(body);
      return new Writer().u8(MsgType.ReconReq).varint(body.pos).bytes(body.buf.subarray(0, body.pos)).finish();
    };
    malformed(
      req(0x04, (w) => w.varint(0)),
      'reconReq.flags',
    );
    // A diff request names no prefixes.
    malformed(
      req(REQ_WANT_DIFF, (w) => w.varint(5).varint(0).varint(1).u8(0).u32(0)),
      'reconReq.count',
    );
    malformed(
      req(REQ_WANT_DIFF, (w) => w.varint(5)),
      'reconReq.fromPart',
    );
    // SnapReq and StreamReq keep bit 1 reserved.
    malformed(
      encodeMessage({ type: MsgType.SnapReq, register: 'm', targetVersion: 0, flags: REQ_WANT_DIFF, fromChunk: 0 }),
      'snapReq.flags',
    );

    const ok = (w: Writer): void =>
      void w
        .varint(2 * 3)
        .bytes(enc('abc'))
        .varint(1)
        .varint(1)
        .u8(7);
    expect(decodeMessages(diffBody(10, 5, 0, 1, ok)).messages).toHaveLength(1);
    malformed(diffBody(10, 11, 0, 1, ok), 'reconDiff.since');
    malformed(diffBody(10, 5, 1, 1, ok), 'reconDiff.part');
    malformed(diffBody(10, 5, 0, 0, ok), 'reconDiff.part');
    malformed(diffBody(10, 5, 0, 2 ** 24 + 1, ok), 'reconDiff.part');
    // Versions climb from `since` and stay at or below the pin.
    malformed(
      diffBody(10, 5, 0, 1, (w) =>
        w
          .varint(2 * 3)
          .bytes(enc('abc'))
          .varint(6)
          .varint(0),
      ),
      'reconDiff[0].version',
    );
    malformed(
      diffBody(10, 5, 0, 1, (w) => {
        ok(w);
        w.varint(2 * 3)
          .bytes(enc('abd'))
          .varint(5)
          .varint(0); // 6 + 5 = 11 > 10
      }),
      'reconDiff[1].version',
    );
    malformed(
      diffBody(10, 5, 0, 1, (w) => w.varint(1)),
      'reconDiff[0].key',
    ); // a deletion of an empty key
    malformed(
      diffBody(10, 5, 0, 1, (w) => w.varint(2 * (MAX_KEY_LEN + 1))),
      'reconDiff[0].key',
    );
    malformed(
      diffBody(10, 5, 0, 1, (w) => w.varint(2 * 3).bytes(enc('ab'))),
      'reconDiff[0].key',
    ); // truncated key
    malformed(
      diffBody(10, 5, 0, 1, (w) =>
        w
          .varint(2 * 3)
          .bytes(enc('abc'))
          .varint(1)
          .varint(MAX_VALUE_LEN + 1),
      ),
      'reconDiff[0].value',
    );
    malformed(
      diffBody(10, 5, 0, 1, (w) =>
        w
          .varint(2 * 3)
          .bytes(enc('abc'))
          .varint(1)
          .varint(4)
          .u8(1),
      ),
      'reconDiff[0].value',
    );
  });
});

const N = 3000;
const regs = (): RegisterSpec[] => [{ name: 'kv', kind: 'map', log: { maxRecords: 100_000, maxBytes: 1 << 26 } }];

function preload(h: Harness): void {
  for (const ep of [h.a, h.b])
    ep.pair.register('kv').restore(1, (st) => {
      for (let i = 0; i < N; i++) (st as MapState).put(enc(`key-${i}`), enc(`initial-value-${i}-${'x'.repeat(i % 30)}`), 1);
    });
}

/** Entries of both ends' kv, as comparable strings. */
function contents(h: Harness): [string[], string[]] {
  return [h.a, h.b].map((ep) =>
    [...(ep.pair.register('kv').state as MapState).values()]
      .map((e) => `${Buffer.from(e.key).toString()}=${Buffer.from(e.value).toString('hex')}@${e.version}`)
      .sort(),
  ) as [string[], string[]];
}

/** Cut the pair past the silence timeout, make `k` writes spread over 1,000 keys at the sequencer (a few at the follower), heal. */
function gap(h: Harness, k: number, seed: number): void {
  h.cut();
  h.world.run(h.world.now + 6_000);
  for (let i = 0; i < k; i++) {
    const key = `key-${(i * 7919 + seed * 31) % 1000}`;
    // Deletions and keys created in the gap too: the diff carries them as deletions and new entries.
    if (i % 50 === 0) proposeNow(h, h.a, 'kv', del(key));
    else proposeNow(h, h.a, 'kv', set(i % 40 === 1 ? `new-${i}` : key, `gap-${seed}-${i}`));
  }
  for (let i = 0; i < 5; i++) proposeNow(h, h.b, 'kv', set(`mine-${i}`, `b-${i}`));
  h.heal();
}

describe('catch-up by log diff in the simulator', () => {
  for (const [name, faults] of [
    ['a clean link', {}],
    ['loss, duplication and reordering', { loss: 0.1, dup: 0.05, reorder: 0.2 }],
  ] as const) {
    it(`a gap spread over many keys is caught up by diff, identically, over ${name}`, () => {
      for (const seed of [1, 2, 3]) {
        const h = harness(regs(), faults, seed);
        preload(h);
        expect(h.settle()).toBe(true);
        const responder = h.a.pair.register('kv').sequencer!.responder;
        const diffs = responder.diffsBuilt;
        gap(h, 1500, seed);
        const before = h.world.net.stats.bytesSent;
        const logBytes = h.a.pair.register('kv').log.sizeBytes;
        expect(h.settle(120_000)).toBe(true);
        const spent = h.world.net.stats.bytesSent - before;
        const [a, b] = contents(h);
        expect(b).toEqual(a);
        expect(a.some((e) => e.startsWith('mine-4='))).toBe(true); // the follower's own writes, proposed after adopting
        expect(responder.diffsBuilt - diffs).toBeGreaterThanOrEqual(1);
        expect(h.b.pair.stats.drops['diff-mismatch']).toBeUndefined();
        expect(h.b.pair.stats.fullTransfers).toBe(0);
        if (Object.keys(faults).length === 0) expect(spent).toBeLessThan(logBytes * 0.8);
      }
    });
  }

  it('a diff is served from any base within the costed gap: the follower may apply records it held after the costed Status', () => {
    // Seen in `bench link`: a follower resumed after SIGSTOP applies the records waiting in its socket, with a
    // Status every 16 versions; the sequencer costs the first, the diff is asked for from a later version.
    const h = harness(regs(), {}, 4);
    preload(h);
    expect(h.settle()).toBe(true);
    const vF = h.b.pair.register('kv').version;
    const sq = h.a.pair.register('kv').sequencer!;
    const built = sq.responder.diffsBuilt;
    gap(h, 1500, 4);
    // While the follower catches up (once it is at the head, the log is compacted below it).
    expect(h.world.run(h.world.now + 60_000, () => sq.responder.diffsBuilt > built, 1)).toBe(true);
    expect(sq.diffFrom(vF)).toBe(true);
    expect(sq.diffFrom(vF + 700)).toBe(true);
    expect(sq.diffFrom(vF - 1)).toBe(false); // below the costed gap: not what was costed
    expect(sq.diffFrom(h.a.pair.register('kv').version + 1)).toBe(false);
    expect(h.settle(120_000)).toBe(true);
  });

  it('a short gap still replays (no diff), and a gap over few keys written often is a diff of those keys', () => {
    const h = harness(regs(), {}, 7);
    preload(h);
    expect(h.settle()).toBe(true);
    const responder = h.a.pair.register('kv').sequencer!.responder;
    const pins = responder.pinsBuilt;
    gap(h, 20, 7);
    expect(h.settle(120_000)).toBe(true);
    expect(responder.diffsBuilt).toBe(0);
    expect(responder.pinsBuilt).toBe(pins);
    // 400 writes over 10 keys: replay resends 40 versions of each.
    h.cut();
    h.world.run(h.world.now + 6_000);
    for (let i = 0; i < 400; i++) proposeNow(h, h.a, 'kv', set(`key-${i % 10}`, `hot-${i}`));
    h.heal();
    const before = h.world.net.stats.bytesSent;
    expect(h.settle(120_000)).toBe(true);
    expect(h.world.net.stats.bytesSent - before).toBeLessThan(2000);
    expect(responder.diffsBuilt).toBe(1);
    const [a, b] = contents(h);
    expect(b).toEqual(a);
  });
});

describe('a sequencer whose diff lies', () => {
  type Lie = (m: ReconDiffMsg) => ReconDiffMsg;
  const lies: [string, Lie][] = [
    ['a value changed', (m) => ({ ...m, entries: m.entries.map((e, i) => (i === 0 && e.value ? { ...e, value: enc('forged') } : e)) })],
    ['an entry left out', (m) => ({ ...m, entries: m.entries.slice(1) })],
    [
      'a key named twice',
      (m) => {
        const last = m.entries[m.entries.length - 1];
        return { ...m, entries: m.part === 1 ? [...m.entries, { ...last, key: m.entries[0].key }] : m.entries };
      },
    ],
    ['a part count that changes', (m) => ({ ...m, parts: m.part === 2 ? m.parts + 1 : m.parts })],
    ['an empty part', (m) => ({ ...m, entries: m.part === 1 ? [] : m.entries })],
  ];
  for (const [name, lie] of lies) {
    it(`${name}: nothing applied, range reconciliation follows, the pair converges`, () => {
      const h = harness(regs(), { reorder: 0.1 }, 11);
      preload(h);
      expect(h.settle()).toBe(true);
      const seq = h.a.pair.register('kv').sequencer!;
      const respond = seq.respond.bind(seq);
      let lied = 0;
      seq.respond = (now, m) => {
        if (m.type === MsgType.ReconDiff) {
          lied++;
          m = lie(m);
        }
        respond(now, m);
      };
      gap(h, 1500, 11);
      // Until the follower verified a result, its state is the one before the gap.
      const rb = h.b.pair.register('kv');
      const was = { v: rb.version, hi: rb.hash.hi, lo: rb.hash.lo };
      let installedAt: number | undefined;
      h.world.run(h.world.now + 120_000, () => {
        if (rb.version !== was.v && installedAt === undefined) installedAt = h.world.now;
        if (rb.version === was.v) expect([rb.hash.hi, rb.hash.lo]).toEqual([was.hi, was.lo]);
        return h.aligned();
      });
      expect(h.aligned()).toBe(true);
      expect(lied).toBeGreaterThan(0);
      expect(h.b.pair.stats.drops['diff-mismatch']).toBeGreaterThanOrEqual(1);
      const [a, b] = contents(h);
      expect(b).toEqual(a);
    });
  }

  it('diff parts for another pin or another base are ignored; a part count beyond what could be true is refused', () => {
    // A bare follower, driven by hand: behind an unfillable gap, it asks for a diff.
    const spec = regs();
    const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: spec }, 0);
    b.register('kv').restore(1, (st) => {
      for (let i = 0; i < 10; i++) (st as MapState).put(enc(`key-${i}`), enc(`v${i}`), 1);
    });
    let pn = 0;
    const feed = (now: number, ...ms: (Message | Uint8Array)[]): Message[] => {
      const payload = ms.map((m) => (m instanceof Uint8Array ? m : encodeMessage(m)));
      const all = new Uint8Array(payload.reduce((n, p) => n + p.length, 0));
      payload.reduce((off, p) => (all.set(p, off), off + p.length), 0);
      b.handleDatagram(now, encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn++ }, all));
      const out: Message[] = [];
      for (let d = b.pollTransmit(now); d; d = b.pollTransmit(now))
        out.push(...decodeMessages(decodeFrame(d, () => true).payload).messages);
      return out;
    };
    const rb = b.register('kv');
    const hash = { hi: rb.hash.hi, lo: rb.hash.lo };
    const status = {
      type: MsgType.Status,
      register: 'kv',
      version: 500,
      hash: { hi: 1, lo: 2 },
      logBase: 500,
      resolvedSeq: 0,
      held: [],
    } as const;
    const out = feed(1, peerManifest(spec), status);
    const req = out.find((m) => m.type === MsgType.ReconReq);
    expect(req).toMatchObject({ diff: { since: 1, fromPart: 0 }, flags: REQ_WANT_META | REQ_WANT_DIFF, prefixes: [] });
    const meta = {
      type: MsgType.ReconMeta,
      register: 'kv',
      targetVersion: 500,
      hash: { hi: 3, lo: 4 },
      size: 10,
      origins: [],
      rejections: [],
    } as const;
    const part = (over: Partial<ReconDiffMsg>): ReconDiffMsg => ({
      type: MsgType.ReconDiff,
      register: 'kv',
      targetVersion: 500,
      since: 1,
      part: 0,
      parts: 2,
      entries: [{ key: enc('key-1'), version: 400, value: enc('w') }],
      ...over,
    });
    feed(2, meta, part({ targetVersion: 499 }), part({ since: 0 }));
    expect(b.stats.drops['diff-mismatch']).toBeUndefined();
    // Parts 0 and 1 of the right pin: the (forged) result does not verify, nothing is applied.
    const after = feed(3, part({}), part({ part: 1, entries: [{ key: enc('key-2'), version: 0, value: undefined }] }));
    expect(b.stats.drops['diff-mismatch']).toBe(1);
    expect([rb.version, rb.hash.hi, rb.hash.lo]).toEqual([1, hash.hi, hash.lo]);
    // It starts over by ranges: a request for the root, no diff.
    expect(after.find((m) => m.type === MsgType.ReconReq)).toMatchObject({ prefixes: [{ depth: 0, prefix: 0 }] });

    // A fresh follower (at v0) told of a diff of more parts than its quota's keys and its own entries could fill.
    const c = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: [{ ...spec[0], quota: { maxKeys: 100 } }] }, 0);
    let cpn = 0;
    const cfeed = (now: number, ...ms: (Message | Uint8Array)[]): void => {
      for (const m of ms)
        c.handleDatagram(
          now,
          encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: cpn++ }, m instanceof Uint8Array ? m : encodeMessage(m)),
        );
      while (c.pollTransmit(now));
    };
    cfeed(1, peerManifest([{ ...spec[0], quota: { maxKeys: 100 } }]), status);
    cfeed(2, meta, part({ since: 0, parts: 1_000_000 }));
    expect(c.stats.drops['diff-mismatch']).toBe(1);
  });
});

describe('a follower asking for diffs', () => {
  it('a diff the costing did not choose is answered as a request for the root, and builds nothing', () => {
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: regs() }, 0);
    let pn = 0;
    const sent = (now: number, m: Message): Message[] => {
      seq.handleDatagram(now, encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn++ }, encodeMessage(m)));
      const out: Message[] = [];
      for (let d = seq.pollTransmit(now); d; d = seq.pollTransmit(now))
        out.push(...decodeMessages(decodeFrame(d, () => true).payload).messages);
      return out;
    };
    sent(0, { type: MsgType.Status, register: 'kv', version: 0, hash: { hi: 0, lo: 0 }, logBase: 0, resolvedSeq: 0, held: [] });
    for (let i = 0; i < 2000; i++) {
      seq.propose(i, 'kv', set(`k${i % 100}`, `v${i}`));
      seq.collapse(i);
    }
    // Any base, however far back, repeatedly: the responder answers with the root node and decodes no log.
    let nodes = 0;
    for (let i = 0; i < 50; i++) {
      const out = sent(3000 + i, {
        type: MsgType.ReconReq,
        register: 'kv',
        targetVersion: 0,
        flags: REQ_WANT_META | REQ_WANT_DIFF,
        prefixes: [],
        diff: { since: i, fromPart: 0 },
      });
      nodes += out.filter((m) => m.type === MsgType.ReconNode && m.depth === 0).length;
      expect(out.some((m) => m.type === MsgType.ReconDiff)).toBe(false);
    }
    expect(nodes).toBe(50);
    expect(seq.register('kv').sequencer!.responder.diffsBuilt).toBe(0);
  });
});

describe('building a diff (DiffPlan)', () => {
  /** A map written at versions 1..200 (key-(v % 50) at v; `extra` made at 1, deleted at 150), pinned at 200. */
  function pinned(): { state: MapState; index: ReturnType<MapState['snapshot']>; log: Map<number, Uint8Array[]> } {
    const state = new MapState(5);
    const log = new Map<number, Uint8Array[]>();
    for (let v = 1; v <= 200; v++) {
      const key = v === 1 || v === 150 ? enc('extra') : enc(`key-${v % 50}`);
      if (v === 150) state.remove(key);
      else state.put(key, enc(`value-${v}`), v);
      log.set(v, [key]);
    }
    return { state, index: state.snapshot(200), log };
  }

  it('reads the gap a bounded slice per call, then lists deletions first and versions ascending, each key once', () => {
    const { state, index, log } = pinned();
    const plan = new DiffPlan(120, 200, index, 300);
    let calls = 0;
    let slices = 0;
    while (!plan.parts && !plan.failed) {
      const before = calls;
      plan.advance(
        20,
        (v) => (calls++, log.get(v)),
        (k) => state.keyHashOf(k),
      );
      expect(calls - before).toBeLessThanOrEqual(10); // 20 units: a key and a record each
      slices++;
    }
    expect(slices).toBeGreaterThanOrEqual(8);
    expect(calls).toBe(80);
    const entries = plan.parts!.flat();
    expect(entries[0]).toMatchObject({ value: undefined });
    expect(new TextDecoder().decode(entries[0].key)).toBe('extra');
    const versions = entries.slice(1).map((e) => e.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(entries.length).toBe(51); // the 50 keys written in (120, 200], and `extra` deleted
    expect(new Set(entries.map((e) => new TextDecoder().decode(e.key))).size).toBe(51);
    // Each at its version at the pin: its last write.
    for (const e of entries.slice(1)) expect(new TextDecoder().decode(e.value)).toBe(`value-${e.version}`);
    for (const p of plan.parts!) {
      let prev = 120;
      const len = p.reduce((n, e) => {
        const l = diffEntryLen(e, prev);
        if (e.value) prev = e.version;
        return n + l;
      }, 0);
      expect(len).toBeLessThanOrEqual(300);
    }
  });

  it('a record gone from the log (compacted under its bound) leaves no diff', () => {
    const { state, index, log } = pinned();
    log.delete(170);
    const plan = new DiffPlan(120, 200, index, 300);
    plan.advance(
      1_000_000,
      (v) => log.get(v),
      (k) => state.keyHashOf(k),
    );
    expect(plan.failed).toBe(true);
    expect(plan.parts).toBeUndefined();
  });
});

describe('the diff path in the seeded simulator', () => {
  // Long workloads over the simulator's 12 keys: gaps after cuts and crashes rewrite keys, so
  // the sequencer chooses the diff in some seeds (counted since each endpoint's last restart).
  it('150 seeds with cuts, crashes, txns and cross-register txns converge with nothing lost; some catch up by diff', () => {
    let diffs = 0;
    const s = runSeeds(
      150,
      90_000,
      { ...SIM_DEFAULTS, cuts: true, crashes: true, ops: 300, logRecords: 4096, txn: 0.2, cross: 0.1 },
      (r) => {
        diffs += r.diffs;
      },
    );
    expectSeedsClean(s, 150);
    expect(s.diverged).toBe(0);
    expect(diffs).toBeGreaterThan(5);
  }, 300_000);
});

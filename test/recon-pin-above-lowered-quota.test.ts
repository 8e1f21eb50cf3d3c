/**
 * An honest follower whose register is above its quota (lowered across a restart: kept, growth
 * refused, §7.8) re-entangles when the sequencer's stream does not grow it. The install check
 * allowed what the register holds (rev 1.29 fix, review 2026-12-07), but the ReconMeta and the
 * StreamData (a map's SnapChunk count) were still held against the quota alone: a pin of the
 * stream the follower already holds, or of a map of as many keys, was refused, counted as a quota
 * violation, and the register never re-entangled.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { childrenOf } from '../core/register/keyspace.js';
import { MapState } from '../core/register/map.js';
import { StreamState } from '../core/register/stream.js';
import { MsgType, encodeMessage, type Message, type WireEntry } from '../wire/messages.js';
import { concatBytes, enc, mapFollower, peerManifest, sentMessages } from './helpers.js';

/** A follower of one stream register `s` (quota maxBytes 100) holding `own` at v1. */
function streamFollower(own: Uint8Array) {
  const regs = [{ name: 's', kind: 'stream' as const, quota: { maxBytes: 100, maxValueBytes: 8 } }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  f.register('s').restore(1, (st) => (st as StreamState).appendBytes(own.slice()));
  let pn = 1;
  let t = 1;
  const feed = (...ms: Message[]): Message[] => {
    f.handlePayload(t, pn++, concatBytes(ms.map((m) => encodeMessage(m))));
    t += 1;
    return sentMessages(f, t);
  };
  f.handlePayload(t, pn++, peerManifest(regs));
  return { f, feed };
}

const bytes = (n: number, k: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * k) & 0xff);

describe('re-entanglement of a register above a lowered quota', () => {
  it('a pin of the stream it holds (200 octets, quota 100) installs', () => {
    const own = bytes(200, 7);
    const { f, feed } = streamFollower(own);
    const pin = new StreamState(f.register('s').state.seed);
    pin.appendBytes(own.slice());
    const out = feed({ type: MsgType.Status, register: 's', version: 2, hash: pin.hash, logBase: 2, resolvedSeq: 0, held: [] });
    expect(out.filter((m) => m.type === MsgType.StreamReq)).toHaveLength(1);
    feed({ type: MsgType.ReconMeta, register: 's', targetVersion: 2, hash: pin.hash, size: 200, origins: [], rejections: [] });
    expect(f.stats.drops['quota-violation'] ?? 0).toBe(0);
    expect(f.register('s').version).toBe(2);
  });

  it('a full transfer of a stream no longer than it holds (150 of 200 octets, quota 100) installs', () => {
    const own = bytes(200, 7);
    const { f, feed } = streamFollower(own);
    // The sequencer lost its tail and its stream differs from ours: not a prefix, full transfer.
    const theirs = bytes(150, 11);
    const pin = new StreamState(f.register('s').state.seed);
    pin.appendBytes(theirs.slice());
    feed({ type: MsgType.Status, register: 's', version: 3, hash: pin.hash, logBase: 3, resolvedSeq: 0, held: [] });
    let out = feed({ type: MsgType.ReconMeta, register: 's', targetVersion: 3, hash: pin.hash, size: 150, origins: [], rejections: [] });
    // Our stream is longer than the pin: a full transfer from offset 0 follows.
    for (let i = 0; i < 3 && !out.some((m) => m.type === MsgType.StreamReq && m.offset === 0); i++)
      out = feed({ type: MsgType.Status, register: 's', version: 3, hash: pin.hash, logBase: 3, resolvedSeq: 0, held: [] });
    feed(
      { type: MsgType.ReconMeta, register: 's', targetVersion: 3, hash: pin.hash, size: 150, origins: [], rejections: [] },
      { type: MsgType.StreamData, register: 's', targetVersion: 3, offset: 0, data: theirs.slice(0, 100) },
      { type: MsgType.StreamData, register: 's', targetVersion: 3, offset: 100, data: theirs.slice(100) },
    );
    expect(f.stats.drops['quota-violation'] ?? 0).toBe(0);
    expect(f.register('s').version).toBe(3);
    expect(f.register('s').state.size()).toBe(150);
  });

  it('a map pin of as many keys as it holds (8, maxKeys lowered to 4) installs', () => {
    const entry = (k: string, v: string, version = 1): WireEntry => ({ key: enc(k), version, value: enc(v) });
    const own = Array.from({ length: 8 }, (_, i) => entry(`k${i}`, 'v'));
    const { f, feed } = mapFollower({ maxKeys: 4 }, own);
    const theirs = own.map((e, i) => (i === 0 ? entry('k0', 'w', 2) : e));
    const result = new MapState(5);
    for (const e of theirs) result.put(e.key, e.value, e.version);
    feed({ type: MsgType.Status, register: 'kv', version: 1, hash: { hi: 7, lo: 7 }, logBase: 0, resolvedSeq: 0, held: [] });
    const req = feed(
      { type: MsgType.ReconMeta, register: 'kv', targetVersion: 2, hash: result.hash, size: 8, origins: [], rejections: [] },
      { type: MsgType.ReconNode, register: 'kv', targetVersion: 2, depth: 0, prefix: 0, children: childrenOf(result.snapshot(2), 0, 0) },
    ).filter((m): m is Extract<Message, { type: MsgType.ReconReq }> => m.type === MsgType.ReconReq);
    expect(f.stats.drops['quota-violation'] ?? 0).toBe(0);
    expect(req[0].prefixes).toHaveLength(1);
    const p = req[0].prefixes[0];
    const under = theirs.filter((e) => result.keyHashOf(e.key) >>> 28 === p.prefix);
    feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: 2, depth: 1, prefix: p.prefix, part: 0, parts: 1, entries: under });
    expect(f.stats.drops['quota-violation'] ?? 0).toBe(0);
    expect(f.register('kv').version).toBe(2);
  });
});

/**
 * Review 39, suspicion 1: entry versions in reconciliation answers were never checked. A sequencer
 * could install, at a follower, a present key of version 0 (which every cas reads as absent) or
 * one past the pin's version (2^53 − 1: later than any version the register will ever reach).
 * Both are malformed now (PROTOCOL.md §3.6.9, §3.6.12, §3.6.16, rev 1.34): the payload is dropped
 * and nothing is installed. The sequencer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { MapState } from '../core/register/map.js';
import { decodeFrame } from '../wire/header.js';
import { WireError } from '../wire/errors.js';
import { MsgType, decodeMessages, encodeMessage, type Message, type WireEntry } from '../wire/messages.js';
import { peerManifest } from './helpers.js';

const PIN = 5;
const enc = new TextEncoder();

/** A follower of one empty map `r` at v0 that has started reconciling. */
function follower() {
  const regs = [{ name: 'r', kind: 'map' as const }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  let pn = 1;
  const feed = (...ms: Message[]): Message[] => {
    f.handlePayload(1, pn++, Uint8Array.from(ms.flatMap((m) => [...encodeMessage(m)])));
    const out: Message[] = [];
    for (let d = f.pollTransmit(1); d; d = f.pollTransmit(1)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
    return out;
  };
  f.handlePayload(1, pn++, peerManifest(regs));
  feed({ type: MsgType.Status, register: 'r', version: 0, hash: { hi: 1, lo: 2 }, logBase: 0, resolvedSeq: 0, held: [] });
  return { f, feed };
}

/** The ReconMeta of a pin at PIN holding exactly `entries` (so the result verifies). */
function metaOf(f: HalfPair, entries: WireEntry[]): Message {
  const m = new MapState((f.register('r').state as MapState).seed);
  for (const e of entries) m.put(e.key, e.value, e.version);
  return { type: MsgType.ReconMeta, register: 'r', targetVersion: PIN, hash: m.hash, size: entries.length, origins: [], rejections: [] };
}

const bad: [string, number][] = [
  ['0', 0],
  ['past the pin', PIN + 1],
  ['2^53 - 1', Number.MAX_SAFE_INTEGER],
];

describe('reconciliation entry versions', () => {
  for (const [name, version] of bad) {
    it(`a ReconEntries entry of version ${name} is refused, nothing installed`, () => {
      const { f, feed } = follower();
      const entries = [
        { key: enc.encode('a'), version: 3, value: enc.encode('x') },
        { key: enc.encode('b'), version, value: enc.encode('y') },
      ];
      feed(metaOf(f, entries));
      feed({ type: MsgType.ReconEntries, register: 'r', targetVersion: PIN, depth: 0, prefix: 0, part: 0, parts: 1, entries });
      // Before the fix: installed at v5, 'b' present at version 0 (or past the register's own version).
      expect(f.register('r').version).toBe(0);
      expect((f.register('r').state as MapState).size()).toBe(0);
      expect(f.stats.drops['malformed-payload']).toBeGreaterThanOrEqual(1);
    });

    it(`a SnapChunk entry of version ${name} is malformed`, () => {
      const raw = encodeMessage({
        type: MsgType.SnapChunk,
        register: 'r',
        targetVersion: PIN,
        chunk: 0,
        chunks: 1,
        entries: [{ key: enc.encode('b'), version, value: enc.encode('y') }],
      });
      expect(() => decodeMessages(raw)).toThrow(WireError);
    });
  }

  it('a diff entry at `since` (a delta of 0 first, here version 0) is malformed', () => {
    const diff = (since: number, versions: number[]) =>
      encodeMessage({
        type: MsgType.ReconDiff,
        register: 'r',
        targetVersion: PIN,
        since,
        part: 0,
        parts: 1,
        entries: versions.map((v, i) => ({ key: enc.encode(`k${i}`), version: v, value: enc.encode('v') })),
      });
    expect(() => decodeMessages(diff(0, [0]))).toThrow(WireError);
    expect(() => decodeMessages(diff(3, [3]))).toThrow(WireError);
    // Two keys of one collapse share its version: a later delta of 0 is sound.
    expect(decodeMessages(diff(3, [4, 4, 5])).messages).toHaveLength(1);
    expect(decodeMessages(diff(0, [1])).messages).toHaveLength(1);
  });

  it('sound entries still install', () => {
    const { f, feed } = follower();
    const entries = [
      { key: enc.encode('a'), version: 1, value: enc.encode('x') },
      { key: enc.encode('b'), version: PIN, value: enc.encode('y') },
    ];
    feed(metaOf(f, entries));
    feed({ type: MsgType.ReconEntries, register: 'r', targetVersion: PIN, depth: 0, prefix: 0, part: 0, parts: 1, entries });
    expect(f.register('r').version).toBe(PIN);
    expect((f.register('r').state as MapState).versionOf(enc.encode('b'))).toBe(PIN);
  });
});

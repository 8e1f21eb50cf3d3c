/**
 * Review 39m-1 (hostile sequencer, range reconciliation): a follower verifies the staged result
 * as `own hash − Σ deletions + Σ insertions` and `own size − deletions + insertions` (§8.2
 * "Finish"), but nothing checks that a ReconEntries set's entries lie under the prefix it answers,
 * nor that a key is staged once. A key sent twice (in two prefixes, or twice in one set), or a key
 * outside the prefix that overwrites an own entry not staged for deletion, is counted twice by the
 * check and once by the install: the follower adopts the pin's version with a state whose hash and
 * size are not the ReconMeta's (a state no version of the sequencer ever had). PROTOCOL.md §8.2:
 * "Nothing is applied to the follower's state until the result is verified against the pin's hash."
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { Hash64 } from '../core/register/hash.js';
import type { MapState } from '../core/register/map.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages, encodeMessage, type Message, type Prefix, type WireEntry } from '../wire/messages.js';
import { peerManifest, concatBytes, enc } from './helpers.js';

type ReconReq = Extract<Message, { type: MsgType.ReconReq }>;
const T = 5;
const same = { count: 0, hash: { hi: 0, lo: 0 } };

function session() {
  const regs = [{ name: 'kv', kind: 'map' as const }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  let pn = 1;
  const now = 1;
  const asked = (): Prefix[] => {
    const out: Message[] = [];
    for (let d = f.pollTransmit(now); d; d = f.pollTransmit(now)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
    return out.filter((m): m is ReconReq => m.type === MsgType.ReconReq).flatMap((r) => r.prefixes);
  };
  const feed = (...ms: Message[]): void => void f.handlePayload(now, pn++, concatBytes(ms.map((m) => encodeMessage(m))));
  f.handlePayload(now, pn++, peerManifest(regs));
  const st = () => f.register('kv').state as MapState;
  /** The multiset hash the follower's check computes for these entries added to an empty map. */
  const sumOf = (es: WireEntry[]) => {
    const h = new Hash64();
    for (const e of es) {
      const x = st().entryOf(e.key, e.value, e.version);
      h.add(x.hhi, x.hlo);
    }
    return { hi: h.hi, lo: h.lo };
  };
  return { f, feed, asked, st, sumOf };
}

describe('a range reconciliation installs only the pin it verified', () => {
  it('a key answered under two prefixes (two buckets) is refused, or the install equals the ReconMeta', () => {
    const s = session();
    const a1: WireEntry = { key: enc('a'), value: enc('one'), version: 1 };
    const a2: WireEntry = { key: enc('a'), value: enc('two'), version: 2 };
    // The lie: a pin of two entries, both for key "a".
    const hash = s.sumOf([a1, a2]);
    s.feed({ type: MsgType.Status, register: 'kv', version: 0, hash, logBase: 0, resolvedSeq: 0, held: [] });
    expect(s.asked()).toEqual([{ depth: 0, prefix: 0 }]);
    s.feed({ type: MsgType.ReconMeta, register: 'kv', targetVersion: T, hash, size: 2, origins: [], rejections: [] });
    const children = Array.from({ length: 16 }, (_, i) => (i < 2 ? { count: 1, hash: { hi: 9, lo: i } } : same));
    s.feed({ type: MsgType.ReconNode, register: 'kv', targetVersion: T, depth: 0, prefix: 0, children });
    expect(s.asked()).toEqual([
      { depth: 1, prefix: 0 },
      { depth: 1, prefix: 1 },
    ]);
    // "a" hashes into at most one of them; it is sent under both.
    s.feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: T, depth: 1, prefix: 0, part: 0, parts: 1, entries: [a1] });
    s.feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: T, depth: 1, prefix: 1, part: 0, parts: 1, entries: [a2] });
    const r = s.f.register('kv');
    if (r.version === T) {
      // Installed: it must be the state the ReconMeta announced.
      expect(s.st().size()).toBe(2);
      expect({ hi: r.hash.hi, lo: r.hash.lo }).toEqual(hash);
    } else expect(r.version).toBe(0);
  });

  it('a key twice in one ReconEntries set is refused, or the install equals the ReconMeta', () => {
    const s = session();
    const es: WireEntry[] = [
      { key: enc('k'), value: enc('x'), version: 3 },
      { key: enc('k'), value: enc('y'), version: 4 },
    ];
    const hash = s.sumOf(es);
    s.feed({ type: MsgType.Status, register: 'kv', version: 0, hash, logBase: 0, resolvedSeq: 0, held: [] });
    expect(s.asked()).toEqual([{ depth: 0, prefix: 0 }]);
    s.feed({ type: MsgType.ReconMeta, register: 'kv', targetVersion: T, hash, size: 2, origins: [], rejections: [] });
    s.feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: T, depth: 0, prefix: 0, part: 0, parts: 1, entries: es });
    const r = s.f.register('kv');
    if (r.version === T) {
      expect(s.st().size()).toBe(2);
      expect({ hi: r.hash.hi, lo: r.hash.lo }).toEqual(hash);
    } else expect(r.version).toBe(0);
  });
});

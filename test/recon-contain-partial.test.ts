/**
 * Incomplete ReconEntries sets are held to one bound with what holding them costs (PROTOCOL.md
 * §7.8, §8.2, rev 1.29): the set and a slot per part it announces count beside its entries'
 * octets, and a set above the leaf depth may announce at most RECON_LEAF_MAX parts. Found in a
 * hostile review: only entry octets counted, so a sequencer that answered each of 65,536 prefixes
 * with part 0 (empty) of a 4,096-part set made the follower hold 2.1 GB with 0 octets counted.
 * The sequencer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages, encodeMessage, type Message, type Prefix } from '../wire/messages.js';
import { peerManifest, concatBytes } from './helpers.js';

type ReconReq = Extract<Message, { type: MsgType.ReconReq }>;

const T = 5;
const differ = (i: number) => ({ count: 100 + i, hash: { hi: 3, lo: 4 + i } });
const same = { count: 0, hash: { hi: 0, lo: 0 } };
/** Part `part` of `parts` of register kv's entries under prefix `p`, with no entries. */
const emptyPart = (p: Prefix, part: number, parts: number): Message => ({
  type: MsgType.ReconEntries,
  register: 'kv',
  targetVersion: T,
  depth: p.depth,
  prefix: p.prefix,
  part,
  parts,
  entries: [],
});

/** A follower (empty map, maxValueBytes 1: the bound is 1 MiB and 8 octets) reconciling against a pin of 10^6 keys. */
function session() {
  const regs = [{ name: 'kv', kind: 'map' as const, quota: { maxValueBytes: 1 } }];
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
  feed({ type: MsgType.Status, register: 'kv', version: 0, hash: { hi: 1, lo: 2 }, logBase: 0, resolvedSeq: 0, held: [] });
  expect(asked()).toEqual([{ depth: 0, prefix: 0 }]);
  feed({ type: MsgType.ReconMeta, register: 'kv', targetVersion: T, hash: { hi: 1, lo: 2 }, size: 1_000_000, origins: [], rejections: [] });
  /** Answer each prefix with a node whose first `wide(depth)` children differ; the prefixes then asked for. */
  const descend = (prefixes: Prefix[], wide: (depth: number) => number): Prefix[] => {
    for (const p of prefixes) {
      const children = Array.from({ length: 16 }, (_, i) => (i < wide(p.depth) ? differ(i) : same));
      feed({ type: MsgType.ReconNode, register: 'kv', targetVersion: T, depth: p.depth, prefix: p.prefix, children });
    }
    return asked();
  };
  const requester = () =>
    f.register('kv').follower!.requester as unknown as { parts: Map<string, { parts: unknown[] } | unknown[]>; partialBytes: number };
  /** Slots of the incomplete sets held (each set's announced part count). */
  const slots = (): number => {
    let n = 0;
    for (const s of requester().parts.values()) n += Array.isArray(s) ? s.length : s.parts.length;
    return n;
  };
  return { f, feed, descend, slots, requester };
}

describe('incomplete ReconEntries sets', () => {
  it('a set of 4,096 parts above the leaf depth is refused and counted; nothing is held for it', () => {
    const s = session();
    const asked = s.descend([{ depth: 0, prefix: 0 }], () => 16);
    expect(asked).toHaveLength(16);
    for (const p of asked) s.feed(emptyPart(p, 0, 4096));
    // Before the fix: 16 sets of 4,096 slots held, 0 octets counted.
    expect(s.slots()).toBe(0);
    expect(s.f.stats.drops['quota-violation']).toBe(16);
  });

  it('at the leaf depth, the slots sets announce count toward the bound: the sets held stay within it', () => {
    const s = session();
    // One differing child down to depth 6, three there, and all 16 at depth 7: 48 leaves (depth 8) asked for.
    let asked: Prefix[] = [{ depth: 0, prefix: 0 }];
    for (let d = 0; d < 8; d++) asked = s.descend(asked, (depth) => (depth === 7 ? 16 : depth === 6 ? 3 : 1));
    expect(asked).toHaveLength(48);
    expect(asked.every((p) => p.depth === 8)).toBe(true);
    for (const p of asked) s.feed(emptyPart(p, 0, 4096));
    // 1 MiB + 8 octets of bound, 8 per slot: fewer than 129 sets' worth of 4,096 slots... and 48 sets would be 1.5 MiB.
    // Before the fix: 48 sets, 196,608 slots held, 0 counted.
    const bound = (1 << 20) + 8;
    expect(s.slots() * 8).toBeLessThanOrEqual(bound);
    expect(s.requester().partialBytes).toBeLessThanOrEqual(bound);
    expect(s.f.stats.drops['quota-violation']).toBeGreaterThanOrEqual(1);
    // A set that completes is taken as usual: the bound is on what waits, not on what arrives.
    const p = asked[asked.length - 1];
    s.feed(emptyPart(p, 0, 2));
    s.feed(emptyPart(p, 1, 2));
    expect(s.requester().parts.has(`${p.depth}:${p.prefix}`)).toBe(false);
  });

  it('a set for a prefix not asked for is dropped, and a node answer forgets the partial set of its prefix', () => {
    const s = session();
    const asked = s.descend([{ depth: 0, prefix: 0 }], () => 2);
    expect(asked).toEqual([
      { depth: 1, prefix: 0 },
      { depth: 1, prefix: 1 },
    ]);
    s.feed(emptyPart({ depth: 1, prefix: 5 }, 0, 2));
    expect(s.slots()).toBe(0);
    s.feed(emptyPart({ depth: 1, prefix: 0 }, 0, 2));
    expect(s.slots()).toBe(2);
    expect(s.requester().partialBytes).toBeGreaterThan(0);
    s.descend([{ depth: 1, prefix: 0 }], () => 0);
    expect(s.slots()).toBe(0);
    expect(s.requester().partialBytes).toBe(0);
  });
});

/**
 * A reconciliation's result is held to the register's quota before it is installed (PROTOCOL.md
 * §7.8, §8.2, rev 1.29), whatever the sequencer claims. Found in a hostile review: the requester
 * checked the ReconMeta's size and counted what each session received, never what the follower
 * would end up holding. A sequencer that answered an empty subtree as holding 4 new entries (with
 * the ReconMeta's hash set to match) grew a follower with a quota of 4 keys by 4 keys a session;
 * a diff whose new entries fit the quota alone took the register past its octets; a value longer
 * than the register's limit was installed. The sequencer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { childrenOf } from '../core/register/keyspace.js';
import { MapState, entryWireLen } from '../core/register/map.js';
import { MsgType, REQ_WANT_DIFF, type Message, type WireEntry } from '../wire/messages.js';
import { enc, mapFollower } from './helpers.js';

type ReconReq = Extract<Message, { type: MsgType.ReconReq }>;

const reconReqs = (ms: Message[]): ReconReq[] => ms.filter((m): m is ReconReq => m.type === MsgType.ReconReq);

/** The hash and size of a map of these entries (what an honest ReconMeta states). */
function pinOf(entries: WireEntry[]): { hash: { hi: number; lo: number }; size: number; state: MapState } {
  const m = new MapState(5);
  for (const e of entries) m.put(e.key, e.value, e.version);
  return { hash: { hi: m.hash.hi, lo: m.hash.lo }, size: m.size(), state: m };
}

const entry = (k: string, v = 'v', version = 1): WireEntry => ({ key: enc(k), version, value: enc(v) });
const keys = (n: number, from = 0, v = 'v', version = 1): WireEntry[] =>
  Array.from({ length: n }, (_, i) => entry(`k${from + i}`, v, version));

/**
 * The review's lie: a hash mismatch at v1 starts a range reconciliation; the sequencer answers the
 * root with one child that is empty here as holding `extra.length` entries (the others as ours),
 * then that child with `extra`. Its ReconMeta states `size` and the hash of ours plus `extra`, so
 * the result verifies by hash.
 */
function growBy(f: ReturnType<typeof mapFollower>, own: WireEntry[], extra: WireEntry[], size: number): void {
  const out = f.feed({ type: MsgType.Status, register: 'kv', version: 1, hash: { hi: 7, lo: 7 }, logBase: 0, resolvedSeq: 0, held: [] });
  expect(reconReqs(out)[0]?.prefixes).toEqual([{ depth: 0, prefix: 0 }]);
  const children = childrenOf(pinOf(own).state.snapshot(1), 0, 0);
  const empty = children.findIndex((c) => c.count === 0);
  // The extra keys all fall in that child (keysInEmptyChild): the other children are ours.
  const result = pinOf([...own, ...extra]);
  const theirs = childrenOf(result.state.snapshot(1), 0, 0);
  expect(theirs.filter((c, i) => c.count !== children[i].count)).toHaveLength(1);
  expect(theirs[empty].count).toBe(extra.length);
  const req = reconReqs(
    f.feed(
      { type: MsgType.ReconMeta, register: 'kv', targetVersion: 2, hash: result.hash, size, origins: [], rejections: [] },
      { type: MsgType.ReconNode, register: 'kv', targetVersion: 2, depth: 0, prefix: 0, children: theirs },
    ),
  );
  expect(req[0]?.prefixes).toEqual([{ depth: 1, prefix: empty }]);
  f.feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: 2, depth: 1, prefix: empty, part: 0, parts: 1, entries: extra });
}

/** `n` keys that all fall in one depth-1 child where none of `own` falls (key hashes with seed 5). */
function keysInEmptyChild(own: WireEntry[], n: number, from: number): WireEntry[] {
  const m = pinOf(own).state;
  const children = childrenOf(m.snapshot(1), 0, 0);
  const empty = children.findIndex((c) => c.count === 0);
  const out: WireEntry[] = [];
  for (let i = from; out.length < n; i++) {
    const e = entry(`x${i}`, 'v', 2);
    if (m.keyHashOf(e.key) >>> 28 === empty) out.push(e);
  }
  return out;
}

describe('a reconciliation result past the quota is not installed', () => {
  it('range reconciliation: 4 keys added to a follower whose quota is 4 keys are refused and counted; a full transfer follows', () => {
    const own = keys(4);
    const f = mapFollower({ maxKeys: 4 }, own);
    const extra = keysInEmptyChild(own, 4, 0);
    growBy(f, own, extra, 4);
    // Before the fix: installed at v2 with 8 keys, nothing counted.
    expect(f.reg.state.size()).toBe(4);
    expect(f.reg.version).toBe(1);
    expect(f.f.stats.drops['quota-violation']).toBe(1);
    expect(f.f.stats.fullTransfers).toBe(1);
    expect(f.reg.follower?.requester?.mode).toBe('full');
  });

  it('range reconciliation: a result whose size is not the ReconMeta size is not installed, even within the quota', () => {
    const own = keys(4);
    const f = mapFollower({ maxKeys: 100 }, own);
    const extra = keysInEmptyChild(own, 4, 0);
    growBy(f, own, extra, 4); // the ReconMeta says 4 keys; the result would hold 8
    expect(f.reg.state.size()).toBe(4);
    expect(f.reg.version).toBe(1);
    expect(f.f.stats.fullTransfers).toBe(1);
    // The same answer with the size stated truly is installed (the check is not a refusal of every growth).
    const g = mapFollower({ maxKeys: 100 }, own);
    growBy(g, own, extra, 8);
    expect(g.reg.state.size()).toBe(8);
    expect(g.reg.version).toBe(2);
    expect(g.f.stats.drops['quota-violation']).toBeUndefined();
  });

  it('log diff: new entries that fit the quota alone but not beside the entries kept are refused and counted; ranges follow', () => {
    const own = keys(4, 0, '0123456789'); // 4 entries of 15 octets: 60
    const put = keys(2, 10, '0123456789012345678901234567890', 2); // 2 new keys of 36 octets: 72, within 120 alone
    const quota = { maxBytes: 120 };
    const f = mapFollower(quota, own);
    const bytes = [...own, ...put].reduce((n, e) => n + entryWireLen(e), 0);
    expect(bytes).toBeGreaterThan(quota.maxBytes);
    const out = f.feed({ type: MsgType.Status, register: 'kv', version: 5, hash: { hi: 7, lo: 7 }, logBase: 5, resolvedSeq: 0, held: [] });
    expect((reconReqs(out)[0]?.flags ?? 0) & REQ_WANT_DIFF).toBeTruthy();
    expect(reconReqs(out)[0]?.diff).toEqual({ since: 1, fromPart: 0 });
    const pin = pinOf([...own, ...put]);
    const after = f.feed(
      { type: MsgType.ReconMeta, register: 'kv', targetVersion: 5, hash: pin.hash, size: pin.size, origins: [], rejections: [] },
      { type: MsgType.ReconDiff, register: 'kv', targetVersion: 5, since: 1, part: 0, parts: 1, entries: put },
    );
    // Before the fix: installed at v5, 132 octets against a quota of 120.
    expect(f.reg.version).toBe(1);
    expect(f.reg.state.fullTransferBytes()).toBe(60);
    expect(f.f.stats.drops['quota-violation']).toBe(1);
    expect(f.f.stats.drops['diff-mismatch']).toBeUndefined();
    expect(f.reg.follower?.requester?.mode).toBe('reconcile');
    expect(reconReqs(after)[0]?.prefixes).toEqual([{ depth: 0, prefix: 0 }]);
  });
});

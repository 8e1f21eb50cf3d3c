/**
 * An honest follower whose register is above its quota (lowered across a restart: kept, growth
 * refused, §7.8) re-entangles by range reconciliation when the result does not grow it. The
 * install check of rev 1.29 first compared the result with the quota alone, refused it, fell
 * back to a full transfer that was refused too, and never re-entangled (review, 2026-12-07).
 */
import { describe, expect, it } from 'vitest';
import { childrenOf } from '../core/register/keyspace.js';
import { MapState } from '../core/register/map.js';
import { MsgType, type Message, type WireEntry } from '../wire/messages.js';
import { enc, mapFollower } from './helpers.js';

const entry = (k: string, v = 'v'.repeat(20), version = 1): WireEntry => ({ key: enc(k), version, value: enc(v) });

describe('re-entanglement of a register above a lowered quota', () => {
  it('range reconciliation that does not grow it installs (quota 100 octets, 8 keys of ~24 held)', () => {
    const own = Array.from({ length: 8 }, (_, i) => entry(`k${i}`));
    const { f, feed } = mapFollower({ maxBytes: 100, maxValueBytes: 8 }, own);
    // The sequencer changed one value (as long as before: no growth).
    const theirs = own.map((e, i) => (i === 0 ? entry('k0', 'w'.repeat(20), 2) : e));
    const result = new MapState(5);
    for (const e of theirs) result.put(e.key, e.value, e.version);
    const out = feed({ type: MsgType.Status, register: 'kv', version: 1, hash: { hi: 7, lo: 7 }, logBase: 0, resolvedSeq: 0, held: [] });
    expect(out.filter((m) => m.type === MsgType.ReconReq)).toHaveLength(1);
    const req = feed(
      { type: MsgType.ReconMeta, register: 'kv', targetVersion: 2, hash: result.hash, size: 8, origins: [], rejections: [] },
      { type: MsgType.ReconNode, register: 'kv', targetVersion: 2, depth: 0, prefix: 0, children: childrenOf(result.snapshot(2), 0, 0) },
    ).filter((m): m is Extract<Message, { type: MsgType.ReconReq }> => m.type === MsgType.ReconReq);
    expect(req[0].prefixes).toHaveLength(1);
    const p = req[0].prefixes[0];
    const under = theirs.filter((e) => result.keyHashOf(e.key) >>> 28 === p.prefix);
    feed({ type: MsgType.ReconEntries, register: 'kv', targetVersion: 2, depth: 1, prefix: p.prefix, part: 0, parts: 1, entries: under });
    expect(f.stats.drops['quota-violation'] ?? 0).toBe(0);
    expect(f.stats.fullTransfers).toBe(0);
    expect(f.register('kv').version).toBe(2);
  });
});

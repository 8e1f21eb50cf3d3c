/**
 * Hostile review of Collapse records read in place (core16, wire/packed.ts): for genuine records
 * and for mutations of them, whatever decodes must decode whole (a record read in place must not
 * throw later, when its entries are first read), the cursor must walk the same entries as the
 * decoded ones, and applying the cursor's sets (MapState.setAt, as the follower's applyPacked
 * does) must give the state hash that applying the decoded entries gives.
 */
import { describe, expect, it } from 'vitest';
import { MapState } from '../core/register/map.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { WireError } from '../wire/errors.js';
import { MsgType, collapsePacked, decodeMessages, encodeMessage, type CollapseEntry, type CollapseMsg } from '../wire/messages.js';
import { PackedCursor } from '../wire/packed.js';
import { Rng } from '../testing/sim/rng.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function randomEntry(rng: Rng, short: boolean): CollapseEntry {
  const origin = rng.chance(0.3) ? rng.int(0, 2 ** 40) : rng.int(0, 3);
  const seq = rng.chance(0.2) ? rng.int(0, 2 ** 45) : rng.int(0, 300);
  if (rng.chance(0.2)) return { origin, seq, verdict: 'rejected', reason: rng.int(1, 4) };
  const key = rng.bytes(rng.chance(0.1) ? rng.int(100, 127) : rng.int(1, 12));
  const value = rng.bytes(rng.chance(0.1) ? rng.int(128, 3000) : rng.int(0, 40));
  let delta: Delta = { op: DeltaOp.Set, key, value };
  if (!short && rng.chance(0.3)) delta = rng.chance(0.5) ? { op: DeltaOp.Del, key } : { op: DeltaOp.Cas, key, expect: 0, value };
  return { origin, seq, verdict: 'committed', delta };
}

/** Apply as applyCollapse does for sets and deletes of a map (the verdicts bind). */
function applyEntries(st: MapState, entries: readonly CollapseEntry[], v: number): void {
  for (const e of entries) if (e.verdict === 'committed') st.apply(e.delta, v);
}

function check(m: CollapseMsg, seed: number): void {
  // Reading the entries must not throw, packed or not.
  const entries = m.entries;
  const p = collapsePacked(m);
  const a = new MapState(seed);
  applyEntries(a, entries, m.version);
  if (!p) return;
  const b = new MapState(seed);
  const c = new PackedCursor(p);
  let i = 0;
  while (c.next()) {
    const e = entries[i++];
    expect(c.origin).toBe(e.origin);
    expect(c.seq).toBe(e.seq);
    if (e.verdict === 'committed') {
      expect(c.verdict).toBe(0);
      expect(e.delta.op).toBe(DeltaOp.Set);
      if (e.delta.op !== DeltaOp.Set) return;
      expect(hex(c.buf.subarray(c.koff, c.koff + c.klen))).toBe(hex(e.delta.key));
      expect(hex(c.buf.subarray(c.voff, c.voff + c.vlen))).toBe(hex(e.delta.value));
      b.setAt(c.buf, c.koff, c.klen, c.voff, c.vlen, m.version);
    } else expect(c.verdict).toBe(e.reason);
  }
  expect(i).toBe(entries.length);
  expect([b.hash.hi, b.hash.lo]).toEqual([a.hash.hi, a.hash.lo]);
}

function run(seed: number): void {
  const rng = new Rng(seed);
  const short = rng.chance(0.7);
  const entries = Array.from({ length: rng.int(0, 12) }, () => randomEntry(rng, short));
  const version = rng.chance(0.2) ? rng.int(2 ** 30, 2 ** 50) : rng.int(1, 1000);
  const msg: CollapseMsg = { type: MsgType.Collapse, register: 'r', version, hash: { hi: 1, lo: 2 }, entries };
  const enc = encodeMessage(msg);
  const dec = decodeMessages(enc).messages[0] as CollapseMsg;
  check(dec, seed);
  expect(dec.entries.length).toBe(entries.length);
  for (let k = 0; k < 60; k++) {
    const buf = enc.slice();
    const flips = rng.int(1, 3);
    for (let f = 0; f < flips; f++) {
      const at = rng.int(0, buf.length - 1);
      buf[at] = rng.chance(0.5) ? rng.int(0, 255) : buf[at] ^ (1 << rng.int(0, 7));
    }
    const cut = rng.chance(0.2) ? buf.subarray(0, rng.int(1, buf.length)) : buf;
    let msgs;
    try {
      msgs = decodeMessages(cut).messages;
    } catch (e) {
      if (e instanceof WireError) continue;
      throw e;
    }
    for (const m of msgs) if (m.type === MsgType.Collapse) check(m, seed);
  }
}

describe('Collapse records read in place, genuine and mutated', () => {
  const base = Number(process.env.REVIEW_SEED ?? 1);
  const count = Number(process.env.REVIEW_SEEDS ?? 400);
  it(`${count} seeds`, () => {
    for (let seed = base; seed < base + count; seed++) run(seed);
  });
});

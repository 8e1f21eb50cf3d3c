/**
 * The one-pass key and entry hash (entryWords, apply16d) against the byte-wise functions it
 * replaces on the write path: every key and value length up to past two words, tail bytes in
 * the pad that must be ignored, versions above 2^32; and setAt from every source offset (the
 * word loads through a DataView start anywhere) gives the same entries and hash as put; the
 * packed cursor reads origins and seqs of every varint length (its int32 path and past it).
 */
import { describe, expect, it } from 'vitest';
import { LITTLE_ENDIAN, entryLanes, entryWords, lanesOut, murmur3At } from '../core/register/hash.js';
import { MapState } from '../core/register/map.js';
import { DeltaOp } from '../wire/delta.js';
import { MsgType, collapsePacked, decodeMessages, encodeMessage, type CollapseEntry, type CollapseMsg } from '../wire/messages.js';
import { PackedCursor } from '../wire/packed.js';
import { Rng } from '../testing/sim/rng.js';

describe('entryWords', () => {
  it('equals murmur3At of the key and entryLanes of the entry, whatever the lengths and the pad bytes', () => {
    expect(LITTLE_ENDIAN).toBe(true); // the hosts this runs on; the byte-wise path serves the others
    const rng = new Rng(16);
    for (let klen = 0; klen <= 13; klen++)
      for (let vlen = 0; vlen <= 13; vlen++)
        for (const version of [0, 1, 2 ** 31 + 5, 2 ** 32 + 7, 2 ** 53 - 1]) {
          const words = new Int32Array(2 + ((klen + vlen + 3) >>> 2) + 2);
          const bytes = new Uint8Array(words.buffer);
          bytes.set(rng.bytes(bytes.length)); // pad and neighbours hold noise
          const q = 2;
          const body = bytes.slice(4 * q, 4 * q + klen + vlen);
          const kh = entryWords(11, 22, 33, words, q, klen, vlen, version);
          const got = [kh >>> 0, lanesOut.hi >>> 0, lanesOut.lo >>> 0];
          entryLanes(22, 33, body, 0, klen, vlen, version);
          expect(got).toEqual([murmur3At(11, body, 0, klen) >>> 0, lanesOut.hi >>> 0, lanesOut.lo >>> 0]);
        }
  });

  it('setAt from any offset of a datagram equals put', () => {
    const rng = new Rng(7);
    const a = new MapState(5);
    const b = new MapState(5);
    for (let n = 0; n < 3000; n++) {
      const key = rng.bytes(rng.int(0, 9));
      const value = rng.bytes(rng.int(0, 70));
      const lead = rng.int(0, 7);
      const buf = new Uint8Array(lead + key.length + 3 + value.length + 5);
      buf.set(key, lead);
      buf.set(value, lead + key.length + 3);
      a.put(key, value, n + 1);
      b.setAt(buf, lead, key.length, lead + key.length + 3, value.length, n + 1);
    }
    expect(b.hash.toString()).toBe(a.hash.toString());
    expect([...b.values()].map((e) => [e.key, e.value, e.version])).toEqual([...a.values()].map((e) => [e.key, e.value, e.version]));
  });
});

describe('PackedCursor', () => {
  it('reads origins and seqs of one to eight varint bytes', () => {
    const values: number[] = [];
    for (let bits = 0; bits <= 53; bits++) values.push(...[2 ** bits - 1, 2 ** bits, 2 ** bits + 1].map((x) => Math.min(x, 2 ** 53 - 1)));
    const entries: CollapseEntry[] = values.map((x, i) => ({
      origin: x,
      seq: values[values.length - 1 - i],
      verdict: 'committed',
      delta: { op: DeltaOp.Set, key: new Uint8Array([i + 1]), value: new Uint8Array([i]) },
    }));
    const bytes = encodeMessage({ type: MsgType.Collapse, register: 'kv', version: 3, hash: { hi: 1, lo: 2 }, entries });
    const m = decodeMessages(bytes).messages[0] as CollapseMsg;
    const p = collapsePacked(m)!;
    expect(p).toBeDefined();
    const c = new PackedCursor(p);
    const got: [number, number][] = [];
    while (c.next()) got.push([c.origin, c.seq]);
    expect(got).toEqual(entries.map((e) => [e.origin, e.seq]));
  });
});

/**
 * Containment of a stream register's memory (core/register/stream.ts). A hostile review showed
 * that every committed append was kept as its own chunk (one Uint8Array and one ArrayBuffer per
 * append, however small), while the stream's quota counts its length: a 300,000-byte stream of
 * 1-byte appends held 66 MiB (~231 bytes per byte counted), at both ends. Now small appends are
 * gathered into chunks that grow by doubling up to 64 KiB; reads copy, so no bytes handed out
 * change when an append fills a chunk's spare room.
 */
import { describe, expect, it } from 'vitest';
import v8 from 'node:v8';
import vm from 'node:vm';
import { HalfPair } from '../core/pair/halfpair.js';
import { StreamState } from '../core/register/stream.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { DeltaOp, type SimpleDelta } from '../wire/delta.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const mem = (): number => {
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

/** The chunk size small appends are gathered into (STREAM_CHUNK_BYTES): the sizes around it are the edges. */
const CHUNK = 64 * 1024;

// A small log so that the memory measured is the stream's, not its records'.
const REGS = [{ name: 's', kind: 'stream' as const, log: { maxRecords: 4, maxBytes: 1 << 16 } }];

/** Byte-equal (a loop: the deep equality of typed arrays is slow at this size). */
const same = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

/** A deterministic generator (LCG). */
function rng(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x % n;
  };
}

describe('a stream holds about what its quota counts', () => {
  it("the review's attack: 1-byte appends from the peer, 200 to a txn (300,000 bytes)", () => {
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
    const m0 = mem();
    let offset = 0;
    for (let s = 1; s <= 1500; s++) {
      const ops: SimpleDelta[] = [];
      for (let i = 0; i < 200; i++) ops.push({ op: DeltaOp.Append, offset: offset++, data: new Uint8Array([i]) });
      const payload = encodeMessage({
        type: MsgType.Propose,
        register: 's',
        base: s,
        candidates: [{ origin: 2, seq: s, delta: { op: DeltaOp.Txn, ops } }],
      });
      seq.handlePayload(0, s, payload);
      seq.collapse(0);
      while (seq.pollEvent() !== undefined); // a driver drains events
      while (seq.pollTransmit(0) !== undefined); // and datagrams
    }
    const st = seq.register('s').state as StreamState;
    expect(st.size()).toBe(offset);
    const held = mem() - m0;
    console.log(
      `stream of ${offset} B from 1-byte appends: memory grew ${(held / 2 ** 20).toFixed(2)} MiB = ${(held / offset).toFixed(1)} B per byte counted`,
    );
    // Before: 66 MiB, ~231 bytes per byte. What remains is the stream (1x) and the pair's own state.
    expect(held).toBeLessThan(10 * offset);
    const want = new Uint8Array(offset).map((_, k) => k % 200);
    expect(same(st.read(0, offset), want)).toBe(true);
  });

  it('a million 1-byte appends to a bare stream hold at most ~2x their bytes', () => {
    const m0 = mem();
    const st = new StreamState(3);
    const one = new Uint8Array(1);
    const N = 1_000_000;
    for (let i = 0; i < N; i++) {
      one[0] = i;
      st.apply({ op: DeltaOp.Append, offset: i, data: one }, i + 1);
    }
    const held = mem() - m0;
    console.log(`${N} appends of 1 B: memory grew ${held} B (${(held / N).toFixed(2)} B per byte)`);
    expect(held).toBeLessThan(2 * N + 256 * 1024);
    expect(st.read(N - 3, 3)).toEqual(new Uint8Array([(N - 3) & 255, (N - 2) & 255, (N - 1) & 255]));
  });

  it('reads, hashes and views stay right across chunk edges, whatever the append sizes', () => {
    const r = rng(42);
    const st = new StreamState(9);
    const whole = new StreamState(9);
    let ref = new Uint8Array(1 << 16);
    let refLen = 0;
    const reads: { at: number; bytes: Uint8Array; copy: Uint8Array }[] = [];
    const given: { data: Uint8Array; copy: Uint8Array }[] = [];
    const sizes = [1, 2, 7, 100, 255, 256, 257, 1000, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 200_000];
    for (let k = 0; k < 300; k++) {
      const n = k < sizes.length ? sizes[k] : r(6) === 0 ? sizes[r(sizes.length)] : 1 + r(300);
      // Sometimes a view into a larger buffer, sometimes a whole buffer the stream may keep.
      const backing = new Uint8Array(n + 16).map(() => r(256));
      const data = r(2) === 0 ? backing.subarray(8, 8 + n) : backing.slice(8, 8 + n);
      const expected = data.slice();
      if (r(3) === 0) {
        st.appendBytes(data);
        given.push({ data, copy: data.slice() });
      } else {
        st.apply({ op: DeltaOp.Append, offset: st.size(), data }, k + 1);
        data.fill(0xee); // the caller's buffer is its own again: the stream copied
        backing.fill(0xee);
      }
      if (refLen + n > ref.length) {
        const grown = new Uint8Array(2 * (refLen + n));
        grown.set(ref.subarray(0, refLen));
        ref = grown;
      }
      ref.set(expected, refLen);
      refLen += n;
      expect(st.size()).toBe(refLen);
      // A read handed out now must not change when later appends fill spare room.
      const at = r(refLen);
      const bytes = st.read(at, 1 + r(3000));
      reads.push({ at, bytes, copy: bytes.slice() });
    }
    const all = ref.slice(0, refLen);
    for (let k = 0; k < 500; k++) {
      const at = r(all.length + 10);
      const len = r(3) === 0 ? r(3 * CHUNK) : r(600);
      expect(same(st.read(at, len), all.subarray(at, Math.min(all.length, at + len)))).toBe(true);
    }
    expect(same(st.read(0, all.length), all)).toBe(true);
    for (const { at, bytes, copy } of reads) {
      expect(same(bytes, copy)).toBe(true);
      expect(same(bytes, all.subarray(at, at + bytes.length))).toBe(true);
    }
    // Data given up to appendBytes is never written into either.
    for (const { data, copy } of given) expect(same(data, copy)).toBe(true);
    // The hash is chunking-independent: the same bytes in one append hash the same.
    whole.appendBytes(all.slice());
    expect({ hi: st.hash.hi, lo: st.hash.lo }).toEqual({ hi: whole.hash.hi, lo: whole.hash.lo });
    expect(new StreamState(9).hashAfter([all.subarray(0, 12345), all.subarray(12345)])).toEqual({ hi: whole.hash.hi, lo: whole.hash.lo });
  });
});

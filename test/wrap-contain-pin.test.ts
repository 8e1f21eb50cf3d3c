/**
 * A resent DATA record whose new tail is a few octets: the tail alone is delivered, and a view
 * of it kept the whole record's read alive while the session's quotas counted the tail (500
 * records of 60 KB with one new octet each kept 28.6 MiB). core/util/pinned.ts, RecvStream.accept.
 */
import { describe, expect, it } from 'vitest';
import { RecvStream } from '../core/wrap/stream.js';
import { pinsLittle, unpinned } from '../core/util/pinned.js';

describe('views that would keep a read alive (core/util/pinned.ts)', () => {
  it('a small view of a large buffer is copied into its own; a view of at least half is kept as it is', () => {
    const read = new Uint8Array(65_536).fill(7);
    const small = read.subarray(100, 101);
    expect(pinsLittle(small)).toBe(false);
    const c = unpinned(small);
    expect(c.buffer.byteLength).toBe(1);
    expect([...c]).toEqual([7]);
    const half = read.subarray(0, 32_768);
    expect(unpinned(half)).toBe(half);
    expect(pinsLittle(read.subarray(0, 32_758), 10)).toBe(true); // framing counted as its own
  });

  it('RecvStream.accept: a resent record’s new octet is delivered in a buffer of its own, a record that is mostly new as a view', () => {
    const r = new RecvStream();
    const first = new Uint8Array(60_000);
    expect(r.accept(0, first)).toBe(first);
    let held = 0;
    for (let i = 1; i <= 500; i++) {
      const resent = new Uint8Array(60_000).fill(i & 255);
      const fresh = r.accept(i, resent) as Uint8Array;
      expect(fresh.length).toBe(1);
      expect(fresh[0]).toBe(i & 255);
      held += fresh.buffer.byteLength;
    }
    expect(held).toBe(500); // was 500 × 60,000
    const mostlyNew = new Uint8Array(60_000);
    const tail = r.accept(r.received - 10, mostlyNew) as Uint8Array;
    expect(tail.length).toBe(59_990);
    expect(tail.buffer).toBe(mostlyNew.buffer);
  });
});

/**
 * The UDP deframer (core/wrap/udp.ts) does work linear in the octets it is given, however finely
 * the peer splits its datagrams across DATA records, and gives back exactly the datagrams framed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DatagramDeframer, frameDatagram } from '../core/wrap/udp.js';

const realConcat = Buffer.concat;
/** Octets copied by Buffer.concat while `f` runs. */
function copiedBy(f: () => void): number {
  let copied = 0;
  (Buffer as unknown as { concat: typeof Buffer.concat }).concat = ((list: readonly Uint8Array[], n?: number) => {
    const b = realConcat(list, n);
    copied += b.length;
    return b;
  }) as typeof Buffer.concat;
  try {
    f();
  } finally {
    (Buffer as unknown as { concat: typeof Buffer.concat }).concat = realConcat;
  }
  return copied;
}

describe('UDP deframer', () => {
  afterEach(() => {
    (Buffer as unknown as { concat: typeof Buffer.concat }).concat = realConcat;
  });

  it('a 65,535-octet datagram one octet per push: copied once, not once per push', () => {
    const d = new DatagramDeframer();
    const out: Buffer[] = [];
    d.push(Uint8Array.of(0, 5, 1, 2), () => {});
    expect(d.held).toBe(4); // a partial datagram, its prefix included
    d.push(Uint8Array.of(3, 4, 5), () => {});
    expect(d.held).toBe(0);
    const copied = copiedBy(() => {
      d.push(Uint8Array.of(0xff), (x) => out.push(x)); // the prefix split too
      d.push(Uint8Array.of(0xff), (x) => out.push(x));
      for (let i = 0; i < 65_535; i++) d.push(Uint8Array.of(i & 0xff), (x) => out.push(x));
    });
    expect(out).toHaveLength(1);
    expect(out[0].length).toBe(65_535);
    expect(out[0][1000]).toBe(1000 & 0xff);
    expect(d.held).toBe(0);
    expect(copied).toBeLessThanOrEqual(65_535); // was 2 GiB: the partial datagram copied on every push
  });

  it('datagrams split anywhere come back exactly, whole ones in a push uncopied', () => {
    let seed = 11;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let round = 0; round < 200; round++) {
      const grams: Buffer[] = [];
      for (let i = rnd(20); i > 0; i--) grams.push(Buffer.from(Array.from({ length: rnd(4) === 0 ? 0 : rnd(3000) }, () => rnd(256))));
      const stream = Buffer.concat(grams.map(frameDatagram));
      const d = new DatagramDeframer();
      const out: Buffer[] = [];
      const copied = copiedBy(() => {
        for (let at = 0; at < stream.length;) {
          const n = Math.min(stream.length - at, rnd(5) === 0 ? 1 : rnd(4000) + 1);
          d.push(stream.subarray(at, at + n), (x) => out.push(Buffer.from(x)));
          at += n;
        }
      });
      expect(out).toEqual(grams);
      expect(d.held).toBe(0);
      expect(copied).toBeLessThanOrEqual(stream.length);
    }
    // One push holding several whole datagrams hands out views of it.
    const d = new DatagramDeframer();
    const bytes = Buffer.concat([frameDatagram(Buffer.from('ab')), frameDatagram(Buffer.from('cde')), Buffer.from([0])]);
    const out: Buffer[] = [];
    expect(copiedBy(() => d.push(bytes, (x) => out.push(x)))).toBe(0);
    expect(out.map((x) => x.toString())).toEqual(['ab', 'cde']);
    expect(out[1].buffer).toBe(bytes.buffer);
    expect(d.held).toBe(1);
  });
});

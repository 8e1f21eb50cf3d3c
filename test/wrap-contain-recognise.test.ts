/**
 * What a peer's (or a local client's) datagrams cost the wrapper's own bookkeeping: the protocol
 * recognition looks at a bounded number of chunks, empty ones not at all, and a datagram split
 * over many records is gathered into one buffer of its length (before: a view per piece).
 */
import { describe, expect, it } from 'vitest';
import { WrapCounters, type LocalConn } from '../drivers/wrap/local.js';
import { DatagramDeframer } from '../core/wrap/udp.js';

const conn = (): LocalConn =>
  ({
    id: 2,
    datagram: true,
    local: false,
    connected: true,
    wrapPort: 5683,
    first: [[], []],
    firstLen: [0, 0],
    bytes: [0, 0],
  }) as unknown as LocalConn;

describe('protocol recognition on a flood of tiny datagrams', () => {
  it('empty datagrams are never kept nor looked at (before: one kept each, every look joining them all: 20,000 took seconds)', () => {
    const c = new WrapCounters();
    const lc = conn();
    const empty = new Uint8Array(0);
    const t0 = performance.now();
    for (let i = 0; i < 20_000; i++) c.observe(lc, 0, empty);
    expect(lc.first[0]).toHaveLength(0);
    expect(performance.now() - t0).toBeLessThan(500);
  });

  it('1-octet datagrams: decided (unknown) after a bounded number, then counted only', () => {
    const c = new WrapCounters();
    const lc = conn();
    for (let i = 0; i < 200; i++) c.observe(lc, i & 1 ? 1 : 0, Uint8Array.of(0xff));
    expect(lc.protocol).toBe('unknown');
    expect(lc.first[0].length + lc.first[1].length).toBe(0);
    expect(lc.bytes[0] + lc.bytes[1]).toBe(200);
  });
});

describe('DatagramDeframer: a datagram split over 1-octet pushes', () => {
  it('comes out whole and right, held in one buffer of its length (no view of any pushed piece)', () => {
    const d = new DatagramDeframer();
    const out: Buffer[] = [];
    const n = 65_535;
    const src = new Uint8Array(2 + n);
    src[0] = 0xff;
    src[1] = 0xff;
    for (let i = 0; i < n; i++) src[2 + i] = (i * 7) & 0xff;
    for (let i = 0; i < src.length; i++) d.push(src.subarray(i, i + 1), (x) => out.push(x));
    expect(out).toHaveLength(1);
    expect(out[0].length).toBe(n);
    expect(out[0].equals(Buffer.from(src.subarray(2)))).toBe(true);
    expect(out[0].buffer).not.toBe(src.buffer);
    // Midway, what it holds is one buffer (every other field a number).
    const e = new DatagramDeframer();
    for (let i = 0; i < 1_002; i++) e.push(src.subarray(i, i + 1), () => {});
    const held = Object.values(e as unknown as Record<string, unknown>).filter((v) => typeof v === 'object' && v !== null);
    expect(held).toHaveLength(1);
    expect(held[0]).toBeInstanceOf(Uint8Array);
    expect(e.held).toBe(1_002);
  });
});

import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { DeltaOp } from '../wire/delta.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { concatBytes } from './helpers.js';

// A follower logs each collapse record it applies. The record arrives inside a datagram the pair
// owns from then on: one that fills most of it is logged as a view (no second allocation per
// record), one that is a small part of it is copied, so a log of small records never keeps
// whole datagrams alive beyond what its byte bound counts.

const registers = (maxPending: number) => [
  { name: 'kv', kind: 'map' as const, maxPending, log: { maxRecords: 1 << 16, maxBytes: 1 << 26 } },
];

/** The sequencer's encoded records, `perRecord` set deltas each (each record one collapse). */
function records(count: number, perRecord: number, valueLen: number): Uint8Array[] {
  const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: registers(perRecord) }, 0);
  const out: Uint8Array[] = [];
  for (let r = 0; r < count; r++) {
    for (let i = 0; i < perRecord; i++) {
      const key = new TextEncoder().encode(`key-${r}-${i}`);
      seq.propose(0, 'kv', { op: DeltaOp.Set, key, value: new Uint8Array(valueLen).fill(r + i) });
    }
    const reg = seq.register('kv');
    reg.collapse(0);
    out.push(reg.log.get(reg.version)!.encoded);
  }
  return out;
}

const follower = (): HalfPair => new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: registers(64) }, 0);
const frame = (payload: Uint8Array, pn: number): Uint8Array =>
  encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn }, payload);

describe('follower log records and their datagrams', () => {
  it('logs a record that fills its datagram as a view of it', () => {
    const f = follower();
    const recs = records(3, 10, 40);
    const frames = recs.map((r, i) => frame(r, i));
    frames.forEach((d) => f.handleDatagram(0, d));
    const log = f.register('kv').log;
    expect(f.register('kv').version).toBe(3);
    for (let v = 1; v <= 3; v++) {
      const e = log.get(v)!.encoded;
      expect(e).toEqual(recs[v - 1]);
      expect(e.buffer).toBe(frames[v - 1].buffer);
    }
  });

  it('copies a record that is a small part of its datagram into memory of its own', () => {
    const f = follower();
    const recs = records(12, 1, 8);
    const d = frame(concatBytes(recs), 0);
    f.handleDatagram(0, d);
    const log = f.register('kv').log;
    expect(f.register('kv').version).toBe(12);
    for (let v = 1; v <= 12; v++) {
      const e = log.get(v)!.encoded;
      expect(e).toEqual(recs[v - 1]);
      expect(e.buffer).not.toBe(d.buffer);
      expect(e.buffer.byteLength).toBe(e.length);
    }
  });
});

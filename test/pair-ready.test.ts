import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import type { PairStore, RegisterImage } from '../core/pair/types.js';
import type { LogRecord } from '../core/pair/log.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import type { Delta } from '../wire/delta.js';
import { set } from './helpers.js';

/** A store that records what it was asked to make durable, and when (the test's clock of steps). */
class RecordingStore implements PairStore {
  readonly log: string[] = [];
  append(register: string, rec: LogRecord): void {
    this.log.push(`append ${register} v${rec.version}`);
  }
  replaced(image: RegisterImage): void {
    this.log.push(`replaced ${image.name} v${image.version}`);
  }
  lease(register: string, upTo: number): void {
    this.log.push(`lease ${register} ${upTo}`);
  }
  proposed(register: string, seq: number, delta: Delta): void {
    void delta;
    this.log.push(`proposed ${register} ${seq}`);
  }
}

const KV = [{ name: 'kv', kind: 'map' as const }];
const collapsesIn = (frame: Uint8Array): number[] =>
  decodeMessages(decodeFrame(frame, () => true).payload)
    .messages.filter((m) => m.type === MsgType.Collapse)
    .map((m) => (m as { version: number }).version);

// Persistence at the step boundary: writes recorded during a step reach the store, in order,
// when the step returns, so nothing that depends on them can be polled before they are durable.
describe('pair writes at the step boundary', () => {
  it('a sequencer leases before propose returns and stores each collapse before the frame carrying it is polled', () => {
    const store = new RecordingStore();
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV, store }, 0);
    seq.propose(0, 'kv', set('a', '1'));
    expect(store.log).toEqual(['lease kv 1024']);
    seq.propose(0, 'kv', set('b', '2'));
    expect(store.log).toEqual(['lease kv 1024']); // within the lease, and not committed yet
    // The follower's first Status: the sequencer may now send collapses.
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV }, 0);
    for (let d = fol.pollTransmit(0); d; d = fol.pollTransmit(0)) seq.handleDatagram(1, d);
    const sent: number[] = [];
    for (let d = seq.pollTransmit(2); d; d = seq.pollTransmit(2)) {
      for (const v of collapsesIn(d)) {
        expect(store.log).toContain(`append kv v${v}`);
        sent.push(v);
      }
    }
    expect(sent).toEqual([1]);
    expect(store.log).toEqual(['lease kv 1024', 'append kv v1']);
  });

  it('a follower makes its own candidate durable before propose returns, and each applied collapse before handleDatagram returns', () => {
    const store = new RecordingStore();
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV, store }, 0);
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV }, 0);
    fol.propose(0, 'kv', set('x', '1'));
    expect(store.log).toEqual(['lease kv 1024', 'proposed kv 1']);
    const pump = (from: HalfPair, to: HalfPair, now: number): void => {
      for (let d = from.pollTransmit(now); d; d = from.pollTransmit(now)) to.handleDatagram(now, d);
    };
    for (let now = 1; now < 20; now++) {
      pump(fol, seq, now);
      const before = store.log.length;
      pump(seq, fol, now);
      // Whatever the follower applied in this step is already in the store when it returns.
      if (store.log.length > before) expect(store.log.at(-1)).toMatch(/^append kv v\d+$/);
    }
    expect(store.log).toContain('append kv v1');
    expect(fol.register('kv').version).toBe(1);
  });
});

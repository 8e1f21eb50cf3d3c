import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { persistWrites, type PairStore, type PairWrite, type RegisterImage } from '../core/pair/types.js';
import type { LogRecord } from '../core/pair/log.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import type { Delta } from '../wire/delta.js';
import { set } from './helpers.js';
import { ProposeError } from '../core/pair/replica.js';
import { PairState } from '../core/pair/lifecycle.js';

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

const describeWrite = (w: PairWrite): string =>
  w.kind === 'append'
    ? `append ${w.register} v${w.rec.version}`
    : w.kind === 'replaced'
      ? `replaced ${w.image.name} v${w.image.version}`
      : w.kind === 'lease'
        ? `lease ${w.register} ${w.upTo}`
        : `proposed ${w.register} ${w.seq}`;

// The same boundary handed to the driver (spookd, the simulator): it takes the writes, makes them
// durable in its own batches, and acknowledges them; until then the pair releases nothing.
describe('pair writes handed to the driver', () => {
  const pump = (from: HalfPair, to: HalfPair, now: number): number => {
    let n = 0;
    for (let d = from.pollTransmit(now); d; d = from.pollTransmit(now), n++) to.handleDatagram(now, d);
    return n;
  };
  /** What a driver does after each input: collapse, take the writes, make them durable (the store), acknowledge. */
  const commit = (p: HalfPair, store: RecordingStore, now: number): PairWrite[] => {
    p.collapse(now);
    const w = p.pollWrites();
    if (w.length > 0) {
      persistWrites(store, w);
      p.writesDurable();
    }
    return w;
  };

  it('no datagram and no event of a step leaves before its writes were taken and acknowledged', () => {
    const store = new RecordingStore();
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV, writes: 'driver' }, 0);
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV }, 0);
    seq.propose(0, 'kv', set('a', '1'));
    expect(seq.awaitingWrites).toBe(true);
    expect(seq.pollEvent()).toBeUndefined();
    const lease = seq.pollWrites();
    expect(lease.map(describeWrite)).toEqual(['lease kv 1024']);
    expect(seq.pollTransmit(0)).toBeUndefined(); // taken, not acknowledged
    persistWrites(store, lease);
    seq.writesDurable();
    pump(fol, seq, 1); // the follower's Status: collapses may now go out
    // pollTransmit collapses (a write): it sends nothing until that write is durable.
    expect(seq.pollTransmit(2)).toBeUndefined();
    expect(seq.pollEvent()).toBeUndefined();
    // Taken but not acknowledged: still nothing.
    const w = seq.pollWrites();
    expect(w.map(describeWrite)).toEqual(['append kv v1']);
    expect(seq.pollTransmit(2)).toBeUndefined();
    expect(seq.pollEvent()).toBeUndefined();
    expect(seq.pollWrites()).toEqual([]); // nothing new
    persistWrites(store, w);
    seq.writesDurable();
    const events: string[] = [];
    for (let e = seq.pollEvent(); e; e = seq.pollEvent()) events.push(e.type);
    expect(events).toContain('outcome');
    const sent: number[] = [];
    for (let d = seq.pollTransmit(2); d; d = seq.pollTransmit(2)) sent.push(...collapsesIn(d));
    expect(sent).toEqual([1]);
    expect(store.log).toEqual(['lease kv 1024', 'append kv v1']);
  });

  it("several steps' writes go as one batch, in order, and a follower answers none of them before it is durable", () => {
    const store = new RecordingStore();
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV, writes: 'driver' }, 0);
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV }, 0);
    fol.propose(0, 'kv', set('x', '1'));
    fol.propose(0, 'kv', set('y', '2'));
    expect(fol.pollTransmit(0)).toBeUndefined(); // its candidates are not durable: not proposed yet
    expect(commit(fol, store, 0).map(describeWrite)).toEqual(['lease kv 1024', 'proposed kv 1', 'proposed kv 2']);
    for (let now = 1; now < 20; now++) {
      pump(fol, seq, now);
      pump(seq, fol, now);
      // What the follower applied in this step is held: no Status or event announces it yet.
      if (fol.awaitingWrites) {
        expect(fol.pollTransmit(now)).toBeUndefined();
        expect(fol.pollEvent()).toBeUndefined();
      }
      commit(fol, store, now);
      while (fol.pollEvent());
    }
    expect(store.log.filter((l) => l.startsWith('append'))).toEqual(['append kv v1']);
    expect(fol.register('kv').version).toBe(1);
  });

  it('writes that failed are never seen: the pair decoheres (internal-error), drops what the step caused and sends nothing more', () => {
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV, writes: 'driver' }, 0);
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV }, 0);
    for (let d = fol.pollTransmit(0); d; d = fol.pollTransmit(0)) seq.handleDatagram(1, d);
    seq.collapse(1);
    seq.pollWrites();
    seq.writesDurable();
    while (seq.pollEvent());
    while (seq.pollTransmit(1));
    seq.propose(2, 'kv', set('a', '1'));
    seq.collapse(2);
    expect(seq.pollWrites().map(describeWrite)).toEqual(['lease kv 1024', 'append kv v1']);
    seq.writesFailed(2, 'EIO');
    const events = [];
    for (let e = seq.pollEvent(); e; e = seq.pollEvent()) events.push(e);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'lifecycle', to: 'DECOHERENT' });
    expect((events[0] as { cause: string }).cause).toMatch(/^internal-error: store failed: EIO/);
    expect(seq.pollTransmit(3)).toBeUndefined();
    seq.handleTimeout(10_000);
    expect(seq.pollTransmit(10_000)).toBeUndefined();
  });

  it('a fenced pair refuses proposals (fenced) at either role, even decoherent under buffer: a candidate taken now would never be persisted nor decided', () => {
    for (const [localId, peerId] of [
      [2, 1],
      [1, 2],
    ]) {
      const p = new HalfPair({ pairId: 1, localId, peerId, seed: 3, registers: KV, writes: 'driver' }, 0);
      p.propose(0, 'kv', set('before', '1'));
      p.writesFailed(1, 'EIO');
      expect(p.fenced).toBe(true);
      expect(p.state).toBe(PairState.DECOHERENT);
      let err: unknown;
      try {
        p.propose(2, 'kv', set('after', '1'));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ProposeError);
      expect((err as ProposeError).code).toBe('fenced');
      expect(p.pollWrites()).toEqual([]);
      expect(p.awaitingWrites).toBe(false);
    }
  });

  it('a store that throws in the convenience mode fences the pair before rethrowing: a caller that catches and polls on sees nothing of the failed step', () => {
    let failing = false;
    const store = new (class extends RecordingStore {
      append(register: string, rec: LogRecord): void {
        if (failing) throw new Error('EIO (injected)');
        super.append(register, rec);
      }
    })();
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV, store }, 0);
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers: KV }, 0);
    for (let d = fol.pollTransmit(0); d; d = fol.pollTransmit(0)) seq.handleDatagram(1, d);
    while (seq.pollEvent());
    seq.propose(2, 'kv', set('a', '1')); // the lease reaches the store
    failing = true;
    expect(() => seq.pollTransmit(3)).toThrow(/EIO/); // the collapse's append fails
    expect(seq.fenced).toBe(true);
    // The caller carries on polling: the collapse whose write failed never leaves, nor its outcome.
    for (let d = seq.pollTransmit(4); d; d = seq.pollTransmit(4)) expect(collapsesIn(d)).toEqual([]);
    const events = [];
    for (let e = seq.pollEvent(); e; e = seq.pollEvent()) events.push(e);
    expect(events.map((e) => e.type)).toEqual(['lifecycle']);
    expect(events[0]).toMatchObject({ to: 'DECOHERENT' });
    expect((events[0] as { cause: string }).cause).toMatch(/^internal-error: store failed: EIO/);
    expect(store.log).toEqual(['lease kv 1024']);
  });

  it('a pair takes a store or hands its writes to the driver, not both', () => {
    expect(
      () => new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers: KV, writes: 'driver', store: new RecordingStore() }, 0),
    ).toThrow(RangeError);
  });
});

/**
 * The memory a stream's catch-up (PROTOCOL.md §8.3) holds for the octets it staged. StreamData may
 * carry any number of octets up to 1432: a sequencer that sends 1-octet ones (a hundred to a
 * payload) made the follower keep one Uint8Array, and its ArrayBuffer, per octet until the tail
 * completed: the quota counts the stream's length (256 MiB by default), the heap held ~100 times it.
 * The sequencer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import v8 from 'node:v8';
import vm from 'node:vm';
import { HalfPair } from '../core/pair/halfpair.js';
import { StreamState } from '../core/register/stream.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages, encodeMessage, type Message } from '../wire/messages.js';
import { peerManifest } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const mem = (): number => {
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};

/** A follower of one stream register `r` (empty, v0) that has started reconciling. */
function follower() {
  const regs = [{ name: 'r', kind: 'stream' as const }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  let pn = 1;
  const feed = (...ms: Message[]): Message[] => {
    let wire = 0;
    const parts = ms.map((m) => encodeMessage(m));
    const payload = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    for (const p of parts) payload.set(p, (wire += p.length) - p.length);
    f.handlePayload(1, pn++, payload);
    const out: Message[] = [];
    for (let d = f.pollTransmit(1); d; d = f.pollTransmit(1)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
    return out;
  };
  f.handlePayload(1, pn++, peerManifest(regs));
  const out = feed({ type: MsgType.Status, register: 'r', version: 0, hash: { hi: 1, lo: 2 }, logBase: 0, resolvedSeq: 0, held: [] });
  expect(out.some((m) => m.type === MsgType.StreamReq)).toBe(true);
  return { f, feed };
}

describe("a stream's catch-up holds about the octets it staged", () => {
  it('1-octet StreamData, 100 to a payload: the heap grows by at most ~2x the octets staged', () => {
    const { f, feed } = follower();
    const N = 300_000;
    // The pin: N octets of i & 0xff.
    const pin = new StreamState(f.register('r').state.seed);
    pin.appendBytes(Uint8Array.from({ length: N }, (_, i) => i & 0xff));
    feed({ type: MsgType.ReconMeta, register: 'r', targetVersion: 9, hash: pin.hash, size: N, origins: [], rejections: [] });
    const m0 = mem();
    let sent = 0;
    for (let off = 0; off < N - 1;) {
      const ms: Message[] = [];
      for (let k = 0; k < 100 && off < N - 1; k++, off++)
        ms.push({ type: MsgType.StreamData, register: 'r', targetVersion: 9, offset: off, data: new Uint8Array([off & 0xff]) });
      sent += ms.reduce((n, m) => n + encodeMessage(m).length, 0);
      feed(...ms);
    }
    const requester = f.register('r').follower!.requester as unknown as { stagedLen: number };
    expect(requester.stagedLen).toBe(N - 1);
    const held = mem() - m0;
    console.log(
      `${N - 1} octets staged from 1-octet StreamData (${sent} octets of messages): the heap grew ${(held / 2 ** 20).toFixed(2)} MiB, ` +
        `${(held / (N - 1)).toFixed(1)} B per octet staged, ${(held / sent).toFixed(2)} per octet sent`,
    );
    expect(held).toBeLessThan(2 * N + (1 << 20));
    // The last octet completes the tail: it verifies and is installed, the octets as sent.
    feed({ type: MsgType.StreamData, register: 'r', targetVersion: 9, offset: N - 1, data: new Uint8Array([(N - 1) & 0xff]) });
    expect(f.register('r').version).toBe(9);
    const st = f.register('r').state as StreamState;
    expect(st.size()).toBe(N);
    expect(st.hash).toEqual(pin.hash);
    expect(Buffer.from(st.read(0, N)).equals(Buffer.from(pin.read(0, N)))).toBe(true);
  });

  it('pieces of every size, some ahead of the next offset, stage the pin octet for octet (across chunk edges)', () => {
    const { f, feed } = follower();
    let x = 11;
    const rnd = (n: number): number => (x = (x * 1103515245 + 12345) % 2147483648) % n;
    const N = 200_000;
    const pin = new StreamState(f.register('r').state.seed);
    pin.appendBytes(Uint8Array.from({ length: N }, () => rnd(256)));
    feed({ type: MsgType.ReconMeta, register: 'r', targetVersion: 4, hash: pin.hash, size: N, origins: [], rejections: [] });
    const data = (off: number, n: number): Message => ({
      type: MsgType.StreamData,
      register: 'r',
      targetVersion: 4,
      offset: off,
      data: pin.read(off, n),
    });
    for (let off = 0; off < N;) {
      const n = Math.min(N - off, 1 + rnd(1432));
      const m = Math.min(N - off - n, 1 + rnd(1432));
      // Sometimes the next piece first (kept ahead within the window asked for), then this one.
      if (m > 0 && off + n < 16 * 1024 && rnd(2) === 0) feed(data(off + n, m), data(off, n));
      else feed(data(off, n), ...(m > 0 ? [data(off + n, m)] : []));
      off += n + m;
    }
    expect(f.register('r').version).toBe(4);
    const st = f.register('r').state as StreamState;
    expect(st.hash).toEqual(pin.hash);
    expect(Buffer.from(st.read(0, N)).equals(Buffer.from(pin.read(0, N)))).toBe(true);
  });
});

/**
 * A reconciliation response of the other register kind than the session's is dropped and counted
 * (PROTOCOL.md §8.2, rev 1.29). Found in a hostile review: a map session staged StreamData (up to
 * the register's octet quota) outside what it counts, since onStreamData did not look at the kind.
 * The sequencer is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import type { StreamState } from '../core/register/stream.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages, encodeMessage, type Message } from '../wire/messages.js';
import { peerManifest } from './helpers.js';

/** A follower of one register `r` (a stream of `streamBytes` at v1, or an empty map at v0) that has started reconciling. */
function follower(kind: 'map' | 'stream', streamBytes = 0) {
  const regs = [{ name: 'r', kind }];
  const f = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: regs }, 0);
  if (streamBytes > 0) f.register('r').restore(1, (st) => (st as StreamState).appendBytes(new Uint8Array(streamBytes)));
  const version = f.register('r').version;
  let pn = 1;
  const feed = (...ms: Message[]): Message[] => {
    f.handlePayload(1, pn++, Uint8Array.from(ms.flatMap((m) => [...encodeMessage(m)])));
    const out: Message[] = [];
    for (let d = f.pollTransmit(1); d; d = f.pollTransmit(1)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
    return out;
  };
  f.handlePayload(1, pn++, peerManifest(regs));
  // A Status with another hash at our version: a reconciliation session starts.
  const out = feed({ type: MsgType.Status, register: 'r', version, hash: { hi: 1, lo: 2 }, logBase: 0, resolvedSeq: 0, held: [] });
  expect(out.some((m) => m.type === (kind === 'map' ? MsgType.ReconReq : MsgType.StreamReq))).toBe(true);
  const requester = () => f.register('r').follower!.requester as unknown as { stagedLen: number; chunks: unknown[] };
  return { f, feed, requester };
}

describe('a response of the wrong register kind', () => {
  it('StreamData in a map session is dropped and counted, nothing staged', () => {
    const { f, feed, requester } = follower('map');
    const data = new Uint8Array(1024).fill(7);
    for (let i = 0; i < 16; i++) feed({ type: MsgType.StreamData, register: 'r', targetVersion: 5, offset: i * 1024, data });
    // Before the fix: 16 KiB staged, nothing counted.
    expect(requester().stagedLen).toBe(0);
    expect(f.stats.drops['quota-violation']).toBe(16);
    // The session goes on: it takes the pin's ReconMeta (a map of nothing, as ours) and completes.
    feed({ type: MsgType.ReconMeta, register: 'r', targetVersion: 5, hash: { hi: 0, lo: 0 }, size: 0, origins: [], rejections: [] });
    feed({ type: MsgType.ReconEntries, register: 'r', targetVersion: 5, depth: 0, prefix: 0, part: 0, parts: 1, entries: [] });
    expect(f.register('r').version).toBe(5);
  });

  it('a SnapChunk in a stream full transfer is dropped and counted, nothing held', () => {
    const { f, feed, requester } = follower('stream', 10);
    // The pin's stream is shorter than ours: not a prefix, a full transfer (§8.3).
    const out = feed({
      type: MsgType.ReconMeta,
      register: 'r',
      targetVersion: 5,
      hash: { hi: 3, lo: 3 },
      size: 4,
      origins: [],
      rejections: [],
    });
    expect(f.register('r').follower!.requester!.mode).toBe('full');
    expect(out.some((m) => m.type === MsgType.StreamReq)).toBe(true);
    const entries = [{ key: new Uint8Array([1]), version: 1, value: new Uint8Array(100) }];
    feed({ type: MsgType.SnapChunk, register: 'r', targetVersion: 5, chunk: 0, chunks: 1, entries });
    // Before the fix: the chunk held (counted as received entries of a stream).
    expect(requester().chunks.filter(Boolean)).toHaveLength(0);
    expect(f.stats.drops['quota-violation']).toBe(1);
  });
});

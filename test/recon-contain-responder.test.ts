/**
 * The sequencer's reconciliation responses are bounded per request and per time (PROTOCOL.md
 * §8.2, rev 1.29): a ReconReq is answered for its first 64 distinct prefixes, and every response
 * is charged to a bucket of octets per register, RESPONSE_BASE_BYTES plus RESPONSE_STATE_FACTOR
 * times the state, refilled as much per second. Found in a hostile review: a 29-octet SnapReq drew
 * 16 chunks (x600), a ReconReq of 256 prefixes 29 datagrams (x31), repeatable without limit. The
 * follower is played by hand.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { RESPONSE_BASE_BYTES, RESPONSE_ENTRY_BYTES, RESPONSE_INTERVAL_MS, RESPONSE_STATE_FACTOR } from '../core/reconcile/reentangle.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, REQ_WANT_META, decodeMessages, encodeMessage, type Message } from '../wire/messages.js';
import { enc, peerManifest } from './helpers.js';

type Meta = Extract<Message, { type: MsgType.ReconMeta }>;

/** A sequencer of a map of `keys` 64-octet values and a stream of `streamBytes`, its follower's Status taken. */
function sequencer(keys: number, streamBytes: number) {
  const regs = [
    { name: 'kv', kind: 'map' as const },
    { name: 'log', kind: 'stream' as const },
  ];
  const s = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: regs }, 0);
  const v = new Uint8Array(64).fill(0x61);
  for (let i = 0; i < keys; i += 200) {
    const ops = [];
    for (let j = i; j < Math.min(keys, i + 200); j++) ops.push({ op: DeltaOp.Set as const, key: enc(`key-${j}`), value: v });
    s.propose(1, 'kv', { op: DeltaOp.Txn, ops });
    s.collapse(1);
  }
  for (let off = 0; off < streamBytes; off += 4096) {
    s.propose(1, 'log', { op: DeltaOp.Append, offset: off, data: new Uint8Array(4096).fill(0x62) });
    s.collapse(1);
  }
  let pn = 1;
  let now = 10;
  /** Feed one message; the octets and messages sent in answer (datagrams polled at once). */
  const feed = (m: Message): { bytes: number; msgs: Message[] } => {
    s.handlePayload(now, pn++, encodeMessage(m));
    let bytes = 0;
    const msgs: Message[] = [];
    for (let d = s.pollTransmit(now); d; d = s.pollTransmit(now)) {
      bytes += d.length;
      msgs.push(...decodeMessages(decodeFrame(d).payload).messages);
    }
    return { bytes, msgs };
  };
  s.handlePayload(now, pn++, peerManifest(regs));
  for (const name of ['kv', 'log'])
    feed({
      type: MsgType.Status,
      register: name,
      version: s.register(name).version,
      hash: { hi: 9, lo: 9 },
      logBase: 0,
      resolvedSeq: 0,
      held: [],
    });
  const state = s.register('kv').state;
  const cap = (basis: number) => RESPONSE_BASE_BYTES + RESPONSE_STATE_FACTOR * basis;
  return {
    s,
    feed,
    advance: (ms: number) => {
      now += ms;
      s.handleTimeout(now);
      while (s.pollTransmit(now));
    },
    mapCap: cap(state.fullTransferBytes() + RESPONSE_ENTRY_BYTES * state.size()),
    streamCap: cap(s.register('log').state.fullTransferBytes()),
  };
}

describe("the sequencer's reconciliation responses", () => {
  it('a flood of SnapReqs draws at most the bucket, then is dropped and counted; a second later it is answered again', () => {
    const q = sequencer(2000, 0);
    const first = q.feed({ type: MsgType.SnapReq, register: 'kv', targetVersion: 0, flags: REQ_WANT_META, fromChunk: 0 });
    const pin = first.msgs.find((m): m is Meta => m.type === MsgType.ReconMeta)!.targetVersion;
    q.advance(1); // the pin's chunking, done a slice per timer call, then the parked request answered
    let bytes = 0;
    let answered = 0;
    for (let i = 0; i < 1000; i++) {
      const r = q.feed({ type: MsgType.SnapReq, register: 'kv', targetVersion: pin, flags: 0, fromChunk: (i * 16) % 256 });
      bytes += r.bytes;
      if (r.msgs.some((m) => m.type === MsgType.SnapChunk)) answered++;
    }
    // Before the fix: all 1,000 answered, 16 chunks each (about 18 MB).
    expect(bytes).toBeLessThan(q.mapCap + 64 * 1024);
    expect(answered).toBeLessThan(300);
    expect(q.s.stats.drops['recon-rate-limited']).toBeGreaterThan(700);
    q.advance(RESPONSE_INTERVAL_MS);
    const again = q.feed({ type: MsgType.SnapReq, register: 'kv', targetVersion: pin, flags: 0, fromChunk: 0 });
    expect(again.msgs.filter((m) => m.type === MsgType.SnapChunk)).toHaveLength(16);
  });

  it('a ReconReq of 256 prefixes is answered for the first 64, the rest counted; repeats draw at most the bucket', () => {
    const q = sequencer(4000, 0); // about 16 keys under each depth-2 node: each answered by a ReconNode
    const first = q.feed({
      type: MsgType.ReconReq,
      register: 'kv',
      targetVersion: 0,
      flags: REQ_WANT_META,
      prefixes: [{ depth: 0, prefix: 0 }],
    });
    const meta = first.msgs.find((m): m is Meta => m.type === MsgType.ReconMeta)!;
    expect(meta).toBeDefined();
    const prefixes = Array.from({ length: 256 }, (_, i) => ({ depth: 2, prefix: i }));
    const r = q.feed({ type: MsgType.ReconReq, register: 'kv', targetVersion: meta.targetVersion, flags: 0, prefixes });
    // Before the fix: all 256 answered.
    const answered = new Set(
      r.msgs.filter((m) => m.type === MsgType.ReconNode || m.type === MsgType.ReconEntries).map((m) => `${m.depth}:${m.prefix}`),
    );
    expect([...answered]).toEqual(prefixes.slice(0, 64).map((p) => `${p.depth}:${p.prefix}`));
    expect(q.s.stats.drops['recon-rate-limited']).toBe(1);
    let bytes = 0;
    for (let i = 0; i < 600; i++)
      bytes += q.feed({ type: MsgType.ReconReq, register: 'kv', targetVersion: meta.targetVersion, flags: 0, prefixes }).bytes;
    // Before the fix: 600 answers of 256 nodes (about 28 MB).
    expect(bytes).toBeLessThan(q.mapCap + 64 * 1024);
    expect(q.s.stats.drops['recon-rate-limited']).toBeGreaterThan(100);
  });

  it('a flood of StreamReqs draws at most the bucket', () => {
    const q = sequencer(0, 128 * 1024);
    const first = q.feed({ type: MsgType.StreamReq, register: 'log', targetVersion: 0, flags: REQ_WANT_META, offset: 0 });
    const meta = first.msgs.find((m): m is Meta => m.type === MsgType.ReconMeta)!;
    expect(first.msgs.filter((m) => m.type === MsgType.StreamData)).toHaveLength(16);
    let bytes = 0;
    for (let i = 0; i < 500; i++)
      bytes += q.feed({
        type: MsgType.StreamReq,
        register: 'log',
        targetVersion: meta.targetVersion,
        flags: 0,
        offset: (i % 8) * 16 * 1024,
      }).bytes;
    // Before the fix: 500 windows of 16 KiB (8 MB).
    expect(bytes).toBeLessThan(q.streamCap + 32 * 1024);
    expect(q.s.stats.drops['recon-rate-limited']).toBeGreaterThan(300);
  });
});

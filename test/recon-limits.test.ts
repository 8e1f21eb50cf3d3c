import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { CHUNK_WORK_BUDGET, PIN_BURST, PIN_INTERVAL_MS } from '../core/reconcile/reentangle.js';
import type { MapState } from '../core/register/map.js';
import { FrameType } from '../wire/constants.js';
import { encodeFrame } from '../wire/header.js';
import { MsgType, REQ_WANT_META, decodeMessages, encodeMessage, type Message } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import { enc, peerManifest, set } from './helpers.js';

/** A sequencer preloaded with `n` keys; its log keeps one record, so an old pin is rarely reusable. */
function sequencer(n: number): HalfPair {
  const seq = new HalfPair(
    { pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map', log: { maxRecords: 1, maxBytes: 1 << 20 } }] },
    0,
  );
  seq.register('kv').restore(1, (st) => {
    for (let i = 0; i < n; i++) (st as MapState).put(enc(`key-${i}`), enc(`value-${i}`), 1);
  });
  return seq;
}

let pn = 0;
const frame = (m: Message): Uint8Array => encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: pn++ }, encodeMessage(m));

function sent(p: HalfPair, now: number): Message[] {
  const out: Message[] = [];
  for (let d = p.pollTransmit(now); d; d = p.pollTransmit(now)) out.push(...decodeMessages(decodeFrame(d, () => true).payload).messages);
  return out;
}

describe('reconciliation work per peer is bounded', () => {
  // Attack: an authorised follower sends fresh-pin requests (targetVersion 0, WANT_META, 256
  // root prefixes) as fast as it can; each used to rebuild and sort the whole map.
  it('a flood of fresh-pin requests builds at most the rate-limited pins; the rest are dropped and counted', () => {
    const seq = sequencer(20_000);
    const req = frame({
      type: MsgType.ReconReq,
      register: 'kv',
      targetVersion: 0,
      flags: REQ_WANT_META,
      prefixes: Array.from({ length: 256 }, () => ({ depth: 0, prefix: 0 })),
    });
    let now = 1;
    let nodes = 0;
    for (let i = 0; i < 400; i++) {
      // The register keeps moving, so the last pin is not reusable for long.
      seq.propose(now, 'kv', set(`key-${i}`, `w${i}`));
      seq.collapse(now);
      seq.handleDatagram(now, req);
      nodes += sent(seq, now).filter((m) => m.type === MsgType.ReconNode).length;
      now += 25; // 40 requests per second for 10 s
    }
    const pins = seq.register('kv').sequencer!.responder.pinsBuilt;
    expect(pins).toBeLessThanOrEqual(PIN_BURST + Math.ceil(now / PIN_INTERVAL_MS));
    expect(pins).toBeGreaterThanOrEqual(2);
    expect(seq.stats.drops['recon-rate-limited']).toBeGreaterThan(100);
    // 256 copies of the root prefix are answered once per request.
    expect(nodes).toBeLessThanOrEqual(400);
    expect(nodes).toBeGreaterThan(0);
  });

  it('a pin the log can still serve from is reused, not rebuilt', () => {
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0);
    const req = frame({
      type: MsgType.ReconReq,
      register: 'kv',
      targetVersion: 0,
      flags: REQ_WANT_META,
      prefixes: [{ depth: 0, prefix: 0 }],
    });
    for (let i = 0; i < 50; i++) {
      seq.propose(i, 'kv', set(`k${i}`, 'v'));
      seq.collapse(i);
      seq.handleDatagram(i, req);
      sent(seq, i);
    }
    expect(seq.register('kv').sequencer!.responder.pinsBuilt).toBe(1);
    expect(seq.stats.drops['recon-rate-limited']).toBeUndefined();
  });

  it('chunking a pin for a full transfer is done in bounded slices by handleTimeout, then the SnapReq is answered', () => {
    const n = 5 * CHUNK_WORK_BUDGET;
    const seq = sequencer(n);
    seq.handleDatagram(1, frame({ type: MsgType.SnapReq, register: 'kv', targetVersion: 0, flags: REQ_WANT_META, fromChunk: 0 }));
    expect(sent(seq, 1).filter((m) => m.type === MsgType.SnapChunk)).toHaveLength(0);
    let slices = 0;
    const chunks: Message[] = [];
    for (let t = seq.pollTimeout(); t !== undefined && t <= 1 && slices < 100; t = seq.pollTimeout()) {
      seq.handleTimeout(1);
      slices++;
      chunks.push(...sent(seq, 1).filter((m) => m.type === MsgType.SnapChunk));
    }
    expect(slices).toBeGreaterThanOrEqual(5);
    expect(slices).toBeLessThanOrEqual(7);
    expect(chunks).toHaveLength(16);
    const c0 = chunks[0] as Extract<Message, { type: MsgType.SnapChunk }>;
    expect(c0.chunk).toBe(0);
    // Every entry is in exactly one chunk: the chunk count covers n entries of ~22 octets.
    expect(c0.chunks).toBeGreaterThan(n / 60);
  });
});

describe('reconciliation sessions per follower are rate-limited', () => {
  // Attack: a sequencer that makes the follower reconcile again and again (a bad hash, a
  // log base past it), each session ending in a snapshot of the whole register on disk.
  it('a follower starts 2 sessions at once, then one per second; a held-back one sends nothing before its time', () => {
    const fol = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0);
    fol.handlePayload(1, 1_000_000, peerManifest([{ name: 'kv', kind: 'map' }])); // the peer's registers match: the pair may form
    const r = fol.register('kv');
    const starts: (number | undefined)[] = [];
    for (let i = 1; i <= 4; i++) {
      fol.handleDatagram(
        1,
        frame({
          type: MsgType.Status,
          register: 'kv',
          version: 100 * i,
          hash: { hi: i, lo: i },
          logBase: 100 * i - 1,
          resolvedSeq: 0,
          held: [],
        }),
      );
      starts.push(r.follower!.requester!.notBefore);
      // The session "ends".
      r.follower!.install(1, {
        method: 'reconcile',
        version: 100 * i - 50,
        change: { kind: 'edit-map', deletes: [], puts: [] },
        origins: new Map(),
        rejections: new Map(),
      });
    }
    expect(starts).toEqual([undefined, undefined, 1001, 2001]);
    fol.handleDatagram(
      1,
      frame({ type: MsgType.Status, register: 'kv', version: 1000, hash: { hi: 9, lo: 9 }, logBase: 999, resolvedSeq: 0, held: [] }),
    );
    expect(r.follower!.requester!.notBefore).toBe(3001);
    expect(sent(fol, 2).some((m) => m.type === MsgType.ReconReq)).toBe(false);
    expect(fol.pollTimeout()).toBeLessThanOrEqual(3001);
    fol.handleTimeout(3001);
    expect(sent(fol, 3001).some((m) => m.type === MsgType.ReconReq)).toBe(true);
  });
});

/**
 * A record that commits a follower's write is sent without the follower's delta (§3.6.4): the
 * shortened form is kept for the last 256 versions; an older record (or any after a restart, the
 * log replayed) larger than a payload is shortened when it is sent. That path decoded the record
 * and re-encoded a copy made by spreading it: a record of short sets decodes to an object whose
 * entries are read through an accessor, which a spread does not copy, so the encoder threw out of
 * pollTransmit (spookd fences the pair, `internal-error`, and the replayed log throws again after a
 * restart). A follower reaches it with one write of a value between a payload and 16 KiB that it
 * does not acknowledge (a lost datagram) while 256 more versions commit.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { DeltaOp } from '../wire/delta.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages, encodeMessage, type CollapseMsg, type Message } from '../wire/messages.js';
import { enc, peerManifest } from './helpers.js';

describe('the sequencer resends an old record of a follower write larger than a payload', () => {
  it('sends it (without the follower delta) instead of throwing', () => {
    const regs = [{ name: 'kv', kind: 'map' as const }];
    const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: regs }, 0);
    let pn = 1;
    let now = 1;
    const feed = (m: Message) => a.handlePayload(now, pn++, encodeMessage(m));
    const drain = (): Message[] => {
      const out: Message[] = [];
      if ((a.pollTimeout() ?? Infinity) <= now) a.handleTimeout(now);
      for (let d = a.pollTransmit(now); d; d = a.pollTransmit(now)) out.push(...decodeMessages(decodeFrame(d).payload).messages);
      return out;
    };
    a.handlePayload(now, pn++, peerManifest(regs));
    const status = (version: number): Message => ({
      type: MsgType.Status,
      register: 'kv',
      version,
      hash: a.register('kv').log.hashAt(version) ?? { hi: 0, lo: 0 },
      logBase: 0,
      resolvedSeq: 0,
      held: [],
    });
    feed(status(0));
    // The follower's write: a 3,000-octet value (a short set, above a payload).
    const value = new Uint8Array(3000).fill(7);
    feed({
      type: MsgType.Propose,
      register: 'kv',
      base: 1,
      candidates: [{ origin: 2, seq: 1, delta: { op: DeltaOp.Set, key: enc('big'), value } }],
    });
    a.collapse(now);
    drain();
    // 300 versions of its small writes: the shortened form of v1 is no longer kept.
    for (let seq = 2; seq <= 301; seq++) {
      feed({
        type: MsgType.Propose,
        register: 'kv',
        base: seq,
        candidates: [{ origin: 2, seq, delta: { op: DeltaOp.Set, key: enc(`k${seq}`), value: enc('x') } }],
      });
      a.collapse(now);
    }
    drain();
    // The follower acknowledges nothing: on the retransmission timer the sequencer goes back to v0 and resends v1.
    now += 1500;
    let sent: Message[] = [];
    expect(() => (sent = drain())).not.toThrow();
    const v1 = sent.find((m): m is CollapseMsg => m.type === MsgType.Collapse && m.version === 1);
    expect(v1).toBeDefined();
    expect(v1!.elided).toEqual([0]); // without the follower's own 3,000 octets
  });
});

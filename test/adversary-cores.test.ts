import { describe, expect, it } from 'vitest';
import { Rng } from '../testing/sim/rng.js';
import { concat, estpPayload, qnPayload, wrapRecord } from '../testing/lab/fuzz.js';
import { CloseReason, encodeMessage, MsgType } from '../wire/messages.js';
import { PairState } from '../core/pair/lifecycle.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { DomainNode } from '../core/qn/node.js';
import { EMPTY_STORED } from '../core/qn/persist.js';
import { WrapSession } from '../core/wrap/session.js';
import { encodeRecord, RecordType } from '../wire/wrap.js';

/**
 * Issue 13, "a node of each core": the adversary's fuzz (testing/lab/fuzz.ts) straight into
 * each sans-I/O protocol core, driven as the daemon drives it (input, then timers, then every
 * output drained). A core never throws on peer input: any exception that escapes is collected
 * by kind (digits elided) with the seed and message number that raised it, and the core is
 * rebuilt so that one bug does not hide the next. The daemon test (test/e2e/adversary.test.ts)
 * sends the same kinds of messages to a spookd in namespaces.
 */
type Escapes = Record<string, string>;

function escaped(out: Escapes, where: string, e: unknown, seed: number, i: number): void {
  const kind = `${where}: ${(e as Error).name}: ${(e as Error).message.replace(/\d+/g, 'N')}`;
  out[kind] ??= `seed ${seed}, message ${i}`;
}

/** `seeds` fresh cores, `per` messages each; `step` feeds one message and drives the core's timers and outputs. */
function campaign<C>(seeds: number, per: number, make: (rng: Rng) => C, step: (core: C, rng: Rng, now: number) => void): Escapes {
  const out: Escapes = {};
  for (let seed = 1; seed <= seeds; seed++) {
    const rng = new Rng(seed);
    let core = make(rng);
    for (let i = 0; i < per; i++) {
      try {
        step(core, rng, i * 7);
      } catch (e) {
        escaped(out, 'core', e, seed, i);
        core = make(rng); // its state is undefined after an exception
      }
    }
  }
  return out;
}

describe('the adversary against each protocol core: no input escapes as an exception', () => {
  it('ESTP: 30,000 fuzzed payloads from the peer into a HalfPair (sequencer and follower)', () => {
    const registers = [
      { name: 'config', kind: 'map' as const },
      { name: 'journal', kind: 'stream' as const },
    ];
    // One seed in ten may also close the pair for good (what follows in that seed is ignored).
    let seedNo = 0;
    const ctx = { registers: registers.map((r) => r.name), origins: [1, 2], closes: false };
    const out = campaign(
      60,
      500,
      (rng) => {
        ctx.closes = seedNo++ % 10 === 9;
        const id = rng.int(1, 2); // 1: the sequencer, 2: the follower
        return new HalfPair({ pairId: 1, localId: id, peerId: 3 - id, seed: 5, registers }, 0);
      },
      (pair, rng, now) => {
        pair.handlePayload(now, now, estpPayload(rng, ctx));
        const t = pair.pollTimeout();
        if (t !== undefined && t <= now) pair.handleTimeout(now);
        while (pair.pollTransmit(now));
        while (pair.pollEvent());
      },
    );
    expect(out).toEqual({});
  });

  it('close-twice: one payload that closes the pair twice is handled, not thrown (one datagram ended spookd)', () => {
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'config', kind: 'map' }] }, 0);
    const close = encodeMessage({ type: MsgType.Close, reason: CloseReason.Closed });
    expect(() => pair.handlePayload(1, 1, concat([close, close]))).not.toThrow();
    expect(pair.state).toBe(PairState.CLOSED);
  });

  for (const member of [true, false]) {
    it(`QN: 25,000 fuzzed messages from a ${member ? 'member' : 'non-member'} link into a DomainNode`, () => {
      const self = 10;
      const adv = 99;
      const others = [20, 30];
      const ctx = { domains: [0x51, 0x52], self: adv, victim: self, others, registers: ['kv'], cursor: { term: 1, index: 0 } };
      const out = campaign(
        50,
        500,
        (rng) => {
          ctx.cursor = { term: 1, index: 0 };
          return new DomainNode(
            {
              domain: 0x51,
              name: 'd',
              id: self,
              members: member ? [self, adv, ...others] : [self, ...others],
              links: [adv, ...others],
              registers: [{ name: 'kv', kind: 'map' }],
              seed: 1,
              stored: EMPTY_STORED,
              random: (a, b) => rng.int(a, b),
              electionMs: 300,
              heartbeatMs: 50,
            },
            0,
          );
        },
        (node, rng, now) => {
          node.handleDatagram(now, adv, qnPayload(rng, ctx));
          if (node.pollTimeout() <= now) node.handleTimeout(now);
          for (let r = node.ready(); r; r = node.ready()) node.advance();
        },
      );
      expect(out).toEqual({});
    });
  }

  it('WRAP: 25,000 fuzzed records from the peer into a WrapSession with a carrier up', () => {
    const ctx = { conns: Array.from({ length: 16 }, (_, i) => i), targets: [{ family: 4 as const, address: '127.0.0.1', port: 9 }] };
    const out = campaign(
      50,
      500,
      (rng) => {
        const s = new WrapSession({
          windowBytes: 64 * 1024,
          maxConnections: 16,
          pingMs: 200,
          silenceMs: 1000,
          role: rng.int(0, 1) as 0 | 1,
          bootId: 1n,
        });
        s.onCarrierUp(0);
        s.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n }));
        return s;
      },
      (s, rng, now) => {
        s.handleRecord(now, wrapRecord(rng, ctx));
        const t = s.pollTimeout();
        if (t !== undefined && t <= now) s.handleTimeout(now);
        while (s.pollRecord(now));
        for (let ev = s.pollEvent(); ev; ev = s.pollEvent()) {
          // What the daemon does with each: a carrier dropped for a violation comes back up.
          if (ev.type === 'drop-carrier') {
            s.onCarrierDown(now);
            s.onCarrierUp(now);
            s.handleRecord(now, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n }));
          }
        }
      },
    );
    expect(out).toEqual({});
  });
});

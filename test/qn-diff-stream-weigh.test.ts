/**
 * What weighing a difference for a follower behind costs a leader when a stream register is
 * touched (docs/PROTOCOL.md §15.4, "Catch-up by difference"): a difference carries a touched
 * stream whole, so a few 1-octet appends to a large stream make a difference far larger than
 * replay, and it is never sent. It was built all the same (the stream copied twice) before the
 * comparison threw it away: a follower acknowledging one more entry per electionMs had its
 * leader copy the whole stream each time, for a 13-octet acknowledgement.
 */
import { describe, expect, it } from 'vitest';
import { encodeEnvelope } from '../wire/qn.js';
import { DeltaOp } from '../wire/delta.js';
import { DOMAIN, Trio } from './domain-trio.js';

const MiB = 1 << 20;

describe('a leader weighs a difference touching a large stream without building it', () => {
  it('16 MiB stream, 100 1-octet appends behind: no difference built, a few ms an acknowledgement', () => {
    const registers = [
      { name: 'kv', kind: 'map' as const },
      { name: 's', kind: 'stream' as const },
    ];
    const t = new Trio(3, { maxLogEntries: 10_000, electionMs: 1000, heartbeatMs: 100, registers });
    t.run(5000);
    const L = t.leader()!;
    const H = t.follower()!;
    let len = 0;
    const append = (data: Uint8Array): void => {
      L.propose(t.now, [{ register: 's', delta: { op: DeltaOp.Append, offset: len, data } }]);
      len += data.length;
    };
    for (let i = 0; i < 16; i++) {
      append(new Uint8Array(MiB).fill(i));
      t.run(50);
    }
    t.run(500);
    expect(H.state.registers.get('s')!.state.size()).toBe(16 * MiB);
    t.isolate(H.id);
    for (let i = 0; i < 100; i++) {
      append(new Uint8Array([i]));
      t.run(5);
    }
    t.run(500);
    t.stop(H.id);
    t.isolate(H.id, false);
    t.run(300);
    let built = 0;
    const diff = L.state.diff.bind(L.state);
    L.state.diff = (...a: Parameters<typeof diff>) => {
      const d = diff(...a);
      if (d) built += d.length;
      return d;
    };
    const M = L.raft.progressOf(H.id)!.match;
    let ms = 0;
    const N = 5;
    for (let k = 1; k <= N; k++) {
      t.run(1050);
      const bytes = encodeEnvelope({
        domain: DOMAIN,
        from: H.id,
        to: L.id,
        ttl: 8,
        body: { t: 'appendResp', term: L.raft.term, ok: true, index: M + k },
      });
      const t0 = performance.now();
      L.handleDatagram(t.now, H.id, bytes);
      ms += performance.now() - t0;
      t.deliver();
    }
    console.log(
      `${N} acknowledgements: ${(built / MiB).toFixed(1)} MiB of differences built, ${(ms / N).toFixed(1)} ms an acknowledgement`,
    );
    expect(L.raft.progressOf(H.id)!.match).toBe(M + N);
    expect(built).toBeLessThan(MiB);
    expect(ms / N).toBeLessThan(5);
  });
});

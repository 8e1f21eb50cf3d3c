/**
 * A relaying member may replay what it relayed (docs/PROTOCOL.md §15.5: Raft tolerates it), and
 * a retry is recognised by the outcome table only while its outcome is in the origin's window
 * (OUTCOME_WINDOW seqs, §15.2). A sealed `fwd` replayed once the origin's window has moved past
 * it must not be applied again: it would undo the origin's later, acknowledged writes.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { decodeBody, decodeEnvelope, encodeEnvelope, sealedHeader } from '../wire/qn.js';
import { OUTCOME_WINDOW, candidateHead } from '../core/qn/state.js';
import { DOMAIN, Trio } from './domain-trio.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);

describe('QN: a candidate replayed by a relay past its origin outcome window', { timeout: 30_000 }, () => {
  it('is not applied again: the origin later acknowledged write stays', () => {
    const t = new Trio(41, { maxPending: 4096, maxLogEntries: 512 });
    t.run(600);
    const l = t.leader()!;
    const [origin, relay] = [1, 2, 3].filter((x) => x !== l.id);
    // The origin cannot hear its leader directly: its forwards go through the relay, sealed.
    t.cut.add(`${origin}>${l.id}`).add(`${l.id}>${origin}`);
    t.run(300);
    const captured: Uint8Array[] = [];
    t.tap = (from, to, bytes) => {
      const e = decodeEnvelope(bytes);
      if (from === origin && to === relay && e.to === l.id && e.body.t === 'sealed') captured.push(bytes);
    };
    expect(t.put('x', 'old', origin)).toBe('committed');
    t.tap = undefined;
    expect(captured.length).toBeGreaterThan(0);
    t.cut.clear();
    t.run(300);
    expect(t.put('x', 'new', origin)).toBe('committed');
    // The origin writes on: its window moves past the first write.
    const o = t.nodes.get(origin)!;
    let last = 0;
    for (let i = 0; i < OUTCOME_WINDOW + 8; i++) {
      const r = o.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('y'), value: enc(`${i}`) } }]);
      if ('refused' in r) throw new Error(r.refused);
      last = r.seq;
      if (i % 512 === 511) t.run(50);
    }
    expect(t.await(origin, last, 5000)).toBe('committed');
    t.run(200);
    const value = (id: number): string | undefined => dec(t.nodes.get(id)!.state.registers.get('kv')!.state.get(enc('x'))?.value);
    for (const id of [1, 2, 3]) expect(value(id)).toBe('new');

    // The relay replays the sealed forward it carried long ago (its own hop, ttl lowered as a relay does).
    const applied = l.raft.applied;
    for (const bytes of captured) {
      const e = decodeEnvelope(bytes);
      l.handleDatagram(t.now, relay, encodeEnvelope({ ...e, ttl: e.ttl - 1 }));
    }
    t.run(300);
    for (const id of [1, 2, 3]) expect(value(id)).toBe('new');
    // Nothing of it was appended (the leader knows it is older than the window).
    expect(l.raft.lastIndex).toBeLessThanOrEqual(applied + 1);

    // Appended all the same (a leader that took it before the window moved, or one that does not
    // check): every member applies nothing of it, alike.
    const old = captured.map((b) =>
      l.o.relay!.open(origin, sealedHeader(DOMAIN, origin, l.id), (decodeEnvelope(b).body as { box: Uint8Array }).box)!,
    )[0];
    const body = decodeBody(old);
    expect(body.t).toBe('fwd');
    expect(l.raft.propose(t.now, (body as { cmd: Uint8Array }).cmd)).toBeDefined();
    t.run(300);
    for (const id of [1, 2, 3]) expect(value(id)).toBe('new');
    const d = t.nodes.get(1)!.state.digest();
    for (const id of [2, 3]) expect(t.nodes.get(id)!.state.digest()).toEqual(d);
  });

  it('a candidate still pending when its window moves past it ends unknown, and is never applied', () => {
    const t = new Trio(43, { maxPending: 4096, maxLogEntries: 512 });
    t.run(600);
    const l = t.leader()!;
    const origin = [1, 2, 3].find((x) => x !== l.id)!;
    const o = t.nodes.get(origin)!;
    const lost = o.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('x'), value: enc('lost') } }]);
    if ('refused' in lost) throw new Error(lost.refused);
    // Every forward of it is lost on the way to the leader; the origin's later ones arrive.
    const handle = l.handleDatagram.bind(l);
    l.handleDatagram = (now, from, bytes) => {
      const b = decodeEnvelope(bytes).body;
      if (from === origin && b.t === 'fwd' && candidateHead(b.cmd)?.seq === lost.seq) return;
      handle(now, from, bytes);
    };
    let last = 0;
    for (let i = 0; i < OUTCOME_WINDOW + 8; i++) {
      const r = o.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('y'), value: enc(`${i}`) } }]);
      if ('refused' in r) throw new Error(r.refused);
      last = r.seq;
      if (i % 512 === 511) t.run(50);
    }
    expect(t.await(origin, last, 5000)).toBe('committed');
    t.run(500);
    const ev = t.events.get(origin)!.find((e) => e.type === 'outcome' && e.seq === lost.seq);
    expect(ev).toMatchObject({ committed: false, unknown: true });
    expect(o.pendingCount).toBe(0);
    for (const id of [1, 2, 3]) expect(t.nodes.get(id)!.state.registers.get('kv')!.state.get(enc('x'))).toBeUndefined();
  });
});

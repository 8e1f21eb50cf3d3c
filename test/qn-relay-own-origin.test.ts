/**
 * A relay forwards only a message its link sent as itself (docs/PROTOCOL.md §15.5): a member
 * that asks another to relay a message claiming that relay (or a third member) as its origin
 * must not have it delivered, or the destination takes it, unsealed, as the relay's own.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { encodeEnvelope, type QnBody } from '../wire/qn.js';
import { Trio, DOMAIN } from './domain-trio.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('QN relay: a member cannot speak as another through it', () => {
  it('a vote request claiming the relay as origin is not relayed: the destination keeps its term', () => {
    const t = new Trio(31);
    t.run(600);
    const [adv, relay, dest] = [3, 1, 2];
    const term = t.nodes.get(dest)!.raft.term;
    const body: QnBody = { t: 'vote', term: term + 7, lastIndex: 999, lastTerm: term + 7, pre: false };
    // Member 3 hands member 1 an envelope from 1 to 2, unsealed.
    t.nodes.get(relay)!.handleDatagram(t.now, adv, encodeEnvelope({ domain: DOMAIN, from: relay, to: dest, ttl: 8, body }));
    t.deliver();
    expect(t.nodes.get(dest)!.raft.term).toBe(term);
    expect(t.nodes.get(relay)!.stats.relayed).toBe(0);
  });

  it('a forged acknowledgement from a cut-off follower does not commit an entry only the leader holds', () => {
    const t = new Trio(32);
    t.run(600);
    const l = t.leader()!;
    const [adv, f] = [1, 2, 3].filter((x) => x !== l.id);
    // The adversary is a member driven by hand; the follower hears nothing from the leader.
    t.stop(adv);
    t.cut.add(`${l.id}>${f}`);
    const r = l.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }]);
    if ('refused' in r) throw new Error(r.refused);
    t.deliver();
    const index = l.raft.lastIndex;
    // The adversary asks f to relay to the leader an acknowledgement "from f" of everything.
    const ack: QnBody = { t: 'appendResp', term: l.raft.term, ok: true, index };
    t.nodes.get(f)!.handleDatagram(t.now, adv, encodeEnvelope({ domain: DOMAIN, from: f, to: l.id, ttl: 8, body: ack }));
    t.deliver();
    expect(t.nodes.get(f)!.raft.lastIndex).toBeLessThan(index);
    // Only the leader holds the entry: it must not be reported committed (nor be committed).
    t.deliver();
    expect(t.events.get(l.id)!.some((e) => e.type === 'outcome' && e.seq === r.seq && e.committed)).toBe(false);
    expect(l.raft.commit).toBeLessThan(index);
  });
});

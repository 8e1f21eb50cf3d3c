/**
 * Containment of the QN core (issue 13): nothing a peer sends throws out of DomainNode, Raft
 * or DomainState, nothing unapplicable is stored, and only members speak for a domain. Each
 * regression test is named after the attack it reproduces.
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { encodeBody, encodeEnvelope, sealedHeader, type QnBody } from '../wire/qn.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { DomainNode } from '../core/qn/node.js';
import { EntryKind, MAX_TERM, Raft, Role, encodeConfig, type LogEntry } from '../core/qn/raft.js';
import { encodeCandidate } from '../core/qn/state.js';
import { Rng } from '../testing/sim/rng.js';
import { Trio, DOMAIN, OUTSIDER } from './domain-trio.js';
import { DOMAIN_SIM_DEFAULTS, runDomainSim } from '../testing/sim/domain.js';
import { createHash, createHmac, createPrivateKey, createPublicKey, diffieHellman } from 'node:crypto';
import { publicKeyOf } from '../crypto/primitives.js';
import { StaticRelaySealer } from '../core/qn/seal.js';

/** The box of the §15.5 test vector (PROTOCOL.md). */
const VECTOR = '090530f5616891f7ee78ee0c58f9762bf786';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const HUGE = 2 ** 53 - 1;

describe('QN containment: hostile values from a member are dropped and counted, never thrown', () => {
  const lone = (disk = new MemDomainStore(), applied: LogEntry[] = []): Raft =>
    new Raft(
      {
        id: 2,
        initialMembers: [1, 2, 3],
        stored: disk.load(),
        sm: { apply: (e) => applied.push(e), snapshot: () => new Uint8Array(), restore: () => true },
        random: (a) => a,
      },
      0,
    );
  const app = (n: number): { term: number; cmd: Uint8Array }[] =>
    Array.from({ length: n }, () => ({ term: 1, cmd: new Uint8Array([EntryKind.Noop]) }));

  it('conflicting append: a leader that overwrites a committed index is refused (conflicts-committed), the log is unchanged', () => {
    const disk = new MemDomainStore();
    const r = lone(disk);
    expect(r.handleMessage(1, 1, { t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 10, entries: app(10) })).toBeUndefined();
    expect(r.commit).toBe(10);
    disk.persist(r.ready()!.writes);
    const before = disk.entries.map((e) => `${e.term}/${e.index}`).join();
    const why = r.handleMessage(2, 1, {
      t: 'append',
      term: 2,
      prevIndex: 4,
      prevTerm: 1,
      commit: 10,
      entries: [{ term: 2, cmd: new Uint8Array([EntryKind.Noop]) }],
    });
    expect(why).toBe('conflicts-committed');
    disk.persist(r.ready()?.writes ?? []);
    expect(disk.entries.map((e) => `${e.term}/${e.index}`).join()).toBe(before);
    expect(r.lastIndex).toBe(10);
  });

  it('huge term in appendResp: 2^53-1 from a member is dropped; the leader keeps its term and elections still encode', () => {
    const t = new Trio(1);
    t.run(600);
    const leader = t.leader()!;
    const term = leader.raft.term;
    const other = [1, 2, 3].find((x) => x !== leader.id)!;
    t.inject(other, leader.id, { t: 'appendResp', term: HUGE, ok: true, index: 1 });
    expect(leader.stats.drops['out-of-bounds']).toBe(1);
    expect(leader.raft.term).toBe(term);
    // The domain keeps committing, and a later election (term + 1) still encodes.
    t.isolate(leader.id);
    t.run(1500);
    t.isolate(leader.id, false);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
  });

  it('removal notices: only a committed entry contradicts one (bad-removal); a leader ignores one past its commit without a violation', () => {
    const t = new Trio(3);
    t.run(600);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(300);
    const leader = t.leader()!;
    const [f, other] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    // A committed entry that is not a configuration without the receiver: the notice lies.
    t.inject(other.id, f.id, { t: 'removed', index: f.raft.commit });
    expect(f.stats.drops['bad-removal']).toBe(1);
    t.inject(other.id, leader.id, { t: 'removed', index: leader.raft.commit });
    expect(leader.stats.drops['bad-removal']).toBe(1);
    // Past the leader's commit it cannot tell a deposed view from a lie: ignored, and counted apart.
    t.inject(other.id, leader.id, { t: 'removed', index: leader.raft.commit + 5 });
    expect(leader.stats.drops['removal-while-leading']).toBe(1);
    expect(leader.stats.drops['bad-removal']).toBe(1);
    expect(leader.coherenceState).toBe('coherent');
    expect(t.put('k2', 'v')).toBe('committed');
  });

  it('removal notices in honest runs: the membership seeds that found false bad-removal drops (a deposed leader, a stale uncommitted entry) are clean', () => {
    // `make soak`'s membership run (loss 0.1, duplication 0.02, reordering 0.1): these seeds
    // counted honest notices as bad-removal before only committed entries could contradict one.
    for (const seed of [1000527, 1001604, 1004691, 1010627, 1016055]) {
      const r = runDomainSim({ ...DOMAIN_SIM_DEFAULTS, loss: 0.1, dup: 0.02, reorder: 0.1, membership: true, nodes: 3, seed });
      expect({ seed, violations: r.violations }).toEqual({ seed, violations: [] });
      expect(r.converged).toBe(true);
    }
  });

  it('huge term in votes: 2^53-1 and MAX_TERM+1 in vote and voteResp are dropped; MAX_TERM itself is stored and only stops elections', () => {
    const t = new Trio(2);
    t.run(600);
    const f = t.follower()!;
    const term = f.raft.term;
    for (const bad of [HUGE, MAX_TERM + 1]) {
      t.inject(t.leader()!.id, f.id, { t: 'vote', term: bad, lastIndex: 1, lastTerm: 1, pre: false });
      t.inject(t.leader()!.id, f.id, { t: 'voteResp', term: bad, granted: true, pre: false });
    }
    expect(f.stats.drops['out-of-bounds']).toBe(4);
    expect(f.raft.term).toBe(term);
    // A lone Raft pushed to MAX_TERM by a member: it cannot campaign, and says so (no throw).
    const r = lone();
    r.handleMessage(1, 1, { t: 'append', term: MAX_TERM, prevIndex: 0, prevTerm: 0, commit: 0, entries: [] });
    expect(r.term).toBe(MAX_TERM);
    r.handleTimeout(10_000);
    r.handleTimeout(20_000);
    expect(r.stats.termExhausted).toBeGreaterThan(0);
    expect(r.role).toBe(Role.Follower);
  });

  it('huge term already on disk (stored by a version without the bound): the member is fenced at start, not crashed at its next election', () => {
    const disk = new MemDomainStore();
    disk.persist([{ kind: 'hard', term: HUGE, vote: 0 }]);
    const n = new DomainNode(
      {
        domain: DOMAIN,
        name: 'd',
        id: 2,
        members: [1, 2, 3],
        links: [1, 3],
        registers: [{ name: 'kv', kind: 'map' }],
        seed: 1,
        stored: disk.load(),
        random: (a) => a,
      },
      0,
    );
    expect(n.fencedCause).toMatch(/stored term 9007199254740991 exceeds/);
    expect(n.pollTimeout()).toBe(Infinity);
    expect(() => n.handleTimeout(10_000)).not.toThrow();
  });

  it('malformed Config entry: an append carrying an undecodable or non-canonical configuration is never journaled', () => {
    const disk = new MemDomainStore();
    const r = lone(disk);
    for (const cmd of [
      new Uint8Array([EntryKind.Config, 0xff]),
      new Uint8Array([EntryKind.Config, 0]),
      encodeConfig([3, 1]),
      new Uint8Array([EntryKind.Config, 1, 0]),
      new Uint8Array([9]),
    ]) {
      expect(r.handleMessage(1, 1, { t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 1, entries: [{ term: 1, cmd }] })).toBe(
        'bad-entry',
      );
    }
    disk.persist(r.ready()?.writes ?? []);
    expect(disk.entries).toHaveLength(0);
    expect(r.members).toEqual([1, 2, 3]);
    // A valid one is accepted: the check is not a blanket refusal.
    expect(
      r.handleMessage(1, 1, {
        t: 'append',
        term: 1,
        prevIndex: 0,
        prevTerm: 0,
        commit: 1,
        entries: [{ term: 1, cmd: encodeConfig([1, 2, 3, 4]) }],
      }),
    ).toBeUndefined();
    expect(r.members).toEqual([1, 2, 3, 4]);
  });

  it('garbage snapshot: a snapshot that does not restore is dropped whole; the state and log are untouched', () => {
    const t = new Trio(3);
    t.run(600);
    expect(t.put('a', '1')).toBe('committed');
    const f = t.follower()!;
    const digest = f.state.digest();
    const commit = f.raft.commit;
    const rng = new Rng(5);
    for (const data of [rng.bytes(300), new Uint8Array([commit + 50, 1, 5, 0x6b, 0x76]), new Uint8Array(0)]) {
      t.inject(t.leader()!.id, f.id, {
        t: 'snap',
        term: f.raft.term,
        index: commit + 50,
        lastTerm: f.raft.term,
        members: [1, 2, 3],
        offset: 0,
        total: data.length,
        data,
      });
    }
    expect(f.stats.drops['bad-snapshot']).toBe(3);
    expect(f.raft.stats.snapshotsInstalled).toBe(0);
    expect(f.state.digest()).toEqual(digest);
    expect(f.raft.commit).toBe(commit);
    // Oversized and mismatched transfers are refused before any byte is kept.
    t.inject(t.leader()!.id, f.id, {
      t: 'snap',
      term: f.raft.term,
      index: commit + 60,
      lastTerm: f.raft.term,
      members: [1, 2, 3],
      offset: 0,
      total: 2 ** 40,
      data: new Uint8Array(10),
    });
    expect(f.stats.drops['bad-snapshot']).toBe(4);
    expect(f.raft.incomingBytes).toBe(0);
    t.run(200);
    expect(t.put('b', '2')).toBe('committed');
  });

  it("a forwarded candidate under another member's name is refused (candidate-origin-mismatch)", () => {
    const t = new Trio(4);
    t.run(600);
    const l = t.leader()!;
    const other = [1, 2, 3].filter((x) => x !== l.id);
    const cmd = encodeCandidate({
      origin: other[1],
      seq: 1,
      ops: [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('x'), value: enc('y') } }],
    });
    const last = l.raft.lastIndex;
    t.inject(other[0], l.id, { t: 'fwd', cmd });
    expect(l.stats.drops['candidate-origin-mismatch']).toBe(1);
    expect(l.raft.lastIndex).toBe(last);
  });
});

describe('QN containment: only members speak for a domain', () => {
  it('a configured peer that is not a member: every message dropped (not-a-member), no state change, no reply, no hellos', () => {
    const t = new Trio(6);
    t.run(600);
    const f = t.follower()!;
    const before = { term: f.raft.term, last: f.raft.lastIndex, leader: f.raft.leader };
    const bodies: QnBody[] = [
      {
        t: 'append',
        term: before.term + 5,
        prevIndex: before.last,
        prevTerm: f.raft.lastTerm,
        commit: before.last,
        entries: [{ term: before.term + 5, cmd: new Uint8Array([EntryKind.Noop]) }],
      },
      { t: 'vote', term: before.term + 5, lastIndex: 999, lastTerm: before.term + 5, pre: false },
      { t: 'hello', neighbours: [1, 2, 3], commit: 1 },
      { t: 'removed', index: 1 },
    ];
    for (const body of bodies) f.handleDatagram(t.now, 9, encodeEnvelope({ domain: DOMAIN, from: 9, to: f.id, ttl: 8, body }));
    // Claiming to be a member does not help: the link, not the claim, is checked first.
    f.handleDatagram(t.now, 9, encodeEnvelope({ domain: DOMAIN, from: t.leader()!.id, to: f.id, ttl: 8, body: bodies[0] }));
    expect(f.stats.drops['not-a-member']).toBe(5);
    expect({ term: f.raft.term, last: f.raft.lastIndex, leader: f.raft.leader }).toEqual(before);
    t.run(300);
    expect(t.toOutsider).toEqual([]);
    // A member will not relay for it either.
    const l = t.leader()!;
    l.handleDatagram(t.now, 9, encodeEnvelope({ domain: DOMAIN, from: 9, to: f.id, ttl: 8, body: bodies[1] }));
    expect(l.stats.relayed).toBe(0);
  });
});

describe('QN containment: relayed messages are sealed end to end by their origin (§15.5)', () => {
  /** Cut a-b both ways: their traffic must cross the third member. */
  const cutPair = (t: Trio, a: number, b: number): void => {
    t.cut.add(`${a}>${b}`);
    t.cut.add(`${b}>${a}`);
  };

  it('honest relays work: with one link cut the domain keeps committing through the third member, every relayed message opened', () => {
    const t = new Trio(21);
    t.run(600);
    const l = t.leader()!.id;
    const f = [1, 2, 3].find((x) => x !== l)!;
    cutPair(t, l, f);
    t.run(300);
    for (let i = 0; i < 5; i++) expect(t.put(`r${i}`, 'x', f)).toBe('committed');
    const relayed = [...t.nodes.values()].reduce((n, x) => n + x.stats.relayed, 0);
    expect(relayed).toBeGreaterThan(10);
    for (const n of t.nodes.values()) expect(n.stats.drops['relay-unauthenticated'] ?? 0).toBe(0);
    expect(t.nodes.get(f)!.state.digest()).toEqual(t.nodes.get(l)!.state.digest());
  });

  it('forged relay: a peer cannot make member A carry to B a message claiming to come from A', () => {
    const t = new Trio(22);
    t.run(600);
    const [a, b] = [1, 2];
    const bTerm = t.nodes.get(b)!.raft.term;
    const forged = encodeEnvelope({
      domain: DOMAIN,
      from: a,
      to: b,
      ttl: 8,
      body: { t: 'vote', term: bTerm + 7, lastIndex: 999, lastTerm: bTerm + 7, pre: false },
    });
    // From the outsider (a configured peer, not a member): A forwards nothing.
    t.nodes.get(a)!.handleDatagram(t.now, OUTSIDER, forged);
    t.deliver();
    expect(t.nodes.get(a)!.stats.drops['not-a-member']).toBe(1);
    // From member 3 acting as a relay: B refuses an unsealed message that claims A as its origin...
    t.nodes.get(b)!.handleDatagram(t.now, 3, forged);
    // ...and a seal made by 3 (or anyone but A) under A's name does not open.
    const byThree = t
      .sealer(3)
      .seal(b, sealedHeader(DOMAIN, a, b), encodeBody({ t: 'vote', term: bTerm + 7, lastIndex: 999, lastTerm: bTerm + 7, pre: false }))!;
    t.nodes
      .get(b)!
      .handleDatagram(t.now, 3, encodeEnvelope({ domain: DOMAIN, from: a, to: b, ttl: 7, body: { t: 'sealed', box: byThree } }));
    expect(t.nodes.get(b)!.stats.drops['relay-unauthenticated']).toBe(2);
    expect(t.nodes.get(b)!.raft.term).toBe(bTerm);
  });

  it('altered relay: a relay that changes any octet of a sealed message, or its from or to, has it dropped', () => {
    const t = new Trio(23);
    t.run(600);
    const [a, b] = [1, 2];
    const body: QnBody = { t: 'hello', neighbours: [3], commit: 1 };
    const box = t.sealer(a).seal(b, sealedHeader(DOMAIN, a, b), encodeBody(body))!;
    const target = t.nodes.get(b)!;
    const send = (from: number, to: number, bx: Uint8Array): void =>
      target.handleDatagram(t.now, 3, encodeEnvelope({ domain: DOMAIN, from, to, ttl: 7, body: { t: 'sealed', box: bx } }));
    // The genuine one opens (no drop)...
    send(a, b, box);
    expect(target.stats.drops['relay-unauthenticated'] ?? 0).toBe(0);
    // ...every single-octet change does not.
    for (let i = 0; i < box.length; i++) {
      const bad = box.slice();
      bad[i] ^= 0x01;
      send(a, b, bad);
    }
    expect(target.stats.drops['relay-unauthenticated']).toBe(box.length);
    send(3, b, box); // re-attributed to the relay itself
    expect(target.stats.drops['relay-unauthenticated']).toBe(box.length + 1);
    // Re-addressed to another member: it does not open there either.
    t.nodes.get(3)!.handleDatagram(t.now, 1, encodeEnvelope({ domain: DOMAIN, from: 1, to: 3, ttl: 8, body: { t: 'sealed', box } }));
    expect(t.nodes.get(3)!.stats.drops['relay-unauthenticated']).toBe(1);
  });
});

describe('relay seal construction (core/qn/seal.ts)', () => {
  it('relay seal test vector: matches an independent computation from node:crypto, and opens only at the destination', () => {
    const sA = new Uint8Array(32).fill(1);
    const sB = new Uint8Array(32).fill(2);
    const a = { privateKey: sA, publicKey: publicKeyOf(sA) };
    const b = { privateKey: sB, publicKey: publicKeyOf(sB) };
    const header = sealedHeader(0xdeadbeef, 1, 2);
    const body = encodeBody({ t: 'removed', index: 5 });
    expect(Buffer.from(header).toString('hex')).toBe('40deadbeef0102');
    expect(Buffer.from(body).toString('hex')).toBe('0905');
    const box = new StaticRelaySealer(a, new Map([[2, b.publicKey]])).seal(2, header, body)!;
    // The same construction written out with node:crypto alone (PROTOCOL.md §15.5).
    const raw = (k: Uint8Array, prefix: string): Buffer => Buffer.concat([Buffer.from(prefix, 'hex'), k]);
    const shared = diffieHellman({
      privateKey: createPrivateKey({ key: raw(sA, '302e020100300506032b656e04220420'), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: raw(b.publicKey, '302a300506032b656e032100'), format: 'der', type: 'spki' }),
    });
    const ck = createHash('blake2s256').update('Spook QN relay v1').update(a.publicKey).update(b.publicKey).digest();
    const temp = createHmac('blake2s256', ck).update(shared).digest();
    const k = createHmac('blake2s256', temp).update(Uint8Array.of(1)).digest();
    const tag = createHmac('blake2s256', k).update(header).update(body).digest().subarray(0, 16);
    expect(Buffer.from(box).toString('hex')).toBe(Buffer.concat([body, tag]).toString('hex'));
    expect(Buffer.from(box).toString('hex')).toBe(VECTOR);
    // B opens it as from A; nobody else, and not under another header.
    expect(new StaticRelaySealer(b, new Map([[1, a.publicKey]])).open(1, header, box)).toEqual(body);
    const c3 = { privateKey: new Uint8Array(32).fill(3), publicKey: publicKeyOf(new Uint8Array(32).fill(3)) };
    expect(new StaticRelaySealer(c3, new Map([[1, a.publicKey]])).open(1, header, box)).toBeUndefined();
    expect(new StaticRelaySealer(b, new Map([[1, a.publicKey]])).open(1, sealedHeader(0xdeadbeef, 1, 3), box)).toBeUndefined();
  });
});

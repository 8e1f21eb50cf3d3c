/**
 * Large values on QN domains (docs/PROTOCOL.md §15.9): a candidate up to its register's
 * maxValueBytes travels as fragments on each link, commits on every member (directly, through
 * a relay, under loss and reordering), survives a restart and a catch-up by snapshot, is
 * refused over the limit with the limit named, and a hostile member's fragments stay within
 * the quota of its link while the domain keeps committing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { openDomain } from '../client/domain.js';
import { SpookError } from '../client/admin-client.js';
import { DeltaOp } from '../wire/delta.js';
import { MAX_QN_MESSAGE_LEN, QN_MAX_DATAGRAM, encodeEnvelope, type QnBody } from '../wire/qn.js';
import { fragmentLen } from '../wire/messages.js';
import type { MapState } from '../core/register/map.js';
import { DOMAIN, Trio } from './domain-trio.js';
import { runDomainSim } from '../testing/sim/domain.js';
import { QnLinks, type LinkOptions } from '../core/qn/links.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const MiB = 1 << 20;

function big(n: number, seed = 1): Uint8Array {
  const v = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) v[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return v;
}

const valueAt = (t: Trio, id: number, key: string): Uint8Array | undefined =>
  (t.nodes.get(id)!.state.registers.get('kv')!.state as MapState).get(enc(key))?.value;

const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.from(a).equals(Buffer.from(b));

/** Propose a set of `value` at `id` and run until its outcome. */
function putBig(t: Trio, id: number, key: string, value: Uint8Array, ms = 20_000): string {
  const r = t.nodes.get(id)!.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(key), value } }]);
  if ('refused' in r) return `refused: ${r.refused}`;
  return t.await(id, r.seq, ms);
}

/** Piece `index` of a fragmented message of `total` bytes, laid out as a sender would. */
function frag(msgId: number, total: number, index: number, fill = 0): QnBody {
  const count = Math.ceil(total / (QN_MAX_DATAGRAM - 100));
  return { t: 'frag', msgId, total, index, count, bytes: new Uint8Array(fragmentLen(total, count, index)).fill(fill) };
}

describe('large values on a QN domain', () => {
  it('a 1 MiB value proposed at a follower commits on every member, byte for byte', () => {
    const t = new Trio(1);
    t.run(1000);
    const f = t.follower()!;
    const v = big(MiB);
    expect(putBig(t, f.id, 'big', v)).toBe('committed');
    t.run(500);
    for (const id of [1, 2, 3]) expect(same(valueAt(t, id, 'big'), v)).toBe(true);
    // The forward to the leader and the leader's appends to both followers went as fragments.
    expect(f.links.stats.messagesFragmented).toBeGreaterThanOrEqual(1);
    expect(t.leader()!.links.stats.messagesFragmented).toBeGreaterThanOrEqual(2);
    // Nothing is left half-assembled anywhere.
    for (const n of t.nodes.values()) expect(n.links.totalHeld).toBe(0);
  });

  it('through a relay: the two ends of a cut link get the value reassembled and cut again by the third member', () => {
    const t = new Trio(2);
    t.run(1000);
    const leader = t.leader()!;
    const [a] = [1, 2, 3].filter((x) => x !== leader.id);
    // The leader cannot hear `a` directly: appends to it are sealed, relayed, fragmented per hop.
    t.cut.add(`${leader.id}>${a}`).add(`${a}>${leader.id}`);
    t.run(1000);
    const v = big(300 * 1024, 2);
    expect(putBig(t, a, 'relayed', v)).toBe('committed');
    t.run(1000);
    for (const id of [1, 2, 3]) expect(same(valueAt(t, id, 'relayed'), v)).toBe(true);
    const relay = t.nodes.get([1, 2, 3].find((x) => x !== leader.id && x !== a)!)!;
    expect(relay.stats.relayed).toBeGreaterThan(0);
    expect(relay.links.stats.messagesReassembled).toBeGreaterThanOrEqual(1);
    for (const n of t.nodes.values()) expect(n.stats.drops['relay-unauthenticated'] ?? 0).toBe(0);
  });

  it('a member that was down catches up (log), one behind a compacted log gets a snapshot, and a restart keeps the value', () => {
    const t = new Trio(3, { maxLogEntries: 8 });
    t.run(1000);
    const leader = t.leader()!;
    const [down, other] = [1, 2, 3].filter((x) => x !== leader.id);
    t.stop(down);
    const v = big(MiB, 3);
    expect(putBig(t, leader.id, 'big', v)).toBe('committed');
    // Enough entries after it that the leader's log no longer reaches back to the down member.
    for (let i = 0; i < 30; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
    expect(t.leader()!.raft.snapshotIndex).toBeGreaterThan(1);
    t.start(down);
    t.run(8000);
    const n = t.nodes.get(down)!;
    expect(n.raft.stats.snapshotsInstalled).toBeGreaterThanOrEqual(1);
    expect(same(valueAt(t, down, 'big'), v)).toBe(true);
    expect(n.raft.applied).toBe(t.leader()!.raft.applied);
    // A restart from the store: the value is there at once, before any leader speaks.
    t.stop(other);
    t.start(other);
    expect(same(valueAt(t, other, 'big'), v)).toBe(true);
  });

  it('a value over the register maxValueBytes, and a candidate over the domain limit, are refused naming the limit', () => {
    const t = new Trio(4, { registers: [{ name: 'kv', kind: 'map', maxValueBytes: 64 * 1024 }] });
    t.run(1000);
    const l = t.leader()!;
    expect(putBig(t, l.id, 'fits', big(64 * 1024))).toBe('committed');
    expect(putBig(t, l.id, 'over', big(64 * 1024 + 1))).toMatch(/refused: .*maxValueBytes is 65536/);
    expect(l.maxCandidate).toBe(64 * 1024 + 64 * 1024);
    // Two values each within the register limit, together past the candidate limit.
    const r = l.propose(t.now, [
      { register: 'kv', delta: { op: DeltaOp.Set, key: enc('a'), value: big(64 * 1024) } },
      { register: 'kv', delta: { op: DeltaOp.Set, key: enc('b'), value: big(64 * 1024) } },
    ]);
    expect(r).toEqual({
      code: 'too-large',
      refused: expect.stringMatching(/candidate encodes to \d+ bytes; the limit is 131072 \(the largest register maxValueBytes \+ 65536\)/),
    });
    // Default: 1 MiB.
    const d = new Trio(5);
    d.run(1000);
    expect(putBig(d, d.leader()!.id, 'over', big(MiB + 1))).toMatch(/refused: .*maxValueBytes is 1048576/);
    // A key of 4 KiB is fine; one more octet is not.
    const k = d
      .leader()!
      .propose(d.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array(4096).fill(65), value: big(10) } }]);
    expect('seq' in k).toBe(true);
    const k2 = d
      .leader()!
      .propose(d.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array(4097).fill(65), value: big(10) } }]);
    expect(k2).toEqual({ code: 'too-large', refused: expect.stringMatching(/MAX_KEY_LEN is 4096/) });
    // A member forwarding a candidate past the limit: dropped at the leader, nothing journaled.
    const f = [1, 2, 3].find((x) => x !== l.id)!;
    const before = l.raft.lastIndex;
    t.inject(f, l.id, { t: 'fwd', cmd: new Uint8Array(l.maxCandidate + 1) });
    expect(l.stats.drops['oversized-candidate']).toBe(1);
    expect(l.raft.lastIndex).toBe(before);
  });

  it('undecided large candidates are bounded in bytes (maxPendingBytes), and the waiting one commits once the member is back', () => {
    const t = new Trio(7, { maxPendingBytes: 300 * 1024 });
    t.run(1000);
    const f = t.follower()!;
    t.isolate(f.id);
    t.run(1000);
    const set = (key: string) => f.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(key), value: big(200 * 1024) } }]);
    const first = set('p1');
    expect('seq' in first).toBe(true);
    expect(set('p2')).toEqual({
      refused: expect.stringMatching(/pending buffer full \(\d+ bytes of 1 candidates; the limit maxPendingBytes is 307200\)/),
    });
    t.isolate(f.id, false);
    expect(t.await(f.id, (first as { seq: number }).seq, 10_000)).toBe('committed');
    expect('seq' in set('p2')).toBe(true);
  });

  it('a hostile member: fragments that never complete, contradict, or come from elsewhere stay within its link quota; the domain commits on', () => {
    const quota = 3 * MiB;
    const t = new Trio(6, { fragmentQuotaBytes: quota });
    t.run(1000);
    const l = t.leader()!;
    const h = [1, 2, 3].find((x) => x !== l.id)!;
    // Never completing: the first piece of 200 messages of 1 MiB each.
    for (let id = 1; id <= 200; id++) t.inject(h, l.id, frag(id, MiB, 0));
    expect(l.links.heldBytes(h)).toBeLessThanOrEqual(quota);
    expect(l.links.heldBytes(h)).toBeGreaterThan(0);
    expect(l.stats.drops['fragment-quota']).toBeGreaterThan(150);
    // Larger than the quota at all: refused at its first piece.
    t.inject(h, l.id, frag(999, MAX_QN_MESSAGE_LEN - 10, 0));
    expect(l.links.heldBytes(h)).toBeLessThanOrEqual(quota);
    // Contradictory: a known message with another layout, a piece again with other bytes.
    const before = l.stats.drops['fragment-conflict'] ?? 0;
    t.inject(h, l.id, frag(1, MiB + 5000, 1));
    t.inject(h, l.id, frag(2, MiB, 0, 7));
    expect(l.stats.drops['fragment-conflict']).toBe(before + 2);
    // From another member's name, or for another member: fragments travel one hop.
    const other = [1, 2, 3].find((x) => x !== l.id && x !== h)!;
    l.handleDatagram(t.now, h, encodeEnvelope({ domain: DOMAIN, from: other, to: l.id, ttl: 1, body: frag(5, 4000, 0) }));
    l.handleDatagram(t.now, h, encodeEnvelope({ domain: DOMAIN, from: h, to: other, ttl: 1, body: frag(5, 4000, 0) }));
    expect(l.stats.drops['fragment-misrouted']).toBe(2);
    // A message that reassembles into a fragment is malformed.
    const inner = encodeEnvelope({ domain: DOMAIN, from: h, to: l.id, ttl: 1, body: frag(6, 3000, 0) });
    const padded = new Uint8Array(3000);
    padded.set(inner);
    const m0 = l.stats.drops.malformed ?? 0;
    const n = Math.ceil(3000 / (QN_MAX_DATAGRAM - 100));
    for (let i = 0; i < n; i++) {
      const len = fragmentLen(3000, n, i);
      const off = i * Math.ceil(3000 / n);
      t.inject(h, l.id, { t: 'frag', msgId: 77, total: 3000, index: i, count: n, bytes: padded.subarray(off, off + len) });
    }
    expect((l.stats.drops.malformed ?? 0) - m0).toBe(1);
    // The domain commits on, large values included, while the hostile link's partials are held.
    expect(t.put('after', 'ok')).toBe('committed');
    const v = big(512 * 1024, 6);
    expect(putBig(t, l.id, 'big-after', v)).toBe('committed');
    t.run(500);
    for (const id of [1, 2, 3]) expect(same(valueAt(t, id, 'big-after'), v)).toBe(true);
    // Stale partials go (nothing of them heard for the stale time): memory returns to zero.
    t.run(6000);
    expect(l.links.heldBytes(h)).toBe(0);
  });

  it('under loss, duplication, reordering, link cuts, partitions and crashes (seeded simulator, 3 and 5 members, heavy faults on half the seeds): 1 MiB values commit and every member converges', () => {
    let large = 0;
    let held = 0;
    for (let seed = 100; seed < 116; seed++) {
      const heavy = seed % 2 === 1 ? { loss: 0.3, dup: 0.2, reorder: 0.3 } : {};
      const r = runDomainSim({ seed, largeChance: 0.2, largeValueBytes: MiB, ops: 30, nodes: seed % 3 === 0 ? 5 : 3, ...heavy });
      expect(r.violations).toEqual([]);
      expect(r.converged).toBe(true);
      large += r.largeCommitted;
      // Later small sets of the same keys may overwrite them: some large value is in some final state.
      if (r.largestValue === MiB) held++;
    }
    expect(large).toBeGreaterThanOrEqual(15);
    expect(held).toBeGreaterThanOrEqual(3);
  }, 300_000);
});

describe('QnLinks (core/qn/links.ts): one link, sans I/O', () => {
  const opts = (drops: string[]): LinkOptions => ({
    quota: 4 * MiB,
    outBytes: 4 * MiB,
    rtoMs: 200,
    staleMs: 1000,
    ackDelayMs: 5,
    random: (a, b) => a + Math.floor(Math.random() * (b - a)),
    drop: (r) => void drops.push(r),
  });

  /** Runs a and b for `ms` from `now`; b may be replaced by `restart` after `at` pieces. */
  function run(
    a: QnLinks,
    bRef: { b: QnLinks },
    now: number,
    ms: number,
    o: { restartAt?: number; acks?: boolean; untilIdle?: boolean } = {},
  ) {
    let got: Uint8Array | undefined;
    let delivered = 0;
    const drops: string[] = [];
    for (const end = now + ms; now < end && !got; now += 5) {
      const toB: QnBody[] = [];
      a.pump(now, (_to, body) => toB.push(body));
      for (const body of toB) {
        if (body.t !== 'frag') continue;
        if (++delivered === o.restartAt) bRef.b = new QnLinks(opts(drops));
        got = bRef.b.onFragment(now, 1, body) ?? got;
      }
      const toA: QnBody[] = [];
      bRef.b.pump(now, (_to, body) => toA.push(body));
      if (o.acks !== false) for (const body of toA) if (body.t === 'fragAck') a.onAck(now, 2, body);
      if (o.untilIdle && a.deadline() === Infinity) break;
    }
    return { got, now };
  }

  it('a receiver that restarts mid-message (forgetting what it acknowledged): the pieces it acknowledged are sent again and it gets the message whole; a resend Raft makes after the delivered window goes through whole', () => {
    const a = new QnLinks(opts([]));
    const ref = { b: new QnLinks(opts([])) };
    const msg = big(200 * 1024, 8);
    expect(a.send(0, 2, msg, { key: 'm', remember: true })).toBe(true);
    const r1 = run(a, ref, 0, 3000, { restartAt: 150, untilIdle: true });
    // Before, the pieces acknowledged before the restart were never sent again: the link counted the
    // message delivered though the restarted receiver never completed it (Raft's resend delivered it).
    expect(r1.got && same(r1.got, msg)).toBe(true);
    expect(a.deadline()).toBe(Infinity); // nothing pending: every piece acknowledged by the restarted receiver
    // A resend at once is moot (the answer would be on its way): not queued.
    expect(a.send(r1.now, 2, msg, { key: 'm', remember: true })).toBe(true);
    expect(a.stats.messagesFragmented).toBe(1);
    // After the window it is a new message, delivered whole.
    const later = r1.now + 5000;
    expect(a.send(later, 2, msg, { key: 'm', remember: true })).toBe(true);
    expect(a.stats.messagesFragmented).toBe(2);
    const r2 = run(a, ref, later, 3000);
    expect(r2.got && same(r2.got, msg)).toBe(true);
  });

  it('a receiver that never acknowledges: after 2 × staleMs without progress the sender sends the message again under a new id', () => {
    const a = new QnLinks(opts([]));
    const ref = { b: new QnLinks(opts([])) };
    expect(a.send(0, 2, big(200 * 1024, 9), { key: 'w', remember: true })).toBe(true);
    run(a, ref, 0, 2500, { acks: false });
    expect(a.stats.restarts).toBeGreaterThanOrEqual(1);
    expect(a.stats.fragmentsResent).toBeGreaterThan(0);
    // What the silent receiver holds stays within its quota (old ids' partials are evicted as stale).
    expect(ref.b.totalHeld).toBeLessThanOrEqual(4 * MiB);
  });

  it('a resend while under way is the same message; past the byte budget a new one is refused (Raft resends)', () => {
    const a = new QnLinks({ ...opts([]), outBytes: 300 * 1024 });
    expect(a.send(0, 2, big(200 * 1024), { key: 'x', remember: true })).toBe(true);
    expect(a.send(0, 2, big(200 * 1024), { key: 'x', remember: true })).toBe(true);
    expect(a.stats.messagesFragmented).toBe(1);
    expect(a.send(0, 2, big(200 * 1024), { key: 'y', remember: true })).toBe(false);
    expect(a.stats.outFull).toBe(1);
    // Another link has its own budget.
    expect(a.send(0, 3, big(200 * 1024), { key: 'y', remember: true })).toBe(true);
  });
});

describe('large values through three spookd on loopback (a QN domain)', () => {
  const lab = inProcess('spook-dlarge', ['a', 'b', 'c'], portBase('domain-large.test.ts'));
  const d: Record<string, Spookd> = {};
  const sock = (n: string): string => join(lab.dir, `${n}.sock`);

  beforeAll(async () => {
    for (const n of ['a', 'b', 'c']) {
      const others = ['a', 'b', 'c'].filter((x) => x !== n);
      const domains = [{ name: 'main', members: others, registers: [{ name: 'kv', kind: 'map', maxValueBytes: 2 * MiB }] }];
      d[n] = new Spookd(configOf(lab, n, others, { domains }), lab.keys[n], logOf(lab, n));
    }
    await Promise.all(Object.values(d).map((s) => s.start()));
  }, 30_000);

  afterAll(async () => {
    await Promise.all(Object.values(d).map((s) => s.stop()));
    rmSync(lab.dir, { recursive: true, force: true });
  });

  it('a 2 MiB value set through openDomain commits and reads back byte for byte at another member; one octet more is too-large naming the limit', async () => {
    const dom = await openDomain('main', { socket: sock('a') });
    const other = await openDomain('main', { socket: sock('c') });
    try {
      await until('a leader at a', () => d.a.domain('main').node.raft.leader !== 0, 15_000);
      const v = big(2 * MiB, 9);
      const t0 = performance.now();
      const w = await dom.register('kv').set('big', v, { timeoutMs: 30_000 });
      expect(w).toMatchObject({ verdict: 'committed' });
      await until('c holds it', () => valueAtHost(d.c, 'big') !== undefined, 30_000);
      const ms = performance.now() - t0;
      const got = await other.register('kv').get('big');
      expect(same(got.bytes, v)).toBe(true);
      const links = Object.values(d).map((s) => s.domain('main').node.links.stats);
      console.log(
        `2 MiB through a 3-member domain on loopback: ${ms.toFixed(0)} ms until a second member applied it; links ${JSON.stringify(links)}`,
      );
      const err = await dom
        .register('kv')
        .set('over', new Uint8Array(2 * MiB + 1))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SpookError);
      expect(err).toMatchObject({ code: 'too-large', message: expect.stringMatching(/maxValueBytes is 2097152/) });
    } finally {
      dom.close();
      other.close();
    }
  }, 60_000);
});

function valueAtHost(s: Spookd, key: string): Uint8Array | undefined {
  return (s.domain('main').node.state.registers.get('kv')!.state as MapState).get(enc(key))?.value;
}

/**
 * A library-level fuzz of the QN core (issue 13): 100,000 hostile datagrams, random bytes and
 * mutations of well-formed messages of every kind (fields set to 0, 1, 2^32-1, 2^48, 2^53-1,
 * off by one, random; lists dropped, repeated, emptied; byte fields flipped and cut), from a
 * member link and from a configured non-member, into the members of a healthy three-member
 * domain that keeps running meanwhile. No exception may escape, the domain must keep
 * committing afterwards, and what a peer can make a member hold stays within its bounds.
 */
import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope, type QnBody, type QnEnvelope } from '../wire/qn.js';
import { QN_DROPS } from '../core/qn/node.js';
import { Rng } from '../testing/sim/rng.js';
import { DeltaOp } from '../wire/delta.js';
import { DOMAIN, OUTSIDER, Trio } from './domain-trio.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const EXTREMES = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 48, 2 ** 53 - 1];
const MAX_SNAPSHOT = 1 << 20;

function mutateNumber(rng: Rng, v: number): number {
  switch (rng.int(0, 3)) {
    case 0:
      return rng.pick(EXTREMES);
    case 1:
      return Math.max(0, Math.min(2 ** 53 - 1, v + rng.int(-2, 2)));
    case 2:
      return rng.int(0, 1000);
    default:
      return Math.floor(rng.float() * 2 ** 53);
  }
}

function mutateBytes(rng: Rng, b: Uint8Array): Uint8Array {
  const c = b.slice();
  switch (rng.int(0, 3)) {
    case 0:
      if (c.length) c[rng.int(0, c.length - 1)] ^= 1 << rng.int(0, 7);
      return c;
    case 1:
      return c.subarray(0, rng.int(0, c.length));
    case 2:
      return rng.bytes(rng.int(0, 64));
    default:
      return new Uint8Array([...c, ...rng.bytes(rng.int(1, 8))]);
  }
}

/** One field of the envelope or its body changed (numbers, lists, bytes), re-encoded. */
function mutateEnvelope(rng: Rng, e: QnEnvelope): QnEnvelope {
  const m: QnEnvelope = { ...e, body: { ...e.body } as QnBody };
  const b = m.body as unknown as Record<string, unknown>;
  const fields = ['from', 'to', 'ttl', ...Object.keys(b).filter((k) => k !== 't')];
  for (let n = rng.int(1, 3); n > 0; n--) {
    const f = rng.pick(fields);
    if (f === 'from' || f === 'to') m[f] = rng.chance(0.5) ? rng.pick([1, 2, 3, OUTSIDER, 0]) : mutateNumber(rng, m[f]);
    else if (f === 'ttl') m.ttl = rng.int(0, 255);
    else {
      const v = b[f];
      if (typeof v === 'number') b[f] = mutateNumber(rng, v);
      else if (typeof v === 'boolean') b[f] = !v;
      else if (v instanceof Uint8Array) b[f] = mutateBytes(rng, v);
      else if (Array.isArray(v)) {
        const arr = [...v];
        const op = rng.int(0, 3);
        if (op === 0) arr.length = 0;
        else if (op === 1 && arr.length) arr.push(arr[0]);
        else if (op === 2 && arr.length) {
          const i = rng.int(0, arr.length - 1);
          arr[i] =
            typeof arr[i] === 'number'
              ? mutateNumber(rng, arr[i])
              : 'cmd' in arr[i]
                ? { term: mutateNumber(rng, arr[i].term), cmd: rng.chance(0.5) ? mutateBytes(rng, arr[i].cmd) : arr[i].cmd }
                : { from: mutateNumber(rng, arr[i].from), to: mutateNumber(rng, arr[i].to) }; // a fragAck range
        } else arr.reverse();
        b[f] = arr;
      }
    }
  }
  return m;
}

describe('QN fuzz (core/qn/node.ts)', () => {
  it('100,000 fuzzed QN messages from a member link and a non-member link: nothing escapes, the domain keeps committing, buffers stay bounded', () => {
    const rng = new Rng(1313);
    const t = new Trio(77, { maxLogEntries: 16, maxSnapshotBytes: MAX_SNAPSHOT, maxPending: 64 });
    // A corpus of well-formed traffic of every kind: elections, appends, a relay (cut link), a snapshot (a member left behind).
    const corpus: { from: number; bytes: Uint8Array }[] = [];
    const perKind = new Map<string, number>();
    t.tap = (from, _to, bytes) => {
      const k = decodeEnvelope(bytes).body.t;
      if ((perKind.get(k) ?? 0) >= 400) return;
      perKind.set(k, (perKind.get(k) ?? 0) + 1);
      corpus.push({ from, bytes });
    };
    t.run(600);
    const lag = t.follower()!.id;
    t.isolate(lag);
    for (let i = 0; i < 40; i++) t.put(`k${i}`, `v${i}`);
    t.isolate(lag, false);
    t.run(500);
    const l0 = t.leader()!.id;
    const f0 = [1, 2, 3].find((x) => x !== l0)!;
    t.put('f', 'x', f0); // a follower's candidate travels as a fwd
    // A large one travels as fragments (§15.9): frag and fragAck join the corpus.
    const big = t.nodes
      .get(f0)!
      .propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('big'), value: new Uint8Array(5000).fill(7) } }]);
    expect(t.await(f0, (big as { seq: number }).seq, 2000)).toBe('committed');
    t.cut.add(`${l0}>${f0}`).add(`${f0}>${l0}`);
    t.run(300);
    for (let i = 0; i < 5; i++) t.put(`r${i}`, 'x', f0);
    t.cut.clear();
    t.run(200);
    t.tap = undefined;
    const kinds = new Set(corpus.map((c) => decodeEnvelope(c.bytes).body.t));
    for (const k of ['vote', 'voteResp', 'append', 'appendResp', 'snap', 'snapResp', 'fwd', 'hello', 'sealed', 'frag', 'fragAck'])
      expect(kinds).toContain(k);
    corpus.push({ from: 1, bytes: encodeEnvelope({ domain: DOMAIN, from: 1, to: 2, ttl: 8, body: { t: 'removed', index: 3 } }) });

    const heap0 = process.memoryUsage().heapUsed;
    let member = 0;
    let outsider = 0;
    for (let i = 0; i < 100_000; i++) {
      const to = rng.int(1, 3);
      const fromOutsider = rng.chance(0.4);
      const link = fromOutsider ? OUTSIDER : rng.pick([1, 2, 3].filter((x) => x !== to));
      let bytes: Uint8Array;
      const how = rng.int(0, 9);
      if (how === 0) bytes = rng.bytes(rng.int(0, 300));
      else if (how === 1) {
        // Plausible header, random body.
        bytes = new Uint8Array([
          0x40,
          DOMAIN >>> 24,
          (DOMAIN >>> 16) & 0xff,
          (DOMAIN >>> 8) & 0xff,
          DOMAIN & 0xff,
          link,
          to,
          8,
          rng.int(0, 13),
          ...rng.bytes(rng.int(0, 200)),
        ]);
      } else if (how === 2) bytes = mutateBytes(rng, rng.pick(corpus).bytes);
      else {
        const env = decodeEnvelope(rng.pick(corpus).bytes);
        const m = mutateEnvelope(rng, { ...env, to: rng.chance(0.8) ? to : env.to });
        try {
          bytes = encodeEnvelope(m);
        } catch {
          continue; // a value the encoder itself refuses (a peer could not send it either)
        }
      }
      fromOutsider ? outsider++ : member++;
      t.nodes.get(to)!.handleDatagram(t.now, link, bytes);
      if (i % 50 === 0) t.run(5);
      else t.deliver();
    }
    expect(member + outsider).toBeGreaterThan(95_000);

    // Bounded: nothing a peer sent is held beyond the limits.
    for (const n of t.nodes.values()) {
      expect(n.raft.incomingBytes).toBeLessThanOrEqual(MAX_SNAPSHOT);
      expect(n.pendingCount).toBeLessThanOrEqual(64);
      // Partial fragmented messages: within each link's quota (twice the largest message).
      expect(n.links.totalHeld).toBeLessThanOrEqual(3 * 2 * (n.maxCandidate + 1024));
      for (const k of Object.keys(n.stats.drops)) expect(QN_DROPS).toContain(k);
    }
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(200 * 1024 * 1024);
    const drops: Record<string, number> = {};
    for (const n of t.nodes.values()) for (const [k, v] of Object.entries(n.stats.drops)) drops[k] = (drops[k] ?? 0) + v!;
    console.log(`fuzz: ${member} from members, ${outsider} from a non-member; drops ${JSON.stringify(drops)}`);
    expect(drops['not-a-member']).toBeGreaterThanOrEqual(outsider);

    // The honest domain keeps committing afterwards. (A member is trusted with Raft's safety and
    // liveness, so a mutated message from a member link may legitimately have told one member
    // it was removed, or given it entries of its own: a majority is what must carry on.)
    t.run(3000);
    for (let i = 0; i < 5; i++) expect(t.put(`after${i}`, 'ok')).toBe('committed');
    t.run(500);
    const leader = t.leader()!;
    const agree = [...t.nodes.values()].filter(
      (n) => n.raft.applied === leader.raft.applied && n.state.digest().hi === leader.state.digest().hi,
    );
    expect(agree.length).toBeGreaterThanOrEqual(2);
  });
});

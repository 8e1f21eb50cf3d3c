/**
 * A difference (docs/PROTOCOL.md §15.4, "Catch-up by difference") costs the follower a copy of
 * its whole state and a full snapshot write when it installs, however small it is: a member
 * claiming leadership sent 34-octet differences (base = the follower's applied index, index
 * one past it, the follower's own digest, no registers), each one index further, and a
 * follower of 200,000 keys spent 384 ms and wrote 9.8 MB for each (review). A follower now
 * refuses a difference whose index is less than DIFF_MIN_ENTRIES past its base (no leader
 * sends one), and installs at most one difference per electionMs (`diff-rate`: the leader
 * sends entries instead).
 */
import { describe, expect, it } from 'vitest';
import { DomainNode } from '../core/qn/node.js';
import { DIFF_MIN_ENTRIES } from '../core/qn/raft.js';
import { DomainState } from '../core/qn/state.js';
import { hashHex } from '../core/register/hash.js';
import type { MapState } from '../core/register/map.js';
import { Writer } from '../wire/buffer.js';
import { decodeEnvelope, encodeEnvelope, type QnBody } from '../wire/qn.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const SELF = 10;
const ADV = 20;
const DOMAIN = 0x51;
const ELECTION_MS = 1000;
const specs = [{ name: 'kv', kind: 'map' as const }];

/** A follower whose state (index 1, `keys` keys) and snapshot are on its store. */
function follower(keys: number): DomainNode {
  const st = new DomainState(1, specs, []);
  const reg = st.registers.get('kv')!;
  reg.version = 1;
  for (let i = 0; i < keys; i++) (reg.state as MapState).put(enc(`key-${i}`), enc(`value-${i}`), 1);
  st.index = 1;
  const n = new DomainNode(
    {
      domain: DOMAIN,
      name: 'd',
      id: SELF,
      members: [SELF, ADV, 30],
      links: [ADV, 30],
      registers: specs,
      seed: 1,
      stored: {
        term: 1,
        vote: 0,
        base: 1,
        baseTerm: 1,
        entries: [],
        commit: 1,
        nextSeq: 1,
        pending: [],
        snapshot: { index: 1, term: 1, members: [SELF, ADV, 30], data: st.snapshot() },
      },
      random: (a) => a,
      electionMs: ELECTION_MS,
      heartbeatMs: 100,
    },
    0,
  );
  for (let r = n.ready(); r; r = n.ready()) n.advance();
  return n;
}

/** A valid difference from `base` to `index` that changes no register: the follower's own digest. */
function sameState(n: DomainNode, base: number, index: number): Uint8Array {
  const d = n.state.digest();
  const data = new Writer(64).varint(index).varint(base).u32(d.hi).u32(d.lo).varint(0).varint(0).varint(0).finish();
  return encodeEnvelope({
    domain: DOMAIN,
    from: ADV,
    to: SELF,
    ttl: 1,
    body: { t: 'snap', term: 1, index, lastTerm: 1, members: [SELF, ADV, 30], base, baseTerm: 1, offset: 0, total: data.length, data },
  });
}

/** Feed one datagram at `now`; the snapshot octets written and the answers. */
function feed(n: DomainNode, now: number, dg: Uint8Array): { written: number; answers: QnBody[] } {
  n.handleDatagram(now, ADV, dg);
  let written = 0;
  const answers: QnBody[] = [];
  for (let r = n.ready(); r; r = n.ready()) {
    for (const w of r.writes) if (w.kind === 'snapshot') written += w.data.length;
    for (const m of r.messages) answers.push(decodeEnvelope(m.bytes).body);
    n.advance();
  }
  return { written, answers };
}

describe('a follower bounds what differences cost it (core/qn/raft.ts onSnap)', () => {
  it('a difference less than DIFF_MIN_ENTRIES past its base is refused (bad-snapshot, answered at its base) before anything is staged', () => {
    const n = follower(2000);
    const digest = hashHex(n.state.digest());
    for (let i = 1; i < DIFF_MIN_ENTRIES; i++) {
      const { written, answers } = feed(n, 10 + i, sameState(n, 1, 1 + i));
      expect(written).toBe(0);
      expect(answers).toEqual([{ t: 'snapResp', term: 1, index: 1, offset: 0 }]);
      expect(n.raft.incomingBufferBytes).toBe(0);
    }
    expect(n.stats.drops['bad-snapshot']).toBe(DIFF_MIN_ENTRIES - 1);
    expect(n.raft.stats.diffsInstalled).toBe(0);
    expect(n.raft.commit).toBe(1);
    expect(hashHex(n.state.digest())).toBe(digest);
  });

  it('at most one difference installed per electionMs: the next is refused (diff-rate, answered at its base), then installs once that has passed', () => {
    const n = follower(2000);
    let base = 1;
    let now = 10;
    const step = (at: number): { written: number; answers: QnBody[] } => {
      now = at;
      return feed(n, now, sameState(n, base, base + DIFF_MIN_ENTRIES));
    };
    // The first installs: a full snapshot written.
    expect(step(10).written).toBeGreaterThan(20_000);
    expect(n.raft.stats.diffsInstalled).toBe(1);
    base += DIFF_MIN_ENTRIES;
    expect(n.raft.commit).toBe(base);
    // Each next one within electionMs of it: refused, nothing written, nothing staged.
    for (const at of [11, 500, 10 + ELECTION_MS - 1]) {
      const { written, answers } = step(at);
      expect(written).toBe(0);
      expect(answers).toEqual([{ t: 'snapResp', term: 1, index: base, offset: 0 }]);
      expect(n.raft.incomingBufferBytes).toBe(0);
    }
    expect(n.stats.drops['diff-rate']).toBe(3);
    expect(n.raft.stats.diffsInstalled).toBe(1);
    expect(n.raft.commit).toBe(base);
    // electionMs after the last install: the next installs.
    expect(step(10 + ELECTION_MS).written).toBeGreaterThan(20_000);
    expect(n.raft.stats.diffsInstalled).toBe(2);
    expect(n.raft.commit).toBe(base + DIFF_MIN_ENTRIES);
  });

  it('the cost per datagram does not grow with the state: 200,000 keys against 1,000, a difference each datagram', () => {
    const per: number[] = [];
    for (const keys of [1_000, 200_000]) {
      const n = follower(keys);
      // One installs (charged once an electionMs); the rest, too close to their base or too soon, are refused.
      feed(n, 10, sameState(n, 1, 1 + DIFF_MIN_ENTRIES));
      const base = 1 + DIFF_MIN_ENTRIES;
      const t0 = performance.now();
      let written = 0;
      for (let i = 0; i < 40; i++) written += feed(n, 20 + i, sameState(n, base, base + 1 + (i % 2) * DIFF_MIN_ENTRIES + i)).written;
      per.push((performance.now() - t0) / 40);
      expect(written).toBe(0);
      expect(n.raft.stats.diffsInstalled).toBe(1);
    }
    expect(per[1]).toBeLessThan(10 * per[0] + 2);
  });
});

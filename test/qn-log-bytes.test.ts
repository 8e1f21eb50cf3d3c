/**
 * The committed log a member keeps is bounded in octets, not only in entries (docs/PROTOCOL.md
 * §15.4, "Snapshots and the retained log tail"). Before, a member compacted only past
 * maxLogEntries (100,000) applied entries, whatever their size: a leader (or any member
 * forwarding candidates, or a client overwriting one key) made every member hold up to
 * 100,000 candidates of maxCandidateBytes each in memory and in its journal, whatever the
 * registers' quotas.
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import type { DomainNode } from '../core/qn/node.js';
import { CollapseReject, encodeCandidate } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import { fragmentLen } from '../wire/messages.js';
import { QN_MAX_DATAGRAM, encodeEnvelope, type QnBody } from '../wire/qn.js';
import { Trio } from './domain-trio.js';

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const MiB = 1 << 20;

/** Octets of commands in the member's log (its memory for entries). */
function logOctets(n: DomainNode): number {
  let s = 0;
  for (let i = n.raft.firstIndex; i <= n.raft.lastIndex; i++) s += n.raft.entryAt(i)!.cmd.length;
  return s;
}

/** `body` from ADV as a sender would send it: whole, or as fragments of at most a datagram. */
let msgId = 1;
function send(n: DomainNode, now: number, body: QnBody): number {
  const bytes = encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body });
  const dgrams: Uint8Array[] = [];
  if (bytes.length <= QN_MAX_DATAGRAM) dgrams.push(bytes);
  else {
    const count = Math.ceil(bytes.length / (QN_MAX_DATAGRAM - 100));
    const piece = Math.ceil(bytes.length / count);
    const id = msgId++;
    for (let i = 0; i < count; i++) {
      const part = bytes.subarray(i * piece, i * piece + fragmentLen(bytes.length, count, i));
      const frag: QnBody = { t: 'frag', msgId: id, total: bytes.length, index: i, count, bytes: part };
      dgrams.push(encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body: frag }));
    }
  }
  let sent = 0;
  for (const d of dgrams) {
    n.handleDatagram(now, ADV, d);
    sent += d.length;
  }
  for (let r = n.ready(); r; r = n.ready()) n.advance();
  return sent;
}

describe('a member keeps a log of bounded octets (core/qn/raft.ts maybeCompact)', () => {
  it('a leader committing 1 MiB candidates that the quota rejects: the log is compacted by octets, not kept to 100,000 entries', () => {
    // One map register of 64 KiB: the state (and any snapshot) stays within about 4.3 MiB.
    const n = handMember({ registers: [{ name: 'kv', kind: 'map', maxBytes: 64 * 1024 }] });
    const K = 40;
    let sent = 0;
    for (let i = 1; i <= K; i++) {
      const cmd = encodeCandidate({
        origin: ADV,
        seq: i,
        ops: [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([1]), value: new Uint8Array(MiB - 64).fill(i) } }],
      });
      sent += send(n, i, { t: 'append', term: 1, prevIndex: i - 1, prevTerm: i === 1 ? 0 : 1, commit: i, entries: [{ term: 1, cmd }] });
    }
    expect(n.raft.commit).toBe(K);
    expect(n.raft.applied).toBe(K);
    expect(n.state.outcomeOf(ADV, K)).toBe(CollapseReject.QuotaExceeded);
    expect(n.state.registers.get('kv')!.state.size()).toBe(0);
    const held = logOctets(n);
    console.log(
      `sent ${(sent / MiB).toFixed(1)} MiB; log holds ${(held / MiB).toFixed(1)} MiB in ${n.raft.lastIndex - n.raft.firstIndex + 1} entries; state ${n.state.snapshot().length} octets; maxSnapshotBytes ${(n.raft.maxSnapshotBytes / MiB).toFixed(1)} MiB`,
    );
    // The log holds no more than the largest snapshot the registers' quotas allow.
    expect(held).toBeLessThanOrEqual(n.raft.maxSnapshotBytes);
    expect(n.raft.snapshotIndex).toBeGreaterThan(0);
  });

  it('a domain whose logs are compacted by octets: a member cut off meanwhile catches up from a snapshot, every member the same', () => {
    const t = new Trio(5, { registers: [{ name: 'kv', kind: 'map', maxBytes: 64 * 1024 }] });
    t.run(1000);
    expect(t.put('a', '1')).toBe('committed');
    const L = t.leader()!;
    const lag = t.follower()!;
    t.isolate(lag.id);
    for (let i = 0; i < 12; i++) {
      const r = L.propose(t.now, [
        { register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([i]), value: new Uint8Array(MiB - 64) } },
      ]);
      expect('seq' in r && t.await(L.id, r.seq, 5000)).toBe('rejected');
    }
    expect(L.raft.firstIndex).toBeGreaterThan(2);
    expect(logOctets(L)).toBeLessThanOrEqual(L.raft.maxSnapshotBytes);
    t.isolate(lag.id, false);
    expect(t.put('b', '2')).toBe('committed');
    t.run(2000);
    expect(lag.raft.stats.snapshotsInstalled).toBeGreaterThan(0);
    for (const n of t.nodes.values()) expect(n.state.digest()).toEqual(L.state.digest());
  });
});

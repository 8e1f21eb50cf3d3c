/**
 * What an incoming snapshot transfer makes a follower allocate (docs/PROTOCOL.md §15.4,
 * "InstallSnapshot, chunked"): its staging buffer grows with the octets received, up to the
 * transfer's total. Before, the buffer of `total` octets (up to maxSnapshotBytes, 260 MiB at
 * the default quota) was allocated and zero-filled at a transfer's first chunk, so a member
 * claiming leadership that started a new transfer in each datagram (a new index, offset 0, a
 * few octets of data) made the follower allocate the whole bound per ~60-octet datagram.
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import { encodeEnvelope, type QnBody } from '../wire/qn.js';
import { STAGING_FIRST_BYTES } from '../core/qn/raft.js';
import { DeltaOp } from '../wire/delta.js';
import { Trio } from './domain-trio.js';

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const MiB = 1 << 20;

describe('a follower stages a snapshot in a buffer that grows with what it received (core/qn/raft.ts onSnap)', () => {
  it('a transfer restarted in every datagram: the follower allocates about what was sent, not the claimed total each time', () => {
    const n = handMember();
    const bound = n.raft.maxSnapshotBytes;
    expect(bound).toBeGreaterThan(256 * MiB);
    const snap = (index: number, offset: number, total: number, data: Uint8Array): number => {
      const body: QnBody = { t: 'snap', term: 1, index, lastTerm: 1, members: [SELF, ADV, HAND.third], offset, total, data };
      const bytes = encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body });
      n.handleDatagram(1, ADV, bytes);
      for (let r = n.ready(); r; r = n.ready()) n.advance();
      return bytes.length;
    };
    let sent = 0;
    let allocated = 0;
    const t0 = performance.now();
    const N = 50;
    for (let i = 0; i < N; i++) {
      sent += snap(100 + i, 0, bound, new Uint8Array(16));
      allocated += n.raft.incomingBufferBytes;
    }
    const ms = (performance.now() - t0) / N;
    console.log(`${N} restarts, ${sent} octets sent: ${(allocated / MiB).toFixed(0)} MiB staged in all (${ms.toFixed(2)} ms a datagram)`);
    expect(n.raft.incomingBytes).toBe(16);
    // A first allocation of at most the largest chunk (64 KiB) per restart.
    expect(allocated).toBeLessThanOrEqual(N * 64 * 1024);
    expect(n.raft.incomingBufferBytes).toBe(STAGING_FIRST_BYTES);
  });

  it('an honest snapshot larger than the first allocation is staged whole and installed, every member the same', () => {
    const t = new Trio(9, { maxLogEntries: 64 });
    t.run(1000);
    const L = t.leader()!;
    const F = t.follower()!;
    t.isolate(F.id);
    // About 3 MiB of state (2.9 MiB encoded): candidates of 200 keys of 1 KiB, then enough entries to compact.
    for (let c = 0; c < 15; c++) {
      const ops = Array.from({ length: 200 }, (_, k) => ({
        register: 'kv',
        delta: { op: DeltaOp.Set, key: new Uint8Array([c, k]), value: new Uint8Array(1024).fill(c + k) } as const,
      }));
      const r = L.propose(t.now, ops);
      expect('seq' in r && t.await(L.id, r.seq, 3000)).toBe('committed');
    }
    for (let i = 0; i < 70; i++)
      L.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([99, i]), value: new Uint8Array(1) } }]);
    t.run(500);
    expect(L.raft.firstIndex).toBeGreaterThan(F.raft.lastIndex + 1);
    expect(L.state.snapshot().length).toBeGreaterThan(2.5 * MiB);
    t.isolate(F.id, false);
    t.run(3000);
    expect(F.raft.stats.snapshotsInstalled).toBe(1);
    expect(F.raft.incomingBufferBytes).toBe(0);
    expect(t.put('after', '1')).toBe('committed');
    t.run(200);
    for (const n of t.nodes.values()) expect(n.state.digest()).toEqual(L.state.digest());
  });
});

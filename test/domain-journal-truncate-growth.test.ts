/**
 * A domain member's journal holds what its log holds, not what a leader ever sent
 * (drivers/store/domain-store.ts). The journal is appended to (entries, truncations) and
 * rewritten from the image only at a compaction, which follows applied entries: a member
 * claiming leadership that never commits, and that overwrites its own uncommitted entries
 * again and again (conflicting terms at the same index, as a new leader's append may),
 * left every overwritten entry in the file for good, however little the log held.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { driveReady } from '../core/qn/persist.js';
import { type RaftMsg } from '../core/qn/raft.js';
import { encodeCandidate } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import { encodeEnvelope } from '../wire/qn.js';
import { HAND, handMember, soloDomain } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A candidate of about `octets` octets: one set of key `k` in register `kv`. */
const app = (octets: number, term: number): { term: number; cmd: Uint8Array } => ({
  term,
  cmd: encodeCandidate({
    origin: HAND.adv,
    seq: 1,
    ops: [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([107]), value: new Uint8Array(octets) } }],
  }),
});

describe('domain journal size under a leader that overwrites its uncommitted entries', () => {
  it('stays within a small multiple of what the log holds (conflicting entries at index 1, alternated)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-qn-trunc-'));
    dirs.push(dir);
    const disk = new FileDomainStore(dir, 'never');
    const node = handMember({ stored: disk.load() });
    const N = 4000;
    const SIZE = 1000;
    let sent = 0;
    for (let i = 0; i < N; i++) {
      // Term 2 throughout; the one entry alternates between terms 1 and 2, so each append
      // conflicts with the entry the last one left at index 1: truncated and appended again.
      const body: RaftMsg = { t: 'append', term: 2, prevIndex: 0, prevTerm: 0, commit: 0, entries: [app(SIZE, 1 + (i % 2))] };
      const bytes = encodeEnvelope({ domain: HAND.domain, from: HAND.adv, to: HAND.self, ttl: 1, body });
      sent += bytes.length;
      node.handleDatagram(10 + i, HAND.adv, bytes);
      driveReady(
        node,
        disk,
        () => undefined,
        () => undefined,
      );
    }
    expect(node.stats.drops).toEqual({});
    expect(node.raft.lastIndex).toBe(1);
    expect(node.raft.commit).toBe(0);
    const journal = statSync(join(dir, 'journal')).size;
    disk.close();
    // The log holds one entry of SIZE octets (and term, vote, commit): the journal at most the
    // rewrite's floor (1 MiB) past that. Before, 4,144,001 octets, growing with every append.
    console.log(`journal ${journal} octets after ${sent} octets sent (${N} appends of ${SIZE}), the log holding 1 entry`);
    expect(journal).toBeLessThanOrEqual(1024 * 1024 + 4 * SIZE);

    // The state replays from the journal as it was.
    const again = new FileDomainStore(dir, 'never');
    const st = again.load();
    expect(st.entries.length).toBe(1);
    expect(st.entries[0].term).toBe(2 - (N % 2 === 0 ? 0 : 1));
    again.close();
  });

  it('an honest leader appending at full rate never has its journal rewritten between compactions', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-qn-trunc-'));
    dirs.push(dir);
    const disk = new FileDomainStore(dir, 'never');
    const { node, put } = soloDomain(disk, 100_000);
    let last = statSync(join(dir, 'journal')).size;
    let shrunk = 0;
    // Small writes (the most records per octet of command) and larger ones, 4.6 MB in all.
    for (let i = 0; i < 6000; i++) {
      put(`k${i}`, i % 2 === 0 ? 'v' : 'v'.repeat(1500), 1000 + i);
      const size = statSync(join(dir, 'journal')).size;
      if (size < last) shrunk++;
      last = size;
    }
    expect(node.raft.commit).toBeGreaterThan(6000);
    expect(node.raft.firstIndex).toBe(1); // no compaction: every rewrite would have been the new one
    expect(shrunk).toBe(0);
    disk.close();
  });
});

/**
 * Review 39 (exceptions and containment), domain journal replay: a domain write may encode to
 * the largest `maxValueBytes` (at most 64 MiB) + 64 KiB (OPERATIONS.md, "Large values on
 * domains"), and it is journaled as one record (Pending at the proposer, Append at every member:
 * one record per AppendEntries), but the journal's reader takes records of at most
 * MAX_JOURNAL_RECORD (16 MiB, PROTOCOL.md "Journal"): a larger one reads as a torn tail. At the
 * next start the journal is cut there, silently but for a `torn tail cut` line, and with it every
 * record after it: entries acknowledged to the leader, commits, the term and the vote.
 */
import { describe, expect, it } from 'vitest';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { DomainNode } from '../core/qn/node.js';
import { driveReady } from '../core/qn/persist.js';
import { DeltaOp } from '../wire/delta.js';
import { enc, tempDirs } from './helpers.js';

const tmp = tempDirs('qn-journal-large-write');
const MiB = 1 << 20;

/** A single-member domain (it leads itself: every write commits at once) of one map with 32 MiB values. */
function solo(dir: string) {
  const disk = new FileDomainStore(dir, 'always');
  const node = new DomainNode(
    {
      domain: 1,
      name: 'd',
      id: 1,
      members: [1],
      links: [],
      registers: [{ name: 'kv', kind: 'map', maxValueBytes: 32 * MiB }],
      seed: 3,
      stored: disk.load(),
      random: (a) => a,
      electionMs: 100,
      heartbeatMs: 20,
      maxLogEntries: 1000,
    },
    0,
  );
  const sync = (): void =>
    void driveReady(
      node,
      disk,
      () => {},
      () => {},
    );
  node.handleTimeout(500);
  sync();
  const put = (k: string, v: Uint8Array, at: number): void => {
    const r = node.propose(at, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: v } }]);
    expect(r).toHaveProperty('seq');
    node.handleTimeout(at);
    sync();
  };
  return { disk, node, put };
}

describe('a domain write larger than a journal record', () => {
  it('a committed 20 MiB write (within maxValueBytes) and the writes after it survive a restart', () => {
    const dir = tmp();
    const a = solo(dir);
    a.put('big', new Uint8Array(20 * MiB).fill(7), 1000);
    for (let i = 0; i < 5; i++) a.put(`k${i}`, enc(`v${i}`), 1001 + i);
    const commit = a.node.raft.commit;
    const term = a.node.raft.term;
    const keys = a.node.state.registers.get('kv')!.state.size();
    expect(keys).toBe(6);
    a.disk.close();
    const b = solo(dir);
    const after = {
      tornBytes: b.disk.tornBytes,
      commitAtLeast: b.node.raft.commit >= commit,
      termAtLeast: b.node.raft.term >= term,
      keys: b.node.state.registers.get('kv')!.state.size(),
    };
    b.disk.close();
    expect(after).toEqual({ tornBytes: 0, commitAtLeast: true, termAtLeast: true, keys: 6 });
  }, 60_000);
});

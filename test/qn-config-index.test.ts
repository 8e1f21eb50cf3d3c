/**
 * Raft.inAnyConfig is answered from a count of ids over the configurations held (qn-unknown-origin-lookup):
 * the count must follow every change to them (Config entries appended, truncated, compacted
 * away, replaced by a snapshot, loaded), so it always says what a scan would.
 */
import { describe, expect, it } from 'vitest';
import { Raft, encodeConfig, type NodeId, type RaftMsg } from '../core/qn/raft.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';

const SELF = 10;
const ADV = 20;

function lone(stored = new MemDomainStore().load()): Raft {
  return new Raft(
    {
      id: SELF,
      initialMembers: [SELF, ADV, 30],
      stored,
      sm: { apply: () => undefined, snapshot: () => new Uint8Array([1]), restore: () => true },
      random: (a) => a,
      electionMs: 1_000_000,
      maxLogEntries: 8,
    },
    0,
  );
}

/** What a scan of the configurations held says, for every id that ever appears here. */
function agrees(r: Raft): void {
  const configs = (r as unknown as { configs: { members: NodeId[] }[] }).configs;
  for (let id = 1; id < 200; id++) expect(r.inAnyConfig(id), `id ${id}`).toBe(configs.some((c) => c.members.includes(id)));
}

const cfg = (extra: number): { term: number; cmd: Uint8Array } => ({
  term: 1,
  cmd: encodeConfig([SELF, ADV, 30, extra].sort((a, b) => a - b)),
});

describe('inAnyConfig follows the configurations held', () => {
  it('through appends, truncation, compaction, a snapshot and a reload', () => {
    const store = new MemDomainStore();
    const r = lone();
    const step = (m: RaftMsg): void => {
      r.handleMessage(1, ADV, m);
      const rd = r.ready();
      if (rd) store.persist(rd.writes);
    };
    // Five configurations, uncommitted.
    step({ t: 'append', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [100, 101, 102, 103, 104].map(cfg) });
    expect(r.inAnyConfig(104)).toBe(true);
    agrees(r);
    // A leader of term 2 replaces the last three: 102-104 truncated.
    step({ t: 'append', term: 2, prevIndex: 2, prevTerm: 1, commit: 0, entries: [{ ...cfg(110), term: 2 }] });
    expect(r.inAnyConfig(103)).toBe(false);
    expect(r.inAnyConfig(110)).toBe(true);
    agrees(r);
    // Committed, and more entries: the log is compacted (maxLogEntries 8) behind the snapshot.
    const more = [111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122].map((x) => ({ ...cfg(x), term: 2 }));
    step({ t: 'append', term: 2, prevIndex: 3, prevTerm: 2, commit: 15, entries: more });
    expect(r.commit).toBe(15);
    expect(r.inAnyConfig(100)).toBe(false);
    agrees(r);
    // A snapshot past the log replaces every configuration.
    const data = new Uint8Array([1]);
    step({ t: 'snap', term: 2, index: 40, lastTerm: 2, members: [SELF, ADV, 150], offset: 0, total: 1, data });
    expect(r.inAnyConfig(150)).toBe(true);
    expect(r.inAnyConfig(122)).toBe(false);
    agrees(r);
    step({ t: 'append', term: 2, prevIndex: 40, prevTerm: 2, commit: 40, entries: [{ ...cfg(160), term: 2 }] });
    agrees(r);
    // Loaded back from what was persisted: the same answers.
    const back = lone(store.load());
    agrees(back);
    expect(back.inAnyConfig(160)).toBe(true);
    expect(back.inAnyConfig(150)).toBe(true);
  });
});

/**
 * A member that joined (started outside the bootstrap configuration) proposes only once caught up
 * (rev 1.34, §15.2). As a leader it hears no append: it is caught up once it has applied an entry
 * of its own term. Before this test's fix, a joined member that won an election after a restart
 * refused every local proposal for as long as it led.
 */
import { describe, expect, it } from 'vitest';
import { DomainNode } from '../core/qn/node.js';
import { EMPTY_STORED } from '../core/qn/persist.js';
import { Role, encodeConfig } from '../core/qn/raft.js';

describe('QN: a member that joined, leading', () => {
  it('proposes once it has applied an entry of its own term', () => {
    // Alone in its configuration (as after the others were removed), started with join: not in `members`.
    const n = new DomainNode(
      {
        domain: 7,
        name: 'd',
        id: 5,
        members: [9],
        links: [],
        registers: [{ name: 'kv', kind: 'map' }],
        seed: 1,
        // Its log holds a committed configuration of itself alone (the others were removed).
        stored: { ...EMPTY_STORED, term: 1, entries: [{ index: 1, term: 1, cmd: encodeConfig([5]) }], commit: 1 },
        random: (a) => a,
        electionMs: 100,
        heartbeatMs: 20,
      },
      0,
    );
    let now = 0;
    for (let i = 0; i < 100 && n.raft.role !== Role.Leader; i++) {
      now += 50;
      n.handleTimeout(now);
      for (let r = n.ready(); r; r = n.ready()) n.advance();
    }
    expect(n.raft.role).toBe(Role.Leader);
    for (let i = 0; i < 5; i++) {
      now += 10;
      n.handleTimeout(now);
      for (let r = n.ready(); r; r = n.ready()) n.advance();
    }
    const r = n.propose(now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([1]), value: new Uint8Array([1]) } }] as never);
    expect(r).toHaveProperty('seq');
  });
});

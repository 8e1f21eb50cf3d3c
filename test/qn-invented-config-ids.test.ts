/**
 * Review 39 (state that grows with peer input): a domain member keeps `everMember`, every node id
 * of every committed configuration it has seen (core/qn/node.ts after(): only ever added to). A
 * member playing leader (any member may: a follower takes appends of any term ≥ its own, and the
 * leader's commit index) appends one Config entry a datagram, each of 64 node ids never seen
 * before (a valid configuration that keeps this member and the sender), and commits it: each
 * adds up to 62 ids to the set, for ~400 octets, never released (the log itself is compacted
 * and bounded, the set is not).
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type DomainNode } from '../core/qn/node.js';
import { EntryKind, encodeConfig, type RaftMsg } from '../core/qn/raft.js';
import { encodeEnvelope } from '../wire/qn.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heap = (): number => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const ROUNDS = 4000;

const member = (): DomainNode => handMember({ maxLogEntries: 1000 });

/** ROUNDS appends from ADV as leader, each one entry committed at once; `cmd(i)` is entry i's command. */
function drive(cmd: (i: number) => Uint8Array): { n: DomainNode; wire: number; held: number; ms: number } {
  const h0 = heap();
  const n = member();
  let wire = 0;
  const t0 = performance.now();
  for (let i = 0; i < ROUNDS; i++) {
    const body: RaftMsg = {
      t: 'append',
      term: 1,
      prevIndex: i,
      prevTerm: i === 0 ? 0 : 1,
      commit: i + 1,
      entries: [{ term: 1, cmd: cmd(i) }],
    };
    const bytes = encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body });
    wire += bytes.length;
    n.handleDatagram(10 + i, ADV, bytes);
    for (let r = n.ready(); r; r = n.ready()) n.advance();
  }
  const ms = performance.now() - t0;
  const held = heap() - h0;
  return { n, wire, held, ms };
}

describe('node ids of committed configurations a member invents', () => {
  it('a member holds a bounded set of node ids whatever configurations a leader commits', () => {
    const base = 2 ** 40;
    // For scale: the same number of appends, each a configuration of the three real members.
    const honest = drive(() => encodeConfig([SELF, ADV, 30]));
    const hostile = drive((i) => {
      const ids = [SELF, ADV];
      for (let k = 0; k < 62; k++) ids.push(base + i * 62 + k);
      return encodeConfig(ids);
    });
    const size = (n: DomainNode): number => (n as unknown as { everMember: Set<number> }).everMember.size;
    console.log(
      `honest: ${honest.n.raft.commit} committed, everMember ${size(honest.n)}, ${honest.wire} octets, heap +${(honest.held / 2 ** 20).toFixed(2)} MiB, ${honest.ms.toFixed(0)} ms; ` +
        `hostile: ${hostile.n.raft.commit} committed, everMember ${size(hostile.n)}, ${hostile.wire} octets, heap +${(hostile.held / 2 ** 20).toFixed(2)} MiB, ${hostile.ms.toFixed(0)} ms`,
    );
    expect(hostile.n.raft.commit).toBe(ROUNDS); // every append was taken and committed
    expect(honest.n.raft.commit).toBe(ROUNDS);
    expect(EntryKind.Config).toBeDefined();
    // Bounded: the links and bootstrap members (3 here), and at most four configurations' worth of other ids.
    expect(size(hostile.n)).toBeLessThanOrEqual(3 + 4 * 64);
    // (The heap is not asserted: the ids of the configurations the log still holds are counted
    // for the known-member check, raft.ts configIds, freed as the log is compacted.)
  });
});

/**
 * Review 39n-1 (CPU per message): every datagram whose envelope names an origin (env.from) that
 * is not a bootstrap member, a remembered member or vouched for makes DomainNode.knownMember()
 * call Raft.inAnyConfig(), which walks EVERY configuration in the log (core/qn/raft.ts
 * inAnyConfig: `configs.some(c => c.members.includes(id))`), i.e. O(Σ members over all Config
 * entries held). A member playing leader (a follower takes appends of any term ≥ its own)
 * appends Config entries of 64 ids: the victim keeps one `configs` element per entry (the
 * uncommitted bound allows 32,768, and committed ones stay until compaction, maxLogEntries
 * 100,000 by default). Then each ~20-octet datagram naming an unknown origin (its own hello
 * with env.from forged: a member may relay, so env.from ≠ link passes) costs a walk of
 * ~131,000 configurations × 64 ids before it is dropped `not-a-member`.
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import { type DomainNode } from '../core/qn/node.js';
import { encodeConfig, type RaftMsg } from '../core/qn/raft.js';
import { encodeEnvelope } from '../wire/qn.js';

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const PER_APPEND = 4096;

const member = (): DomainNode => handMember({ electionMs: 1_000_000_000 });

function drain(n: DomainNode): void {
  for (let r = n.ready(); r; r = n.ready()) n.advance();
}

/** `committed` appends of PER_APPEND Config entries committed at once, then `uncommitted` more left past the commit index. */
function fill(n: DomainNode, committed: number, uncommitted: number): void {
  const ids = [SELF, ADV, 30];
  for (let k = 0; k < 61; k++) ids.push(100 + k);
  const cmd = encodeConfig(ids);
  let last = 0;
  for (let b = 0; b < committed + uncommitted; b++) {
    const entries = Array.from({ length: PER_APPEND }, () => ({ term: 1, cmd }));
    const commit = b < committed ? last + PER_APPEND : committed * PER_APPEND;
    const body: RaftMsg = { t: 'append', term: 1, prevIndex: last, prevTerm: last === 0 ? 0 : 1, commit, entries };
    n.handleDatagram(10 + b, ADV, encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body }));
    drain(n);
    last += PER_APPEND;
  }
}

/** Mean µs per tiny datagram naming an origin nobody knows (dropped `not-a-member`). */
function probe(n: DomainNode, count: number): { us: number; octets: number } {
  const bytes = encodeEnvelope({ domain: DOMAIN, from: 999_999, to: SELF, ttl: 8, body: { t: 'hello', neighbours: [], commit: 0 } });
  const before = n.stats.drops['not-a-member'] ?? 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) n.handleDatagram(1000 + i, ADV, bytes);
  const us = ((performance.now() - t0) * 1000) / count;
  expect((n.stats.drops['not-a-member'] ?? 0) - before).toBe(count);
  return { us, octets: bytes.length };
}

describe('a datagram naming an unknown origin walks every configuration in the log', () => {
  it('costs a bounded, small amount whatever Config entries a leader appended', () => {
    const base = member();
    fill(base, 0, 0);
    const clean = probe(base, 2000);

    const n = member();
    fill(n, 24, 8); // 98,304 committed (under maxLogEntries: not compacted) + 32,768 uncommitted
    expect(n.raft.lastIndex).toBe(32 * PER_APPEND);
    expect(n.raft.commit).toBe(24 * PER_APPEND);
    expect(n.fencedCause).toBeUndefined();
    const hostile = probe(n, 200);
    console.log(
      `a ${hostile.octets}-octet datagram: ${clean.us.toFixed(2)} µs on a fresh member, ${hostile.us.toFixed(0)} µs after ${n.raft.lastIndex} Config entries ` +
        `(${(1e6 / hostile.us).toFixed(0)} such datagrams saturate a core)`,
    );
    // A message dropped before it is decoded further should cost about what it costs on a fresh member.
    expect(hostile.us).toBeLessThan(Math.max(50, 20 * clean.us));
  }, 120_000);
});

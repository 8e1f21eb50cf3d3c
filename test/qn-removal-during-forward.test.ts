/**
 * Review 39k-1: a removed member that keeps forwarding a large candidate never learns its removal.
 *
 * a9a2d2f ignores a `removed` notice while the follower "hears its leader" (now - leaderContact
 * < electionMs). Fragment traffic counts as leader contact (Raft.heardFrom: a fragAck from the
 * leader, node.ts handleDatagram). A member removed while it has a pending candidate larger than
 * one datagram re-forwards it every retryMs (max(2 heartbeats, electionMs / 2) < electionMs);
 * the leader that removed it still acknowledges the fragments (the former member is a
 * knownMember through everMember), so its leader contact never goes stale: every notice its
 * forwards and hellos draw is dropped as `removal-while-followed`, its election timer is reset
 * by each fragAck, and it stays "coherent" (a follower of a leader that no longer replicates to
 * it: its state frozen) with its candidate pending for good, never reported `unknown`.
 * Defaults of spookd's config (electionMs 1000, heartbeatMs 100).
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { Trio } from './domain-trio.js';
import { DOMAIN_SIM_DEFAULTS, runDomainSim } from '../testing/sim/domain.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('removal learnt while a large forward is under way', () => {
  it('a member removed with a large candidate pending learns its removal (candidate unknown, decoherent)', () => {
    const t = new Trio(11, { electionMs: 1000, heartbeatMs: 100 });
    t.run(6000);
    expect(t.put('k', 'v')).toBe('committed');
    t.run(1000);
    const leader = t.leader()!;
    const [stay, gone] = [1, 2, 3].filter((x) => x !== leader.id).map((x) => t.nodes.get(x)!);
    expect(gone.coherenceState).toBe('coherent');
    // The operator removes `gone` while a client's 6 KB write is pending there (forwarded as fragments).
    expect(leader.changeMembers(t.now, { remove: gone.id }).ok).toBe(true);
    const r = gone.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('big'), value: new Uint8Array(6000).fill(7) } }]);
    expect('seq' in r).toBe(true);
    t.run(500);
    expect(stay.raft.members).not.toContain(gone.id);
    expect(leader.raft.configIndex).toBeLessThanOrEqual(leader.raft.commit);
    expect(t.put('after', 'v')).toBe('committed');
    // 10 s: ten election timeouts.
    const outcome = t.await(gone.id, (r as { seq: number }).seq, 10_000);
    const drops = (gone.stats as unknown as { drops: Record<string, number> }).drops;
    expect(
      {
        outcome,
        coherence: gone.coherenceState,
        seesLaterWrite: (gone.state.registers.get('kv')!.state as { get(k: Uint8Array): unknown }).get(enc('after')) !== undefined,
      },
      `drops at the removed member: ${JSON.stringify(drops)}`,
    ).toEqual({ outcome: 'unknown', coherence: 'decoherent', seesLaterWrite: false });
  });
});

describe('the domain simulator, membership changes with large values', () => {
  // Seeds found in 300 (5000-5299) where the removed member's candidates are never decided; each
  // passes before a9a2d2f (its candidates reported unknown, as §15.6 says of a removed proposer).
  for (const seed of [5051, 5113, 5173])
    it(`seed ${seed}: every candidate of the removed member is decided`, () => {
      const r = runDomainSim({
        ...DOMAIN_SIM_DEFAULTS,
        membership: true,
        largeChance: 0.3,
        largeValueBytes: 6000,
        nodes: 3,
        seed,
        settleMs: 20_000,
      });
      expect(r.violations.slice(0, 4)).toEqual([]);
    });
});

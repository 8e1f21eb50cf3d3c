/**
 * A follower counted an acknowledgement of its own forward's fragments as contact with its
 * leader (raft.heardFrom), so a leader that had stepped down (it removed itself) kept the
 * members refusing every pre-vote while they forwarded large candidates to it: no election, the
 * membership change never committed (found by the domain simulator with large values, seeds
 * below; each failed on the tree before, at d1696d4 as well). And the simulator ended before a
 * removed member had reported its candidates: it settles only once it has.
 */
import { describe, expect, it } from 'vitest';
import { DOMAIN_SIM_DEFAULTS, runDomainSim } from '../testing/sim/domain.js';

describe('QN: fragment acknowledgements are no leader contact', () => {
  for (const seed of [5082, 5088, 5105, 5165, 5210, 5413])
    it(`seed ${seed}: a leader that removed itself is replaced, and every candidate is decided`, () => {
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

import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('reconciliation at scale', () => {
  // Attack/regression: an honest re-entanglement that must delete more than ~125,000 keys
  // overflowed the stack (`deletes.push(...entries)` in ReconRequester.onEntries): a crash
  // loop in spookd. Run in its own process: Node's default stack, as the daemon has.
  it('honest re-entanglement deleting 150,000 keys converges (no spread of unbounded arrays)', () => {
    const out = execFileSync(join(ROOT, 'node_modules/.bin/vite-node'), [join(ROOT, 'test/recon-delete-all.scenario.ts'), '150000'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    expect(r.formed).toBe(true);
    expect(r.logBase).toBeGreaterThan(1); // the follower's version was compacted away: reconciliation
    expect(r.error).toBeUndefined();
    expect(r.converged).toBe(true);
    expect(r.size).toBe(3);
    expect(r.hasOld).toBe(false);
    expect(r.hasNew).toBe(true);
    expect(r.fullTransfers).toBe(0);
  }, 60_000);
});

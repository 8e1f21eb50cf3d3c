import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, sleep, until } from '../../testing/lab/netns.js';
import type { PairSummary } from '../../client/protocol.js';

/** Rekeying: with a short rekey interval the session (and its index) is replaced while the pair keeps syncing. */
let lab: Lab;

beforeAll(async () => {
  lab = new Lab(['x', 'y'], [{ a: 'x', b: 'y', subnet: 9 }], 47500);
  for (const h of ['x', 'y'])
    lab.configure(h, [{ name: 'config', kind: 'map' }], {
      timing: { keepaliveMs: 300, silenceMs: 1500, rekeyAfterMs: 1500, sessionGraceMs: 800 },
    });
  // Both at once: their first handshakes may cross; superseded sessions expire within the test.
  await Promise.all([lab.start('x'), lab.start('y')]);
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('ETCP sessions in spookd: simultaneous start, rekeying', () => {
  it('sessions are replaced on schedule, the pair never decoheres, writes keep committing', async () => {
    const pair = (h: string, p: string): Promise<PairSummary> => lab.admin(h, 'pair', { peer: p });
    await until('entangled', async () => (await pair('x', 'y')).state === 'ENTANGLED');
    const ids = new Set<number>();
    const states = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = await lab.admin('x', 'set', { peer: 'y', register: 'config', key: `k${i}`, value: `${i}` });
      expect(r.verdict).toBe('committed');
      const [px, py] = await Promise.all([pair('x', 'y'), pair('y', 'x')]);
      ids.add(px.pairId!);
      states.add(px.state).add(py.state);
      await sleep(250);
    }
    expect(ids.size).toBeGreaterThanOrEqual(2); // at least one rekey in 5 s
    expect([...states].every((s) => s === 'ENTANGLED' || s === 'COLLAPSING')).toBe(true);
    const drops = (await lab.admin('y', 'status')).drops;
    expect(drops['data-auth-failed'] ?? 0).toBe(0);
    expect(drops['unknown-index'] ?? 0).toBe(0);
  }, 60_000);
});

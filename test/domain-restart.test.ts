/**
 * Durable promises of a domain member (issue 13): after a restart it serves its last committed
 * state at once (not index 0 until it hears a leader), even cut off; and a candidate pending at
 * the restart is still decided after it, and can be asked for by its number.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import type { MapState } from '../core/register/map.js';
import { Trio } from './domain-trio.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const dec = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);

for (const storage of ['memory', 'file'] as const) {
  describe(`restarting a domain member (${storage} storage)`, () => {
    const files = new Map<number, FileDomainStore>();
    const dir = (): string => {
      const d = mkdtempSync(join(tmpdir(), 'spook-restart-'));
      dirs.push(d);
      return d;
    };
    const dirs2 = new Map<number, string>();
    /** Node 2 keeps its state in a journal on disk (file storage); reopening it is the restart. */
    const trio = (seed: number): Trio =>
      new Trio(seed, (id) => {
        if (storage === 'memory' || id !== 2) return {};
        files.get(2)?.close();
        if (!dirs2.has(seed)) dirs2.set(seed, dir());
        const disk = new FileDomainStore(dirs2.get(seed)!, 'always');
        files.set(2, disk);
        return { store: disk };
      });
    afterEach(() => {
      for (const f of files.values()) f.close();
      files.clear();
    });

    it('a restarted, isolated member reads its last committed state at once', () => {
      const t = trio(31);
      t.run(600);
      // Node 2 must be a follower for the test to mean something: let a leader other than 2 lead.
      for (let i = 0; i < 12; i++) expect(t.put(`k${i}`, `v${i}`)).toBe('committed');
      t.run(100); // node 2 learns the last commit index from a heartbeat
      const n2 = t.nodes.get(2)!;
      const before = { applied: n2.raft.applied, digest: n2.state.digest() };
      expect(before.applied).toBeGreaterThanOrEqual(13);
      t.isolate(2);
      t.stop(2);
      const again = t.start(2);
      // Before hearing anyone: the committed state, not index 0.
      expect(again.raft.applied).toBe(before.applied);
      expect(again.state.digest()).toEqual(before.digest);
      t.run(2000); // still cut off: it stays there (decoherent) and keeps serving it
      expect(again.coherenceState).toBe('decoherent');
      expect(again.raft.applied).toBe(before.applied);
      expect(dec((again.state.registers.get('kv')!.state as MapState).get(new TextEncoder().encode('k11'))?.value)).toBe('v11');
    });

    it('a candidate pending at a restart is decided after it (and its outcome can be asked for by number)', () => {
      const t = trio(32);
      t.run(600);
      expect(t.put('a', '1')).toBe('committed');
      t.isolate(2);
      t.run(400);
      const n2 = t.nodes.get(2)!;
      const r = n2.propose(t.now, [
        { register: 'kv', delta: { op: 1, key: new TextEncoder().encode('p'), value: new TextEncoder().encode('1') } },
      ]);
      expect(r).toHaveProperty('seq');
      const seq = (r as { seq: number }).seq;
      expect(t.await(2, seq, 300)).toBe('pending');
      expect(n2.outcomeOf(seq)).toEqual({ verdict: 'pending' });
      t.stop(2);
      const again = t.start(2);
      expect(again.pendingCount).toBe(1);
      t.isolate(2, false);
      expect(t.await(2, seq, 3000)).toBe('committed');
      expect(again.outcomeOf(seq)).toEqual({ verdict: 'committed' });
      expect(again.pendingCount).toBe(0);
      expect(t.leader()!.state.digest()).toEqual(again.state.digest());
      // And after one more restart the decision is still there, from the state.
      t.stop(2);
      expect(t.start(2).outcomeOf(seq)).toEqual({ verdict: 'committed' });
    });
  });
}

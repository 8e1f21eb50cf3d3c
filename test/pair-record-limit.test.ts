/**
 * A follower logs a record with its own left-out deltas put back (§3.6.4). A ~2 MiB record that
 * leaves out 63 own pending 1 MiB writes would be logged at ~65 MiB, above MAX_PAIR_RECORD, and
 * a restart would cut it, with every record after it, as a torn tail. The whole record, its
 * deltas put back, is bounded by MAX_MESSAGE_LEN (what a sequencer could send whole): refused
 * (`elided-unknown`) before anything of it is applied.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { MapState } from '../core/register/map.js';
import { DiskStore } from '../drivers/store/store.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { MsgType, encodeCollapse, encodeMessage, type CollapseEntry } from '../wire/messages.js';
import { MAX_PAIR_RECORD } from '../wire/journal.js';
import { enc, tempDirs } from './helpers.js';

const tmp = tempDirs('pair-record-limit');
const MiB = 1 << 20;
const SEED = 11;
const REGS = [{ name: 'a', kind: 'map' as const, quota: { maxValueBytes: 64 * MiB }, log: { maxRecords: 65_536, maxBytes: 256 * MiB } }];

function open(dir: string) {
  // Logs snapshotted only past 1 GiB: as a register whose snapshot is larger than the record keeps it in its log.
  const store = new DiskStore(dir, 'always', 1024 * MiB);
  store.backgroundSnapshotBytes = Infinity;
  // localId 2 > peerId 1: the follower.
  const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: SEED, registers: REGS, writes: 'driver' }, 0);
  const loaded = [...pair.registers.values()].map((r) => store.load(r));
  return { store, pair, tornBytes: loaded.reduce((n, l) => n + l.tornBytes, 0) };
}

describe('pair log: a record the follower expands past what its log reads back', () => {
  it('a record leaving out 63 own 1 MiB writes, with a 2 MiB write of its own, is refused, not logged beyond MAX_PAIR_RECORD', () => {
    const dir = tmp();
    const f = open(dir);
    const now = 1;
    const own: Delta[] = [];
    for (let i = 1; i <= 63; i++) {
      const d: Delta = { op: DeltaOp.Set, key: enc(`o${i}`), value: new Uint8Array(MiB).fill(i) };
      expect(f.pair.propose(now, 'a', d).seq).toBe(i);
      own.push(d);
    }
    f.store.persist(f.pair.pollWrites());
    f.pair.writesDurable();
    // The sequencer's record at v1: its own 2 MiB write, then the follower's 63, left out.
    const big: Delta = { op: DeltaOp.Set, key: enc('seq'), value: new Uint8Array(2 * MiB).fill(200) };
    const entries: CollapseEntry[] = [
      { origin: 1, seq: 1, verdict: 'committed', delta: big },
      ...own.map((d, i): CollapseEntry => ({ origin: 2, seq: i + 1, verdict: 'committed', delta: d })),
    ];
    const st = new MapState(SEED);
    for (const e of entries) if (e.verdict === 'committed') st.apply(e.delta as Delta, 1);
    const hash = { hi: st.hash.hi, lo: st.hash.lo };
    const elided = own.map((_, i) => i + 1);
    const wire = encodeCollapse({ register: 'a', version: 1, hash, entries, elided });
    expect(wire.length).toBeLessThan(3 * MiB);
    expect(encodeMessage({ type: MsgType.Collapse, register: 'a', version: 1, hash, entries }).length).toBeGreaterThan(MAX_PAIR_RECORD);
    f.pair.handlePayload(now, 0, wire);
    let storeFault: string | undefined;
    try {
      f.store.persist(f.pair.pollWrites());
      f.pair.writesDurable();
    } catch (e) {
      storeFault = (e as Error).message;
    }
    const version = f.pair.register('a').version;
    expect(f.pair.counters.drops['elided-unknown']).toBe(1);
    f.store.close();
    const g = open(dir);
    const after = { storeFault, tornBytes: g.tornBytes, restarted: g.pair.register('a').version, version };
    g.store.close();
    // Not applied (nothing of it logged) and the restart finds the log whole.
    expect(after).toEqual({ storeFault: undefined, tornBytes: 0, restarted: 0, version: 0 });
  }, 120_000);
});

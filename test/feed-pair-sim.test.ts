import { describe, expect, it } from 'vitest';
import { PairChanges } from '../core/pair/changes.js';
import { changesOf, type Change } from '../core/register/changes.js';
import { ownPart } from '../wire/cross.js';
import type { CollapseEntry } from '../wire/messages.js';
import type { HalfPair } from '../core/pair/halfpair.js';
import { runSim } from '../testing/sim/run.js';

/**
 * A pair's change rings (core/pair/changes.ts, what spookd's `feed` serves) on the pair
 * simulator: loss, cuts, crashes, store faults, fsyncs that finish late, transactions,
 * cross-register transactions, large values, short logs and corrupted followers that force
 * reconciliation and full transfers. Each endpoint's rings are seeded from its log at every start, as spookd does, and
 * fed its events. Every record a ring holds must be what committed at that version (the
 * collapse either end released there, or the sequencer's durable log holds at a restart), and
 * once the pair has settled every ring must reach its register's version: a feed never serves
 * a wrong change and never waits behind its register.
 */
const hex = (b?: Uint8Array): string => (b ? Buffer.from(b).toString('hex') : '-');
/** The changes a collapse's committed entries made, written out here apart from the code under test. */
const committed = (entries: readonly CollapseEntry[]): Change[] =>
  entries.flatMap((e) => (e.verdict === 'committed' ? changesOf(ownPart(e.delta)) : []));
const show = (cs: readonly Change[]): string => cs.map((c) => `${c.op}:${hex(c.key)}=${hex(c.value)}@${c.offset ?? '-'}`).join(',');

interface Tally {
  seeds: number;
  recordsChecked: number;
  seededRecords: number;
  /** Rings started again by a re-entanglement, by its method. */
  resets: { reconcile: number; full: number };
}

function runSeed(seed: number, t: Tally): string[] {
  const problems: string[] = [];
  const fail = (m: string): void => void (problems.length < 5 && problems.push(`seed ${seed}: ${m}`));
  /** What committed at `register@version`, from the collapses either end released. */
  const truth = new Map<string, string>();
  const live = new Map<string, { changes: PairChanges; pair: HalfPair }>();
  const check = (who: string, changes: PairChanges, register: string, from: number, to: number): void => {
    const ring = changes.ring(register);
    for (let v = Math.max(from, ring.base + 1); v <= Math.min(to, ring.last); v++) {
      const want = truth.get(`${register}@${v}`);
      const got = show(ring.at(v)!.changes);
      if (want === undefined) fail(`${who} ${register}@${v} holds ${got}, which neither a collapse nor the sequencer's log holds`);
      else if (want !== got) fail(`${who} ${register}@${v} holds ${got}, committed ${want}`);
      t.recordsChecked++;
    }
  };
  const res = runSim({
    seed,
    loss: 0.1,
    cuts: true,
    crashes: seed % 2 === 0,
    storeFaults: seed % 3 === 0 ? 0.02 : 0,
    syncDelayMs: seed % 4 === 1 ? 5 : 0,
    txn: 0.1,
    cross: 0.1,
    largeValues: seed % 5 === 0 ? 0.02 : 0,
    // A follower's memory corrupted now and then: repaired by reconciliation or a full transfer.
    corrupt: seed % 3 === 1 ? 0.1 : 0,
    extraRegisters: 2,
    observers: (endpoint, pair) => {
      const maxBytes = seed % 7 === 0 ? 4_096 : 8 << 20;
      const changes = new PairChanges(pair, maxBytes);
      /** Within its bounds: its register's log bound in records, `maxBytes` unless one record alone is larger. */
      const bounded = (name: string): void => {
        const ring = changes.ring(name);
        const held = ring.last - ring.base;
        if (held > pair.register(name).cfg.log.maxRecords || (ring.sizeBytes > maxBytes && held > 1))
          fail(`${endpoint} ${name} ring holds ${held} records, ${ring.sizeBytes} bytes: past its bounds`);
      };
      // Seeded at start, as spookd does. The sequencer's (A's) durable log is the committed history:
      // a collapse made durable by a step that then failed (a store fault) was never released.
      for (const name of pair.registers.keys()) {
        const ring = changes.ring(name);
        const log = pair.register(name).log;
        t.seededRecords += ring.last - ring.base;
        // All the log holds (it holds at most the ring's record bound), unless the byte bound dropped some.
        if (ring.last !== log.last || (ring.base !== log.base && maxBytes === 8 << 20))
          fail(`${endpoint} ${name} seeded ${ring.base}..${ring.last} from a log of ${log.base}..${log.last}`);
        bounded(name);
        if (endpoint !== 'A') continue;
        for (let v = ring.base + 1; v <= ring.last; v++) {
          const at = `${name}@${v}`;
          const c = show(ring.at(v)!.changes);
          const prior = truth.get(at);
          if (prior === undefined) truth.set(at, c);
          else if (prior !== c) fail(`A restarted with ${c} at ${at}, released ${prior} before`);
        }
      }
      live.set(endpoint, { changes, pair });
      return (ev) => {
        if (ev.type === 'collapse') {
          const at = `${ev.register}@${ev.version}`;
          const c = show(committed(ev.entries));
          const prior = truth.get(at);
          if (prior === undefined) truth.set(at, c);
          else if (prior !== c) fail(`${endpoint} released ${c} at ${at}, the other end ${prior}`);
        }
        const epoch = ev.type === 'collapse' || ev.type === 'reentangled' ? changes.ring(ev.register).epoch : 0;
        changes.observe(ev);
        if (ev.type === 'reentangled') {
          const ring = changes.ring(ev.register);
          // Caught up by the log's records, each released as a collapse: what the ring held still stands.
          if (ev.method === 'log' && ring.epoch !== epoch)
            fail(`${endpoint} ${ev.register} ring started again by a re-entanglement by the log`);
          // Replaced without records: nothing before it is served.
          if (ev.method !== 'log') {
            if (ring.base !== ev.version || ring.last !== ev.version)
              fail(`${endpoint} ${ev.register} ring ${ring.base}..${ring.last} after a ${ev.method} at ${ev.version}`);
            t.resets[ev.method]++;
          }
        }
        if (ev.type === 'collapse' || ev.type === 'reentangled') bounded(ev.register);
        if (ev.type === 'collapse') {
          const ring = changes.ring(ev.register);
          if (ring.last !== ev.version) fail(`${endpoint} ${ev.register} ring at ${ring.last} after the collapse of ${ev.version}`);
          check(endpoint, changes, ev.register, ev.version, ev.version);
        }
        const r = ev.type === 'collapse' || ev.type === 'reentangled' ? pair.register(ev.register) : undefined;
        if (r && changes.ring(ev.register).last > r.version)
          fail(`${endpoint} ${ev.register} ring at ${changes.ring(ev.register).last}, past the register's ${r.version}`);
      };
    },
  });
  t.seeds++;
  if (!res.converged) return [...problems, `seed ${seed}: did not converge: ${res.violations.join('; ')}`];
  // Settled: every record either end's rings hold was released by a collapse, and each ring reached its register.
  for (const [endpoint, { changes, pair }] of live) {
    for (const [name, r] of pair.registers) {
      const ring = changes.ring(name);
      check(endpoint, changes, name, ring.base + 1, ring.last);
      if (ring.last !== r.version) fail(`${endpoint} ${name} ring at ${ring.last}, its register at ${r.version}`);
    }
  }
  return problems;
}

describe('pair change rings', () => {
  it('hold what committed and reach their register, over 200 seeds of the pair simulator', () => {
    const t: Tally = { seeds: 0, recordsChecked: 0, seededRecords: 0, resets: { reconcile: 0, full: 0 } };
    const problems: string[] = [];
    for (let seed = 1; seed <= 200; seed++) problems.push(...runSeed(seed, t));
    expect(problems).toEqual([]);
    // The seeds reach what is checked: records from the log at restarts, rings started again by re-entanglements.
    expect(t.recordsChecked).toBeGreaterThan(30_000);
    expect(t.seededRecords).toBeGreaterThan(5_000);
    expect(t.resets.reconcile).toBeGreaterThan(100);
    expect(t.resets.full).toBeGreaterThan(5);
  }, 300_000);
});

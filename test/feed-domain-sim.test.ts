import { describe, expect, it } from 'vitest';
import { DomainChanges } from '../core/qn/changes.js';
import { ChangeRing, changesOf, type Change, type ChangeLimits } from '../core/register/changes.js';
import { EntryKind, type LogEntry } from '../core/qn/raft.js';
import { parseCandidate, type DomainState } from '../core/qn/state.js';
import { runDomainSim } from '../testing/sim/domain.js';
import { Rng } from '../testing/sim/rng.js';

/**
 * A domain's change rings (core/qn/changes.ts) visit only the registers an entry's committed
 * candidate names, and start again at each installed snapshot. Checked on the domain simulator
 * (partitions, cuts, crashes, store faults, snapshots from the leader and by difference) against
 * two things at every member after every entry: what committed at each (register, version), and
 * the rings as they were built before, by visiting every register at every entry (up to a
 * member's first install into rings it holds: there the old rings could take a moved version for
 * the change of a retried candidate and serve a wrong record; 651 such records in 400 seeds).
 */

/** Rings built the way they were before: every register visited at every applied entry. The reference. */
class EveryRegister {
  readonly rings = new Map<string, ChangeRing>();

  constructor(private readonly limits: ChangeLimits) {}

  observe(e: LogEntry, st: DomainState): void {
    const c = e.cmd[0] === EntryKind.App ? parseCandidate(e.cmd) : undefined;
    for (const [name, reg] of st.registers) {
      let ring = this.rings.get(name);
      if (!ring) this.rings.set(name, (ring = new ChangeRing(this.limits, reg.version)));
      if (reg.version === ring.last) continue;
      const changes: Change[] = [];
      if (c && reg.version === ring.last + 1) for (const op of c.ops) if (op.register === name) changes.push(...changesOf(op.delta));
      if (changes.length === 0) ring.reset(reg.version);
      else ring.add(reg.version, changes);
    }
  }
}

const hex = (b?: Uint8Array): string => (b ? Buffer.from(b).toString('hex') : '-');
const show = (cs: readonly Change[]): string => cs.map((c) => `${c.op}:${hex(c.key)}=${hex(c.value)}@${c.offset ?? '-'}`).join(',');

interface Tally {
  entries: number;
  recordsChecked: number;
  installs: number;
  resetAtInstall: number;
}

function runSeed(seed: number, t: Tally): string[] {
  const problems: string[] = [];
  const fail = (m: string): void => void (problems.length < 5 && problems.push(`seed ${seed}: ${m}`));
  /** What committed at `register@version`: the same at every member that applies it. */
  const truth = new Map<string, string>();
  const rng = new Rng(seed ^ 0x0fee_d5);
  const limits = (): ChangeLimits => ({ maxRecords: rng.int(2, 64), maxBytes: rng.float() < 0.3 ? rng.int(100, 2_000) : 1 << 20 });
  const feeds = new Map<number, DomainChanges>();
  const res = runDomainSim({
    seed,
    storeFaults: 0.02,
    largeChance: 0.02,
    largeValueBytes: 20_000,
    observers: (member) => {
      // A restarted member starts with fresh rings, as spookd does.
      const lim = limits();
      const feed = new DomainChanges(lim);
      const ref = new EveryRegister(lim);
      feeds.set(member, feed);
      // After an installed snapshot the reference may keep older records: it reset a ring only when
      // an entry found its version moved, and it took a moved version for the change of whatever
      // candidate that entry carried (a retry of an earlier one too). Compared up to then.
      let installedOnce = false;
      const held = (name: string, ring: ChangeRing, st: DomainState): void => {
        for (let v = ring.base + 1; v <= ring.last; v++) {
          const want = truth.get(`${name}@${v}`);
          const got = show(ring.at(v)!.changes);
          if (want !== got) fail(`n${member} ${name}@${v} holds ${got}, committed ${want}`);
          t.recordsChecked++;
        }
        if (ring.last > st.registers.get(name)!.version) fail(`n${member} ${name} ring at ${ring.last} past the version`);
      };
      return {
        observe: (e, st) => {
          t.entries++;
          const c = st.committed;
          if (c) {
            const moved = new Map<string, Change[]>();
            for (const op of c.ops) moved.set(op.register, [...(moved.get(op.register) ?? []), ...changesOf(op.delta)]);
            for (const [name, cs] of moved) {
              const at = `${name}@${st.registers.get(name)!.version}`;
              const prior = truth.get(at);
              if (prior === undefined) truth.set(at, show(cs));
              else if (prior !== show(cs)) fail(`n${member} committed ${show(cs)} at ${at}, another member ${prior}`);
            }
          }
          feed.observe(e, st);
          ref.observe(e, st);
          for (const [name, r] of ref.rings) {
            const ring = feed.rings.get(name);
            if (ring) held(name, ring, st);
            if (installedOnce) {
              if (ring && ring.last !== r.last) fail(`n${member} ${name} ring at ${ring.last}, the reference at ${r.last}`);
              continue;
            }
            if (!ring) {
              // Never named since this start: the reference holds nothing for it either.
              if (r.last !== r.base) fail(`n${member} ${name}: no ring, the reference holds ${r.base}..${r.last}`);
              continue;
            }
            if (ring.last !== r.last) fail(`n${member} ${name} ring at ${ring.last}, the reference at ${r.last}`);
            if (ring.base > r.base) fail(`n${member} ${name} ring from ${ring.base}, the reference from ${r.base}`);
          }
        },
        installed: (st) => {
          t.installs++;
          if (ref.rings.size > 0) installedOnce = true; // at start (the disk's snapshot) neither has rings yet
          const before = new Map([...feed.rings].map(([n, r]) => [n, { base: r.base, last: r.last }] as const));
          feed.installed(st);
          for (const [name, ring] of feed.rings) {
            const version = st.registers.get(name)!.version;
            if (ring.last !== version) fail(`n${member} ${name} ring at ${ring.last} after an install at ${version}`);
            const was = before.get(name)!;
            if (was.last !== version) t.resetAtInstall++;
            // A register the snapshot did not move keeps what its ring held.
            else if (ring.base !== was.base)
              fail(`n${member} ${name} unmoved by an install, its ring now from ${ring.base}, was ${was.base}`);
          }
        },
      };
    },
  });
  if (!res.converged) fail(`did not converge: ${res.violations.join('; ')}`);
  return problems;
}

describe('domain change rings visit only the registers that moved', () => {
  it('hold what committed, and all the every-register rings held, over 300 seeds of the domain simulator', () => {
    const t: Tally = { entries: 0, recordsChecked: 0, installs: 0, resetAtInstall: 0 };
    const problems: string[] = [];
    for (let seed = 1; seed <= 300; seed++) problems.push(...runSeed(seed, t));
    expect(problems).toEqual([]);
    // The seeds reach what is checked: many entries and records, installed snapshots that moved rings.
    expect(t.entries).toBeGreaterThan(50_000);
    expect(t.recordsChecked).toBeGreaterThan(500_000);
    expect(t.installs).toBeGreaterThan(200);
    expect(t.resetAtInstall).toBeGreaterThan(100);
  }, 300_000);
});

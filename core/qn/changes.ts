/**
 * The change feeds' source for a domain: per register, a ChangeRing fed with every applied log
 * entry (as the member's StateObserver, DomainNodeOptions.observer), so it holds what the Raft log holds and is rebuilt on a
 * restart as the journal is applied again after the snapshot. The Raft log alone cannot serve a
 * feed: an entry does not say whether its candidate committed, and a retry of a decided
 * candidate changes nothing. A register's version tells: it moves by one exactly when a
 * committed candidate touches it, and otherwise only when a snapshot is installed (installed()).
 * So an entry visits only the registers its committed candidate names, not every register the
 * domain declares.
 */
import { ChangeRing, changesOf, type Change, type ChangeLimits } from '../register/changes.js';
import type { StateObserver } from './node.js';
import type { LogEntry } from './raft.js';
import type { DomainState } from './state.js';

export class DomainChanges implements StateObserver {
  readonly rings = new Map<string, ChangeRing>();

  constructor(private readonly limits: ChangeLimits) {}

  /** The ring of `register` (created at `version` the first time). */
  ring(register: string, version: number): ChangeRing {
    let r = this.rings.get(register);
    if (!r) this.rings.set(register, (r = new ChangeRing(this.limits, version)));
    return r;
  }

  /** One applied entry, the state after it (`st.committed`: the candidate it committed, if any). */
  observe(_e: LogEntry, st: DomainState): void {
    const c = st.committed;
    if (!c) return;
    // Each register's changes in the candidate's order: one version each.
    const moved = new Map<string, Change[]>();
    for (const op of c.ops) {
      let changes = moved.get(op.register);
      if (!changes) moved.set(op.register, (changes = []));
      changes.push(...changesOf(op.delta));
    }
    for (const [name, changes] of moved) {
      // The entry moved the register by one: its version's changes are these, whatever the ring
      // held before (a ring made now starts just before them; one seen already ignores them).
      const version = st.registers.get(name)!.version;
      this.ring(name, version - 1).add(version, changes);
    }
  }

  /** A snapshot was installed (from the leader, a difference, or the disk at start): every register may have moved. */
  installed(st: DomainState): void {
    for (const [name, ring] of this.rings) {
      const version = st.registers.get(name)?.version;
      if (version !== undefined && ring.last !== version) ring.reset(version);
    }
  }

  /** Before serving: the ring of `register`, started again at `version` if it does not reach it. */
  sync(register: string, version: number): ChangeRing {
    const ring = this.ring(register, version);
    if (ring.last !== version) ring.reset(version);
    return ring;
  }
}

/**
 * The change feeds' source for a domain: per register, a ChangeRing fed with every applied log
 * entry (DomainNodeOptions.observe), so it holds what the Raft log holds and is rebuilt on a
 * restart as the journal is applied again after the snapshot. The Raft log alone cannot serve a
 * feed: an entry does not say whether its candidate committed, and a retry of a decided
 * candidate changes nothing. A register's version tells: it moves by one exactly when a
 * committed candidate touches it.
 */
import { ChangeRing, changesOf, type Change, type ChangeLimits } from '../register/changes.js';
import { EntryKind, type LogEntry } from './raft.js';
import { parseCandidate, type DomainState } from './state.js';

export class DomainChanges {
  readonly rings = new Map<string, ChangeRing>();

  constructor(private readonly limits: ChangeLimits) {}

  /** The ring of `register` (created at its current version the first time). */
  ring(register: string, version: number): ChangeRing {
    let r = this.rings.get(register);
    if (!r) this.rings.set(register, (r = new ChangeRing(this.limits, version)));
    return r;
  }

  /** One applied entry, the state after it. */
  observe(e: LogEntry, st: DomainState): void {
    const c = e.cmd[0] === EntryKind.App ? parseCandidate(e.cmd) : undefined;
    for (const [name, reg] of st.registers) {
      const ring = this.ring(name, reg.version);
      if (reg.version === ring.last) continue;
      const changes: Change[] = [];
      if (c && reg.version === ring.last + 1) for (const op of c.ops) if (op.register === name) changes.push(...changesOf(op.delta));
      // No change for a moved version: the state moved by other means (a snapshot installed); start again there.
      if (changes.length === 0) ring.reset(reg.version);
      else ring.add(reg.version, changes);
    }
  }

  /** Before serving: a snapshot installed since the last entry moved the register without an entry. */
  sync(register: string, version: number): ChangeRing {
    const ring = this.ring(register, version);
    if (ring.last !== version) ring.reset(version);
    return ring;
  }
}

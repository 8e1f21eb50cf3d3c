/**
 * Whole cross-register transactions on disk (docs/PROTOCOL.md §4.6, §10.1). A cross txn's
 * records, its anchor's and each part's, are written in one batch but to several registers'
 * logs, so a crash can leave some on disk and not others. Before anything is replayed the store
 * finds each group that is not whole and cuts every log at its first record of one, keeping
 * the records before it: under fsync "always" nothing after an incomplete batch was written
 * (the batch never completed, so nothing of it left the host), and under "everysec" the tail a
 * crash loses anyway. So a restart never shows one part without the others.
 */
import { DeltaOp } from '../../wire/delta.js';
import { MsgType, decodeMessages } from '../../wire/messages.js';

/** Another register's record a record depends on: it must be on disk too. */
export interface GroupNeed {
  register: string;
  version: number;
}

export interface LoggedRegister {
  /** The version its snapshot holds (0 without one); read only if a need points here. */
  snapshotVersion(): number;
  /** Its log records in order, each with the records of other registers its group needs. */
  records: { version: number; needs: GroupNeed[] }[];
}

/** What a Collapse record's cross-register entries need of other registers (none for a record that is not one). */
export function groupNeeds(rec: Uint8Array): GroupNeed[] {
  let m;
  try {
    m = decodeMessages(rec).messages[0];
  } catch {
    return []; // replay reports a record that does not decode
  }
  if (m?.type !== MsgType.Collapse) return [];
  const needs: GroupNeed[] = [];
  for (const e of m.entries) {
    if (e.verdict !== 'committed') continue;
    if (e.delta.op === DeltaOp.Part) needs.push({ register: e.delta.anchor, version: e.delta.anchorVersion });
    else if (e.delta.op === DeltaOp.Cross) for (const p of e.delta.parts.slice(1)) needs.push({ register: p.register, version: p.at });
  }
  return needs;
}

/**
 * How many log records each register keeps so that every group is whole: a register is cut
 * before its first record needing a version another register does not hold once cut, until
 * nothing changes (cuts only shrink, so this ends). A need naming a register absent from the
 * disk is left alone (the register was removed from the configuration).
 */
export function keptRecords(regs: ReadonlyMap<string, LoggedRegister>): Map<string, number> {
  const kept = new Map<string, number>();
  for (const [name, r] of regs) kept.set(name, r.records.length);
  const snap = new Map<string, number>();
  // Whether `name` holds version `v`: its last kept record, or its snapshot (log records at or below
  // the snapshot may remain when a crash lost the log's truncation after the snapshot's rename).
  const holds = (name: string, v: number): boolean => {
    const r = regs.get(name);
    if (r === undefined) return true;
    const k = kept.get(name)!;
    if (k > 0 && r.records[k - 1].version >= v) return true;
    if (!snap.has(name)) snap.set(name, r.snapshotVersion());
    return snap.get(name)! >= v;
  };
  for (let changed = true; changed;) {
    changed = false;
    for (const [name, r] of regs) {
      const k = kept.get(name)!;
      for (let i = 0; i < k; i++) {
        if (r.records[i].needs.some((n) => !holds(n.register, n.version))) {
          kept.set(name, i);
          changed = true;
          break;
        }
      }
    }
  }
  return kept;
}

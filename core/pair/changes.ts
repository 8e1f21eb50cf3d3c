/**
 * The change feeds' source for a pair: per register, a ChangeRing seeded from what its delta log
 * holds (after a restart: the records replayed since the snapshot) and fed by the pair's collapse
 * events; a reconciliation or full transfer, which replaces the state without records, starts it
 * again. The log alone cannot serve a feed: the sequencer drops records once the peer
 * acknowledged them.
 */
import { ownPart } from '../../wire/cross.js';
import { decodeMessages, MsgType, type CollapseEntry } from '../../wire/messages.js';
import { ChangeRing, changesOf, type Change } from '../register/changes.js';
import type { SpookEvent } from './events.js';
import type { HalfPair } from './halfpair.js';

export class PairChanges {
  private readonly rings = new Map<string, ChangeRing>();

  constructor(
    private readonly pair: HalfPair,
    /** A ring's bound in bytes (in records: its register's log bound). */
    private readonly maxBytes: number,
  ) {}

  /** The ring of `register`, seeded from its log the first time. */
  ring(register: string): ChangeRing {
    let ring = this.rings.get(register);
    if (ring) return ring;
    const r = this.pair.register(register);
    const log = r.log;
    ring = new ChangeRing({ maxRecords: r.cfg.log.maxRecords, maxBytes: this.maxBytes }, log.base);
    for (let v = log.base + 1; v <= log.last; v++) {
      const rec = log.get(v);
      const m0 = rec ? decodeMessages(rec.encoded).messages[0] : undefined;
      if (!m0 || m0.type !== MsgType.Collapse) {
        ring.reset(v);
        continue;
      }
      ring.add(v, committedChanges(m0.entries));
    }
    this.rings.set(register, ring);
    return ring;
  }

  /** One event the pair released: a collapse adds its version; a re-entanglement other than by the log starts the ring again. */
  observe(ev: SpookEvent): void {
    if (ev.type !== 'collapse' && ev.type !== 'reentangled') return;
    const ring = this.rings.get(ev.register);
    if (!ring) return; // seeded from the log when first asked for
    if (ev.type === 'collapse') ring.add(ev.version, committedChanges(ev.entries));
    else if (ev.method !== 'log') ring.reset(ev.version);
  }
}

/** What a collapse committed, in its order (rejected candidates are not changes). */
export function committedChanges(entries: readonly CollapseEntry[]): Change[] {
  const out: Change[] = [];
  // A cross-register txn's entry changes this register by its own part; a part record by its delta.
  for (const e of entries) if (e.verdict === 'committed') out.push(...changesOf(ownPart(e.delta)));
  return out;
}

/**
 * Cross-register transactions of a pair (docs/PROTOCOL.md §4.6): one candidate over several
 * registers, decided whole by the sequencer in one turn.
 *
 * The candidate (op 6) is proposed on its anchor register, the first part's, and queued
 * there like any other. When the anchor's collapse reaches it, the sequencer checks every
 * part against its register as it stands (the anchor as the earlier entries of this collapse
 * left it, every other register at its committed version: no other collapse is being formed
 * in that turn), and either rejects the whole entry or commits each other part at once as
 * that register's next collapse (an op-7 record) and the anchor part in the anchor's
 * collapse, whose entry names the version of every part. The follower applies an anchor
 * record and the part records it names together (follower.ts), so no reader at either end
 * sees one part without the others.
 */
import type { CrossDelta } from '../../wire/cross.js';
import { entryValueLen } from '../../wire/cross.js';
import { DeltaOp, RejectReason } from '../../wire/delta.js';
import type { MapState } from '../register/map.js';
import { QuotaCheck, type Quota } from '../register/quota.js';
import type { StreamState } from '../register/stream.js';

/** What the check reads of each register a part names. */
export interface CrossTarget {
  readonly name: string;
  readonly state: MapState | StreamState;
  readonly version: number;
  readonly quota: Quota;
}

/** How the sequencer decided a cross-register txn: 0 (commit) or the reason, and the flattened index of the failing op. */
export interface CrossVerdict {
  reason: RejectReason | 0;
  failedOp?: number;
}

/**
 * Decide a cross-register txn at the anchor's collapse version `v`. `anchorQuota` is the anchor
 * collapse's running quota: it is charged (last, so a refusal leaves no trace) only on commit.
 * Order of checks: the total value octets against the anchor's maxValueBytes (the txn crosses
 * as one message), each part's preconditions in part order, then each other part's quota,
 * then the anchor's.
 */
export function decideCross(
  d: CrossDelta,
  anchor: CrossTarget,
  anchorQuota: QuotaCheck,
  v: number,
  sibling: (name: string) => CrossTarget | undefined,
): CrossVerdict {
  if (entryValueLen(d) > anchor.quota.maxValueBytes) return { reason: RejectReason.QuotaExceeded };
  const targets: CrossTarget[] = [];
  let op = 0;
  for (let i = 0; i < d.parts.length; i++) {
    const p = d.parts[i];
    const t = i === 0 ? (p.register === anchor.name ? anchor : undefined) : sibling(p.register);
    // A register the pair lacks (the manifests matched, so only a hostile or broken proposer names one).
    if (t === undefined || (i > 0 && p.register === anchor.name)) return { reason: RejectReason.WrongKind, failedOp: op };
    const reason = t.state.check(p.delta);
    if (reason !== 0) {
      const inner = p.delta.op === DeltaOp.Txn ? (t.state.txnFailure(p.delta.ops)?.op ?? 0) : 0;
      return { reason, failedOp: op + inner };
    }
    targets.push(t);
    op += p.delta.op === DeltaOp.Txn ? p.delta.ops.length : 1;
  }
  for (let i = 1; i < d.parts.length; i++) {
    const t = targets[i];
    if (new QuotaCheck(t.state, t.quota).admit(d.parts[i].delta, t.version + 1) !== 0) return { reason: RejectReason.QuotaExceeded };
  }
  const q = anchorQuota.admit(d.parts[0].delta, v);
  return q === 0 ? { reason: 0 } : { reason: q };
}

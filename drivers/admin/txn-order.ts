/**
 * The order a cross-register `txn`'s ops were given in, for its `failedOp`. The core counts a
 * cross txn's ops part by part (registers in first-appearance order, PROTOCOL.md §4.6), so when
 * the ops interleave registers the index it names is not the index in `ops`. The write's answer
 * maps it; so must `outcome(seq)`, asked after `pending`, a timeout or a lost connection (it
 * named another op: a write without a guard, or none). The order is known only for the txns
 * proposed since spookd started: a rejection of an older one (pending across a restart) names no
 * op rather than a wrong one. Bounded per register as its own outcomes are (OUTCOMES_KEPT).
 */
import { OUTCOMES_KEPT } from '../../core/pair/outcomes.js';
import type { PeerLink, Spookd } from '../daemon/spookd.js';

/** `failed` when the op cannot be told. */
const UNKNOWN = -1;

interface RegisterOrders {
  /** The first own seq proposed through the admin API since the start (later ones' orders are known). */
  first: number;
  /** Undecided cross txns whose order is not the core's: seq → given index of each core index. */
  orders: Map<number, Uint8Array>;
  /** Decided and rejected, with an op: seq → its index in `ops` (UNKNOWN: not known here). Oldest first. */
  failed: Map<number, number>;
}

export class TxnOrders {
  private readonly links = new WeakMap<PeerLink, Map<string, RegisterOrders>>();

  constructor(d: Spookd) {
    d.subscribers.add((link, ev) => {
      if (ev.type !== 'outcome' || ev.origin !== link.pair.opts.localId) return;
      const r = this.links.get(link)?.get(ev.register);
      if (!r) return; // nothing proposed through the admin API: every outcome is from before the start
      const order = r.orders.get(ev.seq);
      r.orders.delete(ev.seq);
      if (ev.verdict !== 'rejected' || ev.op === undefined) return;
      const given = order ? (order[ev.op] ?? UNKNOWN) : ev.seq < r.first ? UNKNOWN : undefined;
      if (given === undefined) return; // proposed since the start in the core's order: its op is right
      r.failed.set(ev.seq, given);
      if (r.failed.size > OUTCOMES_KEPT) r.failed.delete(r.failed.keys().next().value!);
    });
  }

  private of(link: PeerLink, register: string, seq: number): RegisterOrders {
    let regs = this.links.get(link);
    if (!regs) this.links.set(link, (regs = new Map()));
    let r = regs.get(register);
    if (!r) regs.set(register, (r = { first: seq, orders: new Map(), failed: new Map() }));
    return r;
  }

  /**
   * Own candidate `seq` of `register` was proposed now, its ops counted by the core in `order`
   * (core index → index given; undefined: the same). Called before it can be decided.
   */
  proposed(link: PeerLink, register: string, seq: number, order: readonly number[] | undefined): void {
    const r = this.of(link, register, seq);
    if (!order || order.every((g, i) => g === i)) return;
    // Those decided without a told outcome (a reconciliation) go once they outnumber the undecided.
    const reg = link.pair.register(register);
    if (r.orders.size > 2 * reg.pendingCount + 64)
      for (const s of r.orders.keys()) if (reg.outcomeOf(s)?.verdict !== 'pending') r.orders.delete(s);
    r.orders.set(seq, Uint8Array.from(order));
  }

  /** The index in `ops` of own candidate `seq`'s failed op, which the core names `op`; undefined when not known here. */
  given(link: PeerLink, register: string, seq: number, op: number | undefined): number | undefined {
    if (op === undefined) return undefined;
    const r = this.links.get(link)?.get(register);
    const f = r?.failed.get(seq);
    if (f !== undefined) return f === UNKNOWN ? undefined : f;
    // Not noted: proposed since the start in the core's order, or (no admin write yet) from before it.
    return r !== undefined && seq >= r.first ? op : undefined;
  }
}

const ordersOf = new WeakMap<Spookd, TxnOrders>();

/** The txn orders of `d` (made, and subscribed to its outcomes, the first time). */
export function txnOrders(d: Spookd): TxnOrders {
  let o = ordersOf.get(d);
  if (!o) ordersOf.set(d, (o = new TxnOrders(d)));
  return o;
}

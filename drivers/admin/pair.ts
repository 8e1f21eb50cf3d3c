/** Admin API commands for pairs (client/protocol.ts): status, pairs, pair, registers, xdp, get, set, cas, del, append, watch, events. */
import type { EntryDelta } from '../../wire/cross.js';
import { isPart } from '../../core/pair/shared.js';
import type { AdminErrorCode, MapGetResult, Outcome, PairSummary, StreamGetResult, AdminArgs } from '../../client/protocol.js';
import { DeltaOp, REJECT_REASON_NAMES, type Delta } from '../../wire/delta.js';
import { hashHex } from '../../core/register/hash.js';
import { ProposeError } from '../../core/pair/replica.js';
import { OUTCOMES_KEPT } from '../../core/pair/outcomes.js';
import { describeDiff, describeDiffs } from '../../core/pair/manifest.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { MapState } from '../../core/register/map.js';
import { type StreamState } from '../../core/register/stream.js';
import { encodeKey } from '../daemon/keys.js';
import { endpointOf } from '../daemon/resolve.js';
import type { PeerLink, Spookd } from '../daemon/spookd.js';
import { AdminFault, MAX_WAIT_MS, bytesArg, echo, failsAs, num, showBytes, str, type Untrusted } from './args.js';
import type { Call, Handlers, StreamEnd, StreamHandlers } from './handlers.js';
import { epochMs, inMs } from './clock.js';
import { txnOrders } from './txn-order.js';

/** The pair a request names (`peer`), or the only one. */
export const linkOf = (d: Spookd, peer: string | undefined): PeerLink =>
  failsAs(peer === undefined ? 'peer-required' : 'unknown-peer', 'peer', () => d.link(peer), peer);

export function pairSummary(link: PeerLink): PairSummary {
  const p = link.pair;
  const st = p.stats;
  return {
    peer: link.name,
    publicKey: encodeKey(link.publicKey),
    state: p.state,
    since: epochMs(p.since),
    role: p.role,
    // Written as in a configuration file: an IPv6 address in brackets.
    endpoint: link.addr ? endpointOf(link.addr.address, link.addr.port) : null,
    pairId: link.session?.localIndex ?? null,
    rttMs: p.rttMs === undefined ? null : Number(p.rttMs.toFixed(2)),
    loss: st.datagramsSent === 0 ? 0 : Number((st.retransmitTimeouts / st.datagramsSent).toFixed(4)),
    bytesSent: st.bytesSent,
    bytesReceived: st.bytesReceived,
    datagramsSent: st.datagramsSent,
    datagramsReceived: st.datagramsReceived,
    reentanglements: st.reentanglements,
    fullTransfers: st.fullTransfers,
    reentangleBytes: st.reentangleBytes,
    drops: st.drops,
    disconnects: link.disconnects,
    fenced: link.fenced ? { ...link.fenced, at: epochMs(link.fenced.at) } : null,
    overBudget: link.budget.refused,
    timers: p
      .deadlines()
      .sort((x, y) => x.at - y.at)
      .map((d) => ({ ...d, at: Number.isFinite(d.at) ? epochMs(d.at) : null, inMs: Number.isFinite(d.at) ? inMs(d.at) : 0 })),
    registerMismatch: registerMismatch(link),
    registers: [...p.registers.values()].map((r) => ({
      name: r.name,
      kind: r.cfg.kind,
      policy: r.cfg.policy,
      version: r.version,
      hash: hashHex(r.hash),
      size: r.state.size(),
      stateBytes: r.state.fullTransferBytes(),
      pending: r.pendingCount,
      peerVersion: r.peerVersion,
      logBase: r.log.base,
      snapshotting: link.store.snapshotting(r.name) !== undefined,
    })),
  };
}

/** How the pair's registers differ from its peer's (§6.3), in words naming the peer, or null. */
export function registerMismatch(link: PeerLink): PairSummary['registerMismatch'] {
  const diffs = link.pair.registerMismatch;
  return diffs ? { reason: describeDiffs(diffs, link.name), registers: diffs.map((d) => ({ ...d })) } : null;
}

/** A write refused because the registers differ: the register written, and what differs, with the peer's name. */
function mismatchMessage(link: PeerLink, register: string): string {
  const diffs = link.pair.registerMismatch ?? [];
  const own = diffs.find((d) => d.register === register);
  const what = own
    ? describeDiff(own, link.name)
    : `register ${register} is declared at both ends, but the pair's registers differ: ${describeDiffs(diffs, link.name)}`;
  return `register-mismatch: ${what}; pair ${link.name} is decoherent until the configurations agree (fix them and restart spookd)`;
}

/** The codes of the core's refusals of a write. */
const PROPOSE_CODES: Record<ProposeError['code'], AdminErrorCode> = {
  'buffer-full': 'buffer-full',
  frozen: 'frozen',
  invalid: 'invalid-delta',
  closed: 'pair-closed',
  fenced: 'pair-fenced',
  'register-mismatch': 'register-mismatch',
  'too-large': 'too-large',
};

/**
 * A fenced pair is neither read nor written: its registers may hold a collapse whose batch never
 * reached the disk (store-failed), and it would never decide a new candidate.
 */
export function refuseFenced(link: PeerLink): void {
  if (link.fenced || link.pair.fenced) {
    const why = link.fenced ? `${link.fenced.cause}: ${link.fenced.error}` : 'fenced';
    throw new AdminFault('pair-fenced', `pair ${link.name} is fenced (${why}); restart spookd to resume it`);
  }
}

type Write = 'set' | 'del' | 'cas' | 'append';

/** Propose and wait for the outcome (committed or rejected) of this candidate. */
function propose<C extends Write>(d: Spookd, cmd: C, args: Untrusted<AdminArgs<C>>, call: Call): Promise<Outcome> {
  const link = linkOf(d, str(args, 'peer', false));
  refuseFenced(link);
  const register = str(args, 'register');
  const r = failsAs('unknown-register', 'register', () => link.pair.register(register), register);
  const a = args as Untrusted<AdminArgs<'set'> & AdminArgs<'cas'> & AdminArgs<'append'>>;
  let delta: Delta;
  if (cmd === 'set') delta = { op: DeltaOp.Set, key: bytesArg(a, 'key'), value: bytesArg(a, 'value') };
  else if (cmd === 'del') delta = { op: DeltaOp.Del, key: bytesArg(a, 'key') };
  else if (cmd === 'cas')
    delta = {
      op: DeltaOp.Cas,
      key: bytesArg(a, 'key'),
      expect: num(a, 'expect', 0, 0, Number.MAX_SAFE_INTEGER),
      value: bytesArg(a, 'value'),
    };
  else delta = { op: DeltaOp.Append, offset: num(a, 'offset', r.nextAppendOffset, 0, Number.MAX_SAFE_INTEGER), data: bytesArg(a, 'data') };
  return proposeDelta(d, link, register, delta, num(args, 'timeoutMs', 10_000, 0, MAX_WAIT_MS), call);
}

/**
 * Propose `delta` (any op, a txn too) on a register of `link` and wait up to `timeoutMs` for its outcome.
 * `order`: a cross txn's ops as the core counts them (part by part) → their index as given (txn-order.ts).
 */
export function proposeDelta(
  d: Spookd,
  link: PeerLink,
  register: string,
  delta: EntryDelta,
  timeoutMs: number,
  call: Call,
  order?: readonly number[],
): Promise<Outcome> {
  let id: { origin: number; seq: number };
  const t0 = d.now();
  const orders = txnOrders(d);
  try {
    id = link.pair.propose(t0, register, delta);
    orders.proposed(link, register, id.seq, order);
  } catch (e) {
    // The message keeps its "code: " prefix: it is what `spook set` has always printed.
    if (e instanceof ProposeError && e.code === 'register-mismatch')
      throw new AdminFault('register-mismatch', mismatchMessage(link, register), 'register');
    if (e instanceof ProposeError) throw new AdminFault(PROPOSE_CODES[e.code], `${e.code}: ${e.message}`);
    throw e;
  }
  return new Promise((resolve, reject) => {
    const done = (): void => {
      d.subscribers.delete(sub);
      d.removals.delete(removed);
      clearTimeout(timer);
    };
    // Its peer removed (a reload) before an outcome: a definite error, never `pending` for ever.
    const removed = (peer: string): void => {
      if (peer !== link.name) return;
      done();
      reject(
        new AdminFault(
          'peer-removed',
          // The sequencer decides alone, and a removal first decides what it can: one of its own
          // still undecided (the ends' registers differed) never left the host as a decision.
          link.pair.role === 'sequencer'
            ? `peer-removed: peer ${peer} was removed (reload) before this host, the pair's sequencer, could decide the write ` +
                `(the pair's registers differed): it was not committed, and it is abandoned`
            : `peer-removed: peer ${peer} was removed (reload) before this host learnt the write's outcome: the outcome is unknown. ` +
                `Had peer ${peer} received it, it may have committed it (or may still); this host learns so only if ${peer} is configured again. ` +
                `It is not proposed again from here: read the key rather than assume either way`,
        ),
      );
    };
    d.removals.add(removed);
    const sub = (l: PeerLink, ev: SpookEvent): void => {
      if (l !== link || ev.type !== 'outcome' || ev.register !== register || ev.origin !== id.origin || ev.seq !== id.seq) return;
      done();
      d.observeCommit('pair', ev.verdict, (d.now() - t0) / 1000);
      resolve({
        register,
        origin: id.origin,
        seq: id.seq,
        pair: link.pairTag,
        verdict: ev.verdict,
        reason: ev.verdict === 'rejected' ? ev.reason : null,
        version: ev.version,
        ...(ev.verdict === 'rejected' && ev.op !== undefined ? { failedOp: order?.[ev.op] ?? ev.op } : {}),
      });
    };
    const timer = setTimeout(() => {
      // Not an error: the candidate stays pending (buffered) and will still be decided; said only
      // once it is durable (a crash before would lose it, and the promise with it): its pending
      // record (a follower's, or a sequencer's still undecided, recorded now by secureOwn) or the
      // collapse that decided it is in one of the batches taken up to the next one.
      link.pair.secureOwn(d.now(), register, id.seq);
      d.whenBatchDurable(link, d.nextBatch(link), () => {
        if (!d.subscribers.has(sub)) return; // answered meanwhile (its outcome, or its peer removed)
        done();
        if (link.fenced || link.pair.fenced)
          return reject(new AdminFault('pair-fenced', `pair ${link.name} is fenced: the outcome is unknown`));
        resolve({
          register,
          origin: id.origin,
          seq: id.seq,
          pair: link.pairTag,
          verdict: 'pending',
          reason: `no outcome within ${timeoutMs} ms (pair ${link.pair.state})`,
          version: null,
        });
      });
    }, timeoutMs);
    d.subscribers.add(sub);
    call.onClose(done); // the client went away: stop waiting for it
    d.kick(link);
  });
}

export function pairHandlers(d: Spookd): Handlers<'status' | 'pairs' | 'pair' | 'registers' | 'xdp' | 'get' | Write | 'outcome'> {
  return {
    status: () => {
      const xdp = d.fastPath.status();
      return {
        publicKey: encodeKey(d.key.publicKey),
        listen: d.cfg.listen,
        uptimeMs: Math.round(d.uptimeMs),
        pid: process.pid,
        xdp: xdp.enabled ? `${xdp.mode} on ${xdp.interface}` : 'off',
        pairs: [...d.links.values()].map((l) => ({
          peer: l.name,
          state: l.pair.state,
          ...(l.pair.registerMismatch ? { registerMismatch: describeDiffs(l.pair.registerMismatch, l.name) } : {}),
        })),
        drops: d.drops,
        warningsSuppressed: d.warns.suppressed,
      };
    },
    pairs: () => [...d.links.values()].map((l) => pairSummary(l)),
    xdp: () => d.fastPath.status(),
    pair: (args) => pairSummary(linkOf(d, str(args, 'peer', false))),
    registers: () => [...d.links.values()].flatMap((l) => pairSummary(l).registers.map((r) => ({ peer: l.name, ...r }))),
    get: (args): MapGetResult | StreamGetResult | Promise<MapGetResult | StreamGetResult> => {
      const link = linkOf(d, str(args, 'peer', false));
      refuseFenced(link);
      const register = str(args, 'register');
      const r = failsAs('unknown-register', 'register', () => link.pair.register(register), register);
      if (r.state instanceof MapState) {
        // `keyBase64` as set/del/cas take it: a key that is not UTF-8 (one a scan or watch showed) could not be read.
        const key = bytesArg(args, 'key');
        return d.durableRead(link, () => {
          refuseFenced(link);
          const e = (r.state as MapState).get(key);
          return { register: r.name, version: r.version, found: !!e, ...(e ? { keyVersion: e.version, value: showBytes(e.value) } : {}) };
        });
      }
      const offset = num(args, 'offset', 0, 0, Number.MAX_SAFE_INTEGER);
      const length = num(args, 'length', 65536, 0, 1 << 20);
      return d.durableRead(link, () => {
        refuseFenced(link);
        return {
          register: r.name,
          version: r.version,
          size: r.state.size(),
          offset,
          data: showBytes((r.state as StreamState).read(offset, length)),
        };
      });
    },
    set: (args, call) => propose(d, 'set', args, call),
    del: (args, call) => propose(d, 'del', args, call),
    cas: (args, call) => propose(d, 'cas', args, call),
    append: (args, call) => propose(d, 'append', args, call),
    outcome: (args): Outcome | Promise<Outcome> => {
      const link = linkOf(d, str(args, 'peer', false));
      const pair = str(args, 'pair', false);
      if (pair !== undefined && !/^[0-9a-f]{16}$/i.test(pair))
        throw new AdminFault('bad-argument', "argument pair must be 16 hex digits, as a write's Outcome gives it", 'pair');
      const seq = num(args, 'seq', undefined, 1, Number.MAX_SAFE_INTEGER);
      // A rekeyed peer is a new pair numbering its writes from 1 again: a seq of the pair it replaced is not
      // one of its own, whose outcome would be another write's (a success for a write abandoned at the rekey).
      if (pair !== undefined && pair.toLowerCase() !== link.pairTag)
        throw new AdminFault(
          'unknown-candidate',
          `write ${seq} is of pair ${pair.toLowerCase()}, which this host no longer runs with peer ${link.name} (its pair now is ${link.pairTag}): ` +
            `it was replaced (the peer or this host rekeyed, or the peer removed and configured again with another key), and its writes then undecided ` +
            `were abandoned (peer-removed): the outcome is unknown here; read the key`,
          'pair',
        );
      refuseFenced(link);
      const register = str(args, 'register');
      const r = failsAs('unknown-register', 'register', () => link.pair.register(register), register);
      // As a read: what it answers is on disk (a told outcome is, once its batch is).
      return d.durableRead(link, (): Outcome => {
        refuseFenced(link);
        const o = r.outcomeOf(seq);
        if (o === undefined)
          throw new AdminFault(
            'unknown-candidate',
            `no outcome of write ${seq} on register ${register} is known here: decided longer ago than this host keeps ` +
              `(the last ${OUTCOMES_KEPT} of the register, and its log at the start), settled by a reconciliation, or never proposed here: read the key`,
            'seq',
          );
        const base = { register, origin: link.pair.opts.localId, seq, pair: link.pairTag };
        if (o.verdict === 'pending')
          return { ...base, verdict: 'pending', reason: `not decided yet (pair ${link.pair.state})`, version: null };
        if (o.verdict === 'committed') return { ...base, verdict: 'committed', reason: null, version: o.version };
        // The op as the write's answer named it: in the order given, even for a txn across registers (txn-order.ts).
        const failedOp = txnOrders(d).given(link, register, seq, o.op);
        return { ...base, verdict: 'rejected', reason: o.reason, version: o.version, ...(failedOp !== undefined ? { failedOp } : {}) };
      });
    },
  };
}

/**
 * A stream bound to `link`'s peer (a feed on its register, a watch naming it) ends with `peer-removed`
 * when a reload removes that peer: a definite end, never a stream left open and silent for ever.
 */
export function endWhenRemoved(d: Spookd, link: PeerLink, call: Call, end: StreamEnd, what: string): void {
  const removed = (peer: string): void => {
    if (peer !== link.name || d.links.get(peer) === link) return;
    end({ code: 'peer-removed', message: `peer-removed: peer ${peer} was removed from the configuration (reload); ${what} has ended` });
  };
  d.removals.add(removed);
  call.onClose(() => d.removals.delete(removed));
}

/**
 * `watch` and `events` streams one admin connection may hold open, and spookd in all (as feeds: FEED_LIMITS).
 * Every event the daemon publishes is offered to each of them, so their number is bounded as well as their memory.
 */
export const WATCH_LIMITS = {
  perConnection: 64,
  total: 1024,
};

/** The `watch` and `events` streams open, per connection and in all (WATCH_LIMITS). */
export class WatchCount {
  open = 0;
  private readonly perConn = new Map<object, number>();

  /** Count one more stream of `call`'s connection, released when it ends; throws `too-many-watchers` (before anything is held) when over a limit. */
  take(call: Call, what: string): void {
    const n = this.perConn.get(call.conn) ?? 0;
    if (n >= WATCH_LIMITS.perConnection || this.open >= WATCH_LIMITS.total)
      throw new AdminFault(
        'too-many-watchers',
        n >= WATCH_LIMITS.perConnection
          ? `this connection has ${n} watch and events streams open; the limit is ${WATCH_LIMITS.perConnection}: close one before opening a ${what}`
          : `spookd has ${this.open} watch and events streams open; the limit is ${WATCH_LIMITS.total}`,
      );
    this.perConn.set(call.conn, n + 1);
    this.open++;
    let released = false;
    call.onClose(() => {
      if (released) return;
      released = true;
      this.open--;
      const left = (this.perConn.get(call.conn) ?? 1) - 1;
      if (left <= 0) this.perConn.delete(call.conn);
      else this.perConn.set(call.conn, left);
    });
  }
}

/** The `watch` and `events` streams of one spookd: their count, for tests. */
export const watchesOf = new WeakMap<Spookd, WatchCount>();

/**
 * `watch` (collapses) and `events` (lifecycle, re-entanglements): events until the client goes away;
 * one that names a peer ends with `peer-removed` if the peer is removed (one of every peer only stops hearing of it).
 * Bounded per connection and in all (WATCH_LIMITS): past them, `too-many-watchers`.
 */
export function pairStreams(d: Spookd): StreamHandlers<'watch' | 'events'> {
  const count = new WatchCount();
  watchesOf.set(d, count);
  const subscribe = (call: Call, what: string, f: (link: PeerLink, ev: SpookEvent) => void): void => {
    count.take(call, what);
    d.subscribers.add(f);
    call.onClose(() => d.subscribers.delete(f));
  };
  return {
    watch: (args, call, emit, end) => {
      const peer = str(args, 'peer', false);
      const register = str(args, 'register', false);
      // A misspelt peer or register is refused, not watched for ever in silence.
      const links = peer === undefined ? [...d.links.values()] : [linkOf(d, peer)];
      if (register !== undefined && !links.some((l) => l.pair.registers.has(register))) {
        const known = [...new Set(links.flatMap((l) => [...l.pair.registers.keys()]))].join(', ');
        throw new AdminFault('unknown-register', `no register named ${echo(register)} (configured: ${known})`, 'register');
      }
      subscribe(call, 'watch', (link, ev) => {
        if ((peer && link.name !== peer) || ev.type !== 'collapse' || (register && ev.register !== register)) return;
        emit(link.name, {
          ...ev,
          pair: link.pairTag,
          at: epochMs(ev.at),
          // A part of a cross-register txn is decided in its anchor register: not an entry of this one.
          entries: ev.entries
            .filter((e) => !isPart(e))
            .map((e) => ({
              origin: e.origin,
              seq: e.seq,
              verdict: e.verdict,
              reason: e.verdict === 'rejected' ? REJECT_REASON_NAMES[e.reason] : null,
            })),
        });
      });
      if (peer !== undefined) endWhenRemoved(d, links[0], call, end, `the watch of peer ${peer}`);
    },
    events: (args, call, emit, end) => {
      const peer = str(args, 'peer', false);
      const link = peer === undefined ? undefined : linkOf(d, peer);
      subscribe(call, 'events stream', (l, ev) => {
        if ((peer && l.name !== peer) || (ev.type !== 'lifecycle' && ev.type !== 'reentangled')) return;
        emit(l.name, { ...ev, at: epochMs(ev.at) });
      });
      if (link) endWhenRemoved(d, link, call, end, `the events stream of peer ${peer}`);
    },
  };
}

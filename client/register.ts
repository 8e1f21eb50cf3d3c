/**
 * The application library: open a register on a running spookd, propose changes and
 * await their collapse, observe collapses and lifecycle events. See docs/LIBRARY.md.
 */
import type { CallOptions, SpookError } from './admin-client.js';
import type { AdminArgs, AdminStreams, CollapseEvent, LifecycleEvent, MapGetResult, Outcome, SizeResult } from './protocol.js';
import { Session, deadline } from './session.js';
import { bytesArg, shownBytes, textOf, type KeyInput } from './bytes.js';
import * as feed from './feed.js';
import { pairOp, txnOps, type PairTxnInput } from './txn.js';

export type { Outcome } from './protocol.js';
export type { CallOptions } from './admin-client.js';

/**
 * Options of onCollapse/onLifecycle: `onEnd` is told when the stream ends: `connection-closed` (spookd went away;
 * reopen it then), or `peer-removed` (a reload removed the peer it watched; reopening is refused).
 */
export interface WatchOptions extends CallOptions {
  onEnd?: (e: SpookError) => void;
}

/**
 * A map key read at one committed version. `bytes` always holds the value; `value` is the same as
 * text only when it is valid UTF-8 (a binary value is never lost: read `bytes`).
 */
export interface RegisterValue {
  found: boolean;
  bytes?: Uint8Array;
  value?: string;
  valueBase64?: string;
  keyVersion?: number;
  version: number;
}

/**
 * A register of a pair. Every key is text (written as its UTF-8) or bytes, exactly as given: a key a
 * scan or a watch showed goes back as its `keyBytes` (its `key`, base64 when not UTF-8, may name another key).
 */
export interface RegisterHandle {
  get(key: KeyInput, opts?: CallOptions): Promise<RegisterValue>;
  set(key: KeyInput, value: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  cas(key: KeyInput, expect: number, value: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  del(key: KeyInput, opts?: CallOptions): Promise<Outcome>;
  append(data: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  /**
   * What became of an own write answered `pending`, even across restarts of spookd or of the
   * application: `pending` still, or its verdict and version; `unknown-candidate` when this host no
   * longer knows (decided long ago, settled by a reconciliation, or the peer was rekeyed since: read
   * the key). Give it the write's Outcome (or its `seq` and `pair`): its `pair` is sent along, so a
   * write of a pair a rekey replaced is never answered with the outcome of the new pair's write of
   * the same seq. A bare `seq` goes with the pair of the write this handle answered `pending` with
   * that seq (the earliest, of its last PENDING_KEPT), if any; else it cannot tell the two apart.
   */
  outcome(write: number | { seq: number; pair?: string }, opts?: CallOptions): Promise<Outcome>;
  /**
   * One atomic candidate of 1-256 ops, committed whole or rejected whole at both ends (a failed
   * guard's index is `failedOp`). On this register alone: one version; map ops on distinct keys,
   * or appends. An op may name another `register` of the pair (up to 16 registers in all): each
   * register's ops then commit at its own next version, and no reader at either end sees some
   * without the others.
   */
  txn(ops: PairTxnInput[], opts?: CallOptions): Promise<Outcome>;
  onCollapse(fn: (ev: CollapseEvent) => void, opts?: WatchOptions): Promise<void>;
  onLifecycle(fn: (ev: LifecycleEvent) => void, opts?: WatchOptions): Promise<void>;
  /** One page of the keys with `prefix`, in byte order, at one committed version (client/feed.ts). */
  scan(prefix?: string | Uint8Array, opts?: feed.ScanOptions): Promise<feed.ScanPage>;
  /** Every page of a scan, all at one version. */
  scanAll(prefix?: string | Uint8Array, opts?: feed.ScanOptions): Promise<{ version: number; entries: feed.ScanEntry[] }>;
  size(opts?: CallOptions): Promise<SizeResult>;
  /** The committed changes of keys with `prefix` after `fromVersion`, surviving spookd restarts with no gap and no duplicate. */
  watch(prefix: string | Uint8Array, opts: feed.WatchOptions): Promise<feed.Watcher>;
  close(): void;
}

/** Pending answers whose pair a handle keeps for a bare `outcome(seq)` (as spookd keeps outcomes: OUTCOMES_KEPT). */
export const PENDING_KEPT = 4096;

export async function openRegister(register: string, opts: { peer?: string; socket?: string } = {}): Promise<RegisterHandle> {
  const session = await Session.open(opts.socket);
  const base = { register, ...(opts.peer ? { peer: opts.peer } : {}) };

  /**
   * The pair of each write answered `pending`, by seq: a bare outcome(seq) asks with it, so a rekey (a new pair
   * numbering from 1 again) never answers another write's outcome. The earliest kept when a seq recurs.
   */
  const pendingPair = new Map<number, string>();
  /** A write: `pending` when spookd has no outcome 1 s before the call's deadline, or half-way through one under 2 s (Session.write). */
  const write = async <C extends 'set' | 'cas' | 'del' | 'append' | 'txn'>(cmd: C, args: object, o?: CallOptions): Promise<Outcome> => {
    const r = await session.write(cmd, { ...base, ...args } as Omit<AdminArgs<C>, 'timeoutMs'>, deadline(o));
    if (r.verdict === 'pending' && typeof r.pair === 'string' && !pendingPair.has(r.seq)) {
      if (pendingPair.size >= PENDING_KEPT) pendingPair.delete(pendingPair.keys().next().value!);
      pendingPair.set(r.seq, r.pair);
    }
    return r;
  };

  return {
    async get(key, o) {
      const r = (await session.request('get', { ...base, ...bytesArg('key', key) }, deadline(o))) as MapGetResult; // get(key) is for map registers
      const bytes = r.value ? shownBytes(r.value) : undefined;
      return {
        found: r.found,
        bytes,
        value: bytes && textOf(bytes),
        valueBase64: r.value?.base64,
        keyVersion: r.keyVersion,
        version: r.version,
      };
    },
    // async: an argument bytesArg refuses rejects the promise, as spookd's refusal would, rather than throwing.
    set: async (key, value, o) => write('set', { ...bytesArg('key', key), ...bytesArg('value', value) }, o),
    cas: async (key, expect, value, o) => write('cas', { ...bytesArg('key', key), expect, ...bytesArg('value', value) }, o),
    del: async (key, o) => write('del', bytesArg('key', key), o),
    append: async (data, o) => write('append', bytesArg('data', data), o),
    outcome: (w, o) => {
      const { seq, pair } = typeof w === 'number' ? { seq: w, pair: pendingPair.get(w) } : w;
      return session.request('outcome', { ...base, seq, ...(pair !== undefined ? { pair } : {}) }, deadline(o));
    },
    txn: async (ops, o) => write('txn', { ops: txnOps(ops, pairOp) }, o),
    onCollapse: async (fn, o) => void (await session.stream('watch', base, fn, o)),
    onLifecycle: (fn, o) => {
      const args: AdminStreams['events']['args'] = opts.peer ? { peer: opts.peer } : {};
      return session
        .stream(
          'events',
          args,
          (ev) => {
            if (ev.type === 'lifecycle') fn(ev);
          },
          o,
        )
        .then(() => undefined);
    },
    scan: (prefix, o) => feed.scan(session, base, prefix, o),
    scanAll: (prefix, o) => feed.scanAll(session, base, prefix, o),
    size: (o) => feed.size(session, base, o),
    watch: (prefix, o) => feed.watch(session, base, prefix, o),
    close: () => session.close(),
  };
}

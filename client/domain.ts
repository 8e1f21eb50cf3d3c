/**
 * Typed domains and QSCS groups: open a QN domain of a running spookd, read and write its
 * registers, commit transactions over several of them, and see its members, leader and lag.
 * Every write is one domain candidate (`dpropose`): all its ops commit at one log index or none
 * does. See docs/LIBRARY.md, "Domains and groups".
 */
import { SpookError, type CallOptions } from './admin-client.js';
import type {
  AdminArgs,
  DomainMapGetResult,
  DomainOp,
  DomainOutcome,
  DomainStreamGetResult,
  DomainSummary,
  GroupResult,
  SizeResult,
} from './protocol.js';
import * as feed from './feed.js';
import { Session, deadline, left, type Deadline } from './session.js';
import { bytesArg, shownBytes, textOf, type KeyInput } from './bytes.js';
import { domainOp, txnOp, txnOps, type DomainTxnInput, type TxnInput } from './txn.js';

export type { TxnInput, DomainTxnInput, PairTxnInput } from './txn.js';

/** A map key of a domain register, read at the member's applied index. `bytes` always; `value` when it is UTF-8. */
export interface DomainValue {
  found: boolean;
  bytes?: Uint8Array;
  value?: string;
  keyVersion?: number;
  /** The register's version and the log index it was read at. */
  version: number;
  index: number;
}

/** Bytes of a domain stream register from `offset`, read at the member's applied index. */
export interface DomainStreamRead {
  size: number;
  offset: number;
  bytes: Uint8Array;
  version: number;
  index: number;
}

/**
 * One register of a domain: the same write API as a pair register, outcomes as DomainOutcome. A key is text
 * or bytes, exactly as given: a scan's or a watch's `keyBytes` goes back into any call.
 */
export interface DomainRegisterHandle {
  readonly name: string;
  get(key: KeyInput, opts?: CallOptions): Promise<DomainValue>;
  /** Stream registers: `length` bytes (default 64 KiB) from `offset` (default 0). */
  read(offset?: number, length?: number, opts?: CallOptions): Promise<DomainStreamRead>;
  set(key: KeyInput, value: string | Uint8Array, opts?: CallOptions): Promise<DomainOutcome>;
  cas(key: KeyInput, expect: number, value: string | Uint8Array, opts?: CallOptions): Promise<DomainOutcome>;
  del(key: KeyInput, opts?: CallOptions): Promise<DomainOutcome>;
  /** Appends at the current end unless `offset` is given (then it commits only there). */
  append(data: string | Uint8Array, opts?: CallOptions & { offset?: number }): Promise<DomainOutcome>;
  /** A transaction on this register only. */
  txn(ops: TxnInput[], opts?: CallOptions): Promise<DomainOutcome>;
  /** One page of the keys with `prefix`, in byte order, at one committed version (client/feed.ts). */
  scan(prefix?: string | Uint8Array, opts?: feed.ScanOptions): Promise<feed.ScanPage>;
  /** Every page of a scan, all at one version. */
  scanAll(prefix?: string | Uint8Array, opts?: feed.ScanOptions): Promise<{ version: number; entries: feed.ScanEntry[] }>;
  size(opts?: CallOptions): Promise<SizeResult>;
  /** Every committed change under `prefix` after `fromVersion`, in order, resumed across spookd restarts (client/feed.ts). */
  watch(prefix: string | Uint8Array, opts: feed.WatchOptions): Promise<feed.Watcher>;
}

/** A QSCS group as this member sees it. */
export interface GroupInfo {
  name: string;
  registers: string[];
  /** The group version: one more per committed candidate that wrote any of its registers. */
  version: number;
  state: 'coherent' | 'decoherent';
}

export interface GroupHandle {
  readonly name: string;
  info(opts?: CallOptions): Promise<GroupInfo>;
  /** A transaction whose ops all target registers of this group (else `bad-argument`, field `ops[i].register`). */
  txn(ops: DomainTxnInput[], opts?: CallOptions): Promise<DomainOutcome>;
}

export interface DomainMember {
  member: string;
  role: string;
  link: string;
  commitIndex: number | null;
  /** Log entries this member trails the commit index by, as this member last heard (null: not heard). */
  lag: number | null;
}

export interface DomainHandle {
  /** The domain's name (resolved at open when none was given). */
  readonly name: string;
  register(name: string): DomainRegisterHandle;
  /** One candidate of 1-256 ops over any registers of the domain: all commit at one index, or none. */
  txn(ops: DomainTxnInput[], opts?: CallOptions): Promise<DomainOutcome>;
  group(name: string): GroupHandle;
  /** The outcome of a candidate answered `pending` earlier (its `seq`), decided since or still pending. */
  outcome(seq: number, opts?: CallOptions): Promise<DomainOutcome>;
  members(opts?: CallOptions): Promise<DomainMember[]>;
  /** The current leader's peer name (or `self`'s name), null while there is none. */
  leader(opts?: CallOptions): Promise<string | null>;
  /** How many log entries the slowest member trails the commit index by (null: no member reported). */
  lag(opts?: CallOptions): Promise<number | null>;
  status(opts?: CallOptions): Promise<DomainSummary>;
  close(): void;
}

const MAX_OPS = 256;

/**
 * Opens a domain of the spookd at `socket`: `name`, or the only one configured (`domain-required`
 * when there are several, `unknown-domain` when there is none of that name).
 */
export async function openDomain(name?: string, opts: { socket?: string } & CallOptions = {}): Promise<DomainHandle> {
  const session = await Session.open(opts.socket);
  let summary: DomainSummary;
  try {
    summary = await session.request('domain', name === undefined ? {} : { domain: name }, deadline(opts));
  } catch (e) {
    session.close();
    throw e;
  }
  const domain = summary.domain;
  const base = { domain };

  const propose = (ops: DomainOp[], o?: CallOptions): Promise<DomainOutcome> => {
    const d = deadline(o);
    if (ops.length === 0 || ops.length > MAX_OPS)
      return Promise.reject(new SpookError('bad-argument', `a transaction has 1-${MAX_OPS} ops, not ${ops.length}`, 'ops'));
    return session.write('dpropose', { ...base, ops }, d);
  };
  const dget = (args: Omit<AdminArgs<'dget'>, 'domain'>, d: Deadline): Promise<DomainMapGetResult | DomainStreamGetResult> =>
    session.request('dget', { ...base, ...args }, d);
  const status = (o?: CallOptions): Promise<DomainSummary> => session.request('domain', base, deadline(o));

  const register = (reg: string): DomainRegisterHandle => {
    // async: an op txnOp refuses rejects the promise rather than throwing.
    const one = async (op: TxnInput, o?: CallOptions): Promise<DomainOutcome> => propose([{ register: reg, ...txnOp(op) } as DomainOp], o);
    return {
      name: reg,
      async get(key, o) {
        const r = (await dget({ register: reg, ...bytesArg('key', key) }, deadline(o))) as DomainMapGetResult;
        const bytes = r.value ? shownBytes(r.value) : undefined;
        return { found: r.found, bytes, value: bytes && textOf(bytes), keyVersion: r.keyVersion, version: r.version, index: r.index };
      },
      async read(offset = 0, length = 65536, o) {
        const r = (await dget({ register: reg, offset, length }, deadline(o))) as DomainStreamGetResult;
        return { size: r.size, offset: r.offset, bytes: shownBytes(r.data), version: r.version, index: r.index };
      },
      set: (key, value, o) => one({ op: 'set', key, value }, o),
      cas: (key, expect, value, o) => one({ op: 'cas', key, expect, value }, o),
      del: (key, o) => one({ op: 'del', key }, o),
      append: (data, o) => one({ op: 'append', data, offset: o?.offset }, o),
      scan: (prefix, o) => feed.scan(session, { domain, register: reg }, prefix, o),
      scanAll: (prefix, o) => feed.scanAll(session, { domain, register: reg }, prefix, o),
      size: (o) => feed.size(session, { domain, register: reg }, o),
      watch: (prefix, o) => feed.watch(session, { domain, register: reg }, prefix, o),
      txn: async (ops, o) =>
        propose(
          txnOps(ops, (op) => ({ register: reg, ...txnOp(op) }) as DomainOp),
          o,
        ),
    };
  };

  const groupInfo = async (g: string, o?: CallOptions): Promise<GroupInfo> => {
    const r: GroupResult = await session.request('group', { ...base, group: g }, deadline(o));
    return { name: r.group, registers: r.members.map((m) => m.register), version: r.version, state: r.state };
  };

  const members = async (o?: CallOptions): Promise<DomainMember[]> =>
    (await status(o)).members.map((m) => ({ member: m.member, role: m.role, link: m.link, commitIndex: m.commitIndex, lag: m.lag }));

  return {
    name: domain,
    register,
    txn: async (ops, o) => propose(txnOps(ops, domainOp), o),
    group: (g) => ({
      name: g,
      info: (o) => groupInfo(g, o),
      async txn(ops, o) {
        const d = deadline(o);
        // The group's registers as configured (they do not change while spookd runs): checked here, before proposing.
        const info = await groupInfo(g, { timeoutMs: left(d), signal: d.signal });
        ops.forEach((op, i) => {
          if (!info.registers.includes(op.register))
            throw new SpookError(
              'bad-argument',
              `ops[${i}].register ${op.register} is not in group ${g} (${info.registers.join(', ')})`,
              `ops[${i}].register`,
            );
        });
        return propose(txnOps(ops, domainOp), { timeoutMs: left(d), signal: d.signal });
      },
    }),
    outcome: (seq, o) => session.request('doutcome', { ...base, seq }, deadline(o)),
    members,
    leader: async (o) => (await status(o)).leader,
    async lag(o) {
      const lags = (await members(o)).map((m) => m.lag).filter((l): l is number => l !== null);
      return lags.length === 0 ? null : Math.max(...lags);
    },
    status,
    close: () => session.close(),
  };
}

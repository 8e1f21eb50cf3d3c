/**
 * Admin API commands for QN domains and their QSCS groups (client/protocol.ts): domains, domain,
 * groups, group, dget, dpropose, doutcome, member.
 */
import type { AdminArgs, DomainMapGetResult, DomainOutcome, DomainStreamGetResult } from '../../client/protocol.js';
import { DeltaOp, type Delta } from '../../wire/delta.js';
import type { DomainEvent } from '../../core/qn/node.js';
import type { CandidateOp } from '../../core/qn/state.js';
import { type StreamState } from '../../core/register/stream.js';
import type { DomainHost } from '../daemon/domains.js';
import type { Spookd } from '../daemon/spookd.js';
import {
  AdminFault,
  MAX_WAIT_MS,
  bytesArg as bytes,
  echo,
  failsAs,
  num as n,
  showBytes as show,
  str as s,
  within,
  type Untrusted,
} from './args.js';
import type { Handlers } from './handlers.js';
import { hashHex } from '../../core/register/hash.js';

const MAX_OPS = 256;

/** The domain a request names (`domain`), or the only one. */
export const domainOf = (d: Spookd, name: string | undefined): DomainHost =>
  failsAs(name === undefined && d.domains.size !== 0 ? 'domain-required' : 'unknown-domain', 'domain', () => d.domain(name), name);

/** A register of the domain, as of its applied index. */
const readOf = (h: DomainHost, register: string, key?: Uint8Array): ReturnType<DomainHost['read']> =>
  failsAs('unknown-register', 'register', () => h.read(register, key), register);

type Op = Untrusted<
  { register: string; op: string; key: string; keyBase64: string; value: string; valueBase64: string } & {
    data: string;
    dataBase64: string;
    expect: number;
    offset: number;
  }
>;

/**
 * One op of a `dpropose` request: {register, op: set|del|cas|append, key, value, expect, data, offset}.
 * An append's offset defaults to `ends` (where the candidate's earlier appends to that register leave
 * the stream), else to where it ends after this member's own pending candidates. It was the applied
 * size alone: a txn's second append, and an append pipelined behind another, were always rejected
 * (append-offset-mismatch), where a pair's (and client/txn.ts TxnInput) land each after the last.
 */
function toOp(d: Spookd, domain: string | undefined, raw: unknown, i: number, ends: Map<string, number>): CandidateOp {
  if (typeof raw !== 'object' || raw === null) throw new AdminFault('bad-argument', `ops[${i}] must be an object`, `ops[${i}]`);
  const a = raw as Op;
  return within(`ops[${i}]`, () => {
    const register = s(a, 'register');
    const op = s(a, 'op');
    let delta: Delta;
    if (op === 'set') delta = { op: DeltaOp.Set, key: bytes(a, 'key'), value: bytes(a, 'value') };
    else if (op === 'del') delta = { op: DeltaOp.Del, key: bytes(a, 'key') };
    else if (op === 'cas')
      delta = {
        op: DeltaOp.Cas,
        key: bytes(a, 'key'),
        expect: n(a, 'expect', undefined, 0, Number.MAX_SAFE_INTEGER),
        value: bytes(a, 'value'),
      };
    else if (op === 'append') {
      const h = domainOf(d, domain);
      const end = streamEnd(h, register, ends);
      const data = bytes(a, 'data');
      const offset = n(a, 'offset', end, 0, Number.MAX_SAFE_INTEGER);
      ends.set(register, offset + data.length);
      delta = { op: DeltaOp.Append, offset, data };
    } else throw new AdminFault('bad-argument', `ops[${i}].op must be set, del, cas or append, not ${echo(op)}`, 'op');
    return { register, delta };
  });
}

/**
 * Propose one candidate and wait for its outcome (or report it pending when the wait runs out).
 * A member that started empty (new, or its directory wiped) numbers no write before it has
 * caught up (core/qn/node.ts propose, `catching-up`): the write is held here until then, within
 * the same timeoutMs, and refused, nothing proposed, if that passes first.
 */
function propose(d: Spookd, args: Untrusted<AdminArgs<'dpropose'>>, onClose: (f: () => void) => void): Promise<DomainOutcome> {
  const name = s(args, 'domain', false);
  const h = domainOf(d, name);
  if (!Array.isArray(args.ops) || args.ops.length === 0 || args.ops.length > MAX_OPS)
    throw new AdminFault('bad-argument', `argument ops must be an array of 1-${MAX_OPS} operations`, 'ops');
  const ends = new Map<string, number>();
  const ops = args.ops.map((o, i) => toOp(d, name, o, i, ends));
  // Appends that name no offset: a held write's land where the stream ends when it is proposed
  // (atEnd), not where it ended when it arrived. (Only the built ops are kept while it is held,
  // never the request's parsed arguments: a field no check reads may be megabytes.)
  const atEnd = args.ops.map((o) => typeof o === 'object' && o !== null && (o as Op).op === 'append' && (o as Op).offset === undefined);
  const timeoutMs = n(args, 'timeoutMs', 10_000, 0, MAX_WAIT_MS);
  const t0 = d.now();
  const r = h.propose(t0, ops);
  if ('refused' in r && r.code !== 'catching-up') throw refusal(r);
  if (!('refused' in r)) return outcomeOf(d, h, r, t0, timeoutMs, onClose);
  const behind = (why: string): AdminFault =>
    new AdminFault(
      'refused',
      `refused: ${why}: this member of domain ${h.cfg.name} started with nothing stored (new, or its directory wiped) and has not caught up with its leader yet (applied ${h.node.raft.applied}, leader's commit ${h.node.raft.leaderCommitSeen || 'not heard'}); nothing was proposed, so the write may be retried`,
    );
  if (timeoutMs === 0) throw behind('no time to wait (timeoutMs 0)');
  return new Promise((resolve, reject) => {
    let closed = false;
    let stopWaiting = (): void => {};
    const end = (): void => {
      closed = true;
      stopWaiting();
      clearTimeout(timer);
    };
    const timer = setTimeout(() => {
      end();
      reject(behind(`not caught up within ${timeoutMs} ms`));
    }, timeoutMs);
    onClose(end);
    const retry = (): void => {
      if (closed) return;
      let again: ReturnType<DomainHost['propose']>;
      try {
        atEndAgain(h, ops, atEnd);
        again = h.propose(d.now(), ops);
      } catch (e) {
        end();
        return reject(e);
      }
      if ('refused' in again && again.code === 'catching-up') return void (stopWaiting = h.whenCaughtUp(retry));
      end();
      if ('refused' in again) return reject(refusal(again));
      // The rest of the call's time for the outcome, as for a write proposed at once.
      outcomeOf(d, h, again, t0, Math.max(0, timeoutMs - (d.now() - t0)), onClose).then(resolve, reject);
    };
    stopWaiting = h.whenCaughtUp(retry);
  });
}

/**
 * Where an append that names no offset lands: after this candidate's earlier appends to the
 * register (`ends`), else after the applied stream and this member's own pending appends.
 */
const streamEnd = (h: DomainHost, register: string, ends: Map<string, number>): number =>
  ends.get(register) ?? readOf(h, register).size + h.node.pendingAppendBytes(register);

/** The offsets of `ops`' appends marked `atEnd`, where the stream ends now (as toOp sets them). */
function atEndAgain(h: DomainHost, ops: CandidateOp[], atEnd: boolean[]): void {
  const ends = new Map<string, number>();
  for (const [i, op] of ops.entries()) {
    if (op.delta.op !== DeltaOp.Append) continue;
    const offset = atEnd[i] ? streamEnd(h, op.register, ends) : op.delta.offset;
    op.delta = { ...op.delta, offset };
    ends.set(op.register, offset + op.delta.data.length);
  }
}

/** A key or value over its limit is `too-large` (the message names the limit), as on a pair; any other refusal `refused`. */
const refusal = (r: { refused: string; code?: string }): AdminFault =>
  new AdminFault(r.code === 'too-large' ? 'too-large' : 'refused', `refused: ${r.refused}`);

/** Wait for the outcome of own candidate `seq` (`pending` when `timeoutMs` runs out first). */
function outcomeOf(
  d: Spookd,
  h: DomainHost,
  r: { seq: number },
  t0: number,
  timeoutMs: number,
  onClose: (f: () => void) => void,
): Promise<DomainOutcome> {
  return new Promise((resolve, reject) => {
    let over = false;
    const done = (): void => {
      over = true;
      stop();
      clearTimeout(timer);
    };
    const sub = (ev: Extract<DomainEvent, { type: 'outcome' }>): void => {
      done();
      if (!ev.unknown) d.observeCommit('domain', ev.committed ? 'committed' : 'rejected', (d.now() - t0) / 1000);
      resolve({
        domain: h.cfg.name,
        seq: r.seq,
        verdict: ev.unknown ? 'unknown' : ev.committed ? 'committed' : 'rejected',
        reason: ev.reason ?? null,
        index: ev.index ?? null,
        ...(ev.op !== undefined ? { failedOp: ev.op } : {}),
      });
    };
    // `pending` names a candidate that is durable: the time running out before its batch is
    // written waits for that batch. A write held while its member caught up is proposed from a
    // turn's drain with what is left of its time, maybe nothing: its batch is the next turn's,
    // after this timer, and it was answered pending, then the batch failed and it was never written.
    let durable = false;
    let due = false;
    const pending = (): void => {
      if (over) return; // answered already, or the client went
      done();
      resolve({
        domain: h.cfg.name,
        seq: r.seq,
        verdict: 'pending',
        reason: `no outcome within ${timeoutMs} ms (member ${h.node.coherenceState})`,
        index: null,
      });
    };
    const timer = setTimeout(() => {
      due = true;
      if (durable) pending();
    }, timeoutMs);
    const stop = h.onOutcome(r.seq, sub);
    onClose(done);
    // Group commit (DomainHost.batchTurns): the candidate is written with this turn's batch; a
    // batch that fails fences the domain and the candidate is refused, never reported pending.
    h.whenDurable((failed) => {
      if (!failed) {
        durable = true;
        if (due) pending();
        return;
      }
      done();
      reject(new AdminFault('refused', `refused: this member is fenced: ${h.node.fencedCause ?? failed.message}`));
    });
    d.kickDomain(h);
  });
}

export function domainHandlers(
  d: Spookd,
): Handlers<'domains' | 'domain' | 'groups' | 'group' | 'dget' | 'dpropose' | 'doutcome' | 'member'> {
  return {
    domains: () =>
      [...d.domains.values()].map((h) => {
        const x = h.summary(d.now());
        return {
          domain: x.domain,
          state: x.state,
          role: x.role,
          leader: x.leader,
          term: x.term,
          commitIndex: x.commitIndex,
          members: x.members.length,
          pending: x.pending,
          hash: x.hash,
        };
      }),
    domain: (args) => domainOf(d, s(args, 'domain', false)).summary(d.now()),
    groups: () =>
      [...d.domains.values()].flatMap((h) =>
        h.summary(d.now()).groups.map((g) => ({ domain: h.cfg.name, state: h.node.coherenceState, ...g })),
      ),
    group: (args) => {
      const name = s(args, 'domain', false);
      const g = s(args, 'group');
      for (const h of name ? [domainOf(d, name)] : d.domains.values()) {
        const grp = h.node.state.groups.get(g);
        if (!grp) continue;
        return {
          group: g,
          domain: h.cfg.name,
          version: grp.version,
          state: h.node.coherenceState,
          policy: h.cfg.policy,
          commitIndex: h.node.raft.commit,
          members: grp.registers.map((r) => {
            const reg = h.node.state.registers.get(r)!;
            return { register: r, kind: reg.kind, version: reg.version, size: reg.state.size(), hash: hashHex(reg.state.hash) };
          }),
        };
      }
      throw new AdminFault('unknown-group', `no group named ${echo(g)}`, 'group');
    },
    dget: (args): DomainMapGetResult | DomainStreamGetResult => {
      const h = domainOf(d, s(args, 'domain', false));
      const register = s(args, 'register');
      // `keyBase64` alone is a key too: it was taken for none, and a map read by bytes refused (`key is required`).
      const key = args.key === undefined && args.keyBase64 === undefined ? undefined : bytes(args, 'key');
      const r = readOf(h, register, key);
      if (r.state) {
        if (!key) throw new AdminFault('bad-argument', 'argument key is required for a map register', 'key');
        return {
          domain: h.cfg.name,
          register,
          index: r.index,
          version: r.version,
          found: !!r.entry,
          ...(r.entry ? { keyVersion: r.entry.version, value: show(r.entry.value) } : {}),
        };
      }
      const st = h.node.state.registers.get(register)!.state as StreamState;
      const offset = n(args, 'offset', 0, 0, Number.MAX_SAFE_INTEGER);
      const length = n(args, 'length', 65536, 0, 1 << 20);
      return {
        domain: h.cfg.name,
        register,
        index: r.index,
        version: r.version,
        size: r.size,
        offset,
        data: show(st.read(offset, length)),
      };
    },
    // A write reported `pending` is decided later, across restarts: ask for it by its number.
    doutcome: (args) => {
      const h = domainOf(d, s(args, 'domain', false));
      const seq = n(args, 'seq', undefined, 1, Number.MAX_SAFE_INTEGER);
      const o = h.node.outcomeOf(seq);
      if (!o) throw new AdminFault('unknown-candidate', `no candidate ${seq} was proposed on this member of ${h.cfg.name}`, 'seq');
      return { domain: h.cfg.name, seq, verdict: o.verdict, reason: o.reason ?? null, index: null };
    },
    member: (args) => {
      const h = domainOf(d, s(args, 'domain', false));
      const add = s(args, 'add', false);
      const remove = s(args, 'remove', false);
      // changeMember throws only for a peer name it does not know.
      const r = failsAs(
        'unknown-peer',
        add !== undefined ? 'add' : 'remove',
        () => h.changeMember(d.now(), { add, remove }),
        add ?? remove,
      );
      d.kickDomain(h);
      if (!r.ok)
        throw new AdminFault(
          h.node.fencedCause ? 'refused' : h.node.raft.role !== 'leader' ? 'not-leader' : 'membership-refused',
          r.reason,
        );
      return {
        domain: h.cfg.name,
        index: r.index,
        note: 'appended; in force now, committed once a majority of the new configuration stores it',
      };
    },
    dpropose: (args, call) => propose(d, args, (f) => call.onClose(f)),
  };
}

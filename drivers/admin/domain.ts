/**
 * Admin API commands for QN domains and their QSCS groups (same JSON-lines protocol as
 * admin.ts): domains, domain, groups, group, dget, dpropose, member.
 */
import { DeltaOp, type Delta } from '../../wire/delta.js';
import type { DomainEvent } from '../../core/qn/node.js';
import type { CandidateOp } from '../../core/qn/state.js';
import { type StreamState } from '../../core/register/stream.js';
import type { Spookd } from '../daemon/spookd.js';
import { MAX_WAIT_MS, bytesArg as bytes, num as n, showBytes as show, str as s, type Args } from './args.js';
import { hashHex } from '../../core/register/hash.js';

export const DOMAIN_COMMANDS = ['domains', 'domain', 'groups', 'group', 'dget', 'dpropose', 'doutcome', 'member'];

const MAX_OPS = 256;

/** One op of a `dpropose` request: {register, op: set|del|cas|append, key, value, expect, data, offset}. */
function toOp(d: Spookd, domain: string | undefined, raw: unknown, i: number): CandidateOp {
  if (typeof raw !== 'object' || raw === null) throw new Error(`ops[${i}] must be an object`);
  const a = raw as Args;
  const register = s(a, 'register')!;
  const op = s(a, 'op')!;
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
    const size = d.domain(domain).read(register).size;
    delta = { op: DeltaOp.Append, offset: n(a, 'offset', size, 0, Number.MAX_SAFE_INTEGER), data: bytes(a, 'data') };
  } else throw new Error(`ops[${i}].op must be set, del, cas or append, not ${JSON.stringify(op)}`);
  return { register, delta };
}

export function runDomainCommand(d: Spookd, cmd: string, args: Args, cleanups: (() => void)[]): unknown {
  const name = s(args, 'domain', false);
  switch (cmd) {
    case 'domains':
      return [...d.domains.values()].map((h) => {
        const x = h.summary(d.now());
        return {
          domain: x.domain,
          state: x.state,
          role: x.role,
          leader: x.leader,
          term: x.term,
          commitIndex: x.commitIndex,
          members: (x.members as unknown[]).length,
          pending: x.pending,
          hash: x.hash,
        };
      });
    case 'domain':
      return d.domain(name).summary(d.now());
    case 'groups':
      return [...d.domains.values()].flatMap((h) =>
        (h.summary(d.now()).groups as object[]).map((g) => ({ domain: h.cfg.name, state: h.node.coherenceState, ...g })),
      );
    case 'group': {
      const g = s(args, 'group')!;
      for (const h of name ? [d.domain(name)] : d.domains.values()) {
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
      throw new Error(`no group named ${g}`);
    }
    case 'dget': {
      const h = d.domain(name);
      const register = s(args, 'register')!;
      const key = args.key === undefined ? undefined : bytes(args, 'key');
      const r = h.read(register, key);
      if (r.state) {
        if (!key) throw new Error('argument key is required for a map register');
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
    }
    case 'doutcome': {
      // A write reported `pending` is decided later, across restarts: ask for it by its number.
      const h = d.domain(name);
      const seq = n(args, 'seq', undefined, 1, Number.MAX_SAFE_INTEGER);
      const o = h.node.outcomeOf(seq);
      if (!o) throw new Error(`no candidate ${seq} was proposed on this member of ${h.cfg.name}`);
      return { domain: h.cfg.name, seq, verdict: o.verdict, reason: o.reason ?? null, index: null };
    }
    case 'member': {
      const h = d.domain(name);
      const r = h.changeMember(d.now(), { add: s(args, 'add', false), remove: s(args, 'remove', false) });
      d.kickDomain(h);
      if (!r.ok) throw new Error(r.reason);
      return {
        domain: h.cfg.name,
        index: r.index,
        note: 'appended; in force now, committed once a majority of the new configuration stores it',
      };
    }
    case 'dpropose': {
      const h = d.domain(name);
      if (!Array.isArray(args.ops) || args.ops.length === 0 || args.ops.length > MAX_OPS)
        throw new Error(`argument ops must be an array of 1-${MAX_OPS} operations`);
      const ops = args.ops.map((o, i) => toOp(d, name, o, i));
      const timeoutMs = n(args, 'timeoutMs', 10_000, 0, MAX_WAIT_MS);
      const r = h.propose(d.now(), ops);
      if ('refused' in r) throw new Error(`refused: ${r.refused}`);
      return new Promise((resolve) => {
        const done = (): void => {
          h.subscribers.delete(sub);
          clearTimeout(timer);
        };
        const sub = (ev: DomainEvent): void => {
          if (ev.type !== 'outcome' || ev.seq !== r.seq) return;
          done();
          resolve({
            domain: h.cfg.name,
            seq: r.seq,
            verdict: ev.unknown ? 'unknown' : ev.committed ? 'committed' : 'rejected',
            reason: ev.reason ?? null,
            index: ev.index ?? null,
          });
        };
        const timer = setTimeout(() => {
          done();
          resolve({
            domain: h.cfg.name,
            seq: r.seq,
            verdict: 'pending',
            reason: `no outcome within ${timeoutMs} ms (member ${h.node.coherenceState})`,
            index: null,
          });
        }, timeoutMs);
        h.subscribers.add(sub);
        cleanups.push(done);
        d.kickDomain(h);
      });
    }
    default:
      throw new Error(`unknown domain command ${cmd}`);
  }
}

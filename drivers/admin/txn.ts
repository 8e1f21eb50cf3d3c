/**
 * Admin API command `txn` (client/protocol.ts): one atomic candidate of several ops on one pair
 * register (DeltaOp.Txn, docs/PROTOCOL.md §4.5) or, when ops name other registers, over several
 * (DeltaOp.Cross, §4.6), decided whole by the pair's collapse. Domain transactions are `dpropose`
 * (drivers/admin/domain.ts): a domain candidate is already atomic.
 */
import type { AdminArgs } from '../../client/protocol.js';
import type { CrossDelta } from '../../wire/cross.js';
import { DeltaOp, txnFault, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { MAX_TXN_OPS } from '../../wire/constants.js';
import type { Spookd } from '../daemon/spookd.js';
import { AdminFault, MAX_WAIT_MS, bytesArg, echo, failsAs, num, str, within, type Untrusted } from './args.js';
import type { Handlers } from './handlers.js';
import { linkOf, proposeDelta, refuseFenced } from './pair.js';

type Op = Untrusted<{ op: string; key: string; keyBase64: string; value: string; valueBase64: string } & TxnOpFields>;
type TxnOpFields = { data: string; dataBase64: string; expect: number; offset: number };

/** One op: {op: set|del|cas|append, key, value, expect, data, offset}; an append's offset defaults to `end` (where the previous one ends). */
function toOp(raw: unknown, i: number, end: number): SimpleDelta {
  if (typeof raw !== 'object' || raw === null) throw new AdminFault('bad-argument', `ops[${i}] must be an object`, `ops[${i}]`);
  const a = raw as Op;
  return within(`ops[${i}]`, () => {
    const op = str(a, 'op');
    if (op === 'set') return { op: DeltaOp.Set, key: bytesArg(a, 'key'), value: bytesArg(a, 'value') };
    if (op === 'del') return { op: DeltaOp.Del, key: bytesArg(a, 'key') };
    if (op === 'cas')
      return {
        op: DeltaOp.Cas,
        key: bytesArg(a, 'key'),
        expect: num(a, 'expect', undefined, 0, Number.MAX_SAFE_INTEGER),
        value: bytesArg(a, 'value'),
      };
    if (op === 'append')
      return { op: DeltaOp.Append, offset: num(a, 'offset', end, 0, Number.MAX_SAFE_INTEGER), data: bytesArg(a, 'data') };
    throw new AdminFault('bad-argument', `argument op must be set, del, cas or append, not ${echo(op)}`, 'op');
  });
}

export function txnHandlers(d: Spookd): Handlers<'txn'> {
  return {
    txn: (args: Untrusted<AdminArgs<'txn'>>, call) => {
      const link = linkOf(d, str(args, 'peer', false));
      refuseFenced(link);
      const register = str(args, 'register');
      failsAs('unknown-register', 'register', () => link.pair.register(register), register);
      const raw = args.ops;
      if (!Array.isArray(raw) || raw.length === 0 || raw.length > MAX_TXN_OPS)
        throw new AdminFault('bad-argument', `argument ops must be an array of 1-${MAX_TXN_OPS} operations`, 'ops');
      // Ops by register, in the order registers first appear (the txn's own first: it anchors a cross txn).
      const parts = new Map<string, SimpleDelta[]>([[register, []]]);
      /** Per register, the index in `ops` of each of its ops: failedOp is reported in the order given. */
      const given = new Map<string, number[]>([[register, []]]);
      const ends = new Map<string, number>();
      raw.forEach((o: unknown, i) => {
        const named =
          typeof o === 'object' && o !== null && 'register' in o
            ? within(`ops[${i}]`, () => str(o as Untrusted<{ register: string }>, 'register'))
            : register;
        const r = failsAs('unknown-register', `ops[${i}].register`, () => link.pair.register(named), named);
        const op = toOp(o, i, ends.get(named) ?? r.nextAppendOffset);
        if (op.op === DeltaOp.Append) ends.set(named, op.offset + op.data.length);
        const list = parts.get(named) ?? [];
        list.push(op);
        parts.set(named, list);
        given.set(named, [...(given.get(named) ?? []), i]);
      });
      // A part's shape (a key twice, map and stream ops mixed) is checked here, where each op's index as given
      // is known: the core names it by its place in its register's part ("txn op 1" was another op of `ops`).
      for (const [r, ops] of parts) {
        const bad = ops.length > 1 ? txnFault(ops) : undefined;
        if (bad?.op === undefined) continue;
        const i = given.get(r)![bad.op];
        throw new AdminFault('invalid-delta', `invalid: register ${r}: txn op ${i}: ${bad.why}`, `ops[${i}]`);
      }
      const one = (ops: SimpleDelta[]): Delta => (ops.length === 1 ? ops[0] : { op: DeltaOp.Txn, ops });
      const timeoutMs = num(args, 'timeoutMs', 10_000, 0, MAX_WAIT_MS);
      if (parts.get(register)!.length === 0)
        throw new AdminFault('bad-argument', `no op on register ${register}, which anchors the txn: name it in at least one op`, 'ops');
      if (parts.size === 1) return proposeDelta(d, link, register, { op: DeltaOp.Txn, ops: parts.get(register)! }, timeoutMs, call);
      const cross: CrossDelta = { op: DeltaOp.Cross, parts: [...parts].map(([r, ops]) => ({ register: r, at: 0, delta: one(ops) })) };
      // The core counts ops part by part (registers in first-appearance order): map back to the order given.
      const order = [...given.values()].flat();
      return proposeDelta(d, link, register, cross, timeoutMs, call, order);
    },
  };
}

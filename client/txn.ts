/**
 * Transaction ops as an application writes them, and their admin-protocol form. A pair `txn`
 * (RegisterHandle.txn) takes them on its register, or on other registers of the pair an op names;
 * a domain txn (DomainHandle.txn) names a register per op. Either commits whole or not at all.
 * See docs/LIBRARY.md, "Transactions".
 */
import type { DomainOp, TxnOp } from './protocol.js';
import { bytesArg, type KeyInput } from './bytes.js';
import { SpookError } from './admin-client.js';

/**
 * One op of a transaction. `cas` is a guard and a write: it commits only if the key's version is
 * `expect` (0: absent) when the txn is decided. An append's `offset` defaults to where the
 * previous append of the txn (or the register) ends. A key is text or bytes (a scan's `keyBytes`).
 */
export type TxnInput =
  | { op: 'set'; key: KeyInput; value: string | Uint8Array }
  | { op: 'del'; key: KeyInput }
  | { op: 'cas'; key: KeyInput; expect: number; value: string | Uint8Array }
  | { op: 'append'; data: string | Uint8Array; offset?: number };

/** A domain transaction's op: a TxnInput on a named register of the domain. */
export type DomainTxnInput = TxnInput & { register: string };

/** A pair transaction's op: on the handle's register, or on another register of the pair it names. */
export type PairTxnInput = TxnInput & { register?: string };

/** The admin form of a pair txn's op (its register kept when it names one). */
export const pairOp = (o: PairTxnInput): TxnOp => ({ ...(o.register !== undefined ? { register: o.register } : {}), ...txnOp(o) }) as TxnOp;

/** The admin form of one op (bytes as text or base64). */
export function txnOp(o: TxnInput): TxnOp {
  switch (o.op) {
    case 'set':
      return { op: 'set', ...bytesArg('key', o.key), ...bytesArg('value', o.value) };
    case 'del':
      return { op: 'del', ...bytesArg('key', o.key) };
    case 'cas':
      return { op: 'cas', ...bytesArg('key', o.key), expect: o.expect, ...bytesArg('value', o.value) };
    case 'append':
      return { op: 'append', ...(o.offset !== undefined ? { offset: o.offset } : {}), ...bytesArg('data', o.data) };
    default:
      throw new SpookError('bad-argument', `op must be set, del, cas or append, not ${JSON.stringify((o as { op: unknown }).op)}`, 'op');
  }
}

/** The admin form of a list of ops; a fault names the op (`ops[2].op`). */
export function txnOps<T extends TxnInput, R>(ops: readonly T[], f: (o: T) => R): R[] {
  return ops.map((o, i) => {
    try {
      return f(o);
    } catch (e) {
      if (e instanceof SpookError) throw new SpookError(e.code, `ops[${i}]: ${e.message}`, `ops[${i}].${e.field}`);
      throw e;
    }
  });
}

export const domainOp = (o: DomainTxnInput): DomainOp => ({ register: o.register, ...txnOp(o) }) as DomainOp;

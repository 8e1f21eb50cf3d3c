/**
 * What the library tells an application about its writes, against two spookd in this process:
 * the answer to a write and `outcome(seq)` asked later agree (verdict, version, and the failed op
 * of a transaction, counted in the order the ops were given).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { openRegister } from '../client/register.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';

const lab = inProcess('spook-lib-outcome', ['a', 'b'], portBase('library-outcome.test.ts'));
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const extra = {
  registers: [
    { name: 'config', kind: 'map' },
    { name: 'audit', kind: 'map' },
  ],
};

beforeAll(async () => {
  d.a = new Spookd(configOf(lab, 'a', ['b'], extra), lab.keys.a, logOf(lab, 'a'));
  d.b = new Spookd(configOf(lab, 'b', ['a'], extra), lab.keys.b, logOf(lab, 'b'));
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('outcome(seq) tells what the write was told', { timeout: 30_000 }, () => {
  it('a rejected txn across registers with interleaved ops: outcome(seq) names the same failed op, in the order given', async () => {
    for (const at of ['a', 'b']) {
      const reg = await openRegister('config', { socket: sock(at), peer: at === 'a' ? 'b' : 'a' });
      try {
        // config's ops are 0 and 2, audit's 1: the core counts config's first (0, 1), then audit's (2).
        const told = await reg.txn([
          { op: 'set', key: `x-${at}`, value: '1' },
          { register: 'audit', op: 'set', key: `t-${at}`, value: '1' },
          { op: 'cas', key: `y-${at}`, expect: 999, value: 'z' },
        ]);
        expect(told).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 2 });
        const asked = await reg.outcome(told.seq);
        expect({ at, ...asked }).toMatchObject({
          at,
          verdict: 'rejected',
          reason: 'cas-version-mismatch',
          failedOp: 2,
          version: told.version,
        });
        // The guard in the other register, given first among the ops: op 0.
        const told2 = await reg.txn([
          { register: 'audit', op: 'cas', key: `u-${at}`, expect: 7, value: '1' },
          { op: 'set', key: `x-${at}`, value: '2' },
        ]);
        expect(told2).toMatchObject({ verdict: 'rejected', failedOp: 0 });
        expect({ at, ...(await reg.outcome(told2.seq)) }).toMatchObject({ at, verdict: 'rejected', failedOp: 0 });
      } finally {
        reg.close();
      }
    }
  });

  it('a txn refused for its shape names the op at fault by its index as given (field ops[i]), across registers too', async () => {
    const reg = await openRegister('config', { socket: sock('a'), peer: 'b' });
    try {
      const refused = (p: Promise<unknown>): Promise<unknown> =>
        p.then(
          () => 'committed?',
          (e: unknown) => e,
        );
      // The second write of key k is ops[2]; as the core counts config's ops it is op 1 (ops[1] is audit's).
      const dup = await refused(
        reg.txn([
          { op: 'set', key: 'k', value: '1' },
          { register: 'audit', op: 'set', key: 't', value: '1' },
          { op: 'del', key: 'k' },
        ]),
      );
      expect(dup).toMatchObject({
        code: 'invalid-delta',
        field: 'ops[2]',
        message: expect.stringMatching(/txn op 2: a key the txn already writes/),
      });
      expect((dup as Error).message).not.toMatch(/op 1\b/);
      // On one register alone the index is the same either way, and the field names it.
      const one = await refused(
        reg.txn([
          { op: 'set', key: 'k', value: '1' },
          { op: 'del', key: 'k' },
        ]),
      );
      expect(one).toMatchObject({ code: 'invalid-delta', field: 'ops[1]' });
    } finally {
      reg.close();
    }
  });

  it('a cross txn answered pending: once decided, outcome(seq) names its failed op in the order given; after a restart, none rather than a wrong one', async () => {
    const make = (n: 'a' | 'b'): Spookd => new Spookd(configOf(lab, n, [n === 'a' ? 'b' : 'a'], extra), lab.keys[n], logOf(lab, n));
    const interleaved = (k: string) => [
      { op: 'set' as const, key: `p-${k}`, value: '1' },
      { register: 'audit', op: 'set' as const, key: `q-${k}`, value: '1' },
      { op: 'cas' as const, key: `r-${k}`, expect: 999, value: 'z' },
    ];
    // The follower writes while the sequencer is down (the sequencer decides its own alone), and learns the verdict later.
    const at = d.a.link('b').pair.role === 'follower' ? 'a' : 'b';
    const other = at === 'a' ? 'b' : 'a';
    await d[other].stop();
    let reg = await openRegister('config', { socket: sock(at), peer: other });
    try {
      const told = await reg.txn(interleaved('later'), { timeoutMs: 1_500 });
      expect(told.verdict).toBe('pending');
      d[other] = make(other);
      await d[other].start();
      let asked = await reg.outcome(told.seq);
      for (let i = 0; asked.verdict === 'pending' && i < 300; i++) {
        await new Promise((r) => setTimeout(r, 20));
        asked = await reg.outcome(told.seq);
      }
      expect(asked).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', failedOp: 2 });
    } finally {
      reg.close();
    }
    // Pending across a restart of its own spookd: the order it was given in is gone with it.
    await d[other].stop();
    reg = await openRegister('config', { socket: sock(at), peer: other });
    const told = await reg.txn(interleaved('restart'), { timeoutMs: 1_500 });
    expect(told.verdict).toBe('pending');
    reg.close();
    await d[at].stop();
    d.a = make('a');
    d.b = make('b');
    await Promise.all([d.a.start(), d.b.start()]);
    reg = await openRegister('config', { socket: sock(at), peer: other });
    try {
      let asked = await reg.outcome(told.seq);
      for (let i = 0; asked.verdict === 'pending' && i < 300; i++) {
        await new Promise((r) => setTimeout(r, 20));
        asked = await reg.outcome(told.seq);
      }
      expect(asked).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch' });
      expect(asked.failedOp === undefined || asked.failedOp === 2).toBe(true);
    } finally {
      reg.close();
    }
  });
});

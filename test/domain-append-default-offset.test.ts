/**
 * A domain append without an offset lands where the stream ends (client/txn.ts TxnInput: "an
 * append's offset defaults to where the previous append of the txn (or the register) ends").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Spookd } from '../drivers/daemon/spookd.js';
import { openDomain } from '../client/domain.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';

const lab = inProcess('spook-dom-append', ['a', 'b'], 0);
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const make = (n: string): Spookd => {
  const other = n === 'a' ? 'b' : 'a';
  return new Spookd(
    configOf(lab, n, [other], {
      domains: [
        {
          name: 'dom',
          members: [other],
          registers: [
            { name: 'log', kind: 'stream' },
            { name: 'kv', kind: 'map' },
          ],
          electionMs: 200,
          heartbeatMs: 20,
        },
      ],
    }),
    lab.keys[n],
    logOf(lab, n),
  );
};

beforeAll(async () => {
  lab.port.a = await freePort();
  lab.port.b = await freePort();
  d.a = make('a');
  d.b = make('b');
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a leader', () => ['a', 'b'].some((n) => d[n].domains.get('dom')!.node.raft.role === 'leader'));
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('domain appends without an offset', { timeout: 30_000 }, () => {
  it('two in one txn chain', async () => {
    const dom = await openDomain('dom', { socket: sock('a') });
    try {
      const log = dom.register('log');
      const before = (await log.read()).size;
      const o = await log.txn([
        { op: 'append', data: 'ab' },
        { op: 'append', data: 'cd' },
      ]);
      expect(o).toMatchObject({ verdict: 'committed' });
      expect(Buffer.from((await log.read(before)).bytes).toString()).toBe('abcd');
    } finally {
      dom.close();
    }
  });

  it('pipelined from one member, each after the last', async () => {
    const size = (n: string): number => d[n].domains.get('dom')!.node.state.registers.get('log')!.state.size();
    for (const at of ['a', 'b']) {
      // Each member appends once it holds what the other appended (what another member has not applied yet is a race, as on a pair).
      await until('members agree', () => size('a') === size('b'));
      const dom = await openDomain('dom', { socket: sock(at) });
      try {
        const log = dom.register('log');
        const before = (await log.read()).size;
        const told = await Promise.all(['1', '2', '3', '4'].map((x) => log.append(`${at}${x}`)));
        expect(told.map((t) => t.verdict)).toEqual(['committed', 'committed', 'committed', 'committed']);
        expect(Buffer.from((await log.read(before)).bytes).toString()).toBe(`${at}1${at}2${at}3${at}4`);
      } finally {
        dom.close();
      }
    }
  });
});

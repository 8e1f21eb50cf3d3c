/**
 * A register's `pending` list (drivers/store/store.ts) is rewritten with the undecided own
 * candidates once it passes 1 MiB. While the sequencer decides nothing (slow, silent, or
 * withholding its decisions on purpose), the undecided ones may themselves hold more than
 * 1 MiB: then every later batch that proposes rewrote the whole list.
 */
import { describe, expect, it } from 'vitest';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore } from '../drivers/store/store.js';
import { set, tempDirs } from './helpers.js';

const tmp = tempDirs('spook-pending-rewrite');

describe('the pending list is rewritten in amortized O(octets proposed)', () => {
  it('a follower whose sequencer decides nothing: 600 proposals of 2 KB', () => {
    const dir = tmp();
    const store = new DiskStore(dir, 'never');
    // The higher id is the follower: its own candidates wait for the sequencer's decisions.
    const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
    for (const r of pair.registers.values()) store.load(r);
    const file = join(dir, 'kv', 'pending');
    let ino = statSync(file).ino;
    let rewritten = 0;
    let rewrites = 0;
    let proposed = 0;
    const value = 'v'.repeat(2000);
    for (let i = 0; i < 600; i++) {
      pair.propose(i, 'kv', set(`k${i}`, value));
      proposed += value.length;
      store.persist(pair.pollWrites());
      pair.writesDurable();
      const st = statSync(file);
      if (st.ino !== ino) {
        rewrites++;
        rewritten += st.size;
        ino = st.ino;
      }
    }
    store.close();
    console.log(`${rewrites} rewrites, ${rewritten} octets rewritten for ${proposed} octets proposed`);
    // Each rewrite follows at least as many octets appended as it writes: at most ~1 octet rewritten per octet proposed.
    expect(rewritten).toBeLessThan(2 * proposed);
  });
});

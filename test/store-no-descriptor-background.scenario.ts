/**
 * Run by test/store-no-descriptor-background.test.ts under a low `ulimit -n` (vite-node, its own
 * process): a pair's batch is durable, and the background snapshot due at its end finds no
 * descriptor to open the fresh log with (EMFILE). Prints one JSON line.
 */
import { closeSync, existsSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore } from '../drivers/store/store.js';
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { DeltaOp, type Delta } from '../wire/delta.js';

// Not from helpers.ts: it imports vitest, which this process does not run under.
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const set = (k: string, v: string): Delta => ({ op: DeltaOp.Set, key: enc(k), value: enc(v) });

const dir = join(mkdtempSync(join(tmpdir(), 'spk-nofd-')), 'peer');
const open = () => {
  const store = new DiskStore(dir, 'always', 1);
  store.backgroundSnapshotBytes = 0; // every snapshot in the background: the log renamed aside, a fresh one opened
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
};
const a = open();
const failures: string[] = [];
a.store.onSnapshotFailed = (e) => void failures.push(e.message);
// Each value outgrows the last snapshot: every batch ends with a snapshot written at once.
const commit = (k: string, n: number): string | undefined => {
  a.pair.propose(0, 'kv', set(k, 'v'.repeat(n)));
  a.pair.collapse(0);
  try {
    a.store.persist(a.pair.pollWrites());
  } catch (e) {
    return (e as Error).message; // spookd fences the pair: store-failed
  }
  a.pair.writesDurable();
  return undefined;
};
const first = commit('k0', 10);
await a.store.settle(5_000); // its background snapshot durable: the next one is not skipped for it
// Every descriptor taken (by anything else in the process: wrapped connections, admin clients).
const fillers: number[] = [];
for (;;)
  try {
    fillers.push(openSync('/dev/null', 'r'));
  } catch {
    break;
  }
const starved = commit('k1', 4096);
for (const fd of fillers) closeSync(fd);
const logOldLeft = existsSync(join(dir, 'kv', 'log.old'));
const later = commit('k2', 8192);
await a.store.settle(5_000);
a.store.close();
const b = open();
const has = (k: string): boolean => (b.pair.register('kv').state as MapState).get(enc(k)) !== undefined;
console.log(
  JSON.stringify({
    first,
    starved,
    later,
    failures,
    snapshot: existsSync(join(dir, 'kv', 'snapshot')),
    keys: ['k0', 'k1', 'k2'].map(has),
    fillers: fillers.length,
    logOldLeft,
  }),
);
b.store.close();
rmSync(dir, { recursive: true, force: true });

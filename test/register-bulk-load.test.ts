import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MapState } from '../core/register/map.js';
import { DomainState } from '../core/qn/state.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore } from '../drivers/store/store.js';
import { Writer } from '../wire/buffer.js';
import { set } from './helpers.js';

// A bulk load (a snapshot restored at start or installed from a leader, a full transfer) comes
// in key-hash order. Into a table sized for the keys so far, every key's home lies in the part
// the earlier keys fill: one run holds them all and each insert scans it. A restart with 10^6
// keys took ~70 s. Each load now sizes the table for its entries first (KeyTable.reserveCount).
const dirs: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const capOf = (m: MapState): number => (m as unknown as { t: { cap: number } }).t.cap;
const MAX_LOAD = 0.75;

/** The table's home slots at each map's first put (load must have sized it by then). */
function capsAtFirstPut(): Map<MapState, number> {
  const caps = new Map<MapState, number>();
  const put = MapState.prototype.put;
  vi.spyOn(MapState.prototype, 'put').mockImplementation(function (this: MapState, key, value, version) {
    if (!caps.has(this)) caps.set(this, capOf(this));
    return put.call(this, key, value, version);
  });
  return caps;
}

describe('bulk loads in key-hash order size the table first', () => {
  it('reserveKeys(n): n entries in key-hash order go in without growing, and give the same register as key by key', () => {
    const a = new MapState(5);
    for (let i = 0; i < 50_000; i++) a.put(enc(`key-${i}`), enc(`v${i}`), 1 + (i % 9));
    const b = new MapState(5);
    b.reserveKeys(50_000);
    const cap = capOf(b);
    expect(cap * MAX_LOAD).toBeGreaterThanOrEqual(50_000);
    expect((cap * MAX_LOAD) / 2).toBeLessThan(50_000); // the smallest power of two that holds them
    for (const e of a.values()) b.put(e.key, e.value, e.version);
    expect(capOf(b)).toBe(cap);
    expect(b.hash.equals(a.hash)).toBe(true);
    expect(b.size()).toBe(50_000);
    b.reserveKeys(10); // never shrinks
    expect(capOf(b)).toBe(cap);
  });

  it('a domain snapshot restores into a map sized for its entries; a count the bytes cannot hold sizes nothing beyond them', () => {
    const regs = [{ name: 'kv', kind: 'map' as const, maxKeys: 10_000_000 }];
    const src = new DomainState(3, regs, []);
    const kv = src.registers.get('kv')!;
    kv.version = 1;
    for (let i = 0; i < 30_000; i++) (kv.state as MapState).put(enc(`key-${i}`), enc(`value-${i}`), 1);
    src.index = 1;
    const caps = capsAtFirstPut();
    const dst = new DomainState(3, regs, []);
    expect(dst.restore(src.snapshot(), 1)).toBe(true);
    const m = dst.registers.get('kv')!.state as MapState;
    expect(caps.get(m)! * MAX_LOAD).toBeGreaterThanOrEqual(30_000);
    expect(dst.digest()).toEqual(src.digest());
    // A hostile count: 2^40 entries announced, a few bytes given. The table is sized by the bytes, and the snapshot refused.
    const lie = new Writer(64)
      .varint(1)
      .varint(1)
      .lenBytes(enc('kv'))
      .u8(1)
      .varint(1)
      .varint(2 ** 40)
      .bytes(new Uint8Array(400))
      .finish();
    const liar = new DomainState(3, regs, []);
    const reserve = vi.spyOn(MapState.prototype, 'reserveKeys');
    expect(liar.restore(lie, 1)).toBe(false);
    expect(reserve).toHaveBeenCalledTimes(1);
    expect(reserve.mock.calls[0][0]).toBeLessThanOrEqual(lie.length / 4);
  });

  it("a pair register's snapshot restores into a map sized for its entries", () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-bulk-'));
    dirs.push(dir);
    const regs = [{ name: 'kv', kind: 'map' as const }];
    const open = () => {
      const store = new DiskStore(dir, 'always', 1 << 30);
      const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 9, registers: regs, store }, 0);
      store.load(pair.register('kv'));
      return { store, pair };
    };
    const a = open();
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 1000; j++) a.pair.propose(0, 'kv', set(`key-${i}-${j}`, `v${j}`));
      a.pair.collapse(0);
    }
    a.store.replaced(a.pair.register('kv')); // a snapshot of all 20,000
    const hash = { ...a.pair.register('kv').hash };
    a.store.close();
    const caps = capsAtFirstPut();
    const b = open();
    const m = b.pair.register('kv').state as MapState;
    expect(caps.get(m)! * MAX_LOAD).toBeGreaterThanOrEqual(20_000);
    expect({ ...b.pair.register('kv').hash }).toEqual(hash);
    b.store.close();
  });
});

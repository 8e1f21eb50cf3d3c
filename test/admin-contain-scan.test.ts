import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import type { MapState } from '../core/register/map.js';
import { SCAN_LIMITS } from '../drivers/admin/read.js';
import { scanStats } from '../drivers/admin/scan.js';
import type { ScanResult } from '../client/protocol.js';
import { RawAdmin, startSoloSpookd } from './admin-solo.js';

/**
 * A scan's work (review): the entries of a register are looked at in place and only those under the
 * prefix are copied; the cursor limits are checked before the matching entries are copied and sorted,
 * so a scan refused `too-many-cursors` costs a pass over the keys, not a copy of the register. What is
 * copied is counted by the entries scans copy (drivers/admin/scan.ts `scanStats`).
 *
 * One spookd in this process whose peer never runs; its register `config` is filled in place. Ports:
 * free ones the kernel gives (UDP and TCP), not a block of test/ports.ts.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-contain-scan-'));
const socket = join(dir, 'a.sock');
const N = 60_000;
let d: Spookd;

const startSpookd = (): Promise<Spookd> => startSoloSpookd(dir, socket);
type Raw = RawAdmin<ScanResult>;
const Raw = { open: (): Promise<Raw> => RawAdmin.open<ScanResult>(socket) };

const key = (i: number): string => `key-${String(i).padStart(8, '0')}`;

/** Entries a scan copied while `f` runs. */
async function copiesDuring<T>(f: () => Promise<T>): Promise<{ copies: number; result: T }> {
  const before = scanStats.entriesCopied;
  const result = await f();
  return { copies: scanStats.entriesCopied - before, result };
}

beforeAll(async () => {
  d = await startSpookd();
  const st = d.link('b').pair.register('config').state as MapState;
  const v = Buffer.alloc(50, 'x');
  for (let i = 0; i < N; i++) st.put(Buffer.from(key(i)), v, 1);
}, 60_000);

afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('scan', () => {
  it('copies only the entries under its prefix; its pages are those entries in key order at one version', async () => {
    const c = await Raw.open();
    try {
      // key-000012xx: 100 of the 60,000, in pages of 30 through a cursor.
      const { copies, result: first } = await copiesDuring(() =>
        c.ask('scan', { peer: 'b', register: 'config', prefix: 'key-000012', limit: 30 }),
      );
      expect(first.ok).toBe(true);
      expect(copies).toBe(100); // the 100 matching, not the 60,000
      const keys = first.result!.entries.map((e) => e.key.text!);
      let page = first.result!;
      while (page.cursor) {
        const r = await c.ask('scan', {
          peer: 'b',
          register: 'config',
          prefix: 'key-000012',
          limit: 30,
          cursor: page.cursor,
          version: page.version,
          after: keys.at(-1),
        });
        expect(r.ok).toBe(true);
        expect(r.result!.version).toBe(first.result!.version);
        page = r.result!;
        keys.push(...page.entries.map((e) => e.key.text!));
      }
      expect(keys).toEqual(Array.from({ length: 100 }, (_, i) => key(1200 + i)));
      expect(page.entries.at(-1)!.value.text).toBe('x'.repeat(50));
      // A prefix that matches nothing copies nothing.
      const none = await copiesDuring(() => c.ask('scan', { peer: 'b', register: 'config', prefix: 'nomatch', limit: 1 }));
      expect(none.result.result!.entries).toEqual([]);
      expect(none.copies).toBe(0);
    } finally {
      c.close();
    }
  });

  it('scans a closed connection left waiting their turn copy nothing when it comes', async () => {
    const c = await Raw.open();
    const before = scanStats.entriesCopied;
    // Eight whole-register scans (each would copy the 60,000 entries for its cursor), then the client goes.
    for (let id = 1; id <= 8; id++) c.write({ id, cmd: 'scan', args: { peer: 'b', register: 'config', limit: 1 } });
    await new Promise((r) => setTimeout(r, 5));
    c.close();
    // Gathers run in order: a scan asked after them is answered once they have all had their turn.
    const d2 = await Raw.open();
    try {
      const r = await d2.ask('scan', { peer: 'b', register: 'config', prefix: 'key-0000004', limit: 10 });
      expect(r.ok).toBe(true);
      // At most the gather under way when the connection closed copied (and that one stopped at its next turn).
      expect(scanStats.entriesCopied - before).toBeLessThanOrEqual(N + 10);
    } finally {
      d2.close();
    }
  });

  it('checks the cursor limits before copying: a scan refused too-many-cursors copies nothing; one that needs no cursor is still served', async () => {
    const c = await Raw.open();
    try {
      // The connection's cursors, each over a small prefix (100 entries, a page of 1).
      for (let i = 0; i < SCAN_LIMITS.perConnection; i++) {
        const r = await c.ask('scan', { peer: 'b', register: 'config', prefix: `key-0000${10 + i}`, limit: 1, cursorTtlMs: 300_000 });
        expect(r.result!.cursor).toBeDefined();
      }
      const { copies, result } = await copiesDuring(() => c.ask('scan', { peer: 'b', register: 'config', limit: 1 }));
      expect(result.error).toMatchObject({ code: 'too-many-cursors' });
      expect(result.error!.message).toContain(`the limit is ${SCAN_LIMITS.perConnection}`);
      expect(copies).toBe(0); // not the 60,000 entries of the register
      // Five entries fit one page: no cursor is needed, so none is refused.
      const small = await c.ask('scan', { peer: 'b', register: 'config', prefix: 'key-0000004', limit: 10 });
      expect(small.ok).toBe(true);
      expect(small.result!.entries.map((e) => e.key.text)).toEqual(Array.from({ length: 10 }, (_, i) => key(40 + i)));
      expect(small.result!.cursor).toBeUndefined();
    } finally {
      c.close();
    }
  });
});

import { describe, expect, it } from 'vitest';
import { compareOne } from '../bench/compare.js';
import { charts, renderSvg } from '../bench/plot.js';

// The comparison harness at a small size: each system really syncs (both sides identical),
// bytes are counted, and the charts render from its rows.
describe('bench compare harness', () => {
  it('runs one row per system: identical replicas, bytes and catch-up counted', async () => {
    const rows = (['spook', 'yjs', 'automerge'] as const).map((s) => compareOne(s, 500, 20, 40));
    for (const r of rows) {
      expect(r.identical, r.system).toBe(true);
      expect(r.bytesPerUpdate, r.system).toBeGreaterThan(10);
      expect(r.catchUpBytes, r.system).toBeGreaterThan(20 * 8); // at least the missed values
      expect(r.updatesPerSec, r.system).toBeGreaterThan(0);
    }
    const svg = await renderSvg(charts(rows.map((r) => ({ ...r, stateHeapBytes: 1e6 })))['catchup-bytes-vs-k']);
    expect(svg).toContain('<svg');
    expect(svg).toContain('missed updates K');
  }, 60_000);
});

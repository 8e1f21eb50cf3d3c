import { describe, expect, it } from 'vitest';
import { compareOne, updateBreakdown } from '../bench/compare.js';
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

  it('the breakdown of one update: a follower write crosses once (its collapse comes back without the delta)', () => {
    const b = updateBreakdown();
    const collapseOf = (side: 'sequencer' | 'follower') => b[side].datagrams.find((d) => d.messages.some((m) => m.startsWith('Collapse')))!;
    expect(b.sequencer.datagrams[0]).toMatchObject({ from: 'sequencer' });
    expect(b.follower.datagrams[0]).toMatchObject({ from: 'follower', messages: [expect.stringMatching(/^Propose:/)] });
    // The 36-byte value and its key are left out of the collapse that answers the follower's write.
    expect(collapseOf('follower').bytes).toBeLessThan(collapseOf('sequencer').bytes - 36);
    // A follower's write costs one sealed datagram more (36 octets of header and tag) carrying an Ack
    // and a collapse without the delta (under 24 octets); with the delta back it would cost 43 more.
    expect(b.follower.bytes).toBeLessThan(b.sequencer.bytes + 36 + 24);
  });
});

import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Metrics } from '../drivers/admin/metrics.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { Spookd } from '../drivers/daemon/spookd.js';
import type { PeerLink } from '../drivers/daemon/spookd.js';
import type { SpookEvent } from '../core/pair/events.js';

/**
 * The re-entanglement histogram of a peer that a reload removed (or rekeyed: removed, then
 * added under the same name): what it timed for the old pair goes with it. Before, the time
 * its old pair left ENTANGLED stayed, and the new pair's first formation, however much later,
 * was observed as one re-entanglement that long; and every removed peer's series stayed.
 */
describe('metrics of a removed peer', () => {
  const daemon = () => ({
    subscribers: new Set<(link: PeerLink, ev: SpookEvent) => void>(),
    removals: new Set<(peer: string) => void>(),
    links: new Map(),
  });
  const lifecycle = (at: number, from: PairState, to: PairState): SpookEvent => ({ type: 'lifecycle', at, from, to, cause: 'test' });

  it('times no re-entanglement from before the peer was removed, and drops its series', async () => {
    const d = daemon();
    const m = new Metrics(d as unknown as Spookd, '127.0.0.1:0', pino({ level: 'silent' }));
    const link = { name: 'b' } as PeerLink;
    const send = (ev: SpookEvent) => d.subscribers.forEach((f) => f(link, ev));
    const hist = async () => (await m.registry.getSingleMetric('spook_reentanglement_duration_seconds')!.get()).values;
    // One honest re-entanglement of the old pair: 2 s.
    send(lifecycle(1_000, PairState.ENTANGLED, PairState.DECOHERENT));
    send(lifecycle(3_000, PairState.DECOHERENT, PairState.ENTANGLED));
    expect((await hist()).find((v) => v.metricName?.endsWith('_count'))?.value).toBe(1);
    // It decoheres, and the operator removes the peer (or rekeys it).
    send(lifecycle(4_000, PairState.ENTANGLED, PairState.DECOHERENT));
    d.removals.forEach((f) => f('b'));
    // Added again an hour later: its new pair's first formation is no re-entanglement.
    send(lifecycle(3_604_000, PairState.FORMING, PairState.ENTANGLED));
    // (before: count 2, sum 3,602 s: the hour it was gone taken for a re-entanglement)
    const after = await hist();
    const of = (suffix: string) => after.filter((v) => v.labels.peer === 'b' && v.metricName!.endsWith(suffix)).map((v) => v.value);
    expect({ count: of('_count'), sum: of('_sum') }).toEqual({ count: [], sum: [] });
    await m.stop();
  });
});

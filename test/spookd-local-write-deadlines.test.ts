/**
 * Hostile review of spookd's pair deadline heap (issue 16, hubheap): a deadline armed by a step
 * outside a datagram or a timer, here a local write (what `spook set`/`txn` do: propose, then
 * kick), must fire though nothing else happens. The peer goes quiet right after entangling (its
 * table fenced: it sends and answers nothing); a write at h arms a retransmission, which must
 * fire, again and again with backoff, with no input at h at all.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { DeltaOp } from '../wire/delta.js';

const base = portBase('spookd-local-write-deadlines.test.ts');
const lab = inProcess('spook-r16b', ['h', 'a'], base);
const d: Record<string, Spookd> = {};
// A long silence timeout: the pair stays up while the write goes unanswered.
const timing = { timing: { keepaliveMs: 20_000, silenceMs: 60_000 } };

beforeAll(async () => {
  d.h = new Spookd(configOf(lab, 'h', ['a'], timing), lab.keys.h, logOf(lab, 'h'));
  d.a = new Spookd(configOf(lab, 'a', ['h'], timing), lab.keys.a, logOf(lab, 'a'));
  await Promise.all(Object.values(d).map((s) => s.start()));
  await until('entangled', () => d.h.link('a').pair.state === PairState.ENTANGLED && d.a.link('h').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('spookd deadlines armed by a local write', () => {
  it('a write to a quiet peer is retransmitted on its timer, with nothing else to wake the hub', async () => {
    d.a.table.fence('h'); // a goes quiet: no frame from it again, none of h's opened
    await new Promise((r) => setTimeout(r, 300)); // what was in flight settles
    const link = d.h.link('a');
    const rt0 = link.pair.stats.retransmitTimeouts;
    const sent0 = link.pair.stats.datagramsSent;
    link.pair.propose(d.h.now(), 'config', { op: DeltaOp.Set, key: Buffer.from('k'), value: Buffer.from('v') });
    d.h.kick(link); // as the admin's set does
    const t0 = performance.now();
    await until('retransmitted twice', () => link.pair.stats.retransmitTimeouts - rt0 >= 2, 6_000);
    // Two RTOs with backoff (~0.8 s here). A deadline not re-keyed after the write waits for the
    // HANDSHAKE_RETRY_MS wake-ups that re-key at the start of a tick (4 s, mutant checked), or the keepalive (20 s).
    expect(performance.now() - t0).toBeLessThan(2_500);
    expect(link.pair.stats.datagramsSent - sent0).toBeGreaterThanOrEqual(3); // the write, then its retransmissions
    expect([PairState.ENTANGLED, PairState.COLLAPSING]).toContain(link.pair.state); // up, the write still unacknowledged
  }, 15_000);
});

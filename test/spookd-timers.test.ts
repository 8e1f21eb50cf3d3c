import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';

/**
 * spookd's one timer is armed from a deadline heap and a tick steps only the due pairs
 * (bench scale): no deadline of an idle pair may be missed. A hub h with three peers, no
 * writes at all: every pair's keepalive keeps firing at both ends (so no silence fires),
 * and once one peer goes quiet, the hub's silence timer for that pair alone fires.
 */
const base = portBase('spookd-timers.test.ts');
const lab = inProcess('spook-timers', ['h', 'a', 'b', 'c'], base);
const d: Record<string, Spookd> = {};
const timing = { timing: { keepaliveMs: 100, silenceMs: 1000 } };

beforeAll(async () => {
  d.h = new Spookd(configOf(lab, 'h', ['a', 'b', 'c'], timing), lab.keys.h, logOf(lab, 'h'));
  for (const n of ['a', 'b', 'c']) d[n] = new Spookd(configOf(lab, n, ['h'], timing), lab.keys[n], logOf(lab, n));
  await Promise.all(Object.values(d).map((s) => s.start()));
  await until('all three pairs entangled', () =>
    ['a', 'b', 'c'].every((n) => d.h.link(n).pair.state === PairState.ENTANGLED && d[n].link('h').pair.state === PairState.ENTANGLED),
  );
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('spookd timers from the deadline heap', () => {
  it('idle pairs: every keepalive fires at both ends, so no silence does', async () => {
    const sent0 = Object.fromEntries(
      ['a', 'b', 'c'].map((n) => [n, [d.h.link(n).pair.stats.datagramsSent, d[n].link('h').pair.stats.datagramsSent]]),
    );
    await new Promise((r) => setTimeout(r, 2500)); // 2.5x silenceMs, 25 keepalive periods, nothing written
    for (const n of ['a', 'b', 'c']) {
      expect(d.h.link(n).pair.state).toBe(PairState.ENTANGLED);
      expect(d[n].link('h').pair.state).toBe(PairState.ENTANGLED);
      // A keepalive every 100 ms sends Status: well over 10 datagrams each way in 2.5 s (loaded machine: slack).
      expect(d.h.link(n).pair.stats.datagramsSent - sent0[n][0]).toBeGreaterThanOrEqual(10);
      expect(d[n].link('h').pair.stats.datagramsSent - sent0[n][1]).toBeGreaterThanOrEqual(10);
    }
  }, 10_000);

  it("a peer that goes quiet: the hub's silence timer fires for its pair alone, and the hub re-handshakes", async () => {
    // c's sessions close and none forms again (its table is fenced): c sends nothing more, no goodbye.
    d.c.table.fence('h');
    const t0 = performance.now();
    await until('h notices c is silent', () => d.h.link('c').pair.state === PairState.DECOHERENT, 8_000); // loaded machines: slack
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(900); // the silence timer, not anything else (silenceMs 1000, less a keepalive period)
    expect(d.h.link('a').pair.state).toBe(PairState.ENTANGLED);
    expect(d.h.link('b').pair.state).toBe(PairState.ENTANGLED);
    // The pair's state moved the table's timers (re-keyed through refresh): a decoherent pair re-handshakes.
    expect(d.h.table.timers('c').rehandshake).toBeDefined();
    const inits0 = d.c.drops['peer-fenced'] ?? 0;
    // Paced: at most DECOHERENT_REHANDSHAKE_MS (5 s) after h's last init, plus slack.
    await until('h sends c a fresh HandshakeInit', () => (d.c.drops['peer-fenced'] ?? 0) > inits0, 10_000);
  }, 25_000);
});

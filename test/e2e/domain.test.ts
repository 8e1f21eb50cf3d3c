import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, until, sleep } from '../../testing/lab/netns.js';
import type { DomainMapGetResult, DomainOutcome, DomainSummary } from '../../client/protocol.js';

/**
 * A QN domain of five spookd, each in its own network namespace, full mesh of veth links
 * (created and always removed by the test): writes from every member, a minority and then
 * the leader's side partitioned off, a single link cut (relay), kill -9 of a member, and
 * identical (index, hash) everywhere afterwards with every acknowledged commit present.
 */
const HOSTS = ['a', 'b', 'c', 'd', 'e'];
const DOMAIN = {
  name: 'main',
  registers: [
    { name: 'kv', kind: 'map' },
    { name: 'meta', kind: 'map' },
    { name: 'log', kind: 'stream' },
  ],
  groups: [{ name: 'config', registers: ['kv', 'meta'] }],
  policy: 'buffer',
  electionMs: 600,
  heartbeatMs: 60,
};

let lab: Lab;
const info = (h: string): Promise<DomainSummary> => lab.admin(h, 'domain', { domain: 'main' });
const set = (h: string, key: string, value: string, timeoutMs = 5000): Promise<DomainOutcome> =>
  lab.admin(h, 'dpropose', { domain: 'main', ops: [{ register: 'kv', op: 'set', key, value }], timeoutMs });
const get = async (h: string, key: string): Promise<string | undefined> =>
  ((await lab.admin(h, 'dget', { domain: 'main', register: 'kv', key })) as DomainMapGetResult).value?.text;

/** Every host (of `hosts`) coherent, nothing pending, same applied index and hash, one leader. */
async function converged(hosts = HOSTS): Promise<DomainSummary[] | false> {
  const all = await Promise.all(hosts.map(info));
  const ok =
    all.every((x) => x.state === 'coherent' && x.pending === 0 && x.appliedIndex === all[0].appliedIndex && x.hash === all[0].hash) &&
    all.filter((x) => x.role === 'leader').length === 1;
  return ok ? all : false;
}

async function leader(hosts = HOSTS): Promise<string> {
  return until('a leader', async () => {
    for (const h of hosts) if ((await info(h)).role === 'leader') return h;
    return undefined;
  });
}

function partition(side: string[], up: boolean): void {
  for (const x of side) for (const y of HOSTS) if (!side.includes(y)) lab.setLink(x, y, up);
}

beforeAll(async () => {
  const links = [];
  let subnet = 30;
  for (let i = 0; i < HOSTS.length; i++)
    for (let j = i + 1; j < HOSTS.length; j++) links.push({ a: HOSTS[i], b: HOSTS[j], subnet: subnet++ });
  lab = new Lab(HOSTS, links, 47300);
  for (const h of HOSTS)
    lab.configure(h, [{ name: 'p', kind: 'map' }], { domains: [{ ...DOMAIN, members: HOSTS.filter((x) => x !== h) }], logLevel: 'info' });
  await Promise.all(HOSTS.map((h) => lab.start(h)));
}, 90_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('a QN domain of five spookd in network namespaces', () => {
  const acked = new Map<string, string>();

  it('forms: one leader, every member coherent at the same (index, hash); writes from every member commit', async () => {
    await until('domain converged', () => converged(), 30_000);
    const outs = await Promise.all(HOSTS.map((h, i) => set(h, `from-${h}`, `v${i}`)));
    for (const [i, o] of outs.entries()) {
      expect(o.verdict).toBe('committed');
      acked.set(`from-${HOSTS[i]}`, `v${i}`);
    }
    // A QSCS group candidate: kv and meta together; a failing cas on meta rejects both.
    const g = await lab.admin('c', 'dpropose', {
      domain: 'main',
      ops: [
        { register: 'kv', op: 'set', key: 'g', value: '1' },
        { register: 'meta', op: 'cas', key: 'g', expect: 0, value: '1' },
      ],
    });
    expect(g.verdict).toBe('committed');
    const bad = await lab.admin('d', 'dpropose', {
      domain: 'main',
      ops: [
        { register: 'kv', op: 'set', key: 'g', value: '2' },
        { register: 'meta', op: 'cas', key: 'g', expect: 0, value: '2' },
      ],
    });
    expect(bad).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch' });
    const all = await until('converged after writes', () => converged(), 20_000);
    for (const h of HOSTS) expect(await get(h, 'g')).toBe('1');
    const grp = await lab.admin('e', 'group', { group: 'config' });
    // Every collapse that changed kv or meta: the five kv writes and the group candidate (not the rejected one).
    expect(grp.version).toBe(6);
    expect(all[0].members).toHaveLength(5);
  }, 90_000);

  it('a minority cut off decoheres and buffers; the majority keeps committing; on heal the minority catches up and its buffered writes are decided', async () => {
    const l = await leader();
    const minority = HOSTS.filter((h) => h !== l).slice(0, 2);
    const majority = HOSTS.filter((h) => !minority.includes(h));
    partition(minority, false);
    await until('minority decoherent', async () => (await Promise.all(minority.map(info))).every((x) => x.state === 'decoherent'), 15_000);
    for (let i = 0; i < 30; i++) {
      const h = majority[i % majority.length];
      const o = await set(h, `maj-${i}`, `${i}`);
      expect(o.verdict).toBe('committed');
      acked.set(`maj-${i}`, `${i}`);
    }
    // Reads on the minority serve the last committed version; writes wait (policy buffer).
    expect(await get(minority[0], 'from-a')).toBe('v0');
    const buffered = await set(minority[0], 'buffered', 'yes', 500);
    expect(buffered.verdict).toBe('pending');
    partition(minority, true);
    await until('converged after heal', () => converged(), 30_000);
    for (const h of HOSTS) expect(await get(h, 'buffered')).toBe('yes');
    for (const h of minority) expect((await info(h)).partitionsSeen).toBeGreaterThan(0);
    acked.set('buffered', 'yes');
  }, 120_000);

  it("the leader's side becomes the minority: it steps down, the majority elects a new leader and commits", async () => {
    const old = await leader();
    const side = [old, HOSTS.find((h) => h !== old)!];
    const rest = HOSTS.filter((h) => !side.includes(h));
    partition(side, false);
    await until('old leader steps down', async () => (await info(old)).role !== 'leader', 15_000);
    const fresh = await leader(rest);
    expect(fresh).not.toBe(old);
    const o = await set(rest[0], 'after-failover', 'ok', 10_000);
    expect(o.verdict).toBe('committed');
    acked.set('after-failover', 'ok');
    partition(side, true);
    await until('converged after heal', () => converged(), 30_000);
  }, 120_000);

  it('a single cut link is routed around through a relay member', async () => {
    const l = await leader();
    const f = HOSTS.find((h) => h !== l)!;
    lab.setLink(l, f, false);
    try {
      await sleep(1500);
      const o = await set(f, 'relayed', 'yes', 10_000);
      expect(o.verdict).toBe('committed');
      acked.set('relayed', 'yes');
      expect((await info(f)).state).toBe('coherent');
      const relayed = (await Promise.all(HOSTS.map(info))).reduce((a, x) => a + x.stats.relayed, 0);
      expect(relayed).toBeGreaterThan(0);
    } finally {
      lab.setLink(l, f, true);
    }
    await until('converged', () => converged(), 30_000);
  }, 60_000);

  it('kill -9 of a member mid-workload, restart: identical state everywhere, every acknowledged commit present', async () => {
    const l = await leader();
    const victim = HOSTS.find((h) => h !== l)!;
    const writers = HOSTS.filter((h) => h !== victim);
    let stop = false;
    const work = (async () => {
      for (let i = 0; i < 200 && !stop; i++) {
        const h = writers[i % writers.length];
        const o = await set(h, `k9-${i}`, `${i}`, 3000).catch(() => undefined);
        if (o?.verdict === 'committed') acked.set(`k9-${i}`, `${i}`);
      }
    })();
    await until('some commits', async () => [...acked.keys()].filter((k) => k.startsWith('k9-')).length >= 10, 20_000, 50);
    await lab.kill9(victim);
    await sleep(1000);
    await lab.start(victim);
    stop = true;
    await work;
    const all = await until('converged after restart', () => converged(), 40_000);
    expect(new Set(all.map((x) => x.hash)).size).toBe(1);
    for (const h of HOSTS) for (const [k, v] of acked) expect(await get(h, k), `${k} at ${h}`).toBe(v);
  }, 120_000);
});

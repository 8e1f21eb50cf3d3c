import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { AdminClient } from '../client/admin-client.js';
import { buildInfo } from '../drivers/daemon/build-info.js';
import { configOf, inProcess, until } from './inproc.js';
import { portBase } from './ports.js';

/**
 * The metrics listener: Prometheus' own linter (`promtool check metrics`, Debian's prometheus
 * package, installed by `make test`) accepts the exposition; counters are typed as counters;
 * pairs, a domain, XDP and the two histograms are there; /healthz and /readyz answer.
 */
const p = inProcess('spook-metrics', ['a', 'b'], portBase('metrics.test.ts'));
const METRICS = `127.0.0.1:${p.port.a + 2}`;
const domain = (peer: string) => ({
  domains: [{ name: 'main', members: [peer], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' }],
});
let a: Spookd;
let b: Spookd;
let client: AdminClient;

const get = async (path: string, init?: RequestInit): Promise<{ status: number; text: string }> => {
  const r = await fetch(`http://${METRICS}${path}`, init);
  return { status: r.status, text: await r.text() };
};
/** `name{labels} value` lines of the exposition, as a map from the series to its value. */
const series = (text: string): Map<string, number> =>
  new Map(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]),
  );
const typeOf = (text: string, name: string): string | undefined => new RegExp(`^# TYPE ${name} (\\w+)$`, 'm').exec(text)?.[1];

beforeAll(async () => {
  a = new Spookd(configOf(p, 'a', ['b'], { metrics: { listen: METRICS }, ...domain('b') }), p.keys.a, pino({ level: 'silent' }));
  b = new Spookd(configOf(p, 'b', ['a'], domain('a')), p.keys.b, pino({ level: 'silent' }));
  // Not ready until start() has finished: the listener itself starts inside it.
  expect(a.ready).toBe(false);
  await Promise.all([a.start(), b.start()]);
  client = await AdminClient.connect(join(p.dir, 'a.sock'));
  await until('the pair entangled', () => a.link('b').pair.state === 'ENTANGLED');
  await until('a domain leader', () => a.domains.get('main')!.node.raft.leader !== 0);
});

afterAll(async () => {
  client?.close();
  await a?.stop();
  await b?.stop();
  rmSync(p.dir, { recursive: true, force: true });
});

describe('metrics', () => {
  it('passes promtool check metrics, with counters typed as counters', async () => {
    await client.request('set', { register: 'config', key: 'k', value: 'v' });
    await client.request('dpropose', { domain: 'main', ops: [{ register: 'kv', op: 'set', key: 'k', value: 'v' }] });
    const { status, text } = await get('/metrics');
    expect(status).toBe(200);
    // promtool reads the exposition on stdin; a lint problem is a non-zero exit with the offending metric named.
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.error, 'promtool missing: make test installs Debian prometheus').toBeUndefined();
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
    // Every *_total family is a counter (the issue found all 14 typed as gauges).
    const totals = [...text.matchAll(/^# TYPE (\S+_total) (\w+)$/gm)];
    expect(totals.length).toBeGreaterThan(20);
    for (const [, name, type] of totals) expect(`${name} ${type}`).toBe(`${name} counter`);
    for (const name of ['spook_pair_rtt_seconds', 'spook_domain_term', 'spook_wrap_active_connections'])
      expect(typeOf(text, name)).toBe('gauge');
  });

  it('has build info, process and Node.js metrics, pairs, the domain, XDP and both histograms', async () => {
    const { text } = await get('/metrics');
    const s = series(text);
    const info = buildInfo();
    expect(s.get(`spook_build_info{version="${info.version}",commit="${info.commit}",nodejs="${process.version}"}`)).toBe(1);
    expect(info.commit).toMatch(/^[0-9a-f]{12}(\+dirty)?$/); // a checkout: git knows
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_heap_size_used_bytes',
    ])
      expect(text).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? `, 'm'));
    expect(s.get('spook_ready')).toBe(1);
    expect(s.get('spook_pair_state{peer="b",state="ENTANGLED"}')).toBe(1);
    expect(s.get('spook_pair_state{peer="b",state="DECOHERENT"}')).toBe(0);
    expect(s.get('spook_pair_sent_bytes_total{peer="b"}')).toBeGreaterThan(0);
    expect(s.get('spook_register_version{peer="b",register="config"}')).toBeGreaterThanOrEqual(1);
    expect(s.get('spook_domain_has_leader{domain="main"}')).toBe(1);
    const role = [...s].filter(([k, v]) => k.startsWith('spook_domain_role{domain="main"') && v === 1).map(([k]) => k);
    expect(role).toHaveLength(1);
    expect(role[0]).toMatch(/role="(leader|follower)"/);
    expect(s.get('spook_domain_term{domain="main"}')).toBeGreaterThanOrEqual(1);
    expect(s.get('spook_domain_commit_index{domain="main"}')).toBeGreaterThanOrEqual(1);
    expect(s.get('spook_domain_member_lag_entries{domain="main",member="b"}')).toBeGreaterThanOrEqual(0);
    expect(s.get('spook_domain_committed_total{domain="main"}')).toBe(1);
    expect(s.get('spook_domain_leader_changes_total{domain="main"}')).toBeGreaterThanOrEqual(1);
    // XDP is not configured here: one 0 sample saying so, and no packet counts.
    expect(s.get('spook_xdp_attached{mode="off",interface=""}')).toBe(0);
    // One write each way through the admin API, each counted once in its scope.
    expect(s.get('spook_commit_duration_seconds_count{scope="pair",verdict="committed"}')).toBe(1);
    expect(s.get('spook_commit_duration_seconds_count{scope="domain",verdict="committed"}')).toBe(1);
    expect(s.get('spook_commit_duration_seconds_sum{scope="pair",verdict="committed"}')).toBeGreaterThan(0);
  });

  it('times a re-entanglement from decoherence to entangled again', async () => {
    await b.stop();
    await until('a decoherent', () => a.link('b').pair.state === 'DECOHERENT', 20_000);
    const cut = Date.now();
    b = new Spookd(configOf(p, 'b', ['a'], domain('a')), p.keys.b, pino({ level: 'silent' }));
    await b.start();
    await until('a entangled again', () => a.link('b').pair.state === 'ENTANGLED', 20_000);
    const s = series((await get('/metrics')).text);
    expect(s.get('spook_pair_state{peer="b",state="ENTANGLED"}')).toBe(1);
    expect(s.get('spook_reentanglement_duration_seconds_count{peer="b"}')).toBe(1);
    // At least the time b was away after a noticed (and no more than the whole test).
    const took = s.get('spook_reentanglement_duration_seconds_sum{peer="b"}')!;
    expect(took).toBeGreaterThan(0);
    expect(took).toBeLessThan((Date.now() - cut) / 1000 + 30);
  }, 60_000);

  it('answers /healthz and /readyz, and nothing else but /metrics', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, text: 'ok\n' });
    expect(await get('/readyz')).toEqual({ status: 200, text: 'ready\n' });
    expect((await get('/nope')).status).toBe(404);
    expect((await get('/metrics', { method: 'POST' })).status).toBe(405);
  });
});

describe('docs/prometheus/alerts.yml and docs/grafana/spook.json', () => {
  const DOCS = join(import.meta.dirname, '..', 'docs');
  it('pass promtool check rules and the rules unit tests', () => {
    const check = spawnSync('promtool', ['check', 'rules', 'alerts.yml'], { cwd: join(DOCS, 'prometheus'), encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const unit = spawnSync('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: join(DOCS, 'prometheus'), encoding: 'utf8' });
    expect(unit.status, unit.stdout + unit.stderr).toBe(0);
    expect(unit.stdout).toContain('SUCCESS');
  });

  it('use only metrics spookd exports', async () => {
    const text = (await get('/metrics')).text;
    const families = new Set([...text.matchAll(/^# TYPE (\S+) (\w+)$/gm)].map((m) => m[1]));
    const known = (name: string): boolean => families.has(name) || families.has(name.replace(/_(bucket|sum|count)$/, ''));
    const dashboard = JSON.parse(readFileSync(join(DOCS, 'grafana', 'spook.json'), 'utf8')) as {
      panels: { id: number; type: string; targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
    const rules = readFileSync(join(DOCS, 'prometheus', 'alerts.yml'), 'utf8');
    const used = new Set([...(exprs.join('\n') + rules).matchAll(/\b(?:spook|process|nodejs)_[a-z0-9_]+/g)].map((m) => m[0]));
    expect(used.size).toBeGreaterThan(20);
    expect([...used].filter((n) => !known(n))).toEqual([]);
  });
});

describe('spookd --version', () => {
  it('prints the version and the commit', () => {
    const out = execFileSync(join(import.meta.dirname, '..', 'bin', 'spookd'), ['--version'], { encoding: 'utf8' });
    const info = buildInfo();
    expect(out.trim()).toBe(`${info.version} (commit ${info.commit}, Node.js ${process.version})`);
  });
});

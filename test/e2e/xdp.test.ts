import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, ROOT, until } from '../../testing/lab/netns.js';
import { FrameType, HEADER_LEN, MAGIC, PROTOCOL_VERSION } from '../../wire/constants.js';
import { ESTP_HEADER } from '../../wire/layouts.js';
import { HANDSHAKE_INIT } from '../../wire/etcp.js';

/**
 * spookd with the XDP program attached natively on its veth: a flood of malformed and
 * unknown-pair frames is dropped at XDP (its counters rise, the daemon's do not) while the
 * pair keeps syncing.
 */
let lab: Lab;

beforeAll(async () => {
  lab = new Lab(['p', 'q'], [{ a: 'p', b: 'q', subnet: 7 }], 47600);
  lab.configure('p', [{ name: 'config', kind: 'map' }]);
  // q's veth is named v7q by the lab.
  lab.configure('q', [{ name: 'config', kind: 'map' }], {
    xdp: { interface: 'v7q', mode: 'native', handshakeRate: 5, handshakeBurst: 10 },
  });
  await Promise.all([lab.start('p'), lab.start('q')]);
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('XDP in spookd', () => {
  it('attaches natively, keeps the pair table in step, and drops a flood at the NIC while the pair syncs', async () => {
    const st = await lab.admin('q', 'xdp');
    expect(st.error).toBeNull();
    expect(st.enabled).toBe(true);
    expect(st.mode).toBe('native');
    expect(st.programId).toBeGreaterThan(0);
    expect(Math.abs(st.attachedAt! - Date.now())).toBeLessThan(120_000); // epoch ms, as every instant of the admin API
    await until('pair entangled', async () => (await lab.admin('q', 'pair', { peer: 'p' })).state === 'ENTANGLED');
    const pairId = (await lab.admin('q', 'pair', { peer: 'p' })).pairId;
    expect((await lab.admin('q', 'xdp')).pairs.map((p) => p.pairId)).toContain(pairId);

    const before = await lab.admin('q', 'xdp');
    const daemonBefore = (await lab.admin('q', 'status')).drops;
    const q = lab.host('q');
    // The flood's frames, by field (wire/layouts.ts): bad magic, a Data frame for no pair, handshakes.
    const frame = (payloadLen: number, h: Parameters<typeof ESTP_HEADER.encode>[0]): string => {
      const f = Buffer.alloc(HEADER_LEN + payloadLen);
      f.set(ESTP_HEADER.encode({ magic: MAGIC, version: PROTOCOL_VERSION, hdr_len: HEADER_LEN, payload_len: payloadLen, ...h }));
      return f.toString('hex');
    };
    const bad = frame(20, { magic: 0x1234, version: 0, hdr_len: 0, payload_len: 0 });
    const foreign = frame(40, { type: FrameType.Data, pair_id: 0xdead0001 });
    const hs = frame(HANDSHAKE_INIT.size, { type: FrameType.HandshakeInit });
    lab.runIn(
      'p',
      `
      import dgram from 'node:dgram';
      const s = dgram.createSocket('udp4');
      const [bad, foreign, hs] = ['${bad}', '${foreign}', '${hs}'].map((h) => Buffer.from(h, 'hex'));
      let n = 0; const total = 3000;
      const next = () => { if (n >= total) return s.close(); const f = n % 3 === 0 ? bad : n % 3 === 1 ? foreign : hs; n++; s.send(f, ${q.port}, '${q.addrs.get('p')}', next); };
      next();
    `,
    );
    const after = await until(
      'XDP counters',
      async () => {
        const s = await lab.admin('q', 'xdp');
        return s.counters!['bad-magic'] - before.counters!['bad-magic'] >= 1000 ? s : undefined;
      },
      15_000,
    );
    expect(after.counters!['bad-magic'] - before.counters!['bad-magic']).toBe(1000);
    expect(after.counters!['unknown-pair'] - before.counters!['unknown-pair']).toBe(1000);
    // 1,000 handshakes from one source: the bucket (burst 10, 5/s) lets only a few through.
    expect(after.counters!['handshake-rate-limited'] - before.counters!['handshake-rate-limited']).toBeGreaterThan(950);
    const daemonAfter = (await lab.admin('q', 'status')).drops;
    expect(daemonAfter['bad-magic'] ?? 0).toBe(daemonBefore['bad-magic'] ?? 0);
    expect(daemonAfter['unknown-pair'] ?? 0).toBe(daemonBefore['unknown-pair'] ?? 0);
    expect((daemonAfter['bad-mac1'] ?? 0) - (daemonBefore['bad-mac1'] ?? 0)).toBeLessThan(50);
    // Still syncing, and the pair's frames are counted at XDP.
    const w = await lab.admin('p', 'set', { peer: 'q', register: 'config', key: 'through-xdp', value: 'yes' });
    expect(w.verdict).toBe('committed');
    const pairStats = (await lab.admin('q', 'xdp')).pairs.find((p) => p.pairId === pairId)!;
    expect(pairStats.packets).toBeGreaterThan(0);
  }, 60_000);

  it('spook maps dump and spook xdp status read the pinned maps and the daemon', () => {
    const q = lab.host('q');
    // Enter spookd's own mount namespace: `ip netns exec` gives each process a private /sys,
    // so the bpffs spookd mounted for its pins is visible only there.
    const cli = (...args: string[]): string =>
      execFileSync('nsenter', ['-t', String(q.proc!.pid), '-m', '-n', process.execPath, join(ROOT, 'bin/spook'), ...args], {
        encoding: 'utf8',
      });
    const counters = JSON.parse(cli('maps', 'dump', 'counters', '--json')) as Record<string, number>;
    expect(counters['bad-magic']).toBeGreaterThanOrEqual(1000);
    const pairs = JSON.parse(cli('maps', 'dump', 'pairs', '--json')) as { pairId: number }[];
    expect(pairs.length).toBeGreaterThan(0);
    expect(cli('xdp', 'status', '-s', q.socket)).toMatch(/mode\s+native/);
  });

  it('a program left attached by a killed spookd is removed at the next start, even without an xdp section, and new sessions form', async () => {
    const q = lab.host('q');
    const programId = (await lab.admin('q', 'xdp')).programId;
    await lab.kill9('q');
    const link = (): string => execFileSync('ip', ['-n', q.ns, '-d', 'link', 'show', 'v7q'], { encoding: 'utf8' });
    expect(link()).toMatch(new RegExp(`prog/xdp id ${programId}`)); // the old program, with its old pair table, still filters
    lab.configure('q', [{ name: 'config', kind: 'map' }]); // restart without `xdp:`
    await lab.start('q');
    await until('the stale program is gone', async () => !/prog\/xdp/.test(link()), 10_000);
    // The log line is written by the daemon's logger, which may flush after the detach is visible.
    await until(
      'the removal is logged',
      async () =>
        readFileSync(join(q.dir, 'spookd.log'), 'utf8').includes('removed the XDP program a previous run left attached') || undefined,
      5_000,
    );
    await until('pair entangled again', async () => (await lab.admin('q', 'pair', { peer: 'p' })).state === 'ENTANGLED', 20_000);
    const w = await lab.admin('p', 'set', { peer: 'q', register: 'config', key: 'after-stale-xdp', value: 'yes' });
    expect(w.verdict).toBe('committed');
    expect((await lab.admin('q', 'xdp')).enabled).toBe(false);
  }, 60_000);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, until } from '../../testing/lab/netns.js';
import type { MapGetResult, PairSummary } from '../../client/protocol.js';

/**
 * spookd end to end: daemons in network namespaces joined by veth links (created and
 * always removed by the test). Hosts: a, b, c; links a-b and a-c.
 */

const REGISTERS = [
  { name: 'config', kind: 'map', policy: 'buffer', maxPending: 4096 },
  { name: 'journal', kind: 'stream' },
];

let lab: Lab;

async function pair(host: string, peer: string): Promise<PairSummary> {
  return lab.admin(host, 'pair', { peer });
}

/** Both ends ENTANGLED at the same (version, hash) for every register. */
async function aligned(x: string, y: string): Promise<boolean> {
  const [p, q] = await Promise.all([pair(x, y), pair(y, x)]);
  return (
    p.state === 'ENTANGLED' &&
    q.state === 'ENTANGLED' &&
    p.registers.every(
      (r, i) => r.version === q.registers[i].version && r.hash === q.registers[i].hash && r.pending === 0 && q.registers[i].pending === 0,
    )
  );
}

beforeAll(async () => {
  lab = new Lab(
    ['a', 'b', 'c'],
    [
      { a: 'a', b: 'b', subnet: 1 },
      { a: 'a', b: 'c', subnet: 2 },
    ],
  );
  lab.configure('a', REGISTERS, { metrics: { listen: '127.0.0.1:9464' } });
  for (const h of ['b', 'c']) lab.configure(h, REGISTERS);
  await Promise.all(['a', 'b', 'c'].map((h) => lab.start(h)));
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('spookd in network namespaces', () => {
  it('pairs form (a-b and a-c) and registers sync: both ends report the same (version, hash)', async () => {
    await until('a-b and a-c aligned', async () => (await aligned('a', 'b')) && (await aligned('a', 'c')));
    const r1 = await lab.admin('a', 'set', { peer: 'b', register: 'config', key: 'color', value: 'blue' });
    expect(r1.verdict).toBe('committed');
    const r2 = await lab.admin('c', 'set', { peer: 'a', register: 'config', key: 'size', value: 'XL' });
    expect(r2.verdict).toBe('committed');
    await until('aligned after writes', async () => (await aligned('a', 'b')) && (await aligned('a', 'c')));
    const got = (await lab.admin('b', 'get', { peer: 'a', register: 'config', key: 'color' })) as MapGetResult;
    expect(got.value?.text).toBe('blue');
    const got2 = (await lab.admin('a', 'get', { peer: 'c', register: 'config', key: 'size' })) as MapGetResult;
    expect(got2.value?.text).toBe('XL');
  }, 60_000);

  it('a cut link decoheres the pair, writes follow the policy, re-entanglement sends only the missing deltas', async () => {
    // A state much larger than what will be missed.
    const ab = await pair('a', 'b');
    const seq = ab.role === 'sequencer' ? 'a' : 'b';
    const fol = seq === 'a' ? 'b' : 'a';
    for (let i = 0; i < 1500; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, (_, j) =>
          lab.admin('a', 'set', { peer: 'b', register: 'config', key: `bulk/${i + j}`, value: 'x'.repeat(64) }),
        ),
      );
    }
    await until('aligned after bulk', () => aligned('a', 'b'));
    const stateBytes = 1500 * 80;

    lab.setLink('a', 'b', false);
    await until(
      'both ends DECOHERENT',
      async () => (await pair('a', 'b')).state === 'DECOHERENT' && (await pair('b', 'a')).state === 'DECOHERENT',
      15_000,
    );
    // The sequencer keeps committing; the follower buffers (policy buffer).
    const seqWrites = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        lab.admin(seq, 'set', { peer: fol, register: 'config', key: `cut/${i}`, value: `v${i}`, timeoutMs: 2000 }),
      ),
    );
    expect(seqWrites.every((w) => w.verdict === 'committed')).toBe(true);
    const folWrite = await lab.admin(fol, 'set', { peer: seq, register: 'config', key: 'buffered', value: 'yes', timeoutMs: 300 });
    expect(folWrite.verdict).toBe('pending');
    const before = (await pair(seq, fol)).reentangleBytes + (await pair(fol, seq)).reentangleBytes;

    lab.setLink('a', 'b', true);
    await until('re-entangled and aligned', () => aligned('a', 'b'), 20_000);
    const after = (await pair(seq, fol)).reentangleBytes + (await pair(fol, seq)).reentangleBytes;
    const bytes = after - before;
    // O(missed): 40 small deltas plus statuses and acks, nowhere near the ~120 kB state.
    expect(bytes).toBeGreaterThan(0);
    expect(bytes).toBeLessThan(40 * 250);
    expect(bytes * 10).toBeLessThan(stateBytes);
    expect((await pair(fol, seq)).fullTransfers).toBe(0);
    const buffered = (await lab.admin(seq, 'get', { peer: fol, register: 'config', key: 'buffered' })) as MapGetResult;
    expect(buffered.found).toBe(true);
  }, 90_000);

  for (const victim of ['follower', 'sequencer'] as const) {
    it(`kill -9 of the ${victim} mid-workload, restart: no committed delta is lost`, async () => {
      const ab = await pair('a', 'b');
      const killed = (ab.role === 'sequencer') === (victim === 'sequencer') ? 'a' : 'b';
      const writer = killed === 'a' ? 'b' : 'a';
      const committed: string[] = [];
      let stop = false;
      const workload = (async () => {
        for (let i = 0; i < 400 && !stop; i++) {
          try {
            const r = await lab.admin(writer, 'set', {
              peer: killed,
              register: 'config',
              key: `w-${victim}/${i}`,
              value: `${i}`,
              timeoutMs: 1500,
            });
            if (r.verdict === 'committed') committed.push(`w-${victim}/${i}`);
          } catch {
            /* the writer's daemon is up; a refused write (buffer full) is simply not committed */
          }
        }
      })();
      await until('some commits', async () => committed.length >= 30, 20_000, 20);
      await lab.kill9(killed);
      const atKill = committed.length;
      await until(
        'more commits or buffered writes after the kill',
        async () => committed.length >= atKill + 5 || victim === 'sequencer',
        10_000,
        50,
      );
      await lab.start(killed);
      await until('aligned after restart', () => aligned('a', 'b'), 30_000);
      stop = true;
      await workload;
      await until('aligned after workload', () => aligned('a', 'b'), 30_000);
      for (const host of ['a', 'b']) {
        const peer = host === 'a' ? 'b' : 'a';
        for (const key of committed) {
          const g = (await lab.admin(host, 'get', { peer, register: 'config', key })) as MapGetResult;
          expect(g.found, `${key} at ${host}`).toBe(true);
        }
      }
      expect(committed.length).toBeGreaterThan(30);
    }, 120_000);
  }

  it('forged, truncated, oversized, unknown-pair and wrongly keyed frames: none accepted, no crash, each counted', async () => {
    const b = lab.host('b');
    const target = `${b.addrs.get('a')}`;
    const pairId = (await lab.admin('b', 'pair', { peer: 'a' })).pairId;
    const before = (await lab.admin('b', 'status')).drops;
    const script = `
      import dgram from 'node:dgram';
      const s = dgram.createSocket('udp4');
      const hdr = (type, len, pair, flags = 0, magic = 0x5350, version = 1, pnHigh = 0, pnLow = 7) => {
        const b = Buffer.alloc(20 + len);
        b.writeUInt16BE(magic, 0); b[2] = version; b[3] = type; b[4] = flags; b[5] = 20;
        b.writeUInt16BE(len, 6); b.writeUInt32BE(pair, 8); b.writeUInt32BE(pnHigh, 12); b.writeUInt32BE(pnLow, 16);
        return b;
      };
      const frames = [
        Buffer.from([1, 2, 3]),                                   // truncated
        hdr(4, 8, ${pairId}, 0, 0x1234),                          // bad magic
        hdr(4, 8, ${pairId}, 0, 0x5350, 9),                       // bad version
        hdr(77, 8, ${pairId}),                                    // unknown type
        Buffer.concat([hdr(4, 8, ${pairId}), Buffer.alloc(5)]),   // length mismatch
        hdr(4, 1440, ${pairId}),                                  // oversized
        hdr(4, 40, 99999),                                        // unknown pair
        hdr(4, 40, ${pairId}, 0, 0x5350, 1, 256),                 // forged payload for a real pair, fresh packet number
        hdr(4, 40, ${pairId}, 0, 0x5350, 1, 0, 0),                // packet number 0, the session's first: always already seen, refused by the replay window
        hdr(1, 146, 0),                                           // handshake with garbage: mac1 fails before any DH
      ];
      let n = 0;
      for (const f of frames) for (let i = 0; i < 5; i++) s.send(f, ${b.port}, '${target}', () => { if (++n === frames.length * 5) s.close(); });
    `;
    lab.runIn('a', script);
    const after = await until(
      'drop counters',
      async () => {
        const d = (await lab.admin('b', 'status')).drops;
        return (d['data-auth-failed'] ?? 0) >= (before['data-auth-failed'] ?? 0) + 5 ? d : undefined;
      },
      10_000,
    );
    const grew = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0);
    expect(grew('truncated')).toBe(5);
    expect(grew('bad-magic')).toBe(5);
    expect(grew('bad-version')).toBe(5);
    expect(grew('unknown-type')).toBe(5);
    expect(grew('length-mismatch')).toBe(5);
    expect(grew('oversized')).toBe(5);
    expect(grew('unknown-pair')).toBe(5);
    expect(grew('data-auth-failed')).toBe(5);
    expect(grew('replayed')).toBe(5);
    expect(grew('bad-mac1')).toBe(5);
    // Still alive and syncing.
    const w = await lab.admin('a', 'set', { peer: 'b', register: 'config', key: 'after-garbage', value: 'ok' });
    expect(w.verdict).toBe('committed');
    await until('aligned', () => aligned('a', 'b'));
  }, 60_000);

  it('an unauthorised key is refused at the handshake', async () => {
    const b = lab.host('b');
    const script = `
      import dgram from 'node:dgram';
      import { randomBytes } from 'node:crypto';
      const { EtcpEndpoint } = await import('${new URL('../../dist/core/etcp/endpoint.js', import.meta.url).pathname}');
      const { generateKeyPair } = await import('${new URL('../../dist/crypto/primitives.js', import.meta.url).pathname}');
      const bKey = Buffer.from('${Buffer.from(b.key.publicKey).toString('base64')}', 'base64');
      const ep = new EtcpEndpoint({ staticKey: generateKeyPair(), peers: [{ name: 'b', publicKey: new Uint8Array(bKey) }], random: (n) => new Uint8Array(randomBytes(n)) });
      const s = dgram.createSocket('udp4');
      let answered = false;
      s.on('message', () => { answered = true; });
      s.send(ep.initiate(Date.now(), new Uint8Array(bKey)), ${b.port}, '${b.addrs.get('a')}');
      setTimeout(() => { console.log(answered ? 'ANSWERED' : 'NO-ANSWER'); s.close(); }, 1000);
    `;
    const before = (await lab.admin('b', 'status')).drops['unauthorized-key'] ?? 0;
    expect(lab.runIn('a', script).trim()).toBe('NO-ANSWER');
    const after = (await lab.admin('b', 'status')).drops['unauthorized-key'] ?? 0;
    expect(after - before).toBe(1);
  }, 30_000);

  it('serves Prometheus metrics when configured (and only then)', async () => {
    const text = lab.runIn(
      'a',
      `const r = await fetch('http://127.0.0.1:9464/metrics'); console.log(r.status); console.log(await r.text());`,
    );
    expect(text.startsWith('200')).toBe(true);
    expect(text).toContain('spook_pair_state{peer="b",state="ENTANGLED"} 1');
    expect(text).toMatch(/spook_register_version\{peer="b",register="config"\} \d+/);
    expect(text).toContain('spook_frames_dropped_total');
    const none = lab.runIn(
      'b',
      `try { await fetch('http://127.0.0.1:9464/metrics'); console.log('open'); } catch { console.log('closed'); }`,
    );
    expect(none.trim()).toBe('closed');
  }, 30_000);

  it('roaming: a peer whose address changes keeps its pair (the address follows authenticated frames)', async () => {
    // Move a's end of the a-b link to a new address; b's configuration still names the old one.
    const a = lab.host('a');
    execFileSync('ip', ['-n', a.ns, 'addr', 'del', '10.77.1.1/24', 'dev', 'v1a']);
    execFileSync('ip', ['-n', a.ns, 'addr', 'add', '10.77.1.9/24', 'dev', 'v1a']);
    try {
      // a's next frames come from 10.77.1.9; b must answer there.
      const w1 = await lab.admin('a', 'set', { peer: 'b', register: 'config', key: 'roamed-a', value: '1' });
      expect(w1.verdict).toBe('committed');
      await until(
        'b follows a to its new address',
        async () => !!(await lab.admin('b', 'pair', { peer: 'a' })).endpoint?.startsWith('10.77.1.9:'),
      );
      const w2 = await lab.admin('b', 'set', { peer: 'a', register: 'config', key: 'roamed-b', value: '1' });
      expect(w2.verdict).toBe('committed');
      await until('aligned after roaming', () => aligned('a', 'b'));
    } finally {
      execFileSync('ip', ['-n', a.ns, 'addr', 'add', '10.77.1.1/24', 'dev', 'v1a']);
    }
  }, 60_000);

  it('SIGHUP reloads (here an unchanged configuration: nothing to do, logged): spookd keeps running and answering on its admin socket', async () => {
    const c = lab.host('c');
    c.proc!.kill('SIGHUP');
    await until(
      'the reload logged',
      async () => readFileSync(join(c.dir, 'spookd.log'), 'utf8').includes('0 peer(s) added, 0 removed, 0 rekeyed, 0 moved'),
      5_000,
    );
    expect(c.proc!.exitCode).toBeNull();
    expect(c.proc!.signalCode).toBeNull();
    const st = await lab.admin('c', 'status');
    expect(st.pid).toBeGreaterThan(0);
  }, 30_000);

  it('SIGTERM stops spookd cleanly (exit 0) and a restart re-forms the pair from disk', async () => {
    expect(await lab.stop('c')).toBe(0);
    await until('a sees c decoherent', async () => (await pair('a', 'c')).state === 'DECOHERENT', 15_000);
    await lab.start('c');
    await until('a-c aligned again', () => aligned('a', 'c'), 20_000);
    const got = (await lab.admin('c', 'get', { peer: 'a', register: 'config', key: 'size' })) as MapGetResult;
    expect(got.value?.text).toBe('XL');
  }, 60_000);
});

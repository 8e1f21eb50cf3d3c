/**
 * Run by test/wrap-fd-limit.test.ts under a low `ulimit -n` (vite-node, its own process): a peer
 * opens wrapped connections to a server this host may dial, each a descriptor here, and the
 * pair's store then needs one (a snapshot written at once). Prints one JSON line.
 * argv: the server's port (127.0.0.1), the connections the peer opens.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';
import { WrapSession } from '../core/wrap/session.js';
import { DiskStore } from '../drivers/store/store.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { DeltaOp, type Delta } from '../wire/delta.js';

// Not from helpers.ts: it imports vitest, which this process does not run under.
const set = (k: string, v: string): Delta => ({ op: DeltaOp.Set, key: new TextEncoder().encode(k), value: new TextEncoder().encode(v) });

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

const port = Number(process.argv[2]);
const N = Number(process.argv[3]);
/** Descriptors open now; -1: none left to count them with (EMFILE). */
const openFds = (): number => {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
};

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'spk-fdlimit-'));
  // The pair's store: every batch's log outgrows maxLogBytes, so each ends with a snapshot written at once (a new file).
  const store = new DiskStore(join(dir, 'peer'), 'always', 1);
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  // Each value outgrows the last snapshot (a snapshot is due once the log is longer than it).
  const commit = (k: string, n: number): string | undefined => {
    pair.propose(0, 'kv', set(k, 'v'.repeat(n)));
    pair.collapse(0);
    try {
      store.persist(pair.pollWrites());
    } catch (e) {
      return (e as Error).message; // spookd fences the pair: store-failed
    }
    pair.writesDurable();
    return undefined;
  };
  const before = commit('k0', 10);

  const m = new WrapManager(
    {
      key: generateKeyPair(),
      peers: [{ name: 'b', publicKey: generateKeyPair().publicKey, role: 1 }],
      peerAddr: () => undefined,
      listen: { host: '127.0.0.1', port: 0 },
    },
    {
      intercept: { host: '127.0.0.1', port: 0 },
      interception: 'off',
      windowBytes: 1024 * 1024,
      maxConnections: 1024, // the default
      silenceMs: 60_000,
      allow: [{ peer: 'b', to: `127.0.0.1:${port}`, protocol: 'tcp' }],
    },
    [],
    pino({ level: 'silent' }),
  );
  const mi = m as Internals;
  const ps = mi.peers.get('b');
  const a: WrapSession = ps.session;
  // The peer: a session that opens connections on a carrier simulated in memory.
  const b = new WrapSession({ windowBytes: 1024 * 1024, maxConnections: 1024, pingMs: 20_000, silenceMs: 60_000, role: 0, bootId: 9n });
  const pump = (): void => {
    const t = performance.now();
    for (let moved = true; moved;) {
      moved = false;
      for (let r = a.pollRecord(t); r; r = a.pollRecord(t), moved = true) b.handleRecord(t, Buffer.concat(r));
      for (let r = b.pollRecord(t); r; r = b.pollRecord(t), moved = true) a.handleRecord(t, Buffer.concat(r));
      for (let e = b.pollEvent(); e; e = b.pollEvent()) void e;
      mi.moveRecords(ps, t); // a's dials, as the manager makes them
    }
  };
  a.onCarrierUp(performance.now());
  b.onCarrierUp(performance.now());
  pump();
  const fds0 = openFds();
  const target = { family: 4 as const, address: '127.0.0.1', port };
  for (let i = 0; i < N; i++) b.openLocal(performance.now(), port, target, 60_000);
  pump();
  // Every dial settles (connected, or failed): then the connections hold what they hold.
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 20));
    pump();
    const opening = [...a.conns.values()].filter((c) => c.state === 'opening').length;
    if (opening === 0) break;
  }
  const held = a.conns.size;
  const fds = openFds();
  const after = commit('k1', 4096);
  const stats = m.stats();
  console.log(
    JSON.stringify({
      before,
      after,
      held,
      fds0,
      fds,
      descriptors: stats.descriptors,
      peerRefused: b.counters,
    }),
  );
  await m.stop();
  store.close();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

void main();

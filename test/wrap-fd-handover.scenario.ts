/**
 * Run by test/wrap-fd-handover.test.ts (vite-node, its own process, so that the descriptors it
 * counts are its own): a restart through the descriptor store hands N wrapped connections to a
 * new WrapManager (restoreHandover's steps: importHandover, then adopt per socket), then the peer
 * opens more, resets the inherited ones, and opens more again. Prints one JSON line.
 * argv: the server's port (127.0.0.1), N inherited, X (descriptors the limit leaves above those open).
 */
import { readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';
import { WrapSession } from '../core/wrap/session.js';
import { decodeHandover, encodeHandover } from '../core/wrap/handover.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

const port = Number(process.argv[2]);
const N = Number(process.argv[3]);
const X = Number(process.argv[4]);
const openFds = (): number => readdirSync('/proc/self/fd').length - 1;
const target = { family: 4 as const, address: '127.0.0.1', port };
const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Move records between two in-memory sessions (and the manager's events, if given) until none move. */
function pump(a: WrapSession, b: WrapSession, after?: () => void, later = 0): void {
  const t = performance.now() + later;
  for (let moved = true; moved;) {
    moved = false;
    for (let r = a.pollRecord(t); r; r = a.pollRecord(t), moved = true) b.handleRecord(t, Buffer.concat(r));
    for (let r = b.pollRecord(t); r; r = b.pollRecord(t), moved = true) a.handleRecord(t, Buffer.concat(r));
    for (let e = b.pollEvent(); e; e = b.pollEvent()) void e;
    after?.();
  }
}

async function main(): Promise<void> {
  const opts = { windowBytes: 1024 * 1024, maxConnections: 1024, pingMs: 20_000, silenceMs: 60_000 };
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
      maxConnections: 1024,
      silenceMs: 60_000,
      allow: [{ peer: 'b', to: `127.0.0.1:${port}`, protocol: 'tcp' }],
      descriptorLimit: 0, // set below: X descriptors above what this process has open before the handover
      descriptorReserve: 0,
    },
    [],
    pino({ level: 'silent' }),
  );
  const mi = m as Internals;
  // The previous process's side of the peer 'b' (it dials), and the peer.
  const old = new WrapSession({ ...opts, role: 1, bootId: mi.bootId, mayDial: () => true });
  const b = new WrapSession({ ...opts, role: 0, bootId: 9n });
  old.onCarrierUp(performance.now());
  b.onCarrierUp(performance.now());
  pump(old, b);
  const inheritedIds: number[] = [];
  for (let i = 0; i < N; i++) inheritedIds.push(b.openLocal(performance.now(), port, target, 60_000)!);
  pump(old, b, () => {
    for (let e = old.pollEvent(); e; e = old.pollEvent()) if (e.type === 'dial') old.dialed(performance.now(), e.conn);
  });
  pump(old, b, undefined, 1000); // the delayed OPENEDs leave
  old.onCarrierDown(performance.now());
  b.onCarrierDown(performance.now());
  const state = decodeHandover(
    encodeHandover({
      bootId: mi.bootId,
      peers: [old.exportHandover(performance.now(), 'b', (c) => ({ fd: c.id, received: c.recv.received }))],
    }),
  );

  const base = openFds();
  mi.settings.descriptorLimit = base + X;
  const ps = mi.peers.get('b');
  const a: WrapSession = ps.session;
  // The handed-over sockets (the previous process's descriptors): restoreHandover's steps.
  const sockets: Socket[] = await Promise.all(
    state.peers[0].conns.map(
      () =>
        new Promise<Socket>((r) => {
          const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => r(s));
        }),
    ),
  );
  const host = mi.handoverHost();
  const hp = host.peers().find((p: { name: string }) => p.name === 'b');
  const taken: Set<number> = a.importHandover(performance.now(), state.peers[0]);
  state.peers[0].conns.forEach((x, i) => {
    if (taken.has(x.id)) host.adopt(hp, x.id, sockets[i], x.wrapPort, x.local);
    else sockets[i].destroy();
  });
  a.onCarrierUp(performance.now());
  b.onCarrierUp(performance.now());
  const pumpM = (): void => pump(a, b, () => mi.moveRecords(ps, performance.now()));
  pumpM();
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 200; i++) {
      await tick(10);
      pumpM();
      if (![...a.conns.values()].some((c) => c.state === 'opening')) break;
    }
  };
  const open = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) b.openLocal(performance.now(), port, target, 60_000);
    pumpM();
    await settle();
  };
  const inherited = taken.size;
  await open(X);
  const afterFirst = { conns: a.conns.size, ...m.stats().descriptors };
  // The peer ends every inherited connection: their descriptors go.
  for (const id of inheritedIds) b.localReset(performance.now(), id, 'done with it');
  pumpM();
  await settle();
  await tick(50);
  const afterReset = { conns: a.conns.size, held: m.stats().descriptors!.held };
  await open(X);
  const afterSecond = { conns: a.conns.size, ...m.stats().descriptors };
  console.log(JSON.stringify({ base, inherited, afterFirst, afterReset, afterSecond }));
  await m.stop({ handover: false });
  process.exit(0);
}

void main();

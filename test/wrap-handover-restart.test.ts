/**
 * Review of issue 17 (wrappers): defects found by reading the merged code, each with the test
 * that showed it. Two WrapManagers or one, on loopback, no root.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { connect, createServer, Server, type AddressInfo, type Socket } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bindNotifySocket, closeFd, notify, recvFds } from '../drivers/wrap/fdstore.js';
import { fdOf } from '../drivers/wrap/linger.js';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager } from '../drivers/wrap/manager.js';
import type { Inherited } from '../drivers/wrap/handover-store.js';
import { WRAP_TEST_SETTINGS } from './helpers.js';

const log = pino({ level: 'silent' });
const settings = WRAP_TEST_SETTINGS;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

describe('a restart through a handover', () => {
  afterEach(() => vi.restoreAllMocks());

  it('takes the handed-over state back before its carrier listener accepts anything', async () => {
    // A carrier accepted (and its HELLO handled) before the import would answer the peer's RESUMEs
    // as ended connections: the peer resets them, and the imported ones stay held until their hold.
    const a = generateKeyPair();
    const b = generateKeyPair();
    const m = new WrapManager(
      {
        key: a,
        peers: [{ name: 'b', publicKey: b.publicKey, role: 1 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      settings,
      [],
      log,
    );
    const inherited: Inherited = { state: { bootId: 5n, peers: [{ peer: 'b', peerBootId: 77n, nextId: 3, conns: [] }] }, fds: new Map() };
    (m as Internals).inherited = inherited;
    const session = (m as Internals).peers.get('b').session;
    const atListen: (bigint | undefined)[] = [];
    const listen = Server.prototype.listen;
    vi.spyOn(Server.prototype, 'listen').mockImplementation(function (this: Server, ...args: unknown[]) {
      atListen.push(session.peerBootId);
      return (listen as (...a: unknown[]) => Server).apply(this, args);
    });
    await m.start();
    await m.stop({ handover: false });
    expect(atListen.length).toBeGreaterThan(0);
    expect(atListen[0]).toBe(77n); // the first listener is the carrier's
  });
});

/** A second descriptor for a socket's connection (SCM_RIGHTS through a unix socket: a dup Node does not know). */
function dupFd(s: Socket): number {
  const path = join(mkdtempSync(join(tmpdir(), 'spk-review-')), 'n');
  const sock = bindNotifySocket(path);
  try {
    notify(path, 'x', [fdOf(s)!]);
    return recvFds(sock)!.fds[0];
  } finally {
    closeFd(sock);
  }
}

describe('a connection handed over before the far side confirmed it', () => {
  it('is still reset at its connect timeout in the next process', async () => {
    // The client's connection was intercepted and OPEN sent; the far side had not answered when
    // spookd restarted. The next process must keep its connect timeout (not wait for the hold).
    const server = createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const acceptedP = new Promise<Socket>((r) => server.once('connection', r));
    const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
    await new Promise<void>((r) => client.once('connect', () => r()));
    const ended = new Promise<string>((r) => {
      client.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
      client.on('close', () => r('close'));
    });
    const accepted = await acceptedP;
    const fd = dupFd(accepted);
    accepted.destroy(); // the dup (the store's copy) keeps the connection
    const a = generateKeyPair();
    const b = generateKeyPair();
    const m = new WrapManager(
      {
        key: a,
        peers: [{ name: 'b', publicKey: b.publicKey, role: 1 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      settings,
      [{ protocol: 'tcp', port: 2222, peer: 'b', holdMs: 60_000, connectTimeoutMs: 300 }],
      log,
    );
    const conn = {
      id: 3,
      local: true,
      openSent: true,
      state: 'opening' as const,
      wrapPort: 2222,
      target: { family: 4 as const, address: '10.9.9.9', port: 2222 },
      holdMs: 60_000,
      heldMs: 0,
      fd: 0,
      sendAcked: 0,
      sendBytes: new Uint8Array(0),
      sendFin: false,
      received: 0,
      recvFinAt: undefined,
      endDelivered: false,
    };
    const inherited: Inherited = {
      state: { bootId: 5n, peers: [{ peer: 'b', peerBootId: 77n, nextId: 5, conns: [conn] }] },
      fds: new Map([[0, fd]]),
    };
    (m as Internals).inherited = inherited;
    try {
      await m.start();
      expect(m.connections().length).toBe(1);
      // Within a second (timeout 300 ms), not at the hold (60 s).
      const how = await Promise.race([ended, new Promise<string>((r) => setTimeout(() => r('still open'), 3_000))]);
      expect(how).not.toBe('still open');
      expect(m.stats().connects.timedOut).toBe(1);
      expect(m.connections().length).toBe(0);
    } finally {
      client.destroy();
      await m.stop({ handover: false });
      server.close();
    }
  }, 20_000);
});

describe('flushes deferred to the end of the turn (flushSoon)', () => {
  it('a throw in one peer flush is contained, and later flushes still run for every peer', async () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const c = generateKeyPair();
    const m = new WrapManager(
      {
        key: a,
        peers: [
          { name: 'b', publicKey: b.publicKey, role: 0 },
          { name: 'c', publicKey: c.publicKey, role: 0 },
        ],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      settings,
      [],
      log,
    );
    await m.start();
    const mi = m as Internals;
    const pb = mi.peers.get('b');
    const pc = mi.peers.get('c');
    const flushed: string[] = [];
    const uncaught: unknown[] = [];
    const onUncaught = (e: unknown): void => void uncaught.push(e);
    process.prependListener('uncaughtException', onUncaught);
    let failOnce = true;
    mi.flushNow = (ps: { peer: { name: string } }) => {
      flushed.push(ps.peer.name);
      if (ps === pb && failOnce) {
        failOnce = false;
        throw new Error('a bug in one peer flush');
      }
    };
    try {
      mi.flushSoon(pb);
      mi.flushSoon(pc);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      expect(flushed).toEqual(['b', 'c']);
      mi.flushSoon(pb);
      mi.flushSoon(pc);
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      expect(flushed).toEqual(['b', 'c', 'b', 'c']);
      expect(uncaught).toEqual([]);
      expect(m.internalErrors).toBe(1);
    } finally {
      process.off('uncaughtException', onUncaught);
      await m.stop({ handover: false });
    }
  });
});

describe('a stop that hands over', () => {
  it('closes both UDP intercept sockets ([::1] too)', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spk-review-')), 'notify');
    const store = bindNotifySocket(path);
    const saved = { NOTIFY_SOCKET: process.env.NOTIFY_SOCKET, FDSTORE: process.env.FDSTORE };
    const a = generateKeyPair();
    const b = generateKeyPair();
    const m = new WrapManager(
      {
        key: a,
        peers: [{ name: 'b', publicKey: b.publicKey, role: 0 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      settings,
      [],
      log,
    );
    try {
      await m.start();
      const mi = m as Internals;
      expect(mi.udpIntercept6).toBeDefined();
      process.env.NOTIFY_SOCKET = path;
      process.env.FDSTORE = '16';
      await m.stop();
      const msgs: string[] = [];
      for (let r = recvFds(store); r; r = recvFds(store)) {
        msgs.push(r.message);
        r.fds.forEach(closeFd);
      }
      expect(msgs.some((x) => x.includes('FDNAME=spook-wrap-state'))).toBe(true); // it did hand over
      expect(() => mi.udpIntercept.address()).toThrow();
      expect(() => mi.udpIntercept6.address()).toThrow();
    } finally {
      for (const [k, v] of Object.entries(saved))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      closeFd(store);
    }
  });
});

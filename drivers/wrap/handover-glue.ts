/**
 * The two halves of a restart under wrapped connections, as the WrapManager runs them
 * (docs/OPERATIONS.md, "Restarting spookd under wrapped connections"):
 * - handOver (stop): connections that cannot go (delta mode, UDP flows, dials still in progress)
 *   are closed as at any stop; the carriers are dropped without a CLOSE (the peer holds, as in
 *   an outage); every local socket stops reading and flushes what it was handed (up to 250 ms:
 *   what a stalled reader's socket did not take is resent by the peer to the next process), and then the
 *   state and the sockets go to the descriptor store. Nothing is reset or ended: SO_LINGER 0
 *   stays set (a store flushed by a full stop resets them), but closing our copy releases
 *   nothing while the store holds one.
 * - restoreHandover (start): the sessions take the state back (same bootId: the peer RESUMEs
 *   instead of resetting), each socket is wrapped again and reads on.
 */
import { Socket } from 'node:net';
import type { Logger } from 'pino';
import { CloseCode } from '../../wire/wrap.js';
import type { WrapSession } from '../../core/wrap/session.js';
import type { LocalConn } from './local.js';
import { fdOf } from './linger.js';
import { storeHandover, type Inherited } from './handover-store.js';
import { closeQuietly } from './fdstore.js';

/**
 * How long a stop lets the local sockets take what they were handed: the rest is resent by the
 * peer to the next process (kernelOffset), so this only saves resending and is kept short, as it
 * adds to the restart's pause. Where Node's counters are missing, a socket that did not take
 * everything by then is reset.
 */
export const HANDOVER_DRAIN_MS = 250;

/** The peer's stream offset of each restored socket's first write in this process (0 for a socket opened here). */
const writeBase = new WeakMap<Socket, number>();

/**
 * The offset of the peer's stream up to which the socket's kernel holds what was written to it:
 * Node counts the bytes it dispatched to libuv, libuv those it has not yet written. Bytes still
 * queued above the kernel die with this process; the next one has the peer resend them.
 */
function kernelOffset(s: Socket): number | undefined {
  const dispatched = (s as unknown as { _bytesDispatched?: unknown })._bytesDispatched;
  const queued = (s as unknown as { _handle?: { writeQueueSize?: unknown } })._handle?.writeQueueSize;
  if (typeof dispatched !== 'number' || typeof queued !== 'number') return undefined;
  return (writeBase.get(s) ?? 0) + dispatched - queued;
}

export interface HandoverPeerHost {
  name: string;
  session: WrapSession;
  conns: Map<number, LocalConn>;
  flush(): void;
  dropCarrier(why: string): void;
}

/** What the manager lends the handover (its sessions, sockets and counters). */
export interface HandoverHost {
  bootId: bigint;
  now(): number;
  peers(): HandoverPeerHost[];
  socketOf(lc: LocalConn): Socket | undefined;
  /** Take an inherited socket as connection `id` of `peer` (attach, counters). */
  adopt(peer: HandoverPeerHost, id: number, socket: Socket, wrapPort: number, local: boolean): LocalConn;
}

/**
 * Hand every carried TCP connection to the next process through the store. False (nothing
 * handed over, the caller stops as usual) when the store cannot take them all or storing fails.
 */
export async function handOver(host: HandoverHost, store: { socket: string; max: number }, log: Logger): Promise<boolean> {
  const peers = host.peers();
  const sockOf = (p: HandoverPeerHost, id: number): Socket | undefined => {
    const c = p.session.conns.get(id);
    const lc = p.conns.get(id);
    const s = lc && host.socketOf(lc);
    return c && lc && !c.delta && !c.datagram && lc.connected && s && fdOf(s) !== undefined ? s : undefined;
  };
  const going: { p: HandoverPeerHost; id: number; socket: Socket }[] = [];
  for (const p of peers) for (const id of p.session.conns.keys()) if (sockOf(p, id)) going.push({ p, id, socket: sockOf(p, id)! });
  if (going.length + 1 > store.max) {
    log.warn(
      { connections: going.length, fileDescriptorStoreMax: store.max },
      'more carried connections than the descriptor store takes: they are closed, not handed over (raise FileDescriptorStoreMax=)',
    );
    return false;
  }
  const goes = new Set(going.map((g) => `${g.p.name}/${g.id}`));
  for (const p of peers) {
    p.session.closeAll(
      host.now(),
      CloseCode.Shutdown,
      'spookd is restarting and cannot hand this connection over',
      (c) => !goes.has(`${p.name}/${c.id}`),
    );
    p.flush();
    p.dropCarrier('spookd is restarting: its connections are handed over');
  }
  for (const g of going) g.socket.pause();
  const drained = (g: (typeof going)[number]): boolean => {
    const c = g.p.session.conns.get(g.id);
    return !!c && c.recv.drained === c.recv.received && g.socket.writableLength === 0 && !g.socket.destroyed;
  };
  const deadline = performance.now() + HANDOVER_DRAIN_MS;
  while (going.some((g) => !drained(g)) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  // From here on, synchronous: no byte can arrive or leave between the state and the sockets.
  for (const g of going) {
    // What Node read ahead of the pause goes into the send stream (a read emits 'data').
    while (g.socket.readableLength > 0 && g.socket.read() !== null);
    (g.socket as unknown as { _handle?: { readStop?: () => number } })._handle?.readStop?.();
  }
  const index = new Map<string, { fd: number; received: number }>();
  let partial = 0; // handed over with bytes the next process must have resent
  const fds: number[] = [];
  for (const g of going) {
    const c = g.p.session.conns.get(g.id);
    if (!c || g.socket.destroyed) continue;
    // A socket that took everything holds `received`; one that did not, what its kernel holds.
    const received = kernelOffset(g.socket) ?? (drained(g) ? c.recv.received : undefined);
    if (received === undefined || received < c.recv.drained || received > c.recv.received) continue;
    index.set(`${g.p.name}/${g.id}`, { fd: fds.length, received });
    if (received < c.recv.received) partial++;
    fds.push(fdOf(g.socket)!);
  }
  const now = host.now();
  const state = {
    bootId: host.bootId,
    peers: peers.map((p) => p.session.exportHandover(now, p.name, (c) => index.get(`${p.name}/${c.id}`))),
  };
  try {
    storeHandover(store.socket, state, fds);
  } catch (e) {
    log.error({ error: (e as Error).message }, 'wrap handover failed: carried connections are closed');
    return false;
  }
  for (const g of going) {
    // Handed over: our descriptor goes (what Node still queued for it with it), the connection
    // stays (the store holds it). Not handed (its offsets did not add up): reset, as at any stop.
    if (index.has(`${g.p.name}/${g.id}`)) g.socket.destroy();
    else g.socket.resetAndDestroy();
  }
  log.info({ handedOver: fds.length, partial, reset: going.length - fds.length }, 'wrapped connections handed over to the next spookd');
  return true;
}

/** Take back what the previous process handed over; sockets that cannot be restored are closed (reset). */
export function restoreHandover(host: HandoverHost, h: Inherited, log: Logger): void {
  const now = host.now();
  const byName = new Map(host.peers().map((p) => [p.name, p]));
  let restored = 0;
  let dropped = 0;
  /** In the state without a descriptor: the store refused it (more than FileDescriptorStoreMax=). */
  let missing = 0;
  for (const hp of h.state.peers) {
    const p = byName.get(hp.peer);
    const conns = hp.conns.filter((x) => h.fds.has(x.fd));
    missing += hp.conns.length - conns.length;
    if (!p) {
      log.warn({ peer: hp.peer, connections: conns.length }, 'wrap handover: the peer is no longer configured: its connections are reset');
      continue;
    }
    const taken = p.session.importHandover(now, { ...hp, conns });
    for (const x of conns) {
      const fd = h.fds.get(x.fd)!;
      h.fds.delete(x.fd);
      if (!taken.has(x.id)) {
        closeQuietly(fd);
        dropped++;
        continue;
      }
      let socket: Socket;
      try {
        socket = new Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
      } catch (e) {
        p.session.localReset(now, x.id, `handed-over descriptor ${fd}: ${(e as Error).message}`);
        closeQuietly(fd);
        dropped++;
        continue;
      }
      writeBase.set(socket, x.received);
      const lc = host.adopt(p, x.id, socket, x.wrapPort, x.local);
      // Our direction had ended in the previous process: this Socket must know, or it never closes.
      if (x.endDelivered) lc.io.end();
      restored++;
    }
    p.flush();
  }
  for (const fd of h.fds.values()) {
    closeQuietly(fd);
    dropped++;
  }
  log.info({ restored, dropped, missing }, 'wrapped connections taken over from the previous spookd');
  if (missing > 0)
    log.warn(
      { missing },
      'wrap handover: connections came back without their socket (the descriptor store took fewer than offered: FileDescriptorStoreMax= below SPOOK_FDSTORE?): the peer resets them',
    );
}

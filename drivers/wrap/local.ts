/**
 * The local end of a wrapped connection (a TCP socket, or one end of a UDP flow) as the
 * manager drives it, and the counters an operator reads: per wrapper (client side) and per
 * recognised protocol (both sides).
 */
import type { WhenDown } from '../../core/wrap/connect.js';
import type { Socket } from 'node:net';
import { orderlyClose } from './linger.js';
import { ProtocolStats, recognise, RECOGNISE_MAX_BYTES, type Protocol } from '../../core/wrap/profiles.js';
import { transportOf, wrapperKey, type WrapperKey, type WrapProtocol } from '../../core/wrap/protocols.js';
import type { CloseName } from '../../wire/wrap.js';
import { roomFor } from '../../wire/buffer.js';

/** How a closed connection lingers before its socket is destroyed (its FIN and last bytes leave). */
const CLOSE_LINGER_MS = 5_000;

/** What the manager does to a local endpoint. */
export interface LocalIo {
  /**
   * Hand bytes of the peer's stream over; `done(n)` once the endpoint took n octets of them
   * (ACK-able), in order. An endpoint may gather several writes and report them in one call, to
   * the `done` of the last of them: every `done` of a connection must do the same thing.
   */
  write(data: Uint8Array, done: (n: number) => void): void;
  /** The peer's stream ended. */
  end(): void;
  /** The window reopened. */
  resume(): void;
  /** Stop reading (the per-peer quota is full). */
  pause(): void;
  /** The connection is over: cleanly (FIN) or not (RST). */
  close(clean: boolean): void;
}

export interface LocalConn {
  id: number;
  io: LocalIo;
  datagram: boolean;
  /** The client side (intercepted here) rather than the server side (dialled here). */
  local: boolean;
  /** Server side: the dial completed (an error before it is a dial failure, not a reset). */
  connected: boolean;
  wrapPort: number;
  /** First bytes of each direction until the protocol is recognised. */
  first: [Buffer[], Buffer[]];
  firstLen: [number, number];
  protocol: Protocol | undefined;
  bytes: [number, number]; // up (client→server), down
}

/**
 * A piece smaller than this, delivered while the socket has a write the kernel has not taken,
 * is copied into the connection's gathering buffer instead of becoming a write of its own.
 */
export const GATHER_BELOW = 16 * 1024;
/** The first gathering buffer's size; each next one doubles (at most twice what it holds, past this). */
const GATHER_FIRST = 256;

/**
 * A TCP socket as a LocalIo. `corkTurn`, when given, is called before each write: the driver
 * corks the socket until the end of its event-loop turn, so the deliveries of one turn (one per
 * carrier read, several per poll under load) leave in one writev, not one write each; it calls
 * `beforeUncork` just before it uncorks.
 *
 * A socket whose reader does not keep up (a slow server, a stalled client) must not hold a write
 * for each piece the peer sent: a write costs some 500 octets of buffers, callback and queue entry
 * (Node's, libuv's), and the quotas count only a piece's octets (a 1-octet DATA record is one).
 * So a small piece delivered while an earlier write is still waiting for the kernel is copied
 * into one gathering buffer (growing by doubling), written as one piece once the socket's writes
 * before it completed; the gathered octets are reported done only when that write completes.
 * Deliveries of one turn whose earlier writes all went in that turn join it (beforeUncork).
 */
export function tcpIo(socket: Socket, corkTurn?: (s: Socket, beforeUncork: () => void) => void): LocalIo {
  let issued = 0; // writes handed to the socket
  let completed = 0; // of which completed (taken by the kernel, or failed)
  let turnFrom = -1; // `issued` when this turn's cork began; -1: no cork of ours pending
  let gather: Uint8Array | undefined;
  let gatherLen = 0;
  let gatherDone: ((n: number) => void) | undefined;

  const put = (data: Uint8Array, done: (n: number) => void): void => {
    const n = data.length;
    issued++;
    socket.write(data, (err) => {
      completed++;
      if (err) return dropGather(); // the socket is gone: so is the rest
      done(n);
      if (gather && completed === issued) {
        cork();
        flushGather();
      }
    });
  };
  const dropGather = (): void => {
    gather = gatherDone = undefined;
    gatherLen = 0;
  };
  const flushGather = (): void => {
    if (!gather) return;
    const b = gather.subarray(0, gatherLen);
    const done = gatherDone!;
    gather = gatherDone = undefined;
    gatherLen = 0;
    put(b, done);
  };
  const beforeUncork = (): void => {
    // Nothing from an earlier turn waits for the kernel: what gathered goes in this turn's write.
    if (completed >= turnFrom) flushGather();
    turnFrom = -1;
  };
  const cork = (): void => {
    if (!corkTurn) return;
    if (turnFrom < 0) turnFrom = issued;
    corkTurn(socket, beforeUncork);
  };
  const gatherIn = (data: Uint8Array, done: (n: number) => void): void => {
    const need = gatherLen + data.length;
    gather = roomFor(gather, gatherLen, need, GATHER_FIRST);
    gather.set(data, gatherLen);
    gatherLen = need;
    gatherDone = done;
  };

  return {
    write: (data, done) => {
      cork();
      if (data.length < GATHER_BELOW && (gather || issued > completed)) return gatherIn(data, done);
      flushGather(); // ahead of this piece, in order
      put(data, done);
    },
    end: () => {
      flushGather();
      orderlyClose(socket); // an orderly FIN: every byte delivered, no reset at close
      socket.end();
    },
    resume: () => void socket.resume(),
    pause: () => void socket.pause(),
    close: (clean) => {
      if (!clean) {
        dropGather();
        return void socket.resetAndDestroy();
      }
      flushGather();
      orderlyClose(socket);
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
    },
  };
}

export interface WrapperSpec {
  protocol: WrapProtocol;
  port: number;
  peer: string;
  holdMs: number;
  /** Delta mode (§16.9): ranges the other side already holds go as references. */
  delta?: boolean;
  /** TCP: what connect() does while the peer has no carrier (core/wrap/connect.ts; default hold). */
  whenDown?: WhenDown;
  /** TCP: a connection the far side has not confirmed (OPENED) within this is reset (default: the host's SYN patience). */
  connectTimeoutMs?: number;
}

/**
 * How a wrapped connection ended, as counted per wrapper (`closes`): both directions finished
 * (`completed`), a close code's name, or `code N` for a code this side does not know (a newer peer).
 */
export type ConnEnd = 'completed' | CloseName | `code ${number}`;

export interface WrapperCounters extends WrapperSpec {
  connections: number;
  active: number;
  bytesUp: number;
  bytesDown: number;
  outages: number;
  /** Ends by ConnEnd (written only by WrapCounters.ended, which takes a ConnEnd; read as plain names). */
  closes: Record<string, number>;
}

/** Chunks (reads, datagrams) the protocol recognition looks at, both directions together. */
const RECOGNISE_MAX_CHUNKS = 32;

export class WrapCounters {
  /** By transport and port (wrapperKey): a port may be wrapped for TCP and for UDP. */
  readonly wrappers = new Map<WrapperKey, WrapperCounters>();
  readonly protocols = new ProtocolStats();

  add(spec: WrapperSpec): void {
    this.wrappers.set(wrapperKey(transportOf(spec.protocol), spec.port), {
      ...spec,
      connections: 0,
      active: 0,
      bytesUp: 0,
      bytesDown: 0,
      outages: 0,
      closes: {},
    });
  }

  /** The wrapper a client-side connection belongs to (server-side ones count per protocol only). */
  private wrapperOf(lc: LocalConn): WrapperCounters | undefined {
    return lc.local ? this.wrappers.get(wrapperKey(lc.datagram ? 'udp' : 'tcp', lc.wrapPort)) : undefined;
  }

  opened(w: WrapperCounters): void {
    w.connections++;
    w.active++;
  }

  /**
   * Count bytes per direction and recognise the protocol from the first bytes of each: at most
   * RECOGNISE_MAX_BYTES of each, in at most RECOGNISE_MAX_CHUNKS chunks in all (each look joins
   * them: without a bound on their number, a peer's flood of empty or 1-octet datagrams made every
   * next one cost more, seconds of the event loop for 20,000).
   */
  observe(lc: LocalConn, dir: 0 | 1, chunk: Uint8Array): void {
    lc.bytes[dir] += chunk.length;
    const w = this.wrapperOf(lc);
    if (w) {
      if (dir === 0) w.bytesUp += chunk.length;
      else w.bytesDown += chunk.length;
    }
    if (lc.protocol !== undefined) {
      this.protocols.bytes(lc.protocol, dir === 0 ? chunk.length : 0, dir === 1 ? chunk.length : 0);
      return;
    }
    // Nothing to recognise in an empty chunk (an empty datagram): never a reason to look again.
    if (chunk.length === 0) return;
    if (lc.firstLen[dir] < RECOGNISE_MAX_BYTES) {
      lc.first[dir].push(Buffer.from(chunk.subarray(0, RECOGNISE_MAX_BYTES - lc.firstLen[dir])));
      lc.firstLen[dir] += Math.min(chunk.length, RECOGNISE_MAX_BYTES - lc.firstLen[dir]);
    }
    const up = Buffer.concat(lc.first[0]);
    const down = Buffer.concat(lc.first[1]);
    const r = recognise(up, down.length ? down : undefined, lc.datagram ? 'udp' : 'tcp');
    if (
      r.complete ||
      (up.length >= RECOGNISE_MAX_BYTES && down.length >= RECOGNISE_MAX_BYTES) ||
      lc.bytes[0] + lc.bytes[1] > 4 * RECOGNISE_MAX_BYTES ||
      // Each look joins what came so far: after so many chunks (tiny datagrams), the answer is unknown.
      lc.first[0].length + lc.first[1].length >= RECOGNISE_MAX_CHUNKS
    ) {
      lc.protocol = r.complete ? r.protocol : 'unknown';
      lc.first = [[], []];
      this.protocols.connection(lc.protocol);
      this.protocols.bytes(lc.protocol, lc.bytes[0], lc.bytes[1]);
    }
  }

  outage(lc: LocalConn): void {
    const w = this.wrapperOf(lc);
    if (w) w.outages++;
    if (lc.protocol) this.protocols.outage(lc.protocol);
  }

  ended(lc: LocalConn, reason: ConnEnd): void {
    const w = this.wrapperOf(lc);
    if (!w) return;
    w.active = Math.max(0, w.active - 1);
    w.closes[reason] = (w.closes[reason] ?? 0) + 1;
  }
}

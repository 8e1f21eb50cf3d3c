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

/** How a closed connection lingers before its socket is destroyed (its FIN and last bytes leave). */
const CLOSE_LINGER_MS = 5_000;

/** What the manager does to a local endpoint. */
export interface LocalIo {
  /** Hand bytes of the peer's stream over; `done` once the endpoint took them (ACK-able). */
  write(data: Uint8Array, done: () => void): void;
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
 * A TCP socket as a LocalIo. `corkTurn`, when given, is called before each write: the driver
 * corks the socket until the end of its event-loop turn, so the deliveries of one turn (one per
 * carrier read, several per poll under load) leave in one writev, not one write each.
 */
export function tcpIo(socket: Socket, corkTurn?: (s: Socket) => void): LocalIo {
  return {
    write: (data, done) => {
      corkTurn?.(socket);
      socket.write(data, (err) => err || done());
    },
    end: () => {
      orderlyClose(socket); // an orderly FIN: every byte delivered, no reset at close
      socket.end();
    },
    resume: () => void socket.resume(),
    pause: () => void socket.pause(),
    close: (clean) => {
      if (!clean) return void socket.resetAndDestroy();
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

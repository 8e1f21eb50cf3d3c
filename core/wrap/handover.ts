/**
 * The wrap state one spookd hands to the next across a restart (docs/OPERATIONS.md, "Restarting
 * spookd under wrapped connections"): the bootId, and per peer and connection what WrapSession
 * needs to RESUME (PROTOCOL §16.6) instead of reset: the unacknowledged bytes of the send stream,
 * the received offset of the receive stream, both FINs. The local sockets travel beside it (the
 * service manager's descriptor store), each named by `fd` (FDNAME spook-wrap-<fd>).
 *
 * The bytes are local input but still validated: a state that cannot be read is refused with
 * the field at fault (HandoverError), and the caller starts afresh; an entry that reads but
 * does not check out costs only that connection or peer (decodeHandover's `drop`). No wire rule
 * changes: the peer sees a carrier loss, then a HELLO with the same bootId, as after any outage.
 */
import type { Target } from '../../wire/wrap.js';

export const HANDOVER_MAGIC = 'SPKWRAPH';
/**
 * 3 adds a local connection's user (uid); 2 adds each peer's recently completed connections;
 * 1 and 2 are still read.
 */
export const HANDOVER_VERSION = 3;
/** Bounds of a decoded state (beyond them it is refused, not truncated). */
export const HANDOVER_MAX_PEERS = 65_536;
export const HANDOVER_MAX_CONNS = 1 << 20;
/** Completed connections remembered per peer (WrapSession keeps the last 1,024 ended). */
export const HANDOVER_MAX_COMPLETED = 1024;
/** One connection's buffered send bytes (a window plus one socket read, with room to spare). */
export const HANDOVER_MAX_CONN_BYTES = 1 << 30;
/** Stream offsets stay exact in a double. */
const MAX_OFFSET = Number.MAX_SAFE_INTEGER;

export type HandoverConnState = 'opening' | 'open' | 'held';
const STATES: readonly HandoverConnState[] = ['opening', 'open', 'held'];

export interface HandoverConn {
  id: number;
  local: boolean;
  openSent: boolean;
  state: HandoverConnState;
  wrapPort: number;
  target: Target;
  holdMs: number;
  /** How long it had been held already (0 if it was not). */
  heldMs: number;
  /** Index of its socket among the handed-over descriptors. */
  fd: number;
  /** Send stream: acknowledged offset, the bytes from there to its end, the FIN if the local end finished. */
  sendAcked: number;
  sendBytes: Uint8Array;
  sendFin: boolean;
  /** Receive stream: everything received was drained into the socket first; the peer's FIN and whether it was delivered. */
  received: number;
  recvFinAt: number | undefined;
  endDelivered: boolean;
  /**
   * A local connection's user, as the interception hooks recorded it (undefined: not known): it
   * keeps holding that user's slot in the next process (the reserve of §16.5.1, slotRefusal).
   */
  uid?: number;
}

export interface HandoverPeer {
  peer: string;
  peerBootId: bigint | undefined;
  nextId: number;
  conns: HandoverConn[];
  /**
   * Connections that completed shortly before (their FIN offsets): the peer may not have had
   * the last ACK when the carrier went, and its RESUME is answered with FIN and ACK (§16.5.6),
   * not with an unknown-connection reset of a connection whose every byte arrived.
   */
  completed?: { id: number; finOut: number; finIn: number }[];
}

export interface HandoverState {
  bootId: bigint;
  peers: HandoverPeer[];
}

export class HandoverError extends Error {
  constructor(
    readonly field: string,
    detail: string,
  ) {
    super(`handover state: ${field}: ${detail}`);
  }
}

const FLAG_LOCAL = 1;
const FLAG_OPEN_SENT = 2;
const FLAG_SEND_FIN = 4;
const FLAG_RECV_FIN = 8;
const FLAG_END_DELIVERED = 16;
/** Version 3: a u32 uid follows the send bytes. */
const FLAG_UID = 32;

export function encodeHandover(s: HandoverState): Uint8Array {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const head = new DataView(new ArrayBuffer(8 + 2 + 8 + 4));
  enc.encodeInto(HANDOVER_MAGIC, new Uint8Array(head.buffer, 0, 8));
  head.setUint16(8, HANDOVER_VERSION);
  head.setBigUint64(10, s.bootId);
  head.setUint32(18, s.peers.length);
  parts.push(new Uint8Array(head.buffer));
  for (const p of s.peers) {
    const name = enc.encode(p.peer);
    const v = new DataView(new ArrayBuffer(2 + name.length + 1 + 8 + 4 + 4));
    v.setUint16(0, name.length);
    new Uint8Array(v.buffer).set(name, 2);
    let o = 2 + name.length;
    v.setUint8(o, p.peerBootId === undefined ? 0 : 1);
    v.setBigUint64(o + 1, p.peerBootId ?? 0n);
    v.setUint32(o + 9, p.nextId >>> 0);
    v.setUint32(o + 13, p.conns.length);
    parts.push(new Uint8Array(v.buffer));
    for (const c of p.conns) {
      const addr = enc.encode(c.target.address);
      const w = new DataView(new ArrayBuffer(4 + 1 + 1 + 2 + 1 + 1 + addr.length + 2 + 4 + 4 + 4 + 8 + 8 + 8 + 4));
      o = 0;
      w.setUint32(o, c.id >>> 0);
      w.setUint8(
        o + 4,
        (c.local ? FLAG_LOCAL : 0) |
          (c.openSent ? FLAG_OPEN_SENT : 0) |
          (c.sendFin ? FLAG_SEND_FIN : 0) |
          (c.recvFinAt !== undefined ? FLAG_RECV_FIN : 0) |
          (c.endDelivered ? FLAG_END_DELIVERED : 0) |
          (c.uid !== undefined ? FLAG_UID : 0),
      );
      w.setUint8(o + 5, STATES.indexOf(c.state));
      w.setUint16(o + 6, c.wrapPort);
      w.setUint8(o + 8, c.target.family);
      w.setUint8(o + 9, addr.length);
      new Uint8Array(w.buffer).set(addr, 10);
      o = 10 + addr.length;
      w.setUint16(o, c.target.port);
      w.setUint32(o + 2, Math.min(0xffffffff, Math.round(c.holdMs)));
      w.setUint32(o + 6, Math.min(0xffffffff, Math.max(0, Math.round(c.heldMs))));
      w.setUint32(o + 10, c.fd);
      w.setBigUint64(o + 14, BigInt(c.sendAcked));
      w.setBigUint64(o + 22, BigInt(c.received));
      w.setBigUint64(o + 30, BigInt(c.recvFinAt ?? 0));
      w.setUint32(o + 38, c.sendBytes.length);
      parts.push(new Uint8Array(w.buffer), c.sendBytes);
      if (c.uid !== undefined) {
        const u = new DataView(new ArrayBuffer(4));
        u.setUint32(0, c.uid >>> 0);
        parts.push(new Uint8Array(u.buffer));
      }
    }
    const done = p.completed ?? [];
    const d = new DataView(new ArrayBuffer(4 + done.length * 20));
    d.setUint32(0, done.length);
    done.forEach((x, i) => {
      d.setUint32(4 + i * 20, x.id >>> 0);
      d.setBigUint64(8 + i * 20, BigInt(x.finOut));
      d.setBigUint64(16 + i * 20, BigInt(x.finIn));
    });
    parts.push(new Uint8Array(d.buffer));
  }
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A reader that names the field it could not read. */
class Reader {
  private at = 0;
  private readonly v: DataView;
  constructor(private readonly b: Uint8Array) {
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  private need(n: number, field: string): number {
    if (this.at + n > this.b.length)
      throw new HandoverError(field, `truncated at byte ${this.at} (${n} more needed, ${this.b.length - this.at} left)`);
    const at = this.at;
    this.at += n;
    return at;
  }
  u8(f: string): number {
    return this.v.getUint8(this.need(1, f));
  }
  u16(f: string): number {
    return this.v.getUint16(this.need(2, f));
  }
  u32(f: string): number {
    return this.v.getUint32(this.need(4, f));
  }
  u64(f: string): bigint {
    return this.v.getBigUint64(this.need(8, f));
  }
  bytes(n: number, f: string): Uint8Array {
    const at = this.need(n, f);
    return this.b.subarray(at, at + n);
  }
  get left(): number {
    return this.b.length - this.at;
  }
}

/**
 * Decode and check a handover state; throws HandoverError naming the field at fault.
 *
 * With `drop`, a fault confined to one entry costs that entry, not the state: a connection
 * (or a completed one) that does not check out is left out and reported to `drop`, as is a
 * peer whose own fields do not (with its connections: their descriptors are then closed by
 * the caller, and the peer resets them). The state is this process's own export, so such an
 * entry is a bug or a peer's input this spookd should have refused; every other peer's and
 * connection's part still goes on. What cannot be read past (a truncation, a count over its
 * bound, the magic, the version, trailing bytes) is still refused whole.
 */
export function decodeHandover(b: Uint8Array, drop?: (e: HandoverError) => void): HandoverState {
  const r = new Reader(b);
  const dec = new TextDecoder('utf-8', { fatal: true });
  /** The first fault of the entry being read; thrown at once without `drop`. */
  let bad: HandoverError | undefined;
  const fault = (field: string, detail: string): void => {
    if (!drop) throw new HandoverError(field, detail);
    bad ??= new HandoverError(field, detail);
  };
  const text = (n: number, f: string): string => {
    const bytes = r.bytes(n, f);
    try {
      return dec.decode(bytes);
    } catch {
      fault(f, 'not UTF-8');
      return '';
    }
  };
  /** A stream offset; beyond 2^53 a fault of the entry (read as 0 then). */
  const offset = (f: string): number => {
    const x = r.u64(f);
    if (x <= BigInt(MAX_OFFSET)) return Number(x);
    fault(f, `${x} beyond 2^53`);
    return 0;
  };
  if (r.bytes(8, 'magic').some((c, i) => c !== HANDOVER_MAGIC.charCodeAt(i))) throw new HandoverError('magic', `not ${HANDOVER_MAGIC}`);
  const version = r.u16('version');
  if (version < 1 || version > HANDOVER_VERSION)
    throw new HandoverError('version', `${version}, this spookd reads 1 to ${HANDOVER_VERSION}`);
  const bootId = r.u64('bootId');
  const npeers = r.u32('peers');
  if (npeers > HANDOVER_MAX_PEERS) throw new HandoverError('peers', `${npeers}, at most ${HANDOVER_MAX_PEERS}`);
  const peers: HandoverPeer[] = [];
  const names = new Set<string>();
  /** Descriptors of the connections taken (a dropped one's is closed by the caller, with the unnamed ones). */
  const fds = new Set<number>();
  for (let i = 0; i < npeers; i++) {
    const f = `peers[${i}]`;
    bad = undefined;
    const peer = text(r.u16(`${f}.name`), `${f}.name`);
    if (!peer || names.has(peer)) fault(`${f}.name`, peer ? `${peer} twice` : 'empty');
    const hasBoot = r.u8(`${f}.peerBootId`);
    if (hasBoot > 1) fault(`${f}.peerBootId`, `flag ${hasBoot}`);
    const pb = r.u64(`${f}.peerBootId`);
    const nextId = r.u32(`${f}.nextId`);
    const nconns = r.u32(`${f}.conns`);
    if (nconns > HANDOVER_MAX_CONNS) throw new HandoverError(`${f}.conns`, `${nconns}, at most ${HANDOVER_MAX_CONNS}`);
    /** The peer's own fields are at fault: its whole part is read past and dropped. */
    const peerBad = bad;
    const conns: HandoverConn[] = [];
    const peerFds = new Set<number>();
    const ids = new Set<number>();
    for (let j = 0; j < nconns; j++) {
      const g = `${f}.conns[${j}]`;
      bad = undefined;
      // Id 0 is never opened (§16.4); 1 is the first odd id after a wrap of the follower's ids.
      const id = r.u32(`${g}.id`);
      if (id === 0 || ids.has(id)) fault(`${g}.id`, id === 0 ? `${id} is reserved` : `${id} twice`);
      const flags = r.u8(`${g}.flags`);
      if (flags & ~(version >= 3 ? 63 : 31)) fault(`${g}.flags`, `unknown bits ${flags}`);
      const st = STATES[r.u8(`${g}.state`)];
      if (!st) fault(`${g}.state`, 'unknown');
      const wrapPort = r.u16(`${g}.wrapPort`);
      const family = r.u8(`${g}.target.family`);
      if (family !== 4 && family !== 6) fault(`${g}.target.family`, `${family}`);
      const address = text(r.u8(`${g}.target.address`), `${g}.target.address`);
      if (!address) fault(`${g}.target.address`, 'empty');
      const port = r.u16(`${g}.target.port`);
      if (port === 0 || wrapPort === 0) fault(port === 0 ? `${g}.target.port` : `${g}.wrapPort`, '0');
      const holdMs = r.u32(`${g}.holdMs`);
      const heldMs = r.u32(`${g}.heldMs`);
      const fd = r.u32(`${g}.fd`);
      if (fds.has(fd) || peerFds.has(fd)) fault(`${g}.fd`, `${fd} twice`);
      const sendAcked = offset(`${g}.sendAcked`);
      const received = offset(`${g}.received`);
      const finAt = offset(`${g}.recvFinAt`);
      const nbytes = r.u32(`${g}.sendBytes`);
      if (nbytes > HANDOVER_MAX_CONN_BYTES) fault(`${g}.sendBytes`, `${nbytes}, at most ${HANDOVER_MAX_CONN_BYTES}`);
      else if (sendAcked + nbytes > MAX_OFFSET) fault(`${g}.sendBytes`, 'the stream passes 2^53');
      const sendBytes = r.bytes(nbytes, `${g}.sendBytes`);
      // Only a version 3 state has the uid's octets: in an older one the flag is a fault (above),
      // and reading them anyway shifted every field after it (the whole state refused).
      const uid = version >= 3 && flags & FLAG_UID ? r.u32(`${g}.uid`) : undefined;
      const recvFinAt = flags & FLAG_RECV_FIN ? finAt : undefined;
      if (recvFinAt !== undefined && recvFinAt < received) fault(`${g}.recvFinAt`, `${recvFinAt} below received ${received}`);
      const endDelivered = (flags & FLAG_END_DELIVERED) !== 0;
      if (endDelivered && recvFinAt !== received) fault(`${g}.flags`, 'end delivered before the fin');
      if (peerBad) continue;
      if (bad) {
        drop!(bad);
        continue;
      }
      ids.add(id);
      peerFds.add(fd);
      conns.push({
        id,
        local: (flags & FLAG_LOCAL) !== 0,
        openSent: (flags & FLAG_OPEN_SENT) !== 0,
        state: st!,
        wrapPort,
        target: { family: family as 4 | 6, address, port },
        holdMs,
        heldMs,
        fd,
        sendAcked,
        sendBytes,
        sendFin: (flags & FLAG_SEND_FIN) !== 0,
        received,
        recvFinAt,
        endDelivered,
        ...(uid !== undefined ? { uid } : {}),
      });
    }
    const completed: { id: number; finOut: number; finIn: number }[] = [];
    const ndone = version >= 2 ? r.u32(`${f}.completed`) : 0;
    if (ndone > HANDOVER_MAX_COMPLETED) throw new HandoverError(`${f}.completed`, `${ndone}, at most ${HANDOVER_MAX_COMPLETED}`);
    for (let j = 0; j < ndone; j++) {
      const g = `${f}.completed[${j}]`;
      bad = undefined;
      const id = r.u32(`${g}.id`);
      if (id === 0 || ids.has(id)) fault(`${g}.id`, id === 0 ? `${id} is reserved` : `${id} twice`);
      const finOut = offset(`${g}.finOut`);
      const finIn = offset(`${g}.finIn`);
      if (peerBad) continue;
      if (bad) {
        drop!(bad);
        continue;
      }
      ids.add(id);
      completed.push({ id, finOut, finIn });
    }
    if (peerBad) {
      drop!(peerBad);
      continue;
    }
    names.add(peer);
    for (const fd of peerFds) fds.add(fd);
    peers.push({ peer, peerBootId: hasBoot ? pb : undefined, nextId, conns, completed });
  }
  if (r.left !== 0) throw new HandoverError('end', `${r.left} trailing bytes`);
  return { bootId, peers };
}

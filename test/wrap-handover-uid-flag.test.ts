/**
 * The uid flag of a handed-over connection (core/wrap/handover.ts, version 3): only a version 3
 * state carries the uid's 4 octets. A version 2 state whose connection has the flag set (a
 * corrupt one) loses that connection, not the rest: before, the reader took the next 4 octets
 * as a uid anyway, and read every field after it shifted.
 */
import { describe, expect, it } from 'vitest';
import { decodeHandover, encodeHandover, type HandoverError, type HandoverConn, type HandoverState } from '../core/wrap/handover.js';

const conn = (id: number, fd: number): HandoverConn => ({
  id,
  local: true,
  openSent: true,
  state: 'open',
  wrapPort: 22,
  target: { family: 4, address: '10.0.0.2', port: 22 },
  holdMs: 30_000,
  heldMs: 0,
  fd,
  sendAcked: 10,
  sendBytes: new Uint8Array([1, 2, 3]),
  sendFin: false,
  received: 5,
  recvFinAt: undefined,
  endDelivered: false,
});

describe('a handover state whose connection has the uid flag (core/wrap/handover.ts decodeHandover)', () => {
  it('a version 2 state with the flag loses that connection and reads the rest', () => {
    const state: HandoverState = {
      bootId: 1n,
      peers: [{ peer: 'beta', peerBootId: 7n, nextId: 10, conns: [conn(2, 0), conn(4, 1)], completed: [] }],
    };
    const plain = encodeHandover(state);
    // The first connection's flags: the first octet where a state with its uid differs.
    const withUid = encodeHandover({ ...state, peers: [{ ...state.peers[0], conns: [{ ...conn(2, 0), uid: 1000 }, conn(4, 1)] }] });
    const at = plain.findIndex((b, i) => b !== withUid[i]);
    expect(withUid[at] & 32).toBe(32);
    const v2 = Uint8Array.from(plain);
    new DataView(v2.buffer).setUint16(8, 2);
    expect(decodeHandover(v2)).toEqual(state); // as written, a version 2 state reads whole
    v2[at] |= 32;
    const drops: HandoverError[] = [];
    let decoded: HandoverState | string;
    try {
      decoded = decodeHandover(v2, (e) => drops.push(e));
    } catch (e) {
      decoded = (e as Error).message;
    }
    console.log(
      `version 2, flag 32 on the first connection: ${typeof decoded === 'string' ? decoded : 'read'}; dropped ${drops.map((d) => d.field).join(', ')}`,
    );
    expect(decoded).toEqual({ ...state, peers: [{ ...state.peers[0], conns: [conn(4, 1)] }] });
    expect(drops.map((d) => d.field)).toEqual(['peers[0].conns[0].flags']);
  });
});

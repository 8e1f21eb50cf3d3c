/**
 * UDP flows on stream registers (PROTOCOL §16.10): a wrapped UDP flow (CoAP) is a connection
 * like any other, whose two streams carry datagrams, each as a u16 big-endian length and its
 * bytes. The streams give the datagrams order, resumption and the window; a datagram that
 * does not fit the window is dropped (UDP's own contract), never queued without bound.
 */

/** Largest UDP payload over IPv4. */
export const MAX_DATAGRAM = 65_507;
/** A flow that carried nothing for this long is ended (UDP has no FIN of its own). */
export const UDP_IDLE_MS = 60_000;

/** Why a datagram from a flow's local end was dropped (counted per reason by the wrappers). */
export type FlowDrop = 'too-big' | 'flow-ended' | 'window-full';

export function frameDatagram(d: Uint8Array): Uint8Array {
  if (d.length > MAX_DATAGRAM) throw new RangeError(`datagram of ${d.length} bytes, at most ${MAX_DATAGRAM}`);
  const out = new Uint8Array(2 + d.length);
  out[0] = d.length >> 8;
  out[1] = d.length & 0xff;
  out.set(d, 2);
  return out;
}

/** Datagrams back out of the bytes of a stream (which may split them anywhere). */
export class DatagramDeframer {
  private buf: Buffer = Buffer.alloc(0);

  push(bytes: Uint8Array, out: (d: Buffer) => void): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, bytes]) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let off = 0;
    while (this.buf.length - off >= 2) {
      const len = this.buf.readUInt16BE(off);
      if (this.buf.length - off - 2 < len) break;
      out(this.buf.subarray(off + 2, off + 2 + len));
      off += 2 + len;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }
}

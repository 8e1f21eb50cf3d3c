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

/**
 * Datagrams back out of the bytes of a stream (which may split them anywhere). A datagram that
 * arrives whole in one push is handed out uncopied; one split over several is copied into one
 * buffer of its length, allocated when its first piece comes: linear in the octets and in
 * memory, however finely the peer splits them (copying the partial datagram on every push made a
 * 65,535-octet datagram sent one octet per record cost 2 GiB of copying; keeping a view per
 * piece held ~208 octets of memory per octet). A partial datagram holds at most 65,535 octets.
 */
export class DatagramDeframer {
  /** The current datagram's length once its prefix is in (else -1), and the prefix's first octet if split (else -1). */
  private need = -1;
  private head = -1;
  /** The current datagram, filled so far up to `have`. */
  private part: Buffer | undefined;
  private have = 0;

  /** Octets of a partial datagram (its prefix included) waiting for the rest. */
  get held(): number {
    return this.have + (this.need >= 0 ? 2 : this.head >= 0 ? 1 : 0);
  }

  push(bytes: Uint8Array, out: (d: Buffer) => void): void {
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let off = 0;
    for (;;) {
      if (this.need < 0) {
        if (off >= b.length) return;
        if (this.head >= 0) {
          this.need = (this.head << 8) | b[off++];
          this.head = -1;
        } else if (b.length - off >= 2) {
          this.need = b.readUInt16BE(off);
          off += 2;
        } else {
          this.head = b[off];
          return;
        }
      }
      const take = Math.min(this.need - this.have, b.length - off);
      let d: Buffer;
      if (this.have === 0 && take === this.need) d = b.subarray(off, off + take);
      else {
        this.part ??= Buffer.allocUnsafe(this.need);
        b.copy(this.part, this.have, off, off + take);
        this.have += take;
        if (this.have < this.need) return;
        d = this.part;
        this.part = undefined;
        this.have = 0;
      }
      off += take;
      this.need = -1;
      out(d);
    }
  }
}

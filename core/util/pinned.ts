/**
 * Views that keep far more memory alive than they count. A view of a socket read keeps the
 * read's whole ArrayBuffer alive (Node gives each read one of its own, the read's size): where a
 * quota counts only the view's octets, a peer that has us keep small views of large reads holds
 * memory no quota sees (a 1-octet record in a 64 KiB read kept the 64 KiB; review, 2026-12-07).
 * A record that fills most of its datagram is kept as a view of it (the datagram is handed over to
 * the core, which owns it from then on): no second allocation per record on the apply path.
 */

/** Whether `v`, with `slack` octets of framing counted as its own, is at least half of the ArrayBuffer it keeps alive. */
export function pinsLittle(v: Uint8Array, slack = 0): boolean {
  return 2 * (v.length + slack) >= v.buffer.byteLength;
}

/** `v` itself when it pins little, else a copy in an ArrayBuffer of its own (never a slice of a shared pool). */
export function unpinned(v: Uint8Array, slack = 0): Uint8Array {
  if (pinsLittle(v, slack)) return v;
  const c = new Uint8Array(v.length);
  c.set(v);
  return c;
}

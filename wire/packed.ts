/**
 * Collapse entries read in place (docs/PROTOCOL.md §3.6, the Collapse body): when every entry
 * of a record is a committed short set (delta.ts shortSetAt) or a rejection, the decoder checks
 * them without building anything and the follower applies them from the datagram's bytes, one
 * cursor per record instead of an entry object, a delta object and two views per entry. The
 * bytes and their meaning are the Collapse message's; only the in-memory form differs.
 */
import { Reader } from './buffer.js';
import { shortSet, shortSetAt } from './delta.js';

/** A record's entries, checked, as bytes: buf[start, end) holds `count` entries. */
export interface PackedEntries {
  readonly buf: Uint8Array;
  readonly start: number;
  readonly end: number;
  readonly count: number;
}

/**
 * Whether the `n` entries at r.pos are all committed short sets or rejections (verdict 1 to
 * `maxReason`); if so r moves past them, else it is left where it was (the general reader takes
 * them). A fault the general reader would report at the same entry is thrown the same way.
 */
export function scanPacked(r: Reader, n: number, maxReason: number): boolean {
  const start = r.pos;
  for (let i = 0; i < n; i++) {
    r.varintAt('collapse', i, '.origin');
    r.varintAt('collapse', i, '.seq');
    const verdict = r.u8At('collapse', i, '.verdict');
    if (verdict === 0) {
      const e = shortSetAt(r.buf, r.pos, r.end);
      if (e < 0) {
        r.pos = start;
        return false;
      }
      r.pos = e;
    } else if (verdict > maxReason) {
      r.pos = start;
      return false;
    }
  }
  return true;
}

/** Walks the entries of a PackedEntries (checked by scanPacked): one entry's fields per next(). */
export class PackedCursor {
  origin = 0;
  seq = 0;
  /** 0 committed (the set's key and value at buf[koff, koff + klen) and buf[voff, voff + vlen)), else the RejectReason. */
  verdict = 0;
  koff = 0;
  klen = 0;
  voff = 0;
  vlen = 0;
  readonly buf: Uint8Array;
  private readonly r: Reader;
  private left: number;

  constructor(p: PackedEntries) {
    this.buf = p.buf;
    this.r = new Reader(p.buf, p.start, p.end);
    this.left = p.count;
  }

  next(): boolean {
    if (this.left === 0) return false;
    this.left--;
    const r = this.r;
    this.origin = r.varintAt('collapse', 0, '.origin');
    this.seq = r.varintAt('collapse', 0, '.seq');
    this.verdict = r.u8At('collapse', 0, '.verdict');
    if (this.verdict === 0) {
      r.pos = shortSetAt(r.buf, r.pos, r.end);
      this.koff = shortSet.koff;
      this.klen = shortSet.klen;
      this.voff = shortSet.voff;
      this.vlen = shortSet.vlen;
    }
    return true;
  }
}

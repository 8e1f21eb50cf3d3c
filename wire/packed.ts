/**
 * Collapse entries read in place (docs/PROTOCOL.md §3.6, the Collapse body): when every entry
 * of a record is a committed short set (delta.ts shortSetAt) or a rejection, the decoder checks
 * them without building anything and the follower applies them from the datagram's bytes, one
 * cursor per record instead of an entry object, a delta object and two views per entry. The
 * bytes and their meaning are the Collapse message's; only the in-memory form differs.
 */
import { varintLen, type Reader } from './buffer.js';
import { shortSet, shortSetAt } from './delta.js';

/** A record's entries, checked, as bytes: buf[start, end) holds `count` entries. */
export interface PackedEntries {
  readonly buf: Uint8Array;
  readonly start: number;
  readonly end: number;
  readonly count: number;
  /** Committed sets, the octets they would add as new keys at the record's version (a quota's bound), and the largest value. */
  readonly sets: number;
  readonly growth: number;
  readonly maxValue: number;
  /** The first two origins the entries name (-1: none), and whether they name a third (a pair has two ends: §7.4). */
  readonly origin1: number;
  readonly origin2: number;
  readonly moreOrigins: boolean;
}

/**
 * The `n` entries at r.pos of a record at `version`, if they are all committed short sets or
 * rejections (verdict 1 to `maxReason`): r moves past them. Else undefined, r left where it was
 * (the general reader takes them). A fault the general reader would report at the same entry is
 * thrown the same way.
 */
export function scanPacked(r: Reader, n: number, maxReason: number, version: number): PackedEntries | undefined {
  const start = r.pos;
  const vl = varintLen(version);
  let sets = 0;
  let growth = 0;
  let maxValue = 0;
  let o1 = -1;
  let o2 = -1;
  let more = false;
  for (let i = 0; i < n; i++) {
    const o = r.varintAt('collapse', i, '.origin');
    if (o !== o1 && o !== o2) {
      if (o1 < 0) o1 = o;
      else if (o2 < 0) o2 = o;
      else more = true;
    }
    r.varintAt('collapse', i, '.seq');
    const verdict = r.u8At('collapse', i, '.verdict');
    if (verdict === 0) {
      const e = shortSetAt(r.buf, r.pos, r.end);
      if (e < 0) {
        r.pos = start;
        return undefined;
      }
      r.pos = e;
      const { klen, vlen } = shortSet;
      sets++;
      // entryWireLen: varint key length, key, varint version, varint value length, value.
      growth += varintLen(klen) + klen + vl + varintLen(vlen) + vlen;
      if (vlen > maxValue) maxValue = vlen;
    } else if (verdict > maxReason) {
      r.pos = start;
      return undefined;
    }
  }
  return { buf: r.buf, start, end: r.pos, count: n, sets, growth, maxValue, origin1: o1, origin2: o2, moreOrigins: more };
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
  private pos: number;
  private left: number;

  constructor(p: PackedEntries) {
    this.buf = p.buf;
    this.pos = p.start;
    this.left = p.count;
  }

  /** A varint scanPacked has checked (minimal, at most 2^53 - 1). */
  private varint(): number {
    const b = this.buf;
    let byte = b[this.pos++];
    if (byte < 0x80) return byte;
    // Up to four bytes in int32 arithmetic (origins and seqs below 2^28), the rest in doubles.
    let v = byte & 0x7f;
    for (let shift = 7; shift < 28; shift += 7) {
      byte = b[this.pos++];
      v |= (byte & 0x7f) << shift;
      if (byte < 0x80) return v;
    }
    let mul = 2 ** 28;
    do {
      byte = b[this.pos++];
      v += (byte & 0x7f) * mul;
      mul *= 128;
    } while (byte & 0x80);
    return v;
  }

  next(): boolean {
    if (this.left === 0) return false;
    this.left--;
    this.origin = this.varint();
    this.seq = this.varint();
    this.verdict = this.buf[this.pos++];
    if (this.verdict === 0) {
      this.pos = shortSetAt(this.buf, this.pos, this.buf.length);
      this.koff = shortSet.koff;
      this.klen = shortSet.klen;
      this.voff = shortSet.voff;
      this.vlen = shortSet.vlen;
    }
    return true;
  }
}

/** Register names on the wire (docs/PROTOCOL.md §3.3): `varint length` || UTF-8, 1..MAX_REGISTER_NAME_LEN octets. */
import { DropReason, MAX_REGISTER_NAME_LEN } from './constants.js';
import { Writer, type Reader } from './buffer.js';
import { WireError } from './errors.js';

const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of the name, so every decoder maps bytes to names the same way.
const utf8d = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Octets of a name's UTF-8 encoding (without its length varint). */
export const nameBytes = (name: string): number => utf8.encode(name).length;

/**
 * Encoded names (length varint and UTF-8), by name: a pair's few register names are written
 * into every message. Bounded: cleared when full (names are the host's own, but cheap to redo).
 */
const encoded = new Map<string, Uint8Array>();
const MAX_CACHED = 256;

export function writeName(w: Writer, name: string): void {
  let e = encoded.get(name);
  if (e === undefined) {
    const b = utf8.encode(name);
    if (b.length === 0 || b.length > MAX_REGISTER_NAME_LEN)
      throw new RangeError(`register name must be 1..${MAX_REGISTER_NAME_LEN} bytes, got ${b.length}`);
    e = new Writer(b.length + 2).lenBytes(b).finish();
    if (encoded.size >= MAX_CACHED) encoded.clear();
    encoded.set(name, e);
  }
  w.bytes(e);
}

/** The last name decoded, as bytes and string: consecutive messages mostly name the same register. */
let lastBytes = new Uint8Array(0);
let lastName = '';

export function readName(r: Reader, field = 'register'): string {
  const n = r.varint(field === 'register' ? 'register.length' : `${field}.length`);
  if (n > MAX_REGISTER_NAME_LEN)
    throw new WireError(DropReason.MalformedPayload, field, `length ${n} exceeds limit ${MAX_REGISTER_NAME_LEN}`);
  if (n === lastBytes.length && n <= r.remaining) {
    const buf = r.buf;
    const p = r.pos;
    let j = 0;
    while (j < n && buf[p + j] === lastBytes[j]) j++;
    if (j === n && n > 0) {
      r.pos += n;
      return lastName; // the same octets decoded (and validated) last time
    }
  }
  const b = r.bytes(n, field);
  if (b.length === 0) throw new WireError(DropReason.MalformedPayload, field, 'empty register name');
  let name: string;
  try {
    name = utf8d.decode(b);
  } catch {
    throw new WireError(DropReason.MalformedPayload, field, 'name is not valid UTF-8');
  }
  lastBytes = b.slice();
  lastName = name;
  return name;
}

/** Register names on the wire (docs/PROTOCOL.md §3.3): `varint length` || UTF-8, 1..MAX_REGISTER_NAME_LEN octets. */
import { DropReason, MAX_REGISTER_NAME_LEN } from './constants.js';
import type { Reader, Writer } from './buffer.js';
import { WireError } from './errors.js';

const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is part of the name, so every decoder maps bytes to names the same way.
const utf8d = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Octets of a name's UTF-8 encoding (without its length varint). */
export const nameBytes = (name: string): number => utf8.encode(name).length;

export function writeName(w: Writer, name: string): void {
  const b = utf8.encode(name);
  if (b.length === 0 || b.length > MAX_REGISTER_NAME_LEN)
    throw new RangeError(`register name must be 1..${MAX_REGISTER_NAME_LEN} bytes, got ${b.length}`);
  w.lenBytes(b);
}

export function readName(r: Reader, field = 'register'): string {
  const b = r.lenBytes(field, MAX_REGISTER_NAME_LEN);
  if (b.length === 0) throw new WireError(DropReason.MalformedPayload, field, 'empty register name');
  try {
    return utf8d.decode(b);
  } catch {
    throw new WireError(DropReason.MalformedPayload, field, 'name is not valid UTF-8');
  }
}

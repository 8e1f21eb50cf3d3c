/**
 * Codecs for register values: spookd stores and replicates bytes; an application that keeps
 * structured values encodes them on write and decodes them on read. `json` is UTF-8 JSON:
 *
 *   await handle.set('limits', json.encode({ rps: 100 }));
 *   const v = await handle.get('limits');
 *   if (v.found) console.log(json.decode<{ rps: number }>(v.bytes!).rps);
 *
 * Both ends of a pair see the same bytes, so the same value; key order is the encoder's
 * (JSON.stringify's insertion order), which matters only to `cas` users comparing bytes.
 */

/** A value type's encoding as bytes and back. `decode` throws on bytes that are not an encoding. */
export interface Codec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 JSON. `decode<T>` trusts the bytes to hold a T (validate what other writers may have put there). */
export const json = {
  encode(value: unknown): Uint8Array {
    const s = JSON.stringify(value);
    if (s === undefined) throw new TypeError(`json.encode: a ${typeof value} has no JSON form`);
    return utf8.encode(s);
  },
  decode<T = unknown>(bytes: Uint8Array): T {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('json.decode: expects the value as bytes (RegisterValue.bytes)');
    let text: string;
    try {
      text = utf8d.decode(bytes);
    } catch {
      throw new TypeError(`json.decode: ${bytes.length} bytes that are not UTF-8`);
    }
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new SyntaxError(`json.decode: not JSON (${(e as Error).message})`);
    }
  },
} satisfies Codec<unknown> & { decode<T = unknown>(bytes: Uint8Array): T };

/** Bytes between the library and the admin protocol: text when given as text, base64 otherwise (client/protocol.ts `Bytes`). */
import type { ShownBytes } from './protocol.js';
import { SpookError } from './admin-client.js';

export type BytesArg<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };

/**
 * A map key as every call takes it: text (its UTF-8 bytes) or the bytes themselves. A key read from a
 * scan or a watch goes back as its `keyBytes`: its `key` (base64 when it is not UTF-8) may be another key's text.
 */
export type KeyInput = string | Uint8Array;

/** `{name: text}` for a string, `{nameBase64: …}` for bytes; anything else (from JavaScript) `bad-argument`, naming it. */
export const bytesArg = <N extends string>(name: N, v: string | Uint8Array): BytesArg<N> => {
  if (typeof v === 'string') return { [name]: v } as BytesArg<N>;
  // ArrayBuffer.isView: a Uint8Array of another realm (or a Buffer) too; a number or object from JavaScript is refused.
  if (!ArrayBuffer.isView(v)) throw new SpookError('bad-argument', `${name} must be a string or a Uint8Array`, name);
  return { [`${name}Base64`]: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') } as BytesArg<N>;
};

/** The bytes of a value as spookd shows it (base64 always, text when UTF-8). */
export const shownBytes = (v: ShownBytes): Uint8Array => new Uint8Array(Buffer.from(v.base64, 'base64'));

/** ignoreBOM keeps a leading U+FEFF in the text: dropped, a key "\uFEFFk" read as "k" (another key) and a value lost it. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The bytes as text when they are valid UTF-8: exactly them. Made here, not taken from spookd's
 * `text`, which it gives only for printable text (for terminals): a key with a control character
 * came as base64 (a get of that `key` read another key), and `get().value` of such a value was
 * undefined while a scan gave it (LIBRARY.md: text whenever it is UTF-8).
 */
export function textOf(b: Uint8Array): string | undefined {
  try {
    return UTF8.decode(b);
  } catch {
    return undefined;
  }
}

/**
 * A key as the library names it (`key` of a scan entry or a change): its text when UTF-8, else its base64,
 * which can be another key's text (69 b7 1d is named "abcd"). Only `keyBytes` tells keys apart.
 */
export const keyName = (key: Uint8Array): string => textOf(key) ?? Buffer.from(key).toString('base64');

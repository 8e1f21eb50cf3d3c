/** Bytes between the library and the admin protocol: text when given as text, base64 otherwise (client/protocol.ts `Bytes`). */
import type { ShownBytes } from './protocol.js';

export type BytesArg<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };

/** `{name: text}` for a string, `{nameBase64: …}` for bytes. */
export const bytesArg = <N extends string>(name: N, v: string | Uint8Array): BytesArg<N> =>
  (typeof v === 'string' ? { [name]: v } : { [`${name}Base64`]: Buffer.from(v).toString('base64') }) as BytesArg<N>;

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

/** A key as the library names it: its text when UTF-8, else its base64. */
export const keyName = (key: Uint8Array): string => textOf(key) ?? Buffer.from(key).toString('base64');

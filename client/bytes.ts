/** Bytes between the library and the admin protocol: text when given as text, base64 otherwise (client/protocol.ts `Bytes`). */
import type { ShownBytes } from './protocol.js';

export type BytesArg<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };

/** `{name: text}` for a string, `{nameBase64: …}` for bytes. */
export const bytesArg = <N extends string>(name: N, v: string | Uint8Array): BytesArg<N> =>
  (typeof v === 'string' ? { [name]: v } : { [`${name}Base64`]: Buffer.from(v).toString('base64') }) as BytesArg<N>;

/** The bytes of a value as spookd shows it (base64 always, text when UTF-8). */
export const shownBytes = (v: ShownBytes): Uint8Array => new Uint8Array(Buffer.from(v.base64, 'base64'));

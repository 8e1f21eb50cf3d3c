/** Arguments of admin API requests: checked, with errors that name the argument; the error every command throws. */
import type { AdminErrorCode } from '../../client/protocol.js';

/** A request's arguments as they arrive: only the names of the command's arguments (client/protocol.ts), any values. */
export type Untrusted<A> = { readonly [K in keyof A]?: unknown };
export type Args = Record<string, unknown>;

/** What a command fails with: a stable code (client/protocol.ts), a message for people, the argument at fault. */
export class AdminFault extends Error {
  constructor(
    readonly code: AdminErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'AdminFault';
  }
}

const badArg = (k: string, must: string): AdminFault => new AdminFault('bad-argument', `argument ${k} must be ${must}`, k);

/** The longest a request may wait for an outcome. */
export const MAX_WAIT_MS = 600_000;

/** An integer argument in [min, max] (or its default when absent; no default: required), else an error naming it. */
export function num<A extends object>(args: A, k: keyof A & string, dflt: number | undefined, min: number, max: number): number {
  const a = args as Args;
  const v = a[k] === undefined ? dflt : Number(a[k]);
  if (v === undefined || !Number.isSafeInteger(v) || v < min || v > max) throw badArg(k, `an integer in [${min}, ${max}]`);
  return v;
}

export function str<A extends object>(args: A, k: keyof A & string): string;
export function str<A extends object>(args: A, k: keyof A & string, required: false): string | undefined;
export function str<A extends object>(args: A, k: keyof A & string, required = true): string | undefined {
  const v = (args as Args)[k];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw badArg(k, 'a string');
  return v;
}

/** Bytes given as `k` (UTF-8 text) or `kBase64`. */
export function bytesArg<A extends object>(args: A, k: keyof A & string): Uint8Array {
  const a = args as Args;
  const b64 = `${k}Base64`;
  return a[b64] !== undefined ? Buffer.from(str(a, b64), 'base64') : Buffer.from(str(a, k as string), 'utf8');
}

/** A `true`/`false` argument (absent: false). */
export function bool<A extends object>(args: A, k: keyof A & string): boolean {
  const v = (args as Args)[k];
  if (v !== undefined && typeof v !== 'boolean') throw badArg(k, 'true or false');
  return v === true;
}

/** Values travel as base64 (bytes are bytes); `text` is added when they are printable UTF-8. */
export function showBytes(b: Uint8Array): { base64: string; text?: string } {
  const base64 = Buffer.from(b).toString('base64');
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(b);
    // eslint-disable-next-line no-control-regex
    return /^[^\x00-\x08\x0e-\x1f\x7f]*$/.test(text) ? { base64, text } : { base64 };
  } catch {
    return { base64 };
  }
}

/**
 * A daemon call whose only failure is a refusal of one kind (a peer, domain or register not there;
 * a wrapper change that conflicts): that failure as `code`, with the daemon's message.
 */
export function failsAs<T>(code: AdminErrorCode, field: string | undefined, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof AdminFault) throw e;
    throw new AdminFault(code, (e as Error).message, field);
  }
}

/** Inside a list (`ops[2]`): the same fault, its field prefixed with where in the list. */
export function within<T>(at: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof AdminFault && e.field !== undefined) throw new AdminFault(e.code, e.message, `${at}.${e.field}`);
    throw e;
  }
}

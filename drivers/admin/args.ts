/** Arguments of admin API requests: checked, with errors that name the argument. */
export type Args = Record<string, unknown>;

/** The longest a request may wait for an outcome. */
export const MAX_WAIT_MS = 600_000;

/** An integer argument in [min, max] (or its default when absent; no default: required), else an error naming it. */
export function num(args: Args, k: string, dflt: number | undefined, min: number, max: number): number {
  const v = args[k] === undefined ? dflt : Number(args[k]);
  if (v === undefined || !Number.isSafeInteger(v) || v < min || v > max)
    throw new Error(`argument ${k} must be an integer in [${min}, ${max}]`);
  return v;
}

export function str(args: Args, k: string, required = true): string | undefined {
  const v = args[k];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw new Error(`argument ${k} must be a string`);
  return v;
}

/** Bytes given as `k` (UTF-8 text) or `kBase64`. */
export function bytesArg(args: Args, k: string): Uint8Array {
  return args[`${k}Base64`] !== undefined ? Buffer.from(str(args, `${k}Base64`)!, 'base64') : Buffer.from(str(args, k)!, 'utf8');
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

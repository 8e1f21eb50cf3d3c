/** Option and argument parsers that name the option and the bad value (a usage error: exit 2). */
import { InvalidArgumentError } from 'commander';

export function intArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(
        `${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`}, got "${v}"`,
      );
    return n;
  };
}

export const portArg = (name = 'port') => intArg(name, 1, 65535);

/** `--key-base64`: the key argument is the key's bytes in base64 (a key that is not UTF-8, as `get` and `watch` print it). */
export const keyBase64Opt = <C extends { option(flags: string, description: string, defaultValue?: boolean): C }>(c: C): C =>
  c.option('--key-base64', 'the key argument is base64: the bytes of a key that is not UTF-8 (printed base64:…)', false);

/** A key argument as the admin API takes it: text, or with `--key-base64` its bytes (spookd refuses base64 that is not, naming the field). */
export const keyOf = (key: string, base64: boolean | undefined): { key: string } | { keyBase64: string } =>
  base64 ? { keyBase64: key } : { key };

export function probArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`${name} must be a probability in [0, 1], got "${v}"`);
    return n;
  };
}

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** A duration as everywhere in Spook: `500ms`, `30s`, `2m`, `1h` (a bare integer is milliseconds). In ms. */
export function parseDuration(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[(m[2] ?? 'ms') as keyof typeof UNIT_MS];
  return Number.isSafeInteger(Math.round(ms)) ? Math.round(ms) : undefined;
}

export function durationArg(name: string, maxMs = 600_000) {
  return (v: string): number => {
    const ms = parseDuration(v);
    if (ms === undefined || ms > maxMs)
      throw new InvalidArgumentError(`${name} must be a duration such as 500ms, 30s or 2m (at most ${maxMs / 1000}s), got "${v}"`);
    return ms;
  };
}

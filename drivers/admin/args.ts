/**
 * Arguments of admin API requests: the names each command takes (ADMIN_ARGUMENTS), checked values with
 * errors that name the argument, the error every command throws, and how an error quotes what a client sent.
 */
import type { AdminArgs, AdminCommand, AdminErrorCode, AdminStream, AdminStreams } from '../../client/protocol.js';

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

/** The arguments of a command or stream, as client/protocol.ts types them. */
type ArgsOf<C extends AdminCommand | AdminStream> = C extends AdminCommand
  ? AdminArgs<C>
  : C extends AdminStream
    ? AdminStreams[C]['args']
    : never;
/** Their names (`Record<string, never>`, a command without arguments: none). */
type NamesOf<A> = string extends keyof A ? never : Extract<keyof A, string>;

/**
 * The argument names of every command and stream: the names the types of client/protocol.ts give
 * (the compiler checks both ways: each listed name is one of the command's, each of the command's is
 * listed), and the names docs/ADMIN-API.md shows (a test checks the doc against this table). A request
 * whose `args` has any other field is refused (`bad-request`, `field` naming it) before anything is
 * kept of it: unknown fields are not carried along, whatever their size.
 */
export const ADMIN_ARGUMENTS = {
  status: [],
  pairs: [],
  pair: ['peer'],
  registers: [],
  xdp: [],
  get: ['peer', 'register', 'key', 'keyBase64', 'offset', 'length'],
  set: ['peer', 'register', 'timeoutMs', 'key', 'keyBase64', 'value', 'valueBase64'],
  del: ['peer', 'register', 'timeoutMs', 'key', 'keyBase64'],
  cas: ['peer', 'register', 'timeoutMs', 'expect', 'key', 'keyBase64', 'value', 'valueBase64'],
  append: ['peer', 'register', 'timeoutMs', 'offset', 'data', 'dataBase64'],
  outcome: ['peer', 'register', 'seq', 'pair'],
  watch: ['peer', 'register'],
  events: ['peer'],
  domains: [],
  domain: ['domain'],
  groups: [],
  group: ['group', 'domain'],
  dget: ['domain', 'register', 'offset', 'length', 'key', 'keyBase64'],
  dpropose: ['domain', 'ops', 'timeoutMs'],
  doutcome: ['domain', 'seq'],
  member: ['domain', 'add', 'remove'],
  wraps: [],
  'wrap-add': ['protocol', 'port', 'peer', 'hold', 'delta', 'whenDown', 'connectTimeout'],
  'wrap-remove': ['port', 'transport'],
  'wrap-stats': [],
  'wrap-conns': [],
  'wrap-policy': [],
  scan: ['peer', 'register', 'limit', 'version', 'cursor', 'cursorTtlMs', 'prefix', 'prefixBase64', 'after', 'afterBase64'],
  size: ['peer', 'register'],
  dscan: ['domain', 'register', 'limit', 'version', 'cursor', 'cursorTtlMs', 'prefix', 'prefixBase64', 'after', 'afterBase64'],
  dsize: ['domain', 'register'],
  feed: ['peer', 'register', 'fromVersion', 'maxBufferBytes', 'maxBufferEvents', 'prefix', 'prefixBase64'],
  dfeed: ['domain', 'register', 'fromVersion', 'maxBufferBytes', 'maxBufferEvents', 'prefix', 'prefixBase64'],
  txn: ['peer', 'register', 'timeoutMs', 'ops'],
  reload: [],
} as const satisfies { readonly [C in AdminCommand | AdminStream]: readonly NamesOf<ArgsOf<C>>[] };

/** The names of a command's arguments that ADMIN_ARGUMENTS lacks, of every command (never: none lacks one). */
type Unlisted = {
  [C in AdminCommand | AdminStream]: Exclude<NamesOf<ArgsOf<C>>, (typeof ADMIN_ARGUMENTS)[C][number]>;
}[AdminCommand | AdminStream];
/** Compiles only when ADMIN_ARGUMENTS lists every argument of every command. */
export type AllArgumentsListed = Listed<Unlisted>;
type Listed<Missing extends never> = Missing;

/** The arguments of `cmd` as a set, for the server's check. */
const ARGUMENT_SETS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries(ADMIN_ARGUMENTS).map(([c, names]) => [c, new Set<string>(names)]),
);

/**
 * The first field of `args` that `cmd` does not define, or undefined; `cmd` is a command or stream.
 * Stops at the first: a request of a million unknown fields costs one look.
 */
export function unknownArgument(cmd: AdminCommand | AdminStream, args: object): string | undefined {
  const known = ARGUMENT_SETS.get(cmd);
  for (const k in args) if (Object.hasOwn(args, k) && !known?.has(k)) return k;
  return undefined;
}

/** The most characters of a client's text an error quotes (`echo`). */
export const ECHO_MAX = 64;

/** `s` cut to `max` characters, a cut marked with `…`. */
export const clip = (s: string, max = ECHO_MAX): string => (s.length <= max ? s : `${s.slice(0, max)}…`);

/**
 * Text a client sent, as an error message quotes it: as JSON, at most ECHO_MAX of its characters; a
 * longer one cut and said so, with its length. An error never grows with what was sent.
 */
export function echo(s: string): string {
  return s.length <= ECHO_MAX ? JSON.stringify(s) : `${JSON.stringify(s.slice(0, ECHO_MAX))}… (truncated: ${s.length} characters)`;
}

/** A daemon's `message` that names the client's `text` (as is or as JSON): with it as echo() quotes it. */
export function echoIn(message: string, text: string | undefined): string {
  if (text === undefined || text.length <= ECHO_MAX) return message;
  const short = echo(text);
  return message.split(JSON.stringify(text)).join(short).split(text).join(short);
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

/** A lone surrogate (a UTF-16 half with no partner): with the u flag a whole pair is one code point, never Cs. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The UTF-8 bytes of text argument `k`. Text with a lone surrogate (a string cut inside a pair) has
 * none: Buffer.from made each one U+FFFD, so the keys "x\uD800" and "x\uDC00" were one key (a write
 * to one overwrote the other). Refused instead; bytes that are no text go as `kBase64`.
 */
export function textBytes<A extends object>(args: A, k: keyof A & string): Uint8Array {
  const s = str(args, k);
  if (LONE_SURROGATE.test(s))
    throw new AdminFault('bad-argument', `argument ${k} is not well-formed Unicode (a lone surrogate); send bytes as ${k}Base64`, k);
  return Buffer.from(s, 'utf8');
}

/** Bytes given as `k` (UTF-8 text) or `kBase64`. */
export function bytesArg<A extends object>(args: A, k: keyof A & string): Uint8Array {
  const a = args as Args;
  const b64 = `${k}Base64`;
  if (a[b64] === undefined) return textBytes(a, k as string);
  const v = str(a, b64);
  const b = Buffer.from(v, 'base64');
  // Node's decoder skips what is not base64: a mistyped key would write another key, in silence.
  if (b.toString('base64') !== v) throw badArg(b64, 'base64 (RFC 4648, padded)');
  return b;
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
    // ignoreBOM keeps a leading U+FEFF: dropped, the text was not the bytes ("\uFEFFk" shown as "k", another key).
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(b);
    // eslint-disable-next-line no-control-regex
    return /^[^\x00-\x08\x0e-\x1f\x7f]*$/.test(text) ? { base64, text } : { base64 };
  } catch {
    return { base64 };
  }
}

/**
 * A daemon call whose only failure is a refusal of one kind (a peer, domain or register not there;
 * a wrapper change that conflicts): that failure as `code`, with the daemon's message, in which
 * `given` (what the client named, which the daemon's message may quote whole) is shortened by echo().
 */
export function failsAs<T>(code: AdminErrorCode, field: string | undefined, f: () => T, given?: string): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof AdminFault) throw e;
    throw new AdminFault(code, echoIn((e as Error).message, given), field);
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

/**
 * Admin commands: talk to a running spookd over its Unix socket. Tables for people,
 * `--json` for scripts, one table of exit statuses for every command (EXIT).
 */
import { Command } from 'commander';
import { durationArg, intArg, keyBase64Opt, keyOf } from './args.js';
import { AdminClient, SpookError, DEFAULT_SOCKET } from '../client/admin-client.js';
import type { AdminArgs, AdminCommand, AdminErrorCode, AdminResult, AdminStreams, Outcome, ShownBytes } from '../client/protocol.js';

export interface Common {
  socket: string;
  json: boolean;
  peer?: string;
}

/** `--key-base64` (cli/args.ts keyBase64Opt). */
export type KeyOpts = { keyBase64?: boolean };

/**
 * The options every command takes, before or after its name (`spook -s S status` and `spook status
 * -s S`): declared once on the program; a preAction hook hands their values to the command that runs.
 */
export function globalOptions(program: Command): Command {
  return program
    .option(
      '-s, --socket <path>',
      'spookd admin socket (default: $SPOOK_SOCKET, else /run/spook/admin.sock)',
      process.env.SPOOK_SOCKET ?? DEFAULT_SOCKET,
    )
    .option('--json', 'print JSON (every inspection command)', false)
    .configureHelp({ showGlobalOptions: true })
    .hook('preAction', (_program, action) => {
      const g = program.opts<{ socket: string; json: boolean }>();
      action.setOptionValue('socket', g.socket).setOptionValue('json', g.json);
    });
}

/** --timeout of every write. */
export const TIMEOUT_HELP = 'wait at most this long for the outcome, then report pending (500ms, 30s, 2m; a bare number is ms)';

/** The exit status of every `spook` command, pair and domain alike (`spook --help`, docs/OPERATIONS.md). */
export const EXIT = {
  /** Done: a write committed, a read found its key. */
  ok: 0,
  /** Any other failure; the message says what. */
  error: 1,
  /** The command line is wrong (unknown command or option, missing or malformed argument). */
  usage: 2,
  /** spookd is not running or its socket is not reachable. */
  daemonNotRunning: 3,
  /** A read found no such key. */
  notFound: 4,
  /** A write was rejected (its precondition failed); the reason is printed. */
  rejected: 5,
  /** A write's outcome is not known yet (`pending`; `unknown` for a domain member that can no longer tell). */
  pending: 6,
} as const;

/** The epilogue of `spook --help`. */
export const EXIT_HELP = `
Exit status (every command, pair and domain alike):
  0  ok: done, a write committed, a read found its key
  1  any other error (the message says what)
  2  usage: a wrong command line, or an argument spookd refuses (bad-argument)
  3  spookd is not running or its socket is not reachable
  4  a read found no such key
  5  a write was rejected (cas-version-mismatch, ...)
  6  a write is not decided yet (pending; domains: unknown); it will still be decided`;

/** Exit status of a failed request, by error code. */
const EXIT_OF: Partial<Record<AdminErrorCode, number>> = { 'daemon-not-running': EXIT.daemonNotRunning, 'bad-argument': EXIT.usage };
export const exitCodeOf = (code: AdminErrorCode): number => EXIT_OF[code] ?? EXIT.error;

/** Exit status of a write's outcome, pair or domain. */
export function exitOfVerdict(verdict: Outcome['verdict'] | 'unknown'): number {
  return verdict === 'committed' ? EXIT.ok : verdict === 'rejected' ? EXIT.rejected : EXIT.pending;
}

/** `get --print-value-only`: the value's bytes alone, raw (no newline added); nothing when absent. */
export function printValueOnly(v: ShownBytes | undefined): void {
  if (v) process.stdout.write(Buffer.from(v.base64, 'base64'));
  process.exitCode = v ? EXIT.ok : EXIT.notFound;
}

/**
 * What spookd relays comes partly from peers (a value's text, a register name a peer declares in a
 * mismatch): a terminal control in it, printed raw, would act on the operator's terminal (clear it, set
 * its title, write over what was printed). Shown escaped: C0 but newline and tab, DEL, and C1 (U+0080-U+009F,
 * which JSON.stringify leaves raw; in `--json` the escape is JSON's own, so the value parses the same).
 */
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
const JSON_RAW_CONTROLS = /[\x7f-\x9f]/g;
const hex = (c: string): string => c.charCodeAt(0).toString(16).padStart(2, '0');
export const visible = (s: string): string => s.replace(CONTROLS, (c) => `\\x${hex(c)}`);
export const jsonText = (v: unknown, indent?: number): string =>
  String(JSON.stringify(v, null, indent)).replace(JSON_RAW_CONTROLS, (c) => `\\u00${hex(c)}`);

/** Print a failed request (`spook: <message>`) and exit with its code's status. */
export function fail(e: unknown): never {
  process.stderr.write(`spook: ${visible((e as Error).message)}\n`);
  process.exit(e instanceof SpookError ? exitCodeOf(e.code) : EXIT.error);
}

export async function call<C extends AdminCommand>(o: Common, cmd: C, args?: AdminArgs<C>): Promise<AdminResult<C>> {
  let client: AdminClient;
  try {
    client = await AdminClient.connect(o.socket);
  } catch (e) {
    if (e instanceof SpookError) fail(e);
    throw e;
  }
  try {
    // --peer of the command line goes to every request (commands without a peer ignore it).
    return await client.request(cmd, { ...args, ...(o.peer ? { peer: o.peer } : {}) } as AdminArgs<C>);
  } catch (e) {
    fail(e);
  } finally {
    client.close();
  }
}

/** Rows as a table of the named columns (a column must be a field of the rows). */
export function table<R extends object>(rows: readonly R[], cols: (keyof R & string)[]): string {
  const cell = (v: unknown): string => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  // A loop, not Math.max(...rows): a spread of a long listing would overflow the stack.
  const at = (r: R, c: keyof R & string): unknown => (r as Record<string, unknown>)[c];
  const widths = cols.map((c) => rows.reduce((w, r) => Math.max(w, cell(at(r, c)).length), c.length));
  const line = (vals: string[]): string =>
    vals
      .map((v, i) => v.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...rows.map((r) => line(cols.map((c) => cell(at(r, c)))))].join('\n');
}

/** An instant of the admin API (epoch ms) for people. */
export const iso = (ms: number | null): string => (ms === null ? '-' : new Date(ms).toISOString());

export const out = (o: Common, v: unknown, human: () => string): void => {
  process.stdout.write(`${o.json ? jsonText(v, 2) : visible(human())}\n`);
};

export function adminCommands(): Command[] {
  const status = new Command('status')
    .description('daemon status: key, listen address, uptime, pairs, drop counters')
    .action(async (o: Common) => {
      const s = await call(o, 'status');
      out(o, s, () =>
        [
          `public key  ${s.publicKey}`,
          `listen      ${s.listen}`,
          `uptime      ${Math.round(s.uptimeMs / 1000)} s   pid ${s.pid}   xdp ${s.xdp}`,
          `pairs       ${s.pairs.map((p) => `${p.peer}=${p.state}${p.registerMismatch ? ` (register-mismatch: ${p.registerMismatch})` : ''}`).join(' ')}`,
          `drops       ${JSON.stringify(s.drops)}`,
        ].join('\n'),
      );
    });

  const pairs = new Command('pairs').description('list pairs').action(async (o: Common) => {
    const ps = await call(o, 'pairs');
    out(o, ps, () =>
      table(ps, ['peer', 'state', 'role', 'endpoint', 'pairId', 'rttMs', 'bytesSent', 'bytesReceived', 'reentanglements', 'fullTransfers']),
    );
  });

  const pair = new Command('pair').description('one pair');
  pair.addCommand(
    new Command('show')
      .description('lifecycle state, versions, hashes, RTT, loss, bytes, re-entanglements, full transfers')
      .argument('<peer>', 'peer name')
      .action(async (peer: string, o: Common) => {
        const p = await call({ ...o, peer }, 'pair');
        out(o, p, () => {
          const regs = p.registers;
          const head = Object.entries(p)
            .filter(([k]) => k !== 'registers')
            .map(([k, v]) => (k === 'registerMismatch' && p.registerMismatch ? [k, p.registerMismatch.reason] : [k, v]))
            .map(
              ([k, v]) =>
                `${String(k).padEnd(18)}${k === 'since' ? iso(v as number) : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`,
            );
          return `${head.join('\n')}\n\n${table(regs, ['name', 'kind', 'policy', 'version', 'hash', 'size', 'pending', 'peerVersion'])}`;
        });
      }),
  );

  const registers = new Command('registers').description('registers of every pair').action(async (o: Common) => {
    const rs = await call(o, 'registers');
    out(o, rs, () => table(rs, ['peer', 'name', 'kind', 'version', 'hash', 'size', 'pending']));
  });

  const peerOpt = (c: Command): Command => c.option('-p, --peer <name|key>', 'peer (needed when several are configured)');
  const keyPeerOpt = (c: Command): Command => keyBase64Opt(peerOpt(c));

  const get = keyBase64Opt(
    peerOpt(new Command('get').description('read a committed value (map key, or stream bytes)').argument('<register>').argument('[key]')),
  )
    .option('--offset <n>', 'stream: first byte', intArg('--offset'), 0)
    .option('--length <n>', 'stream: bytes to read, at most 1048576', intArg('--length', 0, 1_048_576), 65_536)
    .option('--print-value-only', 'print only the value, its raw bytes, without a newline (exit 4 when the key is absent)', false)
    .action(
      async (
        register: string,
        key: string | undefined,
        o: Common & KeyOpts & { offset: number; length: number; printValueOnly: boolean },
      ) => {
        const r = await call(o, 'get', {
          register,
          ...(key !== undefined ? keyOf(key, o.keyBase64) : {}),
          offset: o.offset,
          length: o.length,
        });
        if (o.printValueOnly) return printValueOnly('data' in r ? r.data : r.value);
        const found = 'found' in r ? r.found : undefined; // a map register; a stream has data
        out(o, r, () => {
          const v = 'data' in r ? r.data : r.value;
          if (found === false) return `(not found) at register version ${r.version}`;
          return `${v?.text ?? `base64:${v?.base64}`}\n(register version ${r.version}${'keyVersion' in r && r.keyVersion !== undefined ? `, key version ${r.keyVersion}` : ''})`;
        });
        if (found === false) process.exitCode = EXIT.notFound;
      },
    );

  const outcome = (o: Common, r: Outcome): void => {
    out(
      o,
      r,
      () =>
        `${r.verdict}${r.reason ? ` (${r.reason})` : ''}${r.version !== null ? ` in version ${r.version}` : ''}  [candidate ${r.origin}:${r.seq}, pair ${r.pair}]`,
    );
    process.exitCode = exitOfVerdict(r.verdict);
  };
  const timeoutOpt = (c: Command): Command => c.option('-t, --timeout <duration>', TIMEOUT_HELP, durationArg('--timeout'), 10_000);
  const set = timeoutOpt(
    keyPeerOpt(
      new Command('set')
        .description('propose a set and wait for its collapse')
        .argument('<register>')
        .argument('<key>')
        .argument('<value>'),
    ),
  ).action(async (register: string, key: string, value: string, o: Common & KeyOpts & { timeout: number }) =>
    outcome(o, await call(o, 'set', { register, ...keyOf(key, o.keyBase64), value, timeoutMs: o.timeout })),
  );
  const cas = timeoutOpt(
    keyPeerOpt(
      new Command('cas')
        .description('compare-and-set: commit only if the key is at <expect> (0: absent)')
        .argument('<register>')
        .argument('<key>')
        .argument('<expect>', "the key's version to compare with (0: absent)", intArg('expect'))
        .argument('<value>'),
    ),
  ).action(async (register: string, key: string, expect: number, value: string, o: Common & KeyOpts & { timeout: number }) =>
    outcome(o, await call(o, 'cas', { register, ...keyOf(key, o.keyBase64), expect, value, timeoutMs: o.timeout })),
  );
  const del = timeoutOpt(
    keyPeerOpt(new Command('del').description('propose a delete and wait for its collapse').argument('<register>').argument('<key>')),
  ).action(async (register: string, key: string, o: Common & KeyOpts & { timeout: number }) =>
    outcome(o, await call(o, 'del', { register, ...keyOf(key, o.keyBase64), timeoutMs: o.timeout })),
  );
  const append = timeoutOpt(
    peerOpt(new Command('append').description('append to a stream register').argument('<register>').argument('<data>')),
  ).action(async (register: string, data: string, o: Common & { timeout: number }) =>
    outcome(o, await call(o, 'append', { register, data, timeoutMs: o.timeout })),
  );
  const outcomeCmd = peerOpt(
    new Command('outcome')
      .description('what became of a write answered pending (its candidate number), even across restarts')
      .argument('<register>')
      .argument('<seq>', 'the candidate number the write printed ([candidate ORIGIN:SEQ, pair ID])', intArg('seq', 1))
      .option('--pair <id>', 'the pair the write printed (ID): a write of a pair a rekey replaced since is then unknown-candidate'),
  ).action(async (register: string, seq: number, o: Common & { pair?: string }) =>
    outcome(o, await call(o, 'outcome', { register, seq, ...(o.pair !== undefined ? { pair: o.pair } : {}) })),
  );
  const txn = timeoutOpt(
    peerOpt(
      new Command('txn')
        .description('one atomic candidate of several ops, on <register> or across registers of the pair (ops naming "register")')
        .argument('<register>', 'the register the txn is proposed on (it anchors a txn across registers)')
        .argument('<ops>', 'a JSON array of ops: {"op":"set|del|cas|append", "key", "value", "expect", "data", "register"?}')
        .addHelpText(
          'after',
          `\nExample:\n  spook txn accounts '[{"op":"cas","key":"alice","expect":7,"value":"90"},{"op":"set","register":"audit","key":"t1","value":"alice-10"}]'`,
        ),
    ),
  ).action(async (register: string, ops: string, o: Common & { timeout: number }) => {
    let list: unknown;
    try {
      list = JSON.parse(ops);
    } catch (e) {
      fail(new SpookError('bad-argument', `ops is not JSON: ${(e as Error).message}`, 'ops'));
    }
    outcome(o, await call(o, 'txn', { register, ops: list as AdminArgs<'txn'>['ops'], timeoutMs: o.timeout }));
  });

  // `events` is per peer (lifecycle and re-entanglement of all its registers): it takes no register.
  const streamCmd = (name: 'watch' | 'events', description: string): Command =>
    peerOpt(
      name === 'watch' ? new Command(name).description(description).argument('[register]') : new Command(name).description(description),
    ).action(async (...a: unknown[]) => {
      const register = name === 'watch' ? (a[0] as string | undefined) : undefined;
      const o = a[name === 'watch' ? 1 : 0] as Common;
      let client: AdminClient;
      try {
        client = await AdminClient.connect(o.socket);
      } catch (e) {
        fail(e);
      }
      const fmt = (ev: AdminStreams[typeof name]['event']): string =>
        ev.type === 'collapse'
          ? `${ev.peer} ${ev.register} v${ev.version} h=${ev.hash} ${ev.entries.map((e) => `${e.origin}:${e.seq}${e.verdict === 'committed' ? '✓' : `✗(${e.reason})`}`).join(' ')}`
          : ev.type === 'lifecycle'
            ? `${ev.peer} ${ev.from} -> ${ev.to} (${ev.cause})`
            : `${ev.peer} ${ev.register} re-entangled by ${ev.method} at v${ev.version}`;
      // spookd stopping ends the stream with connection-closed, a reload removing the watched peer with
      // peer-removed: say so and exit non-zero, never 0. A refused start (an unknown peer or register) is a failure too.
      await client
        .stream(
          name,
          { ...(register ? { register } : {}), ...(o.peer ? { peer: o.peer } : {}) },
          (ev) => {
            process.stdout.write(`${o.json ? jsonText(ev) : visible(fmt(ev))}\n`);
          },
          { onEnd: (e) => fail(e) },
        )
        .catch(fail);
    });

  return [
    status,
    pairs,
    pair,
    registers,
    get,
    set,
    cas,
    del,
    append,
    outcomeCmd,
    txn,
    streamCmd('watch', 'print collapses as they happen (Ctrl-C to stop)'),
    streamCmd('events', 'print lifecycle transitions and re-entanglements as they happen'),
  ];
}

/**
 * Admin commands: talk to a running spookd over its Unix socket. Tables for people,
 * `--json` for scripts, a clear message (exit 3) when the daemon is not running.
 */
import { Command } from 'commander';
import { AdminClient, DaemonNotRunning, DEFAULT_SOCKET } from '../client/admin-client.js';

export interface Common {
  socket: string;
  json: boolean;
  peer?: string;
}

export function withSocket(c: Command, json = true): Command {
  c.option('-s, --socket <path>', 'spookd admin socket', process.env.SPOOK_SOCKET ?? DEFAULT_SOCKET);
  if (json) c.option('--json', 'print JSON', false);
  return c;
}

export async function call<T>(o: Common, cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  let client: AdminClient;
  try {
    client = await AdminClient.connect(o.socket);
  } catch (e) {
    if (e instanceof DaemonNotRunning) {
      process.stderr.write(`spook: ${e.message}\n`);
      process.exit(3);
    }
    throw e;
  }
  try {
    return await client.request<T>(cmd, { ...args, ...(o.peer ? { peer: o.peer } : {}) });
  } catch (e) {
    process.stderr.write(`spook: ${(e as Error).message}\n`);
    process.exit(1);
  } finally {
    client.close();
  }
}

export function table(rows: Record<string, unknown>[], cols: string[]): string {
  const cell = (v: unknown): string => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  // A loop, not Math.max(...rows): a spread of a long listing would overflow the stack.
  const widths = cols.map((c) => rows.reduce((w, r) => Math.max(w, cell(r[c]).length), c.length));
  const line = (vals: string[]): string =>
    vals
      .map((v, i) => v.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

export const out = (o: Common, v: unknown, human: () => string): void => {
  process.stdout.write(`${o.json ? JSON.stringify(v, null, 2) : human()}\n`);
};

export function adminCommands(): Command[] {
  const status = withSocket(new Command('status').description('daemon status: key, listen address, uptime, pairs, drop counters')).action(
    async (o: Common) => {
      const s = await call<Record<string, unknown>>(o, 'status');
      out(o, s, () =>
        [
          `public key  ${s.publicKey}`,
          `listen      ${s.listen}`,
          `uptime      ${Math.round(Number(s.uptimeMs) / 1000)} s   pid ${s.pid}   xdp ${s.xdp}`,
          `pairs       ${(s.pairs as { peer: string; state: string }[]).map((p) => `${p.peer}=${p.state}`).join(' ')}`,
          `drops       ${JSON.stringify(s.drops)}`,
        ].join('\n'),
      );
    },
  );

  const pairs = withSocket(new Command('pairs').description('list pairs')).action(async (o: Common) => {
    const ps = await call<Record<string, unknown>[]>(o, 'pairs');
    out(o, ps, () =>
      table(ps, ['peer', 'state', 'role', 'endpoint', 'pairId', 'rttMs', 'bytesSent', 'bytesReceived', 'reentanglements', 'fullTransfers']),
    );
  });

  const pair = new Command('pair').description('one pair');
  pair.addCommand(
    withSocket(
      new Command('show')
        .description('lifecycle state, versions, hashes, RTT, loss, bytes, re-entanglements, full transfers')
        .argument('<peer>', 'peer name'),
    ).action(async (peer: string, o: Common) => {
      const p = await call<Record<string, unknown>>({ ...o, peer }, 'pair');
      out(o, p, () => {
        const regs = p.registers as Record<string, unknown>[];
        const head = Object.entries(p)
          .filter(([k]) => k !== 'registers')
          .map(([k, v]) => `${k.padEnd(18)}${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`);
        return `${head.join('\n')}\n\n${table(regs, ['name', 'kind', 'policy', 'version', 'hash', 'size', 'pending', 'peerVersion'])}`;
      });
    }),
  );

  const registers = withSocket(new Command('registers').description('registers of every pair')).action(async (o: Common) => {
    const rs = await call<Record<string, unknown>[]>(o, 'registers');
    out(o, rs, () => table(rs, ['peer', 'name', 'kind', 'version', 'hash', 'size', 'pending']));
  });

  const peerOpt = (c: Command): Command => c.option('-p, --peer <name>', 'peer (needed when several are configured)');

  const get = peerOpt(
    withSocket(
      new Command('get').description('read a committed value (map key, or stream bytes)').argument('<register>').argument('[key]'),
    ),
  )
    .option('--offset <n>', 'stream: first byte', '0')
    .option('--length <n>', 'stream: bytes to read', '65536')
    .action(async (register: string, key: string | undefined, o: Common & { offset: string; length: string }) => {
      const r = await call<Record<string, unknown>>(o, 'get', { register, key, offset: Number(o.offset), length: Number(o.length) });
      out(o, r, () => {
        const v = (r.value ?? r.data) as { text?: string; base64: string } | undefined;
        if (r.found === false) return `(not found) at register version ${r.version}`;
        return `${v?.text ?? `base64:${v?.base64}`}\n(register version ${r.version}${r.keyVersion !== undefined ? `, key version ${r.keyVersion}` : ''})`;
      });
      if (r.found === false) process.exitCode = 4;
    });

  const outcome = (o: Common, r: Record<string, unknown>): void => {
    out(
      o,
      r,
      () =>
        `${r.verdict}${r.reason ? ` (${r.reason})` : ''}${r.version !== null ? ` in version ${r.version}` : ''}  [candidate ${r.origin}:${r.seq}]`,
    );
    if (r.verdict === 'rejected') process.exitCode = 5;
  };
  const timeoutOpt = (c: Command): Command =>
    c.option('-t, --timeout <ms>', 'wait at most this long for the outcome (then report pending)', '10000');
  const set = timeoutOpt(
    peerOpt(
      withSocket(
        new Command('set')
          .description('propose a set and wait for its collapse')
          .argument('<register>')
          .argument('<key>')
          .argument('<value>'),
      ),
    ),
  ).action(async (register: string, key: string, value: string, o: Common & { timeout: string }) =>
    outcome(o, await call(o, 'set', { register, key, value, timeoutMs: Number(o.timeout) })),
  );
  const cas = timeoutOpt(
    peerOpt(
      withSocket(
        new Command('cas')
          .description('compare-and-set: commit only if the key is at <expect> (0: absent)')
          .argument('<register>')
          .argument('<key>')
          .argument('<expect>')
          .argument('<value>'),
      ),
    ),
  ).action(async (register: string, key: string, expect: string, value: string, o: Common & { timeout: string }) =>
    outcome(o, await call(o, 'cas', { register, key, expect: Number(expect), value, timeoutMs: Number(o.timeout) })),
  );
  const del = timeoutOpt(
    peerOpt(
      withSocket(new Command('del').description('propose a delete and wait for its collapse').argument('<register>').argument('<key>')),
    ),
  ).action(async (register: string, key: string, o: Common & { timeout: string }) =>
    outcome(o, await call(o, 'del', { register, key, timeoutMs: Number(o.timeout) })),
  );
  const append = timeoutOpt(
    peerOpt(withSocket(new Command('append').description('append to a stream register').argument('<register>').argument('<data>'))),
  ).action(async (register: string, data: string, o: Common & { timeout: string }) =>
    outcome(o, await call(o, 'append', { register, data, timeoutMs: Number(o.timeout) })),
  );

  const streamCmd = (name: 'watch' | 'events', description: string): Command =>
    peerOpt(withSocket(new Command(name).description(description).argument('[register]'))).action(
      async (register: string | undefined, o: Common) => {
        let client: AdminClient;
        try {
          client = await AdminClient.connect(o.socket);
        } catch (e) {
          process.stderr.write(`spook: ${(e as Error).message}\n`);
          process.exit(3);
        }
        const fmt = (ev: Record<string, unknown>): string =>
          ev.type === 'collapse'
            ? `${ev.peer} ${ev.register} v${ev.version} h=${ev.hash} ${(ev.entries as { origin: number; seq: number; verdict: number }[]).map((e) => `${e.origin}:${e.seq}${e.verdict ? '✗' : '✓'}`).join(' ')}`
            : ev.type === 'lifecycle'
              ? `${ev.peer} ${ev.from} -> ${ev.to} (${ev.cause})`
              : `${ev.peer} ${ev.register} re-entangled by ${ev.method} at v${ev.version}`;
        await client.stream(name, { ...(register ? { register } : {}), ...(o.peer ? { peer: o.peer } : {}) }, (ev) => {
          process.stdout.write(`${o.json ? JSON.stringify(ev) : fmt(ev)}\n`);
        });
      },
    );

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
    streamCmd('watch', 'print collapses as they happen (Ctrl-C to stop)'),
    streamCmd('events', 'print lifecycle transitions and re-entanglements as they happen'),
  ];
}

/**
 * `spook domains`, `spook domain show|get|set|cas|del|append|propose|member`, `spook groups`,
 * `spook group show`: QN domains and QSCS groups of a running spookd.
 */
import { Command } from 'commander';
import { EXIT, TIMEOUT_HELP, call, exitOfVerdict, out, printValueOnly, table, type Common, type KeyOpts } from './admin.js';
import { durationArg, intArg, keyBase64Opt, keyOf } from './args.js';
import { InvalidArgumentError } from 'commander';
import type { DomainOp, DomainOutcome } from '../client/protocol.js';

type DomainOpts = Common & KeyOpts & { domain?: string; timeout: number };

const domainOpt = (c: Command): Command => c.option('-d, --domain <name>', 'domain (needed when several are configured)');
const timeoutOpt = (c: Command): Command => c.option('-t, --timeout <duration>', TIMEOUT_HELP, durationArg('--timeout'), 10_000);

function verdict(o: Common, r: DomainOutcome): void {
  out(o, r, () => `${r.verdict}${r.reason ? ` (${r.reason})` : ''}${r.index !== null ? ` at index ${r.index}` : ''}  [candidate ${r.seq}]`);
  process.exitCode = exitOfVerdict(r.verdict);
}

/** One op from its words: `set REG KEY VALUE`, `del REG KEY`, `cas REG KEY EXPECT VALUE`, `append REG DATA`. */
function opOf(words: string[], what: string): DomainOp {
  const [op, register, ...rest] = words;
  const need = (k: number): void => {
    if (rest.length !== k) throw new InvalidArgumentError(`${what}: ${op} takes ${k + 1} arguments after the op, got ${rest.length + 1}`);
  };
  switch (op) {
    case 'set':
      need(2);
      return { op, register, key: rest[0], value: rest[1] };
    case 'del':
      need(1);
      return { op, register, key: rest[0] };
    case 'cas':
      need(3);
      return { op, register, key: rest[0], expect: intArg(`${what}: expect`)(rest[1]), value: rest[2] };
    case 'append':
      need(1);
      return { op, register, data: rest[0] };
    default:
      throw new InvalidArgumentError(`${what}: the op must be set, del, cas or append`);
  }
}

/** An `--op` spec: words split on spaces (a value with spaces: use \`spook domain set\`, one op per command). */
export function parseOp(spec: string): DomainOp {
  return opOf(spec.trim().split(/\s+/), `--op ${JSON.stringify(spec)}`);
}

async function propose(o: DomainOpts, ops: DomainOp[]): Promise<void> {
  verdict(o, await call(o, 'dpropose', { domain: o.domain, ops, timeoutMs: o.timeout }));
}

export function domainCommands(): Command[] {
  const domains = new Command('domains')
    .description('list QN domains: state, role, leader, term, commit index')
    .action(async (o: Common) => {
      const r = await call(o, 'domains');
      out(o, r, () =>
        r.length
          ? table(r, ['domain', 'state', 'role', 'leader', 'term', 'commitIndex', 'members', 'pending', 'hash'])
          : '(no domains configured)',
      );
    });

  const domain = new Command('domain').description('one QN domain: inspect it, read and write its registers, change its membership');
  domain.addCommand(
    new Command('show')
      .description('members, roles, commit index, lag per member, partitions seen')
      .argument('<name>')
      .action(async (name: string, o: Common) => {
        const r = await call(o, 'domain', { domain: name });
        out(o, r, () =>
          [
            `domain      ${r.domain}   (node ${r.nodeId})`,
            `state       ${r.state}   role ${r.role}   leader ${r.leader ?? '-'}   term ${r.term}`,
            `index       commit ${r.commitIndex}   applied ${r.appliedIndex}   last ${r.lastIndex}   snapshot ${r.snapshotIndex}${r.snapshotting ? ` (writing ${r.snapshotting})` : ''}   hash ${r.hash}`,
            `candidates  pending ${r.pending} (policy ${r.policy})   partitions seen ${r.partitionsSeen}`,
            '',
            table(r.members, ['member', 'nodeId', 'role', 'link', 'matchIndex', 'commitIndex', 'lag']),
            '',
            table(r.registers, ['name', 'kind', 'version', 'size']),
            ...(r.groups.length ? ['', table(r.groups, ['name', 'registers', 'version'])] : []),
          ].join('\n'),
        );
      }),
  );
  domain.addCommand(
    domainOpt(
      new Command('outcome')
        .description('what became of a candidate proposed on this host (after a pending verdict, even across restarts)')
        .argument('<seq>', 'the candidate number a write printed', intArg('seq', 1)),
    ).action(async (seq: number, o: DomainOpts) => verdict(o, await call(o, 'doutcome', { domain: o.domain, seq }))),
  );
  domain.addCommand(
    keyBase64Opt(
      domainOpt(
        new Command('get').description('read a committed value (map key, or stream bytes)').argument('<register>').argument('[key]'),
      ),
    )
      .option('--print-value-only', 'print only the value, its raw bytes, without a newline (exit 4 when the key is absent)', false)
      .action(async (register: string, key: string | undefined, o: DomainOpts & { printValueOnly: boolean }) => {
        const r = await call(o, 'dget', { domain: o.domain, register, ...(key !== undefined ? keyOf(key, o.keyBase64) : {}) });
        if (o.printValueOnly) return printValueOnly('data' in r ? r.data : r.value);
        const found = 'found' in r ? r.found : undefined; // a map register; a stream has data
        out(o, r, () => {
          const v = 'data' in r ? r.data : r.value;
          if (found === false) return `(not found) at index ${r.index}`;
          return `${v?.text ?? `base64:${v?.base64}`}\n(index ${r.index}, register version ${r.version}${'keyVersion' in r && r.keyVersion !== undefined ? `, key version ${r.keyVersion}` : ''})`;
        });
        if (found === false) process.exitCode = EXIT.notFound;
      }),
  );
  const write = (name: string, args: string[], description: string): Command => {
    const c = timeoutOpt(domainOpt(new Command(name).description(description)));
    if (args.includes('key')) keyBase64Opt(c);
    for (const a of args) c.argument(`<${a}>`);
    // The words as given (a value may hold spaces: `spook domain set kv k "hello world"`).
    return c.action(async (...xs: unknown[]) => {
      const o = xs[args.length] as DomainOpts;
      let op: DomainOp;
      try {
        op = opOf([name, ...(xs.slice(0, args.length) as string[])], name);
      } catch (e) {
        process.stderr.write(`spook: ${(e as Error).message}\n`);
        process.exit(EXIT.usage);
      }
      // --key-base64: the op's key as bytes, as the admin API takes them.
      if (o.keyBase64 && 'key' in op && op.key !== undefined) {
        const { key, ...rest } = op;
        op = { ...rest, ...keyOf(key, true) } as DomainOp;
      }
      await propose(o, [op]);
    });
  };
  domain.addCommand(write('set', ['register', 'key', 'value'], 'propose a set and wait for its outcome'));
  domain.addCommand(write('del', ['register', 'key'], 'propose a delete and wait for its outcome'));
  domain.addCommand(
    write('cas', ['register', 'key', 'expect', 'value'], 'compare-and-set: commit only if the key is at <expect> (0: absent)'),
  );
  domain.addCommand(write('append', ['register', 'data'], 'append to a stream register'));
  domain.addCommand(
    timeoutOpt(domainOpt(new Command('propose')))
      .description('one candidate of several deltas, on one or more registers: all commit together or none (QSCS)')
      .requiredOption(
        '--op <spec...>',
        '"set REG KEY VALUE", "del REG KEY", "cas REG KEY EXPECT VALUE" or "append REG DATA"; repeat for each delta',
      )
      .action(async (o: DomainOpts & { op: string[] }) => {
        let ops: DomainOp[];
        try {
          ops = o.op.map(parseOp);
        } catch (e) {
          process.stderr.write(`spook: ${(e as Error).message}\n`);
          process.exit(EXIT.usage);
        }
        await propose(o, ops);
      }),
  );
  const member = new Command('member').description('membership changes, one at a time, through the leader (Raft §4.1)');
  for (const verb of ['add', 'remove'] as const) {
    member.addCommand(
      domainOpt(
        new Command(verb).description(`${verb} one voting member (a configured peer; "self" for this node)`).argument('<peer>'),
      ).action(async (peer: string, o: DomainOpts) => {
        const r = await call(o, 'member', { domain: o.domain, [verb]: peer });
        out(o, r, () => `${verb} ${peer}: appended at index ${r.index} (${r.note})`);
      }),
    );
  }
  domain.addCommand(member);

  const groups = new Command('groups')
    .description('list QSCS entanglement groups: domain, registers, group version')
    .action(async (o: Common) => {
      const r = await call(o, 'groups');
      out(o, r, () => (r.length ? table(r, ['name', 'domain', 'registers', 'version', 'state']) : '(no groups configured)'));
    });
  const group = new Command('group').description('one QSCS entanglement group');
  group.addCommand(
    domainOpt(new Command('show').description('members (registers), group version, state').argument('<name>')).action(
      async (name: string, o: DomainOpts) => {
        const r = await call(o, 'group', { group: name, domain: o.domain });
        out(o, r, () =>
          [
            `group   ${r.group}   domain ${r.domain}   version ${r.version}   state ${r.state} (policy ${r.policy})   commit ${r.commitIndex}`,
            '',
            table(r.members, ['register', 'kind', 'version', 'size', 'hash']),
          ].join('\n'),
        );
      },
    ),
  );
  return [domains, domain, groups, group];
}

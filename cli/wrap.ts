/**
 * `spook wrap add|list|remove|stats|conns`: wrappers of a running spookd — existing TCP
 * protocols carried over pairs, their ports intercepted transparently.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { call, out, table, type Common } from './admin.js';
import { portArg } from './args.js';
import type { WrapTransport } from '../client/protocol.js';
import { WRAP_PROTOCOLS } from '../core/wrap/protocols.js';

type AddOpts = Common & { port: number; peer: string; hold?: string; delta: boolean; whenDown?: string; connectTimeout?: string };

/** `-p` was `--port` in these commands before it meant `--peer` everywhere: a number there is a port by mistake. */
const portWasP = (v: string): never => {
  throw new InvalidArgumentError(`-p is --peer in every command now; for the port write --port ${v}`);
};
const peerNotPort = (v: string): string => (/^\d+$/.test(v) ? portWasP(v) : v);

export function wrapCommands(): Command[] {
  const wrap = new Command('wrap').description(
    'carry an existing TCP or UDP protocol over a pair: its port is intercepted, outages shorter than the hold are invisible',
  );
  wrap.addCommand(
    new Command('add')
      .description(`wrap a port: clients' connections to it go through the peer's spookd (PROTOCOL: ${WRAP_PROTOCOLS.join(', ')})`)
      .argument('<protocol>')
      .requiredOption('--port <n>', 'the server port clients connect to', portArg('--port'))
      .requiredOption('-p, --peer <name|key>', 'the peer whose spookd connects to the real server', peerNotPort)
      .option('--hold <duration>', "how long a link outage may last before both ends close (e.g. 30s, 2m; default: TCP's patience, 925s)")
      .option(
        '--when-down <mode>',
        'TCP: while the peer has no carrier, connect() is held (hold, the default), goes direct (direct) or fails at once (refuse)',
      )
      .option(
        '--connect-timeout <duration>',
        "TCP: reset a connection the far side has not reached within this (default: the host's SYN patience, 127s)",
      )
      .option('--delta', 'delta mode: what the other side already holds (a polled resource, a retained message) goes as a reference', false)
      .action(async (protocol: string, o: AddOpts) => {
        const r = await call(o, 'wrap-add', {
          protocol,
          port: o.port,
          peer: o.peer,
          hold: o.hold,
          delta: o.delta,
          whenDown: o.whenDown as 'hold' | 'direct' | 'refuse' | undefined, // the daemon names a wrong one
          connectTimeout: o.connectTimeout,
        });
        out(
          o,
          r,
          () =>
            `wrapped ${r.protocol} port ${r.port} via ${r.peer} (hold ${r.holdMs} ms, when down ${r.whenDown}, connect timeout ${r.connectTimeoutMs} ms${r.delta ? ', delta mode' : ''})`,
        );
        if (r.interception !== 'bpf' && !o.json) {
          process.stderr.write(
            `spook: warning: interception is off${r.interceptionError ? ` (${r.interceptionError})` : ''}: clients' connections to port ${r.port} are not intercepted\n`,
          );
        }
      }),
  );
  wrap.addCommand(
    new Command('list').description('wrapped ports: protocol, peer, hold, connections').action(async (o: Common) => {
      const r = await call(o, 'wraps');
      out(o, r, () =>
        r.length
          ? table(r, ['protocol', 'transport', 'port', 'peer', 'holdMs', 'whenDown', 'connectTimeoutMs', 'delta', 'active', 'connections'])
          : '(no wrappers)',
      );
    }),
  );
  wrap.addCommand(
    new Command('remove')
      .description('stop wrapping a port: new connections go direct, carried ones close cleanly')
      .requiredOption('--port <n>', 'the wrapped port', portArg('--port'))
      .addOption(new Option('-p <n>').hideHelp().argParser(portWasP))
      .option('--transport <tcp|udp>', 'which of the two, when the port is wrapped for both TCP and UDP')
      .action(async (o: Common & { port: number; transport?: string }) => {
        const r = await call(o, 'wrap-remove', { port: o.port, transport: o.transport as WrapTransport | undefined });
        out(o, r, () => `${r.transport} port ${r.port} is no longer wrapped`);
      }),
  );
  wrap.addCommand(
    new Command('stats').description('counters: per wrapper, per recognised protocol, per peer carrier').action(async (o: Common) => {
      const r = await call(o, 'wrap-stats');
      out(o, r, () => {
        const protocols = Object.entries(r.protocols).map(([protocol, s]) => ({
          protocol,
          ...s,
        }));
        const wrappers = r.wrappers.map((w) => ({
          ...w,
          closes:
            Object.entries(w.closes)
              .map(([k, v]) => `${k}=${v}`)
              .join(' ') || '-',
        }));
        return [
          `interception  ${r.interception}${r.interceptionError ? ` (${r.interceptionError})` : ''}   intercept listener ${r.intercept}`,
          '',
          wrappers.length
            ? table(wrappers, [
                'protocol',
                'transport',
                'port',
                'peer',
                'active',
                'connections',
                'bytesUp',
                'bytesDown',
                'outages',
                'closes',
              ])
            : '(no wrappers)',
          '',
          protocols.length
            ? table(protocols, ['protocol', 'connections', 'bytesUp', 'bytesDown', 'outages'])
            : '(no connections recognised yet)',
          '',
          table(r.peers, [
            'peer',
            'carrier',
            'connections',
            'carrierUps',
            'carrierLosses',
            'recordsIn',
            'recordsOut',
            'refBytes',
            'nacksSent',
            'violations',
            'lastError',
          ]),
        ].join('\n');
      });
    }),
  );
  wrap.addCommand(
    new Command('policy')
      .description('what each peer may make this host dial (default: nothing), and the dials refused')
      .action(async (o: Common) => {
        const r = await call(o, 'wrap-policy');
        out(o, r, () =>
          table(
            r.map((p) => ({
              peer: p.peer,
              allow: p.allow.map((a) => `${a.protocol}:${a.to}`).join(' ') || '(nothing)',
              refused: p.refused,
            })),
            ['peer', 'allow', 'refused'],
          ),
        );
      }),
  );
  wrap.addCommand(
    new Command('conns').description('carried connections: side, target, protocol, state, bytes, outages').action(async (o: Common) => {
      const r = await call(o, 'wrap-conns');
      out(o, r, () =>
        r.length
          ? table(r, [
              'peer',
              'conn',
              'side',
              'target',
              'protocol',
              'state',
              'heldForMs',
              'sent',
              'received',
              'buffered',
              'outages',
              'ageMs',
            ])
          : '(no carried connections)',
      );
    }),
  );
  return [wrap];
}

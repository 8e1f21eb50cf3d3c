/** Admin API commands for wrappers (same JSON-lines protocol as admin.ts). */
import { parseHold } from '../daemon/config.js';
import type { Spookd } from '../daemon/spookd.js';
import { num, str, type Args } from './args.js';
import { WRAP_PROTOCOLS, type WrapProtocol } from '../../core/wrap/protocols.js';

export const WRAP_COMMANDS = ['wraps', 'wrap-add', 'wrap-remove', 'wrap-stats', 'wrap-conns', 'wrap-policy'];

export function runWrapCommand(d: Spookd, cmd: string, args: Args): unknown {
  const w = d.wraps;
  switch (cmd) {
    case 'wraps':
      return w.list();
    case 'wrap-add': {
      const protocol = str(args, 'protocol')!;
      if (!(WRAP_PROTOCOLS as readonly string[]).includes(protocol))
        throw new Error(`argument protocol must be one of ${WRAP_PROTOCOLS.join(', ')}, not ${JSON.stringify(protocol)}`);
      const hold = parseHold((args.hold as string | number | undefined) ?? '30s');
      if (hold === undefined) throw new Error('argument hold must be a duration between 100ms and 24h (30s, 500ms, 2m, or milliseconds)');
      if (args.delta !== undefined && typeof args.delta !== 'boolean') throw new Error('argument delta must be true or false');
      const spec = {
        protocol: protocol as WrapProtocol,
        port: num(args, 'port', undefined, 1, 65535),
        peer: d.peerName(str(args, 'peer')!),
        holdMs: hold,
        delta: args.delta === true,
      };
      w.add(spec);
      const st = w.stats() as { interception: string; interceptionError: string | null };
      return { ...spec, interception: st.interception, interceptionError: st.interceptionError };
    }
    case 'wrap-remove': {
      const port = num(args, 'port', undefined, 1, 65535);
      w.remove(port);
      return { port };
    }
    case 'wrap-stats':
      return w.stats();
    case 'wrap-conns':
      return w.connections();
    case 'wrap-policy':
      return w.policyView();
    default:
      throw new Error(`unknown wrap command ${cmd}`);
  }
}

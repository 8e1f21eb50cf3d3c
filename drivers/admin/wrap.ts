/** Admin API commands for wrappers (client/protocol.ts): wraps, wrap-add, wrap-remove, wrap-stats, wrap-conns, wrap-policy. */
import type { WrapStatsResult } from '../../client/protocol.js';
import { parseConnectTimeout, parseHold } from '../daemon/config.js';
import { DEFAULT_WHEN_DOWN, WHEN_DOWN, type WhenDown } from '../../core/wrap/connect.js';
import type { Spookd } from '../daemon/spookd.js';
import { AdminFault, bool, echo, failsAs, num, str } from './args.js';
import type { Handlers } from './handlers.js';
import {
  WRAP_PROTOCOLS,
  WRAP_TRANSPORTS,
  transportOf,
  wrapperKey,
  type WrapProtocol,
  type WrapTransport,
} from '../../core/wrap/protocols.js';

/** A duration argument as sent: text or milliseconds, undefined when absent, null when of another type (true, {}: refused, naming it). */
const duration = (v: unknown): string | number | null | undefined =>
  v === undefined || typeof v === 'string' || typeof v === 'number' ? v : null;

export function wrapHandlers(d: Spookd): Handlers<'wraps' | 'wrap-add' | 'wrap-remove' | 'wrap-stats' | 'wrap-conns' | 'wrap-policy'> {
  const w = d.wraps;
  // The manager builds these views; their shapes are the protocol's.
  const stats = (): WrapStatsResult => w.stats();
  // A reload rebuilds the running configuration from what it read: a wrapper added or removed meanwhile would be left out of it.
  const notReloading = (): void => {
    if (d.reloadUnderWay) throw new AdminFault('reload-in-progress', 'a reload is under way: retry once it is done');
  };
  return {
    wraps: () => w.list(),
    'wrap-add': (args) => {
      notReloading();
      const protocol = str(args, 'protocol');
      if (!(WRAP_PROTOCOLS as readonly string[]).includes(protocol))
        throw new AdminFault(
          'bad-argument',
          `argument protocol must be one of ${WRAP_PROTOCOLS.join(', ')}, not ${echo(protocol)}`,
          'protocol',
        );
      // No hold: the host's default (its TCP patience, 925 s with Linux's defaults).
      const given = duration(args.hold);
      const hold = given === undefined ? w.defaultHoldMs : given === null ? undefined : parseHold(given);
      if (hold === undefined)
        throw new AdminFault(
          'bad-argument',
          'argument hold must be a duration between 100ms and 24h (30s, 500ms, 2m, 1h, or milliseconds)',
          'hold',
        );
      const delta = bool(args, 'delta');
      const whenDown = str(args, 'whenDown', false) ?? DEFAULT_WHEN_DOWN;
      if (!(WHEN_DOWN as readonly string[]).includes(whenDown))
        throw new AdminFault('bad-argument', `argument whenDown must be one of ${WHEN_DOWN.join(', ')}, not ${echo(whenDown)}`, 'whenDown');
      const givenCt = duration(args.connectTimeout);
      const connectTimeoutMs =
        givenCt === undefined ? w.defaultConnectTimeoutMs : givenCt === null ? undefined : parseConnectTimeout(givenCt);
      if (connectTimeoutMs === undefined)
        throw new AdminFault(
          'bad-argument',
          'argument connectTimeout must be a duration between 100ms and 1h (10s, 500ms, 2m, or milliseconds)',
          'connectTimeout',
        );
      const spec = {
        protocol: protocol as WrapProtocol,
        port: num(args, 'port', undefined, 1, 65535),
        peer: failsAs('unknown-peer', 'peer', () => d.peerName(str(args, 'peer')), str(args, 'peer')),
        holdMs: hold,
        delta,
        whenDown: whenDown as WhenDown,
        connectTimeoutMs,
      };
      // The manager refuses a port already wrapped for that transport, one wrapper too many, interception it cannot open.
      failsAs('conflict', 'port', () => w.add(spec));
      // Part of the running configuration from now on: a reload compares the file with it (and removes it if the file lacks it).
      const entry = { protocol: spec.protocol, port: spec.port, peer: spec.peer, delta, whenDown: spec.whenDown };
      d.cfg = {
        ...d.cfg,
        wrap: {
          ...d.cfg.wrap,
          wrappers: [
            ...d.cfg.wrap.wrappers,
            {
              ...entry,
              hold: given === undefined ? undefined : hold,
              connectTimeout: givenCt === undefined ? undefined : connectTimeoutMs,
            },
          ],
        },
      };
      const st = stats();
      return { ...spec, interception: st.interception, interceptionError: st.interceptionError };
    },
    'wrap-remove': (args) => {
      notReloading();
      const port = num(args, 'port', undefined, 1, 65535);
      const given = str(args, 'transport', false);
      if (given !== undefined && !(WRAP_TRANSPORTS as readonly string[]).includes(given))
        throw new AdminFault('bad-argument', `argument transport must be tcp or udp, not ${echo(given)}`, 'transport');
      // Wrapped for both and no transport given: the transport is missing; else the port is not wrapped (for it).
      const both = given === undefined && WRAP_TRANSPORTS.every((t) => w.wrappers.has(wrapperKey(t, port)));
      const transport = failsAs('conflict', both ? 'transport' : 'port', () => w.remove(port, given as WrapTransport | undefined));
      const key = wrapperKey(transport, port);
      d.cfg = {
        ...d.cfg,
        wrap: { ...d.cfg.wrap, wrappers: d.cfg.wrap.wrappers.filter((x) => wrapperKey(transportOf(x.protocol), x.port) !== key) },
      };
      return { port, transport };
    },
    'wrap-stats': stats,
    'wrap-conns': () => w.connections(),
    'wrap-policy': () => w.policyView(),
  };
}

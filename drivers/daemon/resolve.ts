/**
 * Peer endpoints given as DNS names: resolved before spookd starts and again, every
 * RERESOLVE_MS, for a named peer with no session (its address may have moved: a new DHCP lease,
 * a dynamic-DNS name), as WireGuard re-resolves its endpoints. Resolution goes through the
 * system resolver (getaddrinfo: /etc/hosts, then DNS), bounded in time.
 */
import { promises as dns, V4MAPPED } from 'node:dns';
import { isIPv6 } from 'node:net';
import { parseEndpoint, type SpookdConfig } from './config.js';

/**
 * One address of `family` for `host` (the system resolver's first answer of that family): the
 * UDP socket is udp4 or udp6 after `listen`, and cannot send to the other family.
 */
export type Lookup = (host: string, family: 4 | 6) => Promise<string>;
// For a udp6 socket (an IPv6 listen, dual-stack `[::]`) a name with IPv4 addresses only resolves
// IPv4-mapped (AI_V4MAPPED), as an IPv4 literal is written there: asked for AAAA alone, it did not
// resolve at all and the peer had no endpoint (ENOTFOUND at the start and every re-resolution).
export const systemLookup: Lookup = async (host, family) =>
  (await dns.lookup(host, family === 6 ? { family, hints: V4MAPPED } : { family })).address;

/** The address family spookd's UDP socket speaks (its `listen` address). */
export const familyOf = (listen: string): 4 | 6 => (listen.startsWith('[') ? 6 : 4);

/** A lookup that takes longer than this counts as failed (getaddrinfo has no timeout of its own). */
export const LOOKUP_TIMEOUT_MS = 5_000;
/** How often a named peer without a session is looked up again. */
export const RERESOLVE_MS = 30_000;

export interface NamedEndpoint {
  host: string;
  port: number;
}

export const endpointOf = (address: string, port: number): string => (isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`);

export async function lookupBounded(lookup: Lookup, host: string, family: 4 | 6, timeoutMs = LOOKUP_TIMEOUT_MS): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      lookup(host, family),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The configuration with every named endpoint replaced by the address it resolves to; a name
 * that does not resolve leaves its peer without an endpoint for now (reported in `failed`).
 */
export async function resolveEndpoints(
  cfg: SpookdConfig,
  lookup: Lookup = systemLookup,
): Promise<{ cfg: SpookdConfig; named: Map<string, NamedEndpoint>; failed: { field: string; host: string; error: string }[] }> {
  const named = new Map<string, NamedEndpoint>();
  const family = familyOf(cfg.listen);
  const failed: { field: string; host: string; error: string }[] = [];
  const peers = await Promise.all(
    cfg.peers.map(async (p, i) => {
      const e = p.endpoint === undefined ? undefined : parseEndpoint(p.endpoint);
      if (!e?.name) return p;
      named.set(p.name, { host: e.host, port: e.port });
      try {
        return { ...p, endpoint: endpointOf(await lookupBounded(lookup, e.host, family), e.port) };
      } catch (err) {
        failed.push({ field: `peers.${i}.endpoint`, host: e.host, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
        return { ...p, endpoint: undefined };
      }
    }),
  );
  return { cfg: { ...cfg, peers }, named, failed };
}

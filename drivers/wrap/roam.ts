/**
 * Address changes under a carrier (issue 17: a client host whose address changes keeps its
 * wrapped connections). The dialling side replaces its carrier as soon as it can tell the old
 * one goes nowhere, instead of waiting for the silence timer (silenceMs, 3 s by default):
 * - the peer moved: its authenticated ETCP packets come from another address than the one the
 *   carrier was dialled to (WrapManager.peerHeard, with the pair's roaming, PROTOCOL §12.6);
 * - this host moved: the carrier's local address is no longer one of the host's (DHCP renew,
 *   Wi-Fi to LTE), checked at most every LOCAL_CHECK_MS.
 */
import { networkInterfaces } from 'node:os';

/** How often the dialling side checks that its carriers' local addresses still exist. */
export const LOCAL_CHECK_MS = 500;

/** An address as IPv4 when it is IPv4-mapped (sockets on dual-stack hosts report either form). */
export function plainAddress(a: string): string {
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  const scope = v4.indexOf('%'); // fe80::1%eth0: getifaddrs lists it without the zone
  return scope < 0 ? v4 : v4.slice(0, scope);
}

export function sameAddress(a: string | undefined, b: string | undefined): boolean {
  // The equal case first: WrapManager.peerHeard asks this for every authenticated datagram.
  return a !== undefined && b !== undefined && (a === b || plainAddress(a) === plainAddress(b));
}

/** The host's own addresses, read again at most every LOCAL_CHECK_MS (getifaddrs is a netlink dump). */
export class LocalAddresses {
  private at = -Infinity;
  /** undefined: the host's addresses could not be read (then nothing counts as gone). */
  private addrs: Set<string> | undefined;
  /**
   * Every address any read listed: only those can be gone. A socket address the host never
   * listed (a source chosen some other way) is never taken for a move, so a carrier is not
   * closed every LOCAL_CHECK_MS for it. Bounded by the addresses the host ever had.
   */
  private readonly seen = new Set<string>();

  constructor(private readonly read: () => Iterable<string> = hostAddresses) {}

  /** Whether `addr` is still one of this host's addresses (read again when the last read is older than LOCAL_CHECK_MS). */
  has(now: number, addr: string): boolean {
    if (now - this.at >= LOCAL_CHECK_MS) {
      this.at = now;
      try {
        this.addrs = new Set([...this.read()].map(plainAddress));
        for (const a of this.addrs) this.seen.add(a);
      } catch {
        this.addrs = undefined;
      }
    }
    return this.addrs?.has(plainAddress(addr)) ?? true;
  }

  /** Whether `addr` was one of this host's addresses and no longer is. */
  gone(now: number, addr: string): boolean {
    return !this.has(now, addr) && this.seen.has(plainAddress(addr));
  }

  /** When the next read is due (a fixed grid: a timer armed for it does not move between reads). */
  nextAt(): number {
    return this.at + LOCAL_CHECK_MS;
  }

  /** Whether a read is due (callers skip the check, and its cost, in between). */
  due(now: number): boolean {
    return now - this.at >= LOCAL_CHECK_MS;
  }
}

/** Every address of this host's interfaces (also what the dial policy's `*` never reaches, drivers/wrap/policy.ts). */
export function* hostAddresses(): Iterable<string> {
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) yield i.address;
}

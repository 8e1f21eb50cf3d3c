/**
 * Two hosts joined through a bridge in a third namespace, for outages in the middle of the
 * path: `cut()` takes the client's port off the bridge, so both hosts keep their link up and
 * every packet between them vanishes silently (SYNs included), as on a broken WAN path.
 * (`Lab.setLink` downs a host's own interface instead: its sends then fail locally, and the
 * kernel retries those every 500 ms without backoff, unlike a loss it cannot see.)
 */
import { execFileSync } from 'node:child_process';
import { Lab } from './netns.js';

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

export class BridgedPair {
  readonly lab: Lab;
  private readonly mid: string;
  /** The client's and the server's addresses. */
  readonly clientAddr: string;
  readonly serverAddr: string;

  /** Hosts `client` and `server` (and `${client}m`, the bridge), on 10.77.`subnet`.0/24. */
  constructor(
    readonly client: string,
    readonly server: string,
    subnet: number,
    basePort: number,
  ) {
    this.lab = new Lab([client, server, `${client}m`], [], basePort);
    this.mid = this.lab.host(`${client}m`).ns;
    this.clientAddr = `10.77.${subnet}.1`;
    this.serverAddr = `10.77.${subnet}.2`;
    ip('-n', this.mid, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.mid, 'link', 'set', 'br0', 'up');
    for (const [name, addr, port] of [
      [client, this.clientAddr, 'p1'],
      [server, this.serverAddr, 'p2'],
    ] as const) {
      const h = this.lab.host(name);
      const dev = `v${subnet}${name}`.slice(0, 15);
      ip('link', 'add', dev, 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.mid);
      ip('-n', h.ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', h.ns, 'link', 'set', dev, 'up');
      ip('-n', this.mid, 'link', 'set', port, 'master', 'br0');
      ip('-n', this.mid, 'link', 'set', port, 'up');
    }
    // Each host's address on the link to the other (what Lab.configure gives as endpoints).
    this.lab.host(client).addrs.set(server, this.clientAddr);
    this.lab.host(server).addrs.set(client, this.serverAddr);
  }

  /** Every packet between the hosts is dropped in the middle, silently. */
  cut(): void {
    ip('-n', this.mid, 'link', 'set', 'p1', 'nomaster');
  }

  heal(): void {
    ip('-n', this.mid, 'link', 'set', 'p1', 'master', 'br0');
  }

  /** A host's neighbour table (`ip neigh`), for diagnostics. */
  neigh(name: string): string {
    return ip('-n', this.ns(name), 'neigh');
  }

  ns(name: string): string {
    return this.lab.host(name).ns;
  }
}

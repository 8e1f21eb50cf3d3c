/**
 * A client host whose address changes, and outages in the middle of its path (issue 17: better
 * where TCP fails). One client host `c` and two serving hosts on a bridge in a fourth
 * namespace, with their keys ordered so that both carrier roles meet the client's address
 * change: `c` dials the carrier to `s1` (its key is lower: it is that pair's sequencer), and
 * `s2` dials the carrier to `c`, to the address the pair's roaming knows for it (PROTOCOL §16.2).
 *
 * - `moveClient()`: `c` gets a new address on the same link and loses the old one (DHCP renew,
 *   Wi-Fi to LTE, NAT rebinding as the servers see it); connections bound to the old address
 *   are left with no path, as on a real host;
 * - `cut()` / `heal()`: `c`'s bridge port is detached, so every packet vanishes silently
 *   (testing/lab/bridged.ts), SYNs included;
 * - `setTcpRetries2()`: TCP's patience in every namespace (a per-namespace sysctl), to end a
 *   direct connection within a bench-sized outage.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPair, type KeyPair } from '../../crypto/primitives.js';
import { Lab, until } from './netns.js';

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

function compareKeys(a: KeyPair, b: KeyPair): number {
  return Buffer.compare(Buffer.from(a.publicKey), Buffer.from(b.publicKey));
}

export interface RoamWrapper {
  port: number;
  peer: 's1' | 's2';
  /** Absent: the host's default (its TCP patience at spookd's start). */
  hold?: string;
}

export class RoamLab {
  readonly lab: Lab;
  readonly subnet: number;
  private readonly mid: string;
  /** The client's address now (moveClient() changes it), and the servers'. */
  clientAddr: string;
  readonly s1Addr: string;
  readonly s2Addr: string;
  /** The client's interface. */
  private readonly dev: string;

  constructor(subnet: number, basePort: number) {
    this.subnet = subnet;
    this.lab = new Lab(['c', 's1', 's2', 'cm'], [], basePort);
    // Keys in order s2 < c < s1: c is s1's sequencer (c dials), s2 is c's (s2 dials).
    const keys = [generateKeyPair(), generateKeyPair(), generateKeyPair()].sort(compareKeys);
    this.lab.host('s2').key = keys[0];
    this.lab.host('c').key = keys[1];
    this.lab.host('s1').key = keys[2];
    this.mid = this.lab.host('cm').ns;
    this.clientAddr = `10.77.${subnet}.1`;
    this.s1Addr = `10.77.${subnet}.2`;
    this.s2Addr = `10.77.${subnet}.3`;
    this.dev = `v${subnet}c`;
    ip('-n', this.mid, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.mid, 'link', 'set', 'br0', 'up');
    for (const [name, addr, port] of [
      ['c', this.clientAddr, 'pc'],
      ['s1', this.s1Addr, 'ps1'],
      ['s2', this.s2Addr, 'ps2'],
    ] as const) {
      const h = this.lab.host(name);
      const dev = `v${subnet}${name}`;
      ip('link', 'add', dev, 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.mid);
      // An address deleted leaves the others on the link in place (the new one becomes primary).
      execFileSync('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', `net.ipv4.conf.${dev}.promote_secondaries=1`]);
      ip('-n', h.ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', h.ns, 'link', 'set', dev, 'up');
      ip('-n', this.mid, 'link', 'set', port, 'master', 'br0');
      ip('-n', this.mid, 'link', 'set', port, 'up');
    }
    this.lab.host('c').addrs.set('s1', this.clientAddr).set('s2', this.clientAddr);
    this.lab.host('s1').addrs.set('c', this.s1Addr);
    this.lab.host('s2').addrs.set('c', this.s2Addr);
  }

  ns(name: 'c' | 's1' | 's2'): string {
    return this.lab.host(name).ns;
  }

  /** Start the three spookd with the client's wrappers; each server may dial its wrapped ports on itself. */
  async start(wrappers: RoamWrapper[], extra: Record<string, unknown> = {}): Promise<void> {
    const regs = [{ name: 'r', kind: 'map' }];
    this.lab.configure('c', regs, { ...extra, wrap: { wrappers: wrappers.map((w) => ({ protocol: 'tcp', ...w })) } });
    for (const s of ['s1', 's2'] as const) {
      const at = s === 's1' ? this.s1Addr : this.s2Addr;
      const allow = wrappers.filter((w) => w.peer === s).map((w) => ({ peer: 'c', to: `${at}:${w.port}` }));
      this.lab.configure(s, regs, { ...extra, wrap: { allow } });
    }
    for (const h of ['c', 's1', 's2']) await this.lab.start(h);
    await until(
      'both carriers',
      async () => (await this.lab.admin('c', 'wrap-stats')).peers.every((p) => p.carrier === 'up') || undefined,
      20_000,
    );
  }

  /** The client host's address changes: the new one is added, then the old one deleted. Returns the new one. */
  moveClient(): string {
    const next = `10.77.${this.subnet}.${Number(this.clientAddr.split('.')[3]) + 100}`;
    const ns = this.ns('c');
    ip('-n', ns, 'addr', 'add', `${next}/24`, 'dev', this.dev);
    ip('-n', ns, 'addr', 'del', `${this.clientAddr}/24`, 'dev', this.dev);
    this.clientAddr = next;
    return next;
  }

  /** Every packet between the client and the servers vanishes in the middle, silently. */
  cut(): void {
    ip('-n', this.mid, 'link', 'set', 'pc', 'nomaster');
  }

  heal(): void {
    ip('-n', this.mid, 'link', 'set', 'pc', 'master', 'br0');
  }

  /** net.ipv4.tcp_retries2 in every host's namespace (TCP's patience: core/wrap/hold.ts). */
  setTcpRetries2(n: number): void {
    for (const h of ['c', 's1', 's2'] as const)
      execFileSync('ip', ['netns', 'exec', this.ns(h), 'sysctl', '-qw', `net.ipv4.tcp_retries2=${n}`]);
  }

  /** net.ipv4.tcp_retries2 in the client's namespace. */
  tcpRetries2(): number {
    return Number(
      execFileSync('ip', ['netns', 'exec', this.ns('c'), 'sysctl', '-n', 'net.ipv4.tcp_retries2'], { encoding: 'utf8' }).trim(),
    );
  }

  /** A host's spookd log lines (pino JSON), parsed. */
  log(name: 'c' | 's1' | 's2'): { time: number; msg: string; [k: string]: unknown }[] {
    return readFileSync(join(this.lab.host(name).dir, 'spookd.log'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time: number; msg: string });
  }

  async destroy(): Promise<void> {
    await this.lab.destroy();
  }
}

/**
 * The serving side's dial policy (PROTOCOL §16.5.1): which destinations each peer may make
 * this spookd dial. Default deny: a destination no rule of that peer allows is refused
 * before any socket is made, with one close code (`refused`) and no text, so a peer learns
 * nothing about what lies behind this host (refused, unreachable and closed ports look the
 * same, and take the same time).
 *
 * A rule: `ADDR:PORT`, `ADDR/PREFIX:PORT`, or a port range `LO-HI`; an IPv6 address or
 * prefix in brackets (`[fd00::/64]:443`); `*` for any address of either family except this
 * host's own (loopback, and every address of its interfaces: a service listening on 0.0.0.0
 * answers on each) and multicast (a datagram there reaches this host too), which a rule must
 * name. IPv4-mapped IPv6 destinations are matched as the IPv4 address they are. An
 * unspecified address (0.0.0.0/8, `::`) is never dialled: it reaches this host's services
 * whatever the rules say (name 127.0.0.1 or ::1 instead).
 */
import { isIPv4, isIPv6 } from 'node:net';
import { ipv6Bytes, type Target } from '../../wire/wrap.js';
import { hostAddresses, LOCAL_CHECK_MS, plainAddress } from './roam.js';

export type DialProtocol = 'tcp' | 'udp';

export interface AllowRule {
  /** A peer name, or `*` for every peer. */
  peer: string;
  to: string;
  protocol: DialProtocol;
}

interface Compiled {
  protocol: DialProtocol;
  /** undefined: any address. */
  net: { bytes: Uint8Array; prefix: number } | undefined;
  lo: number;
  hi: number;
}

/** Parse `to` (see above); throws RangeError naming what is wrong. */
export function parseDestination(to: string): Omit<Compiled, 'protocol'> {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})(?:-(\d{1,5}))?$/.exec(to.trim());
  if (!m) throw new RangeError(`"${to}": a destination is ADDR:PORT, ADDR/PREFIX:PORT or ADDR:LO-HI (IPv6 in brackets, * for any address)`);
  const lo = Number(m[3]);
  const hi = m[4] === undefined ? lo : Number(m[4]);
  if (lo < 1 || hi > 65535 || lo > hi) throw new RangeError(`"${to}": ports must be 1-65535, low to high`);
  const host = m[1] ?? m[2];
  if (host === '*') return { net: undefined, lo, hi };
  const [addr, pfx] = host.split('/');
  const bytes = addressBytes(addr);
  if (!bytes) throw new RangeError(`"${to}": "${addr}" is not an IP address`);
  const max = bytes.length * 8;
  const prefix = pfx === undefined ? max : /^\d{1,3}$/.test(pfx) ? Number(pfx) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new RangeError(`"${to}": prefix must be 0-${max}`);
  return { net: { bytes, prefix }, lo, hi };
}

/** 4 bytes for IPv4 (and IPv4-mapped IPv6), 16 for IPv6, undefined if not an address. */
function addressBytes(addr: string): Uint8Array | undefined {
  if (isIPv4(addr)) return Uint8Array.from(addr.split('.').map(Number));
  if (!isIPv6(addr)) return undefined;
  const b = ipv6Bytes(addr);
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return mapped ? b.slice(12) : b;
}

/** 0.0.0.0/8 or `::`: connecting there reaches this host. */
function unspecified(a: Uint8Array): boolean {
  return a.length === 4 ? a[0] === 0 : a.every((x) => x === 0);
}

/** 127.0.0.0/8 or ::1. */
function loopback(a: Uint8Array): boolean {
  return a.length === 4 ? a[0] === 127 : a.subarray(0, 15).every((x) => x === 0) && a[15] === 1;
}

/** 224.0.0.0/4 or ff00::/8. */
function multicast(a: Uint8Array): boolean {
  return a.length === 4 ? a[0] >> 4 === 14 : a[0] === 0xff;
}

/**
 * This host's own addresses, as `*` must not reach them: read from the interfaces again at most
 * every LOCAL_CHECK_MS (as drivers/wrap/roam.ts; getifaddrs is a netlink dump, and a peer's
 * OPENs must not each cost one). An address added since is missed until the next read; a read
 * that fails keeps the last list.
 */
export class OwnAddresses {
  private at = -Infinity;
  private keys = new Set<string>();

  constructor(
    private readonly read: () => Iterable<string> = hostAddresses,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  has(a: Uint8Array): boolean {
    const now = this.clock();
    if (now - this.at >= LOCAL_CHECK_MS) {
      this.at = now;
      try {
        const keys = new Set<string>();
        for (const s of this.read()) {
          const b = addressBytes(plainAddress(s));
          if (b) keys.add(b.join('.'));
        }
        this.keys = keys;
      } catch {
        // keep the last list
      }
    }
    return this.keys.has(a.join('.'));
  }
}

function inNet(a: Uint8Array, net: { bytes: Uint8Array; prefix: number }): boolean {
  if (a.length !== net.bytes.length) return false;
  for (let bit = 0; bit < net.prefix; bit += 8) {
    const n = Math.min(8, net.prefix - bit);
    const mask = (0xff << (8 - n)) & 0xff;
    if ((a[bit / 8] & mask) !== (net.bytes[bit / 8] & mask)) return false;
  }
  return true;
}

/** Addresses whose parse DialPolicy keeps. */
const PARSED_MAX = 1024;

export class DialPolicy {
  private readonly byPeer = new Map<string, Compiled[]>();
  /** Dials refused, per peer. */
  readonly refused = new Map<string, number>();

  constructor(
    public rules: AllowRule[],
    /** This host's addresses (injected by tests). */
    private readonly own: OwnAddresses = new OwnAddresses(),
  ) {
    this.setRules(rules);
  }

  /**
   * Replace the rules (a reload): the next dial is checked against them; connections already
   * dialled stay. Every rule is parsed before any is applied, so a bad one changes nothing.
   */
  setRules(rules: AllowRule[]): void {
    const byPeer = new Map<string, Compiled[]>();
    for (const r of rules) {
      const list = byPeer.get(r.peer) ?? [];
      list.push({ ...parseDestination(r.to), protocol: r.protocol });
      byPeer.set(r.peer, list);
    }
    this.byPeer.clear();
    for (const [k, v] of byPeer) this.byPeer.set(k, v);
    this.rules = rules;
  }

  /** May `peer` make this host dial `target`? A refusal is counted. */
  allows(peer: string, target: Target, protocol: DialProtocol): boolean {
    const a = this.bytesOf(target.address);
    // `*` reaches no address of this host (asked only when a `*` rule's port and protocol match).
    let host: boolean | undefined;
    const anyOk = (): boolean => !(host ??= loopback(a!) || multicast(a!) || this.own.has(a!));
    const match = (r: Compiled): boolean =>
      r.protocol === protocol && target.port >= r.lo && target.port <= r.hi && (r.net === undefined ? anyOk() : inNet(a!, r.net));
    const ok =
      a !== undefined && !unspecified(a) && ((this.byPeer.get(peer)?.some(match) ?? false) || (this.byPeer.get('*')?.some(match) ?? false));
    if (!ok) this.refused.set(peer, (this.refused.get(peer) ?? 0) + 1);
    return ok;
  }

  /** Parsed destination addresses: a server side dials the same few for every connection. */
  private readonly parsed = new Map<string, Uint8Array | undefined>();

  private bytesOf(address: string): Uint8Array | undefined {
    if (this.parsed.has(address)) return this.parsed.get(address);
    // Bounded: a peer naming ever new addresses only refills it.
    if (this.parsed.size >= PARSED_MAX) this.parsed.clear();
    const a = addressBytes(address);
    this.parsed.set(address, a);
    return a;
  }

  /** The rules and refusals of each peer (`spook wrap policy`). */
  toJSON(peers: string[]): { peer: string; allow: { to: string; protocol: DialProtocol }[]; refused: number }[] {
    return peers.map((peer) => ({
      peer,
      allow: this.rules.filter((r) => r.peer === peer || r.peer === '*').map((r) => ({ to: r.to, protocol: r.protocol })),
      refused: this.refused.get(peer) ?? 0,
    }));
  }
}

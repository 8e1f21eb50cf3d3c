/**
 * The ETCP session policy in the simulator: nodes with a PeerTable each (core/etcp/peers.ts)
 * and a HalfPair per peer above it, fully meshed over the seeded SimNetwork, driven as spookd
 * drives them (input, then the table's datagrams and events, then the pairs', then re-arm).
 * Faults on top of the network's loss, duplication and reordering:
 * - roaming: a node moves to a new address now and then; datagrams to its old one are lost;
 * - an eavesdropper at its own address replays captured frames and forges Data frames under
 *   live pair ids (it must never become anyone's peer address);
 * - a violator: one node sends garbage ESTP payloads on its session to one peer, which cuts
 *   it at the violation limit (the node is otherwise honest, so it comes back, and is cut again).
 * Static keys and session indices come from the run's Rng; Noise ephemerals do not (node:crypto),
 * which changes no datagram's fate: a seed reproduces the run.
 */
import { EtcpEndpoint } from '../../core/etcp/endpoint.js';
import { PeerTable, sourceOf, type Addr } from '../../core/etcp/peers.js';
import { HalfPair } from '../../core/pair/halfpair.js';
import { PairState } from '../../core/pair/lifecycle.js';
import { ProposeError } from '../../core/pair/replica.js';
import { DeltaOp } from '../../wire/delta.js';
import { FrameType } from '../../wire/constants.js';
import { encodeFrame } from '../../wire/header.js';
import { MsgType } from '../../wire/messages.js';
import { publicKeyOf, type KeyPair } from '../../crypto/primitives.js';
import { pairIdentity } from '../../core/etcp/endpoint.js';
import { EventQueue, SimNetwork, type LinkFaults, type NetStats } from './network.js';
import { Rng } from './rng.js';

export interface EtcpSimOptions {
  seed: number;
  /** Fully meshed nodes (2 or 3). */
  nodes: string[];
  faults: LinkFaults;
  durationMs: number;
  rekeyAfterMs?: number;
  sessionGraceMs?: number;
  violationLimit?: number;
  /** The pairs' keepalive and silence timeouts. */
  keepaliveMs?: number;
  silenceMs?: number;
  /** A write on every pair this often (both ends take turns). */
  writeEveryMs?: number;
  /** This node moves to a new port (and now and then a new address) this often. */
  roam?: { node: string; everyMs: number };
  /** The eavesdropper replays this many captured frames and forges as many, per second. */
  attackPerSecond?: number;
  /** `from` sends a garbage ESTP payload to `to` on its session this often. */
  violator?: { from: string; to: string; everyMs: number };
  /** Rest the network (no faults, no attacks) for the last this many ms, so pairs settle. */
  settleMs?: number;
}

export interface SimNode {
  readonly name: string;
  readonly key: KeyPair;
  readonly etcp: EtcpEndpoint;
  readonly table: PeerTable;
  readonly pairs: Map<string, HalfPair>;
  addr: Addr;
  /** Every address this node ever had. */
  readonly addrs: Set<string>;
  timerAt: number | undefined;
  /** Sessions established per peer (rekeys and re-formations). */
  readonly established: Map<string, number>;
  readonly cuts: Map<string, number>;
}

export interface EtcpSimResult {
  nodes: Map<string, SimNode>;
  net: NetStats;
  /** Invariants broken (empty when the run is good). */
  violations: string[];
  /** Times any table's address for a peer was one the peer never had. */
  foreignAddrs: number;
  replays: number;
  forgeries: number;
  roams: number;
  garbage: number;
  writes: number;
}

const ATTACKER: Addr = { address: '10.66.6.6', port: 666 };

export function runEtcpSim(o: EtcpSimOptions): EtcpSimResult {
  const rng = new Rng(o.seed);
  const queue = new EventQueue();
  const net = new SimNetwork(queue, rng, o.faults);
  const random = (n: number): Uint8Array => rng.bytes(n);
  let now = 0;
  const keys = new Map(
    o.nodes.map((n) => {
      const privateKey = rng.bytes(32);
      return [n, { privateKey, publicKey: publicKeyOf(privateKey) } as KeyPair];
    }),
  );
  const nodes = new Map<string, SimNode>();
  const result: EtcpSimResult = {
    nodes,
    net: net.stats,
    violations: [],
    foreignAddrs: 0,
    replays: 0,
    forgeries: 0,
    roams: 0,
    garbage: 0,
    writes: 0,
  };
  const fail = (v: string): void => {
    if (result.violations.length < 20) result.violations.push(`t=${now}: ${v}`);
  };

  o.nodes.forEach((name, i) => {
    const key = keys.get(name)!;
    const others = o.nodes.filter((n) => n !== name);
    const etcp = new EtcpEndpoint({ staticKey: key, peers: others.map((p) => ({ name: p, publicKey: keys.get(p)!.publicKey })), random });
    const pairs = new Map<string, HalfPair>();
    const table: PeerTable = new PeerTable({
      etcp,
      localPublicKey: key.publicKey,
      peers: others.map((p) => ({
        name: p,
        publicKey: keys.get(p)!.publicKey,
        endpoint: { address: `10.0.0.${o.nodes.indexOf(p) + 1}`, port: 4000 },
        pairState: () => pairs.get(p)!.state,
        budgetMs: 100,
      })),
      now: 0,
      clock: () => now,
      rekeyAfterMs: o.rekeyAfterMs,
      sessionGraceMs: o.sessionGraceMs,
      violationLimit: o.violationLimit ?? 100,
    });
    for (const p of others) {
      const ids = pairIdentity(key.publicKey, keys.get(p)!.publicKey);
      pairs.set(
        p,
        new HalfPair(
          {
            pairId: 0,
            localId: ids.localId,
            peerId: ids.peerId,
            seed: ids.seed,
            registers: [{ name: 'config', kind: 'map' }],
            timing: { keepaliveMs: o.keepaliveMs ?? 1000, silenceMs: o.silenceMs ?? 5000 },
            sealer: { seal: (payload) => table.seal(p, payload) },
          },
          0,
        ),
      );
    }
    const addr = { address: `10.0.0.${i + 1}`, port: 4000 };
    nodes.set(name, {
      name,
      key,
      etcp,
      table,
      pairs,
      addr,
      addrs: new Set([sourceOf(addr)]),
      timerAt: 0,
      established: new Map(),
      cuts: new Map(),
    });
  });

  const byAddr = (a: Addr): SimNode | undefined => [...nodes.values()].find((n) => n.addr.address === a.address && n.addr.port === a.port);
  const dropsOf = (n: SimNode): number => Object.values(n.table.drops).reduce((a, b) => a + (b ?? 0), 0);
  const captured: { to: Addr; datagram: Uint8Array }[] = [];
  const quiet = (): boolean => o.settleMs !== undefined && now >= o.durationMs - o.settleMs;

  function send(from: Addr, to: Addr, datagram: Uint8Array): void {
    net.send(now, sourceOf(from), sourceOf(to), datagram, (at, d) => {
      const target = byAddr(to);
      if (!target) return; // nobody there (the node moved away)
      const dropped = dropsOf(target);
      deliver(at, target, from, d);
      // The eavesdropper keeps frames the target accepted: one it never opened (lost, or ahead of its
      // session) would open the first time it came, from anywhere, as it would with WireGuard.
      if (dropsOf(target) !== dropped) return;
      if (captured.length < 256) captured.push({ to, datagram: d });
      else captured[rng.int(0, 255)] = { to, datagram: d };
    });
  }

  function deliver(at: number, target: SimNode, from: Addr, d: Uint8Array): void {
    now = Math.max(now, at);
    target.table.handleDatagram(now, from, d);
    drain(target);
  }

  /** spookd's drain: the table's datagrams, its events (pairs handle payloads), the pairs' datagrams; re-arm. */
  function drain(n: SimNode): void {
    flushTable(n);
    const touched = new Set<string>();
    for (let ev = n.table.pollEvent(); ev; ev = n.table.pollEvent()) {
      if (ev.type === 'pair-payload') {
        const pair = n.pairs.get(ev.peer)!;
        pair.handlePayload(now, ev.packetNumber, ev.payload, ev.wireBytes);
        n.table.handlePairDrops(now, ev.peer, pair.stats.drops);
        touched.add(ev.peer);
      } else if (ev.type === 'established') {
        const pair = n.pairs.get(ev.peer)!;
        pair.resetPacketSpace();
        for (const r of pair.registers.values()) r.markStatusDirty();
        n.established.set(ev.peer, (n.established.get(ev.peer) ?? 0) + 1);
        touched.add(ev.peer);
      } else if (ev.type === 'session-added') touched.add(ev.peer);
      else if (ev.type === 'violation-limit') n.cuts.set(ev.peer, (n.cuts.get(ev.peer) ?? 0) + 1);
    }
    for (const p of touched) pump(n, p);
    flushTable(n);
    checkAddrs(n);
    rearm(n);
  }

  function flushTable(n: SimNode): void {
    for (let t = n.table.pollTransmit(); t; t = n.table.pollTransmit()) send(n.addr, t.to, t.datagram);
  }

  function pump(n: SimNode, peer: string): void {
    const pair = n.pairs.get(peer)!;
    const to = n.table.peer(peer)!.addr;
    if (n.table.canSend(peer) && to) for (let d = pair.pollTransmit(now); d; d = pair.pollTransmit(now)) send(n.addr, to, d);
    else pair.collapse(now);
    while (pair.pollEvent());
  }

  function rearm(n: SimNode): void {
    // The pairs may have changed state (a decoherent one re-handshakes): the table re-keys their peers.
    for (const peer of n.pairs.keys()) n.table.refresh(peer);
    let t = n.table.pollTimeout();
    for (const [peer, p] of n.pairs) {
      // Before pollTimeout sweeps it: every register the step changed is in the active set.
      const unsound = p.audit();
      if (unsound.length > 0) throw new Error(`active set at t=${now}: ${unsound.join('; ')}`);
      let pt = p.pollTimeout();
      // Without a session a pair cannot send the ack it owes, so its timer stays due: spookd's loop
      // then polls again at once (setTimeout 0, about 1 ms), until the handshake is done.
      if (pt !== undefined && pt <= now && !n.table.canSend(peer)) pt = now + 1;
      if (pt !== undefined && (t === undefined || pt < t)) t = pt;
    }
    n.timerAt = t === undefined ? undefined : Math.max(t, now);
  }

  /** Roaming follows authenticated frames only: no table may point at an address its peer never had. */
  function checkAddrs(n: SimNode): void {
    for (const p of n.table.names) {
      const a = n.table.peer(p)!.addr;
      if (a && !nodes.get(p)!.addrs.has(sourceOf(a))) {
        result.foreignAddrs++;
        fail(`${n.name} sends to ${p} at ${sourceOf(a)}, an address ${p} never had`);
      }
    }
  }

  function timeout(n: SimNode): void {
    n.table.handleTimeout(now);
    flushTable(n);
    for (const [p, pair] of n.pairs) {
      const t = pair.pollTimeout();
      if (t !== undefined && t <= now) pair.handleTimeout(now);
      pump(n, p);
    }
    drain(n);
  }

  // Scheduled actions: writes, roaming, the eavesdropper, the violator.
  const every = (ms: number, f: () => void): void => {
    const tick = (): void => {
      if (now >= o.durationMs) return;
      f();
      queue.schedule(now + ms, tick);
    };
    queue.schedule(ms, tick);
  };
  if (o.writeEveryMs) {
    let k = 0;
    every(o.writeEveryMs, () => {
      if (quiet()) return;
      for (const n of nodes.values())
        for (const [p, pair] of n.pairs) {
          if (rng.chance(0.5) || pair.state !== PairState.ENTANGLED) continue;
          try {
            pair.propose(now, 'config', { op: DeltaOp.Set, key: new TextEncoder().encode(`${n.name}-${k++}`), value: rng.bytes(8) });
            result.writes++;
          } catch (e) {
            if (!(e instanceof ProposeError)) throw e; // too many pending: the next turn
          }
          pump(n, p);
          rearm(n);
        }
    });
  }
  if (o.roam) {
    const n = nodes.get(o.roam.node)!;
    every(o.roam.everyMs, () => {
      if (quiet()) return;
      const address = rng.chance(0.3) ? `10.1.${rng.int(0, 255)}.${rng.int(1, 254)}` : n.addr.address;
      n.addr = { address, port: rng.int(1024, 65535) };
      n.addrs.add(sourceOf(n.addr));
      result.roams++;
    });
  }
  if (o.attackPerSecond) {
    every(1000 / o.attackPerSecond, () => {
      if (quiet() || captured.length === 0) return;
      const c = rng.pick(captured);
      const target = byAddr(c.to);
      if (!target) return;
      // A replayed frame, and a forged one under a live pair id of the target (ids are seen on the path).
      send(ATTACKER, c.to, c.datagram);
      result.replays++;
      const ids = [...target.etcp.sessions.keys()];
      if (ids.length > 0) {
        const forged = encodeFrame(
          { type: FrameType.Data, flags: 0, pairId: rng.pick(ids), packetNumber: rng.int(0, 1_000_000) },
          rng.bytes(rng.int(17, 200)),
        );
        send(ATTACKER, c.to, forged);
        result.forgeries++;
      }
    });
  }
  if (o.violator) {
    const { from, to, everyMs } = o.violator;
    const n = nodes.get(from)!;
    every(everyMs, () => {
      if (quiet()) return;
      const dest = n.table.peer(to)!.addr;
      if (!n.table.canSend(to) || !dest) return;
      // A Status for no register this pair has: only an authenticated peer can send it, and it is a violation.
      const junk = new Uint8Array([MsgType.Status, 0xff, ...rng.bytes(rng.int(0, 12))]);
      send(n.addr, dest, n.table.seal(to, junk).frame);
      result.garbage++;
    });
  }

  // The loop: the earliest of the queue and the nodes' timers.
  for (let steps = 0; ; steps++) {
    if (steps > 5_000_000) throw new Error(`the ETCP simulation did not advance past t=${now} ms (a timer that never moves?)`);
    const qt = queue.peekTime() ?? Infinity;
    let tn: SimNode | undefined;
    let tt = Infinity;
    for (const n of nodes.values())
      if (n.timerAt !== undefined && n.timerAt < tt) {
        tt = n.timerAt;
        tn = n;
      }
    const next = Math.min(qt, tt);
    if (next > o.durationMs) break;
    now = Math.max(now, next);
    if (quiet() && net.faults.loss > 0) net.faults = { ...net.faults, loss: 0, dup: 0, reorder: 0 };
    if (qt <= tt) queue.pop()!.run();
    else timeout(tn!);
  }
  now = o.durationMs;
  return result;
}

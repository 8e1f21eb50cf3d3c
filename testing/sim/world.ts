/**
 * The simulator's world: HalfPairs wired to a SimNetwork and driven by one event loop
 * (datagram deliveries, scheduled actions, and each endpoint's own timer). Used by the
 * seeded checker (run.ts), the demo and the benchmarks, so they all drive the core the
 * way the daemon does: handle input, then drain events and datagrams, then re-arm.
 *
 * An endpoint with a store takes its pair's writes after each step and makes them durable
 * before it polls anything (the pair's `Ready` boundary, as spookd does). It can crash (its
 * HalfPair is dropped: datagrams to it are lost, its timer stops) and restart with a new
 * HalfPair. A StoreFault out of its store crashes the endpoint at once (fail-stop; spookd
 * fences the pair instead, which the peer sees the same way: silence): nothing of that step
 * leaves. With `syncDelayMs` a batch reaches the store 0 to that many ms after it is taken, as
 * spookd fsyncs off its event loop (PROTOCOL.md §10.1, rev 1.21): datagrams go on arriving
 * meanwhile, the endpoint takes no other batch and decides nothing, and a crash first finds it
 * on disk whole, in part or not at all.
 */
import { HalfPair, type HalfPairOptions } from '../../core/pair/halfpair.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { EventQueue, SimNetwork, type LinkFaults } from './network.js';
import { Rng } from './rng.js';
import { StoreFault, type SimPairStore } from './pair-store.js';
import { persistWrites, storeEach } from '../../core/pair/types.js';

export interface SimEndpoint {
  name: string;
  pair: HalfPair;
  timerAt: number | undefined;
  /** Crashed and not restarted yet. */
  down: boolean;
  /** Incremented by each crash (a step that crashed it can tell). */
  incarnation: number;
  /** Where its pair's writes go (a pair built with `writes: 'driver'`); none: nothing is durable. */
  store?: SimPairStore;
  /** Hands a datagram to this endpoint (made once: the network keeps it per datagram in flight). */
  deliver?: (at: number, d: Uint8Array) => void;
  /** A batch taken and not yet in its store (`syncDelayMs`). */
  syncing?: boolean;
  /** Its writes (a crash meanwhile decides what of them the disk kept). */
  syncBatch?: ReturnType<HalfPair['pollWrites']>;
  /** Batches taken from the pair, and made durable (`syncDelayMs`; a crash skips the one it lost). */
  batchesTaken?: number;
  batchesDurable?: number;
}

export class SimWorld {
  readonly queue = new EventQueue();
  readonly rng: Rng;
  readonly net: SimNetwork;
  readonly endpoints: SimEndpoint[] = [];
  now = 0;
  onEvent: (ep: SimEndpoint, ev: SpookEvent) => void = () => {};
  /** An endpoint crashed because its store failed (it stays down until restart()). */
  onStoreFault: (ep: SimEndpoint, e: StoreFault) => void = () => {};
  /** Batches reach their store up to this many ms after they are taken (0: at once, no draw). */
  syncDelayMs = 0;
  /** Batches that reached their store late, those a crash caught first, and of those the ones the disk kept (all or a prefix). */
  readonly syncs = { delayed: 0, caughtByCrash: 0, keptAtCrash: 0 };
  /**
   * FNV-1a over every datagram sent (its time, sender and bytes) and every event released (as
   * `eventKey` writes it): two runs that sent and reported the same have the same.
   */
  digest = 0x811c9dc5;
  /**
   * Audit each pair's active set after every step (HalfPair.audit) and keep `digest`: O(registers)
   * and O(octets) a step, off only where a bench times the steps.
   */
  verify = true;
  /** A batch of `ep` reached its store late (`syncDelayMs`), before what it held back is released. */
  onDurable: (ep: SimEndpoint) => void = () => {};
  /**
   * `ep` crashed with writes not yet durable: outcomes of decisions on its disk may never have left
   * (those of a batch syncing that the disk kept, and those of durable batches, whose events wait
   * behind the writes that followed them: HalfPair.pollEvent releases nothing while any is pending).
   */
  onUnannouncedAtCrash: (ep: SimEndpoint) => void = () => {};

  constructor(seed: number, faults: LinkFaults) {
    this.rng = new Rng(seed);
    this.net = new SimNetwork(this.queue, this.rng, faults);
  }

  /** Two endpoints of one pair, member ids 1 (sequencer) and 2. */
  addPair(names: [string, string], opts: Omit<HalfPairOptions, 'localId' | 'peerId'>): [SimEndpoint, SimEndpoint] {
    return this.adopt(names, [
      new HalfPair({ ...opts, localId: 1, peerId: 2 }, this.now),
      new HalfPair({ ...opts, localId: 2, peerId: 1 }, this.now),
    ]);
  }

  /** Wire two already-built HalfPairs of one pair into the world (e.g. after preloading state). */
  adopt(names: [string, string], pairs: [HalfPair, HalfPair], stores?: [SimPairStore, SimPairStore]): [SimEndpoint, SimEndpoint] {
    const a: SimEndpoint = { name: names[0], pair: pairs[0], timerAt: undefined, down: false, incarnation: 0, store: stores?.[0] };
    const b: SimEndpoint = { name: names[1], pair: pairs[1], timerAt: undefined, down: false, incarnation: 0, store: stores?.[1] };
    this.endpoints.push(a, b);
    this.drain(a);
    this.drain(b);
    return [a, b];
  }

  private peerOf(ep: SimEndpoint): SimEndpoint {
    const i = this.endpoints.indexOf(ep);
    return this.endpoints[i % 2 === 0 ? i + 1 : i - 1];
  }

  /** The process dies: its HalfPair and everything it had not sent are gone; its store stays. */
  crash(ep: SimEndpoint): void {
    if (!ep.down && ep.pair.awaitingWrites) this.onUnannouncedAtCrash(ep);
    ep.down = true;
    ep.timerAt = undefined;
    ep.incarnation++;
    if (ep.syncing && ep.syncBatch) this.crashMidSync(ep, ep.syncBatch);
  }

  /**
   * The process died with a batch written and not yet fsynced (nothing of it left). The disk kept
   * all of it (the process alone died), none (power loss), or a prefix of each file's writes,
   * file by file: spookd fsyncs a batch's files in parallel, so a register's log, its pending list
   * and its lease (rev 1.22: no longer written atomically first) each reach the disk on their own.
   * A batch that replaced a register was durable whole before it went on: DiskStore fsyncs the
   * rest of the batch, then writes the snapshot, at once (`take` puts the snapshot last).
   */
  private crashMidSync(ep: SimEndpoint, writes: ReturnType<HalfPair['pollWrites']>): void {
    ep.syncBatch = undefined;
    ep.store!.dropTaken(); // a crashed process ends no batch
    const fate = this.rng.int(0, 2); // 0: none, 1: all, 2: a prefix of each file
    let barrier = 0;
    for (let i = 0; i < writes.length; i++) if (writes[i].kind === 'replaced') barrier = i + 1;
    const fileOf = (w: (typeof writes)[number]): string => (w.kind === 'replaced' ? '' : `${w.kind} ${w.register}`);
    const total = new Map<string, number>();
    for (let i = barrier; i < writes.length; i++) total.set(fileOf(writes[i]), (total.get(fileOf(writes[i])) ?? 0) + 1);
    const keep = new Map<string, number>();
    for (const [file, n] of total) keep.set(file, fate === 0 ? 0 : fate === 1 ? n : this.rng.int(0, n));
    const kept = writes.filter((w, i) => {
      if (i < barrier) return true;
      const file = fileOf(w);
      const left = keep.get(file)!;
      keep.set(file, left - 1);
      return left > 0;
    });
    if (kept.length === 0) return;
    this.syncs.keptAtCrash++;
    try {
      // No end of batch: a crashed process rewrites nothing (a snapshot now would take the dead
      // replica's memory, which holds the whole batch, for what the disk kept).
      storeEach(ep.store!, kept);
    } catch (e) {
      if (!(e instanceof StoreFault)) throw e; // a fault here is one more write the disk did not keep
    }
  }

  /** The process starts again with `pair` (loaded from its store). */
  restart(ep: SimEndpoint, pair: HalfPair): void {
    ep.pair = pair;
    ep.down = false;
    ep.syncing = false;
    ep.batchesDurable = ep.batchesTaken; // the batch a crash lost is never made durable
    // spookd's peer sees a new ETCP session (a new handshake) and forgets the old packet
    // space, the fragments under way included (§3.7): the restarted end numbers from scratch.
    const peer = this.peerOf(ep);
    if (!peer.down) peer.pair.resetPacketSpace();
    this.drain(ep);
  }

  /**
   * Run one step of the endpoint's core, then make its writes durable (its store); a
   * StoreFault out of either crashes the endpoint. False if it did.
   */
  step(ep: SimEndpoint, run: (pair: HalfPair) => void): boolean {
    if (ep.down) return false;
    try {
      run(ep.pair);
      this.commit(ep);
      return true;
    } catch (e) {
      return this.faulted(ep, e);
    }
  }

  /** step(ep, (p) => p.handleDatagram(at, d)) without a closure per datagram. */
  private receive(ep: SimEndpoint, at: number, d: Uint8Array): boolean {
    if (ep.down) return false;
    try {
      ep.pair.handleDatagram(at, d);
      this.commit(ep);
      return true;
    } catch (e) {
      return this.faulted(ep, e);
    }
  }

  /** A StoreFault out of a step crashes the endpoint (false); anything else is a bug and propagates. */
  private faulted(ep: SimEndpoint, e: unknown): false {
    if (!(e instanceof StoreFault)) throw e;
    this.crash(ep);
    this.onStoreFault(ep, e);
    return false;
  }

  /** The pair's writes since the last commit, to its store; then what they held back may leave. */
  private commit(ep: SimEndpoint): void {
    if (!ep.store || ep.syncing) return; // one batch at a time, as spookd's stores
    const writes = ep.pair.pollWrites();
    if (writes.length === 0) return;
    if (this.syncDelayMs > 0) return this.syncLater(ep, writes);
    persistWrites(ep.store, ep.store.take(writes)); // a StoreFault leaves them unacknowledged: nothing they caused is released
    ep.pair.writesDurable();
  }

  /** The batch reaches the store later (its fsync off the event loop); then what it held back may leave. */
  private syncLater(ep: SimEndpoint, polled: ReturnType<HalfPair['pollWrites']>): void {
    const writes = ep.store!.take(polled); // what it snapshots, as the batch leaves the replicas
    ep.syncing = true;
    ep.syncBatch = writes;
    ep.batchesTaken = (ep.batchesTaken ?? 0) + 1;
    const incarnation = ep.incarnation;
    this.queue.schedule(this.now + this.rng.int(0, this.syncDelayMs), () => {
      if (ep.incarnation !== incarnation) {
        this.syncs.caughtByCrash++; // crashed first: nothing of it left, and crashMidSync chose what the disk kept
        return;
      }
      ep.syncing = false;
      ep.syncBatch = undefined;
      this.syncs.delayed++;
      try {
        persistWrites(ep.store!, writes);
      } catch (e) {
        this.faulted(ep, e);
        return;
      }
      ep.pair.writesDurable();
      ep.batchesDurable = (ep.batchesDurable ?? 0) + 1;
      this.onDurable(ep);
      this.drain(ep);
    });
  }

  /** Deliver events, send every datagram the endpoint has, re-arm its timer. */
  drain(ep: SimEndpoint): void {
    if (ep.down) return;
    const now = this.now;
    const pair = ep.pair;
    for (let ev = pair.pollEvent(); ev; ev = pair.pollEvent()) this.released(ep, ev);
    let datagrams: Uint8Array[] | undefined;
    // As step() twice, without a closure per call (the simulator's hot loop): collapse first (a
    // store write, made durable before anything is polled), then the datagrams; a fault in either
    // crashes the endpoint and sends nothing of this drain.
    try {
      if (!ep.syncing) pair.collapse(now); // spookd decides nothing for a pair whose batch is syncing
      this.commit(ep);
      for (let d = pair.pollTransmit(now); d; d = pair.pollTransmit(now)) (datagrams ??= []).push(d);
      this.commit(ep);
    } catch (e) {
      if (!(e instanceof StoreFault)) throw e;
      this.crash(ep);
      this.onStoreFault(ep, e);
      return;
    }
    if (datagrams !== undefined) {
      const to = this.peerOf(ep);
      const deliver = (to.deliver ??= (at: number, dg: Uint8Array) => {
        if (this.receive(to, at, dg)) this.drain(to);
      });
      for (const d of datagrams) {
        if (this.verify) this.digest = fnv1a(fnv1a(this.digest, [now >>> 0, (now * 1000) >>> 0, ep.name.charCodeAt(0)]), d);
        this.net.send(now, ep.name, to.name, d, deliver);
      }
    }
    for (let ev = pair.pollEvent(); ev; ev = pair.pollEvent()) this.released(ep, ev);
    // Before pollTimeout sweeps it: every register the step changed is in the active set.
    const unsound = this.verify ? pair.audit() : [];
    if (unsound.length > 0) throw new Error(`active set at t=${now}: ${unsound.join('; ')}`);
    ep.timerAt = pair.pollTimeout();
  }

  private released(ep: SimEndpoint, ev: SpookEvent): void {
    if (this.verify) {
      const key = `${ep.name}${eventKey(ev)}`;
      let h = this.digest;
      for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
      this.digest = h;
    }
    this.onEvent(ep, ev);
  }

  /** Run `action` at time `at`, then drain every endpoint it may have touched. */
  at(at: number, action: () => void): void {
    this.queue.schedule(at, () => {
      action();
      for (const ep of this.endpoints) this.drain(ep);
    });
  }

  /**
   * Advance the loop until `until` (ms) or until `stop()` holds (checked every
   * `checkEveryMs`). Returns true if stopped by `stop`.
   */
  run(until: number, stop?: () => boolean, checkEveryMs = 100, maxSteps = 5_000_000): boolean {
    let nextCheck = this.now;
    for (let steps = 0; steps < maxSteps; steps++) {
      const qt = this.queue.peekTime() ?? Infinity;
      let timerEp: SimEndpoint | undefined;
      let tt = Infinity;
      for (const e of this.endpoints) {
        if (e.timerAt !== undefined && e.timerAt < tt) {
          tt = e.timerAt;
          timerEp = e;
        }
      }
      const next = Math.min(qt, tt);
      if (stop && this.now >= nextCheck) {
        nextCheck = this.now + checkEveryMs;
        if (stop()) return true;
      }
      if (next === Infinity || next > until) {
        this.now = Math.max(this.now, until);
        return stop ? stop() : false;
      }
      this.now = Math.max(this.now, next);
      if (qt <= tt) this.queue.pop()!.run();
      else if (this.step(timerEp!, (p) => p.handleTimeout(this.now))) this.drain(timerEp!);
    }
    throw new Error(`simulation did not advance past t=${this.now} ms in ${maxSteps} steps (a timer that never moves?)`);
  }
}

/** FNV-1a (32 bits) continued from `h` over `values`, each taken octet by octet from its low end (a byte is one octet). */
function fnv1a(h: number, values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) {
    let x = values[i];
    do {
      h = Math.imul(h ^ (x & 0xff), 0x01000193) >>> 0;
      x >>>= 8;
    } while (x !== 0);
  }
  return h;
}

/** What the digest keeps of an event: everything but a collapse's entries (its hash stands for them). */
function eventKey(ev: SpookEvent): string {
  switch (ev.type) {
    case 'lifecycle':
      return `L${ev.at} ${ev.from}>${ev.to} ${ev.cause}`;
    case 'collapse':
      return `C${ev.at} ${ev.register}@${ev.version} ${ev.hash}`;
    case 'outcome':
      return `O${ev.at} ${ev.register} ${ev.origin}:${ev.seq} ${ev.verdict}@${ev.version}`;
    case 'reentangled':
      return `R${ev.at} ${ev.register} ${ev.method}@${ev.version}`;
    case 'drop':
      return `D${ev.at} ${ev.reason} ${ev.detail}`;
  }
}

/**
 * One seeded simulation run: two HalfPairs over a faulty simulated network under a
 * random workload of every delta kind (conflicting cas and appends included), then a
 * settle phase, then the checks (docs/ARCHITECTURE.md, "Simulation"). With `crashes` an
 * endpoint's process dies (its store, testing/sim/pair-store.ts, survives) and restarts from
 * what it made durable; with `storeFaults` a store call fails, durable or not, and the endpoint
 * stops at once as spookd does (fail-stop), then restarts. The checks:
 *  - every endpoint at the same (version, hash) per register, pair ENTANGLED;
 *  - no committed delta lost: replaying the sequencer's committed history from empty
 *    gives the final hash at both ends, and every candidate reported committed is in it;
 *  - no candidate both committed and rejected, and both ends decided every collapse alike;
 *  - every candidate eventually committed or rejected at its proposer.
 */
import { ownPart, type EntryDelta } from '../../wire/cross.js';
import { isPart } from '../../core/pair/shared.js';
import { DeltaOp, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { HalfPair, type HalfPairOptions, type Timing } from '../../core/pair/halfpair.js';
import { hashHex } from '../../core/register/hash.js';
import { PairState } from '../../core/pair/lifecycle.js';
import { MapState } from '../../core/register/map.js';
import { StreamState } from '../../core/register/stream.js';
import { ProposeError } from '../../core/pair/replica.js';
import { QUOTA_DEFAULTS } from '../../core/register/quota.js';
import { decodeMessages, MsgType, verdictByte, type CollapseEntry } from '../../wire/messages.js';
import type { NetStats } from './network.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { SimPairStore } from './pair-store.js';
import { SimWorld, type SimEndpoint } from './world.js';

export interface SimOptions {
  seed: number;
  loss: number;
  dup: number;
  reorder: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** Random link cuts (some longer than the silence timeout) during the workload. */
  cuts: boolean;
  /** Probability per op of corrupting one follower entry in memory (exercises hash-mismatch recovery). */
  corrupt: number;
  /**
   * Whose memory `corrupt` hits. The follower is repaired by re-entanglement; corrupting the
   * sequencer (the collapse authority) is a fault the protocol cannot repair, and the
   * checker must report it as divergence from the committed history.
   */
  corruptTarget?: 'follower' | 'sequencer';
  /** Crash an endpoint 1-2 times during the workload (all but its store lost) and restart it 0.1-8 s later. */
  crashes?: boolean;
  /**
   * Probability per store call (append, snapshot, lease, pending) during the workload that it
   * fails, its write made durable or not: the endpoint stops (fail-stop) and restarts 0.1-3 s later.
   */
  storeFaults?: number;
  /**
   * Probability per proposal that it is a transaction (DeltaOp.Txn) of 2-5 ops: set/del/cas on
   * distinct keys, or chained appends. 0 or absent draws nothing, so seeds without it replay as before.
   */
  txn?: number;
  /**
   * Probability per proposal that it is a cross-register txn (DeltaOp.Cross) over kv and log: a
   * set or cas on kv and an append on log, anchored on either (with `extraRegisters`, half of
   * them a set on an extra register instead of the append). 0 or absent draws nothing.
   */
  cross?: number;
  /**
   * Each batch of writes reaches the store 0 to this many ms after it is taken, as spookd fsyncs
   * off its event loop (§10.1, rev 1.21); a crash first finds it on disk whole, in part or not at
   * all. 0 or absent: at once, no draw.
   */
  syncDelayMs?: number;
  /** Each end's store snapshots a register once its log holds more records than this (default 48; DiskStore: past 64 MiB). */
  snapshotRecords?: number;
  /**
   * Reload a register's quota 1-2 times during the workload: one end first, the other 0-8 s later
   * (the ends' registers differ meanwhile and nothing is decided, §6.3); a restart keeps the
   * reloaded configuration. Absent or false: no draw.
   */
  reloads?: boolean;
  /**
   * Map registers beyond kv and log (m1, m2, ...) that one proposal in five writes (a set on one
   * drawn at random): most of them are quiet most of the time, out of the pair's active set
   * (core/pair/active.ts). 0 or absent: none, and no draw.
   */
  extraRegisters?: number;
  /** Every step of both pairs visits every register (HalfPairOptions.visitEvery): the differential reference. */
  visitEvery?: boolean;
  /**
   * Called at each start of an endpoint (a restart too) with its new HalfPair: an observer of the
   * events it releases, beside the checker's own (a test's change feeds).
   */
  observers?: (endpoint: string, pair: HalfPair) => (ev: SpookEvent) => void;
  /** Local proposals per endpoint. */
  ops: number;
  workloadMs: number;
  /** Longest the settle phase may run before the run is declared not converged. */
  settleMs: number;
  /**
   * Probability per set, cas or append that it carries a large value (8 KiB to 512 KiB, up to a
   * 1 MiB once in ten), so messages are fragmented (§3.7). Omitted or 0: none, and the seeds
   * replay as before (no draw is made).
   */
  largeValues?: number;
  /** Log bound in records; small values force reconciliation and full transfers after cuts. Omit to draw per seed. */
  logRecords?: number;
  timing?: Partial<Timing>;
  trace?: (line: string) => void;
}

/** A committed entry's id in its register's history: a part is named by its anchor's record. */
const entryId = (e: CollapseEntry): string =>
  e.verdict === 'committed' && e.delta.op === DeltaOp.Part ? `part of ${e.delta.anchor} v${e.delta.anchorVersion}` : `${e.origin}:${e.seq}`;

export const SIM_DEFAULTS: Omit<SimOptions, 'seed'> = {
  loss: 0.1,
  dup: 0.02,
  reorder: 0.1,
  minDelayMs: 2,
  maxDelayMs: 30,
  cuts: false,
  corrupt: 0,
  ops: 60,
  workloadMs: 20_000,
  settleMs: 240_000,
};

export interface SimResult {
  seed: number;
  converged: boolean;
  lostCommits: number;
  violations: string[];
  bytesSent: number;
  datagrams: number;
  fullTransfers: number;
  reconciles: number;
  /** Log diffs the sequencer built (§8.2.1), since its last restart. */
  diffs: number;
  reentanglements: number;
  committed: number;
  rejected: number;
  refused: number;
  cuts: number;
  crashes: number;
  storeFaults: number;
  /** `syncDelayMs`: batches that reached their store late, those a crash caught first, and of those the ones the disk kept (all or a prefix). */
  syncs: { delayed: number; caughtByCrash: number; keptAtCrash: number };
  /** Sequencer own candidates recorded because they were still undecided when told "pending" (secureOwn). */
  securedOwn: number;
  simTimeMs: number;
  /** A digest of every datagram sent and every event released (SimWorld.digest): equal runs did the same. */
  digest: number;
  final: Record<string, { version: number; hash: string }[]>;
  net: NetStats;
}

const REGISTERS = [
  { name: 'kv', kind: 'map' as const },
  { name: 'log', kind: 'stream' as const },
];
/** The quota a reload sets (§6.3: both ends must hold the same; the workload's 12 keys never reach it). */
const RELOADED_QUOTA = { ...QUOTA_DEFAULTS, maxKeys: QUOTA_DEFAULTS.maxKeys / 2 };
const KEYS = Array.from({ length: 12 }, (_, i) => new TextEncoder().encode(`key-${i}`));

export function runSim(partial: Partial<SimOptions> & { seed: number }): SimResult {
  const o: SimOptions = { ...SIM_DEFAULTS, ...partial };
  const world = new SimWorld(o.seed, { loss: o.loss, dup: o.dup, reorder: o.reorder, minDelayMs: o.minDelayMs, maxDelayMs: o.maxDelayMs });
  world.syncDelayMs = o.syncDelayMs ?? 0;
  const { rng, net } = world;
  const trace = o.trace;
  const logRecords = o.logRecords ?? rng.pick([8, 32, 4096]);
  const seedHash = rng.int(0, 0x7fffffff);
  const extra = Array.from({ length: o.extraRegisters ?? 0 }, (_, i) => ({ name: `m${i + 1}`, kind: 'map' as const }));
  /** Every register the pair declares (the workload's draws of one still pick among kv and log: seeds replay). */
  const allRegisters = [...REGISTERS, ...extra];
  const registers = allRegisters.map((r) => ({ ...r, maxPending: 64, log: { maxRecords: logRecords, maxBytes: 1 << 20 } }));
  const violations: string[] = [];
  const violate = (msg: string): void => {
    if (violations.length < 20) violations.push(msg);
    trace?.(`VIOLATION ${msg}`);
  };

  // What the checker knows.
  const proposed = new Set<string>();
  /**
   * With syncDelayMs: candidates whose proposal is not durable yet (spookd answers nothing before),
   * by the endpoint, its incarnation and the batch that holds the proposal.
   */
  const awaiting = new Map<string, { ep: SimEndpoint; incarnation: number; batch: number }>();
  const acknowledge = (id: string): void => {
    awaiting.delete(id);
    proposed.add(id);
  };
  world.onDurable = (ep) => {
    for (const [id, a] of awaiting) if (a.ep === ep && a.incarnation === ep.incarnation && a.batch <= ep.batchesDurable!) acknowledge(id);
  };
  const outcomes = new Map<string, 'committed' | 'rejected'>();
  const verdictSeen = new Map<string, 'committed' | 'rejected'>();
  const history = new Map<string, Map<number, string>>(); // register → version → entries signature (sequencer)
  const committedDeltas = new Map<string, { version: number; delta: Delta; id: string }[]>();
  const followerSigs: { register: string; version: number; sig: string }[] = [];
  for (const r of allRegisters) {
    history.set(r.name, new Map());
    committedDeltas.set(r.name, []);
  }
  let refused = 0;
  let reconciles = 0;
  let cutCount = 0;
  let crashes = 0;
  let storeFaults = 0;
  /** Sequencer own candidates recorded because they were still undecided when told "pending" (secureOwn). */
  let securedOwn = 0;
  /** Proposals whose endpoint stopped before answering: the proposer never heard a number, so any end is right. */
  const unacknowledged = new Set<string>();
  /** Endpoints that stopped in the middle of a step (a store fault) or with writes not yet durable: an outcome may be known from the history only. */
  const faulted = new Set<string>();
  // A crash with writes not yet durable (a batch syncing, which the disk may keep; durable batches
  // whose outcomes wait behind it): as after a store fault, a decision may be on disk with its
  // outcome never sent, so the proposer learns it from the history.
  world.onUnannouncedAtCrash = (ep) => faulted.add(ep.name);
  const durable = o.crashes || (o.storeFaults ?? 0) > 0 || (o.syncDelayMs ?? 0) > 0;
  const commitsFromStore = durable;

  /** The test's observers (SimOptions.observers), by endpoint, of its current HalfPair. */
  const observers = new Map<string, (ev: SpookEvent) => void>();
  const observe = (name: string, pair: HalfPair): void => void (o.observers && observers.set(name, o.observers(name, pair)));
  world.onEvent = (ep, ev) => {
    observers.get(ep.name)?.(ev);
    switch (ev.type) {
      case 'lifecycle':
        trace?.(`${t(ev.at)} ${ep.name} ${ev.from} -> ${ev.to} (${ev.cause})`);
        return;
      case 'collapse': {
        const sig = ev.entries.map((e) => `${e.origin}:${e.seq}=${verdictByte(e)}`).join(',');
        noteVerdicts(ev.register, ev.entries);
        if (ep === seqEp && !commitsFromStore) {
          history.get(ev.register)!.set(ev.version, sig);
          for (const e of ev.entries) {
            if (e.verdict === 'committed')
              committedDeltas.get(ev.register)!.push({ version: ev.version, delta: ownPart(e.delta), id: entryId(e) });
          }
        } else followerSigs.push({ register: ev.register, version: ev.version, sig });
        trace?.(`${t(ev.at)} ${ep.name} collapse ${ev.register} v${ev.version} h=${ev.hash} [${sig}]`);
        return;
      }
      case 'outcome': {
        const id = `${ev.register}/${ev.origin}:${ev.seq}`;
        if (outcomes.has(id)) violate(`${id} decided twice at its proposer`);
        if (awaiting.has(id)) acknowledge(id); // an outcome is released only once what caused it is durable
        if (!proposed.has(id) && !unacknowledged.has(id)) violate(`${id} has an outcome but was never proposed`);
        outcomes.set(id, ev.verdict);
        trace?.(
          `${t(ev.at)} ${ep.name} outcome ${id} ${ev.verdict}${ev.verdict === 'rejected' ? ` (${ev.reason})` : ''} at v${ev.version}`,
        );
        return;
      }
      case 'reentangled':
        if (ev.method !== 'log') reconciles++;
        trace?.(`${t(ev.at)} ${ep.name} re-entangled ${ev.register} by ${ev.method} at v${ev.version}`);
        return;
      case 'drop':
        trace?.(`${t(ev.at)} ${ep.name} drop ${ev.reason}: ${ev.detail}`);
        return;
    }
  };
  const noteVerdicts = (register: string, entries: readonly CollapseEntry[]): void => {
    for (const e of entries) {
      if (isPart(e)) continue; // numbered in its anchor register, decided there
      const id = `${register}/${e.origin}:${e.seq}`;
      const prev = verdictSeen.get(id);
      if (prev !== undefined && prev !== e.verdict) violate(`${id} both committed and rejected`);
      verdictSeen.set(id, e.verdict);
    }
  };
  const pairOpts: Omit<HalfPairOptions, 'localId' | 'peerId'> = {
    pairId: 7,
    seed: seedHash,
    registers,
    timing: o.timing,
    ...(o.visitEvery ? { visitEvery: true } : {}),
  };
  const stores = [new SimPairStore(o.snapshotRecords), new SimPairStore(o.snapshotRecords)];
  /** Registers whose quota a reload changed, per endpoint (its configuration file: a restart keeps it). */
  const reloaded = [new Set<string>(), new Set<string>()];
  /** As spookd: a HalfPair handing its writes to the world (for the endpoint's store), each register loaded from it before the pair runs. */
  const boot = (i: 0 | 1): HalfPair => {
    const regs = registers.map((r) => (reloaded[i].has(r.name) ? { ...r, quota: RELOADED_QUOTA } : r));
    const pair = new HalfPair({ ...pairOpts, registers: regs, localId: i + 1, peerId: 2 - i, writes: 'driver' }, world.now);
    for (const r of pair.registers.values()) stores[i].load(r);
    groupsWhole(i, pair);
    return pair;
  };
  /**
   * Committed cross-register txns the sequencer made durable, by anchor register and version:
   * the version of each part in its register (§4.6).
   */
  const crossGroups = new Map<string, { register: string; at: number }[]>();
  /**
   * A restart loads every committed cross-register txn whole or not at all, at either end
   * (QSCS), unless a register holding its part reached it by a re-entanglement that replaced its
   * state: it may show its part before another register shows its own, in memory and so on disk
   * (§4.6).
   */
  const groupsWhole = (i: 0 | 1, pair: HalfPair): void => {
    for (const parts of crossGroups.values()) {
      const held = parts.map((p) => pair.register(p.register).version >= p.at);
      if (held.every((h) => h === held[0])) continue;
      if (!parts.some((p, j) => held[j] && (stores[i].reconciledTo.get(p.register) ?? 0) >= p.at))
        violate(
          `${i === 0 ? 'A' : 'B'} restarted with a torn cross-register txn: ${parts.map((p, j) => `${p.register} v${p.at} ${held[j] ? 'held' : 'missing'}`).join(', ')}`,
        );
    }
  };
  const pairs: [HalfPair, HalfPair] = durable
    ? [boot(0), boot(1)]
    : [new HalfPair({ ...pairOpts, localId: 1, peerId: 2 }, world.now), new HalfPair({ ...pairOpts, localId: 2, peerId: 1 }, world.now)];
  observe('A', pairs[0]); // before adopt's first drain releases anything
  observe('B', pairs[1]);
  const eps = world.adopt(['A', 'B'], pairs, durable ? [stores[0], stores[1]] : undefined);
  const seqEp = eps[0];
  if (commitsFromStore) {
    // The committed history is what the sequencer made durable: a collapse on its disk counts
    // even if it stopped before announcing it (it serves that version after its restart).
    stores[0].onDurable = (register, rec) => {
      const m = decodeMessages(rec.encoded).messages[0];
      if (m?.type !== MsgType.Collapse) return violate(`${register}: a durable log record that is not a Collapse`);
      const sig = m.entries.map((e) => `${e.origin}:${e.seq}=${verdictByte(e)}`).join(',');
      const h = history.get(register)!;
      if (h.has(m.version)) violate(`${register} v${m.version} made durable twice at the sequencer`);
      h.set(m.version, sig);
      noteVerdicts(register, m.entries);
      for (const e of m.entries) {
        if (e.verdict === 'committed') committedDeltas.get(register)!.push({ version: m.version, delta: ownPart(e.delta), id: entryId(e) });
        if (e.verdict === 'committed' && e.delta.op === DeltaOp.Cross)
          crossGroups.set(
            `${register}@${m.version}`,
            e.delta.parts.map((p) => ({ register: p.register, at: p.at })),
          );
      }
    };
    // A torn cross-register group dropped at the restart: those records were never acknowledged.
    stores[0].onCut = (register, dropped) => {
      const versions = new Set<number>();
      for (const raw of dropped) {
        const m = decodeMessages(raw).messages[0];
        if (m?.type !== MsgType.Collapse) continue;
        // Its batch never completed, so nothing of it may have left the host.
        const sig = m.entries.map((e) => `${e.origin}:${e.seq}=${verdictByte(e)}`).join(',');
        if (followerSigs.some((f) => f.register === register && f.version === m.version && f.sig === sig))
          violate(`${register} v${m.version}: the follower applied a record the sequencer's restart cut (it had left the host)`);
        versions.add(m.version);
        crossGroups.delete(`${register}@${m.version}`);
        history.get(register)!.delete(m.version);
        for (const e of m.entries) if (!isPart(e)) verdictSeen.delete(`${register}/${e.origin}:${e.seq}`);
      }
      committedDeltas.set(
        register,
        committedDeltas.get(register)!.filter((c) => !versions.has(c.version)),
      );
    };
  }
  const restartLater = (ep: SimEndpoint, down: number): void => {
    const i = eps.indexOf(ep) as 0 | 1;
    world.at(world.now + down, () => {
      if (!ep.down) return;
      trace?.(`${t(world.now)} ${ep.name} restarts from its store`);
      let pair: HalfPair;
      try {
        pair = boot(i);
      } catch (e) {
        // What spookd would refuse to start on (a StoreError): the store kept an unusable history.
        return violate(`${ep.name} cannot restart from its store: ${(e as Error).message}`);
      }
      observe(ep.name, pair); // before the restart's first drain releases anything
      world.restart(ep, pair);
    });
  };
  // A follower's candidate made durable by a call that then failed: its proposer never heard
  // of it, but it is proposed again after the restart and decided like any other.
  stores[1].onProposed = (register, seq) => unacknowledged.add(`${register}/2:${seq}`);
  world.onStoreFault = (ep, e) => {
    storeFaults++;
    faulted.add(ep.name);
    const down = rng.int(100, 3000);
    trace?.(`${t(world.now)} ${ep.name} FAULT: ${e.message}; stops, restarts in ${down} ms`);
    restartLater(ep, down);
  };
  if (o.storeFaults)
    for (const s of stores)
      s.fault = () => (world.now <= o.workloadMs && rng.chance(o.storeFaults!) ? (rng.chance(0.5) ? 'kept' : 'lost') : undefined);

  /** A random proposal at `ep`; `sameTurn` runs in the step that proposes it, before the commit pass. */
  const propose = (ep: SimEndpoint, now: number, sameTurn?: (pair: HalfPair) => void): void => {
    const kind = rng.int(0, 9);
    let register = 'kv';
    let delta: Delta;
    const key = rng.pick(KEYS);
    const large = (): number => (rng.chance(0.1) ? 1 << 20 : rng.int(8 << 10, 512 << 10));
    const big = o.largeValues !== undefined && o.largeValues > 0 && kind !== 3 && rng.chance(o.largeValues);
    if (extra.length > 0 && rng.chance(0.2)) {
      proposeEntry(ep, now, rng.pick(extra).name, { op: DeltaOp.Set, key, value: rng.bytes(rng.int(0, 24)) }, sameTurn);
      return;
    }
    if (o.cross && rng.chance(o.cross)) {
      const cur = (ep.pair.register('kv').state as MapState).get(key);
      const kvPart: Delta = rng.chance(0.5)
        ? { op: DeltaOp.Set, key, value: rng.bytes(rng.int(0, 24)) }
        : { op: DeltaOp.Cas, key, expect: rng.chance(0.8) ? (cur?.version ?? 0) : rng.int(0, 5), value: rng.bytes(rng.int(1, 16)) };
      // With extra registers, half the txns pair kv with one of them (mostly quiet: a txn wakes it) instead of log.
      const other = extra.length > 0 && rng.chance(0.5) ? rng.pick(extra).name : 'log';
      const otherPart: Delta =
        other === 'log'
          ? { op: DeltaOp.Append, offset: ep.pair.register('log').nextAppendOffset, data: rng.bytes(rng.int(1, 60)) }
          : { op: DeltaOp.Set, key, value: rng.bytes(rng.int(0, 24)) };
      const kvFirst = rng.chance(0.5);
      register = kvFirst ? 'kv' : other;
      const parts: [string, Delta][] = kvFirst
        ? [
            ['kv', kvPart],
            [other, otherPart],
          ]
        : [
            [other, otherPart],
            ['kv', kvPart],
          ];
      proposeEntry(ep, now, register, { op: DeltaOp.Cross, parts: parts.map(([r, d]) => ({ register: r, at: 0, delta: d })) }, sameTurn);
      return;
    }
    if (o.txn && rng.chance(o.txn)) {
      const n = rng.int(2, 5);
      if (kind < 7) {
        const keys = [...KEYS].sort(() => rng.int(-1, 1)).slice(0, n);
        const ops: SimpleDelta[] = keys.map((k) => {
          const cur = (ep.pair.register('kv').state as MapState).get(k);
          const c = rng.int(0, 2);
          if (c === 0) return { op: DeltaOp.Set, key: k, value: rng.bytes(rng.int(0, 24)) };
          if (c === 1) return { op: DeltaOp.Del, key: k };
          return {
            op: DeltaOp.Cas,
            key: k,
            expect: rng.chance(0.8) ? (cur?.version ?? 0) : rng.int(0, 5),
            value: rng.bytes(rng.int(1, 16)),
          };
        });
        delta = { op: DeltaOp.Txn, ops };
      } else {
        register = 'log';
        let off = ep.pair.register('log').nextAppendOffset;
        const ops: SimpleDelta[] = [];
        for (let i = 0; i < n; i++) {
          const data = rng.bytes(rng.int(1, 60));
          ops.push({ op: DeltaOp.Append, offset: off, data });
          off += data.length;
        }
        delta = { op: DeltaOp.Txn, ops };
      }
    } else if (kind < 3) delta = { op: DeltaOp.Set, key, value: rng.bytes(big ? large() : rng.int(0, 48)) };
    else if (kind < 4) delta = { op: DeltaOp.Del, key };
    else if (kind < 7) {
      const cur = (ep.pair.register('kv').state as MapState).get(key);
      // Mostly the version this endpoint last saw (races make some stale), sometimes a wrong one.
      const expect = rng.chance(0.8) ? (cur?.version ?? 0) : rng.int(0, 5);
      delta = { op: DeltaOp.Cas, key, expect, value: rng.bytes(big ? large() : rng.int(1, 32)) };
    } else {
      register = 'log';
      delta = { op: DeltaOp.Append, offset: ep.pair.register('log').nextAppendOffset, data: rng.bytes(big ? large() : rng.int(1, 200)) };
    }
    proposeEntry(ep, now, register, delta, sameTurn);
  };
  const proposeEntry = (ep: SimEndpoint, now: number, register: string, delta: EntryDelta, sameTurn?: (pair: HalfPair) => void): void => {
    if (ep.down) return;
    let id: { origin: number; seq: number } | undefined;
    const incarnation = ep.incarnation;
    // The proposal's write goes in the next batch taken (the one syncing, if any, is before it).
    const batch = (ep.batchesTaken ?? 0) + 1;
    world.step(ep, (pair) => {
      try {
        id = pair.propose(now, register, delta);
      } catch (e) {
        if (!(e instanceof ProposeError)) throw e;
        refused++;
        trace?.(`${t(now)} ${ep.name} propose refused: ${e.message}`);
      }
      sameTurn?.(pair);
    });
    if (id === undefined) return;
    const cand = `${register}/${id.origin}:${id.seq}`;
    const seqOwn = ep.pair.role === 'sequencer';
    const { seq } = id;
    if (world.syncDelayMs > 0) {
      // The sequencer's own candidate is durable once collapsed: its proposer hears of it with the
      // outcome; or, a quarter of the time (always for a write in a reload's turn), its client's
      // timeout ends first (0-3 s later) and, if it is still undecided, spookd records it
      // (secureOwn) and answers "pending" once durable.
      const a = { ep, incarnation, batch: seqOwn ? Infinity : batch };
      awaiting.set(cand, a);
      if (seqOwn && (sameTurn !== undefined || rng.chance(0.25)))
        world.at(now + rng.int(0, 3000), () => {
          if (awaiting.get(cand) !== a || ep.incarnation !== incarnation) return;
          const next = (ep.batchesTaken ?? 0) + 1;
          // As spookd: durable once the batches taken up to the next one are (its collapse, or the
          // record secureOwn makes now), or at once when nothing of the pair waits for the disk.
          world.step(ep, (pair) => {
            if (pair.secureOwn(world.now, register, seq)) securedOwn++;
          });
          a.batch = next;
          if (!ep.down && ((ep.batchesDurable ?? 0) >= a.batch || (!ep.syncing && !ep.pair.awaitingWrites))) acknowledge(cand);
        });
    } else proposed.add(cand);
    // spookd answers once the candidate is durable (a follower's) or collapsed (the sequencer's own).
    if (durable) world.drain(ep);
    // Not collapsed by then (the ends' registers differ): its timeout records it, durable at once here.
    if (durable && seqOwn && world.syncDelayMs === 0)
      world.step(ep, (pair) => void (pair.secureOwn(world.now, register, seq) && securedOwn++));
    if (ep.incarnation !== incarnation) {
      proposed.delete(cand);
      awaiting.delete(cand);
      unacknowledged.add(cand);
      trace?.(`${t(now)} ${ep.name} propose ${cand} not acknowledged: the endpoint stopped`);
    }
  };
  const corrupt = (ep: SimEndpoint, now: number): void => {
    const st = ep.pair.register('kv').state as MapState;
    st.put(rng.pick(KEYS).slice(), rng.bytes(4), 999_999);
    trace?.(`${t(now)} ${ep.name} FAULT: corrupted one kv entry in memory`);
  };

  // The workload: each endpoint proposes at random times; some proposals conflict.
  for (const ep of eps) {
    for (let i = 0; i < o.ops; i++) {
      const at = rng.int(1, o.workloadMs);
      world.at(at, () => {
        propose(ep, at);
        const target = o.corruptTarget === 'sequencer' ? seqEp : eps[1];
        if (o.corrupt > 0 && ep === target && rng.chance(o.corrupt)) corrupt(ep, at);
      });
    }
  }

  // Link cuts: one or both directions, some longer than the silence timeout.
  if (o.cuts) {
    const n = rng.int(1, 3);
    for (let i = 0; i < n; i++) {
      const start = rng.int(0, o.workloadMs);
      const len = rng.int(500, 15_000);
      const dir = rng.pick(['A>B', 'B>A', 'both']);
      const set = (up: boolean) => (): void => {
        if (dir !== 'B>A') net.setLink('A', 'B', up);
        if (dir !== 'A>B') net.setLink('B', 'A', up);
        trace?.(`${t(world.now)} NET link ${dir === 'both' ? 'A<->B' : dir} ${up ? 'restored' : 'cut'}`);
      };
      world.at(start, set(false));
      world.at(start + len, set(true));
      cutCount++;
    }
  }

  if (o.crashes) {
    for (let i = 0, n = rng.int(1, 2); i < n; i++) {
      const at = rng.int(200, o.workloadMs);
      const down = rng.int(100, 8000);
      const ep = rng.pick(eps);
      world.at(at, () => {
        if (ep.down) return;
        crashes++;
        trace?.(`${t(world.now)} ${ep.name} CRASH for ${down} ms (all but its store lost)`);
        world.crash(ep);
        restartLater(ep, down);
      });
    }
  }

  if (o.reloads) {
    // An operator reloads one host's configuration, then the other's (the same quota at both).
    for (let i = 0, n = rng.int(1, 2); i < n; i++) {
      const at = rng.int(200, o.workloadMs);
      const lag = rng.int(0, 8000);
      const first = rng.int(0, 1);
      const register = rng.pick(REGISTERS).name;
      for (const [k, when] of [
        [first, at],
        [1 - first, at + lag],
      ] as const)
        world.at(when, () => {
          const ep = eps[k];
          reloaded[k].add(register);
          trace?.(`${t(world.now)} ${ep.name} RELOAD ${register} quota${ep.down ? ' (down: at its restart)' : ''}`);
          const reload = (pair: HalfPair): void => pair.setQuota(world.now, register, RELOADED_QUOTA);
          // At the sequencer, a write often lands in the same turn, before the commit pass: it stays
          // undecided until the other end agrees (its proposer may be told "pending" meanwhile).
          if (ep === seqEp && k === first && !ep.down && rng.chance(0.75)) propose(ep, world.now, reload);
          else world.step(ep, reload);
        });
    }
  }

  const isSettled = (): boolean => {
    for (const ep of eps) if (ep.down || ep.pair.state !== PairState.ENTANGLED) return false;
    for (const r of allRegisters) {
      const a = eps[0].pair.register(r.name);
      const b = eps[1].pair.register(r.name);
      if (a.version !== b.version || a.hash.hi !== b.hash.hi || a.hash.lo !== b.hash.lo) return false;
      if (a.pendingCount > 0 || b.pendingCount > 0) return false;
    }
    return true;
  };
  world.run(o.workloadMs);
  const settled = world.run(o.workloadMs + o.settleMs, isSettled);
  const now = world.now;
  if (!settled)
    for (const ep of eps) {
      const st = ep.pair.stats;
      trace?.(`${t(now)} ${ep.name} unsettled: drops ${JSON.stringify(st.drops)}, fragments ${JSON.stringify(ep.pair.fragments)}`);
      for (const r of ep.pair.registers.values())
        trace?.(
          `${t(now)}   ${r.name} v${r.version} peer v${r.peerVersion} reconciling ${r.reconciling} pending ${r.pendingCount} log ${r.log.base}..${r.log.last}`,
        );
    }

  // ---- checks
  const final: SimResult['final'] = {};
  for (const ep of eps)
    final[ep.name] = allRegisters.map((r) => ({ version: ep.pair.register(r.name).version, hash: hashHex(ep.pair.register(r.name).hash) }));
  const converged = settled;
  if (!converged)
    violate(`not converged by ${t(now)}: ${eps.map((e) => `${e.name} ${e.pair.state} ${JSON.stringify(final[e.name])}`).join('; ')}`);

  let lostCommits = 0;
  for (const r of allRegisters) {
    const replay = r.kind === 'map' ? new MapState(seedHash) : new StreamState(seedHash);
    const committedIds = new Set<string>();
    for (const c of committedDeltas.get(r.name)!) {
      if (replay.check(c.delta) !== 0) violate(`${r.name} v${c.version}: committed ${c.id} fails its precondition on replay`);
      else replay.apply(c.delta, c.version);
      committedIds.add(`${r.name}/${c.id}`);
    }
    for (const ep of eps) {
      const h = ep.pair.register(r.name).hash;
      if (h.hi !== replay.hash.hi || h.lo !== replay.hash.lo) {
        lostCommits++;
        violate(`${ep.name} ${r.name}: final hash ${hashHex(h)} differs from the replayed committed history ${hashHex(replay.hash)}`);
      }
    }
    for (const [id, verdict] of outcomes) {
      if (id.startsWith(`${r.name}/`) && verdict === 'committed' && !committedIds.has(id)) {
        lostCommits++;
        violate(`${id} was reported committed but is not in the committed history`);
      }
    }
  }
  for (const f of followerSigs) {
    const s = history.get(f.register)!.get(f.version);
    if (s !== undefined && s !== f.sig) violate(`${f.register} v${f.version}: follower collapsed [${f.sig}], sequencer [${s}]`);
  }
  for (const [id, a] of awaiting) {
    // Lost with its batch in a crash: its proposer was never answered (spookd's client sees the reset).
    if (a.incarnation !== a.ep.incarnation) unacknowledged.add(id);
    else violate(`${id}: its proposal never became durable`);
  }
  for (const id of proposed) {
    if (outcomes.has(id)) continue;
    // Decided in a step that a store fault stopped before its outcome left: the proposer learns it
    // from the history (its restart drops the candidate as decided), not from an event.
    const origin = Number(id.slice(id.indexOf('/') + 1, id.indexOf(':')));
    const v = faulted.has(eps[origin - 1].name) ? verdictSeen.get(id) : undefined;
    if (v !== undefined) outcomes.set(id, v);
    else violate(`${id} never decided at its proposer`);
  }

  const stats = eps.map((e) => e.pair.stats);
  return {
    seed: o.seed,
    converged,
    lostCommits,
    violations,
    bytesSent: net.stats.bytesSent,
    datagrams: net.stats.sent,
    fullTransfers: stats.reduce((a, s) => a + s.fullTransfers, 0),
    reconciles,
    diffs: eps.reduce((n, e) => n + (e.pair.register('kv').sequencer?.responder.diffsBuilt ?? 0), 0),
    reentanglements: stats.reduce((a, s) => a + s.reentanglements, 0),
    committed: [...outcomes.values()].filter((v) => v === 'committed').length,
    rejected: [...outcomes.values()].filter((v) => v === 'rejected').length,
    refused,
    cuts: cutCount,
    crashes,
    storeFaults,
    securedOwn,
    syncs: { ...world.syncs },
    simTimeMs: now,
    digest: world.digest,
    final,
    net: net.stats,
  };
}

function t(ms: number): string {
  return `[${(ms / 1000).toFixed(3).padStart(8)}s]`;
}

/**
 * One seeded run of a QN domain: N DomainNodes over the simulated network with loss,
 * duplication, reordering, delay, clock skew, partitions (minority or majority cut off,
 * and single non-transitive link cuts that force relaying), crashes (a crashed member
 * loses everything but its store) and storage faults (a write that fails part way: the
 * member is fenced, keeps what its store made durable, and is restarted later), under a
 * workload of single- and multi-register candidates, some conflicting. Then every fault
 * heals and the run settles. Members are driven at the persistence boundary as spookd
 * drives them (driveReady: each Ready's writes durable before its messages leave).
 *
 * Checked on every applied entry, not only at the end:
 *  - prefix: the entry a member applies at index i is the entry every other member applied
 *    at i, and the state digest after it is the same;
 *  - no acknowledged commit lost: a candidate reported committed at its origin is the
 *    global log's entry at that index, and the final state of every member includes it;
 *  - every candidate ends committed or rejected at its origin (after settling);
 *  - all members converge to the same (index, hash) with one leader.
 */
import { DeltaOp, type Delta } from '../../wire/delta.js';
import { hashHex } from '../../core/register/hash.js';
import { type MapState } from '../../core/register/map.js';
import { type StreamState } from '../../core/register/stream.js';
import { MemDomainStore } from './mem-store.js';
import { DomainNode, type DomainEvent, type QnDrop, type StateObserver } from '../../core/qn/node.js';
import { driveReady } from '../../core/qn/persist.js';
import { Role, type LogEntry, type NodeId, type SnapshotData } from '../../core/qn/raft.js';
import { DomainState, type CandidateOp } from '../../core/qn/state.js';
import { hash, publicKeyOf } from '../../crypto/primitives.js';
import { RelayKeyring, StaticRelaySealer } from '../../core/qn/seal.js';
import { EventQueue, SimNetwork, type NetStats } from './network.js';
import { Rng } from './rng.js';
import { emptyTally, tallySeeds, type SeedTally } from './batch.js';

/** Drop reasons that only a faulty or hostile peer causes: none may occur in a simulated run. */
const VIOLATION_DROPS: readonly QnDrop[] = [
  'malformed',
  'relay-unauthenticated',
  'out-of-bounds',
  'bad-entry',
  'conflicts-committed',
  'index-beyond-log',
  'bad-snapshot',
  'snapshot-mismatch',
  'candidate-origin-mismatch',
  'bad-removal',
  'fenced',
];

export interface DomainSimOptions {
  seed: number;
  nodes: number;
  loss: number;
  dup: number;
  reorder: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** Split the members in two (minority | majority) for a while, 1-3 times. */
  partitions: boolean;
  /** Cut single links (non-transitive), 1-3 times: traffic must be relayed. */
  cuts: boolean;
  /** Crash members (everything but the store is lost) and restart them, 1-2 times. */
  crashes: boolean;
  /**
   * Probability per batch of writes that the store fails part way (a random prefix of the
   * batch made durable, from none to all of it: an fsync can fail after the data reached the
   * disk): the member is fenced, and restarted 100-3000 ms later from its store.
   */
  storeFaults?: number;
  /** Per-member clock rate (±10%) and offset. */
  skew: boolean;
  /** Remove one member and add a fresh one during the run (Raft §4.1 single-server changes). */
  membership: boolean;
  /** Candidates proposed over the whole domain. */
  ops: number;
  workloadMs: number;
  settleMs: number;
  /**
   * Probability per proposal of corrupting one member's kv entry in memory: a fault Raft
   * does not repair (state machines are trusted); the checker must report it.
   */
  corrupt?: number;
  /** Large values (§15.9): with this probability a set carries a value of `largeValueBytes` (default 1 MiB), fragmented on every link. */
  largeChance?: number;
  largeValueBytes?: number;
  /** Raft log bound; small values force snapshots. Omit to draw per seed. */
  maxLogEntries?: number;
  /**
   * Write those snapshots in the background, as spookd does: each completes 1-200 ms after it
   * was asked for (or fails, with probability storeFaults), unless a crash drops it first.
   * Omit for: odd seeds in the background, even ones at once.
   */
  backgroundSnapshots?: boolean;
  /**
   * Called at each start of a member (a restart too): observers of its applied entries and of
   * the snapshots it installs, beside the checker's own (a test's change feeds).
   */
  observers?: (member: NodeId) => StateObserver;
  trace?: (line: string) => void;
}

export const DOMAIN_SIM_DEFAULTS: Omit<DomainSimOptions, 'seed'> = {
  nodes: 3,
  loss: 0.05,
  dup: 0.02,
  reorder: 0.05,
  minDelayMs: 1,
  maxDelayMs: 20,
  partitions: true,
  cuts: true,
  crashes: true,
  skew: true,
  membership: false,
  ops: 60,
  workloadMs: 8_000,
  settleMs: 60_000,
};

export interface DomainSimResult {
  seed: number;
  nodes: number;
  converged: boolean;
  violations: string[];
  committed: number;
  rejected: number;
  /** Candidates of a removed member whose outcome it never learnt. */
  unknown: number;
  refused: number;
  partitions: number;
  crashes: number;
  /** Store failures injected (each fenced a member, restarted later). */
  storeFaults: number;
  leaderChanges: number;
  snapshots: number;
  /** Background snapshots written (durable, checked against the log) and failed (backgroundSnapshots). */
  backgroundWritten: number;
  backgroundFailed: number;
  /** Catch-ups by difference installed (§15.4). */
  diffs: number;
  relayed: number;
  index: number;
  hash: string;
  datagrams: number;
  bytesSent: number;
  /** Candidates with a large value (largeChance) committed, and the largest value in the final state. */
  largeCommitted: number;
  largestValue: number;
  simTimeMs: number;
  net: NetStats;
}

const REGISTERS = [
  { name: 'kv', kind: 'map' as const },
  { name: 'meta', kind: 'map' as const },
  { name: 'log', kind: 'stream' as const },
];
const GROUPS = [{ name: 'config', registers: ['kv', 'meta'] }];
const KEYS = Array.from({ length: 10 }, (_, i) => new TextEncoder().encode(`k${i}`));

interface Member {
  id: NodeId;
  node: DomainNode | undefined;
  store: MemDomainStore;
  rate: number;
  offset: number;
  timerAt: number;
  firedAt: number;
  /** When the oldest background snapshot completes (-1: none scheduled). */
  jobAt: number;
  /** In the configuration (for the convergence check); a removed member is not. */
  active: boolean;
}

export function runDomainSim(partial: Partial<DomainSimOptions> & { seed: number }): DomainSimResult {
  const o: DomainSimOptions = { ...DOMAIN_SIM_DEFAULTS, ...partial };
  const rng = new Rng(o.seed);
  const queue = new EventQueue();
  const net = new SimNetwork(queue, rng, {
    loss: o.loss,
    dup: o.dup,
    reorder: o.reorder,
    minDelayMs: o.minDelayMs,
    maxDelayMs: o.maxDelayMs,
  });
  const trace = o.trace;
  const maxLogEntries = o.maxLogEntries ?? rng.pick([16, 64, 100_000]);
  // Its own stream of draws: the runs of the seeds that write snapshots at once stay as they were.
  const jobRng = new Rng(o.seed ^ 0x5eed_b6);
  for (let i = 0; i < 8; i++) jobRng.float(); // xoroshiro's first outputs follow nearby seeds closely
  const backgroundSnapshots = o.backgroundSnapshots ?? o.seed % 2 === 1;
  const seed = rng.int(0, 0x7fffffff);
  const violations: string[] = [];
  const violate = (m: string): void => {
    if (violations.length < 20) violations.push(m);
    trace?.(`VIOLATION ${m}`);
  };
  const ids = Array.from({ length: o.nodes }, (_, i) => i + 1);
  const spare = o.membership ? o.nodes + 1 : undefined;
  // The member the membership change removes (drawn now so the checker knows it).
  const victim = o.membership ? rng.int(1, o.nodes) : undefined;
  const allIds = spare ? [...ids, spare] : ids;
  let now = 0;
  const fmt = (t: number): string => `${(t / 1000).toFixed(3)}s`;

  // What the checker knows.
  const globalLog = new Map<number, { term: number; cmd: Uint8Array; digest: string }>();
  const outcomes = new Map<string, { committed: boolean; index?: number; unknown?: boolean }>();
  const proposed = new Set<string>();
  const largeIds = new Set<string>();
  /** Proposals whose Ready failed to persist: the proposer was never told, so either end is right. */
  const unacknowledged = new Set<string>();
  /** Members whose store failed at least once: a candidate decided in a failed Ready is known from the outcome table. */
  const faulted = new Set<NodeId>();
  let refused = 0;
  let partitions = 0;
  let crashes = 0;
  let storeFaults = 0;
  let backgroundWritten = 0;
  let backgroundFailed = 0;

  const members = new Map<NodeId, Member>();
  const honestDrops = new Map<QnDrop, number>();
  const tallyDrops = (node: DomainNode): void => {
    for (const r of VIOLATION_DROPS) {
      const n = node.stats.drops[r] ?? 0;
      if (n > 0) honestDrops.set(r, (honestDrops.get(r) ?? 0) + n);
    }
  };
  // Relayed messages are sealed end to end (§15.5) with each member's static key. The keys are
  // fixed per node id (simKeyring): X25519 is costly, and what the seeds vary is the faults.
  const sealer = (id: NodeId): StaticRelaySealer => new StaticRelaySealer(simKeyring(id));
  const local = (m: Member, t: number): number => m.offset + t * m.rate;
  const global = (m: Member, lt: number): number => (lt - m.offset) / m.rate;

  // The state comes with the entry: a restarting member re-applies its committed entries
  // while its node is still being constructed.
  const observe = (m: Member) => (e: LogEntry, state: DomainState) => {
    const d = state.digest();
    const digest = hashHex(d);
    const g = globalLog.get(e.index);
    if (!g) globalLog.set(e.index, { term: e.term, cmd: e.cmd, digest });
    else if (g.term !== e.term || !sameBytes(g.cmd, e.cmd))
      violate(`n${m.id} applied a different entry at index ${e.index} (term ${e.term} vs ${g.term})`);
    else if (g.digest !== digest) violate(`n${m.id} state after index ${e.index} differs: ${digest} vs ${g.digest}`);
  };

  const start = (m: Member): void => {
    m.store.dropJobs(); // what the crash interrupted
    const check = observe(m);
    const extra = o.observers?.(m.id);
    m.node = new DomainNode(
      {
        domain: 0x51_4e_00_01,
        name: 'sim',
        id: m.id,
        members: ids,
        links: allIds.filter((x) => x !== m.id),
        registers: REGISTERS,
        groups: GROUPS,
        seed,
        policy: 'buffer',
        maxPending: 256,
        stored: m.store.load(),
        random: (a, b) => rng.int(a, b),
        electionMs: 300,
        heartbeatMs: 50,
        maxLogEntries,
        backgroundSnapshots,
        relay: sealer(m.id),
        observer: {
          observe: (e, st) => {
            check(e, st);
            extra?.observe(e, st);
          },
          installed: (st) => extra?.installed(st),
        },
      },
      local(m, now),
    );
    // A restart learns its snapshot's index before any entry: check it against the log too.
    const si = m.node.state.index;
    const g = globalLog.get(si);
    const d = m.node.state.digest();
    if (si > 0 && g && g.digest !== hashHex(d)) violate(`n${m.id} restarted from a snapshot at ${si} that differs from the log`);
    drive(m);
  };

  const onEvent = (m: Member, ev: DomainEvent): void => {
    if (ev.type === 'outcome') {
      const id = `${m.id}:${ev.seq}`;
      if (!proposed.has(id) && !unacknowledged.has(id)) violate(`${id} decided but never proposed`);
      if (outcomes.has(id)) violate(`${id} decided twice`);
      if (ev.unknown && m.id !== victim) violate(`${id} has an unknown outcome at a member still in the domain`);
      outcomes.set(id, { committed: ev.committed, index: ev.index, unknown: ev.unknown });
      if (ev.committed && ev.index !== undefined) {
        const g = globalLog.get(ev.index);
        if (!g) violate(`${id} reported committed at ${ev.index}, which no member applied`);
      }
      trace?.(`${fmt(now)} n${m.id} outcome ${id} ${ev.committed ? 'committed' : `rejected (${ev.reason})`} at ${ev.index ?? '?'}`);
    } else if (ev.type === 'lifecycle') trace?.(`${fmt(now)} n${m.id} ${ev.from} -> ${ev.to} (${ev.cause})`);
    else trace?.(`${fmt(now)} n${m.id} sees leader n${ev.leader} term ${ev.term}`);
  };

  /** Persist the member's Readies, then publish and send; true if its store failed (it is now fenced). */
  const drive = (m: Member): boolean => {
    const node = m.node;
    if (!node) return false;
    const failed = driveReady(
      node,
      m.store,
      (to, payload) =>
        net.send(now, `n${m.id}`, `n${to}`, payload, (at, bytes) => {
          const dst = members.get(to);
          if (!dst?.node) return;
          now = at;
          dst.node.handleDatagram(local(dst, at), m.id, bytes);
          drive(dst);
        }),
      (ev) => onEvent(m, ev),
    );
    if (failed) {
      // Fenced, as spookd fences it; an operator restarts it later, from what its store kept.
      storeFaults++;
      faulted.add(m.id);
      const down = rng.int(100, 3000);
      trace?.(`${fmt(now)} FAULT: n${m.id} store failed (${failed.message}); fenced, restarts in ${down} ms`);
      tallyDrops(node);
      m.node = undefined;
      m.timerAt = -1;
      const t = now + down;
      queue.schedule(t, () => {
        now = t;
        if (m.node) return;
        trace?.(`${fmt(now)} n${m.id} restarts`);
        start(m);
      });
      return true;
    }
    const waits = node.raft.snapshottingIndex;
    if (waits !== 0 && !m.store.jobs.some((j) => j.meta.index === waits))
      violate(`n${m.id} waits for a background snapshot at ${waits} that no job will report`);
    if (m.store.jobs.length > 1) violate(`n${m.id} has ${m.store.jobs.length} background snapshots under way`);
    if (m.store.jobs.length > 0 && m.jobAt < 0) completeJobLater(m, node);
    const lt = node.pollTimeout();
    // Rounded up to whole ms, so the member's clock has reached its deadline when the timer runs.
    // A timer never fires twice at one instant (a deadline already handled would spin).
    const at = Math.max(m.firedAt === now ? now + 1 : now, Math.ceil(global(m, lt) + 1e-9));
    if (at !== m.timerAt) {
      m.timerAt = at;
      queue.schedule(at, () => {
        if (m.node !== node || m.timerAt !== at) return;
        now = at;
        m.timerAt = -1;
        m.firedAt = at;
        node.handleTimeout(local(m, at));
        drive(m);
      });
    }
    return false;
  };

  /**
   * The oldest background snapshot of `m` is written some time later, encoded from its pin then
   * (the member applied more meanwhile), and checked against the state every member had at its
   * index; or it fails. A crash first (another node object by then) leaves it to dropJobs.
   */
  const completeJobLater = (m: Member, node: DomainNode): void => {
    const t = now + jobRng.int(1, 200);
    m.jobAt = t;
    queue.schedule(t, () => {
      if (m.node !== node || m.jobAt !== t) return;
      now = t;
      m.jobAt = -1;
      if (m.store.jobs.length === 0) return; // an install dropped it
      if (o.storeFaults && jobRng.chance(o.storeFaults)) {
        const meta = m.store.jobs[0].meta;
        m.store.jobs.shift()!.pinned.release();
        trace?.(`${fmt(now)} FAULT: n${m.id} background snapshot at ${meta.index} failed`);
        backgroundFailed++;
        node.snapshotFailed(meta.index);
      } else {
        const older = m.store.image.snapshot?.index ?? 0;
        const { meta, data } = m.store.completeJob()!;
        if (meta.index <= older) violate(`n${m.id} wrote a background snapshot at ${meta.index} over a newer one at ${older}`);
        const fresh = new DomainState(seed, REGISTERS, GROUPS);
        const g = globalLog.get(meta.index);
        if (!fresh.restore(data, meta.index)) violate(`n${m.id} wrote a background snapshot at ${meta.index} that does not restore`);
        else if (g && g.digest !== hashHex(fresh.digest()))
          violate(`n${m.id} wrote a background snapshot at ${meta.index} that differs from the log`);
        trace?.(`${fmt(now)} n${m.id} background snapshot at ${meta.index} durable (${data.length} bytes)`);
        backgroundWritten++;
        // Read back as spookd reads its file (the latest durable one, maybe newer by then), or (one in ten)
        // unreadable: the leader then sends the applied state.
        const file = (): ReturnType<Extract<SnapshotData, () => unknown>> => {
          const s = m.store.image.snapshot;
          return jobRng.chance(0.1) || !s || s.index < meta.index ? undefined : s;
        };
        node.snapshotDurable(meta, jobRng.chance(0.5) ? data : file);
      }
      drive(m);
    });
  };

  for (const id of allIds) {
    const m: Member = {
      id,
      node: undefined,
      store: new MemDomainStore(),
      rate: 1,
      offset: 0,
      timerAt: -1,
      firedAt: -1,
      jobAt: -1,
      active: id !== spare,
    };
    if (o.storeFaults)
      m.store.fault = (batch) => (now <= o.workloadMs && rng.chance(o.storeFaults!) ? rng.int(0, batch.length) : undefined);
    if (o.skew) {
      m.rate = 1 + rng.int(-100, 100) / 1000;
      m.offset = rng.int(0, 100_000);
    }
    members.set(id, m);
  }
  for (const m of members.values()) start(m);

  const at = (t: number, run: () => void): void =>
    queue.schedule(t, () => {
      now = t;
      run();
    });

  // Workload: candidates at random live members; cas expectations from the proposer's view.
  const propose = (m: Member): void => {
    const node = m.node;
    if (!node) return;
    const kv = node.state.registers.get('kv')!.state as MapState;
    const meta = node.state.registers.get('meta')!.state as MapState;
    const log = node.state.registers.get('log')!.state as StreamState;
    const key = rng.pick(KEYS);
    const kind = rng.int(0, 9);
    let ops: CandidateOp[];
    const cas = (st: MapState, register: string): CandidateOp => {
      const cur = st.get(key);
      const expect = rng.chance(0.8) ? (cur?.version ?? 0) : rng.int(0, 4);
      return { register, delta: { op: DeltaOp.Cas, key, expect, value: rng.bytes(rng.int(1, 24)) } };
    };
    let large = false;
    if (kind < 3) {
      large = o.largeChance !== undefined && rng.chance(o.largeChance);
      ops = [
        { register: 'kv', delta: { op: DeltaOp.Set, key, value: rng.bytes(large ? (o.largeValueBytes ?? 1 << 20) : rng.int(0, 40)) } },
      ];
    } else if (kind < 4) ops = [{ register: 'kv', delta: { op: DeltaOp.Del, key } }];
    else if (kind < 6) ops = [cas(kv, 'kv')];
    else if (kind < 8)
      ops = [cas(kv, 'kv'), cas(meta, 'meta')]; // a QSCS group candidate: both or neither
    else {
      const data = rng.bytes(rng.int(1, 120));
      const d: Delta = { op: DeltaOp.Append, offset: log.size(), data };
      ops = [
        { register: 'log', delta: d },
        { register: 'meta', delta: { op: DeltaOp.Set, key, value: data.subarray(0, 4) } },
      ];
    }
    if (o.corrupt && rng.chance(o.corrupt)) {
      kv.put(rng.pick(KEYS).slice(), rng.bytes(3), 999_999);
      trace?.(`${fmt(now)} FAULT: n${m.id} kv corrupted in memory`);
    }
    const r = node.propose(local(m, now), ops);
    // As spookd: the proposer hears the number only once the candidate is durable.
    const failed = drive(m);
    if ('refused' in r) {
      refused++;
      trace?.(`${fmt(now)} n${m.id} propose refused: ${r.refused}`);
    } else if (failed) {
      refused++;
      unacknowledged.add(`${m.id}:${r.seq}`);
      trace?.(`${fmt(now)} n${m.id} propose ${m.id}:${r.seq} not acknowledged: the store failed`);
    } else {
      proposed.add(`${m.id}:${r.seq}`);
      if (large) largeIds.add(`${m.id}:${r.seq}`);
      trace?.(`${fmt(now)} n${m.id} propose ${m.id}:${r.seq} ${ops.map((x) => `${x.register}.${DeltaOp[x.delta.op]}`).join('+')}`);
    }
  };
  for (let i = 0; i < o.ops; i++) {
    at(rng.int(1, o.workloadMs), () => {
      const live = [...members.values()].filter((m) => m.node && m.active);
      if (live.length) propose(rng.pick(live));
    });
  }

  const setLinks = (a: NodeId[], b: NodeId[], up: boolean): void => {
    for (const x of a)
      for (const y of b) {
        net.setLink(`n${x}`, `n${y}`, up);
        net.setLink(`n${y}`, `n${x}`, up);
      }
  };
  if (o.partitions) {
    // A minority or a majority (the other side of the split) is cut off, then heals.
    for (let i = 0, n = rng.int(1, 3); i < n; i++) {
      const t0 = rng.int(200, o.workloadMs);
      const len = rng.int(300, 4000);
      at(t0, () => {
        partitions++;
        const shuffled = [...allIds].sort(() => rng.float() - 0.5);
        const minority = shuffled.slice(0, Math.max(1, Math.floor((o.nodes - 1) / 2)));
        const rest = allIds.filter((x) => !minority.includes(x));
        trace?.(`${fmt(now)} FAULT: partition {${minority.join(',')}} | {${rest.join(',')}} for ${len} ms`);
        setLinks(minority, rest, false);
        at(now + len, () => setLinks(minority, rest, true));
      });
    }
  }
  if (o.cuts) {
    // One link only (non-transitive): the two ends keep talking through a relay member.
    for (let i = 0, n = rng.int(1, 3); i < n; i++) {
      const t0 = rng.int(200, o.workloadMs);
      const len = rng.int(300, 6000);
      at(t0, () => {
        const a = rng.pick(ids);
        const b = rng.pick(ids.filter((x) => x !== a));
        trace?.(`${fmt(now)} FAULT: link n${a}-n${b} cut for ${len} ms`);
        setLinks([a], [b], false);
        at(now + len, () => setLinks([a], [b], true));
      });
    }
  }
  if (o.crashes) {
    const count = rng.int(1, 2);
    for (let i = 0; i < count; i++) {
      const t0 = rng.int(200, o.workloadMs);
      const down = rng.int(100, 3000);
      at(t0, () => {
        const m = rng.pick([...members.values()].filter((x) => x.node));
        if (!m) return;
        crashes++;
        trace?.(`${fmt(now)} FAULT: n${m.id} crashes for ${down} ms`);
        if (m.node) tallyDrops(m.node);
        m.node = undefined;
        m.timerAt = -1;
        at(now + down, () => {
          trace?.(`${fmt(now)} n${m.id} restarts`);
          start(m);
        });
      });
    }
  }
  if (o.membership && spare) {
    // Remove one member, then add a fresh one: each through the leader, one change at a time.
    const tRemove = rng.int(o.workloadMs / 4, o.workloadMs / 2);
    // Done when a leader's committed configuration shows the change; until then (re)try it.
    const tryChange = (change: { add?: NodeId; remove?: NodeId }, deadline: number, done: () => void): void => {
      const leader = [...members.values()].find((m) => m.node?.raft.role === Role.Leader);
      const raft = leader?.node?.raft;
      if (raft) {
        const inForce = change.add !== undefined ? raft.members.includes(change.add) : !raft.members.includes(change.remove!);
        if (inForce && raft.configIndex <= raft.commit) {
          trace?.(`${fmt(now)} membership change ${JSON.stringify(change)} committed at index ${raft.configIndex}`);
          return done();
        }
        if (!inForce) {
          const r = leader!.node!.changeMembers(local(leader!, now), change);
          if (r.ok) trace?.(`${fmt(now)} n${leader!.id} membership change ${JSON.stringify(change)} appended at index ${r.index}`);
          drive(leader!);
        }
      }
      if (now < deadline) at(now + 100, () => tryChange(change, deadline, done));
      else violate(`membership change ${JSON.stringify(change)} never committed`);
    };
    at(tRemove, () =>
      tryChange({ remove: victim! }, o.workloadMs + o.settleMs / 2, () => {
        members.get(victim!)!.active = false;
        at(now + 500, () => tryChange({ add: spare }, o.workloadMs + o.settleMs / 2, () => (members.get(spare)!.active = true)));
      }),
    );
  }

  const settled = (): boolean => {
    const act = [...members.values()].filter((m) => m.active);
    if (act.some((m) => !m.node)) return false;
    // A removed member reports its candidates `unknown` once its removal is settled (§15.6: a
    // notice it cannot check holds an election timeout first): not settled before it has.
    if ([...members.values()].some((m) => !m.active && m.id !== spare && (m.node?.pendingCount ?? 0) > 0)) return false;
    const leaders = act.filter((m) => m.node!.raft.role === Role.Leader);
    if (leaders.length !== 1) return false;
    const last = leaders[0].node!.raft.lastIndex;
    const first = act[0].node!.state.digest();
    return act.every((m) => {
      const n = m.node!;
      const d = n.state.digest();
      return n.pendingCount === 0 && n.raft.applied === last && d.hi === first.hi && d.lo === first.lo && n.coherenceState === 'coherent';
    });
  };

  // Run the workload, then heal everything and settle.
  const runUntil = (end: number, stop?: () => boolean): void => {
    let checks = 0;
    while (queue.size > 0 && (queue.peekTime() ?? Infinity) <= end) {
      queue.pop()!.run();
      if (stop && ++checks % 64 === 0 && stop()) return;
    }
    now = Math.max(now, end);
  };
  runUntil(o.workloadMs + 4000);
  at(now, () => {
    setLinks(allIds, allIds, true);
    for (const m of members.values()) if (!m.node && (m.active || m.id !== spare)) start(m);
  });
  const settleEnd = now + o.settleMs;
  while (now < settleEnd && !settled()) runUntil(Math.min(settleEnd, now + 200), settled);
  const converged = settled();
  if (!converged) {
    violate(`not converged after ${o.settleMs} ms of settling`);
    for (const m of members.values()) {
      const n = m.node;
      if (!n) trace?.(`  n${m.id}: down`);
      else
        trace?.(
          `  n${m.id}: ${n.raft.role} term ${n.raft.term} leader ${n.raft.leader} commit ${n.raft.commit} applied ${n.raft.applied} last ${n.raft.lastIndex} base ${n.raft.firstIndex - 1} snapshot ${n.raft.snapshotIndex} pending ${n.pendingCount} ${n.coherenceState}${m.active ? '' : ' (removed)'} fragments ${JSON.stringify(n.links.stats)} drops ${JSON.stringify(n.stats.drops)}`,
        );
    }
  }

  // Honest members never see a message that breaks the protocol: every relayed one opens, no
  // term or index is out of bounds, no entry or snapshot is refused.
  for (const m of members.values()) if (m.node) tallyDrops(m.node);
  for (const [reason, n] of honestDrops) violate(`${n} messages dropped as ${reason} in an honest run`);

  // Every candidate decided, and every committed one in the final state's log.
  for (const id of proposed) {
    const out = outcomes.get(id);
    if (out) continue;
    // Decided in a Ready whose store failed after the candidate was forgotten: the event never
    // left, and the outcome table is how its proposer learns it (outcomeOf, `spook domain outcome`).
    // Removed before it could apply that entry again, the proposer can only say unknown (§15.6).
    const [origin, seq] = id.split(':').map(Number);
    const v = faulted.has(origin) ? members.get(origin)?.node?.outcomeOf(seq)?.verdict : undefined;
    if (v === 'committed' || v === 'rejected') outcomes.set(id, { committed: v === 'committed' });
    else if (v === 'unknown' && origin === victim) {
      // Unknown to its removed proposer; the domain's own outcome table, where it still has it, decides.
      const t = [...members.values()].find((x) => x.active && x.node)?.node!.state.outcomeOf(origin, seq);
      outcomes.set(id, t === undefined ? { committed: false, unknown: true } : { committed: t === 0 });
    } else violate(`${id} never decided`);
  }
  const act = [...members.values()].filter((m) => m.active && m.node);
  const finalIndex = act.length ? Math.min(...act.map((m) => m.node!.raft.applied)) : 0;
  for (const [id, out] of outcomes)
    if (out.committed && out.index !== undefined && out.index > finalIndex)
      violate(`${id} committed at ${out.index}, beyond the final index ${finalIndex}`);

  const d = act[0]?.node?.state.digest();
  let leaderChanges = 0;
  let snapshots = 0;
  let diffs = 0;
  let relayed = 0;
  let datagrams = 0;
  for (const m of members.values()) {
    if (!m.node) continue;
    leaderChanges += m.node.raft.stats.leaderChanges;
    snapshots += m.node.raft.stats.snapshotsInstalled;
    diffs += m.node.raft.stats.diffsInstalled;
    relayed += m.node.stats.relayed;
  }
  datagrams = net.stats.sent;
  let committed = 0;
  let rejected = 0;
  let unknown = 0;
  for (const out of outcomes.values()) out.unknown ? unknown++ : out.committed ? committed++ : rejected++;
  let largeCommitted = 0;
  for (const id of largeIds) if (outcomes.get(id)?.committed) largeCommitted++;
  let largestValue = 0;
  for (const e of (act[0]?.node?.state.registers.get('kv')?.state as MapState | undefined)?.values() ?? [])
    largestValue = Math.max(largestValue, e.value.length);
  return {
    seed: o.seed,
    nodes: o.nodes,
    converged,
    violations,
    committed,
    rejected,
    unknown,
    refused,
    partitions,
    crashes,
    storeFaults,
    leaderChanges,
    snapshots,
    backgroundWritten,
    backgroundFailed,
    diffs,
    relayed,
    index: finalIndex,
    hash: d ? hashHex(d) : '',
    datagrams,
    bytesSent: net.stats.bytesSent,
    largeCommitted,
    largestValue,
    simTimeMs: Math.round(now),
    net: net.stats,
  };
}

/** Node id's static key in every simulation: 32 octets of BLAKE2s("spook-lab sim node" || id). */
const simKeyrings = new Map<NodeId, RelayKeyring>();
const simPrivateKey = (id: NodeId): Uint8Array => hash('BLAKE2s', new TextEncoder().encode(`spook-lab sim node ${id}`));
const simPublicKeys = new Map<NodeId, Uint8Array>();
const simPublicKey = (id: NodeId): Uint8Array => {
  let pk = simPublicKeys.get(id);
  if (!pk) simPublicKeys.set(id, (pk = publicKeyOf(simPrivateKey(id))));
  return pk;
};
function simKeyring(id: NodeId): RelayKeyring {
  let k = simKeyrings.get(id);
  if (!k) simKeyrings.set(id, (k = new RelayKeyring({ privateKey: simPrivateKey(id), publicKey: simPublicKey(id) }, simPublicKey)));
  return k;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The per-seed counts a domain summary adds up. */
const SUMMED = [
  'committed',
  'rejected',
  'unknown',
  'refused',
  'partitions',
  'crashes',
  'storeFaults',
  'leaderChanges',
  'snapshots',
  'backgroundWritten',
  'backgroundFailed',
  'diffs',
  'relayed',
  'datagrams',
  'bytesSent',
] as const;

/** Many seeds of runDomainSim, summarised the way `spook-lab sim --nodes N --json` prints them. */
export interface DomainSimSummary extends SeedTally, Pick<DomainSimResult, (typeof SUMMED)[number] | 'nodes'> {
  seedBase: number;
  options: Omit<DomainSimOptions, 'seed' | 'trace'>;
}

export function runDomainSeeds(
  count: number,
  seedBase: number,
  opts: Omit<DomainSimOptions, 'seed' | 'trace'>,
  onResult?: (r: DomainSimResult) => void,
): DomainSimSummary {
  const s: DomainSimSummary = { ...emptyTally(SUMMED), seedBase, nodes: opts.nodes, options: opts };
  tallySeeds(count, seedBase, (seed) => runDomainSim({ ...opts, seed }), SUMMED, s, onResult);
  return s;
}

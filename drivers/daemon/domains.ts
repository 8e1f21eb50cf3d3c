/**
 * A QN domain inside spookd: one DomainNode, its durable store, and the mapping between
 * member node ids and configured peers. spookd carries its messages in sealed Data frames on
 * the pair sessions it already has (docs/PROTOCOL.md §15.3) and hands it timer ticks.
 *
 * The node's Ready is persisted (one batch, one fsync) before its messages are queued for
 * spookd to send and its events for the subscribers; a store that fails fences the domain, and
 * nothing of that Ready leaves. Under spookd (batchTurns) that happens once per turn of the
 * event loop for every input of the turn (group commit, as for the pairs): the candidates and
 * appends of one turn share one fsync and Raft sends them to the followers together. Without
 * it (tests), after every input.
 */
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { hashHex, murmur3 } from '../../core/register/hash.js';
import { MapState } from '../../core/register/map.js';
import { DomainNode, type DomainEvent, type DomainNodeOptions } from '../../core/qn/node.js';
import { EMPTY_STORED, driveReady, type DomainStore } from '../../core/qn/persist.js';
import type { NodeId } from '../../core/qn/raft.js';
import type { CandidateOp } from '../../core/qn/state.js';
import type { KeyPair } from '../../crypto/primitives.js';
import { StaticRelaySealer } from '../../core/qn/seal.js';
import { WarnLimiter } from '../../core/util/warn-limiter.js';
import { DomainChanges } from '../../core/qn/changes.js';
import type { SpookdConfig } from './config.js';
import { FileDomainStore, type SnapshotReport } from '../store/domain-store.js';
import type { DomainSummary } from '../../client/protocol.js';

export type DomainConfig = SpookdConfig['domains'][number];

/** A member's id: the first 48 bits of its static public key (unique among keys in practice; checked at start). */
export function nodeIdOf(publicKey: Uint8Array): NodeId {
  let v = 0;
  for (let i = 0; i < 6; i++) v = v * 256 + publicKey[i];
  return v === 0 ? 1 : v;
}

/** The u32 that names a domain on the wire. */
export const domainIdOf = (name: string): number => murmur3(0x5350_0051, new TextEncoder().encode(name));

export class DomainHost {
  readonly node: DomainNode;
  /** Undefined when the domain's directory could not be loaded (the domain is then fenced). */
  readonly disk: FileDomainStore | undefined;
  private readonly store: DomainStore;
  /** What the last Readies released (their writes durable), for drain(). */
  private outbox: { to: NodeId; bytes: Uint8Array }[] = [];
  private published: DomainEvent[] = [];
  /** Set by batchTurns(): the inputs since the last flush() have not been persisted yet. */
  private onDirty: (() => void) | undefined;
  private dirty = false;
  /** Callers waiting for the next flush (whenDurable). */
  private waiters: ((failed: Error | undefined) => void)[] = [];
  /** Unexpected exceptions caught from the node (each fences the domain; logged once). */
  internalErrors = 0;
  /**
   * The domain's leader and lifecycle lines, one per kind (leader; lifecycle from → to) per
   * 10 s: any member can flip this one's leadership term after term (a `voteResp` of a higher
   * term, then an `append` of it), three info lines for two ~25-octet datagrams, which were all
   * written (~10 octets of log per octet sent). The rest are counted (`onLineSuppressed`), and
   * where the domain ended up is logged once the window is over (`settleLines`).
   */
  private readonly lines = new WarnLimiter(10_000, 64);
  /** What the last leader and lifecycle lines said, and the line owed when some were left out since. */
  private shown: { leader: NodeId; coherence: string; left: number; owed?: NodeJS.Timeout } = { leader: 0, coherence: '', left: 0 };
  /** Called for each line the limit leaves out (spookd counts them in `warningsSuppressed`). */
  onLineSuppressed: (() => void) | undefined;
  /** The error naming a member that lost entries it had acknowledged: once a minute per member. */
  private readonly lostLines = new WarnLimiter(60_000, 64);
  readonly id: number;
  readonly selfId: NodeId;
  readonly idOf = new Map<string, NodeId>();
  readonly nameOf = new Map<NodeId, string>();
  readonly subscribers = new Set<(ev: DomainEvent) => void>();
  /**
   * Who waits for the outcome of which own candidate (a dpropose): found by its number, so a
   * turn that decides many candidates does not call every waiter for every outcome.
   */
  private readonly outcomeWaiters = new Map<number, (ev: Extract<DomainEvent, { type: 'outcome' }>) => void>();
  /** dpropose calls holding a write while this member catches up (node.catchingUp): woken together in drain(). */
  private readonly caughtUpWaiters = new Set<() => void>();
  private readonly partitionsSeen: { at: number; cause: string }[] = [];
  /** Per register, the recent committed changes the change feeds serve (as much as the Raft log keeps, at most 8 MiB). */
  readonly changes: DomainChanges;

  constructor(
    readonly cfg: DomainConfig,
    /** This host's static key pair (ETCP, §12.1): its node id, and the relay seals of §15.5. */
    self: KeyPair,
    peers: { name: string; publicKey: Uint8Array }[],
    dataDir: string,
    fsync: SpookdConfig['fsync'],
    private readonly log: Logger,
    now: number,
  ) {
    this.id = domainIdOf(cfg.name);
    this.changes = new DomainChanges({ maxRecords: cfg.maxLogEntries, maxBytes: 8 << 20 });
    this.selfId = nodeIdOf(self.publicKey);
    this.nameOf.set(this.selfId, 'self');
    // Every configured peer is a link (a later `member add` needs one); `members` are the bootstrap voters.
    for (const p of peers) {
      const id = nodeIdOf(p.publicKey);
      if (this.nameOf.has(id))
        throw new Error(
          `domain ${cfg.name}: peers ${p.name} and ${this.nameOf.get(id)} have the same node id (first 48 bits of their keys)`,
        );
      this.idOf.set(p.name, id);
      this.nameOf.set(id, p.name);
    }
    const dir = join(dataDir, 'domains', encodeURIComponent(cfg.name));
    // Relayed messages are sealed between the origin's and the destination's static keys (§15.5).
    const relay = new StaticRelaySealer(self, new Map(peers.map((p) => [nodeIdOf(p.publicKey), p.publicKey] as const)));
    const others = cfg.members.map((m) => this.idOf.get(m)!);
    const members = (cfg.join ? others : [this.selfId, ...others]).sort((a, b) => a - b);
    const opts = (stored: DomainNodeOptions['stored']): DomainNodeOptions => ({
      domain: this.id,
      name: cfg.name,
      id: this.selfId,
      members,
      links: [...this.idOf.values()],
      registers: cfg.registers,
      groups: cfg.groups,
      seed: murmur3(0x5350_0052, new TextEncoder().encode(cfg.name)),
      policy: cfg.policy,
      maxPending: cfg.maxPending,
      stored,
      random: (a, b) => randomInt(a, b + 1),
      electionMs: cfg.electionMs,
      heartbeatMs: cfg.heartbeatMs,
      maxLogEntries: cfg.maxLogEntries,
      // Written at once, a 256 MiB domain held the event loop ~5 s (issue 16): every pair and domain waited.
      backgroundSnapshots: true,
      relay,
      observer: this.changes,
    });
    // One domain's unusable data fences that domain only: spookd starts and serves the rest
    // (docs/OPERATIONS.md, "A fenced domain").
    let node: DomainNode;
    try {
      this.disk = new FileDomainStore(
        dir,
        fsync,
        (e) => this.storeFailed(e),
        (r) => this.snapshotEnded(r),
      );
      if (this.disk.tornBytes > 0) log.warn({ domain: cfg.name, tornBytes: this.disk.tornBytes }, 'domain journal: torn tail cut');
      node = new DomainNode(opts(this.disk.load()), now);
      this.store = this.disk;
    } catch (e) {
      try {
        this.disk?.close();
      } catch {
        /* the domain is fenced for the load error already */
      }
      this.disk = undefined;
      node = new DomainNode(opts(EMPTY_STORED), now);
      node.fence(`cannot load ${dir}: ${(e as Error).message}`);
      // Fenced: it writes nothing (a write here would be a bug, refused like a failed disk).
      this.store = {
        load: () => EMPTY_STORED,
        persist: () => {
          throw new Error('this domain has no store');
        },
      };
    }
    this.node = node;
    this.persistReady();
    const fenced = node.fencedCause;
    if (fenced) log.error({ domain: cfg.name, dir, cause: fenced }, `domain ${cfg.name} fenced: ${fenced}`);
    else
      log.info(
        { domain: cfg.name, nodeId: this.selfId, members: members.length, index: node.raft.applied, term: node.raft.term },
        'domain loaded',
      );
  }

  /**
   * Group commit: from now on an input only marks the domain dirty and calls `onDirty` (once
   * per batch); the driver calls flush() at the end of the turn.
   */
  batchTurns(onDirty: () => void): void {
    this.onDirty = onDirty;
  }

  /** Persist what the inputs since the last flush produced, release their messages and events, then tell the waiters. */
  flush(): Error | undefined {
    this.dirty = false;
    const failed = this.persistReady();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(failed ?? (this.node.fencedCause ? new Error(this.node.fencedCause) : undefined));
    return failed;
  }

  /** `cb` once what the inputs so far wrote is durable (undefined) or could not be (the error; the domain is fenced). */
  whenDurable(cb: (failed: Error | undefined) => void): void {
    if (this.dirty) this.waiters.push(cb);
    else cb(this.node.fencedCause ? new Error(this.node.fencedCause) : undefined);
  }

  /** A QN datagram from link `from`; an exception out of the node fences this domain, not the process. */
  handleDatagram(now: number, from: NodeId, payload: Uint8Array): void {
    this.guard(() => this.node.handleDatagram(now, from, payload));
  }

  /** Timers due at `now`. */
  tick(now: number): void {
    if (this.node.pollTimeout() <= now) this.guard(() => this.node.handleTimeout(now));
  }

  /**
   * Persist what the node produced, then queue its messages and events for drain(). A failed
   * write fences the domain (driveReady) and is logged once; the process and the other domains
   * carry on, as for an internal error.
   */
  private persistReady(): Error | undefined {
    const wasFenced = this.node.fencedCause !== undefined;
    let failed: Error | undefined;
    try {
      // ready() applies what a leader committed: an exception there is this domain's, as in guard().
      failed = driveReady(
        this.node,
        this.store,
        (to, bytes) => this.outbox.push({ to, bytes }),
        (ev) => this.published.push(ev),
      );
    } catch (e) {
      this.internalError(e);
      this.publishFence();
      return e instanceof Error ? e : new Error(String(e));
    }
    if (failed && !wasFenced)
      this.log.error({ domain: this.cfg.name, err: failed }, `domain ${this.cfg.name} fenced: ${this.node.fencedCause ?? failed.message}`);
    return failed;
  }

  /** The store's background flush (fsync "everysec") failed: fence the domain as a failed write does. */
  private storeFailed(e: Error): void {
    if (this.node.fencedCause) return;
    this.node.fence(`durable storage failed: ${e.message}`);
    this.log.error({ domain: this.cfg.name, err: e }, `domain ${this.cfg.name} fenced: ${this.node.fencedCause}`);
    this.persistReady(); // its lifecycle event, for the subscribers
  }

  /**
   * A background snapshot ended. Durable: Raft compacts its log behind it and sends it to a
   * follower as the file reads back. Failed: logged; nothing was compacted, and the next one is
   * written at once (a failure of that fences the domain, as any failed write does).
   */
  private snapshotEnded(r: SnapshotReport): void {
    if (r.ok) {
      const disk = this.disk;
      this.guard(() => this.node.snapshotDurable(r.meta, () => disk?.readSnapshot(r.meta.index)));
    } else {
      this.log.warn({ domain: this.cfg.name, index: r.meta.index, err: r.error }, 'domain snapshot failed; the next is written at once');
      this.guard(() => this.node.snapshotFailed(r.meta.index));
    }
  }

  /** An unexpected exception out of the node: it fences this domain (logged once); the process and the other domains carry on. */
  private internalError(e: unknown): void {
    this.internalErrors++;
    if (this.node.fencedCause) return;
    this.node.fence('internal-error');
    this.log.error(
      { domain: this.cfg.name, err: e },
      `domain ${this.cfg.name} fenced: internal-error (an unexpected exception; restart spookd to resume it)`,
    );
  }

  /** After an exception out of ready(): the fenced node's lifecycle event, for the subscribers (it holds nothing else). */
  private publishFence(): void {
    try {
      driveReady(
        this.node,
        this.store,
        () => {},
        (ev) => this.published.push(ev),
      );
    } catch {
      /* fenced already: nothing more to tell */
    }
  }

  /** Runs an input; its Ready is persisted now (`now`, or without batchTurns) or at the next flush(). */
  private guard(run: () => void, now = false): Error | undefined {
    try {
      run();
    } catch (e) {
      const wasFenced = this.node.fencedCause !== undefined;
      this.internalError(e);
      if (wasFenced) return;
    }
    if (!this.onDirty || now) return this.flush();
    if (!this.dirty) {
      this.dirty = true;
      this.onDirty();
    }
    return undefined;
  }

  name(id: NodeId): string {
    return this.nameOf.get(id) ?? `node-${id}`;
  }

  /** Whether peer `name` is a voter of this domain (its bootstrap members or the configuration in force). */
  hasMember(name: string): boolean {
    const id = this.idOf.get(name);
    return id !== undefined && (this.cfg.members.includes(name) || this.node.isMember(id));
  }

  /** A peer removed from the host that is no member: no longer a link of this domain (a later `member add` of it needs a restart). */
  dropPeer(name: string): void {
    const id = this.idOf.get(name);
    // A member by now (a `member add` while the removal waited for its fsyncs): left as it is.
    if (id === undefined || this.hasMember(name)) return;
    this.node.dropLink(id);
    this.idOf.delete(name);
    this.nameOf.delete(id);
  }

  /** Publish events, then hand each outgoing message to `send` (peer name, QN payload). */
  drain(send: (peer: string, payload: Uint8Array) => void): void {
    const events = this.published;
    const messages = this.outbox;
    this.published = [];
    this.outbox = [];
    for (const l of this.node.raft.takeLost()) {
      const name = this.name(l.member);
      if (this.lostLines.admit(performance.now(), name) === undefined) continue;
      this.log.error(
        { domain: this.cfg.name, member: name, acknowledged: l.acknowledged, holds: l.holds },
        `domain ${this.cfg.name}: member ${name} lost entries it had acknowledged (up to ${l.acknowledged}; it holds ${l.holds}): its data directory was wiped or restored; remove it and add it again`,
      );
    }
    for (const ev of events) {
      if (ev.type === 'lifecycle') {
        const suppressed = this.admitLine(`lifecycle:${ev.from}>${ev.to}`);
        if (suppressed !== undefined) {
          this.shown.coherence = ev.to;
          this.log.info(
            { domain: this.cfg.name, from: ev.from, to: ev.to, cause: ev.cause, ...(suppressed > 0 ? { suppressed } : {}) },
            'domain lifecycle',
          );
        }
        if (ev.to === 'decoherent') {
          this.partitionsSeen.push({ at: Date.now(), cause: ev.cause });
          if (this.partitionsSeen.length > 32) this.partitionsSeen.shift();
        }
      } else if (ev.type === 'leader') {
        const suppressed = this.admitLine('leader');
        if (suppressed !== undefined) {
          this.shown.leader = ev.leader;
          this.log.info(
            { domain: this.cfg.name, leader: this.name(ev.leader), term: ev.term, ...(suppressed > 0 ? { suppressed } : {}) },
            'domain leader',
          );
        }
      }
      if (ev.type === 'outcome') this.outcomeWaiters.get(ev.seq)?.(ev);
      for (const s of this.subscribers) s(ev);
    }
    for (const tx of messages) {
      const peer = this.nameOf.get(tx.to);
      if (peer && peer !== 'self') send(peer, tx.bytes);
    }
    // One check per turn, however many writes wait (not one proposal attempt each).
    if (this.caughtUpWaiters.size > 0 && !this.node.catchingUp) {
      const waiters = [...this.caughtUpWaiters];
      this.caughtUpWaiters.clear();
      // After this drain, not inside it: a waiter proposes, and spookd may drain again for it.
      for (const w of waiters) queueMicrotask(w);
    }
  }

  /**
   * `cb` once this member no longer catches up after starting empty (or is fenced): a write
   * refused `catching-up` may then be proposed. Called from drain(), after the turn's input;
   * returns the function that stops waiting.
   */
  whenCaughtUp(cb: () => void): () => void {
    const w = (): void => cb();
    this.caughtUpWaiters.add(w);
    return () => void this.caughtUpWaiters.delete(w);
  }

  /** `cb` on the outcome of own candidate `seq` (one waiter per candidate); returns the function that stops waiting. */
  onOutcome(seq: number, cb: (ev: Extract<DomainEvent, { type: 'outcome' }>) => void): () => void {
    this.outcomeWaiters.set(seq, cb);
    return () => {
      if (this.outcomeWaiters.get(seq) === cb) this.outcomeWaiters.delete(seq);
    };
  }

  propose(now: number, ops: CandidateOp[]): ReturnType<DomainNode['propose']> {
    let r: ReturnType<DomainNode['propose']> = { refused: 'internal-error' };
    // The candidate is durable before its proposer hears its number, or refused (batched: the
    // proposer waits for whenDurable before it answers anything).
    const failed = this.guard(() => (r = this.node.propose(now, ops)));
    if (failed && 'seq' in r) return { refused: `this member is fenced: ${this.node.fencedCause}` };
    return r;
  }

  /** Leader only: add or remove one voting member, by peer name (Raft §4.1). */
  changeMember(now: number, change: { add?: string; remove?: string }): { ok: true; index: number } | { ok: false; reason: string } {
    const id = (peer: string | undefined): number | undefined => {
      if (peer === undefined) return undefined;
      if (peer === 'self') return this.selfId;
      const x = this.idOf.get(peer);
      if (x === undefined) throw new Error(`no peer named ${peer}`);
      return x;
    };
    const c = { add: id(change.add), remove: id(change.remove) };
    let r: { ok: true; index: number } | { ok: false; reason: string } = { ok: false, reason: 'internal-error' };
    if (this.guard(() => (r = this.node.changeMembers(now, c)), true))
      return { ok: false, reason: `this member is fenced: ${this.node.fencedCause}` };
    if (!r.ok && this.node.raft.role !== 'leader' && this.node.raft.leader)
      return { ok: false, reason: `${r.reason}: ask the leader (${this.name(this.node.raft.leader)})` };
    return r;
  }

  /** `spook domain show`: members, roles, commit index, lag per member, partitions seen. */
  summary(now: number): DomainSummary {
    const n = this.node;
    const r = n.raft;
    const d = n.state.digest();
    const alive = new Set(n.aliveLinks(now));
    const members = r.members.map((id) => {
      const p = r.progressOf(id);
      const commit = n.announcedCommit(id);
      return {
        member: this.name(id),
        nodeId: id,
        role: id === r.leader ? 'leader' : 'follower',
        link: id === this.selfId ? 'self' : alive.has(id) ? 'direct' : 'via relay or down',
        matchIndex: id === this.selfId ? r.lastIndex : (p?.match ?? null),
        commitIndex: commit ?? null,
        lag: commit === undefined ? null : Math.max(0, r.commit - commit),
      };
    });
    return {
      domain: this.cfg.name,
      nodeId: this.selfId,
      state: n.coherenceState,
      fenced: n.fencedCause ?? null,
      role: r.role,
      leader: r.leader ? this.name(r.leader) : null,
      term: r.term,
      commitIndex: r.commit,
      appliedIndex: r.applied,
      lastIndex: r.lastIndex,
      snapshotIndex: r.snapshotIndex,
      snapshotting: r.snapshottingIndex,
      fullStateBytes: n.state.fullStateBytes(),
      hash: hashHex(d),
      policy: this.cfg.policy,
      pending: n.pendingCount,
      members,
      partitionsSeen: n.stats.partitions,
      recentPartitions: this.partitionsSeen,
      stats: { ...n.stats, ...r.stats, internalErrors: this.internalErrors, fragments: { ...n.links.stats, heldBytes: n.links.totalHeld } },
      // bytes against maxBytes (and size against maxKeys for a map): how near the quota a register is.
      registers: [...n.state.registers].map(([name, reg]) => ({
        name,
        kind: reg.kind,
        version: reg.version,
        size: reg.state.size(),
        bytes: reg.state.fullTransferBytes(),
        ...reg.quota,
      })),
      maxSnapshotBytes: r.maxSnapshotBytes,
      groups: [...n.state.groups].map(([name, g]) => ({ name, registers: g.registers, version: g.version })),
    };
  }

  /** A committed map value or stream bytes, as of the applied index. */
  read(
    register: string,
    key?: Uint8Array,
  ): { version: number; index: number; entry?: { value: Uint8Array; version: number }; state: MapState | undefined; size: number } {
    const reg = this.node.state.registers.get(register);
    if (!reg) throw new Error(`no register named ${register} in domain ${this.cfg.name}`);
    const entry = key && reg.state instanceof MapState ? reg.state.get(key) : undefined;
    return {
      version: reg.version,
      index: this.node.raft.applied,
      entry,
      state: reg.state instanceof MapState ? reg.state : undefined,
      size: reg.state.size(),
    };
  }

  /** `lines.admit`: undefined when the line is left out (counted, and a line owed on where the domain ends up). */
  private admitLine(key: string): number | undefined {
    const suppressed = this.lines.admit(performance.now(), key); // monotonic: a clock stepped back would silence them
    if (suppressed === undefined) {
      this.shown.left++;
      this.onLineSuppressed?.();
      this.shown.owed ??= setTimeout(() => this.settleLines(), this.lines.intervalMs).unref();
    }
    return suppressed;
  }

  /** Lines were left out: log the domain's leader and coherence if the last lines shown did not say them. */
  private settleLines(): void {
    const s = this.shown;
    s.owed = undefined;
    const leader = this.node.raft.leader;
    const coherence = this.node.coherenceState;
    if (leader !== s.leader || coherence !== s.coherence)
      this.log.info(
        { domain: this.cfg.name, leader: leader ? this.name(leader) : undefined, term: this.node.raft.term, coherence, suppressed: s.left },
        'domain lifecycle: transitions left out of the log',
      );
    s.leader = leader;
    s.coherence = coherence;
    s.left = 0;
  }

  close(): void {
    clearTimeout(this.shown.owed);
    this.shown.owed = undefined;
    this.disk?.close();
  }
}

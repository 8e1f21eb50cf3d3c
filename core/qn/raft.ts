/**
 * Raft, sans I/O: the collapse order of a QN domain (docs/ARCHITECTURE.md §QN).
 *
 * Follows Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm"
 * (USENIX ATC 2014) and Ongaro's dissertation "Consensus: Bridging Theory and Practice"
 * (Stanford 2014), with these parts of the dissertation:
 *  - §4.2.3 / §9.6 PreVote and leader stickiness, so a healed minority does not depose a
 *    working leader; CheckQuorum (§6.2), so a leader cut off from its majority steps down
 *    and its node knows it is decoherent;
 *  - §4.1 single-server membership changes, a configuration in force as soon as it is in
 *    the log, at most one uncommitted at a time, and only after the leader has committed an
 *    entry of its own term (the fix posted to raft-dev in 2015);
 *  - §5 snapshots, kept beside a retained log tail so a lagging follower usually catches
 *    up from log entries (only the missing ones) and gets a snapshot only when those are gone.
 *
 * Time, randomness and the network are injected, and storage is at a boundary (etcd's
 * Ready): each step queues its writes (RaftWrite) beside its messages, and the driver makes
 * the writes durable before it sends the messages. The same code runs in spookd and in the
 * seeded simulator (testing/sim/domain.ts).
 */
import { Reader, Writer } from '../../wire/buffer.js';
import { DropReason } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';

import type { NodeId, RaftMsg } from '../../wire/qn.js';
import type { PinnedSnapshot } from '../register/slices.js';

/** The QN messages' layouts live with their codec (wire/qn.ts); Raft steps on them. */
export type { NodeId, RaftMsg };

/**
 * Bounds on what a peer may make us store (docs/PROTOCOL.md §15.3, "Semantic checks"): every
 * value kept stays encodable as a varint after any increment we make to it (term + 1 when
 * campaigning, index + 1 when appending), so no later encoding can fail.
 */
export const MAX_TERM = 2 ** 48 - 1;
export const MAX_INDEX = 2 ** 48 - 1;
/** Node ids are the first 48 bits of a static key (§15.1); 0 means none. */
export const MAX_NODE_ID = 2 ** 48 - 1;
/** At most this many voting members in a configuration. */
export const MAX_MEMBERS = 64;
/**
 * Default bound on an incoming snapshot (the buffer one leader can make a follower hold); a
 * QN domain derives its own from its registers' quotas (snapshotBound in state.ts).
 */
export const DEFAULT_MAX_SNAPSHOT_BYTES = 1024 * 1024 * 1024;

/**
 * What a leader may hold past its commit index before it takes no more proposals (etcd's
 * MaxUncommittedEntriesSize, in entries and in octets of commands; docs/PROTOCOL.md §15.4,
 * "Uncommitted bound"): it refuses a proposal that would take it past either (one command
 * is always taken when nothing is uncommitted), and the proposer retries it later. A follower
 * holds up to twice as much past its commit index (UNCOMMITTED_MARGIN), and refuses an
 * append beyond that. Honest load stays far below: each member has at most OUTCOME_WINDOW
 * (4,096) undecided candidates (the domain simulators run 256), and a leader appends each
 * at most once per term.
 */
export const DEFAULT_MAX_UNCOMMITTED_ENTRIES = 16_384;
export const DEFAULT_MAX_UNCOMMITTED_BYTES = 64 * 1024 * 1024;
/**
 * A follower's bound over a leader's: a new leader's log past its commit index may hold a
 * deposed leader's uncommitted entries besides its own (those are what let it exceed its
 * bound: a Noop per term that failed to commit one), so a follower holding exactly a leader's
 * bound would refuse a new leader's Noop after one such term, and nothing could commit.
 */
const UNCOMMITTED_MARGIN = 2;

/** A Noop starting its term (after an entry of an earlier one): as each leader appends one. */
const termNoop = (e: { term: number; cmd: Uint8Array }, before: number): boolean =>
  e.term > before && e.cmd.length === 1 && e.cmd[0] === EntryKind.Noop;

/**
 * Why Raft refused a message (closed set; the caller counts them). Each leaves the node's
 * state exactly as it was, except `conflicts-committed`, which may follow the message's term.
 */
export type RaftDrop =
  /** A term, index or count beyond the bounds above, or inconsistent with the message's own term. */
  | 'out-of-bounds'
  /** An entry that could not be applied (unknown kind, undecodable configuration or command). */
  | 'bad-entry'
  /** An append that would overwrite an entry this node knows is committed (a protocol violation). */
  | 'conflicts-committed'
  /** An acknowledgement of entries the leader does not have. */
  | 'index-beyond-log'
  /** A snapshot whose members are invalid, that is larger than allowed, or that does not restore. */
  | 'bad-snapshot'
  /** A chunk that disagrees with the transfer under way (total, term or members). */
  | 'snapshot-mismatch'
  /**
   * An append that would leave more entries or octets past the commit index than this
   * follower holds (twice a leader's maxUncommittedEntries / maxUncommittedBytes): refused as
   * a consistency failure is (Raft lets a follower answer failure), so the leader retries.
   */
  | 'log-full'
  /**
   * A difference within electionMs of the last one this member tried to patch its state with
   * (each may cost a copy of the whole state, installed or not): refused as one that does not
   * apply, so the leader sends entries.
   */
  | 'diff-rate'
  /** This node is fenced (its own journal could not be applied): it takes part in nothing. */
  | 'fenced';

export interface LogEntry {
  readonly term: number;
  readonly index: number;
  /** Encoded command: first byte is the kind (EntryKind). */
  readonly cmd: Uint8Array;
}

export enum EntryKind {
  /** A new leader's first entry: commits the entries of earlier terms (Raft §5.4.2). */
  Noop = 0,
  /** The voting members from this entry on (§4.1). */
  Config = 1,
  /** A command for the state machine (a collapse candidate). */
  App = 2,
}

export enum Role {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

export interface SnapshotMeta {
  index: number;
  term: number;
  members: NodeId[];
}

/**
 * What Raft must find again after a crash, as its store loaded it (the result of replaying
 * every RaftWrite that was made durable).
 */
export interface RaftStored {
  readonly term: number;
  readonly vote: NodeId;
  readonly snapshot?: SnapshotMeta & { readonly data: Uint8Array };
  readonly base: number;
  readonly baseTerm: number;
  readonly entries: readonly LogEntry[];
  readonly commit: number;
}

/**
 * What Raft asks its driver to make durable, in order (etcd's HardState, Entries and
 * Snapshot as a closed set of writes). Raft never does I/O: it hands these out in a Ready,
 * and the messages of that Ready may leave only once they are durable.
 */
export type RaftWrite =
  | { readonly kind: 'hard'; readonly term: number; readonly vote: NodeId }
  | { readonly kind: 'append'; readonly entries: readonly LogEntry[] }
  /** Drop entries at `from` and after. */
  | { readonly kind: 'truncate'; readonly from: number }
  | { readonly kind: 'snapshot'; readonly meta: SnapshotMeta; readonly data: Uint8Array }
  /**
   * Write a snapshot of the state at meta.index in the background (backgroundSnapshots), from
   * `pinned`; the driver reports it with snapshotDurable() once it is durable (or
   * snapshotFailed()). The log is compacted only then. A 'snapshot' write (an install) that
   * follows supersedes it: the driver drops it, and Raft ignores its report.
   */
  | { readonly kind: 'snapshot-begin'; readonly meta: SnapshotMeta; readonly pinned: PinnedSnapshot }
  /** Drop entries at `base` and before; `reset` drops the whole log as well. */
  | { readonly kind: 'compact'; readonly base: number; readonly baseTerm: number; readonly reset: boolean }
  /**
   * The commit index, so a restarted member serves what it knew committed at once. Need not
   * be flushed before the messages: an older value is still a committed index (only staler).
   */
  | { readonly kind: 'commit'; readonly index: number };

/** One step's output: the writes to make durable, then the messages to send. */
export interface RaftReady {
  readonly writes: readonly RaftWrite[];
  readonly messages: readonly { to: NodeId; msg: RaftMsg }[];
}

export interface StateMachine {
  apply(e: LogEntry): void;
  snapshot(): Uint8Array;
  /** Optional (backgroundSnapshots): the applied state pinned, encoded later as snapshot() would encode it now. */
  pin?(): PinnedSnapshot;
  /**
   * Replace the state with the snapshot's; false (state unchanged) if `data` is not a valid snapshot of `index`.
   * `fromLeader`: a leader sent it (else this member's own, from its store): it may not make this member hold more than its quotas.
   */
  restore(data: Uint8Array, index: number, fromLeader?: boolean): boolean;
  /**
   * Optional (catch-up by difference, docs/PROTOCOL.md §15.4): the state at the applied index
   * as a difference from the state at `base`, given the log entries in between; undefined if
   * it cannot be made, or (`limit`) when it would take more than `limit` octets.
   */
  diff?(base: number, entries: readonly LogEntry[], limit?: number): Uint8Array | undefined;
  /** The full snapshot of the state patched by a difference from `base` to `index`, or undefined if it does not apply here. */
  patch?(data: Uint8Array, base: number, index: number): Uint8Array | undefined;
}

/**
 * Catch-up by difference: a follower found this many entries behind the leader's applied
 * index is sent the difference instead of the entries when it takes at most half their bytes.
 * A follower refuses a difference whose index is less than this past its base: no leader
 * sends one, and each installed costs the follower a copy of its whole state.
 */
export const DIFF_MIN_ENTRIES = 64;

/**
 * A snapshot's bytes, or how to read back the one the driver wrote: that snapshot or a later
 * durable one (the reader returns what it found, meta included), undefined if none reads back.
 */
export type SnapshotData = Uint8Array | (() => (SnapshotMeta & { readonly data: Uint8Array }) | undefined);

export interface RaftOptions {
  id: NodeId;
  /** The voting members when neither the log nor a snapshot says otherwise (bootstrap). */
  initialMembers: NodeId[];
  /** What the store loaded (a fresh member: term 0, no entries). */
  stored: RaftStored;
  sm: StateMachine;
  /** Uniform integer in [min, max]: the only randomness (election timeouts). */
  random: (min: number, max: number) => number;
  electionMs?: number;
  heartbeatMs?: number;
  /** Bytes of entries per append message (one datagram). */
  maxAppendBytes?: number;
  /** Entries sent and not yet acknowledged, per follower. */
  maxInflight?: number;
  /** Snapshot once this many applied entries are in the log; keep half of them for catch-up. */
  maxLogEntries?: number;
  /**
   * Snapshot as well once the applied entries in the log hold this many octets of commands, and
   * keep at most half of them: entries of any size up to the largest candidate would otherwise
   * be kept up to maxLogEntries of them. Default DEFAULT_MAX_SNAPSHOT_BYTES (a domain: its maxSnapshotBytes).
   */
  maxLogBytes?: number;
  /**
   * Take those snapshots in the background ('snapshot-begin', sm.pin): the log grows past
   * maxLogEntries until the driver reports one durable. Default false: written at once.
   */
  backgroundSnapshots?: boolean;
  snapChunkBytes?: number;
  /** Largest snapshot a follower accepts (bytes); default DEFAULT_MAX_SNAPSHOT_BYTES. */
  maxSnapshotBytes?: number;
  /** Checks an App command before it is stored (decodable, applicable); absent: any App command. */
  checkCommand?: (cmd: Uint8Array) => boolean;
  /**
   * Leader: entries past the commit index beyond which proposals are refused; a follower holds
   * twice as many. The same at every member. Default DEFAULT_MAX_UNCOMMITTED_ENTRIES.
   */
  maxUncommittedEntries?: number;
  /**
   * Leader: octets of commands past the commit index beyond which proposals are refused; a
   * follower holds twice as many. The same at every member. Default DEFAULT_MAX_UNCOMMITTED_BYTES.
   */
  maxUncommittedBytes?: number;
}

interface Progress {
  next: number;
  match: number;
  lastAck: number;
  /** match at the previous heartbeat: no progress since means the in-flight entries were lost. */
  matchAtBeat: number;
  /**
   * Probing (as etcd's progress states): the follower has not acknowledged lately, so send
   * one append per heartbeat instead of a window of them that may all be lost.
   */
  probe: boolean;
  /**
   * Where the last probe started (p.next when it was sent): a refusal whose hint is at or past
   * it answers an append sent before that probe (one lost datagram makes every later append
   * in flight refused with the same hint), so it teaches nothing and resends nothing.
   */
  probeAt: number;
  /**
   * The snapshot being sent, kept until the follower has it (a newer one taken meanwhile
   * does not restart the transfer); `offset` acknowledged, `sent` sent so far.
   */
  snap?: SnapshotMeta & {
    data: Uint8Array;
    offset: number;
    sent: number;
    base?: number;
    baseTerm?: number;
    since?: number;
  } & Partial<SnapResend>;
  /** The match index a difference was last weighed (or refused) at: not weighed again there. */
  diffAt: number;
  /** A refusal moved `next` back since the last heartbeat: the next one waits for the heartbeat. */
  backed: boolean;
  /** When a difference was last weighed for this follower: at most once per electionMs (each costs a walk of the entries it would replace). */
  diffWeighedAt: number;
  /**
   * A refusal since the last heartbeat hinted below `match`: the follower says it lacks entries
   * it acknowledged (its directory wiped or restored from a backup). -1: none.
   */
  lostHint: number;
  /** Heartbeat periods in a row with such a refusal and no acknowledgement of `match` or beyond. */
  lostBeats: number;
  /** Times `match` was lowered for it: each needs twice the periods of the one before (at most 64). */
  lost: number;
}

/**
 * When a snapshot transfer may go back to the follower's offset and send its window again
 * (mayResend): at most once a heartbeat, and, unless that offset is past the one the last
 * resend went from, only after 1, 2, 4 ... 64 heartbeats. Before, a follower that took the
 * fragments and never moved its offset drew the window (8 chunks of 16 KiB) every heartbeat for
 * ever, and one alternating a chunk's acknowledgement with offset 0 drew it again per pair of
 * messages, with no time passing. Progress is the offset resent from, not the highest offset
 * ever acknowledged: a follower that restarted mid-transfer climbs from 0 again, and each loss
 * on the way had it wait up to 64 heartbeats (a 1 MB snapshot restarted at 80% under 10% loss:
 * 19 s to catch up, 0.9 s before the pacing).
 */
interface SnapResend {
  /** The offset the window was last sent again from (-1: not yet). */
  resentFrom: number;
  /** The heartbeat (Raft.beats) of the last resend. */
  resentBeat: number;
  /** Heartbeats to wait before the next resend without progress (doubling, at most 64). */
  wait: number;
  /** The offset at the previous heartbeat: a heartbeat resends only if it has not moved, */
  beatOffset: number;
  /** or if the last answer did not move it with chunks past it out (one was lost). */
  stalled: boolean;
}

const MAX_RESEND_WAIT = 64;

/** Outcome of a local request to change membership. */
/**
 * Raft's timers (named as quinn-proto's connection/timer.rs names its own), in firing order:
 * - quorum-check: a leader that heard from no majority within an election timeout steps down (§6.2);
 * - heartbeat: a leader's empty (or catching-up) AppendEntries to every other member;
 * - election: a follower or candidate that heard no leader campaigns (a non-member just waits again).
 */
export const RAFT_TIMERS = ['quorum-check', 'heartbeat', 'election'] as const;
export type RaftTimer = (typeof RAFT_TIMERS)[number];

export type ChangeResult = { ok: true; index: number } | { ok: false; reason: string };

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = 0;
  role = Role.Follower;
  leader: NodeId = 0;
  commit = 0;
  applied = 0;
  /** Index and term just before log[0] (compaction point). */
  private base = 0;
  private baseTerm = 0;
  private log: LogEntry[] = [];
  /**
   * logBytes[i]: the octets of the commands of log[0..i] plus logBytesBase (those before
   * log[0]): the octets between two indexes in O(1) (bytesBetween), for the uncommitted bound.
   */
  private logBytes: number[] = [];
  private logBytesBase = 0;
  /**
   * logCounted[i]: the entries of log[0..i] other than Noops starting a term, plus logCountedBase (those before
   * log[0]): what counts toward the uncommitted bound's entries, in O(1) (countedBetween).
   */
  private logCounted: number[] = [];
  private logCountedBase = 0;
  /** The latest durable snapshot: its bytes, or (written in the background) how to read them back. */
  private snap: (SnapshotMeta & { data: SnapshotData }) | undefined;
  /** A background snapshot asked for ('snapshot-begin') and not yet reported durable. */
  private snapshotting: SnapshotMeta | undefined;
  /** The last background snapshot failed: the next one is written at once (a failure of that fences the member). */
  private nextSnapshotAtOnce = false;
  /** Config entries in the log (and the snapshot's), oldest first; the last one is in force. */
  private configs: { index: number; members: NodeId[] }[] = [];
  /**
   * How many of `configs` name each id: inAnyConfig() runs on every datagram, and a leader may
   * make a follower hold ~10^5 configurations of 64 ids (a scan of them cost 33 ms a message).
   * Kept by pushConfig / popConfig / resetConfigs, the only writers of `configs`.
   */
  private readonly configIds = new Map<NodeId, number>();
  private electionAt = 0;
  private heartbeatAt = 0;
  private quorumCheckAt = 0;
  /** When we last heard from a leader of the current term (leader stickiness, §4.2.3). */
  private leaderContactAt = -Infinity;
  private replicatedAtMs = -Infinity;
  private votes = new Set<NodeId>();
  private progress = new Map<NodeId, Progress>();
  /**
   * Follower side: the snapshot being received, staged in one buffer that grows (doubling, from
   * STAGING_FIRST_BYTES) up to `total` octets (total ≤ maxSnapshotBytes), which becomes the
   * snapshot itself: no per-chunk copies, no concatenation.
   */
  private incoming:
    | { index: number; term: number; members: NodeId[]; base: number; baseTerm: number; total: number; buf: Uint8Array; got: number }
    | undefined;
  private outbox: { to: NodeId; msg: RaftMsg }[] = [];
  /** Writes made since the last ready(), in order: durable before the outbox leaves. */
  private unstable: RaftWrite[] = [];
  /** First index of the current leader term: a config change waits until it is committed. */
  private termStart = 0;
  /**
   * Leader: entries appended since the last ready() and not yet offered to the followers. They
   * go out together when the driver takes its Ready (etcd's proposal batching): the proposals
   * of one turn of the driver share appends, not one datagram per entry per follower.
   */
  private unsent = false;
  /** The time of the latest input (what the batched broadcast of ready() runs at). */
  private lastNow: number;
  readonly electionMs: number;
  readonly heartbeatMs: number;
  private readonly maxAppendBytes: number;
  private readonly maxInflight: number;
  private readonly maxLogEntries: number;
  private readonly maxLogBytes: number;
  private readonly maxUncommittedEntries: number;
  private readonly maxUncommittedBytes: number;
  /**
   * The first commit index a leader sent this member in an append since it started, once this
   * member holds the entry there and it is of that leader's term (0: none yet). A member that
   * joined proposes only once it has applied that far (node.ts): what was decided before it was
   * (re-)added is at or below it. The first, not the highest: under
   * steady load the highest keeps moving ahead of what a follower has applied.
   */
  leaderCommitSeen = 0;
  /** When this member last tried to patch its state with a difference, installed or not ('diff-rate'). */
  private diffTriedAt = -Infinity;
  /** Heartbeats fired as leader (what a snapshot transfer's resends are paced by: SnapResend). */
  private beats = 0;
  private readonly snapChunkBytes: number;
  readonly maxSnapshotBytes: number;
  /**
   * Set when this node's own durable state cannot be used (an entry or snapshot on disk that
   * does not apply): the node then takes part in nothing and says why (docs/OPERATIONS.md).
   */
  fault: string | undefined;
  readonly stats = {
    elections: 0,
    leaderChanges: 0,
    snapshotsSent: 0,
    snapshotsInstalled: 0,
    diffsSent: 0,
    diffsInstalled: 0,
    stepDowns: 0,
    termExhausted: 0,
    /** Proposals a leader refused at its uncommitted bound (maxUncommittedEntries / maxUncommittedBytes); the proposer retries. */
    proposalsDeferred: 0,
    /** Times a leader found a follower lacking entries it had acknowledged (wiped or restored) and sent them again. */
    lostEntries: 0,
  };
  /** Followers found lacking entries they had acknowledged, not yet taken by the driver (takeLost), at most 16. */
  private lostNotices: { member: NodeId; acknowledged: number; holds: number }[] = [];

  constructor(
    private readonly o: RaftOptions,
    now: number,
  ) {
    this.id = o.id;
    this.lastNow = now;
    this.electionMs = o.electionMs ?? 1000;
    this.heartbeatMs = o.heartbeatMs ?? 100;
    this.maxAppendBytes = o.maxAppendBytes ?? 1100;
    this.maxInflight = o.maxInflight ?? 512;
    this.maxLogEntries = Math.max(8, o.maxLogEntries ?? 100_000);
    this.maxLogBytes = Math.max(1, o.maxLogBytes ?? DEFAULT_MAX_SNAPSHOT_BYTES);
    this.maxUncommittedEntries = Math.max(8, o.maxUncommittedEntries ?? DEFAULT_MAX_UNCOMMITTED_ENTRIES);
    this.maxUncommittedBytes = Math.max(1, o.maxUncommittedBytes ?? DEFAULT_MAX_UNCOMMITTED_BYTES);
    // A chunk plus up to 64 member ids and the other fields must fit one sealed datagram.
    this.snapChunkBytes = o.snapChunkBytes ?? 700;
    this.maxSnapshotBytes = o.maxSnapshotBytes ?? DEFAULT_MAX_SNAPSHOT_BYTES;
    const st = o.stored;
    this.term = st.term;
    this.vote = st.vote;
    this.base = st.base;
    this.baseTerm = st.baseTerm;
    this.setLog(st.entries);
    this.resetConfigs({ index: 0, members: [...o.initialMembers].sort((a, b) => a - b) });
    if (st.snapshot) {
      // A crash between saving a snapshot and compacting the log can leave a log that the
      // snapshot covers entirely, or one that disagrees with it: the snapshot wins (§7).
      const s = st.snapshot;
      const at = s.index - this.base;
      if (s.index >= this.base + this.log.length || (at > 0 && this.log[at - 1].term !== s.term)) {
        this.setLog([]);
        this.base = s.index;
        this.baseTerm = s.term;
        this.write({ kind: 'compact', base: s.index, baseTerm: s.term, reset: true });
      }
      this.snap = st.snapshot;
      this.resetConfigs({ index: st.snapshot.index, members: [...st.snapshot.members] });
      if (!validMembers(s.members) || !o.sm.restore(s.data, s.index)) this.fault = `the snapshot at index ${s.index} cannot be restored`;
      this.commit = this.applied = st.snapshot.index;
    }
    // A term beyond the bound can only have been stored by a version without it (issue 13).
    if (st.term > MAX_TERM) this.fault = `the stored term ${st.term} exceeds ${MAX_TERM}`;
    // Entries the snapshot already covers must not override its (later) configuration.
    for (const e of this.log) {
      if (this.fault) break;
      if (!this.checkEntry(e.cmd) || e.term > MAX_TERM) this.fault = `journal entry ${e.index} cannot be applied`;
      else if (e.index > this.snapshotIndex) this.noteConfig(e);
    }
    this.resetElection(now);
    // Serve the last state known committed at once, not only once a leader is heard again.
    const commit = Math.min(st.commit, this.lastIndex);
    if (!this.fault && commit > this.commit) {
      this.setCommit(commit, false);
      this.applyCommitted();
    }
  }

  /** Noop, a valid configuration, or an App command the state machine accepts. */
  checkEntry(cmd: Uint8Array): boolean {
    switch (cmd[0]) {
      case EntryKind.Noop:
        return cmd.length === 1;
      case EntryKind.Config:
        return parseConfig(cmd) !== undefined;
      case EntryKind.App:
        return this.o.checkCommand?.(cmd) ?? true;
      default:
        return false;
    }
  }

  // --- inspection -------------------------------------------------------------------

  get lastIndex(): number {
    return this.base + this.log.length;
  }

  get lastTerm(): number {
    return this.log.length ? this.log[this.log.length - 1].term : this.baseTerm;
  }

  get members(): NodeId[] {
    return this.configs[this.configs.length - 1].members;
  }

  /** In any configuration this node holds (log, snapshot or bootstrap), in force or not. */
  inAnyConfig(id: NodeId): boolean {
    return this.configIds.has(id);
  }

  /** Leader: the index of its term's first entry (its Noop); committed, its log holds every committed entry. */
  get termStartIndex(): number {
    return this.termStart;
  }

  /** The configuration in force at the applied index (what the state machine has reached). */
  get appliedMembers(): NodeId[] {
    return this.membersAt(this.applied);
  }

  /** Index of the configuration in force (0: the bootstrap one). */
  get configIndex(): number {
    return this.configs[this.configs.length - 1].index;
  }

  /** When this follower last heard the leader of its term. */
  get leaderContact(): number {
    return this.leaderContactAt;
  }

  /**
   * When this follower last took an append or a snapshot chunk from the leader of its term: the
   * leader replicates to it, so holds it a member (§15.6). Link-level progress (heardFrom: the
   * leader acknowledging a fragment we send) is not that: a leader acknowledges a removed member's
   * fragments too.
   */
  get replicatedAt(): number {
    return this.replicatedAtMs;
  }

  /**
   * Link-level progress from `id` (a fragment or its acknowledgement, §15.9) while one large
   * message is under way between it and us: the leader hearing a follower counts as that
   * follower's acknowledgement for the quorum check, and a follower hearing its leader as
   * contact, so a transfer longer than an election timeout deposes nobody. Liveness only:
   * terms, logs and votes are untouched.
   */
  heardFrom(now: number, id: NodeId): void {
    if (this.fault) return;
    if (this.role === Role.Leader) {
      const p = this.progress.get(id);
      if (p) p.lastAck = now;
    } else if (this.role === Role.Follower && id !== 0 && id === this.leader) {
      this.leaderContactAt = now;
      this.resetElection(now);
    }
  }

  get firstIndex(): number {
    return this.base + 1;
  }

  get snapshotIndex(): number {
    return this.snap?.index ?? 0;
  }

  /** The index of the background snapshot under way, or 0. */
  get snapshottingIndex(): number {
    return this.snapshotting?.index ?? 0;
  }

  /** Leader view of a follower's replication (undefined elsewhere). */
  progressOf(id: NodeId): { match: number; next: number; lastAck: number } | undefined {
    const p = this.progress.get(id);
    return this.role === Role.Leader && p ? { match: p.match, next: p.next, lastAck: p.lastAck } : undefined;
  }

  termAt(index: number): number | undefined {
    if (index === this.base) return this.baseTerm;
    if (index < this.base || index > this.lastIndex) {
      if (this.snap && index === this.snap.index) return this.snap.term;
      return undefined;
    }
    return this.log[index - this.base - 1].term;
  }

  entryAt(index: number): LogEntry | undefined {
    return index > this.base && index <= this.lastIndex ? this.log[index - this.base - 1] : undefined;
  }

  /** Octets of the commands of the entries (from, to], both in [base, lastIndex]: O(1). */
  private bytesBetween(from: number, to: number): number {
    const at = (i: number): number => (i === this.base ? this.logBytesBase : this.logBytes[i - this.base - 1]);
    return to > from ? at(to) - at(from) : 0;
  }

  /** Entries other than Noops starting a term in (from, to], both in [base, lastIndex]: O(1). */
  private countedBetween(from: number, to: number): number {
    const at = (i: number): number => (i === this.base ? this.logCountedBase : this.logCounted[i - this.base - 1]);
    return to > from ? at(to) - at(from) : 0;
  }

  /** The log's entries from now on (after base), their octets counted afresh. */
  private setLog(entries: readonly LogEntry[]): void {
    this.log = [];
    this.logBytes = [];
    this.logBytesBase = 0;
    this.logCounted = [];
    this.logCountedBase = 0;
    for (const e of entries) this.pushLog(e);
  }

  private pushLog(e: LogEntry): void {
    const n = this.logBytes.length;
    this.logBytes.push((n > 0 ? this.logBytes[n - 1] : this.logBytesBase) + e.cmd.length);
    this.logCounted.push((n > 0 ? this.logCounted[n - 1] : this.logCountedBase) + (termNoop(e, this.lastTerm) ? 0 : 1));
    this.log.push(e);
  }

  /** Drop the first `k` entries of the log (k ≤ its length); the caller moves base past them. */
  private dropLogBefore(k: number): void {
    if (k <= 0) return;
    this.logBytesBase = this.logBytes[k - 1];
    this.logCountedBase = this.logCounted[k - 1];
    this.log = this.log.slice(k);
    this.logBytes = this.logBytes.slice(k);
    this.logCounted = this.logCounted.slice(k);
  }

  // --- the sans-I/O surface ---------------------------------------------------------

  /**
   * What the last inputs produced: writes to make durable (in order), then messages that may
   * depend on them (a vote, an acknowledgement): send those only once the writes are durable.
   * Undefined when there is nothing.
   */
  ready(): RaftReady | undefined {
    if (this.unsent) {
      this.unsent = false;
      if (this.role === Role.Leader && !this.fault) this.broadcast(this.lastNow);
    }
    if (!this.fault) this.applyCommitted();
    if (this.unstable.length === 0 && this.outbox.length === 0) return undefined;
    const r = { writes: this.unstable, messages: this.outbox };
    this.unstable = [];
    this.outbox = [];
    return r;
  }

  /** Each armed timer's deadline (ms): a leader's heartbeat and quorum check, anyone else's election; none after a fault. */
  deadlines(): Partial<Record<RaftTimer, number>> {
    if (this.fault) return {};
    if (this.role === Role.Leader) return { 'quorum-check': this.quorumCheckAt, heartbeat: this.heartbeatAt };
    return { election: this.electionAt };
  }

  /** The earliest deadline (ms); Infinity when none is armed. */
  pollTimeout(): number {
    let t = Infinity;
    for (const at of Object.values(this.deadlines())) t = Math.min(t, at);
    return t;
  }

  /** Fire the timers due at `now`, in RAFT_TIMERS order. */
  handleTimeout(now: number): void {
    this.lastNow = now;
    const due = this.deadlines(); // taken before firing: a leader the quorum check steps down does not campaign in the same call
    for (const timer of RAFT_TIMERS) {
      const at = due[timer];
      if (at !== undefined && now >= at) this.fire(now, timer);
    }
  }

  private fire(now: number, timer: RaftTimer): void {
    switch (timer) {
      case 'quorum-check':
        this.checkQuorum(now);
        return;
      case 'heartbeat':
        if (this.role !== Role.Leader || now < this.heartbeatAt) return; // the quorum check stepped down
        this.heartbeatAt = now + this.heartbeatMs;
        this.beats++;
        for (const id of this.others()) {
          const p = this.prog(id, now);
          this.checkLost(id, p);
          // No acknowledgement since the last beat: what was in flight is presumed lost; probe from there.
          // Probing, from where the last probe started (none sent yet: from next): going back to
          // match + 1 sent a new leader's followers (match 0) its whole log, or a snapshot once
          // compacted, at its first beat, and then at each beat after a refusal held back.
          if (p.match === p.matchAtBeat && p.next > p.match + 1) {
            if (!p.probe) p.next = p.match + 1;
            else if (p.probeAt > 0) p.next = Math.max(p.match + 1, Math.min(p.next, p.probeAt));
            p.probe = true;
          }
          p.matchAtBeat = p.match;
          p.backed = false;
          // A difference of which nothing was acknowledged within an election timeout: the
          // follower does not take differences (or never gets them); entries instead.
          if (p.snap?.base && p.snap.offset === 0 && now - (p.snap.since ?? now) >= this.electionMs) this.abandonDiff(p);
          this.sendAppend(id, true);
        }
        return;
      case 'election':
        if (this.members.includes(this.id)) this.campaign(now, true);
        else this.resetElection(now);
        return;
      default: {
        const _unhandled: never = timer; // a timer added to RAFT_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  /**
   * Leader only: append a command; undefined elsewhere (the caller forwards it to the leader),
   * or past the uncommitted bound (the caller retries it later, as etcd's ErrProposalDropped).
   * The followers are sent it with the other commands of this Ready (ready() broadcasts).
   */
  propose(now: number, cmd: Uint8Array): number | undefined {
    if (this.role !== Role.Leader || this.fault || this.lastIndex >= MAX_INDEX || !this.checkEntry(cmd)) return undefined;
    // The uncommitted bound (DEFAULT_MAX_UNCOMMITTED_ENTRIES): followers hold twice as much, so
    // no follower refuses what an honest leader appends. One command always goes when nothing
    // is uncommitted, whatever its size.
    const uncommitted = this.lastIndex - this.commit;
    if (
      uncommitted >= this.maxUncommittedEntries ||
      (uncommitted > 0 && this.bytesBetween(this.commit, this.lastIndex) + cmd.length > this.maxUncommittedBytes)
    ) {
      this.stats.proposalsDeferred++;
      return undefined;
    }
    this.lastNow = now;
    const e = this.appendLocal(cmd);
    this.unsent = true;
    return e.index;
  }

  /** Leader only: one voting member added or removed (§4.1). */
  changeMembers(now: number, change: { add?: NodeId; remove?: NodeId }): ChangeResult {
    if (this.fault) return { ok: false, reason: this.fault };
    if (this.role !== Role.Leader) return { ok: false, reason: 'not the leader' };
    if (this.configIndex > this.commit)
      return { ok: false, reason: `a membership change (index ${this.configIndex}) is not committed yet` };
    if (this.commit < this.termStart) return { ok: false, reason: 'the leader has not committed an entry of its term yet' };
    const cur = this.members;
    let next: NodeId[];
    if (change.add !== undefined && change.remove === undefined) {
      if (cur.includes(change.add)) return { ok: false, reason: `node ${change.add} is already a member` };
      next = [...cur, change.add].sort((a, b) => a - b);
    } else if (change.remove !== undefined && change.add === undefined) {
      if (!cur.includes(change.remove)) return { ok: false, reason: `node ${change.remove} is not a member` };
      if (cur.length === 1) return { ok: false, reason: 'cannot remove the last member' };
      next = cur.filter((m) => m !== change.remove);
    } else return { ok: false, reason: 'exactly one of add and remove' };
    if (!validMembers(next))
      return { ok: false, reason: `node ids are 1-${MAX_NODE_ID} and a configuration has at most ${MAX_MEMBERS} members` };
    const e = this.appendLocal(encodeConfig(next));
    this.broadcast(now);
    return { ok: true, index: e.index };
  }

  /**
   * One message from `from`. Returns why it was refused, having changed nothing (see
   * RaftDrop), or undefined once handled. Never throws on any message.
   */
  handleMessage(now: number, from: NodeId, m: RaftMsg): RaftDrop | undefined {
    if (this.fault) return 'fenced';
    this.lastNow = now;
    const bad = this.check(m);
    if (bad) return bad;
    // A term from the future: follow it (§5.1), except a pre-vote, which changes nothing,
    // and a vote request while we still hear a leader (stickiness: it is ignored outright).
    if (m.t === 'vote' && this.heardLeaderRecently(now)) {
      this.send(from, { t: 'voteResp', term: this.term, granted: false, pre: m.pre });
      return undefined;
    }
    if (m.term > this.term && !(m.t === 'vote' && m.pre) && !(m.t === 'voteResp' && m.pre && m.granted)) {
      const leader = m.t === 'append' || m.t === 'snap' ? from : 0;
      this.becomeFollower(now, m.term, leader);
    }
    switch (m.t) {
      case 'vote':
        this.onVote(now, from, m);
        return undefined;
      case 'voteResp':
        this.onVoteResp(now, from, m);
        return undefined;
      case 'append':
        return this.onAppend(now, from, m);
      case 'appendResp':
        this.onAppendResp(now, from, m);
        return undefined;
      case 'snap':
        return this.onSnap(now, from, m);
      case 'snapResp':
        this.onSnapResp(now, from, m);
        return undefined;
    }
  }

  /**
   * Semantic checks before anything is touched: bounds that keep every stored value
   * encodable, a message's indexes and terms consistent with its own term, and every entry
   * applicable before it can be journaled.
   */
  private check(m: RaftMsg): RaftDrop | undefined {
    if (m.term > MAX_TERM) return 'out-of-bounds';
    switch (m.t) {
      case 'vote':
        return m.lastIndex > MAX_INDEX || m.lastTerm > m.term ? 'out-of-bounds' : undefined;
      case 'voteResp':
        return undefined;
      case 'append': {
        if (m.prevIndex + m.entries.length > MAX_INDEX || m.commit > MAX_INDEX || m.prevTerm > m.term) return 'out-of-bounds';
        // Terms in a log never decrease and never exceed the leader's.
        let t = m.prevTerm;
        for (const e of m.entries) {
          if (e.term < t || e.term > m.term) return 'out-of-bounds';
          t = e.term;
        }
        for (const e of m.entries) if (!this.checkEntry(e.cmd)) return 'bad-entry';
        return undefined;
      }
      case 'appendResp':
        if (m.index > MAX_INDEX) return 'out-of-bounds';
        // Only a follower's acknowledgement of entries we have can move its match index.
        return m.ok && this.role === Role.Leader && m.term === this.term && m.index > this.lastIndex ? 'index-beyond-log' : undefined;
      case 'snap':
        if (m.index > MAX_INDEX || m.lastTerm > m.term || m.total > MAX_INDEX) return 'out-of-bounds';
        // A difference's base is before its index (the codec checked) and its term no later.
        if (m.base !== undefined && (m.base >= m.index || (m.baseTerm ?? 0) > m.lastTerm)) return 'out-of-bounds';
        if (!validMembers(m.members) || m.total > this.maxSnapshotBytes) return 'bad-snapshot';
        return undefined;
      case 'snapResp':
        if (m.index > MAX_INDEX || m.offset > MAX_INDEX) return 'out-of-bounds';
        return m.offset > 0 && this.role === Role.Leader && m.term === this.term && m.index > this.lastIndex
          ? 'index-beyond-log'
          : undefined;
    }
  }

  // --- elections ----------------------------------------------------------------------

  private heardLeaderRecently(now: number): boolean {
    return this.role === Role.Leader || (this.leader !== 0 && now - this.leaderContactAt < this.electionMs);
  }

  private resetElection(now: number): void {
    this.electionAt = now + this.o.random(this.electionMs, 2 * this.electionMs);
  }

  private campaign(now: number, pre: boolean): void {
    this.resetElection(now);
    if (this.term >= MAX_TERM) {
      // Terms exhausted (only a member can have pushed ours this far): no election can succeed.
      this.stats.termExhausted++;
      return;
    }
    this.votes = new Set([this.id]);
    if (pre) {
      this.role = Role.PreCandidate;
    } else {
      this.stats.elections++;
      this.role = Role.Candidate;
      this.term++;
      this.vote = this.id;
      this.leader = 0;
      this.write({ kind: 'hard', term: this.term, vote: this.vote });
    }
    if (this.hasQuorum(this.votes)) return pre ? this.campaign(now, false) : this.becomeLeader(now);
    const req: RaftMsg = { t: 'vote', term: pre ? this.term + 1 : this.term, lastIndex: this.lastIndex, lastTerm: this.lastTerm, pre };
    for (const id of this.others()) this.send(id, req);
  }

  private onVote(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'vote' }>): void {
    const upToDate = m.lastTerm > this.lastTerm || (m.lastTerm === this.lastTerm && m.lastIndex >= this.lastIndex);
    let granted: boolean;
    if (m.pre) granted = m.term > this.term && upToDate;
    else {
      granted = m.term === this.term && (this.vote === 0 || this.vote === from) && upToDate;
      if (granted) {
        this.vote = from;
        this.write({ kind: 'hard', term: this.term, vote: this.vote });
        this.resetElection(now);
      }
    }
    this.send(from, { t: 'voteResp', term: granted ? m.term : this.term, granted, pre: m.pre });
  }

  private onVoteResp(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'voteResp' }>): void {
    if (!m.granted) return;
    const want = this.role === Role.PreCandidate && m.pre ? this.term + 1 : this.role === Role.Candidate && !m.pre ? this.term : -1;
    if (m.term !== want || !this.members.includes(from)) return;
    this.votes.add(from);
    if (!this.hasQuorum(this.votes)) return;
    if (this.role === Role.PreCandidate) this.campaign(now, false);
    else this.becomeLeader(now);
  }

  private becomeFollower(now: number, term: number, leader: NodeId): void {
    const wasLeader = this.role === Role.Leader;
    if (term > this.term) {
      this.term = term;
      this.vote = 0;
      this.write({ kind: 'hard', term: this.term, vote: this.vote });
    }
    this.role = Role.Follower;
    if (leader !== this.leader && leader !== 0) this.stats.leaderChanges++;
    this.leader = leader;
    if (leader !== 0) this.leaderContactAt = now;
    this.progress.clear();
    if (wasLeader) this.resetElection(now);
  }

  private becomeLeader(now: number): void {
    this.role = Role.Leader;
    this.leader = this.id;
    this.stats.leaderChanges++;
    this.progress.clear();
    for (const id of this.others()) this.prog(id, now);
    this.heartbeatAt = now;
    this.quorumCheckAt = now + this.electionMs;
    const e = this.appendLocal(new Uint8Array([EntryKind.Noop]));
    this.termStart = e.index;
    this.broadcast(now);
    this.maybeCommit(now);
  }

  /** CheckQuorum (§6.2): a leader that has not heard from a majority in an election timeout steps down. */
  private checkQuorum(now: number): void {
    this.quorumCheckAt = now + this.electionMs;
    const live = new Set([this.id]);
    for (const [id, p] of this.progress) if (now - p.lastAck < this.electionMs) live.add(id);
    if (!this.hasQuorum(live)) {
      this.stats.stepDowns++;
      this.becomeFollower(now, this.term, 0);
    }
  }

  // --- replication --------------------------------------------------------------------

  private others(): NodeId[] {
    return this.members.filter((m) => m !== this.id);
  }

  private hasQuorum(set: Set<NodeId>): boolean {
    const ms = this.members;
    let n = 0;
    for (const m of ms) if (set.has(m)) n++;
    return n * 2 > ms.length;
  }

  private prog(id: NodeId, now: number): Progress {
    let p = this.progress.get(id);
    if (!p) {
      p = {
        next: this.lastIndex + 1,
        match: 0,
        lastAck: now,
        matchAtBeat: 0,
        probe: true,
        probeAt: 0,
        diffAt: -1,
        backed: false,
        diffWeighedAt: -Infinity,
        lostHint: -1,
        lostBeats: 0,
        lost: 0,
      };
      this.progress.set(id, p);
    }
    return p;
  }

  private appendLocal(cmd: Uint8Array): LogEntry {
    const e: LogEntry = { term: this.term, index: this.lastIndex + 1, cmd };
    this.pushLog(e);
    this.write({ kind: 'append', entries: [e] });
    this.noteConfig(e);
    return e;
  }

  private noteConfig(e: LogEntry): void {
    if (e.cmd[0] !== EntryKind.Config) return;
    const members = decodeConfig(e.cmd);
    this.pushConfig({ index: e.index, members });
    // A removed node's progress goes with it: added back later (perhaps wiped), it starts afresh.
    for (const id of this.progress.keys()) if (!members.includes(id)) this.progress.delete(id);
  }

  private pushConfig(c: { index: number; members: NodeId[] }): void {
    this.configs.push(c);
    this.countIds(c.members, 1);
  }

  private popConfig(): void {
    this.countIds(this.configs.pop()!.members, -1);
  }

  private resetConfigs(c: { index: number; members: NodeId[] }): void {
    this.configs = [];
    this.configIds.clear();
    this.pushConfig(c);
  }

  private countIds(ids: readonly NodeId[], by: 1 | -1): void {
    for (const id of ids) {
      const n = (this.configIds.get(id) ?? 0) + by;
      if (n > 0) this.configIds.set(id, n);
      else this.configIds.delete(id);
    }
  }

  private broadcast(now: number): void {
    for (const id of this.others()) {
      this.prog(id, now);
      this.sendAppend(id, false);
    }
    this.maybeCommit(now);
  }

  /** Entries from the follower's next index, a datagram at a time, within the in-flight bound. */
  private sendAppend(id: NodeId, heartbeat: boolean): void {
    const p = this.progress.get(id)!;
    if (p.snap?.base) {
      // A difference under way: its chunks go on heartbeats and acknowledgements, no entries meanwhile.
      if (heartbeat) this.sendSnapshot(id, p, 'beat');
      return;
    }
    if (p.next <= this.base) {
      // Chunks go on a heartbeat or an acknowledgement, not on every new entry.
      if (heartbeat || !p.snap) this.sendSnapshot(id, p, 'beat');
      return;
    }
    if (p.probe && !heartbeat) return;
    if (p.probe) p.probeAt = p.next;
    let sent = false;
    for (let round = 0; round < (p.probe ? 1 : 16); round++) {
      const prevIndex = p.next - 1;
      const entries: { term: number; cmd: Uint8Array }[] = [];
      let bytes = 0;
      for (let i = p.next; i <= this.lastIndex && p.next - p.match - 1 + entries.length < this.maxInflight; i++) {
        const e = this.entryAt(i)!;
        if (entries.length > 0 && bytes + e.cmd.length + 8 > this.maxAppendBytes) break;
        // A probe finds where the logs match before a large entry crosses: it goes empty.
        if (p.probe && e.cmd.length + 8 > this.maxAppendBytes) break;
        entries.push({ term: e.term, cmd: e.cmd });
        bytes += e.cmd.length + 8;
      }
      if (entries.length === 0 && (sent || !heartbeat)) break;
      this.send(id, { t: 'append', term: this.term, prevIndex, prevTerm: this.termAt(prevIndex)!, commit: this.commit, entries });
      sent = true;
      p.next += entries.length;
      if (entries.length === 0) break;
      // One entry larger than an append travels alone, as fragments (§15.9): the next goes on
      // its acknowledgement, so a run of large entries does not queue megabytes per follower.
      if (bytes > this.maxAppendBytes) break;
    }
  }

  /**
   * `beat` (a heartbeat) and `behind` (the follower's offset went back): from the acknowledged
   * offset, as mayResend allows; `new` (a transfer starting) from 0; else only chunks not sent yet.
   */
  private sendSnapshot(id: NodeId, p: Progress, why: 'beat' | 'behind' | 'new' | false): void {
    if (!p.snap) {
      const s = this.snap;
      if (!s) throw new Error(`raft ${this.id}: log compacted to ${this.base} without a snapshot`);
      p.snap = this.snapshotToSend(s);
      this.stats.snapshotsSent++;
      why = 'new';
    }
    const s = p.snap;
    if (why === 'new') Object.assign(s, { resentFrom: -1, resentBeat: -1, wait: 1, beatOffset: -1 });
    else if (why === 'beat') {
      // Acknowledgements moved the offset since the last heartbeat: the window is flowing.
      const moved = s.offset !== s.beatOffset && !s.stalled;
      s.beatOffset = s.offset;
      if (!moved || s.data.length === 0) this.mayResend(s);
    } else if (why === 'behind') this.mayResend(s);
    // Up to 8 chunks in flight beyond the acknowledged offset.
    while (s.sent < s.data.length && s.sent < s.offset + 8 * this.snapChunkBytes) {
      const data = s.data.subarray(s.sent, s.sent + this.snapChunkBytes);
      this.send(id, {
        t: 'snap',
        term: this.term,
        index: s.index,
        lastTerm: s.term,
        members: s.members,
        ...(s.base ? { base: s.base, baseTerm: s.baseTerm } : {}),
        offset: s.sent,
        total: s.data.length,
        data,
      });
      s.sent += data.length;
    }
    if (s.data.length === 0 && why)
      this.send(id, {
        t: 'snap',
        term: this.term,
        index: s.index,
        lastTerm: s.term,
        members: s.members,
        offset: 0,
        total: 0,
        data: s.data,
      });
  }

  /** Send the window again from the acknowledged offset, if SnapResend's pacing allows it now. */
  private mayResend(s: NonNullable<Progress['snap']>): void {
    if (s.resentBeat === this.beats) return;
    if (s.offset <= (s.resentFrom ?? -1)) {
      const wait = s.wait ?? 1;
      if (this.beats - (s.resentBeat ?? -1) < wait) return;
      s.wait = Math.min(2 * wait, MAX_RESEND_WAIT);
    } else s.wait = 1;
    s.resentBeat = this.beats;
    s.resentFrom = s.offset;
    s.sent = s.offset;
  }

  private onAppend(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'append' }>): RaftDrop | undefined {
    if (m.term < this.term) {
      this.send(from, { t: 'appendResp', term: this.term, ok: false, index: 0 });
      return;
    }
    if (this.role !== Role.Follower || this.leader !== from) this.becomeFollower(now, m.term, from);
    this.leaderContactAt = this.replicatedAtMs = now;
    this.resetElection(now);
    let prevIndex = m.prevIndex;
    let prevTerm = m.prevTerm;
    let entries = m.entries;
    if (prevIndex < this.base) {
      // Everything at or before our compaction point is committed, hence the leader's too.
      const skip = this.base - prevIndex;
      if (skip >= entries.length) {
        this.send(from, { t: 'appendResp', term: this.term, ok: true, index: Math.max(this.commit, prevIndex + entries.length) });
        return;
      }
      entries = entries.slice(skip);
      prevIndex = this.base;
      prevTerm = this.baseTerm;
    }
    if (prevIndex > this.lastIndex) {
      this.send(from, { t: 'appendResp', term: this.term, ok: false, index: this.lastIndex });
      return;
    }
    const have = this.termAt(prevIndex);
    if (have !== prevTerm) {
      // Skip back over the whole conflicting term in one round trip (§5.3 optimisation).
      let i = prevIndex - 1;
      while (i > this.base && i > this.commit && this.termAt(i) === have) i--;
      this.send(from, { t: 'appendResp', term: this.term, ok: false, index: Math.max(i, this.commit) });
      return;
    }
    // The first entry that differs from ours: a committed one never may (Log Matching); a
    // leader that says otherwise is refused before anything is truncated.
    let idx = prevIndex;
    let first = entries.length;
    for (let i = 0; i < entries.length; i++) {
      idx++;
      if (idx > this.lastIndex || this.termAt(idx) !== entries[i].term) {
        first = i;
        break;
      }
    }
    const conflict = first < entries.length && idx <= this.lastIndex;
    if (conflict && idx <= this.commit) return 'conflicts-committed';
    if (
      first < entries.length &&
      !this.votedNoop(from, m.term, prevIndex + first, entries, first) &&
      this.overUncommitted(prevIndex, first, entries, m.commit)
    ) {
      // Refused as a failed consistency check is, changing nothing (Raft lets a follower answer
      // failure): the hint is the last entry we hold that matches, so the leader retries from
      // the first we lack, as a probe (then once per heartbeat), until its commit index moves.
      this.send(from, { t: 'appendResp', term: this.term, ok: false, index: prevIndex + first });
      return 'log-full';
    }
    if (conflict) this.truncateFrom(idx);
    const fresh: LogEntry[] = [];
    for (let i = first; i < entries.length; i++) fresh.push({ term: entries[i].term, index: prevIndex + i + 1, cmd: entries[i].cmd });
    if (fresh.length) {
      this.write({ kind: 'append', entries: fresh });
      for (const e of fresh) {
        this.pushLog(e);
        this.noteConfig(e);
      }
    }
    const matched = prevIndex + entries.length;
    // Never backwards: a probe may carry fewer entries than we already committed.
    const commit = Math.min(m.commit, matched);
    if (commit > this.commit) this.setCommit(commit);
    // Only a commit index this append let us check: one we now hold, at an entry of the sender's
    // own term (a leader that committed an entry of its term has every earlier committed entry
    // below it). Any member could claim any index (a higher term, commit 2^40): taken as it came,
    // a joined member refused every write until it restarted.
    if (this.leaderCommitSeen === 0 && m.commit <= matched && m.commit > 0 && this.termAt(m.commit) === m.term)
      this.leaderCommitSeen = m.commit;
    this.send(from, { t: 'appendResp', term: this.term, ok: true, index: matched });
  }

  /**
   * Whether the only new entry of an append is the Noop that starts the term of the leader this
   * member voted for: held past the uncommitted bound. A leader holds its proposals within the
   * bound, but each new leader appends its Noop whatever its log holds, so each term whose Noop
   * reached the others and never committed left one more entry; past twice the bound every
   * follower refused the next leader's Noop (`log-full`) and nothing could commit again, under
   * any leader. Its voters (with it, a majority) hold it, so it commits. At most one a term, and
   * a vote needs no leader heard for an election timeout: one entry an election timeout at most.
   */
  private votedNoop(
    from: NodeId,
    term: number,
    before: number,
    entries: Extract<RaftMsg, { t: 'append' }>['entries'],
    first: number,
  ): boolean {
    const e = entries[first];
    return (
      first === entries.length - 1 &&
      term === this.term &&
      this.vote === from &&
      e.term === term &&
      e.cmd.length === 1 &&
      e.cmd[0] === EntryKind.Noop &&
      (this.termAt(before) ?? term) < term
    );
  }

  /**
   * Whether an append whose entries from `first` on are new here (the earlier ones match ours)
   * would leave more past the commit index than a follower holds: twice a leader's
   * maxUncommittedEntries, or its maxUncommittedBytes of commands (one entry alone is always
   * held). The commit index is the larger of ours and the leader's `commit` (entries at or
   * below it are committed: a follower far behind is not held back), up to the append's last
   * entry. Costs the append's entries, not the log's (bytesBetween).
   */
  private overUncommitted(
    prevIndex: number,
    first: number,
    entries: Extract<RaftMsg, { t: 'append' }>['entries'],
    leaderCommit: number,
  ): boolean {
    const last = prevIndex + entries.length;
    const floor = Math.max(this.commit, this.base, Math.min(leaderCommit, last));
    const count = last - floor;
    if (count <= 1) return false;
    // Noops starting a term, a failed term's each, count only toward the log's own bound (maxLogEntries, what it
    // holds committed anyway): a member that lacked one of them (it voted for another, say) was
    // sent it with its leader's, two new entries, and refused both past the bound; with the
    // member that held them gone, a leader and it committed nothing again.
    if (count > Math.max(this.maxLogEntries, UNCOMMITTED_MARGIN * this.maxUncommittedEntries)) return true;
    // Ours up to prevIndex + first stay (they match the leader's), then the new ones.
    let bytes = this.bytesBetween(floor, prevIndex + first);
    let counted = this.countedBetween(floor, prevIndex + first);
    for (let i = Math.max(first, floor - prevIndex); i < entries.length; i++) {
      bytes += entries[i].cmd.length;
      if (!termNoop(entries[i], i > 0 ? entries[i - 1].term : (this.termAt(prevIndex) ?? 0))) counted++;
    }
    return counted > UNCOMMITTED_MARGIN * this.maxUncommittedEntries || bytes > UNCOMMITTED_MARGIN * this.maxUncommittedBytes;
  }

  private truncateFrom(index: number): void {
    this.log.length = this.logBytes.length = this.logCounted.length = index - this.base - 1;
    this.write({ kind: 'truncate', from: index });
    while (this.configs.length > 1 && this.configs[this.configs.length - 1].index >= index) this.popConfig();
  }

  private onAppendResp(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'appendResp' }>): void {
    if (this.role !== Role.Leader || m.term !== this.term) return;
    const p = this.progress.get(from);
    if (!p) return;
    p.lastAck = now;
    if (m.ok) {
      // It holds what it acknowledged: an earlier refusal below the match index was a stale one.
      if (m.index >= p.match) p.lostHint = -1;
      const found = p.probe;
      // Probing, an acknowledgement that moves nothing (its index at the match, short of what the
      // probe carried) answers an older append, not the probe: probing goes on (a heartbeat
      // probes again). Else a refusal and such an acknowledgement, alternated, drew a probe and
      // then a window of up to 16 appends each (~17 KB for 24 octets, as fast as they came).
      if (found && m.index <= p.match && m.index + 1 < p.next) return;
      p.probe = false;
      if (m.index > p.match) p.match = m.index;
      if (p.next <= p.match) p.next = p.match + 1;
      this.maybeCommit(now);
      // A follower found behind (its probe answered): entries, or the difference if it is much smaller.
      if (found && this.role === Role.Leader && this.startDiff(from, p)) return;
    } else {
      // A hint below the match index: it lacks entries it acknowledged (checkLost, at the heartbeat).
      if (m.index < p.match) p.lostHint = m.index;
      // A refusal of an append sent before our last probe (its hint is at or past where the
      // probe started): stale, as etcd's MaybeDecrTo judges them. Acting on each would resend
      // the window once per append in flight after a single loss.
      // A hint below the match index moves the next index no lower than match + 1 (clamped below).
      if (p.probe && Math.max(m.index, p.match) + 1 >= p.probeAt) return;
      const next = Math.max(p.match + 1, Math.min(p.next, m.index + 1));
      // Answered: retry from the hint at once (as one probe), if it moved us back; a refusal
      // that teaches nothing waits for the heartbeat (no ping-pong with a follower). So does one
      // that would move us back a second time since the heartbeat: each resends what was sent,
      // and a follower claiming a loss per message would have entries resent as fast as it asked.
      if (next < p.next && !p.backed) {
        p.backed = true;
        p.next = next;
        p.probe = true;
        this.sendAppend(from, true);
      }
      return;
    }
    if (this.role === Role.Leader && this.progress.has(from)) this.sendAppend(from, false);
  }

  /**
   * At each heartbeat: a follower whose refusals hinted below its match index through
   * consecutive heartbeat periods (2, then 4, 8, up to 64 each time again), with no acknowledgement of that
   * index between, lost entries it had acknowledged: its directory was wiped or restored from a
   * backup and it restarted with the same identity. Its match index is then lowered to 0 (what
   * it is proven to hold: a restored log may diverge anywhere) and it is probed from its hint.
   * Before, a refusal could not move the next index below match + 1 (against a follower's
   * refusal/acknowledgement ping-pong): such a member was never sent them again and stayed
   * empty. Lowering a match index never commits anything (a commit needs a majority of match
   * indexes at or past it, each counted once per member; commit never moves back). A single
   * reordered refusal is not enough (the periods), and a follower alternating claims gets its
   * entries sent again at most once per 2^k periods: bounded as its catch-up is.
   */
  private checkLost(id: NodeId, p: Progress): void {
    if (p.lostHint < 0 || p.lostHint >= p.match) {
      p.lostBeats = 0;
      p.lostHint = -1;
      return;
    }
    const hint = p.lostHint;
    p.lostHint = -1;
    if (++p.lostBeats < 2 << Math.min(p.lost, 5)) return;
    this.stats.lostEntries++;
    if (this.lostNotices.length < 16) this.lostNotices.push({ member: id, acknowledged: p.match, holds: hint });
    p.lost++;
    p.lostBeats = 0;
    p.match = p.matchAtBeat = 0;
    p.next = hint + 1;
    p.probe = true;
    p.probeAt = 0;
    p.diffAt = -1;
  }

  /** Followers found lacking entries they had acknowledged since the last call (the driver logs them). */
  takeLost(): { member: NodeId; acknowledged: number; holds: number }[] {
    const l = this.lostNotices;
    this.lostNotices = [];
    return l;
  }

  private onSnap(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'snap' }>): RaftDrop | undefined {
    if (m.term < this.term) {
      this.send(from, { t: 'snapResp', term: this.term, index: m.index, offset: 0 });
      return;
    }
    if (this.role !== Role.Follower || this.leader !== from) this.becomeFollower(now, m.term, from);
    this.leaderContactAt = this.replicatedAtMs = now;
    this.resetElection(now);
    if (m.index <= this.commit) {
      // We already have it all: tell the leader where we are.
      this.send(from, { t: 'snapResp', term: this.term, index: m.index, offset: m.total });
      return;
    }
    const base = m.base ?? 0;
    const baseTerm = m.baseTerm ?? 0;
    // A difference is refused (answered at its base: the leader sends entries instead) before
    // anything is staged if no leader sends it (less than DIFF_MIN_ENTRIES past its base), or
    // if this member tried one within electionMs: each try may cost a copy of the whole state,
    // for a difference of a few octets, whether it then installs or not.
    if (base) {
      const why = m.index - base < DIFF_MIN_ENTRIES ? 'bad-snapshot' : now - this.diffTriedAt < this.electionMs ? 'diff-rate' : undefined;
      if (why) {
        this.send(from, { t: 'snapResp', term: this.term, index: base, offset: 0 });
        return why;
      }
    }
    if (!this.incoming || this.incoming.index !== m.index || this.incoming.base !== base) {
      // A transfer starts at offset 0; a late or duplicated first chunk does not restart one.
      if (m.offset !== 0) {
        this.send(from, { t: 'snapResp', term: this.term, index: m.index, offset: 0 });
        return;
      }
      // check() bounded total by maxSnapshotBytes; the previous transfer's buffer is released.
      // The buffer starts small and grows with what arrives: allocated (and zero-filled) whole
      // at the first chunk, a transfer restarted in each datagram cost the follower the claimed
      // total per datagram (260 MiB and ~7 ms for 39 octets at the default quota).
      this.incoming = undefined;
      const buf = stagingBuffer(Math.min(m.total, STAGING_FIRST_BYTES));
      if (!buf) return 'bad-snapshot';
      this.incoming = { index: m.index, term: m.lastTerm, members: [...m.members], base, baseTerm, total: m.total, buf, got: 0 };
    }
    const inc = this.incoming;
    // One transfer describes one snapshot: a chunk that says otherwise (or runs past its total) is not part of it.
    if (inc.total !== m.total || inc.term !== m.lastTerm || inc.baseTerm !== baseTerm || !sameMembers(inc.members, m.members))
      return 'snapshot-mismatch';
    if (m.offset === inc.got && m.data.length > 0) {
      if (m.data.length > inc.total - inc.got) return 'snapshot-mismatch';
      if (inc.got + m.data.length > inc.buf.length) {
        // Doubled (at most the total): the copies cost at most the octets received.
        const grown = stagingBuffer(Math.min(inc.total, Math.max(2 * inc.buf.length, inc.got + m.data.length)));
        if (!grown) {
          this.incoming = undefined;
          return 'bad-snapshot';
        }
        grown.set(inc.buf.subarray(0, inc.got));
        inc.buf = grown;
      }
      inc.buf.set(m.data, inc.got);
      inc.got += m.data.length;
    }
    if (inc.got >= inc.total) {
      const data = inc.buf;
      this.incoming = undefined;
      const meta = { index: inc.index, term: inc.term, members: inc.members };
      if (inc.base) {
        // A difference that does not apply here: the leader is told (snapResp at the base) and
        // sends entries instead; nothing was changed.
        if (inc.index > this.commit && !this.installDiff(meta, inc.base, inc.baseTerm, data)) {
          this.send(from, { t: 'snapResp', term: this.term, index: inc.base, offset: 0 });
          return 'bad-snapshot';
        }
      }
      // Checked whole before anything is replaced; a snapshot that does not restore is dropped
      // (the leader resends it from offset 0, and the drop counter shows why it never lands).
      else if (!this.installSnapshot(meta, data)) return 'bad-snapshot';
    }
    this.send(from, { t: 'snapResp', term: this.term, index: m.index, offset: inc.got });
  }

  /** The snapshot bytes of the transfer under way, received so far. */
  get incomingBytes(): number {
    return this.incoming?.got ?? 0;
  }

  /**
   * The staging buffer of the transfer under way (the memory a leader makes us hold): at most
   * twice what arrived, or STAGING_FIRST_BYTES, and never more than its total.
   */
  get incomingBufferBytes(): number {
    return this.incoming?.buf.length ?? 0;
  }

  /**
   * A difference from `base` to meta.index (§15.4, "Catch-up by difference"): our log must hold
   * the base with its term (then every entry up to it is the leader's, committed there) unless
   * it is committed here; entries up to the base are applied, the state machine patches a copy
   * of its state into a full snapshot, and that is installed as a snapshot from the leader.
   * False (nothing changed but, possibly, the commit index raised to the base) if it does not apply.
   */
  private installDiff(meta: SnapshotMeta, base: number, baseTerm: number, data: Uint8Array): boolean {
    if (!this.o.sm.patch) return false;
    if (base > this.commit) {
      if (base > this.lastIndex || this.termAt(base) !== baseTerm) return false;
      this.setCommit(base);
    }
    this.applyCommitted();
    // Counted before the patch: one that passes its checks and then fails to restore cost the
    // state copied (and encoded) as much as one that installs (qn-diff-restore-rate: 0.24 s a message).
    this.diffTriedAt = this.lastNow;
    const full = this.o.sm.patch(data, base, meta.index);
    if (!full || full.length > this.maxSnapshotBytes || !this.installSnapshot(meta, full)) return false;
    this.stats.snapshotsInstalled--;
    this.stats.diffsInstalled++;
    return true;
  }

  private installSnapshot(meta: SnapshotMeta, data: Uint8Array): boolean {
    if (!this.o.sm.restore(data, meta.index, true)) return false;
    this.stats.snapshotsInstalled++;
    this.snap = { ...meta, data };
    // Supersedes a background snapshot under way (older: this one is past our commit index).
    this.snapshotting = undefined;
    this.write({ kind: 'snapshot', meta, data });
    // Keep the log past the snapshot only if it agrees with it (§7: InstallSnapshot rule 6).
    const keep = this.termAt(meta.index) === meta.term && meta.index <= this.lastIndex;
    if (keep) this.dropLogBefore(meta.index - this.base);
    else this.setLog([]);
    this.base = meta.index;
    this.baseTerm = meta.term;
    this.write({ kind: 'compact', base: meta.index, baseTerm: meta.term, reset: !keep });
    this.resetConfigs({ index: meta.index, members: [...meta.members] });
    for (const e of this.log) this.noteConfig(e);
    this.commit = this.applied = meta.index;
    this.write({ kind: 'commit', index: this.commit });
    return true;
  }

  private onSnapResp(now: number, from: NodeId, m: Extract<RaftMsg, { t: 'snapResp' }>): void {
    if (this.role !== Role.Leader || m.term !== this.term) return;
    const p = this.progress.get(from);
    if (!p) return;
    p.lastAck = now;
    const s = p.snap;
    if (s?.base && m.index === s.base && m.offset === 0) {
      // The follower had it all and refused it (its log no longer holds the base, or the patch did not apply).
      this.abandonDiff(p);
      return;
    }
    if (s && s.index === m.index && m.offset >= s.data.length) {
      p.snap = undefined;
      p.match = Math.max(p.match, m.index);
      // After a difference, entries follow from its index (those sent before it were not kept).
      p.next = s.base ? p.match + 1 : Math.max(p.next, m.index + 1);
      p.probe = false;
      this.maybeCommit(now);
      this.sendAppend(from, false);
    } else if (s && s.index === m.index) {
      // The follower's offset is the truth (it may be behind what we sent, after losses).
      const behind = m.offset < s.offset;
      s.stalled = m.offset === s.offset && m.offset < s.sent;
      s.offset = m.offset;
      // Past what was sent (its staging kept from an earlier transfer of this snapshot, or a lie):
      // the window goes from there. Before, everything from `sent` to it went at once: one
      // 60-octet answer drew 0.9 MB of a 1 MB snapshot.
      if (m.offset > s.sent) s.sent = m.offset;
      this.sendSnapshot(from, p, behind ? 'behind' : false);
    } else if (!s && m.offset > 0 && m.index >= p.match) {
      // It already has a snapshot at least this recent (answered with offset = total).
      p.match = Math.max(p.match, m.index);
      p.next = Math.max(p.next, m.index + 1);
      this.maybeCommit(now);
    }
  }

  /**
   * Weigh replay against a difference for a follower found behind (docs/PROTOCOL.md §15.4,
   * "Catch-up by difference", as the pair protocol weighs replay against reconciliation in
   * §8.1): the entries it lacks up to the applied index, or the state they leave, patched over
   * the follower's. A difference goes only when it takes at most half the entries' bytes; it
   * is weighed once per match index. True if one was started.
   */
  private startDiff(id: NodeId, p: Progress): boolean {
    const base = p.match;
    const at = this.applied;
    if (!this.o.sm.diff || p.snap || p.diffAt === base || base < this.base || base < 1 || at - base < DIFF_MIN_ENTRIES) return false;
    // Once per match index is not enough: a follower acknowledging one more entry each time it is
    // probed had the leader walk (and diff) every entry past it per acknowledgement (~40 ms for
    // 13 octets, 20,000 entries behind). At most once per electionMs per follower, as a follower
    // tries at most one difference per electionMs ('diff-rate').
    if (this.lastNow - p.diffWeighedAt < this.electionMs) return false;
    p.diffWeighedAt = this.lastNow;
    p.diffAt = base;
    let replay = 0;
    const entries: LogEntry[] = [];
    for (let i = base + 1; i <= at; i++) {
      const e = this.entryAt(i)!;
      entries.push(e);
      replay += e.cmd.length + 8;
    }
    // The limit lets a difference known too large be given up before it is built: a touched stream
    // goes whole, and a few 1-octet appends to a 16 MiB stream cost ~100 ms per weighing otherwise.
    const data = this.o.sm.diff(base, entries, Math.min(Math.floor(replay / 2), this.maxSnapshotBytes));
    if (!data || data.length * 2 > replay || data.length > this.maxSnapshotBytes) return false;
    const members = this.membersAt(at);
    p.snap = {
      index: at,
      term: this.termAt(at)!,
      members,
      data,
      offset: 0,
      sent: 0,
      base,
      baseTerm: this.termAt(base)!,
      since: this.lastNow,
    };
    this.stats.diffsSent++;
    this.sendSnapshot(id, p, 'new');
    return true;
  }

  /** Entries (or a snapshot) from where the follower matches, and no difference at this base again. */
  private abandonDiff(p: Progress): void {
    p.snap = undefined;
    p.diffAt = p.match;
    p.next = p.match + 1;
    p.probe = true;
  }

  /** The highest index stored on a majority, if it is of this term (§5.4.2). */
  private maybeCommit(now: number): void {
    if (this.role !== Role.Leader) return;
    const matches = this.members.map((m) => (m === this.id ? this.lastIndex : (this.progress.get(m)?.match ?? 0))).sort((a, b) => b - a);
    const n = matches[Math.floor(matches.length / 2)];
    if (n > this.commit && this.termAt(n) === this.term) this.setCommit(n);
    // A leader whose removal is committed steps down (§4.2.2).
    if (this.role === Role.Leader && !this.members.includes(this.id) && this.configIndex <= this.commit) {
      this.stats.stepDowns++;
      this.becomeFollower(now, this.term, 0);
    }
  }

  /** The entries up to `n` are committed; they are applied at the next ready() (applyCommitted). */
  private setCommit(n: number, save = true): void {
    this.commit = n;
    if (save) this.write({ kind: 'commit', index: n });
  }

  /**
   * Apply what is committed and not applied yet (etcd's CommittedEntries of a Ready): done
   * when the driver takes its Ready, not inside the step of the message that moved the commit
   * index, so the entries committed by all the inputs of one turn are applied together, and a
   * member's acknowledgement costs its handling only (spookd charges that to the peer).
   */
  private applyCommitted(): void {
    if (this.applied >= this.commit) return;
    while (this.applied < this.commit) {
      this.applied++;
      this.o.sm.apply(this.entryAt(this.applied)!);
    }
    this.maybeCompact();
  }

  private maybeCompact(): void {
    // Octets too: a log bounded in entries alone held up to maxLogEntries candidates of up to
    // maxCandidateBytes each (100,000 of 1 MiB at the defaults), whatever the registers' quotas.
    const over = this.applied - this.base > this.maxLogEntries || this.bytesBetween(this.base, this.applied) > this.maxLogBytes;
    if (!over || this.snapshotting) return;
    const at = this.applied;
    const meta = { index: at, term: this.termAt(at)!, members: this.membersAt(at) };
    if (this.o.backgroundSnapshots && this.o.sm.pin && !this.nextSnapshotAtOnce) {
      this.snapshotting = meta;
      this.write({ kind: 'snapshot-begin', meta, pinned: this.o.sm.pin() });
      return;
    }
    this.nextSnapshotAtOnce = false;
    const data = this.o.sm.snapshot();
    this.snap = { ...meta, data };
    this.write({ kind: 'snapshot', meta, data });
    this.compactBehind(at);
  }

  /**
   * The background snapshot at meta.index is durable (its 'snapshot-begin' was handed out):
   * it becomes the one sent to followers (`data`: its bytes, or how to read them back; undefined
   * from that reader means they cannot be read), and the log is compacted behind it. False if it
   * is not the one under way (an install superseded it, or a restart forgot it): nothing changes.
   */
  snapshotDurable(meta: SnapshotMeta, data: SnapshotData): boolean {
    if (this.snapshotting?.index !== meta.index || this.snapshotting.term !== meta.term) return false;
    this.snapshotting = undefined;
    this.snap = { index: meta.index, term: meta.term, members: [...meta.members], data };
    this.compactBehind(meta.index);
    return true;
  }

  /** The background snapshot at `index` failed: nothing was compacted; the next one is written at once. */
  snapshotFailed(index: number): void {
    if (this.snapshotting?.index !== index) return;
    this.snapshotting = undefined;
    this.nextSnapshotAtOnce = true;
  }

  /**
   * Drop the log behind the snapshot at `at`, keeping half of maxLogEntries and of maxLogBytes: a
   * follower a little behind gets entries, not a snapshot.
   */
  private compactBehind(at: number): void {
    let newBase = Math.max(this.base, at - (this.maxLogEntries >> 1));
    // The lowest base whose entries up to `at` hold at most half of maxLogBytes (octets decrease as the base rises).
    if (this.bytesBetween(newBase, at) > this.maxLogBytes / 2) {
      let lo = newBase + 1;
      let hi = at;
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        if (this.bytesBetween(mid, at) > this.maxLogBytes / 2) lo = mid + 1;
        else hi = mid;
      }
      newBase = lo;
    }
    if (newBase <= this.base) return;
    const newBaseTerm = this.termAt(newBase)!;
    this.dropLogBefore(newBase - this.base);
    this.base = newBase;
    this.baseTerm = newBaseTerm;
    this.write({ kind: 'compact', base: newBase, baseTerm: newBaseTerm, reset: false });
    let keepFrom = 0;
    for (let i = 0; i < this.configs.length; i++) if (this.configs[i].index <= newBase) keepFrom = i;
    if (keepFrom > 0) {
      for (let i = 0; i < keepFrom; i++) this.countIds(this.configs[i].members, -1);
      this.configs = this.configs.slice(keepFrom);
    }
  }

  /**
   * A transfer of the latest snapshot (or of a later one: any committed state at most the
   * applied index serves the follower, and the log holds what follows it). The bytes of a
   * transfer to another follower are shared, not read again (k followers catching up after a
   * partition would hold k copies); else they are read back if written in the background, once
   * per snapshot: kept until the next one, so a member that keeps falling behind costs no read
   * per transfer. Should they not read back (a disk that fails, or the moment a newer file is
   * renamed over it and not yet reported), the applied state is encoded now and sent instead.
   */
  private snapshotToSend(s: SnapshotMeta & { data: SnapshotData }): NonNullable<Progress['snap']> {
    const fresh = (m: SnapshotMeta, data: Uint8Array): NonNullable<Progress['snap']> => ({
      index: m.index,
      term: m.term,
      members: m.members,
      data,
      offset: 0,
      sent: 0,
    });
    for (const q of this.progress.values()) if (q.snap && !q.snap.base && q.snap.index >= s.index) return fresh(q.snap, q.snap.data);
    if (typeof s.data !== 'function') return fresh(s, s.data);
    const read = s.data();
    if (read && read.index === s.index && this.snap === s) this.snap = { ...s, data: read.data };
    if (read && read.index >= s.index && read.index <= this.applied) return fresh(read, read.data);
    const at = this.applied;
    return fresh({ index: at, term: this.termAt(at)!, members: this.membersAt(at) }, this.o.sm.snapshot());
  }

  /** The configuration in force at `index` (at or after the compaction point). */
  private membersAt(index: number): NodeId[] {
    // Binary search (configs ascend by index): a leader may run this per acknowledgement (startDiff).
    let lo = 0;
    let hi = this.configs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.configs[mid].index <= index) lo = mid;
      else hi = mid - 1;
    }
    return this.configs[lo].members;
  }

  /**
   * The writes queued so far, without the messages: for a caller whose own writes must come
   * after Raft's in the same batch (a candidate forgotten as its entry is applied).
   */
  takeWrites(): RaftWrite[] {
    const w = this.unstable;
    this.unstable = [];
    return w;
  }

  private write(w: RaftWrite): void {
    this.unstable.push(w);
  }

  private send(to: NodeId, msg: RaftMsg): void {
    this.outbox.push({ to, msg });
  }
}

/** What an incoming snapshot's staging buffer starts at (at most its total; the largest chunk the wire allows); it doubles as chunks arrive. */
export const STAGING_FIRST_BYTES = 64 * 1024;

/** A zeroed buffer of `n` octets, or undefined if this host cannot allocate it (a bound configured beyond its memory). */
function stagingBuffer(n: number): Uint8Array | undefined {
  try {
    return new Uint8Array(n);
  } catch (e) {
    if (e instanceof RangeError) return undefined;
    throw e;
  }
}

export function encodeConfig(members: NodeId[]): Uint8Array {
  const w = new Writer(8 + 8 * members.length).u8(EntryKind.Config).varint(members.length);
  for (const m of members) w.varint(m);
  return w.finish();
}

/** A Config command's members; throws a WireError unless it is a valid configuration (parseConfig). */
export function decodeConfig(cmd: Uint8Array): NodeId[] {
  const r = new Reader(cmd, 1);
  const n = r.varint('config.members');
  if (n === 0 || n > MAX_MEMBERS) throw new WireError(DropReason.MalformedPayload, 'config.members', `${n} (1-${MAX_MEMBERS})`);
  const out: NodeId[] = [];
  for (let i = 0; i < n; i++) out.push(r.varint('config.member'));
  r.expectEnd('config');
  if (!validMembers(out))
    throw new WireError(DropReason.MalformedPayload, 'config.member', 'node ids must be 1-2^48-1, ascending, without repeats');
  return out;
}

/** The members of a valid Config command, else undefined (an entry never to be stored). */
export function parseConfig(cmd: Uint8Array): NodeId[] | undefined {
  if (cmd[0] !== EntryKind.Config) return undefined;
  try {
    return decodeConfig(cmd);
  } catch (e) {
    if (e instanceof WireError) return undefined;
    throw e;
  }
}

/** 1-64 node ids in 1..MAX_NODE_ID, strictly ascending (the canonical form of a configuration). */
export function validMembers(ms: readonly NodeId[]): boolean {
  if (ms.length === 0 || ms.length > MAX_MEMBERS) return false;
  for (let i = 0; i < ms.length; i++)
    if (!(Number.isSafeInteger(ms[i]) && ms[i] >= 1 && ms[i] <= MAX_NODE_ID) || (i > 0 && ms[i] <= ms[i - 1])) return false;
  return true;
}

function sameMembers(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

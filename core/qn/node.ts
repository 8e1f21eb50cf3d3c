/**
 * One member of a QN domain, sans I/O: Raft orders the collapses, DomainState applies
 * them, and this class adds what a member needs around them (docs/PROTOCOL.md §15):
 *  - candidates proposed here, kept (durably) until their outcome is applied here, sent to
 *    the leader and resent until then; while the member is decoherent its register policy
 *    says whether they wait (`buffer`, up to maxPending) or are refused (`refuse`);
 *  - QN routing: a message goes to its destination directly when that link is alive, else
 *    through one relay member that hears the destination (learned from hellos);
 *  - the member's lifecycle (coherent / decoherent) with its cause, as events.
 */
import { WireError } from '../../wire/errors.js';
import { DeltaOp, deltaValueLen, validateDelta } from '../../wire/delta.js';
import { MAX_KEY_LEN } from '../../wire/constants.js';
import {
  CANDIDATE_ROOM,
  QN_DEFAULT_TTL,
  QN_MAX_DATAGRAM,
  decodeBody,
  decodeEnvelope,
  encodeBody,
  encodeEnvelope,
  sealedHeader,
  type QnBody,
  type QnEnvelope,
} from '../../wire/qn.js';
import { murmur3 } from '../register/hash.js';
import { QnLinks } from './links.js';
import type { DomainWrite, StoredDomain } from './persist.js';
import {
  DEFAULT_MAX_UNCOMMITTED_BYTES,
  EntryKind,
  MAX_INDEX,
  MAX_MEMBERS,
  MAX_NODE_ID,
  Raft,
  Role,
  parseConfig,
  type LogEntry,
  type NodeId,
  type RaftDrop,
  type RaftMsg,
  type RaftTimer,
  type SnapshotData,
  type SnapshotMeta,
} from './raft.js';
import {
  COLLAPSE_REJECT_NAMES,
  OUTCOME_WINDOW,
  DomainState,
  snapshotBound,
  candidateHead,
  encodeCandidate,
  parseCandidate,
  quotaOf,
  type CandidateOp,
  type Collapsed,
  type DomainRegisterSpec,
  type GroupSpec,
} from './state.js';

/**
 * Largest encoded candidate of a domain: its largest register value (maxValueBytes) plus
 * CANDIDATE_ROOM for keys and framing. Larger than a datagram, it travels as fragments (§15.9).
 */
export function maxCandidateBytes(registers: readonly DomainRegisterSpec[]): number {
  let v = 0;
  for (const r of registers) v = Math.max(v, quotaOf(r).maxValueBytes);
  return v + CANDIDATE_ROOM;
}

/** Snapshot chunk size (the wire allows up to 64 KiB). */
const SNAP_CHUNK_BYTES = 16 * 1024;

/** Room around a candidate in the largest message that carries it (an append or fwd, sealed, in an envelope). */
const MESSAGE_ROOM = 1024;
/** Ids other than links and bootstrap members remembered as having been members (everMember): four full configurations. */
const EVER_MEMBER_OTHERS = 4 * MAX_MEMBERS;
/**
 * A member caught up after a wipe numbers above its largest decided seq plus 1 to this many
 * OUTCOME_WINDOWs, drawn at random (raiseAboveOwnTail): 2^24 windows of 2^12 is 2^36 seqs at
 * most a wipe, so MAX_INDEX (2^48) lasts at least 4,096 wipes.
 */
const WIPE_JUMP_WINDOWS = 2 ** 24;

/**
 * Why a QN message was dropped (docs/PROTOCOL.md §15.3): a closed set, counted per member in
 * `stats.drops`. Raft's own refusals (RaftDrop) are among them.
 */
export type QnDrop =
  | RaftDrop
  | 'malformed'
  | 'wrong-domain'
  | 'not-a-link'
  /** From (or relayed by, or for) a node that is in none of the configurations this member knows. */
  | 'not-a-member'
  | 'no-route'
  | 'relayed-by-non-member'
  /** A removal notice that a committed entry of this member's own log contradicts. */
  | 'bad-removal'
  /** A removal notice to a leader that it cannot check against its committed log: ignored (§15.6). */
  | 'removal-while-leading'
  /** The same to a follower that hears its leader (which replicates to it, so holds it a member): ignored (§15.6). */
  | 'removal-while-followed'
  /** A relayed message without a valid end-to-end seal from its claimed origin (§15.5). */
  | 'relay-unauthenticated'
  | 'malformed-candidate'
  | 'oversized-candidate'
  /** A forwarded candidate whose origin is not the member that sent it. */
  | 'candidate-origin-mismatch'
  | 'fwd-not-leader'
  /** Fragments (§15.9): over the link's reassembly quota, contradicting earlier ones, or repeated. */
  | 'fragment-quota'
  | 'fragment-conflict'
  | 'fragment-duplicate'
  /** A fragment not from the link it names, or for another member (fragments travel one hop). */
  | 'fragment-misrouted';

export const QN_DROPS: readonly QnDrop[] = [
  'out-of-bounds',
  'bad-entry',
  'conflicts-committed',
  'index-beyond-log',
  'bad-snapshot',
  'snapshot-mismatch',
  'log-full',
  'diff-rate',
  'fenced',
  'malformed',
  'wrong-domain',
  'not-a-link',
  'not-a-member',
  'no-route',
  'relayed-by-non-member',
  'bad-removal',
  'removal-while-leading',
  'removal-while-followed',
  'relay-unauthenticated',
  'malformed-candidate',
  'oversized-candidate',
  'candidate-origin-mismatch',
  'fwd-not-leader',
  'fragment-quota',
  'fragment-conflict',
  'fragment-duplicate',
  'fragment-misrouted',
];

export type DomainPolicy = 'buffer' | 'refuse';

/**
 * End-to-end seals between members (§15.5), injected so the core stays pure: spookd uses its
 * static ETCP keys (core/qn/seal.ts), the simulator fixed keys per node id.
 */
export interface RelaySeal {
  seal(to: NodeId, header: Uint8Array, body: Uint8Array): Uint8Array | undefined;
  open(from: NodeId, header: Uint8Array, box: Uint8Array): Uint8Array | undefined;
}

export type Coherence = 'coherent' | 'decoherent';

export interface DomainNodeOptions {
  /** u32 identifier of the domain on the wire (a hash of its name). */
  domain: number;
  name: string;
  id: NodeId;
  members: NodeId[];
  /** Members this node has a direct transport link to. */
  links: NodeId[];
  registers: DomainRegisterSpec[];
  groups?: GroupSpec[];
  seed: number;
  policy?: DomainPolicy;
  maxPending?: number;
  /** What this member's store loaded (EMPTY_STORED for a fresh one). */
  stored: StoredDomain;
  random: (min: number, max: number) => number;
  electionMs?: number;
  heartbeatMs?: number;
  maxLogEntries?: number;
  /**
   * Write the snapshots that compact the log in the background ('snapshot-begin' writes; the
   * driver reports each with snapshotDurable or snapshotFailed). Default false: at once.
   */
  backgroundSnapshots?: boolean;
  /** Bytes of undecided candidates proposed here, all together (besides maxPending); default max(64 MiB, 2 × the largest candidate). */
  maxPendingBytes?: number;
  /** Bytes of partial fragmented messages one link may make this member hold; default twice the largest message. */
  fragmentQuotaBytes?: number;
  /** Largest snapshot accepted from a leader, in bytes; default snapshotBound of the registers' quotas. */
  maxSnapshotBytes?: number;
  /**
   * Entries a leader may hold past its commit index before it defers proposals; a follower holds
   * twice as many (PROTOCOL.md §15.4, "Uncommitted bound"). The same at every member; default
   * DEFAULT_MAX_UNCOMMITTED_ENTRIES.
   */
  maxUncommittedEntries?: number;
  /**
   * Seals for messages that cross a relay. Without it this member neither sends through a
   * relay nor accepts a relayed message (every message must then go direct).
   */
  relay?: RelaySeal;
  /** Follows the state through every applied entry and installed snapshot (the change feeds; the simulator's prefix check). */
  observer?: StateObserver;
}

/** What follows a member's state: both ways it moves, in one object so that neither is left unwired. */
export interface StateObserver {
  /** One entry applied, the state after it. */
  observe(e: LogEntry, state: DomainState): void;
  /** A snapshot installed (the disk's at start, the leader's, a difference): registers moved without an entry. */
  installed(state: DomainState): void;
}

export type DomainEvent =
  /** `unknown`: this member was removed before it learnt the outcome (it may have committed). */
  /** `op`: a rejection decided here from the log, the index of the op that failed its check. */
  | { type: 'outcome'; seq: number; committed: boolean; reason?: string; index?: number; unknown?: boolean; op?: number }
  | { type: 'lifecycle'; from: Coherence; to: Coherence; cause: string }
  | { type: 'leader'; leader: NodeId; term: number };

/**
 * One step's output (etcd raft's Ready): the writes to make durable, in order, then the
 * datagrams and events that may depend on them. The driver persists `writes` (fencing the
 * member if that fails, and then sending and publishing nothing of this Ready), then sends
 * `messages`, publishes `events`, and calls advance().
 */
export interface DomainReady {
  readonly writes: readonly DomainWrite[];
  readonly messages: readonly { to: NodeId; bytes: Uint8Array }[];
  readonly events: readonly DomainEvent[];
}

/**
 * The member's own timers, beside Raft's (RAFT_TIMERS), fired after them:
 * - hello: every heartbeat interval, the links it hears and its commit index to each member link (routing);
 * - resend: the oldest unanswered proposal is due again to the known leader (armed only while one is known);
 * - fragments: a fragment's loss timeout or a delayed fragment acknowledgement (§15.9).
 */
export const NODE_TIMERS = ['hello', 'resend', 'fragments'] as const;
export type NodeTimer = (typeof NODE_TIMERS)[number];
export type DomainTimer = RaftTimer | NodeTimer;

interface Pending {
  cmd: Uint8Array;
  sentAt: number;
  /** Octets it appends, per stream register (pendingAppendBytes): read from `cmd` once, when first asked. */
  appends?: Map<string, number>;
}

export class DomainNode {
  readonly raft: Raft;
  readonly state: DomainState;
  readonly id: NodeId;
  private readonly pending = new Map<number, Pending>();
  /** Σ cmd length over `pending` (maxPendingBytes). */
  private pendingBytes = 0;
  /**
   * Own candidates never sent yet, oldest first (some may be decided meanwhile), and a lower
   * bound on when a sent one is due again: a turn of many proposals costs O(1) each, not a
   * walk of every pending candidate per proposal (and per deadline).
   */
  private fresh: number[] = [];
  private resendDue = Infinity;
  private nextSeq: number;
  private out: { to: NodeId; bytes: Uint8Array }[] = [];
  private events: DomainEvent[] = [];
  /** Writes since the last ready(), in order (Raft's and this member's own). */
  private writes: DomainWrite[] = [];
  /** A Ready was handed out and not yet advanced. */
  private awaitingAdvance = false;
  private readonly heard = new Map<NodeId, number>();
  private readonly hellos = new Map<NodeId, { neighbours: Set<NodeId>; commit: number; at: number }>();
  private helloAt = 0;
  private coherence: Coherence = 'decoherent';
  private lastLeader: NodeId = 0;
  /**
   * Candidates this leader appended in its current term and has not applied yet: a retry is
   * not appended twice. Cleared with each new term: a deposed leader's entries may be gone.
   */
  private readonly inLog = new Set<string>();
  private inLogTerm = -1;
  /** Seen itself in a committed configuration (or the bootstrap one): leaving it later means it was removed. */
  private wasMember = false;
  /**
   * Nodes in a committed (or the bootstrap) configuration seen here: a removed one was among
   * them. Every link and bootstrap member is kept; of the other ids (reached only through a
   * relay, or named by nobody this host can hear: a leader may commit any ids) at most
   * EVER_MEMBER_OTHERS, so a member committing configurations of invented ids holds this
   * set to its links plus that many.
   */
  private readonly everMember = new Set<NodeId>();
  private everOthers = 0;
  /**
   * Links that a known member lists as its live neighbours in a hello: it hears them as
   * members, so they are members of a configuration we may not have yet (a leader added while
   * we were cut off). Only links can be vouched for, so the set is bounded by the peers.
   */
  private readonly vouched = new Set<NodeId>();
  /** Told by a member that our removal is committed (at this index); 0 if not. */
  private removed = 0;
  /** When that notice was kept: a leader heard after it replicates to us, so holds us a member. */
  private removedAt = 0;
  /** Why this member takes part in nothing (its own durable state did not apply, or its driver fenced it). */
  private fenced: string | undefined;
  /**
   * Has applied, since it started, as far as a leader's commit index and a configuration holding
   * it: its state holds every outcome of its origin decided before it was (re-)added, so nextSeq
   * is above them (§15.2). A member started outside the configuration (join: perhaps wiped, with
   * its old seqs in the domain's table) proposes only then; a bootstrap member from the start.
   */
  private caughtUp: boolean;
  /** Started with nothing stored and not caught up since (sticky once cleared): not coherent. */
  private startedEmpty: boolean;
  readonly stats = {
    proposed: 0,
    committed: 0,
    rejected: 0,
    refused: 0,
    relayed: 0,
    noRoute: 0,
    drops: {} as Partial<Record<QnDrop, number>>,
    partitions: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  private readonly linkTimeoutMs: number;
  private readonly retryMs: number;
  /** Largest candidate (maxCandidateBytes of the registers). */
  readonly maxCandidate: number;
  /** Fragmentation per direct link (§15.9). */
  readonly links: QnLinks;
  /** Appends or snapshot chunks were queued as fragments since this member last stopped leading. */
  private leaderTraffic = false;
  /** The time of the latest input: what ready() sends Raft's messages at. */
  private lastNow = 0;

  constructor(
    readonly o: DomainNodeOptions,
    now: number,
  ) {
    this.id = o.id;
    this.lastNow = now;
    this.maxCandidate = maxCandidateBytes(o.registers);
    this.state = new DomainState(o.seed, o.registers, o.groups ?? []);
    this.state.onCollapse = (c) => this.onCollapse(c);
    const p = o.stored;
    this.nextSeq = p.nextSeq;
    this.caughtUp = o.members.includes(o.id);
    // Nothing stored (new, or its directory wiped or restored empty): not coherent until it has
    // applied as far as a leader's commit index (a wiped member served an empty state as current).
    const empty = p.term === 0 && p.base === 0 && p.entries.length === 0 && p.commit === 0;
    this.startedEmpty = empty || p.behind === true;
    // In seq order, as proposed (onCollapse stops at the first pending seq above the window's floor).
    for (const x of [...p.pending].sort((a, b) => a.seq - b.seq)) {
      this.pending.set(x.seq, { cmd: x.cmd, sentAt: -Infinity });
      this.fresh.push(x.seq);
      this.pendingBytes += x.cmd.length;
    }
    this.raft = new Raft(
      {
        id: o.id,
        initialMembers: o.members,
        stored: o.stored,
        sm: {
          apply: (e) => {
            this.state.apply(e);
            o.observer?.observe(e, this.state);
          },
          snapshot: () => this.state.snapshot(),
          pin: () => this.state.pin(),
          diff: (base, entries, limit) => this.state.diff(base, entries, limit),
          patch: (data, base, index) => this.state.patch(data, base, index),
          restore: (data, index, fromLeader) => {
            if (!this.state.restore(data, index, fromLeader)) return false;
            this.resolveFromTable();
            o.observer?.installed(this.state);
            return true;
          },
        },
        random: o.random,
        electionMs: o.electionMs,
        heartbeatMs: o.heartbeatMs,
        maxLogEntries: o.maxLogEntries,
        backgroundSnapshots: o.backgroundSnapshots,
        // Chunks larger than a datagram travel as fragments (§15.9): 8 in flight move 128 KiB a round trip, not 5.6 KiB.
        snapChunkBytes: SNAP_CHUNK_BYTES,
        maxSnapshotBytes: o.maxSnapshotBytes ?? snapshotBound(o.registers, o.groups ?? []),
        // The log keeps no more octets of applied entries than the largest snapshot the quotas allow.
        maxLogBytes: o.maxSnapshotBytes ?? snapshotBound(o.registers, o.groups ?? []),
        // Two of the largest candidates fit under the uncommitted bound, as under maxPendingBytes.
        maxUncommittedBytes: Math.max(DEFAULT_MAX_UNCOMMITTED_BYTES, 2 * this.maxCandidate),
        maxUncommittedEntries: o.maxUncommittedEntries,
        // Nothing is journaled that would not apply: a candidate must decode and be within the limit.
        checkCommand: (cmd) => cmd.length <= this.maxCandidate && parseCandidate(cmd) !== undefined,
      },
      now,
    );
    // Loading may already ask for a write (a log the snapshot covers is dropped).
    this.takeRaftWrites();
    // What it hears while catching up is journaled (the store is not empty then): restarted before it
    // has caught up, it must still number nothing (it numbered at once, under seqs the table held).
    if (empty && !p.behind) this.write({ kind: 'behind' });
    // Pending from before a restart under a lowered maxValueBytes: no member takes it now (fwd drops it,
    // Raft's checkCommand refuses it), so it was resent and answered pending for ever. Given up on as
    // `unknown`: appended before the restart, it may still commit (doutcome then answers committed).
    for (const [seq, x] of [...this.pending])
      if (x.cmd.length > this.maxCandidate)
        this.giveUp(
          seq,
          `larger (${x.cmd.length} bytes) than this domain's candidates may be now (${this.maxCandidate}: maxValueBytes was lowered); never sent again, so the outcome is unknown here`,
        );
    if (this.raft.fault) this.fence(this.raft.fault);
    // A bootstrap member that restarts with its removal in its log is still one that was removed.
    this.wasMember = o.members.includes(o.id);
    for (const m of o.members) this.everMember.add(m);
    this.linkTimeoutMs = 3 * this.raft.heartbeatMs;
    this.retryMs = Math.max(this.raft.heartbeatMs * 2, this.raft.electionMs / 2);
    const rtoMs = Math.max(200, 4 * this.raft.heartbeatMs);
    this.links = new QnLinks({
      quota: o.fragmentQuotaBytes ?? 2 * (this.maxCandidate + MESSAGE_ROOM),
      outBytes: 2 * (this.maxCandidate + MESSAGE_ROOM),
      rtoMs,
      staleMs: Math.max(4 * rtoMs, this.raft.electionMs),
      ackDelayMs: Math.max(1, Math.min(20, this.raft.heartbeatMs / 4)),
      random: o.random,
      drop: (reason) => this.drop(reason),
    });
  }

  // --- inspection -----------------------------------------------------------------------

  get coherenceState(): Coherence {
    return this.coherence;
  }

  /**
   * Started with nothing stored and has not applied as far as a leader's commit index since:
   * propose refuses (`catching-up`) until then. False once fenced (propose says why instead).
   */
  get catchingUp(): boolean {
    return !this.fenced && this.isBehind();
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Octets this member's own candidates not applied here yet append to stream `register`: where
   * an append of this member that names no offset lands after them (the admin API's default, as a
   * pair's counts its own pending appends). Each candidate is decoded once; a call walks them.
   */
  pendingAppendBytes(register: string): number {
    let n = 0;
    for (const p of this.pending.values()) {
      if (!p.appends) {
        p.appends = new Map();
        for (const op of parseCandidate(p.cmd)?.ops ?? [])
          if (op.delta.op === DeltaOp.Append) p.appends.set(op.register, (p.appends.get(op.register) ?? 0) + op.delta.data.length);
      }
      n += p.appends.get(register) ?? 0;
    }
    return n;
  }

  /**
   * What became of candidate `seq` proposed here, as far as this member knows now (after any
   * number of restarts): still pending, decided (from the outcome table), or unknown (decided
   * but no longer in the table, or refused before it was sent); undefined if never proposed.
   */
  outcomeOf(seq: number): { verdict: 'pending' | 'committed' | 'rejected' | 'unknown'; reason?: string } | undefined {
    if (this.pending.has(seq)) return { verdict: 'pending' };
    const o = this.state.outcomeOf(this.id, seq);
    if (o === 0) return { verdict: 'committed' };
    if (o !== undefined)
      return { verdict: 'rejected', reason: COLLAPSE_REJECT_NAMES[o as keyof typeof COLLAPSE_REJECT_NAMES] ?? `reason ${o}` };
    if (Number.isSafeInteger(seq) && seq >= 1 && seq < this.nextSeq)
      return {
        verdict: 'unknown',
        reason: 'not pending here and not in the outcome table (decided long ago, refused at once, or this member was removed)',
      };
    return undefined;
  }

  /** Members whose link (direct) was heard within the liveness window. */
  aliveLinks(now: number): NodeId[] {
    return this.o.links.filter((l) => now - (this.heard.get(l) ?? -Infinity) < this.linkTimeoutMs);
  }

  /** The commit index a member last announced (hello), for lag reports. */
  announcedCommit(id: NodeId): number | undefined {
    return id === this.id ? this.raft.commit : this.hellos.get(id)?.commit;
  }

  // --- the sans-I/O surface ---------------------------------------------------------------

  /**
   * What the inputs since the last Ready produced, or undefined if nothing. The caller makes
   * `writes` durable before anything else of it leaves, then calls advance() before the next
   * ready(): messages that depend on a write (a vote, an append acknowledgement, an outcome)
   * never leave before it.
   */
  ready(): DomainReady | undefined {
    if (this.awaitingAdvance) throw new Error(`domain ${this.o.name}: ready() before advance() of the previous Ready`);
    if (!this.fenced) this.takeRaft(this.lastNow);
    this.takeRaftWrites();
    if (this.writes.length === 0 && this.out.length === 0 && this.events.length === 0) return undefined;
    const r: DomainReady = { writes: this.writes, messages: this.out, events: this.events };
    this.writes = [];
    this.out = [];
    this.events = [];
    this.awaitingAdvance = true;
    return r;
  }

  /** The writes of the last Ready are durable (its messages and events may go). */
  advance(): void {
    this.awaitingAdvance = false;
  }

  /** One of this member's writes, after Raft's so far: a batch is in the order things happened (any prefix is a state a crash could leave). */
  private write(w: DomainWrite): void {
    this.takeRaftWrites();
    this.writes.push(w);
  }

  private takeRaftWrites(): void {
    // Undefined while Raft is being built (a snapshot restored at load resolves candidates).
    const raft = this.raft as Raft | undefined;
    if (raft) for (const w of raft.takeWrites()) this.writes.push(w);
  }

  /** Why this member is fenced (takes part in nothing), or undefined. */
  get fencedCause(): string | undefined {
    return this.fenced;
  }

  /**
   * Stop taking part: every input is dropped, proposals refused, no timer runs. For state
   * that cannot be used (the journal), a store that failed to persist a Ready, and a driver
   * that caught an unexpected exception. What was not handed out yet is dropped with the
   * writes it may depend on; a Ready handed out and not advanced must not be sent either.
   */
  fence(cause: string): void {
    this.awaitingAdvance = false;
    if (this.fenced) return;
    this.fenced = cause;
    // Undefined while Raft is being built; what it queued in the step that failed goes too.
    // Draining it applies what was committed: should that be what threw, the fence still holds.
    try {
      (this.raft as Raft | undefined)?.ready();
    } catch {
      /* fenced: whatever it held is dropped below */
    }
    this.writes = [];
    this.events = [];
    if (this.coherence === 'coherent') this.stats.partitions++;
    this.events.push({ type: 'lifecycle', from: this.coherence, to: 'decoherent', cause: `fenced: ${cause}` });
    this.coherence = 'decoherent';
    this.out = [];
  }

  /** Each armed timer's deadline (ms), Raft's with the node's own; none once fenced. */
  deadlines(): Partial<Record<DomainTimer, number>> {
    if (this.fenced) return {};
    const t: Partial<Record<DomainTimer, number>> = { ...this.raft.deadlines(), hello: this.helloAt };
    const f = this.links.deadline();
    if (f < Infinity) t.fragments = f;
    // Resends wait for a known leader; without one, Raft's own timers are what move things.
    if (this.raft.leader !== 0 && this.pending.size > 0) t.resend = this.fresh.length > 0 ? -Infinity : this.resendDue;
    return t;
  }

  /** The earliest deadline (ms); Infinity when none is armed. */
  pollTimeout(): number {
    let t = Infinity;
    for (const at of Object.values(this.deadlines())) t = Math.min(t, at);
    return t;
  }

  /**
   * The background snapshot of a 'snapshot-begin' write is durable (`data`: its bytes, or how
   * to read them back): Raft compacts its log behind it (the 'compact' write of the next Ready).
   */
  snapshotDurable(meta: SnapshotMeta, data: SnapshotData): void {
    if (!this.fenced) this.raft.snapshotDurable(meta, data);
  }

  /** That snapshot could not be written: nothing was compacted, and the next one is written at once. */
  snapshotFailed(index: number): void {
    if (!this.fenced) this.raft.snapshotFailed(index);
  }

  /** Fire the due timers: Raft's first, then the node's (NODE_TIMERS order). */
  handleTimeout(now: number): void {
    if (this.fenced) return;
    if (now >= this.raft.pollTimeout()) this.raft.handleTimeout(now);
    for (const timer of NODE_TIMERS) this.fire(now, timer);
    this.after(now);
  }

  private fire(now: number, timer: NodeTimer): void {
    switch (timer) {
      case 'hello': {
        if (now < this.helloAt) return;
        this.helloAt = now + this.raft.heartbeatMs;
        const neighbours = this.aliveLinks(now);
        // Routing state goes to members only: a configured peer outside the domain learns nothing.
        for (const l of this.o.links) if (this.knownMember(l)) this.emit(now, l, { t: 'hello', neighbours, commit: this.raft.commit }, 1);
        return;
      }
      case 'resend':
        return; // nothing to do here: after() resends every proposal whose retry is due, after any input
      case 'fragments':
        return; // after() pumps the links (acknowledgements, losses, fragments) after any input
      default: {
        const _unhandled: never = timer; // a timer added to NODE_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  /**
   * A datagram from the direct link `from`. Nothing a peer sends makes this throw: a message
   * that fails a check is dropped and counted (QnDrop) and changes nothing.
   */
  handleDatagram(now: number, from: NodeId, bytes: Uint8Array): void {
    if (this.fenced) return this.drop('fenced');
    this.lastNow = now;
    if (!this.o.links.includes(from)) return this.drop('not-a-link');
    // Only members (of any configuration known here) speak for the domain; the rest get no
    // state change and no reply at all.
    if (!this.knownMember(from)) return this.drop('not-a-member');
    const env = this.decode(bytes);
    if (!env) return;
    this.stats.bytesIn += bytes.length;
    this.heard.set(from, now);
    const b = env.body;
    if (b.t === 'frag' || b.t === 'fragAck') {
      // One hop, from the link itself to us: its memory is charged to that link (§15.9).
      if (env.from !== from || env.to !== this.id) return this.drop('fragment-misrouted');
      // A leader hears a follower in its acknowledgements too; a follower hears its leader only in
      // the fragments it sends: an acknowledgement of our own forward comes from any member, a
      // leader that stepped down included (counted as contact, it kept us refusing every pre-vote).
      if (b.t === 'frag' || this.raft.role === Role.Leader) this.raft.heardFrom(now, from);
      if (b.t === 'fragAck') this.links.onAck(now, from, b);
      else {
        const whole = this.links.onFragment(now, from, b);
        const inner = whole && this.decode(whole);
        if (inner) {
          if (inner.body.t === 'frag' || inner.body.t === 'fragAck') this.drop('malformed');
          else this.onEnvelope(now, from, inner);
        }
      }
      return this.pumpLinks(now);
    }
    this.onEnvelope(now, from, env);
  }

  /** An envelope for this domain, or undefined (dropped and counted). */
  private decode(bytes: Uint8Array): QnEnvelope | undefined {
    let env;
    try {
      env = decodeEnvelope(bytes);
    } catch (e) {
      if (e instanceof WireError) return void this.drop('malformed');
      throw e;
    }
    if (env.domain !== this.o.domain) return void this.drop('wrong-domain');
    return env;
  }

  /** One whole message from direct link `from` (a datagram, or the fragments of one). */
  private onEnvelope(now: number, from: NodeId, env: QnEnvelope): void {
    if (env.to !== this.id) {
      // Relay (one hop): only to a destination we hear directly, never back where it came from.
      if (env.ttl <= 1 || env.to === from || !this.o.links.includes(env.to)) return this.drop('no-route');
      // Only the link's own messages: a message crosses at most one relay, and one claiming another
      // origin (this relay above all) would reach `to` from our link under a name not the sender's,
      // unsealed and taken as ours (a member forged a follower's acknowledgement to its leader).
      if (env.from !== from) return this.drop('no-route');
      if (!this.knownMember(env.to) || !this.knownMember(env.from)) return this.drop('not-a-member');
      this.stats.relayed++;
      const bytes = encodeEnvelope({ ...env, ttl: env.ttl - 1 });
      // A large relayed message is reassembled here and cut again for the next hop; its seal covers it whole.
      this.toHop(now, env.to, bytes, () => ({ key: `${env.to}:r:${env.from}/${bytes.length}:${murmur3(0, bytes)}`, remember: false }));
      return this.pumpLinks(now);
    }
    // A peer speaks for itself; only a current member relays for another (ETCP authenticates the link, not env.from).
    if (env.from !== from && !this.raft.members.includes(from)) return this.drop('relayed-by-non-member');
    if (!this.knownMember(env.from)) return this.drop('not-a-member');
    let b = env.body;
    if (b.t === 'sealed') {
      // The origin sealed it for us: only `from` could have, and nobody changed it on the way.
      const body = this.o.relay?.open(env.from, sealedHeader(env.domain, env.from, env.to), b.box);
      if (!body) return this.drop('relay-unauthenticated');
      try {
        b = decodeBody(body);
      } catch (e) {
        if (e instanceof WireError) return this.drop('malformed');
        throw e;
      }
    } else if (env.from !== from) return this.drop('relay-unauthenticated');
    const bad = this.checkBody(now, b);
    if (bad) return this.drop(bad);
    if (b.t === 'removed') {
      // A lagging member may not know we were added back after a removal: our own committed
      // configuration, if it includes us and is newer than the notice, wins.
      const r = this.raft;
      const inCommitted = r.members.includes(this.id) && r.configIndex <= r.commit && r.configIndex >= b.index;
      if (!this.removed && !inCommitted) {
        this.removed = b.index;
        this.removedAt = now;
      }
    } else if (this.isRemoved(env.from)) {
      // A member removed by a committed change that never heard of it (it was cut off, or it
      // restarted with the change uncommitted in its log): tell it, whatever it sent.
      this.emit(now, env.from, { t: 'removed', index: this.raft.configIndex }, QN_DEFAULT_TTL);
    } else if (b.t === 'hello') {
      if (env.from === from) {
        this.hellos.set(from, { neighbours: new Set(b.neighbours), commit: b.commit, at: now });
        for (const n of b.neighbours) if (n !== this.id && this.o.links.includes(n)) this.vouched.add(n);
      }
    } else if (b.t === 'fwd') this.onForward(now, env.from, b.cmd);
    else {
      // Terms, not our view of the configuration, decide (§4.1): a member added by a change we
      // have not applied yet may lead; it is known here once it is in any configuration we hold.
      const why = this.raft.handleMessage(now, env.from, b as RaftMsg);
      if (why) this.drop(why);
    }
    this.after(now);
  }

  /** Checks of the non-Raft bodies (Raft checks its own): node ids and indexes within bounds. */
  private checkBody(now: number, b: QnBody): QnDrop | undefined {
    if (b.t === 'hello') return b.commit > MAX_INDEX || b.neighbours.some((n) => n === 0 || n > MAX_NODE_ID) ? 'out-of-bounds' : undefined;
    if (b.t === 'removed') {
      if (b.index === 0 || b.index > MAX_INDEX) return 'out-of-bounds';
      // Only a committed entry of ours can contradict the notice (committed entries are the same
      // at every member): an uncommitted one may be a deposed leader's, truncated elsewhere.
      const r = this.raft;
      const e = b.index <= r.commit ? r.entryAt(b.index) : undefined;
      if (e && !(e.cmd[0] === EntryKind.Config && !(parseConfig(e.cmd) ?? [this.id]).includes(this.id))) return 'bad-removal';
      // A leader cannot check a notice past its commit: it is deposed without knowing (CheckQuorum
      // steps it down, and as a follower it takes the next notice) or the sender lies.
      if (r.role === Role.Leader) return 'removal-while-leading';
      // Nor can a follower that hears its leader: a leader replicates only to the members of its
      // configuration, so it holds this one a member (a false notice past the commit, from any
      // member, kept this member out for good). Removed for real, it stops hearing the leader
      // within an election timeout, and the next notice (every message it sends draws one) holds.
      if (!e && r.role === Role.Follower && r.leader !== 0 && now - r.replicatedAt < r.electionMs) return 'removal-while-followed';
    }
    return undefined;
  }

  /** In the bootstrap configuration or the configuration in force (committed or not): a voter, or about to be one. */
  isMember(id: NodeId): boolean {
    return this.o.members.includes(id) || this.raft.members.includes(id);
  }

  /**
   * A link that is no member (isMember) taken away: its peer was removed from the host's
   * configuration. Nothing of it is heard, vouched for or routed through from here on.
   */
  dropLink(id: NodeId): void {
    if (this.isMember(id)) throw new Error(`node ${id} is a member: change the membership first`);
    const at = this.o.links.indexOf(id);
    if (at >= 0) this.o.links.splice(at, 1);
    this.heard.delete(id);
    this.hellos.delete(id);
    this.vouched.delete(id);
    this.links.remove(id);
  }

  /** In the bootstrap configuration, any configuration this member has seen (log, snapshot, committed), or vouched for. */
  knownMember(id: NodeId): boolean {
    return this.o.members.includes(id) || this.everMember.has(id) || this.raft.inAnyConfig(id) || this.vouched.has(id);
  }

  /**
   * Propose a candidate (one or more deltas, over one or more registers of the domain).
   * Returns its sequence number here, or why it is refused at once.
   */
  propose(now: number, ops: CandidateOp[]): { seq: number } | { refused: string; code?: 'too-large' | 'catching-up' } {
    if (this.fenced) return { refused: `this member is fenced: ${this.fenced}` };
    if (ops.length === 0 || ops.length > 256) return { refused: `a candidate has 1-256 deltas, not ${ops.length}` };
    for (const op of ops) {
      const reg = this.state.registers.get(op.register);
      if (!reg) return { refused: `no register named ${op.register} in domain ${this.o.name}` };
      if (op.delta.op === DeltaOp.Txn) return { refused: 'a domain candidate is a transaction already: list its ops, not a txn delta' };
      try {
        validateDelta(op.delta, reg.quota.maxValueBytes);
      } catch (e) {
        const d = op.delta;
        const large = ('key' in d && d.key.length > MAX_KEY_LEN) || deltaValueLen(d) > reg.quota.maxValueBytes;
        return { refused: (e as Error).message, ...(large ? { code: 'too-large' as const } : {}) };
      }
    }
    if (this.isRemovedHere()) return { refused: `this member was removed from domain ${this.o.name}` };
    if (!this.isCaughtUp()) {
      this.stats.refused++;
      return {
        refused: `this member joined domain ${this.o.name} and has not caught up yet (applied ${this.raft.applied}, leader's commit ${this.raft.leaderCommitSeen || 'not heard'}): it proposes once its state holds its earlier candidates`,
      };
    }
    // Started empty (new, or its directory wiped: the two look alike from inside) and not caught up:
    // the domain's table may hold its old seqs, and a seq given now could repeat one (the leader took
    // the new write for a retry of the old and it was reported committed, never applied). Nothing is
    // numbered or kept; the caller holds the write and proposes it once caught up (spookd's dpropose
    // waits for that, DomainHost.whenCaughtUp), when nextSeq is above every seq of ours it applied.
    if (this.isBehind()) {
      this.stats.refused++;
      return {
        code: 'catching-up',
        refused: `this member of domain ${this.o.name} started with nothing stored (new, or its directory wiped) and has not caught up yet (applied ${this.raft.applied}, leader's commit ${this.raft.leaderCommitSeen || 'not heard'}): nothing was proposed; it numbers writes once its state holds its earlier ones`,
      };
    }
    if (this.coherence === 'decoherent' && (this.o.policy ?? 'buffer') === 'refuse') {
      this.stats.refused++;
      return { refused: 'decoherent: this member cannot reach a majority and its policy is refuse' };
    }
    if (this.pending.size >= Math.min(this.o.maxPending ?? 1024, OUTCOME_WINDOW)) {
      this.stats.refused++;
      return { refused: `pending buffer full (${this.pending.size} candidates)` };
    }
    const cmd = encodeCandidate({ origin: this.id, seq: this.nextSeq, ops });
    if (cmd.length > this.maxCandidate)
      return {
        code: 'too-large',
        refused: `candidate encodes to ${cmd.length} bytes; the limit is ${this.maxCandidate} (the largest register maxValueBytes + ${CANDIDATE_ROOM})`,
      };
    // Large candidates wait in memory (and the journal) until decided: bounded in bytes too.
    const maxPendingBytes = this.o.maxPendingBytes ?? Math.max(64 << 20, 2 * this.maxCandidate);
    const held = this.pendingBytes;
    if (this.pending.size > 0 && held + cmd.length > maxPendingBytes) {
      this.stats.refused++;
      return {
        refused: `pending buffer full (${held} bytes of ${this.pending.size} candidates; the limit maxPendingBytes is ${maxPendingBytes})`,
      };
    }
    const seq = this.nextSeq++;
    this.write({ kind: 'pending', seq, cmd });
    this.pending.set(seq, { cmd, sentAt: -Infinity });
    this.fresh.push(seq);
    this.pendingBytes += cmd.length;
    this.stats.proposed++;
    this.after(now);
    return { seq };
  }

  /** Leader only: add or remove one voting member (Raft §4.1). */
  changeMembers(now: number, change: { add?: NodeId; remove?: NodeId }): { ok: true; index: number } | { ok: false; reason: string } {
    if (this.fenced) return { ok: false, reason: `this member is fenced: ${this.fenced}` };
    const r = this.raft.changeMembers(now, change);
    this.after(now);
    return r;
  }

  // --- internals --------------------------------------------------------------------------

  private drop(reason: QnDrop): void {
    this.stats.drops[reason] = (this.stats.drops[reason] ?? 0) + 1;
  }

  /** True if this node leads and `key` was not appended in this term yet (and now is marked). */
  private firstAppend(key: string): boolean {
    if (this.raft.role !== Role.Leader) return false;
    if (this.inLogTerm !== this.raft.term) {
      this.inLog.clear();
      this.inLogTerm = this.raft.term;
    }
    if (this.inLog.has(key)) return false;
    this.inLog.add(key);
    return true;
  }

  /**
   * Leader: append a candidate not appended in this term yet. One Raft refuses (its uncommitted
   * bound, PROTOCOL.md §15.4) is not marked: it goes when its proposer sends it again.
   */
  private append(now: number, key: string, cmd: Uint8Array): void {
    if (this.firstAppend(key) && this.raft.propose(now, cmd) === undefined) this.inLog.delete(key);
  }

  private onForward(now: number, sender: NodeId, cmd: Uint8Array): void {
    if (cmd.length > this.maxCandidate) return this.drop('oversized-candidate');
    const c = parseCandidate(cmd);
    if (!c) return this.drop('malformed-candidate');
    // A member proposes only its own candidates: one under another's name would take that
    // member's sequence number (and its outcome) in the table.
    if (c.origin !== sender) return this.drop('candidate-origin-mismatch');
    if (this.raft.role !== Role.Leader) return this.drop('fwd-not-leader'); // the origin retries
    if (this.state.outcomeOf(c.origin, c.seq) !== undefined) return; // decided: the origin learns it from the log
    if (c.seq < this.state.windowFloor(c.origin)) return; // older than its origin's window: applies nothing (DomainState.apply)
    this.append(now, `${c.origin}:${c.seq}`, cmd);
  }

  private onCollapse(c: Collapsed): void {
    this.inLog.delete(`${c.candidate.origin}:${c.candidate.seq}`);
    if (c.candidate.origin !== this.id) return;
    // Our own seq from before a wipe (replayed from the log): never numbered again.
    if (c.candidate.seq >= this.nextSeq) this.raiseNextSeq(c.candidate.seq + 1);
    if (c.forgotten) return this.resolveForgotten(c.candidate.seq);
    // Not ours as pending here: an earlier incarnation's (before a wipe), appended but not in our log
    // when we caught up (raiseAboveOwnTail), its seq numbered again since (a restart in between
    // included). The candidate pending under it never applies now (the table holds the seq): its end
    // is reported, never the other one's outcome. (Both are the candidate's encoding as proposed.)
    const p = this.pending.get(c.candidate.seq);
    if (p && Buffer.compare(c.cmd, p.cmd) !== 0) return this.resolveReused(c.candidate.seq, c.index);
    this.resolve(c.candidate.seq, c.outcome, c.index, c.failedOp);
    // Our window moved: a candidate still pending below it is never applied now (leaders skip it).
    // Pending seqs are in the order they were numbered: only those below the floor are visited.
    const floor = this.state.windowFloor(this.id);
    for (const seq of this.pending.keys()) {
      if (seq >= floor) break;
      this.resolveForgotten(seq);
    }
  }

  /** Pending `seq` lost its number to an earlier incarnation's candidate (onCollapse): not applied, and never will be. */
  private resolveReused(seq: number, index: number): void {
    const p = this.pending.get(seq)!;
    this.pending.delete(seq);
    this.pendingBytes -= p.cmd.length;
    this.write({ kind: 'drop-pending', seq });
    this.stats.rejected++;
    this.events.push({
      type: 'outcome',
      seq,
      committed: false,
      index,
      reason: 'not applied: this seq was taken by a candidate this member proposed before its store was wiped (propose it again)',
    });
  }

  /**
   * Pending `seq` is below our window's floor (DomainState.windowFloor): never applied from now on,
   * and perhaps applied before (its outcome forgotten, a snapshot installed meanwhile): unknown.
   */
  private resolveForgotten(seq: number): void {
    this.giveUp(
      seq,
      `older than the ${OUTCOME_WINDOW} outcomes kept for this member: not applied now, and whether it was before is unknown`,
    );
  }

  /** Pending `seq` is never sent again and its outcome is unknown here (`reason` says why): forgotten, journaled, told. */
  private giveUp(seq: number, reason: string): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    this.pendingBytes -= p.cmd.length;
    this.write({ kind: 'drop-pending', seq }); // a seq left in `fresh` is skipped: sendPending sends only what is pending
    this.events.push({ type: 'outcome', seq, committed: false, unknown: true, reason });
  }

  private resolve(seq: number, outcome: number, index?: number, failedOp?: number): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    this.pendingBytes -= p.cmd.length;
    this.write({ kind: 'drop-pending', seq });
    if (outcome === 0) this.stats.committed++;
    else this.stats.rejected++;
    this.events.push(
      outcome === 0
        ? { type: 'outcome', seq, committed: true, index }
        : {
            type: 'outcome',
            seq,
            committed: false,
            reason: COLLAPSE_REJECT_NAMES[outcome as keyof typeof COLLAPSE_REJECT_NAMES] ?? `reason ${outcome}`,
            index,
            ...(failedOp !== undefined ? { op: failedOp } : {}),
          },
    );
  }

  /**
   * Caught up (sticky): applied at least as far as a leader's commit index heard since start, in a
   * configuration holding us. A leader appends a Config only once the previous one is committed
   * and replicates to an added member only after its addition, so the commit index it sends is
   * past the removal before a re-addition, and our state is then past the re-addition.
   */
  private isCaughtUp(): boolean {
    const r = this.raft;
    if (this.caughtUp || !r.appliedMembers.includes(this.id)) return this.caughtUp;
    // A follower, as far as its leader's commit; a leader (it hears no append), once it has
    // applied an entry of its own term: its log holds every committed entry (Leader Completeness).
    const upTo = r.role === Role.Leader ? (r.commit >= r.termStartIndex ? r.commit : 0) : r.leaderCommitSeen;
    if (upTo > 0 && r.applied >= upTo) this.caughtUp = true;
    return this.caughtUp;
  }

  /** Started with nothing stored and has not applied as far as a leader's commit index since. */
  private isBehind(): boolean {
    if (!this.startedEmpty) return false;
    const r = this.raft;
    const upTo = r.role === Role.Leader ? (r.commit >= r.termStartIndex ? r.commit : 0) : r.leaderCommitSeen;
    if (upTo > 0 && r.applied >= upTo) {
      this.startedEmpty = false;
      this.raiseAboveOwnTail();
      // Journaled: ends 'behind', and a restart numbers no lower than now.
      this.write({ kind: 'next-seq', nextSeq: this.nextSeq });
    }
    return this.startedEmpty;
  }

  /**
   * On catching up after starting empty: next seq above every seq of our origin in the log past
   * the applied index, as for those applied. Such an entry is our earlier incarnation's, appended
   * and not yet committed (its acknowledgement lost); it may commit still, and a new write under
   * its seq was taken by the leader for a retry of it and reported committed, never applied. Of
   * the entries of other logs, only that leader's can still commit (it committed an entry of its
   * own term: every later leader's log holds its log up to there, and nothing of an older term
   * after it); those it had not sent us yet are skipped below (or, with no trace of an earlier
   * life, onCollapse's case). One walk, over the uncommitted tail (bounded, §15.4).
   */
  private raiseAboveOwnTail(): void {
    const r = this.raft;
    let own = false;
    for (let i = r.applied + 1; i <= r.lastIndex; i++) {
      const e = r.entryAt(i);
      const h = e && e.cmd[0] === EntryKind.App ? candidateHead(e.cmd) : undefined;
      if (h && h.origin === this.id) own = true;
      if (h && h.origin === this.id && h.seq >= this.nextSeq && h.seq <= MAX_INDEX) this.raiseNextSeq(h.seq + 1);
    }
    // An earlier life's candidates past this log (appended at the leader, not sent to us yet) are
    // unseen here: a seq numbered now could be one of theirs, then the write was never applied and
    // its seq's outcome (doutcome, or a snapshot deciding it: resolveFromTable) was the old one's.
    // That life had at most OUTCOME_WINDOW undecided (propose's bound), and every seq it numbered
    // above its largest decided one is one of them (refusals number nothing): numbering above that
    // many reuses none of its seqs. Only with a trace of an earlier life (the table or the tail):
    // a brand-new member, which looks the same from inside, numbers from 1.
    // That life may itself have jumped so after a wipe (its seqs then start past its largest decided
    // one + OUTCOME_WINDOW, not right above it) and been wiped before any was decided: every later
    // life sees the same table, so a jump of a fixed size numbered that life's seqs again. A jump of
    // a random number of windows more makes each life's window its own (two lives share one with a
    // chance of 1 in WIPE_JUMP_WINDOWS), while 2^48 seqs still last thousands of wipes.
    const decided = this.state.maxSeqOf(this.id);
    if (decided > 0 || own) {
      const windows = 1 + this.o.random(0, WIPE_JUMP_WINDOWS - 1);
      this.raiseNextSeq(Math.max(this.nextSeq, decided + windows * OUTCOME_WINDOW + 1));
    }
  }

  /**
   * Removed: told so by a member whose removal of us is committed, or our own log shows a
   * committed configuration without us after one with us. (An uncommitted one may still be
   * rolled back: the change that added us can be truncated by a new leader and redone.)
   */
  private isRemovedHere(): boolean {
    return this.removed > 0 || (this.wasMember && !this.raft.members.includes(this.id) && this.raft.configIndex <= this.raft.commit);
  }

  private noteEverMember(id: NodeId): void {
    if (this.everMember.has(id)) return;
    if (this.o.links.includes(id) || this.o.members.includes(id)) this.everMember.add(id);
    else if (this.everOthers < EVER_MEMBER_OTHERS) {
      this.everOthers++;
      this.everMember.add(id);
    }
  }

  /**
   * Removed for sure, so pending candidates are past learning (reported `unknown`): our own log
   * says so, or a notice its commit confirms, or one that held an election timeout with no leader
   * replicating to us. A notice past the commit that came in a partition or an election may be
   * false (any member can send one): until then the candidates are retried, not abandoned.
   */
  private removalSettled(now: number): boolean {
    if (this.removed === 0) return this.isRemovedHere();
    return this.removed <= this.raft.commit || now - this.removedAt >= this.raft.electionMs;
  }

  private isRemoved(id: NodeId): boolean {
    return this.everMember.has(id) && !this.raft.members.includes(id) && this.raft.configIndex <= this.raft.commit;
  }

  /** Removed from the domain: no log reaches us any more, so outcomes here are unknowable. */
  private abandonPending(): void {
    this.pendingBytes = 0;
    for (const seq of [...this.pending.keys()]) {
      this.pending.delete(seq);
      this.write({ kind: 'drop-pending', seq });
      this.events.push({
        type: 'outcome',
        seq,
        committed: false,
        unknown: true,
        reason: 'this member was removed from the domain; the outcome is unknown here',
      });
    }
  }

  /**
   * After a snapshot install, candidates decided inside it are resolved from its outcome table,
   * and no seq of ours it holds (from before a wipe) is numbered again.
   */
  private resolveFromTable(): void {
    const max = this.state.maxSeqOf(this.id);
    if (max >= this.nextSeq) this.raiseNextSeq(max + 1);
    const floor = this.state.windowFloor(this.id);
    for (const seq of [...this.pending.keys()]) {
      const o = this.state.outcomeOf(this.id, seq);
      if (o !== undefined) this.resolve(seq, o);
      else if (seq < floor) this.resolveForgotten(seq);
    }
  }

  /**
   * Not journaled: a restart derives it again from the snapshot and the entries it applies, and
   * a member that joined proposes only once it has applied as far as before (caughtUp).
   */
  private raiseNextSeq(next: number): void {
    this.nextSeq = next;
  }

  /** Everything that follows an input: coherence, candidate (re)sends, Raft's writes and messages out. */
  private after(now: number): void {
    this.updateCoherence(now);
    // A configuration is in force once in the log (Raft §4.1); the leader stops replicating to
    // a member it removed, so waiting for the commit here could wait forever.
    const committedConfig = this.raft.configIndex <= this.raft.commit;
    // Only committed configurations count: an appended one may be truncated and redone.
    if (committedConfig) for (const m of this.raft.members) this.noteEverMember(m);
    // Leading a configuration that holds us: a removal notice was false (Leader Completeness).
    if (this.removed && this.raft.role === Role.Leader && this.raft.members.includes(this.id)) this.removed = 0;
    // Added back by a committed change newer than a removal notice: no longer removed.
    if (this.removed && committedConfig && this.raft.members.includes(this.id) && this.raft.configIndex > this.removed) this.removed = 0;
    // The commit reached the notice's index inside a configuration holding us: the entry there is
    // no configuration without us, so the notice was false (§15.6).
    if (this.removed && committedConfig && this.raft.members.includes(this.id) && this.removed <= this.raft.commit) this.removed = 0;
    // A leader replicated to us after we kept it: that leader's configuration holds us (§15.6).
    if (this.removed && this.raft.role === Role.Follower && this.raft.leader !== 0 && this.raft.replicatedAt > this.removedAt)
      this.removed = 0;
    if (this.raft.members.includes(this.id) && committedConfig && !this.removed) this.wasMember = true;
    if (this.pending.size > 0 && this.removalSettled(now)) this.abandonPending();
    this.sendPending(now);
    this.lastNow = now;
  }

  /**
   * Raft's writes and messages since the last Ready, into this one: taken once per Ready, so
   * the candidates proposed by every input the driver handled since share appends (Raft
   * batches them in its ready()).
   */
  private takeRaft(now: number): void {
    const r = this.raft.ready();
    if (r) {
      for (const w of r.writes) this.writes.push(w);
      for (const m of r.messages) this.emit(now, m.to, m.msg, QN_DEFAULT_TTL);
    }
    // No longer leading: the appends and snapshot chunks still queued as fragments are stale, and
    // their pieces would keep the followers hearing a deposed leader (refusing votes) until they
    // complete (second review). Only a leader queues them (messageKey: `a/` and `s:` keys).
    if (this.raft.role !== Role.Leader && this.leaderTraffic) {
      this.links.forget(isLeaderTraffic);
      this.leaderTraffic = false;
    }
    this.pumpLinks(now);
  }

  /** Fragments and fragment acknowledgements due on the links, each in its own datagram to that link. */
  private pumpLinks(now: number): void {
    this.links.pump(now, (to, body) => {
      const bytes = encodeEnvelope({ domain: this.o.domain, from: this.id, to, ttl: 1, body });
      this.stats.bytesOut += bytes.length;
      this.out.push({ to, bytes });
    });
  }

  /** A message to the next hop: whole if it fits a datagram, else as fragments (`key` names it, computed only then). */
  private toHop(now: number, hop: NodeId, bytes: Uint8Array, key: () => { key: string; remember: boolean } | undefined): void {
    if (bytes.length <= QN_MAX_DATAGRAM) {
      this.stats.bytesOut += bytes.length;
      this.out.push({ to: hop, bytes });
    } else {
      const k = key();
      if (k && isLeaderTraffic(k.key)) this.leaderTraffic = true;
      this.links.send(now, hop, bytes, k);
    }
  }

  private updateCoherence(now: number): void {
    if (this.fenced) return;
    const r = this.raft;
    if (r.leader !== this.lastLeader && r.leader !== 0) this.events.push({ type: 'leader', leader: r.leader, term: r.term });
    this.lastLeader = r.leader;
    // Not while it has not caught up since it started empty (isBehind): a member wiped and restarted
    // served an empty state as current.
    const coherent =
      !this.removed && (r.role === Role.Leader || (r.leader !== 0 && now - r.leaderContact < r.electionMs)) && !this.isBehind();
    const next: Coherence = coherent ? 'coherent' : 'decoherent';
    if (next === this.coherence) return;
    const cause = coherent
      ? `leader ${r.leader} in term ${r.term}`
      : this.removed
        ? `removed from the domain (index ${this.removed})`
        : r.members.includes(this.id)
          ? r.leader !== 0 && this.startedEmpty
            ? `catching up (applied ${r.applied}, leader's commit ${r.leaderCommitSeen || 'not heard'})`
            : 'no leader reachable with a majority'
          : 'not a member';
    if (next === 'decoherent') this.stats.partitions++;
    this.events.push({ type: 'lifecycle', from: this.coherence, to: next, cause });
    this.coherence = next;
  }

  private sendPending(now: number): void {
    const r = this.raft;
    if (r.leader === 0 || this.pending.size === 0) return;
    let budget = 64;
    // Never sent first, then those whose resend is due; at most 64 per input.
    let i = 0;
    for (; i < this.fresh.length && budget > 0; i++) {
      const seq = this.fresh[i];
      const p = this.pending.get(seq);
      if (!p) continue; // decided meanwhile
      budget--;
      this.sendOne(now, seq, p);
    }
    this.fresh = i === this.fresh.length ? [] : this.fresh.slice(i);
    if (budget === 0 || now < this.resendDue) return;
    let due = Infinity;
    for (const [seq, p] of this.pending) {
      if (p.sentAt === -Infinity) continue; // still in `fresh`
      if (p.sentAt + this.retryMs <= now && budget > 0) {
        budget--;
        this.sendOne(now, seq, p);
      }
      due = Math.min(due, p.sentAt + this.retryMs);
    }
    this.resendDue = due;
  }

  private sendOne(now: number, seq: number, p: Pending): void {
    const r = this.raft;
    p.sentAt = now;
    this.resendDue = Math.min(this.resendDue, now + this.retryMs);
    if (r.role === Role.Leader) {
      this.append(now, `${this.id}:${seq}`, p.cmd);
    } else this.emit(now, r.leader, { t: 'fwd', cmd: p.cmd }, QN_DEFAULT_TTL);
  }

  /** Route: directly when that link is alive, else via the lowest-numbered relay that hears `to`. */
  private nextHop(now: number, to: NodeId): NodeId | undefined {
    const direct = this.o.links.includes(to);
    if (direct && now - (this.heard.get(to) ?? -Infinity) < this.linkTimeoutMs) return to;
    // Through a relay only with seals: an unsealed relayed message is refused at the other end.
    if (this.o.relay)
      for (const l of [...this.o.links].sort((a, b) => a - b)) {
        const h = this.hellos.get(l);
        if (
          l !== to &&
          h &&
          now - h.at < this.linkTimeoutMs &&
          now - (this.heard.get(l) ?? -Infinity) < this.linkTimeoutMs &&
          h.neighbours.has(to)
        )
          return l;
      }
    // Nothing known to work: try the direct link (that is how a silent link comes back).
    return direct ? to : undefined;
  }

  private emit(now: number, to: NodeId, body: QnBody, ttl: number): void {
    const hop = ttl === 1 ? to : this.nextHop(now, to);
    if (hop === undefined) {
      this.stats.noRoute++;
      return;
    }
    const inner = body;
    if (hop !== to) {
      const box = this.o.relay?.seal(to, sealedHeader(this.o.domain, this.id, to), encodeBody(body));
      if (!box) {
        this.stats.noRoute++;
        return;
      }
      body = { t: 'sealed', box };
      this.stats.relayed++;
    }
    const bytes = encodeEnvelope({ domain: this.o.domain, from: this.id, to, ttl, body });
    this.toHop(now, hop, bytes, () => messageKey(to, inner));
  }
}

/**
 * What names a large message for its link while it is under way, so that Raft's and the
 * proposer's resends of it are not queued again (an append's commit index may differ between
 * two resends: the entries it carries are what count). An append or fwd delivered recently
 * is not sent again either (its answer is on its way); a snapshot chunk is, at once: a
 * follower drops one that arrives ahead of its offset, and the leader resends from there.
 * The part before the last `/` is the message's stream (core/pair/fragment.ts): a follower's
 * appends, or one snapshot's chunks, go in order; other streams take turns with them.
 */
/** An append's or a snapshot chunk's key (messageKey): only a leader sends them. */
const isLeaderTraffic = (key: string): boolean => /^\d+:(a\/|s:)/.test(key);

function messageKey(to: NodeId, b: QnBody): { key: string; remember: boolean } | undefined {
  if (b.t === 'append') return { key: `${to}:a/${b.term}:${b.prevIndex}:${b.entries.length}`, remember: true };
  if (b.t === 'fwd') return { key: `${to}:f/${b.cmd.length}:${murmur3(0, b.cmd)}`, remember: true };
  if (b.t === 'snap') return { key: `${to}:s:${b.term}:${b.index}/${b.offset}:${b.data.length}`, remember: false };
  return undefined;
}

/**
 * The admin protocol of spookd, shared by the daemon (drivers/admin/), the client library, the
 * CLI and the tests: every command with its arguments and its result, the streams, and the
 * closed set of error codes. Types and two constant lists only: no daemon code, no validation
 * library (the server validates each argument by hand and names it when it is wrong).
 *
 * Wire: JSON lines on a Unix socket. Request `{"id":1,"cmd":"pair","args":{"peer":"b"}}`;
 * response `{"id":1,"ok":true,"result":…}` or
 * `{"id":1,"ok":false,"error":{"code":"unknown-peer","message":"no peer named x (…)","field":"peer"}}`.
 * `watch` and `events` answer `{"id":1,"ok":true,"result":"streaming"}`, then send
 * `{"id":1,"peer":"b","event":…}` lines until the client disconnects.
 */

/**
 * Stable error codes (undici style): a client branches on `code`, people read `message`.
 * Add codes; never rename one.
 */
export const ADMIN_ERROR_CODES = [
  /** The request line is not JSON, or lacks a numeric `id` and a string `cmd`. */
  'bad-request',
  /** The request line is longer than the daemon accepts (ADMIN_MAX_REQUEST, 90 MiB). */
  'request-too-large',
  /** No such command. */
  'unknown-command',
  /** An argument is missing or malformed; `field` names it (`ops[2].expect` inside a list). */
  'bad-argument',
  /** No configured peer has this name (or public key). */
  'unknown-peer',
  /** Several peers are configured and the request named none. */
  'peer-required',
  /** No configured domain has this name (or none is configured). */
  'unknown-domain',
  /** Several domains are configured and the request named none. */
  'domain-required',
  /** No register of this name on the pair or in the domain. */
  'unknown-register',
  /** No QSCS group of this name. */
  'unknown-group',
  /** `doutcome`: no candidate of this number was proposed on this member. */
  'unknown-candidate',
  /** A pair write: the buffer of pending candidates is full; retry later. */
  'buffer-full',
  /** A pair write: the register is frozen while the pair is not entangled (policy freeze). */
  'frozen',
  /** A pair write: the delta is not valid for the register (kind, size, quota). */
  'invalid-delta',
  /** A pair write: the pair is closed. */
  'pair-closed',
  /** A pair read or write: the pair is fenced (a fault contained to it) until spookd restarts; its registers may hold what never reached the disk. */
  'pair-fenced',
  /** A domain write was refused before it became a candidate (decoherent under refuse, fenced, full, too large). */
  'refused',
  /** A membership change needs the leader; the message names it when known. */
  'not-leader',
  /** A membership change the leader cannot make now (one pending already, already a member, ...). */
  'membership-refused',
  /** The change conflicts with the daemon's state (port already wrapped, not wrapped, wrapper limit, no interception). */
  'conflict',
  /** A fault in the daemon; the message says what. */
  'internal',
  /** Client side: spookd is not running or its socket is not reachable. */
  'daemon-not-running',
  /** Client side: spookd closed the connection before answering (it stopped or restarted); a stream ends with it. */
  'connection-closed',
  /** Client side: no answer within the call's `timeoutMs` (the request may still take effect). */
  'timeout',
  /** Client side: the call's AbortSignal fired before the answer (the request may still take effect). */
  'aborted',
  // ---- large values ----
  /**
   * A key or value over its limit; the message names it ("value is 2097152 bytes; register cfg
   * limit maxValueBytes is 1048576", "key is 5000 bytes; the limit MAX_KEY_LEN is 4096").
   */
  'too-large',
] as const;

/**
 * The longest request line spookd accepts (characters, newline excluded); the client refuses longer ones before sending.
 * Large enough for a largest value (MAX_VALUE_LEN, 64 MiB) in base64 with a largest key: 90 MiB.
 */
export const ADMIN_MAX_REQUEST = 90 * 1024 * 1024;

export type AdminErrorCode = (typeof ADMIN_ERROR_CODES)[number];

/** The error object of a failed response. */
export interface AdminErrorBody {
  code: AdminErrorCode;
  message: string;
  /** The argument at fault (`bad-argument`, and the `unknown-*` codes when an argument named the thing). */
  field?: string;
}

export type AdminResponse<R> = { id: number; ok: true; result: R } | { id: number; ok: false; error: AdminErrorBody };

/** A line of a stream after its `"streaming"` response: one event, its peer beside it. */
export interface AdminEventLine<E = unknown> {
  id: number;
  peer: string;
  event: E;
}

/** Bytes are sent as `name` (UTF-8 text) or `nameBase64`. */
type Bytes<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };

/** Bytes as returned: base64 always, `text` when they are printable UTF-8. */
export interface ShownBytes {
  base64: string;
  text?: string;
}

export type PairStateName = 'FORMING' | 'ENTANGLED' | 'COLLAPSING' | 'DECOHERENT' | 'REENTANGLING' | 'CLOSED';
export type PairRole = 'sequencer' | 'follower';
/** The pair core's named timers (core/pair/halfpair.ts PairTimer; the admin server checks they match). */
export type PairTimerName =
  | 'silence'
  | 'keepalive'
  | 'ack'
  | 'retransmit'
  | 'recon-work'
  | 'recon-start'
  | 'recon-retransmit'
  // ---- large values ----
  | 'fragment';
/** One armed timer of a pair: its deadline on the daemon's clock (as `since`), null if due at once; a register's carries its name. */
export interface PairTimerSummary {
  timer: PairTimerName;
  register?: string;
  at: number | null;
}

// ---- pairs ----

export interface StatusResult {
  publicKey: string;
  listen: string;
  uptimeMs: number;
  pid: number;
  /** `off`, or `<mode> on <interface>`. */
  xdp: string;
  pairs: { peer: string; state: PairStateName }[];
  drops: Record<string, number>;
  warningsSuppressed: number;
}

export interface RegisterSummary {
  name: string;
  kind: 'map' | 'stream';
  policy: string;
  version: number;
  hash: string;
  size: number;
  stateBytes: number;
  pending: number;
  peerVersion: number;
  logBase: number;
}

export interface PairSummary {
  peer: string;
  publicKey: string;
  state: PairStateName;
  since: number;
  role: PairRole;
  endpoint: string | null;
  pairId: number | null;
  rttMs: number | null;
  loss: number;
  bytesSent: number;
  bytesReceived: number;
  datagramsSent: number;
  datagramsReceived: number;
  reentanglements: number;
  fullTransfers: number;
  reentangleBytes: number;
  /** Datagrams of this pair dropped, per reason. */
  drops: Record<string, number>;
  disconnects: number;
  /**
   * Why this pair is fenced (a fault contained to it), or null. While it is, the registers' version and
   * hash are the memory's at the fence, not necessarily committed (docs/OPERATIONS.md); `get` and writes are refused (`pair-fenced`).
   */
  fenced: { cause: string; error: string; at: number } | null;
  overBudget: number;
  /** The pair's armed timers, earliest first. */
  timers: PairTimerSummary[];
  registers: RegisterSummary[];
}

export interface XdpStatusResult {
  enabled: boolean;
  interface: string | null;
  mode: string | null;
  programId: number | null;
  attachedAt: string | null;
  pinDir: string | null;
  pinned: boolean;
  error: string | null;
  counters: Record<string, number> | null;
  pairs: { pairId: number; packets: number; bytes: number }[];
}

/** `get` on a map register. */
export interface MapGetResult {
  register: string;
  version: number;
  found: boolean;
  keyVersion?: number;
  value?: ShownBytes;
}

/** `get` on a stream register. */
export interface StreamGetResult {
  register: string;
  version: number;
  size: number;
  offset: number;
  data: ShownBytes;
}

/** The outcome of a pair write: decided, or still `pending` when the wait ran out (it will still be decided). */
export interface Outcome {
  register: string;
  origin: number;
  seq: number;
  verdict: 'committed' | 'rejected' | 'pending';
  reason: string | null;
  version: number | null;
}

type PairArgs = { peer?: string };
type WriteArgs = PairArgs & { register: string; timeoutMs?: number };

// ---- domains ----

export interface DomainListEntry {
  domain: string;
  state: 'coherent' | 'decoherent';
  role: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  members: number;
  pending: number;
  hash: string;
}

/** A domain member's counters and its Raft's; `drops` per reason. */
export interface DomainStats {
  proposed: number;
  committed: number;
  rejected: number;
  refused: number;
  relayed: number;
  noRoute: number;
  drops: Partial<Record<string, number>>;
  partitions: number;
  bytesIn: number;
  bytesOut: number;
  elections: number;
  leaderChanges: number;
  snapshotsSent: number;
  snapshotsInstalled: number;
  stepDowns: number;
  termExhausted: number;
  internalErrors: number;
}

export interface DomainSummary {
  domain: string;
  nodeId: number;
  state: 'coherent' | 'decoherent';
  fenced: string | null;
  role: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  fullStateBytes: number;
  hash: string;
  policy: string;
  pending: number;
  members: {
    member: string;
    nodeId: number;
    /** leader or follower */
    role: string;
    link: string;
    matchIndex: number | null;
    commitIndex: number | null;
    lag: number | null;
  }[];
  partitionsSeen: number;
  recentPartitions: { at: string; cause: string }[];
  stats: DomainStats;
  /** With the register's quota (maxKeys, maxBytes, ...) spread in. */
  registers: ({ name: string; kind: 'map' | 'stream'; version: number; size: number; bytes: number } & Record<string, unknown>)[];
  maxSnapshotBytes: number;
  groups: { name: string; registers: string[]; version: number }[];
}

export interface GroupListEntry {
  domain: string;
  state: 'coherent' | 'decoherent';
  name: string;
  registers: string[];
  version: number;
}

export interface GroupResult {
  group: string;
  domain: string;
  version: number;
  state: 'coherent' | 'decoherent';
  policy: string;
  commitIndex: number;
  members: { register: string; kind: 'map' | 'stream'; version: number; size: number; hash: string }[];
}

export interface DomainMapGetResult {
  domain: string;
  register: string;
  index: number;
  version: number;
  found: boolean;
  keyVersion?: number;
  value?: ShownBytes;
}

export interface DomainStreamGetResult {
  domain: string;
  register: string;
  index: number;
  version: number;
  size: number;
  offset: number;
  data: ShownBytes;
}

/** The outcome of a domain candidate; `unknown` when this member can no longer tell (it was removed). */
export interface DomainOutcome {
  domain: string;
  seq: number;
  verdict: 'committed' | 'rejected' | 'pending' | 'unknown';
  reason: string | null;
  index: number | null;
}

/** One delta of a `dpropose` candidate. */
export type DomainOp = { register: string } & (
  | ({ op: 'set' } & Bytes<'key'> & Bytes<'value'>)
  | ({ op: 'del' } & Bytes<'key'>)
  | ({ op: 'cas'; expect: number } & Bytes<'key'> & Bytes<'value'>)
  | ({ op: 'append'; offset?: number } & Bytes<'data'>)
);

// ---- wrappers ----

export interface WrapperEntry {
  protocol: string;
  port: number;
  peer: string;
  holdMs: number;
  delta: boolean;
  active: number;
  connections: number;
}

export interface WrapAddResult {
  protocol: string;
  port: number;
  peer: string;
  holdMs: number;
  delta: boolean;
  interception: string;
  interceptionError: string | null;
}

export interface WrapperStats {
  protocol: string;
  port: number;
  peer: string;
  holdMs: number;
  delta?: boolean;
  connections: number;
  active: number;
  bytesUp: number;
  bytesDown: number;
  outages: number;
  closes: Record<string, number>;
}

/** A peer's carrier and its WRAP session counters. */
export interface WrapPeerStats {
  peer: string;
  carrier: 'up' | 'dialing' | 'down';
  carrierBytesOut: number;
  carrierBytesIn: number;
  lastError: string | null;
  connections: number;
  dialsRefused: number;
  overBudgetPauses: number;
  overBudgetPausedMs: number;
  bufferedIn: number;
  bufferedOut: number;
  maxBufferedBytes: number;
  controlQueued: number;
  carrierInputPaused: boolean;
  recordsIn: number;
  recordsOut: number;
  violations: number;
  windowViolations: number;
  carrierUps: number;
  carrierLosses: number;
  refsSent: number;
  refBytes: number;
  refsExpanded: number;
  nacksSent: number;
}

export interface WrapStatsResult {
  /** `bpf` when the cgroup hooks intercept wrapped ports, else `off`. */
  interception: string;
  interceptionError: string | null;
  intercept: string;
  hooks: Record<string, number> | null;
  refused: Record<string, number>;
  carrierPending: number;
  carrierRefused: Record<string, number>;
  udpDrops: Record<string, number>;
  internalErrors: number;
  udpFlows: number;
  udpIntercept: string | null;
  wrappers: WrapperStats[];
  protocols: Record<string, { connections: number; bytesUp: number; bytesDown: number; outages: number }>;
  peers: WrapPeerStats[];
}

export interface WrapConnection {
  peer: string;
  conn: number;
  side: 'client' | 'server';
  target: string;
  protocol: string;
  state: string;
  heldForMs: number;
  sent: number;
  received: number;
  buffered: number;
  outages: number;
  ageMs: number;
}

export interface WrapPolicyEntry {
  peer: string;
  allow: { to: string; protocol: string }[];
  refused: number;
}

/** Every request/response command: its arguments and its result. */
export interface AdminCommands {
  status: { args: Record<string, never>; result: StatusResult };
  pairs: { args: Record<string, never>; result: PairSummary[] };
  pair: { args: PairArgs; result: PairSummary };
  registers: { args: Record<string, never>; result: ({ peer: string } & RegisterSummary)[] };
  xdp: { args: Record<string, never>; result: XdpStatusResult };
  /** A map key (`key`), or stream bytes (`offset`, `length`). */
  get: { args: PairArgs & { register: string; key?: string; offset?: number; length?: number }; result: MapGetResult | StreamGetResult };
  set: { args: WriteArgs & Bytes<'key'> & Bytes<'value'>; result: Outcome };
  del: { args: WriteArgs & Bytes<'key'>; result: Outcome };
  /** `expect`: the key's version to compare with (0: absent). */
  cas: { args: WriteArgs & { expect?: number } & Bytes<'key'> & Bytes<'value'>; result: Outcome };
  /** `offset`: where the append must land (default: the current end). */
  append: { args: WriteArgs & { offset?: number } & Bytes<'data'>; result: Outcome };
  domains: { args: Record<string, never>; result: DomainListEntry[] };
  domain: { args: { domain?: string }; result: DomainSummary };
  groups: { args: Record<string, never>; result: GroupListEntry[] };
  group: { args: { group: string; domain?: string }; result: GroupResult };
  dget: {
    args: { domain?: string; register: string; offset?: number; length?: number } & Bytes<'key'>;
    result: DomainMapGetResult | DomainStreamGetResult;
  };
  /** One candidate of 1-256 deltas: all commit together or none. */
  dpropose: { args: { domain?: string; ops: DomainOp[]; timeoutMs?: number }; result: DomainOutcome };
  doutcome: { args: { domain?: string; seq: number }; result: DomainOutcome };
  /** Exactly one of `add` and `remove`: a configured peer name, or `self`. */
  member: { args: { domain?: string; add?: string; remove?: string }; result: { domain: string; index: number; note: string } };
  wraps: { args: Record<string, never>; result: WrapperEntry[] };
  /** `hold`: a duration (`30s`, `500ms`, `2m`) or milliseconds; default 30s. */
  'wrap-add': {
    args: { protocol: string; port: number; peer: string; hold?: string | number; delta?: boolean };
    result: WrapAddResult;
  };
  'wrap-remove': { args: { port: number }; result: { port: number } };
  'wrap-stats': { args: Record<string, never>; result: WrapStatsResult };
  'wrap-conns': { args: Record<string, never>; result: WrapConnection[] };
  'wrap-policy': { args: Record<string, never>; result: WrapPolicyEntry[] };
}

export type AdminCommand = keyof AdminCommands;
export type AdminArgs<C extends AdminCommand> = AdminCommands[C]['args'];
export type AdminResult<C extends AdminCommand> = AdminCommands[C]['result'];
/** The arguments of a request as a parameter list: optional when the command needs none. */
export type AdminRequestArgs<C extends AdminCommand> =
  Record<string, never> extends AdminArgs<C> ? [args?: AdminArgs<C>] : [args: AdminArgs<C>];

// ---- streams ----

export interface CollapseEvent {
  type: 'collapse';
  peer: string;
  at: number;
  register: string;
  version: number;
  hash: string;
  /** verdict: 0 committed, else the rejection reason number. */
  entries: { origin: number; seq: number; verdict: number }[];
}

export interface LifecycleEvent {
  type: 'lifecycle';
  peer: string;
  at: number;
  from: PairStateName;
  to: PairStateName;
  cause: string;
}

export interface ReentangledEvent {
  type: 'reentangled';
  peer: string;
  at: number;
  register: string;
  method: 'log' | 'reconcile' | 'full';
  version: number;
}

/** Streaming commands: the first response is `"streaming"`, then events until the client closes. */
export interface AdminStreams {
  /** Collapses, of one peer and one register when named. */
  watch: { args: { peer?: string; register?: string }; event: CollapseEvent };
  /** Lifecycle transitions and re-entanglements, of one peer when named. */
  events: { args: { peer?: string }; event: LifecycleEvent | ReentangledEvent };
}

export type AdminStream = keyof AdminStreams;

/** Every command, in the order the daemon lists them in an `unknown-command` error. */
export const ADMIN_COMMANDS = [
  'status',
  'pairs',
  'pair',
  'registers',
  'xdp',
  'get',
  'set',
  'cas',
  'del',
  'append',
  'watch',
  'events',
  'domains',
  'domain',
  'groups',
  'group',
  'dget',
  'dpropose',
  'doutcome',
  'member',
  'wraps',
  'wrap-add',
  'wrap-remove',
  'wrap-stats',
  'wrap-conns',
  'wrap-policy',
] as const satisfies readonly (AdminCommand | AdminStream)[];

/** Compiles only when every command of the two maps is listed in ADMIN_COMMANDS. */
export type AllCommandsListed = Listed<Exclude<AdminCommand | AdminStream, (typeof ADMIN_COMMANDS)[number]>>;
type Listed<Missing extends never> = Missing;

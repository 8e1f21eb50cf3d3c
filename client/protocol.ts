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
 *
 * One clock: every instant (`at`, `since`, `…At`) is wall-clock epoch milliseconds, an integer;
 * every duration (`…Ms`) is milliseconds.
 */

/**
 * Stable error codes (undici style): a client branches on `code`, people read `message`.
 * Add codes; never rename one.
 */
export const ADMIN_ERROR_CODES = [
  /**
   * The request line is not JSON, or lacks a numeric `id` and a string `cmd`; or its `args` is not an object, or has
   * a field its command does not define (`field` names it; nothing of such a request is kept).
   */
  'bad-request',
  /** The request line is longer than the daemon accepts (ADMIN_MAX_REQUEST, 90 MiB). */
  'request-too-large',
  /** No such command. (An error quotes what a client sent, here the command, cut to 64 characters: it never grows with it.) */
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
  /**
   * `doutcome`: no candidate of this number was proposed on this member. `outcome`: no outcome of this write is
   * known here, or its `pair` is not the peer's pair now (the peer was rekeyed: its undecided writes were abandoned).
   */
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
  /** The change conflicts with the daemon's state (port already wrapped for that transport, not wrapped, wrapper limit, no interception). */
  'conflict',
  /** A fault in the daemon; the message says what. */
  'internal',
  /**
   * The connection has MAX_REQUESTS_IN_PROGRESS (4096) requests awaiting their answer already, or their request lines
   * hold more than 2 × the largest request (188743680 characters) with this one, or those of all connections together
   * more than 4 × (377487360 characters); the message names the limit. Wait for some to finish, then retry.
   */
  'too-many-requests',
  /**
   * The connection is refused (sent with id 0, then spookd closes it): spookd has as many admin connections
   * as it allows (1024), or unfinished request lines of all clients filled their shared budget
   * (4 × the largest request) and this connection's unfinished line was the oldest. Reconnect and retry.
   */
  'too-busy',
  /** Client side: spookd is not running or its socket is not reachable. */
  'daemon-not-running',
  /** Client side: spookd closed the connection before answering (it stopped or restarted); a stream ends with it. */
  'connection-closed',
  /** Client side: no answer within the call's `timeoutMs` (the request may still take effect). */
  'timeout',
  /** Client side: the call's AbortSignal fired before the answer (the request may still take effect). */
  'aborted',
  // ---- read and feed ----
  /**
   * `scan`: the cursor (or the version) a later page named is no longer held (idle past its TTL, its
   * connection closed, or the register moved on); start the scan again. Never a page of another version.
   * (Also the answer, never read, to a first page whose connection closed while it was gathered.)
   */
  'cursor-expired',
  /** `scan`: this connection (or spookd in all) holds as many scan cursors as it allows; finish or abandon a scan first. */
  'too-many-cursors',
  /**
   * `feed`/`dfeed`: this connection (or spookd in all) has as many change feeds open as it allows (64 per connection,
   * 1024 in all); `watch`/`events`: as many of those streams (64 per connection, 1024 in all). Close one first.
   */
  'too-many-watchers',
  /** A read that needs another kind of register (`scan` on a stream register). */
  'wrong-register-kind',
  /** Client side: a watch's `fromVersion` is older than spookd still holds (the `compacted` feed event): rescan, then watch from the scan's version. */
  'compacted',
  /** Client side: a watch ended because its consumer fell behind (the `overflow` feed event) and the application chose not to resume. */
  'overflow',
  // ---- register mismatch ----
  /**
   * A pair write: this host's registers differ from the peer's (missing at one end, another kind
   * or quota), so nothing would commit; the message names each register that differs and how.
   * Fix the configuration and restart spookd (docs/OPERATIONS.md).
   */
  'register-mismatch',
  // ---- large values ----
  /**
   * A key or value over its limit; the message names it ("value is 2097152 bytes; register cfg
   * limit maxValueBytes is 1048576", "key is 5000 bytes; the limit MAX_KEY_LEN is 4096").
   */
  'too-large',
  // ---- reload ----
  /**
   * A pair write: its peer was removed (a reload) before this host learnt its outcome. The outcome
   * is unknown (as etcd's indeterminate result), never "not committed": had the peer received it,
   * the peer may have committed it (or may still), and this host learns so only if the peer is
   * configured again. It is not proposed again from this end; read the key rather than assume.
   * A stream bound to that peer (`feed` on its register, `watch` or `events` naming it) ends with
   * this error line, the stream's last: opening it again is refused (`unknown-peer`) while the peer is not configured.
   */
  'peer-removed',
  /** `reload`: the configuration file does not read or validate; `field` names the first field at fault. Nothing changed. */
  'bad-config',
  /** `reload`, `wrap-add`, `wrap-remove`: a reload (SIGHUP or another `reload`) is under way; retry once it is done. */
  'reload-in-progress',
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
  /** The bytes, base64. */
  base64: string;
  /** The same bytes as text, when they are printable UTF-8. */
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
/** One armed timer of a pair; a register's carries its name. */
export interface PairTimerSummary {
  timer: PairTimerName;
  register?: string;
  /** When it fires (epoch ms), null if due at once. */
  at: number | null;
  /** How long until it fires (ms), 0 if due. */
  inMs: number;
}

// ---- pairs ----

export interface StatusResult {
  publicKey: string;
  listen: string;
  uptimeMs: number;
  pid: number;
  /** `off`, or `<mode> on <interface>`. */
  xdp: string;
  /** `registerMismatch`: how this host's registers differ from the peer's (the pair is then DECOHERENT). */
  pairs: { peer: string; state: PairStateName; registerMismatch?: string }[];
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
  /** A snapshot of this register is being written in the background (PROTOCOL.md §10.1); its old log is kept until it is durable. */
  snapshotting: boolean;
}

export interface PairSummary {
  peer: string;
  publicKey: string;
  state: PairStateName;
  /** When the pair entered `state` (epoch ms). */
  since: number;
  role: PairRole;
  /** Where the peer is reached, `HOST:PORT` as in a configuration file (IPv6 in brackets); null before its address is known. */
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
   * `at`: when it was fenced (epoch ms).
   */
  fenced: { cause: string; error: string; at: number } | null;
  overBudget: number;
  /** The pair's armed timers, earliest first. */
  timers: PairTimerSummary[];
  /**
   * How this host's registers differ from the peer's, or null (docs/OPERATIONS.md "Register mismatch"):
   * the pair is then DECOHERENT with cause `register-mismatch` and writes fail with that code.
   */
  registerMismatch: { reason: string; registers: RegisterMismatchEntry[] } | null;
  registers: RegisterSummary[];
}

/** One register that differs between the two ends of a pair, from this host's point of view. */
export type RegisterMismatchEntry =
  | { register: string; how: 'missing-at-peer' }
  | { register: string; how: 'missing-here' }
  | { register: string; how: 'kind'; here: string; peer: string }
  | { register: string; how: 'limit'; limit: string; here: number | null; peer: number | null };

export interface XdpStatusResult {
  enabled: boolean;
  interface: string | null;
  mode: string | null;
  programId: number | null;
  /** When the program was attached (epoch ms). */
  attachedAt: number | null;
  pinDir: string | null;
  pinned: boolean;
  error: string | null;
  counters: Record<string, number> | null;
  pairs: { pairId: number; packets: number; bytes: number }[];
}

/** `get` on a map register. */
export interface MapGetResult {
  register: string;
  /** The register's committed version the value was read at. */
  version: number;
  found: boolean;
  /** The register version that last wrote the key (what `cas` compares with); when found. */
  keyVersion?: number;
  /** When found. */
  value?: ShownBytes;
}

/** `get` on a stream register. */
export interface StreamGetResult {
  register: string;
  version: number;
  /** The stream's length in bytes. */
  size: number;
  /** Where `data` starts. */
  offset: number;
  data: ShownBytes;
}

/** The outcome of a pair write: decided, or still `pending` when the wait ran out (it will still be decided). */
export interface Outcome {
  register: string;
  /** The candidate's identity: its origin (which end proposed it) and sequence number, as collapse entries name it. */
  origin: number;
  seq: number;
  /**
   * The pair that numbered `seq` (16 hex digits of a hash of both ends' keys, the same at both ends and across
   * restarts): give it back to `outcome`. A rekeyed peer is a new pair, numbering its writes from 1 again.
   */
  pair: string;
  verdict: 'committed' | 'rejected' | 'pending';
  /** `rejected`: the reason's name (`cas-version-mismatch`, ...); `pending`: why no outcome yet; else null. */
  reason: string | null;
  /** The register version of the collapse that decided it; null while pending. */
  version: number | null;
  /**
   * A `txn` rejected by a guard: the index in `ops` of the first op whose guard failed (absent when this end cannot
   * tell: a txn across registers proposed before spookd's last start).
   */
  failedOp?: number;
}

type PairArgs = {
  /** The peer, by name or public key; may be omitted when only one is configured. */
  peer?: string;
};
type WriteArgs = PairArgs & {
  /** The register to write. */
  register: string;
  /** How long to wait for the outcome before answering `pending` (ms); default 10000, in [0, 600000]. */
  timeoutMs?: number;
};

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
  /** Catch-ups sent and installed as a difference from the follower's state (kind 13 snapDiff, PROTOCOL.md §15.4). */
  diffsSent: number;
  diffsInstalled: number;
  stepDowns: number;
  termExhausted: number;
  /** Leader: times a member was found lacking entries it had acknowledged (its directory wiped or restored) and sent them again. */
  lostEntries?: number;
  internalErrors: number;
  // ---- large values on domains ----
  /** Messages larger than a datagram, per link (PROTOCOL.md §15.9); `heldBytes`: partial messages held now, all links together. */
  fragments?: {
    fragmentsSent: number;
    fragmentsResent: number;
    messagesFragmented: number;
    messagesReassembled: number;
    outFull: number;
    restarts: number;
    heldBytes: number;
  };
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
  /** The index of the snapshot being written in the background, or 0. */
  snapshotting: number;
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
  /** The last 32 times this member became decoherent (`at` epoch ms), oldest first. */
  recentPartitions: { at: number; cause: string }[];
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
  /** The candidate's number on this member (ask `doutcome` for it later). */
  seq: number;
  verdict: 'committed' | 'rejected' | 'pending' | 'unknown';
  /** `rejected`: the reason's name; `pending`: why no outcome yet; else null. */
  reason: string | null;
  /** The log index that decided it, when known. */
  index: number | null;
  /** Rejected: the index in `ops` of the op that failed its check (absent when this member cannot tell: a retry, `doutcome`). */
  failedOp?: number;
}

/** One delta of a `dpropose` candidate. */
export type DomainOp = { register: string } & (
  | ({ op: 'set' } & Bytes<'key'> & Bytes<'value'>)
  | ({ op: 'del' } & Bytes<'key'>)
  | ({ op: 'cas'; expect: number } & Bytes<'key'> & Bytes<'value'>)
  | ({ op: 'append'; offset?: number } & Bytes<'data'>)
);

// ---- wrappers ----

/** What connect() to a TCP-wrapped port does while its peer has no carrier (OPERATIONS "What a client sees when it connects"). */
export type WrapWhenDown = 'hold' | 'direct' | 'refuse';
/** How a wrapper's connections travel: a port may be wrapped once for each. */
export type WrapTransport = 'tcp' | 'udp';

export interface WrapperEntry {
  protocol: string;
  transport: WrapTransport;
  port: number;
  peer: string;
  holdMs: number;
  delta: boolean;
  whenDown: WrapWhenDown;
  /** A connection the far side has not confirmed within this is reset (default: the host's SYN patience). */
  connectTimeoutMs: number;
  active: number;
  connections: number;
}

export interface WrapAddResult {
  protocol: string;
  port: number;
  peer: string;
  holdMs: number;
  delta: boolean;
  whenDown: WrapWhenDown;
  connectTimeoutMs: number;
  interception: string;
  interceptionError: string | null;
}

export interface WrapperStats {
  protocol: string;
  transport: WrapTransport;
  port: number;
  peer: string;
  holdMs: number;
  delta?: boolean;
  whenDown?: WrapWhenDown;
  connectTimeoutMs?: number;
  connections: number;
  active: number;
  bytesUp: number;
  bytesDown: number;
  outages: number;
  closes: Record<string, number>;
}

/** A peer's carrier and its WRAP session counters. */
/** The carrier's record AEAD: AES-256-GCM when both hosts have AES instructions. */
export type WrapCarrierCipher = 'aes-256-gcm' | 'chacha20-poly1305';

export interface WrapPeerStats {
  peer: string;
  carrier: 'up' | 'dialing' | 'down';
  carrierBytesOut: number;
  carrierBytesIn: number;
  /** The AEAD the carrier negotiated (PROTOCOL §16.2), null without a carrier. */
  carrierCipher: WrapCarrierCipher | null;
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
  /** Descriptors held by wrapped connections, their process-wide cap (null: none known yet) and the new connections refused for it, both sides. */
  descriptors?: { limit: number | null; cap: number | null; held: number; refused: Record<string, number> };
  /** Honest connects: ports whose peer counts as down (direct/refuse), connect timeouts, refusals repeated by the hook. */
  connects: { downPorts: number[]; timedOut: number; refusalsRemembered: number; refusalsNow: number; hookErrors: number };
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

// ---- reload ----

/**
 * What a reload (SIGHUP, `spook reload`) did, as `wg syncconf`: what changed in the configuration
 * file and was applied to the running daemon, what needs a restart (by field path), and what it
 * refused to change (the rest was applied).
 */
export interface ReloadReport {
  /** The configuration file read. */
  config: string;
  /** Peers added: authorised, their pair and store created (a peer removed earlier resumes from its state on disk). */
  added: string[];
  /** Peers removed: told we are going away, their key refused; their undecided writes end `peer-removed`. */
  removed: string[];
  /** Peers whose key changed: removed, then added under the new key. */
  rekeyed: string[];
  /** Peers whose endpoint changed: the next handshake goes there. */
  moved: string[];
  /**
   * Wrappers by `transport/port`: added, removed, reset (removed and added again: protocol or peer
   * changed, or their peer was rekeyed; their connections were reset), and updated in place (hold,
   * delta, whenDown, connectTimeout: for connections opened from now on; none reset).
   */
  wrappers: { added: string[]; removed: string[]; reset: string[]; updated: string[] };
  /** Whether wrap.allow changed and was applied (the next dial a peer asks for is checked against it). */
  allowChanged: boolean;
  /**
   * Pair registers whose quota changed (`maxKeys`, `maxBytes`, `maxValueBytes`), applied to every pair.
   * The limits are in the register manifest (§6.3): a pair whose peer still has the old ones is
   * decoherent (`register-mismatch`) until that peer is reloaded too. `over`: pairs whose register
   * already holds more than the new limits: nothing is dropped, growth is refused.
   */
  limits: { register: string; changed: string[]; over: { peer: string; keys: number; bytes: number }[] }[];
  /** Field paths that differ and apply only at a restart (`listen`, `registers[config].kind`, `wrap.intercept`, `domains[d].members`). */
  needRestart: string[];
  /** What a reload could not change, with why; left as it was. */
  refused: ReloadRefusal[];
}

/**
 * A change a reload refused: a peer (a member of a domain, its store failed, ...), a wrapper
 * (`transport/port`), a register's limits, or a field (`wrap.allow[i]`: a rule naming a peer not configured).
 */
export type ReloadRefusal = ({ peer: string } | { wrapper: string } | { register: string } | { field: string }) & { reason: string };

/** What a refusal is about, for people: `peer b`, `wrapper tcp/22`, `register config`, or the field path. */
export const refusalSubject = (x: ReloadRefusal): string =>
  'peer' in x ? `peer ${x.peer}` : 'wrapper' in x ? `wrapper ${x.wrapper}` : 'register' in x ? `register ${x.register}` : x.field;

/** Every request/response command: its arguments and its result. */
export interface AdminCommands {
  // ---- pairs ----
  /** The daemon: its key, listen address, uptime, pairs and drop counters. */
  status: { args: Record<string, never>; result: StatusResult };
  /** Every pair in detail. */
  pairs: { args: Record<string, never>; result: PairSummary[] };
  /** One pair in detail: lifecycle state, role, link figures, timers, registers. */
  pair: { args: PairArgs; result: PairSummary };
  /** The registers of every pair. */
  registers: { args: Record<string, never>; result: ({ peer: string } & RegisterSummary)[] };
  /** The XDP fast path: attachment and counters. */
  xdp: { args: Record<string, never>; result: XdpStatusResult };
  /**
   * Read a pair register at its committed version: a map key (`key` as UTF-8 text, or `keyBase64`), or stream bytes
   * (`offset`, `length`).
   */
  get: {
    args: PairArgs & {
      /** The register to read. */
      register: string;
      /** Stream: the first byte to read; default 0. */
      offset?: number;
      /** Stream: how many bytes to read; default 65536, in [0, 1048576]. */
      length?: number;
    } & Bytes<'key'>;
    result: MapGetResult | StreamGetResult;
  };
  /** Propose setting a map key, and wait for its outcome. */
  set: { args: WriteArgs & Bytes<'key'> & Bytes<'value'>; result: Outcome };
  /** Propose deleting a map key, and wait for its outcome. */
  del: { args: WriteArgs & Bytes<'key'>; result: Outcome };
  /** Compare-and-set: set the key only if its version is `expect` when the pair collapses the candidate. */
  cas: {
    args: WriteArgs & {
      /** The key's version to compare with (0: absent); default 0. */
      expect?: number;
    } & Bytes<'key'> &
      Bytes<'value'>;
    result: Outcome;
  };
  /**
   * What became of an own write of a pair register (after `pending`, even across restarts): still
   * `pending`, or its verdict and version. Known for the last 4,096 own writes of the register
   * decided while this host ran or still in its log at the start; else `unknown-candidate`.
   */
  outcome: {
    args: PairArgs & {
      /** The register written. */
      register: string;
      /** The write's `seq`, from its Outcome (at least 1). */
      seq: number;
      /**
       * The write's `pair`, from its Outcome: when it is not the peer's pair now (a reload rekeyed the peer, whose
       * writes undecided then were abandoned `peer-removed`), `unknown-candidate`. Without it a seq of a pair
       * replaced since is taken as the current pair's, which numbers its writes from 1 again.
       */
      pair?: string;
    };
    result: Outcome;
  };
  /** Append to a stream register, and wait for the outcome. */
  append: {
    args: WriteArgs & {
      /** Where the append must land (it is rejected elsewhere); default: the current end. */
      offset?: number;
    } & Bytes<'data'>;
    result: Outcome;
  };
  // ---- domains ----
  /** Every QN domain: state, role, leader, term, commit index. */
  domains: { args: Record<string, never>; result: DomainListEntry[] };
  /** One domain in detail: members, lag, partitions, registers, groups. */
  domain: {
    args: {
      /** The domain; may be omitted when only one is configured. */
      domain?: string;
    };
    result: DomainSummary;
  };
  /** Every QSCS group of every domain. */
  groups: { args: Record<string, never>; result: GroupListEntry[] };
  /** One QSCS group: its registers with version, size and hash. */
  group: {
    args: {
      /** The group. */
      group: string;
      /** Its domain; may be omitted when only one is configured. */
      domain?: string;
    };
    result: GroupResult;
  };
  /**
   * Read a domain register as of this member's applied index: a map key (`key` or `keyBase64`, required for a map
   * register), or stream bytes (`offset`, `length`).
   */
  dget: {
    args: {
      /** The domain; may be omitted when only one is configured. */
      domain?: string;
      /** The register to read. */
      register: string;
      /** Stream: the first byte to read; default 0. */
      offset?: number;
      /** Stream: how many bytes to read; default 65536, in [0, 1048576]. */
      length?: number;
    } & Bytes<'key'>;
    result: DomainMapGetResult | DomainStreamGetResult;
  };
  /** Propose one candidate of 1-256 deltas on the domain's registers, and wait for its outcome: all commit together or none. */
  dpropose: {
    args: {
      /** The domain; may be omitted when only one is configured. */
      domain?: string;
      /** The deltas, 1 to 256. */
      ops: DomainOp[];
      /** How long to wait for the outcome before answering `pending` (ms); default 10000, in [0, 600000]. */
      timeoutMs?: number;
    };
    result: DomainOutcome;
  };
  /** What became of a candidate proposed on this member (after `pending`, even across restarts). */
  doutcome: {
    args: {
      /** The domain; may be omitted when only one is configured. */
      domain?: string;
      /** The candidate's number, from its DomainOutcome (at least 1). */
      seq: number;
    };
    result: DomainOutcome;
  };
  /** Add or remove one voting member, on the leader: exactly one of `add` and `remove`. */
  member: {
    args: {
      /** The domain; may be omitted when only one is configured. */
      domain?: string;
      /** A configured peer to add, or `self`. */
      add?: string;
      /** A member to remove, or `self`. */
      remove?: string;
    };
    result: { domain: string; index: number; note: string };
  };
  // ---- wrappers ----
  /** The configured wrappers. */
  wraps: { args: Record<string, never>; result: WrapperEntry[] };
  /** Wrap a local TCP or UDP port, carried to a peer. */
  'wrap-add': {
    args: {
      /** The protocol profile (the message lists them when it is wrong). */
      protocol: string;
      /** The port, in [1, 65535]. */
      port: number;
      /** The peer, by name or public key. */
      peer: string;
      /**
       * How long a connection is held across an outage: a duration (`30s`, `500ms`, `2m`) or milliseconds, 100ms to 24h;
       * default the host's TCP patience (925 s with Linux's defaults).
       */
      hold?: string | number;
      /** Delta mode (resend references to bytes the peer holds); default false. */
      delta?: boolean;
      /** What connect() does while the peer has no carrier: `hold` (default), `direct` or `refuse` (TCP wrappers only). */
      whenDown?: WrapWhenDown;
      /** A connection the far side has not confirmed within this is reset: a duration, 100ms to 1h; default the host's SYN patience (127 s). */
      connectTimeout?: string | number;
    };
    result: WrapAddResult;
  };
  /** Stop wrapping a port. */
  'wrap-remove': {
    args: {
      /** The wrapped port. */
      port: number;
      /** `tcp` or `udp`: required when the port is wrapped for both. */
      transport?: WrapTransport;
    };
    result: { port: number; transport: WrapTransport };
  };
  /** Wrapper counters: interception, carriers, per wrapper, per protocol, per peer. */
  'wrap-stats': { args: Record<string, never>; result: WrapStatsResult };
  /** The wrapped connections open now. */
  'wrap-conns': { args: Record<string, never>; result: WrapConnection[] };
  /** Which targets each peer may open through wrappers, and how many it was refused. */
  'wrap-policy': { args: Record<string, never>; result: WrapPolicyEntry[] };
  // ---- read and feed ----
  /** A page of a map register's keys with `prefix`, in byte order, all of one committed version (ScanArgs). */
  scan: { args: PairArgs & ScanArgs; result: ScanResult };
  /** Keys, bytes and version of a register (a stream's length). */
  size: { args: PairArgs & { register: string }; result: SizeResult };
  dscan: { args: { domain?: string } & ScanArgs; result: ScanResult };
  dsize: { args: { domain?: string; register: string }; result: SizeResult };
  // ---- txn ----
  /**
   * One atomic candidate of 1-256 ops on pair registers, all committed or none: on `register` alone
   * (DeltaOp.Txn, one version), or, when ops name other registers, over up to 16 registers of the
   * pair (DeltaOp.Cross: each register's ops at its own next version, visible together at both
   * ends). The outcome is `register`'s, which anchors it.
   */
  txn: { args: WriteArgs & { ops: TxnOp[] }; result: Outcome };
  // ---- reload ----
  /**
   * Read the configuration file again and apply it, as SIGHUP does: peers, wrappers, wrap.allow and
   * pair registers' quotas change without touching what did not change; other fields are named in
   * `needRestart`. A file that does not validate changes nothing (`bad-config`, naming the field).
   */
  reload: { args: Record<string, never>; result: ReloadReport };
}

// ---- txn ----

/**
 * One op of a pair `txn`: a `dpropose` op whose register defaults to the txn's. `append` offset:
 * default where the previous append to that register ends.
 */
export type TxnOp = DomainOp extends infer O ? (O extends unknown ? Omit<O, 'register'> & { register?: string } : never) : never;

export type AdminCommand = keyof AdminCommands;
export type AdminArgs<C extends AdminCommand> = AdminCommands[C]['args'];
export type AdminResult<C extends AdminCommand> = AdminCommands[C]['result'];
/** The arguments of a request as a parameter list: optional when the command needs none. */
export type AdminRequestArgs<C extends AdminCommand> =
  Record<string, never> extends AdminArgs<C> ? [args?: AdminArgs<C>] : [args: AdminArgs<C>];

// ---- streams ----

/**
 * One candidate a collapse decided: `reason` is the rejection's name (`cas-version-mismatch`,
 * `append-offset-mismatch`, `wrong-register-kind`, `quota-exceeded`, ...), null when committed.
 * A register's part of a transaction across registers is listed in its first register's
 * collapse, which decided it, not in the part's (whose collapse then lists no entry).
 */
export interface CollapseEntrySummary {
  origin: number;
  seq: number;
  verdict: 'committed' | 'rejected';
  reason: string | null;
}

export interface CollapseEvent {
  type: 'collapse';
  peer: string;
  /** The pair whose collapse it is (as an Outcome's `pair`): after a rekey of the peer, entries of the same origin and seq are another write's. */
  pair: string;
  /** When this host learned of the collapse (epoch ms). */
  at: number;
  register: string;
  version: number;
  hash: string;
  /** Every candidate this collapse decided, in order: as a write's Outcome says it (a rejection names its reason, `null` when committed). */
  entries: CollapseEntrySummary[];
}

export interface LifecycleEvent {
  type: 'lifecycle';
  peer: string;
  /** When the transition happened (epoch ms). */
  at: number;
  from: PairStateName;
  to: PairStateName;
  cause: string;
}

export interface ReentangledEvent {
  type: 'reentangled';
  peer: string;
  /** When the register got back in step (epoch ms). */
  at: number;
  register: string;
  method: 'log' | 'reconcile' | 'full';
  version: number;
}

/**
 * Streaming commands: the first response is `"streaming"`, then events until the client closes, or until
 * spookd ends the stream with one error response of its id (`peer-removed`: a reload removed the peer it is bound to).
 */
export interface AdminStreams {
  /** Collapses, of one peer and one register when named. */
  watch: {
    args: {
      /** Only this peer's (name); default every peer. */
      peer?: string;
      /** Only this register's; default every register. */
      register?: string;
    };
    event: CollapseEvent;
  };
  /** Lifecycle transitions and re-entanglements, of one peer when named. */
  events: {
    args: {
      /** Only this peer's (name); default every peer. */
      peer?: string;
    };
    event: LifecycleEvent | ReentangledEvent;
  };
  // ---- read and feed ----
  /** A pair register's committed changes after `fromVersion`, in version order (FeedArgs, FeedEvent). */
  feed: { args: PairArgs & FeedArgs; event: FeedEvent };
  /** The same for a domain register; the line's `peer` carries the domain's name. */
  dfeed: { args: { domain?: string } & FeedArgs; event: FeedEvent };
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
  'outcome',
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
  // ---- read and feed ----
  'scan',
  'size',
  'dscan',
  'dsize',
  'feed',
  'dfeed',
  // ---- txn ----
  'txn',
  // ---- reload ----
  'reload',
] as const satisfies readonly (AdminCommand | AdminStream)[];

/** Compiles only when every command of the two maps is listed in ADMIN_COMMANDS. */
export type AllCommandsListed = Listed<Exclude<AdminCommand | AdminStream, (typeof ADMIN_COMMANDS)[number]>>;
type Listed<Missing extends never> = Missing;

// ---- read and feed ----

/**
 * `scan`/`dscan`: one page. The first page (no `cursor`) pins the register's committed state at its
 * current version V in a cursor on the daemon (copies of the entries under the prefix, in key order,
 * gathered a slice per turn of the daemon's event loop, so a large register delays the first page,
 * never the daemon) when more pages follow; later pages name `cursor` (and `version`, checked) with
 * `after` = the last key received. A page that names a version or cursor the daemon no longer holds
 * fails `cursor-expired`, as does a page of a pair's register after a reload removed or rekeyed that
 * peer (a new pair, from an empty store).
 */
export type ScanArgs = { register: string; limit?: number; version?: number; cursor?: string; cursorTtlMs?: number } & Bytes<'prefix'> &
  Bytes<'after'>;

export interface ScanEntry {
  key: ShownBytes;
  value: ShownBytes;
  /** The register version that last wrote this key. */
  keyVersion: number;
}

export interface ScanResult {
  register: string;
  /** Every entry of every page of this scan is as of this committed version. */
  version: number;
  entries: ScanEntry[];
  /** More keys follow: ask the next page with this cursor, `version` and `after` = the last key. */
  cursor?: string;
}

export type SizeResult = { register: string; version: number } & (
  { kind: 'map'; keys: number; bytes: number } | { kind: 'stream'; length: number; bytes: number }
);

/**
 * `feed`/`dfeed`: the committed changes after `fromVersion` (default: the current version, so
 * only what commits from now on). Keys filtered by `prefix` (map registers). The per-subscriber
 * buffer is bounded by `maxBufferBytes`/`maxBufferEvents` (capped by the daemon's limits).
 */
export type FeedArgs = { register: string; fromVersion?: number; maxBufferBytes?: number; maxBufferEvents?: number } & Bytes<'prefix'>;

/** One committed change: a map key set (`cas` included) or deleted, or bytes appended to a stream at `offset`. */
export interface FeedChange {
  op: 'set' | 'del' | 'append';
  key?: ShownBytes;
  /** The new value (set), or the appended bytes (append). */
  value?: ShownBytes;
  offset?: number;
}

/**
 * What a change feed sends. `changes`: every committed change of one version (none is skipped;
 * versions without a matching change are not sent). `progress`: the feed has delivered everything
 * up to `version` (sent when caught up after versions without a matching change). `compacted`
 * (terminal): the changes after `fromVersion` are no longer held: rescan, then feed from the scan's
 * version; `oldest` is the oldest fromVersion servable now. `overflow` (terminal): the subscriber
 * did not read fast enough and its buffer reached `limit`; everything up to `lastVersion` was
 * delivered: feed again from there.
 */
export type FeedEvent = { peer: string; register: string } & (
  | { type: 'changes'; version: number; changes: FeedChange[] }
  | { type: 'progress'; version: number }
  | { type: 'compacted'; fromVersion: number; oldest: number; current: number }
  | { type: 'overflow'; lastVersion: number; limit: 'bytes' | 'events' }
);

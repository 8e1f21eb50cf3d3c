/**
 * Re-entanglement when the delta log cannot cover the gap (docs/PROTOCOL.md §8).
 *
 * The follower (requester) drives; the sequencer (responder) answers from a pin: the
 * state as it was at one version (an index of immutable entries for a map, a length and
 * hash for a stream), so it can keep collapsing while the follower reconciles to the pin
 * and then catches up from the log. Nothing is applied to the follower's StateBlock until
 * the result is known to hash to the pin's hash, so readers never see a half-repaired
 * register.
 *
 *  - map, reconcile: walk the key-space tree (keyspace.ts), descending only into
 *    subtrees whose (count, hash) differ; O(d log n) bytes for d differences.
 *  - map, diff (rev 1.12): when the sequencer's log covers the follower's gap, every key the
 *    gap touched, once, at the pin's version (diff.ts): O(keys touched) bytes, where a replay
 *    resends every overwritten version and the tree walk adds a path per key.
 *  - stream, reconcile: streams are append-only, so the difference is the tail.
 *  - full transfer (last resort, counted): when reconciliation's result does not hash to
 *    the pin (or a stream is not a prefix of the sequencer's): chunked and resumable.
 */
import {
  MsgType,
  RECON_FANOUT,
  RECON_MAX_DEPTH,
  REQ_WANT_META,
  type DiffWant,
  type ReconDiffMsg,
  type Prefix,
  type ReconEntriesMsg,
  type ReconMetaMsg,
  type ReconNodeMsg,
  type ReconChild,
  type ReconReqMsg,
  type SnapChunkMsg,
  type SnapReqMsg,
  type StreamDataMsg,
  type StreamReqMsg,
  type WireEntry,
  type Message,
  encodeMessage,
} from '../../wire/messages.js';
import { Hash64, hashEquals } from '../register/hash.js';
import { BUCKET_DEPTH, childrenOf, countUnder, entriesUnder, forEachUnder, prefixContains, type KeyIndex } from '../register/keyspace.js';
import { MapState, entryWireLen, type MapEntry } from '../register/map.js';
import { STREAM_CHUNK_BYTES, StreamState } from '../register/stream.js';
import type { PayloadBuilder } from '../pair/payload.js';
import type { RequesterHost, ResponderHost, StateChange } from './host.js';
import type { RejectReason } from '../../wire/delta.js';
import { Gcra } from '../util/rate.js';
import { DIFF_WINDOW, DiffPlan, latin1, lookup } from './diff.js';
import { Deque } from '../util/deque.js';

/** A subtree with at most this many entries is answered with its entries, not its children. */
export const RECON_LEAF_MAX = 8;
const ENTRY_BUDGET = 1100;
const SNAP_WINDOW = 16;
const STREAM_CHUNK = 1024;
const STREAM_WINDOW = 16;
/** Staged stream octets are gathered into chunks of this size (a stream's own: STREAM_CHUNK_BYTES), the last grown by doubling from STAGE_FIRST_BYTES. */
const STAGE_CHUNK_BYTES = STREAM_CHUNK_BYTES;
const STAGE_FIRST_BYTES = 1024;
/** Chunks past a missing one that make it lost (§8.3): RFC 9002's packet reordering threshold. */
const STREAM_REASK_AFTER = 3;
const MAX_PREFIXES_PER_REQ = 64;
const STALLS_BEFORE_RESTART = 4;
/** Retransmission timeouts' worth of fragments from the responder that may defer a session's own retransmission. */
const DEFER_RTOS = 16;
/** Room a diff part leaves in a payload beside its entries: its message header (with the name) and an Ack. */
const DIFF_PART_SLACK = 48;

/** What a pin fixes for any register kind: the version, its hash, and the causal marks then. */
interface PinBase {
  version: number;
  hash: { hi: number; lo: number };
  /** What the response bucket counts for the state pinned (its octets, and RESPONSE_ENTRY_BYTES per entry of a map). */
  basis: number;
  origins: Map<number, number>;
  rejections: Map<number, RejectReason>;
}

/** Where a snapshot chunk starts: a bucket of the index and a position in it. */
interface ChunkStart {
  bucket: number;
  pos: number;
}

/** The snapshot chunking of a pin (§8.4), computed a slice at a time (bounded per call). */
interface ChunkPlan {
  starts: ChunkStart[];
  /** Next entry to size. */
  bucket: number;
  pos: number;
  size: number;
  done: boolean;
  /** The latest SnapReq that arrived before the plan was complete (answered when it is). */
  parked?: SnapReqMsg;
}

interface MapPin extends PinBase {
  kind: 'map';
  index: KeyIndex;
  chunks?: ChunkPlan;
  /**
   * Child summaries of the depth-3 nodes (the buckets) asked for so far: the only nodes
   * whose summary scans many entries (a bucket). At most 4,096 per pin, so repeated
   * requests cost a lookup and a pin costs at most one scan of the map in all.
   */
  bucketChildren?: Map<number, ReconChild[]>;
  /** The log diff asked for on this pin (§8.2.1), built a slice at a time; one per pin. */
  diff?: DiffPlan;
  /** Built by the request being answered: its first diff is paid for by the pin (§8.2.1). */
  fresh?: boolean;
}

interface StreamPin extends PinBase {
  kind: 'stream';
  length: number;
}

const prefixKey = (depth: number, prefix: number): string => `${depth}:${prefix}`;
const ROOT: Prefix = { depth: 0, prefix: 0 };

/** Splits entries into groups that each fit one message. */
function partition(entries: MapEntry[]): MapEntry[][] {
  const parts: MapEntry[][] = [[]];
  let size = 0;
  for (const e of entries) {
    const len = entryWireLen(e);
    if (size + len > ENTRY_BUDGET && parts[parts.length - 1].length > 0) {
      parts.push([]);
      size = 0;
    }
    parts[parts.length - 1].push(e);
    size += len;
  }
  return parts;
}

const toWire = (e: MapEntry): WireEntry => ({ key: e.key, version: e.version, value: e.value });

/** Incomplete ReconEntries sets a requester holds at most (octets, as counted below), beside a leaf of largest values. */
const PARTIAL_MAX_BYTES = 1 << 20;
/**
 * What holding an incomplete set costs beside its entries' octets, counted toward the same bound
 * (§8.2, rev 1.29): the set itself, a slot per part it announces, and an entry's objects. Before,
 * only the octets counted: a set of 4,096 parts whose first part is empty held 32 KiB for none.
 */
const PARTIAL_SET_BYTES = 64;
const PARTIAL_SLOT_BYTES = 8;
const PARTIAL_ENTRY_BYTES = 32;

/** An incomplete ReconEntries set: its parts by index, how many are held, and what it counts toward the bound. */
interface PartialSet {
  parts: (WireEntry[] | undefined)[];
  held: number;
  cost: number;
}

function partialEntriesCost(entries: readonly WireEntry[]): number {
  let n = 0;
  for (const e of entries) n += entryWireLen(e) + PARTIAL_ENTRY_BYTES;
  return n;
}

/** Entries sized per call of work() while chunking a pin for a full transfer. */
export const CHUNK_WORK_BUDGET = 8192;
/** New pins per register: a burst of this many, then one per PIN_INTERVAL_MS (§8.2). */
export const PIN_BURST = 2;
export const PIN_INTERVAL_MS = 1000;

/** Why a reconciliation request got no pin. */
export type PinRefusal = 'no-pin' | 'rate-limited';

/**
 * The responder's output per register (§8.2, rev 1.29): a token bucket of response octets
 * (ReconMeta, ReconNode, ReconEntries, ReconDiff, SnapChunk, StreamData, the Status of a request
 * naming no pin). Its size, and what it refills in RESPONSE_INTERVAL_MS, is RESPONSE_BASE_BYTES plus
 * RESPONSE_STATE_FACTOR times the register's state (its octets, and RESPONSE_ENTRY_BYTES per entry
 * for the tree's nodes), at most RESPONSE_MAX_BYTES. An honest re-entanglement sends about the
 * state once (range reconciliation with its nodes at most about twice; a session starts at most
 * once a second, §8.2), so it never waits for the bucket; a request met with an empty bucket is
 * dropped and counted (`recon-rate-limited`), one that empties it is cut short there (the
 * requester asks again on its timer). Before rev 1.29 a 29-octet SnapReq drew 16 chunks (x600),
 * a ReconReq of 256 prefixes 29 datagrams (x31), repeatable at will.
 */
export const RESPONSE_BASE_BYTES = 1 << 20;
export const RESPONSE_STATE_FACTOR = 8;
export const RESPONSE_ENTRY_BYTES = 32;
export const RESPONSE_MAX_BYTES = 64 << 20;
export const RESPONSE_INTERVAL_MS = 1000;
/** Octets of a response's encoding beside its entries or data (type, length, name, version, positions; an upper bound). */
const RESPONSE_HEADER_BYTES = 40;
/** A ReconNode's 16 child summaries (count varint and 8-octet hash each, at most). */
const NODE_BODY_BYTES = RECON_FANOUT * 13;

/** The encoded size of a list of entries (§3.4), an upper bound for a diff part's. */
function entriesBytes(entries: readonly { key: Uint8Array; value?: Uint8Array; version: number }[]): number {
  let n = 0;
  for (const e of entries) n += e.key.length + (e.value?.length ?? 0) + 12;
  return n;
}

// ------------------------------------------------------------------ responder (sequencer)

export class ReconResponder {
  private pin: MapPin | StreamPin | undefined;
  private readonly pinRate = new Gcra(PIN_BURST, PIN_INTERVAL_MS);
  /** Response octets left in the bucket (RESPONSE_BASE_BYTES…), as of `budgetAt`; undefined: full. */
  private budget: number | undefined;
  private budgetAt = 0;
  /** New pins built (metrics, tests); refusals are counted as recon-rate-limited drops. */
  pinsBuilt = 0;
  /** Log diffs built (§8.2.1; tests, bench compare's path column). */
  diffsBuilt = 0;

  constructor(private readonly r: ResponderHost) {}

  /** What the response bucket counts for the register's state now. */
  private basis(): number {
    const st = this.r.state;
    return st.fullTransferBytes() + (st instanceof MapState ? RESPONSE_ENTRY_BYTES * st.size() : 0);
  }

  /** The bucket's size, and what it refills per RESPONSE_INTERVAL_MS: for the larger of the state now and the pin's. */
  private allowance(): number {
    const basis = Math.max(this.basis(), this.pin?.basis ?? 0);
    return Math.min(RESPONSE_MAX_BYTES, RESPONSE_BASE_BYTES + RESPONSE_STATE_FACTOR * basis);
  }

  /** Whether the bucket holds anything at `now` (refilled first). */
  private canSend(now: number): boolean {
    const cap = this.allowance();
    const left =
      this.budget === undefined ? cap : Math.min(cap, this.budget + (Math.max(0, now - this.budgetAt) * cap) / RESPONSE_INTERVAL_MS);
    this.budget = left;
    this.budgetAt = Math.max(this.budgetAt, now);
    return left > 0;
  }

  /** Send a response of about `size` octets, charged to the bucket (which it may take below empty, once). */
  private send(now: number, m: Message, size: number): void {
    this.budget = (this.budget ?? this.allowance()) - size;
    this.r.respond(now, m);
  }

  /** Count a request dropped, or cut short, at an empty bucket. */
  private limited(now: number, what: string): void {
    this.r.refuse(now, 'recon-rate-limited', `${what}: responses past ${this.allowance()} octets per ${RESPONSE_INTERVAL_MS} ms`);
  }

  /** Whether a request may be answered at all: false (dropped and counted) at an empty bucket. */
  private admitRequest(now: number, what: string): boolean {
    if (this.canSend(now)) return true;
    this.limited(now, `${what} dropped`);
    return false;
  }

  /**
   * The follower has moved past `version`: a pin below it is no longer needed. (Strictly
   * below: a follower reconciling to a pin can report the pin's version with its old hash.)
   */
  release(version: number): void {
    if (this.pin && version > this.pin.version) this.pin = undefined;
  }

  /**
   * The pin a request refers to. A request that starts a session (WANT_META) gets the
   * current pin when the log can still bring the follower from it to the present, else a
   * new one, at most PIN_BURST at once and one per PIN_INTERVAL_MS after that.
   */
  private pinFor(now: number, targetVersion: number, start: boolean): MapPin | StreamPin | PinRefusal {
    if (this.pin && this.pin.version === targetVersion && (targetVersion !== 0 || !start)) return this.pin;
    if (!start) return 'no-pin';
    const r = this.r;
    if (this.pin && r.canServeFrom(this.pin.version)) return this.pin;
    if (this.pinRate.next(now) > now) return 'rate-limited';
    this.pinRate.take(now);
    const common: PinBase = {
      version: r.version,
      hash: { hi: r.state.hash.hi, lo: r.state.hash.lo },
      basis: this.basis(),
      origins: new Map(r.origins),
      rejections: new Map(r.peerRejections),
    };
    this.pin =
      r.state instanceof MapState
        ? { kind: 'map', ...common, index: r.state.snapshot(r.version), fresh: true }
        : { kind: 'stream', ...common, length: r.state.size() };
    this.pinsBuilt++;
    return this.pin;
  }

  private meta(pin: MapPin | StreamPin): ReconMetaMsg {
    return {
      type: MsgType.ReconMeta,
      register: this.r.name,
      targetVersion: pin.version,
      hash: pin.hash,
      size: pin.kind === 'map' ? pin.index.size : pin.length,
      origins: [...pin.origins].map(([origin, seq]) => ({ origin, seq })),
      // The rejections kept are those of the peer's candidates.
      rejections: [...pin.rejections].map(([seq, reason]) => ({ origin: this.r.peerId, seq, reason })),
    };
  }

  /** Answer (or refuse with our status) a request; undefined if it names no pin we hold. */
  private begin(now: number, targetVersion: number, flags: number, kind: 'map' | 'stream'): MapPin | StreamPin | undefined {
    const pin = this.pinFor(now, targetVersion, (flags & REQ_WANT_META) !== 0);
    if (pin === 'rate-limited') {
      this.r.refuse(now, 'recon-rate-limited', `new pin refused: more than ${PIN_BURST} at once or one per ${PIN_INTERVAL_MS} ms`);
      return undefined;
    }
    if (pin === 'no-pin' || pin.kind !== kind) {
      this.send(now, this.r.status(), RESPONSE_HEADER_BYTES);
      return undefined;
    }
    if (flags & REQ_WANT_META) {
      const meta = this.meta(pin);
      this.send(now, meta, RESPONSE_HEADER_BYTES + 8 * (meta.origins.length + meta.rejections.length));
    }
    return pin;
  }

  onReconReq(now: number, m: ReconReqMsg): void {
    if (!this.admitRequest(now, 'ReconReq')) return;
    const pin = this.begin(now, m.targetVersion, m.flags, 'map') as MapPin | undefined;
    if (!pin) return;
    const fresh = pin.fresh === true;
    pin.fresh = false;
    if (m.diff) this.onDiffReq(now, pin, m, m.diff, fresh);
    else this.answer(now, pin, m.prefixes);
  }

  /**
   * A diff request (§8.2.1): the keys the log gap (since, pin] touched, at the pin. Served only
   * for the gap the sequencer's costing chose the diff for (§8.1); otherwise, or when the log
   * no longer holds the gap, answered as a request for the root, so range reconciliation follows
   * without a round trip. Building a diff decodes the gap's records (bounded by the log, a slice
   * per work() call); a diff not paid for by the pin this request built costs a new pin's token.
   */
  private onDiffReq(now: number, pin: MapPin, m: ReconReqMsg, want: DiffWant, fresh: boolean): void {
    let plan = pin.diff;
    if (plan?.since !== want.since) {
      if (want.since > pin.version || !this.r.diffFrom(want.since)) return this.answer(now, pin, [ROOT]);
      if (!fresh) {
        if (this.pinRate.next(now) > now) {
          this.r.refuse(now, 'recon-rate-limited', `diff refused: more than ${PIN_BURST} at once or one per ${PIN_INTERVAL_MS} ms`);
          return;
        }
        this.pinRate.take(now);
      }
      plan = pin.diff = new DiffPlan(want.since, pin.version, pin.index, this.r.maxPayload - DIFF_PART_SLACK - this.r.name.length);
      this.diffsBuilt++;
    }
    if (plan.failed) return this.answer(now, pin, [ROOT]);
    if (!plan.parts) {
      plan.parked = m;
      this.r.wantWork(now);
      return;
    }
    this.sendDiff(now, pin, plan, want.fromPart);
  }

  private sendDiff(now: number, pin: MapPin, plan: DiffPlan, fromPart: number): void {
    const parts = plan.parts!;
    for (let i = fromPart; i < Math.min(parts.length, fromPart + DIFF_WINDOW); i++) {
      if (!this.canSend(now)) return this.limited(now, `diff parts from ${i} not sent`);
      this.send(
        now,
        {
          type: MsgType.ReconDiff,
          register: this.r.name,
          targetVersion: pin.version,
          since: plan.since,
          part: i,
          parts: parts.length,
          entries: parts[i],
        },
        RESPONSE_HEADER_BYTES + entriesBytes(parts[i]),
      );
    }
  }

  /**
   * Answer prefixes: a node's children, or its entries when it holds few. Each distinct prefix is
   * answered once per request (repeating one buys no extra work), the first MAX_PREFIXES_PER_REQ
   * of them (what a requester sends, §8.2: a longer list, up to the decoder's 256, is cut there and
   * counted), and no further than the response bucket allows.
   */
  private answer(now: number, pin: MapPin, prefixes: readonly Prefix[]): void {
    const seen = new Set<string>();
    for (const p of prefixes) {
      const key = prefixKey(p.depth, p.prefix);
      if (seen.has(key)) continue;
      if (seen.size >= MAX_PREFIXES_PER_REQ)
        return this.limited(now, `a ReconReq of more than ${MAX_PREFIXES_PER_REQ} prefixes answered for the first ${MAX_PREFIXES_PER_REQ}`);
      if (!this.canSend(now)) return this.limited(now, `${prefixes.length - seen.size} prefixes of a ReconReq not answered`);
      seen.add(key);
      if (p.depth >= RECON_MAX_DEPTH || countUnder(pin.index, p.depth, p.prefix) <= RECON_LEAF_MAX) {
        const parts = partition(entriesUnder(pin.index, p.depth, p.prefix));
        parts.forEach((part, i) => {
          const entries = part.map(toWire);
          this.send(
            now,
            {
              type: MsgType.ReconEntries,
              register: this.r.name,
              targetVersion: pin.version,
              depth: p.depth,
              prefix: p.prefix,
              part: i,
              parts: parts.length,
              entries,
            },
            RESPONSE_HEADER_BYTES + entriesBytes(entries),
          );
        });
      } else {
        this.send(
          now,
          {
            type: MsgType.ReconNode,
            register: this.r.name,
            targetVersion: pin.version,
            depth: p.depth,
            prefix: p.prefix,
            children: this.children(pin, p.depth, p.prefix),
          },
          RESPONSE_HEADER_BYTES + NODE_BODY_BYTES,
        );
      }
    }
  }

  private children(pin: MapPin, depth: number, prefix: number): ReconChild[] {
    if (depth !== BUCKET_DEPTH) return childrenOf(pin.index, depth, prefix);
    pin.bucketChildren ??= new Map();
    let c = pin.bucketChildren.get(prefix);
    if (!c) pin.bucketChildren.set(prefix, (c = childrenOf(pin.index, depth, prefix)));
    return c;
  }

  onSnapReq(now: number, m: SnapReqMsg): void {
    if (!this.admitRequest(now, 'SnapReq')) return;
    const pin = this.begin(now, m.targetVersion, m.flags, 'map') as MapPin | undefined;
    if (!pin) return;
    pin.chunks ??= { starts: [{ bucket: 0, pos: 0 }], bucket: 0, pos: 0, size: 0, done: false };
    if (!pin.chunks.done) {
      // Chunking is O(entries): done a slice per work() call; answered when complete.
      pin.chunks.parked = m;
      this.r.wantWork(now);
      return;
    }
    this.sendChunks(now, pin, m.fromChunk);
  }

  /** Advance the pin's diff, then its chunking, by at most `budget` entries; answer a parked request when done. */
  work(now: number, budget = CHUNK_WORK_BUDGET): void {
    const pin = this.pin;
    const diff = pin?.kind === 'map' ? pin.diff : undefined;
    if (pin?.kind === 'map' && diff && !diff.parts && !diff.failed) {
      diff.advance(
        budget,
        (v) => this.r.touchedKeys(v),
        (key) => (this.r.state as MapState).keyHashOf(key),
      );
      if (!diff.parts && !diff.failed) return this.r.wantWork(now);
      const parked = diff.parked;
      diff.parked = undefined;
      if (parked?.diff) {
        if (diff.failed) this.answer(now, pin, [ROOT]);
        else this.sendDiff(now, pin, diff, parked.diff.fromPart);
      }
      if (pin.chunks && !pin.chunks.done) this.r.wantWork(now);
      return;
    }
    if (pin?.kind !== 'map' || !pin.chunks || pin.chunks.done) return;
    const plan = pin.chunks;
    const buckets = pin.index.buckets;
    let left = budget;
    while (left > 0 && plan.bucket < buckets.length) {
      const bucket = buckets[plan.bucket];
      if (!bucket || plan.pos >= bucket.length) {
        plan.bucket++;
        plan.pos = 0;
        continue;
      }
      const len = bucket.wireLen(plan.pos);
      const last = plan.starts[plan.starts.length - 1];
      if (plan.size + len > ENTRY_BUDGET && (last.bucket !== plan.bucket || last.pos !== plan.pos)) {
        plan.starts.push({ bucket: plan.bucket, pos: plan.pos });
        plan.size = 0;
      }
      plan.size += len;
      plan.pos++;
      left--;
    }
    if (plan.bucket < buckets.length) {
      this.r.wantWork(now);
      return;
    }
    plan.done = true;
    const parked = plan.parked;
    plan.parked = undefined;
    if (parked) this.sendChunks(now, pin, parked.fromChunk);
  }

  private sendChunks(now: number, pin: MapPin, fromChunk: number): void {
    const starts = pin.chunks!.starts;
    const buckets = pin.index.buckets;
    for (let c = fromChunk; c < Math.min(starts.length, fromChunk + SNAP_WINDOW); c++) {
      if (!this.canSend(now)) return this.limited(now, `snapshot chunks from ${c} not sent`);
      const end = c + 1 < starts.length ? starts[c + 1] : { bucket: buckets.length, pos: 0 };
      const entries: WireEntry[] = [];
      for (let b = starts[c].bucket, i = starts[c].pos; b < end.bucket || (b === end.bucket && i < end.pos);) {
        const list = buckets[b];
        if (!list || i >= list.length) {
          b++;
          i = 0;
          continue;
        }
        entries.push(toWire(list.entry(i++)));
      }
      this.send(
        now,
        {
          type: MsgType.SnapChunk,
          register: this.r.name,
          targetVersion: pin.version,
          chunk: c,
          chunks: starts.length,
          entries,
        },
        RESPONSE_HEADER_BYTES + entriesBytes(entries),
      );
    }
  }

  onStreamReq(now: number, m: StreamReqMsg): void {
    if (!this.admitRequest(now, 'StreamReq')) return;
    const pin = this.begin(now, m.targetVersion, m.flags, 'stream') as StreamPin | undefined;
    if (!pin || !(this.r.state instanceof StreamState)) return;
    const end = Math.min(pin.length, m.offset + STREAM_CHUNK * STREAM_WINDOW);
    for (let off = m.offset; off < end; off += STREAM_CHUNK) {
      if (!this.canSend(now)) return this.limited(now, `stream data from ${off} not sent`);
      const data = this.r.state.read(off, Math.min(STREAM_CHUNK, end - off));
      this.send(
        now,
        { type: MsgType.StreamData, register: this.r.name, targetVersion: pin.version, offset: off, data },
        RESPONSE_HEADER_BYTES + data.length,
      );
    }
  }
}

// ------------------------------------------------------------------ requester (follower)

type Mode = 'diff' | 'reconcile' | 'full';

export class ReconRequester {
  mode: Mode;
  retransmitAt: number | undefined;
  private target: number | undefined;
  private meta: ReconMetaMsg | undefined;
  private wantRequest = true;
  /** Retransmission timeouts in a row without a useful response. */
  private stalls = 0;
  /** When the session last started asking or had a response of its own (accept): how long a deferral may go on. */
  private heardAt = 0;

  // Map reconciliation.
  private myIndex: KeyIndex | undefined;
  /**
   * Prefixes to ask for, in order. A deque: each request takes its 64 from the front, where an
   * array's slice copied the rest of the queue per request (quadratic: a sequencer that answered
   * with 16 differing children per node had 262,144 queued prefixes cost the follower 3.1 s to ask).
   */
  private queue = new Deque<Prefix>();
  private readonly outstanding = new Map<string, Prefix>();
  private readonly parts = new Map<string, PartialSet>();
  /** What the sets in `parts` (not yet complete) count, as PARTIAL_SET_BYTES etc. say. */
  private partialBytes = 0;
  private deletes: MapEntry[] = [];
  private puts: WireEntry[] = [];

  // Map full transfer.
  private chunks: (WireEntry[] | undefined)[] = [];
  /** The pin's chunk count, fixed by the first chunk of the transfer (§8.4): a chunk that names another is a lie. */
  private chunkCount: number | undefined;
  /**
   * The first chunk not yet held, advanced as chunks arrive: the next window starts there, and the
   * transfer is complete when it reaches `chunkCount`. Kept rather than found by a scan from 0 on
   * every chunk, which made a transfer of n chunks cost n² (40,000 chunks took 6 s).
   */
  private chunksFrom = 0;
  /** End of the window last requested (chunks for a map snapshot, bytes for a stream). */
  private windowEnd = 0;

  // Stream: bytes after `streamBase`, staged until verified.
  private streamBase = 0;
  /**
   * The staged octets: full chunks of STAGE_CHUNK_BYTES, then `stagedTail`, filled to
   * `stagedTailFill`, which grows by doubling. StreamData may carry as little as one octet: each
   * kept as its own array held ~220 bytes of heap per octet staged, up to the stream quota.
   */
  private staged: Uint8Array[] = [];
  private stagedTail: Uint8Array | undefined;
  private stagedTailFill = 0;
  private stagedLen = 0;
  /**
   * Stream chunks of the requested window that arrived ahead of the next expected offset,
   * by offset: at most STREAM_WINDOW of them, within the window. Without them, a path that
   * reorders (every chunk is its own datagram) would let through about one chunk per round
   * trip, and a stream of large appends would never finish.
   */
  private readonly ahead = new Map<number, Uint8Array>();
  /** The next offset last asked for again because chunks past it arrived (once per gap, rev 1.28). */
  private askedAgainAt = -1;
  /** Entries and octets received so far in this session, held against the register's quota (§7.8). */
  private receivedEntries = 0;
  private receivedBytes = 0;

  // Map diff (§8.2.1): staged into `deletes` and `puts` part by part.
  private since = 0;
  private diffParts: number | undefined;
  private readonly diffGot = new Set<number>();
  /** The first part not yet staged. */
  private diffNext = 0;
  /**
   * Keys staged for insertion so far (diff and range reconciliation): a key named twice is a lie.
   * The check before install is arithmetic over what is staged, so a key staged twice would be
   * counted twice there and installed once (rev 1.34 for ranges).
   */
  private readonly stagedKeys = new Set<string>();

  constructor(
    private readonly r: RequesterHost,
    /** Rate-limited start (§8.2): no request before this time. */
    public notBefore?: number,
    /** Ask for a log diff first (a map behind the sequencer's advertised log base, §8.1). */
    diff = false,
  ) {
    this.mode = diff && r.state instanceof MapState ? 'diff' : 'reconcile';
    this.restart();
  }

  /**
   * Start (or start over) against a fresh pin, keeping the mode. `keepStream`: a stream keeps what
   * it staged. A stream is append-only, so the bytes of an earlier pin are a prefix of any later
   * one's: a session that starts over after silence (lost requests) resumes where it was instead
   * of fetching it all again (under heavy loss a large stream otherwise never finished: each
   * start-over threw away more than came between two). A result that does not verify still
   * starts from nothing (startFull, or restart without it).
   */
  private restart(keepStream = false): void {
    const r = this.r;
    keepStream &&= r.state instanceof StreamState;
    this.target = undefined;
    this.meta = undefined;
    this.wantRequest = true;
    this.retransmitAt = undefined;
    this.stalls = 0;
    this.queue.clear();
    this.queue.push(ROOT);
    this.outstanding.clear();
    this.parts.clear();
    this.partialBytes = 0;
    this.deletes = [];
    this.puts = [];
    this.chunks = [];
    this.chunkCount = undefined;
    this.chunksFrom = 0;
    if (!keepStream) {
      this.staged = [];
      this.stagedTail = undefined;
      this.stagedTailFill = 0;
      this.stagedLen = 0;
    }
    this.ahead.clear();
    this.askedAgainAt = -1;
    this.receivedEntries = 0;
    this.receivedBytes = 0;
    this.since = r.version;
    this.diffParts = undefined;
    this.diffGot.clear();
    this.diffNext = 0;
    this.stagedKeys.clear();
    if (this.mode === 'diff') this.queue.clear();
    if (this.mode === 'full') {
      this.myIndex = undefined;
      if (!keepStream) this.streamBase = 0;
    } else if (r.state instanceof MapState) this.myIndex = r.state.snapshot(r.version);
    else if (!keepStream) this.streamBase = r.state.size();
  }

  /** Whether a response belongs to this session (the first one fixes the pinned version). */
  private accept(now: number, targetVersion: number): boolean {
    if (this.target === undefined) this.target = targetVersion;
    if (this.target !== targetVersion) return false;
    this.stalls = 0;
    this.heardAt = now;
    return true;
  }

  private startFull(): void {
    this.r.countFullTransfer();
    this.mode = 'full';
    this.restart();
  }

  /**
   * The responder is delivering a fragmented answer (§3.4): its pieces keep arriving, so the
   * request was heard; asking again now would only send it twice. Push the timer back.
   */
  deferRetransmit(now: number, until: number): void {
    // Not past DEFER_RTOS timeouts without a response of this session: pieces of other registers'
    // answers (or records) deferred it forever, and a session whose pin the responder no longer
    // holds (it answers with its status) never timed out to start over (STALLS_BEFORE_RESTART).
    if (now - this.heardAt > DEFER_RTOS * this.r.rto()) return;
    if (this.retransmitAt !== undefined && this.retransmitAt < until) this.retransmitAt = until;
  }

  onTimeout(now: number): boolean {
    if (this.retransmitAt === undefined || now < this.retransmitAt) return false;
    // Several silent timeouts: the responder no longer holds our pin (it answers with its status); start over.
    if (++this.stalls > STALLS_BEFORE_RESTART) {
      // A diff request never answered at all (a rev 1.11 sequencer drops WANT_DIFF as malformed, §8.2.1): ranges
      // from now on. Not once the pin is known: a large diff may still be building (the responder parks the request).
      if (this.mode === 'diff' && this.target === undefined) this.mode = 'reconcile';
      this.restart(true);
      return true;
    }
    for (const p of this.outstanding.values()) this.queue.push(p);
    this.outstanding.clear();
    this.parts.clear();
    this.partialBytes = 0;
    this.wantRequest = true;
    this.retransmitAt = undefined;
    return true;
  }

  /** Whether `fill` now sends a request that asks for the pin (WANT_META). */
  startsNow(now: number): boolean {
    return this.wantRequest && this.meta === undefined && (this.notBefore === undefined || now >= this.notBefore);
  }

  fill(now: number, b: PayloadBuilder): void {
    if (!this.wantRequest) return;
    if (this.notBefore !== undefined) {
      if (now < this.notBefore) return;
      this.notBefore = undefined;
    }
    const flags = this.meta ? 0 : REQ_WANT_META;
    // Version 0 when the pin is not known yet: the responder pins its current state afresh.
    const targetVersion = this.target ?? 0;
    const register = this.r.name;
    let raw: Uint8Array;
    if (this.r.state instanceof StreamState) {
      const offset = this.streamBase + this.stagedLen;
      raw = encodeMessage({ type: MsgType.StreamReq, register, targetVersion, flags, offset });
      this.windowEnd = offset + STREAM_CHUNK * STREAM_WINDOW;
    } else if (this.mode === 'diff') {
      const from = this.diffNext;
      raw = encodeMessage({
        type: MsgType.ReconReq,
        register,
        targetVersion,
        flags,
        prefixes: [],
        diff: { since: this.since, fromPart: from },
      });
      this.windowEnd = from + DIFF_WINDOW;
    } else if (this.mode === 'full') {
      const from = this.chunksFrom;
      raw = encodeMessage({ type: MsgType.SnapReq, register, targetVersion, flags, fromChunk: from });
      this.windowEnd = from + SNAP_WINDOW;
    } else {
      const prefixes: Prefix[] = [];
      for (let i = 0; i < Math.min(this.queue.length, MAX_PREFIXES_PER_REQ); i++) prefixes.push(this.queue.at(i));
      if (prefixes.length === 0 && this.meta) {
        this.wantRequest = false;
        return;
      }
      raw = encodeMessage({ type: MsgType.ReconReq, register, targetVersion, flags, prefixes });
      if (raw.length > b.room) return;
      for (let i = 0; i < prefixes.length; i++) this.queue.shift();
      for (const p of prefixes) this.outstanding.set(prefixKey(p.depth, p.prefix), p);
    }
    if (!b.add(raw)) return;
    this.wantRequest = this.r.state instanceof MapState && this.mode === 'reconcile' && this.queue.length > 0;
    if (this.target === undefined) this.heardAt = now; // a (re)start: the deferral counts from its first request
    this.retransmitAt = now + this.r.rto();
  }

  /**
   * Count received entries against the quota: false (and the session starts over, counted)
   * when the sequencer sends more than this host may keep.
   */
  private admit(now: number, entries: readonly WireEntry[]): boolean {
    const q = this.limits();
    this.receivedEntries += entries.length;
    for (const e of entries) this.receivedBytes += entryWireLen(e);
    // (No per-value check: a value held from before a lowered maxValueBytes is still the register's,
    // and what it costs is within the octets counted here and in fits().)
    if (this.receivedEntries <= q.maxKeys && this.receivedBytes <= q.maxBytes) return true;
    this.r.refuse(now, 'quota-violation', `reconciliation sent more than ${q.maxKeys} keys / ${q.maxBytes} octets`);
    if (this.mode === 'diff') this.mode = 'reconcile';
    this.restart();
    return false;
  }

  /**
   * Whether the state an install would leave, `keys` entries (a map) of `bytes` octets as the quota
   * counts them (§7.8), is within the quota; if not, refused and counted (`quota-violation`), and
   * the caller gives the result up as it does one that does not verify. What each session
   * received is bounded (admit), but a range reconciliation or a diff keeps the entries it does
   * not replace: a sequencer that answers an empty subtree with new entries grew the register
   * past its quota, session after session, before rev 1.29.
   */
  private fits(now: number, keys: number, bytes: number): boolean {
    const map = this.r.state instanceof MapState;
    const { maxKeys, maxBytes } = this.limits();
    if ((!map || keys <= maxKeys) && bytes <= maxBytes) return true;
    this.r.refuse(
      now,
      'quota-violation',
      map
        ? `reconciliation would leave ${keys} keys / ${bytes} octets, more than ${maxKeys} / ${maxBytes}`
        : `reconciliation would leave ${bytes} octets, more than ${maxBytes}`,
    );
    return false;
  }

  /**
   * The most keys and octets a session may bring: the quota, or what the register holds now if that
   * is more. A quota lowered under the register keeps it ("kept, growth refused", §7.8), and a
   * session that does not grow it must go through, or a register left above a quota lowered across
   * a restart could never re-entangle (review, 2026-12-07, for the install check). The pin's size
   * and the data received are held to the same bound: against the quota alone, a stream above it
   * had every pin refused (its size is at least the stream's when the sequencer has it all).
   */
  private limits(): { maxKeys: number; maxBytes: number } {
    const q = this.r.quota;
    const st = this.r.state;
    return { maxKeys: Math.max(q.maxKeys, st.size()), maxBytes: Math.max(q.maxBytes, st.fullTransferBytes()) };
  }

  /** Keys and octets a map edit would leave: the state less `deletes` plus `puts`. */
  private editedSize(deletes: readonly MapEntry[], puts: readonly WireEntry[]): { keys: number; bytes: number } {
    const state = this.r.state;
    let bytes = state.fullTransferBytes();
    for (const e of deletes) bytes -= entryWireLen(e);
    for (const e of puts) bytes += entryWireLen(e);
    return { keys: state.size() - deletes.length + puts.length, bytes };
  }

  /** The diff does not hold (or lies): drop what was staged and reconcile by ranges instead (§8.2.1). */
  private leaveDiff(now: number, detail: string): void {
    this.r.refuse(now, 'diff-mismatch', detail);
    this.mode = 'reconcile';
    this.restart();
  }

  /**
   * A part of the diff: staged at once (own entry of each key out, the pin's in), nothing
   * applied until every part is here and the result hashes to the pin (progress).
   */
  onDiff(now: number, m: ReconDiffMsg): void {
    if (this.mode !== 'diff' || !this.myIndex || m.since !== this.since || !this.accept(now, m.targetVersion)) return;
    const mine = this.myIndex;
    if (this.diffParts === undefined) {
      // Every part holds an entry (or the diff is one empty part), and only puts (quota) and
      // deletions of own keys are kept: more parts than that is a sequencer inventing work.
      const bound = this.r.quota.maxKeys + mine.size + 1;
      if (m.parts > bound) return this.leaveDiff(now, `diff of ${m.parts} parts, more than ${bound}`);
      this.diffParts = m.parts;
    } else if (m.parts !== this.diffParts) return this.leaveDiff(now, `diff part count changed from ${this.diffParts} to ${m.parts}`);
    if (this.diffGot.has(m.part)) return; // a duplicate
    // Only a diff of one part may be empty: empty parts would only make us count them.
    if (m.entries.length === 0 && m.parts > 1) return this.leaveDiff(now, `empty part ${m.part} of ${m.parts}`);
    const state = this.r.state as MapState;
    const puts: WireEntry[] = [];
    for (const e of m.entries) {
      const k = latin1(e.key);
      if (this.stagedKeys.has(k)) return this.leaveDiff(now, `diff names a key twice (part ${m.part})`);
      const own = lookup(mine, state.keyHashOf(e.key) | 0, e.key);
      // A deletion of a key we lack (made and deleted in the gap) changes nothing: not kept.
      if (!e.value && !own) continue;
      this.stagedKeys.add(k);
      if (own) this.deletes.push(own);
      if (e.value) puts.push({ key: e.key.slice(), version: e.version, value: e.value.slice() });
    }
    if (!this.admit(now, puts)) return;
    for (const e of puts) this.puts.push(e);
    this.diffGot.add(m.part);
    while (this.diffGot.has(this.diffNext)) this.diffNext++;
    if (this.diffNext >= this.windowEnd) this.wantRequest = this.diffNext < m.parts;
    this.progress(now);
  }

  onMeta(now: number, m: ReconMetaMsg): void {
    if (this.meta) return;
    const q = this.limits();
    if (m.size > (this.r.state instanceof MapState ? q.maxKeys : q.maxBytes)) {
      this.r.refuse(now, 'quota-violation', `pin of ${m.size} ${this.r.state instanceof MapState ? 'keys' : 'octets'} exceeds the quota`);
      return;
    }
    if (!this.accept(now, m.targetVersion)) return;
    this.meta = m;
    if (this.r.state instanceof StreamState && this.mode === 'reconcile' && m.size < this.streamBase) {
      this.startFull(); // our stream is longer than the sequencer's: not a prefix
      return;
    }
    this.progress(now);
  }

  /** The responder serves no diff: it answered the diff request as one for the root (§8.2.1). */
  private diffDeclined(m: { depth: number; prefix: number; targetVersion: number }): void {
    if (this.mode !== 'diff' || m.depth !== 0 || m.prefix !== 0 || this.diffGot.size > 0) return;
    if (this.target !== undefined && this.target !== m.targetVersion) return;
    this.mode = 'reconcile';
    this.deletes = [];
    this.puts = [];
    this.stagedKeys.clear();
    this.outstanding.set(prefixKey(0, 0), ROOT);
  }

  onNode(now: number, m: ReconNodeMsg): void {
    this.diffDeclined(m);
    if (this.mode !== 'reconcile' || !this.myIndex || !this.accept(now, m.targetVersion)) return;
    const key = prefixKey(m.depth, m.prefix);
    if (!this.outstanding.delete(key)) return;
    this.dropPartial(key);
    const mine = childrenOf(this.myIndex, m.depth, m.prefix);
    for (let i = 0; i < RECON_FANOUT; i++) {
      const theirs = m.children[i];
      if (theirs.count === mine[i].count && hashEquals(theirs.hash, mine[i].hash)) continue;
      const child = { depth: m.depth + 1, prefix: m.prefix * RECON_FANOUT + i };
      if (theirs.count === 0) this.stageDeletes(child.depth, child.prefix);
      else this.queue.push(child);
    }
    // The subtrees queued or outstanding are disjoint (a child is queued only once its parent is
    // answered) and each was queued for a count of at least 1: an honest pin of n entries leaves at
    // most n of them. More means the responder invents subtrees to exhaust memory. (The bound was
    // 16 · max(pin, own) + 256: ~16 million prefixes of ~100 octets at the default 1,000,000 keys.)
    // Before the ReconMeta, the pin may be as large as the quota allows (onMeta refuses more).
    const pinKeys = this.meta?.size ?? Math.max(this.r.quota.maxKeys, this.myIndex.size);
    const bound = pinKeys + 256;
    if (this.queue.length + this.outstanding.size > bound) {
      this.r.refuse(now, 'quota-violation', `reconciliation asked to queue more than ${bound} subtrees`);
      this.restart();
      return;
    }
    if (this.queue.length > 0) this.wantRequest = true;
    this.progress(now);
  }

  /** Forget the incomplete set of a prefix, if any. */
  private dropPartial(key: string): void {
    const set = this.parts.get(key);
    if (!set) return;
    this.parts.delete(key);
    this.partialBytes -= set.cost;
  }

  onEntries(now: number, m: ReconEntriesMsg): void {
    this.diffDeclined(m);
    if (this.mode !== 'reconcile' || !this.myIndex || !this.accept(now, m.targetVersion)) return;
    const key = prefixKey(m.depth, m.prefix);
    // Only a prefix asked for is answered: any other set is dropped, whatever it holds.
    if (!this.outstanding.has(key)) return;
    // Above the leaf depth a set is a subtree of at most RECON_LEAF_MAX entries, each in one part
    // at most (an empty one is one part, §8.2): more parts announce entries the pin cannot hold there.
    if (m.depth < RECON_MAX_DEPTH && m.parts > RECON_LEAF_MAX) {
      this.r.refuse(now, 'quota-violation', `a ReconEntries set of ${m.parts} parts at depth ${m.depth} (at most ${RECON_LEAF_MAX})`);
      return;
    }
    let set = this.parts.get(key);
    if (set && set.parts.length !== m.parts) {
      this.dropPartial(key); // another count: the parts held belong to no set
      set = undefined;
    }
    if (set?.parts[m.part]) return; // a duplicate
    // Parts of unfinished sets are held until the set completes, and counted, with the set and its
    // slots, against one bound: an honest set is a few parts (a leaf holds at most 8 entries, §8.2).
    const cost = partialEntriesCost(m.entries) + (set ? 0 : PARTIAL_SET_BYTES + PARTIAL_SLOT_BYTES * m.parts);
    // A leaf of RECON_LEAF_MAX largest values must fit (§3.4): the bound grows with the register's value limit.
    const maxPartial = PARTIAL_MAX_BYTES + RECON_LEAF_MAX * this.r.quota.maxValueBytes;
    if (m.parts > 1 && this.partialBytes + cost > maxPartial) {
      this.r.refuse(now, 'quota-violation', `more than ${maxPartial} octets of incomplete ReconEntries sets`);
      this.parts.clear();
      this.partialBytes = 0;
      return;
    }
    let got: WireEntry[][];
    if (m.parts === 1)
      got = [m.entries.map(copyEntry)]; // complete as it comes: nothing held
    else {
      if (!set) {
        set = { parts: new Array<WireEntry[] | undefined>(m.parts), held: 0, cost: 0 };
        this.parts.set(key, set);
      }
      set.parts[m.part] = m.entries.map(copyEntry);
      set.held++;
      set.cost += cost;
      this.partialBytes += cost;
      if (set.held < m.parts) return;
      this.dropPartial(key);
      got = set.parts as WireEntry[][];
    }
    this.outstanding.delete(key);
    for (const part of got) if (!this.admit(now, part)) return;
    // Every entry must lie under the prefix answered and be staged once in the session (rev 1.34):
    // only then are the own entries it replaces among those staged for deletion, and the check in
    // progress() the hash and size of what install leaves. Else the pin is not what the set says.
    const state = this.r.state as MapState;
    for (const part of got)
      for (const e of part) {
        const k = latin1(e.key);
        const outside = !prefixContains(m.depth, m.prefix, state.keyHashOf(e.key));
        if (outside || this.stagedKeys.has(k)) {
          this.r.refuse(
            now,
            'quota-violation',
            `ReconEntries for (${m.depth}, ${m.prefix}) ${outside ? 'holds a key outside it' : 'names a key already staged'}`,
          );
          return this.startFull();
        }
        this.stagedKeys.add(k);
      }
    this.stageDeletes(m.depth, m.prefix);
    for (const part of got) for (const e of part) this.puts.push(e);
    this.progress(now);
  }

  /**
   * Stage deletion of every own entry under a prefix. One push per entry: spreading the
   * list into push() puts every element on the stack and overflows it past ~125,000 keys.
   */
  private stageDeletes(depth: number, prefix: number): void {
    forEachUnder(this.myIndex!, depth, prefix, (e) => void this.deletes.push(e));
  }

  onChunk(now: number, m: SnapChunkMsg): void {
    if (this.mode !== 'full') return;
    if (!(this.r.state instanceof MapState)) return this.misfit(now, 'a SnapChunk');
    // Every chunk but an empty map's holds an entry: more chunks than the quota's keys is a lie.
    if (m.chunks > Math.max(1, this.limits().maxKeys)) {
      this.r.refuse(now, 'quota-violation', `snapshot of ${m.chunks} chunks exceeds the quota`);
      return;
    }
    if (!this.accept(now, m.targetVersion)) return;
    if (this.chunkCount === undefined) {
      this.chunkCount = m.chunks;
      this.chunks.length = m.chunks;
    }
    // A pin's chunking is fixed for its life (§8.4): another count, or an index past it (the decoder
    // refuses those), contradicts the chunks held. Start over, as for other lies about the snapshot.
    if (m.chunks !== this.chunkCount || m.chunk >= this.chunkCount) {
      this.r.refuse(now, 'quota-violation', `snapshot chunk ${m.chunk} of ${m.chunks}, the pin has ${this.chunkCount} chunks`);
      this.restart();
      return;
    }
    if (this.chunks[m.chunk]) return; // a duplicate
    if (!this.admit(now, m.entries)) return;
    this.chunks[m.chunk] = m.entries.map(copyEntry);
    // Ask for the next window once this one is complete.
    while (this.chunksFrom < this.chunkCount && this.chunks[this.chunksFrom]) this.chunksFrom++;
    if (this.chunksFrom >= this.windowEnd) this.wantRequest = this.chunksFrom < this.chunkCount;
    this.progress(now);
  }

  /**
   * A response of the other register kind than the session's (a map's SnapChunk for a stream,
   * StreamData for a map): no part of any result, and, kinds being agreed (§6.3),
   * never sent by an honest sequencer. Dropped and counted; nothing is staged (before rev 1.29 a
   * map session staged StreamData up to the octet quota, outside the session's count).
   */
  private misfit(now: number, what: string): void {
    this.r.refuse(now, 'quota-violation', `${what} for a ${this.r.state instanceof MapState ? 'map' : 'stream'} register, dropped`);
  }

  onStreamData(now: number, m: StreamDataMsg): void {
    if (!(this.r.state instanceof StreamState)) return this.misfit(now, 'StreamData');
    if (!this.accept(now, m.targetVersion)) return;
    const q = this.limits();
    if (m.offset + m.data.length > (this.meta ? Math.min(this.meta.size, q.maxBytes) : q.maxBytes)) {
      this.r.refuse(now, 'quota-violation', `stream data past ${this.meta ? "the pin's length" : 'the quota'}`);
      this.restart();
      return;
    }
    const expected = this.streamBase + this.stagedLen;
    if (m.offset !== expected) {
      // Ahead within the window: kept until the gap fills; anything else is re-requested.
      if (m.offset > expected && m.offset < this.windowEnd && this.ahead.size < STREAM_WINDOW && m.data.length > 0) {
        this.ahead.set(m.offset, m.data.slice());
        // Three chunks past the gap arrived: the chunk at the gap is lost (RFC 9002's packet threshold). Ask again
        // from it now, once per gap, rather than after the (backed-off) retransmission timer: under heavy loss
        // nearly every window loses a chunk, and a stream of a few MiB took minutes (rev 1.28).
        if (this.ahead.size >= STREAM_REASK_AFTER && this.meta && this.askedAgainAt !== expected) {
          this.askedAgainAt = expected;
          this.wantRequest = true;
        }
      }
      return;
    }
    this.stage(m.data);
    for (let next = this.ahead.get(this.streamBase + this.stagedLen); next; next = this.ahead.get(this.streamBase + this.stagedLen)) {
      this.ahead.delete(this.streamBase + this.stagedLen);
      this.stage(next);
    }
    for (const off of this.ahead.keys()) if (off < this.streamBase + this.stagedLen) this.ahead.delete(off);
    const at = this.streamBase + this.stagedLen;
    if (this.meta && at < this.meta.size && at >= this.windowEnd) this.wantRequest = true;
    this.progress(now);
  }

  /** Stage octets (copied): gathered into chunks, so what is held is about what is staged, however small the pieces. */
  private stage(data: Uint8Array): void {
    let at = 0;
    while (at < data.length) {
      let tail = this.stagedTail;
      const want = this.stagedTailFill + data.length - at;
      if (tail === undefined || (want > tail.length && tail.length < STAGE_CHUNK_BYTES)) {
        let cap = tail?.length ?? STAGE_FIRST_BYTES;
        while (cap < want && cap < STAGE_CHUNK_BYTES) cap *= 2;
        const grown = new Uint8Array(cap);
        if (tail !== undefined) grown.set(tail.subarray(0, this.stagedTailFill));
        this.stagedTail = tail = grown;
      }
      const take = Math.min(data.length - at, tail.length - this.stagedTailFill);
      tail.set(data.subarray(at, at + take), this.stagedTailFill);
      this.stagedTailFill += take;
      this.stagedLen += take;
      at += take;
      if (this.stagedTailFill === STAGE_CHUNK_BYTES) {
        this.staged.push(tail);
        this.stagedTail = undefined;
        this.stagedTailFill = 0;
      }
    }
  }

  /** The staged octets as chunks, in order (the tail a view of its filled part). */
  private stagedChunks(): Uint8Array[] {
    return this.stagedTail === undefined ? this.staged : [...this.staged, this.stagedTail.subarray(0, this.stagedTailFill)];
  }

  /** Finish when everything has arrived: verify the result against the pin's hash, then apply it at once. */
  private progress(now: number): void {
    const meta = this.meta;
    if (!meta) return;
    const r = this.r;
    if (r.state instanceof StreamState) {
      if (this.streamBase + this.stagedLen < meta.size) return;
      if (this.mode === 'reconcile') {
        // The quota, then the hash; what does not pass either is given up for a full transfer.
        if (!this.fits(now, 0, this.streamBase + this.stagedLen)) return this.startFull();
        const chunks = this.stagedChunks();
        if (!hashEquals(r.state.hashAfter(chunks), meta.hash)) return this.startFull();
        return this.install(now, meta, { kind: 'append-stream', chunks });
      }
      if (!this.fits(now, 0, this.stagedLen)) return this.restart();
      const next = new StreamState(r.state.seed);
      const chunks = this.stagedChunks();
      // A full transfer that does not verify (the responder moved its pin): start it again, uncounted.
      if (!hashEquals(next.hashAfter(chunks), meta.hash)) return this.restart();
      for (const c of chunks) next.appendBytes(c);
      return this.install(now, meta, { kind: 'replace', state: next });
    }
    if (this.mode === 'diff') {
      if (this.diffParts === undefined || this.diffGot.size < this.diffParts) return;
      const state = r.state;
      // Over the quota: counted as such, and range reconciliation follows, as when admit refuses a part.
      const left = this.editedSize(this.deletes, this.puts);
      if (!this.fits(now, left.keys, left.bytes)) {
        this.mode = 'reconcile';
        return this.restart();
      }
      const h = new Hash64(state.hash.hi, state.hash.lo);
      for (const e of this.deletes) h.sub(e.hhi, e.hlo);
      const staged = this.puts.map((e) => state.entryOf(e.key, e.value, e.version));
      for (const e of staged) h.add(e.hhi, e.hlo);
      const size = state.size() - this.deletes.length + staged.length;
      if (!h.equals(meta.hash) || size !== meta.size)
        return this.leaveDiff(now, `diff since v${this.since} does not give the pin's hash at v${meta.targetVersion}`);
      return this.install(now, meta, { kind: 'edit-map', deletes: this.deletes, puts: staged });
    }
    if (this.mode === 'reconcile') {
      if (this.queue.length > 0 || this.outstanding.size > 0) return;
      const state = r.state;
      // The quota, then the pin's size and hash (as a diff is checked, §8.2.1); what does not pass
      // either is given up for a full transfer.
      const left = this.editedSize(this.deletes, this.puts);
      if (!this.fits(now, left.keys, left.bytes)) return this.startFull();
      if (left.keys !== meta.size) return this.startFull();
      const h = new Hash64(state.hash.hi, state.hash.lo);
      for (const e of this.deletes) h.sub(e.hhi, e.hlo);
      const staged = this.puts.map((e) => state.entryOf(e.key, e.value, e.version));
      for (const e of staged) h.add(e.hhi, e.hlo);
      if (!h.equals(meta.hash)) return this.startFull();
      return this.install(now, meta, { kind: 'edit-map', deletes: this.deletes, puts: staged });
    }
    // Every chunk below the count is held (no holes: a chunk past the count is refused in onChunk).
    const count = this.chunkCount;
    if (count === undefined || this.chunksFrom < count) return;
    const chunks = this.chunks as WireEntry[][];
    // At most what the map would hold (a key twice is one entry): checked before anything is built.
    let keys = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      keys += chunks[i].length;
      for (const e of chunks[i]) bytes += entryWireLen(e);
    }
    if (!this.fits(now, keys, bytes)) return this.restart();
    const next = new MapState((r.state as MapState).seed);
    // Sized first: the chunks come in key-hash order (KeyTable.reserveCount).
    next.reserveKeys(keys);
    for (let i = 0; i < count; i++) for (const e of chunks[i]) next.put(e.key, e.value, e.version);
    // A full transfer that does not verify (the responder moved its pin): start it again, uncounted.
    if (!next.hash.equals(meta.hash)) return this.restart();
    this.install(now, meta, { kind: 'replace', state: next });
  }

  private install(now: number, meta: ReconMetaMsg, change: StateChange): void {
    // Backstop (rev 1.34): what the change leaves must be the pin, in hash and size, before anything is applied.
    const left = this.result(change);
    if (left && (!hashEquals(left.hash, meta.hash) || left.size !== meta.size)) {
      const detail = `the result is not the pin's hash and size at v${meta.targetVersion}`;
      if (this.mode === 'diff') return this.leaveDiff(now, detail);
      this.r.refuse(now, 'quota-violation', detail);
      return this.mode === 'full' ? this.restart() : this.startFull();
    }
    this.r.install(now, {
      // A diff is reconciliation by other means (the event's method stays one of log, reconcile, full).
      method: this.mode === 'full' ? 'full' : 'reconcile',
      version: meta.targetVersion,
      change,
      origins: new Map(meta.origins.map((o) => [o.origin, o.seq])),
      rejections: new Map(meta.rejections.map((o) => [o.seq, o.reason])),
    });
  }

  /**
   * The hash and size the state has once the host applies `change` as it does (removals, then puts
   * in order, a put replacing the entry of its key), computed without applying it. A stream's
   * append is left out: its check already hashes the very bytes appended.
   */
  private result(change: StateChange): { hash: { hi: number; lo: number }; size: number } | undefined {
    if (change.kind === 'replace') return { hash: change.state.hash, size: change.state.size() };
    const state = this.r.state;
    if (change.kind !== 'edit-map' || !(state instanceof MapState)) return undefined;
    const h = new Hash64(state.hash.hi, state.hash.lo);
    let size = state.size();
    const removed = new Set<string>();
    for (const e of change.deletes) {
      const k = latin1(e.key);
      if (removed.has(k)) continue;
      removed.add(k);
      const own = state.get(e.key);
      if (!own) continue;
      h.sub(own.hhi, own.hlo);
      size--;
    }
    const put = new Map<string, MapEntry>();
    for (const e of change.puts) {
      const k = latin1(e.key);
      const before = put.get(k) ?? (removed.has(k) ? undefined : state.get(e.key));
      if (before) h.sub(before.hhi, before.hlo);
      else size++;
      h.add(e.hhi, e.hlo);
      put.set(k, e);
    }
    return { hash: h, size };
  }
}

function copyEntry(e: WireEntry): WireEntry {
  return { key: e.key.slice(), version: e.version, value: e.value.slice() };
}

/**
 * The replicated state of a QN domain: its registers and QSCS entanglement groups, and the
 * deterministic collapse of one candidate (docs/PROTOCOL.md §15.2).
 *
 * A candidate is a list of deltas on one or more registers. Collapse checks all of them
 * against the committed state first and applies them only if every check passes, so a
 * multi-register candidate commits atomically or is rejected as a whole, and every member
 * decides the same way because it applies the same log in the same order.
 */
import { Reader, Writer } from '../../wire/buffer.js';
import { DeltaOp, readDelta, writeDelta, validateDelta, type Delta } from '../../wire/delta.js';
import { DropReason, MAX_KEY_LEN, MAX_REGISTER_NAME_LEN, MAX_VALUE_LEN } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { Hash64, Murmur3, murmur3 } from '../register/hash.js';
import { MapState, entryWireLen } from '../register/map.js';
import { QUOTA_DEFAULTS, QuotaCheck, mapMaxBytes, type Quota } from '../register/quota.js';
import { SNAPSHOT_SLICE, bytesSlices, concatSlices, mapSlices, type PinnedSnapshot, type Slices } from '../register/slices.js';
import { StreamState } from '../register/stream.js';
import type { RegisterKind } from '../register/state.js';
import { EntryKind, MAX_INDEX, MAX_NODE_ID, type LogEntry, type StateMachine } from './raft.js';
import { MinHeap } from '../util/min-heap.js';

const UTF8 = new TextDecoder();

export interface DomainRegisterSpec {
  name: string;
  kind: RegisterKind;
  /** Quota (§15.2, as §7.8): entries of a map; every member must declare the same. Default QUOTA_DEFAULTS. */
  maxKeys?: number;
  /** Quota: octets (Σ entry encodings of a map, length of a stream). Default QUOTA_DEFAULTS. */
  maxBytes?: number;
  /** Largest value (map) or append (stream), at most MAX_VALUE_LEN; every member must declare the same. Default DEFAULT_MAX_VALUE_BYTES (1 MiB). */
  maxValueBytes?: number;
}

/** A register's quota, defaults filled in. */
export function quotaOf(s: DomainRegisterSpec): Quota {
  return {
    maxKeys: s.maxKeys ?? QUOTA_DEFAULTS.maxKeys,
    maxBytes: s.maxBytes ?? QUOTA_DEFAULTS.maxBytes,
    maxValueBytes: Math.min(s.maxValueBytes ?? QUOTA_DEFAULTS.maxValueBytes, MAX_VALUE_LEN),
  };
}

export interface GroupSpec {
  name: string;
  registers: string[];
}

export interface CandidateOp {
  register: string;
  delta: Delta;
}

/** A candidate's identity: the member that proposed it and its sequence number there. */
export interface Candidate {
  origin: number;
  seq: number;
  ops: CandidateOp[];
}

/** Why collapse rejects a candidate. 1-3 are the delta reasons (RejectReason). */
export enum CollapseReject {
  CasMismatch = 1,
  AppendOffset = 2,
  WrongKind = 3,
  UnknownRegister = 4,
  /** Two deltas of one candidate on the same key: ambiguous, refused. */
  DuplicateKey = 5,
  /** The candidate would grow a register past its quota (maxKeys / maxBytes). */
  QuotaExceeded = 6,
}

export const COLLAPSE_REJECT_NAMES: Record<CollapseReject, string> = {
  [CollapseReject.CasMismatch]: 'cas-version-mismatch',
  [CollapseReject.AppendOffset]: 'append-offset-mismatch',
  [CollapseReject.WrongKind]: 'wrong-register-kind',
  [CollapseReject.UnknownRegister]: 'unknown-register',
  [CollapseReject.DuplicateKey]: 'duplicate-key-in-candidate',
  [CollapseReject.QuotaExceeded]: 'quota-exceeded',
};

/** Outcomes kept per origin, so a retried candidate gets its first outcome back (dissertation §6.3). */
export const OUTCOME_WINDOW = 4096;
/**
 * Origins the outcome table holds: past this many, the origin that decided a candidate least
 * recently is forgotten (§15.2). Honest origins are members, at most 64 at a time.
 */
export const MAX_ORIGINS = 4096;
/**
 * Outcomes the table holds in all: past this many, least recent origins go too. Room for 128
 * origins with full windows (twice the largest configuration), so honest members keep theirs,
 * while a leader inventing origins makes each member hold about 25 MB, not 16.7 M entries.
 */
export const MAX_OUTCOMES = 128 * OUTCOME_WINDOW;

/** Octets of a varint of at most 2^48 - 1 (an index, a version, a seq, a node id, a count). */
const VARINT48 = 7;

/**
 * The largest snapshot (§15.4) a domain with these registers and groups can take while its
 * registers are within quota: each register's maxBytes (a map's entries are counted in their
 * snapshot encoding, §7.8) plus its framing, the groups, and a full outcome table. A member
 * accepts no larger snapshot from a leader, so what a leader can make it stage follows the
 * quotas rather than a fixed figure. (1 map register at the defaults: 260 MiB.)
 */
export function snapshotBound(specs: readonly DomainRegisterSpec[], groups: readonly GroupSpec[]): number {
  const name = 2 + MAX_REGISTER_NAME_LEN;
  let n = 2 * VARINT48;
  for (const s of specs) n += name + 1 + VARINT48 + VARINT48 + quotaOf(s).maxBytes;
  n += VARINT48 + groups.length * (name + VARINT48);
  n += VARINT48 + MAX_ORIGINS * (VARINT48 + 2) + MAX_OUTCOMES * (VARINT48 + 1);
  return n;
}

export interface Collapsed {
  index: number;
  candidate: Candidate;
  /** The entry's command as appended (the candidate's encoding). */
  cmd: Uint8Array;
  /** 0: committed; else why rejected. */
  outcome: CollapseReject | 0;
  /** A retry of a candidate already decided: nothing applied, `outcome` is the first decision. */
  duplicate: boolean;
  /**
   * Older than every outcome its origin's full window keeps (below windowFloor): nothing applied
   * or recorded, and whether it was ever decided is unknown (`outcome` is 0 and means nothing).
   */
  forgotten?: boolean;
  /** Rejected (not a duplicate): the index of the op that failed its check. */
  failedOp?: number;
}

interface Reg {
  kind: RegisterKind;
  quota: Quota;
  state: MapState | StreamState;
  /** Collapses that changed this register. */
  version: number;
}

/** The most a register may hold after a leader's snapshot or difference (DomainState.limits). */
interface RegisterLimit {
  /** Entries of a map register. */
  keys: number;
  /** Octets: a map's entries in their snapshot encoding (§7.8), a stream's length. */
  bytes: number;
}

/** A register's version and hash as a difference would leave them (the digest's inputs). */
interface PatchedHead {
  version: number;
  hash: { hi: number; lo: number };
}

/** One key of a difference: its version and value at the difference's index, or version 0 and no value (absent). */
interface DiffEntry {
  key: Uint8Array;
  version: number;
  value: Uint8Array | undefined;
}

/** A register of a difference: a map's listed keys, or a stream's whole content. */
interface DiffRegister {
  name: string;
  version: number;
  entries?: DiffEntry[];
  content?: Uint8Array;
}

/** A difference checked against the state it patches (DomainState.readDiff). */
interface ParsedDiff {
  index: number;
  digest: { hi: number; lo: number };
  regs: DiffRegister[];
  /** Its groups' versions and outcome table, read into a state of their own. */
  tail: DomainState;
}

export class DomainState implements StateMachine {
  index = 0;
  readonly registers = new Map<string, Reg>();
  readonly groups = new Map<string, { registers: string[]; version: number }>();
  private outcomes = new Map<number, Map<number, number>>();
  /**
   * Per origin's outcomes, its seqs in a min-heap: the window's eviction takes the least in
   * O(log n), where a scan of OUTCOME_WINDOW seqs per record (or Map.keys().next(), which in V8
   * walks every entry deleted from a Map's front since its last rehash) cost every member
   * microseconds on every commit. Derived state only: the table and its order are unchanged.
   */
  private seqs = new WeakMap<Map<number, number>, MinHeap>();
  /** Σ outcomes over the table's origins (at most MAX_OUTCOMES). */
  private outcomeTotal = 0;
  /** Every applied entry is reported here, in log order. */
  onCollapse: ((c: Collapsed) => void) | undefined;
  /**
   * The candidate the latest apply() committed, or undefined if it committed none: the change
   * feeds read it to visit only the registers that moved (each by exactly one version).
   */
  committed: Candidate | undefined;

  constructor(
    readonly seed: number,
    readonly specs: DomainRegisterSpec[],
    readonly groupSpecs: GroupSpec[],
  ) {
    this.reset();
  }

  private reset(): void {
    this.index = 0;
    this.registers.clear();
    this.groups.clear();
    this.outcomes.clear();
    this.outcomeTotal = 0;
    for (const s of this.specs) {
      const rseed = this.registerSeed(s.name);
      this.registers.set(s.name, {
        kind: s.kind,
        quota: quotaOf(s),
        state: s.kind === 'map' ? new MapState(rseed) : new StreamState(rseed),
        version: 0,
      });
    }
    for (const g of this.groupSpecs) this.groups.set(g.name, { registers: [...g.registers], version: 0 });
  }

  private registerSeed(name: string): number {
    return this.seed ^ murmur3(0x5350_0011, new TextEncoder().encode(name));
  }

  /**
   * The committed (index, hash) every member must agree on; `patched`: the version and hash
   * some registers would have after a difference (readDiff), in place of their own.
   */
  digest(patched?: ReadonlyMap<string, PatchedHead>): { index: number; hi: number; lo: number } {
    const hi = new Murmur3().reset(this.seed);
    const lo = new Murmur3().reset(~this.seed);
    for (const [name, r] of this.registers) {
      const n = new TextEncoder().encode(name);
      const { version, hash } = patched?.get(name) ?? { version: r.version, hash: r.state.hash };
      for (const m of [hi, lo]) m.updateU32(n.length).update(n).updateU32(version).updateU32(hash.hi).updateU32(hash.lo);
    }
    return { index: this.index, hi: hi.digest(), lo: lo.digest() };
  }

  outcomeOf(origin: number, seq: number): number | undefined {
    return this.outcomes.get(origin)?.get(seq);
  }

  /**
   * The least seq of `origin` whose outcome the table keeps once its window is full (0 before):
   * an origin numbers its candidates in order, so one below it is either decided and forgotten
   * or never will be applied (its origin told `unknown`). Applied again, a replay of an old
   * candidate (a relay may replay what it carried, §15.5) undid its origin's later writes.
   */
  windowFloor(origin: number): number {
    const seen = this.outcomes.get(origin);
    return seen && seen.size >= OUTCOME_WINDOW ? (this.seqsOf(seen).peek() ?? 0) : 0;
  }

  /** The largest seq of `origin` in the table (0 if none): its next candidate must be above it. */
  maxSeqOf(origin: number): number {
    let max = 0;
    for (const seq of this.outcomes.get(origin)?.keys() ?? []) if (seq > max) max = seq;
    return max;
  }

  apply(e: LogEntry): void {
    this.index = e.index;
    this.committed = undefined;
    if (e.cmd[0] !== EntryKind.App) return;
    // Entries are checked before they are stored; one that still does not decode changes nothing anywhere.
    const c = parseCandidate(e.cmd);
    if (!c) return;
    const prior = this.outcomeOf(c.origin, c.seq);
    if (prior !== undefined) {
      this.onCollapse?.({ index: e.index, candidate: c, cmd: e.cmd, outcome: prior, duplicate: true });
      return;
    }
    if (c.seq < this.windowFloor(c.origin)) {
      this.onCollapse?.({ index: e.index, candidate: c, cmd: e.cmd, outcome: 0, duplicate: true, forgotten: true });
      return;
    }
    const outcome = this.check(c.ops);
    if (outcome === 0) {
      this.commit(c.ops);
      this.committed = c;
    }
    this.record(c.origin, c.seq, outcome);
    const failedOp = outcome === 0 ? undefined : this.checkedOp;
    this.onCollapse?.({
      index: e.index,
      candidate: c,
      cmd: e.cmd,
      outcome,
      duplicate: false,
      ...(failedOp !== undefined ? { failedOp } : {}),
    });
  }

  /**
   * Record an outcome (§15.2 step 4). The table's iteration order is the order in which the
   * origins last decided a candidate (least recent first), and snapshots keep that order, so
   * every member evicts the same origins: past MAX_ORIGINS origins or MAX_OUTCOMES outcomes,
   * the least recent origins go, with all their outcomes. The table thus never holds what
   * restore() refuses, whatever origins a leader puts in the log.
   */
  private record(origin: number, seq: number, outcome: number): void {
    let seen = this.outcomes.get(origin);
    if (seen) this.outcomes.delete(origin);
    else seen = new Map();
    this.outcomes.set(origin, seen);
    const heap = this.seqsOf(seen); // learnt before this seq joins it
    seen.set(seq, outcome);
    heap.push(seq);
    this.outcomeTotal++;
    if (seen.size > OUTCOME_WINDOW) {
      seen.delete(heap.pop()!);
      this.outcomeTotal--;
    }
    // The origin just recorded is the most recent and holds at most OUTCOME_WINDOW: it stays.
    while (this.outcomes.size > MAX_ORIGINS || this.outcomeTotal > MAX_OUTCOMES) {
      const [least, m] = this.outcomes.entries().next().value!;
      this.outcomes.delete(least);
      this.outcomeTotal -= m.size;
    }
  }

  /** The seqs of an origin's outcomes (learnt once for a new origin or a table restored from a snapshot). */
  private seqsOf(seen: Map<number, number>): MinHeap {
    let h = this.seqs.get(seen);
    if (!h) this.seqs.set(seen, (h = new MinHeap(seen.keys())));
    return h;
  }

  /** Outcomes in the table, all origins together (at most MAX_OUTCOMES). */
  get outcomeCount(): number {
    return this.outcomeTotal;
  }

  /** Origins in the outcome table (at most MAX_ORIGINS). */
  get originCount(): number {
    return this.outcomes.size;
  }

  /** The op the last check() stopped at: when it rejected, the index of the failing op (all members alike). */
  checkedOp = 0;

  /** All checks before any write: the candidate is atomic. */
  check(ops: CandidateOp[]): CollapseReject | 0 {
    const keys = new Map<string, Set<string>>();
    const streamLen = new Map<string, number>();
    // Sizes as the earlier deltas of this candidate leave them, per register (§7.8's check).
    const quotas = new Map<string, QuotaCheck>();
    const quota = (name: string, r: Reg): QuotaCheck => {
      let q = quotas.get(name);
      if (!q) quotas.set(name, (q = new QuotaCheck(r.state, r.quota)));
      return q;
    };
    for (let i = 0; i < ops.length; i++) {
      const { register, delta } = ops[i];
      this.checkedOp = i;
      const r = this.registers.get(register);
      if (!r) return CollapseReject.UnknownRegister;
      // A domain candidate is already a transaction: a pair txn delta never nests in one (the decoder refuses op 5).
      if (delta.op === DeltaOp.Txn) return CollapseReject.WrongKind;
      if (r.state instanceof StreamState) {
        if (delta.op !== DeltaOp.Append) return CollapseReject.WrongKind;
        const len = streamLen.get(register) ?? r.state.size();
        if (delta.offset !== len) return CollapseReject.AppendOffset;
        if (quota(register, r).admit(delta, r.version + 1) !== 0) return CollapseReject.QuotaExceeded;
        streamLen.set(register, len + delta.data.length);
        continue;
      }
      if (delta.op === DeltaOp.Append) return CollapseReject.WrongKind;
      let ks = keys.get(register);
      if (!ks) keys.set(register, (ks = new Set()));
      const k = Buffer.from(delta.key).toString('latin1');
      if (ks.has(k)) return CollapseReject.DuplicateKey;
      ks.add(k);
      const why = r.state.check(delta);
      if (why !== 0) return why as number as CollapseReject;
      // Every entry this candidate writes takes the register's next version.
      if (quota(register, r).admit(delta, r.version + 1) !== 0) return CollapseReject.QuotaExceeded;
    }
    return 0;
  }

  private commit(ops: CandidateOp[]): void {
    const touched = new Set<string>();
    for (const { register } of ops) touched.add(register);
    for (const name of touched) this.registers.get(name)!.version++;
    for (const { register, delta } of ops) {
      const r = this.registers.get(register)!;
      r.state.apply(delta, r.version);
    }
    for (const g of this.groups.values()) if (g.registers.some((n) => touched.has(n))) g.version++;
  }

  snapshot(): Uint8Array {
    const w = new Writer(1024);
    w.varint(this.index);
    w.varint(this.registers.size);
    for (const [name, r] of this.registers) {
      w.lenBytes(new TextEncoder().encode(name))
        .u8(r.kind === 'map' ? 1 : 2)
        .varint(r.version);
      if (r.state instanceof MapState) {
        w.varint(r.state.size());
        for (const e of r.state.values()) w.lenBytes(e.key).varint(e.version).lenBytes(e.value);
      } else {
        w.lenBytes(r.state.read(0, r.state.size()));
      }
    }
    this.writeTail(w);
    return w.finish();
  }

  /**
   * The state at this index pinned for a snapshot written in the background (Raft dissertation
   * §5.1, copy-on-write): the same bytes as snapshot() when nothing is applied meanwhile (a map
   * bucket written meanwhile is encoded before that write, so its entries move ahead within
   * their register; load() takes any order). Taking it costs O(4,096) per map, a stream's length,
   * and the groups and outcome table encoded now (bounded by MAX_OUTCOMES).
   */
  pin(): PinnedSnapshot {
    const parts: Slices[] = [];
    const releases: (() => void)[] = [];
    let head = new Writer(64).varint(this.index).varint(this.registers.size);
    for (const [name, r] of this.registers) {
      head
        .lenBytes(new TextEncoder().encode(name))
        .u8(r.kind === 'map' ? 1 : 2)
        .varint(r.version);
      let body: Slices;
      if (r.state instanceof MapState) {
        const pin = r.state.snapshot(r.version);
        head.varint(pin.size);
        const p = mapSlices(pin);
        releases.push(p.release);
        body = p.slices;
      } else {
        const size = r.state.size();
        head.varint(size);
        body = streamBytes(r.state, size);
      }
      parts.push(bytesSlices(head.finish()), body);
      head = new Writer(64);
    }
    this.writeTail(head);
    parts.push(bytesSlices(head.finish()));
    return { slices: concatSlices(parts), release: () => releases.forEach((f) => f()) };
  }

  /** What snapshots and differences carry whole: every group's version, then the outcome table. */
  private writeTail(w: Writer): void {
    w.varint(this.groups.size);
    for (const [name, g] of this.groups) w.lenBytes(new TextEncoder().encode(name)).varint(g.version);
    w.varint(this.outcomes.size);
    for (const [origin, m] of this.outcomes) {
      w.varint(origin).varint(m.size);
      for (const [seq, o] of m) w.varint(seq).u8(o);
    }
  }

  /**
   * Replace the state with a snapshot's (§15.4), or return false and change nothing: the
   * snapshot is parsed and checked whole into a fresh state first, so garbage from a peer
   * (or a disk) can neither throw nor leave a half-restored state. `fromLeader`: a leader sent
   * it (not this member's own, read back from its disk): no register may hold more than
   * limits() allows.
   */
  restore(data: Uint8Array, index: number, fromLeader = false): boolean {
    const fresh = new DomainState(this.seed, this.specs, this.groupSpecs);
    try {
      fresh.load(data, index, fromLeader ? this.limits() : undefined);
    } catch (e) {
      if (e instanceof WireError) return false;
      throw e;
    }
    this.index = fresh.index;
    this.committed = undefined;
    this.registers.clear();
    for (const [k, v] of fresh.registers) this.registers.set(k, v);
    this.groups.clear();
    for (const [k, v] of fresh.groups) this.groups.set(k, v);
    this.outcomes = fresh.outcomes;
    this.outcomeTotal = fresh.outcomeTotal;
    return true;
  }

  /**
   * What a leader's snapshot or difference may make each register hold (§15.4): its quota, or
   * what it holds now if that is more (a quota lowered since: the leader's honest state may be
   * above it too). Without this a snapshot of many tiny entries, within maxSnapshotBytes, made
   * a member hold any number of keys and ~10x its octets in memory (review, 2026-12-07).
   */
  private limits(): Map<string, RegisterLimit> {
    const m = new Map<string, RegisterLimit>();
    for (const [name, r] of this.registers) {
      const st = r.state;
      m.set(
        name,
        st instanceof MapState
          ? { keys: Math.max(r.quota.maxKeys, st.size()), bytes: Math.max(mapMaxBytes(r.quota), st.fullTransferBytes()) }
          : { keys: 0, bytes: Math.max(r.quota.maxBytes, st.size()) },
      );
    }
    return m;
  }

  /** The count of registers a snapshot or a difference holds: at most the domain's. */
  private registerCount(r: Reader, field: string): number {
    const n = r.varint(field);
    if (n > this.registers.size)
      throw new WireError(DropReason.MalformedPayload, field, `${n} registers; the domain declares ${this.registers.size}`);
    return n;
  }

  /**
   * One register's head in a snapshot or a difference: a name and kind this domain configures,
   * each register once (`seen`), and its version, at most `index` (versions count commits).
   */
  private registerHead(r: Reader, seen: Set<string>, index: number): { name: string; reg: Reg; version: number } {
    const name = UTF8.decode(r.lenBytes('register.name', MAX_REGISTER_NAME_LEN));
    const kind = r.u8('register.kind');
    const reg = this.registers.get(name);
    if (!reg || seen.has(name) || (kind !== 1 && kind !== 2) || (kind === 1) !== (reg.kind === 'map'))
      throw new WireError(DropReason.MalformedPayload, 'register.name', `register ${name} does not match this domain's configuration`);
    seen.add(name);
    const version = r.varint('register.version');
    if (version > index) throw new WireError(DropReason.MalformedPayload, 'register.version', `${version} exceeds ${index}`);
    return { name, reg, version };
  }

  /** Parse a snapshot into this (fresh) state, each register within `limits` if given; a WireError names what is wrong. */
  private load(data: Uint8Array, index: number, limits?: ReadonlyMap<string, RegisterLimit>): void {
    const bad = (field: string, detail: string): WireError => new WireError(DropReason.MalformedPayload, field, detail);
    const r = new Reader(data);
    this.index = r.varint('snapshot.index');
    if (this.index !== index) throw bad('snapshot.index', `snapshot is of index ${this.index}, expected ${index}`);
    // Versions count commits, so none exceeds the index: every later increment stays encodable.
    const version = (f: string, max: number): number => {
      const v = r.varint(f);
      if (v > max) throw bad(f, `${v} exceeds ${max}`);
      return v;
    };
    const nreg = this.registerCount(r, 'snapshot.registers');
    const seenRegs = new Set<string>();
    for (let i = 0; i < nreg; i++) {
      const { name, reg, version: regVersion } = this.registerHead(r, seenRegs, index);
      reg.version = regVersion;
      const limit = limits?.get(name);
      const st = reg.state;
      if (st instanceof MapState) {
        const n = r.varint('register.entries');
        // Sized first (the entries come in key-hash order), for no more than the quota and the bytes left can hold (4 octets an entry at least).
        st.reserveKeys(Math.min(n, limit?.keys ?? reg.quota.maxKeys, r.remaining >>> 2));
        for (let j = 0; j < n; j++) {
          const key = r.lenBytes('entry.key', MAX_KEY_LEN).slice();
          if (key.length === 0) throw bad('entry.key', 'empty key');
          // Keys in the snapshot's order are distinct: a repeated key would be two entries in one.
          if (st.versionOf(key) !== 0) throw bad('entry.key', 'repeated key');
          const v = version('entry.version', reg.version);
          if (v === 0) throw bad('entry.version', 'a present key has a version of at least 1');
          st.put(key, r.lenBytes('entry.value', MAX_VALUE_LEN).slice(), v);
          if (limit && (st.size() > limit.keys || st.fullTransferBytes() > limit.bytes))
            throw bad('register.entries', `register ${name} past its quota (${limit.keys} keys, ${limit.bytes} octets)`);
        }
      } else {
        const bytes = r.lenBytes('register.bytes', data.length);
        if (limit && bytes.length > limit.bytes)
          throw bad('register.bytes', `register ${name}: ${bytes.length} octets, past its quota (${limit.bytes})`);
        st.appendBytes(bytes.slice());
      }
    }
    this.readTail(r, index);
    r.expectEnd('snapshot');
  }

  /** The groups and outcome table of a snapshot or difference, into this state (fresh, or cleared). */
  private readTail(r: Reader, index: number): void {
    const bad = (field: string, detail: string): WireError => new WireError(DropReason.MalformedPayload, field, detail);
    const version = (f: string, max: number): number => {
      const v = r.varint(f);
      if (v > max) throw bad(f, `${v} exceeds ${max}`);
      return v;
    };
    const ng = r.varint('snapshot.groups');
    if (ng > this.groups.size) throw bad('snapshot.groups', `${ng} groups; the domain declares ${this.groups.size}`);
    for (let i = 0; i < ng; i++) {
      const name = UTF8.decode(r.lenBytes('group.name', MAX_REGISTER_NAME_LEN));
      const v = version('group.version', index);
      const g = this.groups.get(name);
      if (g) g.version = v;
    }
    const no = r.varint('snapshot.origins');
    if (no > MAX_ORIGINS) throw bad('snapshot.origins', `${no} exceeds ${MAX_ORIGINS}`);
    for (let i = 0; i < no; i++) {
      const origin = r.varint('origin');
      if (origin === 0 || origin > MAX_NODE_ID || this.outcomes.has(origin)) throw bad('origin', `${origin} is not a node id, or repeated`);
      const n = r.varint('origin.outcomes');
      if (n > OUTCOME_WINDOW) throw bad('origin.outcomes', `${n} exceeds ${OUTCOME_WINDOW}`);
      this.outcomeTotal += n;
      if (this.outcomeTotal > MAX_OUTCOMES) throw bad('origin.outcomes', `more than ${MAX_OUTCOMES} outcomes in all`);
      const m = new Map<number, number>();
      for (let j = 0; j < n; j++) {
        const seq = r.varint('outcome.seq');
        const o = r.u8('outcome');
        if (seq === 0 || seq > MAX_INDEX || o > CollapseReject.QuotaExceeded || m.has(seq))
          throw bad('outcome', `seq ${seq} outcome ${o} (or repeated)`);
        m.set(seq, o);
      }
      this.outcomes.set(origin, m);
    }
  }

  /**
   * The state at this.index as a difference from the state at `base` (docs/PROTOCOL.md §15.4,
   * "Catch-up by difference"), given the log entries (base, this.index]: the registers those
   * entries touch, with the current entry (or absence) of every key they name, a touched
   * stream whole; every group's version; the whole outcome table; and the digest the patched
   * state must have. Undefined if an entry is missing (the caller replays instead), or if the
   * touched streams alone take more than `limit` octets: their lengths are known before anything
   * is copied, and a difference that large is not sent (before, each weighing copied every touched
   * stream whole, twice, to learn so: ~100 ms for a 16 MiB stream behind by a few 1-octet appends).
   */
  diff(base: number, entries: readonly LogEntry[], limit = Infinity): Uint8Array | undefined {
    if (entries.length !== this.index - base || (entries.length > 0 && entries[0].index !== base + 1)) return undefined;
    const touched = new Map<string, Map<string, Uint8Array> | 'stream'>();
    for (const e of entries) {
      if (e.cmd[0] !== EntryKind.App) continue;
      const c = parseCandidate(e.cmd);
      if (!c) continue;
      for (const { register, delta } of c.ops) {
        const r = this.registers.get(register);
        if (!r) continue;
        if (r.state instanceof StreamState) touched.set(register, 'stream');
        else if ('key' in delta) {
          let keys = touched.get(register);
          if (keys === undefined) touched.set(register, (keys = new Map()));
          if (keys !== 'stream') keys.set(Buffer.from(delta.key).toString('latin1'), delta.key);
        }
      }
    }
    let streams = 0;
    for (const [name, keys] of touched) if (keys === 'stream') streams += this.registers.get(name)!.state.size();
    if (streams > limit) return undefined;
    const d = this.digest();
    const w = new Writer(1024);
    w.varint(this.index).varint(base).u32(d.hi).u32(d.lo);
    w.varint(touched.size);
    for (const [name, keys] of touched) {
      const r = this.registers.get(name)!;
      w.lenBytes(new TextEncoder().encode(name))
        .u8(r.kind === 'map' ? 1 : 2)
        .varint(r.version);
      if (keys === 'stream') {
        w.lenBytes((r.state as StreamState).read(0, r.state.size()));
        continue;
      }
      w.varint(keys.size);
      for (const key of keys.values()) {
        const e = (r.state as MapState).get(key);
        w.lenBytes(key);
        if (e) w.varint(e.version).lenBytes(e.value);
        else w.varint(0);
      }
    }
    this.writeTail(w);
    return w.finish();
  }

  /**
   * The full snapshot (§15.4 contents) of this state patched by a difference from `base` to
   * `index` (diff()), or undefined if the difference does not decode, does not follow from
   * this state (its index must be in [base, index]), would take a register past limits(), or
   * does not yield the digest it names. This state is left unchanged: the patch is made on a
   * copy, and only once readDiff() has checked all of that at the cost of the difference
   * alone (copying the state for a difference that then failed cost a member work in
   * proportion to its whole state for each 24-octet `snapDiff` a leader sent: review, 2026-12-07).
   */
  patch(data: Uint8Array, base: number, index: number): Uint8Array | undefined {
    if (this.index < base || this.index > index) return undefined;
    let diff: ParsedDiff;
    try {
      diff = this.readDiff(data, base, index, this.limits());
    } catch (e) {
      if (e instanceof WireError) return undefined;
      throw e;
    }
    const fresh = new DomainState(this.seed, this.specs, this.groupSpecs);
    fresh.load(this.snapshot(), this.index); // our own state: it loads (else a bug, thrown)
    fresh.applyDiff(diff);
    return fresh.snapshot();
  }

  /**
   * A difference parsed and checked against this state, which it leaves unchanged: it decodes
   * whole, each register it names stays within `limits`, and the state patched by it has the
   * digest it names (computed from each named register's hash less the entries it replaces or
   * removes plus those it writes: the register hashes are sums, §5). Costs the difference's
   * size, not the state's.
   */
  private readDiff(data: Uint8Array, base: number, index: number, limits: ReadonlyMap<string, RegisterLimit>): ParsedDiff {
    const bad = (field: string, detail: string): WireError => new WireError(DropReason.MalformedPayload, field, detail);
    const r = new Reader(data);
    const at = r.varint('diff.index');
    if (at !== index) throw bad('diff.index', `difference to index ${at}, expected ${index}`);
    const from = r.varint('diff.base');
    if (from !== base) throw bad('diff.base', `difference from index ${from}, expected ${base}`);
    const digest = { hi: r.u32('diff.digest'), lo: r.u32('diff.digest') };
    const version = (f: string, max: number): number => {
      const v = r.varint(f);
      if (v > max) throw bad(f, `${v} exceeds ${max}`);
      return v;
    };
    const regs: DiffRegister[] = [];
    const heads = new Map<string, PatchedHead>();
    const nreg = this.registerCount(r, 'diff.registers');
    const seenRegs = new Set<string>();
    for (let i = 0; i < nreg; i++) {
      const { name, reg, version: regVersion } = this.registerHead(r, seenRegs, index);
      // Versions only grow along the log, and the entries it does not list keep theirs (at most
      // the register's): below it, the patched state would not restore, after a copy of ours.
      if (regVersion < reg.version) throw bad('register.version', `${regVersion} is below the register's ${reg.version} here`);
      const limit = limits.get(name)!;
      const st = reg.state;
      if (st instanceof MapState) {
        const n = r.varint('register.entries');
        const entries: DiffEntry[] = [];
        const seenKeys = new Set<string>();
        const hash = new Hash64(st.hash.hi, st.hash.lo);
        let keys = st.size();
        let bytes = st.fullTransferBytes();
        for (let j = 0; j < n; j++) {
          const key = r.lenBytes('entry.key', MAX_KEY_LEN).slice();
          if (key.length === 0) throw bad('entry.key', 'empty key');
          const k = Buffer.from(key).toString('latin1');
          if (seenKeys.has(k)) throw bad('entry.key', 'repeated key');
          seenKeys.add(k);
          // Version 0: the key is absent at `index`.
          const v = version('entry.version', regVersion);
          const value = v === 0 ? undefined : r.lenBytes('entry.value', MAX_VALUE_LEN).slice();
          const old = st.get(key);
          if (old) {
            hash.sub(old.hhi, old.hlo);
            keys--;
            bytes -= entryWireLen(old);
          }
          if (value) {
            const e = st.entryOf(key, value, v);
            hash.add(e.hhi, e.hlo);
            keys++;
            bytes += entryWireLen(e);
          }
          entries.push({ key, version: v, value });
        }
        if (keys > limit.keys || bytes > limit.bytes)
          throw bad('register.entries', `register ${name} past its quota (${limit.keys} keys, ${limit.bytes} octets)`);
        regs.push({ name, version: regVersion, entries });
        heads.set(name, { version: regVersion, hash });
      } else {
        const content = r.lenBytes('register.bytes', data.length).slice();
        if (content.length > limit.bytes)
          throw bad('register.bytes', `register ${name}: ${content.length} octets, past its quota (${limit.bytes})`);
        regs.push({ name, version: regVersion, content });
        heads.set(name, { version: regVersion, hash: new StreamState(st.seed).hashAfter([content]) });
      }
    }
    // Groups and the outcome table: whole, as in a snapshot, into a state of their own.
    const tail = new DomainState(this.seed, [], this.groupSpecs);
    tail.readTail(r, index);
    r.expectEnd('diff');
    const d = this.digest(heads);
    if (d.hi !== digest.hi || d.lo !== digest.lo)
      throw bad('diff.digest', `the patched state's digest differs from the leader's at ${index}`);
    return { index, digest, regs, tail };
  }

  /** Patch this state (a copy of the one readDiff() checked `diff` against) with it. */
  private applyDiff(diff: ParsedDiff): void {
    for (const { name, version, entries, content } of diff.regs) {
      const reg = this.registers.get(name)!;
      reg.version = version;
      if (content) {
        reg.state = new StreamState(this.registerSeed(name));
        reg.state.appendBytes(content);
        continue;
      }
      const st = reg.state as MapState;
      for (const e of entries!) {
        if (e.value) st.put(e.key, e.value, e.version);
        else st.remove(e.key);
      }
    }
    for (const [name, g] of this.groups) g.version = diff.tail.groups.get(name)?.version ?? 0;
    this.outcomes = diff.tail.outcomes;
    this.outcomeTotal = diff.tail.outcomeTotal;
    this.index = diff.index;
    const d = this.digest();
    if (d.hi !== diff.digest.hi || d.lo !== diff.digest.lo)
      throw new Error(`a checked difference to ${diff.index} did not give its digest`);
  }

  /** Bytes a full copy of the registers would take (the baseline catch-up is measured against). */
  fullStateBytes(): number {
    let n = 0;
    for (const r of this.registers.values()) n += r.state.fullTransferBytes();
    return n;
  }
}

/** A stream's first `size` octets, unframed (their length went before them): appends land beyond. */
function streamBytes(st: StreamState, size: number): Slices {
  let at = 0;
  return (w) => {
    const end = w.pos + SNAPSHOT_SLICE;
    while (at < size && w.pos < end) {
      const n = Math.min(SNAPSHOT_SLICE, size - at);
      w.bytes(st.read(at, n));
      at += n;
    }
    return at < size;
  };
}

export function encodeCandidate(c: Candidate): Uint8Array {
  const w = new Writer(64);
  w.u8(EntryKind.App).varint(c.origin).varint(c.seq).varint(c.ops.length);
  for (const op of c.ops) {
    w.lenBytes(new TextEncoder().encode(op.register));
    writeDelta(w, op.delta);
  }
  return w.finish();
}

/**
 * The origin and seq of an App command, read from its head alone (no deltas decoded), or
 * undefined if that head does not decode.
 */
export function candidateHead(cmd: Uint8Array): { origin: number; seq: number } | undefined {
  try {
    const r = new Reader(cmd);
    if (r.u8('entry.kind') !== EntryKind.App) return undefined;
    const origin = r.varint('candidate.origin');
    return { origin, seq: r.varint('candidate.seq') };
  } catch (e) {
    if (e instanceof WireError) return undefined;
    throw e;
  }
}

/** Decodes an App command; a WireError names the field at fault (origin and seq within bounds, deltas valid). */
export function decodeCandidate(cmd: Uint8Array): Candidate {
  const bad = (f: string, d: string): WireError => new WireError(DropReason.MalformedPayload, f, d);
  const r = new Reader(cmd);
  if (r.u8('entry.kind') !== EntryKind.App) throw bad('entry.kind', 'not a candidate entry');
  const origin = r.varint('candidate.origin');
  if (origin === 0 || origin > MAX_NODE_ID) throw bad('candidate.origin', `${origin} is not a node id`);
  const seq = r.varint('candidate.seq');
  if (seq === 0 || seq > MAX_INDEX) throw bad('candidate.seq', `${seq} (1-${MAX_INDEX})`);
  const n = r.varint('candidate.ops');
  if (n === 0 || n > 256) throw bad('candidate.ops', `${n} (1-256)`);
  const ops: CandidateOp[] = [];
  for (let i = 0; i < n; i++) {
    const register = UTF8.decode(r.lenBytes('candidate.register', MAX_REGISTER_NAME_LEN));
    const delta = readDelta(r, 'candidate.delta');
    try {
      validateDelta(delta);
    } catch (e) {
      if (e instanceof RangeError) throw bad('candidate.delta', e.message);
      throw e;
    }
    ops.push({ register, delta });
  }
  r.expectEnd('candidate');
  return { origin, seq, ops };
}

/** The candidate of an App command, or undefined if it does not decode. */
export function parseCandidate(cmd: Uint8Array): Candidate | undefined {
  try {
    return decodeCandidate(cmd);
  } catch (e) {
    if (e instanceof WireError) return undefined;
    throw e;
  }
}

/**
 * The pair simulator's store: what DiskStore (drivers/store/store.ts) keeps per register —
 * snapshot, log of Collapse records, pending own candidates, lease — held in memory, where a
 * crash drops the HalfPair and keeps the store. Each call is durable when it returns (fsync
 * "always"), so a crash loses exactly what no call has returned for.
 *
 * Storage faults (TigerBeetle's simulated storage, in spirit): a call may fail, having made
 * its write durable or not (a write that failed, or an fsync that failed after the data
 * reached the disk). It then throws StoreFault, which the world treats as spookd treats a
 * failed write (fail-stop: the process exits before anything of that step leaves).
 */
import { groupNeeds, keptRecords, type LoggedRegister } from '../../core/pair/groups.js';
import type { LogRecord } from '../../core/pair/log.js';
import type { Replica } from '../../core/pair/replica.js';
import { storeEach, type PairStore, type PairWrite, type RegisterImage } from '../../core/pair/types.js';
import type { EntryDelta } from '../../wire/cross.js';
import { collapseRecordVersion } from '../../wire/journal.js';
import { encodeRegisterSnapshot, restoreRegisterSnapshot } from '../../drivers/store/store.js';

export class StoreFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreFault';
  }
}

/** A register's snapshot encoded when its batch was taken (as DiskStore's `write` takes it), written when the batch reaches the store. */
class TakenImage implements RegisterImage {
  readonly name: string;
  readonly version: number;
  readonly state: RegisterImage['state'];
  readonly origins: ReadonlyMap<number, number>;
  readonly bytes: Uint8Array;
  /**
   * The other registers replaced in the same batch: they land together with this one (DiskStore's
   * replacement record, rev 1.24); `landed` once they have.
   */
  together: { images: TakenImage[]; landed: boolean } | undefined;
  /** `image` as it is now; `installed`: for a re-entanglement, the version it installed (records the batch applied after it follow). */
  constructor(
    image: RegisterImage,
    readonly installed = image.version,
  ) {
    this.name = image.name;
    this.version = image.version;
    this.state = image.state;
    this.origins = image.origins;
    this.bytes = encodeRegisterSnapshot(image);
  }
}

export type PairStoreOp = 'append' | 'replaced' | 'lease' | 'proposed';

/** What a faulty call leaves: its write durable (`kept`) or not (`lost`); undefined: no fault. */
export type FaultOutcome = 'kept' | 'lost' | undefined;

interface RegisterFiles {
  snapshot: Uint8Array | undefined;
  snapshotVersion: number;
  log: Uint8Array[];
  pending: { seq: number; delta: EntryDelta; stamp?: number }[];
  lease: number;
}

export class SimPairStore implements PairStore {
  private readonly files = new Map<string, RegisterFiles>();
  private readonly replicas = new Map<string, Replica>();
  /** Decides, per call, whether it fails. */
  fault: ((op: PairStoreOp, register: string) => FaultOutcome) | undefined;
  /** Sees every Collapse record made durable (the checker's committed history, at the sequencer). */
  onDurable: ((register: string, rec: LogRecord) => void) | undefined;
  /** Sees the records a restart drops because their cross-register group was not wholly kept (never acknowledged). */
  onCut: ((register: string, dropped: Uint8Array[]) => void) | undefined;
  /** Sees every own candidate made durable (one whose proposer stopped before answering may still be decided). */
  onProposed: ((register: string, seq: number) => void) | undefined;
  faults = 0;
  /**
   * Per register, the highest version a reconciliation or full transfer installed: a part of a
   * cross-register txn at or below it may show while another register does not show its own
   * yet (§4.6).
   */
  readonly reconciledTo = new Map<string, number>();
  private groupsChecked = false;
  private readonly snapshotDue = new Set<string>();
  /** Snapshots made so far (`batch` tells whether a fault came before or after its own landed). */
  private snapshotsLanded = 0;
  /** The snapshots the batch taken last will make at its end, encoded when it was taken (`take`); null: due, not taken (ahead of its log). */
  private takenDue: Map<string, TakenImage | null> | undefined;

  /** Snapshot and empty a register's log once it holds this many records (DiskStore: 64 MiB). */
  constructor(readonly maxLogRecords = 48) {}

  private filesOf(register: string): RegisterFiles {
    let f = this.files.get(register);
    if (!f) this.files.set(register, (f = { snapshot: undefined, snapshotVersion: 0, log: [], pending: [], lease: 0 }));
    return f;
  }

  /** As DiskStore.load: a fresh replica (before the pair starts) takes what is durable. */
  load(replica: Replica): { replayed: number; pendingRestored: number } {
    if (!this.groupsChecked) this.cutTornGroups();
    const f = this.filesOf(replica.name);
    this.replicas.set(replica.name, replica);
    if (f.snapshot) restoreRegisterSnapshot(replica, f.snapshot, `sim ${replica.name}/snapshot`);
    let replayed = 0;
    for (const rec of f.log) {
      if (collapseRecordVersion(rec) <= replica.version) continue;
      replica.replayRecord(rec);
      replayed++;
    }
    replica.continueSeqAfter(f.lease);
    const pendingRestored = replica.restorePending(f.pending);
    f.pending = replica.ownCandidates();
    return { replayed, pendingRestored };
  }

  /** As DiskStore at a restart: cut every log at the first record of a cross-register group not wholly kept (core/pair/groups.ts). */
  private cutTornGroups(): void {
    this.groupsChecked = true;
    const regs = new Map<string, LoggedRegister>();
    for (const [name, f] of this.files)
      regs.set(name, {
        snapshotVersion: () => f.snapshotVersion,
        records: f.log.map((rec) => ({ version: collapseRecordVersion(rec), needs: groupNeeds(rec) })),
      });
    for (const [name, k] of keptRecords(regs)) {
      const f = this.files.get(name)!;
      if (k < f.log.length) this.onCut?.(name, f.log.slice(k));
      f.log = f.log.slice(0, k);
    }
  }

  /**
   * As DiskStore: a register whose log grew too long is snapshotted once the whole batch is kept,
   * as the batch left it (taken with it, when the batch was taken later than written: `take`).
   */
  endBatch(): void {
    const taken = this.takenDue;
    this.takenDue = undefined;
    for (const register of this.snapshotDue) {
      const image = taken ? taken.get(register) : this.replicas.get(register);
      if (image === null) continue; // ahead of its log: not snapshotted (take)
      if (!image && taken) throw new Error(`sim: a snapshot of ${register} due at the batch end was not taken with the batch`);
      if (image) this.snapshot([image]);
    }
    this.snapshotDue.clear();
  }

  /**
   * A batch the world takes, as spookd's DiskStore `write` takes one: what it snapshots is
   * encoded now, from the replicas as the batch leaves them (the pair may step on before the
   * batch reaches the store, `syncDelayMs`). A register the batch replaces is snapshotted last,
   * after everything else the batch holds is durable (several of them together, as DiskStore's
   * replacement record lands them), and its records of the batch are not
   * logged (the snapshot covers them). The writes to hand over (storeEach / persistWrites).
   */
  take(writes: readonly PairWrite[]): PairWrite[] {
    /** Per register replaced: the records the batch applied after its last replacement. */
    const after = new Map<string, number>();
    const images = new Map<string, RegisterImage>();
    /** Per register replaced: the version its last write in the batch leaves it at. */
    const last = new Map<string, number>();
    for (const w of writes)
      if (w.kind === 'replaced') {
        after.set(w.image.name, 0);
        images.set(w.image.name, w.image);
        last.set(w.image.name, w.version);
      } else if (w.kind === 'append' && after.has(w.register)) {
        after.set(w.register, after.get(w.register)! + 1);
        last.set(w.register, w.rec.version);
      }
    // DiskStore refuses (StoreRefused) a register ahead of its last write: the follower holds a
    // replaced register's records until the replacement is durable, so that none is (§10.1).
    for (const [name, image] of images)
      if (image.version !== last.get(name))
        throw new Error(
          `register ${name} is at v${image.version}, its last write in the batch v${last.get(name)}: the store would refuse the batch`,
        );
    const out = writes.filter((w) => w.kind !== 'replaced' && !(w.kind === 'append' && after.has(w.register)));
    const records = new Map<string, number>();
    for (const w of out)
      if (w.kind === 'append') records.set(w.register, (records.get(w.register) ?? this.filesOf(w.register).log.length) + 1);
    const taken = [...images].map(([name, image]) => new TakenImage(image, image.version - after.get(name)!));
    const together = taken.length > 1 ? { images: taken, landed: false } : undefined;
    for (const image of taken) {
      image.together = together;
      out.push({ kind: 'replaced', image, version: image.installed });
    }
    // Due: a log the batch makes too long, or one a crash left too long (its batch kept, never ended); a replaced one is covered.
    const due = new Set(this.snapshotDue);
    for (const [register, n] of records) if (n > this.maxLogRecords) due.add(register);
    this.takenDue = new Map();
    const top = new Map<string, number>();
    for (const w of out) if (w.kind === 'append') top.set(w.register, w.rec.version);
    for (const register of due) {
      const r = this.replicas.get(register);
      if (!r || images.has(register)) continue;
      // As DiskStore: a register ahead of its log (a diverged record, never logged: it reconciles) is not snapshotted.
      this.takenDue.set(register, r.version === (top.get(register) ?? this.loggedTop(register)) ? new TakenImage(r) : null);
    }
    return out;
  }

  /** The version `register`'s log (or its snapshot) reaches on disk. */
  private loggedTop(register: string): number {
    const f = this.filesOf(register);
    return f.log.length > 0 ? collapseRecordVersion(f.log[f.log.length - 1]) : f.snapshotVersion;
  }

  /**
   * As DiskStore: a batch that replaces registers lands all or nothing (rev 1.24). A fault that
   * stops it before its snapshots land takes back the records it appended (DiskStore's `undo`
   * replacement record, completed at the next load); one on the snapshots themselves that kept
   * them (`kept`) leaves the whole batch (its `commit` record, completed at the next load).
   */
  batch(writes: readonly PairWrite[]): void {
    if (!writes.some((w) => w.kind === 'replaced')) return persistEach(this, writes);
    const logs = new Map<string, number>();
    for (const w of writes) if (w.kind === 'append' && !logs.has(w.register)) logs.set(w.register, this.filesOf(w.register).log.length);
    const landed = this.snapshotsLanded;
    try {
      storeEach(this, writes);
    } catch (e) {
      if (e instanceof StoreFault && this.snapshotsLanded === landed)
        for (const [register, n] of logs) this.filesOf(register).log.length = n;
      throw e;
    }
    this.endBatch(); // landed: what grew too long is rewritten after it, as DiskStore's batchDurable
  }

  /** A crash caught the batch taken last: it never ends. */
  dropTaken(): void {
    this.takenDue = undefined;
  }

  private check(op: PairStoreOp, register: string): FaultOutcome {
    const r = this.fault?.(op, register);
    if (r) this.faults++;
    return r;
  }

  private fail(op: PairStoreOp, register: string, outcome: FaultOutcome): void {
    if (outcome) throw new StoreFault(`simulated storage fault: ${op} on ${register} (${outcome === 'kept' ? 'durable' : 'lost'})`);
  }

  append(register: string, rec: LogRecord): void {
    const f = this.filesOf(register);
    const outcome = this.check('append', register);
    this.groupsChecked = false;
    if (outcome !== 'lost') {
      f.log.push(rec.encoded.slice());
      this.onDurable?.(register, rec);
    }
    this.fail('append', register, outcome);
    if (f.log.length > this.maxLogRecords) this.snapshotDue.add(register);
  }

  /** Reconciliation or a full transfer replaced the register's state (the log's growth snapshots through `snapshot`). */
  replaced(replica: RegisterImage): void {
    const together = replica instanceof TakenImage ? replica.together : undefined;
    if (together?.landed) return; // landed with the first of its batch
    const images = together?.images ?? [replica];
    for (const image of images) {
      const installed = image instanceof TakenImage ? image.installed : image.version;
      this.reconciledTo.set(image.name, Math.max(this.reconciledTo.get(image.name) ?? 0, installed));
      this.snapshotDue.delete(image.name); // this one covers it
    }
    this.snapshot(images);
    if (together) together.landed = true;
  }

  /** The registers' snapshots become `images`, all or none (one fault for them all: the replacement record). */
  private snapshot(images: readonly RegisterImage[]): void {
    const outcome = this.check('replaced', images[0].name);
    this.groupsChecked = false;
    if (outcome !== 'lost') this.snapshotsLanded++;
    if (outcome !== 'lost')
      for (const replica of images) {
        const f = this.filesOf(replica.name);
        f.snapshot = replica instanceof TakenImage ? replica.bytes : encodeRegisterSnapshot(replica);
        f.snapshotVersion = replica.version;
        f.log = [];
      }
    this.fail('replaced', images[0].name, outcome);
  }

  lease(register: string, upTo: number): void {
    const outcome = this.check('lease', register);
    if (outcome !== 'lost') this.filesOf(register).lease = upTo;
    this.fail('lease', register, outcome);
  }

  proposed(register: string, seq: number, delta: EntryDelta, stamp?: number): void {
    const outcome = this.check('proposed', register);
    if (outcome !== 'lost') {
      this.filesOf(register).pending.push({ seq, delta, stamp });
      this.onProposed?.(register, seq);
    }
    this.fail('proposed', register, outcome);
  }
}

/** Each write in turn, then the end of the batch (what `persistWrites` does for a store without `batch`). */
function persistEach(store: SimPairStore, writes: readonly PairWrite[]): void {
  storeEach(store, writes);
  store.endBatch();
}

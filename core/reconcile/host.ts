/**
 * What reconciliation needs of a register (implemented by core/pair's two roles): read
 * access to its committed state, a way to answer or refuse, and, for the requester, one
 * method that installs a verified result. Reconciliation never writes a register's fields.
 */
import type { RejectReason } from '../../wire/delta.js';
import type { Message, StatusMsg } from '../../wire/messages.js';
import type { MapEntry, MapState } from '../register/map.js';
import type { Quota } from '../register/quota.js';
import type { StreamState } from '../register/stream.js';

/** Why reconciliation refused a request or response (counted among the pair's drops, core/pair/drops.ts). */
export type ReconDrop = 'recon-rate-limited' | 'quota-violation' | 'diff-mismatch';

interface ReconHost {
  readonly name: string;
  readonly version: number;
  /** Read only: changes go through RequesterHost.install. */
  readonly state: MapState | StreamState;
  /** A request or response refused (not answered) and counted. */
  refuse(now: number, reason: ReconDrop, detail: string): void;
}

/** The sequencer's side: it answers from pins of its own state. */
export interface ResponderHost extends ReconHost {
  readonly peerId: number;
  /** Causal marks now (a pin copies them). */
  readonly origins: ReadonlyMap<number, number>;
  /** The peer's rejected candidates it has not acknowledged, by sequence number (§8.5). */
  readonly peerRejections: ReadonlyMap<number, RejectReason>;
  respond(now: number, m: Message): void;
  status(): StatusMsg;
  /** Whether the log can bring the follower from `v` to the present (a pin at `v` is still useful). */
  canServeFrom(v: number): boolean;
  /** Payload limit of the pair: a diff part fills one (§8.2.1). */
  readonly maxPayload: number;
  /** The keys logged record `v` writes (committed entries), or undefined if the log no longer holds it. */
  touchedKeys(v: number): readonly Uint8Array[] | undefined;
  /** Whether the costing of this re-entanglement chose a log diff for a follower at `since` (§8.1), and the log still covers it. */
  diffFrom(since: number): boolean;
  /** Sliced work is left: run it at once (bounded per call). */
  wantWork(now: number): void;
}

/** How a verified reconciliation changes the register's state. */
export type StateChange =
  /** A full transfer: the state built from the snapshot. */
  | { kind: 'replace'; state: MapState | StreamState }
  /** Map reconciliation: the differing entries. */
  | { kind: 'edit-map'; deletes: readonly MapEntry[]; puts: readonly MapEntry[] }
  /** Stream reconciliation: the missing tail. */
  | { kind: 'append-stream'; chunks: readonly Uint8Array[] };

/** A reconciliation's verified result: the state at the sequencer's pin, with the pin's marks. */
export interface Reconciled {
  readonly method: 'reconcile' | 'full';
  readonly version: number;
  readonly change: StateChange;
  readonly origins: ReadonlyMap<number, number>;
  /** The rejections of this end's candidates the pin kept, by sequence number. */
  readonly rejections: ReadonlyMap<number, RejectReason>;
}

/** The follower's side: it asks, verifies, then installs. */
export interface RequesterHost extends ReconHost {
  readonly quota: Quota;
  rto(): number;
  countFullTransfer(): void;
  /** Replace the state with a verified result and adopt the pin's version and marks. */
  install(now: number, r: Reconciled): void;
}

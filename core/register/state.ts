import type { Delta, RejectReason } from '../../wire/delta.js';
import type { Hash64 } from './hash.js';

export type RegisterKind = 'map' | 'stream';

/**
 * The committed content of one register at one endpoint. Only collapse (and the
 * re-entanglement paths) mutate it; readers see it between collapses, so they only ever
 * see committed versions.
 */
export interface StateBlock {
  readonly kind: RegisterKind;
  /** Multiset (map) or streaming (stream) hash, maintained in O(1) per applied delta. */
  readonly hash: Hash64;
  /** The precondition check collapse runs: 0 to commit, or why to reject. Pure. */
  check(d: Delta): RejectReason | 0;
  /** Apply a delta whose check passed, at register version `version`. O(1) in the state size. */
  apply(d: Delta, version: number): void;
  /** Entries (map) or bytes (stream). */
  size(): number;
  /** Bytes a full transfer of this state would put on the wire (payload only). */
  fullTransferBytes(): number;
}

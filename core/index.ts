/** `spook/core`: the sans-I/O protocol core, for embedding a HalfPair in a process of one's own. */
export { HalfPair, type HalfPairOptions, type RegisterSpec } from './pair/halfpair.js';
export { DeltaOp, type Delta } from '../wire/delta.js';
export { PairState } from './pair/lifecycle.js';
export type { SpookEvent } from './pair/events.js';

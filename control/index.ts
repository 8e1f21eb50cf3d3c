/** The `spook` package: the application library and the protocol core for embedding. */
export { openRegister, type RegisterHandle, type Outcome } from './client/register.js';
export { AdminClient, DaemonNotRunning, DEFAULT_SOCKET } from './client/admin-client.js';
export { HalfPair, type HalfPairOptions, type RegisterSpec } from './core/halfpair.js';
export { DeltaOp, type Delta } from '../transport/wire/delta.js';
export { PairState } from './core/lifecycle.js';
export type { SpookEvent } from './core/events.js';

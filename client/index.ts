/** The `spook` package: the application library and the protocol core for embedding. */
export { openRegister, type RegisterHandle, type Outcome } from './register.js';
export { AdminClient, AdminError, DaemonNotRunning, DEFAULT_SOCKET } from './admin-client.js';
export { ADMIN_COMMANDS, ADMIN_ERROR_CODES } from './protocol.js';
export type * from './protocol.js';
export { HalfPair, type HalfPairOptions, type RegisterSpec } from '../core/pair/halfpair.js';
export { DeltaOp, type Delta } from '../wire/delta.js';
export { PairState } from '../core/pair/lifecycle.js';
export type { SpookEvent } from '../core/pair/events.js';

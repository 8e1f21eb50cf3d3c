/** The `spook` package: the application library (spookd's admin socket). The core is `spook/core`. */
export { openRegister, type RegisterHandle, type Outcome } from './register.js';
export { AdminClient, AdminError, DaemonNotRunning, DEFAULT_SOCKET } from './admin-client.js';
export { ADMIN_COMMANDS, ADMIN_ERROR_CODES } from './protocol.js';
export type * from './protocol.js';

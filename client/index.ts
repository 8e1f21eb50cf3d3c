/** The `spook` package: the application library (spookd's admin socket). The core is `spook/core`. */
export { openRegister, type RegisterHandle, type Outcome } from './register.js';
export { AdminClient, DaemonNotRunning, DEFAULT_SOCKET } from './admin-client.js';

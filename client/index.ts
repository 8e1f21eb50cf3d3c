/** The `spook` package: the application library (spookd's admin socket). The core is `spook/core`. */
export { openRegister, type RegisterHandle, type Outcome, type RegisterValue, type WatchOptions } from './register.js';
export {
  AdminClient,
  AdminError,
  SpookError,
  DaemonNotRunning,
  DEFAULT_SOCKET,
  DEFAULT_TIMEOUT_MS,
  type CallOptions,
  type StreamOptions,
} from './admin-client.js';
export {
  scan,
  scanAll,
  scanPages,
  size,
  watch,
  type FeedTarget,
  type ScanPage,
  type ScanEntry,
  type ScanOptions,
  type Change,
  type Watcher,
  type WatchOptions as FeedWatchOptions,
} from './feed.js';
export { ADMIN_COMMANDS, ADMIN_ERROR_CODES, ADMIN_MAX_REQUEST } from './protocol.js';
export type * from './protocol.js';
export { json, type Codec } from './codec.js';
export type { KeyInput } from './bytes.js';
export * from './domain.js';

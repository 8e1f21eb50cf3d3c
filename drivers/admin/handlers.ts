/** The shape of the admin command table: one handler per command of client/protocol.ts, typed by it. */
import type { AdminArgs, AdminCommand, AdminErrorBody, AdminResult, AdminStream, AdminStreams } from '../../client/protocol.js';
import type { Untrusted } from './args.js';

/** One request in progress. */
export interface Call {
  /**
   * Run `f` if the client goes away while this request is in progress (stop waiting for an outcome,
   * unsubscribe a stream). Forgotten when a command's answer is sent, so a long-lived connection
   * making many requests holds nothing for those already answered; a stream's lasts until the connection ends.
   */
  onClose(f: () => void): void;
  /** Run `f` when the connection ends, whatever request registered it (state kept per connection, such as scan cursors). */
  onConnectionClose(f: () => void): void;
  /** The client's connection (an opaque token, the same for every request on it): what per-connection quotas count. */
  readonly conn: object;
  /** Bytes written to this connection and not yet taken by the client (a stream's backpressure). */
  backlog(): number;
  /** Run `f` each time the connection's write buffer empties, until the returned function is called. */
  onDrain(f: () => void): () => void;
}

/** A command: its arguments as they arrive (validated by the handler, each fault naming the argument), its result. */
export type Handler<C extends AdminCommand> = (args: Untrusted<AdminArgs<C>>, call: Call) => AdminResult<C> | Promise<AdminResult<C>>;
export type Handlers<K extends AdminCommand = AdminCommand> = { [C in K]: Handler<C> };

/** An event as it travels: the peer goes beside it, `{"id":…,"peer":…,"event":…}`. */
export type WireEvent<S extends AdminStream> = AdminStreams[S]['event'] extends infer E
  ? E extends unknown
    ? Omit<E, 'peer'>
    : never
  : never;

/**
 * Ends a started stream from the daemon's side, its `onClose` callbacks run now and nothing more is
 * sent: with `error` (what it is bound to is gone: a peer removed), one error line
 * `{"id":…,"ok":false,"error":…}` first; without, none (it ended by itself, its last event sent: a
 * feed's `compacted` or `overflow`), so that it holds nothing until the connection closes.
 */
export type StreamEnd = (error?: AdminErrorBody) => void;

/** A streaming command: checks its arguments (throwing before the first line), then emits until the client closes or `end`. */
export type StreamHandler<S extends AdminStream> = (
  args: Untrusted<AdminStreams[S]['args']>,
  call: Call,
  emit: (peer: string, ev: WireEvent<S>) => void,
  end: StreamEnd,
) => void;
export type StreamHandlers<K extends AdminStream = AdminStream> = { [S in K]: StreamHandler<S> };

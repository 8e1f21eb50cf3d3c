/**
 * Reading and watching a register, pair or domain alike (docs/LIBRARY.md, "Reading and watching"):
 * scan pages at one committed version, size, and watch, a change feed that survives spookd
 * restarts with no gap and no duplicate. RegisterHandle and the domain handle call these with
 * their target: `{peer?, register}` for a pair register, `{domain?, register}` (the `domain` key
 * present, undefined for the only domain) for a domain register.
 */
import { SpookError, type AdminClient, type CallOptions } from './admin-client.js';
import type { FeedEvent, ScanResult, SizeResult } from './protocol.js';
import { bytesArg, keyName, shownBytes, textOf } from './bytes.js';
import { deadline, sleep, type Session } from './session.js';

export type PairTarget = { peer?: string; register: string };
export type DomainTarget = { domain?: string; register: string };
export type FeedTarget = PairTarget | DomainTarget;

const isDomain = (t: FeedTarget): t is DomainTarget => 'domain' in t;
const targetArgs = (t: FeedTarget): object =>
  isDomain(t)
    ? { register: t.register, ...(t.domain !== undefined ? { domain: t.domain } : {}) }
    : { register: t.register, ...(t.peer !== undefined ? { peer: t.peer } : {}) };

export interface ScanOptions extends CallOptions {
  /** Entries per page (spookd's default 1000, at most 10,000). */
  limit?: number;
  /** Start after this key (the last key of the previous page: its `keyBytes`). */
  after?: string | Uint8Array;
  /** The version the earlier pages were of: a page of any other version fails `cursor-expired`. */
  version?: number;
  /** The `next.cursor` of the previous page. */
  cursor?: string;
  /** How long spookd keeps the cursor between pages (default 30 s, at most 5 min). */
  cursorTtlMs?: number;
}

export interface ScanEntry {
  /**
   * The key as text (UTF-8), or base64 when it is not: a name for people, which may be another key's text
   * (a peer's key 69 b7 1d is named "abcd"). Key mirrors by `keyBytes`.
   */
  key: string;
  /** The key's bytes: what tells keys apart, and what to give back to get/set/cas/del/txn. */
  keyBytes: Uint8Array;
  bytes: Uint8Array;
  /** The value as text, only when it is valid UTF-8. */
  value?: string;
  /** The register version that last wrote this key. */
  keyVersion: number;
}

export interface ScanPage {
  /** Every entry of every page of this scan is of this committed version. */
  version: number;
  entries: ScanEntry[];
  /** More keys follow: pass these options (merged into yours) for the next page. */
  next?: { cursor: string; version: number; after: Uint8Array };
}

/** One page of the map register's keys with `prefix`, in byte order. */
export async function scan(session: Session, target: FeedTarget, prefix: string | Uint8Array = '', o: ScanOptions = {}): Promise<ScanPage> {
  const args = {
    ...targetArgs(target),
    ...bytesArg('prefix', prefix),
    ...(o.after !== undefined ? bytesArg('after', o.after) : {}),
    ...(o.limit !== undefined ? { limit: o.limit } : {}),
    ...(o.version !== undefined ? { version: o.version } : {}),
    ...(o.cursor !== undefined ? { cursor: o.cursor } : {}),
    ...(o.cursorTtlMs !== undefined ? { cursorTtlMs: o.cursorTtlMs } : {}),
  };
  const d = deadline(o);
  const r: ScanResult = isDomain(target)
    ? await session.request('dscan', args as never, d)
    : await session.request('scan', args as never, d);
  const entries = r.entries.map((e) => {
    const keyBytes = shownBytes(e.key);
    const bytes = shownBytes(e.value);
    return { key: keyName(keyBytes), keyBytes, bytes, value: textOf(bytes), keyVersion: e.keyVersion };
  });
  const last = entries.at(-1);
  return {
    version: r.version,
    entries,
    ...(r.cursor && last ? { next: { cursor: r.cursor, version: r.version, after: last.keyBytes } } : {}),
  };
}

/** Every page of a scan, all of one version; a page that can no longer be had throws `cursor-expired`. */
export async function* scanPages(
  session: Session,
  target: FeedTarget,
  prefix: string | Uint8Array = '',
  o: ScanOptions = {},
): AsyncGenerator<ScanPage> {
  let page = await scan(session, target, prefix, o);
  yield page;
  while (page.next) {
    page = await scan(session, target, prefix, { ...o, ...page.next });
    yield page;
  }
}

/** All the keys with `prefix` at one version (every page). */
export async function scanAll(
  session: Session,
  target: FeedTarget,
  prefix: string | Uint8Array = '',
  o: ScanOptions = {},
): Promise<{ version: number; entries: ScanEntry[] }> {
  const entries: ScanEntry[] = [];
  let version = 0;
  for await (const p of scanPages(session, target, prefix, o)) {
    version = p.version;
    entries.push(...p.entries);
  }
  return { version, entries };
}

/** Keys and bytes of a map register (a stream's length), and its version. */
export function size(session: Session, target: FeedTarget, o: CallOptions = {}): Promise<SizeResult> {
  const d = deadline(o);
  return isDomain(target)
    ? session.request('dsize', targetArgs(target) as never, d)
    : session.request('size', targetArgs(target) as never, d);
}

/** One committed change, as a watch delivers it. */
export interface Change {
  op: 'set' | 'del' | 'append';
  version: number;
  /** Map registers: the key as text (UTF-8), or base64 when it is not (which may be another key's text: see ScanEntry). */
  key?: string;
  /** The key's bytes: what tells keys apart, and what to give back to get/set/cas/del/txn. */
  keyBytes?: Uint8Array;
  /** The new value (set) or the appended bytes (append). */
  bytes?: Uint8Array;
  /** The same as text, only when it is valid UTF-8. */
  value?: string;
  /** Stream registers: where the bytes were appended. */
  offset?: number;
}

export interface WatchOptions {
  /** Deliver the changes after this version (a scan's version, or a watcher's lastVersion). Default: the current version. */
  fromVersion?: number;
  /** Each change, in version order. A returned promise is awaited before the next (at most `maxQueue` wait meanwhile). */
  onChange: (c: Change) => void | Promise<void>;
  /**
   * spookd no longer holds the changes after the version the watch needs: the watch has ended. Rescan,
   * then watch from the scan's version. Without this handler, onEnd gets a SpookError of code `compacted`.
   */
  onCompacted?: (info: { fromVersion: number; oldest: number; current: number }) => void;
  /**
   * The consumer fell behind (spookd's buffer for it, or the local queue, filled). Everything up to
   * `lastVersion` was delivered. Return 'stop' to end the watch (onEnd gets code `overflow`);
   * by default it resumes from lastVersion (no gap, no duplicate).
   */
  onOverflow?: (info: { lastVersion: number; limit: 'bytes' | 'events' | 'queue' }) => 'resume' | 'stop';
  /**
   * The watch ended other than by close(): `compacted`, `overflow`, `aborted`, `peer-removed` (a reload removed
   * the register's peer), or an onChange that threw (`internal`).
   */
  onEnd?: (e: SpookError) => void;
  /** Aborting it closes the watch. */
  signal?: AbortSignal;
  /** Versions waiting for an async onChange (default 10,000): past it the watch stops reading, and spookd's buffer takes the rest. */
  maxQueue?: number;
  /**
   * Octets of keys and values waiting for an async onChange (default 16 MiB): past it the watch
   * stops reading, as past maxQueue; past twice it, or 1 MiB over it if more (what reads already
   * held), it overflows (`queue`). A single version larger than this is still delivered, alone.
   */
  maxQueueBytes?: number;
  /** spookd's buffer for this subscriber (default 1 MiB and 10,000 events). */
  maxBufferBytes?: number;
  maxBufferEvents?: number;
  /** The start: the deadline of the first subscription (default 30 s). */
  timeoutMs?: number;
}

export interface Watcher {
  /** The last version whose changes were all delivered: watch from here to resume. */
  readonly lastVersion: number;
  /** Times the feed was opened again (after a spookd restart, an overflow, a full queue). */
  readonly resubscribes: number;
  close(): void;
}

/** Versions a paused stream may still hand over (the lines of reads already made) before the queue counts as overflowed. */
const QUEUE_SLACK = 1_000;
const MAX_QUEUE_BYTES = 16 << 20;
/** Octets a paused stream may still hand over past maxQueueBytes (what reads already held) before the queue counts as overflowed. */
const QUEUE_SLACK_BYTES = 1 << 20;
const BACKOFF_FIRST_MS = 50;
const BACKOFF_MAX_MS = 2_000;
/** Why a resubscription may fail and still heal by retrying (with backoff). */
const TRANSIENT: readonly string[] = ['daemon-not-running', 'connection-closed', 'timeout', 'too-busy', 'too-many-watchers'];

/**
 * Watch the changes of keys with `prefix` (all for a stream register). Resolves once the first
 * subscription is open; from then on it resubscribes by itself from the last delivered version
 * after spookd restarts (with backoff) or an overflow.
 */
export async function watch(session: Session, target: FeedTarget, prefix: string | Uint8Array, o: WatchOptions): Promise<Watcher> {
  let last = o.fromVersion ?? (await size(session, target, { timeoutMs: o.timeoutMs, signal: o.signal })).version;
  let closed = false;
  let conn: AdminClient | undefined;
  let generation = 0;
  let resubscribes = 0;
  const queue: { version: number; changes: Change[]; bytes: number }[] = [];
  /** Octets of keys and values in `queue`. */
  let queuedBytes = 0;
  let busy = false;
  const maxQueue = o.maxQueue ?? 10_000;
  const maxQueueBytes = o.maxQueueBytes ?? MAX_QUEUE_BYTES;
  const full = (): boolean => queue.length >= maxQueue || queuedBytes >= maxQueueBytes;

  const stop = (e?: SpookError): void => {
    if (closed) return;
    closed = true;
    generation++;
    if (conn) session.endStream(conn);
    conn = undefined;
    queue.length = 0;
    queuedBytes = 0;
    o.signal?.removeEventListener('abort', onAbort);
    if (e) o.onEnd?.(e);
  };
  const onAbort = (): void => stop(new SpookError('aborted', 'watch aborted'));

  /** Deliver queued versions in order; `last` moves only once a version's changes were all delivered. */
  const drain = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    const gen = generation;
    try {
      while (queue.length > 0 && gen === generation && !closed) {
        const batch = queue[0];
        // A version is delivered whole (a resubscription resumes after it, never inside it).
        for (const c of batch.changes) {
          const r = o.onChange(c);
          if (r instanceof Promise) await r;
          if (closed) return;
        }
        queue.shift();
        queuedBytes -= batch.bytes;
        last = batch.version;
        if (queue.length <= maxQueue >> 1 && queuedBytes <= maxQueueBytes >> 1) conn?.resume();
      }
    } catch (e) {
      stop(new SpookError('internal', `onChange threw: ${(e as Error).message}`));
    } finally {
      busy = false;
    }
    // A resubscription while a promise was pending: what it queued is now ours to deliver.
    if (queue.length > 0 && !closed && gen !== generation) void drain();
  };

  const overflow = (lastVersion: number, limit: 'bytes' | 'events' | 'queue'): void => {
    const choice = o.onOverflow?.({ lastVersion, limit }) ?? 'resume';
    if (choice === 'stop') return stop(new SpookError('overflow', `watch fell behind (${limit}); delivered up to version ${lastVersion}`));
    void resubscribe(true);
  };

  const onEvent = (gen: number, ev: FeedEvent): void => {
    if (gen !== generation || closed) return;
    // What spookd sent is checked as it is read: an event the library cannot read ends the watch with an error (onEnd),
    // never a TypeError thrown into the socket's handler (uncaught: the application's process ended) nor a version
    // that is not one (`last` undefined: the next subscription starts at the current version, a silent gap).
    try {
      readEvent(ev);
    } catch (e) {
      stop(new SpookError('internal', `spookd sent a feed event the library cannot read (${(e as Error).message}): the watch has ended`));
    }
  };
  const readEvent = (ev: FeedEvent): void => {
    const version = (v: unknown): number => {
      if (!Number.isSafeInteger(v) || (v as number) < 0) throw new Error(`version ${String(v)}`);
      return v as number;
    };
    const tail = queue.at(-1)?.version ?? last;
    switch (ev.type) {
      case 'changes': {
        if (version(ev.version) <= tail) return; // never twice
        if (!Array.isArray(ev.changes)) throw new Error('changes that are not a list');
        let bytes = 0;
        const changes = ev.changes.map((c): Change => {
          const keyBytes = c.key ? shownBytes(c.key) : undefined;
          const value = c.value ? shownBytes(c.value) : undefined;
          bytes += (keyBytes?.length ?? 0) + (value?.length ?? 0);
          return {
            op: c.op,
            version: ev.version,
            ...(keyBytes ? { key: keyName(keyBytes), keyBytes } : {}),
            ...(value ? { bytes: value, value: textOf(value) } : {}),
            ...(c.offset !== undefined ? { offset: c.offset } : {}),
          };
        });
        // Past the queue (what reads already held after the pause): start again from what was delivered.
        if (
          queue.length >= maxQueue + QUEUE_SLACK ||
          (queue.length > 0 && queuedBytes + bytes > maxQueueBytes + Math.max(maxQueueBytes, QUEUE_SLACK_BYTES))
        )
          return overflow(last, 'queue');
        queue.push({ version: ev.version, bytes, changes });
        queuedBytes += bytes;
        // Full: stop reading; spookd paces or, if it must, tells overflow.
        if (full()) conn?.pause();
        void drain();
        return;
      }
      case 'progress':
        if (version(ev.version) <= tail) return;
        if (queue.length === 0 && !busy) last = ev.version;
        else queue.push({ version: ev.version, changes: [], bytes: 0 });
        void drain();
        return;
      case 'compacted': {
        const info = { fromVersion: ev.fromVersion, oldest: ev.oldest, current: ev.current };
        const err = new SpookError(
          'compacted',
          `changes after version ${ev.fromVersion} are no longer held (oldest ${ev.oldest}, current ${ev.current}): rescan, then watch from the scan's version`,
        );
        stop(o.onCompacted ? undefined : err);
        o.onCompacted?.(info);
        return;
      }
      case 'overflow':
        // Sent after everything up to ev.lastVersion; what is queued here was not delivered yet (and comes
        // again on resume): the application hears of what it was given.
        overflow(last, ev.limit);
        return;
    }
  };

  const subscribe = async (timeoutMs?: number): Promise<void> => {
    const gen = ++generation;
    // Versions still queued will come again after `last`.
    queue.length = 0;
    queuedBytes = 0;
    const args = {
      ...targetArgs(target),
      ...bytesArg('prefix', prefix),
      fromVersion: last,
      ...(o.maxBufferBytes !== undefined ? { maxBufferBytes: o.maxBufferBytes } : {}),
      ...(o.maxBufferEvents !== undefined ? { maxBufferEvents: o.maxBufferEvents } : {}),
    };
    const opts = {
      timeoutMs,
      signal: o.signal,
      // A lost connection (spookd restarting) heals by resubscribing; a feed spookd ended with an
      // error (its peer removed by a reload: `peer-removed`) would not: the watch ends with that error.
      onEnd: (e: SpookError) => {
        if (gen !== generation || closed) return;
        if (e.code === 'connection-closed') void resubscribe(false);
        else stop(e);
      },
    };
    const c = isDomain(target)
      ? await session.stream('dfeed', args as never, (ev) => onEvent(gen, ev), opts)
      : await session.stream('feed', args as never, (ev) => onEvent(gen, ev), opts);
    if (gen !== generation || closed) session.endStream(c);
    else {
      conn = c;
      // Events read with the answer may have filled the queue before there was a connection to pause.
      if (full()) c.pause();
    }
  };

  /**
   * Open the feed again from `last`, once an async onChange finished; backoff while spookd is away.
   * What the old feed still sends is ignored from the call on; one loop at a time, again if asked meanwhile.
   */
  let resubscribing = false;
  let again = false;
  const resubscribe = async (now: boolean): Promise<void> => {
    generation++;
    if (conn) session.endStream(conn);
    conn = undefined;
    again = true;
    if (resubscribing) return;
    resubscribing = true;
    let delay = now ? 0 : BACKOFF_FIRST_MS;
    try {
      while (again && !closed) {
        // The handle was closed (Session.close): nothing reconnects; the watch ends as by close().
        if (session.isClosed) return stop();
        again = false;
        while (busy && !closed) await sleep(5);
        if (closed) return;
        try {
          if (delay > 0) await sleep(delay, o.signal);
          if (closed) return;
          await subscribe();
          resubscribes++;
        } catch (e) {
          if (closed) return;
          if (e instanceof SpookError && e.code === 'aborted') return stop(e);
          // A refusal of the request itself (unknown register) does not heal by retrying; spookd full for now (its
          // admin connections: `too-busy`; its feeds: `too-many-watchers`) does, as a restart does: ending the
          // watch there made a moment's load its permanent end.
          if (!(e instanceof SpookError) || !TRANSIENT.includes(e.code)) return stop(e as SpookError);
          again = true;
          delay = Math.min(Math.max(delay * 2, BACKOFF_FIRST_MS), BACKOFF_MAX_MS);
        }
      }
    } finally {
      resubscribing = false;
    }
  };

  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await subscribe(o.timeoutMs);
  } catch (e) {
    stop();
    throw e;
  }
  return {
    get lastVersion() {
      return last;
    },
    get resubscribes() {
      return resubscribes;
    },
    close: () => stop(),
  };
}

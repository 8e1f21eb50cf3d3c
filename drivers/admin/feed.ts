/**
 * Change feeds (`feed`, `dfeed`): one subscriber reads a register's ChangeRing from the version
 * it has. Behind (catching up), it takes records as fast as its connection drains, never more
 * than a pause threshold in flight: the ring holds them, the subscriber only a position. Once
 * caught up, what commits and it has not taken is its buffer, bounded in bytes and events; a
 * subscriber that lets it fill gets `overflow` (with the last version it was sent) and its feed
 * ends. A position the ring no longer holds gets `compacted`. Never a gap, never unbounded memory.
 */
import type { FeedChange, FeedEvent } from '../../client/protocol.js';
import type { ChangeRing, Change, ChangeRecord } from '../../core/register/changes.js';
import { PairChanges } from '../../core/pair/changes.js';
import type { PeerLink, Spookd } from '../daemon/spookd.js';
import { AdminFault, showBytes } from './args.js';
import type { Call } from './handlers.js';

export const FEED_LIMITS = {
  /** Feeds one admin connection may hold open, and spookd in all. */
  perConnection: 64,
  total: 1024,
  /** A subscriber's buffer: the default and the most a request may ask. */
  bufferBytes: 1 << 20,
  maxBufferBytes: 8 << 20,
  bufferEvents: 10_000,
  maxBufferEvents: 100_000,
  /** Catching up pauses while this much is written and not taken (or the buffer's bound, if smaller). */
  pauseBytes: 64 * 1024,
  /** A pair register's ring: its log's record bound, and at most this many bytes. */
  ringBytes: 8 << 20,
  /** `progress` when caught up after unmatched versions: at most this often. */
  progressMs: 1_000,
};

/** Gauges of the feeds of one spookd (tests read them; memory stays bounded). */
export interface FeedStats {
  open: number;
  overflows: number;
  compactions: number;
  /** The largest connection backlog a feed found when about to write (bytes). */
  maxBacklog: number;
}

type FeedBody = FeedEvent extends infer E ? (E extends unknown ? Omit<E, 'peer' | 'register'> : never) : never;

/** What a feed reads: the ring, the register's version now, and how to emit a line. */
export interface FeedSource {
  ring: ChangeRing;
  current(): number;
}

export interface FeedOptions {
  fromVersion: number;
  prefix: Uint8Array;
  maxBytes: number;
  maxEvents: number;
}

/**
 * The shown form (base64, text) of the newest records' changes, made once for all their
 * subscribers; bounded, so it never holds more than a few MiB beside what the rings count.
 */
const shown = new Map<ChangeRecord, FeedChange[]>();
let shownBytes = 0;
const SHOWN_MAX_BYTES = 4 << 20;
function showRecord(rec: ChangeRecord): FeedChange[] {
  let s = shown.get(rec);
  if (!s) {
    s = rec.changes.map((c) => ({
      op: c.op,
      ...(c.key ? { key: showBytes(c.key) } : {}),
      ...(c.value ? { value: showBytes(c.value) } : {}),
      ...(c.offset !== undefined ? { offset: c.offset } : {}),
    }));
    shown.set(rec, s);
    shownBytes += rec.bytes;
    while (shownBytes > SHOWN_MAX_BYTES && shown.size > 1) {
      const [oldest] = shown.keys();
      shownBytes -= oldest.bytes;
      shown.delete(oldest);
    }
  }
  return s;
}

const hasPrefix = (key: Uint8Array | undefined, prefix: Uint8Array): boolean => {
  if (prefix.length === 0) return true;
  if (!key || key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
};

export class Feeds {
  readonly stats: FeedStats = { open: 0, overflows: 0, compactions: 0, maxBacklog: 0 };
  private readonly perConn = new Map<object, number>();

  /**
   * Start a feed: throws (before the stream starts) when over a quota; then sends from the next tick on.
   * `finished` runs when it ends by itself (`compacted`, `overflow`: its last event sent), so that the
   * stream's callbacks held for its connection go then, not when the connection closes.
   */
  open(src: FeedSource, o: FeedOptions, call: Call, emit: (ev: FeedBody) => void, finished: () => void): void {
    const n = this.perConn.get(call.conn) ?? 0;
    if (n >= FEED_LIMITS.perConnection || this.stats.open >= FEED_LIMITS.total)
      throw new AdminFault(
        'too-many-watchers',
        `${n >= FEED_LIMITS.perConnection ? `this connection has ${n} feeds open` : `spookd has ${this.stats.open} feeds open`}; the limit is ${n >= FEED_LIMITS.perConnection ? FEED_LIMITS.perConnection : FEED_LIMITS.total}`,
      );
    this.perConn.set(call.conn, n + 1);
    this.stats.open++;
    const ring = src.ring;
    let delivered = o.fromVersion;
    /** Records up to here were in the ring when the feed started: catching up on them is never an overflow. */
    const catchUpTo = ring.last;
    let seenLast = ring.last;
    let seenEpoch = ring.epoch;
    let lagBytes = 0;
    let inFlight = 0;
    let lastEmitted = delivered;
    let lastProgressAt = -Infinity;
    let scheduled = false;
    let progressTimer: NodeJS.Timeout | undefined;
    let retry: NodeJS.Timeout | undefined;
    let ended = false;

    const end = (): void => {
      if (ended) return;
      ended = true;
      ring.wakers.delete(wake);
      stopDrain();
      if (progressTimer) clearTimeout(progressTimer);
      if (retry) clearTimeout(retry);
      this.stats.open--;
      const left = (this.perConn.get(call.conn) ?? 1) - 1;
      if (left === 0) this.perConn.delete(call.conn);
      else this.perConn.set(call.conn, left);
    };
    const schedule = (): void => {
      if (scheduled || ended) return;
      scheduled = true;
      setImmediate(pump);
    };
    const pump = (): void => {
      scheduled = false;
      if (ended) return;
      if (delivered < ring.base || delivered > src.current()) {
        this.stats.compactions++;
        emit({ type: 'compacted', fromVersion: delivered, oldest: ring.base, current: src.current() });
        end();
        return finished();
      }
      const backlog0 = call.backlog();
      if (backlog0 === 0) inFlight = 0;
      // Past the catch-up, what committed and it has not taken is its buffer: bounded.
      const lagEvents = ring.last - Math.max(delivered, catchUpTo);
      const over = backlog0 + lagBytes > o.maxBytes ? 'bytes' : lagEvents + inFlight > o.maxEvents ? 'events' : undefined;
      if (over) {
        this.stats.overflows++;
        emit({ type: 'overflow', lastVersion: delivered, limit: over });
        end();
        return finished();
      }
      const pause = Math.min(FEED_LIMITS.pauseBytes, o.maxBytes);
      while (delivered < ring.last) {
        const backlog = call.backlog();
        if (backlog === 0) inFlight = 0;
        this.stats.maxBacklog = Math.max(this.stats.maxBacklog, backlog);
        if (backlog >= pause || inFlight >= o.maxEvents) {
          // The drain wakes us; a buffer under the socket's high-water mark drains without telling.
          retry ??= setTimeout(() => {
            retry = undefined;
            schedule();
          }, 10);
          return;
        }
        const rec = ring.at(delivered + 1)!;
        const all = showRecord(rec);
        const changes: FeedChange[] = [];
        for (let i = 0; i < rec.changes.length; i++) if (matches(rec.changes[i])) changes.push(all[i]);
        delivered = rec.version;
        if (rec.version > catchUpTo) lagBytes = Math.max(0, lagBytes - rec.bytes);
        if (changes.length > 0) {
          emit({ type: 'changes', version: rec.version, changes });
          inFlight++;
          lastEmitted = rec.version;
        }
      }
      if (lastEmitted < delivered) {
        const wait = lastProgressAt + FEED_LIMITS.progressMs - performance.now();
        if (wait > 0) {
          progressTimer ??= setTimeout(() => {
            progressTimer = undefined;
            schedule();
          }, wait);
          return;
        }
        lastProgressAt = performance.now();
        lastEmitted = delivered;
        emit({ type: 'progress', version: delivered });
        inFlight++;
      }
    };
    const matches = (c: Change): boolean => c.op === 'append' || hasPrefix(c.key, o.prefix);
    /** A new record (or a reset), called from inside the core: count what it adds to the buffer, send later. */
    const wake = (): void => {
      if (ring.epoch !== seenEpoch) {
        // Started again (reconciliation, a gap): count afresh; the pump tells compacted if it is behind.
        seenEpoch = ring.epoch;
        seenLast = ring.base;
        lagBytes = 0;
      }
      for (let v = Math.max(seenLast, delivered, catchUpTo) + 1; v <= ring.last; v++) lagBytes += ring.at(v)?.bytes ?? 0;
      seenLast = ring.last;
      schedule();
    };
    ring.wakers.add(wake);
    const stopDrain = call.onDrain(() => {
      inFlight = 0;
      schedule();
    });
    call.onClose(end);
    schedule();
  }
}

/** The rings of a spookd's pair registers, fed by their collapses (core/pair/changes.ts). */
export class PairRings {
  private readonly pairs = new Map<PeerLink, PairChanges>();
  private subscribed = false;

  constructor(private readonly d: Spookd) {
    // A removed peer's rings go with it (each held its link, and so its pair and every register's state).
    d.removals.add((peer) => {
      for (const l of this.pairs.keys()) if (l.name === peer && d.links.get(peer) !== l) this.pairs.delete(l);
    });
    // An added peer's rings are seeded at once, from the log it loaded (durable), as at start: later,
    // its log may hold a sequencer's collapse still being fsynced, which no feed may show.
    d.additions.add((link) => {
      for (const name of link.pair.registers.keys()) this.ring(link, name);
    });
  }

  /** Links whose registers have rings (a removed peer's go with it). */
  get links(): number {
    return this.pairs.size;
  }

  ring(link: PeerLink, register: string): ChangeRing {
    let p = this.pairs.get(link);
    if (!p) this.pairs.set(link, (p = new PairChanges(link.pair, FEED_LIMITS.ringBytes)));
    if (!this.subscribed) {
      this.subscribed = true;
      this.d.subscribers.add((l, ev) => this.pairs.get(l)?.observe(ev));
    }
    return p.ring(register);
  }
}

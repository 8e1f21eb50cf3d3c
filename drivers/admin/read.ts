/**
 * Admin API reads and change feeds (client/protocol.ts, "read and feed"): scan, size, dscan,
 * dsize, and the feed and dfeed streams, for pair and domain registers alike.
 *
 * A scan pins the register's committed state at its version V in a cursor: copies of the matching
 * entries (found in place in the register, only those copied) in byte order of their keys. Later
 * pages read the cursor, so every page is of V whatever commits meanwhile. Cursors are bounded
 * per connection, in all and in the entries they hold, die with their connection and after an
 * idle TTL; a page naming one that is gone fails `cursor-expired`, never a page of another version.
 */
import { randomBytes } from 'node:crypto';
import type { ScanEntry, ScanResult, SizeResult } from '../../client/protocol.js';
import { MapState } from '../../core/register/map.js';
import type { KeyIndex } from '../../core/register/keyspace.js';
import type { StreamState } from '../../core/register/stream.js';
import type { Spookd } from '../daemon/spookd.js';
import { AdminFault, bytesArg, echo, failsAs, num, showBytes, str, type Untrusted } from './args.js';
import { domainOf } from './domain.js';
import { FEED_LIMITS, Feeds, PairRings, type FeedSource } from './feed.js';
import type { Call, Handlers, StreamHandlers } from './handlers.js';
import { endWhenRemoved, linkOf, refuseFenced } from './pair.js';

export const SCAN_LIMITS = {
  defaultLimit: 1000,
  maxLimit: 10_000,
  /** A page stops after this many bytes of keys and values (at least one entry). */
  pageBytes: 4 << 20,
  perConnection: 16,
  total: 256,
  /** Entries all cursors together may reference. */
  totalEntries: 4_000_000,
  /**
   * Key and value bytes all cursors together may reference: a cursor keeps its version's values
   * alive after the register overwrites them (review: entries alone let 256 cursors pin many GiB).
   */
  totalBytes: 512 << 20,
  defaultTtlMs: 30_000,
  maxTtlMs: 300_000,
};

/** An entry a scan holds: its own copy of the key and the value (one buffer), and the version that wrote it. */
interface Pinned {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly version: number;
}

interface Cursor {
  id: string;
  target: string;
  version: number;
  prefix: string;
  entries: readonly Pinned[];
  /** Key and value bytes its entries reference. */
  bytes: number;
  conn: object;
  ttlMs: number;
  expires: number;
}

/** What a read names: a map or stream state, its version, and an identity for cursors. */
interface Target {
  id: string;
  name: string;
  state: MapState | StreamState;
  version: number;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** The key arena[off, off + klen) starts with `p`. */
const startsWithAt = (arena: Uint8Array, off: number, klen: number, p: Uint8Array): boolean => {
  if (klen < p.length) return false;
  for (let i = 0; i < p.length; i++) if (arena[off + i] !== p[i]) return false;
  return true;
};

const noop = (): void => {};

/** Each entry of a map's pin, read in place (key arena[off, off + klen), its value right after): no copy, no object per entry. */
function visitInPlace(pin: KeyIndex, visit: (arena: Uint8Array, off: number, klen: number, vlen: number, version: number) => void): void {
  for (const b of pin.buckets) {
    if (b === undefined || b.n === 0) continue;
    if (b.pending) b.visitSource(visit);
    else {
      const arena = b.arena;
      for (let i = 0; i < b.n; i++) visit(arena, b.offset(i), b.keyLen(i), b.valueLen(i), b.version(i));
    }
  }
}

/** Optional bytes: absent (neither `k` nor `kBase64`) gives undefined. */
const optBytes = <A extends object>(a: A, k: keyof A & string): Uint8Array | undefined =>
  (a as Record<string, unknown>)[k] === undefined && (a as Record<string, unknown>)[`${k}Base64`] === undefined
    ? undefined
    : bytesArg(a, k);

class Cursors {
  private readonly all = new Map<string, Cursor>();
  private readonly hooked = new WeakSet<object>();
  private entries = 0;
  private bytes = 0;

  /** Drops cursors idle past their TTL (at most `total` to look at). */
  private sweep(now: number): void {
    for (const [id, c] of this.all) if (c.expires <= now) this.drop(id);
  }

  private drop(id: string): void {
    const c = this.all.get(id);
    if (!c) return;
    this.all.delete(id);
    this.entries -= c.entries.length;
    this.bytes -= c.bytes;
  }

  scan(t: Target, args: Untrusted<Record<string, unknown>>, call: Call): ScanResult {
    if (!(t.state instanceof MapState))
      throw new AdminFault(
        'wrong-register-kind',
        `register ${t.name} is a stream register: scan reads map registers (read a stream with get)`,
        'register',
      );
    const now = Date.now();
    this.sweep(now);
    const prefix = optBytes(args, 'prefix') ?? new Uint8Array(0);
    const after = optBytes(args, 'after');
    const limit = num(args, 'limit', SCAN_LIMITS.defaultLimit, 1, SCAN_LIMITS.maxLimit);
    const ttlMs = num(args, 'cursorTtlMs', SCAN_LIMITS.defaultTtlMs, 10, SCAN_LIMITS.maxTtlMs);
    const version = args.version === undefined ? undefined : num(args, 'version', undefined, 0, Number.MAX_SAFE_INTEGER);
    const cursorId = str(args, 'cursor', false);
    const prefixKey = Buffer.from(prefix).toString('base64');
    let entries: readonly Pinned[];
    let v: number;
    let cursor = cursorId === undefined ? undefined : this.all.get(cursorId);
    if (cursorId !== undefined) {
      if (!cursor || cursor.target !== t.id || cursor.prefix !== prefixKey || (version !== undefined && version !== cursor.version))
        throw new AdminFault(
          'cursor-expired',
          `scan cursor ${echo(cursorId)} is not held (idle over its TTL, its connection closed, or of another register, prefix or version): scan again`,
          'cursor',
        );
      cursor.expires = now + cursor.ttlMs;
      entries = cursor.entries;
      v = cursor.version;
    } else {
      if (version !== undefined && version !== t.version)
        throw new AdminFault(
          'cursor-expired',
          `register ${t.name} is at version ${t.version}, not ${version}, and no cursor holds that version: scan again`,
          'version',
        );
      entries = this.collect(t.state, t.version, prefix, limit, call);
      v = t.version;
    }
    // The first entry after `after` (binary search: the pinned entries are in key order).
    let lo = 0;
    if (after) {
      let hi = entries.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareBytes(entries[mid].key, after) <= 0) lo = mid + 1;
        else hi = mid;
      }
    }
    const page: ScanEntry[] = [];
    let bytes = 0;
    let i = lo;
    for (; i < entries.length && page.length < limit && (page.length === 0 || bytes < SCAN_LIMITS.pageBytes); i++) {
      const e = entries[i];
      bytes += e.key.length + e.value.length;
      page.push({ key: showBytes(e.key), value: showBytes(e.value), keyVersion: e.version });
    }
    const more = i < entries.length;
    if (!more) {
      if (cursorId !== undefined) this.drop(cursorId);
      return { register: t.name, version: v, entries: page };
    }
    if (!cursor) cursor = this.pin(t, v, prefixKey, entries, call, ttlMs, now);
    return { register: t.name, version: v, entries: page, cursor: cursor.id };
  }

  /**
   * The entries of `state` (at `version`) whose key starts with `prefix`, copied, in key order. They are
   * found in place (a pin of the map, read where it lies: nothing copied of the others), counted first;
   * when they may fill more than one page (a cursor will hold them), the cursor limits are checked
   * before any is copied or sorted: a refused scan costs one pass over the keys, not a copy of the register.
   */
  private collect(state: MapState, version: number, prefix: Uint8Array, limit: number, call: Call): Pinned[] {
    const pin = state.snapshot(version);
    const out: Pinned[] = [];
    try {
      let n = 0;
      let bytes = 0;
      let smallest = Infinity;
      visitInPlace(pin, (arena, off, klen, vlen) => {
        if (!startsWithAt(arena, off, klen, prefix)) return;
        n++;
        bytes += klen + vlen;
        smallest = Math.min(smallest, klen + vlen);
      });
      // One page holds them all when they are at most `limit` and all but the last stay under pageBytes, whatever their order.
      if (n > limit || bytes - smallest >= SCAN_LIMITS.pageBytes) this.admit(call, n, bytes);
      visitInPlace(pin, (arena, off, klen, vlen, v) => {
        if (!startsWithAt(arena, off, klen, prefix)) return;
        const kv = arena.slice(off, off + klen + vlen);
        out.push({ key: kv.subarray(0, klen), value: kv.subarray(klen), version: v });
      });
    } finally {
      // The pin is not read again: a later write to the map need not copy its buckets out for it.
      for (const b of pin.buckets) if (b?.pending) b.onTouch = noop;
    }
    out.sort((a, b) => compareBytes(a.key, b.key));
    return out;
  }

  /** Throws `too-many-cursors` when a cursor of `entries` entries and `bytes` bytes would pass a limit. */
  private admit(call: Call, entries: number, bytes: number): void {
    let mine = 0;
    for (const c of this.all.values()) if (c.conn === call.conn) mine++;
    if (
      mine >= SCAN_LIMITS.perConnection ||
      this.all.size >= SCAN_LIMITS.total ||
      this.entries + entries > SCAN_LIMITS.totalEntries ||
      this.bytes + bytes > SCAN_LIMITS.totalBytes
    )
      throw new AdminFault(
        'too-many-cursors',
        mine >= SCAN_LIMITS.perConnection
          ? `this connection holds ${mine} scan cursors; the limit is ${SCAN_LIMITS.perConnection}`
          : `spookd holds ${this.all.size} scan cursors over ${this.entries} entries and ${this.bytes} bytes; ` +
              `the limits are ${SCAN_LIMITS.total}, ${SCAN_LIMITS.totalEntries} and ${SCAN_LIMITS.totalBytes} (this scan: ${bytes} bytes)`,
      );
  }

  private pin(t: Target, version: number, prefix: string, entries: readonly Pinned[], call: Call, ttlMs: number, now: number): Cursor {
    let bytes = 0;
    for (const e of entries) bytes += e.key.length + e.value.length;
    this.admit(call, entries.length, bytes);
    const c: Cursor = {
      id: randomBytes(12).toString('base64url'),
      target: t.id,
      version,
      prefix,
      entries,
      bytes,
      conn: call.conn,
      ttlMs,
      expires: now + ttlMs,
    };
    this.all.set(c.id, c);
    this.entries += entries.length;
    this.bytes += bytes;
    if (!this.hooked.has(call.conn)) {
      this.hooked.add(call.conn);
      call.onConnectionClose(() => {
        for (const [id, x] of this.all) if (x.conn === call.conn) this.drop(id);
      });
    }
    return c;
  }
}

function size(t: Target): SizeResult {
  if (t.state instanceof MapState)
    return { register: t.name, version: t.version, kind: 'map', keys: t.state.size(), bytes: t.state.fullTransferBytes() };
  return { register: t.name, version: t.version, kind: 'stream', length: t.state.size(), bytes: t.state.size() };
}

export function readHandlers(d: Spookd): Handlers<'scan' | 'size' | 'dscan' | 'dsize'> {
  const cursors = new Cursors();
  /** The register, once what its pair holds is durable (Spookd.durableRead): `then` runs on it. */
  const pairTarget = <T>(args: Untrusted<{ peer: string; register: string }>, then: (t: Target) => T): T | Promise<T> => {
    const link = linkOf(d, str(args, 'peer', false));
    refuseFenced(link);
    const register = str(args, 'register');
    const r = failsAs('unknown-register', 'register', () => link.pair.register(register), register);
    return d.durableRead(link, () => {
      refuseFenced(link);
      return then({ id: `pair:${link.name}:${register}`, name: register, state: r.state, version: r.version });
    });
  };
  return {
    scan: (args, call) => pairTarget(args, (t) => cursors.scan(t, args, call)),
    size: (args) => pairTarget(args, size),
    dscan: (args, call) => cursors.scan(domainTarget(d, args), args, call),
    dsize: (args) => size(domainTarget(d, args)),
  };
}

function domainTarget(d: Spookd, args: Untrusted<{ domain: string; register: string }>): Target {
  const h = domainOf(d, str(args, 'domain', false));
  const register = str(args, 'register');
  const reg = h.node.state.registers.get(register);
  if (!reg) throw new AdminFault('unknown-register', `no register named ${echo(register)} in domain ${h.cfg.name}`, 'register');
  return { id: `domain:${h.cfg.name}:${register}`, name: register, state: reg.state, version: reg.version };
}

/** Feed arguments common to pairs and domains. */
function feedOptions(args: Untrusted<Record<string, unknown>>, current: number) {
  return {
    fromVersion: num(args, 'fromVersion', current, 0, Number.MAX_SAFE_INTEGER),
    prefix: optBytes(args, 'prefix') ?? new Uint8Array(0),
    maxBytes: num(args, 'maxBufferBytes', FEED_LIMITS.bufferBytes, 1024, FEED_LIMITS.maxBufferBytes),
    maxEvents: num(args, 'maxBufferEvents', FEED_LIMITS.bufferEvents, 1, FEED_LIMITS.maxBufferEvents),
  };
}

/** The feeds of one spookd: their gauges, for tests and metrics. */
export const feedsOf = new WeakMap<Spookd, Feeds>();

export function readStreams(d: Spookd): StreamHandlers<'feed' | 'dfeed'> {
  const feeds = new Feeds();
  feedsOf.set(d, feeds);
  const rings = new PairRings(d);
  // Every pair register keeps its recent changes from the start (seeded with what its log holds after a
  // restart), so a watcher that reconnects finds what committed while it was away, not only what the log kept.
  for (const link of d.links.values()) for (const name of link.pair.registers.keys()) rings.ring(link, name);
  return {
    feed: (args, call, emit, end) => {
      const link = linkOf(d, str(args, 'peer', false));
      refuseFenced(link);
      const register = str(args, 'register');
      const r = failsAs('unknown-register', 'register', () => link.pair.register(register), register);
      const o = feedOptions(args, r.version);
      const src: FeedSource = { ring: rings.ring(link, register), current: () => r.version };
      feeds.open(
        src,
        o,
        call,
        (ev) => emit(link.name, { register, ...ev }),
        () => end(),
      );
      // Its ring goes with the peer (PairRings): the feed ends, told so, rather than wait for ever.
      endWhenRemoved(d, link, call, end, `the feed of register ${register}`);
    },
    dfeed: (args, call, emit, end) => {
      const h = domainOf(d, str(args, 'domain', false));
      const register = str(args, 'register');
      const reg = () => h.node.state.registers.get(register);
      const r0 = reg();
      if (!r0) throw new AdminFault('unknown-register', `no register named ${echo(register)} in domain ${h.cfg.name}`, 'register');
      const o = feedOptions(args, r0.version);
      const src: FeedSource = { ring: h.changes.sync(register, r0.version), current: () => reg()?.version ?? 0 };
      feeds.open(
        src,
        o,
        call,
        (ev) => emit(h.cfg.name, { register, ...ev }),
        () => end(),
      );
    },
  };
}

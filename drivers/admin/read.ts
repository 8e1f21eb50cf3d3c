/**
 * Admin API reads and change feeds (client/protocol.ts, "read and feed"): scan, size, dscan,
 * dsize, and the feed and dfeed streams, for pair and domain registers alike.
 *
 * A scan pins the register's committed state at its version V in a cursor: copies of the matching
 * entries (found in place in the register, only those copied) in byte order of their keys,
 * gathered a slice per turn of the event loop (scan.ts). Later pages read the cursor, so every
 * page is of V whatever commits meanwhile. Cursors are bounded per connection, in all and in the
 * entries they hold, die with their connection and after an idle TTL; a page naming one that is
 * gone fails `cursor-expired`, never a page of another version.
 */
import { randomBytes } from 'node:crypto';
import type { ScanEntry, ScanResult, SizeResult } from '../../client/protocol.js';
import { MapState } from '../../core/register/map.js';
import type { StreamState } from '../../core/register/stream.js';
import type { Spookd } from '../daemon/spookd.js';
import { AdminFault, bytesArg, echo, failsAs, num, showBytes, str, type Untrusted } from './args.js';
import { domainOf } from './domain.js';
import { FEED_LIMITS, Feeds, PairRings, type FeedSource } from './feed.js';
import type { Call, Handlers, StreamHandlers } from './handlers.js';
import { endWhenRemoved, linkOf, refuseFenced } from './pair.js';
import { collectScan, countScan, nextTurn, OneAtATime, releasePin, ScanGone, type ScanSet } from './scan.js';

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

interface Cursor {
  id: string;
  target: string;
  version: number;
  prefix: string;
  /** Its entries; undefined while they are gathered (its id is not given out before). */
  set: ScanSet | undefined;
  /** Entries and key and value bytes counted against the limits (reserved when the cursor opens). */
  entries: number;
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

/**
 * Each pair's own number, in a cursor's target: a peer removed and added again (a reload that rekeys it: another
 * pair, from an empty store) names a register of the same names, but a cursor of the old pair is not of it. Before,
 * its pages went on, of the old pair's register, labelled with a version of the new one.
 */
const pairIds = new WeakMap<object, number>();
let nextPairId = 1;
function pairIdOf(link: object): number {
  let n = pairIds.get(link);
  if (n === undefined) pairIds.set(link, (n = nextPairId++));
  return n;
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
    this.entries -= c.entries;
    this.bytes -= c.bytes;
  }

  async scan(t: Target, args: Untrusted<Record<string, unknown>>, call: Call): Promise<ScanResult> {
    if (!(t.state instanceof MapState))
      throw new AdminFault(
        'wrong-register-kind',
        `register ${t.name} is a stream register: scan reads map registers (read a stream with get)`,
        'register',
      );
    // The monotonic clock: a step of the wall clock must neither expire every cursor nor keep dead ones.
    const now = performance.now();
    this.sweep(now);
    const prefix = optBytes(args, 'prefix') ?? new Uint8Array(0);
    const after = optBytes(args, 'after');
    const limit = num(args, 'limit', SCAN_LIMITS.defaultLimit, 1, SCAN_LIMITS.maxLimit);
    const ttlMs = num(args, 'cursorTtlMs', SCAN_LIMITS.defaultTtlMs, 10, SCAN_LIMITS.maxTtlMs);
    const version = args.version === undefined ? undefined : num(args, 'version', undefined, 0, Number.MAX_SAFE_INTEGER);
    const cursorId = str(args, 'cursor', false);
    const prefixKey = Buffer.from(prefix).toString('base64');
    if (cursorId !== undefined) {
      const cursor = this.all.get(cursorId);
      if (!cursor?.set || cursor.target !== t.id || cursor.prefix !== prefixKey || (version !== undefined && version !== cursor.version))
        throw new AdminFault(
          'cursor-expired',
          `scan cursor ${echo(cursorId)} is not held (idle over its TTL, its connection closed, its peer removed or rekeyed, or of another register, prefix or version): scan again`,
          'cursor',
        );
      cursor.expires = now + cursor.ttlMs;
      const r = page(t.name, cursor.version, cursor.set, after, limit);
      if (r.more) return { ...r.result, cursor: cursor.id };
      this.drop(cursorId);
      return r.result;
    }
    if (version !== undefined && version !== t.version)
      throw new AdminFault(
        'cursor-expired',
        `register ${t.name} is at version ${t.version}, not ${version}, and no cursor holds that version: scan again`,
        'version',
      );
    const v = t.version;
    const { set, cursor } = await this.gather(t, v, prefix, prefixKey, limit, ttlMs, call);
    const r = page(t.name, v, set, after, limit);
    if (cursor === undefined) return r.result;
    if (r.more) {
      cursor.set = set;
      cursor.expires = performance.now() + ttlMs;
      return { ...r.result, cursor: cursor.id };
    }
    this.drop(cursor.id); // `after` skipped to the end: nothing is left for a cursor
    return r.result;
  }

  /**
   * The entries of `t` (at version `v`) under `prefix`, copied, in key order, gathered over several
   * turns from a pin of the map. They are counted first; when they may fill more than one page (a
   * cursor will hold them), the cursor limits are checked and its share reserved before any is
   * copied: a refused scan costs one pass over the keys, not a copy of the register.
   */
  private async gather(
    t: Target,
    v: number,
    prefix: Uint8Array,
    prefixKey: string,
    limit: number,
    ttlMs: number,
    call: Call,
  ): Promise<{ set: ScanSet; cursor: Cursor | undefined }> {
    const pin = (t.state as MapState).snapshot(v);
    let closed = false;
    call.onClose(() => (closed = true));
    let cursor: Cursor | undefined;
    const check = (): void => {
      if (closed || (cursor !== undefined && !this.all.has(cursor.id))) throw new ScanGone();
    };
    try {
      const count = await countScan(pin, prefix, nextTurn, check);
      // One page holds them all when they are at most `limit` and all but the last stay under pageBytes, whatever their order.
      if (count.entries > limit || count.bytes - count.smallest >= SCAN_LIMITS.pageBytes)
        cursor = this.open(t, v, prefixKey, count.entries, count.bytes, call, ttlMs);
      return { set: await collectScan(pin, prefix, count, nextTurn, check), cursor };
    } catch (e) {
      releasePin(pin);
      if (cursor) this.drop(cursor.id);
      if (e instanceof ScanGone)
        throw new AdminFault('cursor-expired', `scan of ${t.name} ended while it was gathered: its connection closed`, 'cursor');
      throw e;
    }
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

  /** A cursor admitted and counted now, its entries to come (not swept while they are gathered). */
  private open(t: Target, version: number, prefix: string, entries: number, bytes: number, call: Call, ttlMs: number): Cursor {
    this.admit(call, entries, bytes);
    const c: Cursor = {
      id: randomBytes(12).toString('base64url'),
      target: t.id,
      version,
      prefix,
      set: undefined,
      entries,
      bytes,
      conn: call.conn,
      ttlMs,
      expires: Infinity,
    };
    this.all.set(c.id, c);
    this.entries += entries;
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

/** The page of `set` from the first key above `after`: at most `limit` entries and about pageBytes (at least one). */
function page(
  name: string,
  version: number,
  set: ScanSet,
  after: Uint8Array | undefined,
  limit: number,
): { result: ScanResult; more: boolean } {
  const entries: ScanEntry[] = [];
  let bytes = 0;
  let i = after ? set.firstAfter(after) : 0;
  for (; i < set.length && entries.length < limit && (entries.length === 0 || bytes < SCAN_LIMITS.pageBytes); i++) {
    bytes += set.size(i);
    entries.push({ key: showBytes(set.key(i)), value: showBytes(set.value(i)), keyVersion: set.version(i) });
  }
  return { result: { register: name, version, entries }, more: i < set.length };
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
      return then({ id: `pair:${link.name}#${pairIdOf(link)}:${register}`, name: register, state: r.state, version: r.version });
    });
  };
  // A first page gathers (scan.ts): one at a time, its target read when its turn comes (a pair's
  // once durable), so the version it pins is the register's then. A later page reads its cursor.
  const gathers = new OneAtATime();
  const gathered = <T>(args: Untrusted<{ cursor?: string }>, f: () => T | Promise<T>): Promise<T> =>
    args.cursor === undefined ? gathers.run(f) : Promise.resolve().then(f);
  return {
    scan: (args, call) => gathered(args, async () => pairTarget(args, (t) => cursors.scan(t, args, call))),
    size: (args) => pairTarget(args, size),
    dscan: (args, call) => gathered(args, () => cursors.scan(domainTarget(d, args), args, call)),
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

/**
 * What a scan cursor holds, and how it is gathered without stopping the daemon. A scan pins the
 * map (copy-on-write buckets, O(buckets) to take) and reads the pin a slice at a time, between
 * turns of the event loop: a count of the entries under the prefix, then copies of them, then
 * their key order. A register of 300,000 keys took one turn of ~1.8 s before (every entry copied
 * into an array of its own, then sorted by a byte comparison); now no turn holds more than a slice.
 *
 * While the copies are made, a bucket the register is about to write is copied then, in place,
 * before the write (as background snapshots do, core/register/slices.ts): the pin never holds a
 * copy of a bucket for the copying part. The count before it keeps copy-on-write, so a refused
 * scan (cursor limits) costs a pass over the keys, never a copy of them.
 *
 * Gathers run one at a time (OneAtATime): one pin at most copies buckets on write, and a turn of
 * the loop runs one slice in all, however many scans are asked at once (review, 2026-12-07: 128
 * concurrent gathers held 2.5 GiB of bucket copies, 256 made a turn of 1.6 s). A slice is
 * measured in work units, an entry plus one per 256 octets it copies or 64 it may compare, so long
 * keys make shorter slices.
 */
import type { Bucket, KeyIndex } from '../../core/register/keyspace.js';
import { copyBytes } from '../../wire/buffer.js';

/** Work units per turn of the event loop (an entry read, counted, copied or sorted, plus its octets): a few milliseconds. */
export const SCAN_SLICE = 32_768;
/** Entries of keys up to 64 octets sorted at once before the sorted runs are merged (a slice of them per turn). */
const SORT_RUN = 8_192;

/** Units of copying `n` octets, and of comparing keys of `n` octets (the entry's own unit included). */
const copyUnits = (n: number): number => 1 + (n >>> 8);
const compareUnits = (n: number): number => 1 + (n >>> 6);

/** Runs what it is given one after the other: the next starts when the last has settled. */
export class OneAtATime {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(f: () => T | Promise<T>): Promise<T> {
    const r = this.tail.then(f);
    this.tail = r.then(
      () => undefined,
      () => undefined,
    );
    return r;
  }
}

/** Entries copied by scans since the process started (what a scan's work is measured by). */
export const scanStats = { entriesCopied: 0 };

/** Waits for the next turn of the event loop (injected: tests count the turns a scan takes). */
export type NextTurn = () => Promise<void>;
export const nextTurn: NextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Why a scan stopped before it was gathered: its request or cursor is gone (ScanGone is caught by the caller). */
export class ScanGone extends Error {}

/** Totals of the entries under a prefix: what the cursor limits are checked against before anything is copied. */
export interface ScanCount {
  entries: number;
  bytes: number;
  /** The smallest entry's key and value bytes (Infinity when none). */
  smallest: number;
}

/**
 * A scan's entries at one version, in byte order of their keys: keys and values in one buffer,
 * the rest in typed arrays (no object per entry). Entry i (in key order) is at position order[i].
 */
export class ScanSet {
  constructor(
    private readonly data: Uint8Array,
    private readonly offs: Int32Array,
    private readonly klens: Int32Array,
    private readonly vlens: Int32Array,
    private readonly versions: Float64Array,
    private readonly order: Int32Array,
  ) {}

  get length(): number {
    return this.order.length;
  }

  /** Key and value bytes held. */
  get bytes(): number {
    return this.data.length;
  }

  key(i: number): Uint8Array {
    const p = this.order[i];
    return this.data.subarray(this.offs[p], this.offs[p] + this.klens[p]);
  }

  value(i: number): Uint8Array {
    const p = this.order[i];
    const at = this.offs[p] + this.klens[p];
    return this.data.subarray(at, at + this.vlens[p]);
  }

  version(i: number): number {
    return this.versions[this.order[i]];
  }

  /** Key and value bytes of entry i. */
  size(i: number): number {
    const p = this.order[i];
    return this.klens[p] + this.vlens[p];
  }

  /** The first entry whose key is above `after` (binary search), or length. */
  firstAfter(after: Uint8Array): number {
    let lo = 0;
    let hi = this.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes(this.key(mid), after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
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

type Visit = (arena: Uint8Array, off: number, klen: number, vlen: number, version: number) => void;

/** Bucket k's entries, in place while it is pending (not written since the pin), else from its copy. */
function visitBucket(k: Bucket, visit: Visit): void {
  if (k.pending) k.visitSource(visit);
  else {
    const arena = k.arena;
    for (let i = 0; i < k.n; i++) visit(arena, k.offset(i), k.keyLen(i), k.valueLen(i), k.version(i));
  }
}

/**
 * Visits every entry of `pin` a slice at a time (SCAN_SLICE units a turn, as `units` counts the work done), `check` before
 * each turn's work (it throws ScanGone to stop). With `early`, a bucket the register is about to
 * write is visited then, in place, and dropped; without, the table copies it out for the pin.
 */
async function visitSliced(
  pin: KeyIndex,
  visit: Visit,
  units: () => number,
  turn: NextTurn,
  check: () => void,
  early: boolean,
): Promise<void> {
  const buckets = pin.buckets as (Bucket | undefined)[];
  let broken: unknown;
  if (early)
    for (let b = 0; b < buckets.length; b++) {
      const k = buckets[b];
      if (k?.pending)
        k.onTouch = () => {
          // Inside a write to the register (table.ts touch): a fault here fails the scan, never the write.
          buckets[b] = undefined;
          try {
            visitBucket(k, visit);
          } catch (e) {
            broken ??= e;
          }
        };
    }
  let b = 0;
  while (b < buckets.length) {
    check();
    if (broken !== undefined) throw broken;
    const end = units() + SCAN_SLICE;
    for (; b < buckets.length && units() < end; b++) {
      const k = buckets[b];
      if (k === undefined || k.n === 0) continue;
      if (early) {
        k.onTouch = undefined; // read here
        buckets[b] = undefined;
      }
      visitBucket(k, visit);
    }
    if (b < buckets.length) await turn();
  }
  if (broken !== undefined) throw broken;
}

/** Lets go of a pin: later writes to the register copy nothing for it. */
export function releasePin(pin: KeyIndex): void {
  for (const k of pin.buckets) if (k?.pending) k.onTouch = () => {};
}

/** The entries of `pin` under `prefix`: their number and bytes, counted a slice at a time. */
export async function countScan(pin: KeyIndex, prefix: Uint8Array, turn: NextTurn, check: () => void): Promise<ScanCount> {
  const c: ScanCount = { entries: 0, bytes: 0, smallest: Infinity };
  const each = compareUnits(prefix.length);
  let units = 0;
  await visitSliced(
    pin,
    (arena, off, klen, vlen) => {
      units += each;
      if (!startsWithAt(arena, off, klen, prefix)) return;
      c.entries++;
      c.bytes += klen + vlen;
      if (klen + vlen < c.smallest) c.smallest = klen + vlen;
    },
    () => units,
    turn,
    check,
    false,
  );
  return c;
}

/**
 * Copies of the `count` entries of `pin` under `prefix`, in key order, gathered and sorted a slice
 * at a time. The pin is released when this returns or throws.
 */
export async function collectScan(
  pin: KeyIndex,
  prefix: Uint8Array,
  count: ScanCount,
  turn: NextTurn,
  check: () => void,
): Promise<ScanSet> {
  const n = count.entries;
  const data = new Uint8Array(count.bytes);
  const offs = new Int32Array(n);
  const klens = new Int32Array(n);
  const vlens = new Int32Array(n);
  const versions = new Float64Array(n);
  let i = 0;
  let at = 0;
  let units = 0;
  const each = compareUnits(prefix.length);
  try {
    await visitSliced(
      pin,
      (arena, off, klen, vlen, version) => {
        units += each;
        if (!startsWithAt(arena, off, klen, prefix)) return;
        units += copyUnits(klen + vlen);
        // The pin is one version: the count it gave is exact; anything else is a broken pin, not a short buffer.
        if (i === n || at + klen + vlen > data.length) throw new Error(`scan: more entries under the prefix than the ${n} counted`);
        copyBytes(data, at, arena, off, klen + vlen);
        offs[i] = at;
        klens[i] = klen;
        vlens[i] = vlen;
        versions[i] = version;
        i++;
        scanStats.entriesCopied++;
        at += klen + vlen;
      },
      () => units,
      turn,
      check,
      true,
    );
  } finally {
    releasePin(pin);
  }
  if (i !== n) throw new Error(`scan: ${i} entries under the prefix, ${n} counted`);
  const order = await sortByKey(data, offs, klens, turn, check);
  return new ScanSet(data, offs, klens, vlens, versions, order);
}

/**
 * Positions 0..n-1 ordered by their keys' bytes: each key as a latin1 string (one code unit per
 * octet, so string order is byte order, compared natively: ~3x a byte loop), runs sorted and
 * merged a slice per turn. A comparison is charged by the keys' mean length (a writer may give
 * them long common prefixes), and runs are shorter for long keys.
 */
async function sortByKey(data: Uint8Array, offs: Int32Array, klens: Int32Array, turn: NextTurn, check: () => void): Promise<Int32Array> {
  const n = offs.length;
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
  const keys: string[] = new Array<string>(n);
  let keyBytes = 0;
  let work = 0;
  /** Charge `w` units: true once a slice's worth is spent (then a turn is due). */
  const due = (w: number): boolean => {
    work += w;
    if (work < SCAN_SLICE) return false;
    work = 0;
    return true;
  };
  const next = async (): Promise<void> => {
    await turn();
    check();
  };
  for (let i = 0; i < n; i++) {
    keys[i] = bytes.toString('latin1', offs[i], offs[i] + klens[i]);
    keyBytes += klens[i];
    if (due(copyUnits(klens[i]))) await next();
  }
  const each = compareUnits(n === 0 ? 0 : keyBytes / n);
  const run = Math.max(16, Math.floor(SORT_RUN / each));
  const cmp = (a: number, b: number): number => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0);
  let src = new Int32Array(n);
  for (let i = 0; i < n; i++) src[i] = i;
  for (let s = 0; s < n; s += run) {
    const end = Math.min(n, s + run);
    src.subarray(s, end).sort(cmp);
    if (due((end - s) * Math.log2(end - s + 1) * each)) await next();
  }
  let dst = new Int32Array(n);
  const step = Math.max(1, Math.floor(SCAN_SLICE / each));
  for (let width = run; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(n, lo + width);
      const hi = Math.min(n, lo + 2 * width);
      let a = lo;
      let b = mid;
      let o = lo;
      while (o < hi) {
        const start = o;
        const end = Math.min(hi, o + step);
        for (; o < end; o++) dst[o] = b >= hi || (a < mid && keys[src[a]] <= keys[src[b]]) ? src[a++] : src[b++];
        if (due((end - start) * each)) await next();
      }
    }
    [src, dst] = [dst, src];
  }
  return src;
}

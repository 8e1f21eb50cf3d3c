/**
 * What a scan of a large register costs the daemon's event loop: the admin `scan` handler
 * (drivers/admin/read.ts) over a map of `keys` entries, first page and then every page through
 * its cursor, with the longest turn of the event loop measured by a setImmediate loop beside it.
 * The baseline, same run: the same entries gathered the way scans were before 2026-12-07, in one
 * turn (a copy of each entry in an array of its own, then a sort by a byte comparison).
 *
 *   node dist/bench/scan.js [keys=300000] [limit=1000]
 */
import { MapState } from '../core/register/map.js';
import type { Bucket } from '../core/register/keyspace.js';
import { readHandlers } from '../drivers/admin/read.js';
import { compareBytes } from '../drivers/admin/scan.js';
import type { Handlers } from '../drivers/admin/handlers.js';
import type { Spookd } from '../drivers/daemon/spookd.js';

const keys = Number(process.argv[2] ?? 300_000);
const limit = Number(process.argv[3] ?? 1_000);
const enc = new TextEncoder();

const st = new MapState(1);
const value = new Uint8Array(50).fill(0x78);
for (let j = 0; j < keys; j++) st.put(enc.encode(`key-${String((j * 7919) % keys).padStart(8, '0')}`), value, 1);

/** The longest gap between turns of the event loop while `f` runs, and its wall and CPU time. */
async function timed(f: () => Promise<void>): Promise<{ ms: number; cpuMs: number; longestTurnMs: number }> {
  let longest = 0;
  let last = performance.now();
  let running = true;
  const tick = (): void => {
    const t = performance.now();
    longest = Math.max(longest, t - last);
    last = t;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  await new Promise((r) => setTimeout(r, 20));
  longest = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  await new Promise((r) => setImmediate(r));
  running = false;
  return {
    ms: Math.round(ms),
    cpuMs: Math.round((c.user + c.system) / 1000),
    longestTurnMs: Math.round(Math.max(longest, performance.now() - last)),
  };
}

const link = { name: 'b', fenced: undefined, pair: { fenced: false, register: () => ({ state: st, version: 1 }) } };
const daemon = { link: () => link, durableRead: (_l: unknown, read: () => unknown) => read() } as unknown as Spookd;
const h = readHandlers(daemon) as Handlers<'scan'>;
const call = { onClose: () => {}, onConnectionClose: () => {}, conn: {}, backlog: () => 0, onDrain: () => () => {} };

let pages = 0;
let seen = 0;
const firstPage = await timed(async () => {
  await h.scan({ peer: 'b', register: 'config', limit }, call);
});
const allPages = await timed(async () => {
  let r = await h.scan({ peer: 'b', register: 'config', limit }, call);
  for (pages = 1, seen = r.entries.length; r.cursor; pages++) {
    r = await h.scan({ peer: 'b', register: 'config', limit, cursor: r.cursor, after: r.entries.at(-1)!.key.text }, call);
    seen += r.entries.length;
    await new Promise((res) => setImmediate(res)); // the client's turn
  }
});
if (seen !== keys) throw new Error(`bench: the pages held ${seen} keys, not ${keys}`);

const oneTurn = await timed(async () => {
  const out: { key: Uint8Array; value: Uint8Array; version: number }[] = [];
  for (const b of st.snapshot(1).buckets as (Bucket | undefined)[]) {
    if (b === undefined || b.n === 0) continue;
    const a = b.arena;
    for (let i = 0; i < b.n; i++) {
      const kv = a.slice(b.offset(i), b.offset(i) + b.keyLen(i) + b.valueLen(i));
      out.push({ key: kv.subarray(0, b.keyLen(i)), value: kv.subarray(b.keyLen(i)), version: b.version(i) });
    }
  }
  out.sort((x, y) => compareBytes(x.key, y.key));
});

console.log(JSON.stringify({ keys, limit, pages, firstPage, allPages, baselineGatherInOneTurn: oneTurn, node: process.version }, null, 2));

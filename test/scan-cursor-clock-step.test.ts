import { afterEach, describe, expect, it, vi } from 'vitest';
import { MapState } from '../core/register/map.js';
import { readHandlers, SCAN_LIMITS } from '../drivers/admin/read.js';
import type { Spookd } from '../drivers/daemon/spookd.js';

/**
 * Review 39 (time): scan cursors' idle TTL (drivers/admin/read.ts, `expires`, swept with
 * Date.now()) is on the wall clock. A step forward (NTP, VM restore) expires every cursor at once:
 * a scan whose next page comes 1 ms later fails `cursor-expired`. A step back an hour keeps every
 * cursor (and the up to 512 MiB of entries they pin) an hour past its TTL: a client that asked for
 * 1 s cursors is refused `too-many-cursors` by its own dead ones.
 */
const enc = new TextEncoder();
const HOUR = 3_600_000;
const key = (i: number): string => `key-${String(i).padStart(6, '0')}`;

afterEach(() => vi.restoreAllMocks());

function harness() {
  const st = new MapState(5);
  for (let i = 0; i < 3_000; i++) st.put(enc.encode(key(i)), enc.encode('v'), 1);
  const reg = { state: st, version: 1 };
  const h = { cfg: { name: 'd' }, node: { state: { registers: new Map([['kv', reg]]) } } };
  const daemon = { domains: new Map([['d', h]]), domain: () => h } as unknown as Spookd;
  const handlers = readHandlers(daemon);
  const call = { onClose: () => {}, onConnectionClose: () => {}, conn: {}, backlog: () => 0, onDrain: () => () => {} };
  return { handlers, call };
}

const code = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'ok',
    (e: { code?: string; message: string }) => e.code ?? e.message,
  );

describe('scan cursors and a wall-clock step', () => {
  it('a cursor of 30 s still serves its next page 1 ms later although the clock stepped forward an hour', async () => {
    const { handlers, call } = harness();
    const first = await handlers.dscan({ domain: 'd', register: 'kv', limit: 1000 }, call);
    expect(first.cursor).toBeDefined();
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + HOUR);
    const next = handlers.dscan(
      { domain: 'd', register: 'kv', limit: 1000, cursor: first.cursor, after: first.entries.at(-1)!.key.text },
      call,
    );
    expect(await code(next)).toBe('ok');
  });

  it('cursors idle past their 1 s TTL do not refuse a new scan although the clock stepped back an hour', async () => {
    const { handlers, call } = harness();
    for (let i = 0; i < SCAN_LIMITS.perConnection; i++) {
      const r = await handlers.dscan({ domain: 'd', register: 'kv', limit: 1000, cursorTtlMs: 1000 }, call);
      expect(r.cursor).toBeDefined();
    }
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() - HOUR);
    await new Promise((r) => setTimeout(r, 1500)); // past their TTL, idle
    expect(await code(handlers.dscan({ domain: 'd', register: 'kv', limit: 1000, cursorTtlMs: 10 }, call))).toBe('ok');
  });
});

/**
 * Honest connects, the pure parts (core/wrap/connect.ts) and the hooks' bookkeeping
 * (drivers/wrap/connects.ts): the SYN patience model, when a carrier counts as down, what a
 * far side's dial failure is repeated as, the deadlines of unconfirmed connections, and the
 * map writes (only on change, refusals forgotten on success).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConnectDeadlines,
  countsDown,
  countsDownAt,
  defaultConnectTimeoutMs,
  dialFailureOf,
  DOWN_GRACE_MS,
  ERRNO,
  memoErrno,
  tcpSynPatienceMs,
  DIAL_FAILURES,
} from '../core/wrap/connect.js';
import { hostDefaultConnectTimeoutMs } from '../drivers/wrap/hold.js';
import { connectTimeoutText, HonestConnects, type ConnectHooks } from '../drivers/wrap/connects.js';
import { origKey } from '../drivers/bpf/wrap-hooks.js';
import { ORIG_DST } from '../wire/layouts.js';
import { CloseCode, RecordType, type Target } from '../wire/wrap.js';
import { ACK_DELAY_MS, WrapSession, type WrapEvent } from '../core/wrap/session.js';

describe('SYN patience', () => {
  it("follows the kernel's tcp_model_timeout with rto_base 1 s: 127 s for tcp_syn_retries = 6", () => {
    expect(tcpSynPatienceMs(6)).toBe(127_000); // 1 + 2 + 4 + ... + 64
    expect(tcpSynPatienceMs(0)).toBe(1_000);
    expect(tcpSynPatienceMs(2)).toBe(7_000);
    expect(tcpSynPatienceMs(7)).toBe(247_000); // then 120 s per retry
    expect(tcpSynPatienceMs(-3)).toBe(1_000);
  });

  it('is the default connect timeout, Linux default when unknown; the host value is read from /proc', () => {
    expect(defaultConnectTimeoutMs(undefined)).toBe(127_000);
    expect(defaultConnectTimeoutMs(Number.NaN)).toBe(127_000);
    expect(defaultConnectTimeoutMs(3)).toBe(15_000);
    const dir = mkdtempSync(join(tmpdir(), 'spook-syn-'));
    writeFileSync(join(dir, 'r'), '2\n');
    expect(hostDefaultConnectTimeoutMs(join(dir, 'r'))).toBe(7_000);
    expect(hostDefaultConnectTimeoutMs(join(dir, 'absent'))).toBe(127_000);
  });
});

describe('carrier down', () => {
  it('counts only after the grace: a redial within it never flips connects', () => {
    expect(countsDown(undefined, 10_000)).toBe(false);
    expect(countsDown(1_000, 1_000 + DOWN_GRACE_MS - 1)).toBe(false);
    expect(countsDown(1_000, 1_000 + DOWN_GRACE_MS)).toBe(true);
    expect(countsDownAt(1_000)).toBe(1_000 + DOWN_GRACE_MS);
    expect(countsDownAt(undefined)).toBeUndefined();
  });
});

describe('dial failures', () => {
  it('are named by the errno the CLOSE text starts with; anything else is other', () => {
    expect(dialFailureOf('ECONNREFUSED 10.0.0.2:22: connect ECONNREFUSED 10.0.0.2:22')).toBe('refused');
    expect(dialFailureOf('EHOSTUNREACH 10.0.0.9:22: connect EHOSTUNREACH')).toBe('host-unreachable');
    expect(dialFailureOf('ENETUNREACH x')).toBe('net-unreachable');
    expect(dialFailureOf('ETIMEDOUT x')).toBe('timeout');
    // An older peer's text (the address first), hostile text, nothing: never remembered.
    expect(dialFailureOf('10.0.0.2:22: connect ECONNREFUSED 10.0.0.2:22')).toBe('other');
    expect(dialFailureOf('ECONNREFUSEDX')).toBe('other');
    expect(dialFailureOf('constructor')).toBe('other');
    expect(dialFailureOf('__PROTO__ x')).toBe('other');
    expect(dialFailureOf('')).toBe('other');
    expect(dialFailureOf('\u0000'.repeat(70_000))).toBe('other');
  });

  it('refused and unreachable are repeated with their errno; a timeout or an unknown one is not', () => {
    expect(memoErrno('refused')).toBe(ERRNO.ECONNREFUSED);
    expect(memoErrno('host-unreachable')).toBe(ERRNO.EHOSTUNREACH);
    expect(memoErrno('net-unreachable')).toBe(ERRNO.ENETUNREACH);
    expect(memoErrno('timeout')).toBeUndefined();
    expect(memoErrno('other')).toBeUndefined();
    expect(DIAL_FAILURES.length).toBe(5);
  });
});

describe('connect deadlines', () => {
  it('expire in order and settle on confirmation', () => {
    const d = new ConnectDeadlines<string>();
    d.add(2, 500, 'a');
    d.add(4, 100, 'b');
    d.add(6, 300, 'c');
    expect(d.earliest()).toBe(100);
    expect(d.settle(4)).toBe('b');
    expect(d.earliest()).toBe(300);
    expect(d.expired(299)).toEqual([]);
    expect(d.expired(300)).toEqual([{ conn: 6, info: 'c' }]);
    expect(d.size).toBe(1);
    expect(d.expired(1_000)).toEqual([{ conn: 2, info: 'a' }]);
    expect(d.size).toBe(0);
    expect(d.earliest()).toBeUndefined();
  });
});

describe('HonestConnects', () => {
  const dst: Target = { family: 4, address: '10.77.1.2', port: 22 };
  const fake = (): ConnectHooks & { calls: string[] } => {
    const calls: string[] = [];
    return {
      calls,
      setDown: (m) => calls.push(`down ${[...m].join(';')}`),
      rememberRefusal: (t, e, ttl) => calls.push(`remember ${t.address}:${t.port} ${e} ${ttl}`),
      forgetRefusal: (t) => calls.push(`forget ${t.address}:${t.port}`),
    };
  };

  it('writes wrap_down only when it changes (or forced)', () => {
    const h = fake();
    const c = new HonestConnects(() => h);
    c.setDown(new Map([[22, 'refuse']]));
    c.setDown(new Map([[22, 'refuse']]));
    c.setDown(new Map());
    c.setDown(new Map(), true);
    expect(h.calls).toEqual(['down 22,refuse', 'down ', 'down ']);
    expect(c.counts.downPorts).toEqual([]);
  });

  it('applies nothing without hooks, and applies when they come (force)', () => {
    const slot: { h?: ReturnType<typeof fake> } = {};
    const c = new HonestConnects(() => slot.h);
    c.setDown(new Map([[80, 'direct']]));
    const h = (slot.h = fake());
    c.setDown(new Map([[80, 'direct']]), true);
    expect(h.calls).toEqual(['down 80,direct']);
    expect(c.counts.downPorts).toEqual([80]);
  });

  it('forgets a refusal on a successful dial with one map call, only if remembered', () => {
    const h = fake();
    const c = new HonestConnects(() => h);
    c.forget(dst);
    c.remember(dst, ERRNO.ECONNREFUSED, 1_000, 0);
    c.forget(dst);
    c.forget(dst);
    expect(h.calls).toEqual(['remember 10.77.1.2:22 111 1000', 'forget 10.77.1.2:22']);
    c.remember(dst, ERRNO.ECONNREFUSED, 1_000, 0);
    c.prune(1_000);
    expect(c.counts.refusalsNow).toBe(0);
    expect(c.counts.refusalsRemembered).toBe(2);
  });

  it('bounds the remembered destinations', () => {
    const c = new HonestConnects(() => fake());
    for (let i = 0; i < 5_000; i++) c.remember({ family: 4, address: '10.0.0.1', port: 1 + i }, 111, 1_000, 0);
    expect(c.counts.refusalsNow).toBe(4_096);
  });

  it('a map update the kernel refuses is counted, never thrown (it runs while a peer record is handled, and from the tick); wrap_down is written again next time', () => {
    let fail = true;
    const calls: string[] = [];
    const h: ConnectHooks = {
      setDown: (down) => {
        if (fail) throw new Error('bpf_map_update_elem: E2BIG');
        calls.push(`down ${[...down.keys()].join(',')}`);
      },
      rememberRefusal: () => {
        if (fail) throw new Error('bpf_map_update_elem: ENOMEM');
        calls.push('remember');
      },
      forgetRefusal: () => {
        throw new Error('bpf_map_delete_elem: EPERM');
      },
    };
    const c = new HonestConnects(() => h);
    expect(() => c.setDown(new Map([[22, 'refuse']]))).not.toThrow();
    expect(() => c.remember(dst, ERRNO.ECONNREFUSED, 1_000, 0)).not.toThrow();
    expect(c.counts).toMatchObject({ downPorts: [], refusalsNow: 0, refusalsRemembered: 0, hookErrors: 2 });
    fail = false;
    c.setDown(new Map([[22, 'refuse']])); // the same set: written now, as it never was
    c.remember(dst, ERRNO.ECONNREFUSED, 1_000, 0);
    expect(calls).toEqual(['down 22', 'remember']);
    expect(() => c.forget(dst)).not.toThrow();
    expect(c.counts).toMatchObject({ downPorts: [22], refusalsNow: 0, refusalsRemembered: 1, hookErrors: 3 });
  });

  it('names the errno first in a connect timeout text', () => {
    expect(dialFailureOf(connectTimeoutText(dst, 127_000))).toBe('timeout');
    expect(connectTimeoutText({ family: 6, address: 'fd00::1', port: 22 }, 5)).toMatch(/^ETIMEDOUT \[fd00::1\]:22/);
  });
});

describe('the refusal key', () => {
  it('is struct spook_orig as the connect hooks build it (zero padding, unused address zero)', () => {
    const k = origKey({ family: 4, address: '10.77.1.2', port: 22 })!;
    expect(k.length).toBe(ORIG_DST.size);
    expect([...k.subarray(0, 8)]).toEqual([4, 0, 22, 0, 10, 77, 1, 2]);
    expect([...k.subarray(8)].every((b) => b === 0)).toBe(true);
    // A v4-mapped destination is recorded as IPv4 by connect6.
    expect(origKey({ family: 6, address: '::ffff:10.77.1.2', port: 22 })).toEqual(k);
    const k6 = origKey({ family: 6, address: 'fd00::1', port: 443 })!;
    expect([...k6.subarray(0, 8)]).toEqual([6, 0, 443 & 0xff, 443 >> 8, 0, 0, 0, 0]);
    expect(k6[8]).toBe(0xfd);
    expect(k6[23]).toBe(1);
    expect(origKey({ family: 4, address: 'nonsense', port: 22 })).toBeUndefined();
    expect(origKey({ family: 4, address: '10.0.0.1', port: 0 })).toBeUndefined();
  });
});

/**
 * What the manager relies on (drivers/wrap/manager.ts): a local connection is `opening` until the
 * far side's OPENED, held or not, which the session reports once (`opened`), and a far-side dial
 * failure arrives as a `close` event from the peer carrying the dialling side's text.
 */
describe('the session states honest connects read', () => {
  const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };
  const target: Target = { family: 4, address: '10.0.0.2', port: 22 };
  const pair = (): { a: WrapSession; b: WrapSession; pump: (now?: number) => { a: WrapEvent[]; b: WrapEvent[] } } => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    const pump = (now = 0): { a: WrapEvent[]; b: WrapEvent[] } => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
        for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a.handleRecord(now, Buffer.concat(r));
      }
      const evs = { a: [] as WrapEvent[], b: [] as WrapEvent[] };
      for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.a.push(e);
      for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.b.push(e);
      return evs;
    };
    return { a, b, pump };
  };

  it('opened while the carrier is down: opening, through the carrier coming up, until OPENED', () => {
    const { a, b, pump } = pair();
    const id = a.openLocal(0, 22, target, 30_000)!;
    expect(a.conns.get(id)!.state).toBe('opening');
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const ev = pump();
    expect(ev.b.some((e) => e.type === 'dial')).toBe(true);
    expect(a.conns.get(id)!.state).toBe('opening');
    b.dialed(0, id);
    // OPENED waits for the server's first bytes, at most ACK_DELAY_MS (§16.5.1).
    expect(pump().a.filter((e) => e.type === 'opened')).toEqual([]);
    expect(b.pollTimeout()).toBe(ACK_DELAY_MS);
    b.handleTimeout(ACK_DELAY_MS);
    expect(pump(ACK_DELAY_MS).a.filter((e) => e.type === 'opened')).toEqual([{ type: 'opened', conn: id }]);
    expect(a.conns.get(id)!.state).toBe('open');
  });

  it("the server's first bytes take the delayed OPENED along, ahead of them", () => {
    const { a, b, pump } = pair();
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialed(0, id);
    b.localData(1, id, new TextEncoder().encode('SSH-2.0-x'));
    const recs: number[] = [];
    for (let r = b.pollRecord(1); r; r = b.pollRecord(1)) {
      recs.push(r[0][0]);
      a.handleRecord(1, Buffer.concat(r));
    }
    expect(recs).toEqual([RecordType.Opened, RecordType.Data]);
    const evs: string[] = [];
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push(e.type);
    expect(evs).toEqual(['opened', 'deliver']);
    expect(b.deadlines().coalesce).toBeUndefined();
  });

  it("a far-side refusal arrives as the peer's close, with its errno first", () => {
    const { a, b, pump } = pair();
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialFailed(0, id, 'ECONNREFUSED 10.0.0.2:22: connect ECONNREFUSED 10.0.0.2:22');
    const close = pump().a.find((e) => e.type === 'close');
    expect(close).toMatchObject({ conn: id, code: CloseCode.DialFailed, byPeer: true });
    expect(dialFailureOf((close as { reason: string }).reason)).toBe('refused');
  });
});

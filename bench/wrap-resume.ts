/**
 * `spook-lab bench wrap --only resume` (part of `bench wrap`): where a wrapper does better than
 * TCP (issue 17), each figure beside a direct TCP connection through the same event in the same
 * run. One client host `c` and two serving hosts on a bridge (testing/lab/roaming.ts): `c`
 * dials the carrier to `s1`, `s2` dials the carrier to `c`. Counter streams (testing/lab/cutstream.ts)
 * from s1 through a wrapper and directly, and from s2 through a wrapper.
 *
 *  cuts          silent mid-path outages of 5 s and 30 s (and 2 min with `long`), default hold:
 *                ms from the heal to the first byte, wrapped (both roles) and direct;
 *  pastPatience  tcp_retries2 = 5 in every namespace (TCP gives up after ~12.6 s plus its last
 *                backoff), a 30 s outage, a wrapper with a configured 120 s hold: did each survive,
 *                and the wrapped one's resume after the heal;
 *  addressChange c gets a new address and loses the old one mid-transfer: the longest silence
 *                each wrapped stream saw, when each carrier was redialled, and the direct stream's
 *                last byte (it is bound to the old address: it never gets another).
 */
import { CutStreams, resumeAfter, type StreamReport } from '../testing/lab/cutstream.js';
import { RoamLab } from '../testing/lab/roaming.js';
import { sleep } from '../testing/lab/netns.js';
import { tcpPatienceMs } from '../core/wrap/hold.js';
import { copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const VIA_S1 = 7501; // c dials the carrier
const VIA_S2 = 7502; // s2 dials the carrier
const LONG_HOLD = 7503; // to s1, hold 120 s: the outage past TCP's patience
const DIRECT = 7504;
const LONG_HOLD_MS = 120_000;
const IMPATIENT_RETRIES2 = 5;
const PAST_PATIENCE_CUT_MS = 30_000;

export interface CutResume {
  cutMs: number;
  /** ms from the heal to the first byte after it (null: none came within `waitMs`). */
  wrappedClientDialsMs: number | null;
  wrappedServerDialsMs: number | null;
  directMs: number | null;
  /** How long after the heal the streams were watched. */
  waitMs: number;
  /** Every stream ended with all its bytes in order. */
  allInOrder: boolean;
}

export interface ResumeBenchResult {
  /** The hold of the wrappers in `cuts` (the host's default: its TCP patience when spookd started). */
  defaultHoldMs: number;
  cuts: CutResume[];
  pastPatience: {
    tcpRetries2: number;
    /** When TCP gives up by the kernel's model (core/wrap/hold.ts): the first retransmission plus this. */
    tcpPatienceMs: number;
    cutMs: number;
    holdMs: number;
    wrappedSurvived: boolean;
    wrappedResumeMs: number | null;
    /** What became of the direct connection: the server's and the client's errors. */
    directSurvived: boolean;
    directServerError: string | null;
    directClientError: string | null;
  };
  addressChange: {
    from: string;
    to: string;
    /** The longest silence each wrapped stream saw after the change (ms; under 100: none recorded). */
    wrappedClientDialsStallMs: number;
    wrappedServerDialsStallMs: number;
    wrappedInOrder: boolean;
    /** ms after the change: c saw its carrier's local address gone; s2 got c's first packet from the new address and dialled. */
    clientRedialAfterMs: number | null;
    serverRedialAfterMs: number | null;
    /** The direct stream's last byte, ms after the change, and how long it was watched with nothing more. */
    directLastByteAfterMs: number;
    directWatchedMs: number;
    directOutcome: string;
  };
}

type Log = (line: string) => void;

function intact(s: StreamReport): boolean {
  return s.error === null && s.ended && s.inOrder && s.received === s.sent;
}

/** ms from `at` to the first byte after it, or null. */
function resumed(s: StreamReport, at: number): number | null {
  const ms = resumeAfter(s, at);
  return Number.isFinite(ms) ? ms : null;
}

async function cutRun(net: RoamLab, cutMs: number, log: Log): Promise<CutResume> {
  const a = new CutStreams(net.ns('s1'), net.ns('c'), net.s1Addr, [VIA_S1, DIRECT], { stopWaitMs: 5_000 });
  const b = new CutStreams(net.ns('s2'), net.ns('c'), net.s2Addr, [VIA_S2], { stopWaitMs: 5_000 });
  try {
    await Promise.all([a.start(), b.start()]);
    await sleep(1_000);
    net.cut();
    await sleep(cutMs);
    net.heal();
    const upAt = Date.now();
    // Direct TCP's next retransmission after a cut of T comes within about T of it (its backoff doubles).
    const waitMs = cutMs + 5_000;
    await sleep(waitMs);
    const [ra, rb] = await Promise.all([a.stop(), b.stop()]);
    const r: CutResume = {
      cutMs,
      wrappedClientDialsMs: resumed(ra[VIA_S1], upAt),
      wrappedServerDialsMs: resumed(rb[VIA_S2], upAt),
      directMs: resumed(ra[DIRECT], upAt),
      waitMs,
      allInOrder: intact(ra[VIA_S1]) && intact(rb[VIA_S2]) && intact(ra[DIRECT]),
    };
    log(`cut ${cutMs / 1000} s: ${JSON.stringify(r)}`);
    return r;
  } finally {
    a.close();
    b.close();
  }
}

async function pastPatienceRun(net: RoamLab, log: Log): Promise<ResumeBenchResult['pastPatience']> {
  const before = net.tcpRetries2();
  net.setTcpRetries2(IMPATIENT_RETRIES2);
  const a = new CutStreams(net.ns('s1'), net.ns('c'), net.s1Addr, [LONG_HOLD, DIRECT], { stopWaitMs: 5_000 });
  try {
    await a.start();
    await sleep(1_000);
    net.cut();
    await sleep(PAST_PATIENCE_CUT_MS);
    net.heal();
    const upAt = Date.now();
    await sleep(5_000);
    const r = await a.stop();
    const w = r[LONG_HOLD];
    const d = r[DIRECT];
    const out = {
      tcpRetries2: IMPATIENT_RETRIES2,
      tcpPatienceMs: tcpPatienceMs(IMPATIENT_RETRIES2),
      cutMs: PAST_PATIENCE_CUT_MS,
      holdMs: LONG_HOLD_MS,
      wrappedSurvived: intact(w),
      wrappedResumeMs: resumed(w, upAt),
      directSurvived: intact(d),
      directServerError: d.serverError ?? null,
      directClientError: d.error,
    };
    log(`past patience: ${JSON.stringify(out)}`);
    return out;
  } finally {
    a.close();
    net.setTcpRetries2(before);
  }
}

async function addressChangeRun(net: RoamLab, log: Log): Promise<ResumeBenchResult['addressChange']> {
  const a = new CutStreams(net.ns('s1'), net.ns('c'), net.s1Addr, [VIA_S1, DIRECT], { gapMs: 100, stopWaitMs: 3_000 });
  const b = new CutStreams(net.ns('s2'), net.ns('c'), net.s2Addr, [VIA_S2], { gapMs: 100, stopWaitMs: 3_000 });
  try {
    await Promise.all([a.start(), b.start()]);
    await sleep(1_000);
    const from = net.clientAddr;
    const movedAt = Date.now();
    const to = net.moveClient();
    const watchMs = 10_000;
    await sleep(watchMs);
    const [ra, rb] = await Promise.all([a.stop(), b.stop()]);
    // The longest silence that began within 3 s of the change.
    const stall = (s: StreamReport): number =>
      Math.max(0, ...s.gaps.filter((g) => g.to >= movedAt && g.from <= movedAt + 3_000).map((g) => g.to - Math.max(g.from, movedAt)));
    const firstAfter = (h: 'c' | 's2', msg: string): number | null => {
      const l = net.log(h).find((x) => x.time >= movedAt && x.msg === msg);
      return l ? l.time - movedAt : null;
    };
    const d = ra[DIRECT];
    const out = {
      from,
      to,
      wrappedClientDialsStallMs: stall(ra[VIA_S1]),
      wrappedServerDialsStallMs: stall(rb[VIA_S2]),
      wrappedInOrder: intact(ra[VIA_S1]) && intact(rb[VIA_S2]),
      clientRedialAfterMs: firstAfter('c', 'the carrier local address is gone: redialling'),
      serverRedialAfterMs: firstAfter('s2', 'the peer moved: dialling its new address'),
      directLastByteAfterMs: d.lastAt - movedAt,
      directWatchedMs: watchMs,
      directOutcome: d.error ?? (d.ended ? 'ended' : 'open'),
    };
    log(`address change: ${JSON.stringify(out)}`);
    return out;
  } finally {
    a.close();
    b.close();
  }
}

export async function runResumeBench(o: { basePort: number; long?: boolean; log?: Log }): Promise<ResumeBenchResult> {
  const log = o.log ?? (() => {});
  const net = new RoamLab(63, o.basePort);
  try {
    await net.start(
      [
        { port: VIA_S1, peer: 's1' },
        { port: VIA_S2, peer: 's2' },
        { port: LONG_HOLD, peer: 's1', hold: `${LONG_HOLD_MS / 1000}s` },
      ],
      { logLevel: 'info', fsync: 'never' },
    );
    const defaultHoldMs = (await net.lab.admin('c', 'wraps')).find((w) => w.port === VIA_S1)!.holdMs;
    const cuts: CutResume[] = [];
    for (const ms of o.long ? [5_000, 30_000, 120_000] : [5_000, 30_000]) cuts.push(await cutRun(net, ms, log));
    const pastPatience = await pastPatienceRun(net, log);
    const addressChange = await addressChangeRun(net, log);
    return { defaultHoldMs, cuts, pastPatience, addressChange };
  } finally {
    for (const h of ['c', 's1', 's2']) {
      await net.lab.stop(h).catch(() => undefined);
      // The daemons' logs outlive the lab: a slow resume is read afterwards.
      try {
        copyFileSync(join(net.lab.host(h).dir, 'spookd.log'), join(tmpdir(), `spook-bench-resume-${h}.log`));
      } catch {
        /* no log */
      }
    }
    await net.destroy();
  }
}

export function formatResumeBench(r: ResumeBenchResult): string[] {
  const ms = (x: number | null): string => (x === null ? 'none' : `${x} ms`);
  const lines = [
    `resume after silent mid-path cuts (hold ${r.defaultHoldMs / 1000} s, the hosts' default), ms from the heal to the first byte:`,
  ];
  for (const c of r.cuts)
    lines.push(
      `  ${String(c.cutMs / 1000).padStart(3)} s cut: wrapped ${ms(c.wrappedClientDialsMs)} (client dials), ${ms(c.wrappedServerDialsMs)} (server dials); ` +
        `direct ${ms(c.directMs)}${c.directMs === null ? ` within ${c.waitMs / 1000} s` : ''}; all complete and in order: ${c.allInOrder}`,
    );
  const p = r.pastPatience;
  lines.push(
    `outage past TCP's patience: tcp_retries2 = ${p.tcpRetries2} (TCP gives up ${(p.tcpPatienceMs / 1000).toFixed(1)} s after its first retransmission), ` +
      `${p.cutMs / 1000} s cut, wrapper hold ${p.holdMs / 1000} s (configured):`,
    `  wrapped ${p.wrappedSurvived ? `survived, resumed ${ms(p.wrappedResumeMs)} after the heal` : 'DIED'}; ` +
      `direct ${p.directSurvived ? 'survived' : `died (server: ${p.directServerError ?? '-'}, client: ${p.directClientError ?? '-'})`}`,
  );
  const a = r.addressChange;
  lines.push(
    `client address change ${a.from} -> ${a.to} mid-transfer:`,
    `  wrapped: longest silence ${a.wrappedClientDialsStallMs} ms (client dials; redialled ${ms(a.clientRedialAfterMs)} after the change), ` +
      `${a.wrappedServerDialsStallMs} ms (server dials; redialled ${ms(a.serverRedialAfterMs)} after); every byte in order: ${a.wrappedInOrder}`,
    `  direct: last byte ${a.directLastByteAfterMs} ms after the change, nothing in the ${a.directWatchedMs / 1000} s after (${a.directOutcome})`,
  );
  return lines;
}

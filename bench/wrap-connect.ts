/**
 * `spook-lab bench wrap --only connect`: what a client sees when it connects, wrapped and direct,
 * in the same run (issue 17, "honest connects"; docs/OPERATIONS.md, "What a client sees when it
 * connects"). The lab is testing/lab/connects.ts: a node client in the client namespace, the
 * server host with echo servers, a closed port, an address no one answers ARP for, and one
 * whose SYNs vanish. Times are from the client's connect() call to what it saw (ms).
 *
 * - the baseline: a new connection's first echo, direct and wrapped, with the carrier up;
 * - refused: direct ECONNREFUSED; wrapped, the first connect's reset (the far side's refusal
 *   over the carrier), then the next one (refused in the hook). Median of `rounds`, each after
 *   the remembered refusal expired.
 * - unreachable, silent: once (each costs the neighbour timeout or the connect timeout; the
 *   kernel remembers a failed neighbour, so a second round would measure something else).
 * - serving spookd stopped: the unwrapped path's echo, `whenDown: direct`'s echo, `refuse`'s
 *   error (median of `rounds`), `hold`'s reset at the connect timeout (once).
 */
import { CONNECT_PORTS, ConnectLab, SILENT_NET, type Outcome } from '../testing/lab/connects.js';
import { sleep, until } from '../testing/lab/netns.js';
import { DOWN_GRACE_MS, REFUSAL_MEMO_MS } from '../core/wrap/connect.js';

export interface ConnectBenchResult {
  rounds: number;
  /** The wrappers' connect timeout in this run, and the direct client's own. */
  connectTimeoutMs: number;
  /** The baseline: a new connection's first echo, direct and wrapped, the carrier up. */
  upDirectEchoMs: number;
  upWrappedEchoMs: number;
  refusedDirectMs: number;
  refusedWrappedResetMs: number;
  refusedWrappedRepeatMs: number;
  refusedWrappedRepeatErrno: string;
  unreachableDirectMs: number;
  unreachableWrappedResetMs: number;
  unreachableWrappedRepeatMs: number;
  silentDirectClientTimeoutMs: number;
  silentWrappedResetMs: number;
  downPlainEchoMs: number;
  downWhenDownDirectEchoMs: number;
  downWhenDownRefuseMs: number;
  downWhenDownRefuseErrno: string;
  downWhenDownHoldResetMs: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

/** The time of what the case expects, or a clear error naming what it saw instead. */
function at(r: Outcome, want: { error?: string; echo?: boolean; connected?: boolean }): number {
  const ok =
    (want.connected === undefined || r.connected === want.connected) &&
    (want.error === undefined || r.error === want.error) &&
    (!want.echo || r.echo !== undefined);
  if (!ok) throw new Error(`${r.name}: expected ${JSON.stringify(want)}, saw ${JSON.stringify(r)}`);
  return (want.echo ? r.echoMs : r.errorMs) ?? NaN;
}

export async function runConnectBench(
  o: { rounds?: number; connectTimeoutMs?: number; basePort?: number } = {},
): Promise<ConnectBenchResult> {
  const rounds = o.rounds ?? 5;
  const connectTimeoutMs = o.connectTimeoutMs ?? 3_000;
  const P = CONNECT_PORTS;
  const cl = await ConnectLab.start({ basePort: o.basePort ?? 48150, subnet: 73, connectTimeoutMs, logLevel: 'warn' });
  try {
    const s = cl.server;
    const refused = { direct: [] as number[], reset: [] as number[], repeat: [] as number[] };
    const up = { direct: [] as number[], wrapped: [] as number[] };
    let repeatErrno = '';
    for (let i = 0; i < rounds; i++) {
      const [ed, ew, d, w1, w2] = await cl.run([
        { name: 'echo direct', host: s, port: P.PLAIN, send: 'x' },
        { name: 'echo wrapped', host: s, port: P.HOLD, send: 'x' },
        { name: 'refused direct', host: s, port: P.PLAIN_CLOSED },
        { name: 'refused wrapped', host: s, port: P.REFUSED },
        { name: 'refused wrapped again', host: s, port: P.REFUSED },
      ]);
      up.direct.push(at(ed, { echo: true }));
      up.wrapped.push(at(ew, { echo: true }));
      refused.direct.push(at(d, { error: 'ECONNREFUSED' }));
      refused.reset.push(at(w1, { connected: true, error: 'ECONNRESET' }));
      refused.repeat.push(at(w2, { connected: false }));
      repeatErrno = w2.error ?? '';
      await sleep(REFUSAL_MEMO_MS + 100); // the next round's first connect is a first again
    }
    const [ud, uw1, uw2] = await cl.run([
      { name: 'unreachable direct', host: cl.nobody, port: P.PLAIN },
      { name: 'unreachable wrapped', host: cl.nobody, port: P.REFUSE },
      { name: 'unreachable wrapped again', host: cl.nobody, port: P.REFUSE },
    ]);
    const [sd, sw] = await cl.run([
      { name: 'silent direct', host: `${SILENT_NET}.2`, port: P.PLAIN, connectTimeoutMs },
      { name: 'silent wrapped', host: `${SILENT_NET}.2`, port: P.SILENT },
    ]);
    await cl.lab.stop('cs');
    await until('the carrier lost', async () => (await cl.carrier()) !== 'up' || undefined, 10_000, 20);
    await until(
      'whenDown applied',
      async () => (await cl.lab.admin('cc', 'wrap-stats')).connects.downPorts.includes(P.REFUSE) || undefined,
      DOWN_GRACE_MS + 10_000,
      50,
    );
    const down = { plain: [] as number[], direct: [] as number[], refuse: [] as number[] };
    let refuseErrno = '';
    for (let i = 0; i < rounds; i++) {
      const [p, d, r] = await cl.run([
        { name: 'down plain', host: s, port: P.PLAIN, send: 'x' },
        { name: 'down whenDown direct', host: s, port: P.DIRECT, send: 'x' },
        { name: 'down whenDown refuse', host: s, port: P.REFUSE, send: 'x' },
      ]);
      down.plain.push(at(p, { echo: true }));
      down.direct.push(at(d, { echo: true }));
      down.refuse.push(at(r, { connected: false }));
      refuseErrno = r.error ?? '';
    }
    const [hold] = await cl.run([{ name: 'down whenDown hold', host: s, port: P.HOLD, send: 'x' }]);
    return {
      rounds,
      connectTimeoutMs,
      upDirectEchoMs: median(up.direct),
      upWrappedEchoMs: median(up.wrapped),
      refusedDirectMs: median(refused.direct),
      refusedWrappedResetMs: median(refused.reset),
      refusedWrappedRepeatMs: median(refused.repeat),
      refusedWrappedRepeatErrno: repeatErrno,
      unreachableDirectMs: at(ud, { error: 'EHOSTUNREACH' }),
      unreachableWrappedResetMs: at(uw1, { connected: true, error: 'ECONNRESET' }),
      unreachableWrappedRepeatMs: at(uw2, { connected: false }),
      silentDirectClientTimeoutMs: at(sd, { error: 'client-connect-timeout' }),
      silentWrappedResetMs: at(sw, { connected: true, error: 'ECONNRESET' }),
      downPlainEchoMs: median(down.plain),
      downWhenDownDirectEchoMs: median(down.direct),
      downWhenDownRefuseMs: median(down.refuse),
      downWhenDownRefuseErrno: refuseErrno,
      downWhenDownHoldResetMs: at(hold, { connected: true, error: 'ECONNRESET' }),
    };
  } finally {
    await cl.close();
  }
}

/** The result as a wrapped-vs-direct table, one line per case. */
export function formatConnectBench(r: ConnectBenchResult): string[] {
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  return [
    `honest connects (median of ${r.rounds} where repeated; connect timeouts ${r.connectTimeoutMs} ms)`,
    `  carrier up   direct echo ${ms(r.upDirectEchoMs)} | wrapped echo ${ms(r.upWrappedEchoMs)} (a new connection's first round trip: the baseline)`,
    `  refused      direct ECONNREFUSED ${ms(r.refusedDirectMs)} | wrapped reset ${ms(r.refusedWrappedResetMs)}, next ${r.refusedWrappedRepeatErrno} ${ms(r.refusedWrappedRepeatMs)}`,
    `  unreachable  direct EHOSTUNREACH ${ms(r.unreachableDirectMs)} | wrapped reset ${ms(r.unreachableWrappedResetMs)}, next ${ms(r.unreachableWrappedRepeatMs)}`,
    `  silent       direct client timeout ${ms(r.silentDirectClientTimeoutMs)} | wrapped reset ${ms(r.silentWrappedResetMs)}`,
    `  spookd down  unwrapped echo ${ms(r.downPlainEchoMs)} | direct echo ${ms(r.downWhenDownDirectEchoMs)}, refuse ${r.downWhenDownRefuseErrno} ${ms(r.downWhenDownRefuseMs)}, hold reset ${ms(r.downWhenDownHoldResetMs)}`,
  ];
}

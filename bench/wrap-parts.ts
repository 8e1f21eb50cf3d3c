/**
 * `spook-lab bench wrap` is made of parts, each with its own lab (built and torn down in turn)
 * and its own printing; `--only a,b` runs some of them. Every figure is printed beside the
 * baseline its part measured in the same run.
 */
import { runWrapBench, type WrapBenchResult } from './wrap.js';
import { formatConnectBench, runConnectBench } from './wrap-connect.js';
import { formatWrapSpeed, runWrapSpeedBench } from './wrap-speed.js';
import { formatResumeBench, runResumeBench } from './wrap-resume.js';
import { formatRestartBench, runRestartBench } from './wrap-restart.js';
import { formatSystemdRestartBench, runSystemdRestartBench } from './wrap-restart-systemd.js';

export interface WrapPartOptions {
  bytes: number;
  pgbenchSeconds: number;
  basePort: number;
  connections: number;
  /** The resume part also cuts for 2 min. */
  resumeLong?: boolean;
  /** Progress lines (not the figures), when printing for a terminal. */
  log?: (line: string) => void;
}

interface Part<R> {
  /** What `--help` says the part measures. */
  readonly what: string;
  run(o: WrapPartOptions): Promise<R>;
  format(r: R): string[];
}

const part = <R>(p: Part<R>): Part<R> => p;

export const WRAP_BENCH_PARTS = {
  base: part<WrapBenchResult>({
    what: 'one transfer direct, wrapped and through ssh -L; pgbench -S; delta mode',
    run: (o) => runWrapBench(o),
    format: (r) => Object.entries(r).map(([k, v]) => `${k.padEnd(18)}${v}`),
  }),
  connect: part({
    what: 'what a client sees when it connects (refused, unreachable, silent, serving spookd down), wrapped vs direct',
    run: () => runConnectBench(),
    format: formatConnectBench,
  }),
  speed: part({
    what: '1 GiB, new connections/s and pgbench -S, each direct, wrapped, through ssh -L, wireguard-go and two plain C relays',
    run: (o) => runWrapSpeedBench(o),
    format: formatWrapSpeed,
  }),
  resume: part({
    what: 'resume after cuts, an outage past TCP patience, a client address change, wrapped vs direct',
    run: (o) => runResumeBench({ basePort: o.basePort + 10, long: o.resumeLong, log: o.log }),
    format: formatResumeBench,
  }),
  restart: part({
    what: 'restarts of either spookd under an ssh session and a stream, through the descriptor store and plain',
    run: (o) => runRestartBench({ basePort: o.basePort + 100 }),
    format: formatRestartBench,
  }),
  'restart-systemd': part({
    what: 'systemctl restart spookd under a real systemd, the shipped unit vs one with ExecStartPre --check-config',
    run: (o) => runSystemdRestartBench({ basePort: o.basePort + 120 }),
    format: formatSystemdRestartBench,
  }),
};

export type WrapBenchPart = keyof typeof WRAP_BENCH_PARTS;
export const WRAP_BENCH_PART_NAMES = Object.keys(WRAP_BENCH_PARTS) as WrapBenchPart[];

/** The parts named in `only` (comma-separated; all when absent), in their fixed order; an unknown name is an error naming it. */
export function wrapBenchParts(only?: string): WrapBenchPart[] {
  if (only === undefined) return WRAP_BENCH_PART_NAMES;
  const asked = only.split(',').map((s) => s.trim());
  for (const a of asked)
    if (!(WRAP_BENCH_PART_NAMES as string[]).includes(a))
      throw new Error(`--only: ${JSON.stringify(a)} is not a part of bench wrap (${WRAP_BENCH_PART_NAMES.join(', ')})`);
  return WRAP_BENCH_PART_NAMES.filter((p) => asked.includes(p));
}

/** Run the parts one after another (each lab is gone before the next is built). */
export async function runWrapBenchParts(parts: WrapBenchPart[], o: WrapPartOptions): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const p of parts) out[p] = await (WRAP_BENCH_PARTS[p] as Part<unknown>).run(o);
  return out;
}

export function formatWrapBenchParts(r: Record<string, unknown>): string[] {
  const lines: string[] = [];
  for (const [p, v] of Object.entries(r)) {
    lines.push(`== ${p}`);
    lines.push(...(WRAP_BENCH_PARTS[p as WrapBenchPart] as Part<unknown>).format(v));
  }
  return lines;
}

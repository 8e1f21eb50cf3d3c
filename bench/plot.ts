/**
 * Renders the comparison charts for docs/BENCHMARKS.md from `spook bench compare --out`
 * JSON: Vega-Lite specs compiled and rendered to SVG headless (no hand-drawn figures).
 *
 *   node dist/bench/plot.js docs/plots/compare.json docs/plots
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { CompareRow } from './compare.js';

type Spec = vl.TopLevelSpec;

const base = (title: string, data: object[]): Partial<Spec> => ({
  $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
  title,
  width: 420,
  height: 260,
  data: { values: data },
});

export function charts(rows: CompareRow[]): Record<string, Spec> {
  const midN = rows.some((r) => r.n === 10_000) ? 10_000 : rows[0]?.n;
  const maxK = Math.max(...rows.map((r) => r.k));
  const color = { field: 'system', type: 'nominal', title: 'system' } as const;
  return {
    'catchup-bytes-vs-k': {
      ...base(`Catch-up bytes after K missed updates (N = ${midN.toLocaleString('en-US')} keys)`, rows.filter((r) => r.n === midN)),
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'k', type: 'quantitative', scale: { type: 'log' }, title: 'missed updates K' },
        y: { field: 'catchUpBytes', type: 'quantitative', scale: { type: 'log' }, title: 'bytes to catch up' },
        color,
      },
    } as Spec,
    'apply-rate-vs-n': {
      ...base(`Steady-state updates per second (K = ${maxK.toLocaleString('en-US')} rows)`, rows.filter((r) => r.k === maxK)),
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'n', type: 'quantitative', scale: { type: 'log' }, title: 'keys N' },
        y: { field: 'updatesPerSec', type: 'quantitative', scale: { type: 'log' }, title: 'updates/s (write → applied at the peer)' },
        color,
      },
    } as Spec,
    'memory-vs-n': {
      ...base('Heap held by the two replicas of the state', rows.filter((r) => r.k === maxK).map((r) => ({ ...r, mb: Math.max(r.stateHeapBytes, 1) / 1e6 }))),
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'n', type: 'quantitative', scale: { type: 'log' }, title: 'keys N' },
        y: { field: 'mb', type: 'quantitative', scale: { type: 'log' }, title: 'MB after GC' },
        color,
      },
    } as Spec,
    'bytes-per-update-vs-n': {
      ...base('Bytes exchanged per steady-state update', rows.filter((r) => r.k === maxK)),
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'n', type: 'ordinal', title: 'keys N' },
        xOffset: { field: 'system' },
        y: { field: 'bytesPerUpdate', type: 'quantitative', title: 'bytes per update' },
        color,
      },
    } as Spec,
  };
}

export async function renderSvg(spec: Spec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [input, outDir] = process.argv.slice(2);
  if (!input || !outDir) {
    process.stderr.write('usage: node dist/bench/plot.js COMPARE.json OUTDIR\n');
    process.exit(2);
  }
  const rows = JSON.parse(readFileSync(input, 'utf8')) as CompareRow[];
  for (const [name, spec] of Object.entries(charts(rows))) {
    writeFileSync(join(outDir, `${name}.svg`), await renderSvg(spec));
    process.stdout.write(`wrote ${join(outDir, `${name}.svg`)}\n`);
  }
}

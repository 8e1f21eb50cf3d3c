/**
 * Renders the comparison charts for docs/BENCHMARKS.md from `spook-lab bench compare --out`
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

/** A log-log line chart of one field against another, one line per system. */
function lineChart(title: string, data: object[], x: [string, string], y: [string, string]): Spec {
  return {
    ...base(title, data),
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: x[0], type: 'quantitative', scale: { type: 'log' }, title: x[1] },
      y: { field: y[0], type: 'quantitative', scale: { type: 'log' }, title: y[1] },
      color: { field: 'system', type: 'nominal', title: 'system' },
    },
  } as Spec;
}

export function charts(rows: CompareRow[]): Record<string, Spec> {
  const midN = rows.some((r) => r.n === 10_000) ? 10_000 : rows[0]?.n;
  const maxK = Math.max(...rows.map((r) => r.k));
  const atMaxK = rows.filter((r) => r.k === maxK);
  return {
    'catchup-bytes-vs-k': lineChart(
      `Catch-up bytes after K missed updates (N = ${midN.toLocaleString('en-US')} keys)`,
      rows.filter((r) => r.n === midN),
      ['k', 'missed updates K'],
      ['catchUpBytes', 'bytes to catch up'],
    ),
    'apply-rate-vs-n': lineChart(
      `Steady-state updates per second (K = ${maxK.toLocaleString('en-US')} rows)`,
      atMaxK,
      ['n', 'keys N'],
      ['updatesPerSec', 'updates/s (write → applied at the peer)'],
    ),
    'memory-vs-n': lineChart(
      'Memory held by the two replicas of the state',
      atMaxK.map((r) => ({ ...r, mb: Math.max(r.stateHeapBytes, 1) / 1e6 })),
      ['n', 'keys N'],
      ['mb', 'MB after GC'],
    ),
    'bytes-per-update-vs-n': {
      ...base('Bytes exchanged per steady-state update', atMaxK),
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'n', type: 'ordinal', title: 'keys N' },
        xOffset: { field: 'system' },
        y: { field: 'bytesPerUpdate', type: 'quantitative', title: 'bytes per update' },
        color: { field: 'system', type: 'nominal', title: 'system' },
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

import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BLOCKS, LANES, portBaseFor, type PortBlock, type PortFile } from './ports.js';

/** The port table (test/ports.ts): blocks apart, below the ephemeral range, every run's lane inside its block. */
const TEST_DIR = dirname(fileURLToPath(import.meta.url));
const entries = Object.entries(BLOCKS) as [PortFile, PortBlock][];

/** Test sources under test/ (not test/vectors), as paths relative to it. */
function sources(dir = TEST_DIR, rel = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) return e.name === 'vectors' ? [] : sources(join(dir, e.name), path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

describe('test ports (test/ports.ts)', () => {
  it('every block lies above the privileged ports and below the ephemeral range (32768+)', () => {
    for (const [file, b] of entries) {
      expect(b.first, file).toBeGreaterThan(1024);
      expect(b.last, file).toBeLessThan(32768);
      expect(b.last, file).toBeGreaterThanOrEqual(b.first);
      expect(Number.isInteger(b.ports) && b.ports > 0, file).toBe(true);
    }
  });

  it('no two blocks share a port', () => {
    const sorted = [...entries].sort((x, y) => x[1].first - y[1].first);
    for (let i = 1; i < sorted.length; i++) {
      const [[prev, p], [next, n]] = [sorted[i - 1], sorted[i]];
      expect(n.first, `${next} starts inside ${prev} (${p.first}-${p.last})`).toBeGreaterThan(p.last);
    }
  });

  it("every run's ports (each pid residue's lane) stay inside the file's block, and lanes do not overlap", () => {
    for (const [file, b] of entries) {
      const used = new Set<number>();
      for (let pid = 0; pid < LANES; pid++) {
        const base = portBaseFor(file, pid);
        expect(base, `${file}, pid ${pid}`).toBeGreaterThanOrEqual(b.first);
        expect(base + b.ports - 1, `${file}, pid ${pid}`).toBeLessThanOrEqual(b.last);
        for (let p = base; p < base + b.ports; p++) used.add(p);
      }
      expect(used.size, file).toBe(LANES * b.ports);
      // Real pids are residues too: one far beyond LANES lands in the same lane.
      expect(portBaseFor(file, 4_194_303)).toBe(portBaseFor(file, 4_194_303 % LANES));
    }
  });

  it('names files that exist, each of which takes its ports from its own block only', () => {
    for (const [file] of entries) expect(existsSync(join(TEST_DIR, file)), file).toBe(true);
    for (const file of sources()) {
      const text = readFileSync(join(TEST_DIR, file), 'utf8');
      const named = [...text.matchAll(/portBase\('([^']+)'\)/g)].map((m) => m[1]);
      for (const n of named) expect(n, `${file} uses the ports of ${n}`).toBe(file);
      // Ports computed from the pid collide: every test file of a run has the same pid (worker threads).
      if (file !== 'ports.ts') expect(/process\.pid\s*%/.test(text), `${file} computes ports from process.pid`).toBe(false);
    }
  });
});

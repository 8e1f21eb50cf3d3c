import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/**
 * The import rules of docs/ARCHITECTURE.md, read from the sources: what each folder may import,
 * and what a sans-I/O core may not touch (clock, timers, randomness, the process).
 */
const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const LAYERS = ['wire', 'crypto', 'core', 'drivers', 'client', 'cli', 'testing', 'tools', 'bench', 'test'] as const;
type Layer = (typeof LAYERS)[number];
const PRODUCT: readonly Layer[] = ['wire', 'crypto', 'core', 'drivers', 'client', 'cli'];

/** Folders each layer may import (itself included). */
const MAY_IMPORT: Record<Layer, readonly Layer[]> = {
  wire: ['wire'],
  crypto: ['crypto'],
  core: ['wire', 'crypto', 'core'],
  drivers: ['wire', 'crypto', 'core', 'drivers', 'client'],
  client: ['client'],
  cli: ['wire', 'crypto', 'core', 'drivers', 'client', 'cli'],
  // tools/admin-doc.ts renders docs/ADMIN-API.md from client/protocol.ts; tools/man.ts the manual
  // pages and completions from the CLI's and spookd's command trees and the configuration schema.
  tools: ['wire', 'crypto', 'core', 'drivers', 'client', 'cli', 'tools'],
  // testing/cli (spook-lab) fronts the benchmarks; neither is installed.
  testing: ['wire', 'crypto', 'core', 'drivers', 'client', 'cli', 'testing', 'bench'],
  bench: ['wire', 'crypto', 'core', 'drivers', 'client', 'cli', 'testing', 'bench'],
  test: LAYERS,
};

/** Packages and node: modules each layer may use (product layers: only package.json's dependencies). */
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
const runtimeDeps = new Set(Object.keys(pkg.dependencies));
const externalAllowed = (layer: Layer, spec: string): boolean => {
  if (layer === 'wire') return false;
  if (layer === 'crypto') return spec === 'node:crypto';
  if (layer === 'core') return false;
  if (layer === 'client') return spec.startsWith('node:');
  // tools run at build time only: the TypeScript compiler (a dev dependency) reads the sources.
  if (layer === 'tools' && spec === 'typescript') return true;
  if (PRODUCT.includes(layer) || layer === 'tools') return spec.startsWith('node:') || runtimeDeps.has(spec.split('/')[0]!);
  return true;
};

const files: string[] = [];
for (const layer of LAYERS) {
  for (const f of readdirSync(join(ROOT, layer), { recursive: true }).map(String)) {
    if (f.endsWith('.ts') && !f.endsWith('.d.ts')) files.push(join(layer, f));
  }
}
const layerOf = (file: string): Layer | undefined => LAYERS.find((l) => file === l || file.startsWith(`${l}/`));

interface Import {
  file: string;
  spec: string;
}
const imports: Import[] = files.flatMap((file) => {
  const info = ts.preProcessFile(readFileSync(join(ROOT, file), 'utf8'), true, true);
  // Imports, re-exports, import() and require() of literals, and `/// <reference path>` too.
  return [...info.importedFiles, ...info.referencedFiles].map((i) => ({ file, spec: i.fileName }));
});

describe('import boundaries (docs/ARCHITECTURE.md)', () => {
  it('reads every layer (the rules are not vacuous)', () => {
    for (const l of LAYERS) expect(files.some((f) => layerOf(f) === l)).toBe(true);
    expect(imports.length).toBeGreaterThan(500);
  });

  it('each folder imports only the folders it may', () => {
    const bad: string[] = [];
    for (const { file, spec } of imports) {
      if (!spec.startsWith('.')) continue;
      const from = layerOf(file)!;
      const target = relative(ROOT, resolve(ROOT, dirname(file), spec));
      const to = layerOf(target);
      if (to === undefined || !MAY_IMPORT[from].includes(to)) bad.push(`${file} imports ${target}`);
    }
    expect(bad).toEqual([]);
  });

  it('packages and node: modules: none in wire and core, node:crypto only in crypto, runtime dependencies only in the product', () => {
    const bad = imports
      .filter(({ spec }) => !spec.startsWith('.'))
      .filter(({ file, spec }) => !externalAllowed(layerOf(file)!, spec))
      .map(({ file, spec }) => `${file} imports ${spec}`);
    expect(bad).toEqual([]);
  });

  it('sans-I/O: no core module reads a clock, arms a timer, draws randomness or touches the process', () => {
    const forbidden =
      /\b(Date\.now|new Date\(|performance\b|setTimeout|setInterval|setImmediate|queueMicrotask|Math\.random|getRandomValues|randomUUID|process\.|require\()/;
    const bad: string[] = [];
    for (const file of files.filter((f) => layerOf(f) === 'core')) {
      const code = stripComments(readFileSync(join(ROOT, file), 'utf8'));
      code.split('\n').forEach((line, i) => {
        if (forbidden.test(line)) bad.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it('no import the pre-processor cannot read: import() and require() of a computed name', () => {
    const dynamic = /\b(import|require)\s*\(\s*(?!['"`])/;
    const bad: string[] = [];
    for (const file of files.filter((f) => PRODUCT.includes(layerOf(f)!))) {
      const code = stripComments(readFileSync(join(ROOT, file), 'utf8'));
      code.split('\n').forEach((line, i) => {
        if (dynamic.test(line)) bad.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it('the rules catch a violation (a core module importing node:fs, a driver importing testing/)', () => {
    expect(externalAllowed('core', 'node:fs')).toBe(false);
    expect(MAY_IMPORT.drivers.includes('testing')).toBe(false);
    expect(MAY_IMPORT.client).toEqual(['client']);
  });
});

/** Source without comments (a comment may name Date.now to say why it is not used). */
function stripComments(src: string): string {
  const sf = ts.createSourceFile('x.ts', src, ts.ScriptTarget.Latest, false);
  let out = '';
  const scanner = ts.createScanner(ts.ScriptTarget.Latest, false, ts.LanguageVariant.Standard, sf.text);
  for (let t = scanner.scan(); t !== ts.SyntaxKind.EndOfFileToken; t = scanner.scan()) {
    if (t === ts.SyntaxKind.SingleLineCommentTrivia || t === ts.SyntaxKind.MultiLineCommentTrivia) {
      out += scanner.getTokenText().replace(/[^\n]/g, ' ');
    } else out += scanner.getTokenText();
  }
  return out;
}

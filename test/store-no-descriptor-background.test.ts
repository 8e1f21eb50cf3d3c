/**
 * A background snapshot due at the end of a durable batch that finds no descriptor (EMFILE,
 * ENFILE) to open the fresh log it rotates to is put off, as one written at once is
 * (store-no-descriptor.test.ts): the log renamed back, nothing changed, the register's next
 * append asks again. It threw StoreError from batchDurable, and spookd fenced the pair
 * (store-failed) for a batch that was on disk. Run in a child under `ulimit -n 256`
 * (test/store-no-descriptor-background.scenario.ts).
 */
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('a background snapshot that finds no descriptor', () => {
  it('is put off: the log renamed back, tried again at the next batch, the pair not fenced', () => {
    const out = execFileSync(
      'bash',
      [
        '-c',
        'ulimit -n 256 && exec "$0" "$@"',
        join(ROOT, 'node_modules/.bin/vite-node'),
        join(ROOT, 'test/store-no-descriptor-background.scenario.ts'),
      ],
      { cwd: ROOT, encoding: 'utf8' },
    );
    const r = JSON.parse(out.trim().split('\n').pop()!);
    console.log(JSON.stringify(r));
    expect(r.first).toBeUndefined();
    expect(r.fillers).toBeGreaterThan(0);
    expect(r.starved).toBeUndefined();
    expect(r.logOldLeft).toBe(false);
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]).toMatch(/snapshot not written \(tried again\).*EMFILE/);
    expect(r.later).toBeUndefined();
    expect(r.snapshot).toBe(true);
    expect(r.keys).toEqual([true, true, true]);
  }, 30_000);
});

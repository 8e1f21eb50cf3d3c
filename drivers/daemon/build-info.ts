/**
 * What spookd is: the package version and the commit it was built from, for `spookd --version`
 * and the `spook_build_info` metric. An install records the commit in `COMMIT` beside
 * package.json (packaging/install.sh); a checkout asks git once; otherwise `unknown`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface BuildInfo {
  version: string;
  /** Abbreviated commit, `+dirty` when a checkout has changes; `unknown` when neither is known. */
  commit: string;
}

/** The package root: the nearest directory above this module with a package.json (dist/drivers/daemon/ or drivers/daemon/). */
const ROOT = ((): string => {
  for (const up of ['../../', '../../../']) {
    const dir = fileURLToPath(new URL(up, import.meta.url));
    if (existsSync(`${dir}package.json`)) return dir;
  }
  return fileURLToPath(new URL('../../../', import.meta.url));
})();
let cached: BuildInfo | undefined;

/** The package's version alone (no git: what `spook` needs on every run). */
export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown'; // not beside a package.json
  }
}

/** Version and commit (asks git at most once per process: for `spookd --version` and the metric only). */
export function buildInfo(): BuildInfo {
  cached ??= { version: packageVersion(), commit: recordedCommit() ?? gitCommit() ?? 'unknown' };
  return cached;
}

function recordedCommit(): string | undefined {
  try {
    return readFileSync(`${ROOT}COMMIT`, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function gitCommit(): string | undefined {
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', ROOT, ...args], {
      encoding: 'utf8',
      timeout: 2_000,
      stdio: ['ignore', 'pipe', 'ignore'],
      // A read-only look: `git status` must not take index.lock under a developer's own git commands.
      env: { ...process.env, GIT_OPTIONAL_LOCKS: '0' },
    }).trim();
  try {
    const head = git('rev-parse', '--short=12', 'HEAD');
    return git('status', '--porcelain', '--untracked-files=no') ? `${head}+dirty` : head;
  } catch {
    return undefined; // no git, or not a checkout
  }
}

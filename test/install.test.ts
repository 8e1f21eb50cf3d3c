import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

/** `make install` / `make uninstall`: into a prefix and into a DESTDIR, then run what was installed. */
const ROOT = new URL('..', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'spook-install-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// Bounded: an install that loops (it once did, for a DESTDIR that did not exist) fails the test instead of hanging it.
const make = (...vars: string[]): string =>
  execFileSync('make', ['-s', '-C', ROOT, ...vars], { encoding: 'utf8', timeout: 100_000, killSignal: 'SIGKILL' });
/** Bytes and files under `dir` (regular files, as `du --apparent-size` counts them). */
const usage = (dir: string): { bytes: number; files: number } => {
  let bytes = 0;
  let files = 0;
  for (const f of readdirSync(dir, { recursive: true, withFileTypes: true }))
    if (f.isFile()) {
      bytes += statSync(join(f.parentPath, f.name)).size;
      files++;
    }
  return { bytes, files };
};
const tree = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).sort() : []);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

describe('make install / uninstall', () => {
  it('installs into PREFIX: the installed spook and spookd run, the unit verifies, uninstall leaves nothing', () => {
    const prefix = join(root, 'p', 'usr');
    const etc = join(root, 'p', 'etc');
    make('install', `PREFIX=${prefix}`, `SYSCONFDIR=${etc}`);
    expect(execFileSync(join(prefix, 'bin', 'spook'), ['--version'], { encoding: 'utf8' }).trim()).toBe(pkg.version);
    // spookd --check-config on the installed example, with a real key.
    const key = join(root, 'key');
    writeFileSync(key, `${encodeKey(generateKeyPair().privateKey)}\n`, { mode: 0o600 });
    const conf = join(root, 'spookd.conf');
    writeFileSync(
      conf,
      readFileSync(join(etc, 'spook', 'spookd.conf.example'), 'utf8').replace(
        'privateKeyFile: /etc/spook/private.key',
        `privateKeyFile: ${key}`,
      ),
    );
    const check = spawnSync(join(prefix, 'bin', 'spookd'), ['--config', conf, '--check-config'], { encoding: 'utf8' });
    expect(check.stderr).toBe('');
    expect(check.stdout).toMatch(/OK \(1 peer\(s\), 2 register\(s\), 0 domain\(s\), 0 wrapper\(s\)\)/);
    const unit = join(prefix, 'lib', 'systemd', 'system', 'spookd.service');
    expect(readFileSync(unit, 'utf8')).toContain(`ExecStart=${prefix}/bin/spookd --config ${etc}/spook/spookd.conf`);
    // systemd's own exposure score of the unit's sandbox (0 best, 10 worst): 2.9 when written.
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', unit], { encoding: 'utf8' });
    if (!security.error) {
      const exposure = Number(/Overall exposure level for spookd\.service: ([\d.]+)/.exec(security.stdout)?.[1]);
      expect(exposure, security.stdout + security.stderr).toBeLessThanOrEqual(3.5);
    }
    const analyze = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    if (!analyze.error) {
      // Where the tool exists, the unit must verify cleanly.
      expect(analyze.status, analyze.stderr).toBe(0);
      expect(analyze.stderr.trim()).toBe('');
    }
    // Manual pages and completions where man(1) and the shells look for them.
    for (const f of [
      'share/man/man8/spook.8',
      'share/man/man8/spookd.8',
      'share/man/man5/spookd.conf.5',
      'share/bash-completion/completions/spook',
      'share/zsh/site-functions/_spook',
    ])
      expect(existsSync(join(prefix, f)), f).toBe(true);
    // The product only: no simulator, lab, benchmark, build tool or test code, no developers' CLI.
    const lib = join(prefix, 'lib', 'spook');
    expect(readdirSync(join(lib, 'dist')).sort()).toEqual(['cli', 'client', 'core', 'crypto', 'drivers', 'wire']);
    expect(readdirSync(join(lib, 'bin')).sort()).toEqual(['spook', 'spookd']);
    const shipped = tree(join(lib, 'dist')).filter((f) => f.endsWith('.js'));
    expect(shipped.filter((f) => /(^|\/)(testing|bench|tools|test|sim|lab)\//.test(f) || /\.test\.js$/.test(f))).toEqual([]);
    const help = execFileSync(join(prefix, 'bin', 'spook'), ['--help'], { encoding: 'utf8' });
    for (const dev of ['sim', 'bench', 'demo']) expect(help).not.toMatch(new RegExp(`^\\s+${dev}\\b`, 'm'));
    // Only production dependencies are installed.
    expect(existsSync(join(prefix, 'lib', 'spook', 'node_modules', 'vitest'))).toBe(false);
    expect(existsSync(join(prefix, 'lib', 'spook', 'node_modules', 'koffi'))).toBe(true);
    // koffi's prebuilt binaries: this machine's only (it ships 18 systems' worth, 24 MB), and they load.
    const builds = readdirSync(join(lib, 'node_modules', 'koffi', 'build', 'koffi')).sort();
    expect(builds).toEqual([`linux_${process.arch}`, `musl_${process.arch}`]);
    execFileSync(process.execPath, ['-e', `require(${JSON.stringify(join(lib, 'node_modules', 'koffi'))})`]);
    // The install's size, measured (`du` said 47 MB before koffi's other systems were pruned): under 32 MB.
    const size = usage(prefix);
    console.log(`installed: ${(size.bytes / 1e6).toFixed(1)} MB in ${size.files} files`);
    expect(size.bytes).toBeLessThan(32e6);
    make('uninstall', `PREFIX=${prefix}`, `SYSCONFDIR=${etc}`);
    expect(tree(join(root, 'p'))).toEqual([]);
  }, 120_000);

  it('honours DESTDIR: files are staged under it, pointing at the final PREFIX; uninstall removes exactly them', () => {
    const stage = join(root, 'stage');
    execFileSync('mkdir', ['-p', join(stage, 'usr', 'share', 'keep')]);
    make('install', `DESTDIR=${stage}`, 'PREFIX=/usr');
    const launcher = readFileSync(join(stage, 'usr', 'bin', 'spookd'), 'utf8');
    expect(launcher).toContain('"/usr/lib/spook/bin/spookd"');
    expect(launcher).not.toContain(stage);
    expect(existsSync(join(stage, 'etc', 'spook', 'spookd.conf.example'))).toBe(true);
    expect(existsSync(join(stage, 'usr', 'lib', 'spook', 'bpf', 'spook_xdp.o'))).toBe(true);
    expect(existsSync(join(stage, 'usr', 'lib', 'spook', 'bpf', 'spook_wrap.o'))).toBe(true);
    make('uninstall', `DESTDIR=${stage}`, 'PREFIX=/usr');
    // What was there before install is still there; nothing else is.
    expect(tree(stage)).toEqual(['usr', 'usr/share', 'usr/share/keep']);
  }, 120_000);

  it('makes a DESTDIR that does not exist yet (it used to loop for ever at 100% CPU)', () => {
    const stage = join(root, 'absent', 'stage');
    make('install', `DESTDIR=${stage}`, 'PREFIX=/usr');
    expect(existsSync(join(stage, 'usr', 'bin', 'spookd'))).toBe(true);
    make('uninstall', `DESTDIR=${stage}`, 'PREFIX=/usr');
    // The staging root itself was not the install's to record: it stays, empty.
    expect(tree(stage)).toEqual([]);
  }, 120_000);

  it('refuses a relative PREFIX, naming it', () => {
    const r = spawnSync('make', ['-s', '-C', ROOT, 'install', 'PREFIX=usr/local'], { encoding: 'utf8', timeout: 100_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain("PREFIX must be an absolute path (got 'usr/local')");
  }, 120_000);
});

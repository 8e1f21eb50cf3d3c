import { afterAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';

/**
 * The light client (packages/client, `@spook/client`): built from client/ by `make
 * client-package`, packed with `npm pack`, installed offline into an empty project, imported
 * from plain Node, and talking to an in-process spookd. It installs itself alone: no dependency,
 * nothing native, nothing of the daemon. Its install size is printed (docs/BENCHMARKS.md).
 */
const ROOT = new URL('..', import.meta.url).pathname;
const PKG = join(ROOT, 'packages', 'client');
const work = mkdtempSync(join(tmpdir(), 'spook-client-pkg-'));
const lab = inProcess('spook-clientpkg', ['a', 'b'], portBase('client-package.test.ts'));
const d: Spookd[] = [];

afterAll(async () => {
  await Promise.all(d.map((s) => s.stop()));
  rmSync(work, { recursive: true, force: true });
  rmSync(lab.dir, { recursive: true, force: true });
});

const run = (cmd: string, args: string[], cwd: string): Promise<string> =>
  new Promise((resolve, reject) =>
    execFile(cmd, args, { cwd, encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );

/** Every module specifier a compiled file imports. */
const specifiers = (js: string): string[] => [...js.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)].map((m) => m[1]);

describe('@spook/client: the light client package', () => {
  const app = join(work, 'app');

  it('builds from client/ alone, declares no dependency, and imports only itself and node:*', () => {
    execFileSync('make', ['-s', '-C', ROOT, 'client-package'], { encoding: 'utf8' });
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8')) as Record<string, unknown>;
    for (const k of ['dependencies', 'peerDependencies', 'optionalDependencies', 'bundleDependencies']) expect(pkg[k]).toBeUndefined();
    const files = readdirSync(join(PKG, 'dist')).filter((f) => f.endsWith('.js'));
    expect(files).toContain('index.js');
    expect(files).toContain('codec.js');
    for (const f of files)
      for (const s of specifiers(readFileSync(join(PKG, 'dist', f), 'utf8')))
        expect(s, `${f} imports ${s}`).toMatch(/^(\.\/[\w-]+\.js|node:[\w/]+)$/);
  }, 60_000);

  it('packs, installs offline into an empty project as the only package, and is small', async () => {
    await run('npm', ['pack', '--pack-destination', work], PKG);
    const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toMatch(/^spook-client-\d+\.\d+\.\d+\.tgz$/);
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    await run('npm', ['install', join(work, tarball), '--offline', '--no-audit', '--no-fund'], app);
    expect(readdirSync(join(app, 'node_modules')).sort()).toEqual(['.package-lock.json', '@spook']);
    expect(readdirSync(join(app, 'node_modules', '@spook'))).toEqual(['client']);
    const bytes = Number(execFileSync('du', ['-sb', join(app, 'node_modules')], { encoding: 'utf8' }).split('\t')[0]);
    console.log(`@spook/client installed: ${bytes} bytes in node_modules (du -sb)`);
    expect(bytes).toBeLessThan(512 * 1024);
  }, 60_000);

  it('plain Node imports it and talks to spookd: a JSON value written through it reaches the peer', async () => {
    for (const [name, peer] of [
      ['a', 'b'],
      ['b', 'a'],
    ]) {
      const s = new Spookd(configOf(lab, name, [peer]), lab.keys[name], logOf(lab, name));
      d.push(s);
      await s.start();
    }
    await until('entangled', () => d.every((s) => s.links.values().next().value!.pair.state === PairState.ENTANGLED));
    const script = `
      import { openRegister, json, SpookError } from '@spook/client';
      const reg = await openRegister('config', { socket: ${JSON.stringify(d[0].cfg.adminSocket)} });
      const out = await reg.set('limits', json.encode({ rps: 100, tags: ['é'] }));
      const v = await reg.get('limits');
      const bad = await openRegister('nope', { socket: ${JSON.stringify(d[0].cfg.adminSocket)} });
      const code = await bad.set('k', 'v').then(() => 'accepted', (e) => (e instanceof SpookError ? e.code : 'not a SpookError'));
      console.log(JSON.stringify({ verdict: out.verdict, value: json.decode(v.bytes), code }));
      bad.close();
      reg.close();`;
    writeFileSync(join(app, 'main.mjs'), script);
    const out = JSON.parse(await run(process.execPath, ['main.mjs'], app)) as Record<string, unknown>;
    expect(out).toEqual({ verdict: 'committed', value: { rps: 100, tags: ['é'] }, code: 'unknown-register' });
    const atB = (d[1].link('a').pair.register('config').state as MapState).get(Buffer.from('limits'));
    expect(Buffer.from(atB!.value).toString()).toBe('{"rps":100,"tags":["é"]}');
  }, 60_000);

  it('the main package exports the same entry as spook/client', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
    expect(pkg.exports['./client']).toEqual({ types: './dist/client/index.d.ts', default: './dist/client/index.js' });
    const resolved = await run(process.execPath, ['--input-type=module', '-e', "console.log(import.meta.resolve('spook/client'))"], ROOT);
    expect(resolved.trim()).toBe(`file://${join(ROOT, 'dist', 'client', 'index.js')}`);
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import { chmodSync, rmSync, statSync } from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { configOf, inProcess, logOf } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { ConfigError, configSchema } from '../drivers/daemon/config.js';

/**
 * The admin socket for non-root applications (config adminGroup, adminMode; docs/SECURITY.md):
 * mode and group as configured, a process of the group (run as nobody) can connect and run a
 * command, the same process outside the group cannot; an unknown group is a start error naming
 * the field. Needs root (it gives the socket to another group and runs a process as nobody).
 */
const GROUP = 'nogroup';
const OTHER = 'daemon';
const gidOf = (g: string): number => Number(execFileSync('getent', ['group', g], { encoding: 'utf8' }).split(':')[2]);
const base = portBase('admin-access.test.ts');
const lab = inProcess('spook-access', ['a', 'b'], base);
chmodSync(lab.dir, 0o711); // as /run: searchable by everyone; the socket's directory below is spookd's to create
const sockA = join(lab.dir, 'run-a', 'admin.sock');
const d: Spookd[] = [];

afterAll(async () => {
  await Promise.all(d.map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

/** Connect to `socket` as nobody with primary group `group` and no others; ask `status` (asynchronously: spookd runs in this process). */
function asNobody(group: string, socket: string): Promise<{ status: number | null; out: string }> {
  const script = `
    const s = require('node:net').connect(${JSON.stringify(socket)});
    s.on('connect', () => s.write(JSON.stringify({ id: 1, cmd: 'status' }) + '\\n'));
    s.on('data', (b) => { process.stdout.write('ok ' + JSON.parse(String(b).split('\\n')[0]).ok); process.exit(0); });
    s.on('error', (e) => { process.stdout.write(e.code); process.exit(1); });`;
  return new Promise((resolve) =>
    execFile(
      'setpriv',
      ['--reuid=nobody', `--regid=${group}`, '--clear-groups', process.execPath, '-e', script],
      { encoding: 'utf8', cwd: '/', timeout: 10_000 },
      (err, stdout, stderr) => resolve({ status: err ? ((err as { code?: number }).code ?? null) : 0, out: `${stdout}${stderr}` }),
    ),
  );
}

describe('admin socket for a group', () => {
  it('runs as root (it changes groups and runs a process as nobody)', () => {
    expect(process.getuid?.()).toBe(0);
  });

  it('mode 0660 and group as configured; a member can connect and run a command, a non-member cannot', async () => {
    const s = new Spookd(configOf(lab, 'a', ['b'], { adminSocket: sockA, adminGroup: GROUP }), lab.keys.a, logOf(lab, 'a'));
    d.push(s);
    await s.start();
    const st = statSync(sockA);
    expect((st.mode & 0o777).toString(8)).toBe('660');
    expect(st.gid).toBe(gidOf(GROUP));
    // The directory spookd created is searchable by the group alone.
    const dir = statSync(join(lab.dir, 'run-a'));
    expect((dir.mode & 0o777).toString(8)).toBe('710');
    expect(dir.gid).toBe(gidOf(GROUP));
    expect(await asNobody(GROUP, sockA)).toEqual({ status: 0, out: 'ok true' });
    expect(await asNobody(OTHER, sockA)).toEqual({ status: 1, out: 'EACCES' });
  }, 20_000);

  it('without adminGroup the socket is root-only (0600): nobody cannot connect even in the group', async () => {
    const sock = join(lab.dir, 'run-b', 'admin.sock');
    const s = new Spookd(configOf(lab, 'b', ['a'], { adminSocket: sock }), lab.keys.b, logOf(lab, 'b'));
    d.push(s);
    await s.start();
    expect((statSync(sock).mode & 0o777).toString(8)).toBe('600');
    expect((statSync(join(lab.dir, 'run-b')).mode & 0o777).toString(8)).toBe('700');
    expect((await asNobody(GROUP, sock)).out).toBe('EACCES');
  }, 20_000);

  it('an unknown group is a start error naming adminGroup', async () => {
    const s = new Spookd(
      configOf(lab, 'a', ['b'], {
        adminSocket: join(lab.dir, 'run-x', 's.sock'),
        adminGroup: 'no-such-group-spook',
        listen: `127.0.0.1:${base + 3}`,
      }),
      lab.keys.a,
      logOf(lab, 'a'),
    );
    const err = await s.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    await s.stop();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^adminGroup: no group named "no-such-group-spook"/);
  }, 20_000);

  it('adminMode: octal digits as text or as a YAML number; access for others, or a group without write, refused naming the field', () => {
    const parse = (extra: Record<string, unknown>) => configSchema.safeParse({ ...configOf(lab, 'a', ['b']), ...extra });
    const mode = (extra: Record<string, unknown>) => {
      const r = parse(extra);
      return r.success ? r.data.adminMode : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    };
    expect(mode({ adminMode: '0640' })).toBe(0o640);
    expect(mode({ adminMode: 660, adminGroup: 'spook' })).toBe(0o660); // `adminMode: 0660` in YAML 1.2
    expect(mode({ adminMode: '0666' })).toMatch(/^adminMode: 0666 gives other users access/);
    expect(mode({ adminMode: '0640', adminGroup: 'spook' })).toMatch(/^adminMode: 0640 gives adminGroup no write permission/);
    // `0o660` in YAML is the number 432, read as 0432: refused (others bits), never taken for 0660.
    expect(mode({ adminMode: 432 })).toMatch(/^adminMode: 0432 gives other users access/);
    expect(mode({ adminMode: 'rw' })).toMatch(/^adminMode: must be three octal digits/);
    expect(mode({ adminMode: '0400' })).toMatch(/^adminMode: 0400 must give the owner read and write/);
    expect(mode({ adminGroup: 'a b' })).toMatch(/^adminGroup: /);
  });
});

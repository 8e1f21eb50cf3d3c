/**
 * A real systemd for the lab: the machine's /lib/systemd/systemd as PID 1 of a new PID, mount
 * and UTS namespace inside a lab host's network namespace, so that spookd runs as the service
 * packaging/spookd.service.in makes (Type=notify, the descriptor store) and is restarted with
 * `systemctl` (test/e2e/wrap-systemd.test.ts). Nothing of the host's boot starts: the manager
 * reads units only from its own directory (SYSTEMD_UNIT_PATH, with empty sysinit/basic/shutdown
 * targets) and boots into spk.target, which wants spookd.service.
 *
 * Kept off the host: mount propagation is private; /run, /var and /tmp are fresh tmpfs (the
 * unit's StateDirectory, RuntimeDirectory and PrivateTmp land there); /proc/sys is read-only and
 * /sys a fresh read-only sysfs of the lab's network namespace (the host's mounts under it detached, so
 * that spookd finds the cgroup2 mount below and not a hidden one), with its own bpffs and the
 * cgroup-v2 hierarchy mounted read-write (the manager lives in its own cgroup, removed at the
 * end); /dev/console is a pty of script(1), which writes the manager's output to a file; the hostname is the namespace's. `destroy()` kills PID 1 (the
 * kernel then kills everything in the namespace) and removes the cgroup; every wait is bounded.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ROOT, sleep, until, type Lab } from './netns.js';

export const SYSTEMD = '/lib/systemd/systemd';
/** Inside the namespace: the staged files (units, configuration, launcher), copied at boot. */
export const LAB_RUN = '/run/spk-lab';
/** Inside the namespace: the repository, bound (spookd's code for the unit's prefix). */
export const LAB_ROOT = '/run/spk-lab-root';

/**
 * PID 1 before systemd: the private mounts, then exec the manager (argv: the stage directory,
 * the repository). The repository (spookd's code) is bound at LAB_ROOT, which the unit's prefix
 * links to: at its own path, the namespace's fresh /tmp or the unit's PrivateTmp= and
 * ProtectHome= would hide it (a clone in /tmp, as CI makes, or under /root).
 */
const INNER = `#!/bin/sh
set -e
stage=$1
root=$2
mount -t tmpfs -o mode=755,size=64m tmpfs /run
mkdir -p ${LAB_RUN} ${LAB_ROOT}
cp -a "$stage"/. ${LAB_RUN}/
mount --bind "$root" ${LAB_ROOT}
mount -t tmpfs -o mode=755,size=256m tmpfs /var
mkdir -p /var/tmp /var/lib /var/log
chmod 1777 /var/tmp
mount -t tmpfs -o mode=1777,size=64m tmpfs /tmp
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys /proc/sys
umount -R -l /sys
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
mount -t bpf -o mode=700 bpf /sys/fs/bpf
# The manager logs to /dev/console, which must be a terminal: the pty script(1) gave us.
mount --bind "$(readlink /proc/self/fd/2)" /dev/console
hostname spk-systemd
# No module loading (systemd loads autofs4 and the like at boot) and no clock setting on the host.
exec setpriv --bounding-set=-sys_module,-sys_time env -i container=spook-lab SYSTEMD_UNIT_PATH=${LAB_RUN}/units PATH=/usr/sbin:/usr/bin:/sbin:/bin \\
  ${SYSTEMD} --system --unit=spk.target --log-level=debug --log-target=console --show-status=no
`;

/** Why a real systemd cannot run here (undefined: it can). */
export function systemdUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  if (!existsSync(SYSTEMD)) return `${SYSTEMD} missing`;
  if (!cgroup2Mount()) return 'no cgroup-v2 mount';
  // util-linux (nsenter, unshare, setpriv) and bsdutils (script: the manager's console must be a pty).
  const path = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  for (const tool of ['nsenter', 'unshare', 'setpriv', 'script'])
    if (!path.some((d) => existsSync(join(d, tool)))) return `${tool} not found in PATH`;
  return undefined;
}

/** Where the host mounts the cgroup-v2 hierarchy's root (/sys/fs/cgroup/unified on a hybrid host). */
function cgroup2Mount(): string | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const f = pre?.split(' ');
    if (post?.startsWith('cgroup2 ') && f?.[3] === '/') return f[4];
  }
  return undefined;
}

const run = (cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> =>
  new Promise((resolve) =>
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (e, stdout, stderr) =>
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout, stderr: stderr || (e && !stderr ? e.message : '') }),
    ),
  );

/** A file for the stage: text, or a symbolic link. */
export type StagedFile = { text: string; mode?: number } | { link: string };

export class LabSystemd {
  private constructor(
    /** PID 1 of the namespace, as the host sees it. */
    readonly pid1: number,
    private readonly outer: ChildProcess,
    private readonly cgroup: string,
    /** The manager's console output (script(1)'s typescript). */
    readonly consoleLog: string,
    private readonly outerLog: string[],
  ) {}

  /** Boot a manager in `host`'s network namespace with `files` staged under LAB_RUN (units in units/). */
  static async boot(lab: Lab, host: string, files: Record<string, StagedFile>): Promise<LabSystemd> {
    const why = systemdUnavailable();
    if (why) throw new Error(`a real systemd cannot run here: ${why}`);
    const h = lab.host(host);
    const stage = join(h.dir, 'systemd-stage');
    mkdirSync(stage, { recursive: true });
    for (const [rel, f] of Object.entries(files)) {
      const p = join(stage, rel);
      mkdirSync(dirname(p), { recursive: true });
      if ('link' in f) symlinkSync(f.link, p);
      else {
        writeFileSync(p, f.text);
        chmodSync(p, f.mode ?? 0o644);
      }
    }
    const inner = join(h.dir, 'systemd-inner.sh');
    writeFileSync(inner, INNER, { mode: 0o755 });
    const consoleLog = join(h.dir, 'systemd-console.log');
    removeStaleCgroups();
    const cgroup = join(cgroup2Mount()!, `${lab.prefix}-systemd-${host}`);
    mkdirSync(cgroup, { recursive: true });
    // The outer shell joins the cgroup first: unshare and the namespace's PID 1 inherit it.
    const outer = spawn(
      'sh',
      [
        '-c',
        'echo $$ > "$1/cgroup.procs" && exec script -qfec "$2" "$3"',
        'sh',
        cgroup,
        // exec: script(1) runs this through $SHELL, and dash (CI's /bin/sh) forks for it otherwise.
        `exec nsenter --net=/run/netns/${h.ns} unshare --pid --fork --kill-child --mount --uts --propagation private --mount-proc ${inner} ${stage} ${ROOT}`,
        consoleLog,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: false, env: { ...process.env, SHELL: '/bin/sh' } },
    );
    const outerLog: string[] = [];
    outer.stdout!.on('data', (c: Buffer) => outerLog.push(c.toString()));
    outer.stderr!.on('data', (c: Buffer) => outerLog.push(c.toString()));
    // The namespace's PID 1 is the first descendant of script running systemd (script, then
    // unshare, then PID 1; searched at any depth, bounded, in case a shell forks between them).
    const children = (pid: number): number[] => {
      try {
        return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        return []; // exited meanwhile
      }
    };
    const comm = (pid: number): string => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        return '';
      }
    };
    const findSystemd = (pid: number, depth: number): number | undefined => {
      for (const c of children(pid)) {
        if (comm(c) === 'systemd') return c;
        const d = depth < 4 ? findSystemd(c, depth + 1) : undefined;
        if (d) return d;
      }
      return undefined;
    };
    let pid1: number | undefined;
    try {
      pid1 = await until(
        'the namespace PID 1 running systemd',
        async () => {
          if (outer.exitCode !== null) throw new Error(`exited with ${outer.exitCode}: ${outerLog.join('')}`);
          return findSystemd(outer.pid!, 0);
        },
        15_000,
      );
    } catch (e) {
      outer.kill('SIGKILL');
      throw new Error(`systemd did not start: ${(e as Error).message}; ${outerLog.join('')}`);
    }
    const sd = new LabSystemd(pid1, outer, cgroup, consoleLog, outerLog);
    try {
      await until(
        'systemd answering systemctl',
        async () => (await sd.systemctl('is-system-running')).stdout.trim() || undefined,
        20_000,
        200,
      );
    } catch (e) {
      await sd.destroy();
      throw new Error(`${(e as Error).message}\n${sd.console()}`);
    }
    return sd;
  }

  /** A path inside the namespace, as the host reaches it. */
  path(p: string): string {
    return `/proc/${this.pid1}/root${p}`;
  }

  /** `systemctl ARGS` inside the namespace (bounded: 60 s). */
  systemctl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return run('nsenter', ['-t', String(this.pid1), '-m', '-p', 'systemctl', '--no-pager', ...args], 60_000);
  }

  /** `systemctl show UNIT -p ...` as a record. */
  async show(unit: string, props: string[]): Promise<Record<string, string>> {
    const r = await this.systemctl('show', unit, '-p', props.join(','));
    if (r.code !== 0) throw new Error(`systemctl show ${unit}: ${r.stderr}`);
    return Object.fromEntries(
      r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
  }

  /** What the manager wrote to its console (debug level). */
  console(): string {
    try {
      return readFileSync(this.consoleLog, 'utf8');
    } catch {
      return this.outerLog.join('');
    }
  }

  /** Kill the namespace (its PID 1, then unshare) and remove the cgroup. */
  async destroy(): Promise<void> {
    for (const pid of [this.pid1, this.outer.pid!])
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    const deadline = Date.now() + 10_000;
    while (this.outer.exitCode === null && this.outer.signalCode === null && Date.now() < deadline) await sleep(50);
    // Deepest first; a cgroup is removable once its last process has gone (bounded retries).
    for (let i = 0; i < 50 && existsSync(this.cgroup); i++) {
      removeTree(this.cgroup);
      if (existsSync(this.cgroup)) await sleep(100);
    }
  }
}

/** Cgroups of managers whose test process is gone (killed before its afterAll; Lab.cleanupStale killed the namespace). */
function removeStaleCgroups(): void {
  const root = cgroup2Mount()!;
  for (const name of readdirSync(root)) {
    const owner = /^spk(\d+)-systemd-/.exec(name);
    if (!owner) continue;
    try {
      process.kill(Number(owner[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') removeTree(join(root, name));
    }
  }
}

function removeTree(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
    rmdirSync(dir);
  } catch {
    /* busy or gone: retried */
  }
}

/** The files that run `host`'s spookd as the shipped unit under LabSystemd, from the config `lab.configure` wrote. */
export function spookdUnitFiles(lab: Lab, host: string): Record<string, StagedFile> {
  const h = lab.host(host);
  const prefix = `${LAB_RUN}/prefix`;
  const sysconf = `${LAB_RUN}/etc`;
  const subst = (t: string): string => t.replaceAll('@PREFIX@', prefix).replaceAll('@SYSCONFDIR@', sysconf).replaceAll('@NAME@', 'spookd');
  // The lab's configuration, with the paths the unit provides: its StateDirectory and RuntimeDirectory.
  const cfg = JSON.parse(readFileSync(join(h.dir, 'spookd.conf'), 'utf8')) as Record<string, unknown>;
  Object.assign(cfg, { privateKeyFile: `${sysconf}/spook/private.key`, dataDir: '/var/lib/spook', adminSocket: '/run/spook/admin.sock' });
  const empty = (what: string): StagedFile => ({ text: `[Unit]\nDescription=${what} (the lab's, empty)\n` });
  return {
    'units/spk.target': { text: '[Unit]\nDescription=The lab boot target\nWants=spookd.service\n' },
    'units/sysinit.target': empty('sysinit.target'),
    'units/basic.target': empty('basic.target'),
    'units/shutdown.target': empty('shutdown.target'),
    'units/network-online.target': empty('network-online.target'),
    'units/system.slice': { text: '[Unit]\nDescription=system.slice (the lab)\n' },
    'units/spookd.service': { text: subst(readFileSync(join(ROOT, 'packaging/spookd.service.in'), 'utf8')) },
    // The only addition to the shipped unit: its output goes to a file (no journald in the namespace).
    'units/spookd.service.d/lab-log.conf': { text: `[Service]\nStandardOutput=append:${LAB_RUN}/spookd.log\nStandardError=inherit\n` },
    'prefix/bin/spookd': { text: subst(readFileSync(join(ROOT, 'packaging/launcher.in'), 'utf8')), mode: 0o755 },
    'prefix/lib/spook': { link: LAB_ROOT },
    'etc/spook/spookd.conf': { text: JSON.stringify(cfg, null, 2) },
    'etc/spook/private.key': { text: readFileSync(join(h.dir, 'key'), 'utf8'), mode: 0o600 },
  };
}

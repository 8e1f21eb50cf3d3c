/**
 * Who may use the admin socket (config `adminGroup`, `adminMode`; docs/SECURITY.md). Without a
 * group the socket is root's alone (0600). With one, its members may connect (0660): every admin
 * command, writes and membership changes included, so the group is as trusted as root for
 * Spook's data. The socket's directory is made traversable by the group when spookd created it;
 * a directory it did not create must already be (spookd does not loosen a directory it does not own).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { ConfigError } from '../daemon/config.js';

/** The admin socket's mode: adminMode, else 0660 with a group and 0600 without. */
export function adminSocketMode(cfg: { adminGroup?: string | number; adminMode?: number }): number {
  return cfg.adminMode ?? (cfg.adminGroup !== undefined ? 0o660 : 0o600);
}

const octal = (m: number): string => `0${m.toString(8).padStart(3, '0')}`;

/** The gid of `group` (a name or a gid), through NSS (`getent group`) or /etc/group; a ConfigError naming adminGroup if none. */
export function resolveAdminGroup(group: string | number): number {
  if (typeof group === 'number') return group;
  let line: string | undefined;
  try {
    line = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split(
      '\n',
    )[0];
  } catch (e) {
    // getent exits 2 for "no such group"; absent (ENOENT), read the file it would have read.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      try {
        line = readFileSync('/etc/group', 'utf8')
          .split('\n')
          .find((l) => l.split(':')[0] === group || (/^\d+$/.test(group) && l.split(':')[2] === group));
      } catch {
        /* no /etc/group: no such group */
      }
    }
  }
  const gid = line ? Number(line.split(':')[2]) : NaN;
  if (!Number.isSafeInteger(gid) || gid < 0)
    throw new ConfigError(`adminGroup: no group named ${JSON.stringify(group)} on this host (getent group ${group})`);
  return gid;
}

/**
 * Create the socket's directory if needed (0700), and when a group is given let it reach the
 * socket: directories spookd created now are given to the group with search permission (0710);
 * an existing one must let the group (or everyone) search it already.
 */
export function prepareSocketDir(path: string, gid: number | undefined, groupName: string | number | undefined): void {
  const dir = dirname(path);
  const first = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (gid === undefined) return;
  const created: string[] = [];
  if (first !== undefined) {
    // Every directory from the first created down to the socket's.
    let at = first;
    created.push(at);
    for (const part of relative(first, dir).split(sep).filter(Boolean)) created.push((at = `${at}${sep}${part}`));
  }
  for (const d of created) {
    giveToGroup(d, gid, groupName);
    chmodSync(d, 0o710);
  }
  const st = statSync(dir);
  const searchable = (st.mode & 0o001) !== 0 || (st.gid === gid && (st.mode & 0o010) !== 0);
  if (!searchable)
    throw new ConfigError(
      `adminSocket: group ${groupName} cannot reach the socket: its directory ${dir} (mode ${octal(st.mode & 0o777)}, group ${st.gid}) ` +
        `is not searchable by it; run chgrp ${groupName} ${dir} && chmod g+x ${dir}, or put the socket in a directory spookd creates`,
    );
}

/**
 * The socket is given its group and mode by path, after it is bound (chown, chmod: both follow a
 * symlink). A user who can write its directory, or one above it, could put a symlink to any file in
 * its place in between: that file would be given to the group, mode 0660 (/etc/shadow, say). So the
 * directory and every one above it must be root's or spookd's user's, writable by no one else unless
 * sticky (as /tmp, where no one renames what is not theirs). Checked once the directory exists.
 */
export function refuseOpenSocketDir(path: string): void {
  const uid = process.geteuid?.();
  if (uid === undefined) return; // not POSIX: no owners to check
  // Every directory an entry on the way is in, symlinks followed one by one: a link on the way is
  // re-pointed by whoever can write the directory it is in, after this check and before the bind
  // (the resolved directory's parents alone left out a link's).
  const dirs = new Set<string>();
  const walk = (p: string, hops: number): string => {
    let cur: string = sep;
    for (const part of p.split(sep)) {
      if (part === '' || part === '.') continue;
      dirs.add(cur);
      if (part === '..') {
        cur = dirname(cur);
        continue;
      }
      const next = join(cur, part);
      if (!lstatSync(next).isSymbolicLink()) cur = next;
      else if (hops >= 40) throw new ConfigError(`adminSocket: too many symbolic links on the way to ${path}`);
      else {
        const to = readlinkSync(next);
        cur = walk(isAbsolute(to) ? to : `${cur}${sep}${to}`, hops + 1);
      }
    }
    dirs.add(cur);
    return cur;
  };
  walk(dirname(isAbsolute(path) ? path : `${process.cwd()}${sep}${path}`), 0);
  for (const d of dirs) {
    const st = statSync(d);
    const why =
      st.uid !== 0 && st.uid !== uid
        ? `is owned by uid ${st.uid}`
        : (st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0
          ? `is writable by ${st.mode & 0o002 ? 'every user' : `group ${st.gid}`} (mode ${octal(st.mode & 0o7777)})`
          : undefined;
    if (why)
      throw new ConfigError(
        `adminSocket: directory ${d} ${why}: another user could replace the socket before spookd sets its group and mode, ` +
          `and have them set on a file of its choosing; put the socket in a directory only root can write (the packaged /run/spook)`,
      );
  }
}

/** The socket's group and mode, group first (its mode never applies to another group). */
export function applySocketAccess(path: string, mode: number, gid: number | undefined, groupName: string | number | undefined): void {
  if (gid !== undefined) giveToGroup(path, gid, groupName);
  chmodSync(path, mode);
}

function giveToGroup(path: string, gid: number, groupName: string | number | undefined): void {
  try {
    chownSync(path, -1, gid);
  } catch (e) {
    throw new ConfigError(
      `adminGroup: cannot give ${path} to group ${groupName} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): ` +
        'spookd needs CAP_CHOWN (the packaged unit has it) or to be a member of the group',
    );
  }
}

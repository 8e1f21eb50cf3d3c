/**
 * A peer's store directory belongs to one pair, and a pair is its two static keys: the pair's
 * roles and hash seed come from them (pairIdentity), so its records replay under those keys only.
 * The directory names both keys in a file `pair` (this host's, then the peer's, base64, a line
 * each). A peer configured under its name with another key, or this host with a new key of its
 * own (a rekey, by reload or across a restart), is a new pair: it starts from an empty directory
 * and re-entangles with its peer, and the old directory is kept beside it, renamed, never read
 * again by spookd (OPERATIONS.md, "Rekeying a peer").
 */
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fsyncDir, mkdirDurable, writeAtomic } from './store.js';

const FILE = 'pair';

const b64 = (k: Uint8Array): string => Buffer.from(k).toString('base64');

const pairText = (self: Uint8Array, peer: Uint8Array): string => `${b64(self)}\n${b64(peer)}\n`;

/** Whether `dir` belongs to a pair of other keys (claimPairDir will set it aside): nothing in it is this pair's. */
export function heldByOtherPair(dir: string, self: Uint8Array, peer: Uint8Array): boolean {
  const file = join(dir, FILE);
  return existsSync(file) && readFileSync(file, 'latin1') !== pairText(self, peer);
}

/**
 * Make `dir` the directory of the pair of keys (self, peer): created if absent; left as it is if
 * it is theirs, or predates this file (then it is taken as theirs); else renamed aside first.
 * Returns where a directory of another pair went, if one did.
 */
export function claimPairDir(dir: string, self: Uint8Array, peer: Uint8Array): string | undefined {
  const text = pairText(self, peer);
  const file = join(dir, FILE);
  let retired: string | undefined;
  if (existsSync(file)) {
    if (readFileSync(file, 'latin1') === text) return undefined;
    retired = `${dir}.retired-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;
    for (let n = 2; existsSync(retired); n++) retired = retired.replace(/(~\d+)?$/, `~${n}`);
    renameSync(dir, retired);
    fsyncDir(dirname(dir));
  }
  mkdirDurable(dir);
  writeAtomic(file, Buffer.from(text, 'latin1'), dir);
  return retired;
}

import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { claimPairDir } from '../drivers/store/pair-dir.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { tempDirs } from './helpers.js';

const tmp = tempDirs('spook-pair-dir');

describe('claimPairDir: a store directory belongs to one pair of keys', () => {
  const self = generateKeyPair().publicKey;
  const peer = generateKeyPair().publicKey;

  it('creates the directory and names both keys; the same keys again leave it alone', () => {
    const dir = join(tmp(), 'x');
    expect(claimPairDir(dir, self, peer)).toBeUndefined();
    expect(readFileSync(join(dir, 'pair'), 'latin1').split('\n')).toEqual([
      Buffer.from(self).toString('base64'),
      Buffer.from(peer).toString('base64'),
      '',
    ]);
    writeFileSync(join(dir, 'log'), 'records');
    expect(claimPairDir(dir, self, peer)).toBeUndefined();
    expect(readFileSync(join(dir, 'log'), 'latin1')).toBe('records');
  });

  it('sets the directory of other keys aside (the peer rekeyed, or this host), whole, and starts an empty one', () => {
    const root = tmp();
    const dir = join(root, 'x');
    claimPairDir(dir, self, peer);
    writeFileSync(join(dir, 'log'), 'records of the old pair');
    const newPeer = generateKeyPair().publicKey;
    const kept = claimPairDir(dir, self, newPeer)!;
    expect(kept).toMatch(/x\.retired-\d{8}T\d{6}$/);
    expect(readFileSync(join(kept, 'log'), 'latin1')).toBe('records of the old pair');
    expect(readdirSync(dir)).toEqual(['pair']);
    // This host's own key changed too, the same second: a second name beside the first.
    const kept2 = claimPairDir(dir, generateKeyPair().publicKey, newPeer)!;
    expect(kept2).not.toBe(kept);
    expect(existsSync(kept) && existsSync(kept2)).toBe(true);
  });

  it('takes a directory from before this file as the configured pair', () => {
    const dir = join(tmp(), 'x');
    mkdirSync(dir);
    writeFileSync(join(dir, 'log'), 'records');
    expect(claimPairDir(dir, self, peer)).toBeUndefined();
    expect(readdirSync(dir).sort()).toEqual(['log', 'pair']);
  });
});

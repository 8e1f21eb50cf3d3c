import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import type { MapState } from '../core/register/map.js';
import { openRegister } from '../client/register.js';
import { startSoloSpookd } from './admin-solo.js';

/**
 * A scan's cursor names its register by peer name and register name. A reload that rekeys the peer
 * (removePeer, addPeer: a new pair, from an empty store, the old one set aside) leaves a register of
 * the same names, and the cursor went on serving pages of the old pair's register, labelled with a
 * version of the new one: an application paging through (scanAll) got keys the register does not
 * hold, at a version it does hold, and no error. A cursor is of one pair: past a rekey, `cursor-expired`.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-scan-rekey-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

beforeAll(async () => {
  d = await startSoloSpookd(dir, socket);
});
afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('a scan cursor across a rekey of its peer', { timeout: 15_000 }, () => {
  it('the next page is cursor-expired, not a page of the old pair', async () => {
    // The old pair's register holds 30 keys (set in its state: the peer never runs, so nothing commits).
    const state = d.links.get('b')!.pair.register('config').state as MapState;
    const enc = new TextEncoder();
    for (let i = 0; i < 30; i++) state.put(enc.encode(`k${String(i).padStart(2, '0')}`), enc.encode(`old-${i}`), 0);
    const h = await openRegister('config', { socket, peer: 'b' });
    try {
      const first = await h.scan('', { limit: 10 });
      expect(first.entries.map((e) => e.key).slice(0, 2)).toEqual(['k00', 'k01']);
      expect(first.next).toBeDefined();

      // `spook reload` with peer b's key changed: its pair is removed and added again, from an empty store.
      const peer = d.cfg.peers.find((p) => p.name === 'b')!;
      await d.removePeer('b');
      d.addPeer({ ...peer, publicKey: encodeKey(generateKeyPair().publicKey) });
      const now = await h.size();

      const next = await h.scan('', { limit: 10, ...first.next }).then(
        (p) => `a page of version ${p.version}: ${p.entries.map((e) => `${e.key}=${e.value}`).join(' ')}`,
        (e: Error & { code?: string }) => e.code ?? e.message,
      );
      expect({ register: `${now.kind === 'map' ? now.keys : '?'} keys at version ${now.version}`, next }).toEqual({
        register: '0 keys at version 0',
        next: 'cursor-expired',
      });
    } finally {
      h.close();
    }
  });
});

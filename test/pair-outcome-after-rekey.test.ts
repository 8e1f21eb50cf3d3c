/**
 * `outcome` of a write answered `pending`, asked after a reload rekeyed its peer: the rekey makes a new
 * pair (from an empty store) that numbers its writes from 1 again, so the seq alone names another write.
 * A write's Outcome carries its `pair` (a hash of both keys); `outcome` given it answers
 * `unknown-candidate` for a write of the replaced pair, through the admin API and through the library
 * (given the Outcome, or a bare seq the handle answered `pending`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { pairIdentity } from '../core/etcp/endpoint.js';
import { AdminClient, type SpookError } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import type { Outcome } from '../client/protocol.js';
import { startSoloSpookd } from './admin-solo.js';

const dir = mkdtempSync(join(tmpdir(), 'spook-outcome-rekey-'));
const socket = join(dir, 'a.sock');
let d: Spookd;
beforeAll(async () => {
  d = await startSoloSpookd(dir, socket);
});
afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** What `outcome` answers, in words: its verdict and version, or its error code. */
const said = (p: Promise<Outcome>): Promise<string> =>
  p.then(
    (r) => `${r.verdict}${r.version !== null ? ` in version ${r.version}` : ''}`,
    (e: SpookError) => e.code,
  );

describe('outcome across a rekey of the peer', { timeout: 25_000 }, () => {
  it('a write of the replaced pair is unknown-candidate given its pair; the new pair answers its own; a restart keeps the pair', async () => {
    let peer = d.cfg.peers.find((p) => p.name === 'b')!;
    /** Peer b rekeyed (as a reload does) to a key that makes this host the pair's sequencer or its follower. */
    const rekeyAs = async (role: 'sequencer' | 'follower'): Promise<void> => {
      let k = generateKeyPair().publicKey;
      while ((pairIdentity(d.key.publicKey, k).localId === 1) !== (role === 'sequencer')) k = generateKeyPair().publicKey;
      await d.removePeer('b');
      peer = { ...peer, publicKey: encodeKey(k) };
      d.addPeer(peer);
    };
    const h = await openRegister('config', { socket, peer: 'b' });
    const admin = await AdminClient.connect(socket);
    try {
      // A pair where this host follows: its write stays pending (the peer never runs).
      await rekeyAs('follower');
      const w1 = await h.set('x', 'old', { timeoutMs: 1500 });
      expect(w1).toMatchObject({ verdict: 'pending', seq: 1 });
      // Rekeyed: a new pair, where this host is the sequencer and decides its own write alone, numbered 1 too.
      await rekeyAs('sequencer');
      const w2 = await h.set('y', 'new', { timeoutMs: 1500 });
      expect(w2).toMatchObject({ verdict: 'committed', seq: w1.seq });

      // The write of the replaced pair: unknown, never the new pair's write of the same seq (before: committed
      // in w2's version). A bare seq, as the library documents it: the handle sends its pending write's pair.
      expect(await said(h.outcome(w1.seq))).toBe('unknown-candidate');
      expect(w1.pair).toMatch(/^[0-9a-f]{16}$/);
      expect(w2.pair).not.toBe(w1.pair);
      const viaAdmin = admin.request('outcome', { peer: 'b', register: 'config', seq: w1.seq, pair: w1.pair });
      expect(await said(viaAdmin)).toBe('unknown-candidate');
      const e = (await viaAdmin.catch((x: SpookError) => x)) as SpookError;
      expect(e.message).toMatch(/replaced .*rekeyed.*abandoned \(peer-removed\)/);
      expect(await said(h.outcome(w1))).toBe('unknown-candidate');
      // The new pair's write, asked with its pair (as the library does given its Outcome): answered.
      expect(await said(h.outcome(w2))).toBe(`committed in version ${w2.version}`);
      expect(await h.outcome(w2)).toMatchObject({ seq: w2.seq, pair: w2.pair });
      // A pair that is not 16 hex digits is refused, not taken for a replaced one.
      expect(await said(admin.request('outcome', { peer: 'b', register: 'config', seq: 1, pair: 'b' }))).toBe('bad-argument');
      // Without a pair, as before: the seq alone is taken as the current pair's (docs/LIBRARY.md says so).
      expect(await said(admin.request('outcome', { peer: 'b', register: 'config', seq: w1.seq }))).toBe(
        `committed in version ${w2.version}`,
      );

      // A restart: the same keys (peer b's as the rekey left it), the same pair.
      const { cfg, key } = d;
      cfg.peers = [peer];
      h.close();
      admin.close();
      await d.stop();
      d = new Spookd(cfg, key, pino({ level: 'silent' }));
      await d.start();
      const h2 = await openRegister('config', { socket, peer: 'b' });
      try {
        expect(await h2.outcome(w2)).toMatchObject({ verdict: 'committed', version: w2.version, pair: w2.pair });
        expect(await said(h2.outcome(w1))).toBe('unknown-candidate');
        const w3 = await h2.set('z', 'after', { timeoutMs: 1500 });
        expect(w3).toMatchObject({ verdict: 'committed', pair: w2.pair });
        expect(w3.seq).toBeGreaterThan(w2.seq); // past the leased seqs (never one numbered before the restart)
      } finally {
        h2.close();
      }
    } finally {
      h.close();
      admin.close();
    }
  });
});

/**
 * A CookieReply carries nothing only the responder could make (PROTOCOL.md §12.8): its key is
 * derived from the responder's public key and its associated data is the init's mac1, both
 * known to whoever sees the init. An initiator takes one cookie per init, so an observer that
 * answers every init first, with a cookie of its own, from an address of its own, must not keep
 * the pair from forming while the responder is under load.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import type { Addr } from '../core/etcp/peers.js';
import { mac1Of, sealCookie } from '../core/etcp/cookie.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { decodeFrame, encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { COOKIE_REPLY, HANDSHAKE_INIT } from '../wire/etcp.js';
import { viewOf } from '../wire/layouts.js';
import { peerTableOfOne } from './helpers.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** What an observer of `init` to the holder of `responderPub` can send: a CookieReply that opens, with a cookie of its choosing. */
function forgedCookie(responderPub: Uint8Array, init: Uint8Array): Uint8Array {
  const idx = HANDSHAKE_INIT.fields.sender_index.get(viewOf(init.subarray(20)));
  const nonce = random(24);
  const sealed = sealCookie(responderPub, nonce, random(16), mac1Of(init));
  return encodeFrame(
    { type: FrameType.CookieReply, flags: 0, pairId: idx, packetNumber: 0 },
    COOKIE_REPLY.encode({ receiver_index: idx, nonce, cookie_sealed: sealed }),
  );
}

function mkTable(self: KeyPair, peer: { name: string; key: KeyPair; at: Addr }, clock: { now: number }) {
  return peerTableOfOne(self, peer, clock, { cookieThreshold: 5 });
}

describe('CookieReply race (§12.8)', () => {
  for (const forge of [false, true])
    it(`a responder under load: the pair forms ${forge ? 'though an observer beats every CookieReply with its own' : 'with the genuine cookies'}`, () => {
      const ka = generateKeyPair();
      const kb = generateKeyPair();
      const kz = generateKeyPair(); // an unauthorised key that keeps b under load
      const clock = { now: 0 };
      const A: Addr = { address: '192.0.2.1', port: 51820 };
      const B: Addr = { address: '192.0.2.2', port: 51820 };
      const Z: Addr = { address: '203.0.113.9', port: 4444 };
      const a = mkTable(ka, { name: 'b', key: kb, at: B }, clock);
      const b = mkTable(kb, { name: 'a', key: ka, at: A }, clock);
      const z = new EtcpEndpoint({
        staticKey: kz,
        peers: [
          { name: 'a', publicKey: ka.publicKey },
          { name: 'b', publicKey: kb.publicKey },
        ],
        random,
      });
      let forged = 0;
      for (clock.now = 0; clock.now < 12_000 && !(a.table.canSend('b') && b.table.canSend('a')); clock.now += 100) {
        // The flood: 10 mac1-valid inits per 100 ms from an unauthorised key to each (both under load throughout).
        for (const [t, k] of [
          [a, ka],
          [b, kb],
        ] as const) {
          for (let i = 0; i < 10; i++) t.table.handleDatagram(clock.now, Z, z.initiate(clock.now, k.publicKey));
          while (t.table.pollTransmit());
        }
        a.table.handleTimeout(clock.now);
        b.table.handleTimeout(clock.now);
        for (let round = 0; round < 4; round++)
          for (const [from, to, fromAddr, peerPub] of [
            [a, b, A, kb.publicKey],
            [b, a, B, ka.publicKey],
          ] as const)
            for (let t = from.table.pollTransmit(); t; t = from.table.pollTransmit()) {
              if (forge && decodeFrame(t.datagram).header.type === FrameType.HandshakeInit) {
                // The observer sees the init and answers first, from its own address.
                from.table.handleDatagram(clock.now, { address: '198.51.100.7', port: 9 }, forgedCookie(peerPub, t.datagram));
                forged++;
              }
              to.table.handleDatagram(clock.now, fromAddr, t.datagram);
            }
        while (a.table.pollEvent());
        while (b.table.pollEvent());
      }
      console.log(
        `forge=${forge}: ${a.table.canSend('b') ? 'formed' : 'not formed'} at ${clock.now} ms, ${forged} forged; a drops ${JSON.stringify(a.table.drops)}`,
      );
      expect(a.table.canSend('b')).toBe(true);
      expect(b.table.canSend('a')).toBe(true);
      expect(clock.now).toBeLessThan(6000);
    });
});

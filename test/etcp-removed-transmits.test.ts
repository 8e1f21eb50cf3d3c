import { describe, expect, it } from 'vitest';
import { QN_MSG_TYPE } from '../wire/qn.js';
import { peerTableOfOne } from './helpers.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';
import { Rng } from '../testing/sim/rng.js';

/**
 * A peer removed from the table (a reload) takes with it what the driver has not sent yet: a
 * HandshakeInit, a QN frame sealed for it. Before, its payloads and events went but its
 * datagrams stayed queued, and a driver polling after the removal sent them to a peer no longer
 * configured (its key refused from then on).
 */
describe('a removed peer', () => {
  const keyRng = new Rng(11);
  const keyPair = (): KeyPair => {
    const privateKey = keyRng.bytes(32);
    return { privateKey, publicKey: publicKeyOf(privateKey) };
  };
  const a = keyPair();
  const b = keyPair();
  const at = { a: { address: '10.0.0.1', port: 1 }, b: { address: '10.0.0.2', port: 1 } };

  it('leaves no datagram queued for it', () => {
    const clock = { now: 0 };
    const x = peerTableOfOne(a, { name: 'b', key: b, at: at.b }, clock);
    const y = peerTableOfOne(b, { name: 'a', key: a, at: at.a }, clock);
    // A session between them (whoever initiates), then a's queue left unpolled.
    for (clock.now = 0; !x.table.canSend('b') && clock.now < 10_000; clock.now += 500) {
      x.table.handleTimeout(clock.now);
      y.table.handleTimeout(clock.now);
      for (let moved = true; moved;) {
        moved = false;
        for (let d = x.table.pollTransmit(); d; d = x.table.pollTransmit(), moved = true)
          y.table.handleDatagram(clock.now, at.a, d.datagram);
        for (let d = y.table.pollTransmit(); d; d = y.table.pollTransmit(), moved = true)
          x.table.handleDatagram(clock.now, at.b, d.datagram);
      }
    }
    expect(x.table.canSend('b')).toBe(true);
    expect(x.table.sendPayload('b', new Uint8Array([QN_MSG_TYPE, 0, 0, 0, 1, 9]))).toBe(true);
    x.table.removePeer('b');
    x.etcp.removePeer(b.publicKey);
    const left: string[] = [];
    for (let d = x.table.pollTransmit(); d; d = x.table.pollTransmit()) left.push(`${d.to.address}: ${d.datagram.length} octets`);
    expect(left).toEqual([]);
  });
});

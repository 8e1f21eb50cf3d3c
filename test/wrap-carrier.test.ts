/**
 * The carrier's AEAD negotiation (PROTOCOL §16.2): AES-256-GCM when both ends have it, else
 * ChaCha20-Poly1305; a choice changed on the way fails the handshake; records sealed with
 * either cipher follow Noise's transport encryption (counter nonce, little-endian for
 * ChaChaPoly, big-endian for AESGCM).
 */
import { describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { generateKeyPair } from '../crypto/primitives.js';
import {
  acceptCarrier,
  Carrier,
  CARRIER_PROLOGUE,
  carrierMac1,
  carrierNonce,
  chooseCipher,
  dialCarrier,
  MESSAGE1_LEN,
  type CarrierCipher,
} from '../drivers/wrap/carrier.js';
import { loopbackServers } from './helpers.js';
import { IKResponder, type CipherState } from '../core/etcp/noise.js';

const listen = loopbackServers();

const a = generateKeyPair();
const b = generateKeyPair();

/** A responder on loopback accepting `a`, with the given ciphers; resolves its carrier (or its error). */
async function responder(ciphers: CarrierCipher[]): Promise<{ port: number; accepted: Promise<Carrier> }> {
  let resolve!: (c: Carrier) => void;
  let reject!: (e: Error) => void;
  const accepted = new Promise<Carrier>((res, rej) => ((resolve = res), (reject = rej)));
  accepted.catch(() => undefined);
  const port = await listen((s) =>
    acceptCarrier(s, b, (k) => (Buffer.from(k).equals(Buffer.from(a.publicKey)) ? 'a' : undefined), 5_000, { ciphers }).then(
      (r) => resolve(r.carrier),
      reject,
    ),
  );
  return { port, accepted };
}

/** Records both ways, one of them large enough to span socket reads. */
async function roundTrip(x: Carrier, y: Carrier): Promise<void> {
  const got: { x: Buffer[]; y: Buffer[] } = { x: [], y: [] };
  x.start({ onRecord: (p) => got.x.push(Buffer.concat(p)), onClose: () => {}, onDrain: () => {} });
  y.start({ onRecord: (p) => got.y.push(Buffer.concat(p)), onClose: () => {}, onDrain: () => {} });
  const big = randomBytes(200_000);
  x.send([Buffer.from('head'), big]);
  x.send([Buffer.from('second')]);
  y.send([Buffer.from('reply')]);
  await until(() => got.y.length === 2 && got.x.length === 1);
  expect(got.y[0].equals(Buffer.concat([Buffer.from('head'), big]))).toBe(true);
  expect(got.y[1].toString()).toBe('second');
  expect(got.x[0].toString()).toBe('reply');
  x.close('done');
  y.close('done');
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('carrier cipher negotiation (§16.2)', () => {
  it('picks AES-256-GCM when both ends have AES instructions, and carries records with it', async () => {
    const r = await responder(['aes-256-gcm', 'chacha20-poly1305']);
    const c = await dialCarrier('127.0.0.1', r.port, a, b.publicKey, { ciphers: ['aes-256-gcm', 'chacha20-poly1305'] });
    const s = await r.accepted;
    expect(c.cipher).toBe('aes-256-gcm');
    expect(s.cipher).toBe('aes-256-gcm');
    await roundTrip(c, s);
  });

  it('falls back to ChaCha20-Poly1305 when either end lacks AES', async () => {
    for (const [ini, res] of [
      [['chacha20-poly1305'], ['aes-256-gcm', 'chacha20-poly1305']],
      [['aes-256-gcm', 'chacha20-poly1305'], ['chacha20-poly1305']],
    ] as CarrierCipher[][][]) {
      const r = await responder(res);
      const c = await dialCarrier('127.0.0.1', r.port, a, b.publicKey, { ciphers: ini });
      const s = await r.accepted;
      expect([c.cipher, s.cipher]).toEqual(['chacha20-poly1305', 'chacha20-poly1305']);
      await roundTrip(c, s);
    }
  });

  it('refuses an offer without ChaCha20-Poly1305, of the wrong size, or a choice that was not offered', async () => {
    expect(() => chooseCipher(Uint8Array.of(0x02), ['aes-256-gcm', 'chacha20-poly1305'])).toThrow(/without ChaCha20-Poly1305/);
    expect(() => chooseCipher(new Uint8Array(0), ['chacha20-poly1305'])).toThrow(/offer of 0 octets/);
    expect(chooseCipher(Uint8Array.of(0x03), ['chacha20-poly1305'])).toBe('chacha20-poly1305');
    expect(chooseCipher(Uint8Array.of(0xff), ['aes-256-gcm', 'chacha20-poly1305'])).toBe('aes-256-gcm'); // unknown bits: later ciphers
    // An initiator that offered only ChaCha20-Poly1305, answered AES-256-GCM by a responder that
    // authenticates (it holds b's key) but does not follow the rule: refused.
    const port = await listen((s) => {
      s.once('data', (d: Buffer) => {
        const ik = new IKResponder({ hash: 'BLAKE2s', prologue: CARRIER_PROLOGUE, staticKey: b });
        ik.readMessage1(d.subarray(4, 4 + MESSAGE1_LEN));
        const { message } = ik.writeMessage2(Uint8Array.of(0x02));
        s.write(Buffer.concat([u32(message.length), message]));
      });
    });
    await expect(dialCarrier('127.0.0.1', port, a, b.publicKey, { ciphers: ['chacha20-poly1305'] })).rejects.toThrow(
      /cipher choice 02 is not one offered/,
    );
    // An initiator offering AES only: the responder refuses it.
    const r = await responder(['aes-256-gcm', 'chacha20-poly1305']);
    await expect(dialCarrier('127.0.0.1', r.port, a, b.publicKey, { ciphers: ['aes-256-gcm'] })).rejects.toThrow();
    await expect(r.accepted).rejects.toThrow(/without ChaCha20-Poly1305/);
  });

  it('fails the handshake when the offer or the choice is changed on the way (no downgrade)', async () => {
    // A relay between the two that flips one octet of the encrypted payload of message 1 (mac1
    // recomputed: it needs only b's public key) or of message 2.
    const relay = async (to: number, which: 1 | 2): Promise<number> =>
      listen((x) => {
        const y = connect(to, '127.0.0.1');
        let first = true;
        x.on('data', (d: Buffer) => {
          if (which === 1 && first) {
            first = false;
            const m1 = Buffer.from(d.subarray(4, 4 + MESSAGE1_LEN));
            m1[80] ^= 0x02; // the offer octet's ciphertext: AES-256-GCM's bit
            d = Buffer.concat([d.subarray(0, 4), m1, carrierMac1(b.publicKey, m1)]);
          }
          y.write(d);
        });
        let firstBack = true;
        y.on('data', (d: Buffer) => {
          if (which === 2 && firstBack) {
            firstBack = false;
            d = Buffer.from(d);
            d[4 + 32] ^= 0x03; // the choice octet's ciphertext (after e): ChaCha20-Poly1305 ↔ AES-256-GCM
          }
          x.write(d);
        });
        x.on('error', () => y.destroy());
        y.on('error', () => x.destroy());
        x.on('close', () => y.destroy());
        y.on('close', () => x.destroy());
      });
    const both: CarrierCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];
    const r1 = await responder(both);
    await expect(dialCarrier('127.0.0.1', await relay(r1.port, 1), a, b.publicKey, { ciphers: both })).rejects.toThrow();
    await expect(r1.accepted).rejects.toThrow(/authenticat|decrypt/i);
    const r2 = await responder(['chacha20-poly1305']);
    await expect(dialCarrier('127.0.0.1', await relay(r2.port, 2), a, b.publicKey, { ciphers: both })).rejects.toThrow(
      /authenticat|decrypt/i,
    );
  });
});

function u32(n: number): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(n, 0);
  return h;
}

describe('carrier records (§16.2): Noise transport encryption with the negotiated cipher', () => {
  it('encodes the nonce as Noise does: ChaChaPoly little-endian, AESGCM big-endian, after 4 zero octets', () => {
    const n = 2 ** 32 + 5;
    expect(carrierNonce('chacha20-poly1305', n).toString('hex')).toBe('00000000' + '0500000001000000');
    expect(carrierNonce('aes-256-gcm', n).toString('hex')).toBe('00000000' + '0000000100000005');
  });

  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305'] as const) {
    it(`${cipher}: record n opens with the key, nonce n and empty associated data; a flipped octet closes the carrier`, async () => {
      const key = randomBytes(32);
      const raw: Buffer[] = [];
      let sock!: Socket;
      const port = await listen((s) => s.on('data', (d: Buffer) => raw.push(d)));
      const out = connect(port, '127.0.0.1');
      await new Promise<void>((r) => out.once('connect', () => r()));
      const cs = { key } as unknown as CipherState;
      const c = new Carrier(out, cs, cs, [], cipher);
      c.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
      c.send([Buffer.from('record zero')]);
      c.send([Buffer.from('record '), Buffer.from('one')]);
      await until(() => Buffer.concat(raw).length >= 2 * 4 + 11 + 10 + 32);
      const wire = Buffer.concat(raw);
      let off = 0;
      for (const [n, text] of [
        [0, 'record zero'],
        [1, 'record one'],
      ] as const) {
        const len = wire.readUInt32BE(off);
        const sealed = wire.subarray(off + 4, off + 4 + len);
        const d = createDecipheriv(cipher, key, carrierNonce(cipher, n), { authTagLength: 16 });
        d.setAuthTag(sealed.subarray(len - 16));
        expect(Buffer.concat([d.update(sealed.subarray(0, len - 16)), d.final()]).toString()).toBe(text);
        off += 4 + len;
      }
      c.close('done');
      // The receiving side: the same records, one octet flipped, fail authentication.
      const closed: string[] = [];
      const port2 = await listen((s) => {
        sock = s;
        const rx = new Carrier(s, cs, cs, [], cipher);
        rx.start({ onRecord: () => closed.push('opened'), onClose: (why) => closed.push(why), onDrain: () => {} });
      });
      const tx = connect(port2, '127.0.0.1');
      await new Promise<void>((r) => tx.once('connect', () => r()));
      const bad = Buffer.from(wire);
      bad[6] ^= 1;
      tx.write(bad);
      await until(() => closed.length > 0);
      expect(closed[0]).toMatch(/failed authentication/);
      tx.destroy();
      sock.destroy();
    });
  }
});

describe('large records sealed into reused buffers', () => {
  it('every record arrives intact whether the kernel takes it at once (buffer reused at once) or later (reused after its callback), corked or not', async () => {
    const r = await responder(['aes-256-gcm', 'chacha20-poly1305']);
    const c = await dialCarrier('127.0.0.1', r.port, a, b.publicKey);
    const s = await r.accepted;
    const got: Buffer[] = [];
    s.start({ onRecord: (p) => got.push(Buffer.concat(p)), onClose: () => {}, onDrain: () => {} });
    c.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
    const sent: Buffer[] = [];
    const send = (n: number): void => {
      const rec = randomBytes(n);
      sent.push(rec);
      c.send([rec.subarray(0, 13), rec.subarray(13)]);
    };
    // Receiver reading: most writes complete at once. Then paused: the kernel's buffers fill,
    // writes complete later, and records queue behind one another (as the manager's turn corks them).
    for (let i = 0; i < 20; i++) send(70_000 + i * 9_000);
    await until(() => got.length === 20);
    s.socket.pause();
    // Batches until the kernel's buffers are full (the receive buffer autotunes up to tcp_rmem's
    // maximum, 32 MiB here, sooner after fast reads): then writes wait for their callbacks.
    for (let batch = 0; batch < 12 && (batch === 0 || c.socket.writableLength === 0); batch++) {
      c.socket.cork();
      for (let i = 0; i < 40; i++) {
        send(i % 5 === 0 ? 300 : 200_000 + i);
        if (i % 7 === 0) {
          c.socket.uncork();
          c.socket.cork();
        }
      }
      c.socket.uncork();
    }
    expect(c.socket.writableLength).toBeGreaterThan(0);
    await new Promise((res) => setTimeout(res, 50));
    s.socket.resume();
    await until(() => got.length === sent.length, 10_000);
    for (let i = 0; i < sent.length; i++) expect(got[i].equals(sent[i]), `record ${i}`).toBe(true);
    c.close('done');
    s.close('done');
  });
});

describe('a busy carrier yields the event loop (CARRIER_TURN_MS)', () => {
  it('handles at most a few milliseconds of records in one turn, however much the kernel has buffered', async () => {
    const r = await responder(['aes-256-gcm', 'chacha20-poly1305']);
    const c = await dialCarrier('127.0.0.1', r.port, a, b.publicKey);
    const s = await r.accepted;
    // The turns of this process's event loop, counted in the check phase.
    let turn = 0;
    let ticking = true;
    const tick = (): void => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const perTurn = new Map<number, number>();
    let got = 0;
    s.start({
      onRecord: () => {
        got++;
        perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1);
        const end = performance.now() + 0.5; // what delivering a record costs, roughly, at most
        while (performance.now() < end);
      },
      onClose: () => {},
      onDrain: () => {},
    });
    c.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
    s.socket.pause(); // the kernel buffers a burst first, as under a flood
    const N = 400;
    for (let i = 0; i < N; i++) c.send([randomBytes(16_384)]);
    await new Promise((res) => setTimeout(res, 100));
    s.socket.resume();
    await until(() => got === N, 20_000);
    ticking = false;
    // 2 ms of 0.5 ms records, plus the rest of the socket read that crossed the mark (4 records of 16 KiB in 64 KiB).
    expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(12);
    expect(perTurn.size).toBeGreaterThan(N / 12);
    c.close('done');
    s.close('done');
  });
});

import { describe, expect, it, vi } from 'vitest';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { CipherState } from '../core/etcp/noise.js';
import {
  evpAvailable,
  openRecord,
  recordOpener,
  recordSealer,
  reloadForTest,
  sealRecord,
  SMALL_SEALED,
  TAG_LEN,
  writeNonce,
  type RecordCipher,
  type RecordOpener,
} from '../drivers/wrap/aead-evp.js';
import { Carrier, carrierNonce, MAX_SEALED_RECORD } from '../drivers/wrap/carrier.js';
import { disableSodium } from '../drivers/crypto/sodium.js';
import { loopbackServers } from './helpers.js';

const CIPHERS: RecordCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];
/** Counters that exercise both halves of the 64-bit nonce counter. */
const COUNTERS = [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 0x0102_0304, Number.MAX_SAFE_INTEGER];

/** The carrier's sealing before this module: createCipheriv per record with carrierNonce. */
function referenceSeal(cipher: RecordCipher, key: Uint8Array, n: number, pt: Uint8Array): Buffer {
  const c = createCipheriv(cipher as 'aes-256-gcm', key, carrierNonce(cipher, n), { authTagLength: TAG_LEN });
  c.setAAD(new Uint8Array(0), { plaintextLength: pt.length });
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}

function referenceOpen(cipher: RecordCipher, key: Uint8Array, n: number, sealed: Uint8Array): Buffer | undefined {
  const d = createDecipheriv(cipher as 'aes-256-gcm', key, carrierNonce(cipher, n), { authTagLength: TAG_LEN });
  d.setAAD(new Uint8Array(0), { plaintextLength: sealed.length - TAG_LEN });
  const p = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
  try {
    d.final();
    return p;
  } catch {
    return undefined;
  }
}

describe('carrier record AEAD through libcrypto (aead-evp)', () => {
  it('libcrypto loads on this host (the test machine has libcrypto.so.3), and small records go through libsodium (libsodium23, AES-NI)', () => {
    expect(evpAvailable()).toBe(true);
    for (const cipher of CIPHERS) {
      expect(recordSealer(cipher, randomBytes(32)).impl, cipher).toBe('sodium');
      expect(recordOpener(cipher, randomBytes(32)).impl, cipher).toBe('sodium');
    }
  });

  it('nonces are the carrier’s: ChaChaPoly little-endian, AESGCM big-endian counter after 4 zero octets', () => {
    for (const cipher of CIPHERS) {
      for (const n of COUNTERS) {
        const iv = Buffer.alloc(12, 0xee);
        writeNonce(cipher, n, iv);
        expect(iv.toString('hex'), `${cipher} n=${n}`).toBe(carrierNonce(cipher, n).toString('hex'));
      }
    }
    expect(() => writeNonce('aes-256-gcm', -1, Buffer.alloc(12))).toThrow(/counter/);
    expect(() => writeNonce('aes-256-gcm', 1.5, Buffer.alloc(12))).toThrow(/counter/);
  });

  for (const impl of ['sodium', 'evp', 'node'] as const) {
    for (const cipher of CIPHERS) {
      it(`${impl} ${cipher}: byte for byte the carrier's records (known answers from node:crypto), and opens them`, () => {
        const key = randomBytes(32);
        const s = recordSealer(cipher, key, impl);
        const o = recordOpener(cipher, key, impl);
        expect(s.impl).toBe(impl);
        // Both sides of libsodium's bound (SMALL_SEALED: ciphertext and tag) and EVP's large records.
        for (const len of [
          0,
          1,
          15,
          16,
          17,
          1024,
          SMALL_SEALED - TAG_LEN - 1,
          SMALL_SEALED - TAG_LEN,
          SMALL_SEALED - TAG_LEN + 1,
          65_536 + 13,
          262_144,
        ]) {
          for (const n of [0, 7, 2 ** 32 + 3]) {
            const pt = randomBytes(len);
            const sealed = sealRecord(s, n, pt);
            expect(sealed.equals(referenceSeal(cipher, key, n, pt)), `len ${len} n ${n}`).toBe(true);
            expect(referenceOpen(cipher, key, n, sealed)?.equals(pt)).toBe(true);
            expect(openRecord(o, n, referenceSeal(cipher, key, n, pt))?.equals(pt)).toBe(true);
          }
        }
        s.close();
        o.close();
      });
    }
  }

  it('a fixed known answer (AES-256-GCM and ChaCha20-Poly1305, key 0..31, counter 5, "spook")', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    for (const cipher of CIPHERS) {
      const want = referenceSeal(cipher, key, 5, Buffer.from('spook'));
      for (const impl of ['sodium', 'evp', 'node'] as const)
        expect(sealRecord(recordSealer(cipher, key, impl), 5, Buffer.from('spook')).equals(want)).toBe(true);
    }
  });

  it('sealing from parts into a caller’s buffer at an offset equals sealing their concatenation (libsodium for a small record)', () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      const small = [randomBytes(13), randomBytes(0), randomBytes(100)];
      const buf = Buffer.alloc(4 + 113 + TAG_LEN + 8, 0xaa);
      expect(recordSealer(cipher, key, 'sodium').sealInto(9, small, buf, 4)).toBe(4 + 113 + TAG_LEN);
      expect(buf.subarray(4, 4 + 113 + TAG_LEN).equals(referenceSeal(cipher, key, 9, Buffer.concat(small)))).toBe(true);
      expect(buf.subarray(0, 4).equals(Buffer.alloc(4, 0xaa)) && buf.subarray(4 + 113 + TAG_LEN).equals(Buffer.alloc(8, 0xaa))).toBe(true);
      expect(() => recordSealer(cipher, key, 'sodium').sealInto(0, small, buf, buf.length - 100)).toThrow(/cannot take/);
      const parts = [randomBytes(13), randomBytes(0), randomBytes(65_536)];
      const out = Buffer.alloc(4 + 13 + 65_536 + TAG_LEN + 8, 0xaa);
      const end = recordSealer(cipher, key, 'evp').sealInto(9, parts, out, 4);
      expect(end).toBe(4 + 13 + 65_536 + TAG_LEN);
      expect(out.subarray(4, end).equals(referenceSeal(cipher, key, 9, Buffer.concat(parts)))).toBe(true);
      expect(out.subarray(0, 4).equals(Buffer.alloc(4, 0xaa))).toBe(true);
      expect(out.subarray(end).equals(Buffer.alloc(8, 0xaa))).toBe(true);
      // An output too short is refused before libcrypto writes anything.
      expect(() => recordSealer(cipher, key, 'evp').sealInto(0, parts, Buffer.alloc(100), 0)).toThrow(/cannot take/);
      expect(() => recordSealer(cipher, key, 'evp').sealInto(0, parts, out, out.length - 10)).toThrow(/cannot take/);
    }
  });

  it('the wire is the same both ways: sealed by one implementation, opened by the other, streamed in pieces', () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      for (const [a, b] of [
        ['evp', 'node'],
        ['node', 'evp'],
        ['sodium', 'node'],
        ['node', 'sodium'],
        ['sodium', 'evp'],
      ] as const) {
        const s = recordSealer(cipher, key, a);
        const o = recordOpener(cipher, key, b);
        for (let n = 0; n < 50; n++) {
          const pt = randomBytes(1 + ((n * 7919) % 70_000));
          const sealed = sealRecord(s, n, pt);
          // Opened as the carrier does: ciphertext in arbitrary pieces (socket reads), then the tag.
          const ct = Buffer.from(sealed.subarray(0, sealed.length - TAG_LEN));
          o.begin(n, ct.length);
          const got: Buffer[] = [];
          for (let at = 0; at < ct.length;) {
            const k = Math.min(ct.length - at, 1 + ((n * 131 + at) % 9000));
            got.push(Buffer.from(o.update(ct.subarray(at, at + k))));
            at += k;
          }
          expect(o.final(sealed.subarray(sealed.length - TAG_LEN)), `${a}→${b} ${cipher} n ${n}`).toBe(true);
          expect(Buffer.concat(got).equals(pt)).toBe(true);
        }
      }
    }
  });

  for (const impl of ['sodium', 'evp', 'node'] as const) {
    it(`${impl}: a flipped ciphertext or tag octet, a wrong counter or a short tag fails open (false, no throw), and the opener carries on`, () => {
      for (const [cipher, size] of CIPHERS.flatMap((c) => [3000, 100].map((n) => [c, n] as const))) {
        const key = randomBytes(32);
        const o = recordOpener(cipher, key, impl);
        const pt = randomBytes(size);
        const good = referenceSeal(cipher, key, 3, pt);
        for (const at of [0, size >> 1, good.length - TAG_LEN - 1, good.length - TAG_LEN, good.length - 1]) {
          const bad = Buffer.from(good);
          bad[at] ^= 0x01;
          expect(openRecord(o, 3, bad), `${cipher} flipped octet ${at}`).toBeUndefined();
        }
        expect(openRecord(o, 4, good)).toBeUndefined();
        expect(openRecord(o, 3, good.subarray(0, 10))).toBeUndefined();
        o.begin(3, good.length - TAG_LEN);
        o.update(Buffer.from(good.subarray(0, good.length - TAG_LEN)));
        expect(o.final(good.subarray(good.length - TAG_LEN, good.length - 1))).toBe(false);
        // A record short of its announced length never verifies.
        o.begin(3, good.length - TAG_LEN);
        o.update(Buffer.from(good.subarray(0, size >> 1)));
        expect(o.final(good.subarray(good.length - TAG_LEN))).toBe(false);
        // After all that, the same opener still opens a good record.
        expect(openRecord(o, 3, good)?.equals(pt)).toBe(true);
      }
    });
  }

  it('libsodium: a record that fails opens as undefined and leaves its buffer as it was; one above SMALL_SEALED is refused there', () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      const o = recordOpener(cipher, key, 'sodium');
      const good = referenceSeal(cipher, key, 8, randomBytes(500));
      for (const at of [0, 499, 500, good.length - 1]) {
        const bad = Buffer.from(good);
        bad[at] ^= 0x40;
        const copy = Buffer.from(bad);
        expect(o.openWhole!(8, bad), `${cipher} octet ${at}`).toBeUndefined();
        expect(bad.equals(copy)).toBe(true);
      }
      const wrongN = Buffer.from(good);
      expect(o.openWhole!(9, wrongN)).toBeUndefined();
      expect(wrongN.equals(good)).toBe(true);
      // Past the bound even a genuine record is refused there (libsodium would write its ciphertext's length into the workspace).
      const big = sealRecord(recordSealer(cipher, key, 'evp'), 8, randomBytes(SMALL_SEALED - TAG_LEN + 1));
      expect(big.length).toBe(SMALL_SEALED + 1);
      expect(o.openWhole!(8, Buffer.from(big))).toBeUndefined();
      expect(openRecord(o, 8, big)).toBeDefined(); // streamed through EVP instead
      expect(o.openWhole!(8, Buffer.alloc(TAG_LEN - 1))).toBeUndefined();
      // In place: the plaintext is the record's first octets.
      const pt = randomBytes(300);
      const rec = referenceSeal(cipher, key, 2, pt);
      const p = o.openWhole!(2, rec)!;
      expect(p.equals(pt) && p.buffer === rec.buffer && p.byteOffset === rec.byteOffset).toBe(true);
      o.close();
      expect(() => o.openWhole!(2, rec)).toThrow(/after close/);
    }
  });

  it('without libsodium the carrier seals every record through EVP, and forcing libsodium is refused', () => {
    disableSodium(true);
    try {
      const key = randomBytes(32);
      expect(recordSealer('aes-256-gcm', key).impl).toBe('evp');
      expect(recordOpener('chacha20-poly1305', key).impl).toBe('evp');
      expect(() => recordSealer('aes-256-gcm', key, 'sodium')).toThrow(/not available/);
    } finally {
      disableSodium(false);
    }
  });

  it('bounds: a piece longer than the record announced, a wrong key length, use after close are refused', () => {
    const o = recordOpener('aes-256-gcm', randomBytes(32), 'evp');
    o.begin(0, 10);
    expect(() => o.update(Buffer.alloc(11))).toThrow(/expected/);
    expect(() => o.begin(0, 2 ** 31)).toThrow(/at most/);
    expect(() => recordSealer('aes-256-gcm', randomBytes(31), 'evp')).toThrow(/key of 31/);
    const s = recordSealer('chacha20-poly1305', randomBytes(32), 'evp');
    s.close();
    s.close(); // idempotent: freed once
    expect(() => sealRecord(s, 0, Buffer.alloc(1))).toThrow(/after close/);
    o.close();
    expect(() => o.begin(0, 1)).toThrow(/after close/);
  });

  it('falls back to node:crypto, with one warning, when libcrypto cannot be loaded', () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      reloadForTest('libcrypto-that-is-not-there.so.99');
      expect(evpAvailable()).toBe(false);
      const key = randomBytes(32);
      const s = recordSealer('aes-256-gcm', key);
      const o = recordOpener('aes-256-gcm', key);
      expect(s.impl).toBe('node');
      expect(o.impl).toBe('node');
      const pt = randomBytes(5000);
      const sealed = sealRecord(s, 11, pt);
      expect(sealed.equals(referenceSeal('aes-256-gcm', key, 11, pt))).toBe(true);
      expect(openRecord(o, 11, sealed)?.equals(pt)).toBe(true);
      recordSealer('chacha20-poly1305', key);
      expect(() => recordSealer('aes-256-gcm', key, 'evp')).toThrow(/not available/);
    } finally {
      reloadForTest('libcrypto.so.3');
    }
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        process.off('warning', onWarning);
        expect(warnings.filter((w) => w.includes('carrier AEAD'))).toHaveLength(1);
        expect(evpAvailable()).toBe(true);
        resolve();
      }),
    );
  });
});

const listen = loopbackServers();

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Record sizes across the carrier's paths: libsodium's largest and EVP's smallest, own-size
 * buffers, pooled buffers (≥ MAX_SEALED_RECORD / 4), the largest record.
 */
const SIZES = [
  1,
  1000,
  1009,
  SMALL_SEALED - TAG_LEN,
  SMALL_SEALED - TAG_LEN + 1,
  5000,
  65_535,
  65_536 + 13,
  100_000,
  MAX_SEALED_RECORD - 16 - 4,
  MAX_SEALED_RECORD - 16,
];

describe('the carrier through aead-evp: the wire stays what node:crypto reads and writes', () => {
  for (const cipher of CIPHERS) {
    it(`${cipher}: a carrier's records (every buffer path, pooled buffers reused) open with createDecipheriv; records sealed with createCipheriv open in the carrier`, async () => {
      expect(evpAvailable()).toBe(true);
      const key = randomBytes(32);
      const cs = { key } as unknown as CipherState;
      const plain: Buffer[] = [];
      for (let round = 0; round < 3; round++) for (const len of SIZES) plain.push(randomBytes(len));

      // Carrier → raw reader with the reference opener.
      const raw: Buffer[] = [];
      let rawLen = 0;
      const port = await listen((s) => s.on('data', (d: Buffer) => (raw.push(d), (rawLen += d.length))));
      const out = connect(port, '127.0.0.1');
      await new Promise<void>((r) => out.once('connect', () => r()));
      const c = new Carrier(out, cs, cs, [], cipher);
      c.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
      let sent = 0;
      for (const p of plain) {
        // In two parts (a header and its payload, as DATA records are sent), pacing on the queue so pooled buffers come back.
        c.send([p.subarray(0, 3), p.subarray(3)]);
        sent += 4 + p.length + TAG_LEN;
        await until(() => c.writable);
      }
      await until(() => rawLen >= sent);
      const wire = Buffer.concat(raw);
      expect(wire.length).toBe(sent);
      let off = 0;
      for (let n = 0; n < plain.length; n++) {
        const len = wire.readUInt32BE(off);
        expect(referenceOpen(cipher, key, n, wire.subarray(off + 4, off + 4 + len))?.equals(plain[n]), `record ${n}`).toBe(true);
        off += 4 + len;
      }
      c.close('done');

      // Reference-sealed records → a receiving carrier (opened in place, in pieces of odd sizes).
      const got: Buffer[] = [];
      const why: string[] = [];
      let sock!: Socket;
      const port2 = await listen((s) => {
        sock = s;
        const rx = new Carrier(s, cs, cs, [], cipher);
        rx.start({ onRecord: (p) => got.push(Buffer.concat(p)), onClose: (w) => why.push(w), onDrain: () => {} });
      });
      const tx = connect(port2, '127.0.0.1');
      await new Promise<void>((r) => tx.once('connect', () => r()));
      const stream = Buffer.concat(
        plain.map((p, n) => {
          const sealed = referenceSeal(cipher, key, n, p);
          const head = Buffer.alloc(4);
          head.writeUInt32BE(sealed.length);
          return Buffer.concat([head, sealed]);
        }),
      );
      for (let at = 0; at < stream.length;) {
        const k = Math.min(stream.length - at, 1 + ((at * 7) % 70_001));
        tx.write(stream.subarray(at, at + k));
        at += k;
      }
      await until(() => got.length === plain.length || why.length > 0);
      expect(why).toEqual([]);
      for (let n = 0; n < plain.length; n++) expect(got[n].equals(plain[n]), `record ${n}`).toBe(true);
      // Then a tampered tag: the carrier closes (no exception escapes), nothing more is released.
      const last = referenceSeal(cipher, key, plain.length, Buffer.from('tampered'));
      last[last.length - 1] ^= 0x80;
      const head = Buffer.alloc(4);
      head.writeUInt32BE(last.length);
      tx.write(Buffer.concat([head, last]));
      await until(() => why.length > 0);
      expect(why[0]).toMatch(/failed authentication/);
      expect(got.length).toBe(plain.length);
      tx.destroy();
      sock.destroy();
    });
  }

  it('records whole in one read open in one libsodium call each (empty, at the bound), a larger one streams through EVP, a forged one closes the carrier', async () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      const cs = { key } as unknown as CipherState;
      const plain = [Buffer.alloc(0), randomBytes(5), randomBytes(SMALL_SEALED - TAG_LEN), randomBytes(SMALL_SEALED - TAG_LEN + 1)];
      const forged = referenceSeal(cipher, key, plain.length, Buffer.from('forged'));
      forged[3] ^= 0x01;
      const stream = Buffer.concat(
        [...plain.map((p, n) => referenceSeal(cipher, key, n, p)), forged].map((r) => {
          const head = Buffer.alloc(4);
          head.writeUInt32BE(r.length);
          return Buffer.concat([head, r]);
        }),
      );
      let sock: Socket | undefined;
      const port = await listen((s) => {
        s.pause();
        sock = s;
      });
      const tx = connect(port, '127.0.0.1');
      await new Promise<void>((r) => tx.once('connect', () => r()));
      tx.write(stream);
      await until(() => sock !== undefined && sock.readableLength === stream.length);
      // The whole stream as one read: every record is whole in it.
      const all = sock!.read() as Buffer;
      expect(all.length).toBe(stream.length);
      sock!.unshift(all);
      const rx = new Carrier(sock!, cs, cs, [], cipher);
      const aead = (rx as unknown as { rxAead: RecordOpener }).rxAead;
      expect(aead.impl).toBe('sodium');
      const whole = vi.spyOn(aead, 'openWhole');
      const begin = vi.spyOn(aead, 'begin');
      const got: Buffer[] = [];
      const why: string[] = [];
      rx.start({ onRecord: (p) => got.push(Buffer.concat(p)), onClose: (w) => why.push(w), onDrain: () => {} });
      await until(() => why.length > 0);
      expect(why[0]).toMatch(/failed authentication/);
      expect(got.length).toBe(plain.length);
      for (let n = 0; n < plain.length; n++) expect(got[n].equals(plain[n]), `${cipher} record ${n}`).toBe(true);
      expect(whole).toHaveBeenCalledTimes(4); // the empty one, 5 octets, at the bound, the forged one
      expect(begin).toHaveBeenCalledTimes(1); // one octet past the bound
      tx.destroy();
    }
  });

  it('a record larger than the largest sealed record closes the carrier (never written, never thrown); the contexts are freed at close', async () => {
    const port = await listen(() => {});
    const out = connect(port, '127.0.0.1');
    await new Promise<void>((r) => out.once('connect', () => r()));
    const cs = { key: randomBytes(32) } as unknown as CipherState;
    const c = new Carrier(out, cs, cs, [], 'aes-256-gcm');
    const why: string[] = [];
    c.start({ onRecord: () => {}, onClose: (w) => why.push(w), onDrain: () => {} });
    expect(() => c.send([Buffer.alloc(13), Buffer.alloc(MAX_SEALED_RECORD - 16 - 13 + 1)])).not.toThrow();
    expect(why).toEqual([]); // not inside the caller's send
    expect(c.writable).toBe(false);
    await Promise.resolve();
    expect(why[0]).toMatch(/at most/);
    expect(c.bytesOut).toBe(0);
    expect(() => c.send([Buffer.from('after close')])).not.toThrow(); // closed: ignored, the freed context is not touched
  });
});

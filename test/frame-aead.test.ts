import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AEAD_TAG_LEN, nodeAead, writeChaChaNonce, type AeadProvider } from '../crypto/aead.js';
import { aeadDecrypt, aeadEncrypt, nonce12 } from '../crypto/primitives.js';
import { IKInitiator, IKResponder, keyPairFromPrivate, CipherState, type HandshakeResult } from '../core/etcp/noise.js';
import { Session } from '../core/etcp/endpoint.js';
import { decodeFrame } from '../wire/header.js';
import { HEADER_LEN } from '../wire/constants.js';
import { evpAvailable, reloadForTest } from '../drivers/crypto/evp.js';
import { frameAead } from '../drivers/crypto/frame-aead.js';
import { reloadSodiumForTest } from '../drivers/crypto/sodium.js';

/** ETCP's Data-frame AEAD: libsodium and libcrypto's EVP (drivers/crypto/frame-aead.ts) against node:crypto, to the octet. */
const COUNTERS = [0, 1, 255, 256, 65_537, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 0x0102_0304, Number.MAX_SAFE_INTEGER];
/** Up to an ETCP frame, and past libsodium's native workspace (2,048 octets of input, 80 of AD: the typed-array path). */
const LENGTHS = [0, 1, 15, 16, 17, 64, 100, 1_400, 2_032, 2_033, 5_000];
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function sealed(p: AeadProvider, key: Uint8Array, n: number, ad: Uint8Array, pt: Uint8Array): Uint8Array {
  const s = p.sealer(key);
  const out = new Uint8Array(pt.length + AEAD_TAG_LEN + 7).fill(0xee);
  expect(s.seal(n, ad, pt, out, 3)).toBe(3 + pt.length + AEAD_TAG_LEN);
  expect(out[0]).toBe(0xee); // nothing written outside [at, end)
  expect(out[out.length - 1]).toBe(0xee);
  s.close();
  return out.subarray(3, 3 + pt.length + AEAD_TAG_LEN);
}

const providers = (): [string, AeadProvider][] => [
  ['sodium', frameAead('sodium')],
  ['evp', frameAead('evp')],
  ['node', nodeAead],
];

describe('ETCP frame AEAD: libsodium, libcrypto EVP and node:crypto', () => {
  it('libcrypto and libsodium load on this host, and spookd’s choice is libsodium (one call per frame)', () => {
    expect(evpAvailable()).toBe(true);
    expect(frameAead().impl).toBe('sodium');
  });

  it('the nonce is Noise’s: 32 zero bits, then the counter little-endian (primitives.nonce12)', () => {
    for (const n of COUNTERS) {
      const iv = new Uint8Array(12).fill(0xee);
      writeChaChaNonce(n, iv);
      expect(toHex(iv), `n=${n}`).toBe(toHex(nonce12(n)));
    }
    expect(() => writeChaChaNonce(-1, new Uint8Array(12))).toThrow(/counter/);
    expect(() => writeChaChaNonce(2 ** 53, new Uint8Array(12))).toThrow(/counter/);
  });

  for (const [name, p] of providers()) {
    it(`${name}: known answers against createCipheriv (primitives.aeadEncrypt) for every counter, AD and length, and opens them`, () => {
      const key = new Uint8Array(randomBytes(32));
      for (const n of COUNTERS) {
        for (const adLen of [0, 20, 33, 80, 81]) {
          for (const len of LENGTHS) {
            const ad = new Uint8Array(randomBytes(adLen));
            const pt = new Uint8Array(randomBytes(len));
            const want = aeadEncrypt(key, n, ad, pt);
            const got = sealed(p, key, n, ad, pt);
            expect(toHex(got), `n=${n} ad=${adLen} len=${len}`).toBe(toHex(want));
            const o = p.opener(key);
            expect(toHex(o.open(n, ad, want)!)).toBe(toHex(pt));
            o.close();
          }
        }
      }
    });

    it(`${name}: sealing in place (the plaintext is out[at..]) gives the same octets, past the native workspace too`, () => {
      const key = new Uint8Array(randomBytes(32));
      const ad = new Uint8Array(randomBytes(20));
      for (const len of LENGTHS) {
        const pt = new Uint8Array(randomBytes(len));
        const buf = new Uint8Array(5 + len + AEAD_TAG_LEN);
        buf.set(pt, 5);
        const s = p.sealer(key);
        expect(s.seal(3, ad, buf.subarray(5, 5 + len), buf, 5)).toBe(buf.length);
        s.close();
        expect(toHex(buf.subarray(5)), `len=${len}`).toBe(toHex(aeadEncrypt(key, 3, ad, pt)));
      }
    });

    it(`${name}: the published Noise IK transport messages (cacophony, snow) seal and open to the octet`, () => {
      const d = JSON.parse(readFileSync(new URL('./vectors/noise-ik.json', import.meta.url), 'utf8')) as {
        vectors: {
          protocol_name: string;
          init_prologue: string;
          init_static: string;
          init_ephemeral: string;
          init_remote_static: string;
          resp_prologue: string;
          resp_static: string;
          resp_ephemeral: string;
          init_psks?: string[];
          messages: { payload: string; ciphertext: string }[];
        }[];
      };
      let checked = 0;
      for (const v of d.vectors) {
        const h =
          v.protocol_name === 'Noise_IK_25519_ChaChaPoly_BLAKE2s'
            ? 'BLAKE2s'
            : v.protocol_name === 'Noise_IK_25519_ChaChaPoly_SHA256'
              ? 'SHA256'
              : undefined;
        if (!h || v.init_psks?.length) continue;
        const init = new IKInitiator(
          {
            hash: h,
            prologue: hex(v.init_prologue),
            staticKey: keyPairFromPrivate(hex(v.init_static)),
            ephemeral: keyPairFromPrivate(hex(v.init_ephemeral)),
          },
          hex(v.init_remote_static),
        );
        const resp = new IKResponder({
          hash: h,
          prologue: hex(v.resp_prologue),
          staticKey: keyPairFromPrivate(hex(v.resp_static)),
          ephemeral: keyPairFromPrivate(hex(v.resp_ephemeral)),
        });
        const [m1, m2, ...transport] = v.messages;
        resp.readMessage1(init.writeMessage1(hex(m1.payload)));
        const w2 = resp.writeMessage2(hex(m2.payload));
        const r2 = init.readMessage2(w2.message);
        const sides: [HandshakeResult, HandshakeResult] = [r2.result, w2.result];
        const counters = [0, 0];
        transport.forEach((m, i) => {
          const [from, to] = i % 2 === 0 ? sides : [sides[1], sides[0]];
          const n = counters[i % 2]++;
          const c = sealed(p, from.send.key, n, new Uint8Array(0), hex(m.payload));
          expect(toHex(c)).toBe(m.ciphertext);
          const o = p.opener(to.recv.key);
          expect(toHex(o.open(n, new Uint8Array(0), hex(m.ciphertext))!)).toBe(m.payload);
          o.close();
          checked++;
        });
      }
      expect(checked).toBeGreaterThanOrEqual(12); // 4 vectors × 3 transport messages
    });

    it(`${name}: a flipped octet of ciphertext, tag or AD, a wrong counter, a short or non-integer input: undefined, never a throw`, () => {
      const key = new Uint8Array(randomBytes(32));
      const ad = new Uint8Array(randomBytes(20));
      const pt = new Uint8Array(randomBytes(100));
      const good = aeadEncrypt(key, 7, ad, pt);
      const o = p.opener(key);
      for (let i = 0; i < good.length; i++) {
        const bad = good.slice();
        bad[i] ^= 0x01;
        expect(o.open(7, ad, bad), `octet ${i}`).toBeUndefined();
      }
      for (let i = 0; i < ad.length; i++) {
        const badAd = ad.slice();
        badAd[i] ^= 0x80;
        expect(o.open(7, badAd, good)).toBeUndefined();
      }
      expect(o.open(8, ad, good)).toBeUndefined();
      expect(o.open(7, ad, good.subarray(0, good.length - 1))).toBeUndefined();
      for (const len of [0, 1, AEAD_TAG_LEN - 1]) expect(o.open(7, ad, good.subarray(0, len))).toBeUndefined();
      for (const n of [-1, 0.5, 2 ** 53, NaN]) expect(o.open(n, ad, good)).toBeUndefined();
      // Still opens what is genuine after all of that (the context is not left in a bad state).
      expect(toHex(o.open(7, ad, good)!)).toBe(toHex(pt));
      expect(aeadDecrypt(key, 7, ad, good)).toBeDefined();
      o.close();
    });

    it(`${name}: bounds: a short output, a wrong key length, use after close`, () => {
      const key = new Uint8Array(32);
      const s = p.sealer(key);
      expect(() => s.seal(0, new Uint8Array(0), new Uint8Array(10), new Uint8Array(25), 0)).toThrow(/cannot take 26/);
      expect(() => s.seal(0, new Uint8Array(0), new Uint8Array(10), new Uint8Array(26), 1)).toThrow(/cannot take/);
      expect(() => s.seal(-1, new Uint8Array(0), new Uint8Array(10), new Uint8Array(26), 0)).toThrow(/counter/);
      expect(() => p.sealer(new Uint8Array(31))).toThrow(/31 octets/);
      expect(() => p.opener(new Uint8Array(33))).toThrow(/33 octets/);
      s.close();
      s.close(); // idempotent
      expect(() => s.seal(0, new Uint8Array(0), new Uint8Array(1), new Uint8Array(17), 0)).toThrow(/after close/);
      const o = p.opener(key);
      o.close();
      expect(() => o.open(0, new Uint8Array(0), new Uint8Array(17))).toThrow(/after close/);
    });
  }

  it('each implementation opens what each other sealed, contexts reused across many frames', () => {
    const key = new Uint8Array(randomBytes(32));
    const all = [frameAead('sodium'), frameAead('evp'), nodeAead];
    const pairs = all.flatMap((a) => all.filter((b) => b !== a).map((b) => [a, b] as const));
    for (const [a, b] of pairs) {
      const s = a.sealer(key);
      const o = b.opener(key);
      for (let n = 0; n < 300; n++) {
        const ad = new Uint8Array(randomBytes(20));
        const pt = new Uint8Array(randomBytes(n % 150));
        const out = new Uint8Array(pt.length + AEAD_TAG_LEN);
        s.seal(n, ad, pt, out, 0);
        expect(toHex(o.open(n, ad, out)!)).toBe(toHex(pt));
      }
      s.close();
      o.close();
    }
  });
});

describe('ETCP Session with an injected AEAD: the wire does not change', () => {
  const keys = (send: number, recv: number): HandshakeResult => ({
    send: new CipherState(new Uint8Array(32).fill(send)),
    recv: new CipherState(new Uint8Array(32).fill(recv)),
    handshakeHash: new Uint8Array(32),
    remoteStatic: new Uint8Array(32),
  });
  const peer = { publicKey: new Uint8Array(32), name: 'p' };
  const session = (aead: AeadProvider | undefined, send: number, recv: number): Session =>
    new Session(11, 22, peer, true, keys(send, recv), 1, 2, 3, 0, aead);

  it('sessions on libsodium, EVP and node:crypto seal the same frames, and each opens the others’', () => {
    const [a, b, c] = [session(frameAead('sodium'), 1, 2), session(frameAead('evp'), 1, 2), session(undefined, 1, 2)];
    const [ra, rb, rc] = [session(frameAead('sodium'), 2, 1), session(frameAead('evp'), 2, 1), session(nodeAead, 2, 1)];
    for (let i = 0; i < 200; i++) {
      const payload = new Uint8Array(randomBytes(1 + (i % 120)));
      const fa = a.seal(payload);
      const fb = b.seal(payload);
      const fc = c.seal(payload);
      expect(toHex(fa)).toBe(toHex(fc));
      expect(toHex(fb)).toBe(toHex(fc));
      const pn = decodeFrame(fa).header.packetNumber;
      expect(pn).toBe(i);
      for (const [r, f] of [
        [ra, fc],
        [rb, fa],
        [rc, fb],
      ] as const) {
        const o = r.open(f, pn);
        expect('payload' in o && toHex(o.payload)).toBe(toHex(payload));
        expect(r.open(f, pn)).toEqual({ drop: 'replayed' });
      }
    }
  });

  it('sealInPlace (the payload behind room for the header, before room for the tag) makes the frame seal makes', () => {
    for (const aead of [frameAead('sodium'), frameAead('evp'), nodeAead]) {
      const [a, b, r] = [session(aead, 1, 2), session(nodeAead, 1, 2), session(aead, 2, 1)];
      for (let i = 0; i < 50; i++) {
        const payload = new Uint8Array(randomBytes(1 + i * 20));
        const frame = new Uint8Array(HEADER_LEN + payload.length + AEAD_TAG_LEN).fill(0xee);
        frame.set(payload, HEADER_LEN);
        expect(a.sealInPlace(frame)).toBe(i);
        expect(toHex(frame), aead.impl).toBe(toHex(b.seal(payload)));
        const o = r.open(frame, i);
        expect('payload' in o && toHex(o.payload)).toBe(toHex(payload));
      }
      expect(() => a.sealInPlace(new Uint8Array(HEADER_LEN + AEAD_TAG_LEN - 1))).toThrow(/no room/);
    }
  });

  it('a forged or truncated frame is a drop, not a throw; the window does not move for it', () => {
    const [a, r] = [session(frameAead(), 1, 2), session(frameAead(), 2, 1)];
    const f = a.seal(new Uint8Array([0x40, 1, 2, 3]));
    const bad = f.slice();
    bad[bad.length - 1] ^= 1;
    expect(r.open(bad, 0)).toEqual({ drop: 'data-auth-failed' });
    expect(r.open(f.subarray(0, 30), 0)).toEqual({ drop: 'data-auth-failed' });
    expect(r.open(f.subarray(0, 10), 0)).toEqual({ drop: 'data-auth-failed' });
    expect('payload' in r.open(f, 0)).toBe(true);
    a.close();
    r.close();
  });
});

describe('hostile frames into sessions on each implementation', () => {
  it('attack: per implementation 2,000 random frames (0–1,452 octets, any packet number) and 2,000 mutations of a genuine one: dropped, never thrown, the session still opens', () => {
    const keys = (send: number, recv: number): HandshakeResult => ({
      send: new CipherState(new Uint8Array(32).fill(send)),
      recv: new CipherState(new Uint8Array(32).fill(recv)),
      handshakeHash: new Uint8Array(32),
      remoteStatic: new Uint8Array(32),
    });
    const peer = { publicKey: new Uint8Array(32), name: 'p' };
    for (const aead of [frameAead('sodium'), frameAead('evp'), nodeAead]) {
      const a = new Session(1, 2, peer, true, keys(1, 2), 1, 2, 3, 0, aead);
      const r = new Session(2, 1, peer, false, keys(2, 1), 2, 1, 3, 0, aead);
      const genuine = a.seal(new Uint8Array(randomBytes(90)));
      for (let i = 0; i < 2_000; i++) {
        const len = i % 7 === 0 ? i % 40 : 1 + Math.floor(Math.random() * 1_452);
        const pn = [0, 1, i, 2 ** 32 + i, 2 ** 53 - 1, 2 ** 53 + 2, -1, 0.5][i % 8];
        const junk = new Uint8Array(randomBytes(len));
        const mutated = genuine.slice();
        mutated[i % mutated.length] ^= 1 + (i % 255);
        for (const [f, n] of [
          [junk, pn],
          [mutated, 0],
        ] as const) {
          let out: ReturnType<Session['open']> | undefined;
          expect(() => (out = r.open(f, n)), aead.impl).not.toThrow();
          expect(out && 'drop' in out).toBe(true);
        }
      }
      const o = r.open(genuine, 0);
      expect('payload' in o, aead.impl).toBe(true);
    }
  });
});

describe('fallback: libcrypto cannot be loaded', () => {
  it('without libsodium, EVP; without either, node:crypto with one warning; forcing a missing one fails', () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      reloadSodiumForTest('libsodium-that-is-not-there.so.99');
      expect(frameAead().impl).toBe('evp');
      expect(() => frameAead('sodium')).toThrow(/not available/);
      reloadForTest('libcrypto-that-is-not-there.so.99');
      expect(frameAead().impl).toBe('node');
      expect(frameAead().impl).toBe('node');
      expect(() => frameAead('evp')).toThrow(/not available/);
      expect(frameAead().sealer(new Uint8Array(32)).impl).toBe('node');
    } finally {
      reloadForTest('libcrypto.so.3');
      reloadSodiumForTest('libsodium.so.23');
    }
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        process.off('warning', onWarning);
        expect(warnings.filter((w) => w.includes('ETCP Data frames'))).toHaveLength(1);
        expect(frameAead().impl).toBe('sodium');
        resolve();
      }),
    );
  });
});

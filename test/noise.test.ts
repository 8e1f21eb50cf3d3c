import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { IKInitiator, IKResponder, NoiseError, keyPairFromPrivate, type HandshakeResult } from '../core/etcp/noise.js';
import { generateKeyPair, hchacha20, xaeadDecrypt, xaeadEncrypt, type HashName } from '../crypto/primitives.js';

interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_static: string;
  init_ephemeral: string;
  init_remote_static: string;
  resp_prologue: string;
  resp_static: string;
  resp_ephemeral: string;
  handshake_hash?: string;
  init_psks?: string[];
  messages: { payload: string; ciphertext: string }[];
}

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The IK vectors extracted from shared/vectors (cacophony, snow) into test/vectors/noise-ik.json. */
function load(source: string): Vector[] {
  const d = JSON.parse(readFileSync(new URL('./vectors/noise-ik.json', import.meta.url), 'utf8')) as {
    vectors: (Vector & { source: string })[];
  };
  return d.vectors.filter((v) => v.source === source);
}

/** Runs one published vector: both handshake messages, then the transport messages alternating. */
function run(v: Vector, h: HashName): void {
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
  const c1 = init.writeMessage1(hex(m1.payload));
  expect(toHex(c1)).toBe(m1.ciphertext);
  const r1 = resp.readMessage1(c1);
  expect(toHex(r1.payload)).toBe(m1.payload);
  expect(toHex(r1.remoteStatic)).toBe(toHex(keyPairFromPrivate(hex(v.init_static)).publicKey));
  const w2 = resp.writeMessage2(hex(m2.payload));
  expect(toHex(w2.message)).toBe(m2.ciphertext);
  const r2 = init.readMessage2(w2.message);
  expect(toHex(r2.payload)).toBe(m2.payload);
  if (v.handshake_hash) {
    expect(toHex(r2.result.handshakeHash)).toBe(v.handshake_hash);
    expect(toHex(w2.result.handshakeHash)).toBe(v.handshake_hash);
  }
  const sides: [HandshakeResult, HandshakeResult] = [r2.result, w2.result];
  transport.forEach((m, i) => {
    const [from, to] = i % 2 === 0 ? sides : [sides[1], sides[0]];
    const c = from.send.encryptWithAd(new Uint8Array(0), hex(m.payload));
    expect(toHex(c)).toBe(m.ciphertext);
    expect(toHex(to.recv.decryptWithAd(new Uint8Array(0), c))).toBe(m.payload);
  });
}

// Published Noise vectors (cacophony, snow) for the exact protocols ETCP can use.
describe('Noise IK against the published test vectors', () => {
  for (const file of ['cacophony', 'snow']) {
    for (const h of ['BLAKE2s', 'SHA256'] as const) {
      const name = `Noise_IK_25519_ChaChaPoly_${h}`;
      const vectors = load(file).filter((v) => v.protocol_name === name && !v.init_psks?.length);
      it(`${file}: every ${name} vector (${vectors.length})`, () => {
        expect(vectors.length).toBeGreaterThan(0);
        for (const v of vectors) run(v, h);
      });
    }
  }
});

describe('Noise IK failure cases', () => {
  const opts = (s = generateKeyPair()) => ({ hash: 'BLAKE2s' as const, prologue: new Uint8Array([1, 2]), staticKey: s });

  it('a wrong responder static key fails authentication of message 1', () => {
    const realResp = generateKeyPair();
    const init = new IKInitiator(opts(), generateKeyPair().publicKey);
    const resp = new IKResponder(opts(realResp));
    expect(() => resp.readMessage1(init.writeMessage1(new Uint8Array(3)))).toThrow(NoiseError);
  });

  it('a different prologue fails, a flipped bit fails, a truncated message fails', () => {
    const rs = generateKeyPair();
    const m1 = new IKInitiator(opts(), rs.publicKey).writeMessage1(new TextEncoder().encode('hello'));
    expect(() => new IKResponder({ ...opts(rs), prologue: new Uint8Array([9]) }).readMessage1(m1)).toThrow(NoiseError);
    const flipped = m1.slice();
    flipped[40] ^= 1;
    expect(() => new IKResponder(opts(rs)).readMessage1(flipped)).toThrow(NoiseError);
    expect(() => new IKResponder(opts(rs)).readMessage1(m1.subarray(0, 60))).toThrow(/at least/);
    expect(new IKResponder(opts(rs)).readMessage1(m1).payload).toEqual(new TextEncoder().encode('hello'));
  });
});

describe('XChaCha20-Poly1305 for cookie replies (draft-irtf-cfrg-xchacha-03 vectors)', () => {
  it('HChaCha20 matches the draft §2.2.1 vector', () => {
    const key = new Uint8Array(32).map((_, i) => i);
    expect(toHex(hchacha20(key, hex('000000090000004a0000000031415927')))).toBe(
      '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc',
    );
  });

  it('AEAD_XChaCha20_Poly1305 matches the draft §A.3.1 vector and opens only what it sealed', () => {
    const key = new Uint8Array(32).map((_, i) => 0x80 + i);
    const nonce = hex('404142434445464748494a4b4c4d4e4f5051525354555657');
    const ad = hex('50515253c0c1c2c3c4c5c6c7');
    const pt = new TextEncoder().encode(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    const ct = xaeadEncrypt(key, nonce, ad, pt);
    expect(toHex(ct)).toBe(
      'bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e' +
        'c0875924c1c7987947deafd8780acf49',
    );
    expect(xaeadDecrypt(key, nonce, ad, ct)).toEqual(pt);
    const bad = ct.slice();
    bad[3] ^= 1;
    expect(xaeadDecrypt(key, nonce, ad, bad)).toBeUndefined();
    expect(xaeadDecrypt(key, nonce.subarray(0, 23), ad, ct)).toBeUndefined();
  });
});

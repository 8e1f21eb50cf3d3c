import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { IKInitiator, IKResponder, NoiseError, keyPairFromPrivate, type HandshakeResult } from '../transport/etcp/noise.js';
import { generateKeyPair, type HashName } from '../transport/etcp/crypto.js';

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
  const d = JSON.parse(readFileSync(new URL('./vectors/noise-ik.json', import.meta.url), 'utf8')) as { vectors: (Vector & { source: string })[] };
  return d.vectors.filter((v) => v.source === source);
}

/** Runs one published vector: both handshake messages, then the transport messages alternating. */
function run(v: Vector, h: HashName): void {
  const init = new IKInitiator(
    { hash: h, prologue: hex(v.init_prologue), staticKey: keyPairFromPrivate(hex(v.init_static)), ephemeral: keyPairFromPrivate(hex(v.init_ephemeral)) },
    hex(v.init_remote_static),
  );
  const resp = new IKResponder({ hash: h, prologue: hex(v.resp_prologue), staticKey: keyPairFromPrivate(hex(v.resp_static)), ephemeral: keyPairFromPrivate(hex(v.resp_ephemeral)) });
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

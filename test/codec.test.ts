import { describe, expect, it } from 'vitest';
import { json } from '../client/index.js';

describe('json codec (client/codec.ts)', () => {
  it('round trips JSON values as UTF-8 bytes', () => {
    for (const v of [{ a: 1, b: ['é', null, true] }, 'text', 0, null, [1, [2]]]) {
      const b = json.encode(v);
      expect(b).toBeInstanceOf(Uint8Array);
      expect(json.decode(b)).toEqual(v);
    }
    expect(new TextDecoder().decode(json.encode({ k: 'é' }))).toBe('{"k":"é"}');
  });

  it('refuses what has no JSON form, bytes that are not UTF-8, text that is not JSON, and non-bytes, saying which', () => {
    expect(() => json.encode(undefined)).toThrowError(/json.encode: a undefined has no JSON form/);
    expect(() => json.encode(() => 1)).toThrowError(TypeError);
    expect(() => json.decode(new Uint8Array([0xff, 0xfe]))).toThrowError(/json.decode: 2 bytes that are not UTF-8/);
    expect(() => json.decode(new TextEncoder().encode('{"a":'))).toThrowError(SyntaxError);
    expect(() => json.decode(undefined as unknown as Uint8Array)).toThrowError(/expects the value as bytes/);
  });
});

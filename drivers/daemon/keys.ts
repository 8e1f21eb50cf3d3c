/** Host keys: raw X25519 keys as base64 text, like WireGuard's; private key files mode 0600. */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { generateKeyPair, publicKeyOf, type KeyPair } from '../../crypto/primitives.js';

export const encodeKey = (k: Uint8Array): string => Buffer.from(k).toString('base64');

export function decodeKey(text: string, what: string): Uint8Array {
  const t = text.trim();
  const b = Buffer.from(t, 'base64');
  if (b.length !== 32 || b.toString('base64') !== t) throw new Error(`${what}: not a base64 X25519 key (32 bytes)`);
  return new Uint8Array(b);
}

export function writePrivateKey(path: string): KeyPair {
  const kp = generateKeyPair();
  writeFileSync(path, `${encodeKey(kp.privateKey)}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
  return kp;
}

export function readPrivateKey(path: string): KeyPair {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read private key (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const mode = statSync(path).mode & 0o077;
  if (mode !== 0)
    throw new Error(
      `${path}: private key is readable by group or others (mode ${(statSync(path).mode & 0o777).toString(8)}); chmod 600 it`,
    );
  const privateKey = decodeKey(text, path);
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

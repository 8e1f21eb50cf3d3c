/**
 * Review 39, suspicion 3: a HandshakeInit timestamp above 2^53 − 1 was read inexactly. A peer (its
 * own key needed) that sent 2^64 − 1 had every later init refused as a replay until a restart, and
 * the value spookd saved for it (18446744073709552000, not a safe integer) was discarded at start,
 * silently resetting that peer's replay protection. Such an init is malformed now (PROTOCOL.md
 * §12.2.1, rev 1.34): timestamps are milliseconds, 2^53 ms is 285,000 years.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EtcpEndpoint } from '../core/etcp/endpoint.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { INIT_PAYLOAD } from '../wire/etcp.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** `a`, which initiates, and responder `b`, which records what it accepts as spookd persists it. */
function pair() {
  const ka = generateKeyPair();
  const kb = generateKeyPair();
  const saved = new Map<string, number>();
  const a = new EtcpEndpoint({ staticKey: ka, peers: [{ publicKey: kb.publicKey, name: 'b' }], random });
  const b = new EtcpEndpoint({
    staticKey: kb,
    peers: [{ publicKey: ka.publicKey, name: 'a' }],
    random,
    onInitAccepted: (p, ts) => saved.set(p.name, ts),
  });
  return { a, b, kb, saved };
}

/** An init from `a` whose sealed timestamp is `ts` (a u64 no number holds exactly). */
function initWith(a: EtcpEndpoint, kb: { publicKey: Uint8Array }, ts: bigint): Uint8Array {
  const encode = INIT_PAYLOAD.encode.bind(INIT_PAYLOAD);
  const spy = vi.spyOn(INIT_PAYLOAD, 'encode').mockImplementation((v) => encode({ ...v, timestamp: ts }));
  try {
    return a.initiate(0, kb.publicKey);
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => vi.restoreAllMocks());

describe('HandshakeInit timestamps beyond 2^53 − 1', () => {
  for (const ts of [2n ** 64n - 1n, 2n ** 53n, 2n ** 53n + 2n]) {
    it(`${ts} is refused as malformed, and the peer's next honest init is accepted`, () => {
      const { a, b, kb, saved } = pair();
      const r = b.handleHandshake(1000, initWith(a, kb, ts), 'a:1');
      // Before the fix: accepted, and 18446744073709552000 (or 2^53) saved.
      expect(r.kind === 'drop' && r.reason).toBe('handshake-malformed');
      expect(saved.has('a')).toBe(false);
      // Before the fix: 'handshake-replayed' until b restarts.
      const next = b.handleHandshake(2000, a.initiate(1_700_000_000_000, kb.publicKey), 'a:1');
      expect(next.kind).toBe('respond');
      expect(Number.isSafeInteger(saved.get('a'))).toBe(true);
      expect(saved.get('a')).toBeGreaterThanOrEqual(1_700_000_000_000);
    });
  }

  it('2^53 − 1 is exact: accepted, saved as it is', () => {
    const { a, b, kb, saved } = pair();
    expect(b.handleHandshake(1000, initWith(a, kb, 2n ** 53n - 1n), 'a:1').kind).toBe('respond');
    expect(saved.get('a')).toBe(Number.MAX_SAFE_INTEGER);
  });
});

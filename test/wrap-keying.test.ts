/**
 * Wrappers are keyed by transport and port (core/wrap/protocols.ts): one port wrapped for TCP and
 * for UDP at once (a DNS server), each added, listed, told to the hooks and removed on its own.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type Interceptor } from '../drivers/wrap/manager.js';
import { transportOf, wrapperKey } from '../core/wrap/protocols.js';

function manager(): { m: WrapManager; ports: { tcp: number[]; udp: number[] }[] } {
  const ports: { tcp: number[]; udp: number[] }[] = [];
  const stand: Interceptor = {
    setPorts: (tcp, udp = []) => void ports.push({ tcp: [...tcp].sort(), udp: [...udp].sort() }),
    originalDst: () => undefined,
    stats: () => ({}),
    close: () => {},
  };
  const m = new WrapManager(
    {
      key: generateKeyPair(),
      peers: [{ name: 'b', publicKey: generateKeyPair().publicKey, role: 0 }],
      peerAddr: () => undefined,
      listen: { host: '127.0.0.1', port: 0 },
    },
    { intercept: { host: '127.0.0.1', port: 0 }, interception: 'auto', windowBytes: 1 << 20, maxConnections: 8, silenceMs: 1000 },
    [],
    pino({ level: 'silent' }),
    () => stand,
  );
  return { m, ports };
}

describe('wrappers keyed by transport and port', () => {
  it('keys: the protocol decides the transport', () => {
    expect(['ssh', 'http', 'tcp', 'udp', 'coap'].map((p) => transportOf(p as never))).toEqual(['tcp', 'tcp', 'tcp', 'udp', 'udp']);
    expect(wrapperKey('udp', 53)).toBe('udp/53');
  });

  it('one port for TCP and UDP: both added, listed and given to the hooks; each removed alone', async () => {
    const { m, ports } = manager();
    try {
      m.add({ protocol: 'udp', port: 53, peer: 'b', holdMs: 5_000 });
      m.add({ protocol: 'tcp', port: 53, peer: 'b', holdMs: 5_000 });
      expect(m.list().map((w) => [w.protocol, w.transport, w.port])).toEqual([
        ['udp', 'udp', 53],
        ['tcp', 'tcp', 53],
      ]);
      expect(ports.at(-1)).toEqual({ tcp: [53], udp: [53] });
      // The same transport twice is refused, by its name; another protocol of it too.
      expect(() => m.add({ protocol: 'http', port: 53, peer: 'b', holdMs: 5_000 })).toThrow(
        /^tcp port 53 is already wrapped \(tcp, to b\); remove it first$/,
      );
      expect(() => m.add({ protocol: 'coap', port: 53, peer: 'b', holdMs: 5_000 })).toThrow(/^udp port 53 is already wrapped/);
      // Removing needs the transport while both are wrapped.
      expect(() => m.remove(53)).toThrow(/port 53 is wrapped for both tcp and udp: say which transport to remove/);
      expect(m.remove(53, 'udp')).toBe('udp');
      expect(ports.at(-1)).toEqual({ tcp: [53], udp: [] });
      expect(m.list().map((w) => w.transport)).toEqual(['tcp']);
      expect(() => m.remove(53, 'udp')).toThrow(/^udp port 53 is not wrapped \(wrapped: tcp\/53\)$/);
      expect(m.stats().wrappers.map((w) => `${w.transport}/${w.port}`)).toEqual(['tcp/53']);
      expect(m.remove(53)).toBe('tcp'); // the only one left: no transport needed
      expect(ports.at(-1)).toEqual({ tcp: [], udp: [] });
      expect(() => m.remove(53)).toThrow(/^port 53 is not wrapped \(wrapped: none\)$/);
    } finally {
      await m.stop();
    }
  });
});

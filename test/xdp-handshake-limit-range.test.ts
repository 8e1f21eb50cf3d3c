import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XdpProgram, XDP_PASS } from '../drivers/bpf/xdp.js';
import { configSchema } from '../drivers/daemon/config.js';
import { udpPacket } from '../testing/packet.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';
import { HANDSHAKE_INIT } from '../wire/etcp.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

/**
 * Review 39d, finding 4: `xdp.handshakeRate` and `xdp.handshakeBurst` are validated as integers >= 1
 * with no upper bound, then written into the u32 fields of `config` with `v >>> 0`: 2^32 (an operator's
 * "no limit") becomes 0. A burst of 0 drops every handshake at the NIC (no pair can form, ever); a rate
 * of 0 never refills, so each source gets `burst` handshakes for as long as its bucket stays in the LRU.
 * The daemon starts with no warning.
 */
const PORT = 51914;
let xdp: XdpProgram;
beforeAll(() => {
  xdp = XdpProgram.load();
});
afterAll(() => xdp?.close());

const hs = (): Uint8Array =>
  encodeFrame({ type: FrameType.HandshakeInit, flags: 0, pairId: 0, packetNumber: 0 }, new Uint8Array(HANDSHAKE_INIT.size));

describe('handshake limits above 2^32 - 1', () => {
  it('a configuration the schema accepts never drops the first honest handshake from a source', () => {
    const raw = {
      listen: '0.0.0.0:51914',
      privateKeyFile: '/x/key',
      dataDir: '/x/data',
      adminSocket: '/x/admin.sock',
      peers: [{ name: 'x', publicKey: encodeKey(generateKeyPair().publicKey) }],
      registers: [{ name: 'r', kind: 'map' }],
      xdp: { interface: 'eth0', handshakeRate: 2 ** 32, handshakeBurst: 2 ** 32 },
    };
    const r = configSchema.safeParse(raw);
    // Either the schema refuses the value (the fix), or the program must honour it.
    if (!r.success) {
      expect(r.error.issues.some((i) => i.path.join('.').startsWith('xdp.handshake'))).toBe(true);
      return;
    }
    const x = r.data.xdp!;
    xdp.configure({ port: PORT, enforcePairs: true, handshakeRate: x.handshakeRate, handshakeBurst: x.handshakeBurst });
    // Currently XDP_DROP (handshake-rate-limited): hs_burst wrapped to 0.
    expect(xdp.testRun(udpPacket(hs(), { dstPort: PORT, src: 9 })).retval).toBe(XDP_PASS);
  });
});

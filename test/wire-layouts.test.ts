import { describe, expect, it } from 'vitest';
import { HEADER_LEN, MAGIC, MAX_HANDSHAKE_PAYLOAD_LEN } from '../wire/constants.js';
import { ESTP_HEADER, PAIR_SLOT, WRAP_CONFIG, array, layout, pad, u16, u32, u64, u8 } from '../wire/layouts.js';
import * as etcp from '../wire/etcp.js';
import { DHLEN, KEYLEN, TAGLEN, XNONCELEN } from '../crypto/primitives.js';
import { COOKIE_LEN, COOKIE_REPLY_LEN, MAC_LEN } from '../core/etcp/cookie.js';

// The declarations the codecs read through (bpf/spook_wire.h is their C rendering: test/bpf-header.test.ts).
describe('wire/layouts.ts', () => {
  it('the ESTP header is the 20 bytes of PROTOCOL.md §2, in network order', () => {
    expect(ESTP_HEADER.size).toBe(HEADER_LEN);
    expect(ESTP_HEADER.list.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['magic', 0, 2],
      ['version', 2, 1],
      ['type', 3, 1],
      ['flags', 4, 1],
      ['hdr_len', 5, 1],
      ['payload_len', 6, 2],
      ['pair_id', 8, 4],
      ['packet_number', 12, 8],
    ]);
    const b = ESTP_HEADER.encode({ magic: MAGIC, pair_id: 0x01020304, packet_number: 2 ** 40 + 5 });
    expect(Buffer.from(b).toString('hex')).toBe('5350000000000000010203040000010000000005');
    const dv = new DataView(b.buffer);
    expect(ESTP_HEADER.fields.packet_number.getNumber(dv)).toBe(2 ** 40 + 5);
    expect(ESTP_HEADER.decode(b)).toMatchObject({ magic: MAGIC, pair_id: 0x01020304, packet_number: 2n ** 40n + 5n });
  });

  it('map values are in host order (little-endian) with explicit padding, as C lays them out', () => {
    expect([PAIR_SLOT.size, PAIR_SLOT.fields.packets.offset, WRAP_CONFIG.size, WRAP_CONFIG.fields.udp_proxy_port.offset]).toEqual([
      24, 8, 32, 30,
    ]);
    const v = PAIR_SLOT.encode({ id: 0x01020304, bytes: 7n });
    expect(Buffer.from(v).toString('hex')).toBe('04030201' + '00000000' + '0000000000000000' + '0700000000000000');
    expect(PAIR_SLOT.decode(v)).toEqual({ id: 0x01020304, packets: 0n, bytes: 7n });
  });

  it('refuses a declaration a C compiler would lay out differently (no implicit padding)', () => {
    expect(() => layout('bad', { doc: '' }, [u32('a'), u64('b')])).toThrow(/bad\.b: offset 4 is not 8-aligned/);
    expect(() => layout('bad', { doc: '' }, [u64('a'), u32('b')])).toThrow(/size 12 is not a multiple of its alignment 8/);
    expect(() => layout('dup', { doc: '' }, [u8('a'), u8('a')])).toThrow(/declared twice/);
    expect(layout('ok', { doc: '' }, [u32('a'), pad('pad', 4), u64('b')]).size).toBe(16);
    expect(layout('packed', { doc: '', packed: true }, [u32('a'), u64('b')]).size).toBe(12);
    expect(layout('arr', { doc: '' }, [u16('a'), pad('pad', 2), array('b', 'u32', 4)]).fields.b.size).toBe(16);
  });

  it('reads and writes only inside the view, as DataView does (the buffer behind a subarray runs on)', () => {
    const l = layout('t', { doc: '', packed: true }, [u32('a', { order: 'network' }), array('b', 'u8', 4)]);
    const whole = new Uint8Array(16).fill(0xee);
    const short = new DataView(whole.buffer, 2, 6); // room for a, not for all of b
    expect(l.fields.a.get(short)).toBe(0xeeeeeeee);
    expect(() => l.fields.b.get(short)).toThrow(RangeError);
    expect(() => l.fields.b.set(short, new Uint8Array(1))).toThrow(RangeError);
    expect(() => l.fields.b.set(new DataView(new ArrayBuffer(8)), new Uint8Array(5))).toThrow(/5 bytes exceed 4/);
  });
});

describe('wire/etcp.ts', () => {
  it('the handshake messages are laid out as §12.2 and §12.8 say, with the primitives the crypto uses', () => {
    expect([etcp.KEY_LEN, etcp.AEAD_TAG_LEN, etcp.XNONCE_LEN, etcp.MAC_LEN, etcp.COOKIE_LEN]).toEqual([
      DHLEN,
      TAGLEN,
      XNONCELEN,
      MAC_LEN,
      COOKIE_LEN,
    ]);
    expect(KEYLEN).toBe(etcp.KEY_LEN);
    expect([etcp.INIT_PAYLOAD.size, etcp.RESP_PAYLOAD.size]).toEqual([14, 5]);
    expect(etcp.HANDSHAKE_INIT.list.map((f) => [f.name, f.offset])).toEqual([
      ['sender_index', 0],
      ['ephemeral', 4],
      ['static_sealed', 36],
      ['payload_sealed', 84],
      ['mac1', 114],
      ['mac2', 130],
    ]);
    expect([etcp.HANDSHAKE_INIT.size, etcp.HANDSHAKE_RESP.size, etcp.COOKIE_REPLY.size]).toEqual([146, 93, COOKIE_REPLY_LEN]);
    for (const l of [etcp.HANDSHAKE_INIT, etcp.HANDSHAKE_RESP, etcp.COOKIE_REPLY])
      expect(l.size).toBeLessThanOrEqual(MAX_HANDSHAKE_PAYLOAD_LEN);
    // mac1 and mac2 close both messages, where cookie.ts stamps and checks them (from the frame's end).
    for (const l of [etcp.HANDSHAKE_INIT, etcp.HANDSHAKE_RESP]) expect(l.size - l.fields.mac1.offset).toBe(2 * MAC_LEN);
  });
});

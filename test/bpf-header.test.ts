import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { renderWireHeader } from '../tools/bpf-header.js';
import { DropReason, HEADER_LEN, MAGIC } from '../wire/constants.js';
import {
  BPF_LAYOUTS,
  ESTP_HEADER,
  PAIR_SLOT,
  WRAP_CONFIG,
  XDP_COUNTER_PASS_OTHER,
  array,
  layout,
  pad,
  u16,
  u32,
  u64,
  u8,
} from '../wire/layouts.js';

// One source of truth for the wire: the committed C header must be the rendering of constants.ts and layouts.ts.
describe('bpf/spook_wire.h', () => {
  it('matches wire/constants.ts and wire/layouts.ts (regenerate with `make bpf/spook_wire.h`)', () => {
    expect(readFileSync(new URL('../bpf/spook_wire.h', import.meta.url), 'utf8')).toBe(renderWireHeader());
  });

  it('carries the values the XDP parser depends on', () => {
    const h = renderWireHeader();
    expect(h).toContain(`#define SPOOK_MAGIC 0x${MAGIC.toString(16)}`);
    expect(h).toContain(`#define SPOOK_HEADER_LEN ${HEADER_LEN}`);
    expect(h).toContain(`SPOOK_DROP_UNKNOWN_PAIR = ${DropReason.UnknownPair},`);
    expect(h).toContain(`#define SPOOK_CNT_PASS_OTHER ${XDP_COUNTER_PASS_OTHER}`);
  });

  it('declares every layout as a struct with its size, and every field offset and size, asserted', () => {
    const h = renderWireHeader();
    for (const l of BPF_LAYOUTS) {
      expect(h).toContain(`struct ${l.cName} {`);
      expect(h).toContain(`_Static_assert(sizeof(struct ${l.cName}) == ${l.size},`);
      for (const f of l.list) {
        expect(h).toContain(
          `_Static_assert(__builtin_offsetof(struct ${l.cName}, ${f.name}) == ${f.offset} && sizeof(((struct ${l.cName} *)0)->${f.name}) == ${f.size},`,
        );
      }
    }
    expect(h).toContain('\t__be16 magic;'); // network order on the wire: bpf_ntohs() in C
    expect(h).toContain('} __attribute__((packed));'); // the ESTP header only: its u64 is at 12
    expect(h.match(/__attribute__\(\(packed\)\)/g)).toHaveLength(1);
  });
});

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
});

import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { renderWireHeader } from '../tools/bpf-header.js';
import { DropReason, HEADER_LEN, MAGIC } from '../wire/constants.js';
import { BPF_LAYOUTS, XDP_COUNTER_PASS_OTHER } from '../wire/layouts.js';

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

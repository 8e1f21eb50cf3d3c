import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { renderWireHeader } from '../tools/bpf-header.js';
import { DropReason, HEADER_LEN, MAGIC } from '../wire/constants.js';

// One source of truth for the wire: the committed C header must be the rendering of constants.ts.
describe('bpf/spook_wire.h', () => {
  it('matches wire/constants.ts (regenerate with `make bpf/spook_wire.h`)', () => {
    expect(readFileSync(new URL('../bpf/spook_wire.h', import.meta.url), 'utf8')).toBe(renderWireHeader());
  });

  it('carries the values the XDP parser depends on', () => {
    const h = renderWireHeader();
    expect(h).toContain(`#define SPOOK_MAGIC 0x${MAGIC.toString(16)}`);
    expect(h).toContain(`#define SPOOK_HEADER_LEN ${HEADER_LEN}`);
    expect(h).toContain(`SPOOK_DROP_UNKNOWN_PAIR = ${DropReason.UnknownPair},`);
  });
});

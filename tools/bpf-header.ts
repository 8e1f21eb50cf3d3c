/**
 * Renders bpf/spook_wire.h from wire/constants.ts, so the XDP program and the
 * TypeScript codec share one source of truth. `make bpf/spook_wire.h` writes it; a test
 * fails when the committed header and this rendering differ.
 */
import { fileURLToPath } from 'node:url';
import { writeFileSync } from 'node:fs';
import {
  DROP_REASON_NAMES,
  DropReason,
  FLAG_KEY_PHASE,
  FLAGS_RESERVED_MASK,
  FrameType,
  HEADER_LEN,
  MAGIC,
  MAX_FRAME_LEN,
  MAX_HANDSHAKE_PAYLOAD_LEN,
  PROTOCOL_VERSION,
} from '../wire/constants.js';

const hex = (n: number, w = 2): string => `0x${n.toString(16).padStart(w, '0')}`;
const cname = (s: string): string =>
  s
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toUpperCase();

export function renderWireHeader(): string {
  const lines = [
    '/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */',
    '/* GENERATED from wire/constants.ts by tools/bpf-header.ts: do not edit. */',
    '/* ESTP v1 frame header constants (docs/PROTOCOL.md section 2). */',
    '#ifndef SPOOK_WIRE_H',
    '#define SPOOK_WIRE_H',
    '',
    `#define SPOOK_MAGIC ${hex(MAGIC, 4)}`,
    `#define SPOOK_VERSION ${PROTOCOL_VERSION}`,
    `#define SPOOK_HEADER_LEN ${HEADER_LEN}`,
    `#define SPOOK_MAX_FRAME_LEN ${MAX_FRAME_LEN}`,
    `#define SPOOK_MAX_HANDSHAKE_PAYLOAD_LEN ${MAX_HANDSHAKE_PAYLOAD_LEN}`,
    `#define SPOOK_FLAG_KEY_PHASE ${hex(FLAG_KEY_PHASE)}`,
    `#define SPOOK_FLAGS_RESERVED_MASK ${hex(FLAGS_RESERVED_MASK)}`,
    '',
    '/* Frame types */',
  ];
  for (const [name, v] of Object.entries(FrameType)) if (typeof v === 'number') lines.push(`#define SPOOK_FRAME_${cname(name)} ${v}`);
  lines.push('', '/* Drop reasons: the same numbers index the XDP counters and the daemon metrics. */', 'enum spook_drop_reason {');
  for (const [name, v] of Object.entries(DropReason)) {
    if (typeof v === 'number') lines.push(`\tSPOOK_DROP_${cname(name)} = ${v}, /* ${DROP_REASON_NAMES[v as DropReason]} */`);
  }
  const max = Math.max(...Object.values(DropReason).filter((v): v is number => typeof v === 'number'));
  lines.push(`\tSPOOK_DROP__MAX = ${max + 1},`, '};', '', '#endif /* SPOOK_WIRE_H */', '');
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2];
  if (!out) {
    process.stdout.write(renderWireHeader());
  } else {
    writeFileSync(out, renderWireHeader());
  }
}

/**
 * Renders bpf/spook_wire.h from wire/constants.ts and wire/layouts.ts, so the BPF programs and
 * the TypeScript codecs share one source of truth: the ESTP constants and drop reasons, and
 * every struct the two sides exchange (the frame header, the map keys and values), each with a
 * _Static_assert on its size and on every field's offset and size. `make bpf/spook_wire.h` writes it; a
 * test fails when the committed header and this rendering differ.
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
import {
  BPF_LAYOUTS,
  ESTP_HEADER,
  type Field,
  type LayoutInfo,
  ORIG_FLAG_UID,
  WRAP_MAX_PORTS,
  WRAP_DOWN_DIRECT,
  WRAP_DOWN_REFUSE,
  WRAP_REFUSAL_ENTRIES,
  WRAP_PORT_TCP,
  WRAP_PORT_UDP,
  WRAP_STATS,
  XDP_COUNTER_PASS_ESTP,
  XDP_COUNTER_PASS_OTHER,
  XDP_COUNTER_PASS_FRAGMENT,
  XDP_COUNTER_SLOTS,
  XDP_PAIR_SLOTS,
} from '../wire/layouts.js';

const hex = (n: number, w = 2): string => `0x${n.toString(16).padStart(w, '0')}`;
const cname = (s: string): string =>
  s
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toUpperCase();

/** The C type of a field's element: __u8..__u64, or __be16..__be64 in network order. */
function ctype(f: Field): string {
  const bits = f.elem.slice(1);
  return f.order === 'network' && f.elem !== 'u8' ? `__be${bits}` : `__u${bits}`;
}

/** A struct, then its size and every field's offset and size asserted: a C struct that drifts does not compile. */
export function renderStruct(l: LayoutInfo): string[] {
  const s = `struct ${l.cName}`;
  const lines = [`/* ${l.doc} */`, `${s} {`];
  for (const f of l.list) {
    const arr = f.kind === 'array' || f.kind === 'pad' ? `[${f.count}]` : '';
    lines.push(`\t${ctype(f)} ${f.name}${arr};${f.doc ? ` /* ${f.doc} */` : ''}`);
  }
  lines.push(l.packed ? '} __attribute__((packed));' : '};');
  lines.push(`_Static_assert(sizeof(${s}) == ${l.size}, "${s} is ${l.size} bytes (wire/layouts.ts)");`);
  for (const f of l.list) {
    const at = `__builtin_offsetof(${s}, ${f.name}) == ${f.offset} && sizeof(((${s} *)0)->${f.name}) == ${f.size}`;
    lines.push(`_Static_assert(${at}, "${l.cName}.${f.name}: ${f.size} bytes at ${f.offset} (wire/layouts.ts)");`);
  }
  return lines;
}

export function renderWireHeader(): string {
  const lines = [
    '/* SPDX-License-Identifier: (GPL-2.0 OR Apache-2.0) */',
    '/* GENERATED from wire/constants.ts and wire/layouts.ts by tools/bpf-header.ts: do not edit. */',
    '/* ESTP v1 frame header constants (docs/PROTOCOL.md section 2), and the structs BPF and user space share. */',
    '#ifndef SPOOK_WIRE_H',
    '#define SPOOK_WIRE_H',
    '',
    '#include <linux/types.h>',
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
  lines.push(`\tSPOOK_DROP__MAX = ${XDP_COUNTER_PASS_OTHER},`, '};', '');
  lines.push(
    '/* XDP counters slots besides the drop reasons, and the pair table size. */',
    `#define SPOOK_CNT_PASS_ESTP ${XDP_COUNTER_PASS_ESTP}`,
    `#define SPOOK_CNT_PASS_OTHER ${XDP_COUNTER_PASS_OTHER}`,
    `#define SPOOK_CNT_PASS_FRAGMENT ${XDP_COUNTER_PASS_FRAGMENT}`,
    `#define SPOOK_CNT_SLOTS ${XDP_COUNTER_SLOTS}`,
    `#define SPOOK_PAIR_SLOTS ${XDP_PAIR_SLOTS}`,
    '',
    '/* wrap_ports value bits and size, and wrap_stats slots (drivers/bpf/wrap-hooks.ts names them). */',
    `#define WRAP_TCP ${WRAP_PORT_TCP}`,
    `#define WRAP_UDP ${WRAP_PORT_UDP}`,
    `#define SPOOK_WRAP_MAX_PORTS ${WRAP_MAX_PORTS}`,
    `#define WRAP_DOWN_DIRECT ${WRAP_DOWN_DIRECT}`,
    `#define WRAP_DOWN_REFUSE ${WRAP_DOWN_REFUSE}`,
    `#define SPOOK_WRAP_REFUSAL_ENTRIES ${WRAP_REFUSAL_ENTRIES}`,
    `#define SPOOK_ORIG_UID ${ORIG_FLAG_UID} /* spook_orig.flags: uid recorded */`,
    'enum spook_wrap_stat {',
  );
  Object.entries(WRAP_STATS).forEach(([name, doc], i) => lines.push(`\tWRAP_CNT_${cname(name)} = ${i}, /* ${doc} */`));
  lines.push(`\tWRAP_CNT_SLOTS = ${Object.keys(WRAP_STATS).length},`, '};', '');
  for (const l of BPF_LAYOUTS) lines.push(...renderStruct(l), '');
  lines.push(
    `_Static_assert(sizeof(struct ${ESTP_HEADER.cName}) == SPOOK_HEADER_LEN, "the ESTP header struct is HEADER_LEN bytes");`,
    '',
    '#endif /* SPOOK_WIRE_H */',
    '',
  );
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

/**
 * One declaration per fixed-size struct that crosses a boundary: the ESTP frame header on the
 * wire, and the BPF map keys and values that bpf/*.c and drivers/bpf/ share (in the manner of
 * xdp-tools' xdp_stats_kern_user.h). Offsets and sizes are computed here; tools/bpf-header.ts
 * renders each layout as a C struct in bpf/spook_wire.h with a _Static_assert on its size and
 * on every field's offset and size, so a C struct that drifts from this file does not compile,
 * and the TypeScript codecs read and write through the fields below instead of numbers. The ETCP
 * handshake messages are declared the same way in wire/etcp.ts (not rendered: BPF never reads them).
 *
 * Byte order is per field: network order (big-endian) on the wire, host order in map values.
 * Host order is taken to be little-endian (x86-64 and arm64, the targets Spook builds BPF for).
 */
import { DropReason } from './constants.js';

export type Scalar = 'u8' | 'u16' | 'u32' | 'u64';
export type ByteOrder = 'network' | 'host';
type Kind = Scalar | 'array' | 'pad';

/** A field as declared: a scalar, an array of scalars (read as bytes), or explicit padding. */
export interface FieldDecl<N extends string = string, K extends Kind = Kind> {
  readonly name: N;
  readonly kind: K;
  /** The element type of an array (a scalar is its own element; padding is u8). */
  readonly elem: Scalar;
  readonly count: number;
  readonly order: ByteOrder;
  readonly doc?: string;
}

interface FieldBase {
  readonly name: string;
  readonly kind: Kind;
  readonly elem: Scalar;
  readonly count: number;
  readonly order: ByteOrder;
  readonly doc?: string;
  readonly offset: number;
  readonly size: number;
}
/** u8, u16, u32: read and written as numbers. */
export interface IntField extends FieldBase {
  get(dv: DataView, base?: number): number;
  set(dv: DataView, v: number, base?: number): void;
}
/** u64: a bigint, or as a number (exact below 2^53) where the codec wants one. */
export interface U64Field extends FieldBase {
  get(dv: DataView, base?: number): bigint;
  set(dv: DataView, v: bigint | number, base?: number): void;
  getNumber(dv: DataView, base?: number): number;
}
/** Arrays and padding: a view of their bytes (no copy), and a copy in. */
export interface BytesField extends FieldBase {
  get(dv: DataView, base?: number): Uint8Array;
  set(dv: DataView, v: Uint8Array, base?: number): void;
}
export type Field = IntField | U64Field | BytesField;

type FieldOf<D> = D extends FieldDecl<string, 'u64'> ? U64Field : D extends FieldDecl<string, 'array' | 'pad'> ? BytesField : IntField;
type ValueOf<D> = D extends FieldDecl<string, 'u64'> ? bigint : D extends FieldDecl<string, 'array'> ? Uint8Array : number;
type Decls = readonly FieldDecl[];

/** What every layout has, whatever its fields (what tools/bpf-header.ts renders). */
export interface LayoutInfo {
  /** The C struct name (`struct <cName>`). */
  readonly cName: string;
  readonly doc: string;
  /** Packed (no alignment in C): only where the wire puts a field off its natural alignment. */
  readonly packed: boolean;
  readonly size: number;
  /** Fields in declaration order (padding included). */
  readonly list: readonly Field[];
}

export interface Layout<Ds extends Decls> extends LayoutInfo {
  /** Fields by name, for `L.fields.x.offset` and `L.fields.x.get(dv)`. */
  readonly fields: { readonly [D in Ds[number] as D['name']]: FieldOf<D> };
  /** A zeroed buffer of `size` bytes with the given fields set (the others, padding included, stay zero). */
  encode(
    values: Partial<{
      [D in Ds[number] as D['kind'] extends 'pad' ? never : D['name']]: ValueOf<D> | (D extends FieldDecl<string, 'u64'> ? number : never);
    }>,
  ): Uint8Array;
  /** Every field but padding, from `size` bytes at `base`. */
  decode(buf: Uint8Array, base?: number): { [D in Ds[number] as D['kind'] extends 'pad' ? never : D['name']]: ValueOf<D> };
}

const WIDTH: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, u64: 8 };

type Opts = { order?: ByteOrder; doc?: string };
const scalar =
  <K extends Scalar>(kind: K) =>
  <N extends string>(name: N, o: Opts = {}): FieldDecl<N, K> => ({
    name,
    kind,
    elem: kind,
    count: 1,
    order: o.order ?? 'host',
    doc: o.doc,
  });
export const u8 = scalar('u8');
export const u16 = scalar('u16');
export const u32 = scalar('u32');
export const u64 = scalar('u64');
/** `count` elements of `elem` (in C, `elem name[count]`); TypeScript sees the raw bytes. */
export const array = <N extends string>(name: N, elem: Scalar, count: number, o: Opts = {}): FieldDecl<N, 'array'> => ({
  name,
  kind: 'array',
  elem,
  count,
  order: o.order ?? 'host',
  doc: o.doc,
});
/** Explicit padding: always zero, never read. */
export const pad = <N extends string>(name: N, bytes: number): FieldDecl<N, 'pad'> => ({
  name,
  kind: 'pad',
  elem: 'u8',
  count: bytes,
  order: 'host',
});

function accessors(d: FieldDecl, offset: number, size: number): Pick<Field, 'get' | 'set'> & { getNumber?: U64Field['getNumber'] } {
  const le = d.order === 'host';
  if (d.kind === 'array' || d.kind === 'pad') {
    // Bounded by the view, as DataView's own getters are (the buffer behind it may run on).
    const bytes = (dv: DataView, base: number): Uint8Array => {
      if (base + offset + size > dv.byteLength)
        throw new RangeError(`${d.name}: ${size} bytes at ${base + offset} exceed the view's ${dv.byteLength}`);
      return new Uint8Array(dv.buffer, dv.byteOffset + base + offset, size);
    };
    return {
      get: (dv: DataView, base = 0) => bytes(dv, base),
      set: (dv: DataView, v: Uint8Array, base = 0) => {
        if (v.length > size) throw new RangeError(`${d.name}: ${v.length} bytes exceed ${size}`);
        bytes(dv, base).fill(0).set(v);
      },
    } as Pick<BytesField, 'get' | 'set'>;
  }
  switch (d.kind) {
    case 'u8':
      return {
        get: (dv: DataView, base = 0) => dv.getUint8(base + offset),
        set: (dv: DataView, v: number, base = 0) => dv.setUint8(base + offset, v),
      };
    case 'u16':
      return {
        get: (dv: DataView, base = 0) => dv.getUint16(base + offset, le),
        set: (dv: DataView, v: number, base = 0) => dv.setUint16(base + offset, v, le),
      };
    case 'u32':
      return {
        get: (dv: DataView, base = 0) => dv.getUint32(base + offset, le),
        set: (dv: DataView, v: number, base = 0) => dv.setUint32(base + offset, v >>> 0, le),
      };
    case 'u64': {
      const [hi, lo] = le ? [4, 0] : [0, 4];
      return {
        get: (dv: DataView, base = 0) => dv.getBigUint64(base + offset, le),
        set: (dv: DataView, v: bigint | number, base = 0) => {
          if (typeof v === 'bigint') return dv.setBigUint64(base + offset, v, le);
          if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${d.name}: ${v} is not a u64 that a number holds exactly`);
          dv.setUint32(base + offset + hi, Math.floor(v / 2 ** 32), le);
          dv.setUint32(base + offset + lo, v >>> 0, le);
        },
        getNumber: (dv: DataView, base = 0) => dv.getUint32(base + offset + hi, le) * 2 ** 32 + dv.getUint32(base + offset + lo, le),
      };
    }
  }
}

/**
 * Declares a struct. Offsets follow declaration order with no implicit padding: a layout that
 * is not packed must place every field on its natural alignment and end on the struct's (as a C
 * compiler would lay it out), else this throws when the module loads.
 */
export function layout<const Ds extends Decls>(cName: string, opts: { doc: string; packed?: boolean }, decls: Ds): Layout<Ds> {
  const packed = opts.packed ?? false;
  const list: Field[] = [];
  let offset = 0;
  let align = 1;
  for (const d of decls) {
    const w = WIDTH[d.elem];
    if (!packed && offset % w !== 0) throw new Error(`${cName}.${d.name}: offset ${offset} is not ${w}-aligned (declare padding, or pack)`);
    if (list.some((f) => f.name === d.name)) throw new Error(`${cName}.${d.name}: declared twice`);
    const size = w * d.count;
    list.push({ ...d, offset, size, ...accessors(d, offset, size) } as Field);
    offset += size;
    align = Math.max(align, w);
  }
  if (!packed && offset % align !== 0)
    throw new Error(`${cName}: size ${offset} is not a multiple of its alignment ${align} (declare tail padding)`);
  const size = offset;
  const fields = Object.fromEntries(list.map((f) => [f.name, f])) as Layout<Ds>['fields'];
  return {
    cName,
    doc: opts.doc,
    packed,
    size,
    fields,
    list,
    encode(values) {
      const out = new Uint8Array(size);
      const dv = new DataView(out.buffer);
      for (const [name, v] of Object.entries(values as Record<string, unknown>)) {
        const f = (fields as Record<string, Field>)[name];
        if (v !== undefined) (f.set as (dv: DataView, v: unknown) => void)(dv, v);
      }
      return out;
    },
    decode(buf, base = 0) {
      if (buf.length - base < size) throw new RangeError(`${cName}: needs ${size} bytes, ${buf.length - base} given`);
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      return Object.fromEntries(list.filter((f) => f.kind !== 'pad').map((f) => [f.name, f.get(dv, base)])) as ReturnType<
        Layout<Ds>['decode']
      >;
    },
  };
}

/** A DataView over exactly the bytes of `b` (a Buffer or a subarray shares a larger ArrayBuffer). */
export const viewOf = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ---------------------------------------------------------------------------------------------
// The wire (docs/PROTOCOL.md §2): network order.

const net = (doc?: string): Opts => ({ order: 'network', doc });

/** The fixed ESTP frame header. Packed: the 64-bit packet number sits at offset 12. */
export const ESTP_HEADER = layout(
  'spook_estp_hdr',
  { doc: 'ESTP v1 frame header (docs/PROTOCOL.md section 2), network order', packed: true },
  [
    u16('magic', net('"SP"')),
    u8('version'),
    u8('type'),
    u8('flags'),
    u8('hdr_len', { doc: 'always 20' }),
    u16('payload_len', net()),
    u32('pair_id', net()),
    u64('packet_number', net()),
  ],
);

// ---------------------------------------------------------------------------------------------
// bpf/spook_xdp.c maps: host order unless a field says otherwise.

/** The XDP program's `config` map (one entry), written by drivers/bpf/xdp.ts. */
export const XDP_CONFIG = layout('spook_config', { doc: 'the XDP config map value' }, [
  u16('port', { doc: 'ESTP UDP port (host order); 0 disables validation' }),
  u16('enforce_pairs'),
  u32('hs_rate', { doc: 'handshake frames per second per source' }),
  u32('hs_burst', { doc: 'bucket depth' }),
  pad('pad', 4),
]);

/**
 * Largest `hs_rate` and `hs_burst` the control plane writes (xdp.handshakeRate/Burst): far past any
 * honest need, well inside the u32 fields, and cap = burst * 10^9 nano-tokens stays inside u64.
 */
export const XDP_HANDSHAKE_MAX = 1_000_000;

/** One per-CPU slot of the `pairs` table: the pair id (0: free) and what XDP passed for it. */
export const PAIR_SLOT = layout('spook_pair_slot', { doc: 'the XDP pairs map value (per CPU)' }, [
  u32('id', { doc: '0: free' }),
  pad('pad', 4),
  u64('packets'),
  u64('bytes'),
]);

/** Key of the handshake token buckets: a source address (family 4: the first 4 bytes). */
export const SRC_KEY = layout('spook_src_key', { doc: 'the XDP hs_buckets map key' }, [u32('family'), array('addr', 'u8', 16, net())]);

/** Key of a dropped fragment train: source and IP identification (as the packet has it). */
export const FRAG_KEY = layout(
  'spook_frag_key',
  { doc: 'the XDP frag_ids map key: a fragmented datagram as the IP layer names it (source, identification)' },
  [u32('family'), u32('id', net()), array('addr', 'u8', 16, net())],
);

export const TOKEN_BUCKET = layout('spook_bucket', { doc: 'the XDP hs_buckets map value' }, [
  u64('tokens', { doc: 'in nano-tokens: 1 frame = NSEC_PER_SEC' }),
  u64('last_ns'),
]);

/**
 * Slots of the XDP `counters` map (a per-CPU u64 each): a drop reason counts in its own number's
 * slot, passed ESTP frames in 0, everything else that passes one past the last reason, and first
 * fragments of a pair's Data frame (a path of smaller MTU, PROTOCOL.md §13.1) in the slot after.
 */
export const XDP_COUNTER_PASS_ESTP = 0;
export const XDP_COUNTER_PASS_OTHER = Math.max(...Object.values(DropReason).filter((v): v is number => typeof v === 'number')) + 1;
export const XDP_COUNTER_PASS_FRAGMENT = XDP_COUNTER_PASS_OTHER + 1;
export const XDP_COUNTER_SLOTS = XDP_COUNTER_PASS_FRAGMENT + 1;
/** Entries of the `pairs` table: a pair's slot is the low 16 bits of its id. */
export const XDP_PAIR_SLOTS = 65536;

// ---------------------------------------------------------------------------------------------
// bpf/spook_wrap.c maps.

export const WRAP_CONFIG = layout('spook_wrap_config', { doc: 'the wrap_cfg map value' }, [
  u64('netns_cookie', { doc: '0: not configured, nothing is redirected' }),
  u64('pidns_dev', { doc: "spookd's pid namespace (stat of /proc/self/ns/pid):" }),
  u64('pidns_ino', { doc: '  self_tgid is a pid in that namespace' }),
  u32('self_tgid'),
  u16('proxy_port'),
  u16('udp_proxy_port', { doc: '0: UDP interception off' }),
]);

/**
 * An original destination, as the hooks recorded it before redirecting the socket, with the uid
 * of the task that connected or sent (the per-user share of a peer's slots, PROTOCOL.md §16.5.1).
 * As the key of wrap_refusals it is the destination alone: flags and uid 0.
 */
export const ORIG_DST = layout('spook_orig', { doc: 'orig_by_cookie, orig_by_client and udp_orig_by_client value' }, [
  u8('family', { doc: '4 or 6' }),
  u8('flags', { doc: 'SPOOK_ORIG_UID: uid is set (0 in a wrap_refusals key)' }),
  u16('port', { doc: 'host order' }),
  u32('ip4', net('family 4')),
  array('ip6', 'u8', 16, net('family 6')),
  u32('uid', { doc: "the client task's uid, bpf_get_current_uid_gid() & 0xffffffff" }),
]);
/** spook_orig.flags: the hook recorded the client's uid (an object without the field leaves it 0: no uid known). */
export const ORIG_FLAG_UID = 1;

/** A client as the proxy sees it (address and port): the key of the original destinations. */
export const CLIENT_KEY = layout('spook_client', { doc: 'orig_by_client and udp_orig_by_client key' }, [
  u8('family', { doc: '4 or 6' }),
  pad('pad', 1),
  u16('port', { doc: 'host order' }),
  array('addr', 'u32', 4, net('family 4: addr[0], the rest 0')),
]);

/** A destination whose dial the far side saw fail (docs/OPERATIONS.md, "What a client sees when it connects"). */
export const REFUSAL_MEMO = layout('spook_refusal', { doc: 'wrap_refusals value (key: struct spook_orig of the destination)' }, [
  u64('expires_ns', { doc: 'bpf_ktime_get_ns() after which the entry is ignored (and deleted)' }),
  u32('errno', { doc: 'what connect() returns meanwhile (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH)' }),
  pad('pad', 4),
]);

/** wrap_down values: what connect() to a TCP-wrapped port does while its peer has no carrier (absent: redirect). */
export const WRAP_DOWN_DIRECT = 1;
export const WRAP_DOWN_REFUSE = 2;
/** Entries of wrap_refusals (an LRU map). */
export const WRAP_REFUSAL_ENTRIES = 4096;

/** wrap_ports values: a bit per transport wrapped on that destination port. */
export const WRAP_PORT_TCP = 1;
export const WRAP_PORT_UDP = 2;
/** Entries of wrap_ports: how many destination ports can be wrapped. */
export const WRAP_MAX_PORTS = 256;

/** wrap_stats slots, in this order, with what each counts (the C enum spook_wrap_stat is generated from it). */
export const WRAP_STATS = {
  redirected: 'connect rewritten to the proxy',
  skipped_self: "spookd's own connect",
  no_port: 'destination port not wrapped',
  loopback: 'destination 127/8, ::1, or unspecified',
  other_netns: "not spookd's network namespace",
  not_tcp: 'protocol not intercepted: not TCP, nor UDP with UDP on',
  save_failed: 'orig_by_cookie/udp_orig_by_client update failed: not redirected',
  handed_over: 'sockops moved an entry to orig_by_client',
  udp_redirected: 'UDP connect or unconnected send rewritten to the UDP proxy',
  udp_unbound: 'UDP connect of an unbound socket the hook found no free port for: not redirected',
  udp_reverse: 'datagram from the UDP proxy given the original source',
  down_direct: 'peer without a carrier, whenDown direct: not redirected',
  down_refused: 'peer without a carrier, whenDown refuse: connect() failed (EHOSTUNREACH)',
  memo_refused: 'destination in wrap_refusals: connect() failed with its errno',
} as const;
export const WRAP_STAT_NAMES = Object.keys(WRAP_STATS) as readonly (keyof typeof WRAP_STATS)[];

/** Every layout rendered into bpf/spook_wire.h, in this order. */
export const BPF_LAYOUTS: readonly LayoutInfo[] = [
  ESTP_HEADER,
  XDP_CONFIG,
  PAIR_SLOT,
  SRC_KEY,
  FRAG_KEY,
  TOKEN_BUCKET,
  WRAP_CONFIG,
  ORIG_DST,
  CLIENT_KEY,
  REFUSAL_MEMO,
];

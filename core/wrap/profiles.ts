/**
 * Protocol profiles: recognise the application protocol of a wrapped TCP connection (or UDP
 * flow) from its first bytes, and count traffic per recognised protocol.
 *
 * Every matcher is a pure function of a byte prefix that answers NO (this cannot be that
 * protocol), MAYBE (need more bytes) or YES, and is prefix-monotone: once it says NO or YES,
 * longer inputs give the same answer. The client-side signatures are pairwise disjoint, so at
 * most one matcher says YES for any client prefix; `recognise` is therefore monotone too
 * (complete=true answers never change as more client bytes arrive). All reads are
 * bounds-checked and nothing here throws on any input.
 */

export const PROTOCOLS = ['ssh', 'smb', 'postgres', 'tds', 'ldap', 'http', 'websocket', 'mqtt', 'coap', 'unknown'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/**
 * How many first bytes of each direction `recognise` looks at. Callers stop buffering after
 * this many; with a full prefix of this size `recognise` always answers complete=true.
 */
export const RECOGNISE_MAX_BYTES = 512;

export interface Recognition {
  protocol: Protocol;
  /** false: need more bytes to decide (protocol is then 'unknown'). */
  complete: boolean;
}

const NO = 0;
const MAYBE = 1;
const YES = 2;
type Verdict = typeof NO | typeof MAYBE | typeof YES;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;

/** Does b (from off) start with the ASCII string s? MAYBE if b ends inside s. */
function prefix(b: Uint8Array, off: number, s: string): Verdict {
  for (let i = 0; i < s.length; i++) {
    if (off + i >= b.length) return MAYBE;
    if (b[off + i] !== s.charCodeAt(i)) return NO;
  }
  return YES;
}

/** Big-endian unsigned integer of n bytes at off (caller checks bounds). */
function be(b: Uint8Array, off: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) v = v * 256 + b[off + i]!;
  return v;
}

// ---------------------------------------------------------------------------------------------
// SSH — RFC 4253 §4.2: both sides send an identification string "SSH-protoversion-softwareversion"
// on connect; the server need not wait for the client, and MAY send other lines before it.

function sshClient(b: Uint8Array): Verdict {
  return prefix(b, 0, 'SSH-');
}

/** Server side contributes positive evidence only (its absence says nothing about the client). */
function sshServer(b: Uint8Array | undefined): Verdict {
  if (!b || b.length === 0) return NO;
  const v = prefix(b, 0, 'SSH-');
  if (v !== NO) return v;
  for (let i = 0; i + 1 < b.length; i++) if (b[i] === LF && prefix(b, i + 1, 'SSH-') === YES) return YES;
  return NO;
}

// ---------------------------------------------------------------------------------------------
// SMB2/3 over direct TCP — RFC 1002 §4.3.1 session message (type 0x00) with a 24-bit length
// (MS-SMB2 §2.1 transport), then the SMB2 header ProtocolId 0xFE 'S' 'M' 'B' with
// StructureSize 64 (MS-SMB2 §2.2.1). Clients that still speak SMB1 first send an SMB1
// NEGOTIATE (0xFF 'S' 'M' 'B', command 0x72, MS-SMB §2.2.4.52) offering "SMB 2.???" dialects;
// every SMB connection starts with a negotiate, and that is SMB too.

function smb(b: Uint8Array): Verdict {
  if (b.length < 1) return MAYBE;
  if (b[0] !== 0x00) return NO;
  if (b.length < 5) return MAYBE;
  const nbLen = be(b, 1, 3);
  const magic = b[4];
  if (magic !== 0xfe && magic !== 0xff) return NO;
  const smbMagic = prefix(b, 5, 'SMB');
  if (smbMagic !== YES) return smbMagic;
  if (magic === 0xfe) {
    if (nbLen < 64) return NO; // shorter than an SMB2 header
    if (b.length < 10) return MAYBE;
    return b[8] === 64 && b[9] === 0 ? YES : NO; // StructureSize, little-endian
  }
  if (nbLen < 35) return NO; // SMB1 header (32) + WordCount (1) + ByteCount (2)
  if (b.length < 9) return MAYBE;
  return b[8] === 0x72 ? YES : NO; // SMB_COM_NEGOTIATE
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL — protocol docs §55.7 (Message Formats): the first message carries no type byte,
// just Int32 length (self-inclusive) and Int32 code: StartupMessage 196608 (3.0; 3.x minors
// since PostgreSQL 18), SSLRequest 80877103, GSSENCRequest 80877104, CancelRequest 80877102.

const PG_SSL = 80877103;
const PG_GSSENC = 80877104;
const PG_CANCEL = 80877102;
const PG_MAX_STARTUP = 10000; // MAX_STARTUP_PACKET_LENGTH in the server

function postgres(b: Uint8Array): Verdict {
  // Every valid length is < 65536, so the top two length bytes are zero.
  if (b.length >= 1 && b[0] !== 0) return NO;
  if (b.length >= 2 && b[1] !== 0) return NO;
  if (b.length >= 5 && b[4] !== 0x00 && b[4] !== 0x04) return NO;
  if (b.length < 8) return MAYBE;
  const len = be(b, 0, 4);
  const code = be(b, 4, 4);
  if (code === PG_SSL || code === PG_GSSENC) return len === 8 ? YES : NO;
  if (code === PG_CANCEL) return len >= 16 && len <= 12 + 256 ? YES : NO; // key up to 256 bytes (3.2)
  if (Math.floor(code / 65536) === 3) return len > 8 && len <= PG_MAX_STARTUP ? YES : NO; // params + final NUL
  return NO;
}

// ---------------------------------------------------------------------------------------------
// TDS (SQL Server) — MS-TDS §2.2.3.1: 8-byte packet header Type, Status, Length (big-endian,
// includes the header), SPID, PacketID, Window (0x00). The first packet is PRELOGIN (0x12),
// or TDS7 LOGIN (0x10) / SQL batch (0x01) from old clients. Status only defines bits 0x01..0x10
// (§2.2.3.1.2). A PRELOGIN payload starts with the VERSION option token 0x00 (§2.2.6.5).

function tds(b: Uint8Array): Verdict {
  if (b.length < 1) return MAYBE;
  const type = b[0];
  if (type !== 0x12 && type !== 0x10 && type !== 0x01) return NO;
  if (b.length < 2) return MAYBE;
  if ((b[1]! & ~0x1f) !== 0) return NO;
  if (b.length < 4) return MAYBE;
  const len = be(b, 2, 2);
  if (len < 8 || (type === 0x12 && len < 9)) return NO;
  if (b.length < 8) return MAYBE;
  if (b[7] !== 0) return NO;
  if (type !== 0x12) return YES;
  if (b.length < 9) return MAYBE;
  return b[8] === 0x00 ? YES : NO;
}

// ---------------------------------------------------------------------------------------------
// LDAP — RFC 4511 §4.2 LDAPMessage ::= SEQUENCE { messageID INTEGER, protocolOp CHOICE {...},
// controls [0] OPTIONAL }, BER encoded (X.690 §8.1.3) with definite lengths only (RFC 4511 §5.1).

/** X.690 §8.1.3 definite length at off: {v, len, end} where end is the first content byte. */
function berLength(b: Uint8Array, off: number): { v: Verdict; len: number; end: number } {
  if (off >= b.length) return { v: MAYBE, len: 0, end: 0 };
  const first = b[off]!;
  if (first < 0x80) return { v: YES, len: first, end: off + 1 };
  const n = first & 0x7f;
  // 0x80 is the indefinite form (not allowed in LDAP), 0xFF is reserved; > 4 octets is absurd here.
  if (n === 0 || n > 4) return { v: NO, len: 0, end: 0 };
  if (off + 1 + n > b.length) return { v: MAYBE, len: 0, end: 0 };
  return { v: YES, len: be(b, off + 1, n), end: off + 1 + n };
}

/** Request protocolOp tags (RFC 4511 §4.2 and the operation sections). */
const LDAP_REQUEST_TAGS = new Set([
  0x60, // [APPLICATION 0] bindRequest
  0x42, // [APPLICATION 2] unbindRequest (primitive NULL)
  0x63, // [APPLICATION 3] searchRequest
  0x66, // [APPLICATION 6] modifyRequest
  0x68, // [APPLICATION 8] addRequest
  0x4a, // [APPLICATION 10] delRequest (primitive LDAPDN)
  0x6c, // [APPLICATION 12] modDNRequest
  0x6e, // [APPLICATION 14] compareRequest
  0x50, // [APPLICATION 16] abandonRequest (primitive MessageID)
  0x77, // [APPLICATION 23] extendedRequest (e.g. StartTLS 1.3.6.1.4.1.1466.20037)
]);

function ldap(b: Uint8Array): Verdict {
  if (b.length < 1) return MAYBE;
  if (b[0] !== 0x30) return NO; // SEQUENCE, constructed
  const outer = berLength(b, 1);
  if (outer.v !== YES) return outer.v;
  let p = outer.end;
  if (p >= b.length) return MAYBE;
  if (b[p] !== 0x02) return NO; // messageID INTEGER
  p++;
  if (p >= b.length) return MAYBE;
  const idLen = b[p]!;
  if (idLen < 1 || idLen > 4) return NO; // MessageID ::= INTEGER (0 .. maxInt)
  p++;
  if (p >= b.length) return MAYBE;
  if (b[p]! & 0x80) return NO; // negative
  p += idLen;
  if (p >= b.length) return MAYBE;
  const tag = b[p]!;
  if (!LDAP_REQUEST_TAGS.has(tag)) return NO;
  const op = berLength(b, p + 1);
  if (op.v !== YES) return op.v;
  if (tag === 0x42 && op.len !== 0) return NO; // NULL
  if (tag === 0x50 && (op.len < 1 || op.len > 4)) return NO; // INTEGER
  // The SEQUENCE must hold messageID and the whole protocolOp.
  return outer.len >= op.end - outer.end + op.len ? YES : NO;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.x — RFC 9112 §3: request-line = method SP request-target SP HTTP-version CRLF
// (a bare LF is tolerated, §2.2). WebSocket — RFC 6455 §4.1: the opening handshake is an
// HTTP/1.1 GET with "Upgrade: websocket" (case-insensitive).

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE'];

function lowerAscii(b: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) {
    const c = b[i]!;
    s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c + 0x20 : c);
  }
  return s;
}

/** Upgrade = #protocol, protocol = name [ "/" version ] (RFC 9110 §7.8). */
function upgradesToWebsocket(value: string): boolean {
  return value.split(',').some((p) => p.trim().split('/')[0]!.trim() === 'websocket');
}

/** atCap: b is the whole recognition prefix; decide from what is there. */
function http(b: Uint8Array, atCap: boolean): { v: Verdict; protocol: 'http' | 'websocket' } {
  const no = { v: NO, protocol: 'http' } as const;
  const maybe = atCap ? no : ({ v: MAYBE, protocol: 'http' } as const);
  let p = -1;
  let partial = false;
  for (const m of HTTP_METHODS) {
    const v = prefix(b, 0, m + ' ');
    if (v === YES) p = m.length + 1;
    else if (v === MAYBE) partial = true;
  }
  if (p < 0) return partial ? maybe : no;
  // request-target: visible characters up to the next SP (obs-text tolerated).
  const start = p;
  for (; p < b.length && b[p] !== SP; p++) {
    const c = b[p]!;
    if (c < 0x21 || c === 0x7f) return no;
  }
  if (p >= b.length) return maybe;
  if (p === start) return no;
  p++;
  const ver = prefix(b, p, 'HTTP/1.');
  if (ver === NO) return no;
  if (ver === MAYBE) return maybe;
  p += 7;
  if (p >= b.length) return maybe;
  if (b[p]! < 0x30 || b[p]! > 0x39) return no;
  p++;
  if (p >= b.length) return maybe;
  if (b[p] === CR) p++;
  if (p >= b.length) return maybe;
  if (b[p] !== LF) return no;
  p++;
  // Header fields: look for Upgrade: websocket until the empty line ends the block.
  for (;;) {
    let eol = p;
    while (eol < b.length && b[eol] !== LF) eol++;
    if (eol >= b.length) return atCap ? { v: YES, protocol: 'http' } : maybe;
    const end = eol > p && b[eol - 1] === CR ? eol - 1 : eol;
    if (end === p) return { v: YES, protocol: 'http' };
    const line = lowerAscii(b, p, end);
    if (line.startsWith('upgrade:') && upgradesToWebsocket(line.slice(8))) return { v: YES, protocol: 'websocket' };
    p = eol + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// MQTT — 3.1.1 §3.1 / 5.0 §3.1 CONNECT: fixed header 0x10 (reserved flags 0), Remaining Length
// as a 1–4 byte varint (3.1.1 §2.2.3), then the protocol name as a UTF-8 string with a 16-bit
// length: "MQTT" with level 4 (3.1.1) or 5 (5.0), or "MQIsdp" with level 3 (3.1); then the
// Connect Flags, whose bit 0 is reserved and must be 0 (3.1.1 §3.1.2.3).

function mqtt(b: Uint8Array): Verdict {
  if (b.length < 1) return MAYBE;
  if (b[0] !== 0x10) return NO;
  let remaining = 0;
  let mult = 1;
  let p = 1;
  for (;;) {
    if (p >= b.length) return MAYBE;
    const c = b[p++]!;
    remaining += (c & 0x7f) * mult;
    if ((c & 0x80) === 0) break;
    if (p - 1 >= 4) return NO; // a fifth length byte
    mult *= 128;
  }
  const name = prefix(b, p, '\x00\x04MQTT');
  const old = prefix(b, p, '\x00\x06MQIsdp');
  if (name === NO && old === NO) return NO;
  if (name !== YES && old !== YES) return MAYBE;
  p += name === YES ? 6 : 8;
  if (p >= b.length) return MAYBE;
  const level = b[p++]!;
  if (name === YES ? level !== 4 && level !== 5 : level !== 3) return NO;
  // variable header (name, level, flags, keep alive) + client identifier length
  if (remaining < (name === YES ? 10 : 12) + 2) return NO;
  if (p >= b.length) return MAYBE;
  return (b[p]! & 0x01) === 0 ? YES : NO;
}

// ---------------------------------------------------------------------------------------------
// CoAP — RFC 7252 §3: Ver (2 bits, = 1), T (2), TKL (4, 9–15 reserved), Code (class.detail),
// Message ID (16), Token (TKL bytes). Classes 0 (requests, 0.00 = Empty), 2/4/5 (responses).
// §4.2/4.3: requests are CON or NON; an ACK carries a response or is Empty; a RST is Empty;
// an Empty message has TKL 0.

function coap(b: Uint8Array): Verdict {
  if (b.length < 1) return MAYBE;
  if (b[0]! >> 6 !== 1) return NO;
  const type = (b[0]! >> 4) & 0x3;
  const tkl = b[0]! & 0x0f;
  if (tkl > 8) return NO;
  if (b.length < 2) return MAYBE;
  const cls = b[1]! >> 5;
  const detail = b[1]! & 0x1f;
  const empty = cls === 0 && detail === 0;
  const request = cls === 0 && detail !== 0;
  const response = cls === 2 || cls === 4 || cls === 5;
  if (!empty && !request && !response) return NO;
  if (empty && tkl !== 0) return NO;
  if (type === 3 && !empty) return NO; // RST
  if (type === 2 && request) return NO; // ACK
  return b.length < 4 + tkl ? MAYBE : YES;
}

// ---------------------------------------------------------------------------------------------

/**
 * Recognise the protocol from the first bytes the client sent (and, optionally, the first bytes
 * the server sent). complete=false means "need more bytes"; with RECOGNISE_MAX_BYTES or more
 * client bytes the answer is always complete (an undecided prefix is 'unknown', except an HTTP
 * request whose header block is longer than the prefix: it is decided from the headers seen).
 * For UDP, pass the first datagram (a datagram shorter than a CoAP header answers
 * complete=false; treat that as 'unknown').
 *
 * serverFirst only matters for SSH, whose server speaks first. Every other profile is
 * client-first, so a server that spoke before the client with anything but an SSH
 * identification is 'unknown' (SMTP, FTP, MySQL, ...).
 */
export function recognise(clientFirst: Uint8Array, serverFirst?: Uint8Array, transport: 'tcp' | 'udp' = 'tcp'): Recognition {
  try {
    const atCap = clientFirst.length >= RECOGNISE_MAX_BYTES;
    const c = atCap ? clientFirst.subarray(0, RECOGNISE_MAX_BYTES) : clientFirst;
    if (transport === 'udp') {
      const v = coap(c);
      return v === YES ? { protocol: 'coap', complete: true } : { protocol: 'unknown', complete: v === NO || atCap };
    }
    const s = serverFirst && serverFirst.length > RECOGNISE_MAX_BYTES ? serverFirst.subarray(0, RECOGNISE_MAX_BYTES) : serverFirst;
    const sshS = sshServer(s);
    if (sshS === YES) return { protocol: 'ssh', complete: true };
    if (c.length === 0) {
      if (s && s.length > 0 && sshS === NO) return { protocol: 'unknown', complete: true };
      return { protocol: 'unknown', complete: false };
    }
    const h = http(c, atCap);
    const verdicts: [Protocol, Verdict][] = [
      ['ssh', Math.max(sshClient(c), sshS) as Verdict],
      ['smb', smb(c)],
      ['postgres', postgres(c)],
      ['tds', tds(c)],
      ['ldap', ldap(c)],
      [h.protocol, h.v],
      ['mqtt', mqtt(c)],
    ];
    let pending = false;
    for (const [protocol, v] of verdicts) {
      if (v === YES) return { protocol, complete: true };
      if (v === MAYBE) pending = true;
    }
    return { protocol: 'unknown', complete: !pending || atCap };
  } catch {
    // Unreachable by construction (all reads are bounds-checked); a non-Uint8Array from JS lands here.
    return { protocol: 'unknown', complete: true };
  }
}

// ---------------------------------------------------------------------------------------------

export interface ProtocolCounters {
  connections: number;
  bytesUp: number;
  bytesDown: number;
  outages: number;
}

/** Per-protocol counters; toJSON lists only protocols seen, in PROTOCOLS order. */
export class ProtocolStats {
  private readonly counters = new Map<Protocol, ProtocolCounters>();

  private entry(p: Protocol): ProtocolCounters {
    let e = this.counters.get(p);
    if (!e) {
      e = { connections: 0, bytesUp: 0, bytesDown: 0, outages: 0 };
      this.counters.set(p, e);
    }
    return e;
  }

  /** A connection recognised as p. */
  connection(p: Protocol): void {
    this.entry(p).connections++;
  }

  /** Bytes carried for p: up = client to server, down = server to client. */
  bytes(p: Protocol, up: number, down: number): void {
    if (!(Number.isFinite(up) && up >= 0 && Number.isFinite(down) && down >= 0)) {
      throw new RangeError(`ProtocolStats.bytes: invalid byte counts ${up}/${down}`);
    }
    const e = this.entry(p);
    e.bytesUp += up;
    e.bytesDown += down;
  }

  /** A carrier outage affecting a connection of protocol p. */
  outage(p: Protocol): void {
    this.entry(p).outages++;
  }

  /** Counters of p (zeros if never seen); a copy. */
  get(p: Protocol): ProtocolCounters {
    const e = this.counters.get(p);
    return e ? { ...e } : { connections: 0, bytesUp: 0, bytesDown: 0, outages: 0 };
  }

  toJSON(): Partial<Record<Protocol, ProtocolCounters>> {
    const out: Partial<Record<Protocol, ProtocolCounters>> = {};
    for (const p of PROTOCOLS) {
      const e = this.counters.get(p);
      if (e) out[p] = { ...e };
    }
    return out;
  }
}

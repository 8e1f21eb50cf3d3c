import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PROTOCOLS, ProtocolStats, recognise, RECOGNISE_MAX_BYTES, type Protocol } from '../core/wrap/profiles.js';

const enc = new TextEncoder();
const ascii = (s: string): Uint8Array => enc.encode(s);
const cat = (...parts: (Uint8Array | readonly number[] | string)[]): Uint8Array => {
  const bufs = parts.map((p) => (typeof p === 'string' ? ascii(p) : Uint8Array.from(p)));
  const out = new Uint8Array(bufs.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of bufs) {
    out.set(b, o);
    o += b.length;
  }
  return out;
};
const u16be = (n: number): number[] => [(n >> 8) & 0xff, n & 0xff];
const u16le = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff];
const u32be = (n: number): number[] => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const u32le = (n: number): number[] => u32be(n).reverse();
const zeros = (n: number): number[] => new Array<number>(n).fill(0);

// ---- realistic first bytes, hand-built from the specs ----

const sshBanner = ascii('SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n');

/** PostgreSQL StartupMessage (protocol 3.0) with user/database/application_name. */
function pgStartup(): Uint8Array {
  const params = cat('user\0alice\0database\0app\0application_name\0psql\0\0');
  return cat(u32be(8 + params.length), u32be(196608), params);
}
const pgSslRequest = Uint8Array.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
const pgGssEncRequest = cat(u32be(8), u32be(80877104));
const pgCancel = cat(u32be(16), u32be(80877102), u32be(4242), u32be(0xdeadbeef));

/** NetBIOS session message + SMB2 header (NEGOTIATE) + NEGOTIATE request with 5 dialects. */
function smb2Negotiate(): Uint8Array {
  const header = cat(
    [0xfe],
    'SMB',
    u16le(64),
    u16le(0),
    u32le(0), // ProtocolId, StructureSize, CreditCharge, Status
    u16le(0x0000),
    u16le(1),
    u32le(0),
    u32le(0), // Command NEGOTIATE, CreditRequest, Flags, NextCommand
    u32le(0),
    u32le(0),
    u32le(0xfeff),
    u32le(0), // MessageId (8), Reserved/ProcessId, TreeId
    zeros(8),
    zeros(16), // SessionId, Signature
  );
  expect(header.length).toBe(64);
  const dialects = [0x0202, 0x0210, 0x0300, 0x0302, 0x0311];
  const body = cat(
    u16le(36),
    u16le(dialects.length),
    u16le(0x0001),
    u16le(0),
    u32le(0x7f), // SecurityMode signing enabled, Capabilities
    [0x8a, 0x3c, 0x11, 0x52, 0x90, 0x4e, 0x1f, 0x4b, 0xa1, 0x2c, 0x00, 0x0c, 0x29, 0x5e, 0x7d, 0x01], // ClientGuid
    u32le(0),
    u16le(0),
    u16le(0), // NegotiateContextOffset/Count/Reserved2
    ...dialects.map(u16le),
  );
  const smb = cat(header, body);
  return cat([0x00], [(smb.length >> 16) & 0xff, (smb.length >> 8) & 0xff, smb.length & 0xff], smb);
}

/** SMB1 NEGOTIATE offering NT LM 0.12 and the SMB2 dialects (what Windows 7+ sends first). */
function smb1Negotiate(): Uint8Array {
  const dialects = cat('\x02NT LM 0.12\0', '\x02SMB 2.002\0', '\x02SMB 2.???\0');
  const smb = cat(
    [0xff],
    'SMB',
    [0x72],
    u32le(0),
    [0x18],
    u16le(0xc853), // command, status, flags, flags2
    u16le(0),
    zeros(8),
    u16le(0),
    u16le(0xffff),
    u16le(0xfeff),
    u16le(0),
    u16le(0), // PIDHigh, sig, reserved, TID, PID, UID, MID
    [0],
    u16le(dialects.length),
    dialects, // WordCount 0, ByteCount
  );
  return cat([0x00, 0x00], u16be(smb.length), smb);
}

/** TDS PRELOGIN: header + VERSION, ENCRYPTION, INSTOPT, THREADID, MARS options + terminator. */
function tdsPrelogin(): Uint8Array {
  const data: [number, number[]][] = [
    [0x00, [0x10, 0x00, 0x07, 0xd0, 0x00, 0x00]], // VERSION 16.0.2000, subbuild 0
    [0x01, [0x00]], // ENCRYPTION: ENCRYPT_OFF
    [0x02, [0x00]], // INSTOPT: "" (MSSQLServer)
    [0x03, u32be(0x1234)], // THREADID
    [0x04, [0x00]], // MARS off
  ];
  const tokensLen = data.length * 5 + 1;
  let off = tokensLen;
  const tokens: number[] = [];
  const payload: number[] = [];
  for (const [t, d] of data) {
    tokens.push(t, ...u16be(off), ...u16be(d.length));
    payload.push(...d);
    off += d.length;
  }
  tokens.push(0xff);
  const body = cat(tokens, payload);
  return cat([0x12, 0x01], u16be(8 + body.length), u16be(0), [0x00, 0x00], body); // type, EOM, len, SPID, PacketID, Window
}

/** BER TLV with a short or long definite length. */
function tlv(tag: number, content: Uint8Array): Uint8Array {
  const n = content.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return cat([tag], len, content);
}
/** LDAPMessage { messageID 1, bindRequest { version 3, name, simple password } } */
function ldapBind(): Uint8Array {
  const bind = tlv(0x60, cat(tlv(0x02, Uint8Array.from([3])), tlv(0x04, ascii('cn=admin,dc=example,dc=org')), tlv(0x80, ascii('s3cret!'))));
  return tlv(0x30, cat(tlv(0x02, Uint8Array.from([1])), bind));
}
/** StartTLS extended request (RFC 4511 §4.14.1). */
function ldapStartTls(): Uint8Array {
  return tlv(0x30, cat(tlv(0x02, Uint8Array.from([1])), tlv(0x77, tlv(0x80, ascii('1.3.6.1.4.1.1466.20037')))));
}
/** searchRequest with a long-form outer length (messageID 300 on two bytes). */
function ldapSearchLong(): Uint8Array {
  const filter = tlv(0x87, ascii('objectClass')); // present
  const attrs = tlv(0x30, cat(...Array.from({ length: 12 }, (_, i) => tlv(0x04, ascii(`attribute${i}`)))));
  const search = tlv(
    0x63,
    cat(
      tlv(0x04, ascii('dc=example,dc=org')),
      tlv(0x0a, Uint8Array.from([2])),
      tlv(0x0a, Uint8Array.from([0])),
      tlv(0x02, Uint8Array.from([0])),
      tlv(0x02, Uint8Array.from([0])),
      tlv(0x01, Uint8Array.from([0])),
      filter,
      attrs,
    ),
  );
  return tlv(0x30, cat(tlv(0x02, Uint8Array.from([0x01, 0x2c])), search));
}

const httpGet = ascii('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
const httpPost = ascii(
  'POST /api/v1/items?x=1 HTTP/1.0\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}',
);
const wsUpgrade = ascii(
  'GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n',
);

function mqttConnect(version: 3 | 4 | 5, clientId: string, extra = ''): Uint8Array {
  const name = version === 3 ? cat(u16be(6), 'MQIsdp') : cat(u16be(4), 'MQTT');
  const props = version === 5 ? [0x05, 0x11, ...u32be(120)] : []; // Session Expiry Interval 120 s
  const flags = extra ? 0xc2 : 0x02; // username+password, clean session
  const payload = cat(u16be(clientId.length), clientId, extra ? cat(u16be(extra.length), extra, u16be(6), 'secret') : []);
  const variable = cat(name, [version, flags], u16be(60), props, payload);
  const rl = variable.length;
  const varint = rl < 128 ? [rl] : [(rl & 0x7f) | 0x80, rl >> 7];
  return cat([0x10], varint, variable);
}

/** CoAP CON GET /temperature, message ID 0x7d34, token 0xa1b2c3d4. */
const coapGet = Uint8Array.from([0x44, 0x01, 0x7d, 0x34, 0xa1, 0xb2, 0xc3, 0xd4, 0xbb, ...ascii('temperature')]);

const samples: { name: string; bytes: Uint8Array; protocol: Protocol; transport?: 'udp' }[] = [
  { name: 'OpenSSH banner', bytes: sshBanner, protocol: 'ssh' },
  { name: 'SMB2 NEGOTIATE', bytes: smb2Negotiate(), protocol: 'smb' },
  { name: 'SMB1 NEGOTIATE offering SMB2', bytes: smb1Negotiate(), protocol: 'smb' },
  { name: 'PostgreSQL StartupMessage', bytes: pgStartup(), protocol: 'postgres' },
  { name: 'PostgreSQL SSLRequest', bytes: pgSslRequest, protocol: 'postgres' },
  { name: 'PostgreSQL GSSENCRequest', bytes: pgGssEncRequest, protocol: 'postgres' },
  { name: 'PostgreSQL CancelRequest', bytes: pgCancel, protocol: 'postgres' },
  { name: 'TDS PRELOGIN', bytes: tdsPrelogin(), protocol: 'tds' },
  { name: 'LDAP bindRequest', bytes: ldapBind(), protocol: 'ldap' },
  { name: 'LDAP StartTLS', bytes: ldapStartTls(), protocol: 'ldap' },
  { name: 'LDAP searchRequest (long length)', bytes: ldapSearchLong(), protocol: 'ldap' },
  { name: 'HTTP GET', bytes: httpGet, protocol: 'http' },
  { name: 'HTTP POST', bytes: httpPost, protocol: 'http' },
  { name: 'WebSocket upgrade', bytes: wsUpgrade, protocol: 'websocket' },
  { name: 'MQTT 3.1.1 CONNECT', bytes: mqttConnect(4, 'sensor-17'), protocol: 'mqtt' },
  { name: 'MQTT 5.0 CONNECT', bytes: mqttConnect(5, 'sensor-17'), protocol: 'mqtt' },
  { name: 'MQTT 3.1 CONNECT', bytes: mqttConnect(3, 'legacy'), protocol: 'mqtt' },
  { name: 'MQTT 3.1.1 CONNECT, 2-byte length', bytes: mqttConnect(4, 'c'.repeat(100), 'u'.repeat(60)), protocol: 'mqtt' },
  { name: 'CoAP CON GET', bytes: coapGet, protocol: 'coap', transport: 'udp' },
];

describe('recognise: realistic first bytes', () => {
  it('fixtures are what the specs say', () => {
    expect(ldapBind()[0]).toBe(0x30);
    expect(ldapSearchLong()[1]).toBe(0x81); // long-form length
    expect(mqttConnect(4, 'c'.repeat(100), 'u'.repeat(60))[1]! & 0x80).toBe(0x80); // 2-byte varint
    const t = tdsPrelogin();
    expect((t[2]! << 8) | t[3]!).toBe(t.length);
    const s = smb2Negotiate();
    expect((s[1]! << 16) | (s[2]! << 8) | s[3]!).toBe(s.length - 4);
  });

  for (const s of samples) {
    it(`${s.name} → ${s.protocol}`, () => {
      expect(recognise(s.bytes, undefined, s.transport ?? 'tcp')).toEqual({ protocol: s.protocol, complete: true });
    });
  }

  it('SSH from the server side (the server speaks first)', () => {
    expect(recognise(new Uint8Array(0), sshBanner)).toEqual({ protocol: 'ssh', complete: true });
    expect(recognise(new Uint8Array(0), ascii('SSH'))).toEqual({ protocol: 'unknown', complete: false });
    // RFC 4253 §4.2: other lines may precede the identification string.
    expect(recognise(new Uint8Array(0), ascii('Authorised users only\r\nSSH-2.0-OpenSSH_9.6\r\n'))).toEqual({
      protocol: 'ssh',
      complete: true,
    });
  });

  it('a server that speaks first with something else is unknown (all other profiles are client-first)', () => {
    expect(recognise(new Uint8Array(0), ascii('220 mail.example.com ESMTP Postfix\r\n'))).toEqual({ protocol: 'unknown', complete: true });
    expect(recognise(new Uint8Array(0))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(new Uint8Array(0), new Uint8Array(0))).toEqual({ protocol: 'unknown', complete: false });
    // The server's reply does not override what the client already said.
    expect(recognise(httpGet, ascii('HTTP/1.1 200 OK\r\n\r\n'))).toEqual({ protocol: 'http', complete: true });
  });

  it('WebSocket detection is case-insensitive and tolerates lists and versions', () => {
    expect(recognise(ascii('GET /ws HTTP/1.1\r\nhost: h\r\nUPGRADE:  WebSocket \r\n\r\n')).protocol).toBe('websocket');
    expect(recognise(ascii('GET /ws HTTP/1.1\nupgrade: foo/2, websocket\n\n')).protocol).toBe('websocket');
    expect(recognise(ascii('GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n')).protocol).toBe('http');
    // Decided as soon as the Upgrade line is complete, before the header block ends.
    expect(recognise(ascii('GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nHo'))).toEqual({ protocol: 'websocket', complete: true });
  });

  it('an HTTP header block longer than the prefix is decided from the headers seen', () => {
    const long = ascii(`GET /x HTTP/1.1\r\nHost: h\r\nCookie: ${'a'.repeat(600)}\r\n\r\n`);
    expect(recognise(long.subarray(0, RECOGNISE_MAX_BYTES - 1))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(long)).toEqual({ protocol: 'http', complete: true });
    const ws = ascii(`GET /x HTTP/1.1\r\nUpgrade: websocket\r\nCookie: ${'a'.repeat(600)}\r\n\r\n`);
    expect(recognise(ws)).toEqual({ protocol: 'websocket', complete: true });
    // A request line that never ends inside the prefix stays unrecognised.
    expect(recognise(ascii(`GET /${'a'.repeat(600)} HTTP/1.1\r\n\r\n`))).toEqual({ protocol: 'unknown', complete: true });
  });

  it('CoAP only over UDP, and TCP profiles never over UDP', () => {
    expect(recognise(coapGet, undefined, 'tcp').protocol).toBe('unknown');
    expect(recognise(pgSslRequest, undefined, 'udp')).toEqual({ protocol: 'unknown', complete: true });
    expect(recognise(ldapBind(), undefined, 'udp')).toEqual({ protocol: 'unknown', complete: true });
    // The CoAP rule is header-only (RFC 7252 §3), so text can look like CoAP: 'G' = ver 1, TKL 7 and 'E' = 2.05.
    expect(recognise(httpGet, undefined, 'udp').protocol).toBe('coap');
    // Empty CON (CoAP ping) and a 2.05 Content piggybacked ACK.
    expect(recognise(Uint8Array.from([0x40, 0x00, 0x12, 0x34]), undefined, 'udp').protocol).toBe('coap');
    expect(recognise(Uint8Array.from([0x61, 0x45, 0x7d, 0x34, 0xa1, 0xff, ...ascii('22.5')]), undefined, 'udp').protocol).toBe('coap');
  });
});

describe('recognise: incremental feeding', () => {
  for (const s of samples) {
    it(`${s.name}: every prefix is undecided or the same answer, and stays decided`, () => {
      let decidedAt = -1;
      for (let k = 0; k <= s.bytes.length; k++) {
        const r = recognise(s.bytes.subarray(0, k), undefined, s.transport ?? 'tcp');
        if (decidedAt >= 0) expect(r, `prefix ${k}`).toEqual({ protocol: s.protocol, complete: true });
        else if (r.complete) {
          expect(r.protocol, `prefix ${k}`).toBe(s.protocol);
          decidedAt = k;
        } else expect(r.protocol).toBe('unknown');
      }
      expect(decidedAt).toBeGreaterThan(0);
    });
  }

  it('a few bytes are not enough to decide', () => {
    expect(recognise(ascii('GE'))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(ascii('P'))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(ascii('SSH'))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(Uint8Array.from([0x00, 0x00, 0x00]))).toEqual({ protocol: 'unknown', complete: false });
    expect(recognise(ascii('GET / HTTP/1.1\r\nHost: x\r\n'))).toEqual({ protocol: 'unknown', complete: false });
  });

  it('the answer does not change when the rest of the stream follows', () => {
    fc.assert(
      fc.property(fc.constantFrom(...samples), fc.uint8Array({ maxLength: 64 }), (s, tail) => {
        expect(recognise(cat(s.bytes, tail), undefined, s.transport ?? 'tcp')).toEqual({ protocol: s.protocol, complete: true });
      }),
    );
  });
});

describe('recognise: negative cases', () => {
  const unknown = { protocol: 'unknown', complete: true };

  it('random bytes', () => {
    let x = 0x2545f491;
    const rnd = Uint8Array.from({ length: 256 }, () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x & 0xff;
    });
    expect(recognise(rnd)).toEqual(unknown);
    expect(recognise(rnd, rnd)).toEqual(unknown);
    expect(recognise(ascii('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'))).toEqual(unknown); // TLS ClientHello
  });

  it('HTTP look-alikes', () => {
    expect(recognise(ascii('GETX'))).toEqual(unknown);
    expect(recognise(ascii('get / HTTP/1.1\r\n\r\n'))).toEqual(unknown); // methods are case-sensitive
    expect(recognise(ascii('GET  / HTTP/1.1\r\n\r\n'))).toEqual(unknown); // empty target
    expect(recognise(ascii('GET / HTTP/2.0\r\n\r\n'))).toEqual(unknown);
    expect(recognise(ascii('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))).toEqual(unknown); // h2 prior knowledge
    expect(recognise(ascii('GET / HTTP/1.1 \r\n'))).toEqual(unknown);
    expect(recognise(ascii('GET /a\r\nb HTTP/1.1\r\n'))).toEqual(unknown);
    expect(recognise(ascii('SSX-2.0'))).toEqual(unknown);
  });

  it('LDAP look-alikes', () => {
    expect(recognise(Uint8Array.from([0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00]))).toEqual(
      unknown,
    ); // bindResponse
    expect(recognise(Uint8Array.from([0x30, 0x03, 0x04, 0x01, 0x00]))).toEqual(unknown); // no messageID
    expect(recognise(Uint8Array.from([0x30, 0x80, 0x02, 0x01, 0x01, 0x60]))).toEqual(unknown); // indefinite length
    expect(recognise(Uint8Array.from([0x30, 0x85, 1, 2, 3, 4, 5]))).toEqual(unknown); // 5 length octets
    expect(recognise(Uint8Array.from([0x30, 0x05, 0x02, 0x01, 0x01, 0x60, 0x07]))).toEqual(unknown); // op longer than message
    expect(recognise(Uint8Array.from([0x30, 0x05, 0x02, 0x01, 0x81, 0x42, 0x00]))).toEqual(unknown); // negative messageID
    expect(recognise(Uint8Array.from([0x30, 0x05, 0x02, 0x01, 0x02, 0x42, 0x00])).protocol).toBe('ldap'); // unbind
  });

  it('truncated or impossible lengths', () => {
    expect(recognise(cat(u32be(4), u32be(196608)))).toEqual(unknown); // StartupMessage shorter than its header
    expect(recognise(cat(u32be(16), u32be(80877103)))).toEqual(unknown); // SSLRequest is exactly 8 bytes
    expect(recognise(cat(u32be(8), u32be(0x00020000)))).toEqual(unknown); // protocol 2.0
    expect(recognise(Uint8Array.from([0x12, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0]))).toEqual(unknown); // TDS length < 8
    expect(recognise(Uint8Array.from([0x12, 0x80, 0x00, 0x40, 0, 0, 1, 0, 0]))).toEqual(unknown); // undefined status bit
    expect(recognise(cat([0x00, 0x00, 0x00, 0x10, 0xfe], 'SMB', u16le(64)))).toEqual(unknown); // NetBIOS length < SMB2 header
    expect(recognise(cat([0x00, 0x00, 0x00, 0x80, 0xfd], 'SMB', u16le(64)))).toEqual(unknown); // transform header first
    expect(recognise(Uint8Array.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x04]))).toEqual(unknown); // 5-byte varint
    expect(recognise(cat([0x10, 0x04], u16be(4), 'MQTT', [4, 2, 0, 60]))).toEqual(unknown); // remaining length too small
    expect(recognise(cat([0x10, 0x10], u16be(4), 'MQTT', [3, 2, 0, 60, 0, 2, 0x61, 0x62]))).toEqual(unknown); // MQTT level 3
    expect(recognise(cat([0x10, 0x10], u16be(4), 'MQTX'))).toEqual(unknown);
  });

  it('CoAP look-alikes', () => {
    expect(recognise(Uint8Array.from([0x84, 0x01, 0, 1, 1, 2, 3, 4]), undefined, 'udp')).toEqual(unknown); // version 2
    expect(recognise(Uint8Array.from([0x49, 0x01, 0, 1, ...zeros(9)]), undefined, 'udp')).toEqual(unknown); // TKL 9
    expect(recognise(Uint8Array.from([0x40, 0x21, 0, 1]), undefined, 'udp')).toEqual(unknown); // class 1
    expect(recognise(Uint8Array.from([0x60, 0x01, 0, 1]), undefined, 'udp')).toEqual(unknown); // request in an ACK
    expect(recognise(Uint8Array.from([0x71, 0x00, 0, 1, 9]), undefined, 'udp')).toEqual(unknown); // RST with a token
    expect(recognise(Uint8Array.from([0x44, 0x01, 0, 1, 1]), undefined, 'udp')).toEqual({ protocol: 'unknown', complete: false }); // short token
  });
});

describe('recognise: properties', () => {
  const transport = fc.constantFrom<'tcp' | 'udp'>('tcp', 'udp');

  it('never throws and always answers a known protocol', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 700 }),
        fc.option(fc.uint8Array({ maxLength: 700 }), { nil: undefined }),
        transport,
        (c, s, t) => {
          const r = recognise(c, s, t);
          expect(PROTOCOLS).toContain(r.protocol);
          expect(typeof r.complete).toBe('boolean');
          if (!r.complete) expect(r.protocol).toBe('unknown');
          if (c.length >= RECOGNISE_MAX_BYTES) expect(r.complete).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('is prefix-monotone on arbitrary bytes (complete answers never change)', () => {
    // Bias towards interesting first bytes so the matchers get past their first checks.
    const lead = fc.constantFrom(
      [],
      [0x00],
      [0x00, 0x00, 0x00],
      [0x10],
      [0x12, 0x01],
      [0x01],
      [0x30],
      [0x30, 0x81],
      [0x40],
      [0x44, 0x01],
      [...ascii('GET / HTTP/1.1\r\n')],
      [...ascii('SSH-')],
      [...ascii('P')],
      [0x00, 0x00, 0x00, 0x08, 0x04, 0xd2],
    );
    fc.assert(
      fc.property(lead, fc.uint8Array({ maxLength: 80 }), transport, (l, rest, t) => {
        const b = cat(l, rest);
        let decided: { protocol: Protocol; complete: boolean } | undefined;
        for (let k = 0; k <= b.length; k++) {
          const r = recognise(b.subarray(0, k), undefined, t);
          if (decided) expect(r).toEqual(decided);
          else if (r.complete) decided = r;
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('survives odd inputs', () => {
    const buf = new Uint8Array(1024).fill(0x30);
    expect(() => recognise(buf.subarray(3, 900), buf.subarray(0, 2))).not.toThrow();
    expect(recognise(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toEqual({ protocol: 'http', complete: true });
    expect(recognise(null as unknown as Uint8Array)).toEqual({ protocol: 'unknown', complete: true });
  });
});

describe('ProtocolStats', () => {
  it('counts per protocol and serialises only protocols seen', () => {
    const s = new ProtocolStats();
    expect(s.toJSON()).toEqual({});
    s.connection('ssh');
    s.connection('ssh');
    s.bytes('ssh', 100, 2000);
    s.bytes('ssh', 5, 0);
    s.outage('ssh');
    s.connection('http');
    s.bytes('unknown', 0, 7);
    expect(s.toJSON()).toEqual({
      ssh: { connections: 2, bytesUp: 105, bytesDown: 2000, outages: 1 },
      http: { connections: 1, bytesUp: 0, bytesDown: 0, outages: 0 },
      unknown: { connections: 0, bytesUp: 0, bytesDown: 7, outages: 0 },
    });
    expect(Object.keys(s.toJSON())).toEqual(['ssh', 'http', 'unknown']); // PROTOCOLS order
    expect(JSON.parse(JSON.stringify({ protocols: s }))).toEqual({ protocols: s.toJSON() });
    expect(s.get('mqtt')).toEqual({ connections: 0, bytesUp: 0, bytesDown: 0, outages: 0 });
    // toJSON returns copies.
    const j = s.toJSON();
    j.ssh!.connections = 99;
    expect(s.get('ssh').connections).toBe(2);
  });

  it('rejects invalid byte counts', () => {
    const s = new ProtocolStats();
    expect(() => s.bytes('ssh', -1, 0)).toThrow(RangeError);
    expect(() => s.bytes('ssh', 0, Number.NaN)).toThrow(RangeError);
    expect(s.toJSON()).toEqual({});
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, ConfigError } from '../drivers/daemon/config.js';
import { readPrivateKey, writePrivateKey, encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-cfg-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const write = (text: string): string => {
  const p = join(tmp(), 'spookd.conf');
  writeFileSync(p, text);
  return p;
};

// The configuration file: validated by schema, errors name the file and the field.
describe('spookd configuration', () => {
  it('the documented example parses, with defaults filled in', () => {
    const c = loadConfig(new URL('../docs/spookd.conf.example', import.meta.url).pathname);
    expect(c.peers[0].name).toBe('db-2');
    expect(c.registers[1]).toMatchObject({ name: 'journal', kind: 'stream', policy: 'freeze', maxPending: 1024 });
    expect(c.fsync).toBe('always');
  });

  it('a peer key is trimmed once, at load: a quoted key with spaces is the same key (a reload compares keys as text)', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const c = loadConfig(
      write(
        `listen: 127.0.0.1:1\nprivateKeyFile: /k\ndataDir: /d\nadminSocket: /s\nregisters: [{ name: r, kind: map }]\npeers:\n  - { name: p, publicKey: "  ${key} ", endpoint: 127.0.0.1:2 }\n`,
      ),
    );
    expect(c.peers[0].publicKey).toBe(key);
  });

  it('errors name the file, the field and the problem; several at once', () => {
    const p = write(
      `listen: nowhere\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: nope\nregisters:\n  - name: r\n    kind: list\n`,
    );
    let err: unknown;
    try {
      loadConfig(p);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain(`${p}: listen: must be HOST:PORT`);
    expect(msg).toContain(`${p}: peers.0.publicKey: not a base64 X25519 public key`);
    expect(msg).toContain(`${p}: registers.0.kind:`);
  });

  it('unknown fields, duplicates and bad YAML are refused', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const base = `listen: 127.0.0.1:1\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: ${key}\n`;
    expect(() => loadConfig(write(`${base}registers:\n  - name: r\n    kind: map\n  - name: r\n    kind: map\n`))).toThrow(
      /registers\.1: duplicate "r"/,
    );
    expect(() => loadConfig(write(`${base}registers:\n  - name: r\n    kind: map\nbogus: 1\n`))).toThrow(/Unrecognized key.*bogus/);
    expect(() => loadConfig(write('listen: [unclosed'))).toThrow(/not valid YAML/);
    // Names that would make a peer's or a register's directory another one's.
    for (const name of ['.', '..', 'domains', 'xdp-attached.json'])
      expect(() =>
        loadConfig(write(base.replace('name: x', `name: ${JSON.stringify(name)}`) + `registers:\n  - name: r\n    kind: map\n`)),
      ).toThrow(/peers\.0\.name: not one of "\.", "\.\.", "domains"/);
    for (const name of ['.', '..'])
      expect(() => loadConfig(write(`${base}registers:\n  - name: ${JSON.stringify(name)}\n    kind: map\n`))).toThrow(
        /registers\.0\.name: "\." and "\.\." are not register names/,
      );
    expect(() => loadConfig('/nonexistent/spookd.conf')).toThrow(/cannot read \(ENOENT\)/);
  });

  it('xdp: handshake rate and burst are u32 (2^32 would wrap to 0); above 1,000,000 they load, and the fast path uses 1,000,000', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const base = `listen: 127.0.0.1:1\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: ${key}\nregisters:\n  - name: r\n    kind: map\n`;
    const xdp = (rate: number, burst: number): string =>
      `${base}xdp:\n  interface: eth0\n  handshakeRate: ${rate}\n  handshakeBurst: ${burst}\n`;
    expect(loadConfig(write(xdp(1_000_000, 1_000_000))).xdp).toMatchObject({ handshakeRate: 1_000_000, handshakeBurst: 1_000_000 });
    expect(() => loadConfig(write(xdp(2 ** 32, 40)))).toThrow(/xdp\.handshakeRate: .*4294967295/);
    expect(() => loadConfig(write(xdp(20, 2 ** 32)))).toThrow(/xdp\.handshakeBurst: .*4294967295/);
    expect(loadConfig(write(xdp(20, 1_000_001))).xdp).toMatchObject({ handshakeBurst: 1_000_001 });
  });

  it('wrap: protocols, peers by name or key, durations, hold bounds, one wrapper per transport and port', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const base = `listen: 127.0.0.1:1\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: ${key}\nregisters:\n  - name: r\n    kind: map\n`;
    const w = (items: string): string => write(`${base}wrap:\n  wrappers:\n${items}`);
    const c = loadConfig(
      w(
        `    - { protocol: ssh, port: 22, peer: x, hold: 2m, whenDown: refuse, connectTimeout: 10s }\n    - { protocol: postgres, port: 5432, peer: "${key}" }\n`,
      ),
    );
    expect(c.wrap.wrappers).toEqual([
      { protocol: 'ssh', port: 22, peer: 'x', hold: 120_000, delta: false, whenDown: 'refuse', connectTimeout: 10_000 },
      // No hold, no connect timeout: spookd gives them the host's TCP and SYN patience (drivers/wrap/hold.ts).
      { protocol: 'postgres', port: 5432, peer: key, hold: undefined, delta: false, whenDown: 'hold', connectTimeout: undefined },
    ]);
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: x, whenDown: maybe }\n`))).toThrow(/wrap\.wrappers\.0\.whenDown/);
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: x, connectTimeout: 2h }\n`))).toThrow(
      /wrap\.wrappers\.0\.connectTimeout: must be between 100ms and 1h/,
    );
    expect(c.wrap).toMatchObject({ intercept: '127.0.0.1:0', interception: 'auto', windowBytes: 4 * 1024 * 1024 });
    expect(() => loadConfig(w(`    - { protocol: gopher, port: 70, peer: x }\n`))).toThrow(/wrap\.wrappers\.0\.protocol/);
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: nobody }\n`))).toThrow(
      /wrap\.wrappers\.0\.peer: no peer named or keyed "nobody"/,
    );
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: x, hold: soon }\n`))).toThrow(
      /wrap\.wrappers\.0\.hold: must be a duration/,
    );
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: x, hold: 0 }\n`))).toThrow(/hold: must be between 100ms and 24h/);
    expect(() => loadConfig(w(`    - { protocol: ssh, port: 22, peer: x }\n    - { protocol: tcp, port: 22, peer: x }\n`))).toThrow(
      /wrap\.wrappers\.1: duplicate "tcp\/22"/,
    );
    expect(() => loadConfig(w(`    - { protocol: udp, port: 53, peer: x }\n    - { protocol: coap, port: 53, peer: x }\n`))).toThrow(
      /wrap\.wrappers\.1: duplicate "udp\/53"/,
    );
    // One port, both transports (DNS): two wrappers.
    const dns = loadConfig(w(`    - { protocol: udp, port: 53, peer: x }\n    - { protocol: tcp, port: 53, peer: x }\n`));
    expect(dns.wrap.wrappers.map((x) => `${x.protocol}/${x.port}`)).toEqual(['udp/53', 'tcp/53']);
  });

  it('domains: members must be peers, group registers must be domain registers, heartbeat well under the election timeout', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const base = `listen: 127.0.0.1:1\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: ${key}\nregisters:\n  - name: r\n    kind: map\n`;
    const ok = loadConfig(
      write(
        `${base}domains:\n  - name: main\n    members: [x]\n    registers: [{ name: kv, kind: map }]\n    groups: [{ name: g, registers: [kv] }]\n`,
      ),
    );
    expect(ok.domains[0]).toMatchObject({ policy: 'buffer', maxPending: 1024, electionMs: 1000, heartbeatMs: 100, join: false });
    const bad = `${base}domains:\n  - name: main\n    members: [x, y]\n    registers: [{ name: kv, kind: map }]\n    groups: [{ name: g, registers: [kv, nope] }]\n    heartbeatMs: 500\n`;
    let msg = '';
    try {
      loadConfig(write(bad));
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/domains\.0\.members\.1: no peer named "y"/);
    expect(msg).toMatch(/domains\.0\.groups\.0\.registers\.1: no register named "nope" in domain main/);
    expect(msg).toMatch(/domains\.0\.heartbeatMs: must be at most a third of electionMs/);
    expect(() =>
      loadConfig(write(`${base}domains:\n  - name: ".."\n    members: [x]\n    registers: [{ name: kv, kind: map }]\n`)),
    ).toThrow(/domains\.0\.name: "\." and "\.\." are not domain names/);
  });
});

describe('host keys', () => {
  it('keygen writes a 0600 private key and refuses to overwrite; pubkey derives the same public key', () => {
    const p = join(tmp(), 'key');
    const kp = writePrivateKey(p);
    expect(statSync(p).mode & 0o777).toBe(0o600);
    expect(readPrivateKey(p).publicKey).toEqual(kp.publicKey);
    expect(() => writePrivateKey(p)).toThrow(/EEXIST/);
    expect(readFileSync(p, 'utf8').trim()).toBe(encodeKey(kp.privateKey));
  });

  it('a key readable by others, or not a key, is refused with the reason', () => {
    const d = tmp();
    const p = join(d, 'key');
    writeFileSync(p, `${encodeKey(generateKeyPair().privateKey)}\n`, { mode: 0o644 });
    expect(() => readPrivateKey(p)).toThrow(/readable by group or others \(mode 644\)/);
    const q = join(d, 'bad');
    writeFileSync(q, 'hello\n', { mode: 0o600 });
    expect(() => readPrivateKey(q)).toThrow(/not a base64 X25519 key/);
  });
});

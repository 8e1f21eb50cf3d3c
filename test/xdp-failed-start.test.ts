import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { FastPath } from '../drivers/daemon/fastpath.js';
import { XDP_FLAGS_SKB_MODE, libbpf } from '../drivers/bpf/libbpf.js';
import { udpPacket } from '../testing/packet.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';

/**
 * Review 39d, finding 3: FastPath.start attaches the program, then writes <dataDir>/xdp-attached.json.
 * If anything after the attach throws (the record write: ENOSPC, EROFS, EDQUOT, EIO; here: EISDIR), the
 * catch sets `prog = undefined` and logs "spookd runs without it and validates frames itself", but the
 * program stays attached with enforce_pairs = 1 and an empty pair table that no one will ever fill
 * (addPair goes to `this.prog?`), stop() cannot detach it, and no record lets the next start remove it:
 * every honest Data frame on that interface is dropped as unknown-pair, until someone runs
 * `ip link set dev IF xdp off`.
 */
const IF = 'r39d-y0';
const PORT = 51913;
const PAIR = 0x01020304;
let ifindex = 0;
let dataDir = '';

const attachedId = (): number => {
  const id = [0];
  libbpf().xdpQueryId(ifindex, XDP_FLAGS_SKB_MODE, id);
  return id[0];
};

beforeAll(() => {
  execFileSync('ip', ['link', 'add', IF, 'type', 'veth', 'peer', 'name', 'r39d-y1']);
  ifindex = Number(readFileSync(`/sys/class/net/${IF}/ifindex`, 'utf8').trim());
  dataDir = mkdtempSync(join(tmpdir(), 'r39d-'));
});
afterAll(() => {
  libbpf().xdpDetach(ifindex, XDP_FLAGS_SKB_MODE, null);
  execFileSync('ip', ['link', 'del', IF]);
  rmSync(dataDir, { recursive: true, force: true });
});

describe('a start that fails after the attach', () => {
  it('leaves no program attached when it reports that spookd runs without the fast path', () => {
    // The attachment record cannot be written (a directory in its place stands in for a full or read-only disk).
    mkdirSync(join(dataDir, 'xdp-attached.json'));
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
    const cfg = {
      dataDir,
      // The pin directory's parent does not exist: pinning fails and is logged (no bpffs mounted by the test).
      xdp: { interface: IF, mode: 'generic', handshakeRate: 20, handshakeBurst: 40, pinDir: '/nonexistent-r39d/spook' },
    } as never;
    const fp = new FastPath(cfg, log);
    fp.start(PORT);
    const st = fp.status();
    expect(st.enabled).toBe(false);
    expect(st.error).toMatch(/EISDIR/);
    expect(lines.join('')).toMatch(/spookd runs without it and validates frames itself/);
    fp.addPair(PAIR); // the session the daemon now accepts frames for
    const id = attachedId();
    if (id !== 0) {
      // Show what the orphan does to an honest Data frame of that session: dropped (XDP_DROP = 1).
      const f = join(dataDir, 'pkt');
      writeFileSync(
        f,
        udpPacket(encodeFrame({ type: FrameType.Data, flags: 0, pairId: PAIR, packetNumber: 1 }, new Uint8Array(64)), { dstPort: PORT }),
      );
      const out = execFileSync('bpftool', ['prog', 'run', 'id', String(id), 'data_in', f], { encoding: 'utf8' });
      console.log(`orphan program ${id}: ${out.trim()}`);
    }
    fp.stop();
    // Currently: still attached (id > 0) after the "unavailable" warning and after stop().
    expect(id).toBe(0);
    expect(attachedId()).toBe(0);
  });
});

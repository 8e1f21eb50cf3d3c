/**
 * spookd's side of the XDP fast path: load and attach when configured, keep the pair
 * table in step with ETCP sessions, detach on shutdown. Where the kernel (or the host)
 * refuses BPF, the daemon runs without it and says so once, clearly.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { replaceFile } from '../store/store.js';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { MAP_NAMES, XdpProgram, type DetachResult, type XdpMode } from '../bpf/xdp.js';
import type { SpookdConfig } from './config.js';
import { XDP_HANDSHAKE_MAX } from '../../wire/layouts.js';
import type { XdpStatusResult } from '../../client/protocol.js';

/** `spook xdp status`: the admin protocol's shape, with the mode as the driver knows it. */
export type FastPathStatus = XdpStatusResult & { mode: XdpMode | null };

export class FastPath {
  private prog: XdpProgram | undefined;
  private error: string | null = null;
  private pinned = false;

  constructor(
    private readonly cfg: SpookdConfig,
    private readonly log: Logger,
  ) {}

  /** Where an attachment is recorded while it lasts: a run killed before `stop` leaves it behind. */
  private get recordFile(): string {
    return join(this.cfg.dataDir, 'xdp-attached.json');
  }

  /**
   * Write the attachment record atomically (a temporary file renamed over it): a kill mid-write
   * leaves the previous record whole, never one cut short that the next start cannot read.
   */
  private writeRecord(rec: { ifname: string; flags?: number; programId: number; pinDir?: string }): void {
    mkdirSync(this.cfg.dataDir, { recursive: true, mode: 0o700 });
    replaceFile(this.recordFile, JSON.stringify({ ...rec, pid: process.pid }) + '\n');
  }

  /**
   * Undo what a previous run left when it was killed (kill -9, OOM, power) or could not detach:
   * its XDP program still attached, with a pair table this run knows nothing of (so new
   * sessions' frames would drop as unknown-pair), and its map pins. Runs at every start, with or
   * without `xdp:`. A record whose program cannot be detached is kept, for the next start.
   */
  private removeStale(): void {
    let rec: { ifname: string; flags?: number; programId: number; pinDir?: string; pid?: number };
    try {
      rec = JSON.parse(readFileSync(this.recordFile, 'utf8'));
    } catch {
      return; // none: the previous run stopped cleanly (or never attached)
    }
    let keep = false;
    try {
      const r = XdpProgram.detachStale(rec);
      this.log.warn(
        { interface: rec.ifname, programId: rec.programId, previousPid: rec.pid, result: r },
        r === 'detached'
          ? 'removed the XDP program a previous run left attached'
          : 'stale XDP record: the previous program is no longer attached',
      );
    } catch (e) {
      keep = true;
      this.log.error(
        { interface: rec.ifname, error: (e as Error).message },
        'cannot remove the XDP program a previous run left attached; remove it with `ip link set dev IFACE xdp off`',
      );
    }
    if (rec.pinDir) for (const name of MAP_NAMES) rmSync(join(rec.pinDir, name), { force: true });
    if (!keep) rmSync(this.recordFile, { force: true });
  }

  /** A handshake limit as the program takes it: at most XDP_HANDSHAKE_MAX (its refill stays exact), with a warning above. */
  private limit(x: NonNullable<SpookdConfig['xdp']>, field: 'handshakeRate' | 'handshakeBurst'): number {
    if (x[field] <= XDP_HANDSHAKE_MAX) return x[field];
    this.log.warn(
      { field: `xdp.${field}`, configured: x[field], used: XDP_HANDSHAKE_MAX },
      `xdp.${field} above ${XDP_HANDSHAKE_MAX}: ${XDP_HANDSHAKE_MAX} used`,
    );
    return XDP_HANDSHAKE_MAX;
  }

  start(port: number): void {
    try {
      this.removeStale();
    } catch (e) {
      this.log.warn({ error: (e as Error).message }, 'cannot check for an XDP program left by a previous run');
    }
    const x = this.cfg.xdp;
    if (!x) {
      this.log.warn('XDP fast path not configured (no `xdp:` section): frames are validated in the daemon only');
      return;
    }
    let prog: XdpProgram | undefined;
    try {
      prog = XdpProgram.load();
      prog.configure({
        port,
        enforcePairs: true,
        handshakeRate: this.limit(x, 'handshakeRate'),
        handshakeBurst: this.limit(x, 'handshakeBurst'),
      });
      // The record first, as an intent (no mode yet): a run killed after the attach, before the
      // record below, leaves a program the next start can still find and remove.
      this.writeRecord({ ifname: x.interface, programId: prog.id, pinDir: x.pinDir });
      const mode = prog.attach(x.interface, x.mode);
      this.prog = prog;
      const a = prog.attachment;
      if (prog.replacedLeftover !== undefined)
        this.log.warn(
          { interface: x.interface, programId: prog.replacedLeftover },
          'replaced the XDP program a previous run of spookd left attached',
        );
      if (mode === 'generic' && x.mode === 'auto')
        this.log.warn({ interface: x.interface }, 'XDP attached in generic (skb) mode: the driver refused native mode');
      else this.log.info({ interface: x.interface, mode, programId: a?.programId }, `XDP attached in ${mode} mode`);
      this.pin(x.pinDir);
      const rec = prog.attachRecord;
      if (rec) this.writeRecord({ ...rec, pinDir: this.pinned ? x.pinDir : undefined });
    } catch (e) {
      this.error = (e as Error).message;
      this.prog = undefined;
      if (prog) this.release(prog, x.interface, 'after a failed start');
      this.log.warn({ error: this.error }, 'XDP fast path unavailable; spookd runs without it and validates frames itself');
    }
  }

  /**
   * Detach and close `prog` (a failed start's, or at stop). A program left attached would
   * filter with a pair table no one fills (every new session's Data frame dropped as
   * unknown-pair), even after spookd exits: if the detach fails it is made to pass everything
   * (port 0) and the record is kept, so the next start removes it.
   */
  private release(prog: XdpProgram, ifname: string, when: string): DetachResult | undefined {
    let r: DetachResult | undefined = 'failed';
    try {
      r = prog.detach();
      if (r === 'failed') {
        prog.configure({ port: 0, enforcePairs: false, handshakeRate: 1, handshakeBurst: 1 });
        this.log.warn(
          { interface: ifname, result: r },
          `cannot detach the XDP program ${when}; it passes everything now, and the next start removes it (or \`ip link set dev IFACE xdp off\`)`,
        );
      }
    } catch (e) {
      this.log.error(
        { interface: ifname, error: (e as Error).message },
        `cannot detach the XDP program ${when}; remove it with \`ip link set dev IFACE xdp off\``,
      );
    }
    try {
      prog.close(); // removes the pins too
    } catch {
      /* the object is gone either way */
    }
    this.pinned = false;
    if (r !== 'failed')
      try {
        rmSync(this.recordFile, { force: true });
      } catch {
        /* not a file (nothing to remove) */
      }
    return r;
  }

  /** Pin the maps; where the pin directory's parent is not a bpffs (e.g. inside `ip netns exec`), mount one first. */
  private pin(dir: string): void {
    if (!this.prog) return;
    const parent = dirname(dir);
    try {
      const mounted = readFileSync('/proc/self/mounts', 'utf8')
        .split('\n')
        .some((l) => {
          const f = l.split(' ');
          return f[1] === parent && f[2] === 'bpf';
        });
      if (!mounted) execFileSync('mount', ['-t', 'bpf', 'bpf', parent], { stdio: 'ignore' });
      this.prog.pin(dir);
      this.pinned = true;
    } catch (e) {
      this.log.warn(
        { pinDir: dir, error: (e as Error).message },
        'XDP maps not pinned: `spook maps dump` will not see them (the fast path still runs)',
      );
    }
  }

  addPair(localIndex: number): void {
    try {
      this.prog?.addPair(localIndex);
    } catch (e) {
      this.log.error({ localIndex, error: (e as Error).message }, 'cannot add a pair to the XDP pair table');
    }
  }

  removePair(localIndex: number): void {
    this.prog?.removePair(localIndex);
  }

  status(): FastPathStatus {
    const a = this.prog?.attachment;
    return {
      enabled: !!this.prog,
      interface: a?.ifname ?? this.cfg.xdp?.interface ?? null,
      mode: a?.mode ?? null,
      programId: a?.programId ?? null,
      attachedAt: a ? a.at : null,
      pinDir: this.pinned ? (this.cfg.xdp?.pinDir ?? null) : null,
      pinned: this.pinned,
      error: this.error,
      counters: this.prog ? this.prog.counters() : null,
      pairs: this.prog ? this.prog.pairStats() : [],
    };
  }

  stop(): void {
    if (!this.prog) return;
    const prog = this.prog;
    this.prog = undefined;
    const r = this.release(prog, prog.attachment?.ifname ?? this.cfg.xdp?.interface ?? '', 'at stop');
    if (r === 'detached' || r === undefined) this.log.info('XDP detached');
    else if (r === 'replaced')
      this.log.warn(
        { result: r },
        'XDP program no longer attached at stop (replaced or removed by someone else): left what is there alone',
      );
    else if (r === 'interface-gone') this.log.warn({ result: r }, 'XDP program not detached at stop: the interface is gone');
  }
}

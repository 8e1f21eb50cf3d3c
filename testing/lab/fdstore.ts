/**
 * The lab's service manager: what systemd does for a `systemctl restart` of a Type=notify unit
 * with FileDescriptorStoreMax= set, without systemd (PID 1 here is not). It listens on a unix
 * datagram socket given to spookd as NOTIFY_SOCKET (with FDSTORE, as systemd ≥ 254 sets it),
 * keeps the descriptors of FDSTORE=1 messages by FDNAME until FDSTOREREMOVE=1 names them, counts
 * READY=1, and restart() stops spookd (SIGTERM), then starts it again with the stored
 * descriptors at 3.., LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, as sd_listen_fds expects.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bindNotifySocket, closeFd, recvFds } from '../../drivers/wrap/fdstore.js';
import type { Lab } from './netns.js';

export class LabServiceManager {
  readonly path: string;
  private readonly dir: string;
  private readonly sock: number;
  private readonly timer: NodeJS.Timeout;
  /** The store: descriptor by FDNAME. */
  readonly stored = new Map<string, number>();
  ready = 0;
  readonly messages: string[] = [];

  constructor(readonly maxFds = 4096) {
    this.dir = mkdtempSync(join(tmpdir(), 'spk-notify-'));
    this.path = join(this.dir, 'notify');
    this.sock = bindNotifySocket(this.path);
    this.timer = setInterval(() => this.poll(), 5);
  }

  /** Read every waiting notify message. */
  poll(): void {
    for (let m = recvFds(this.sock); m; m = recvFds(this.sock)) {
      this.messages.push(m.message);
      const kv = new Map(
        m.message
          .split('\n')
          .filter(Boolean)
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
      );
      if (kv.get('READY') === '1') this.ready++;
      const name = kv.get('FDNAME') ?? 'stored';
      if (kv.get('FDSTORE') === '1' && this.stored.size + m.fds.length <= this.maxFds) {
        for (const fd of m.fds) {
          const old = this.stored.get(name);
          if (old !== undefined) closeFd(old);
          this.stored.set(name, fd);
        }
      } else for (const fd of m.fds) closeFd(fd); // systemd closes what it does not store
      if (kv.get('FDSTOREREMOVE') === '1') {
        const fd = this.stored.get(name);
        if (fd !== undefined) closeFd(fd);
        this.stored.delete(name);
      }
    }
  }

  /** The environment of every start under this manager. */
  env(): Record<string, string> {
    return { NOTIFY_SOCKET: this.path, FDSTORE: String(this.maxFds) };
  }

  /** `systemctl restart`: SIGTERM, wait for the exit, start again with the store at 3... Resolves with the downtime. */
  async restart(lab: Lab, host: string): Promise<{ stoppedMs: number; downMs: number; handedOver: number }> {
    const t0 = Date.now();
    await lab.stop(host);
    const stoppedMs = Date.now() - t0;
    this.poll();
    const names = [...this.stored.keys()];
    const fds = names.map((n) => this.stored.get(n)!);
    await lab.start(host, {
      env: { ...this.env(), ...(fds.length ? { LISTEN_FDS: String(fds.length), LISTEN_FDNAMES: names.join(':') } : {}) },
      fds,
    });
    return { stoppedMs, downMs: Date.now() - t0, handedOver: names.filter((n) => n !== 'spook-wrap-state').length };
  }

  /** A full stop: the store is flushed (systemd closes every stored descriptor). */
  flush(): void {
    for (const fd of this.stored.values()) closeFd(fd);
    this.stored.clear();
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
    closeFd(this.sock);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A reload (SIGHUP), as `wg syncconf`: the configuration read again and its peers applied to the
 * running daemon, each added or removed without touching the others' pairs. What a reload cannot
 * change yet (everything but `peers`) is named, and needs a restart.
 */
import type { SpookdConfig } from './config.js';
import type { Spookd } from './spookd.js';

export interface ReloadReport {
  added: string[];
  removed: string[];
  /** Peers whose key changed: removed, then added under the new key. */
  rekeyed: string[];
  /** Peers whose endpoint changed: the next handshake goes there. */
  moved: string[];
  /** Top-level fields that differ and apply only at a restart. */
  needRestart: string[];
  /** Peers a reload could not change, with why (a domain or a wrapper names them, ...). */
  refused: { peer: string; reason: string }[];
}

type Peer = SpookdConfig['peers'][number];

/** Apply `next`'s peers to `d`, whose running configuration is `current`; returns what was done. */
export async function reloadPeers(d: Spookd, current: SpookdConfig, next: SpookdConfig): Promise<ReloadReport> {
  const r: ReloadReport = { added: [], removed: [], rekeyed: [], moved: [], needRestart: [], refused: [] };
  for (const k of Object.keys({ ...current, ...next }) as (keyof SpookdConfig)[])
    if (k !== 'peers' && JSON.stringify(current[k]) !== JSON.stringify(next[k])) r.needRestart.push(k);
  const was = new Map(current.peers.map((p) => [p.name, p]));
  const now = new Map(next.peers.map((p) => [p.name, p]));
  const attempt = async (peer: string, f: () => unknown): Promise<boolean> => {
    try {
      await f();
      return true;
    } catch (e) {
      r.refused.push({ peer, reason: (e as Error).message });
      return false;
    }
  };
  for (const [name] of was) if (!now.has(name) && (await attempt(name, () => d.removePeer(name)))) r.removed.push(name);
  for (const [name, p] of now) {
    const old: Peer | undefined = was.get(name);
    if (!old) {
      if (await attempt(name, () => d.addPeer(p))) r.added.push(name);
    } else if (old.publicKey !== p.publicKey) {
      if ((await attempt(name, () => d.removePeer(name))) && (await attempt(name, () => d.addPeer(p)))) r.rekeyed.push(name);
    } else if (old.endpoint !== p.endpoint) {
      d.moveEndpoint(name, p.endpoint);
      r.moved.push(name);
    }
  }
  return r;
}

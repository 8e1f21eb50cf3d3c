/**
 * Honest connects, the hooks' side (core/wrap/connect.ts decides; docs/OPERATIONS.md, "What a
 * client sees when it connects"): which TCP-wrapped ports' peers count as down and what their
 * connects do (wrap_down), and the destinations whose dial the far side saw fail (wrap_refusals).
 * Writes to the BPF maps only when something changed: applying is called on every timer tick.
 */
import type { Target } from '../../wire/wrap.js';

/** What the hooks offer for this (the BPF WrapHooks; a stand-in interceptor may have none). */
export interface ConnectHooks {
  setDown?(down: ReadonlyMap<number, 'direct' | 'refuse'>): void;
  rememberRefusal?(dst: Target, errno: number, ttlMs: number): void;
  forgetRefusal?(dst: Target): void;
}

/** `wrap-stats` `connects`: what the honest-connect machinery did. */
export interface ConnectCounts {
  /** TCP-wrapped ports whose peer counts as down, with a `direct` or `refuse` wrapper. */
  downPorts: number[];
  /** Connections reset because the far side had not confirmed them within the connect timeout. */
  timedOut: number;
  /** Refused or unreachable destinations remembered for the hook, and those remembered now. */
  refusalsRemembered: number;
  /** Writes to the hooks' maps that failed (the kernel refused the update): connects then behave as before it. */
  hookErrors: number;
  refusalsNow: number;
}

/** The text of the CLOSE a connect timeout sends (its first word names the errno, §16.5.1). */
export function connectTimeoutText(t: Target, ms: number): string {
  const at = t.family === 6 ? `[${t.address}]:${t.port}` : `${t.address}:${t.port}`;
  return `ETIMEDOUT ${at}: not connected within the wrapper's connect timeout (${Math.round(ms)} ms)`;
}

/** Destinations remembered at once on this side (the BPF map is an LRU of the same size). */
const MAX_REMEMBERED = 4_096;

export class HonestConnects {
  private downKey: string | undefined;
  private downPorts: number[] = [];
  /** Destinations remembered in the hook, and until when (a refusal is forgotten on a successful dial). */
  private readonly memo = new Map<string, number>();
  timedOut = 0;
  private remembered = 0;
  private hookErrors = 0;

  constructor(private readonly hooks: () => ConnectHooks | undefined) {}

  get counts(): ConnectCounts {
    return {
      downPorts: [...this.downPorts],
      timedOut: this.timedOut,
      refusalsRemembered: this.remembered,
      refusalsNow: this.memo.size,
      hookErrors: this.hookErrors,
    };
  }

  /** The ports whose connects go `direct` or are refused; written only when it differs from the last (or `force`). */
  setDown(down: ReadonlyMap<number, 'direct' | 'refuse'>, force = false): void {
    const key = [...down].map(([p, m]) => `${p}:${m}`).join(',');
    if (!force && key === this.downKey) return;
    const h = this.hooks();
    if (!h?.setDown) return; // applied when the hooks open (force)
    if (!this.write(() => h.setDown!(down))) return; // tried again at the next change or tick
    this.downKey = key;
    this.downPorts = [...down.keys()].sort((a, b) => a - b);
  }

  remember(dst: Target, errno: number, ttlMs: number, now: number): void {
    const h = this.hooks();
    // Called while a peer's record is handled: a map the kernel refuses to update costs the memo, never the peer's pair.
    if (!h?.rememberRefusal || !this.write(() => h.rememberRefusal!(dst, errno, ttlMs))) return;
    const k = keyOf(dst);
    this.memo.delete(k); // re-inserted last: the map's order is the eviction order
    this.memo.set(k, now + ttlMs);
    if (this.memo.size > MAX_REMEMBERED) this.memo.delete(this.memo.keys().next().value!);
    this.remembered++;
  }

  /** A dial to `dst` succeeded: a refusal still remembered for it goes (one map call, only then). */
  forget(dst: Target): void {
    const k = keyOf(dst);
    if (!this.memo.delete(k)) return;
    this.write(() => this.hooks()?.forgetRefusal?.(dst)); // failing, the entry expires in the hook by itself
  }

  /** One write to the hooks' maps; false (counted) if the kernel refused it. */
  private write(f: () => void): boolean {
    try {
      f();
      return true;
    } catch {
      this.hookErrors++;
      return false;
    }
  }

  /** Forget the expired entries of this side's copy (the hook ignores and deletes them itself). */
  prune(now: number): void {
    for (const [k, until] of this.memo) if (until <= now) this.memo.delete(k);
  }
}

const keyOf = (t: Target): string => `${t.family}/${t.address}/${t.port}`;

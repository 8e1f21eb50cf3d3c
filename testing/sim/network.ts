/**
 * A seeded, discrete-event network between simulated endpoints: loss, duplication,
 * delay with jitter, reordering and link cuts, each drawn from the run's Rng, so a seed
 * reproduces every datagram's fate.
 */
import type { Rng } from './rng.js';

export interface LinkFaults {
  loss: number;
  dup: number;
  reorder: number;
  minDelayMs: number;
  maxDelayMs: number;
  /** Deliver each directed link's datagrams in the order sent (delays drawn as ever; none overtakes another). */
  fifo?: boolean;
}

interface Scheduled {
  at: number;
  order: number;
  run: () => void;
}

/** A binary min-heap on (at, order): ties run in scheduling order, so runs are deterministic. */
export class EventQueue {
  private heap: Scheduled[] = [];
  private order = 0;

  get size(): number {
    return this.heap.length;
  }

  peekTime(): number | undefined {
    return this.heap[0]?.at;
  }

  schedule(at: number, run: () => void): void {
    const h = this.heap;
    h.push({ at, order: this.order++, run });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  pop(): Scheduled | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Scheduled, b: Scheduled): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

export interface NetStats {
  sent: number;
  bytesSent: number;
  lost: number;
  cut: number;
  duplicated: number;
  reordered: number;
  delivered: number;
}

/** Directed links between named endpoints. */
export class SimNetwork {
  readonly stats: NetStats = { sent: 0, bytesSent: 0, lost: 0, cut: 0, duplicated: 0, reordered: 0, delivered: 0 };
  private readonly down = new Set<string>();
  /** With `fifo`: the latest delivery time scheduled on each directed link. */
  private readonly lastAt = new Map<string, number>();

  constructor(
    private readonly queue: EventQueue,
    private readonly rng: Rng,
    public faults: LinkFaults,
  ) {}

  private static key(from: string, to: string): string {
    return `${from}>${to}`;
  }

  setLink(from: string, to: string, up: boolean): void {
    if (up) this.down.delete(SimNetwork.key(from, to));
    else this.down.add(SimNetwork.key(from, to));
  }

  isUp(from: string, to: string): boolean {
    return !this.down.has(SimNetwork.key(from, to));
  }

  send(now: number, from: string, to: string, datagram: Uint8Array, deliver: (at: number, d: Uint8Array) => void): void {
    this.stats.sent++;
    this.stats.bytesSent += datagram.length;
    if (!this.isUp(from, to)) {
      this.stats.cut++;
      return;
    }
    const f = this.faults;
    if (this.rng.chance(f.loss)) {
      this.stats.lost++;
      return;
    }
    const copies = this.rng.chance(f.dup) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      let delay = this.rng.int(f.minDelayMs, f.maxDelayMs);
      if (this.rng.chance(f.reorder)) {
        this.stats.reordered++;
        delay += this.rng.int(1, 3 * f.maxDelayMs);
      }
      let at = now + delay;
      if (f.fifo) {
        const k = SimNetwork.key(from, to);
        at = Math.max(at, this.lastAt.get(k) ?? 0);
        this.lastAt.set(k, at);
      }
      this.queue.schedule(at, () => {
        // A link cut while the datagram is in flight loses it too.
        if (!this.isUp(from, to)) {
          this.stats.cut++;
          return;
        }
        this.stats.delivered++;
        deliver(at, datagram);
      });
    }
  }
}

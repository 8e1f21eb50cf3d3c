/**
 * The earliest deadline among many items (pairs, peers) without visiting them all: an indexed
 * binary min-heap, one entry per item, keyed by the item's next deadline. A driver re-keys an
 * item (`set`) whenever its deadline may have moved, asks for the earliest (`peek`) to arm its
 * one timer, and takes only the due items (`popDue`): O(log n) per change, O(1) for the next
 * wake-up, where a scan of every item per turn made a hub's work grow with its peers.
 *
 * Ties keep no order. Keys are numbers (ms); `undefined` means "no deadline" (the item leaves).
 */
export class DeadlineHeap<T> {
  private readonly items: T[] = [];
  private readonly keys: number[] = [];
  /** Each item's index in `items` (the heap moves them; `set` finds them in O(1)). */
  private readonly index = new Map<T, number>();

  get size(): number {
    return this.items.length;
  }

  has(item: T): boolean {
    return this.index.has(item);
  }

  /** The item's deadline in the heap, undefined when it has none. */
  at(item: T): number | undefined {
    const i = this.index.get(item);
    return i === undefined ? undefined : this.keys[i];
  }

  /** The earliest deadline, undefined when the heap is empty. */
  peek(): number | undefined {
    return this.items.length > 0 ? this.keys[0] : undefined;
  }

  /** Insert, re-key, or (with `at` undefined) remove `item`. */
  set(item: T, at: number | undefined): void {
    const i = this.index.get(item);
    if (at === undefined) {
      if (i !== undefined) this.removeAt(i);
      return;
    }
    if (Number.isNaN(at)) throw new RangeError('DeadlineHeap.set: deadline is NaN');
    if (i === undefined) {
      const j = this.items.length;
      this.items.push(item);
      this.keys.push(at);
      this.index.set(item, j);
      this.up(j);
      return;
    }
    const old = this.keys[i];
    if (at === old) return;
    this.keys[i] = at;
    if (at < old) this.up(i);
    else this.down(i);
  }

  delete(item: T): void {
    this.set(item, undefined);
  }

  /** Remove and return the item with the earliest deadline if it is at or before `now`. */
  popDue(now: number): T | undefined {
    if (this.items.length === 0 || this.keys[0] > now) return undefined;
    const item = this.items[0];
    this.removeAt(0);
    return item;
  }

  private removeAt(i: number): void {
    const item = this.items[i];
    this.index.delete(item);
    const last = this.items.length - 1;
    if (i !== last) {
      this.place(i, this.items[last], this.keys[last]);
      this.items.pop();
      this.keys.pop();
      // The moved item may belong above or below its new slot.
      this.up(i);
      this.down(i);
    } else {
      this.items.pop();
      this.keys.pop();
    }
  }

  private place(i: number, item: T, key: number): void {
    this.items[i] = item;
    this.keys[i] = key;
    this.index.set(item, i);
  }

  private up(i: number): void {
    const item = this.items[i];
    const key = this.keys[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.keys[parent] <= key) break;
      this.place(i, this.items[parent], this.keys[parent]);
      i = parent;
    }
    this.place(i, item, key);
  }

  private down(i: number): void {
    const n = this.items.length;
    const item = this.items[i];
    const key = this.keys[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.keys[r] < this.keys[l] ? r : l;
      if (this.keys[c] >= key) break;
      this.place(i, this.items[c], this.keys[c]);
      i = c;
    }
    this.place(i, item, key);
  }
}

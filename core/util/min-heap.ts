/**
 * The least of a changing set of numbers: a binary min-heap in one array (8 bytes a number, no
 * object per entry). O(log n) to add or take the least; built from n numbers in O(n).
 */
export class MinHeap {
  private readonly a: number[];

  constructor(values: Iterable<number> = []) {
    this.a = [...values];
    for (let i = (this.a.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  get size(): number {
    return this.a.length;
  }

  /** The least, undefined when empty. */
  peek(): number | undefined {
    return this.a[0];
  }

  push(v: number): void {
    const a = this.a;
    let i = a.length;
    a.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p] <= v) break;
      a[i] = a[p];
      i = p;
    }
    a[i] = v;
  }

  /** Remove and return the least, undefined when empty. */
  pop(): number | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const least = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      this.down(0);
    }
    return least;
  }

  private down(i: number): void {
    const a = this.a;
    const n = a.length;
    const v = a[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && a[c + 1] < a[c]) c++;
      if (a[c] >= v) break;
      a[i] = a[c];
      i = c;
    }
    a[i] = v;
  }
}

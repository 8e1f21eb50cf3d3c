/**
 * V8's old-generation growth for a daemon that moves bulk bytes (docs/BENCHMARKS.md, issue 17:
 * bulk CPU per byte). Node allocates a buffer per socket read (64 KiB), outside V8's heap; a
 * wrapped bulk stream turns over its whole volume in such buffers, and with spookd's small heap
 * (~12 MiB live) V8's default limit after a full GC (~27 MiB) keeps one incremental full GC
 * after another during a transfer (7–27 per 512 MiB on the client side in the lab, their
 * concurrent marking costing about half as much CPU as the main thread). Letting the old
 * generation grow to 4x its live size before the next one (V8's own largest dynamic factor)
 * took that to 1–4 and both spookd's CPU per GiB down ~10%. The cost: a heap up to 4x its live
 * size between full GCs (bounded by --max-old-space-size where an operator sets it).
 */
import { setFlagsFromString } from 'node:v8';

/** Percent the old generation may grow past its live size before the next full GC. */
export const HEAP_GROWING_PERCENT = 300;

let applied = false;
/** Once per process (V8 reads the flag at each full GC's limit computation). */
export function tuneHeapForBulk(): void {
  if (applied) return;
  applied = true;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}

/**
 * The admin API's one clock: every instant is wall-clock epoch milliseconds (an integer), every
 * duration milliseconds (`…Ms`). The cores run on spookd's monotonic clock (Spookd.now() is
 * performance.now()); an instant on it is anchored to the wall clock once, when this module loads,
 * so instants never go backwards when the wall clock is set. The anchor is read here, both clocks
 * in one moment, not taken from performance.timeOrigin: in a worker thread started on a loaded
 * machine, instants converted through that origin came out 270 ms before the wall-clock moment
 * they followed (test/admin-protocol under the full suite).
 */
const ANCHOR = Date.now() - performance.now();

export const epochMs = (mono: number): number => Math.round(ANCHOR + mono);

/** How long until a deadline on the monotonic clock (0 when due). */
export const inMs = (mono: number): number => Math.max(0, Math.round(mono - performance.now()));
